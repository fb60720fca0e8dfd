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
  if (payload.profiles.length > 1) select("profile", "data source", payload.profiles, state.profile, payload.sources);
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
  let sizes = null, agree = null;
  if (payload.sizes) { sizes = el("div", {class: "hrtem-plot", "data-role": "sizes"}); root.appendChild(sizes); }
  root.appendChild(note);
  if (payload.agreement) { agree = el("div", {class: "hrtem-plot", "data-role": "agreement"}); root.appendChild(agree); }
  root.appendChild(hrtemCsvLink(payload.series + "-explorer.csv", () =>
    [["matrices", plot], ["sizes", sizes], ["agreement", agree]].filter(([, d]) => d && d.data)));
  const metricSelect = controls.querySelector("[data-control=metric]");
  const figure = payload.figure;

  function key() {
    const subset = payload.freezing.filter(m => state.freezing.has(m)).join("+");
    return [state.profile, subset, state.metric, state.reduction].join("|");
  }
  // a metric that the chosen source lacks is disabled; the choice falls back to loss
  function checkMetric() {
    const have = payload.metrics_by_profile[state.profile];
    [...metricSelect.options].forEach(o => { o.disabled = !have.includes(o.value); });
    if (!have.includes(state.metric)) {
      const lacked = state.metric;
      state.metric = "loss"; metricSelect.value = "loss";
      return lacked;
    }
    return null;
  }
  function draw() {
    const fellBack = checkMetric();
    const cells = payload.matrices[key()];
    const spread = payload.spread[key().split("|").slice(0, 3).join("|")];
    const data = figure.data.map((trace, i) => {
      const stage = i === 0 ? "pretrain" : "transfer";
      const c = Object.assign({value: cells[stage]}, spread[stage]);
      const custom = c.value.map((row, r) => row.map((_, k) => [c.count[r][k], c.q25[r][k], c.q75[r][k]]));
      const hover = trace.hovertemplate.replace(/<br>[a-z]+ %\{z/, "<br>" + state.reduction + " %{z");
      return Object.assign({}, trace, {z: c.value, customdata: custom, hovertemplate: hover});
    });
    const layout = JSON.parse(JSON.stringify(figure.layout));
    layout.coloraxis.reversescale = !payload.higher_is_better[state.metric];  // the better end is always yellow
    layout.coloraxis.colorbar = {title: {text: state.reduction + "<br>" + state.metric}};
    layout.title.text = payload.titles[state.metric] + " — " + payload.sources[state.profile];
    Plotly.react(plot, data, hrtemFit(layout, root.clientWidth), {responsive: true, displaylogo: false});
    root.dataset.key = key();
    note.textContent = (fellBack ? "This source has no " + payload.titles[fellBack] + " (the original released losses only); showing loss. " : "") +
      payload.sources[state.profile] + ": " + payload.scale[state.profile] +
      ". Cells: " + state.reduction + " over the models that match the chosen freezing modes; hover for counts and spread.";
    if (sizes) drawSizes();
    if (agree) drawAgreement();
  }
  function drawSizes() {
    // precomputed boxes per source, freezing subset, metric, stage and trained size
    const subset = payload.freezing.filter(m => state.freezing.has(m)).join("+");
    const traces = [];
    [["pretrain", "x"], ["transfer", "x2"]].forEach(([stage, ax]) => {
      ["small", "large"].forEach((group, g) => {
        const boxes = payload.sizes[[state.profile, subset, state.metric, stage, group].join("|")] || {};
        const xs = ["small", "large"].filter(s => boxes[s]);
        const col = i => xs.map(s => boxes[s][i]);
        traces.push({type: "box", name: "trained on " + group + " particles", x: xs.map(s => s + " particles"),
                     q1: col(0), median: col(1), q3: col(2), mean: col(3), lowerfence: col(4), upperfence: col(5),
                     hovertext: col(6).map(n => n + " models"), hoverinfo: "y+text",
                     xaxis: ax, yaxis: ax === "x" ? "y" : "y2", marker: {color: g ? "#d95f02" : "#1b9e77"},
                     legendgroup: group, showlegend: stage === "pretrain", offsetgroup: group});
      });
    });
    Plotly.react(sizes, traces, hrtemFit({
      boxmode: "group", height: 360, margin: {l: 60, r: 20, t: 50, b: 50},
      grid: {rows: 1, columns: 2, pattern: "independent"},
      annotations: [
        {text: "after pretraining, by pretraining size", xref: "x domain", yref: "paper", x: 0.5, y: 1.12, showarrow: false},
        {text: "after transfer learning, by transfer size", xref: "x2 domain", yref: "paper", x: 0.5, y: 1.12, showarrow: false}],
      xaxis: {}, xaxis2: {}, yaxis: {title: {text: state.metric}}, yaxis2: {matches: "y"},
      legend: {orientation: "h", y: -0.2},
    }, root.clientWidth), {responsive: true, displaylogo: false});
  }
  function drawAgreement() {
    // ranks of our loss cells against the original's, for the chosen freezing and reduction
    const a = payload.agreement;
    const subset = payload.freezing.filter(m => state.freezing.has(m)).join("+");
    const v = a.values[subset + "|" + state.reduction];
    if (!v) { Plotly.purge(agree); return; }
    const traces = [], annotations = [];
    [["pretrain", "x", "after pretraining"], ["transfer", "x2", "after transfer learning"]].forEach(([stage, ax, title]) => {
      const s = v[stage];
      traces.push({type: "scatter", mode: "markers", x: s.ours, y: s.original, xaxis: ax, yaxis: ax === "x" ? "y" : "y2",
                   text: s.cells.map(([r, c]) => a.labels[r] + " → " + a.labels[c]), name: title, showlegend: false,
                   hovertemplate: "%{text}<br>our rank %{x}, original rank %{y}<extra></extra>",
                   marker: {size: 7, color: ax === "x" ? "#1b9e77" : "#7570b3"}});
      annotations.push({text: title + ": Spearman ρ = " + (s.rho === null ? "n/a" : s.rho.toFixed(2)) + " (" + s.n + " cells)",
                        xref: ax + " domain", yref: "paper", x: 0.5, y: 1.12, showarrow: false});
    });
    Plotly.react(agree, traces, hrtemFit({
      height: 340, margin: {l: 60, r: 20, t: 60, b: 50}, grid: {rows: 1, columns: 2, pattern: "independent"}, annotations,
      xaxis: {title: {text: "rank of our loss (" + a.ours + ")"}}, xaxis2: {title: {text: "rank of our loss (" + a.ours + ")"}},
      yaxis: {title: {text: "rank of the original's loss"}},
      title: {text: "Do we rank the cells as the original does? — loss ranks; the two losses differ in definition", font: {size: 13}},
    }, root.clientWidth), {responsive: true, displaylogo: false});
  }
  draw();
  hrtemOnResize(root, draw);
};
