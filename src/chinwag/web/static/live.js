// Live updates: the Server-Sent Events stream when the server has one, polling every second when
// it has not (404) or while it is down. Either way the page never needs reloading.

import { savedToken } from "./api.js";

const POLL_MS = 1000; // without the stream: history, chats and delivery panels
const SAFETY_POLL_MS = 5000; // with the stream: delivery panels only, in case an event was missed
const STREAM_RETRY_MS = 15000; // after the server refused the stream, try it again this late

export class Live {
  constructor(handlers) {
    this.handlers = handlers;
    this.mode = "connecting";
    this.source = null;
    this.pollTimer = null;
    this.retryTimer = null;
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.openStream();
    this.tick();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.pollTimer);
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
  }

  setMode(mode, text) {
    this.mode = mode;
    this.handlers.onMode(mode, text);
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

  openStream() {
    const token = savedToken();
    if (this.stopped || !token || !window.EventSource) {
      this.setMode("polling", "polling every second");
      return;
    }
    // EventSource cannot send an Authorization header; the stream accepts the token in the query.
    const source = new EventSource(`/v1/events?access_token=${encodeURIComponent(token)}`);
    this.source = source;
    const parse = (handler) => (event) => {
      try {
        handler(JSON.parse(event.data));
      } catch (err) {
        console.warn("chinwag: bad event", err);
      }
    };
    source.addEventListener("message", parse((d) => this.handlers.onMessage(d)));
    source.addEventListener("message_edited", parse((d) => this.handlers.onEdited(d)));
    source.addEventListener("message_deleted", parse((d) => this.handlers.onDeleted(d)));
    source.addEventListener("read", parse((d) => this.handlers.onRead(d)));
    source.addEventListener("delivery", parse((d) => this.handlers.onDelivery(d)));
    source.onopen = () => {
      const wasPolling = this.mode !== "live";
      this.setMode("live", "live");
      // Catch up with anything that happened before the stream opened.
      if (wasPolling) this.handlers.poll({ messages: true }).catch(() => {});
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (404 on servers without a stream, 401...): poll, and try again later.
        source.close();
        this.source = null;
        this.setMode("polling", "polling every second");
        this.retryTimer = setTimeout(() => this.openStream(), STREAM_RETRY_MS);
      } else {
        this.setMode("reconnecting", "reconnecting… (polling meanwhile)");
      }
    };
  }
}
