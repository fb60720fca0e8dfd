// Narrow screens: side-by-side Plotly panels stacked one above the other.
// Shared by the explorers (explorer.js, variants.js); returns a new layout for a
// container `width` px wide, the given layout unchanged when it is wide enough.
window.hrtemNarrow = window.hrtemNarrow || 640;  // px: below this, panels stack
window.hrtemFit = window.hrtemFit || function (layout, width) {
  const keys = Object.keys(layout).filter(k => /^xaxis\d*$/.test(k)).sort();
  if (width >= window.hrtemNarrow || keys.length < 2) return layout;
  const out = JSON.parse(JSON.stringify(layout));
  const n = keys.length, panel = 300, gap = 150, top = 90, bottom = 80;
  const height = top + n * panel + (n - 1) * gap + bottom;
  const frac = px => px / height;
  const panels = keys.map((k, i) => {
    const hi = 1 - frac(top + i * (panel + gap)), lo = hi - frac(panel);
    return {x: k, y: "yaxis" + k.slice(5), lo: lo, hi: hi, old: (layout[k].domain || [0, 1])};
  });
  delete out.grid;  // explicit domains instead of a 1 x n grid
  panels.forEach(p => {
    out[p.x] = Object.assign({}, out[p.x], {domain: [0, 1], automargin: true});
    out[p.y] = Object.assign({}, out[p.y] || {}, {domain: [p.lo, p.hi], automargin: true});
    const anchor = p.x === "xaxis" ? "y" : "y" + p.x.slice(5);
    out[p.x].anchor = anchor;
  });
  // subplot titles (paper-anchored annotations centred over a panel) follow their panel
  (out.annotations || []).forEach(a => {
    if (a.xref === "paper" && a.yref === "paper") {
      const p = panels.find(q => a.x >= q.old[0] - 1e-6 && a.x <= q.old[1] + 1e-6);
      if (p) { a.x = 0.5; a.y = p.hi; a.yanchor = "bottom"; }
    } else if (/ domain$/.test(a.xref || "") && a.yref === "paper") {
      const p = panels.find(q => q.x === "xaxis" + a.xref.split(" ")[0].slice(1));
      if (p) { a.yref = "paper"; a.y = p.hi + frac(8); a.yanchor = "bottom"; }
    }
  });
  // colour bars lie under the last panel
  ["coloraxis", "coloraxis2"].forEach((c, i) => {
    if (out[c]) out[c].colorbar = Object.assign({}, out[c].colorbar, {orientation: "h", x: 0.5, xanchor: "center",
      y: -frac(60 + 55 * i), yanchor: "top", len: 0.9, thickness: 12});
  });
  out.height = height;
  out.margin = Object.assign({}, out.margin, {l: 60, r: 16, t: top, b: bottom + (out.coloraxis2 ? 110 : 60)});
  if (out.title) {
    const text = (out.title.text || "").replace(" — ", "<br>");  // a long title in two lines
    out.title = Object.assign({}, out.title, {text: text, font: Object.assign({}, out.title.font, {size: 12})});
  }
  return out;
};
// Redraw `draw` when the container crosses the narrow breakpoint.
window.hrtemOnResize = window.hrtemOnResize || function (el, draw) {
  let narrow = el.clientWidth < window.hrtemNarrow;
  window.addEventListener("resize", () => {
    const now = el.clientWidth < window.hrtemNarrow;
    if (now !== narrow) { narrow = now; draw(); }
  });
};
