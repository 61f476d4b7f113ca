// The lora-router on-call dashboard: polls /admin/dashboard/state and rolls back through
// the admin API, both with the person's key (kept in this tab's sessionStorage only).
// Every value from the server goes into the page as text (textContent), never as markup.
"use strict";

(() => {
  const KEY = "lora-router.dashboard.key";
  const WINDOW = "lora-router.dashboard.window";
  const POLL_MS = 2000;
  const COLORS = ["#1d2330", "#2457c5", "#d9480f", "#127a3f", "#7c3aed", "#b54708"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const ui = { data: null, inflight: false, again: false, gen: 0, rollback: null, changed: new Map() };

  // --- small DOM helpers ------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "");
  const stamp = (iso) => (iso ? new Date(iso).toLocaleString([], { hour12: false }) : "");
  const fmt = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
  const none = () => el("span", { class: "none", text: "none" });

  // --- the key and the API ----------------------------------------------------------------
  const key = () => sessionStorage.getItem(KEY) || "";

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (key()) headers.Authorization = "Bearer " + key();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method, headers, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (!r.ok) {
      const err = new Error(data && data.error ? data.error.message : `HTTP ${r.status}`);
      err.status = r.status;
      throw err;
    }
    return data;
  }

  function setStatus(text, bad) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("bad", Boolean(bad));
  }

  function banner(text, bad) {
    $("banner-text").textContent = text;
    $("banner").classList.toggle("bad", Boolean(bad));
    $("banner").hidden = false;
  }

  // --- polling ----------------------------------------------------------------------------
  async function refresh() {
    if (ui.inflight) { ui.again = true; return; }
    ui.inflight = true;
    const gen = ui.gen;
    try {
      const data = await api("GET", "/admin/dashboard/state?window=" + encodeURIComponent($("window").value));
      if (gen !== ui.gen) return;  // asked for before a change made here: never show it
      ui.data = data;
      render(data);
      setStatus(`updated ${time(data.generated_at)} · every ${POLL_MS / 1000} s`, false);
    } catch (e) {
      const hint = e.status === 401 ? " (enter an API key with role oncall)" : "";
      setStatus(`not updated: ${e.message}${hint}`, true);
      if (e.status === 401 && !key()) $("key-input").focus();
    } finally {
      ui.inflight = false;
      if (ui.again) { ui.again = false; refresh(); }
    }
  }

  function render(d) {
    $("viewer").textContent = `acting as ${d.viewer.principal} (${d.viewer.role})`;
    renderRoutes(d.routes);
    renderDrift(d.drift);
    renderTraffic(d.traffic);
    if (d.cost) renderCost(d.cost);
  }

  // --- routes -----------------------------------------------------------------------------
  function split(s) {
    if (!s) return none();
    return el("span", {}, el("code", { text: s.adapter }), " · ", el("span", { class: "pct", text: `${s.percent}%` }));
  }

  function rollbackPlan(r) {
    if (r.canary || r.shadow) {
      const parts = [];
      if (r.canary) parts.push(`the canary (${r.canary.adapter} at ${r.canary.percent}%)`);
      if (r.shadow) parts.push(`the shadow (${r.shadow.adapter} at ${r.shadow.percent}%)`);
      return `Stops ${parts.join(" and ")}; live stays ${r.live}.`;
    }
    if (r.rollback_target) return `Live ${r.live} → ${r.rollback_target}.`;
    return `Live ${r.live} → the rollback target its model card names (refused if none).`;
  }

  function guardText(g) {
    if (!g) return none();
    const mode = g.auto_rollback ? "auto-rollback" : "alerts only";
    return `${mode}${g.protect.length ? " · protects " + g.protect.join(", ") : ""}`;
  }

  function auditTable(r) {
    if (r.audit_note) return el("p", { class: "error small", text: r.audit_note });
    if (!r.audit.length) return el("p", { class: "empty", text: "No changes recorded." });
    const rows = r.audit.map((a) => el("tr", { "data-version": a.version },
      el("td", { class: "num", text: a.version }),
      el("td", { text: stamp(a.at) }),
      el("td", { text: a.by }),
      el("td", { text: a.action }),
      el("td", { text: a.reason }),
      el("td", { class: "changes mono" }, a.changes.map((c) => el("div", { text: c.replace(" -> ", " → ") })))));
    return el("table", { class: "audit" },
      el("thead", {}, el("tr", {}, ["ver", "when", "who", "action", "why", "before → after"].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows));
  }

  function routeCard(r) {
    const card = el("article", { class: "card route", "data-route": r.route, "data-version": r.version },
      el("header", {},
        el("h3", { text: r.route }),
        el("span", { class: "badge flagver", "data-field": "version", text: `flag version ${r.version}` })),
      el("dl", { class: "route" },
        el("dt", { text: "live" }), el("dd", { "data-field": "live" }, el("code", { text: r.live })),
        el("dt", { text: "canary" }), el("dd", { "data-field": "canary" }, split(r.canary)),
        el("dt", { text: "shadow" }), el("dd", { "data-field": "shadow" }, split(r.shadow)),
        el("dt", { text: "rollback target" }),
        el("dd", { "data-field": "rollback_target" }, r.rollback_target ? el("code", { text: r.rollback_target }) : none()),
        el("dt", { text: "drift guard" }), el("dd", {}, guardText(r.guard)),
        el("dt", { text: "last change" }),
        el("dd", {}, `${stamp(r.updated_at)} by ${r.updated_by}: ${r.reason}`)),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "danger", "data-action": "rollback", "data-route": r.route, text: "Roll back…" }),
        el("span", { class: "hint", text: rollbackPlan(r) })),
      el("details", { open: true }, el("summary", { text: `Audit (latest ${r.audit.length})` }), auditTable(r)));
    const until = ui.changed.get(r.route);
    if (until && until > Date.now()) card.classList.add("changed");
    return card;
  }

  function renderRoutes(routes) {
    const box = $("routes");
    box.replaceChildren(...(routes.length ? routes.map(routeCard) : [el("p", { class: "empty", text: "No routes." })]));
  }

  // --- alerts and incidents ---------------------------------------------------------------
  function renderDrift(d) {
    $("drift-note").textContent = d.available ? `monitor ${d.monitor}${d.note ? " · " + d.note : ""}` : `unavailable: ${d.note}`;
    const alerts = d.alerts.map((a) => el("tr", { "data-alert": a.id },
      el("td", { text: stamp(a.created_at) }),
      el("td", { text: a.route }),
      el("td", {}, el("code", { text: a.model_id }), a.arm ? ` (${a.arm})` : ""),
      el("td", { text: `${a.signal} · ${a.detector}` }),
      el("td", { class: "sev-" + a.severity, text: a.severity }),
      el("td", { class: "num", text: a.estimate === null ? "–" : fmt(a.estimate, 3) }),
      el("td", { class: "num", text: a.baseline === null ? "–" : fmt(a.baseline, 3) }),
      el("td", { class: "num", text: a.n }),
      el("td", { text: a.guard_status + (a.incident_id ? ` · #${a.incident_id}` : "") })));
    $("alerts").replaceChildren(alerts.length
      ? el("table", {}, el("thead", {}, el("tr", {}, ["raised", "route", "adapter", "signal", "severity", "estimate", "bar", "n", "guard"].map((h) => el("th", { text: h })))), el("tbody", {}, alerts))
      : el("p", { class: "empty", text: "No open alerts." }));
    const incidents = d.incidents.map((i) => el("tr", { "data-incident": i.id },
      el("td", { class: "num", text: `#${i.id}` }),
      el("td", { text: i.route }),
      el("td", {}, el("code", { text: i.model_id })),
      el("td", { text: i.status }),
      el("td", { text: stamp(i.opened_at) }),
      el("td", { text: i.summary })));
    $("incidents").replaceChildren(incidents.length
      ? el("table", {}, el("thead", {}, el("tr", {}, ["id", "route", "adapter", "status", "opened", "summary"].map((h) => el("th", { text: h })))), el("tbody", {}, incidents))
      : el("p", { class: "empty", text: "No open incidents." }));
  }

  // --- traffic per adapter and slice ------------------------------------------------------
  function chart(title, slices, value, opts) {
    const W = 300, H = 96, L = 30, R = 6, T = 8, B = 16;
    const n = slices.length ? slices[0].series.length : 0;
    let max = opts.max || 0;
    for (const s of slices) for (const p of s.series) { const v = value(p); if (v !== null && v > max) max = v; }
    if (max <= 0) max = 1;
    const x = (i) => L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    g.append(svg("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#d9dee7" }));
    g.append(svg("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, opts.label ? opts.label(max) : fmt(max, 0)));
    g.append(svg("text", { x: L - 4, y: y(0), "text-anchor": "end" }, "0"));
    if (n) {
      g.append(svg("text", { x: L, y: H - 3 }, time(slices[0].series[0].t)));
      g.append(svg("text", { x: W - R, y: H - 3, "text-anchor": "end" }, "now"));
    }
    slices.forEach((s, k) => {
      let d = "";
      let pen = false;
      s.series.forEach((p, i) => {
        const v = value(p);
        if (v === null) { pen = false; return; }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
        pen = true;
      });
      const color = COLORS[k % COLORS.length];
      if (d) g.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": k === 0 ? 2 : 1.5 }));
      s.series.forEach((p, i) => {  // dots: a bucket alone between gaps still shows
        const v = value(p);
        if (v !== null && (opts.dots || v > 0)) g.append(svg("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 1.8, fill: color }));
      });
    });
    return el("div", { class: "chart" }, el("div", { class: "title", text: title }), g);
  }

  function driftCell(b) {
    return el("td", { class: `drift ${b.status}`, text: b.alerts ? `${b.status} (${b.alerts})` : b.status });
  }

  function modelCard(m, bucket) {
    const slices = [m.overall, ...m.slices];
    const rows = slices.map((s) => el("tr", { "data-slice": s.slice },
      el("td", {}, s.slice, s.protected ? el("span", { class: "badge", text: "protected" }) : null),
      el("td", { class: "num", text: fmt(s.rate_per_min, 2) }),
      el("td", { class: "num", text: s.requests }),
      el("td", { class: "num", text: s.errors }),
      el("td", { class: "num", text: fmt(s.latency_p50_ms) }),
      el("td", { class: "num", text: fmt(s.latency_p95_ms) }),
      el("td", { class: "num", text: s.labelled ? `${pct(s.accuracy)} of ${s.labelled}` : "–" }),
      driftCell(s.drift)));
    const legend = el("div", { class: "legend" }, slices.map((s, k) => el("span", {}, el("i", { class: "sw" + (k % COLORS.length) }), s.slice)));
    return el("article", { class: "card model", "data-model": m.model_id },
      el("header", {}, el("h3", {}, el("code", { text: m.model_id })),
        el("span", { class: "muted small", text: `routes: ${m.routes.join(", ") || "–"} · arms: ${m.arms.join(", ") || "–"}` })),
      el("table", { class: "stats" },
        el("thead", {}, el("tr", {}, ["slice", "req/min", "requests", "errors", "p50 ms", "p95 ms", "accuracy (labelled)", "drift"].map((h, i) => el("th", { class: i && i < 7 ? "num" : null, text: h })))),
        el("tbody", {}, rows)),
      el("div", { class: "charts" },
        chart(`requests per ${bucket} s`, slices, (p) => p.requests, {}),
        chart("latency p95 (ms)", slices, (p) => p.p95_ms, { dots: true }),
        chart("accuracy (labelled)", slices, (p) => p.accuracy, { max: 1, label: () => "100%", dots: true })),
      legend);
  }

  function renderTraffic(t) {
    const bits = [`last ${t.window === "1h" ? "hour" : "15 min"}`, `${t.requests} requests logged`, "latency percentiles estimated (20 % bins)"];
    if (!t.available || t.note) bits.push(t.note);
    $("traffic-note").textContent = bits.join(" · ");
    $("models").replaceChildren(...(t.models.length ? t.models.map((m) => modelCard(m, t.bucket_s))
      : [el("p", { class: "empty", text: t.available ? "No requests in this window." : "The inference log cannot be read." })]));
  }

  // --- cost per adapter and route (lora-router cost) --------------------------------------
  function costRow(c, currency, total) {
    return el("tr", total ? { class: "total" } : { "data-model": c.model_id, "data-route": c.route || "" },
      el("td", {}, total ? el("strong", { text: "total" }) : el("code", { text: c.model_id })),
      el("td", { text: total ? "" : (c.route || "– (pinned)") }),
      el("td", { class: "num", text: c.requests }),
      el("td", { class: "num", text: c.errors }),
      el("td", { class: "num", text: c.prompt_tokens }),
      el("td", { class: "num", text: c.completion_tokens }),
      el("td", { class: "num", text: fmt(c.engine_s, 3) }),
      el("td", { class: "num", text: c.cost === null ? "–" : `${fmt(c.cost, 4)} ${currency}` }));
  }

  function renderCost(c) {
    const r = c.report;
    const bits = [`last ${c.window}`, "engine s: each request's share of the engine's forward passes"];
    if (!c.available || c.note) bits.push(c.note);
    $("cost-note").textContent = bits.join(" · ");
    if (!r || !r.lines.length) {
      $("cost").replaceChildren(el("p", { class: "empty", text: r ? "No requests in this window." : "The inference log cannot be read." }));
      return;
    }
    const head = ["adapter", "route", "requests", "errors", "prompt tok", "completion tok", "engine s", "est. cost"];
    $("cost").replaceChildren(el("table", { class: "cost" },
      el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: i > 1 ? "num" : "", text: h })))),
      el("tbody", {}, r.lines.map((x) => costRow(x, r.currency, false)), costRow(r.total, r.currency, true))));
  }

  // --- rollback ---------------------------------------------------------------------------
  function openRollback(routeName) {
    const r = ui.data && ui.data.routes.find((x) => x.route === routeName);
    if (!r) return;
    ui.rollback = { route: r.route, version: r.version, plan: rollbackPlan(r) };
    for (const n of document.querySelectorAll(".rb-route")) n.textContent = r.route;
    $("rb-what").textContent = `${ui.rollback.plan} The route is at flag version ${r.version}; the rollback is refused if it changes before you confirm.`;
    $("rb-reason").value = "";
    $("rb-step-reason").hidden = false;
    $("rb-step-confirm").hidden = true;
    $("rb-error").hidden = true;
    $("rollback-dialog").showModal();
    $("rb-reason").focus();
  }

  function rollbackError(text) {
    $("rb-error").textContent = text;
    $("rb-error").hidden = false;
  }

  function confirmStep() {
    const reason = $("rb-reason").value.trim();
    if (!reason) { rollbackError("A reason is required."); $("rb-reason").focus(); return; }
    ui.rollback.reason = reason;
    const who = ui.data ? ui.data.viewer.principal : "you";
    $("rb-confirm-text").textContent = `Roll back ${ui.rollback.route} (flag version ${ui.rollback.version}) as ${who}? ${ui.rollback.plan} Reason: “${reason}”.`;
    $("rb-error").hidden = true;
    $("rb-step-reason").hidden = true;
    $("rb-step-confirm").hidden = false;
    $("rb-confirm").focus();
  }

  async function doRollback() {
    const rb = ui.rollback;
    $("rb-confirm").disabled = true;
    try {
      const out = await api("POST", `/admin/routes/${encodeURIComponent(rb.route)}/rollback`,
        { reason: rb.reason, expected_version: rb.version });
      $("rollback-dialog").close();
      const s = out.state;
      const applied = out.applied ? `; applied by ${out.applied.replicas.length} replica(s)` +
        (out.applied.elapsed_ms !== null ? ` in ${fmt(out.applied.elapsed_ms, 1)} ms` : "") : "";
      banner(`Rolled back ${s.route}: flag version ${s.version}, live ${s.live}${s.canary ? "" : ", no canary"}${applied}.`, false);
      ui.changed.set(s.route, Date.now() + 10000);
      ui.gen += 1;
      if (ui.data) {  // show the switch at once; the next poll brings the audit
        ui.data.routes = ui.data.routes.map((r) => (r.route === s.route ? { ...r, ...s } : r));
        renderRoutes(ui.data.routes);
      }
      refresh();
    } catch (e) {
      rollbackError(`Rollback refused: ${e.message}`);
    } finally {
      $("rb-confirm").disabled = false;
    }
  }

  // --- wiring -----------------------------------------------------------------------------
  function init() {
    const saved = sessionStorage.getItem(WINDOW);
    if (saved) $("window").value = saved;
    $("key-input").value = key();
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const k = $("key-input").value.trim();
      if (k) sessionStorage.setItem(KEY, k); else sessionStorage.removeItem(KEY);
      refresh();
    });
    $("key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      $("key-input").value = "";
      refresh();
    });
    $("window").addEventListener("change", () => { sessionStorage.setItem(WINDOW, $("window").value); ui.gen += 1; refresh(); });
    $("banner-close").addEventListener("click", () => { $("banner").hidden = true; });
    $("routes").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-action=rollback]");
      if (b) openRollback(b.getAttribute("data-route"));
    });
    $("rb-cancel").addEventListener("click", () => $("rollback-dialog").close());
    $("rb-next").addEventListener("click", confirmStep);
    $("rb-back").addEventListener("click", () => { $("rb-step-confirm").hidden = true; $("rb-step-reason").hidden = false; });
    $("rb-confirm").addEventListener("click", doRollback);
    refresh();
    setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", init);
})();
