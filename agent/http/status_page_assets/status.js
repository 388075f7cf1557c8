// The rollback agent's status page: polls GET /v1/overview with the control API token kept in sessionStorage.
// Everything shown comes from the agent and may hold user data (rule names, reasons): it is only ever set as
// text (textContent), never parsed as markup.
"use strict";

(function () {
  const TOKEN_KEY = "rollback-agent-token";
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let generation = 0;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function setText(id, text) {
    $(id).textContent = text === undefined || text === null ? "" : String(text);
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function num(value, digits) {
    if (typeof value !== "number" || !isFinite(value)) return "-";
    if (value !== 0 && (Math.abs(value) >= 1e6 || Math.abs(value) < 1e-3)) return value.toExponential(2);
    return String(Number(value.toFixed(digits === undefined ? 4 : digits)));
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(Number(seconds) || 0));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h";
  }

  function weights(policy) {
    const list = (policy && policy.weights) || [];
    return list.map((w) => w.version + "=" + (w.weight || 0)).join(" ") || "-";
  }

  function renderSummary(s) {
    setText("model", s.model ? s.model + " (" + s.tier + ")" : "");
    setText("ready", s.ready ? "yes" : "NO: not every Envoy ACKed the current config");
    $("ready").className = s.ready ? "good" : "bad";
    setText("automation", s.paused ? "PAUSED: " + (s.pause_reason || "no reason given") : "on");
    $("automation").className = s.paused ? "warn" : "good";
    setText("stable", s.stable);
    setText("candidate", s.candidate || "-");
    const desired = s.desired || {};
    setText("policy", "revision " + (desired.revision || "?") + " by " + (desired.actor || "?") + ": " +
      (desired.reason || ""));
    const envoys = s.envoys || [];
    const inSync = envoys.filter((e) => e.in_sync).length;
    setText("envoys", envoys.length + " connected, " + inSync + " in sync; route " + (s.route_version || "-"));
    const sources = { stream: "the access-log stream", envoy: "Envoy's stats" };
    setText("signal-source", sources[s.signal_source] || s.signal_source || "-");
    setText("audit-head", s.audit_head_seq || "0");
  }

  function renderVersions(s) {
    const rows = (s.versions || []).map((v) => {
      const row = el("tr");
      row.dataset.version = v.version;
      row.append(el("td", v.version), el("td", v.role || ""), el("td", v.registry_status || ""));
      row.append(el("td", v.desired_weight || 0, "num desired"), el("td", v.served_weight || 0, "num served"));
      const barCell = el("td", null, "bar-col");
      const bar = el("div", null, "bar");
      const fill = el("div", null, "bar-fill" + (v.role === "stable" ? " stable" : ""));
      fill.style.width = Math.min(100, Math.max(0, Number(v.served_weight) || 0)) + "%";
      bar.append(fill);
      barCell.append(bar);
      row.append(barCell, el("td", v.endpoint || ""));
      return row;
    });
    replaceRows($("versions").tBodies[0], rows);
  }

  const STATE_ORDER = { firing: 0, pending: 1, insufficient_evidence: 2, ok: 3 };

  function renderRules(s) {
    const rules = (s.rules || []).slice().sort((a, b) =>
      (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) ||
      String(a.rule).localeCompare(String(b.rule)) || String(a.version).localeCompare(String(b.version)));
    const rows = rules.map((r) => {
      const row = el("tr", null, "state-" + String(r.state).replace(/[^a-z_]/g, ""));
      row.dataset.rule = r.rule;
      row.dataset.version = r.version;
      const evidence = typeof r.evidence === "number" ? num(r.evidence, 0) + " " + (r.evidence_unit || "") : "-";
      row.append(
        el("td", r.rule), el("td", r.version), el("td", r.state, "state"),
        el("td", num(r.value), "num value"), el("td", num(r.threshold), "num threshold"),
        el("td", r.window_s ? duration(r.window_s) : "-", "num"), el("td", evidence, "num"),
        el("td", duration(r.for_s), "num"), el("td", r.reason || ""));
      return row;
    });
    replaceRows($("rules").tBodies[0], rows);
    $("rules-empty").hidden = rows.length > 0;
    setText("rules-error", s.rules_error ? "Rule file " + s.rules_file + " refused (previous rules in force): " +
      s.rules_error : "");
  }

  function renderLists(s) {
    const holds = Object.entries(s.holds || {}).sort();
    $("holds").replaceChildren(...holds.map(([version, why]) => {
      const item = el("li");
      item.dataset.version = version;
      item.append(el("strong", version), document.createTextNode(": " + why));
      return item;
    }));
    $("holds-empty").hidden = holds.length > 0;
    const escalations = (s.escalations || []).slice(-10).reverse();
    $("escalations").replaceChildren(...escalations.map((e) => el("li", e)));
    $("escalations-card").hidden = escalations.length === 0;
  }

  function renderRollout(r) {
    const card = $("rollout");
    card.hidden = !r || !r.exists;
    if (card.hidden) return;
    const stages = r.stages || [];
    const index = Number(r.stage) || 0;
    const live = r.status === "running" || r.status === "paused";
    const current = stages[index] || {};
    card.dataset.status = r.status;
    card.dataset.stage = current.name || "";
    setText("rollout-title", "Rollout of " + r.candidate + " (stable " + r.stable + "): " + r.status +
      (r.held ? ", HELD" : "") + (live ? "; stage " + current.name + ", " + duration(r.in_stage_s) + " of " +
      duration(current.min_duration_s) : "") + "; breaches " + (r.breaches || 0) + " of " + (r.max_breaches || 0));
    $("rollout-stages").replaceChildren(...stages.map((stage, i) => {
      const share = stage.weight ? stage.weight + " %" : "mirror " + num((stage.mirror || 0) * 100, 0) + " %";
      const state = i < index || r.status === "completed" ? "ok" : i === index && live ? "running" : "pending";
      const item = el("li", stage.name + " (" + share + ", at least " + duration(stage.min_duration_s) + ")",
        "stage " + state);
      item.dataset.stage = stage.name;
      return item;
    }));
    setText("rollout-waiting", live && r.waiting_for ? "Waiting: " + r.waiting_for : "");
    replaceRows($("rollout-gates").tBodies[0], (live ? r.gates || [] : []).map((g) => {
      const row = el("tr", null, "gate-" + String(g.outcome).replace(/[^a-z_]/g, ""));
      row.dataset.gate = g.gate;
      row.append(el("td", g.gate), el("td", g.outcome, "state"), el("td", num(g.value), "num"),
        el("td", num(g.threshold), "num"), el("td", g.reason || ""));
      return row;
    }));
    setText("rollout-last-move", r.last_move ? "Last move: " + r.last_move : "");
  }

  function renderRollback(p) {
    const card = $("rollback");
    if (!p) {
      card.hidden = true;
      return;
    }
    card.hidden = false;
    card.dataset.rollbackId = p.rollback_id;
    card.dataset.done = p.done ? "true" : "false";
    card.dataset.outcome = p.outcome;
    setText("rollback-title", (p.done ? "Last rollback " : "Rollback in progress ") + p.rollback_id + ": " +
      p.from_version + " \u2192 " + (p.to_version || "-"));
    setText("rollback-trigger", "started " + p.started_at + " by " + p.actor + ": " + p.trigger);
    const items = (p.phases || []).map((ph) => {
      const item = el("li", null, "phase " + String(ph.outcome).replace(/[^a-z_]/g, ""));
      item.dataset.phase = ph.name;
      item.append(el("span", ph.name, "phase-name"), el("span", ph.outcome, "phase-outcome"),
        el("span", num(ph.duration_ms, 1) + " ms", "phase-time"), el("span", ph.detail || "", "phase-detail"));
      return item;
    });
    if (p.running) {
      const item = el("li", null, "phase running");
      item.dataset.phase = p.running.name;
      const what = p.running.name === "verify" ? "verification window" : "waiting for Envoy's counters";
      item.append(el("span", p.running.name, "phase-name"), el("span", "running", "phase-outcome"),
        el("span", num(p.running.elapsed_s, 0) + " s", "phase-time"),
        el("span", what + ": " + num(p.running.remaining_s, 0) + " s left of " + num(p.running.limit_s, 0) + " s",
          "phase-detail countdown"));
      items.push(item);
    }
    for (const name of p.pending || []) {
      const item = el("li", null, "phase pending");
      item.dataset.phase = name;
      item.append(el("span", name, "phase-name"), el("span", "pending", "phase-outcome"));
      items.push(item);
    }
    $("rollback-phases").replaceChildren(...items);
    const outcome = $("rollback-outcome");
    outcome.className = "outcome " + (p.done ? (p.outcome === "recovered" ? "good" : "bad") : "warn");
    outcome.textContent = p.done ? "outcome: " + p.outcome + (p.detail ? " \u2014 " + p.detail : "")
      : "traffic moved to " + p.to_version + "; verifying";
  }

  function renderDecisions(list) {
    const rows = (list || []).map((d) => {
      const row = el("tr", null, "decision kind-" + String(d.kind).replace(/[^a-z_]/g, ""));
      row.dataset.seq = d.seq;
      row.append(el("td", String(d.at).replace("T", " ").replace("Z", ""), "time"), el("td", d.summary),
        el("td", d.reason || ""), el("td", d.outcome + (d.detail ? ": " + d.detail : "")), el("td", d.actor));
      return row;
    });
    replaceRows($("decisions").tBodies[0], rows);
  }

  function render(overview) {
    const s = overview.status || {};
    renderSummary(s);
    renderRollout(overview.rollout);
    renderRollback(overview.rollback);
    renderVersions(s);
    renderRules(s);
    renderLists(s);
    renderDecisions(overview.decisions);
    setText("trail-error", overview.trail_error || "");
    setText("updated", overview.now);
    document.body.dataset.loaded = "true";
  }

  function connection(text, className) {
    setText("connection", text);
    $("connection").className = "connection " + className;
  }

  function showLogin(message) {
    generation += 1;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    $("page").hidden = true;
    $("login").hidden = false;
    $("sign-out").hidden = true;
    setText("login-error", message || "");
    connection("not signed in", "");
    delete document.body.dataset.loaded;
  }

  async function poll(mine) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token || mine !== generation) return;
    let delay = 1000;
    try {
      const response = await fetch("/v1/overview", {
        headers: { Authorization: "Bearer " + token },
        cache: "no-store",
        credentials: "omit",
      });
      if (mine !== generation) return;
      if (response.status === 401 || response.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        const body = await response.json().catch(() => ({}));
        showLogin("The agent refused this token: " + (body.message || response.status));
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const overview = await response.json();
      if (mine !== generation) return;
      $("login").hidden = true;
      $("page").hidden = false;
      $("sign-out").hidden = false;
      render(overview);
      connection("live", "good");
      delay = Math.max(200, Number(overview.refresh_s || 1) * 1000);
    } catch (error) {
      connection("agent unreachable (" + error.message + "); retrying", "bad");
      delay = 2000;
    }
    if (mine === generation) timer = setTimeout(() => poll(mine), delay);
  }

  function start() {
    generation += 1;
    poll(generation);
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    setText("login-error", "");
    start();
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });
  if (sessionStorage.getItem(TOKEN_KEY)) start();
})();
