// Access to mystmd's local content server (CONTENT_CDN) and the output folder.
//
// mystmd serves, while it runs the render command:
//   /config.json            site + project config (nav, pages)
//   /content/<slug>.json    one page: frontmatter, mdast, references
//   /public.json            list of files in the public folder (images,
//                           large notebook outputs, source downloads)
//   /<file>                 those public files
import fs from 'node:fs';
import path from 'node:path';

export class ContentServer {
  constructor(base) {
    if (!base) throw new Error('CONTENT_CDN is not set: run this through `myst build --html`');
    this.base = base.replace(/\/$/, '');
  }

  url(p) {
    return `${this.base}${p.startsWith('/') ? '' : '/'}${p}`;
  }

  async fetch(p) {
    const resp = await fetch(this.url(p));
    if (!resp.ok) throw new Error(`content server: ${resp.status} for ${p}`);
    return resp;
  }

  async json(p) {
    return (await this.fetch(p)).json();
  }

  async text(p) {
    return (await this.fetch(p)).text();
  }

  async buffer(p) {
    return Buffer.from(await (await this.fetch(p)).arrayBuffer());
  }

  async page(projectSlug, slug) {
    const prefix = projectSlug ? `/content/${projectSlug}` : '/content';
    return this.json(`${prefix}/${slug}.json`);
  }

  async publicFiles() {
    try {
      return await this.json('/public.json');
    } catch {
      return [];
    }
  }
}

/** Copy every file of mystmd's public folder into <out>/build/. */
export async function copyPublicFiles(server, outDir) {
  const files = await server.publicFiles();
  const dest = path.join(outDir, 'build');
  fs.mkdirSync(dest, { recursive: true });
  await Promise.all(
    files.map(async (f) => {
      const name = f.replace(/^\/+/, '');
      const target = path.join(dest, name);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.writeFileSync(target, await server.buffer(`/${name}`));
    }),
  );
  return new Set(files.map((f) => f.replace(/^\/+/, '')));
}

export function writeFile(outDir, rel, data) {
  const target = path.join(outDir, rel);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, data);
}
