// "Alice @alice is typing…": who is typing in which chat, from the live stream's `typing` events,
// and this user's own typing announced to the chat over the WebSocket.

const SHOWN_MS = 5000; // a typing event shows its author this long unless another one follows
const ANNOUNCE_EVERY_MS = 3000; // at most one typing frame per chat this often
const NAMED = 3; // beyond this many typists the line counts the others

export class TypingIndicator {
  constructor(node, me) {
    this.node = node;
    this.me = me;
    this.chats = new Map(); // chat id -> Map(username -> {displayName, timer})
    this.current = null;
  }

  // A `typing` event: {chat_id, user_id, username, display_name}.
  heard(data) {
    if (data.username === this.me.username) return; // never one's own
    let typists = this.chats.get(data.chat_id);
    if (!typists) this.chats.set(data.chat_id, (typists = new Map()));
    const known = typists.get(data.username);
    if (known) clearTimeout(known.timer);
    const timer = setTimeout(() => this.stopped(data.chat_id, data.username), SHOWN_MS);
    typists.set(data.username, { displayName: data.display_name || data.username, timer });
    if (data.chat_id === this.current) this.render();
  }

  // The user stopped typing: their message arrived, or nothing was heard for a while.
  stopped(chatId, username) {
    const typists = this.chats.get(chatId);
    const known = typists?.get(username);
    if (!known) return;
    clearTimeout(known.timer);
    typists.delete(username);
    if (!typists.size) this.chats.delete(chatId);
    if (chatId === this.current) this.render();
  }

  show(chatId) {
    this.current = chatId;
    this.render();
  }

  render() {
    const typists = [...(this.chats.get(this.current)?.entries() ?? [])];
    this.node.replaceChildren();
    this.node.hidden = typists.length === 0;
    if (!typists.length) return;
    const named = typists.slice(0, typists.length > NAMED ? NAMED - 1 : NAMED);
    named.forEach(([username, { displayName }], index) => {
      if (index > 0) this.node.append(index === typists.length - 1 ? " and " : ", ");
      const who = document.createElement("span");
      who.className = "typist";
      who.dataset.username = username;
      const name = document.createElement("strong");
      name.textContent = displayName;
      const handle = document.createElement("span");
      handle.className = "handle";
      handle.textContent = `@${username}`;
      who.append(name, " ", handle);
      this.node.append(who);
    });
    const others = typists.length - named.length;
    if (others) this.node.append(` and ${others} others`);
    this.node.append(typists.length === 1 ? " is typing…" : " are typing…");
  }
}

// Announces this user's typing, at most once every ANNOUNCE_EVERY_MS per chat.
export class TypingAnnouncer {
  constructor(send) {
    this.send = send; // (chatId) => whether it could be said (a WebSocket is open)
    this.last = new Map(); // chat id -> time of the last announcement
  }

  typed(chatId) {
    const now = Date.now();
    if (now - (this.last.get(chatId) ?? -Infinity) < ANNOUNCE_EVERY_MS) return;
    if (this.send(chatId)) this.last.set(chatId, now);
  }

  // The message went: typing again right away is news again.
  sent(chatId) {
    this.last.delete(chatId);
  }
}
