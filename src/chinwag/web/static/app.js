// The chinwag web client: sign in, chats with unread counts, history, sending, muting, devices,
// live updates, and a delivery panel on each message the user sent. No framework, no build step.

import { ApiError, api, savedToken, saveToken } from "./api.js";
import { DeliveryPanel } from "./deliveries.js";
import { Live } from "./live.js";
import {
  disableNotifications,
  enableNotifications,
  notificationState,
  onOpenChat,
  refreshNotifications,
} from "./push.js";
import { TypingAnnouncer, TypingIndicator } from "./typing.js";

const PAGE = 30;
const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  chats: new Map(), // id -> chat from GET /v1/chats (+ local unread when the server has none)
  current: null, // id of the open chat
  messages: new Map(), // id -> message of the open chat
  next: null, // cursor for scrolling back in the open chat
  panels: new Map(), // message id -> DeliveryPanel (own messages of the open chat)
  live: null,
  typing: null, // TypingIndicator: who else is typing, per chat
  announcer: null, // TypingAnnouncer: this user's typing, to the open chat
};

// --- small helpers ----------------------------------------------------------------------------

function showError(where, err) {
  $(where).textContent = err ? (err instanceof ApiError ? err.message : String(err)) : "";
}

function lastReadKey(chatId) {
  return `chinwag.read.${state.me.username}.${chatId}`;
}

function localLastRead(chatId) {
  return Number(localStorage.getItem(lastReadKey(chatId)) || 0);
}

function clientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function notifyLevel(chat) {
  if (chat.notify) return chat.notify;
  return chat.muted ? "none" : "all";
}

// --- signing in ---------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  try {
    const answer = await api.post("/v1/tokens", { username, password });
    saveToken(answer.token);
    await enter(answer.user);
  } catch (err) {
    showError("auth-error", err);
  }
}

async function signUp() {
  const form = $("auth-form");
  if (!form.reportValidity()) return;
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  const displayName = $("auth-display-name").value.trim();
  try {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    await api.post("/v1/users", body);
    const answer = await api.post("/v1/tokens", { username, password });
    saveToken(answer.token);
    await enter(answer.user);
  } catch (err) {
    showError("auth-error", err);
  }
}

async function signOut() {
  if (state.live) state.live.stop();
  try {
    await disableNotifications(); // this browser stops notifying the account it signed out of
  } catch (err) {
    // Sign-out never waits on the push service.
  }
  saveToken(null);
  location.reload();
}

async function enter(user) {
  state.me = user;
  showError("auth-error", null);
  $("auth").hidden = true;
  $("workspace").hidden = false;
  $("me-name").textContent = `${user.display_name} @${user.username}`;
  $("me-username").textContent = `@${user.username}`;
  $("admin-link").hidden = !user.is_admin;
  await loadChats();
  state.typing = new TypingIndicator($("typing"), user);
  state.live = new Live({
    onMessage: receiveMessage,
    onDelivery: (data) => state.panels.get(data.message_id)?.refresh(),
    onRead: (data) => {
      if (data.user === state.me.username) loadChats();
    },
    onEdited: (data) => replaceMessage(data),
    onDeleted: (data) => removeMessage(data.id ?? data.message_id),
    onTyping: (data) => state.typing.heard(data),
    onMembers: () => loadChats(),
    onUnauthorized: signOut, // the token was revoked or expired: sign in again
    poll: pollOnce,
    onMode: (mode, text, transport) => {
      const status = $("live-status");
      status.dataset.mode = mode;
      status.dataset.transport = transport || "";
      status.textContent = text;
      status.title = mode === "live" ? `live over ${transport === "sse" ? "Server-Sent Events" : "a WebSocket"}` : "";
    },
  });
  state.announcer = new TypingAnnouncer((chatId) => state.live.sendTyping(chatId));
  state.live.start();
  refreshNotifications().catch(() => {}).finally(showNotificationState);
  openChatInLocation();
}

// --- browser notifications (push.js, sw.js) -----------------------------------------------------

const NOTIFY_TEXT = {
  on: "Notifications on",
  off: "Enable notifications",
  denied: "Notifications blocked",
  unsupported: "No notifications here",
};

async function showNotificationState() {
  const button = $("toggle-notifications");
  let current = "unsupported";
  try {
    current = await notificationState();
  } catch (err) {
    current = "off";
  }
  button.dataset.state = current;
  button.textContent = NOTIFY_TEXT[current];
  button.disabled = current === "unsupported" || current === "denied";
  button.title = current === "on" ? "Click to stop this browser's notifications" : "";
}

async function toggleNotifications() {
  showError("chat-error", null);
  const button = $("toggle-notifications");
  button.disabled = true;
  try {
    if (button.dataset.state === "on") await disableNotifications();
    else await enableNotifications();
  } catch (err) {
    showError("chat-error", err);
  }
  await showNotificationState();
}

// A clicked notification opens /#chat=<id> (or, with the app open, asks the page to switch).
function openChatInLocation() {
  const wanted = /^#chat=(\d+)$/.exec(location.hash);
  if (wanted && state.me) openChat(Number(wanted[1]));
}

// --- chats ----------------------------------------------------------------------------------------

async function loadChats() {
  const { chats } = await api.get("/v1/chats");
  const seen = new Set();
  for (const chat of chats) {
    seen.add(chat.id);
    const known = state.chats.get(chat.id);
    if (chat.unread === undefined) chat.localUnread = known ? known.localUnread || 0 : 0;
    state.chats.set(chat.id, chat);
  }
  for (const id of [...state.chats.keys()]) if (!seen.has(id)) state.chats.delete(id);
  renderChatList();
}

function unreadOf(chat) {
  if (chat.id === state.current) return 0;
  return chat.unread ?? chat.localUnread ?? 0;
}

function renderChatList() {
  const list = $("chat-list");
  list.replaceChildren();
  let total = 0;
  for (const chat of state.chats.values()) {
    const unread = unreadOf(chat);
    total += unread;
    const item = document.createElement("li");
    item.dataset.chatId = String(chat.id);
    item.className = "chat" + (chat.id === state.current ? " current" : "");
    const button = document.createElement("button");
    button.type = "button";
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = chat.title;
    button.append(title);
    if (notifyLevel(chat) !== "all") {
      const bell = document.createElement("span");
      bell.className = "muted-mark";
      bell.title = notifyLevel(chat) === "none" ? "muted" : "mentions only";
      bell.textContent = notifyLevel(chat) === "none" ? "muted" : "@ only";
      button.append(bell);
    }
    if (unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(unread);
      button.append(badge);
    }
    button.addEventListener("click", () => openChat(chat.id));
    item.append(button);
    list.append(item);
  }
  document.title = total ? `(${total}) chinwag` : "chinwag";
}

async function createChat(event) {
  event.preventDefault();
  const title = $("new-chat-title").value.trim();
  const members = $("new-chat-members")
    .value.split(/[\s,]+/)
    .map((m) => m.replace(/^@/, ""))
    .filter(Boolean);
  try {
    const chat = await api.post("/v1/chats", { title, members });
    $("new-chat-form").reset();
    await loadChats();
    await openChat(chat.id);
  } catch (err) {
    showError("chat-error", err);
  }
}

async function openChat(chatId) {
  state.current = chatId;
  state.messages.clear();
  state.panels.clear();
  state.next = null;
  $("messages").replaceChildren();
  $("empty-chat").hidden = true;
  $("chat-header").hidden = false;
  $("composer").hidden = false;
  showError("chat-error", null);
  state.typing.show(chatId);
  renderChatList();
  try {
    const [chat, page] = await Promise.all([
      api.get(`/v1/chats/${chatId}`),
      api.get(`/v1/chats/${chatId}/messages?limit=${PAGE}`),
    ]);
    if (state.current !== chatId) return;
    renderHeader(chat);
    addMessages(page.messages, "end");
    state.next = page.next;
    $("load-earlier").hidden = page.next === null;
    scrollToBottom();
    markRead();
    $("composer-body").focus();
  } catch (err) {
    showError("chat-error", err);
  }
}

function renderHeader(chat) {
  const known = state.chats.get(chat.id);
  if (known) Object.assign(known, { title: chat.title, muted: chat.muted });
  $("chat-title").textContent = chat.title;
  const members = (chat.members || []).map(
    (m) => `${m.display_name} @${m.username}` + (m.username === state.me.username ? " (you)" : ""),
  );
  $("chat-members").textContent = members.join(", ");
  $("mute-toggle").checked = chat.muted;
}

async function toggleMute() {
  const muted = $("mute-toggle").checked;
  try {
    const chat = await api.put(`/v1/chats/${state.current}/settings`, { muted });
    const known = state.chats.get(chat.id);
    if (known) {
      known.muted = chat.muted;
      if (chat.notify) known.notify = chat.notify;
      else delete known.notify;
    }
    await loadChats();
  } catch (err) {
    $("mute-toggle").checked = !muted;
    showError("chat-error", err);
  }
}

async function addMember(event) {
  event.preventDefault();
  const username = $("add-member-name").value.trim().replace(/^@/, "");
  try {
    const chat = await api.post(`/v1/chats/${state.current}/members`, { username });
    $("add-member-form").reset();
    renderHeader(chat);
  } catch (err) {
    showError("chat-error", err);
  }
}

// --- messages -----------------------------------------------------------------------------------

// Display names are free text (anyone can be "Alice"); the @username beside one is unique.
function handleNode(username) {
  const handle = document.createElement("span");
  handle.className = "handle";
  handle.textContent = `@${username}`;
  return handle;
}

function messageNode(message) {
  const mine = message.sender === state.me.username;
  const item = document.createElement("li");
  item.className = "message" + (mine ? " mine" : "");
  item.dataset.messageId = String(message.id);
  item.dataset.sender = message.sender;
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("strong");
  who.textContent = mine ? "You" : message.sender_display_name;
  const when = document.createElement("time");
  when.dateTime = message.created_at;
  when.textContent = timeOf(message.created_at);
  if (mine) meta.append(who, " ", when);
  else meta.append(who, " ", handleNode(message.sender), " ", when);
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = message.body;
  item.append(meta, body);
  if (mine) {
    const panel = state.panels.get(message.id) || new DeliveryPanel(message.id, message.sender);
    state.panels.set(message.id, panel);
    item.append(panel.node);
    panel.refresh();
  }
  return item;
}

function addMessages(messages, where) {
  const list = $("messages");
  const fresh = messages.filter((m) => m.chat_id === state.current && !state.messages.has(m.id));
  if (!fresh.length) return [];
  for (const m of fresh) state.messages.set(m.id, m);
  if (where === "start") {
    list.prepend(...fresh.map(messageNode));
    return fresh;
  }
  // Keep the list in id order even when a live event and a poll race each other.
  for (const m of fresh) {
    const node = messageNode(m);
    const after = [...list.children].find((li) => Number(li.dataset.messageId) > m.id);
    list.insertBefore(node, after || null);
  }
  return fresh;
}

function replaceMessage(message) {
  if (!state.messages.has(message.id)) return;
  state.messages.set(message.id, message);
  const node = document.querySelector(`li.message[data-message-id="${message.id}"] .body`);
  if (node) node.textContent = message.body;
}

function removeMessage(id) {
  state.messages.delete(id);
  document.querySelector(`li.message[data-message-id="${id}"]`)?.remove();
}

function lastMessageId() {
  return Math.max(0, ...state.messages.keys());
}

function nearBottom() {
  const history = $("history");
  return history.scrollHeight - history.scrollTop - history.clientHeight < 80;
}

function scrollToBottom() {
  const history = $("history");
  history.scrollTop = history.scrollHeight;
}

async function loadEarlier() {
  if (state.next === null || state.current === null) return;
  const chatId = state.current;
  const history = $("history");
  const before = history.scrollHeight - history.scrollTop;
  const page = await api.get(`/v1/chats/${chatId}/messages?before=${state.next}&limit=${PAGE}`);
  if (state.current !== chatId) return;
  addMessages(page.messages, "start");
  state.next = page.next;
  $("load-earlier").hidden = page.next === null;
  history.scrollTop = history.scrollHeight - before; // the reader's place stays where it was
}

async function send(event) {
  event.preventDefault();
  const input = $("composer-body");
  const body = input.value.trim();
  if (!body || state.current === null) return;
  const chatId = state.current;
  input.value = "";
  state.announcer.sent(chatId);
  try {
    const answer = await api.post(`/v1/chats/${chatId}/messages`, { body, client_id: clientId() });
    if (state.current === chatId) {
      addMessages([answer.message], "end");
      scrollToBottom();
      markRead();
    }
  } catch (err) {
    input.value = body;
    showError("chat-error", err);
  }
}

async function markRead() {
  const chatId = state.current;
  const last = lastMessageId();
  if (chatId === null || !last) return;
  localStorage.setItem(lastReadKey(chatId), String(last));
  const chat = state.chats.get(chatId);
  if (chat) {
    if (chat.unread !== undefined) chat.unread = 0;
    chat.localUnread = 0;
  }
  try {
    await api.post(`/v1/chats/${chatId}/read`, { message_id: last });
  } catch (err) {
    // Servers without read markers keep the count in this browser only.
  }
}

// A message arrived (live event or poll): show it, count it, maybe pop a notification.
function receiveMessage(message) {
  state.typing.stopped(message.chat_id, message.sender);
  if (message.chat_id === state.current) {
    const stick = nearBottom();
    if (addMessages([message], "end").length && stick) scrollToBottom();
    if (document.visibilityState === "visible") markRead();
    return;
  }
  const chat = state.chats.get(message.chat_id);
  if (!chat) {
    loadChats(); // someone added us to a new chat
    return;
  }
  if (message.sender === state.me.username) return;
  if (message.id <= localLastRead(chat.id)) return;
  if (chat.unread !== undefined) chat.unread += 1;
  else chat.localUnread = (chat.localUnread || 0) + 1;
  localStorage.setItem(lastReadKey(chat.id) + ".seen", String(message.id));
  renderChatList();
  notify(chat, message);
}

function notify(chat, message) {
  const level = notifyLevel(chat);
  if (level === "none") return;
  if (level === "mentions" && !message.body.includes(`@${state.me.username}`)) return;
  const toast = document.createElement("div");
  toast.className = "toast";
  toast.dataset.chatId = String(chat.id);
  toast.dataset.messageId = String(message.id);
  const title = document.createElement("strong");
  title.textContent = chat.title;
  const text = document.createElement("span");
  text.textContent = `${message.sender_display_name} (@${message.sender}): ${message.body}`;
  toast.append(title, text);
  toast.addEventListener("click", () => {
    toast.remove();
    openChat(chat.id);
  });
  $("toasts").append(toast);
  setTimeout(() => toast.remove(), 8000);
}

// --- polling (when the live stream is unavailable) ----------------------------------------------

async function pollOnce({ messages }) {
  await loadChats(); // new chats and unread counts, even while the stream is live
  if (messages) {
    const chatId = state.current;
    if (chatId !== null) {
      const page = await api.get(`/v1/chats/${chatId}/messages?limit=50`);
      if (state.current === chatId) {
        for (const m of page.messages) if (m.id > lastMessageId()) receiveMessage(m);
      }
    }
    await pollOtherChats();
  }
  for (const panel of state.panels.values()) if (!panel.settled() || panel.open) panel.refresh();
}

// Without server-side unread counts, look at the newest messages of the other chats.
async function pollOtherChats() {
  for (const chat of [...state.chats.values()].slice(0, 30)) {
    if (chat.id === state.current || chat.unread !== undefined) continue;
    const seenKey = lastReadKey(chat.id) + ".seen";
    const seen = Math.max(localLastRead(chat.id), Number(localStorage.getItem(seenKey) || 0));
    const page = await api.get(`/v1/chats/${chat.id}/messages?limit=20`);
    const fresh = page.messages.filter((m) => m.id > seen && m.sender !== state.me.username);
    if (!localStorage.getItem(seenKey) && !localStorage.getItem(lastReadKey(chat.id))) {
      // First look at this chat in this browser: remember where it stands, notify nothing.
      localStorage.setItem(seenKey, String(Math.max(0, ...page.messages.map((m) => m.id))));
      continue;
    }
    for (const m of fresh) receiveMessage(m);
  }
}

// --- devices ------------------------------------------------------------------------------------

async function openDevices() {
  showError("device-error", null);
  $("devices-dialog").showModal();
  await renderDevices();
}

async function renderDevices() {
  const { devices } = await api.get("/v1/devices");
  const list = $("device-list");
  list.replaceChildren();
  if (!devices.length) {
    const none = document.createElement("li");
    none.className = "muted";
    none.textContent = "No devices yet: you are notified nowhere.";
    list.append(none);
  }
  for (const device of devices) {
    const item = document.createElement("li");
    item.dataset.deviceId = String(device.id);
    item.dataset.platform = device.platform;
    const kind = document.createElement("span");
    kind.className = `badge platform`;
    kind.textContent = device.platform;
    const address = document.createElement("span");
    address.className = "address";
    address.textContent = device.platform === "webpush" ? "browser push subscription" : device.token;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.addEventListener("click", async () => {
      await api.del(`/v1/devices/${device.id}`);
      await renderDevices();
    });
    item.append(kind, address, remove);
    list.append(item);
  }
}

async function registerDevice(event) {
  event.preventDefault();
  const platform = $("device-platform").value;
  const token = $("device-address").value.trim();
  try {
    await api.post("/v1/devices", { platform, token });
    $("device-address").value = "";
    showError("device-error", null);
    await renderDevices();
  } catch (err) {
    showError("device-error", err);
  }
}

// --- start --------------------------------------------------------------------------------------

function wire() {
  $("auth-form").addEventListener("submit", signIn);
  $("sign-up").addEventListener("click", signUp);
  $("sign-out").addEventListener("click", signOut);
  $("toggle-notifications").addEventListener("click", toggleNotifications);
  onOpenChat((chatId) => {
    if (state.me) openChat(chatId);
  });
  window.addEventListener("hashchange", openChatInLocation);
  $("new-chat-form").addEventListener("submit", createChat);
  $("composer").addEventListener("submit", send);
  $("composer-body").addEventListener("input", () => {
    if (state.current !== null && $("composer-body").value.trim()) state.announcer.typed(state.current);
  });
  $("mute-toggle").addEventListener("change", toggleMute);
  $("add-member-form").addEventListener("submit", addMember);
  $("load-earlier").addEventListener("click", loadEarlier);
  $("history").addEventListener("scroll", () => {
    if ($("history").scrollTop === 0 && state.next !== null) loadEarlier();
  });
  $("open-devices").addEventListener("click", openDevices);
  $("device-form").addEventListener("submit", registerDevice);
  $("device-platform").addEventListener("change", () => {
    $("device-address").placeholder = $("device-platform").value === "email" ? "you@example.com" : "https://…";
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") markRead();
  });
}

async function boot() {
  wire();
  if (savedToken()) {
    try {
      await enter(await api.get("/v1/me"));
      return;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) showError("auth-error", err);
      saveToken(null);
    }
  }
  $("auth").hidden = false;
  $("auth-username").focus();
}

boot();
