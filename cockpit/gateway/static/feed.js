// The verdict feed: one card per ACTIVE verdict, updated in place as the stream
// speaks; the evidence dialog; Dismiss and "Act on it".

import { api } from "./api.js";
import { $, $$, age, announce, clock, dateTime, h, pct, replaceChildren } from "./dom.js";
import { SEVERITY_RANK, emit, isOperator, on, state, upsertVerdict } from "./state.js";

const filters = { severity: new Set(["CRITICAL", "HIGH", "MEDIUM", "LOW"]), category: "", agent: "" };
const cards = new Map(); // verdict id -> card element

function matches(v) {
  if (!filters.severity.has(v.severity)) return false;
  if (filters.category && v.category !== filters.category) return false;
  if (filters.agent) {
    const needle = filters.agent.toLowerCase();
    const ids = [...(v.agents_involved || []), v.target || ""];
    if (!ids.some((id) => String(id).toLowerCase().includes(needle))) return false;
  }
  return true;
}

function sorted() {
  return [...state.verdicts.values()].sort(
    (a, b) =>
      String(b.updated_at || b.timestamp || "").localeCompare(String(a.updated_at || a.timestamp || "")) ||
      (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0),
  );
}

function agentChips(ids) {
  return (ids || []).map((id) => h("span", { class: "agent-chip", title: id }, id));
}

function buildCard(v) {
  const operator = isOperator();
  const sev = SEVERITY_RANK[v.severity] ? v.severity : "LOW";
  const confidence = Math.max(0, Math.min(1, Number(v.confidence) || 0));
  const open = () => openEvidence(v.id);
  const card = h(
    "article",
    {
      class: ["card", `sev-${sev}`],
      tabindex: "0",
      "data-verdict-id": v.id,
      "aria-label": `${sev} ${v.category || ""} verdict: ${v.title || ""}`,
      onclick: (e) => {
        if (e.target.closest("button")) return;
        open();
      },
      onkeydown: (e) => {
        if ((e.key === "Enter" || e.key === " ") && e.target === e.currentTarget) {
          e.preventDefault();
          open();
        }
      },
    },
    h(
      "div",
      { class: "card-top" },
      h("span", { class: ["sev-badge", `sev-${sev}`] }, sev),
      h("span", { class: "category" }, v.category || "—"),
      h("span", { class: "age", "data-ts": v.updated_at || v.timestamp || v.created_at, title: dateTime(v.updated_at) }, age(v.updated_at || v.timestamp)),
    ),
    h("h3", { class: "card-title" }, v.title || "(untitled verdict)"),
    h(
      "div",
      { class: "card-agents" },
      h("span", { class: "label" }, "Agents"),
      agentChips(v.agents_involved),
      v.target ? [h("span", { class: "arrow", "aria-label": "against" }, "→"), h("span", { class: "agent-chip target", title: `target ${v.target}` }, v.target)] : null,
    ),
    h(
      "div",
      { class: "card-confidence" },
      h("span", { class: "label" }, "Confidence"),
      h(
        "span",
        { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(confidence * 100)), "aria-label": "confidence" },
        h("span", { class: "bar-fill", style: { width: `${confidence * 100}%` } }),
      ),
      h("span", { class: "num" }, pct(confidence)),
    ),
    h(
      "div",
      { class: "card-foot" },
      h("span", { class: "rec" }, h("span", { class: "label" }, "Recommended"), h("b", { class: "rec-action" }, v.recommended_action || "MONITOR")),
      h(
        "span",
        { class: "card-actions" },
        h("button", { type: "button", class: "btn btn-small btn-ghost", onclick: open, "aria-label": `Evidence for ${v.title || v.id}` }, "Evidence"),
        operator
          ? h("button", { type: "button", class: "btn btn-small btn-act", "data-action": "act", onclick: () => emit("act", v) }, "Act on it")
          : null,
        operator
          ? h("button", { type: "button", class: "btn btn-small btn-ghost", "data-action": "dismiss", onclick: () => dismiss(v.id) }, "Dismiss")
          : null,
      ),
    ),
  );
  return card;
}

export function renderFeed() {
  const feed = $("#feed");
  const visible = sorted().filter(matches);
  const wanted = new Set(visible.map((v) => v.id));
  for (const [id, card] of cards) {
    if (!wanted.has(id)) {
      card.remove();
      cards.delete(id);
    }
  }
  let previous = null;
  for (const v of visible) {
    let card = cards.get(v.id);
    const stamp = `${v.updated_at}|${v.status}|${state.role}`;
    if (!card || card.dataset.stamp !== stamp) {
      const fresh = buildCard(v);
      fresh.dataset.stamp = stamp;
      if (card) {
        const hadFocus = card.contains(document.activeElement);
        card.replaceWith(fresh);
        fresh.classList.add("flash");
        if (hadFocus) fresh.focus();
      }
      card = fresh;
      cards.set(v.id, card);
    }
    const expected = previous ? previous.nextSibling : feed.firstChild;
    if (expected !== card) feed.insertBefore(card, expected);
    previous = card;
  }
  const empty = $(".feed-empty", feed);
  if (!visible.length) {
    if (!empty) feed.appendChild(h("p", { class: "feed-empty muted" }, state.verdicts.size ? "No verdict matches these filters." : "No active verdicts. The fleet looks calm."));
  } else if (empty) empty.remove();
  $("#feed-count").textContent = visible.length === state.verdicts.size ? String(visible.length) : `${visible.length}/${state.verdicts.size}`;
}

/** A verdict arrived on the stream (created or updated). */
export function onVerdictEvent(type, verdict) {
  const isNew = !state.verdicts.has(verdict.id) && type === "verdict.created";
  if (!upsertVerdict(verdict)) return;
  renderFeed();
  const card = cards.get(verdict.id);
  if (isNew && card) card.classList.add("new");
  if (isNew && verdict.severity === "CRITICAL" && verdict.status === "ACTIVE") {
    announce(`New CRITICAL verdict: ${verdict.title || verdict.category}. Agents ${(verdict.agents_involved || []).join(", ")}.`, true);
  } else if (isNew) {
    announce(`New ${verdict.severity} verdict: ${verdict.title || verdict.category}.`);
  }
  emit("verdicts");
}

export async function loadVerdicts() {
  const started = performance.now();
  const items = [];
  for (let offset = 0; offset < 2000; offset += 500) {
    const page = await api("GET", "/verdicts", { query: { status: "ACTIVE", limit: 500, offset } });
    items.push(...(page?.items || []));
    if (!page || items.length >= (page.total ?? 0) || (page.items || []).length < 500) break;
  }
  // Drop what the snapshot no longer lists, except what the stream delivered while
  // the snapshot was on its way (it is newer than the snapshot).
  const seen = new Set(items.map((v) => v.id));
  for (const id of [...state.verdicts.keys()]) {
    if (!seen.has(id) && (state.verdictSeenAt.get(id) ?? 0) < started) state.verdicts.delete(id);
  }
  for (const v of items) upsertVerdict(v);
  renderFeed();
  emit("verdicts");
}

async function dismiss(id) {
  const v = state.verdicts.get(id);
  try {
    const updated = await api("PATCH", `/verdicts/${encodeURIComponent(id)}`, { body: { status: "DISMISSED" } });
    upsertVerdict(updated || { ...v, status: "DISMISSED" });
    renderFeed();
    emit("verdicts");
    announce(`Verdict dismissed: ${v?.title || id}`);
    const dialog = $("#evidence-dialog");
    if (dialog.open && dialog.dataset.verdictId === id) dialog.close();
  } catch (err) {
    emit("toast", { kind: "error", text: `Could not dismiss: ${err.detail || err.message}` });
  }
}

// ------------------------------------------------------------------ evidence

function scoreBar(score) {
  const n = Number(score);
  if (!Number.isFinite(n)) return h("span", { class: "muted" }, "—");
  const level = n >= 0.65 ? "high" : n >= 0.4 ? "mid" : "low";
  return h(
    "span",
    { class: ["score", `score-${level}`], title: `deception score ${n.toFixed(3)}` },
    h("span", { class: "bar small", "aria-hidden": "true" }, h("span", { class: "bar-fill", style: { width: `${Math.max(0, Math.min(1, n)) * 100}%` } })),
    h("span", { class: "num" }, n.toFixed(2)),
  );
}

function evidenceItem(item, index) {
  const action = item.action && typeof item.action === "object" ? item.action : null;
  const body = item.kind === "action" || action
    ? h("p", { class: "ev-action" }, h("span", { class: "label" }, "ACTION"), h("b", null, action?.type || "?"), action?.target ? [" → ", h("span", { class: "agent-chip target" }, action.target)] : null)
    : h("p", { class: "ev-content" }, item.content ?? "");
  return h(
    "li",
    { class: "ev-item", "data-message-id": item.message_id },
    h("span", { class: "ev-index", "aria-hidden": "true" }, String(index + 1)),
    h(
      "div",
      { class: "ev-main" },
      h(
        "div",
        { class: "ev-meta" },
        h("time", { datetime: item.timestamp, title: dateTime(item.timestamp) }, clock(item.timestamp)),
        h("span", { class: "agent-chip" }, item.source_agent_id ?? "?"),
        (item.target_agent_ids || []).length ? [h("span", { class: "arrow" }, "→"), agentChips(item.target_agent_ids)] : null,
        h("span", { class: "ev-id muted", title: "message id" }, item.message_id),
      ),
      body,
      h(
        "div",
        { class: "ev-scores" },
        item.intent ? h("span", { class: ["intent", `intent-${item.intent}`] }, item.intent, item.intent_confidence != null ? ` ${pct(item.intent_confidence)}` : "") : null,
        h("span", { class: "label" }, "Deception"),
        scoreBar(item.deception_score),
        item.quarantined ? h("span", { class: "tag tag-warn" }, "quarantined") : null,
      ),
    ),
  );
}

export async function openEvidence(id) {
  const dialog = $("#evidence-dialog");
  const body = $("#evidence-body");
  const v = state.verdicts.get(id);
  dialog.dataset.verdictId = id;
  $("#evidence-title").textContent = v ? v.title || "Evidence" : "Evidence";
  replaceChildren(body, h("p", { class: "muted" }, "Loading evidence…"));
  renderEvidenceActions(v);
  if (!dialog.open) dialog.showModal();
  try {
    const [verdict, evidence] = await Promise.all([
      v ? Promise.resolve(v) : api("GET", `/verdicts/${encodeURIComponent(id)}`),
      api("GET", `/verdicts/${encodeURIComponent(id)}/evidence`),
    ]);
    if (dialog.dataset.verdictId !== id) return;
    $("#evidence-title").textContent = verdict.title || "Evidence";
    renderEvidenceActions(verdict);
    const items = [...(evidence?.items || [])].sort((a, b) => String(a.timestamp).localeCompare(String(b.timestamp)));
    const sev = SEVERITY_RANK[verdict.severity] ? verdict.severity : "LOW";
    replaceChildren(
      body,
      h(
        "div",
        { class: "ev-summary" },
        h("span", { class: ["sev-badge", `sev-${sev}`] }, sev),
        h("span", { class: "category" }, verdict.category),
        h("span", { class: "muted" }, `confidence ${pct(verdict.confidence)}`),
        h("span", { class: "muted" }, `recommended ${verdict.recommended_action || "MONITOR"}`),
        h("span", { class: "muted" }, `updated ${dateTime(verdict.updated_at)}`),
      ),
      h(
        "div",
        { class: "card-agents" },
        h("span", { class: "label" }, "Agents"),
        agentChips(verdict.agents_involved),
        verdict.target ? [h("span", { class: "arrow" }, "→"), h("span", { class: "agent-chip target" }, verdict.target)] : null,
        h("span", { class: "muted small ev-vid" }, `verdict ${verdict.id}`),
      ),
      h("h3", { class: "ev-heading" }, `Evidence chain — ${items.length} message${items.length === 1 ? "" : "s"}, in time order`),
      items.length
        ? h("ol", { class: "ev-list", id: "evidence-list" }, items.map(evidenceItem))
        : h("p", { class: "muted" }, "The evidence messages are no longer stored."),
    );
  } catch (err) {
    if (dialog.dataset.verdictId !== id) return;
    replaceChildren(body, h("p", { class: "form-error" }, `Could not load the evidence: ${err.detail || err.message}`));
  }
}

function renderEvidenceActions(v) {
  const actions = $("#evidence-actions");
  replaceChildren(
    actions,
    v && isOperator() && v.status === "ACTIVE"
      ? [
          h("button", { type: "button", class: "btn", onclick: () => dismiss(v.id) }, "Dismiss"),
          h("button", { type: "button", class: "btn btn-act", onclick: () => { $("#evidence-dialog").close(); emit("act", v); } }, "Act on it"),
        ]
      : null,
    h("button", { type: "button", class: "btn btn-primary", onclick: () => $("#evidence-dialog").close() }, "Close"),
  );
}

// ------------------------------------------------------------------ wiring

export function initFeed() {
  for (const btn of $$(".sev-filters .chip-toggle")) {
    btn.addEventListener("click", () => {
      const sev = btn.dataset.sev;
      if (filters.severity.has(sev)) filters.severity.delete(sev);
      else filters.severity.add(sev);
      btn.setAttribute("aria-pressed", String(filters.severity.has(sev)));
      renderFeed();
    });
  }
  $("#filter-category").addEventListener("change", (e) => {
    filters.category = e.target.value;
    renderFeed();
  });
  $("#filter-agent").addEventListener("input", (e) => {
    filters.agent = e.target.value.trim();
    renderFeed();
  });
  on("role", () => {
    for (const card of cards.values()) card.dataset.stamp = "";
    renderFeed();
  });
  setInterval(() => {
    const now = Date.now();
    for (const el of $$("#feed .age[data-ts]")) el.textContent = age(el.dataset.ts, now);
  }, 5000);
}

/** Show only this agent's verdicts (from the graph). */
export function filterByAgent(id) {
  filters.agent = id || "";
  $("#filter-agent").value = filters.agent;
  renderFeed();
}
