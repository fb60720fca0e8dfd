// hrtem_tl offline site: theme toggle, mobile navigation, Plotly figures
// stored as application/vnd.plotly.v1+json, and the "on this page" highlight.
// Loaded with `defer`: runs after the document is parsed (and after the
// inline scripts of HTML outputs have run), before DOMContentLoaded.
(function () {
  'use strict';
  var root = document.documentElement;
  var KEY = 'hrtem-site-theme';
  var media = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;

  function effectiveTheme() {
    var t = root.getAttribute('data-theme');
    if (t === 'light' || t === 'dark') return t;
    return media && media.matches ? 'dark' : 'light';
  }

  // Figures follow the theme: transparent paper, light text and dim grid lines in dark
  // mode. Explorers (hrtem_tl's figure_tools.js) pass their layouts through this too.
  var DARK = { font: '#e3e7eb', grid: '#2c333b', line: '#59636e' };
  window.hrtemDarkLayout = function (layout) {
    if (effectiveTheme() !== 'dark') return layout;
    var out = JSON.parse(JSON.stringify(layout || {}));
    out.paper_bgcolor = 'rgba(0,0,0,0)';
    out.plot_bgcolor = 'rgba(0,0,0,0)';
    out.font = Object.assign({}, out.font, { color: DARK.font });
    if (out.title && out.title.font) out.title.font = Object.assign({}, out.title.font, { color: DARK.font });
    Object.keys(out).forEach(function (k) {
      if (/^[xy]axis\d*$/.test(k)) {
        out[k] = Object.assign({}, out[k], { gridcolor: DARK.grid, zerolinecolor: DARK.line, linecolor: DARK.line });
      }
    });
    (out.annotations || []).forEach(function (a) { a.font = Object.assign({}, a.font, { color: DARK.font }); });
    if (out.legend) out.legend = Object.assign({}, out.legend, { font: { color: DARK.font } });
    ['coloraxis', 'coloraxis2'].forEach(function (c) {
      if (out[c] && out[c].colorbar) out[c].colorbar = Object.assign({}, out[c].colorbar, { tickfont: { color: DARK.font } });
    });
    return out;
  };

  function setTheme(t) {
    root.setAttribute('data-theme', t);
    try {
      localStorage.setItem(KEY, t);
    } catch (e) {
      /* storage may be disabled */
    }
    syncToggle();
    window.dispatchEvent(new Event('hrtem-theme-change'));
  }

  function syncToggle() {
    var btn = document.querySelector('.theme-toggle');
    if (!btn) return;
    var dark = effectiveTheme() === 'dark';
    btn.setAttribute('aria-pressed', dark ? 'true' : 'false');
    btn.title = dark ? 'Switch to light mode' : 'Switch to dark mode';
  }

  var themeBtn = document.querySelector('.theme-toggle');
  if (themeBtn) {
    themeBtn.addEventListener('click', function () {
      setTheme(effectiveTheme() === 'dark' ? 'light' : 'dark');
    });
    syncToggle();
    if (media && media.addEventListener) media.addEventListener('change', syncToggle);
  }

  // ---- off-canvas navigation (small screens) ----
  var navBtn = document.querySelector('.nav-toggle');
  var backdrop = document.querySelector('.nav-backdrop');
  function setNav(open) {
    document.body.classList.toggle('nav-open', open);
    if (navBtn) navBtn.setAttribute('aria-expanded', open ? 'true' : 'false');
    if (backdrop) backdrop.hidden = !open;
  }
  if (navBtn) {
    navBtn.addEventListener('click', function () {
      setNav(!document.body.classList.contains('nav-open'));
    });
  }
  if (backdrop) backdrop.addEventListener('click', function () { setNav(false); });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'Escape') setNav(false);
  });
  document.querySelectorAll('.sidebar a').forEach(function (a) {
    a.addEventListener('click', function () { setNav(false); });
  });

  // ---- Plotly figures from notebook outputs ----
  document.querySelectorAll('script[type="application/vnd.plotly.v1+json"]').forEach(function (s) {
    var target = document.getElementById(s.getAttribute('data-target'));
    if (!target) return;
    if (!window.Plotly) {
      target.textContent = 'plotly.js did not load: the figure cannot be drawn.';
      return;
    }
    try {
      var fig = JSON.parse(s.textContent);
      var config = Object.assign({ responsive: true, displaylogo: false }, fig.config || {});
      // layout.meta.narrow: Plotly attribute strings applied where the figure's box is
      // narrower than layout.meta.narrow_below px, by default the explorers' breakpoint
      // (window.hrtemNarrow, 640 px, where SITE_SCRIPTS loads the figure helpers), so
      // notebook figures and explorers change to their phone layouts at the same width
      var meta = (fig.layout && fig.layout.meta) || {};
      var below = meta.narrow_below || window.hrtemNarrow || 640;
      var narrow = null;
      var draw = function () {
        narrow = !!meta.narrow && target.clientWidth < below;
        var layout = JSON.parse(JSON.stringify(window.hrtemDarkLayout(fig.layout) || {}));
        var drawn = window.Plotly.react(target, fig.data || [], layout, config);
        if (narrow) drawn.then(function () { return window.Plotly.relayout(target, meta.narrow); });
      };
      draw();
      window.addEventListener('hrtem-theme-change', draw);
      // the plotted values as CSV, where the project's figure helpers are loaded (SITE_SCRIPTS)
      var values = (fig.data || []).some(function (t) { return t.type !== 'image'; });
      if (values && window.hrtemCsvLink) {
        var file = (location.pathname.split('/').pop() || 'index.html').replace(/\.html$/, '') + '-' + target.id + '.csv';
        target.insertAdjacentElement('afterend', window.hrtemCsvLink(file, function () { return [[target.id, target]]; }));
      }
      if (meta.narrow) {
        window.addEventListener('resize', function () {
          if ((target.clientWidth < below) !== narrow) draw();
        });
      }
    } catch (e) {
      target.textContent = 'Could not draw this figure: ' + e.message;
    }
  });

  if (effectiveTheme() === 'dark') window.dispatchEvent(new Event('hrtem-theme-change'));
  if (media && media.addEventListener) {
    media.addEventListener('change', function () { window.dispatchEvent(new Event('hrtem-theme-change')); });
  }

  // ---- scrollable regions are reachable by keyboard ----
  document.querySelectorAll('pre, .code-block, .outputs > *, .hr-scroll, .table-container').forEach(function (el) {
    if (el.scrollWidth > el.clientWidth + 1 && !el.hasAttribute('tabindex')) el.setAttribute('tabindex', '0');
  });

  // ---- highlight the current section in the outlines ----
  var links = Array.prototype.slice.call(document.querySelectorAll('.outline a, .nav-outline a'));
  if (links.length && 'IntersectionObserver' in window) {
    var byId = {};
    links.forEach(function (a) {
      var id = decodeURIComponent(a.getAttribute('href').slice(1));
      (byId[id] = byId[id] || []).push(a);
    });
    var visible = {};
    var order = Object.keys(byId);
    var obs = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) { visible[e.target.id] = e.isIntersecting; });
      var current = order.filter(function (id) { return visible[id]; })[0];
      if (!current) return;
      links.forEach(function (a) { a.classList.remove('current'); });
      byId[current].forEach(function (a) { a.classList.add('current'); });
    }, { rootMargin: '-10% 0px -70% 0px' });
    order.forEach(function (id) {
      var el = document.getElementById(id);
      if (el) obs.observe(el);
    });
  }
})();
