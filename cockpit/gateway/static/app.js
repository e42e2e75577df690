// Cockpit's operator dashboard: sign-in, header, wiring of the views and the stream.
// Hand-written ES modules, no build step, nothing fetched from elsewhere.

import { ApiError, api, probeRole, session } from "./api.js";
import { initAudit, loadAudits, loadCommands, refreshAudit, verifyChain } from "./audit.js";
import { initConsole, track } from "./console.js";
import { initDialogs } from "./dialogs.js";
import { $, $$, announce, h } from "./dom.js";
import { filterByAgent, initFeed, loadVerdicts, onVerdictEvent, renderFeed } from "./feed.js";
import { RelationshipGraph } from "./graph.js";
import { SEVERITIES, emit, knownAgentIds, on, state } from "./state.js";
import { Stream } from "./stream.js";

let stream = null;
let graph = null;
let initialised = false;
let roleConfirmed = true;
const timers = [];
const pending = new Map(); // debounced refreshes

function later(name, fn, ms) {
  if (pending.has(name)) return;
  pending.set(name, setTimeout(() => { pending.delete(name); fn(); }, ms));
}

// ------------------------------------------------------------------ sign-in

function showSignin(messageText = "") {
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signin-error").textContent = messageText;
  $("#signin-key").value = "";
  $("#signin-key").focus();
}

async function signIn(key) {
  const button = $("#signin-submit");
  button.disabled = true;
  $("#signin-error").textContent = "";
  try {
    const role = await probeRole(key);
    session.key = key;
    state.role = role;
    startDashboard();
  } catch (err) {
    $("#signin-error").textContent = err instanceof ApiError ? err.detail : String(err);
    session.key = null;
  } finally {
    button.disabled = false;
  }
}

function signOut(messageText = "") {
  stream?.stop();
  stream = null;
  for (const t of timers.splice(0)) clearInterval(t);
  session.key = null;
  state.role = null;
  state.verdicts.clear();
  state.agents.clear();
  state.selected.clear();
  state.commands.clear();
  state.graph = { nodes: [], edges: [], communities: [] };
  $("#conn-banner").hidden = true;
  showSignin(messageText);
}

// ------------------------------------------------------------------ header

function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

function renderStats(stats) {
  // Defensive: every key may be missing (or /stats down); fall back to what we know.
  const agents = stats?.agents;
  if (agents && typeof agents === "object" && (agents.total != null || agents.active != null)) {
    setText("stat-agents", `${agents.active ?? "?"}/${agents.total ?? "?"}`);
  } else if (typeof agents === "number") setText("stat-agents", String(agents));
  else if (state.agentsLoaded) {
    const active = [...state.agents.values()].filter((a) => a.status === "ACTIVE").length;
    setText("stat-agents", `${active}/${state.agents.size}`);
  }
  const bySeverity = stats?.verdicts?.active_by_severity;
  for (const sev of SEVERITIES) {
    const el = $(`#stat-verdicts b[data-sev="${sev}"]`);
    if (!el) continue;
    const fromServer = bySeverity && Number.isFinite(Number(bySeverity[sev])) ? Number(bySeverity[sev]) : null;
    const local = [...state.verdicts.values()].filter((v) => v.severity === sev).length;
    el.textContent = String(fromServer ?? local);
  }
  const alliances = stats?.alliances;
  setText("stat-alliances", alliances == null ? String((state.graph.edges || []).length) : String(typeof alliances === "object" ? alliances.count ?? "?" : alliances));
  let deceptive = stats?.deceptive_agents ?? stats?.verdicts?.deceptive_agents;
  if (deceptive == null) {
    const ids = new Set();
    for (const v of state.verdicts.values()) if (v.category === "DECEPTION") for (const id of v.agents_involved || []) ids.add(id);
    deceptive = [...ids];
  }
  const dEl = $("#stat-deceptive");
  if (Array.isArray(deceptive)) {
    dEl.textContent = String(deceptive.length);
    dEl.title = deceptive.length ? `deceptive: ${deceptive.join(", ")}` : "";
  } else dEl.textContent = String(deceptive);
  const p95 = stats?.telemetry_to_verdict_ms?.p95;
  const count = stats?.telemetry_to_verdict_ms?.count;
  setText("stat-latency", p95 == null || !Number.isFinite(Number(p95)) ? "—" : `${Number(p95) < 10 ? Number(p95).toFixed(1) : Math.round(Number(p95))} ms`);
  $("#stat-latency").title = count != null ? `over ${count} verdicts; p50 ${stats?.telemetry_to_verdict_ms?.p50 ?? "?"} ms` : "";
}

async function refreshStats() {
  try {
    renderStats(await api("GET", "/stats"));
  } catch (err) {
    if (err.status === 401) return signOut("Your session ended: the API key is no longer valid.");
    renderStats(null); // local counts still help
  }
}

async function refreshHealth() {
  const pill = $("#health-pill");
  let status;
  let title = "GET /health";
  try {
    const body = await api("GET", "/health", { key: null, timeoutMs: 5000 });
    status = body?.status === "ok" ? "OPERATIONAL" : "DEGRADED";
  } catch (err) {
    if (err.status === 503) {
      status = "DEGRADED";
      const failing = err.body?.failing;
      if (Array.isArray(failing)) title = `failing: ${failing.join(", ")}`;
    } else status = "UNREACHABLE";
  }
  pill.className = `pill ${status === "OPERATIONAL" ? "pill-ok" : status === "DEGRADED" ? "pill-warn" : "pill-bad"}`;
  pill.title = title;
  setText("health-text", status);
}

let countdown = null;

function renderStreamState(s) {
  const pill = $("#ws-pill");
  const banner = $("#conn-banner");
  clearInterval(countdown);
  if (s.state === "live") {
    pill.className = "pill pill-ok";
    setText("ws-text", "LIVE");
    $("#feed-live").classList.add("on");
    if (!banner.hidden) announce("Connection restored. Missed events were replayed.");
    banner.hidden = true;
    return;
  }
  $("#feed-live").classList.remove("on");
  if (s.state === "connecting") {
    pill.className = "pill pill-warn";
    setText("ws-text", s.everConnected ? "RECONNECTING" : "CONNECTING");
    if (s.everConnected) setText("conn-banner-text", "Connection lost — reconnecting now…");
    return;
  }
  if (s.state === "reconnecting") {
    pill.className = "pill pill-bad";
    setText("ws-text", "OFFLINE");
    const wasHidden = banner.hidden;
    banner.hidden = false;
    const tick = () => {
      const left = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
      setText(
        "conn-banner-text",
        `Connection lost — reconnecting in ${left} s (attempt ${s.attempt}).${s.lastSeq ? ` Events after #${s.lastSeq} will be replayed.` : ""}`,
      );
    };
    tick();
    countdown = setInterval(tick, 500);
    if (wasHidden) announce("Connection to Cockpit lost. Reconnecting automatically.", true);
  }
}

// ------------------------------------------------------------------ data

async function loadAgents() {
  const all = [];
  for (let offset = 0; offset < 10000; offset += 1000) {
    const page = await api("GET", "/agents", { query: { limit: 1000, offset } });
    all.push(...(page?.items || []));
    if ((page?.items || []).length < 1000) break;
  }
  state.agents = new Map(all.filter((a) => a && a.agent_id).map((a) => [String(a.agent_id), a]));
  state.agentsLoaded = true;
}

async function refreshAgentsAndGraph() {
  const [agents, g] = await Promise.allSettled([loadAgents(), api("GET", "/alliances/graph")]);
  if (g.status === "fulfilled" && g.value) {
    state.graph = { nodes: g.value.nodes || [], edges: g.value.edges || [], communities: g.value.communities || [] };
  }
  if (agents.status === "rejected" && agents.reason?.status === 401) return signOut("Your session ended: the API key is no longer valid.");
  graph?.update();
  const list = $("#agent-ids");
  list.replaceChildren(...knownAgentIds().slice(0, 500).map((id) => h("option", { value: id })));
  emit("agents");
}

async function refreshAll() {
  await Promise.allSettled([loadVerdicts(), refreshAgentsAndGraph(), refreshStats(), refreshHealth()]);
  graph?.update();
}

function onStreamEvent(env) {
  const data = env.data || {};
  if (env.type === "verdict.created" || env.type === "verdict.updated") {
    onVerdictEvent(env.type, data);
    graph?.update();
    later("stats", refreshStats, 400);
    later("graph", refreshAgentsAndGraph, 800);
  } else if (env.type === "command.confirmed") {
    track({ ...data, first_seen: state.commands.get(data.command_id)?.first_seen ?? Date.now() });
    later("graph", refreshAgentsAndGraph, 300);
    later("stats", refreshStats, 400);
    if (!$("#view-audit").hidden) later("audit", () => { loadCommands(); loadAudits(); }, 500);
  } else if (env.type === "stream.reset") {
    // Disconnected longer than the server keeps events: what was missed comes from a
    // fresh snapshot instead; the stream goes on from here.
    announce("Some missed events are no longer kept by the server: reloading the current state.");
    refreshAll();
  }
}

// ------------------------------------------------------------------ start

function selectView(view) {
  for (const tab of $$(".tabs .tab")) {
    if (tab.dataset.view === view) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  $("#view-ops").hidden = view !== "ops";
  $("#view-audit").hidden = view !== "audit";
  if (view === "audit") refreshAudit();
}

function initOnce() {
  if (initialised) return;
  initialised = true;
  initDialogs();
  initFeed();
  initConsole();
  initAudit();
  graph = new RelationshipGraph($("#graph"));
  $("#graph-reset").addEventListener("click", () => graph.resetView());
  on("selection", () => graph.render());
  on("verdicts", () => { graph.render(); refreshStatsLocal(); });
  on("filter-agent", (id) => { selectView("ops"); filterByAgent(id); });
  on("toast", ({ text }) => announce(text, true));
  for (const tab of $$(".tabs .tab")) tab.addEventListener("click", () => selectView(tab.dataset.view));
  $("#signout").addEventListener("click", () => signOut("Signed out."));
  $("#conn-retry").addEventListener("click", () => stream?.retryNow());
}

function refreshStatsLocal() {
  // Between two /stats answers, keep the severity counters in step with the feed.
  for (const sev of SEVERITIES) {
    const el = $(`#stat-verdicts b[data-sev="${sev}"]`);
    if (el) el.textContent = String([...state.verdicts.values()].filter((v) => v.severity === sev).length);
  }
}

function startDashboard() {
  initOnce();
  $("#signin").hidden = true;
  $("#app").hidden = false;
  setRoleBadge();
  emit("role", state.role);
  selectView("ops");
  renderFeed();
  refreshAll();
  stream = new Stream({
    key: () => session.key,
    onEvent: onStreamEvent,
    onState: renderStreamState,
    onOpen: (resumed) => {
      if (!roleConfirmed) confirmRole();
      // Without a resume point (first connection), the REST snapshot closes the gap.
      if (!resumed) loadVerdicts().catch(() => {});
      refreshAgentsAndGraph().catch(() => {});
      refreshStats();
      refreshHealth();
    },
    onFailure: async () => {
      refreshHealth();
      try {
        await api("GET", "/verdicts", { query: { limit: 1 }, timeoutMs: 4000 });
      } catch (err) {
        if (err.status === 401) {
          signOut("Your session ended: the API key is no longer valid.");
          return false;
        }
      }
      return true;
    },
  });
  stream.start();
  timers.push(setInterval(refreshStats, 5000));
  timers.push(setInterval(refreshHealth, 10000));
  timers.push(setInterval(() => refreshAgentsAndGraph().catch(() => {}), 15000));
  timers.push(setInterval(() => { if (!$("#view-audit").hidden) { loadCommands(); verifyChain(); } }, 10000));
}

async function confirmRole() {
  try {
    state.role = await probeRole(session.key);
    roleConfirmed = true;
    setRoleBadge();
    emit("role", state.role);
  } catch (err) {
    if (err.status === 401) signOut(err.detail);
  }
}

function setRoleBadge() {
  const badge = $("#role-badge");
  badge.textContent = state.role === "OPERATOR" ? "OPERATOR" : "VIEWER · read-only";
  badge.className = `role-badge role-${state.role}`;
  document.body.dataset.role = state.role;
}


async function boot() {
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("#signin-key").value.trim();
    if (!key) {
      $("#signin-error").textContent = "Enter your API key.";
      return;
    }
    signIn(key);
  });
  const key = session.key;
  if (!key) return showSignin();
  try {
    state.role = await probeRole(key);
    roleConfirmed = true;
    startDashboard();
  } catch (err) {
    if (err.status === 0) {
      // Server down at load: keep the key, show the dashboard read-only with the
      // banner, and confirm the role once the stream reconnects.
      state.role = "VIEWER";
      roleConfirmed = false;
      startDashboard();
      return;
    }
    session.key = null;
    showSignin(err.detail || "Please sign in again.");
  }
}

boot();
