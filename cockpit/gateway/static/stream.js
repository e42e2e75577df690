// ``WS /ws``: the live stream, with reconnect, back-off and resume from the last seq.
//
// The server numbers every event (``seq`` grows by one across the whole stream and
// survives restarts). Every reconnect resumes from the last seq seen, and the server
// replays what the client missed before the live events, so a disconnect loses
// nothing. The resume point travels in the handshake (``/ws?since_seq=n``), applied
// by the server before it sends anything; ``{"type": "subscribe", "since_seq": n}``
// after the socket opens is equivalent but costs a message and a second replay pass.

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
const HEARTBEAT_MS = 15000;
const SILENCE_MS = 45000;

export class Stream {
  /**
   * @param {object} o
   * @param {() => string} o.key       the API key (read at each connect)
   * @param {(env: object) => void} o.onEvent   a new ``{type, seq, ts, data}``
   * @param {(state: object) => void} o.onState ``{state, attempt, retryInMs, everConnected}``
   * @param {(resumed: boolean) => void} o.onOpen after each (re)connection, once the server's hello arrives
   * @param {() => Promise<boolean>} o.onFailure after an attempt that never got a hello; false stops retrying
   */
  constructor({ key, onEvent, onState, onOpen, onFailure }) {
    this.key = key;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onOpen = onOpen;
    this.onFailure = onFailure;
    this.lastSeq = 0;
    this.attempt = 0;
    this.everConnected = false;
    this.socket = null;
    this.stopped = false;
    this.retryTimer = null;
    this.heartbeat = null;
    this.lastHeard = 0;
    this.state = "idle";
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const params = new URLSearchParams({ api_key: this.key() || "" });
    if (this.lastSeq > 0) params.set("since_seq", String(this.lastSeq));
    return `${scheme}://${location.host}/ws?${params}`;
  }

  setState(state, extra = {}) {
    this.state = state;
    this.onState?.({ state, attempt: this.attempt, everConnected: this.everConnected, lastSeq: this.lastSeq, ...extra });
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.heartbeat);
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000, "signed out");
      this.socket = null;
    }
    this.setState("idle");
  }

  /** Skip the back-off wait ("Retry now"). */
  retryNow() {
    if (this.stopped || this.state === "live" || this.state === "connecting") return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.setState("connecting");
    // The server accepts the socket before it can serve it (a database down fails it
    // right after): the stream works once its ``hello`` arrives, not at ``open``.
    let established = false;
    const resumed = this.lastSeq > 0; // the handshake carries since_seq
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.lastHeard = Date.now();
      clearInterval(this.heartbeat);
      this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
    };
    socket.onmessage = (message) => {
      this.lastHeard = Date.now();
      let env;
      try {
        env = JSON.parse(message.data);
      } catch {
        return;
      }
      if (!env || typeof env !== "object") return;
      if (env.type === "hello") {
        // The stream's position at connect: resume from here even if no event comes.
        const at = Number(env.seq);
        if (this.lastSeq === 0 && Number.isFinite(at)) this.lastSeq = at;
        if (!established) {
          established = true;
          this.established(resumed);
        }
        return;
      }
      if (env.type === "ping" || env.type === "pong" || env.type === "subscribed") return;
      if (env.type === "error") {
        console.warn("stream error", env.detail);
        return;
      }
      const seq = Number(env.seq);
      if (Number.isFinite(seq)) {
        if (seq <= this.lastSeq) return; // a replay overlapping what we already have
        this.lastSeq = seq;
      }
      this.onEvent?.(env);
    };
    socket.onclose = () => {
      clearInterval(this.heartbeat);
      if (this.socket === socket) this.socket = null;
      if (this.stopped) return;
      this.scheduleRetry(!established);
    };
    socket.onerror = () => {
      /* onclose follows and handles the retry */
    };
  }

  /** The server said hello: the stream is live, and the back-off starts over. */
  established(resumed) {
    this.attempt = 0;
    this.everConnected = true;
    this.setState("live", { resumed });
    this.onOpen?.(resumed);
  }

  beat() {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastHeard > SILENCE_MS) {
      socket.close(4000, "silent"); // half-open connection: start over
      return;
    }
    try {
      socket.send(JSON.stringify({ type: "ping" }));
    } catch {
      /* closing */
    }
  }

  async scheduleRetry(failedToOpen = false) {
    if (this.stopped) return;
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const jittered = Math.round(delay * (0.85 + Math.random() * 0.3));
    this.attempt += 1;
    this.setState("reconnecting", { retryInMs: jittered, retryAt: Date.now() + jittered });
    if (failedToOpen && this.onFailure) {
      const keepGoing = await this.onFailure();
      if (!keepGoing || this.stopped || this.socket) return; // this.socket: "Retry now" meanwhile
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), jittered);
  }
}
