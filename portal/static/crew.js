// Crew closeout: photo uploads with per-file progress, and showing refusals in place.
// Plain JS, no build step. Without it every form still works as a normal post.
(function () {
  "use strict";
  // hx-boost re-runs this script on every crew page it swaps in; set up once.
  if (window.closeoutCrewReady) { return; }
  window.closeoutCrewReady = true;

  var PARALLEL_UPLOADS = 2; // phones on one bar of signal do better with few at a time

  // The crew endpoints answer a refused change (400/409/422) with the component
  // re-rendered around its message; htmx would otherwise drop any 4xx body.
  if (window.htmx) {
    htmx.config.responseHandling.unshift({ code: "^(400|409|422)$", swap: true, error: false });
    // A whole error page (a lost session's CSRF refusal) must not land inside a component;
    // reloading shows the real state, or the sign-in page. Boosted navigation swaps whole
    // pages anyway, so its refusals (the completion page's) are shown as they come.
    document.addEventListener("htmx:beforeSwap", function (event) {
      if (!event.detail.boosted && event.detail.xhr.status >= 400 && isWholePage(event.detail.xhr.responseText)) {
        event.detail.shouldSwap = false;
        window.location.reload();
      }
    });
  }

  function isWholePage(html) {
    return /^\s*<(!doctype|html)/i.test(html);
  }

  function csrfToken() {
    var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    return headers["X-CSRFToken"] || "";
  }

  function fragment(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    return Array.prototype.slice.call(template.content.children);
  }

  function refusal(item, message) {
    item.className = "photo-refused";
    item.setAttribute("role", "alert");
    item.textContent = message;
  }

  function pendingItem(grid, file) {
    var item = document.createElement("li");
    item.className = "photo uploading";
    var name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    var progress = document.createElement("progress");
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute("aria-label", "Uploading " + file.name);
    item.appendChild(name);
    item.appendChild(progress);
    grid.appendChild(item);
    return item;
  }

  function upload(form, file, item, done) {
    var data = new FormData();
    data.append("photos", file, file.name);
    var offline = window.closeoutOffline; // offline.js: the queue for when the signal drops mid-upload
    var changeId = offline ? offline.newId() : null;
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("HX-Request", "true"); // asks for the thumbnail partial, not a redirect
    if (changeId) { xhr.setRequestHeader("X-Client-Change-Id", changeId); }
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) { item.querySelector("progress").value = 100 * event.loaded / event.total; }
    });
    xhr.addEventListener("load", function () {
      var answered = [200, 400, 409, 422].indexOf(xhr.status) !== -1;
      if (answered && !isWholePage(xhr.responseText)) {
        var nodes = fragment(xhr.responseText);
        item.replaceWith.apply(item, nodes);
        nodes.forEach(function (node) { if (window.htmx) { htmx.process(node); } });
      } else if (answered) {
        refusal(item, file.name + " did not upload: reload the page (you may need to sign in again).");
      } else if (xhr.status === 413) {
        refusal(item, file.name + " is larger than " + form.dataset.maxLabel + ".");
      } else {
        refusal(item, file.name + " did not upload (error " + xhr.status + "). Try again.");
      }
      done();
    });
    xhr.addEventListener("error", function () {
      if (offline) {
        // Queued under the same change id: if this upload did land, the replay gets that photo back.
        item.remove();
        offline.queuePhoto(form, file, changeId).then(done, done);
        return;
      }
      refusal(item, file.name + " did not upload: check the signal and try again.");
      done();
    });
    xhr.send(data);
  }

  function uploadAll(form, files) {
    var grid = form.closest("section").querySelector("[data-photo-grid]");
    var maxBytes = parseInt(form.dataset.maxBytes, 10);
    var queue = [];
    files.forEach(function (file) {
      var item = pendingItem(grid, file);
      if (maxBytes && file.size > maxBytes) {
        // Refused here too, so nobody waits for 30 MB to crawl up only to be told no.
        refusal(item, file.name + " is larger than " + form.dataset.maxLabel + ".");
      } else {
        queue.push([file, item]);
      }
    });
    var running = 0;
    function next() {
      while (running < PARALLEL_UPLOADS && queue.length) {
        var job = queue.shift();
        running += 1;
        upload(form, job[0], job[1], function () { running -= 1; next(); });
      }
    }
    next();
  }

  document.addEventListener("change", function (event) {
    var input = event.target;
    var form = input.closest && input.closest("form[data-photo-upload]");
    if (!form || input.type !== "file" || !input.files.length) { return; }
    uploadAll(form, Array.prototype.slice.call(input.files));
    input.value = ""; // the same photo can be picked again after a refusal
  });

  // With the script running, uploads start on pick; the fallback button is not needed.
  document.documentElement.classList.add("crew-js");
})();
