/*
 * The llmlab dashboard: polls the bridge's JSON API every 2 s and draws nodes, cache
 * statistics (with a hit-ratio chart in inline SVG), recent tasks with their trace, tools
 * and the pairing QR code. Every value from the API goes into the page with textContent,
 * never as HTML: node names and task texts come from other machines and from users.
 */
(function () {
  'use strict';

  var POLL_MS = 2000;
  var HISTORY = 150;  // chart points: 5 minutes at one poll every 2 s
  var SVG_NS = 'http://www.w3.org/2000/svg';
  var $ = function (id) { return document.getElementById(id); };
  var ratios = [];
  var pairingExpires = 0;

  // An operator on another machine passes the mesh secret once as #key=...; it stays in this tab only.
  (function keyFromHash() {
    var key = new URLSearchParams(location.hash.replace(/^#/, '')).get('key');
    if (key) {
      sessionStorage.setItem('llmlab.key', key);
      window.history.replaceState && window.history.replaceState(null, '', location.pathname);
    }
  })();

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  async function api(path) {
    var headers = {};
    var key = sessionStorage.getItem('llmlab.key');
    if (key) headers.Authorization = 'Bearer ' + key;
    var response = await fetch(path, { headers: headers, cache: 'no-store' });
    if (response.status === 401) {
      $('auth-banner').hidden = false;
      throw new Error('401');
    }
    if (!response.ok) throw new Error(path + ': HTTP ' + response.status);
    $('auth-banner').hidden = true;
    return response.json();
  }

  function ago(ms) {
    var s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 1.5) return 'now';
    if (s < 90) return Math.round(s) + ' s ago';
    if (s < 5400) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }

  function pct(x) { return (100 * (x || 0)).toFixed(1) + '%'; }

  function bytes(n) {
    n = Number(n || 0);
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  }

  function enumName(value, prefix) {
    return String(value || '').replace(prefix, '').toLowerCase() || '-';
  }

  /* ---------------------------------------------------------------- nodes */

  function renderNodes(data) {
    $('bridge-name').textContent = 'bridge ' + data.bridge.name;
    var body = $('nodes').tBodies[0];
    body.replaceChildren();
    var order = { self: 0, alive: 1, suspect: 2, gone: 3 };
    data.nodes.sort(function (a, b) {
      return (a.kind === b.kind ? 0 : a.kind === 'mobile' ? 1 : -1) || (order[a.state] - order[b.state]) ||
        a.name.localeCompare(b.name);
    });
    data.nodes.forEach(function (n) {
      var tr = el('tr', 'node ' + n.kind);
      tr.dataset.nodeId = n.node_id;
      var name = el('td', 'name', n.name);
      if (n.address) name.append(el('div', 'muted small', n.address));
      if (n.http_url) name.append(el('div', 'muted small', n.http_url));
      tr.append(name);
      var kind = el('td', '', n.kind === 'mobile' ? 'mobile' : 'grpc');
      if (n.kind === 'mobile') kind.append(el('div', 'muted small', 'via ' + (n.via_name || n.via_node_id)));
      if (n.mobile && n.mobile.user_agent) kind.title = n.mobile.user_agent;
      tr.append(kind);
      var roles = el('td');
      var chips = el('div', 'chips');
      n.roles.forEach(function (r) { chips.append(el('span', 'chip role-' + r, r)); });
      roles.append(chips);
      tr.append(roles);
      tr.append(el('td', 'small', n.tools.concat(n.models).join(', ') || '-'));
      var health = el('td');
      health.append(el('span', 'badge', n.state === 'self' ? 'this node' : n.state));
      health.lastChild.dataset.state = n.state === 'self' ? 'paired' : n.state === 'alive' ? 'paired' : n.state;
      tr.append(health);
      tr.append(el('td', 'small', n.state === 'self' ? '-' : ago(n.last_seen_unix_ms)));
      var load = n.load || {};
      var busy = (load.in_flight || 0) + ' req, ' + (load.tools_running || 0) + ' tools, ' +
        (load.generations_running || 0) + ' gen';
      var loadCell = el('td', 'small', busy);
      if (n.mobile && n.mobile.current_task) loadCell.append(el('div', 'task-now busy', n.mobile.current_task));
      tr.append(loadCell);
      var c = n.cache;
      var count = Number(c && c.entries || 0);
      var cacheText = c ? count + (count === 1 ? ' entry' : ' entries') + (c.store === 'browser' ? ' (replica)' :
        ', hit ' + pct(c.hit_ratio)) : '-';
      tr.append(el('td', 'small', cacheText));
      body.append(tr);
    });
    var mobiles = data.nodes.filter(function (n) { return n.kind === 'mobile'; }).length;
    $('node-count').textContent = data.nodes.length + ' nodes' + (mobiles ? ', ' + mobiles + ' mobile' : '');
  }

  /* ---------------------------------------------------------------- cache */

  function stat(label, value) {
    var box = el('div', 'stat');
    box.append(el('div', 'value', value), el('div', 'label', label));
    return box;
  }

  function drawChart() {
    var svg = $('hit-chart');
    svg.replaceChildren();
    var W = Math.max(120, Math.round(svg.getBoundingClientRect().width) || 320), H = 120;
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    [0, 0.5, 1].forEach(function (level) {
      var y = H - level * (H - 10) - 5;
      var line = document.createElementNS(SVG_NS, 'line');
      line.setAttribute('x1', 0); line.setAttribute('x2', W);
      line.setAttribute('y1', y); line.setAttribute('y2', y);
      line.setAttribute('class', 'grid');
      svg.append(line);
      var label = document.createElementNS(SVG_NS, 'text');
      label.setAttribute('x', 4); label.setAttribute('y', level === 1 ? y + 11 : y - 3);
      label.setAttribute('class', 'axis');
      label.textContent = Math.round(level * 100) + '%';
      svg.append(label);
    });
    if (!ratios.length) return;
    var points = ratios.map(function (p, i) {
      var x = ratios.length === 1 ? W : (i / (ratios.length - 1)) * W;  // fills the width until HISTORY points
      var y = H - p * (H - 10) - 5;
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    var area = document.createElementNS(SVG_NS, 'polygon');
    var first = points[0].split(',')[0];
    area.setAttribute('points', first + ',' + (H - 5) + ' ' + points.join(' ') + ' ' + W + ',' + (H - 5));
    area.setAttribute('class', 'area');
    svg.append(area);
    var line = document.createElementNS(SVG_NS, 'polyline');
    line.setAttribute('points', points.join(' '));
    line.setAttribute('class', 'ratio');
    svg.append(line);
  }

  function renderCache(data) {
    var t = data.total;
    var totals = $('cache-totals');
    totals.replaceChildren(
      stat('hit ratio', pct(t.hit_ratio)), stat('hits', t.hits), stat('misses', t.misses),
      stat('entries', t.entries), stat('bytes', bytes(t.bytes)), stat('evictions', t.evictions)
    );
    ratios.push(t.hit_ratio || 0);
    if (ratios.length > HISTORY) ratios.shift();
    drawChart();
    var bars = $('cache-nodes');
    bars.replaceChildren();
    data.nodes.forEach(function (n) {
      var s = n.stats || {};
      var row = el('div', 'bar-row');
      row.append(el('span', 'bar-label', n.name));
      var track = el('span', 'bar-track');
      var fill = el('span', 'bar-fill' + (n.kind === 'mobile' ? ' replica' : ''));
      fill.style.width = n.kind === 'mobile' ? '100%' : pct(s.hit_ratio);
      track.append(fill);
      row.append(track);
      row.append(el('span', 'bar-value', n.kind === 'mobile' ? (s.entries || 0) + ' replica' :
        pct(s.hit_ratio) + ' of ' + (Number(s.hits || 0) + Number(s.misses || 0))));
      bars.append(row);
    });
    $('cache-note').textContent = data.note || '';
  }

  /* ---------------------------------------------------------------- tasks */

  function renderTasks(data) {
    var list = $('tasks');
    list.replaceChildren();
    data.tasks.forEach(function (task) {
      var status = enumName(task.status, 'TASK_STATUS_');
      var li = el('li', 'task ' + status);
      li.dataset.taskId = task.task_id;
      var head = el('div', 'task-head');
      head.append(el('span', 'badge', status));
      head.lastChild.dataset.state = status === 'succeeded' ? 'paired' : status === 'failed' ? 'gone' : 'pairing';
      head.append(el('span', 'query', (task.query && task.query.text) || '(no text)'));
      head.append(el('span', 'muted small', Math.round(task.total_ms || 0) + ' ms, ' +
        (task.created_at ? ago(Date.parse(task.created_at)) : '')));
      li.append(head);
      if (task.answer || task.error) li.append(el('div', task.error ? 'error small' : 'answer', task.error || task.answer));
      var trace = el('ol', 'trace');
      (task.steps || []).forEach(function (step) {
        var kind = enumName(step.kind, 'STEP_KIND_');
        var cache = enumName(step.cache, 'CACHE_OUTCOME_');
        var s = el('li', 'step ' + kind);
        s.append(el('span', 'chip', kind));
        s.append(el('strong', '', step.name));
        s.append(el('span', '', ' on ' + (step.node_name || step.node_id || '?')));
        if (cache !== '-' && cache !== 'none') s.append(el('span', 'chip cache-' + cache, 'cache ' + cache));
        s.append(el('span', 'muted small', ' ' + Math.round(step.duration_ms || 0) + ' ms'));
        if (step.failed_over && step.failed_over.length) {
          s.append(el('span', 'chip warn', 'failed over from ' + step.failed_over.join(', ')));
        }
        if (step.reason) s.append(el('div', 'muted small', step.reason));
        if (step.error) s.append(el('div', 'error small', step.error));
        trace.append(s);
      });
      li.append(trace);
      list.append(li);
    });
    $('task-count').textContent = data.tasks.length ? data.tasks.length + ' shown' : '';
    $('tasks-note').textContent = data.note || '';
  }

  /* ---------------------------------------------------------------- tools */

  function renderTools(data) {
    var list = $('tools');
    list.replaceChildren();
    data.tools.forEach(function (tool) {
      var li = el('li');
      li.append(el('strong', '', tool.name));
      li.append(el('span', 'muted small', ' ' + (tool.node_names || []).join(', ')));
      if (tool.description) li.append(el('div', 'small', tool.description));
      list.append(li);
    });
    $('tools-note').textContent = data.note || '';
  }

  /* -------------------------------------------------------------- pairing */

  async function refreshPairing() {
    var data = await api('/api/pairing');
    pairingExpires = data.expires_unix_ms;
    var qr = $('qr');
    qr.src = data.qr_svg;
    qr.hidden = false;
    $('token').textContent = data.token;
    var link = $('pwa-link');
    link.href = data.pwa_url;
    link.textContent = data.pwa_url;
  }

  function tickPairing() {
    var left = Math.round((pairingExpires - Date.now()) / 1000);
    $('token-expiry').textContent = pairingExpires ? '(valid ' + Math.max(0, Math.floor(left / 60)) + ' min ' +
      Math.max(0, left % 60) + ' s)' : '';
  }

  /* ----------------------------------------------------------------- loop */

  var tick = 0;
  async function poll() {
    var live = $('live');
    try {
      var jobs = [api('/api/nodes').then(renderNodes), api('/api/cache').then(renderCache),
        api('/api/tasks?limit=15').then(renderTasks)];
      if (tick % 5 === 0) jobs.push(api('/api/tools').then(renderTools));
      if (!pairingExpires || pairingExpires - Date.now() < 240000 || tick % 30 === 0) jobs.push(refreshPairing());
      await Promise.all(jobs);
      live.textContent = 'live';
      live.dataset.state = 'paired';
      document.body.dataset.updated = String(Date.now());
    } catch (e) {
      live.textContent = e.message === '401' ? 'not allowed' : 'offline';
      live.dataset.state = 'gone';
    }
    tick++;
  }

  poll();
  setInterval(poll, POLL_MS);
  setInterval(tickPairing, 1000);
})();
