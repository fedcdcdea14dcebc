// edge-fleet dashboard: polls GET /api/fleet and redraws. Plain JS, no library.
// Device data is untrusted: only ever inserted as text (textContent), never as HTML.
"use strict";
let pollMs = 1000;
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function ago(now, t) { return t ? Math.max(0, Math.round(now - t)) + " s ago" : "–"; }
function num(v, d) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }
function devices(doc) {
  const body = document.querySelector("#devices tbody");
  const rows = doc.devices.map(function (d) {
    const tr = el("tr"); tr.dataset.device = d.device;
    const state = d.online === false ? ["offline", "off"] : d.stale ? ["stale", "stale"]
      : d.online ? ["online", "on"] : ["?", ""];
    const drift = d.drift ? "DRIFT" : "";
    const psi = d.psi === null || d.psi === undefined ? "" : " " + num(d.psi, 3);
    [[d.device], state, [d.profile || "–"], [(d.groups || []).join(",") || "–"],
     [d.models || "–"], [d.update || "–"], [num(d.req_per_s, 1)], [num(d.p50_ms, 2)],
     [(drift + psi).trim() || "–", d.drift ? "drift" : ""], [ago(doc.now, d.last_seen)]]
      .forEach(function (c) { tr.appendChild(el("td", c[0], c[1])); });
    return tr;
  });
  body.replaceChildren.apply(body, rows);
  const on = doc.devices.filter(function (d) { return d.online; }).length;
  document.getElementById("summary").textContent = doc.devices.length + " devices, " + on +
    " online" + (doc.dropped_devices ? " (" + doc.dropped_devices + " not tracked)" : "");
}
function rollouts(doc) {
  const box = document.getElementById("rollouts");
  if (!doc.rollouts.length) return;
  box.replaceChildren.apply(box, doc.rollouts.map(function (r) {
    const div = el("div", null, "rollout"); div.dataset.rollout = r.rollout;
    div.appendChild(el("strong", r.rollout + " — " + r.target + " (" + r.scope + "): " + r.status));
    const waves = el("div", null, "waves");
    r.waves.forEach(function (w) {
      const counts = Object.keys(w).filter(function (k) {
        return ["wave", "devices", "status", "verdict"].indexOf(k) < 0;
      }).map(function (k) { return k + " " + w[k]; }).join(", ");
      const b = el("div", null, "wave " + w.status); b.dataset.wave = w.wave;
      b.dataset.status = w.status;
      b.appendChild(el("div", "wave " + w.wave + ": " + w.status));
      b.appendChild(el("small", w.devices + " devices" + (counts ? " · " + counts : "")));
      if (w.verdict) b.title = w.verdict;
      waves.appendChild(b);
    });
    div.appendChild(waves);
    const probs = Object.keys(r.problems || {});
    if (probs.length) div.appendChild(el("small", "problems: " + probs.map(function (d) {
      return d + " " + r.problems[d].outcome;
    }).join(", ")));
    return div;
  }));
}
function events(doc) {
  const box = document.getElementById("events");
  const names = Object.keys(doc.events).sort();
  box.replaceChildren.apply(box, names.map(function (d) {
    const div = el("div", null, "device-events"); div.dataset.device = d;
    div.appendChild(el("strong", d));
    const ul = el("ul");
    doc.events[d].slice().reverse().forEach(function (e) {
      ul.appendChild(el("li", new Date(e.at * 1000).toLocaleTimeString() + " " + e.kind + " — " +
        e.message, e.level));
    });
    div.appendChild(ul);
    return div;
  }));
}
function poll() {
  fetch("api/fleet", {cache: "no-store"}).then(function (r) { return r.json(); })
    .then(function (doc) {
      pollMs = doc.poll_ms || pollMs;
      devices(doc); rollouts(doc); events(doc);
      document.getElementById("updated").textContent = "updated " +
        new Date(doc.now * 1000).toLocaleTimeString();
    })
    .catch(function (e) { document.getElementById("updated").textContent = "offline: " + e; })
    .finally(function () { setTimeout(poll, pollMs); });
}
poll();
