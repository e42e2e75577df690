// What the dashboard knows, and who wants to hear when it changes.

export const SEVERITIES = ["CRITICAL", "HIGH", "MEDIUM", "LOW"];
export const SEVERITY_RANK = { CRITICAL: 4, HIGH: 3, MEDIUM: 2, LOW: 1 };
export const COMMAND_TYPES = ["MUTE", "ISOLATE", "TERMINATE", "SNAPSHOT_STATE", "REVOKE_ACCESS", "INJECT_CONSTRAINT"];
export const FINAL_STATUSES = new Set(["COMPLETED", "FAILED", "TIMEOUT"]);

export const state = {
  /** "VIEWER" | "OPERATOR" (from the sign-in probe) */
  role: null,
  /** verdict id -> verdict (wire form); only ACTIVE ones are kept */
  verdicts: new Map(),
  /** verdict id -> performance.now() when it was last stored (snapshot vs stream races) */
  verdictSeenAt: new Map(),
  /** agent id -> registered agent (GET /agents) */
  agents: new Map(),
  agentsLoaded: false,
  /** GET /alliances/graph */
  graph: { nodes: [], edges: [], communities: [] },
  /** agent ids chosen as command targets (graph, list, "Act on it") */
  selected: new Set(),
  /** command id -> command as last seen (receipt, confirmation or GET) */
  commands: new Map(),
};

export const isOperator = () => state.role === "OPERATOR";

const listeners = new Map();

export function on(topic, fn) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(fn);
}

export function emit(topic, payload) {
  for (const fn of listeners.get(topic) || []) {
    try {
      fn(payload);
    } catch (err) {
      console.error(`listener for ${topic} failed`, err);
    }
  }
}

const closed = new Map(); // verdict id -> updated_at of its MITIGATED/DISMISSED version

/** Keep the newer of two versions of a verdict (updates can arrive out of order
 * between the REST snapshot and the stream). */
export function upsertVerdict(verdict) {
  if (!verdict || typeof verdict.id !== "string") return false;
  const known = state.verdicts.get(verdict.id);
  const stamp = String(verdict.updated_at || "");
  if (known && String(known.updated_at || "") > stamp) return false;
  // A verdict already seen closed is not resurrected by an older ACTIVE copy.
  if (closed.has(verdict.id) && closed.get(verdict.id) >= stamp) return false;
  if (verdict.status && verdict.status !== "ACTIVE") {
    closed.set(verdict.id, stamp);
    state.verdictSeenAt.set(verdict.id, performance.now());
    return state.verdicts.delete(verdict.id);
  }
  state.verdicts.set(verdict.id, verdict);
  state.verdictSeenAt.set(verdict.id, performance.now());
  return true;
}

/** agent id -> {severity, count, ids} over ACTIVE verdicts it is involved in or targeted by. */
export function threats() {
  const out = new Map();
  for (const v of state.verdicts.values()) {
    const ids = new Set([...(v.agents_involved || [])]);
    if (v.target) ids.add(v.target);
    for (const id of ids) {
      const t = out.get(id) || { severity: null, count: 0, verdicts: [], targeted: 0 };
      t.count += 1;
      t.verdicts.push(v);
      if (!(v.agents_involved || []).includes(id)) t.targeted += 1;
      if (!t.severity || SEVERITY_RANK[v.severity] > SEVERITY_RANK[t.severity]) t.severity = v.severity;
      out.set(id, t);
    }
  }
  return out;
}

/** Every agent id the dashboard has heard of: registered, in the graph, or in a verdict. */
export function knownAgentIds() {
  const ids = new Set(state.agents.keys());
  for (const n of state.graph.nodes || []) if (n && n.id) ids.add(String(n.id));
  for (const v of state.verdicts.values()) {
    for (const id of v.agents_involved || []) ids.add(id);
    if (v.target) ids.add(v.target);
  }
  return [...ids].sort();
}

export function agentLabel(id) {
  const agent = state.agents.get(id);
  if (agent && agent.name && agent.name !== id) return `${agent.name} (${id.length > 12 ? `${id.slice(0, 8)}…` : id})`;
  return id;
}
