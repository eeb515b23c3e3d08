"""The fleet page: plain HTML and one small script, kept as Python strings (as the station's
dashboard, station/page.py, and for the same reasons: no CDN on a factory network, no build step,
nothing to go missing from a wheel). The script polls /api/fleet every 2 s, draws the charts as
inline SVG and writes every value with textContent (a station id can never become markup): the
stations, the loop (registry, roll-outs, retrains) and which model runs where."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeprune fleet</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 18px; display: flex; gap: 18px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; } header .muted { color: #aab; }
  main { padding: 14px 18px; display: grid; gap: 14px; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); }
  section { background: #fff; border-radius: 6px; padding: 12px 14px; box-shadow: 0 1px 2px #0002; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 14px; margin: 0 0 8px; color: #556; text-transform: uppercase; letter-spacing: .04em; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  td, th { padding: 4px 6px; text-align: left; border-bottom: 1px solid #eee; font-size: 13px; }
  .alarm { color: #c0262d; font-weight: 600; } .ok { color: #17803d; } .muted { color: #889; }
  .mono { font-family: ui-monospace, monospace; font-size: 12px; }
  svg text { font-size: 11px; fill: #667; }
  #message { min-height: 1.4em; }
  .badge { display: inline-block; white-space: nowrap; padding: 1px 8px; border-radius: 9px; font-size: 12px; background: #e5e7eb; color: #374151; }
  .badge.state-shadow, .badge.state-shadowing, .badge.state-shadow-passed { background: #dbeafe; color: #1e40af; }
  .badge.state-canary, .badge.state-switched, .badge.state-waves { background: #fef3c7; color: #92400e; }
  .badge.state-rolled-out, .badge.state-watched, .badge.state-done { background: #dcfce7; color: #166534; }
  .badge.state-rejected, .badge.state-stopped, .badge.state-rolled-back, .badge.state-rolling-back { background: #fee2e2; color: #991b1b; }
  .stages { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; margin: 8px 0; }
  .stages .stage { padding: 3px 10px; border-radius: 4px; background: #eef0f3; color: #889; }
  .stages .stage.passed { background: #dcfce7; color: #166534; }
  .stages .stage.current { background: #2563eb; color: #fff; font-weight: 600; }
  .stages .stage.current.failed { background: #c0262d; }
  .stages .arrow { color: #aab; }
  td.wave { white-space: nowrap; }
  h3 { font-size: 13px; margin: 10px 0 4px; color: #556; }
</style>
</head>
<body>
<header><h1>edgeprune fleet</h1><span id="summary" class="muted">connecting…</span>
  <span id="ingest" class="muted"></span></header>
<main>
  <section class="wide">
    <h2>Stations</h2>
    <table><thead><tr><th>station</th><th>line</th><th>last seen</th><th>decisions</th><th>images/h</th>
      <th>defect rate</th><th>review rate</th><th>latency p50 / p99</th><th>PLC backlog</th><th>model</th>
      <th>live accuracy</th><th>drift</th><th>alarms</th><th></th></tr></thead>
      <tbody id="stations"></tbody></table>
    <label>Token <input id="token" type="password" autocomplete="off" size="24" placeholder="needed to acknowledge"></label>
    <span id="message"></span>
  </section>
  <section>
    <h2>Defect rate per line (last 24 h, hourly)</h2>
    <svg id="lines-chart" width="100%" height="200" viewBox="0 0 600 200" preserveAspectRatio="none"
         role="img" aria-label="defect rate over time per line"></svg>
    <div id="lines-legend"></div>
  </section>
  <section>
    <h2>Class distribution (last 24 h)</h2>
    <svg id="classes-chart" width="100%" height="200" viewBox="0 0 600 200" role="img"
         aria-label="predicted classes over every station"></svg>
  </section>
  <section class="wide">
    <h2>Roll-outs</h2>
    <div id="rollout"><span class="muted">no roll-out yet</span></div>
    <h3>Earlier roll-outs</h3>
    <table><thead><tr><th>#</th><th>model</th><th>state</th><th>stage</th><th>reason</th><th>updated</th></tr></thead>
      <tbody id="rollouts"></tbody></table>
  </section>
  <section class="wide">
    <h2>Models</h2>
    <table><thead><tr><th>model sha256</th><th>name</th><th>registry</th><th>stations</th></tr></thead>
      <tbody id="models"></tbody></table>
  </section>
  <section class="wide">
    <h2>Registry</h2>
    <table><thead><tr><th>model</th><th>name</th><th>state</th><th>parent</th><th>accuracy</th><th>defect recall</th>
      <th>false rejects</th><th>size</th><th>latency</th><th>fleet labels</th><th>registered</th><th>last change</th></tr></thead>
      <tbody id="registry"></tbody></table>
  </section>
  <section class="wide">
    <h2>Retrains</h2>
    <table><thead><tr><th>#</th><th>trigger</th><th>why</th><th>started</th><th>took</th><th>state</th>
      <th>fleet labels</th><th>model</th><th>error</th></tr></thead><tbody id="retrains"></tbody></table>
  </section>
</main>
<script src="/app.js"></script>
</body>
</html>
"""

APP_JS = r"""
'use strict';
const SVG = 'http://www.w3.org/2000/svg';
const COLORS = ['#2563eb', '#c0262d', '#17803d', '#b26a00', '#6b21a8', '#0e7490', '#be185d', '#4d7c0f'];
const $ = id => document.getElementById(id);
const pct = v => v === null || v === undefined ? '–' : (100 * v).toFixed(1) + ' %';
const ms = v => v === null || v === undefined ? '–' : v.toFixed(1);
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function svg(tag, attrs, text) { const e = document.createElementNS(SVG, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; }
function ago(s) { return s < 90 ? s.toFixed(0) + ' s ago' : s < 5400 ? (s / 60).toFixed(0) + ' min ago' : (s / 3600).toFixed(1) + ' h ago'; }

async function acknowledge(id) {
  const r = await fetch('/api/stations/' + encodeURIComponent(id) + '/acknowledge', {method: 'POST',
    headers: {'Authorization': 'Bearer ' + $('token').value}});
  const body = await r.json().catch(() => ({}));
  $('message').textContent = r.ok ? id + ': alarms acknowledged' : (body.detail || ('HTTP ' + r.status));
  refresh();
}

function stationsTable(data) {
  const body = $('stations'); body.replaceChildren();
  for (const s of data.stations) {
    const tr = el('tr'); tr.dataset.station = s.station_id; tr.className = 'station-row';
    tr.append(el('td', s.station_id, 'mono'), el('td', s.line || '–'));
    tr.append(el('td', ago(s.silent_s), s.offline ? 'alarm last-seen' : 'last-seen'));
    tr.append(el('td', String(s.images), 'images'), el('td', String(s.images_last_hour)));
    tr.append(el('td', pct(s.defect_rate_last_hour), 'defect-rate'), el('td', pct(s.review_rate_last_hour)));
    tr.append(el('td', ms(s.latency_ms_p50) + ' / ' + ms(s.latency_ms_p99) + ' ms'));
    tr.append(el('td', s.plc_backlog === null ? '–' : String(s.plc_backlog)));
    tr.append(el('td', s.model_sha256 ? s.model_sha256.slice(0, 12) : '–', 'mono model'));
    tr.append(el('td', s.reviewed ? pct(s.live_accuracy) + ' of ' + s.reviewed : '–'));
    tr.append(el('td', s.drift_state || '–', s.drift_state === 'drift' ? 'alarm drift' : 'drift'));
    tr.append(el('td', s.alarms.join('; ') || 'none', s.alarms.length ? 'alarm alarms' : 'ok alarms'));
    const td = el('td'); const b = el('button', 'acknowledge', 'ack'); b.onclick = () => acknowledge(s.station_id);
    td.append(b); tr.append(td); body.append(tr);
  }
}

function linesChart(data) {
  const chart = $('lines-chart'); chart.replaceChildren(); $('lines-legend').replaceChildren();
  const W = 600, H = 200, P = 24, t1 = data.generated_ts, t0 = t1 - data.window_h * 3600;
  const all = Object.values(data.lines).flat().map(p => p.defect_rate).filter(v => v !== null);
  const top = Math.max(0.05, ...all) * 1.1;
  chart.append(svg('line', {x1: P, y1: H - P, x2: W, y2: H - P, stroke: '#ccc'}));
  chart.append(svg('text', {x: 2, y: 12}, (100 * top).toFixed(0) + ' %'), svg('text', {x: 2, y: H - P}, '0'));
  Object.entries(data.lines).forEach(([line, points], i) => {
    const color = COLORS[i % COLORS.length];
    const xy = points.filter(p => p.defect_rate !== null).map(p => [P + (W - P) * (p.hour_ts + 1800 - t0) / (t1 - t0),
                                                                   (H - P) - (H - 2 * P) * p.defect_rate / top]);
    if (xy.length) {
      chart.append(svg('path', {d: 'M' + xy.map(q => q[0].toFixed(1) + ' ' + q[1].toFixed(1)).join(' L'),
                                fill: 'none', stroke: color, 'stroke-width': 2, class: 'line-series'}));
      for (const q of xy) chart.append(svg('circle', {cx: q[0], cy: q[1], r: 3, fill: color}));
    }
    const key = el('span', '■ ' + line + '  '); key.style.color = color; $('lines-legend').append(key);
  });
}

function classesChart(data) {
  const chart = $('classes-chart'); chart.replaceChildren();
  const entries = Object.entries(data.class_distribution).sort((a, b) => b[1] - a[1]).slice(0, 12);
  const total = entries.reduce((a, e) => a + e[1], 0) || 1, H = 200, row = Math.min(28, H / Math.max(1, entries.length));
  entries.forEach(([name, n], i) => {
    const w = 440 * n / entries[0][1];
    chart.append(svg('text', {x: 0, y: i * row + row * 0.65}, name));
    chart.append(svg('rect', {x: 110, y: i * row + 3, width: Math.max(1, w), height: row - 6, fill: COLORS[i % COLORS.length], class: 'class-bar'}));
    chart.append(svg('text', {x: 115 + w, y: i * row + row * 0.65}, (100 * n / total).toFixed(1) + ' %'));
  });
}

const when = ts => ts === null || ts === undefined ? '–' : new Date(ts * 1000).toLocaleString();
const num = (v, digits) => v === null || v === undefined ? '–' : v.toFixed(digits);
function badge(state) { return el('span', state, 'badge state-' + state); }
function cell(child, cls) { const td = el('td', undefined, cls); td.append(child); return td; }
function kb(bytes) { return bytes < 1e6 ? (bytes / 1e3).toFixed(1) + ' kB' : (bytes / 1e6).toFixed(2) + ' MB'; }

function modelsTable(data) {
  const body = $('models'); body.replaceChildren();
  const known = data.running_models || {};
  for (const [sha, ids] of Object.entries(data.models)) {
    const m = known[sha];
    const tr = el('tr'); tr.dataset.sha = sha; tr.className = 'model-row';
    tr.append(el('td', sha, 'mono sha'), el('td', m ? (m.name || '–') : 'not registered', m ? 'name' : 'muted name'));
    tr.append(m ? cell(badge(m.state), 'state') : el('td', '–', 'state'), el('td', ids.join(', '), 'stations'));
    body.append(tr);
  }
}

function registryTable(data) {
  const body = $('registry'); body.replaceChildren();
  for (const m of data.registry || []) {
    const tr = el('tr'); tr.dataset.sha = m.sha256; tr.className = 'registry-row';
    tr.append(el('td', m.sha256.slice(0, 12), 'mono sha'), el('td', m.name || '–', 'name'), cell(badge(m.state), 'state'));
    tr.append(el('td', m.parent_sha256 ? m.parent_sha256.slice(0, 12) : '–', 'mono parent'));
    tr.append(el('td', pct(m.accuracy), 'accuracy'), el('td', pct(m.defect_recall), 'defect-recall'));
    tr.append(el('td', pct(m.false_reject_rate), 'false-rejects'), el('td', kb(m.size_bytes), 'size'));
    tr.append(el('td', num(m.latency_ms_p50, 2) + ' ms', 'latency'));
    tr.append(el('td', m.fleet_labels === null ? '–' : String(m.fleet_labels), 'fleet-labels'));
    tr.append(el('td', when(m.registered_ts), 'registered'), el('td', m.reason || '–', 'reason'));
    body.append(tr);
  }
}

function stationFigures(s) {
  // shadow: the station's /api/shadow figures; canary and waves: its decisions before and after the switch
  const f = s.figures; const parts = [];
  if (f && f.agreement !== undefined && f.agreement !== null) parts.push('agreement ' + pct(f.agreement) + ' over ' + f.images + ' images');
  if (f && f.shadow_defect_recall !== undefined && f.shadow_defect_recall !== null)
    parts.push('defect recall ' + pct(f.shadow_defect_recall) + ' vs ' + pct(f.live_defect_recall));
  if (f && f.after) parts.push('defect rate ' + pct(f.after.defect_rate) + ' (before ' + pct(f.before.defect_rate) + '), ' +
                               f.after.images + ' images, p50 ' + ms(f.after.latency_ms_p50) + ' ms');
  return parts.join('; ') || '–';
}

function rolloutSection(data) {
  const box = $('rollout'); const list = $('rollouts'); list.replaceChildren();
  const all = data.rollouts || [];
  const r = all.find(x => x.active) || all[0];
  if (!r) { box.replaceChildren(el('span', 'no roll-out yet', 'muted')); return; }
  const head = el('div'); head.id = 'rollout-head'; head.dataset.rollout = String(r.id);
  head.append(el('strong', 'roll-out ' + r.id + ': '), el('span', (r.model_name || '') + ' ', 'name'),
              el('span', r.model_sha256.slice(0, 12), 'mono'), el('span', ' '), badge(r.state));
  if (r.reason) head.append(el('span', ' ' + r.reason, r.active ? 'muted reason' : 'alarm reason'));
  const failed = ['stopped', 'rolling-back', 'rolled-back'].includes(r.state);
  const stages = el('div', undefined, 'stages'); stages.id = 'rollout-stages';
  const at = r.stages.indexOf(r.stage);
  r.stages.forEach((name, i) => {
    if (i) stages.append(el('span', '→', 'arrow'));
    const done = r.state === 'done';
    stages.append(el('span', name, 'stage' + (i === at ? ' current' + (failed ? ' failed' : '') : (i < at || done) ? ' passed' : '')));
  });
  const table = el('table'); const thead = el('thead'); const hr = el('tr');
  for (const h of ['station', 'wave', 'state', 'figures', 'error']) hr.append(el('th', h));
  thead.append(hr); const tbody = el('tbody'); tbody.id = 'rollout-stations';
  for (const s of r.stations) {
    const tr = el('tr'); tr.dataset.station = s.station_id; tr.className = 'rollout-station';
    tr.append(el('td', s.station_id, 'mono station'), el('td', s.wave === 0 ? 'canary' : 'wave ' + s.wave, 'wave'));
    tr.append(cell(badge(s.state), 'state'), el('td', stationFigures(s), 'figures'));
    tr.append(el('td', s.last_error ? 'since ' + when(s.error_since) + ': ' + s.last_error : '', s.last_error ? 'alarm error' : 'error'));
    tbody.append(tr);
  }
  table.append(thead, tbody);
  const events = el('table'); const eb = el('tbody'); eb.id = 'rollout-events';
  for (const e of r.events) {
    const tr = el('tr'); tr.className = 'rollout-event';
    tr.append(el('td', when(e.ts), 'time'), el('td', e.station_id || '–', 'mono station'),
              el('td', e.kind, e.kind === 'breach' || e.kind === 'unreachable' ? 'alarm kind' : 'kind'), el('td', e.detail, 'detail'));
    eb.append(tr);
  }
  events.append(eb);
  const more = r.event_count > r.events.length ? ' (newest ' + r.events.length + ' of ' + r.event_count + ')' : '';
  box.replaceChildren(head, stages, table, el('h3', 'Events' + more), events);
  for (const o of all) {
    if (o === r) continue;
    const tr = el('tr'); tr.dataset.rollout = String(o.id); tr.className = 'rollout-row';
    tr.append(el('td', String(o.id)), el('td', (o.model_name ? o.model_name + ' ' : '') + o.model_sha256.slice(0, 12), 'mono'));
    tr.append(cell(badge(o.state), 'state'), el('td', o.stage, 'stage'), el('td', o.reason || '–', 'reason'));
    tr.append(el('td', when(o.updated_ts))); list.append(tr);
  }
}

function retrainsTable(data) {
  const body = $('retrains'); body.replaceChildren();
  for (const r of data.retrains || []) {
    const tr = el('tr'); tr.dataset.retrain = String(r.id); tr.className = 'retrain-row';
    const took = r.ended_ts === null ? (data.generated_ts - r.started_ts) : (r.ended_ts - r.started_ts);
    tr.append(el('td', String(r.id)), el('td', r.trigger, 'trigger'), el('td', r.detail || '–'));
    tr.append(el('td', new Date(r.started_ts * 1000).toLocaleString()), el('td', took.toFixed(0) + ' s'));
    tr.append(el('td', r.state, (r.state === 'failed' || r.state === 'abandoned' ? 'alarm ' : r.state === 'done' ? 'ok ' : '') + 'state'));
    tr.append(el('td', r.fleet_labels === null ? '–' : String(r.fleet_labels)));
    tr.append(el('td', r.model_sha256 ? r.model_sha256.slice(0, 12) : '–', 'mono model'));
    tr.append(el('td', r.error || '', 'error')); body.append(tr);
  }
}

async function refresh() {
  try {
    const r = await fetch('/api/fleet'); const data = await r.json();
    const offline = data.stations.filter(s => s.offline).length;
    $('summary').textContent = data.stations.length + ' stations, ' + offline + ' offline';
    const srv = data.server;
    $('ingest').textContent = (srv ? (srv.connected ? 'broker connected' : 'broker DOWN') + ' · ' : '') +
      data.ingest_errors + ' bad payloads';
    stationsTable(data); linesChart(data); classesChart(data); modelsTable(data); retrainsTable(data);
    rolloutSection(data); registryTable(data);
  } catch (e) { $('summary').textContent = 'fleet server unreachable'; }
}
refresh(); setInterval(refresh, 2000);
"""
