// Jupyter outputs (mdast `outputs` / `output` nodes) -> static HTML.
//
// mystmd keeps small outputs inline (`content`) and moves large ones, and all
// base64 images, to files on its content server (`path`, e.g. "/<hash>.html").
// `resolveOutputs` fetches those before rendering: text-like bundles are
// inlined into the page, binary images are referenced from build/ (the public
// folder is copied there).
//
// text/html outputs are parsed as an HTML fragment and embedded as real
// elements, so their inline <script> elements run in document order while the
// page loads (plotly.js is a blocking <script> in <head>, hence `Plotly`
// exists by then). Scripts that would load plotly.js from a CDN are dropped.
import { visit } from 'unist-util-visit';
import { unified } from 'unified';
import rehypeParse from 'rehype-parse';
import { u } from 'unist-builder';

const TEXT_MIME = /^(text\/|image\/svg|application\/(.*\+)?json|application\/javascript)/;
const IMAGE_MIME = ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp'];
const PLOTLY_MIME = 'application/vnd.plotly.v1+json';
const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
// Richest first; the first one present in a bundle is rendered.
const MIME_ORDER = [
  PLOTLY_MIME,
  'text/html',
  'image/svg+xml',
  ...IMAGE_MIME,
  'text/markdown',
  'text/latex',
  'text/plain',
];

const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

function publicUrl(p) {
  return `build/${String(p).replace(/^\/+/, '')}`;
}

/** Fetch every output stored in a separate file so rendering is synchronous. */
export async function resolveOutputs(tree, server, log) {
  const jobs = [];
  visit(tree, 'output', (node) => {
    const jd = node.jupyter_data;
    if (!jd) return;
    if (jd.path && (jd.output_type === 'stream' || jd.output_type === 'error')) {
      const field = jd.output_type === 'stream' ? 'text' : 'traceback';
      jobs.push(
        server.text(jd.path).then(
          (t) => (jd[field] = t),
          (e) => log.warn(`output ${jd.path}: ${e.message}`),
        ),
      );
    }
    for (const [mime, entry] of Object.entries(jd.data ?? {})) {
      if (!entry || entry.content !== undefined || !entry.path) continue;
      if (TEXT_MIME.test(mime)) {
        jobs.push(
          server.text(entry.path).then(
            (t) => (entry.content = t),
            (e) => log.warn(`output ${entry.path}: ${e.message}`),
          ),
        );
      } else {
        entry.url = publicUrl(entry.path);
      }
    }
  });
  await Promise.all(jobs);
}

/** True when a page needs plotly.js (Plotly figures or HTML fragments). */
export function needsPlotly(tree) {
  let found = false;
  visit(tree, 'output', (node) => {
    const data = node.jupyter_data?.data ?? {};
    if (data[PLOTLY_MIME] || /Plotly/.test(data['text/html']?.content ?? '')) found = true;
  });
  return found;
}

const htmlParser = unified().use(rehypeParse, { fragment: true });

function isExternal(url) {
  return /^(https?:)?\/\//i.test(url ?? '');
}

/** Parse an HTML fragment into hast; drop CDN copies of plotly.js. */
export function htmlFragment(html, log, where) {
  const tree = htmlParser.parse(html);
  const strip = (parent) => {
    parent.children = (parent.children ?? []).filter((child) => {
      if (child.type !== 'element') return true;
      const src = child.properties?.src;
      if (child.tagName === 'script' && isExternal(src)) {
        if (!/plotly/i.test(src)) log.warn(`${where}: dropped external script ${src}`);
        return false;
      }
      if (isExternal(src) || (child.tagName === 'link' && isExternal(child.properties?.href))) {
        log.warn(`${where}: HTML output requests ${src ?? child.properties?.href} (not offline)`);
      }
      strip(child);
      return true;
    });
  };
  strip(tree);
  return tree.children;
}

function contentOf(entry) {
  const c = entry?.content;
  if (Array.isArray(c)) return c.join('');
  return c ?? '';
}

function pre(cls, text) {
  return u('element', { tagName: 'pre', properties: { className: cls } }, [
    u('text', String(text).replace(ANSI, '')),
  ]);
}

function el(tagName, className, children = [], extra = {}) {
  return u('element', { tagName, properties: { className, ...extra } }, children);
}

function plotlyFigure(entry, ctx) {
  let fig = contentOf(entry);
  if (typeof fig === 'string') {
    try {
      fig = JSON.parse(fig);
    } catch (e) {
      ctx.log.warn(`${ctx.slug}: bad plotly JSON (${e.message})`);
      return pre(['output-error'], 'Unreadable Plotly figure');
    }
  }
  fig.layout = { ...(fig.layout ?? {}) };
  // Fit the column (phones included); keep the author's height.
  delete fig.layout.width;
  fig.layout.autosize = true;
  const id = `plotly-${ctx.slug}-${++ctx.counter}`.replace(/[^A-Za-z0-9_-]/g, '-');
  const json = JSON.stringify(fig).replace(/</g, '\\u003c');
  return el('div', ['output-plotly'], [
    el('div', ['plotly-target'], [], { id }),
    u('element', {
      tagName: 'script',
      properties: { type: PLOTLY_MIME, dataTarget: id },
    }, [u('text', json)]),
  ]);
}

function renderBundle(jd, node, ctx, renderChildren) {
  const data = jd.data ?? {};
  const mime = MIME_ORDER.find((m) => data[m] && (data[m].content !== undefined || data[m].url));
  if (!mime) {
    if (data[WIDGET_MIME]) {
      return el('div', ['output-note'], [u('text', 'Interactive widget (needs a running kernel).')]);
    }
    return null;
  }
  const entry = data[mime];
  if (data[WIDGET_MIME] && mime === 'text/plain') {
    return el('div', ['output-note'], [u('text', 'Interactive widget (needs a running kernel).')]);
  }
  switch (mime) {
    case PLOTLY_MIME:
      return plotlyFigure(entry, ctx);
    case 'text/html':
      return el('div', ['output-html'], htmlFragment(contentOf(entry), ctx.log, ctx.slug));
    case 'image/svg+xml':
      if (entry.url) return el('img', ['output-image'], [], { src: entry.url, alt: '' });
      return el('div', ['output-svg'], htmlFragment(contentOf(entry), ctx.log, ctx.slug));
    case 'text/markdown':
    case 'text/latex':
      if (node.children?.length) return el('div', ['output-markdown'], renderChildren(node));
      return pre(['output-text'], contentOf(entry));
    case 'text/plain':
      return pre(['output-text'], contentOf(entry));
    default: {
      // Binary image: a file on the content server, or base64 inline.
      const src = entry.url ?? `data:${mime};base64,${contentOf(entry)}`;
      const md = jd.metadata?.[mime] ?? {};
      return el('img', ['output-image'], [], {
        src,
        alt: '',
        width: md.width,
        height: md.height,
      });
    }
  }
}

/** Render one `output` node. */
export function renderOutput(node, ctx, renderChildren) {
  if (node.visibility === 'remove') return null;
  const jd = node.jupyter_data;
  if (!jd) return node.children?.length ? el('div', ['output'], renderChildren(node)) : null;
  switch (jd.output_type) {
    case 'stream':
      return pre(['output-stream', `output-${jd.name ?? 'stdout'}`], contentOf({ content: jd.text }));
    case 'error':
      return pre(
        ['output-error'],
        Array.isArray(jd.traceback) ? jd.traceback.join('\n') : jd.traceback ?? `${jd.ename}: ${jd.evalue}`,
      );
    default:
      return renderBundle(jd, node, ctx, renderChildren);
  }
}
