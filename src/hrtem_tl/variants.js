// Kernel-free explorer over precomputed figure variants (hrtem_tl.variants).
// The payload holds one base Plotly figure, the controls, and per combination of
// control values the trace properties and layout entries that differ from the base.
// Controls are ordered by precedence (data source first): an option is disabled when no
// variant has it together with the current choices of the controls before it, and
// after a change the controls after it move to their first valid option if needed.
window.hrtemVariants = window.hrtemVariants || function (id) {
  const root = document.getElementById(id);
  const payload = JSON.parse(document.getElementById(id + "-data").textContent);
  const names = payload.controls.map(c => c.name);
  const state = Object.fromEntries(payload.controls.map(c => [c.name, c.default]));
  const keyOf = s => names.map(n => s[n]).join("|");
  const prefixes = new Set();
  Object.keys(payload.variants).forEach(k => {
    const parts = k.split("|");
    parts.forEach((_, i) => prefixes.add(parts.slice(0, i + 1).join("|")));
  });
  const prefixOf = (s, upto) => names.slice(0, upto + 1).map(n => s[n]).join("|");
  const selects = {};
  const form = document.createElement("form");
  form.className = "hrtem-controls";
  form.setAttribute("aria-label", "explorer controls");
  payload.controls.forEach(c => {
    const label = document.createElement("label");
    label.className = "hrtem-control";
    label.textContent = c.label + " ";
    const s = document.createElement("select");
    s.name = c.name;
    s.dataset.control = c.name;
    c.options.forEach(([value, title]) => {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = title;
      s.appendChild(o);
    });
    s.value = state[c.name];
    s.addEventListener("change", () => { state[c.name] = s.value; repair(); draw(); });
    selects[c.name] = s;
    label.appendChild(s);
    if (payload.controls.length > 0) form.appendChild(label);
  });
  const plot = document.createElement("div");
  plot.className = "hrtem-plot";
  plot.dataset.role = "figure";
  const note = document.createElement("p");
  note.className = "hrtem-note";
  root.append(form, plot, note, hrtemCsvLink(id + ".csv", () => [["figure", plot]]));

  // After a change, keep the chosen value and the ones before it; move later controls
  // to their first option that still leads to a variant.
  function repair() {
    names.forEach((n, i) => {
      if (prefixes.has(prefixOf(state, i))) return;
      const c = payload.controls[i];
      const ok = c.options.map(o => o[0]).find(v => prefixes.has(prefixOf({...state, [n]: v}, i)));
      if (ok !== undefined) { state[n] = ok; selects[n].value = ok; }
    });
  }
  function setPath(obj, path, value) {
    const parts = path.split(".");
    let o = obj;
    parts.slice(0, -1).forEach(p => { if (typeof o[p] !== "object" || o[p] === null) o[p] = {}; o = o[p]; });
    o[parts[parts.length - 1]] = value;
  }
  function draw() {
    const v = payload.variants[keyOf(state)];
    const data = payload.figure.data.map((t, i) => Object.assign({}, t, v.traces[i] || {}));
    const layout = JSON.parse(JSON.stringify(payload.figure.layout));
    Object.entries(v.layout || {}).forEach(([path, value]) => setPath(layout, path, value));
    Plotly.react(plot, data, hrtemFit(layout, root.clientWidth), {responsive: true, displaylogo: false});
    root.dataset.key = keyOf(state);
    note.textContent = (v.note || "") + (payload.note ? " " + payload.note : "");
    // grey out options that no variant has with the choices before them
    payload.controls.forEach((c, i) => {
      [...selects[c.name].options].forEach(o => {
        o.disabled = !prefixes.has(prefixOf({...state, [c.name]: o.value}, i));
      });
    });
  }
  draw();
  hrtemOnResize(root, draw);
};
