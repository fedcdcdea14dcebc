"use strict";
// edge-agent device dashboard: plain JS, no build step. Polls /ui/api/state every 2 s
// (charts every 10 s) with the bearer token kept in sessionStorage; never in the URL.
(function () {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000, SERIES_EVERY = 5, KEY = "edge-agent-token";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  let seq = 0, polls = 0, timer = null, state = null;

  function token() { return sessionStorage.getItem(KEY) || ""; }
  function headers() {
    const t = token();
    return t ? { Authorization: "Bearer " + t } : {};
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(tbody, cells) {
    const tr = el("tr");
    cells.forEach((c) => tr.appendChild(c instanceof Node ? wrap(c) : el("td", c)));
    tbody.appendChild(tr);
  }
  function wrap(n) { const td = el("td"); td.appendChild(n); return td; }
  function when(t) { return t ? new Date(t * 1000).toLocaleTimeString() : ""; }
  function fmt(v, d) {
    if (v === null || v === undefined) return "–";
    return Number.isInteger(v) ? String(v) : Number(v).toFixed(d);
  }

  function showLogin(msg) {
    $("main").hidden = true; $("login").hidden = false; $("logout").hidden = true;
    $("login-msg").textContent = msg || "";
    if (timer) { clearTimeout(timer); timer = null; }
  }

  async function poll() {
    timer = null;
    const series = state === null || polls++ % SERIES_EVERY === 0 ? 1 : 0;
    try {
      const r = await fetch("api/state?since=" + seq + "&series=" + series,
        { headers: headers(), cache: "no-store" });
      if (r.status === 401) { showLogin(token() ? "That token was refused." : ""); return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
      $("conn").textContent = "live"; $("conn").className = "ok";
    } catch (e) {
      $("conn").textContent = "offline (" + e.message + ")"; $("conn").className = "err";
    }
    if (!document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  function render(s) {
    state = s;
    $("login").hidden = true; $("main").hidden = false; $("logout").hidden = !token();
    $("title").textContent = s.device_id;
    $("meta").textContent = s.profile + " · agent " + s.agent_version + " · up " +
      Math.round(s.uptime_s) + " s";
    renderModels(s); renderPredictions(s); renderQuality(s); renderSystem(s.system);
    renderUpdates(s); renderAdmin(s);
    if (s.series) {
      const ms = s.series.models;
      chart($("thr"), Object.keys(ms).map((m) => [m, ms[m].map((r) => [r[0], r[1]])]));
      chart($("lat"), Object.keys(ms).map((m) => [m, ms[m].map((r) => [r[0], r[2]])]));
      const names = {};
      s.drift.forEach((r) => Object.keys(r[1]).forEach((m) => { names[m] = 1; }));
      chart($("psi"), Object.keys(names).map((m) => [m, s.drift.map((r) => [r[0], r[1][m]])]));
      chart($("sys"), [
        ["CPU %", s.system_series.map((r) => [r[0], r[1].process_cpu_percent])],
        ["RSS MB", s.system_series.map((r) => [r[0], r[1].rss_bytes / 1048576])]]);
    }
  }

  function renderModels(s) {
    const tb = $("models").tBodies[0]; tb.textContent = "";
    s.models.forEach((m) => row(tb, [m.name, m.active === null ? "–" : "v" + m.active,
      m.versions.map((v) => "v" + v.version + " (" + v.state + (v.variant === undefined ? "" :
        ", variant " + v.variant + (v.degraded ? ", degraded" : "")) + ")").join(", "),
      m.installed.map((v) => "v" + v).join(", ")]));
    const f = s.load_failures || {};
    $("failures").textContent = Object.keys(f).length ? "load failures: " + JSON.stringify(f) : "";
  }

  function renderPredictions(s) {
    seq = s.seq;
    const ol = $("predictions");
    s.predictions.forEach((p) => {
      const li = el("li"); li.dataset.seq = p.seq; li.dataset.model = p.model;
      if (p.thumb) li.appendChild(thumb(p.thumb));
      const d = el("div");
      const top = p.top || [];
      d.appendChild(el("div", top.length ? top[0].label + " " + fmt(top[0].score, 3) :
        "(no class head)", "top1"));
      top.slice(1).forEach((t) => d.appendChild(el("div", t.label + " " + fmt(t.score, 3), "dim")));
      d.appendChild(el("div", p.model + " v" + p.version + " · " + p.source + " · " +
        fmt(p.latency_ms, 1) + " ms · " + when(p.at), "dim"));
      li.appendChild(d); ol.insertBefore(li, ol.firstChild);
    });
    while (ol.children.length > 12) ol.removeChild(ol.lastChild);
    $("pred-empty").hidden = ol.children.length > 0;
  }

  function thumb(t) {
    const c = el("canvas"); c.width = t.w; c.height = t.h;
    const ctx = c.getContext("2d"), img = ctx.createImageData(t.w, t.h);
    const raw = atob(t.data);
    for (let i = 0; i < t.w * t.h; i++) {
      for (let k = 0; k < 3; k++) img.data[4 * i + k] = raw.charCodeAt(t.c === 3 ? 3 * i + k : i);
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return c;
  }

  function renderQuality(s) {
    const tb = $("quality").tBodies[0]; tb.textContent = "";
    Object.keys(s.quality).forEach((m) => {
      const q = s.quality[m], psi = q.psi || {};
      const fb = q.feedback ? Object.keys(q.feedback).map((k) => k + " " +
        fmt(q.feedback[k], 3)).join(", ") : "–";
      row(tb, [m, q.samples, fmt(psi.class, 3), q.drift ? "DRIFTING" : "ok",
        fmt(q.mean_confidence, 3), fb]);
    });
  }

  function renderSystem(sys) {
    const dl = $("system"); dl.textContent = "";
    if (!sys) return;
    const items = [["agent CPU", fmt(sys.process_cpu_percent, 1) + " %"],
      ["host CPU", fmt(sys.cpu_percent, 1) + " %"],
      ["RSS", fmt(sys.rss_bytes / 1048576, 1) + " MB"],
      ["temperature", sys.cpu_temp_c === null ? "–" : fmt(sys.cpu_temp_c, 1) + " °C"],
      ["throttling", sys.throttled === null ? "not reported" :
        (sys.throttled.length ? sys.throttled.join(", ") : "none")],
      ["load", sys.load ? sys.load.join(" ") : "–"]];
    items.forEach(([k, v]) => { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); });
  }

  function renderUpdates(s) {
    const u = s.update;
    $("update-status").textContent = u ? "phase " + u.phase + (u.last ? " · last: " +
      u.last.result + " (" + u.last.code + ") " + u.last.reason : "") :
      "signed updates are off on this device";
    const tb = $("updates").tBodies[0]; tb.textContent = "";
    s.update_history.forEach((e) => row(tb, [when(e.at), e.kind,
      e.name ? e.name + (e.version ? " v" + e.version : "") : "", e.reason || e.message]));
  }

  function renderAdmin(s) {
    $("admin-note").textContent = s.admin ? "You hold the admin token." :
      "Read-only: log in with the admin token to roll back.";
    const sel = $("rb-model"), cur = sel.value;
    if (sel.options.length !== s.models.length) {
      sel.textContent = "";
      s.models.forEach((m) => sel.appendChild(el("option", m.name)));
      if (cur) sel.value = cur;
    }
    versions();
  }

  function versions() {
    if (!state) return;
    const m = state.models.find((x) => x.name === $("rb-model").value);
    const sel = $("rb-version"), cur = sel.value;
    const want = m ? m.installed.filter((v) => v !== m.active).map(String) : [];
    if ([...sel.options].map((o) => o.value).join() === want.join()) return;
    sel.textContent = "";
    want.forEach((v) => { const o = el("option", "v" + v); o.value = v; sel.appendChild(o); });
    if (want.includes(cur)) sel.value = cur;
  }

  async function rollback(ev) {
    ev.preventDefault();
    const msg = $("admin-msg");
    msg.className = ""; msg.textContent = "sending…";
    let ann = $("rb-announcement").value.trim();
    const f = $("rb-file").files[0];
    if (f) ann = (await f.text()).trim();
    const body = { model: $("rb-model").value, to_version: Number($("rb-version").value),
      announcement: ann };
    try {
      const r = await fetch("api/rollback", { method: "POST", cache: "no-store",
        headers: Object.assign({ "Content-Type": "application/json" }, headers()),
        body: JSON.stringify(body) });
      const d = await r.json();
      msg.className = r.ok ? "ok" : "err";
      msg.textContent = r.status + ": " + (d.error || (d.result + ", now serving v" + d.serving));
    } catch (e) { msg.className = "err"; msg.textContent = String(e); }
  }

  function chart(c, lines) {
    const ctx = c.getContext("2d"), W = c.width, H = c.height, P = 28;
    ctx.clearRect(0, 0, W, H);
    const now = state.now, t0 = now - 3600;
    let max = 0;
    lines.forEach(([, pts]) => pts.forEach(([, v]) => { if (v !== null && v > max) max = v; }));
    max = max > 0 ? max * 1.1 : 1;
    ctx.fillStyle = "#666"; ctx.font = "10px sans-serif";
    ctx.fillText(max.toPrecision(3), 2, 10); ctx.fillText("0", 2, H - P + 4);
    ctx.fillText("-60 min", P, H - 4); ctx.fillText("now", W - 22, H - 4);
    ctx.strokeStyle = "#ddd"; ctx.strokeRect(P, 4, W - P - 4, H - P);
    lines.forEach(([name, pts], i) => {
      ctx.strokeStyle = ctx.fillStyle = COLORS[i % COLORS.length];
      ctx.beginPath(); let pen = false;
      pts.forEach(([t, v]) => {
        if (v === null || v === undefined || t < t0) { pen = false; return; }
        const x = P + (W - P - 4) * (t - t0) / 3600, y = 4 + (H - P) * (1 - v / max);
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        ctx.fillRect(x - 1, y - 1, 2, 2); pen = true;
      });
      ctx.stroke(); ctx.fillText(name, P + 6 + 80 * i, H - P + 14);
    });
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value); $("token").value = "";
    if (!timer) poll();
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(); });
  $("rb-model").addEventListener("change", versions);
  $("rollback").addEventListener("submit", rollback);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !timer) poll();
  });
  poll();
})();
