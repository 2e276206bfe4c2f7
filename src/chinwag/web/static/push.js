// Browser notifications over Web Push: the service worker (/sw.js), the permission prompt, the
// browser's subscription registered as a `webpush` device, and its removal on sign-out.
//
// The subscription is made with the server's VAPID public key (GET /v1/push/vapid-public-key):
// the browser's push service then accepts only pushes that chinwag signed with the private key.

import { api } from "./api.js";

const DEVICE_KEY = "chinwag.webpush.device"; // id of this browser's webpush device
const WORKER = "/sw.js";

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

// A browser whose push service is out of reach (offline, blocked) may never settle subscribe().
const SUBSCRIBE_SECONDS = 20;

function withinSeconds(seconds, promise, message) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), seconds * 1000);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function sameKey(buffer, base64url) {
  if (!buffer) return false;
  const have = new Uint8Array(buffer);
  const want = keyBytes(base64url);
  return have.length === want.length && have.every((byte, i) => byte === want[i]);
}

async function registration() {
  await navigator.serviceWorker.register(WORKER, { scope: "/" });
  return navigator.serviceWorker.ready;
}

async function register(subscription) {
  const { endpoint, keys } = subscription.toJSON();
  const device = await api.post("/v1/devices", { platform: "webpush", token: { endpoint, keys } });
  localStorage.setItem(DEVICE_KEY, String(device.id));
  return device;
}

// "unsupported" | "denied" | "on" | "off"
export async function notificationState() {
  if (!pushSupported()) return "unsupported";
  if (Notification.permission === "denied") return "denied";
  if (Notification.permission !== "granted" || !localStorage.getItem(DEVICE_KEY)) return "off";
  const found = await navigator.serviceWorker.getRegistration("/");
  const subscription = found && (await found.pushManager.getSubscription());
  return subscription ? "on" : "off";
}

async function forgetDevice() {
  const deviceId = localStorage.getItem(DEVICE_KEY);
  localStorage.removeItem(DEVICE_KEY);
  if (!deviceId) return;
  try {
    await api.del(`/v1/devices/${deviceId}`);
  } catch (err) {
    // Revoked token or already removed: the unsubscribed endpoint answers 410 and the server
    // deactivates the device at its next notification.
  }
}

// The subscription for the server's current key, made if needed, registered as a device.
async function subscribeAndRegister() {
  const [ready, { public_key: publicKey }] = await Promise.all([
    registration(),
    api.get("/v1/push/vapid-public-key"),
  ]);
  let subscription = await ready.pushManager.getSubscription();
  if (subscription && !sameKey(subscription.options && subscription.options.applicationServerKey, publicKey)) {
    // Made for another key (the operator replaced the server's): its pushes are refused.
    await forgetDevice();
    await subscription.unsubscribe();
    subscription = null;
  }
  if (!subscription) {
    const subscribing = ready.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(publicKey),
    });
    subscription = await withinSeconds(SUBSCRIBE_SECONDS, subscribing, "the browser's push service does not answer");
  }
  return register(subscription);
}

// Call from a click: browsers show the permission prompt only for a user gesture.
export async function enableNotifications() {
  if (!pushSupported()) throw new Error("this browser cannot receive push notifications");
  const permission = await Notification.requestPermission();
  if (permission !== "granted") throw new Error("notifications are blocked for this site");
  return subscribeAndRegister();
}

// On every sign-in: a browser already subscribed stays registered to whoever uses it now
// (registering is idempotent), and is subscribed again if the server's key changed.
export async function refreshNotifications() {
  if ((await notificationState()) !== "on") return;
  await subscribeAndRegister();
}

// On sign-out: the device goes first (while the token still works), then the subscription.
export async function disableNotifications() {
  await forgetDevice();
  if (!pushSupported()) return;
  const found = await navigator.serviceWorker.getRegistration("/");
  const subscription = found && (await found.pushManager.getSubscription());
  if (subscription) await subscription.unsubscribe();
}

// The service worker asks the open page to show a chat (a notification was clicked).
export function onOpenChat(open) {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.addEventListener("message", (event) => {
    if (event.data && event.data.type === "open-chat" && event.data.chat_id) open(Number(event.data.chat_id));
  });
}
