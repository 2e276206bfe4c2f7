// Live updates over the best transport the browser and the server allow: a WebSocket (/v1/ws),
// else Server-Sent Events (/v1/events), else polling every second. The page never needs reloading.
//
// Both streams resume from the last event id seen (?after=), so a reconnect loses and repeats
// nothing. A browser tells a page nothing about why a stream was refused (a WebSocket handshake
// answered 401 or 429 looks like a network error), so after a refusal one plain request to
// /v1/events?wait=0 asks the server: 401 → sign in again; 429 (too many open streams) → poll and
// try again later; answered, yet the WebSocket failed → something on the way blocks WebSockets,
// use SSE; no answer → the server is down: reconnect with backoff.

import { ApiError, api, savedToken } from "./api.js";

const POLL_MS = 1000; // without a stream: history, chats and delivery panels
const SAFETY_POLL_MS = 5000; // with a stream: chats and delivery panels, in case an event was missed
const RETRY_LATER_MS = 15000; // after the server refused a stream: try again this late (± jitter)
const BACKOFF_FIRST_MS = 500; // reconnecting after a stream dropped: 0.5 s, 1 s, 2 s … (± jitter)
const BACKOFF_MAX_MS = 15000;
const STABLE_MS = 10000; // a stream that stayed open this long starts the backoff afresh
const WS_REFUSALS_BEFORE_SSE = 3; // a WebSocket that worked before gets this many more tries
const SHORT_LIVED_BEFORE_ASKING = 2; // streams ending before STABLE_MS, in a row, before a probe

// Event kinds, and the handler each goes to (a missing handler ignores the kind).
const HANDLERS = {
  message: "onMessage",
  message_edited: "onEdited",
  message_deleted: "onDeleted",
  read: "onRead",
  delivery: "onDelivery",
  typing: "onTyping",
  presence: "onPresence",
  member_added: "onMembers",
  member_removed: "onMembers",
};

// A delay around `ms`: between half of it and all of it, so that clients dropped together (a
// server restart) do not all come back in the same instant.
function jittered(ms) {
  return Math.round(ms / 2 + (Math.random() * ms) / 2);
}

export class Live {
  constructor(handlers) {
    this.handlers = handlers;
    this.mode = "connecting";
    this.transport = null; // "websocket" | "sse" | "polling": in use, or being tried
    this.lastId = null; // the highest event id seen: where a new stream resumes
    this.socket = null;
    this.source = null;
    this.pollTimer = null;
    this.retryTimer = null;
    this.stopped = false;
    this.wsUsable = Boolean(window.WebSocket);
    this.wsWorked = false; // a WebSocket opened on this page once: refusals are likely passing
    this.wsRefusals = 0; // WebSocket failures in a row while plain requests got through
    this.attempt = 0; // reconnections since the last stable stream
    this.openedAt = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
    this.tick();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.pollTimer);
    clearTimeout(this.retryTimer);
    this.closeStreams();
  }

  // Tell the chat's members that this user is typing; false when no WebSocket is open to say it.
  sendTyping(chatId) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify({ type: "typing", chat_id: chatId }));
    return true;
  }

  setMode(mode, text) {
    this.mode = mode;
    this.handlers.onMode(mode, text, this.transport);
  }

  async tick() {
    if (this.stopped) return;
    const streaming = this.mode === "live";
    try {
      await this.handlers.poll({ messages: !streaming });
    } catch (err) {
      // A failed poll is retried on the next tick; the status line says we are polling.
    }
    if (!this.stopped) this.pollTimer = setTimeout(() => this.tick(), streaming ? SAFETY_POLL_MS : POLL_MS);
  }

  // --- choosing and opening a stream ----------------------------------------------------------

  connect() {
    clearTimeout(this.retryTimer);
    this.closeStreams();
    if (this.stopped) return;
    if (!savedToken()) {
      this.fallBackToPolling("polling every second");
      return;
    }
    if (this.wsUsable) this.openWebSocket();
    else if (window.EventSource) this.openEventSource();
    else this.fallBackToPolling("polling every second");
  }

  closeStreams() {
    const { socket, source } = this;
    this.socket = null;
    this.source = null;
    if (socket) socket.close();
    if (source) source.close();
  }

  // Query string of a stream: the token (browsers cannot add an Authorization header to a
  // WebSocket or an EventSource) and the resume point.
  query() {
    let query = `access_token=${encodeURIComponent(savedToken())}`;
    if (this.lastId !== null) query += `&after=${this.lastId}`;
    return query;
  }

  openWebSocket() {
    this.transport = "websocket";
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/v1/ws?${this.query()}`);
    } catch (err) {
      this.wsUsable = false; // refused by the page itself (e.g. its Content-Security-Policy)
      this.connect();
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.wsWorked = true;
      this.opened();
    };
    socket.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        console.warn("chinwag: bad frame", err);
        return;
      }
      if (frame.kind === "error") {
        console.warn("chinwag: the server refused a frame:", frame.data);
        return;
      }
      this.receive(frame.id, frame.kind, frame.data);
    };
    // An error is always followed by a close, which says everything needed.
    socket.onclose = () => {
      if (this.socket !== socket) return; // closed on purpose
      this.socket = null;
      if (opened) this.dropped();
      else this.refused();
    };
  }

  openEventSource() {
    this.transport = "sse";
    const source = new EventSource(`/v1/events?${this.query()}`);
    this.source = source;
    let opened = false;
    for (const kind of Object.keys(HANDLERS)) {
      source.addEventListener(kind, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch (err) {
          console.warn("chinwag: bad event", err);
          return;
        }
        // Ephemeral events (typing) carry no id line; lastEventId then repeats the previous one.
        this.receive(event.lastEventId ? Number(event.lastEventId) : null, kind, data);
      });
    }
    source.onopen = () => {
      opened = true;
      this.opened();
    };
    source.onerror = () => {
      if (this.source !== source) return;
      // EventSource would retry by itself, at a fixed pace and from its own idea of the cursor;
      // close it and reconnect like the WebSocket instead.
      source.close();
      this.source = null;
      if (opened) this.dropped();
      else this.refused();
    };
  }

  receive(id, kind, data) {
    if (id !== null && id !== undefined && (this.lastId === null || id > this.lastId)) this.lastId = id;
    const handler = this.handlers[HANDLERS[kind]];
    if (!handler) return;
    try {
      handler(data);
    } catch (err) {
      console.warn(`chinwag: handling a ${kind} event failed`, err);
    }
  }

  // --- what happened to the stream ------------------------------------------------------------

  opened() {
    const wasLive = this.mode === "live";
    this.openedAt = Date.now();
    this.setMode("live", "live");
    // Catch up with anything that happened before the first stream opened (later ones resume).
    if (!wasLive) this.handlers.poll({ messages: true }).catch(() => {});
  }

  // An open stream ended (server restart, network change, a slow reader dropped): come back soon.
  // Streams that keep ending soon after they open are treated like refusals: the server (or
  // something on the way) is asked why before the next try.
  dropped() {
    if (this.stopped) return;
    if (Date.now() - this.openedAt >= STABLE_MS) this.attempt = this.wsRefusals = 0;
    if (this.attempt >= SHORT_LIVED_BEFORE_ASKING) this.refused();
    else this.reconnectSoon();
  }

  reconnectSoon() {
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    this.attempt += 1;
    this.setMode("reconnecting", "reconnecting… (polling meanwhile)");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), jittered(delay));
  }

  // Poll every second, and try a stream again later.
  fallBackToPolling(text, retryMs) {
    this.transport = "polling";
    this.setMode("polling", text);
    clearTimeout(this.retryTimer);
    if (retryMs) this.retryTimer = setTimeout(() => this.connect(), jittered(retryMs));
  }

  // A stream could not be opened: ask the server why, with a request whose status we can read.
  async refused() {
    const transport = this.transport;
    let status;
    try {
      await api.get("/v1/events?wait=0");
      status = 200;
    } catch (err) {
      status = err instanceof ApiError ? err.status : 0;
    }
    if (this.stopped || this.socket || this.source) return;
    if (status === 401) {
      this.stop();
      this.setMode("signed-out", "signed out");
      this.handlers.onUnauthorized();
    } else if (status === 429) {
      this.fallBackToPolling("too many live connections: polling every second", RETRY_LATER_MS);
    } else if (status === 0 || status >= 500) {
      this.reconnectSoon(); // the server is down or restarting
    } else if (transport === "websocket" && status === 200) {
      // The server answers but the WebSocket does not get through (a proxy, an older server).
      this.wsRefusals += 1;
      if (!this.wsWorked || this.wsRefusals >= WS_REFUSALS_BEFORE_SSE) {
        this.wsUsable = false;
        this.connect();
      } else {
        this.reconnectSoon();
      }
    } else {
      // No stream here (404 on servers without the gateway), or SSE refused too.
      this.fallBackToPolling("polling every second", RETRY_LATER_MS);
    }
  }
}
