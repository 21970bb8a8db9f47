/*
 * llmlab mobile worker: the task engine of a browser that joins the mesh as a mobile node.
 *
 * It connects to the bridge's WebSocket (/ws/task), pairs with a short-lived token from
 * the dashboard (then rejoins with the session token the bridge hands back), reports its
 * tools, runs the tasks the mesh routes to it, keeps a local cache replica fed by
 * cache_sync, heartbeats, and reconnects with exponential backoff.
 *
 * Messages are the protobuf JSON mapping of llmlab.v1.BridgeEnvelope (lowerCamelCase
 * field names, int64 as strings), e.g. {"id": "3", "heartbeat": {"busy": 0}}.
 *
 * No dependency, nothing fetched from the internet; usable from a page (window.LlmlabMobile)
 * and from tests (page.evaluate).
 */
(function (global) {
  'use strict';

  var STORAGE_SESSION = 'llmlab.session';
  var STORAGE_NAME = 'llmlab.name';
  var REPLICA_PREFIX = 'llmlab.replica.';
  var CLOSE_REPLACED = 4001;

  function now() { return Date.now(); }

  function toolError(code, message) {
    var err = new Error(message);
    err.code = code;
    return err;
  }

  function clampInt(value, fallback, lo, hi) {
    var n = value === undefined || value === null || value === '' ? fallback : Number(value);
    if (!isFinite(n)) throw toolError('INVALID_ARGUMENT', 'expected a number, got ' + JSON.stringify(value));
    return Math.max(lo, Math.min(hi, Math.floor(n)));
  }

  /* ------------------------------------------------------------------ replica */

  /**
   * The local cache replica: CacheEntry JSON objects in localStorage, one item per key.
   * TTL is honoured on every read and by sweep(); the entry count is capped (the entries
   * expiring soonest go first), and a full quota evicts before giving up on an entry.
   */
  function Replica(storage, cap) {
    this.storage = storage;
    this.cap = cap || 500;
  }

  Replica.prototype.keys = function () {
    var keys = [];
    for (var i = 0; i < this.storage.length; i++) {
      var name = this.storage.key(i);
      if (name && name.indexOf(REPLICA_PREFIX) === 0) keys.push(name.slice(REPLICA_PREFIX.length));
    }
    return keys;
  };

  Replica.prototype._read = function (key) {
    var raw = this.storage.getItem(REPLICA_PREFIX + key);
    if (!raw) return null;
    try { return JSON.parse(raw); } catch (e) { this.storage.removeItem(REPLICA_PREFIX + key); return null; }
  };

  Replica.prototype._live = function (entry) {
    var expires = Number(entry.expiresUnixMs || 0);
    return !expires || expires > now();
  };

  Replica.prototype.get = function (key) {
    var entry = this._read(key);
    if (entry && !this._live(entry)) { this.delete(key); return null; }
    return entry;
  };

  Replica.prototype.find = function (prompt, model) {
    var best = null;
    var keys = this.keys();
    for (var i = 0; i < keys.length; i++) {
      var entry = this.get(keys[i]);
      if (entry && entry.prompt === prompt && entry.model === model &&
          (!best || Number(entry.createdUnixMs || 0) > Number(best.createdUnixMs || 0))) best = entry;
    }
    return best;
  };

  Replica.prototype.put = function (entry) {
    if (!entry || typeof entry.key !== 'string' || !entry.key || !this._live(entry)) return false;
    var name = REPLICA_PREFIX + entry.key;
    var text = JSON.stringify(entry);
    for (var attempt = 0; attempt < 3; attempt++) {
      try {
        this.storage.setItem(name, text);
        break;
      } catch (e) {  // quota: make room, then try again
        if (!this._evict(Math.max(1, Math.ceil(this.count() / 4)))) return false;
      }
    }
    if (this.count() > this.cap) this._evict(this.count() - this.cap);
    return this.storage.getItem(name) !== null;
  };

  Replica.prototype.delete = function (key) { this.storage.removeItem(REPLICA_PREFIX + key); };

  Replica.prototype._evict = function (n) {
    var self = this;
    var entries = this.keys().map(function (k) { return self._read(k) || { key: k, expiresUnixMs: '0' }; });
    entries.sort(function (a, b) { return Number(a.expiresUnixMs || 0) - Number(b.expiresUnixMs || 0); });
    entries.slice(0, n).forEach(function (e) { self.delete(e.key); });
    return entries.length > 0;
  };

  Replica.prototype.sweep = function () {
    var dropped = 0;
    var keys = this.keys();
    for (var i = 0; i < keys.length; i++) {
      var entry = this._read(keys[i]);
      if (entry && !this._live(entry)) { this.delete(keys[i]); dropped++; }
    }
    return dropped;
  };

  Replica.prototype.count = function () { return this.keys().length; };

  Replica.prototype.clear = function () {
    var self = this;
    this.keys().forEach(function (k) { self.delete(k); });
  };

  /* -------------------------------------------------------------------- tools */

  var HTTP_FETCH_SPEC = {
    name: 'http_fetch',
    description: 'Fetch an http(s) URL from a browser with the fetch API: status, a subset of headers and the ' +
      'body as text, truncated to max_bytes. The server must allow CORS for the bridge page origin.',
    capabilities: ['web', 'fetch', 'browser'],
    inputSchema: {
      type: 'object',
      properties: {
        url: { type: 'string', description: 'absolute http or https URL' },
        timeout_ms: { type: 'integer', minimum: 100, maximum: 30000, default: 10000 },
        max_bytes: { type: 'integer', minimum: 1, maximum: 131072, default: 65536 }
      },
      required: ['url'],
      additionalProperties: false
    },
    outputSchema: {
      type: 'object',
      properties: {
        url: { type: 'string' }, final_url: { type: 'string' }, status: { type: 'integer' },
        ok: { type: 'boolean' }, headers: { type: 'object' }, text: { type: 'string' },
        bytes: { type: 'integer' }, truncated: { type: 'boolean' }
      }
    },
    timeoutMs: 30000
  };

  var LOCAL_CACHE_SPEC = {
    name: 'local_cache',
    description: 'Look an LLM answer up in this mobile node\'s cache replica, by key or by prompt and model.',
    capabilities: ['cache'],
    inputSchema: {
      type: 'object',
      properties: {
        key: { type: 'string', description: 'cache key (sha256 hex)' },
        prompt: { type: 'string' },
        model: { type: 'string' }
      },
      additionalProperties: false
    },
    outputSchema: {
      type: 'object',
      properties: {
        found: { type: 'boolean' }, key: { type: 'string' }, response: { type: 'string' },
        model: { type: 'string' }, prompt: { type: 'string' }, expires_unix_ms: { type: 'integer' }
      }
    },
    timeoutMs: 2000
  };

  var EXPOSED_HEADERS = ['content-type', 'content-length', 'content-language', 'last-modified', 'etag',
    'cache-control', 'expires', 'date'];

  function checkArgs(args, allowed) {
    if (!args || typeof args !== 'object' || Array.isArray(args)) {
      throw toolError('INVALID_ARGUMENT', 'arguments must be an object');
    }
    Object.keys(args).forEach(function (k) {
      if (allowed.indexOf(k) < 0) throw toolError('INVALID_ARGUMENT', 'unknown argument ' + k);
    });
  }

  async function httpFetch(args, ctx) {
    checkArgs(args, ['url', 'timeout_ms', 'max_bytes']);
    if (typeof args.url !== 'string' || !args.url) throw toolError('INVALID_ARGUMENT', 'url: a URL string is required');
    var url;
    try { url = new URL(args.url); } catch (e) { throw toolError('INVALID_ARGUMENT', 'url: not an absolute URL: ' + args.url); }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw toolError('INVALID_ARGUMENT', 'url: only http and https URLs, not ' + url.protocol);
    }
    // This page's own origin is the bridge: its status API (and the pairing token) is not for tools.
    // The bridge refuses every mesh port before assigning a task; this is the device's own check.
    var own = global.location && global.location.origin;
    if (own && url.origin === own) {
      throw toolError('REFUSED', 'refused: ' + url.origin + ' is the bridge of this llmlab mesh; tools never ' +
        'call the mesh itself');
    }
    var timeoutMs = clampInt(args.timeout_ms, 10000, 100, 30000);
    if (ctx && ctx.deadline) timeoutMs = Math.max(50, Math.min(timeoutMs, ctx.deadline - now() - 200));
    var maxBytes = clampInt(args.max_bytes, 65536, 1, 131072);
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, timeoutMs);
    try {
      var response = await fetch(url.href, {
        signal: controller.signal, redirect: 'follow', credentials: 'omit', mode: 'cors',
        cache: 'no-store', referrerPolicy: 'no-referrer'
      });
      if (own && response.redirected && new URL(response.url).origin === own) {
        throw toolError('REFUSED', 'refused: ' + url.href + ' redirects to the bridge of this llmlab mesh');
      }
      var headers = {};
      EXPOSED_HEADERS.forEach(function (h) { var v = response.headers.get(h); if (v !== null) headers[h] = v; });
      var decoder = new TextDecoder('utf-8');
      var text = '';
      var bytes = 0;
      var truncated = false;
      if (response.body) {
        var reader = response.body.getReader();
        for (;;) {
          var chunk = await reader.read();
          if (chunk.done) break;
          var room = maxBytes - bytes;
          var piece = chunk.value.byteLength > room ? chunk.value.subarray(0, room) : chunk.value;
          bytes += piece.byteLength;
          text += decoder.decode(piece, { stream: true });
          if (chunk.value.byteLength > room) {
            truncated = true;
            try { await reader.cancel(); } catch (e) { /* already closed */ }
            break;
          }
        }
      }
      text += decoder.decode();
      return {
        url: url.href, final_url: response.url, status: response.status, status_text: response.statusText,
        ok: response.ok, redirected: response.redirected, headers: headers, text: text, bytes: bytes,
        truncated: truncated
      };
    } catch (e) {
      if (e && e.code) throw e;
      if (e && e.name === 'AbortError') throw toolError('TIMEOUT', 'no complete response within ' + timeoutMs + ' ms');
      throw toolError('FAILED', 'fetch of ' + url.href + ' failed: ' + (e && e.message ? e.message : e) +
        ' (is it reachable from this browser, and does it allow CORS from ' + global.location.origin + '?)');
    } finally {
      clearTimeout(timer);
    }
  }

  function localCache(replica) {
    return async function (args) {
      checkArgs(args, ['key', 'prompt', 'model']);
      var entry;
      if (typeof args.key === 'string' && args.key) {
        entry = replica.get(args.key);
      } else if (typeof args.prompt === 'string' && typeof args.model === 'string' && args.model) {
        entry = replica.find(args.prompt, args.model);
      } else {
        throw toolError('INVALID_ARGUMENT', 'give key, or prompt and model');
      }
      if (!entry) return { found: false, key: args.key || '' };
      return {
        found: true, key: entry.key, response: entry.response || '', model: entry.model || '',
        prompt: entry.prompt || '', expires_unix_ms: Number(entry.expiresUnixMs || 0)
      };
    };
  }

  /* ------------------------------------------------------------------- worker */

  /**
   * MobileWorker: one connection to one bridge. Listen to 'change' for UI updates.
   * options: url (ws URL, default same origin /ws/task), token (pairing token), name,
   * cacheReplica (default true), storage (default localStorage), maxBackoffMs.
   */
  function MobileWorker(options) {
    options = options || {};
    var loc = global.location;
    this.url = options.url || ((loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/ws/task');
    this.storage = options.storage || global.localStorage;
    this.pairingToken = options.token || '';
    this.name = options.name || this.storage.getItem(STORAGE_NAME) || defaultName();
    this.cacheReplica = options.cacheReplica !== false;
    this.minBackoffMs = options.minBackoffMs || 500;
    this.maxBackoffMs = options.maxBackoffMs || 30000;
    this.replica = new Replica(this.storage, options.replicaCap || 500);
    this.tools = {
      http_fetch: { spec: HTTP_FETCH_SPEC, run: httpFetch },
      local_cache: { spec: LOCAL_CACHE_SPEC, run: localCache(this.replica) }
    };
    this.state = 'idle';
    this.nodeId = '';
    this.bridgeNodeId = '';
    this.lastError = null;
    this.busy = 0;
    this.currentTask = '';
    this.tasksDone = 0;
    this.tasksFailed = 0;
    this.recent = [];
    this.syncedEntries = 0;
    this.attempt = 0;
    this.socket = null;
    this.heartbeatMs = 2000;
    this._nextId = 1;
    this._timers = {};
    this._listeners = {};
    this._stopped = true;
    this._lastHeard = 0;
  }

  function defaultName() {
    var ua = (global.navigator && global.navigator.userAgent) || '';
    if (/Android/i.test(ua)) return 'android';
    if (/iPhone|iPad/i.test(ua)) return 'ios';
    if (/Headless/i.test(ua)) return 'headless';
    return 'browser';
  }

  MobileWorker.prototype.on = function (event, fn) {
    (this._listeners[event] = this._listeners[event] || []).push(fn);
  };

  MobileWorker.prototype._emit = function (event, detail) {
    (this._listeners[event] || []).forEach(function (fn) { try { fn(detail); } catch (e) { /* UI bug */ } });
  };

  MobileWorker.prototype._set = function (fields) {
    Object.assign(this, fields);
    this._emit('change', this.snapshot());
  };

  MobileWorker.prototype.snapshot = function () {
    return {
      state: this.state, nodeId: this.nodeId, name: this.name, bridgeNodeId: this.bridgeNodeId,
      busy: this.busy, currentTask: this.currentTask, tasksDone: this.tasksDone, tasksFailed: this.tasksFailed,
      lastError: this.lastError, replicaEntries: this.replica.count(), recent: this.recent.slice(),
      url: this.url, attempt: this.attempt
    };
  };

  MobileWorker.prototype.session = function () {
    try { return JSON.parse(this.storage.getItem(STORAGE_SESSION) || 'null'); } catch (e) { return null; }
  };

  MobileWorker.prototype.setToken = function (token, name) {
    this.pairingToken = (token || '').trim();
    if (name) { this.name = name; this.storage.setItem(STORAGE_NAME, name); }
    this.storage.removeItem(STORAGE_SESSION);
  };

  MobileWorker.prototype.start = function () {
    this._stopped = false;
    this._clearTimer('reconnect');
    if (!this.pairingToken && !this.session()) {
      this._set({ state: 'need-token', lastError: null });
      return;
    }
    this._connect();
  };

  MobileWorker.prototype.stop = function () {
    this._stopped = true;
    Object.keys(this._timers).forEach(this._clearTimer, this);
    if (this.socket) { try { this.socket.close(1000, 'stopped'); } catch (e) { /* closed */ } }
    this._set({ state: 'idle' });
  };

  MobileWorker.prototype._clearTimer = function (name) {
    if (this._timers[name]) { clearTimeout(this._timers[name]); clearInterval(this._timers[name]); }
    delete this._timers[name];
  };

  MobileWorker.prototype._connect = function () {
    var self = this;
    var socket;
    try {
      socket = new WebSocket(this.url);
    } catch (e) {
      this._set({ lastError: { code: 'UNAVAILABLE', message: String(e) } });
      this._scheduleReconnect();
      return;
    }
    this.socket = socket;
    this._set({ state: 'connecting' });
    socket.onopen = function () { self._lastHeard = now(); self._hello(); };
    socket.onmessage = function (event) { self._lastHeard = now(); self._receive(event.data); };
    socket.onclose = function (event) { self._closed(socket, event); };
    socket.onerror = function () { /* onclose follows */ };
  };

  MobileWorker.prototype._send = function (message) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    if (!message.id) message.id = String(this._nextId++);
    this.socket.send(JSON.stringify(message));
    return true;
  };

  MobileWorker.prototype._hello = function () {
    var tools = Object.keys(this.tools).map(function (k) { return this.tools[k].spec; }, this);
    var hello = {
      name: this.name, tools: tools, userAgent: (global.navigator && global.navigator.userAgent) || '',
      cacheReplica: this.cacheReplica
    };
    var session = this.session();
    if (session && session.token && session.nodeId) {
      hello.pairingToken = session.token;
      hello.resumeNodeId = session.nodeId;
      this._usingSession = true;
    } else {
      hello.pairingToken = this.pairingToken;
      this._usingSession = false;
    }
    this._set({ state: 'pairing' });
    this._send({ hello: hello });
  };

  MobileWorker.prototype._receive = function (data) {
    var message;
    try { message = JSON.parse(data); } catch (e) { return; }
    if (message.welcome) this._welcome(message.welcome);
    else if (message.taskAssignment) this._task(message.id, message.taskAssignment);
    else if (message.cacheSync) this._cacheSync(message.cacheSync);
    else if (message.error) this._error(message.error);
    /* heartbeat from the bridge: _lastHeard is enough */
  };

  MobileWorker.prototype._welcome = function (welcome) {
    var self = this;
    this.heartbeatMs = Number(welcome.heartbeatIntervalMs) || 2000;
    if (welcome.sessionToken) {
      this.storage.setItem(STORAGE_SESSION, JSON.stringify({
        nodeId: welcome.nodeId, token: welcome.sessionToken, bridgeNodeId: welcome.bridgeNodeId, url: this.url
      }));
    }
    this.attempt = 0;
    this._set({ state: 'paired', nodeId: welcome.nodeId, bridgeNodeId: welcome.bridgeNodeId, lastError: null });
    this._clearTimer('heartbeat');
    this._timers.heartbeat = setInterval(function () { self._beat(); }, this.heartbeatMs);
    this._beat();
  };

  MobileWorker.prototype._beat = function () {
    if (now() - this._lastHeard > 3 * this.heartbeatMs + 2000 && this.socket) {
      try { this.socket.close(4000, 'bridge silent'); } catch (e) { /* closed */ }
      return;
    }
    if (this.replica.sweep()) this._emit('change', this.snapshot());
    this._send({ heartbeat: {
      sentUnixMs: String(now()), busy: this.busy, cacheEntries: String(this.replica.count()),
      currentTask: this.currentTask
    } });
  };

  MobileWorker.prototype._task = async function (id, assignment) {
    var tool = this.tools[assignment.tool];
    var args = assignment.arguments || {};
    var deadline = Number(assignment.deadlineUnixMs || 0);
    var started = (global.performance || Date).now();
    var label = assignment.tool + (args.url ? ' ' + args.url : args.key ? ' ' + args.key.slice(0, 12) : '');
    this._set({ busy: this.busy + 1, currentTask: label });
    var reply = { taskId: assignment.taskId };
    try {
      if (!tool) throw toolError('UNAVAILABLE', 'this mobile node has no tool ' + assignment.tool);
      reply.result = await tool.run(args, { deadline: deadline });
    } catch (e) {
      reply.error = { code: e.code || 'FAILED', message: String(e && e.message ? e.message : e) };
    }
    reply.durationMs = (global.performance || Date).now() - started;
    this.recent.unshift({ tool: assignment.tool, label: label, ok: !reply.error, ms: Math.round(reply.durationMs),
      error: reply.error ? reply.error.code + ': ' + reply.error.message : '', at: now() });
    this.recent = this.recent.slice(0, 10);
    var fields = { busy: Math.max(0, this.busy - 1), currentTask: this.busy > 1 ? this.currentTask : '' };
    fields[reply.error ? 'tasksFailed' : 'tasksDone'] = (reply.error ? this.tasksFailed : this.tasksDone) + 1;
    this._send({ taskResult: reply });
    this._set(fields);
  };

  MobileWorker.prototype._cacheSync = function (sync) {
    var self = this;
    (sync.deletedKeys || []).forEach(function (k) { self.replica.delete(k); });
    (sync.entries || []).forEach(function (e) { if (self.replica.put(e)) self.syncedEntries++; });
    this._emit('change', this.snapshot());
  };

  MobileWorker.prototype._error = function (error) {
    this._set({ lastError: { code: error.code, message: error.message } });
    if (error.code === 'UNAUTHENTICATED') {
      if (this._usingSession) {
        this.storage.removeItem(STORAGE_SESSION);  // expired or foreign session: fall back to pairing
        this._retryWithPairing = !!this.pairingToken;
      } else {
        this.pairingToken = '';
      }
    }
  };

  MobileWorker.prototype._closed = function (socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    this._clearTimer('heartbeat');
    if (this._stopped) return;
    if (event.code === CLOSE_REPLACED) {
      this._set({ state: 'replaced', lastError: { code: 'REPLACED', message: 'this node connected again elsewhere' } });
      return;
    }
    if (this.lastError && this.lastError.code === 'UNAUTHENTICATED' && !this._retryWithPairing &&
        !this.pairingToken && !this.session()) {
      this._set({ state: 'need-token' });
      return;
    }
    this._retryWithPairing = false;
    this._scheduleReconnect();
  };

  MobileWorker.prototype._scheduleReconnect = function () {
    var self = this;
    var base = Math.min(this.maxBackoffMs, this.minBackoffMs * Math.pow(2, this.attempt));
    var delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.attempt += 1;
    this._set({ state: 'backoff', retryInMs: delay });
    this._clearTimer('reconnect');
    this._timers.reconnect = setTimeout(function () { self._connect(); }, delay);
  };

  /** The pairing token from the page URL (#token=... or ?token=...), removed from the address bar. */
  function tokenFromLocation() {
    var loc = global.location;
    var fromHash = new URLSearchParams((loc.hash || '').replace(/^#/, '')).get('token');
    var fromQuery = new URLSearchParams(loc.search || '').get('token');
    var token = fromHash || fromQuery || '';
    if (token && global.history && global.history.replaceState) {
      global.history.replaceState(null, '', loc.pathname);
    }
    return token;
  }

  global.LlmlabMobile = {
    MobileWorker: MobileWorker,
    Replica: Replica,
    tokenFromLocation: tokenFromLocation,
    tools: { http_fetch: httpFetch, specs: [HTTP_FETCH_SPEC, LOCAL_CACHE_SPEC] }
  };
})(typeof window !== 'undefined' ? window : self);
