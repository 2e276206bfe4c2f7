// The delivery panel under each message the user sent: every recipient device, its platform and
// status, counts per status and a progress bar. Large groups show counts and the first rows only.

import { api } from "./api.js";

export const STATUSES = ["pending", "sending", "retrying", "deferred", "delivered", "failed", "token_dead", "skipped"];
const FINAL = new Set(["delivered", "failed", "token_dead", "skipped"]);
const ROWS_SHOWN = 200;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "className") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function label(status) {
  return status.replace("_", " ");
}

// Devices may also get silent follow-ups for a message (a badge cleared after its owner read it
// elsewhere, the sender's own devices included), which the deliveries route lists too. The
// notifications are the first row per device of anyone but the sender. When every row is in the
// page the counts are taken from those rows, otherwise from the server's summary.
function alertsOnly(page, sender) {
  const seen = new Set();
  const deliveries = page.deliveries.filter(
    (row) => row.user !== sender && !seen.has(row.device_id) && seen.add(row.device_id),
  );
  if (page.next !== null || deliveries.length === page.deliveries.length) return { ...page, deliveries };
  const summary = {};
  for (const row of deliveries) summary[row.status] = (summary[row.status] || 0) + 1;
  return { ...page, deliveries, summary };
}

export class DeliveryPanel {
  constructor(messageId, sender) {
    this.messageId = messageId;
    this.sender = sender;
    this.open = false;
    this.page = null; // the last answer of GET /v1/messages/{id}/deliveries
    this.loading = null;
    this.node = el("div", { className: "delivery", "data-message-id": String(messageId) });
    this.toggle = el("button", { type: "button", className: "delivery-toggle", "aria-expanded": "false" });
    this.bar = el("div", { className: "progress", role: "progressbar", "aria-valuemin": "0" });
    this.detail = el("div", { className: "delivery-detail" });
    this.detail.hidden = true;
    this.toggle.addEventListener("click", () => this.setOpen(!this.open));
    this.node.append(this.toggle, this.bar, this.detail);
    this.render();
  }

  setOpen(open) {
    this.open = open;
    this.toggle.setAttribute("aria-expanded", String(open));
    this.detail.hidden = !open;
    this.refresh();
  }

  total() {
    if (!this.page) return 0;
    return Object.values(this.page.summary).reduce((a, b) => a + b, 0);
  }

  // Settled: the fan-out has expanded every device and no row can change by itself any more.
  settled() {
    if (!this.page || this.page.fanout !== "done") return false;
    return Object.entries(this.page.summary).every(([status, n]) => n === 0 || FINAL.has(status));
  }

  async refresh() {
    if (this.loading) return this.loading;
    this.loading = api
      .get(`/v1/messages/${this.messageId}/deliveries?limit=${ROWS_SHOWN}`)
      .then((page) => {
        this.page = alertsOnly(page, this.sender);
        this.render();
      })
      .catch(() => {})
      .finally(() => {
        this.loading = null;
      });
    return this.loading;
  }

  render() {
    const page = this.page;
    const total = this.total();
    const summary = page ? page.summary : {};
    const delivered = summary.delivered || 0;
    const failed = (summary.failed || 0) + (summary.token_dead || 0);
    const skipped = summary.skipped || 0;
    let text;
    if (!page) text = "delivery: loading…";
    else if (total === 0 && page.fanout === "done") text = "no devices to notify";
    else if (total === 0) text = "waiting for fan-out…";
    else text = `${delivered}/${total} delivered` + (failed ? ` · ${failed} failed` : "");
    this.toggle.textContent = text;
    this.node.dataset.settled = String(this.settled());
    this.node.dataset.total = String(total);
    this.node.dataset.delivered = String(delivered);

    this.bar.replaceChildren();
    this.bar.setAttribute("aria-valuemax", String(total));
    this.bar.setAttribute("aria-valuenow", String(delivered));
    for (const [name, n] of [["delivered", delivered], ["failed", failed], ["skipped", skipped]]) {
      if (!n) continue;
      const segment = el("span", { className: `segment ${name}` });
      segment.style.width = `${(100 * n) / total}%`;
      this.bar.append(segment);
    }
    this.bar.hidden = total === 0;
    if (this.open) this.renderDetail(summary, total);
  }

  renderDetail(summary, total) {
    const counts = el("ul", { className: "delivery-counts" });
    for (const status of STATUSES) {
      const n = summary[status] || 0;
      if (!n) continue;
      counts.append(el("li", { "data-status": status, className: `badge ${status}`, text: `${label(status)} ${n}` }));
    }
    const rows = this.page ? this.page.deliveries : [];
    const table = el("table", { className: "delivery-devices" });
    table.append(
      el("thead", {}, el("tr", {}, ...["user", "platform", "status", "attempts", "last error"].map((h) => el("th", { text: h })))),
    );
    const body = el("tbody");
    for (const row of rows) {
      body.append(
        el(
          "tr",
          { "data-delivery-id": String(row.id), "data-status": row.status, "data-platform": row.platform },
          el("td", { text: row.user }),
          el("td", { text: row.platform }),
          el("td", {}, el("span", { className: `badge ${row.status}`, text: label(row.status) })),
          el("td", { text: String(row.attempts) }),
          el("td", { className: "muted", text: row.last_error || "" }),
        ),
      );
    }
    table.append(body);
    const parts = [counts];
    if (rows.length) parts.push(table);
    if (total > rows.length) parts.push(el("p", { className: "muted more", text: `… and ${total - rows.length} more devices` }));
    this.detail.replaceChildren(...parts);
  }
}
