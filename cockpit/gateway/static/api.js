// The HTTP side of the wire contract (DESIGN.md section 10).
//
// The API key lives in sessionStorage only: it dies with the tab and is never
// written to localStorage or a cookie.

const KEY_SLOT = "cockpit.apiKey";

export const session = {
  get key() {
    try {
      return sessionStorage.getItem(KEY_SLOT);
    } catch {
      return null;
    }
  },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_SLOT, value);
    else sessionStorage.removeItem(KEY_SLOT);
  },
};

/** An HTTP refusal or a network failure (status 0), with Litestar's error body. */
export class ApiError extends Error {
  constructor(status, detail, { body = null, headers = null } = {}) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.body = body;
    this.headers = headers;
  }

  get retryAfter() {
    const raw = this.headers?.get("Retry-After") ?? this.body?.extra?.retry_after_seconds;
    const n = Number(raw);
    return Number.isFinite(n) && n > 0 ? n : null;
  }

  /** The server wants a TOTP code (401 + ``WWW-Authenticate: TOTP ...``). */
  get wantsTotp() {
    return this.status === 401 && /^\s*TOTP\b/i.test(this.headers?.get("WWW-Authenticate") || "");
  }
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === null || v === undefined || v === "") continue;
    q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

/** ``api("GET", "/verdicts", {query: {status: "ACTIVE"}})`` -> parsed JSON, or throws ApiError. */
export async function api(method, path, { body, query: params, headers = {}, key = session.key, timeoutMs = 15000 } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(path + query(params), {
      method,
      headers: {
        Accept: "application/json",
        ...(key ? { "X-API-Key": key } : {}),
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal: controller.signal,
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, err?.name === "AbortError" ? "the server did not answer in time" : "the server is unreachable");
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  const text = await response.text().catch(() => "");
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const detail = typeof data?.detail === "string" ? data.detail : `HTTP ${response.status}`;
    throw new ApiError(response.status, detail, { body: data, headers: response.headers });
  }
  return data;
}

/**
 * Which role does this key carry? There is no ``GET /me`` yet, so probe:
 *  1. ``GET /verdicts?limit=1`` — 401 means the key is not valid, 403 that it is not a
 *     reader (an AGENT token);
 *  2. ``POST /commands`` with an empty body — guards run before validation, so a VIEWER
 *     gets 403 and an operator 400/422. Nothing is created either way.
 * Returns "VIEWER" or "OPERATOR" (SOVEREIGN_OPERATOR and CHIEF_ARCHITECT look alike).
 */
export async function probeRole(key) {
  try {
    await api("GET", "/verdicts", { query: { limit: 1 }, key });
  } catch (err) {
    if (err.status === 401) throw new ApiError(401, "This API key is not valid (or was revoked).");
    if (err.status === 403) throw new ApiError(403, "This key cannot read the dashboard (agent tokens are not accepted).");
    throw err;
  }
  try {
    await api("POST", "/commands", { body: {}, key });
  } catch (err) {
    if (err.status === 403) return "VIEWER";
    if (err.status === 400 || err.status === 422) return "OPERATOR";
    throw err;
  }
  // A 2xx for an empty body would be a server bug; treat the caller as read-only.
  return "VIEWER";
}

/** A command id the server accepts (``^[A-Za-z0-9_.:-]+$``), made here so that a
 * confirmation racing the 202 can still be matched. */
export function newCommandId() {
  if (globalThis.crypto?.randomUUID) return `ui-${crypto.randomUUID().replaceAll("-", "")}`;
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `ui-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}
