// The service worker: shows chinwag's Web Push notifications and opens the chat on click.
// Served at /sw.js so that its scope is the whole app. It reads exactly the JSON the Web Push
// sender encrypts (chinwag/push/webpush.py):
//   alert:  {"title", "body", "chat_id", "message_id", "badge"?}
//   silent: {"type": "clear" | "removal", "chat_id", "message_id", "badge"?}
//           clear: read up to message_id elsewhere; removal: message_id was deleted.

const tagOf = (chatId) => `chat-${chatId}`;

function readPayload(event) {
  if (!event.data) return null;
  try {
    return event.data.json();
  } catch (err) {
    return null; // not ours, or garbled: nothing to show
  }
}

async function setBadge(count) {
  if (typeof count !== "number" || !self.navigator.setAppBadge) return;
  try {
    if (count > 0) await self.navigator.setAppBadge(count);
    else await self.navigator.clearAppBadge();
  } catch (err) {
    // Badges are a nicety; a platform that refuses them changes nothing else.
  }
}

async function withdraw(payload) {
  const shown = await self.registration.getNotifications({ tag: tagOf(payload.chat_id) });
  for (const notification of shown) {
    const messageId = notification.data && notification.data.message_id;
    // clear: everything up to message_id was read; removal: that one message is gone.
    const stale = payload.type === "removal" ? messageId === payload.message_id : messageId <= payload.message_id;
    if (stale) notification.close();
  }
}

async function show(payload) {
  await setBadge(payload.badge);
  if (payload.type === "clear" || payload.type === "removal") {
    await withdraw(payload);
    return;
  }
  // One notification per chat: a newer message replaces the older one, and alerts again.
  await self.registration.showNotification(payload.title || "chinwag", {
    body: payload.body || "",
    tag: tagOf(payload.chat_id),
    renotify: true,
    data: { chat_id: payload.chat_id, message_id: payload.message_id },
  });
}

// Keeps the worker alive until `work` settles. A synthetic event (dispatched by a test: no
// browser API clicks a notification) cannot be extended, and the work runs all the same.
function extend(event, work) {
  try {
    event.waitUntil(work);
  } catch (err) {
    if (event.isTrusted) throw err;
  }
}

async function openChat(chatId) {
  const url = new URL(chatId ? `/#chat=${chatId}` : "/", self.location.origin).href;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const client of windows) {
    if (new URL(client.url).origin !== self.location.origin) continue;
    // The open page switches to the chat itself (app.js listens for this message).
    client.postMessage({ type: "open-chat", chat_id: chatId });
    try {
      await client.focus();
    } catch (err) {
      // Focusing needs the click's user activation; the page has the chat open regardless.
    }
    return;
  }
  await self.clients.openWindow(url);
}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  const payload = readPayload(event);
  if (payload && payload.chat_id !== undefined) extend(event, show(payload));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const chatId = event.notification.data && event.notification.data.chat_id;
  extend(event, openChat(chatId));
});
