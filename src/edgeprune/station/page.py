"""The dashboard's page: plain HTML and one small script, kept as Python strings.

Why not a front-end framework or a static folder: the station runs on a machine without internet
(no CDN), there is no build step to run, and strings inside the package cannot go missing from a
wheel the way non-Python files can. The script polls the JSON API once a second, draws the chart
as inline SVG, and writes every value with textContent (a file name can never become markup).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeprune station</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 18px; display: flex; gap: 18px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header .muted { color: #aab; }
  main { padding: 14px 18px; display: grid; gap: 14px; grid-template-columns: repeat(auto-fit, minmax(430px, 1fr)); }
  section { background: #fff; border-radius: 6px; padding: 12px 14px; box-shadow: 0 1px 2px #0002; }
  h2 { font-size: 14px; margin: 0 0 8px; color: #556; text-transform: uppercase; letter-spacing: .04em; }
  .tiles { display: grid; grid-template-columns: repeat(4, 1fr); gap: 8px; }
  .tile { background: #f4f5f7; border-radius: 4px; padding: 6px 8px; }
  .tile .v { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
  .tile .k { font-size: 12px; color: #667; }
  .up { color: #17803d; } .down { color: #c0262d; } .off { color: #889; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  td, th { padding: 3px 6px; text-align: left; border-bottom: 1px solid #eee; font-size: 13px; }
  img.thumb { width: 48px; height: 48px; object-fit: cover; border-radius: 3px; background: #ddd; display: block; }
  .OK { color: #17803d; font-weight: 600; } .DEFECT { color: #c0262d; font-weight: 600; }
  .REVIEW { color: #b26a00; font-weight: 600; } .ERROR { color: #6b21a8; font-weight: 600; }
  .review-item { display: flex; gap: 10px; align-items: center; padding: 6px 0; border-bottom: 1px solid #eee; }
  .mono { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
  #message { min-height: 1.4em; }
  svg text { font-size: 11px; fill: #667; }
</style>
</head>
<body>
<header><h1>edgeprune station</h1><span id="state" class="muted">connecting…</span>
  <span id="source" class="muted"></span><span id="conn" class="muted"></span></header>
<main>
  <section>
    <h2>Line</h2>
    <div class="tiles">
      <div class="tile"><div class="v" id="throughput">–</div><div class="k">images/s (last 10 s)</div></div>
      <div class="tile"><div class="v" id="decided">–</div><div class="k">decisions in the log</div></div>
      <div class="tile"><div class="v" id="defect-rate">–</div><div class="k">defect rate (last 5 min)</div></div>
      <div class="tile"><div class="v" id="review-backlog">–</div><div class="k">review backlog</div></div>
      <div class="tile"><div class="v" id="latency-p50">–</div><div class="k">latency p50</div></div>
      <div class="tile"><div class="v" id="latency-p99">–</div><div class="k">latency p99</div></div>
      <div class="tile"><div class="v" id="live-accuracy">–</div><div class="k" id="live-accuracy-note">live accuracy</div></div>
      <div class="tile"><div class="v" id="errors">–</div><div class="k">unreadable images</div></div>
    </div>
    <svg id="chart" width="100%" height="150" viewBox="0 0 600 150" preserveAspectRatio="none"
         role="img" aria-label="throughput and defect rate over the last minutes"></svg>
    <div class="k"><span style="color:#2563eb">■</span> images/s &nbsp; <span style="color:#c0262d">■</span> defect rate
      (<span id="chart-window">5 min</span>, per <span id="chart-bucket">5 s</span>)</div>
  </section>
  <section>
    <h2>Links and model</h2>
    <table>
      <tr><th>PLC</th><td id="plc-state">–</td><td>backlog <b id="plc-backlog">–</b></td></tr>
      <tr><th>MQTT</th><td id="mqtt-state">–</td><td id="mqtt-summaries"></td></tr>
      <tr><th>Model</th><td id="model-name">–</td><td>accuracy (metadata) <b id="model-accuracy">–</b></td></tr>
      <tr><th>sha256</th><td colspan="2" class="mono" id="model-sha">–</td></tr>
      <tr><th>Gate</th><td colspan="2" id="gate">–</td></tr>
      <tr><th>Alarms</th><td colspan="2" id="alarms">–</td></tr>
      <tr><th>Drift</th><td id="drift-state">–</td><td><button id="drift-ack" hidden>Acknowledge</button>
        <span id="drift-psi" class="muted"></span></td></tr>
    </table>
  </section>
  <section>
    <h2>Last decisions</h2>
    <table><thead><tr><th></th><th>#</th><th>decision</th><th>class</th><th>p</th><th>true</th><th>ms</th></tr></thead>
      <tbody id="decisions"></tbody></table>
  </section>
  <section>
    <h2>Review queue</h2>
    <label>Token <input id="token" type="password" autocomplete="off" size="24"
      placeholder="needed to label"></label>
    <div id="message"></div>
    <div id="review"></div>
  </section>
</main>
<script src="/app.js"></script>
</body>
</html>
"""

APP_JS = r"""'use strict';
const $ = (id) => document.getElementById(id);
const SHOWN = 12;
let lastId = null;
let recent = [];
let reviewClasses = '';
let classes = [];

const tokenBox = $('token');
tokenBox.value = sessionStorage.getItem('edgeprune-token') || '';
tokenBox.addEventListener('input', () => sessionStorage.setItem('edgeprune-token', tokenBox.value));

const pct = (x) => (x == null ? '–' : (100 * x).toFixed(1) + ' %');
const ms = (x) => (x == null ? '–' : x.toFixed(1) + ' ms');
const text = (id, value) => { $(id).textContent = value; };
function link(id, up, label) {
  const el = $(id);
  el.textContent = label;
  el.className = up == null ? 'off' : (up ? 'up' : 'down');
}

async function getJSON(url) {
  const r = await fetch(url, { cache: 'no-store' });
  if (!r.ok) throw new Error(url + ' answered ' + r.status);
  return r.json();
}

function cell(row, value, cls) {
  const td = document.createElement('td');
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function thumb(id) {
  const img = document.createElement('img');
  img.className = 'thumb';
  img.alt = 'part ' + id;
  img.src = '/api/images/' + id;
  img.onerror = () => { img.style.visibility = 'hidden'; };
  return img;
}

function drawChart(timeline) {
  const svg = $('chart');
  const W = 600, H = 150, pad = 18;
  const pts = timeline.points;
  const rates = pts.map((p) => p.images / timeline.bucket_s);
  const defects = pts.map((p) => (p.judged ? p.defects / p.judged : null));
  const top = Math.max(1, ...rates);
  const x = (i) => pad + (i * (W - 2 * pad)) / Math.max(1, pts.length - 1);
  const path = (values, scale) => values.map((v, i) => (v == null ? null : [x(i), H - pad - v * scale]))
    .filter(Boolean).map((p, i) => (i ? 'L' : 'M') + p[0].toFixed(1) + ' ' + p[1].toFixed(1)).join(' ');
  const NS = 'http://www.w3.org/2000/svg';
  svg.replaceChildren();
  const add = (tag, attrs, content) => {
    const el = document.createElementNS(NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (content != null) el.textContent = content;
    svg.appendChild(el);
  };
  add('line', { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: '#ccd' });
  add('path', { d: path(rates, (H - 2 * pad) / top), fill: 'none', stroke: '#2563eb', 'stroke-width': 2 });
  add('path', { d: path(defects, H - 2 * pad), fill: 'none', stroke: '#c0262d', 'stroke-width': 1.5 });
  add('text', { x: pad, y: 12 }, top.toFixed(1) + ' images/s');
  add('text', { x: W - pad - 60, y: 12 }, '100 % defects');
  add('text', { x: pad, y: H - 4 }, '-' + Math.round(timeline.window_s / 60) + ' min');
  add('text', { x: W - pad - 20, y: H - 4 }, 'now');
  text('chart-window', Math.round(timeline.window_s / 60) + ' min');
  text('chart-bucket', timeline.bucket_s + ' s');
}

async function refreshStatus() {
  const s = await getJSON('/api/status');
  text('state', s.state);
  text('source', s.source);
  const pts = s.timeline.points;
  text('throughput', s.throughput_per_s == null ? '–' : s.throughput_per_s.toFixed(1));
  const total = s.total;
  text('decided', String(total.OK + total.DEFECT + total.REVIEW + total.ERROR));
  const judged = pts.reduce((a, p) => a + p.judged, 0);
  text('defect-rate', judged ? pct(pts.reduce((a, p) => a + p.defects, 0) / judged) : '–');
  text('review-backlog', String(s.review_backlog));
  text('latency-p50', ms(s.latency_ms_p50));
  text('latency-p99', ms(s.latency_ms_p99));
  text('errors', String(total.ERROR));
  if (s.live.accuracy != null) {
    text('live-accuracy', pct(s.live.accuracy));
    text('live-accuracy-note', 'live accuracy, ' + s.live.labelled + ' parts with known class');
  } else if (s.live.ok_defect_accuracy != null) {
    text('live-accuracy', pct(s.live.ok_defect_accuracy));
    text('live-accuracy-note', 'live OK/DEFECT accuracy, ' + s.live.labelled + ' parts');
  } else {
    text('live-accuracy', '–');
    text('live-accuracy-note', 'live accuracy (no true labels known)');
  }
  if (s.plc) {
    link('plc-state', s.plc.connected, s.plc.adapter + (s.plc.connected ? ' connected' : ' DOWN' + (s.plc.last_error ? ': ' + s.plc.last_error : '')));
    text('plc-backlog', String(s.plc.backlog));
  } else { link('plc-state', null, 'none configured'); text('plc-backlog', '–'); }
  if (s.mqtt) {
    link('mqtt-state', s.mqtt.connected, s.mqtt.connected ? 'connected' : 'DOWN (buffering)');
    text('mqtt-summaries', s.mqtt.summaries + ' summaries sent');
  } else { link('mqtt-state', null, 'none configured'); text('mqtt-summaries', ''); }
  const m = s.model_info;
  text('model-name', m.name + ' (' + [m.architecture, m.source_checkpoint && 'from ' + m.source_checkpoint, m.runtime]
    .filter(Boolean).join(', ') + ')');
  text('model-accuracy', m.test_accuracy == null ? 'not recorded' : pct(m.test_accuracy));
  text('model-sha', m.sha256);
  const g = s.gate;
  text('gate', g.gate_set ? 'accuracy ≥ ' + g.min_accuracy + ', defect recall ≥ ' + g.min_defect_recall +
    (g.max_latency_ms ? ', latency ≤ ' + g.max_latency_ms + ' ms' : '') : 'no gate set: uploads refused');
  text('alarms', s.alarms.length ? s.alarms.map((a) => a.kind + ': ' + a.message).slice(0, 2).join(' | ') : 'none');
  const d = s.drift;
  link('drift-state', d.state === 'off' ? null : d.state === 'ok', d.state === 'off' ? 'not watched: ' + d.reason :
    d.state === 'drift' ? 'INPUT DRIFT (' + d.worst + ')' + (d.action === 'review' ? ': every part to REVIEW' : '') :
    d.psi ? 'ok' : 'ok (window ' + d.window_filled + ' / ' + d.window + ')');
  text('drift-psi', d.psi ? 'PSI ' + Object.entries(d.psi).map(([k, v]) => k + ' ' + v.toFixed(2)).join(', ') +
    ' (threshold ' + d.threshold + ')' : '');
  $('drift-ack').hidden = d.state !== 'drift';
  classes = m.class_names;
  drawChart(s.timeline);
  if (lastId === null) lastId = Math.max(0, s.last_id - SHOWN);
}

async function refreshDecisions() {
  if (lastId === null) return;
  const rows = await getJSON('/api/decisions?since=' + lastId + '&limit=200');
  if (!rows.length) return;
  lastId = rows[rows.length - 1].id;
  recent = recent.concat(rows).slice(-SHOWN);
  const body = $('decisions');
  body.replaceChildren();
  for (const r of recent.slice().reverse()) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.appendChild(thumb(r.id));
    tr.appendChild(td);
    cell(tr, String(r.id));
    cell(tr, r.decision, r.decision);
    cell(tr, r.predicted_class || '–');
    cell(tr, r.probability == null ? '–' : r.probability.toFixed(2));
    cell(tr, r.true_class || '');
    cell(tr, r.latency_ms == null ? '–' : r.latency_ms.toFixed(1));
    body.appendChild(tr);
  }
}

async function sendLabel(id, label) {
  const r = await fetch('/api/review/' + id, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + tokenBox.value },
    body: JSON.stringify({ label }),
  });
  const answer = await r.json().catch(() => ({}));
  text('message', r.ok ? 'part ' + id + ' labelled ' + label : 'not saved (' + r.status + '): ' + (answer.detail || ''));
  $('message').className = r.ok ? 'up' : 'down';
  if (r.ok) await refreshReview();
}

function reviewItem(item, classes) {
  const div = document.createElement('div');
  div.className = 'review-item';
  div.dataset.id = item.id;
  div.appendChild(thumb(item.id));
  const info = document.createElement('span');
  info.textContent = '#' + item.id + ' model says ' + item.predicted_class + ' (' + (item.probability || 0).toFixed(2) + ')';
  div.appendChild(info);
  const select = document.createElement('select');
  select.className = 'review-label';
  for (const c of classes) {
    const opt = document.createElement('option');
    opt.value = c; opt.textContent = c;
    if (c === item.predicted_class) opt.selected = true;
    select.appendChild(opt);
  }
  div.appendChild(select);
  const button = document.createElement('button');
  button.className = 'review-submit';
  button.textContent = 'Label';
  button.addEventListener('click', () => sendLabel(item.id, select.value));
  div.appendChild(button);
  return div;
}

// Items are updated in place (gone ones removed, new ones appended), so the one a person is
// labelling never jumps or loses its choice while parts keep arriving.
async function refreshReview() {
  const q = await getJSON('/api/review?limit=8');
  const box = $('review');
  const classKey = q.classes.join(',');
  if (classKey !== reviewClasses) { box.replaceChildren(); reviewClasses = classKey; }  // a new model
  const wanted = new Set(q.items.map((i) => String(i.id)));
  for (const div of [...box.querySelectorAll('.review-item')]) {
    if (!wanted.has(div.dataset.id)) div.remove();
  }
  const shown = new Set([...box.querySelectorAll('.review-item')].map((d) => d.dataset.id));
  for (const item of q.items) {
    if (!shown.has(String(item.id))) box.appendChild(reviewItem(item, q.classes));
  }
  let empty = $('review-empty');
  if (!empty) { empty = document.createElement('div'); empty.id = 'review-empty'; box.parentNode.appendChild(empty); }
  empty.textContent = q.items.length ? (q.backlog > q.items.length ? (q.backlog - q.items.length) + ' more waiting' : '') : 'nothing to review';
}

$('drift-ack').addEventListener('click', async () => {
  const r = await fetch('/api/drift/acknowledge', { method: 'POST', headers: { 'Authorization': 'Bearer ' + tokenBox.value } });
  const answer = await r.json().catch(() => ({}));
  text('message', r.ok ? 'drift alarm acknowledged' : 'not acknowledged (' + r.status + '): ' + (answer.detail || ''));
  $('message').className = r.ok ? 'up' : 'down';
});

async function tick() {
  try {
    await refreshStatus();
    await Promise.all([refreshDecisions(), refreshReview()]);
    text('conn', 'live');
  } catch (e) {
    text('conn', 'disconnected: ' + e.message);
  }
  setTimeout(tick, 1000);
}
tick();
"""
