// The dashboard page: a live feed from /events, and panels polled from /api/*.
// Every text from the data goes in with textContent, never as markup: memory ids, client
// names and details are written by agents and may look like HTML.
"use strict";

const MAX_ROWS = 500;          // rows kept in the feed table
const STATUS_EVERY_MS = 5000;  // holders, health and counts
const REPORT_EVERY_MS = 30000; // the load-test report

const $ = (id) => document.getElementById(id);

// The token comes in the address's fragment (never sent to a server), is kept for this tab
// and this origin only, and leaves the address bar and the history at once.
const TOKEN = (() => {
  const given = new URLSearchParams(location.hash.slice(1)).get("token");
  if (given) {
    sessionStorage.setItem("vestige-token", given);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("vestige-token");
})();
const withToken = (path) => `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}`;

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function setPill(node, state, text) {
  node.dataset.state = state;
  node.textContent = text;
}

function localTime(iso) {
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function who(c) {
  return c.client ? `${c.client} via ${c.transport}` : `${c.transport}/${c.process}`;
}

function detail(c) {
  const parts = [];
  if (c.other_id) parts.push(`other ${c.other_id}`);
  if (c.undoes) parts.push(`undoes #${c.undoes}`);
  if (c.origin) parts.push(`imported (${c.origin})`);
  if (c.detail && Object.keys(c.detail).length) {
    const text = JSON.stringify(c.detail);
    parts.push(text.length > 160 ? text.slice(0, 159) + "…" : text);
  }
  return parts.join("; ");
}

// -- the feed -------------------------------------------------------------------------

let shown = 0;

function addRow(row) {
  const body = $("feed").tBodies[0];
  body.insertBefore(row, body.firstChild);
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  shown += 1;
  $("feed-count").textContent = `(${shown} seen)`;
}

function showChange(c) {
  const row = el("tr", null, { "data-seq": c.seq, "data-memory": c.memory_id || "", class: "new" });
  row.append(
    el("td", c.seq),
    el("td", localTime(c.at)),
    el("td", c.kind),
    el("td", c.memory_id, { class: "mono" }),
    el("td", who(c)),
    el("td", detail(c)),
  );
  addRow(row);
}

function showGap(message) {
  const row = el("tr", null, { class: "gap" });
  const cell = el("td", `⚠ ${message}`, { colspan: 6 });
  row.append(cell);
  addRow(row);
}

function showProblem(p) {
  const banner = $("problem");
  if (!p) {
    banner.hidden = true;
    return;
  }
  banner.textContent = p.hint ? `${p.message} — ${p.hint}` : p.message;
  banner.hidden = false;
}

function follow() {
  const source = new EventSource(withToken("/events"));
  const state = $("feed-state");
  source.addEventListener("change", (e) => showChange(JSON.parse(e.data)));
  source.addEventListener("gap", (e) => showGap(JSON.parse(e.data).message));
  source.addEventListener("problem", (e) => showProblem(JSON.parse(e.data)));
  source.addEventListener("live", () => setPill(state, "live", "live"));
  source.addEventListener("open", () => setPill(state, "connecting", "catching up…"));
  // The browser reconnects by itself, sending the last change it saw (Last-Event-ID).
  source.addEventListener("error", () => setPill(state, "down", "reconnecting…"));
}

// -- the panels -----------------------------------------------------------------------

async function getJSON(path) {
  const answer = await fetch(path, { cache: "no-store", headers: { Authorization: `Bearer ${TOKEN}` } });
  const text = await answer.text();
  if (answer.ok) return JSON.parse(text);
  let message = text.trim() || `HTTP ${answer.status}`;
  try {
    const data = JSON.parse(text);
    message = `${data.error} ${data.hint || ""}`.trim();
  } catch (_) { /* a plain-text refusal says it all */ }
  throw new Error(message);
}

function showHolders(d) {
  const box = $("holders");
  box.replaceChildren();
  const owners = (d.owner_lock && d.owner_lock.holders) || [];
  const live = owners.filter((o) => o.alive);
  if (!live.length) box.append(el("p", "No server holds the owner lock.", { class: "muted" }));
  for (const o of live) {
    const line = el("p", null, { class: "holder", "data-pid": o.pid });
    line.append(
      el("strong", `pid ${o.pid}`),
      el("span", ` ${o.mode === "shared" ? "shared writer" : "owner"} (${o.transport})`),
      el("span", o.endpoint ? ` at ${o.endpoint}` : ""),
      el("span", ` since ${localTime(o.started_at)}`, { class: "muted" }),
    );
    box.append(line);
    for (const s of o.sessions || []) {
      box.append(el("p", `↳ attached window: pid ${s.pid}${s.client ? ", " + s.client : ""}`,
        { class: "session" }));
    }
  }
  const procs = (d.processes && d.processes.holders) || [];
  if (procs.length) {
    const list = el("p", `Processes with the files open: ${procs.map((p) => `${p.name} (pid ${p.pid})`).join(", ")}`,
      { class: "muted" });
    box.append(list);
  }
  const gate = (d.write_gate && d.write_gate.holders) || [];
  box.append(el("p", gate.length ? `Writing now: ${gate.map((g) => `pid ${g.pid}`).join(", ")}` : "Write gate: free",
    { class: "muted" }));
}

function showChecks(d) {
  setPill($("health-verdict"), d.healthy ? "ok" : "fail", d.healthy ? "healthy" : "needs attention");
  const list = $("checks");
  list.replaceChildren();
  for (const c of d.checks || []) {
    const item = el("li", null, { "data-check": c.name });
    item.append(el("span", c.status, { class: "pill", "data-state": c.status }), el("strong", ` ${c.name} `),
      el("span", c.detail));
    if (c.hint) item.append(el("div", `→ ${c.hint}`, { class: "muted" }));
    list.append(item);
  }
}

function showStats(s) {
  const box = $("stats");
  box.replaceChildren();
  const rows = [
    ["memories", s.total_memories],
    ["due for review", s.due_for_review],
    ["average retention", Number(s.average_retention).toFixed(3)],
    ["newest", s.newest_memory ? localTime(s.newest_memory) : "—"],
    ["database", `${Number(s.database_bytes).toLocaleString()} bytes (WAL ${Number(s.wal_bytes).toLocaleString()})`],
    ["schema", s.schema_version],
  ];
  for (const [k, v] of rows) box.append(el("dt", k), el("dd", v, { "data-stat": k }));
}

async function refreshStatus() {
  try {
    const s = await getJSON("/api/status");
    $("data-dir").textContent = s.doctor.data_dir ? s.doctor.data_dir.path : "";
    showHolders(s.doctor);
    showChecks(s.doctor);
    showStats(s.stats);
    if ($("problem").dataset.source === "status") showProblem(null);
  } catch (err) {
    $("problem").dataset.source = "status";
    showProblem({ message: `The dashboard did not answer: ${err.message}.`, hint: "Is `vestige dashboard` still running?" });
  }
}

async function refreshReport() {
  const box = $("report");
  try {
    const r = await getJSON("/api/report");
    box.replaceChildren();
    if (!r.found) {
      setPill($("report-verdict"), "skipped", "none");
      box.append(el("p", r.message, { class: "muted" }), el("p", r.hint, { class: "muted" }));
      return;
    }
    setPill($("report-verdict"), r.ok ? "ok" : "fail", r.ok ? "PASS" : "FAIL");
    box.append(el("p", `${r.folder} — finished ${r.finished}, ${r.runs} run(s)`, { class: "muted" }));
    if (r.has_page) {
      const link = el("a", "the full report (charts)", { href: withToken("/report"), target: "_blank", rel: "noopener noreferrer" });
      box.append(link);
    }
    box.append(el("pre", r.summary));
  } catch (err) {
    box.replaceChildren(el("p", `Cannot read the report: ${err.message}`));
  }
}

if (!TOKEN) {
  setPill($("feed-state"), "down", "no token");
  showProblem({ message: "This page was opened without its token.", hint: "Open the address `vestige dashboard` printed: it carries the token." });
} else {
  start();
}

function start() {
  follow();
  refreshStatus();
  refreshReport();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(refreshReport, REPORT_EVERY_MS);
}
