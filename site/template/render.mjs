#!/usr/bin/env node
// Static renderer for a MyST project, run by `myst build --html` through
// template.yml's `build: render:`. mystmd sets
//   CONTENT_CDN      URL of its local content server (page JSON, public files)
//   BUILD_DIRECTORY  where the static site must be written (_build/html)
// Optional: PLOTLY_JS, path to plotly.min.js (else the cartesian bundle or Python's
// plotly); SITE_PROJECT, the project folder (its cite.bib and data/results/);
// SITE_SCRIPTS, colon-separated scripts copied to assets/ and loaded after plotly.js on
// every page with figures (the project's figure helpers: CSV of a figure's values).
//
// Output: <slug>.html per page (the first page is index.html), build/ (the
// project's public files: images, large outputs, source downloads) and
// assets/ (CSS, JS, KaTeX, plotly.js). Links are relative, so the folder can
// be served from any path of any static host.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { mystToHast } from 'myst-to-html';
import { toHtml } from 'hast-util-to-html';
import { toString } from 'mdast-util-to-string';
import { visit, SKIP } from 'unist-util-visit';
import { ContentServer, copyPublicFiles, writeFile } from './lib/content.mjs';
import { makeHandlers } from './lib/handlers.mjs';
import { resolveOutputs, needsPlotly } from './lib/outputs.mjs';
import { pageHtml } from './lib/layout.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

const messages = [];
const log = {
  info: (m) => messages.push(`info: ${m}`),
  warn: (m) => {
    messages.push(`warning: ${m}`);
    process.stderr.write(`warning: ${m}\n`);
  },
};

function isExternal(url) {
  return /^([a-z][a-z0-9+.-]*:|\/\/)/i.test(url ?? '');
}

function pageFile(slug, indexSlug) {
  return slug === indexSlug ? 'index.html' : `${slug}.html`;
}

function makeLinkers({ slugs, indexSlug, publicSet }) {
  const publicUrl = (url) => {
    if (!url || isExternal(url) || url.startsWith('#')) {
      if (/^(https?:)?\/\//i.test(url ?? '')) log.warn(`external resource ${url} (will not load offline)`);
      return url;
    }
    if (url.startsWith('/')) return `build/${url.replace(/^\/+/, '')}`;
    return url;
  };
  const hrefFor = (url) => {
    if (!url || isExternal(url) || url.startsWith('#')) return url;
    if (!url.startsWith('/')) return url;
    const [p, hash] = url.split('#');
    const rel = p.replace(/^\/+/, '').replace(/\/+$/, '');
    const suffix = hash ? `#${hash}` : '';
    if (!rel) return `index.html${suffix}`;
    if (publicSet.has(rel)) return `build/${rel}${suffix}`;
    if (rel.startsWith('build/')) return `${rel}${suffix}`;
    if (slugs.has(rel)) return `${pageFile(rel, indexSlug)}${suffix}`;
    log.warn(`link to unknown page ${url}`);
    return `${rel}.html${suffix}`;
  };
  return { publicUrl, hrefFor };
}

function outlineOf(mdast) {
  const out = [];
  visit(mdast, (node) => {
    if (node.type === 'container' || node.type === 'admonition' || node.type === 'outputs') return SKIP;
    if (node.type === 'heading' && node.depth >= 2 && node.depth <= 3 && node.html_id) {
      const num = node.enumerator && node.enumerated !== false ? `${node.enumerator} ` : '';
      out.push({ id: node.html_id, text: `${num}${toString(node)}`, depth: node.depth });
    }
    return undefined;
  });
  return out;
}

function downloadsFor(page, publicSet) {
  const loc = page.location ?? '';
  const ext = path.extname(loc);
  const stem = path.basename(loc, ext);
  if (!stem) return [];
  const re = new RegExp(`^${stem.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-[0-9a-f]{8,}\\${ext}$`);
  return [...publicSet]
    .filter((f) => re.test(f))
    .filter(() => ext === '.ipynb')
    .map((f) => ({ href: `build/${f}`, label: 'Download notebook' }));
}

// plotly.js for the pages: the cartesian bundle (npm plotly.js-cartesian-dist-min, 1.5 MB
// against 4.8 MB for the full plotly.js; bar, box, contour, heatmap, histogram*, image,
// pie, scatter, scatterternary, violin: every trace this site draws) unless PLOTLY_JS
// names a file or PLOTLY_BUNDLE=full asks for the full build of the Python package.
function cartesianBundle() {
  try {
    return require.resolve('plotly.js-cartesian-dist-min/plotly-cartesian.min.js');
  } catch {
    return undefined;
  }
}

function findPlotlyJs() {
  if (process.env.PLOTLY_JS) return process.env.PLOTLY_JS;
  if (process.env.PLOTLY_BUNDLE !== 'full') {
    const cartesian = cartesianBundle();
    if (cartesian) return cartesian;
  }
  const code = 'import os, plotly; print(os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js"))';
  for (const py of [process.env.PYTHON, 'python3', 'python'].filter(Boolean)) {
    try {
      return execFileSync(py, ['-c', code], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      // try the next interpreter
    }
  }
  return undefined;
}

// SITE_SCRIPTS as asset names (copied by copyAssets)
const SCRIPTS = (process.env.SITE_SCRIPTS || '').split(':').filter(Boolean);

function copyAssets(outDir, withPlotly) {
  const assets = path.join(outDir, 'assets');
  fs.mkdirSync(assets, { recursive: true });
  for (const file of SCRIPTS) {
    if (!fs.existsSync(file)) throw new Error(`SITE_SCRIPTS names ${file}, which does not exist`);
    fs.copyFileSync(file, path.join(assets, path.basename(file)));
  }
  for (const f of ['site.css', 'site.js', 'highlight.css']) {
    fs.copyFileSync(path.join(HERE, 'assets', f), path.join(assets, f));
  }
  const katexDist = path.dirname(require.resolve('katex/dist/katex.min.css'));
  fs.mkdirSync(path.join(assets, 'katex'), { recursive: true });
  fs.copyFileSync(path.join(katexDist, 'katex.min.css'), path.join(assets, 'katex', 'katex.min.css'));
  fs.cpSync(path.join(katexDist, 'fonts'), path.join(assets, 'katex', 'fonts'), { recursive: true });
  const plotly = findPlotlyJs();
  if (plotly && fs.existsSync(plotly)) {
    fs.copyFileSync(plotly, path.join(assets, 'plotly.min.js'));
  } else if (withPlotly) {
    throw new Error('plotly.min.js not found: set PLOTLY_JS or install the plotly Python package');
  } else {
    log.warn('plotly.min.js not found (no page needs it)');
  }
}

async function main() {
  const t0 = Date.now();
  const server = new ContentServer(process.env.CONTENT_CDN);
  const outDir = process.env.BUILD_DIRECTORY;
  if (!outDir) throw new Error('BUILD_DIRECTORY is not set');
  fs.mkdirSync(outDir, { recursive: true });

  const config = await server.json('/config.json');
  const projects = config.projects ?? [];
  if (projects.length !== 1) log.warn(`${projects.length} projects: only the first is rendered`);
  const project = projects[0];
  const publicSet = await copyPublicFiles(server, outDir);

  const entries = [{ slug: project.index, level: 1 }, ...(project.pages ?? [])];
  // Pages marked `hidden: true` in the toc are not in config.json but are
  // built (and linkable): find every page through myst.xref.json.
  const slugs = new Set(entries.filter((e) => e.slug).map((e) => e.slug));
  for (const ref of (await server.json('/myst.xref.json').catch(() => ({}))).references ?? []) {
    if (ref.kind !== 'page' || !ref.url) continue;
    const slug = ref.url.replace(/^\/+/, '').replace(/\/+$/, '');
    slugs.add(slug || project.index);
  }
  const pages = new Map(
    await Promise.all(
      [...slugs].map(async (slug) => [slug, await server.page(project.slug, slug)]),
    ),
  );
  log.info(`pages: ${[...slugs].join(', ')}`);
  const linkers = makeLinkers({ slugs, indexSlug: project.index, publicSet });

  const nav = entries.map((e) => {
    const fm = e.slug ? pages.get(e.slug)?.frontmatter ?? {} : {};
    return {
      slug: e.slug,
      level: e.level ?? 1,
      title: fm.short_title ?? fm.title ?? e.short_title ?? e.title ?? e.slug,
      href: e.slug ? pageFile(e.slug, project.index) : e.url,
      external: !e.slug && !!e.url,
    };
  });
  const linked = nav.filter((n) => n.slug);
  const hidden = [...slugs]
    .filter((slug) => !linked.some((n) => n.slug === slug))
    .map((slug) => ({ slug, href: pageFile(slug, project.index), hidden: true }));
  // cite.bib beside myst.yml (optional; SITE_PROJECT names that folder, set by
  // scripts/build-site.sh): BibTeX shown in every page's cite box
  const projectDir = process.env.SITE_PROJECT ?? process.cwd();
  const citeFile = path.join(projectDir, 'cite.bib');
  const site = {
    title: config.title ?? project.title ?? 'Site',
    cite: fs.existsSync(citeFile) ? fs.readFileSync(citeFile, 'utf8').trim() : null,
    data: fs.existsSync(path.join(projectDir, 'data', 'results', 'SCHEMA.md')),
    // the whole paper as one PDF, printed after this render by scripts/site_pdf.py
    // (SITE_PDF names the file; scripts/build-site.sh sets it)
    pdf: process.env.SITE_PDF || null,
  };

  let anyPlotly = false;
  for (const [i, entry] of [...linked, ...hidden].entries()) {
    const page = pages.get(entry.slug);
    const ctx = {
      slug: entry.slug,
      log,
      counter: 0,
      footnotes: [],
      citations: page.references?.cite,
      ...linkers,
    };
    await resolveOutputs(page.mdast, server, log);
    const plotly = needsPlotly(page.mdast);
    anyPlotly ||= plotly;
    const hast = mystToHast({ handlers: makeHandlers(ctx), allowDangerousHtml: true })(page.mdast);
    const body = toHtml(hast, { allowDangerousHtml: true });
    const footnotes = ctx.footnotes.map((f) => ({
      ...f,
      html: toHtml({ type: 'root', children: f.children }, { allowDangerousHtml: true }),
    }));
    const html = pageHtml({
      site,
      nav,
      slug: entry.slug,
      isIndex: entry.slug === project.index,
      frontmatter: page.frontmatter,
      body,
      outline: outlineOf(page.mdast),
      citations: page.references?.cite,
      footnotes,
      prev: entry.hidden ? undefined : linked[i - 1],
      next: entry.hidden ? undefined : linked[i + 1],
      plotly,
      scripts: plotly ? SCRIPTS.map((f) => path.basename(f)) : [],
      downloads: downloadsFor(page, publicSet),
    });
    writeFile(outDir, entry.href, html);
    log.info(`wrote ${entry.href}${plotly ? ' (plotly)' : ''}`);
  }
  copyAssets(outDir, anyPlotly);
  // the reading order, for the PDF: the toc's pages with their titles
  fs.writeFileSync(path.join(outDir, 'pages.json'),
    `${JSON.stringify(linked.map((n) => ({ href: n.href, title: n.title, level: n.level })), null, 1)}\n`);
  log.info(`rendered ${linked.length + hidden.length} pages in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  fs.writeFileSync(path.join(outDir, '.render.log'), `${messages.join('\n')}\n`);
}

main().catch((e) => {
  process.stderr.write(`render failed: ${e.stack ?? e}\n`);
  process.exit(1);
});
