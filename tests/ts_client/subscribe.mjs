// Two official-SDK clients, each launching its own `vestige-mcp --shared-writers` over stdio on
// one data directory.  B subscribes to memory://changes; A writes; B must be told, then asks
// memory_changelog for what came after the last change it had seen.
//
//   node subscribe.mjs '{"command":"...","args":[...],"env":{...},"cwd":"..."}'
//
// Prints one JSON line: B's capabilities, the notifications B received (uri and the delay
// after A's write was answered), and B's changelog page.  A notification that never comes
// shows up as `notified: null` after NOTICE_WAIT_MS, not as a hang.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ResourceUpdatedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const CALL_TIMEOUT_MS = 30_000;
const NOTICE_WAIT_MS = 20_000;
const config = JSON.parse(process.argv[2]);
const errors = [];

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
  const result = await client.callTool({ name, arguments: args }, undefined, {
    timeout: CALL_TIMEOUT_MS,
  });
  return { isError: Boolean(result.isError), structured: result.structuredContent ?? null };
}

const b = await connect("vestige-ts-subscriber");
const a = await connect("vestige-ts-writer");
const notices = [];
let wake = () => {};
b.setNotificationHandler(ResourceUpdatedNotificationSchema, (note) => {
  notices.push({ uri: note.params.uri, at: Date.now() });
  wake();
});
const start = (await call(b, "memory_changelog", {})).structured.newest_seq;
await b.subscribeResource({ uri: "memory://changes" });

const write = await call(a, "ingest", { content: "written through A, heard through B" });
const answered = Date.now();
const notified = await new Promise((resolve) => {
  const timer = setTimeout(() => resolve(null), NOTICE_WAIT_MS);
  wake = () => {
    clearTimeout(timer);
    resolve(notices[notices.length - 1]);
  };
  if (notices.length) wake();
});
const report = {
  capabilities: b.getServerCapabilities(),
  write,
  notified: notified && { uri: notified.uri, afterAnswerMs: notified.at - answered },
  page: await call(b, "memory_changelog", { since_seq: start }),
  writerPid: (await call(a, "health_check", {})).structured.server.pid,
  errors,
};
await a.close();
await b.close();
process.stdout.write(JSON.stringify(report) + "\n");
