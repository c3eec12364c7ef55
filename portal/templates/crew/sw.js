// Closeout crew app service worker (issue 9), served by crew.service_worker for this deploy.
//
// - The version is a hash of the deployed static files: a deploy changes this file, the browser
//   installs the new worker, and activate deletes every cache of the old version.
// - Static files: cache first (the cache is versioned). Crew pages: network first, cached per user
//   (the X-Closeout-User header), served from the cache only when the network fails. Nothing
//   outside the crew screens is ever cached, and any sign that nobody (or someone else) is signed
//   in drops the cached pages.
// - Changes are not queued here: offline.js keeps them in IndexedDB and replays them.
"use strict";

var VERSION = {{ version|tojson }};
var SCOPE = {{ scope|tojson }};
var STATIC_FILES = {{ static_files|tojson }};
var STATIC_CACHE = "closeout-static-" + VERSION;
var PAGES_PREFIX = "closeout-pages-";
var PAGES_CACHE_PREFIX = PAGES_PREFIX + VERSION + "-user-";
var THUMBNAIL = /^\/photos\/\d+\/thumb$/;
var NOT_PAGES = [SCOPE + "sw.js", SCOPE + "manifest.webmanifest"];

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(STATIC_CACHE).then(function (cache) {
    return cache.addAll(STATIC_FILES);
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (name) {
      return name.indexOf("closeout-") === 0 && name !== STATIC_CACHE && name.indexOf(PAGES_CACHE_PREFIX) !== 0;
    }).map(function (name) { return caches.delete(name); }));
  }).then(function () { return self.clients.claim(); }));
});

function pageNames() {
  return caches.keys().then(function (names) {
    return names.filter(function (name) { return name.indexOf(PAGES_PREFIX) === 0; });
  });
}

function forgetPages(exceptName) {
  return pageNames().then(function (names) {
    return Promise.all(names.filter(function (name) { return name !== exceptName; })
      .map(function (name) { return caches.delete(name); }));
  });
}

// The signed-in crew member's page cache: the only one there is (keeping a page for one user drops the others').
function currentPages() {
  return pageNames().then(function (names) {
    var mine = names.filter(function (name) { return name.indexOf(PAGES_CACHE_PREFIX) === 0; });
    return mine.length === 1 ? caches.open(mine[0]) : null;
  });
}

function pageKey(request) {
  var url = new URL(request.url);
  url.hash = "";
  return url.href;
}

function keepPage(request, response) {
  var user = response.headers.get("X-Closeout-User");
  if (!user) {
    // Sent to sign in, or someone who is not a crew member: whoever holds the phone must not see the saved pages.
    return forgetPages();
  }
  var name = PAGES_CACHE_PREFIX + user;
  return forgetPages(name).then(function () {
    if (response.status !== 200 || response.redirected) { return null; }
    return caches.open(name).then(function (cache) { return cache.put(pageKey(request), response); });
  });
}

function offlinePage() {
  var html = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">" +
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Offline · Closeout</title>" +
    "<link rel=\"stylesheet\" href=\"" + STATIC_FILES[0] + "\"></head><body><main id=\"main\">" +
    "<h1>Offline</h1><p>This page is not saved on this phone. Open it once with signal and it will be.</p>" +
    "<p><a class=\"button block\" href=\"" + SCOPE + "jobs\">My jobs</a></p></main></body></html>";
  return new Response(html, { status: 503, headers: { "Content-Type": "text/html; charset=utf-8" } });
}

function networkFirst(event) {
  var request = event.request;
  function saved() {
    return currentPages().then(function (cache) {
      return cache ? cache.match(pageKey(request), { ignoreVary: true }) : null;
    });
  }
  return fetch(request).then(function (response) {
    if (response.status >= 500) {  // the server is down or restarting: the saved page beats an error
      return saved().then(function (page) { return page || response; });
    }
    event.waitUntil(keepPage(request, response.clone()));
    return response;
  }, function () {
    return saved().then(function (page) { return page || offlinePage(); });
  });
}

function cacheFirst(request) {
  return caches.open(STATIC_CACHE).then(function (cache) {
    return cache.match(request, { ignoreSearch: false }).then(function (saved) {
      return saved || fetch(request).then(function (response) {
        if (response.ok) { cache.put(request, response.clone()); }
        return response;
      });
    });
  });
}

// Thumbnails of a job's photos never change under their id; kept with the user's pages, dropped with them.
function thumbnail(request) {
  return currentPages().then(function (cache) {
    return (cache ? cache.match(request) : Promise.resolve(null)).then(function (saved) {
      return saved || fetch(request).then(function (response) {
        if (cache && response.ok) { cache.put(request, response.clone()); }
        return response;
      });
    });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  var url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) { return; }
  if (url.pathname.indexOf("/static/") === 0) {
    event.respondWith(cacheFirst(request));
  } else if (THUMBNAIL.test(url.pathname)) {
    event.respondWith(thumbnail(request));
  } else if (url.pathname.indexOf(SCOPE) === 0 && NOT_PAGES.indexOf(url.pathname) === -1 &&
             (!request.headers.get("HX-Request") || request.headers.get("HX-Boosted"))) {
    // Whole pages only (navigations and hx-boost); an htmx fragment poll is not a page to keep.
    event.respondWith(networkFirst(event));
  }
});

// offline.js asks to keep the cards of today's and upcoming jobs, so they can be read with no signal.
self.addEventListener("message", function (event) {
  var data = event.data || {};
  if (data.type === "keep" && Array.isArray(data.urls)) {
    event.waitUntil(Promise.all(data.urls.filter(function (url) {
      return new URL(url, self.location.origin).pathname.indexOf(SCOPE) === 0;
    }).map(function (url) {
      var request = new Request(url, { credentials: "same-origin" });
      return fetch(request).then(function (response) { return keepPage(request, response); }, function () { return null; });
    })));
  }
});
