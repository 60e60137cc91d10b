// vitalgate village doctor's console: live alerts (SSE), acknowledge/snooze, live ECG strip.
// Plain JavaScript, no library: the clinic box may be offline.
(function () {
  "use strict";
  var lang = document.body.dataset.lang || "zh";
  var lists = function () { return document.getElementById("alert-lists"); };

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Vitalgate": "1" },
      body: JSON.stringify(body || {})
    }).then(function (r) {
      if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
      return r.json().then(function (j) { return { ok: r.ok, body: j }; });
    });
  }

  // One refresh at a time: two events close together used to start two fetches whose answers
  // could land out of order, the older list replacing the newer one (a fresh alert vanished until
  // the next event).  An event during a refresh asks for one more afterwards.
  var refreshing = null, again = false;
  function refreshAlerts() {
    if (!lists()) { return Promise.resolve(); }
    if (refreshing) { again = true; return refreshing; }
    refreshing = fetch("/fragments/alerts?lang=" + lang, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        var el = lists();
        if (html && el) { el.outerHTML = html; updateCount(); }
      })
      .catch(function () { /* the gateway is away: the stream's "hello" on reconnect refreshes */ })
      .finally(function () {
        refreshing = null;
        if (again) { again = false; setTimeout(refreshAlerts, 0); }
      });
    return refreshing;
  }

  function updateCount() {
    var el = lists(), badge = document.getElementById("nav-count");
    if (el && badge) { var n = +el.dataset.firing; badge.textContent = n ? String(n) : ""; }
  }

  function toast(ev) {
    var box = document.getElementById("toast");
    if (!box) {
      box = document.createElement("a");
      box.id = "toast"; box.href = "/";
      document.body.appendChild(box);
    }
    box.textContent = "⚠ " + ev.condition + " · " + ev.patient_id + " (" + ev.tier + ")";
    box.className = "toast sev-" + ev.severity;
  }

  function afterAction(res) {
    if (!res.ok) { window.alert(res.body.error || "error"); }
    if (lists()) { return refreshAlerts(); }
    location.reload();
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest("button[data-ack]");
    if (!b) { return; }
    b.disabled = true;
    post("/alerts/" + encodeURIComponent(b.dataset.ack) + "/ack", {}).then(afterAction);
  });

  document.addEventListener("change", function (e) {
    var s = e.target.closest("select[data-snooze]");
    if (!s || !s.value) { return; }
    s.disabled = true;
    post("/alerts/" + encodeURIComponent(s.dataset.snooze) + "/snooze", { duration: s.value }).then(afterAction);
  });

  // Live alerts: every transition the dispatcher makes arrives here.
  if (window.EventSource && document.getElementById("nav-alerts")) {
    var live = document.getElementById("live");
    var es = new EventSource("/events");
    es.addEventListener("hello", function () {
      if (live) { live.className = "live on"; live.textContent = live.dataset.on; }
      refreshAlerts();
    });
    es.addEventListener("alert", function (m) {
      var ev = JSON.parse(m.data);
      if (lists()) { refreshAlerts(); } else if (ev.what === "raised" || ev.what === "escalated") { toast(ev); }
    });
    es.addEventListener("resync", function () { refreshAlerts(); });
    es.onerror = function () { if (live) { live.className = "live off"; live.textContent = live.dataset.off; } };
  }
  updateCount();

  // AF screening: mark a strip's patient referred; the lists refresh themselves every 5 s, so a strip
  // taken at the bedside shows up while the doctor looks at the page.
  document.addEventListener("click", function (e) {
    var b = e.target.closest("button[data-refer]");
    if (!b) { return; }
    b.disabled = true;
    post("/screening/" + encodeURIComponent(b.dataset.refer) + "/refer", {}).then(function (res) {
      if (!res.ok && res.body.error) { window.alert(res.body.error); }
      if (screening) { refreshScreening(); } else { location.reload(); }
    });
  });
  var screening = document.getElementById("screening");
  var screeningBusy = false;
  function refreshScreening() {
    if (!screening || screeningBusy) { return; }
    screeningBusy = true;
    var src = screening.dataset.src;
    fetch(src + (src.indexOf("?") < 0 ? "?" : "&") + "lang=" + lang, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        // Swapped only when the lists changed (data-sig), so the strips' images are not fetched again.
        var el = document.getElementById("screening-lists");
        var sig = html && /data-sig="([^"]*)"/.exec(html);
        if (html && el && (!sig || sig[1] !== el.dataset.sig)) { el.outerHTML = html; }
      })
      .catch(function () { /* the gateway is away: the next tick tries again */ })
      .finally(function () { screeningBusy = false; });
  }
  if (screening) { setInterval(function () { if (!document.hidden) { refreshScreening(); } }, 5000); }

  // Live ECG strip: the last 10 s as stored, redrawn every 2 s.
  var ecg = document.getElementById("ecg-live");
  if (ecg) {
    var busy = false;
    var tick = function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(ecg.dataset.src + "&lang=" + lang, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (svg) { if (svg) { ecg.innerHTML = svg; ecg.dataset.updated = String(Date.now()); } })
        .finally(function () { busy = false; });
    };
    tick();
    setInterval(tick, 2000);
  }
})();
