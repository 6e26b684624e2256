// The live status page: polls /metrics (Prometheus text, parsed here) once
// a second and keeps five minutes of history for its charts (inline SVG);
// in front of replicas (herd route) it also lists /router/replicas.
import { parseProm, value, labels, buckets, bucketDelta, quantile } from './prom.js';

const POLL_MS = 1000;
const HISTORY_S = 300; // the charts' span
const RATE_S = 5;      // rates over the last few seconds: one poll is too jumpy
const WINDOW_S = 60;   // percentiles over the last minute
const KEY_STORE = 'herd.apiKey';
const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

let history = []; // [{t, ...numbers, ttft, itl, dur}] oldest first
let kind = null;  // 'serve' or 'route', from the metrics' names
let polls = 0;

function headers() {
  const k = localStorage.getItem(KEY_STORE);
  return k ? { Authorization: 'Bearer ' + k } : {};
}

// ------------------------------------------------------------ formatting

const fmt = {
  int: (v) => (Number.isFinite(v) ? String(Math.round(v)) : '–'),
  rate: (v) => (!Number.isFinite(v) ? '–' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)),
  pct: (v) => (Number.isFinite(v) ? (100 * v).toFixed(1) + ' %' : '–'),
  ms: (v) => (!Number.isFinite(v) ? '–' : v >= 1 ? v.toFixed(v >= 10 ? 1 : 2) + ' s'
                                         : (1000 * v).toFixed(v < 0.01 ? 2 : 0) + ' ms'),
  dur: (s) => {
    if (!Number.isFinite(s) || s < 0) return '–';
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    return d ? d + 'd ' + h + 'h' : h ? h + 'h ' + m + 'm' : m ? m + 'm ' + Math.floor(s % 60) + 's' : Math.floor(s) + 's';
  },
};
const pcts = (bs) => [0.5, 0.9, 0.99].map((q) => fmt.ms(quantile(q, bs))).join(' / ');

// ------------------------------------------------------------ cards and charts

const CARDS = {
  serve: [
    ['running', 'Requests running'], ['waiting', 'Requests waiting'], ['tok-out', 'Tokens/s out'],
    ['tok-in', 'Tokens/s in (prompts)'], ['ttft', 'TTFT p50 / p90 / p99'], ['itl', 'Inter-token p50 / p90 / p99'],
    ['kv', 'KV cache used'], ['prefix', 'Prefix cache hit rate'], ['429', '429s (queue full)'],
    ['conns', 'Open connections'], ['uptime', 'Uptime'], ['model', 'Model'], ['build', 'Build'],
  ],
  route: [
    ['running', 'Requests in flight'], ['waiting', 'Requests waiting'], ['req-rate', 'Requests/s'],
    ['replicas-up', 'Replicas up'], ['dur', 'Duration p50 / p90 / p99'], ['retries', 'Retries'],
    ['errors', 'Errors (no replica, upstream)'], ['uptime', 'Uptime'],
  ],
};
const CHARTS = {
  serve: [
    ['Tokens/s', [['tokOut', 'out'], ['tokIn', 'in']]],
    ['Requests', [['running', 'running'], ['waiting', 'waiting']]],
    ['KV cache used (%)', [['kvPct', 'used']]],
  ],
  route: [
    ['Requests/s', [['reqRate', 'requests']]],
    ['Requests', [['running', 'in flight'], ['waiting', 'waiting']]],
    ['Replicas', [['up', 'up'], ['total', 'known']]],
  ],
};

function build(k) {
  kind = k;
  $('kind').textContent = k === 'route' ? 'herd route: status' : 'herd serve: status';
  document.body.dataset.kind = k;
  $('cards').replaceChildren(...CARDS[k].map(([id, label]) => {
    const c = document.createElement('div');
    c.className = 'card';
    const l = document.createElement('div');
    l.className = 'label';
    l.textContent = label;
    const v = document.createElement('div');
    v.className = 'value' + (['model', 'build', 'ttft', 'itl', 'dur', 'kv'].includes(id) ? ' small' : '');
    v.id = 'v-' + id;
    v.textContent = '–';
    c.append(l, v);
    return c;
  }));
  $('charts').replaceChildren(...CHARTS[k].map(([title, series], i) => {
    const box = document.createElement('div');
    box.className = 'chart';
    const h = document.createElement('h3');
    h.textContent = title;
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 300 100');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.id = 'chart-' + i;
    const legend = document.createElement('div');
    legend.className = 'legend';
    legend.id = 'legend-' + i;
    box.append(h, svg, legend);
    box.dataset.series = JSON.stringify(series);
    return box;
  }));
  $('replicas').hidden = k !== 'route';
}

function drawCharts(now) {
  CHARTS[kind].forEach(([, series], i) => {
    const svg = $('chart-' + i);
    const pts = history.filter((h) => now - h.t <= HISTORY_S);
    let max = 1;
    for (const h of pts) for (const [key] of series) if (Number.isFinite(h[key])) max = Math.max(max, h[key]);
    const kids = [];
    const axis = document.createElementNS(SVG, 'line');
    axis.setAttribute('x1', 0); axis.setAttribute('x2', 300); axis.setAttribute('y1', 99.5); axis.setAttribute('y2', 99.5);
    axis.setAttribute('class', 'axis');
    kids.push(axis);
    series.forEach(([key], j) => {
      const line = document.createElementNS(SVG, 'polyline');
      line.setAttribute('class', 's' + j);
      line.setAttribute('points', pts.filter((h) => Number.isFinite(h[key]))
        .map((h) => (300 * (1 - (now - h.t) / HISTORY_S)).toFixed(1) + ',' + (98 - 94 * h[key] / max).toFixed(1)).join(' '));
      kids.push(line);
    });
    svg.replaceChildren(...kids);
    const last = pts[pts.length - 1] || {};
    const legend = $('legend-' + i);
    legend.replaceChildren(...series.map(([key, name], j) => {
      const s = document.createElement('span');
      s.className = 'k' + j;
      s.textContent = (j ? '   ' : '') + '● ' + name + ' ' + fmt.rate(last[key]);
      return s;
    }), document.createTextNode('   (max ' + fmt.rate(max) + ', last 5 min)'));
  });
}

// ------------------------------------------------------------ one poll

// The sample at least s seconds before the newest (or the oldest one).
function before(s) {
  const now = history[history.length - 1];
  for (let i = history.length - 2; i >= 0; i--) if (now.t - history[i].t >= s) return history[i];
  return history.length > 1 ? history[0] : null;
}

function rate(key, s) {
  const now = history[history.length - 1], then = before(s);
  if (!then || now.t <= then.t) return NaN;
  return Math.max(0, (now[key] - then[key]) / (now.t - then.t)); // a restart resets counters
}

// Percentiles over the last minute; with nothing in it, since the start.
function windowed(key) {
  const now = history[history.length - 1], then = before(WINDOW_S);
  const d = bucketDelta(now[key], then && then[key]);
  return d.length && d[d.length - 1].count > 0 ? d : now[key];
}

function set(id, text) {
  const e = $('v-' + id);
  if (e) e.textContent = text;
}

function serveSnapshot(m, t) {
  const cap = value(m, 'herd_kv_blocks_capacity');
  return {
    t, running: value(m, 'herd_requests_running'), waiting: value(m, 'herd_requests_waiting'),
    gen: value(m, 'herd_generation_tokens_total'), prompt: value(m, 'herd_prompt_tokens_total'),
    kvPct: 100 * value(m, 'herd_kv_cache_usage_ratio'), kvUsed: value(m, 'herd_kv_blocks_used'), kvCap: cap,
    hits: value(m, 'herd_prefix_cache_hits_total'), queries: value(m, 'herd_prefix_cache_queries_total'),
    r429: value(m, 'herd_rejections_total', { reason: 'queue_full' }), conns: value(m, 'herd_open_connections'),
    start: value(m, 'process_start_time_seconds'),
    ttft: buckets(m, 'herd_time_to_first_token_seconds'), itl: buckets(m, 'herd_inter_token_latency_seconds'),
  };
}

function showServe(m, s) {
  s.tokOut = rate('gen', RATE_S);
  s.tokIn = rate('prompt', RATE_S);
  set('running', fmt.int(s.running));
  set('waiting', fmt.int(s.waiting));
  set('tok-out', fmt.rate(s.tokOut));
  set('tok-in', fmt.rate(s.tokIn));
  set('ttft', pcts(windowed('ttft')));
  set('itl', pcts(windowed('itl')));
  set('kv', fmt.pct(s.kvPct / 100) + (Number.isFinite(s.kvCap) ? ' (' + fmt.int(s.kvUsed) + ' / ' + fmt.int(s.kvCap) + ' blocks)' : ''));
  set('prefix', s.queries > 0 ? fmt.pct(s.hits / s.queries) : '–');
  set('429', fmt.int(s.r429));
  set('conns', fmt.int(s.conns));
  set('uptime', fmt.dur(Date.now() / 1000 - s.start));
  const mi = labels(m, 'herd_model_info'), bi = labels(m, 'herd_build_info');
  set('model', mi.model_name ? mi.model_name + ' (' + [mi.arch, mi.weights, mi.context && 'ctx ' + mi.context].filter(Boolean).join(', ') + ')' : 'loading…');
  set('build', bi.version ? 'herd ' + bi.version + (bi.kernels ? ', kernels ' + bi.kernels : '') : '–');
}

function routeSnapshot(m, t) {
  return {
    t, running: value(m, 'herd_router_in_flight'), waiting: value(m, 'herd_router_waiting'),
    reqs: value(m, 'herd_router_requests_total'), up: value(m, 'herd_router_replicas_up'),
    total: value(m, 'herd_router_replicas'), retries: value(m, 'herd_router_retries_total'),
    errors: (value(m, 'herd_router_errors_total') || 0) + (value(m, 'herd_router_no_replica_total') || 0),
    start: value(m, 'process_start_time_seconds'), dur: buckets(m, 'herd_router_request_duration_seconds'),
  };
}

function showRoute(m, s) {
  s.reqRate = rate('reqs', RATE_S);
  set('running', fmt.int(s.running));
  set('waiting', fmt.int(s.waiting));
  set('req-rate', fmt.rate(s.reqRate));
  set('replicas-up', fmt.int(s.up) + ' / ' + fmt.int(s.total));
  set('dur', pcts(windowed('dur')));
  set('retries', fmt.int(s.retries));
  set('errors', fmt.int(s.errors));
  set('uptime', fmt.dur(Date.now() / 1000 - s.start));
}

async function showReplicas() {
  const resp = await fetch('/router/replicas', { headers: headers() });
  if (!resp.ok) throw new Error('/router/replicas: ' + resp.status);
  const body = await resp.json();
  const rows = (body.replicas || []).map((r) => {
    const tr = document.createElement('tr');
    const cells = [r.replica, r.health + (r.draining ? ' (draining)' : ''), r.in_flight, r.running, r.waiting,
                   r.kv_total ? r.kv_used + ' / ' + r.kv_total : '–',
                   Number.isFinite(r.weight) ? r.weight.toFixed(2) : '–', r.cached_blocks];
    cells.forEach((v, i) => {
      const td = document.createElement('td');
      td.textContent = String(v);
      if (i === 1) td.className = 'health-' + r.health;
      tr.appendChild(td);
    });
    return tr;
  });
  $('replica-rows').replaceChildren(...rows);
  $('about').textContent = 'policy ' + body.policy + ', ' + (body.replicas || []).length + ' replicas, ' +
    body.waiting + ' waiting';
}

function showError(text) {
  $('error').textContent = text;
  $('error').hidden = !text;
}

async function poll() {
  try {
    const resp = await fetch('/metrics', { headers: headers() });
    if (resp.status === 401) throw new Error('/metrics needs an API key (401): enter it on the chat page (Settings), then come back.');
    if (!resp.ok) throw new Error('/metrics answered ' + resp.status);
    const m = parseProm(await resp.text());
    const k = m.has('herd_router_requests_total') ? 'route' : 'serve';
    if (k !== kind) {
      build(k);
      history = [];
    }
    const t = Date.now() / 1000;
    const snap = k === 'route' ? routeSnapshot(m, t) : serveSnapshot(m, t);
    history.push(snap);
    while (history.length && t - history[0].t > HISTORY_S + 5) history.shift();
    if (k === 'route') {
      showRoute(m, snap);
      await showReplicas();
    } else {
      showServe(m, snap);
    }
    drawCharts(t);
    showError('');
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    showError(e instanceof TypeError ? 'Cannot reach the server (' + e.message + '); retrying.' : e.message);
  } finally {
    document.body.dataset.polls = String(++polls);
    setTimeout(poll, POLL_MS);
  }
}

poll();
