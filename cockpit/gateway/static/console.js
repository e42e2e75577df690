// The command console: targets, command type and parameters, blast radius,
// confirmation (and TOTP step-up), then live progress per layer.

import { api, newCommandId } from "./api.js";
import { confirmAction, withTotp } from "./dialogs.js";
import { $, announce, clock, compact, h, replaceChildren, shortId } from "./dom.js";
import { COMMAND_TYPES, FINAL_STATUSES, agentLabel, emit, isOperator, knownAgentIds, on, state } from "./state.js";

const DESCRIPTIONS = {
  MUTE: "Suspend the agent's messaging (software layer); expires after the duration.",
  ISOLATE: "Revoke credentials and quarantine the network.",
  TERMINATE: "Revoke, stop gracefully, force kill and quarantine — then every descendant (cascade).",
  SNAPSHOT_STATE: "Capture process/container/pod state and logs with a sha256.",
  REVOKE_ACCESS: "Revoke the agent's credentials.",
  INJECT_CONSTRAINT: "Deliver a constraint directive and record it on the agent.",
};
const DESTRUCTIVE = new Set(["TERMINATE", "ISOLATE", "REVOKE_ACCESS"]);
const form = { type: "MUTE", duration: 300, freeze: false, constraint: "", cascade: true, reason: "", verdict: null, search: "" };
const polls = new Map(); // command id -> timer
let blastToken = 0;
let submitting = false; // a submit's flow (blast radius, confirmation, TOTP, send) is in progress

// ------------------------------------------------------------------ rendering

export function renderConsole() {
  const root = $("#console");
  if (!isOperator()) {
    replaceChildren(
      root,
      h("p", { class: "readonly-note" }, h("b", null, "Read-only. "), "A VIEWER key can watch verdicts, agents and command outcomes, but cannot issue commands or change verdicts."),
      h("h3", { class: "sub" }, "Command activity"),
      h("ol", { id: "command-log", class: "command-log", "aria-live": "polite" }),
    );
    renderLog();
    return;
  }
  replaceChildren(
    root,
    h(
      "form",
      { id: "command-form", class: "command-form", novalidate: true, onsubmit: (e) => { e.preventDefault(); submit(); } },
      h(
        "fieldset",
        { class: "targets" },
        h("legend", null, "Targets ", h("span", { id: "target-count", class: "count" }, "0")),
        h("div", { id: "target-chips", class: "target-chips", "aria-live": "polite" }),
        h(
          "div",
          { class: "filter-row" },
          h("label", { class: "sr-only", for: "agent-search" }, "Find agents"),
          h("input", { id: "agent-search", type: "search", placeholder: "Find agents…", spellcheck: "false", value: form.search, oninput: (e) => { form.search = e.target.value; renderAgentList(); } }),
          h("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => { state.selected.clear(); emit("selection"); } }, "Clear"),
        ),
        h("div", { id: "agent-list", class: "agent-list", role: "group", "aria-label": "Agents" }),
      ),
      h(
        "div",
        { class: "field-row" },
        h("label", { for: "cmd-type" }, "Command"),
        h(
          "select",
          { id: "cmd-type", onchange: (e) => { form.type = e.target.value; renderParams(); } },
          COMMAND_TYPES.map((t) => h("option", { value: t, selected: t === form.type }, t)),
        ),
      ),
      h("p", { id: "cmd-desc", class: "hint" }),
      h("div", { id: "cmd-params", class: "params" }),
      h(
        "div",
        { class: "field-row" },
        h("label", { for: "cmd-reason" }, "Reason"),
        h("input", { id: "cmd-reason", type: "text", maxlength: "2000", placeholder: "Why (kept in the audit trail)", value: form.reason, oninput: (e) => { form.reason = e.target.value; } }),
      ),
      h("div", { id: "cmd-verdict" }),
      h("div", { id: "blast", class: "blast", "aria-live": "polite" }),
      h("div", { class: "submit-row" }, h("button", { type: "submit", id: "cmd-submit", class: "btn btn-primary" }, "Issue")),
      h("p", { id: "cmd-message", class: "cmd-message", role: "status" }),
    ),
    h("h3", { class: "sub" }, "Command progress"),
    h("ol", { id: "command-log", class: "command-log" }),
  );
  renderTargets();
  renderParams();
  renderLog();
}

function renderTargets() {
  if (!isOperator()) return;
  const chips = $("#target-chips");
  if (!chips) return;
  const ids = [...state.selected];
  $("#target-count").textContent = String(ids.length);
  replaceChildren(
    chips,
    ids.length
      ? ids.map((id) =>
          h(
            "span",
            { class: "target-chip" },
            h("span", { class: "chip-text", title: id }, agentLabel(id)),
            h("button", { type: "button", class: "chip-x", "aria-label": `Remove ${id}`, onclick: () => { state.selected.delete(id); emit("selection"); } }, "×"),
          ),
        )
      : h("span", { class: "muted small" }, "Pick agents in the graph or the list below."),
  );
  renderAgentList();
  renderSubmit();
  if (form.type === "TERMINATE") renderBlast();
}

function renderAgentList() {
  const list = $("#agent-list");
  if (!list) return;
  const needle = form.search.trim().toLowerCase();
  const ids = knownAgentIds().filter((id) => !needle || id.toLowerCase().includes(needle) || (state.agents.get(id)?.name || "").toLowerCase().includes(needle));
  const shown = ids.slice(0, 200);
  replaceChildren(
    list,
    shown.length
      ? shown.map((id) => {
          const agent = state.agents.get(id);
          return h(
            "label",
            { class: "agent-option" },
            h("input", { type: "checkbox", value: id, checked: state.selected.has(id), onchange: (e) => { if (e.target.checked) state.selected.add(id); else state.selected.delete(id); emit("selection"); } }),
            h("span", { class: "agent-name", title: id }, agentLabel(id)),
            h("span", { class: `status-tag st-${agent ? agent.status : "UNREGISTERED"}` }, agent ? agent.status : "unregistered"),
          );
        })
      : h("p", { class: "muted small" }, needle ? "No agent matches." : "No agents known yet."),
    ids.length > shown.length ? h("p", { class: "muted small" }, `${ids.length - shown.length} more — refine the search.`) : null,
  );
}

function renderParams() {
  const box = $("#cmd-params");
  if (!box) return;
  $("#cmd-type").value = form.type;
  $("#cmd-desc").textContent = DESCRIPTIONS[form.type] || "";
  const parts = [];
  if (form.type === "MUTE") {
    parts.push(
      h("div", { class: "field-row" }, h("label", { for: "p-duration" }, "Duration (s)"),
        h("input", { id: "p-duration", type: "number", min: "1", max: String(30 * 86400), step: "1", value: String(form.duration), oninput: (e) => { form.duration = e.target.value; } })),
      h("label", { class: "check" }, h("input", { id: "p-freeze", type: "checkbox", checked: form.freeze, onchange: (e) => { form.freeze = e.target.checked; } }), " Also freeze the process (SIGSTOP)"),
    );
  } else if (form.type === "INJECT_CONSTRAINT") {
    parts.push(h("div", { class: "field-col" }, h("label", { for: "p-constraint" }, "Constraint"),
      h("textarea", { id: "p-constraint", rows: "3", maxlength: "10000", placeholder: "e.g. Do not take any action against agent c.", oninput: (e) => { form.constraint = e.target.value; } }, form.constraint)));
  } else if (form.type === "TERMINATE") {
    parts.push(h("label", { class: "check" }, h("input", { id: "p-cascade", type: "checkbox", checked: form.cascade, onchange: (e) => { form.cascade = e.target.checked; renderBlast(); } }), " Cascade to descendants"));
  }
  replaceChildren(box, parts);
  const verdictBox = $("#cmd-verdict");
  replaceChildren(
    verdictBox,
    form.verdict
      ? h("p", { class: "linked" }, h("span", { class: "label" }, "For verdict"), h("span", { class: "linked-title" }, form.verdict.title || form.verdict.id),
          h("button", { type: "button", class: "chip-x", "aria-label": "Unlink the verdict", onclick: () => { form.verdict = null; renderParams(); } }, "×"))
      : null,
  );
  if (form.type === "TERMINATE") renderBlast();
  else replaceChildren($("#blast"));
  renderSubmit();
}

function renderSubmit() {
  const btn = $("#cmd-submit");
  if (!btn) return;
  const n = state.selected.size;
  btn.disabled = submitting;
  btn.textContent = `${DESTRUCTIVE.has(form.type) ? "Review " : "Issue "}${form.type}${n ? ` → ${n} agent${n > 1 ? "s" : ""}` : ""}`;
  btn.classList.toggle("btn-danger", DESTRUCTIVE.has(form.type));
  btn.classList.toggle("btn-primary", !DESTRUCTIVE.has(form.type));
}

function message(text, kind = "info") {
  const el = $("#cmd-message");
  if (!el) return;
  el.textContent = text;
  el.className = `cmd-message msg-${kind}`;
  if (kind === "error") announce(text, true);
}

// ------------------------------------------------------------------ blast radius

function flatten(node, depth = 0, out = []) {
  if (!node || typeof node !== "object") return out;
  out.push({ id: node.agent_id, name: node.name, status: node.status, runtime: node.runtime?.kind, depth });
  for (const child of node.children || []) flatten(child, depth + 1, out);
  return out;
}

async function blastRadius(ids, cascade) {
  const results = await Promise.all(
    ids.map(async (id) => {
      try {
        const tree = await api("GET", `/agents/${encodeURIComponent(id)}/tree`);
        const rows = tree?.tree ? flatten(tree.tree) : [{ id, name: tree?.agent?.name, status: tree?.agent?.status, depth: 0 }, ...(tree?.descendants || []).map((d) => ({ id: d.agent_id, name: d.name, status: d.status, depth: 1 }))];
        return { id, rows: cascade ? rows : rows.slice(0, 1) };
      } catch (err) {
        return { id, error: err.status === 404 ? "not a registered agent" : err.detail || err.message };
      }
    }),
  );
  const all = new Map();
  for (const r of results) for (const row of r.rows || []) all.set(row.id, row);
  return { results, total: all.size };
}

function blastView(blast) {
  return h(
    "div",
    { class: "blast-box" },
    h("p", { class: "blast-title" }, h("b", null, `Blast radius: ${blast.total} agent${blast.total === 1 ? "" : "s"} will be terminated`)),
    h(
      "ul",
      { class: "blast-list" },
      blast.results.map((r) =>
        r.error
          ? h("li", { class: "form-error" }, `${r.id}: ${r.error}`)
          : r.rows.map((row) =>
              h("li", { style: { paddingLeft: `${row.depth * 14}px` } }, row.depth ? "└ " : "", h("span", { class: "agent-chip" }, row.name && row.name !== row.id ? `${row.name} (${shortId(row.id, 8)})` : row.id), " ",
                h("span", { class: `status-tag st-${row.status || "UNREGISTERED"}` }, row.status || "?"), row.runtime ? h("span", { class: "muted small" }, ` ${row.runtime}`) : null),
            ),
      ),
    ),
  );
}

async function renderBlast() {
  const box = $("#blast");
  if (!box || form.type !== "TERMINATE") return;
  const ids = [...state.selected];
  if (!ids.length) {
    replaceChildren(box);
    return;
  }
  const token = ++blastToken;
  replaceChildren(box, h("p", { class: "muted small" }, "Computing blast radius…"));
  const blast = await blastRadius(ids, form.cascade);
  if (token !== blastToken || form.type !== "TERMINATE") return;
  replaceChildren(box, blastView(blast));
}

// ------------------------------------------------------------------ confirmation

function confirmCommand(body, blast) {
  return confirmAction({
    title: `Confirm ${body.command_type}`,
    ok: `Confirm ${body.command_type}`,
    typed: body.command_type === "TERMINATE" ? "TERMINATE" : null,
    children: [
      h("p", null, `You are about to ${body.command_type} ${body.target_agents.length} agent${body.target_agents.length > 1 ? "s" : ""}:`),
      h("p", { class: "confirm-targets" }, body.target_agents.map((id) => h("span", { class: "agent-chip", title: id }, agentLabel(id)))),
      h("p", { class: "hint" }, DESCRIPTIONS[body.command_type]),
      Object.keys(body.parameters).length ? h("p", { class: "muted small" }, `Parameters: ${compact(body.parameters)}`) : null,
      body.reason ? h("p", { class: "muted small" }, `Reason: ${body.reason}`) : null,
      blast ? blastView(blast) : null,
    ],
  });
}

// ------------------------------------------------------------------ issuing

function buildBody() {
  const parameters = {};
  if (form.type === "MUTE") {
    parameters.duration_seconds = Number(form.duration);
    if (form.freeze) parameters.freeze = true;
  } else if (form.type === "INJECT_CONSTRAINT") parameters.constraint = form.constraint.trim();
  else if (form.type === "TERMINATE") parameters.cascade = Boolean(form.cascade);
  const body = { command_id: newCommandId(), command_type: form.type, target_agents: [...state.selected], parameters };
  if (form.reason.trim()) body.reason = form.reason.trim();
  if (form.verdict) body.verdict_id = form.verdict.id;
  return body;
}

async function submit() {
  if (!isOperator() || submitting) return; // one flow at a time: a double click sends one command
  submitting = true;
  renderSubmit();
  try {
    await issue();
  } finally {
    submitting = false;
    renderSubmit();
  }
}

async function issue() {
  const body = buildBody();
  if (!body.target_agents.length) return message("Choose at least one target agent.", "error");
  if (form.type === "MUTE" && !(body.parameters.duration_seconds >= 1)) return message("Duration must be at least 1 second.", "error");
  if (form.type === "INJECT_CONSTRAINT" && !body.parameters.constraint) return message("Write the constraint to inject.", "error");
  if (DESTRUCTIVE.has(form.type)) {
    const blast = form.type === "TERMINATE" ? await blastRadius(body.target_agents, form.cascade) : null;
    if (!(await confirmCommand(body, blast))) return message(`${form.type} cancelled.`, "info");
  }
  await send(body);
}

async function send(body) {
  message(`Sending ${body.command_type}…`);
  try {
    const receipt = await withTotp((headers) => api("POST", "/commands", { body, headers }));
    track({ ...body, ...receipt, command_id: receipt?.command_id || body.command_id });
    message(`${body.command_type} accepted (${shortId(receipt?.command_id || body.command_id, 14)}) — progress below.`, "ok");
    announce(`${body.command_type} accepted`);
  } catch (err) {
    if (err.wantsTotp) return message(`${body.command_type} not sent: a TOTP code is required.`, "error");
    message(refusal(body, err), "error");
  }
}

function refusal(body, err) {
  const agents = err.body?.extra?.agent_ids || err.body?.extra?.unknown_agents;
  switch (err.status) {
    case 0:
      return `${body.command_type} not sent: ${err.detail}. Check the connection and retry.`;
    case 429: {
      const wait = err.retryAfter;
      return `Rate limit reached: ${body.command_type} refused. Try again in ${wait ? `${wait} s` : "a moment"}.`;
    }
    case 403:
      return `Refused (403): ${err.detail}`;
    case 401:
      return `Not authorised (401): ${err.detail}`;
    case 404:
    case 422:
      return `${body.command_type} rejected: ${err.detail}${Array.isArray(agents) && agents.length ? ` — ${agents.join(", ")}` : ""}`;
    case 409:
      return `Conflict (409): ${err.detail}`;
    default:
      return `${body.command_type} failed (${err.status}): ${err.detail}`;
  }
}

// ------------------------------------------------------------------ progress

/** Merge what we know about a command (receipt, confirmation, GET) and redraw. */
export function track(command) {
  if (!command?.command_id) return;
  const known = state.commands.get(command.command_id) || { first_seen: Date.now() };
  const merged = { ...known, ...command };
  // A final status is never overwritten by a late, non-final one.
  if (FINAL_STATUSES.has(known.status) && !FINAL_STATUSES.has(command.status)) merged.status = known.status;
  if ((!command.executed_layers || !command.executed_layers.length) && known.executed_layers) merged.executed_layers = known.executed_layers;
  state.commands.set(command.command_id, merged);
  if (!FINAL_STATUSES.has(merged.status) && !polls.has(command.command_id)) poll(command.command_id);
  if (FINAL_STATUSES.has(merged.status) && !FINAL_STATUSES.has(known.status) && known.status !== undefined) {
    announce(`${merged.command_type || "Command"} ${merged.status}`, merged.status !== "COMPLETED");
  }
  renderLog();
  emit("commands");
}

function poll(id) {
  const started = Date.now();
  const tick = async () => {
    const current = state.commands.get(id);
    if (!current || FINAL_STATUSES.has(current.status) || Date.now() - started > 120000) {
      polls.delete(id);
      return;
    }
    try {
      const fresh = await api("GET", `/commands/${encodeURIComponent(id)}`);
      if (fresh) track(fresh);
    } catch {
      /* the stream may still deliver it */
    }
    if (FINAL_STATUSES.has(state.commands.get(id)?.status)) {
      polls.delete(id);
      return;
    }
    polls.set(id, setTimeout(tick, Date.now() - started < 5000 ? 500 : 2000));
  };
  polls.set(id, setTimeout(tick, 300));
}

function statusClass(status) {
  return `status status-${String(status || "PENDING").replace(/[^A-Z_]/g, "")}`;
}

function layerRows(command) {
  const layers = command.executed_layers || [];
  if (!layers.length) return null;
  return h(
    "ul",
    { class: "layers", "aria-label": "Executed layers, in order" },
    layers.map((l) =>
      h(
        "li",
        { class: l.success ? "ok" : "fail", "data-layer": l.layer },
        h(
          "div",
          { class: "layer-line" },
          h("span", { class: ["ok-mark", l.success ? "yes" : "no"], "aria-label": l.success ? "succeeded" : "failed" }, l.success ? "✓" : "✗"),
          h("b", { class: "layer-name" }, l.layer ?? "?"),
          h("span", { class: "layer-action" }, l.action ?? ""),
          l.agent_id ? h("span", { class: "layer-agent muted", title: l.agent_id }, shortId(l.agent_id, 10)) : null,
        ),
        l.verification != null || l.reason
          ? h("div", { class: "layer-verif", title: compact(l.verification, 2000) }, compact(l.verification ?? l.reason, 160))
          : null,
      ),
    ),
  );
}

function renderLog() {
  const log = $("#command-log");
  if (!log) return;
  const commands = [...state.commands.values()].sort((a, b) => (b.first_seen || 0) - (a.first_seen || 0)).slice(0, 30);
  replaceChildren(
    log,
    commands.length
      ? commands.map((c) =>
          h(
            "li",
            { class: "command-entry", "data-command-id": c.command_id, "data-status": c.status || "PENDING" },
            h(
              "div",
              { class: "command-head" },
              h("b", null, c.command_type || "COMMAND"),
              h("span", { class: "muted" }, " → "),
              h("span", { class: "cmd-targets", title: (c.target_agents || []).join(", ") }, (c.target_agents || []).map((id) => agentLabel(id)).join(", ") || "—"),
              h("span", { class: statusClass(c.status) }, c.status || "PENDING"),
            ),
            h(
              "div",
              { class: "command-meta muted small" },
              h("span", { title: c.command_id }, shortId(c.command_id, 14)),
              c.created_at ? h("span", null, clock(c.created_at)) : null,
              c.execution_time_ms != null ? h("span", null, `${Number(c.execution_time_ms).toFixed(1)} ms`) : null,
              c.operator ? h("span", null, `by ${c.operator}`) : null,
            ),
            FINAL_STATUSES.has(c.status) ? null : h("div", { class: "progress", role: "progressbar", "aria-label": `${c.command_type} in progress` }, h("span")),
            c.status === "PENDING_APPROVAL" ? h("p", { class: "hint" }, "Waiting for a second operator's approval (Audit view).") : null,
            layerRows(c),
            (c.cascade_terminated || []).length ? h("p", { class: "small" }, `Cascade terminated: ${c.cascade_terminated.join(", ")}`) : null,
            c.error || c.result?.error ? h("p", { class: "form-error small" }, c.error || c.result.error) : null,
          ),
        )
      : h("li", { class: "muted small empty" }, "No command issued in this session yet."),
  );
}

// ------------------------------------------------------------------ wiring

/** "Act on it": targets, command and reason prefilled from a verdict. */
function prefill(v) {
  if (!isOperator()) return;
  state.selected.clear();
  for (const id of v.agents_involved || []) state.selected.add(id);
  form.type = COMMAND_TYPES.includes(v.recommended_action) ? v.recommended_action : "MUTE";
  form.reason = `${v.category} verdict: ${v.title || v.id}`.slice(0, 2000);
  form.verdict = v;
  if (form.type === "INJECT_CONSTRAINT" && !form.constraint) {
    form.constraint = v.target ? `Do not coordinate or take actions against ${v.target}.` : "Stop the behaviour described in the verdict.";
  }
  renderConsole();
  emit("selection");
  const panel = $("#console");
  panel.scrollTop = 0;
  $("#cmd-submit").focus();
  message(`Prefilled from the verdict: review, then ${DESTRUCTIVE.has(form.type) ? "confirm" : "issue"}.`);
}

export function initConsole() {
  on("act", prefill);
  on("selection", renderTargets);
  on("agents", () => { renderAgentList(); });
  on("verdicts", () => { renderAgentList(); });
  on("role", renderConsole);
  renderConsole();
}

export function refreshAgentList() {
  renderAgentList();
}

