// The relationship graph: agents as nodes (status fill, threat ring), alliance edges
// weighted by strength, alliance communities and collusion groups as hulls.
//
// Layout is deterministic and incremental: the first batch of agents gets a seeded
// force layout; afterwards a node keeps its position for good, and a newcomer is
// placed next to its neighbours (or on a free spiral slot) and relaxed alone. So the
// picture does not jump while verdicts and telemetry stream in, and 200 agents stay
// cheap (one O(n^2) pass at start, O(n) per newcomer).

import { $, clear, h, pct, replaceChildren, s } from "./dom.js";
import { SEVERITY_RANK, agentLabel, emit, state, threats } from "./state.js";

const WORLD = 500; // the layout lives in [-WORLD, WORLD]^2
const YOUNG_MS = 5000; // a newcomer may still move this long after it appeared
const SEV_COLOR = { CRITICAL: "#DC2626", HIGH: "#EA580C", MEDIUM: "#F59E0B", LOW: "#10B981" };
const COMMUNITY_COLORS = ["#38BDF8", "#A78BFA", "#34D399", "#F472B6", "#FACC15", "#60A5FA", "#FB923C", "#2DD4BF"];

function hash(text) {
  let x = 0x811c9dc5;
  for (let i = 0; i < text.length; i += 1) {
    x ^= text.charCodeAt(i);
    x = Math.imul(x, 0x01000193) >>> 0;
  }
  return x;
}

const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

export class RelationshipGraph {
  constructor(container) {
    this.container = container;
    this.positions = new Map(); // id -> {x, y}, kept forever
    this.born = new Map(); // id -> when it was placed
    this.degree = new Map(); // id -> alliance links it had at the last layout
    this.slot = 0; // next sunflower slot for isolated newcomers
    this.view = { x: -WORLD - 20, y: -WORLD - 20, w: 2 * WORLD + 40, h: 2 * WORLD + 40 };
    this.nodeEls = new Map();
    this.edgeEls = new Map();
    this.hover = null;
    this.focusId = null;
    this.ids = [];
    this.edges = [];

    this.svg = s("svg", {
      class: "graph-svg",
      role: "img",
      "aria-label": "Agent relationship graph. Use the agent list in the command console to select agents with the keyboard.",
      preserveAspectRatio: "xMidYMid meet",
    });
    this.hullLayer = s("g", { class: "hulls" });
    this.edgeLayer = s("g", { class: "edges" });
    this.nodeLayer = s("g", { class: "nodes" });
    this.topLayer = s("g", { class: "nodes nodes-top" });
    this.svg.append(this.hullLayer, this.edgeLayer, this.nodeLayer, this.topLayer);
    this.empty = h("p", { class: "graph-empty muted" }, "No agents yet. They appear as telemetry arrives or agents are registered.");
    container.append(this.svg, this.empty);
    this.applyView();
    this.bindPanZoom();
    new ResizeObserver(() => this.render()).observe(container);
  }

  // -------------------------------------------------------------- layout

  /** Place newcomers, then relax: everyone on the first batch, only newcomers later.
   * A node stays "young" for a few seconds: when its first alliance links arrive just
   * after it did (verdicts often precede the graph refresh), it may still move once
   * to join its partners. Older nodes never move. */
  layout(ids, edges) {
    const now = Date.now();
    const neighbours = new Map();
    for (const e of edges) {
      if (!neighbours.has(e.source)) neighbours.set(e.source, []);
      if (!neighbours.has(e.target)) neighbours.set(e.target, []);
      neighbours.get(e.source).push(e.target);
      neighbours.get(e.target).push(e.source);
    }
    const fresh = ids.filter((id) => !this.positions.has(id));
    const young = ids.filter(
      (id) => this.positions.has(id) && now - (this.born.get(id) || 0) < YOUNG_MS && (this.degree.get(id) || 0) !== (neighbours.get(id) || []).length,
    );
    for (const id of ids) this.degree.set(id, (neighbours.get(id) || []).length);
    if (!fresh.length && !young.length) return;
    for (const id of fresh) this.born.set(id, now);
    const firstBatch = this.positions.size === 0;
    if (firstBatch) {
      for (const id of fresh) {
        const a = ((hash(id) % 3600) / 3600) * 2 * Math.PI;
        const r = WORLD * (0.25 + ((hash(`r${id}`) % 1000) / 1000) * 0.6);
        this.positions.set(id, { x: r * Math.cos(a), y: r * Math.sin(a) });
      }
      this.relax(ids, new Set(fresh), edges, ids.length > 120 ? 140 : 220);
      return;
    }
    const settled = (id) => this.positions.has(id) && !fresh.includes(id) && !young.includes(id);
    for (const id of [...fresh, ...young]) {
      const partners = (neighbours.get(id) || []).filter(settled).map((n) => this.positions.get(n));
      const a = ((hash(id) % 3600) / 3600) * 2 * Math.PI;
      if (partners.length) {
        const cx = partners.reduce((t, p) => t + p.x, 0) / partners.length;
        const cy = partners.reduce((t, p) => t + p.y, 0) / partners.length;
        this.positions.set(id, { x: clamp(cx + 45 * Math.cos(a), -WORLD, WORLD), y: clamp(cy + 45 * Math.sin(a), -WORLD, WORLD) });
      } else if (!this.positions.has(id)) {
        // Golden-angle spiral: evenly spread, deterministic, never on top of another.
        this.slot += 1;
        const k = this.slot + this.positions.size;
        const r = Math.min(WORLD * 0.9, 26 * Math.sqrt(k));
        this.positions.set(id, { x: r * Math.cos(k * 2.39996), y: r * Math.sin(k * 2.39996) });
      }
    }
    this.relax(ids, new Set([...fresh, ...young]), edges, 60);
  }

  /** Fruchterman-Reingold with gravity; only ``movable`` nodes move. */
  relax(ids, movable, edges, iterations) {
    const n = Math.max(ids.length, 1);
    const k = Math.min(150, (1.1 * WORLD) / Math.sqrt(n));
    // Gravity balances the summed repulsion (about n*k^2/r at radius r) near 0.7 WORLD.
    const gravity = (0.45 * n * k * k) / (0.7 * WORLD) ** 2;
    const pos = this.positions;
    const moving = ids.filter((id) => movable.has(id));
    let temperature = movable.size === ids.length ? WORLD * 0.2 : 40;
    for (let it = 0; it < iterations; it += 1) {
      const disp = new Map(moving.map((id) => [id, { x: 0, y: 0 }]));
      for (const a of moving) {
        const pa = pos.get(a);
        const d = disp.get(a);
        for (const b of ids) {
          if (a === b) continue;
          const pb = pos.get(b);
          let dx = pa.x - pb.x;
          let dy = pa.y - pb.y;
          let dist = Math.hypot(dx, dy);
          if (dist < 0.01) {
            dx = ((hash(a + b) % 100) - 50) / 50;
            dy = ((hash(b + a) % 100) - 50) / 50;
            dist = Math.hypot(dx, dy) || 1;
          }
          const f = (k * k) / dist;
          d.x += (dx / dist) * f;
          d.y += (dy / dist) * f;
        }
        // Gravity keeps unconnected agents from drifting to the border.
        d.x -= pa.x * gravity;
        d.y -= pa.y * gravity;
      }
      for (const e of edges) {
        const pa = pos.get(e.source);
        const pb = pos.get(e.target);
        if (!pa || !pb) continue;
        const dx = pa.x - pb.x;
        const dy = pa.y - pb.y;
        const dist = Math.max(Math.hypot(dx, dy), 0.01);
        const f = ((dist * dist) / k) * (0.4 + Number(e.weight || 0));
        if (disp.has(e.source)) {
          disp.get(e.source).x -= (dx / dist) * f;
          disp.get(e.source).y -= (dy / dist) * f;
        }
        if (disp.has(e.target)) {
          disp.get(e.target).x += (dx / dist) * f;
          disp.get(e.target).y += (dy / dist) * f;
        }
      }
      for (const id of moving) {
        const d = disp.get(id);
        const len = Math.hypot(d.x, d.y) || 1;
        const step = Math.min(len, temperature);
        const p = pos.get(id);
        p.x = clamp(p.x + (d.x / len) * step, -WORLD, WORLD);
        p.y = clamp(p.y + (d.y / len) * step, -WORLD, WORLD);
      }
      temperature = Math.max(1, temperature * 0.96);
    }
  }

  // -------------------------------------------------------------- data -> picture

  update() {
    const ids = new Set();
    for (const n of state.graph.nodes || []) if (n && n.id != null) ids.add(String(n.id));
    for (const id of state.agents.keys()) ids.add(id);
    for (const v of state.verdicts.values()) {
      for (const id of v.agents_involved || []) ids.add(id);
      if (v.target) ids.add(v.target);
    }
    this.ids = [...ids].sort();
    this.edges = (state.graph.edges || [])
      .filter((e) => e && ids.has(String(e.source)) && ids.has(String(e.target)))
      .map((e) => ({ source: String(e.source), target: String(e.target), weight: Number(e.weight) || 0 }));
    // Agents named together in a verdict attract each other in the layout too, so
    // they land side by side even before the alliance graph lists their link.
    const affinity = [];
    for (const v of state.verdicts.values()) {
      const group = [...new Set([...(v.agents_involved || []), v.target].filter(Boolean))];
      for (let i = 1; i < group.length; i += 1) affinity.push({ source: group[0], target: group[i], weight: 0.2 });
    }
    this.layout(this.ids, [...this.edges, ...affinity]);
    this.render();
  }

  pxPerUnit() {
    const w = this.container.clientWidth || 600;
    const hgt = this.container.clientHeight || 400;
    return Math.min(w / this.view.w, hgt / this.view.h) || 1;
  }

  render() {
    const u = 1 / this.pxPerUnit(); // world units per screen pixel
    const t = threats();
    const communityOf = new Map();
    (state.graph.communities || []).forEach((members, i) => {
      if (Array.isArray(members) && members.length > 1) for (const id of members) communityOf.set(String(id), i);
    });
    const collusion = [...state.verdicts.values()].filter((v) => v.category === "COLLUSION" && (v.agents_involved || []).length);
    const colluders = new Set(collusion.flatMap((v) => v.agents_involved));
    // Labels: all of them on small fleets; on big ones only where the eye should go
    // (selected, hovered, and threatened agents while there are few of them).
    const showAllLabels = this.ids.length <= 60;
    const threatLabels = [...t.keys()].filter((id) => this.positions.has(id)).length <= 24;

    this.empty.hidden = this.ids.length > 0;
    $("#graph-summary").textContent = this.ids.length
      ? `${this.ids.length} agents · ${this.edges.length} alliance links · ${(state.graph.communities || []).filter((c) => c.length > 1).length} groups`
      : "";

    // Hulls: alliance communities (soft), collusion groups (red, dashed).
    clear(this.hullLayer);
    (state.graph.communities || []).forEach((members, i) => {
      const pts = (members || []).map((id) => this.positions.get(String(id))).filter(Boolean);
      if (pts.length < 2) return;
      const color = COMMUNITY_COLORS[i % COMMUNITY_COLORS.length];
      this.hullLayer.append(this.hull(pts, 18 * u, { class: "hull community", fill: color, stroke: color }));
    });
    for (const v of collusion) {
      const pts = v.agents_involved.map((id) => this.positions.get(id)).filter(Boolean);
      if (!pts.length) continue;
      const hull = this.hull(pts, 24 * u, { class: "hull collusion" });
      hull.append(s("title", null, `Collusion: ${v.agents_involved.join(", ")}${v.target ? ` against ${v.target}` : ""}`));
      this.hullLayer.append(hull);
      const target = v.target && this.positions.get(v.target);
      if (target) {
        const cx = pts.reduce((a, p) => a + p.x, 0) / pts.length;
        const cy = pts.reduce((a, p) => a + p.y, 0) / pts.length;
        this.hullLayer.append(s("line", { class: "collusion-link", x1: cx, y1: cy, x2: target.x, y2: target.y, "stroke-width": 2 * u, "stroke-dasharray": `${6 * u} ${4 * u}` }));
      }
    }

    // Edges, keyed "a|b".
    const liveEdges = new Set();
    for (const e of this.edges) {
      const key = [e.source, e.target].sort().join("|");
      liveEdges.add(key);
      const a = this.positions.get(e.source);
      const b = this.positions.get(e.target);
      let line = this.edgeEls.get(key);
      if (!line) {
        line = s("line", { class: "edge" }, s("title"));
        this.edgeLayer.append(line);
        this.edgeEls.set(key, line);
      }
      const w = clamp(e.weight, 0, 1);
      line.setAttribute("x1", a.x);
      line.setAttribute("y1", a.y);
      line.setAttribute("x2", b.x);
      line.setAttribute("y2", b.y);
      line.setAttribute("stroke-width", String((1 + 5 * w) * u));
      line.setAttribute("stroke-opacity", String(0.3 + 0.6 * w));
      line.classList.toggle("edge-collusion", colluders.has(e.source) && colluders.has(e.target));
      line.firstChild.textContent = `${e.source} ↔ ${e.target}: alliance strength ${w.toFixed(2)}`;
    }
    for (const [key, el] of this.edgeEls) {
      if (!liveEdges.has(key)) {
        el.remove();
        this.edgeEls.delete(key);
      }
    }

    // Nodes, keyed by agent id.
    const live = new Set(this.ids);
    for (const [id, el] of this.nodeEls) {
      if (!live.has(id)) {
        el.remove();
        this.nodeEls.delete(id);
      }
    }
    for (const id of this.ids) {
      const p = this.positions.get(id);
      let g = this.nodeEls.get(id);
      if (!g) {
        g = s(
          "g",
          { class: "node", "data-agent-id": id },
          s("circle", { class: "select-ring" }),
          s("circle", { class: "threat-ring" }),
          s("circle", { class: "dot" }),
          s("text", { class: "node-label", "text-anchor": "middle" }),
          s("title"),
        );
        g.addEventListener("click", (ev) => {
          ev.stopPropagation();
          this.toggle(id);
        });
        g.addEventListener("mouseenter", () => {
          this.hover = id;
          this.info(id);
          g.querySelector(".node-label").setAttribute("display", "inline");
        });
        g.addEventListener("mouseleave", () => {
          this.hover = null;
          this.info(this.focusId);
          g.querySelector(".node-label").setAttribute("display", g.dataset.label === "1" ? "inline" : "none");
        });
        this.nodeLayer.append(g);
        this.nodeEls.set(id, g);
      }
      const agent = state.agents.get(id);
      const status = agent ? agent.status || "ACTIVE" : "UNREGISTERED";
      const threat = t.get(id);
      const selected = state.selected.has(id);
      const [sel, ring, dot, label, title] = g.children;
      g.setAttribute("transform", `translate(${p.x.toFixed(1)} ${p.y.toFixed(1)})`);
      g.setAttribute("class", `node st-${status}${selected ? " selected" : ""}${threat ? " threat" : ""}`);
      dot.setAttribute("r", String(6.5 * u));
      sel.setAttribute("r", String(14 * u));
      sel.setAttribute("stroke-width", String(2.5 * u));
      if (threat) {
        ring.setAttribute("r", String(10 * u));
        ring.setAttribute("stroke", SEV_COLOR[threat.severity] || "#F59E0B");
        ring.setAttribute("stroke-width", String(Math.min(2 + threat.count, 5) * u));
        ring.removeAttribute("display");
      } else ring.setAttribute("display", "none");
      const name = agent?.name && agent.name !== id ? agent.name : id;
      label.textContent = name.length > 16 ? `${name.slice(0, 15)}…` : name;
      label.setAttribute("y", String(24 * u));
      label.setAttribute("font-size", String(11 * u));
      label.setAttribute("stroke-width", String(3 * u));
      const labelled = showAllLabels || selected || Boolean(threat && (threatLabels || threat.severity === "CRITICAL"));
      g.dataset.label = labelled ? "1" : "0";
      label.setAttribute("display", labelled || this.hover === id ? "inline" : "none");
      title.textContent = `${agentLabel(id)} — ${status}${threat ? `, ${threat.count} active verdict(s), worst ${threat.severity}` : ""}${communityOf.has(id) ? `, alliance group ${communityOf.get(id) + 1}` : ""}`;
    }
    // Threatened and selected nodes on top (moved only when that changes, so a node
    // under the pointer is not re-inserted mid-click).
    for (const id of this.ids) {
      const g = this.nodeEls.get(id);
      const layer = t.has(id) || state.selected.has(id) ? this.topLayer : this.nodeLayer;
      if (g.parentNode !== layer) layer.append(g);
    }
    if (!this.hover) this.info(this.focusId);
  }

  /** A rounded hull: the convex hull of the members, stroked wide with round
   * joins, so two members make a capsule and a clique a tight blob (no huge circle
   * when members are far apart). */
  hull(points, pad, attrs) {
    const pts = [...points].sort((a, b) => a.x - b.x || a.y - b.y);
    const cross = (o, a, b) => (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
    const lower = [];
    for (const p of pts) {
      while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], p) <= 0) lower.pop();
      lower.push(p);
    }
    const upper = [];
    for (const p of [...pts].reverse()) {
      while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], p) <= 0) upper.pop();
      upper.push(p);
    }
    const ring = lower.slice(0, -1).concat(upper.slice(0, -1));
    const shape = ring.length ? ring : pts.slice(0, 1);
    const { "stroke-width": _ignored, ...rest } = attrs;
    return s("polygon", {
      ...rest,
      points: shape.map((p) => `${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" "),
      "stroke-width": 2 * pad,
      "stroke-linejoin": "round",
      "stroke-linecap": "round",
    });
  }

  toggle(id) {
    if (state.selected.has(id)) state.selected.delete(id);
    else state.selected.add(id);
    this.focusId = id;
    emit("selection");
  }

  info(id) {
    const box = $("#graph-info");
    if (!id) {
      replaceChildren(box, h("span", { class: "muted" }, "Hover an agent for details; click to select it as a command target."));
      return;
    }
    const agent = state.agents.get(id);
    const threat = threats().get(id);
    const partners = this.edges
      .filter((e) => e.source === id || e.target === id)
      .sort((a, b) => b.weight - a.weight)
      .slice(0, 3)
      .map((e) => `${e.source === id ? e.target : e.source} (${pct(e.weight)})`);
    replaceChildren(
      box,
      h("b", { class: "info-id" }, agentLabel(id)),
      h("span", { class: `status-tag st-${agent ? agent.status : "UNREGISTERED"}` }, agent ? agent.status : "not registered"),
      agent?.runtime?.kind ? h("span", { class: "muted" }, `runtime ${agent.runtime.kind}`) : null,
      threat
        ? h("span", { class: ["sev-text", `sev-${threat.severity}`] }, `${threat.count} active verdict${threat.count > 1 ? "s" : ""} (worst ${threat.severity})`)
        : h("span", { class: "muted" }, "no active verdict"),
      partners.length ? h("span", { class: "muted" }, `allies: ${partners.join(", ")}`) : null,
      h("button", { type: "button", class: "btn btn-ghost btn-small", onclick: () => emit("filter-agent", id) }, "Its verdicts"),
    );
  }

  // -------------------------------------------------------------- pan & zoom

  applyView() {
    const v = this.view;
    this.svg.setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
  }

  resetView() {
    this.view = { x: -WORLD - 20, y: -WORLD - 20, w: 2 * WORLD + 40, h: 2 * WORLD + 40 };
    this.applyView();
    this.render();
  }

  toWorld(ev) {
    const rect = this.svg.getBoundingClientRect();
    const ppu = this.pxPerUnit();
    const offX = (rect.width - this.view.w * ppu) / 2;
    const offY = (rect.height - this.view.h * ppu) / 2;
    return { x: this.view.x + (ev.clientX - rect.left - offX) / ppu, y: this.view.y + (ev.clientY - rect.top - offY) / ppu };
  }

  bindPanZoom() {
    this.svg.addEventListener(
      "wheel",
      (ev) => {
        ev.preventDefault();
        const factor = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
        const w = clamp(this.view.w * factor, 120, 4 * WORLD);
        const ratio = w / this.view.w;
        const at = this.toWorld(ev);
        this.view = { x: at.x - (at.x - this.view.x) * ratio, y: at.y - (at.y - this.view.y) * ratio, w, h: this.view.h * ratio };
        this.applyView();
        this.render();
      },
      { passive: false },
    );
    let drag = null;
    this.svg.addEventListener("pointerdown", (ev) => {
      if (ev.target.closest(".node")) return;
      drag = { x: ev.clientX, y: ev.clientY, view: { ...this.view }, moved: false };
      this.svg.setPointerCapture(ev.pointerId);
    });
    this.svg.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      const ppu = this.pxPerUnit();
      const dx = (ev.clientX - drag.x) / ppu;
      const dy = (ev.clientY - drag.y) / ppu;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      this.view = { ...drag.view, x: drag.view.x - dx, y: drag.view.y - dy };
      this.applyView();
    });
    const end = () => {
      drag = null;
    };
    this.svg.addEventListener("pointerup", end);
    this.svg.addEventListener("pointercancel", end);
  }
}

export { SEV_COLOR };
export const severityRank = SEVERITY_RANK;
