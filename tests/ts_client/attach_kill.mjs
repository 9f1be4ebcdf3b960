// Two official-SDK clients, each launching `vestige-mcp --attach` over stdio on one data
// directory, across a kill -9 of the detached owner that the Python test performs.
//
//   node attach_kill.mjs '{"command":"...","args":[...],"env":{...},"cwd":"...","killed":"/path","tag":"..."}'
//
// 1. Both clients connect, list the tools, write one memory each and search.
// 2. The script prints {"ready": true} on stdout and waits for the file `killed` to exist:
//    the test kills the owner, creates the file at once, and the calls below go out while
//    the proxies are still finding the next owner.
// 3. In the same sessions: client A writes and searches, client B searches and writes.
// 4. It prints what both saw as one JSON line and closes both clients.
//
// Every call has its own timeout, so a request nobody answers shows up as an error after
// CALL_TIMEOUT_MS instead of the SDK's 60 s default; a rejection (JSON-RPC error) is recorded,
// not thrown, so the test sees everything that went wrong.

import { existsSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const CALL_TIMEOUT_MS = 30_000;
const KILL_WAIT_MS = 60_000;
const config = JSON.parse(process.argv[2]);

async function connect(name) {
  const client = new Client({ name, version: "0.0.0" });
  const transport = new StdioClientTransport({
    command: config.command,
    args: config.args,
    env: config.env,
    cwd: config.cwd,
    stderr: "inherit",
  });
  client.onerror = (err) => errors.push(`${name}: ${String(err)}`);
  await client.connect(transport);
  return client;
}

async function call(client, name, args) {
  const began = Date.now();
  try {
    const result = await client.callTool({ name, arguments: args }, undefined, {
      timeout: CALL_TIMEOUT_MS,
    });
    return {
      ms: Date.now() - began,
      isError: Boolean(result.isError),
      text: result.content?.[0]?.text ?? "",
      structured: result.structuredContent ?? null,
    };
  } catch (err) {
    return { ms: Date.now() - began, rejected: { code: err.code ?? null, message: String(err.message) } };
  }
}

async function waitForFile(path) {
  const deadline = Date.now() + KILL_WAIT_MS;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} never appeared`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const errors = [];
const tag = config.tag;
const a = await connect("vestige-ts-attach-a");
const b = await connect("vestige-ts-attach-b");
const report = {
  server: a.getServerVersion(),
  tools: (await a.listTools()).tools.map((t) => t.name).sort(),
  toolsB: (await b.listTools()).tools.map((t) => t.name).sort(),
  before: {
    writeA: await call(a, "ingest", { content: `${tag} written by A before the kill` }),
    writeB: await call(b, "ingest", { content: `${tag} written by B before the kill` }),
    searchA: await call(a, "search", { query: `${tag} before`, limit: 10 }),
  },
};

process.stdout.write(JSON.stringify({ ready: true }) + "\n");
await waitForFile(config.killed);

// Sent at once, on both sessions together: the proxies are finding the next owner.
const [writeA, searchB] = await Promise.all([
  call(a, "ingest", { content: `${tag} written by A after the kill` }),
  call(b, "search", { query: `${tag} before`, limit: 10 }),
]);
report.after = {
  writeA,
  searchB,
  searchA: await call(a, "search", { query: `${tag} after`, limit: 10 }),
  writeB: await call(b, "ingest", { content: `${tag} written by B after the kill` }),
  statsA: await call(a, "stats", {}),
  pingA: await a.ping().then(() => "ok", (err) => String(err)),
};
report.serverAfter = a.getServerVersion();
report.errors = errors;

await a.close();
await b.close();
process.stdout.write(JSON.stringify(report) + "\n");
