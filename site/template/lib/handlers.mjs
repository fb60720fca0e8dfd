// mdast (MyST) -> hast handlers, on top of myst-to-html's `mystToHast`.
//
// mdast-util-to-hast calls each handler as (state, node, parent); `state` is
// also the old `h(node, tagName, props, children)` helper and has
// `state.all(node)` for the children.
import { u } from 'unist-builder';
import katex from 'katex';
import hljs from 'highlight.js';
import { renderOutput } from './outputs.mjs';

export function safeId(s) {
  return String(s ?? '').replace(/[^A-Za-z0-9_-]+/g, '-');
}

export function citeId(label) {
  return `cite-${safeId(label)}`;
}

function el(tagName, props, children = []) {
  return { type: 'element', tagName, properties: props ?? {}, children };
}

function text(value) {
  return u('text', String(value ?? ''));
}

function raw(value) {
  return u('raw', value);
}

function anchorId(node) {
  return node.html_id || (node.identifier ? safeId(node.identifier) : undefined);
}

function renderMath(node, displayMode) {
  if (node.html) return node.html;
  return katex.renderToString(node.value ?? '', {
    displayMode,
    throwOnError: false,
    output: 'htmlAndMathml',
  });
}

/**
 * Build the handler table. `ctx` is the per-page render context:
 * { slug, log, counter, hrefFor(url), publicUrl(url), footnotes: [] }.
 */
export function makeHandlers(ctx) {
  return {
    heading(state, node) {
      const kids = state.all(node);
      const id = anchorId(node);
      if (node.enumerator && node.enumerated !== false) {
        kids.unshift(el('span', { className: ['heading-number'] }, [text(node.enumerator)]), text(' '));
      }
      if (id) {
        kids.push(
          el('a', { className: ['heading-anchor'], href: `#${id}`, ariaLabel: 'Link to this section' }, [
            text('#'),
          ]),
        );
      }
      return el(`h${Math.min(Math.max(node.depth ?? 2, 1), 6)}`, { id }, kids);
    },

    math(state, node) {
      const kids = [el('div', { className: ['math-body'] }, [raw(renderMath(node, true))])];
      if (node.enumerator && node.enumerated !== false) {
        kids.push(el('span', { className: ['eq-number'] }, [text(`(${node.enumerator})`)]));
      }
      return el('div', { className: ['math-display'], id: anchorId(node) }, kids);
    },

    inlineMath(state, node) {
      return el('span', { className: ['math-inline'] }, [raw(renderMath(node, false))]);
    },

    citeGroup(state, node) {
      const parts = [];
      const cites = node.children ?? [];
      const paren = node.kind !== 'narrative';
      cites.forEach((c, i) => {
        if (i > 0) parts.push(text(paren ? '; ' : ', '));
        parts.push(...[].concat(state.one(c, node) ?? []));
      });
      if (paren) {
        parts.unshift(text('('));
        parts.push(text(')'));
      }
      return el('span', { className: ['cite-group', node.kind ?? ''] }, parts);
    },

    cite(state, node) {
      const label = node.label ?? node.identifier;
      let kids = state.all(node);
      if (!kids.length) kids = [text(label)];
      if (node.prefix) kids.unshift(text(`${node.prefix} `));
      if (node.suffix) kids.push(text(`, ${node.suffix}`.replace(/^, ,/, ',')));
      if (node.error) {
        return el('span', { className: ['cite', 'cite-error'], title: `Unknown citation: ${label}` }, kids);
      }
      const ref = ctx.citations?.data?.[label];
      const title = ref?.html ? ref.html.replace(/<[^>]+>/g, '') : undefined;
      return el('a', { className: ['cite'], href: `#${citeId(label)}`, title }, kids);
    },

    crossReference(state, node) {
      const kids = state.all(node);
      if (!kids.length) kids.push(text(node.label ?? node.identifier));
      if (node.resolved === false || (!node.html_id && !node.url)) {
        return el('span', { className: ['xref', 'xref-unresolved'], title: node.identifier }, kids);
      }
      const hash = node.html_id ? `#${node.html_id}` : '';
      const href = node.remote && node.url ? `${ctx.hrefFor(node.url)}${hash}` : hash;
      return el('a', { className: ['xref', `xref-${safeId(node.kind)}`], href }, kids);
    },

    link(state, node) {
      const props = { href: ctx.hrefFor(node.url), title: node.title || undefined };
      if (/^(https?:)?\/\//.test(node.url ?? '')) {
        props.className = ['external'];
        props.rel = 'noopener noreferrer';
      }
      return el('a', props, state.all(node));
    },

    image(state, node) {
      const width = node.width ? String(node.width) : undefined;
      return el('img', {
        src: ctx.publicUrl(node.url),
        alt: node.alt ?? '',
        title: node.title || undefined,
        loading: 'lazy',
        className: ['image', node.align ? `align-${node.align}` : ''].filter(Boolean),
        style: width ? `width:${/^\d+$/.test(width) ? `${width}px` : width}` : undefined,
      });
    },

    container(state, node) {
      const kind = node.kind ?? 'figure';
      const cls = ['container', `container-${safeId(kind)}`];
      if (node.class) cls.push(...String(node.class).split(/\s+/));
      if (node.enumerated === false) cls.push('unnumbered');
      // Figures made of notebook outputs (explorers, plots) may use the full
      // width of the main column, wider than the text measure.
      if ((node.children ?? []).some((c) => c.type === 'outputs' || c.type === 'embed')) cls.push('container-wide');
      return el('figure', { id: anchorId(node), className: cls }, state.all(node));
    },

    caption(state, node) {
      return el('figcaption', {}, state.all(node));
    },

    legend(state, node) {
      return el('div', { className: ['legend'] }, state.all(node));
    },

    captionNumber(state, node) {
      return el('span', { className: ['caption-number'] }, state.all(node));
    },

    table(state, node) {
      const rows = node.children ?? [];
      const head = [];
      const body = [];
      let inHead = true;
      for (const row of rows) {
        const cells = row.children ?? [];
        const isHead = inHead && cells.length > 0 && cells.every((c) => c.header);
        if (!isHead) inHead = false;
        const tr = el(
          'tr',
          {},
          cells.map((c) =>
            el(
              c.header ? 'th' : 'td',
              {
                align: c.align || undefined,
                colSpan: c.colspan || undefined,
                rowSpan: c.rowspan || undefined,
                style: c.align ? `text-align:${c.align}` : undefined,
              },
              state.all(c),
            ),
          ),
        );
        (isHead ? head : body).push(tr);
      }
      const parts = [];
      if (head.length) parts.push(el('thead', {}, head));
      parts.push(el('tbody', {}, body));
      return el('div', { className: ['table-wrap'] }, [el('table', {}, parts)]);
    },

    code(state, node) {
      if (node.visibility === 'remove') return null;
      const value = node.value ?? '';
      const lang = (node.lang ?? '').toLowerCase();
      let body;
      if (lang && hljs.getLanguage(lang)) {
        body = raw(hljs.highlight(value, { language: lang, ignoreIllegals: true }).value);
      } else {
        body = text(value);
      }
      const pre = el('pre', { className: ['code-block'], id: anchorId(node) }, [
        el('code', { className: ['hljs', lang ? `language-${lang}` : ''].filter(Boolean) }, [body]),
      ]);
      const parts = [];
      if (node.filename) parts.push(el('div', { className: ['code-filename'] }, [text(node.filename)]));
      parts.push(pre);
      const block = parts.length > 1 ? el('div', { className: ['code-with-filename'] }, parts) : pre;
      if (node.visibility === 'hide') {
        return el('details', { className: ['hidden-code'] }, [el('summary', {}, [text('Show code')]), block]);
      }
      return block;
    },

    inlineCode(state, node) {
      return el('code', {}, [text(node.value)]);
    },

    block(state, node) {
      if (node.visibility === 'remove') return null;
      const cls = ['block'];
      if (node.kind) cls.push(`block-${safeId(node.kind)}`);
      if (node.class) cls.push(...String(node.class).split(/\s+/));
      return el('div', { className: cls, id: anchorId(node) }, state.all(node));
    },

    outputs(state, node) {
      if (node.visibility === 'remove') return null;
      const kids = state.all(node);
      if (!kids.length) return null;
      const out = el('div', { className: ['outputs'], id: anchorId(node) }, kids);
      if (node.visibility === 'hide') {
        return el('details', { className: ['hidden-output'] }, [el('summary', {}, [text('Show output')]), out]);
      }
      return out;
    },

    output(state, node) {
      return renderOutput(node, ctx, (n) => state.all(n));
    },

    embed(state, node) {
      return el('div', { className: ['embed'] }, state.all(node));
    },

    include(state, node) {
      return el('div', { className: ['include'] }, state.all(node));
    },

    footnoteReference(state, node) {
      const id = safeId(node.identifier ?? node.label);
      return el('sup', { className: ['footnote-ref'] }, [
        el('a', { href: `#fn-${id}`, id: `fnref-${id}` }, [text(node.enumerator ?? node.label)]),
      ]);
    },

    footnoteDefinition(state, node) {
      ctx.footnotes.push({
        id: safeId(node.identifier ?? node.label),
        enumerator: node.enumerator ?? node.label,
        children: state.all(node),
      });
      return null;
    },

    admonition(state, node) {
      const cls = ['admonition', safeId(node.kind ?? 'note')];
      if (node.class) cls.push(...String(node.class).split(/\s+/));
      const kids = state.all(node);
      if (cls.includes('dropdown')) {
        const [first, ...rest] = kids;
        const summary = first?.tagName === 'p' ? el('summary', {}, first.children) : el('summary', {}, [text('Details')]);
        return el('details', { className: cls }, [summary, ...(first?.tagName === 'p' ? rest : kids)]);
      }
      return el('aside', { className: cls }, kids);
    },

    admonitionTitle(state, node) {
      return el('p', { className: ['admonition-title'] }, state.all(node));
    },

    details(state, node) {
      return el('details', {}, state.all(node));
    },

    summary(state, node) {
      return el('summary', {}, state.all(node));
    },

    aside(state, node) {
      return el('aside', { className: ['margin', node.kind ?? ''].filter(Boolean) }, state.all(node));
    },

    div(state, node) {
      return el('div', { className: node.class ? String(node.class).split(/\s+/) : undefined }, state.all(node));
    },

    span(state, node) {
      return el('span', { className: node.class ? String(node.class).split(/\s+/) : undefined }, state.all(node));
    },

    underline(state, node) {
      return el('span', { style: 'text-decoration:underline' }, state.all(node));
    },

    smallcaps(state, node) {
      return el('span', { style: 'font-variant:small-caps' }, state.all(node));
    },

    tabSet(state, node) {
      return el('div', { className: ['tab-set'] }, state.all(node));
    },

    tabItem(state, node) {
      return el('section', { className: ['tab-item'] }, [
        el('h4', { className: ['tab-title'] }, [text(node.title ?? '')]),
        ...state.all(node),
      ]);
    },

    grid(state, node) {
      return el('div', { className: ['grid'] }, state.all(node));
    },

    card(state, node) {
      return el('div', { className: ['card'] }, state.all(node));
    },

    cardTitle(state, node) {
      return el('div', { className: ['card-title'] }, state.all(node));
    },

    iframe(state, node) {
      const src = node.src ?? '';
      if (/^(https?:)?\/\//.test(src)) {
        // An external iframe would load from another host: link to it instead.
        return el('p', { className: ['iframe-link'] }, [
          el('a', { href: src, className: ['external'], rel: 'noopener noreferrer' }, [text(node.title ?? src)]),
        ]);
      }
      return el('iframe', { src: ctx.publicUrl(src), width: node.width, height: node.height, loading: 'lazy' });
    },

    mystTarget() {
      return null;
    },

    comment() {
      return null;
    },

    mystComment() {
      return null;
    },

    mystDirective(state, node) {
      ctx.log.warn(`${ctx.slug}: unhandled directive {${node.name}}`);
      return el('div', { className: ['unhandled'] }, [text(`{${node.name}} ${node.args ?? ''}`)]);
    },

    mystRole(state, node) {
      ctx.log.warn(`${ctx.slug}: unhandled role {${node.name}}`);
      return el('span', { className: ['unhandled'] }, [text(node.value ?? '')]);
    },

    // Bibliography nodes are replaced by the per-page reference list.
    bibliography() {
      return null;
    },
  };
}
