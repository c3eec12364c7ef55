// The offline crew app (issue 9). Plain JS, no build step; every form still works without it.
//
// - Installs the service worker (/crew/sw.js), which keeps the crew pages readable with no signal,
//   and asks it to keep the cards of today's and upcoming jobs.
// - With no signal (or while earlier changes of the same job still wait), photos, notes, line items
//   and "Complete" go into IndexedDB instead, each with a UUID made here. A banner always says how
//   many wait; the job card lists them.
// - When the signal returns they are replayed in order, one at a time, with progress. The server
//   applies each change id once and answers a replay with the original result, so a change stays
//   queued until the server has acknowledged it, and resending is always safe.
// - A refusal (job reassigned, completed, reopened or billed meanwhile) stops that job's queue and
//   shows why on the card; nothing is dropped until the crew member taps Discard.
// - Sign-out deletes the queue, the caches and the service worker before the form goes.
(function () {
  "use strict";
  if (window.closeoutOffline) { return; } // hx-boost re-runs page scripts; set up once
  if (!window.indexedDB) { return; }

  var DB_NAME = "closeout-offline";
  var STORE = "changes";
  var RETRY_MS = 15000;
  var state = {
    changes: [],      // this user's queued changes, oldest first
    loaded: null,     // the promise of the first load
    syncing: false,
    sending: null,    // the change being sent
    progress: null,   // 0..1 while a photo uploads
    sent: 0,
    total: 0,
    signIn: false,    // the session ended: changes wait for the same person to sign in again
    signOutArmed: false,
    signingOut: false,
    retryTimer: null,
    confirmDiscard: null,
  };
  var previews = {};  // change id → object URL of a queued photo

  // --- Where we are ----------------------------------------------------------------------------

  function appElement() { return document.querySelector("[data-offline-app]"); }

  function currentUser() {
    var app = appElement();
    return app ? app.dataset.user : null;
  }

  function jobOf(element) {
    var box = element.closest("[data-offline-job]") || document.querySelector("[data-offline-job]");
    if (!box) { return null; }
    return { id: box.dataset.offlineJob, number: box.dataset.jobNumber, seen: parseInt(box.dataset.jobReopens || "0", 10) };
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    var bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  }

  function csrfToken() {
    var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    return headers["X-CSRFToken"] || "";
  }

  function plural(count, one, many) { return count + " " + (count === 1 ? one : many); }

  // --- IndexedDB ---------------------------------------------------------------------------------

  var dbPromise = null;

  function openDb() {
    if (!dbPromise) {
      dbPromise = new Promise(function (resolve, reject) {
        var request = indexedDB.open(DB_NAME, 1);
        request.onupgradeneeded = function () {
          request.result.createObjectStore(STORE, { keyPath: "seq", autoIncrement: true });
        };
        request.onsuccess = function () {
          var db = request.result;
          db.onversionchange = function () { db.close(); dbPromise = null; }; // sign-out deletes it
          resolve(db);
        };
        request.onerror = function () { dbPromise = null; reject(request.error); };
      });
    }
    return dbPromise;
  }

  function inStore(mode, work) {
    return openDb().then(function (db) {
      return new Promise(function (resolve, reject) {
        var transaction = db.transaction(STORE, mode);
        var request = work(transaction.objectStore(STORE));
        transaction.oncomplete = function () { resolve(request ? request.result : undefined); };
        transaction.onerror = transaction.onabort = function () { reject(transaction.error); };
      });
    });
  }

  function load() {
    var user = currentUser();
    return inStore("readonly", function (store) { return store.getAll(); }).then(function (all) {
      // Another person's unsent changes stay stored for them, never shown or sent as this user.
      state.changes = all.filter(function (change) { return change.userId === user; })
        .sort(function (a, b) { return a.seq - b.seq; });
    });
  }

  function save(change) {
    return inStore("readwrite", function (store) { return store.put(change); });
  }

  function forget(change) {
    state.changes = state.changes.filter(function (other) { return other.seq !== change.seq; });
    if (previews[change.id]) { URL.revokeObjectURL(previews[change.id]); delete previews[change.id]; }
    return inStore("readwrite", function (store) { return store.delete(change.seq); });
  }

  function enqueue(change) {
    change.id = change.id || newId();
    change.userId = currentUser();
    change.status = "waiting";
    change.createdAt = new Date().toISOString();
    return inStore("readwrite", function (store) { return store.add(change); }).then(function (seq) {
      change.seq = seq;
      state.changes.push(change);
      render();
      sync();
    });
  }

  function changesOf(jobId) {
    return state.changes.filter(function (change) { return change.jobId === String(jobId); });
  }

  function blocked(jobId) {
    return changesOf(jobId).some(function (change) { return change.status === "conflict"; });
  }

  // Offline, or earlier changes of this job still wait: a change sent now would overtake them.
  function mustQueue(jobId) {
    return !navigator.onLine || changesOf(jobId).length > 0;
  }

  // --- Queuing what the crew member does -----------------------------------------------------------

  function queueForm(form, kind, job) {
    var change = { kind: kind, url: form.action, jobId: job.id, jobNumber: job.number, seen: job.seen, fields: {} };
    if (kind === "note") {
      change.fields.body = form.elements.body.value.trim();
      change.label = change.fields.body;
      form.reset();
    } else if (kind === "item") {
      var select = form.elements.template_id;
      change.fields.template_id = select.value;
      change.fields.quantity = form.elements.quantity.value.trim();
      change.label = select.options[select.selectedIndex].text.split("·")[0].trim() + " × " + change.fields.quantity;
      select.value = "";
      form.elements.quantity.value = "1";
    } else {
      change.label = "Complete " + job.number;
    }
    return enqueue(change);
  }

  function fittedSize(width, height, edge) {
    var scale = Math.min(1, edge / Math.max(width, height));
    return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
  }

  // Scale on the phone to the web copy the server keeps (long edge, JPEG quality from the form),
  // so a weak connection carries a fraction of the camera's bytes. Whatever cannot be decoded here
  // (HEIC in most browsers) goes as it is, and so does a file the scaling would not make smaller.
  function scalePhoto(file, edge, quality) {
    if (!window.createImageBitmap) { return Promise.resolve(file); }
    return createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bitmap) {
      var size = fittedSize(bitmap.width, bitmap.height, edge);
      var canvas = document.createElement("canvas");
      canvas.width = size[0];
      canvas.height = size[1];
      canvas.getContext("2d").drawImage(bitmap, 0, 0, size[0], size[1]);
      bitmap.close();
      return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", quality); });
    }).then(function (blob) {
      return blob && blob.size < file.size ? blob : file;
    }, function () { return file; });
  }

  function queuePhoto(form, file, changeId) {
    var job = jobOf(form);
    var edge = parseInt(form.dataset.photoEdge || "1600", 10);
    var quality = parseFloat(form.dataset.photoQuality || "0.8");
    return scalePhoto(file, edge, quality).then(function (blob) {
      var scaled = blob !== file;
      return enqueue({
        id: changeId, kind: "photo", url: form.action, jobId: job.id, jobNumber: job.number, seen: job.seen,
        blob: blob, fileName: scaled ? file.name.replace(/\.[^.]*$/, "") + ".jpg" : file.name,
        originalSize: file.size, label: file.name,
      });
    });
  }

  function queuePhotos(form, files) {
    return files.reduce(function (previous, file) {
      return previous.then(function () { return queuePhoto(form, file); });
    }, Promise.resolve());
  }

  // --- Replaying the queue ---------------------------------------------------------------------------

  function nextChange() {
    return state.changes.find(function (change) { return change.status === "waiting" && !blocked(change.jobId); });
  }

  function alertText(html) {
    var page = new DOMParser().parseFromString(html || "", "text/html");
    var alert = page.querySelector("[role=alert]");
    return alert ? alert.textContent.replace(/\s+/g, " ").trim() : "";
  }

  function isWholePage(html) { return /^\s*<(!doctype|html)/i.test(html || ""); }

  function outcome(xhr) {
    var path = xhr.responseURL ? new URL(xhr.responseURL).pathname : "";
    if (path === "/login") { return { kind: "signin" }; }
    if (xhr.status >= 200 && xhr.status < 300) { return { kind: "done", html: xhr.responseText }; }
    if (xhr.status === 404) {
      return { kind: "conflict", message: "This job is no longer assigned to you: the office may have given it to someone else." };
    }
    if (xhr.status === 400 && isWholePage(xhr.responseText)) { return { kind: "signin" }; } // the session's CSRF token changed
    if (xhr.status === 401 || xhr.status === 403) { return { kind: "signin" }; }
    if (xhr.status === 413) { return { kind: "conflict", message: "This photo is larger than the server accepts." }; }
    if ([400, 409, 422].indexOf(xhr.status) !== -1) {
      var reopens = xhr.getResponseHeader("X-Job-Reopens");
      return { kind: "conflict", message: alertText(xhr.responseText) || "The server refused this change.",
               reopens: reopens === null ? null : parseInt(reopens, 10) };
    }
    return { kind: "retry" }; // 5xx, 429: the server will take it later
  }

  function send(change) {
    return new Promise(function (resolve) {
      var data = new FormData();
      if (change.kind === "photo") { data.append("photos", change.blob, change.fileName); }
      Object.keys(change.fields || {}).forEach(function (name) { data.append(name, change.fields[name]); });
      var xhr = new XMLHttpRequest();
      xhr.open("POST", change.url);
      xhr.timeout = 120000;
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("HX-Request", "true"); // answers with the changed component
      xhr.setRequestHeader("X-Client-Change-Id", change.id);
      xhr.setRequestHeader("X-Job-Reopens", String(change.seen || 0));
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) { state.progress = event.loaded / event.total; renderProgress(); }
      });
      xhr.addEventListener("load", function () { resolve(outcome(xhr)); });
      xhr.addEventListener("error", function () { resolve({ kind: "retry" }); });
      xhr.addEventListener("timeout", function () { resolve({ kind: "retry" }); });
      xhr.send(data);
    });
  }

  function fragment(html) {
    var template = document.createElement("template");
    template.innerHTML = (html || "").trim();
    return Array.prototype.slice.call(template.content.children);
  }

  // Show the server's answer on the card when it is on screen; a completion reloads the card.
  function showAccepted(change, html) {
    var box = document.querySelector("[data-offline-job]");
    if (!box || box.dataset.offlineJob !== change.jobId) { return false; }
    if (change.kind === "complete") { return true; }
    var nodes = fragment(html);
    if (change.kind === "photo") {
      var grid = document.querySelector("[data-photo-grid]");
      nodes.forEach(function (node) {
        if (grid && node.id && !document.getElementById(node.id)) { grid.appendChild(node); process(node); }
      });
    } else {
      nodes.forEach(function (node) {
        var old = node.id && document.getElementById(node.id);
        if (old) { old.replaceWith(node); process(node); }
      });
    }
    return false;
  }

  function process(node) { if (window.htmx) { htmx.process(node); } }

  function sync() {
    if (state.syncing || state.signingOut || !navigator.onLine || !currentUser() || !nextChange()) {
      render();
      return Promise.resolve();
    }
    state.syncing = true;
    state.signIn = false;
    state.sent = 0;
    state.total = state.changes.filter(function (change) { return change.status === "waiting"; }).length;
    var reload = false;

    function finish() {
      state.syncing = false;
      state.sending = null;
      render();
      if (reload) { window.location.reload(); }
    }

    function step() {
      var change = nextChange();
      if (!change || !navigator.onLine || state.signingOut) { return finish(); }
      state.sending = change;
      state.progress = change.kind === "photo" ? 0 : null;
      render();
      return send(change).then(function (result) {
        state.sending = null;
        if (result.kind === "done") {
          state.sent += 1;
          reload = showAccepted(change, result.html) || reload;
          return forget(change).then(step);
        }
        if (result.kind === "conflict") {
          change.status = "conflict";
          change.message = result.message;
          if (result.reopens !== null && result.reopens !== undefined) { change.reopens = result.reopens; }
          return save(change).then(step); // other jobs' changes still go
        }
        if (result.kind === "signin") { state.signIn = true; } else { retryLater(); }
        return finish();
      });
    }
    return step();
  }

  function retryLater() {
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(sync, RETRY_MS);
  }

  function retryJob(jobId) {
    var changes = changesOf(jobId);
    // "Try again" after a reopen: the crew member has seen the reopened card, so the changes go with its count.
    var reopens = changes.reduce(function (most, change) { return Math.max(most, change.reopens || 0); }, 0);
    var box = document.querySelector("[data-offline-job]");
    if (box && box.dataset.offlineJob === String(jobId) && reopens > parseInt(box.dataset.jobReopens || "0", 10)) {
      box.dataset.jobReopens = String(reopens); // what is queued from here on was made after looking too
    }
    return Promise.all(changes.map(function (change) {
      change.status = "waiting";
      change.message = null;
      change.seen = Math.max(change.seen || 0, reopens);
      return save(change);
    })).then(sync);
  }

  function discardJob(jobId) {
    return Promise.all(changesOf(jobId).map(forget)).then(function () { state.confirmDiscard = null; render(); });
  }

  // --- What the crew member sees ---------------------------------------------------------------------

  function describeKept(changes) {
    var count = function (kind) { return changes.filter(function (change) { return change.kind === kind; }).length; };
    var parts = [];
    if (count("photo")) { parts.push(plural(count("photo"), "photo", "photos")); }
    if (count("note")) { parts.push(count("note") === 1 ? "note" : count("note") + " notes"); }
    if (count("item")) { parts.push(count("item") === 1 ? "line item" : count("item") + " line items"); }
    if (count("complete")) { parts.push("completion"); }
    if (parts.length > 1) { parts.splice(-2, 2, parts[parts.length - 2] + " and " + parts[parts.length - 1]); }
    return "Your " + parts.join(", ") + (changes.length === 1 ? " is" : " are") + " kept on this phone.";
  }

  function bannerText() {
    var count = state.changes.length;
    var conflicts = state.changes.filter(function (change) { return change.status === "conflict"; });
    if (state.signOutArmed && count) {
      return [plural(count, "change has", "changes have") + " not been sent. Signing out deletes " +
              (count === 1 ? "it" : "them") + " from this phone: tap Sign out again to sign out anyway.", "conflict"];
    }
    if (!navigator.onLine) {
      return [count ? "Offline: " + plural(count, "change", "changes") + " waiting" : "Offline: showing what this phone saved", ""];
    }
    if (!count) { return null; }
    if (state.syncing && state.sending) {
      return ["Sending change " + (state.sent + 1) + " of " + state.total + "…", "syncing"];
    }
    if (state.signIn) { return ["Sign in again to send " + plural(count, "change", "changes") + " waiting on this phone.", "conflict"]; }
    if (conflicts.length) {
      var jobs = conflicts.map(function (change) { return change.jobNumber; })
        .filter(function (number, index, all) { return all.indexOf(number) === index; });
      return [plural(count, "change", "changes") + " waiting: " + jobs.join(", ") + " needs you.", "conflict"];
    }
    return [plural(count, "change", "changes") + " waiting to be sent.", ""];
  }

  function renderBanner() {
    var main = document.getElementById("main");
    if (!main) { return; }
    var banner = document.getElementById("offline-banner");
    var text = bannerText();
    if (!text) { if (banner) { banner.remove(); } return; }
    if (!banner) {
      banner = document.createElement("div");
      banner.id = "offline-banner";
      banner.setAttribute("role", "status");
      banner.setAttribute("aria-live", "polite");
      main.insertBefore(banner, main.firstChild);
    }
    banner.className = "offline-banner " + text[1];
    banner.textContent = "";
    var line = document.createElement("p");
    line.textContent = text[0];
    banner.appendChild(line);
  }

  function stateText(change) {
    if (state.sending === change) { return "Sending…"; }
    if (change.status === "conflict") { return "Not sent"; }
    if (blocked(change.jobId)) { return "Held"; }
    return navigator.onLine ? "Waiting" : "Waiting for signal";
  }

  function describeChange(change) {
    if (change.kind === "photo") {
      var sizes = change.originalSize && change.blob.size < change.originalSize
        ? " (" + kilobytes(change.originalSize) + " → " + kilobytes(change.blob.size) + ")" : "";
      return "Photo " + change.label + sizes;
    }
    if (change.kind === "note") { return "Note: " + change.label; }
    if (change.kind === "item") { return "Item: " + change.label; }
    return change.label;
  }

  function kilobytes(count) { return Math.max(1, Math.round(count / 1024)) + " KB"; }

  function button(label, attribute, primary) {
    var element = document.createElement("button");
    element.type = "button";
    element.className = "button" + (primary ? " primary" : "");
    element.textContent = label;
    element.setAttribute(attribute, "");
    return element;
  }

  function renderJobPanel() {
    var box = document.querySelector("[data-offline-job]");
    var panel = document.getElementById("offline-waiting");
    var changes = box ? changesOf(box.dataset.offlineJob) : [];
    if (!changes.length) { if (panel) { panel.remove(); } return; }
    if (!panel) {
      panel = document.createElement("section");
      panel.id = "offline-waiting";
      panel.className = "card offline-waiting";
      var summary = box.querySelector("#job-summary, h1");
      var anchor = summary && summary.id === "job-summary" ? summary : null;
      if (anchor) { anchor.after(panel); } else { box.appendChild(panel); }
    }
    panel.textContent = "";
    var heading = document.createElement("h2");
    heading.textContent = "Waiting on this phone";
    panel.appendChild(heading);
    var conflict = changes.find(function (change) { return change.status === "conflict"; });
    if (conflict) {
      var alert = document.createElement("div");
      alert.className = "offline-conflict";
      alert.setAttribute("role", "alert");
      var message = document.createElement("p");
      message.textContent = conflict.message + " " + describeKept(changes);
      alert.appendChild(message);
      var actions = document.createElement("div");
      actions.className = "offline-actions";
      actions.appendChild(button("Try again", "data-offline-retry", true));
      var discard = state.confirmDiscard === box.dataset.offlineJob;
      actions.appendChild(button(discard ? "Discard " + plural(changes.length, "change", "changes") + " for good" : "Discard",
                                 "data-offline-discard", false));
      alert.appendChild(actions);
      panel.appendChild(alert);
    }
    var list = document.createElement("ul");
    changes.forEach(function (change) {
      var item = document.createElement("li");
      item.className = "offline-change";
      item.dataset.changeId = change.id;
      if (change.kind === "photo") {
        var image = document.createElement("img");
        previews[change.id] = previews[change.id] || URL.createObjectURL(change.blob);
        image.src = previews[change.id];
        image.alt = "Queued photo " + change.label;
        item.appendChild(image);
      }
      var text = document.createElement("span");
      text.className = "offline-change-text";
      text.textContent = describeChange(change);
      item.appendChild(text);
      var status = document.createElement("span");
      status.className = "offline-change-state";
      status.textContent = stateText(change);
      item.appendChild(status);
      if (state.sending === change && state.progress !== null) {
        var progress = document.createElement("progress");
        progress.max = 1;
        progress.value = state.progress;
        progress.setAttribute("aria-label", "Sending " + change.label);
        item.appendChild(progress);
      }
      list.appendChild(item);
    });
    panel.appendChild(list);
  }

  function renderProgress() {
    var bar = document.querySelector("#offline-waiting progress");
    if (bar && state.progress !== null) { bar.value = state.progress; }
  }

  function render() {
    renderBanner();
    renderJobPanel();
  }

  // --- Sign-out empties the offline store ----------------------------------------------------------

  function clearEverything() {
    var database = dbPromise ? dbPromise.then(function (db) { db.close(); }, function () {}) : Promise.resolve();
    dbPromise = null;
    var deleted = database.then(function () {
      return new Promise(function (resolve) {
        var request = indexedDB.deleteDatabase(DB_NAME);
        request.onsuccess = request.onerror = request.onblocked = function () { resolve(); };
      });
    });
    var cachesGone = window.caches ? caches.keys().then(function (names) {
      return Promise.all(names.filter(function (name) { return name.indexOf("closeout-") === 0; })
        .map(function (name) { return caches.delete(name); }));
    }) : Promise.resolve();
    var workersGone = navigator.serviceWorker ? navigator.serviceWorker.getRegistrations().then(function (registrations) {
      return Promise.all(registrations.map(function (registration) { return registration.unregister(); }));
    }) : Promise.resolve();
    return Promise.all([deleted, cachesGone, workersGone]);
  }

  function signOut(event, form) {
    if (state.signingOut) { return; }
    event.preventDefault();
    event.stopImmediatePropagation();
    if (state.changes.length && !state.signOutArmed) {
      state.signOutArmed = true; // the banner warns; the second tap signs out
      render();
      return;
    }
    state.signingOut = true;
    state.changes = [];
    clearEverything().then(function () { form.submit(); }, function () { form.submit(); });
  }

  // --- The service worker ------------------------------------------------------------------------------

  var KEEP_AGAIN_MS = 5 * 60 * 1000; // My jobs is opened all day: refresh the kept cards every few minutes, not every view
  var keptAt = {};

  function keepPages() {
    if (!navigator.serviceWorker || !navigator.onLine) { return; }
    // A page the worker controls was kept on its way in; a first visit's page was not.
    var urls = navigator.serviceWorker.controller ? [] : [window.location.pathname];
    var now = Date.now();
    document.querySelectorAll("a[data-offline-keep]").forEach(function (link) {
      var url = link.getAttribute("href");
      if (!keptAt[url] || now - keptAt[url] > KEEP_AGAIN_MS) { keptAt[url] = now; urls.push(url); }
    });
    if (!urls.length) { return; }
    navigator.serviceWorker.ready.then(function (registration) {
      if (registration.active) { registration.active.postMessage({ type: "keep", urls: urls }); }
    });
  }

  function registerWorker() {
    var app = appElement();
    if (!app || !navigator.serviceWorker) { return; }
    navigator.serviceWorker.register(app.dataset.sw, { scope: app.dataset.scope }).catch(function () {});
  }

  // --- Wiring ------------------------------------------------------------------------------------------

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches("form[action$='/logout']")) { signOut(event, form); return; }
    var kind = form.dataset.offlineKind;
    var job = kind && jobOf(form);
    if (!job || !mustQueue(job.id)) { return; }
    event.preventDefault();
    event.stopImmediatePropagation(); // htmx must not send it now
    queueForm(form, kind, job);
  }, true);

  document.addEventListener("change", function (event) {
    var input = event.target;
    var form = input.closest && input.closest("form[data-photo-upload]");
    if (!form || input.type !== "file" || !input.files.length) { return; }
    var job = jobOf(form);
    if (!job || !mustQueue(job.id)) { return; } // crew.js uploads them now
    event.stopImmediatePropagation();
    var files = Array.prototype.slice.call(input.files);
    input.value = "";
    queuePhotos(form, files);
  }, true);

  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("a, button") : null;
    if (!target) { return; }
    var box = target.closest("[data-offline-job]");
    if (target.matches("a[data-offline-complete]") && box && mustQueue(box.dataset.offlineJob)) {
      event.preventDefault();
      event.stopImmediatePropagation();
      askToComplete(target);
    } else if (target.matches("[data-offline-confirm-complete]")) {
      var link = target.closest(".sticky-bottom").querySelector("a[data-offline-complete]");
      var job = jobOf(link);
      target.closest(".offline-confirm").remove();
      link.hidden = false;
      enqueue({ kind: "complete", url: link.dataset.offlineComplete, jobId: job.id, jobNumber: job.number,
                seen: job.seen, fields: {}, label: "Complete " + job.number });
    } else if (target.matches("[data-offline-cancel]")) {
      var confirmBox = target.closest(".offline-confirm");
      confirmBox.parentNode.querySelector("a[data-offline-complete]").hidden = false;
      confirmBox.remove();
    } else if (target.matches("[data-offline-retry]") && box) {
      retryJob(box.dataset.offlineJob);
    } else if (target.matches("[data-offline-discard]") && box) {
      if (state.confirmDiscard === box.dataset.offlineJob) { discardJob(box.dataset.offlineJob); } else {
        state.confirmDiscard = box.dataset.offlineJob;
        render();
      }
    }
  }, true);

  function askToComplete(link) {
    var job = jobOf(link);
    var confirmBox = document.createElement("div");
    confirmBox.className = "offline-confirm";
    var text = document.createElement("p");
    text.textContent = "No signal: " + job.number + " will be completed as soon as the changes before it are sent.";
    confirmBox.appendChild(text);
    var actions = document.createElement("div");
    actions.className = "offline-actions";
    actions.appendChild(button("Complete job", "data-offline-confirm-complete", true));
    actions.appendChild(button("Keep working", "data-offline-cancel", false));
    confirmBox.appendChild(actions);
    link.hidden = true;
    link.after(confirmBox);
  }

  // Online htmx posts carry a change id too: if the answer is lost, the queued retry cannot double the change.
  // They send no reopen count: the crew member is looking at the job as it is.
  document.addEventListener("htmx:configRequest", function (event) {
    var form = event.detail.elt;
    if (!form.dataset || !form.dataset.offlineKind) { return; }
    event.detail.headers["X-Client-Change-Id"] = newId();
  });

  document.addEventListener("htmx:sendError", function (event) {
    var form = event.detail.elt;
    var config = event.detail.requestConfig || {};
    if (!form.dataset || !form.dataset.offlineKind || !config.headers) { return; }
    var job = jobOf(form);
    var fields = {};
    ["body", "template_id", "quantity"].forEach(function (name) {
      if (config.parameters && config.parameters[name] !== undefined) { fields[name] = config.parameters[name]; }
    });
    var kind = form.dataset.offlineKind;
    var label = kind === "note" ? fields.body : kind === "item" ? "item × " + fields.quantity : "Complete " + job.number;
    if (kind === "item") {
      var chosen = form.elements.template_id.options[form.elements.template_id.selectedIndex];
      label = chosen.text.split("·")[0].trim() + " × " + fields.quantity;
    }
    if (kind !== "complete") { form.reset(); } // it is queued now: sending it again would make a second one
    enqueue({ id: config.headers["X-Client-Change-Id"], kind: kind, url: form.action, jobId: job.id,
              jobNumber: job.number, seen: job.seen, fields: fields, label: label });
  });

  function pageShown() {
    registerWorker();
    render();
    keepPages();
  }

  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.detail.boosted || event.target === document.body) { pageShown(); } else { render(); }
  });
  window.addEventListener("online", function () { render(); sync(); });
  window.addEventListener("offline", render);
  window.addEventListener("pageshow", render);

  window.closeoutOffline = {
    newId: newId,
    mustQueue: function (form) { var job = jobOf(form); return Boolean(job && mustQueue(job.id)); },
    queuePhoto: queuePhoto,
    sync: sync,
    count: function () { return state.changes.length; },
    ready: function () { return state.loaded; },
  };

  state.loaded = load().then(function () { pageShown(); sync(); }, function () { pageShown(); });
})();
