// The page shell: <head>, top bar, navigation sidebar, article header,
// footnotes, references, pager and footer. Everything is local: no fonts,
// scripts or styles from other hosts.

export function esc(s) {
  return String(s ?? '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

// Runs before first paint so a stored choice never flashes the other theme.
const THEME_BOOT = `(function(){try{var t=localStorage.getItem('hrtem-site-theme');if(t==='light'||t==='dark')document.documentElement.setAttribute('data-theme',t);}catch(e){}})();`;

function titleNumber(fm) {
  // `numbering: title: true` gives each page an enumerator (1, 2, ...).
  if (!fm.enumerator || fm.numbering?.title?.enabled === false) return '';
  return `<span class="heading-number">${esc(fm.enumerator)}</span> `;
}

function authorsBlock(fm) {
  const authors = fm.authors ?? [];
  if (!authors.length) return '';
  const affs = fm.affiliations ?? [];
  const affIndex = new Map(affs.map((a, i) => [a.id, i + 1]));
  const showNums = affs.length > 1;
  const names = authors
    .map((a) => {
      const nums = (a.affiliations ?? []).map((id) => affIndex.get(id)).filter(Boolean);
      const sup = showNums && nums.length ? `<sup>${nums.join(',')}</sup>` : '';
      const orcid = a.orcid
        ? ` <a class="orcid" href="https://orcid.org/${esc(a.orcid)}" title="ORCID ${esc(a.orcid)}">iD</a>`
        : '';
      const mail = a.email && a.corresponding ? ` <a href="mailto:${esc(a.email)}" title="Corresponding author">✉</a>` : '';
      return `<span class="author">${esc(a.name)}${sup}${orcid}${mail}</span>`;
    })
    .join(', ');
  const affList = affs.length
    ? `<ul class="affiliations">${affs
        .map((a, i) => `<li>${showNums ? `<sup>${i + 1}</sup>` : ''}${esc(a.name ?? a.id)}</li>`)
        .join('')}</ul>`
    : '';
  return `<div class="authors">${names}</div>${affList}`;
}

function metaLine(fm, downloads, pdf) {
  const bits = [];
  if (fm.date) bits.push(`<span>${esc(String(fm.date).slice(0, 10))}</span>`);
  if (fm.doi) bits.push(`<a href="https://doi.org/${esc(fm.doi)}">doi:${esc(fm.doi)}</a>`);
  const lic = fm.license?.content;
  if (lic) bits.push(lic.url ? `<a href="${esc(lic.url)}">${esc(lic.id ?? lic.name)}</a>` : `<span>${esc(lic.id ?? lic.name)}</span>`);
  for (const d of downloads) bits.push(`<a href="${esc(d.href)}" download>${esc(d.label)}</a>`);
  if (pdf) bits.push(`<a class="pdf-link" href="${esc(pdf)}">The whole paper as PDF</a>`);
  return bits.length ? `<p class="page-meta">${bits.join('<span class="sep">·</span>')}</p>` : '';
}

function navList(nav, current, outline) {
  const items = nav
    .map((p) => {
      const level = Math.max(1, Math.min(p.level ?? 1, 4));
      if (p.external) {
        return `<li class="level-${level}"><a class="external" href="${esc(p.href)}" rel="noopener noreferrer">${esc(p.title)} ↗</a></li>`;
      }
      if (!p.slug) return `<li class="nav-part level-${level}">${esc(p.title)}</li>`;
      const active = p.slug === current;
      const sub =
        active && outline.length
          ? `<ul class="nav-outline">${outline
              .map((h) => `<li class="depth-${h.depth}"><a href="#${esc(h.id)}">${esc(h.text)}</a></li>`)
              .join('')}</ul>`
          : '';
      return `<li class="level-${level}${active ? ' active' : ''}"><a href="${esc(p.href)}"${
        active ? ' aria-current="page"' : ''
      }>${esc(p.title)}</a>${sub}</li>`;
    })
    .join('\n');
  return `<ul class="nav-pages">${items}</ul>`;
}

function referencesBlock(citations) {
  const order = citations?.order ?? [];
  if (!order.length) return '';
  const items = order
    .map((label) => {
      const ref = citations.data?.[label] ?? {};
      return `<li id="cite-${esc(String(label).replace(/[^A-Za-z0-9_-]+/g, '-'))}">${ref.html ?? esc(label)}</li>`;
    })
    .join('\n');
  return `<section class="references" id="references"><h2>References</h2><ol>${items}</ol></section>`;
}

function footnotesBlock(footnotesHtml) {
  if (!footnotesHtml.length) return '';
  const items = footnotesHtml
    .map((f) => {
      const back = ` <a class="footnote-back" href="#fnref-${esc(f.id)}" aria-label="Back to text">↩</a>`;
      // Keep the back link on the footnote's last line.
      const html = /<\/p>\s*$/.test(f.html) ? f.html.replace(/<\/p>\s*$/, `${back}</p>`) : `${f.html}${back}`;
      return `<li id="fn-${esc(f.id)}" value="${esc(f.enumerator)}">${html}</li>`;
    })
    .join('\n');
  return `<section class="footnotes"><h2>Footnotes</h2><ol>${items}</ol></section>`;
}

function pager(prev, next) {
  if (!prev && !next) return '';
  const link = (p, cls, label) =>
    p
      ? `<a class="${cls}" href="${esc(p.href)}"><span class="pager-label">${label}</span><span class="pager-title">${esc(p.title)}</span></a>`
      : '<span></span>';
  return `<nav class="pager" aria-label="Previous and next page">${link(prev, 'prev', '← Previous')}${link(next, 'next', 'Next →')}</nav>`;
}

/**
 * @param {object} o
 *   site: { title }, nav: [{slug,title,level,href}], slug, frontmatter,
 *   body (html), outline: [{id,text,depth}], citations, footnotes: [{id,enumerator,html}],
 *   prev, next, plotly (bool), scripts: [asset names loaded after plotly.js], downloads: [{href,label}], isIndex
 */
export function pageHtml(o) {
  const fm = o.frontmatter ?? {};
  const title = fm.title ?? o.slug;
  const docTitle = o.isIndex || title === o.site.title ? title : `${title} · ${o.site.title}`;
  const subtitle = fm.subtitle ? `<p class="subtitle">${esc(fm.subtitle)}</p>` : '';
  const keywords = fm.keywords?.length ? `<p class="keywords"><strong>Keywords:</strong> ${fm.keywords.map(esc).join(', ')}</p>` : '';
  const plotly = o.plotly
    ? ['plotly.min.js', ...(o.scripts ?? [])].map((f) => `<script src="assets/${esc(f)}"></script>`).join('\n')
    : '';
  const outlineAside = o.outline.length
    ? `<aside class="outline" aria-label="On this page"><p class="outline-title">On this page</p><ul>${o.outline
        .map((h) => `<li class="depth-${h.depth}"><a href="#${esc(h.id)}">${esc(h.text)}</a></li>`)
        .join('')}</ul></aside>`
    : '';
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(docTitle)}</title>
${fm.description ? `<meta name="description" content="${esc(fm.description)}">` : ''}
<meta name="color-scheme" content="light dark">
<link rel="icon" href="data:,">
<script>${THEME_BOOT}</script>
<link rel="stylesheet" href="assets/katex/katex.min.css">
<link rel="stylesheet" href="assets/highlight.css">
<link rel="stylesheet" href="assets/site.css">
${plotly}
<script src="assets/site.js" defer></script>
</head>
<body>
<a class="skip-link" href="#main">Skip to content</a>
<header class="topbar">
  <button class="nav-toggle" type="button" aria-controls="sidebar" aria-expanded="false" aria-label="Show navigation"><span></span></button>
  <a class="site-title" href="index.html">${esc(o.site.title)}</a>
  <button class="theme-toggle" type="button" aria-label="Switch between light and dark mode" title="Switch between light and dark mode">
    <svg class="icon-moon" viewBox="0 0 24 24" aria-hidden="true"><path d="M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8z"/></svg>
    <svg class="icon-sun" viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="4.5"/><path d="M12 1.5v3M12 19.5v3M1.5 12h3M19.5 12h3M4.6 4.6l2.1 2.1M17.3 17.3l2.1 2.1M4.6 19.4l2.1-2.1M17.3 6.7l2.1-2.1"/></svg>
  </button>
</header>
<div class="layout">
<nav id="sidebar" class="sidebar" aria-label="Pages">
${navList(o.nav, o.slug, o.outline)}
</nav>
<div class="nav-backdrop" hidden></div>
<main id="main" class="main">
<article class="article${fm.kernelspec ? ' notebook' : ''}">
<header class="page-header">
<h1 class="page-title">${titleNumber(fm)}${esc(title)}</h1>
${subtitle}
${authorsBlock(fm)}
${metaLine(fm, o.downloads ?? [], o.site.pdf)}
${keywords}
</header>
${o.body}
${footnotesBlock(o.footnotes)}
${referencesBlock(o.citations)}
</article>
${pager(o.prev, o.next)}
${o.site.cite ? `<details class="cite-box"><summary>Cite this site and the study it re-runs (BibTeX)</summary>
<pre><code>${esc(o.site.cite)}</code></pre>${o.site.data ? `
<p>Data: the <a href="data/results/SCHEMA.md">result tables</a> (parquet, under <code>data/results/</code>), ours and the original's (CC-BY-4.0).</p>` : ''}
</details>` : ''}
<footer class="site-footer"><p>${esc(o.site.title)} · static site built offline with <a href="https://mystmd.org">mystmd</a>${
    fm.license?.content ? ` · ${esc(fm.license.content.name ?? fm.license.content.id)}` : ''
  }</p></footer>
</main>
${outlineAside}
</div>
</body>
</html>
`;
}
