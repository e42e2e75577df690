// Building DOM without ever parsing a string as HTML.
//
// Everything that comes from the server (agent ids, titles, message content) can be
// hostile. It only ever reaches the page through text nodes, `textContent` or
// attribute values set with `setAttribute`; no innerHTML, no insertAdjacentHTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (name === "text") el.textContent = String(value);
    else if (name === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "value" && "value" in el) el.value = value;
    else if (name === "checked" || name === "disabled" || name === "selected") el[name] = Boolean(value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

/** `h("button", {class: "x", onclick}, "text", child)` -> an HTML element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replaceChildren(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// ------------------------------------------------------------------ formatting

export function parseTime(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

/** "4 s", "12 min", "3 h", "2 d" (ages are approximate on purpose). */
export function age(iso, now = Date.now()) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const sec = Math.max(0, Math.round((now - t) / 1000));
  if (sec < 60) return `${sec} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min`;
  if (sec < 86400) return `${Math.floor(sec / 3600)} h`;
  return `${Math.floor(sec / 86400)} d`;
}

export function clock(iso) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function dateTime(iso) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function pct(x) {
  const n = Number(x);
  return Number.isFinite(n) ? `${Math.round(n * 100)}%` : "—";
}

/** Compact one-line rendering of a JSON-ish value, for audit details and verifications. */
export function compact(value, max = 240) {
  if (value === null || value === undefined) return "";
  let text;
  if (typeof value === "object") {
    text = Object.entries(value)
      .map(([k, v]) => `${k}=${typeof v === "object" && v !== null ? JSON.stringify(v) : v}`)
      .join("  ");
  } else text = String(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export function shortId(id, n = 10) {
  const text = String(id ?? "");
  return text.length > n + 1 ? `${text.slice(0, n)}…` : text;
}

// ------------------------------------------------------------------ announcements

let lastAnnouncement = "";

/** Speak through the ARIA live regions (assertive for CRITICAL verdicts). */
export function announce(message, urgent = false) {
  const region = document.getElementById(urgent ? "announcer-urgent" : "announcer");
  if (!region) return;
  // Re-announcing the same text needs the node to change.
  const text = message === lastAnnouncement ? `${message} ` : message;
  lastAnnouncement = text;
  region.textContent = text;
}
