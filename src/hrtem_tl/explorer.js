// Static confusion-matrix explorer: controls + precomputed matrices -> Plotly.react.
// Embedded by hrtem_tl.explore.explorer_html; needs window.Plotly, no kernel.
window.hrtemExplorer = window.hrtemExplorer || function (id) {
  const root = document.getElementById(id);
  const payload = JSON.parse(document.getElementById(id + "-data").textContent);
  const state = {profile: payload.profiles[0], freezing: new Set(payload.freezing),
                 metric: "loss", reduction: "median"};
  const el = (tag, attrs = {}, text = "") => {
    const e = document.createElement(tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    if (text) e.textContent = text;
    return e;
  };
  const controls = el("form", {class: "hrtem-controls", "aria-label": "explorer controls"});
  const select = (name, label, options, value, titles) => {
    const wrap = el("label", {class: "hrtem-control"}, label + " ");
    const s = el("select", {name: name, "data-control": name});
    options.forEach(o => { const opt = el("option", {value: o}, titles ? titles[o] : o); s.appendChild(opt); });
    s.value = value;
    s.addEventListener("change", () => { state[name] = s.value; draw(); });
    wrap.appendChild(s);
    controls.appendChild(wrap);
  };
  if (payload.profiles.length > 1) select("profile", "data profile", payload.profiles, state.profile);
  const fz = el("fieldset", {class: "hrtem-control"});
  fz.appendChild(el("legend", {}, "weights frozen during transfer"));
  payload.freezing.forEach(mode => {
    const lab = el("label", {});
    const box = el("input", {type: "checkbox", name: "freezing", value: mode, "data-control": "freezing-" + mode});
    box.checked = true;
    box.addEventListener("change", () => {
      if (!box.checked && state.freezing.size === 1) { box.checked = true; return; }  // keep one
      box.checked ? state.freezing.add(mode) : state.freezing.delete(mode);
      draw();
    });
    lab.appendChild(box);
    lab.appendChild(document.createTextNode(" " + mode));
    fz.appendChild(lab);
  });
  controls.appendChild(fz);
  select("metric", "metric", payload.metrics, state.metric, payload.titles);
  select("reduction", "reduction over models", payload.reductions, state.reduction);
  const plot = el("div", {class: "hrtem-plot", "data-role": "matrices"});
  const note = el("p", {class: "hrtem-note"});
  root.append(controls, plot);
  let sizes = null;
  if (payload.sizes) { sizes = el("div", {class: "hrtem-plot", "data-role": "sizes"}); root.appendChild(sizes); }
  root.appendChild(note);
  const figure = payload.figure;

  function key() {
    const subset = payload.freezing.filter(m => state.freezing.has(m)).join("+");
    return [state.profile, subset, state.metric, state.reduction].join("|");
  }
  function draw() {
    const cells = payload.matrices[key()];
    const data = figure.data.map((trace, i) => {
      const c = cells[i === 0 ? "pretrain" : "transfer"];
      const custom = c.value.map((row, r) => row.map((_, k) => [c.count[r][k], c.q25[r][k], c.q75[r][k]]));
      const hover = trace.hovertemplate.replace(/<br>[a-z]+ %\{z/, "<br>" + state.reduction + " %{z");
      return Object.assign({}, trace, {z: c.value, customdata: custom, hovertemplate: hover});
    });
    const layout = JSON.parse(JSON.stringify(figure.layout));
    layout.coloraxis.reversescale = !payload.higher_is_better[state.metric];  // the better end is always yellow
    layout.coloraxis.colorbar = {title: {text: state.reduction + "<br>" + state.metric}};
    layout.title.text = payload.titles[state.metric] + " — data profile: " + state.profile;
    Plotly.react(plot, data, layout, {responsive: true, displaylogo: false});
    root.dataset.key = key();
    note.textContent = "Data profile " + state.profile + ": " + payload.scale[state.profile] +
      ". Cells: " + state.reduction + " over the models that match the chosen freezing modes; hover for counts and spread.";
    if (sizes) drawSizes();
  }
  function drawSizes() {
    // a pretrained model counts once if any of its runs' freezing modes is chosen
    const chosen = r => r.stage === "pretrain" ? r.freezing.split("+").some(f => state.freezing.has(f))
                                                : state.freezing.has(r.freezing);
    const rows = payload.sizes.filter(r => r.profile === state.profile && chosen(r));
    const traces = [];
    [["pretrain", "x"], ["transfer", "x2"]].forEach(([stage, ax]) => {
      ["small", "large"].forEach((group, g) => {
        const sel = rows.filter(r => r.stage === stage && r.group === group);
        traces.push({type: "box", name: "trained on " + group + " particles", x: sel.map(r => r.eval_size + " particles"),
                     y: sel.map(r => r[state.metric]), xaxis: ax, yaxis: ax === "x" ? "y" : "y2",
                     boxpoints: "outliers", marker: {color: g ? "#d95f02" : "#1b9e77"},
                     legendgroup: group, showlegend: stage === "pretrain", offsetgroup: group});
      });
    });
    Plotly.react(sizes, traces, {
      boxmode: "group", height: 360, margin: {l: 60, r: 20, t: 50, b: 50},
      grid: {rows: 1, columns: 2, pattern: "independent"},
      annotations: [
        {text: "after pretraining, by pretraining size", xref: "x domain", yref: "paper", x: 0.5, y: 1.12, showarrow: false},
        {text: "after transfer learning, by transfer size", xref: "x2 domain", yref: "paper", x: 0.5, y: 1.12, showarrow: false}],
      yaxis: {title: {text: state.metric}}, yaxis2: {matches: "y"},
      legend: {orientation: "h", y: -0.2},
    }, {responsive: true, displaylogo: false});
  }
  draw();
};
