/*
 * Service worker of the llmlab PWA: keeps the app shell so the page opens without a network,
 * network-first so a new frontend shows at once when the bridge is reachable. The JSON API
 * and the WebSocket are never cached.
 */
'use strict';

var CACHE = 'llmlab-shell-v1';
var SHELL = ['/', '/style.css', '/mobile_worker.js', '/pwa.js', '/manifest.webmanifest', '/icon.svg',
  '/icon-192.png', '/icon-512.png'];

self.addEventListener('install', function (event) {
  event.waitUntil(caches.open(CACHE).then(function (cache) { return cache.addAll(SHELL); }));
  self.skipWaiting();
});

self.addEventListener('activate', function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (n) { return n !== CACHE; }).map(function (n) { return caches.delete(n); }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener('fetch', function (event) {
  var url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return;
  var path = url.pathname;
  if (SHELL.indexOf(path) < 0) return;  // /api, /ws, /llmlab, /v1: always the network
  event.respondWith(
    fetch(event.request).then(function (response) {
      if (response.ok) {
        var copy = response.clone();
        caches.open(CACHE).then(function (cache) { cache.put(event.request, copy); });
      }
      return response;
    }).catch(function () {
      return caches.match(event.request).then(function (hit) { return hit || Response.error(); });
    })
  );
});
