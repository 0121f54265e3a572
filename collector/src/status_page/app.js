// Sluice status page: polls /status (topology, queues, samplers) and /metrics (counters) once a
// second, derives rates from counter differences, and keeps a few minutes of history in memory.
"use strict";

const POLL_MS = 1000;
const HISTORY_S = 300;
const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#e5c07b", "#61afef", "#98c379", "#c678dd", "#e06c75", "#56b6c2", "#d19a66"];

let previous = null;        // { t, metrics } of the last poll, for rates
const history = [];         // [{ t, series: { label: value } }]
let drawnTopology = "";     // config JSON the SVG was drawn for

// Prometheus/OpenMetrics text → [{ name, labels, value }].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
    let l;
    while ((l = re.exec(m[2] || "")) !== null) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function keyOf(s) {
  return s.name + JSON.stringify(s.labels);
}

function sum(samples, name, match) {
  let total = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

function rate(samples, name, match) {
  if (!previous) return 0;
  const dt = (Date.now() - previous.t) / 1000;
  if (dt <= 0) return 0;
  return Math.max(0, (sum(samples, name, match) - sum(previous.metrics, name, match)) / dt);
}

function fmt(n) {
  if (!isFinite(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (Number.isInteger(n)) return String(n);
  return n.toFixed(a < 1 ? 3 : 1);
}

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const c of cells) {
      const td = el("td", typeof c === "number" ? { class: "num" } : {});
      if (c instanceof Node) td.appendChild(c); else td.textContent = typeof c === "number" ? fmt(c) : c;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function bar(fraction, text) {
  const wrap = el("span");
  const b = el("span", { class: "bar" });
  b.appendChild(el("span", { style: `width:${Math.min(100, Math.max(0, fraction * 100)).toFixed(1)}%` }));
  wrap.append(b, text);
  return wrap;
}

// Topology: receivers → pipelines → processors (in order, per pipeline) → exporters.
function drawTopology(config) {
  const receivers = Object.keys(config.receivers || {});
  const exporters = Object.keys(config.exporters || {});
  const pipelines = Object.entries(config.pipelines || {});
  const maxProcs = Math.max(0, ...pipelines.map(([, p]) => (p.processors || []).length));
  const W = 170, H = 46, GAP_X = 60, ROW = 70;
  const xPipe = 20 + W + GAP_X;
  const xProc = (i) => xPipe + (W + GAP_X) * (i + 1);
  const xExp = xProc(maxProcs);
  const rows = Math.max(receivers.length, exporters.length, pipelines.length, 1);
  const height = rows * ROW + 20;
  const width = xExp + W + 20;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, height: Math.min(height, 600), role: "img", "aria-label": "topology" });
  const y = (i, n) => 10 + (height - 20) * (i + 0.5) / n - H / 2;
  const pos = {};
  const node = (kind, name, type, x, yy) => {
    const g = el("svg:g", { class: `node ${kind}`, "data-component": `${kind}:${name}`, transform: `translate(${x},${yy})` });
    g.appendChild(el("svg:rect", { width: W, height: H, rx: 6 }));
    g.appendChild(el("svg:text", { x: 8, y: 17 }, name));
    g.appendChild(el("svg:text", { x: 8, y: 36, class: "kind" }, type));
    g.appendChild(el("svg:text", { x: W - 8, y: 17, class: "live", "text-anchor": "end", id: `live-${kind}-${name}` }, ""));
    svg.appendChild(g);
    pos[`${kind}:${name}`] = { x, y: yy };
  };
  const edges = [];
  receivers.forEach((r, i) => node("receiver", r, config.receivers[r].type, 20, y(i, receivers.length)));
  exporters.forEach((e, i) => node("exporter", e, config.exporters[e].type, xExp, y(i, exporters.length)));
  pipelines.forEach(([name, p], i) => {
    const yy = y(i, pipelines.length);
    node("pipeline", name, (p.signals || []).join(", "), xPipe, yy);
    for (const r of p.receivers || []) edges.push([`receiver:${r}`, `pipeline:${name}`]);
    let last = `pipeline:${name}`;
    (p.processors || []).forEach((proc, j) => {
      const id = `${name}/${proc}`;
      node("processor", proc, (config.processors[proc] || {}).type || "", xProc(j), yy);
      pos[`processor:${id}`] = pos[`processor:${proc}`];
      edges.push([last, `processor:${id}`]);
      last = `processor:${id}`;
    });
    for (const e of p.exporters || []) edges.push([last, `exporter:${e}`]);
  });
  for (const [a, b] of edges) {
    const p = pos[a], q = pos[b];
    if (!p || !q) continue;
    const x1 = p.x + W, y1 = p.y + H / 2, x2 = q.x, y2 = q.y + H / 2, mx = (x1 + x2) / 2;
    svg.insertBefore(el("svg:path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }), svg.firstChild);
  }
  document.getElementById("topology").replaceChildren(svg);
}

function setLive(kind, name, text) {
  const t = document.getElementById(`live-${kind}-${name}`);
  if (t) t.textContent = text;
}

function drawChart() {
  const W = 900, H = 220, L = 40, B = 20;
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, height: H, role: "img", "aria-label": "sampler p and exporter load" });
  const now = Date.now();
  const labels = [...new Set(history.flatMap((h) => Object.keys(h.series)))];
  let top = 1;
  for (const h of history) for (const v of Object.values(h.series)) top = Math.max(top, v);
  const x = (t) => L + (W - L - 10) * (1 - (now - t) / (HISTORY_S * 1000));
  const yv = (v) => 10 + (H - B - 10) * (1 - v / top);
  for (const v of [0, top / 2, top]) {
    svg.appendChild(el("svg:line", { class: "axis", x1: L, x2: W - 10, y1: yv(v), y2: yv(v) }));
    svg.appendChild(el("svg:text", { class: "axis-label", x: 4, y: yv(v) + 4 }, v.toFixed(2)));
  }
  svg.appendChild(el("svg:text", { class: "axis-label", x: L, y: H - 4 }, `-${HISTORY_S / 60} min`));
  svg.appendChild(el("svg:text", { class: "axis-label", x: W - 40, y: H - 4 }, "now"));
  const legend = [];
  labels.forEach((label, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = history.filter((h) => label in h.series).map((h) => `${x(h.t).toFixed(1)},${yv(h.series[label]).toFixed(1)}`);
    svg.appendChild(el("svg:polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2, "data-series": label }));
    const item = el("span");
    item.append(el("i", { style: `background:${color}` }), label);
    legend.push(item);
  });
  document.getElementById("chart").replaceChildren(svg);
  document.getElementById("legend").replaceChildren(...legend);
}

function render(status, samples) {
  document.getElementById("version").textContent = `v${status.version}`;
  const state = document.getElementById("state");
  state.textContent = status.state;
  state.className = `pill ${status.state}`;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;

  const reload = status.last_reload;
  const r = document.getElementById("reload");
  if (reload) {
    r.replaceChildren(
      el("span", { class: reload.result }, reload.result),
      ` at ${reload.time}` + (reload.trigger ? ` (${reload.trigger})` : "") + (reload.config_hash ? `, config ${String(reload.config_hash).slice(0, 12)}` : "") + (reload.error ? ` — ${reload.error}` : ""),
    );
  } else {
    r.textContent = "no reload yet (running the configuration it started with)";
  }

  const cfgKey = JSON.stringify(status.config);
  if (cfgKey !== drawnTopology) {
    drawTopology(status.config);
    drawnTopology = cfgKey;
  }

  const signals = ["traces", "metrics", "logs", "profiles"];
  const rx = [];
  for (const name of Object.keys(status.config.receivers || {})) {
    let total = 0;
    for (const signal of signals) {
      const m = { receiver: name, signal };
      const acc = sum(samples, "sluice_receiver_accepted_items_total", m);
      const ref = sum(samples, "sluice_receiver_refused_items_total", m);
      const per = rate(samples, "sluice_receiver_accepted_items_total", m);
      total += per;
      if (acc > 0 || ref > 0) rx.push([name, signal, per, acc, ref]);
    }
    setLive("receiver", name, `${fmt(total)}/s`);
  }
  fillTable("receivers", rx);

  const ex = [];
  for (const e of status.exporters || []) {
    const per = rate(samples, "sluice_exporter_sent_items_total", { exporter: e.name });
    const sent = sum(samples, "sluice_exporter_sent_items_total", { exporter: e.name });
    const fill = e.queue_capacity ? e.queue_items / e.queue_capacity : 0;
    ex.push([e.name, per, sent, bar(fill, `${fmt(e.queue_items)} / ${fmt(e.queue_capacity)}`), e.load, `${e.in_flight} / ${e.concurrency_limit}`]);
    setLive("exporter", e.name, `${fmt(per)}/s · q ${(fill * 100).toFixed(0)}%`);
  }
  fillTable("exporters", ex);

  fillTable("pipelines", (status.pipelines || []).map((p) => {
    setLive("pipeline", p.name, `q ${fmt(p.queued_items)}`);
    return [p.name, p.queued_items];
  }));

  fillTable("samplers", (status.samplers || []).map((s) => {
    setLive("processor", s.name, `p ${fmt(s.probability)}`);
    const loads = (s.exporter_loads || []).map((l) => `${l.exporter} ${fmt(l.load)}${l.throttled ? " (throttled)" : ""}`).join(", ");
    return [s.name, s.mode, s.probability, s.reason, s.input_rate, loads || "–"];
  }));

  const losses = [];
  for (const s of samples) {
    if (s.value <= 0) continue;
    if (s.name === "sluice_receiver_refused_items_total") losses.push([`refused by ${s.labels.receiver}`, s.labels.signal, s.labels.reason, s.value]);
    if (s.name === "sluice_dropped_items_total") losses.push([`dropped at ${s.labels.component}`, s.labels.signal, s.labels.reason, s.value]);
    if (s.name === "sluice_sampler_sampled_out_items_total") losses.push([`sampled out by ${s.labels.processor}`, s.labels.signal, s.labels.reason, s.value]);
  }
  fillTable("losses", losses);

  const series = {};
  for (const s of status.samplers || []) series[`${s.name} p`] = s.probability;
  for (const e of status.exporters || []) series[`${e.name} load`] = e.load;
  const t = Date.now();
  history.push({ t, series });
  while (history.length && history[0].t < t - HISTORY_S * 1000) history.shift();
  drawChart();
}

async function poll() {
  try {
    const [st, mt] = await Promise.all([fetch("/status", { cache: "no-store" }), fetch("/metrics", { cache: "no-store" })]);
    if (st.ok && mt.ok) {
      const status = await st.json();
      const samples = parseMetrics(await mt.text());
      render(status, samples);
      previous = { t: Date.now(), metrics: samples };
    } else {
      document.getElementById("updated").textContent = `admin server answered ${st.status} / ${mt.status}`;
    }
  } catch (e) {
    document.getElementById("updated").textContent = `admin server unreachable (${e.message}), retrying`;
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById("window").textContent = String(HISTORY_S / 60);
poll();
