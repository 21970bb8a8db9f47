/* The PWA page: binds a MobileWorker to the view in index.html. Text only via textContent. */
(function () {
  'use strict';

  var $ = function (id) { return document.getElementById(id); };
  var token = LlmlabMobile.tokenFromLocation();
  var worker = new LlmlabMobile.MobileWorker({ token: token });
  if (token) worker.setToken(token);  // a fresh token replaces an old pairing
  window.llmlabWorker = worker;  // for tests and the curious

  var LABELS = {
    idle: 'idle', 'need-token': 'not paired', connecting: 'connecting', pairing: 'pairing',
    paired: 'paired', backoff: 'reconnecting', replaced: 'open elsewhere'
  };

  function render(s) {
    var badge = $('state');
    badge.textContent = LABELS[s.state] || s.state;
    badge.dataset.state = s.state;
    $('name').textContent = s.name;
    $('node-id').textContent = s.nodeId || '-';
    $('bridge').textContent = s.bridgeNodeId ? s.bridgeNodeId + ' (' + location.host + ')' : location.host;
    $('current-task').textContent = s.currentTask || 'none';
    $('current-task').classList.toggle('busy', !!s.currentTask);
    $('done').textContent = s.tasksDone;
    $('failed').textContent = s.tasksFailed;
    $('replica').textContent = s.replicaEntries;
    $('pairing').hidden = s.state !== 'need-token';
    var err = $('error');
    err.hidden = !s.lastError;
    err.textContent = s.lastError ? s.lastError.code + ': ' + s.lastError.message : '';
    var list = $('recent');
    list.replaceChildren();
    s.recent.forEach(function (r) {
      var li = document.createElement('li');
      li.className = r.ok ? 'ok' : 'fail';
      var what = document.createElement('span');
      what.textContent = r.label;
      var how = document.createElement('span');
      how.className = 'muted';
      how.textContent = (r.ok ? ' ok ' : ' ' + r.error + ' ') + r.ms + ' ms';
      li.append(what, how);
      list.append(li);
    });
    if (!s.recent.length) {
      var none = document.createElement('li');
      none.className = 'muted';
      none.textContent = 'no task yet';
      list.append(none);
    }
  }

  worker.on('change', render);

  $('pair-form').addEventListener('submit', function (event) {
    event.preventDefault();
    worker.setToken($('token-input').value, $('name-input').value.trim());
    worker.start();
  });

  $('forget').addEventListener('click', function () {
    worker.stop();
    worker.setToken('');
    worker.replica.clear();
    worker.start();
  });

  var deferredInstall = null;
  window.addEventListener('beforeinstallprompt', function (event) {
    event.preventDefault();
    deferredInstall = event;
    $('install').hidden = false;
  });
  $('install').addEventListener('click', function () {
    if (!deferredInstall) return;
    deferredInstall.prompt();
    deferredInstall = null;
    $('install').hidden = true;
  });

  if ('serviceWorker' in navigator && window.isSecureContext) {
    navigator.serviceWorker.register('/sw.js').catch(function () { /* works without offline shell */ });
  }

  $('name-input').value = worker.name;
  render(worker.snapshot());
  worker.start();
})();
