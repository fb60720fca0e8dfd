// Helpers shared by the explorers (explorer.js, variants.js): stacked panels on narrow
// screens (hrtemFit, hrtemOnResize) and the plotted cells as CSV (hrtemCsv, hrtemCsvLink).
//
// hrtemFit returns a new layout for a container `width` px wide, side-by-side panels
// stacked one above the other and a long title in two lines; the given layout unchanged
// when it is wide enough.
window.hrtemNarrow = window.hrtemNarrow || 640;  // px: below this, panels stack
// On the site (its site.js defines hrtemDarkLayout) the layout also follows the theme.
window.hrtemFit = window.hrtemFit || function (layout, width) {
  const themed = window.hrtemDarkLayout ? window.hrtemDarkLayout(window.hrtemStack(layout, width)) : null;
  return themed || window.hrtemStack(layout, width);
};
window.hrtemStack = window.hrtemStack || function (layout, width) {
  const keys = Object.keys(layout).filter(k => /^xaxis\d*$/.test(k)).sort();
  if (width >= window.hrtemNarrow) return layout;
  const out = JSON.parse(JSON.stringify(layout));
  if (out.title) {
    const text = (out.title.text || "").replace(" — ", "<br>");  // a long title in two lines
    out.title = Object.assign({}, out.title, {text: text, font: Object.assign({}, out.title.font, {size: 12})});
  }
  if (keys.length < 2) return out;
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
  return out;
};
// Redraw `draw` when the container crosses the narrow breakpoint or the site's theme changes.
window.hrtemOnResize = window.hrtemOnResize || function (el, draw) {
  let narrow = el.clientWidth < window.hrtemNarrow;
  window.addEventListener("resize", () => {
    const now = el.clientWidth < window.hrtemNarrow;
    if (now !== narrow) { narrow = now; draw(); }
  });
  window.addEventListener("hrtem-theme-change", () => draw());
};
// The values a Plotly div draws, one row per cell, heatmap, box or point: trace name,
// x and y labels and the values (z; box statistics; y; error bars as low and high ends);
// images have none.
// Arrays of a figure as plain arrays: Plotly's Python package writes numeric ones as
// {dtype, bdata (base64), shape}, which is decoded here (1-D, or rows of a 2-D shape).
window.hrtemArray = window.hrtemArray || function (v) {
  if (!v || Array.isArray(v) || typeof v !== "object" || !v.bdata) return v;
  const types = {f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array,
                 u2: Uint16Array, i1: Int8Array, u1: Uint8Array};
  if (!types[v.dtype]) return [];  // a type this helper does not know: no values rather than no file
  const bytes = Uint8Array.from(atob(v.bdata), c => c.charCodeAt(0));
  const flat = Array.from(new types[v.dtype](bytes.buffer));
  const shape = String(v.shape || flat.length).split(",").map(Number);
  if (shape.length < 2) return flat;
  return Array.from({length: shape[0]}, (_, r) => flat.slice(r * shape[1], (r + 1) * shape[1]));
};
window.hrtemCsv = window.hrtemCsv || function (plots) {
  const q = v => { const s = v === null || v === undefined ? "" : String(v).replace(/<[^>]+>/g, "");
                   return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
  const rows = [["figure", "trace", "x", "y", "value", "q1", "median", "q3", "lower fence", "upper fence", "mean",
                 "low", "high"]];
  plots.forEach(([label, gd]) => (gd.data || []).forEach(spec => {
    if (spec.visible === false) return;
    const t = Object.assign({}, spec);
    ["x", "y", "z", "text", "q1", "median", "q3", "lowerfence", "upperfence", "mean"].forEach(k => {
      t[k] = window.hrtemArray(spec[k]);
    });
    const name = t.name || t.type;
    if (t.type === "heatmap") {
      (t.z || []).forEach((row, r) => row.forEach((v, c) => rows.push([label, name, t.x[c], t.y[r], v])));
    } else if (t.type === "box" && t.q1) {  // precomputed statistics
      (t.x || []).forEach((x, i) => rows.push([label, name, x, "", "", t.q1[i], t.median[i], t.q3[i],
                                                t.lowerfence[i], t.upperfence[i], t.mean ? t.mean[i] : ""]));
    } else if (t.type !== "image") {  // points (a box of raw values: its points; gaps left out)
      const n = Math.max((t.x || []).length, (t.y || []).length);
      const at = (a, i) => (Array.isArray(a) ? a[i] : a);
      // error bars (an interval around x or y) as their low and high ends
      const bar = spec.error_x && spec.error_x.visible !== false && spec.error_x.array ? ["x", spec.error_x]
        : spec.error_y && spec.error_y.visible !== false && spec.error_y.array ? ["y", spec.error_y] : null;
      const plus = bar && window.hrtemArray(bar[1].array);
      const minus = bar && (bar[1].symmetric === false ? window.hrtemArray(bar[1].arrayminus) : plus);
      for (let i = 0; i < n; i++) {
        const x = t.x ? t.x[i] : name, y = t.y ? t.y[i] : "";
        if ((x === null || x === undefined) && (y === null || y === undefined)) continue;
        const row = [label, name, x, y, at(t.text, i) ?? ""];
        if (bar) {
          const centre = bar[0] === "x" ? x : y;
          row.push("", "", "", "", "", "", centre - at(minus, i), centre + at(plus, i));
        }
        rows.push(row);
      }
    }
  }));
  return rows.map(r => r.map(q).join(",")).join("\n") + "\n";
};
// A link that downloads what `plots()` ([[label, plot div], ...]) shows now, as `file`.
window.hrtemCsvLink = window.hrtemCsvLink || function (file, plots) {
  const a = document.createElement("a");
  a.href = "#";
  a.className = "hrtem-csv";
  a.dataset.role = "csv";
  a.textContent = "download the plotted values (CSV)";
  a.addEventListener("click", ev => {
    ev.preventDefault();
    const blob = new Blob([window.hrtemCsv(plots())], {type: "text/csv"});
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = file;
    document.body.appendChild(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 0);
  });
  return a;
};
