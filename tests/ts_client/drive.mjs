// Drive a running (HTTP) or spawned (stdio) vestige-mcp with the official TypeScript MCP SDK
// and print what a JavaScript client saw, as one JSON object, for the Python test to judge.
//
//   node drive.mjs '{"transport":"stdio","command":"...","args":[...],"env":{...},"cwd":"..."}'
//   node drive.mjs '{"transport":"http","url":"http://127.0.0.1:PORT/mcp","token":"..."}'
//
// Every call has its own timeout, so a request the server never answers shows up as an
// error after CALL_TIMEOUT_MS instead of the SDK's 60 s default.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const CALL_TIMEOUT_MS = 10_000;
const config = JSON.parse(process.argv[2]);

function transport() {
  if (config.transport === "stdio") {
    return new StdioClientTransport({
      command: config.command,
      args: config.args,
      env: config.env,
      cwd: config.cwd,
      stderr: "inherit",
    });
  }
  return new StreamableHTTPClientTransport(new URL(config.url), {
    requestInit: { headers: { Authorization: `Bearer ${config.token}` } },
  });
}

// One call: its result, or the JSON-RPC error it was refused with, and how long it took.
async function call(client, name, args) {
  const began = Date.now();
  try {
    const result = await client.callTool({ name, arguments: args }, undefined, {
      timeout: CALL_TIMEOUT_MS,
    });
    const text = result.content?.[0]?.text ?? "";
    return {
      ms: Date.now() - began,
      isError: Boolean(result.isError),
      text,
      structured: result.structuredContent ?? null,
    };
  } catch (err) {
    return { ms: Date.now() - began, rejected: { code: err.code ?? null, message: String(err.message) } };
  }
}

const client = new Client({ name: "vestige-ts-e2e", version: "0.0.0" });
await client.connect(transport());
const report = { server: client.getServerVersion(), capabilities: client.getServerCapabilities() };
// listTools also makes the SDK compile every outputSchema: from here on each callTool
// validates structuredContent against it and throws (-32602) when it does not match.
const listed = (await client.listTools()).tools;
report.tools = listed.map((t) => t.name).sort();
report.schemas = Object.fromEntries(
  listed.map((t) => [
    t.name,
    {
      inputAdditional: t.inputSchema.additionalProperties ?? null,
      hasOutputSchema: Boolean(t.outputSchema),
      outputType: t.outputSchema?.type ?? null,
      outputAdditional: t.outputSchema?.additionalProperties ?? null,
      validatorCached: Boolean(client.getToolOutputValidator(t.name)),
      annotations: t.annotations ?? null,
    },
  ]),
);

const made = await call(client, "ingest", { content: "Ada writes TypeScript at night", tags: ["ts"] });
report.ingest = made;
report.search = await call(client, "search", { query: "TypeScript night" });
report.get = await call(client, "memory", { action: "get", id: made.structured?.id ?? "missing" });
report.stats = await call(client, "stats", {});
report.bad = {
  emptyContent: await call(client, "ingest", { content: "" }),
  zeroLimit: await call(client, "search", { query: "x", limit: 0 }),
  unknownAction: await call(client, "memory", { action: "explode", id: "abc" }),
  missingMemory: await call(client, "promote_memory", { id: "no-such-memory" }),
};
// "hello 😀" cut inside the emoji: JSON.stringify sends the lone half as \ud83d.
const emoji = "hello 😀";
report.loneSurrogate = await call(client, "ingest", { content: emoji.slice(0, emoji.length - 1) });
report.afterwards = await call(client, "stats", {});

// Every tool, with good arguments (each result validated by the SDK), then with one unknown
// key and (where it takes arguments) one value of the wrong type.
const mid = made.structured?.id ?? "missing";
const other = await call(client, "ingest", { content: "Zebra stripes are unique" });
const edit = await call(client, "edit_memory", { id: other.structured?.id ?? "missing", tags: ["zoo"] });
const good = {
  smart_ingest: { content: "Ada writes TypeScript at night", tags: ["ts"] },
  search: { query: "TypeScript", detail_level: "full" },
  memory: { action: "state", id: mid },
  promote_memory: { id: mid, reason: "useful" },
  demote_memory: { id: mid },
  edit_memory: { id: mid, tags: ["ts", "night"] },
  memory_changelog: { limit: 5, include_before: true },
  memory_undo: { change_seq: edit.structured?.change_seq ?? 0 },
  memory_timeline: { detail_level: "brief" },
  consolidate: {},
  stats: {},
  health_check: {},
  ingest: { content: "Grace keeps the runbook in docs/ops.md" },
  delete_memory: { id: mid },
};
const wrongType = {
  ingest: { content: 42 },
  smart_ingest: { content: "x", force_create: "maybe" },
  search: { query: "x", limit: "ten" },
  memory: { action: "get", id: 7 },
  delete_memory: { id: ["x"] },
  promote_memory: { id: 5 },
  demote_memory: { id: true },
  edit_memory: { id: "abc", tags: "ops" },
  memory_changelog: { limit: "all" },
  memory_undo: { change_seq: "one" },
  memory_timeline: { limit: {} },
};
report.everyTool = {};
for (const name of Object.keys(good)) {
  const result = await call(client, name, good[name]);
  const validator = client.getToolOutputValidator(name);
  report.everyTool[name] = {
    good: {
      ...result,
      text: result.text.slice(0, 300),
      structured: result.structured ? Object.keys(result.structured) : null,
    },
    // The validator is live and the schema closed: an undeclared key fails it.
    extraKeyValid: result.structured ? validator({ ...result.structured, bogusKey: 1 }).valid : null,
    unknownKey: await call(client, name, { ...good[name], bogusKey: 1 }),
    wrongType: wrongType[name] ? await call(client, name, wrongType[name]) : null,
  };
}

await client.close();
process.stdout.write(JSON.stringify(report) + "\n");
