'use strict';
// The Meridian dashboard: a reference browser client of /ws/metrics and the
// REST API. One WebSocket per (scope, range) choice streams snapshots, and
// history on first connect; a reconnect resumes with `since`, so the charts
// keep no hole. The access token (from #token=… or the form) lives only in
// this closure: it is never stored, logged or left in the address bar.
(() => {
  const GUIDE = ['requests_total', 'requests_success', 'requests_error', 'active_connections', 'avg_response_time', 'success_rate'];
  const LATENCY = ['latency_p50_ms', 'latency_p90_ms', 'latency_p95_ms', 'latency_p99_ms', 'latency_max_ms'];
  const COUNTERS = new Set(['requests_total', 'requests_success', 'requests_error']);
  const RANGES = { '15m': 900, '1h': 3600, '24h': 86400, '7d': 604800 };
  const POINTS = 720;            // history_points asked for; live points are bucketed alike
  const INTERVAL = 1;            // interval_seconds
  const STALE_AFTER = 3;         // intervals without a snapshot before we say so
  const CHANGE_WINDOW = 60e3;    // tiles show the change over the last minute
  const REGION_POLL = 2e3, REGION_WINDOW = 10e3, LIST_REFRESH = 30e3;
  const BACKOFF_MIN = 500, BACKOFF_MAX = 15e3;

  const $ = (id) => document.getElementById(id);
  const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const dec = (d) => new Intl.NumberFormat('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
  const fmt = {
    count: (v) => int.format(v),
    ms: (v) => dec(1).format(v) + ' ms',
    pct: (v) => dec(2).format(v) + ' %',
    rate: (v) => (v < 10 ? dec(2) : dec(1)).format(v),
  };
  const LABELS = {
    requests_total: ['Requests', fmt.count], requests_success: ['Successful', fmt.count],
    requests_error: ['Errors', fmt.count], active_connections: ['Active connections', fmt.count],
    avg_response_time: ['Avg response time', fmt.ms], success_rate: ['Success rate', fmt.pct],
    latency_p50_ms: ['Latency p50', fmt.ms], latency_p90_ms: ['Latency p90', fmt.ms],
    latency_p95_ms: ['Latency p95', fmt.ms], latency_p99_ms: ['Latency p99', fmt.ms],
    latency_max_ms: ['Latency max', fmt.ms],
  };

  // Settings come from the fragment (#scope=region.eu&range=1h&token=…), so
  // a wall screen's URL can say what to show; the token is taken out of it.
  const hash = new URLSearchParams(location.hash.slice(1));
  let token = hash.get('token') || '';
  const st = {
    scope: hash.get('scope') || 'cluster',
    range: RANGES[hash.get('range')] ? hash.get('range') : '15m',
    metrics: GUIDE.slice(),      // what we subscribe to; latency added when the edge lists it
    ws: null, gen: 0, opened: false, retries: 0, retryTimer: 0,
    lastTs: 0,                   // newest snapshot time (ms) of this scope
    lastWall: 0,                 // performance.now() when it arrived
    recent: [],                  // [{t, v}] for the last minute's change
    series: {},                  // metric -> {t: [], v: []}, one point per step bucket
    historyPoints: {},           // metric -> points the last TimeSeries brought
    regions: new Map(),          // region -> [{t, total, error, instances}]
    status: 'connecting',
  };
  const writeHash = () => {
    const h = new URLSearchParams({ scope: st.scope, range: st.range });
    history.replaceState(null, '', location.pathname + location.search + '#' + h);
  };
  writeHash();

  const stepMs = () => Math.max(1, Math.ceil(RANGES[st.range] / POINTS)) * 1000;

  // --- status and messages -------------------------------------------------
  function setStatus(state, text) {
    st.status = state;
    $('status').dataset.state = state;
    $('status').textContent = text;
  }
  // say shows one message; kind says what clears it: 'stale' and 'list'
  // messages go when snapshots flow again, the edge's own Error messages
  // when the scope or range changes.
  function say(text, level, kind) {
    const b = $('banner');
    b.hidden = !text; b.textContent = text || ''; b.className = level || ''; b.dataset.kind = kind || '';
  }
  function askToken(text) {
    setStatus('auth', 'token refused');
    say(text, 'error');
    $('auth').hidden = false;
    $('token').focus();
  }
  $('auth').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    $('token').value = '';
    $('auth').hidden = true;
    say('');
    start();
  });

  // --- REST ----------------------------------------------------------------
  class AuthError extends Error {}
  async function getJSON(path) {
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    const r = await fetch(path, { headers, cache: 'no-store' });
    if (r.status === 401) throw new AuthError('The edge refused the access token (401). Enter a valid token.');
    if (r.status === 403) throw new AuthError('The access token does not allow ' + st.scope + ' (403). Pick another scope, or enter a token with access to it.');
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || path + ': HTTP ' + r.status);
    return body;
  }

  async function loadList() {
    const list = await getJSON('/api/metrics/list');
    const listed = new Set(list.metrics.map((m) => m.name));
    st.metrics = GUIDE.concat(LATENCY.filter((m) => listed.has(m)));
    const sel = $('scope'), scopes = list.scopes.includes(st.scope) ? list.scopes : list.scopes.concat(st.scope);
    if (sel.dataset.scopes !== scopes.join()) {
      sel.replaceChildren(...scopes.map((s) => new Option(s, s, false, s === st.scope)));
      sel.dataset.scopes = scopes.join();
    }
    for (const s of list.scopes) if (s.startsWith('region.') && !st.regions.has(s.slice(7))) st.regions.set(s.slice(7), []);
  }

  // --- WebSocket -----------------------------------------------------------
  function scopeFields() {
    const [kind, name] = st.scope.split(/\.(.*)/);
    return kind === 'region' ? { region: name } : kind === 'instance' ? { instance: name } : {};
  }

  function connect() {
    clearTimeout(st.retryTimer);
    const gen = ++st.gen;
    if (st.ws) st.ws.close(1000);
    const q = new URLSearchParams(scopeFields());
    const resume = st.lastTs > 0;
    if (resume) q.set('since', new Date(st.lastTs).toISOString());
    // The token rides in the subprotocol list, not the URL: browsers write
    // a failed WebSocket's URL to the console, and proxies log URLs.
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws/metrics?' + q;
    const ws = token ? new WebSocket(url, ['bearer.' + token]) : new WebSocket(url);
    st.ws = ws; st.opened = false;
    ws.onopen = () => {
      if (gen !== st.gen) return;
      st.opened = true;
      ws.send(JSON.stringify(Object.assign({
        metrics: st.metrics, interval_seconds: INTERVAL, include_history: !resume,
        history_seconds: RANGES[st.range], history_points: POINTS,
      }, scopeFields())));
    };
    ws.onmessage = (e) => { if (gen === st.gen) onEvent(JSON.parse(e.data)); };
    ws.onclose = (e) => {
      if (gen !== st.gen) return;
      st.ws = null;
      if (e.code === 4401) { askToken('The access token expired (4401). Enter a new token to continue.'); return; }
      if (!st.opened) {
        // A refused handshake is invisible to a browser WebSocket; the REST
        // API answers the same token and scope with a status we can show.
        getJSON('/api/metrics/latest?scope=' + encodeURIComponent(st.scope))
          .catch((err) => { if (err instanceof AuthError && gen === st.gen) { st.gen++; askToken(err.message); } });
      }
      const delay = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** st.retries++) * (0.5 + Math.random() / 2);
      setStatus('disconnected', `disconnected — retrying in ${Math.ceil(delay / 1000)} s`);
      st.retryTimer = setTimeout(() => { if (gen === st.gen) connect(); }, delay);
    };
  }

  function onEvent(ev) {
    switch (ev.type) {
      case 'Snapshot': return onSnapshot(ev);
      case 'TimeSeries': return onHistory(ev);
      case 'Error': return say('The edge says: ' + ev.message, 'warn', 'edge');
    }
  }

  function onSnapshot(ev) {
    const t = Date.parse(ev.timestamp);
    if (!(t > st.lastTs)) return; // a duplicate of what we hold
    st.lastTs = t; st.lastWall = performance.now(); st.retries = 0;
    if (st.status !== 'live') {
      setStatus('live', 'live');
      if ($('banner').dataset.kind !== 'edge') say('');
    }
    const v = {};
    for (const m of st.metrics) if (typeof ev[m] === 'number') v[m] = ev[m];
    st.recent.push({ t, v });
    while (st.recent.length > 1 && st.recent[1].t <= t - CHANGE_WINDOW) st.recent.shift();
    for (const m in v) addPoint(m, t, v[m]);
    trim();
    renderTiles();
    renderCharts();
  }

  // History replaces a metric's series; live points then extend it.
  function onHistory(ev) {
    const s = { t: [], v: [] };
    for (const p of ev.data_points) { s.t.push(Date.parse(p.timestamp)); s.v.push(p.value); }
    st.historyPoints[ev.metric_name] = s.t.length;
    const live = st.series[ev.metric_name];
    if (live) for (let i = 0; i < live.t.length; i++) if (live.t[i] > (s.t[s.t.length - 1] ?? -Infinity)) { s.t.push(live.t[i]); s.v.push(live.v[i]); }
    st.series[ev.metric_name] = s;
    trim();
    renderCharts();
  }

  // addPoint puts a live value into its step bucket, as history buckets it:
  // counters keep the bucket's last value, the others its latest too (the
  // gauges' bucket mean settles once history is reloaded).
  function addPoint(m, t, v) {
    const s = st.series[m] || (st.series[m] = { t: [], v: [] });
    const bucket = Math.floor(t / stepMs()) * stepMs();
    const n = s.t.length;
    if (n && s.t[n - 1] === bucket) s.v[n - 1] = v;
    else if (!n || s.t[n - 1] < bucket) { s.t.push(bucket); s.v.push(v); }
  }

  // trim keeps each series within the chosen range, so a page left open for
  // weeks holds at most POINTS+1 points per metric.
  function trim() {
    const from = st.lastTs - RANGES[st.range] * 1000;
    for (const m in st.series) {
      const s = st.series[m];
      let k = 0;
      while (k < s.t.length && s.t[k] < from) k++;
      if (k) { s.t.splice(0, k); s.v.splice(0, k); }
    }
  }

  // --- rendering -----------------------------------------------------------
  function renderTiles() {
    const box = $('tiles'), last = st.recent[st.recent.length - 1], first = st.recent[0];
    if (!last) return;
    box.dataset.timestamp = new Date(last.t).toISOString().replace('.000Z', 'Z');
    for (const m of st.metrics) {
      if (!(m in last.v)) continue;
      let tile = box.querySelector(`[data-metric="${m}"]`);
      if (!tile) {
        tile = document.createElement('div');
        tile.className = 'tile'; tile.dataset.metric = m;
        tile.innerHTML = '<div class="name"></div><div class="value"></div><div class="change"></div>';
        tile.querySelector('.name').textContent = LABELS[m][0];
        box.append(tile);
      }
      const v = last.v[m], f = LABELS[m][1];
      tile.dataset.value = v;
      tile.querySelector('.value').textContent = f(v);
      const base = baseline(m, first, last.t), secs = base && Math.round((last.t - base.t) / 1000);
      let change = 'change over 1 min: —';
      if (secs > 0) {
        const d = v - base.v, sign = d > 0 ? '+' : d < 0 ? '−' : '±';
        change = `${sign}${f(Math.abs(d))} in ${secs} s`;
        if (COUNTERS.has(m)) change += ` (${fmt.rate(d / secs)}/s)`;
        tile.dataset.change = d;
      }
      tile.querySelector('.change').textContent = change;
    }
  }

  // baseline is the value a minute before t: from the snapshots received
  // when they span the minute, else from fine-grained history (a freshly
  // opened page), else the oldest snapshot received.
  function baseline(m, first, t) {
    const step = stepMs(), s = st.series[m];
    if (first.t > t - CHANGE_WINDOW + 5e3 && s && step <= 5e3) {
      for (let i = s.t.length - 1; i >= 0; i--) {
        // A history point holds its bucket's last value (counters): as of
        // the bucket's last second.
        if (s.t[i] + step - 1e3 <= t - CHANGE_WINDOW) return { t: s.t[i] + step - 1e3, v: s.v[i] };
      }
    }
    return m in first.v ? { t: first.t, v: first.v[m] } : null;
  }

  const charts = {};
  for (const c of document.querySelectorAll('canvas[data-chart]')) {
    const format = c.dataset.chart === 'success' ? (v) => dec(1).format(v) : (v) => (Math.abs(v) < 10 && v % 1 ? dec(1) : int).format(v);
    charts[c.dataset.chart] = new MeridianChart.Chart(c, { zeroBased: c.dataset.chart !== 'success', format });
  }
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => MeridianChart.redraw(Object.values(charts)));

  // rate turns a counter series into per-second rates between completed
  // buckets (the newest bucket is still filling, so it is left out).
  function rate(s) {
    const out = { t: [], v: [] };
    if (!s) return out;
    for (let i = 1; i < s.t.length - 1; i++) {
      out.t.push(s.t[i]);
      out.v.push(Math.max(0, s.v[i] - s.v[i - 1]) / ((s.t[i] - s.t[i - 1]) / 1000));
    }
    return out;
  }

  function renderCharts() {
    const t1 = st.lastTs, t0 = t1 - RANGES[st.range] * 1000, gap = stepMs() * 2.5;
    const line = (label, color, s) => Object.assign({ label, color, t: [], v: [] }, s);
    charts.rate.set([line('all', '--line1', rate(st.series.requests_total)), line('errors', '--line2', rate(st.series.requests_error))], t0, t1, gap);
    const lat = [line('avg', '--line1', st.series.avg_response_time)];
    for (const [m, c] of [['latency_p50_ms', '--line4'], ['latency_p99_ms', '--line3'], ['latency_max_ms', '--line5']]) {
      if (st.series[m]) lat.push(line(m.slice(8, -3), c, st.series[m]));
    }
    charts.latency.set(lat, t0, t1, gap);
    charts.active.set([line('active', '--line1', st.series.active_connections)], t0, t1, gap);
    charts.success.set([line('success', '--good', st.series.success_rate)], t0, t1, gap);
  }

  // --- regions (REST) ------------------------------------------------------
  async function pollRegions() {
    for (const [region, samples] of st.regions) {
      let s;
      try {
        s = await getJSON('/api/metrics/latest?scope=region.' + encodeURIComponent(region));
      } catch {
        continue; // down, not yet known, or outside the token's scopes: the row keeps its last values
      }
      const t = Date.parse(s.timestamp);
      if (samples.length && samples[samples.length - 1].t >= t) continue;
      samples.push({ t, total: s.requests_total, error: s.requests_error, instances: s.instances });
      while (samples.length > 2 && samples[1].t <= t - REGION_WINDOW) samples.shift();
    }
    renderRegions();
  }

  function renderRegions() {
    const rows = [];
    for (const [region, s] of [...st.regions].sort()) {
      if (!s.length) continue;
      const a = s[0], b = s[s.length - 1], secs = (b.t - a.t) / 1000, dt = b.total - a.total;
      const tr = document.createElement('tr');
      Object.assign(tr.dataset, { region, t0: new Date(a.t).toISOString(), t1: new Date(b.t).toISOString(), instances: b.instances });
      const cells = [region, '—', '—', fmt.count(b.instances)];
      if (secs > 0) {
        tr.dataset.rate = dt / secs;
        tr.dataset.errorRatio = dt > 0 ? (b.error - a.error) / dt : 0;
        cells[1] = fmt.rate(dt / secs);
        cells[2] = dec(2).format(100 * tr.dataset.errorRatio) + ' %';
      }
      for (const [i, text] of cells.entries()) {
        const td = document.createElement('td');
        td.textContent = text;
        if (i === 2 && tr.dataset.errorRatio > 0.05) td.className = 'bad';
        tr.append(td);
      }
      rows.push(tr);
    }
    $('regions').tBodies[0].replaceChildren(...rows);
  }

  // --- staleness -----------------------------------------------------------
  setInterval(() => {
    if (st.status !== 'live' && st.status !== 'stale') return;
    const quiet = (performance.now() - st.lastWall) / 1000;
    if (quiet > STALE_AFTER * INTERVAL + 1) {
      setStatus('stale', `stale — no data for ${Math.floor(quiet)} s`);
      say('No new snapshot for ' + Math.floor(quiet) + ' s: the edge is connected but the aggregator may be down.', 'warn', 'stale');
    }
  }, 1000);

  // --- choices ---------------------------------------------------------------
  function reset() {
    say('');
    $('auth').hidden = true;
    st.lastTs = 0; st.recent = []; st.series = {}; st.historyPoints = {}; st.retries = 0;
    $('tiles').replaceChildren();
    renderCharts();
    setStatus('connecting', 'connecting…');
    writeHash();
    connect();
  }
  $('scope').addEventListener('change', (e) => { st.scope = e.target.value; reset(); });
  $('range').value = st.range;
  $('range').addEventListener('change', (e) => { st.range = e.target.value; reset(); });

  let started = false;
  async function start() {
    setStatus('connecting', 'connecting…');
    try {
      await loadList();
    } catch (err) {
      if (err instanceof AuthError) return askToken(err.message);
      say('Could not read /api/metrics/list (' + err.message + '); showing the guide metrics only.', 'warn', 'list');
    }
    connect();
    if (!started) {
      started = true;
      setInterval(() => { pollRegions(); }, REGION_POLL);
      setInterval(() => { loadList().catch(() => {}); }, LIST_REFRESH);
      pollRegions();
    }
  }

  // Read-only view for tests and the curious (no token in it).
  window.meridianDashboard = {
    state: () => ({
      status: st.status, scope: st.scope, range: st.range, stepMs: stepMs(), metrics: st.metrics.slice(),
      lastTimestamp: st.lastTs ? new Date(st.lastTs).toISOString() : null,
      historyPoints: Object.assign({}, st.historyPoints),
      series: Object.fromEntries(Object.entries(st.series).map(([m, s]) => [m, { t: s.t.slice(), v: s.v.slice() }])),
    }),
  };
  start();
})();
