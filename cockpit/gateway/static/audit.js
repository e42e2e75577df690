// The audit view: commands, the hash-chained audit trail, and the chain's status.

import { api } from "./api.js";
import { confirmAction, withTotp } from "./dialogs.js";
import { $, clock, compact, dateTime, h, replaceChildren, shortId } from "./dom.js";
import { agentLabel, isOperator, on } from "./state.js";

const PAGE = 100;
let auditOffset = 0;
let auditToken = 0;
let commandsToken = 0;
let debounce = null;

function formQuery(id) {
  const data = new FormData($(id));
  const out = {};
  for (const [k, v] of data.entries()) if (String(v).trim()) out[k] = String(v).trim();
  return out;
}

export async function loadCommands() {
  const token = ++commandsToken;
  const body = $("#commands-table tbody");
  try {
    const page = await api("GET", "/commands", { query: { ...formQuery("#commands-filters"), limit: 100 } });
    if (token !== commandsToken) return;
    $("#commands-error").textContent = "";
    $("#commands-count").textContent = String(page?.total ?? (page?.items || []).length);
    const items = page?.items || [];
    replaceChildren(
      body,
      items.length
        ? items.map((c) =>
            h(
              "tr",
              { "data-command-id": c.command_id },
              h("td", { title: dateTime(c.created_at) }, dateTime(c.created_at)),
              h("td", null, h("button", { type: "button", class: "link", title: `Show the audit rows of ${c.command_id}`, onclick: () => showCommandAudit(c.command_id) }, shortId(c.command_id, 14))),
              h("td", null, h("b", null, c.command_type || "")),
              h("td", { class: "wrap-cell", title: (c.target_agents || []).join(", ") }, (c.target_agents || []).map((id) => shortId(id, 12)).join(", ")),
              h("td", null, c.operator || ""),
              h("td", null, h("span", { class: `status status-${String(c.status || "").replace(/[^A-Z_]/g, "")}` }, c.status || "")),
              h("td", { class: "num" }, c.execution_time_ms != null ? `${Number(c.execution_time_ms).toFixed(1)} ms` : ""),
              h("td", null, c.status === "PENDING_APPROVAL" && isOperator()
                ? h("button", { type: "button", class: "btn btn-small btn-danger", onclick: () => approve(c) }, "Approve")
                : null),
            ),
          )
        : h("tr", null, h("td", { colspan: "8", class: "muted" }, "No command matches.")),
    );
  } catch (err) {
    if (token !== commandsToken) return;
    $("#commands-error").textContent = `Commands unavailable: ${err.detail || err.message}`;
  }
}

function confirmApproval(c) {
  const targets = c.target_agents || [];
  return confirmAction({
    title: `Approve ${c.command_type}`,
    ok: `Approve ${c.command_type}`,
    children: [
      h("p", null, `${c.operator || "Another operator"} asks to ${c.command_type} ${targets.length} agent${targets.length === 1 ? "" : "s"}. Your approval runs it at once:`),
      h("p", { class: "confirm-targets" }, targets.map((id) => h("span", { class: "agent-chip", title: id }, agentLabel(id)))),
      Object.keys(c.parameters || {}).length ? h("p", { class: "muted small" }, `Parameters: ${compact(c.parameters)}`) : null,
      c.reason ? h("p", { class: "muted small" }, `Reason: ${c.reason}`) : null,
      h("p", { class: "muted small", title: c.command_id }, `Command ${shortId(c.command_id, 24)}`),
    ],
  });
}

/** Confirm, then approve (with the approver's TOTP code if the server asks): the outcome. */
async function approval(c) {
  const id = c.command_id;
  if (!(await confirmApproval(c))) return `Approval of ${id} cancelled.`;
  try {
    await withTotp((headers) => api("POST", `/commands/${encodeURIComponent(id)}/approve`, { headers }));
    return `Command ${id} approved.`;
  } catch (err) {
    return err.wantsTotp ? "Not approved: a TOTP code is required." : `Approval refused: ${err.detail || err.message}`;
  }
}

async function approve(c) {
  const outcome = await approval(c);
  await loadCommands(); // it clears the message line: say the outcome after it
  $("#commands-error").textContent = outcome;
}

function showCommandAudit(id) {
  $("#audit-filters").elements.command_id.value = id;
  loadAudits();
  $("#audit-title").scrollIntoView({ block: "start", behavior: "smooth" });
}

function auditRow(a) {
  return h(
    "tr",
    { class: a.success ? "ok" : "fail", "data-layer": a.layer, "data-command-id": a.command_id ?? "", "data-agent-id": a.agent_id ?? "" },
    h("td", { class: "num muted" }, String(a.id ?? "")),
    h("td", { title: dateTime(a.timestamp) }, `${dateTime(a.timestamp).slice(5, 10)} ${clock(a.timestamp)}`),
    h("td", { title: a.command_id || "" }, a.command_id ? shortId(a.command_id, 12) : "—"),
    h("td", { title: a.agent_id || "" }, a.agent_id ? shortId(a.agent_id, 12) : "—"),
    h("td", null, a.layer || ""),
    h("td", null, a.action || ""),
    h("td", { class: a.success ? "yes" : "no" }, a.success ? "✓ ok" : "✗ failed"),
    h("td", { class: "details", title: compact(a.details, 4000) }, compact(a.details, 160)),
  );
}

export async function loadAudits(append = false) {
  const token = ++auditToken;
  if (!append) auditOffset = 0;
  const body = $("#audit-table tbody");
  try {
    const page = await api("GET", "/audits", { query: { ...formQuery("#audit-filters"), limit: PAGE, offset: auditOffset } });
    if (token !== auditToken) return;
    $("#audit-error").textContent = "";
    const items = page?.items || [];
    const total = page?.total ?? items.length;
    $("#audit-count").textContent = String(total);
    const rows = items.map(auditRow);
    if (append) body.append(...rows);
    else replaceChildren(body, rows.length ? rows : h("tr", null, h("td", { colspan: "8", class: "muted" }, "No audit row matches.")));
    auditOffset += items.length;
    $("#audit-more").hidden = auditOffset >= total;
  } catch (err) {
    if (token !== auditToken) return;
    $("#audit-error").textContent = `Audit trail unavailable: ${err.detail || err.message}`;
  }
}

export async function verifyChain() {
  const el = $("#chain-status");
  el.className = "chain chain-unknown";
  el.textContent = "Hash chain: verifying…";
  try {
    const r = await api("GET", "/audits/verify");
    if (r?.ok) {
      el.className = "chain chain-ok";
      el.textContent = `✓ Hash chain intact — ${r.rows ?? "?"} rows`;
    } else {
      el.className = "chain chain-broken";
      el.textContent = `✗ Hash chain BROKEN at row ${r?.first_broken_id ?? "?"}: ${r?.reason || "unknown reason"}`;
    }
    el.title = r?.head ? `head ${r.head}` : "";
  } catch (err) {
    el.className = "chain chain-unknown";
    el.textContent = `Hash chain: unknown (${err.detail || err.message})`;
  }
}

export function refreshAudit() {
  loadCommands();
  loadAudits();
  verifyChain();
}

export function initAudit() {
  const later = (fn) => () => {
    clearTimeout(debounce);
    debounce = setTimeout(fn, 250);
  };
  $("#commands-filters").addEventListener("input", later(loadCommands));
  $("#commands-filters").addEventListener("submit", (e) => { e.preventDefault(); loadCommands(); });
  $("#audit-filters").addEventListener("input", later(() => loadAudits()));
  $("#audit-filters").addEventListener("submit", (e) => { e.preventDefault(); loadAudits(); });
  $("#commands-refresh").addEventListener("click", () => refreshAudit());
  $("#chain-verify").addEventListener("click", verifyChain);
  $("#audit-more").addEventListener("click", () => loadAudits(true));
  on("role", () => loadCommands());
}
