// The operator page: GET /v1/admin/stats every two seconds, drawn without any library.

import { ApiError, api, savedToken } from "./api.js";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function ageText(seconds) {
  if (seconds < 1) return "none";
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      tr.append(...cells);
      return tr;
    }),
  );
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell("nothing yet", "muted");
    td.colSpan = document.querySelectorAll(`#${id} th`).length;
    tr.append(td);
    body.append(tr);
  }
}

function drawThroughput(points) {
  const svg = $("throughput");
  svg.replaceChildren();
  const width = 600, bottom = 158;
  const peak = Math.max(1, ...points.map((p) => p.delivered + p.failed));
  const slot = width / Math.max(1, points.length);
  points.forEach((point, i) => {
    const x = i * slot + 1;
    const delivered = ((bottom - 10) * point.delivered) / peak;
    const failed = ((bottom - 10) * point.failed) / peak;
    for (const [kind, h, y] of [["delivered", delivered, bottom - delivered], ["failed", failed, bottom - delivered - failed]]) {
      if (h <= 0) continue;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", kind);
      rect.setAttribute("x", x.toFixed(1));
      rect.setAttribute("y", y.toFixed(1));
      rect.setAttribute("width", Math.max(1, slot - 2).toFixed(1));
      rect.setAttribute("height", h.toFixed(1));
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${new Date(point.at).toLocaleTimeString()}: ${point.delivered} delivered, ${point.failed} failed`;
      rect.append(title);
      svg.append(rect);
    }
  });
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", "0");
  axis.setAttribute("x2", String(width));
  axis.setAttribute("y1", String(bottom));
  axis.setAttribute("y2", String(bottom));
  svg.append(axis);
  $("chart-peak").textContent = `peak ${peak} per interval`;
  $("chart-start").textContent = points.length ? new Date(points[0].at).toLocaleTimeString() : "";
}

function render(stats) {
  $("dashboard").hidden = false;
  $("updated").textContent = `updated ${new Date(stats.generated_at).toLocaleTimeString()}`;
  $("queue-depth").textContent = String(stats.outbox.pending);
  $("oldest-age").textContent = ageText(stats.outbox.oldest_pending_age_seconds);
  $("delivered-window").textContent = String(stats.throughput.reduce((n, p) => n + p.delivered, 0));
  $("failed-window").textContent = String(stats.throughput.reduce((n, p) => n + p.failed, 0));
  const s = stats.deliveries_by_status;
  $("in-progress").textContent = String((s.pending || 0) + (s.sending || 0) + (s.retrying || 0));
  $("step").textContent = String(stats.step_seconds);
  drawThroughput(stats.throughput);

  const statuses = $("by-status");
  statuses.replaceChildren(
    ...Object.entries(s).map(([status, n]) => {
      const li = document.createElement("li");
      li.className = `badge ${status}`;
      li.dataset.status = status;
      li.textContent = `${status.replace("_", " ")} ${n}`;
      return li;
    }),
  );
  const when = (at) => (at ? new Date(at).toLocaleString() : "never");
  fillTable(
    "providers",
    stats.providers.map((p) => [
      cell(p.provider),
      cell(p.app),
      cell(p.credentials_ok ? "ok" : "refused", p.credentials_ok ? "" : "refused"),
      cell(when(p.last_success_at)),
      cell(when(p.last_error_at)),
      cell(p.last_error_class || "—"),
      cell(p.last_error || "—", "muted"),
    ]),
  );
  fillTable(
    "outcomes",
    stats.outcomes.map((o) => [cell(o.provider), cell(o.status), cell(o.reason || "—", "muted"), cell(String(o.count), "num")]),
  );
  fillTable(
    "failures",
    stats.recent_failures.map((f) => [
      cell(new Date(f.updated_at).toLocaleTimeString()),
      cell(f.provider),
      cell(f.user),
      cell(f.message_id === null ? "test" : `#${f.message_id}`),
      cell(f.status),
      cell(String(f.attempts), "num"),
      cell(f.reason || "—", "muted"),
    ]),
  );
  fillTable(
    "http",
    stats.http.map((r) => [cell(r.method), cell(r.route), cell(String(r.requests), "num"), cell(`${(r.mean_seconds * 1000).toFixed(1)} ms`, "num")]),
  );
}

async function refresh() {
  try {
    render(await api.get("/v1/admin/stats"));
    $("admin-error").textContent = "";
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      $("admin-error").textContent = "This page is for operators. Ask one to run `chinwag admin <your username>`.";
      return;
    }
    if (err instanceof ApiError && err.status === 401) {
      $("admin-error").textContent = "Sign in on the chat page first.";
      return;
    }
    $("admin-error").textContent = err.message;
  }
  setTimeout(refresh, REFRESH_MS);
}

if (!savedToken()) {
  $("admin-error").textContent = "Sign in on the chat page first.";
} else {
  refresh();
}
