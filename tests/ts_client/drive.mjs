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
const report = { server: client.getServerVersion() };
report.tools = (await client.listTools()).tools.map((t) => t.name).sort();

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

await client.close();
process.stdout.write(JSON.stringify(report) + "\n");
