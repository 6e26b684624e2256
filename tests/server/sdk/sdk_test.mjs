// herd serve with the official `openai` npm SDK as the client: chat,
// completions, streaming with usage, n > 1, stop, logprobs, the SDK's own
// error classes for 400 / 401 / 404 / 429, and a batch through files and
// batches. Starts its servers on
// 127.0.0.1 (free ports), stops them at the end; every wait is bounded.
// Usage: node sdk_test.mjs HERD_BINARY MODEL.gguf
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { startServer as startHerd, stopServer } from "./herd_server.mjs";

const [herd, modelPath] = process.argv.slice(2);
const NAME = "stories260K";
let passed = 0;
const failed = [];

function check(cond, what) {
  if (cond) passed++;
  else {
    failed.push(what);
    console.error("FAIL:", what);
  }
}

const startServer = (args = []) => startHerd(herd, modelPath, args);

async function expectError(promise, Klass, status, what, extra = () => true) {
  try {
    await promise;
    check(false, `${what}: no error`);
  } catch (e) {
    check(e instanceof Klass && e.status === status && extra(e), `${what}: ${e.constructor.name} ${e.status} ${e.message}`);
  }
}

const srv = await startServer(["--api-key", "sk-test"]);
const client = new OpenAI({ baseURL: `http://127.0.0.1:${srv.port}/v1`, apiKey: "sk-test", maxRetries: 0, timeout: 60000 });

// models
const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === NAME, "models.list");
const model = await client.models.retrieve(NAME);
check(model.id === NAME, "models.retrieve");

// chat
const chat = await client.chat.completions.create({
  model: NAME,
  messages: [{ role: "system", content: "Tell stories." }, { role: "user", content: "Once upon a time" }],
  max_tokens: 20,
  temperature: 0,
});
check(chat.object === "chat.completion" && chat.choices[0].message.role === "assistant", "chat shape");
check(chat.choices[0].message.content.length > 0 && chat.choices[0].finish_reason === "length", "chat content");
check(chat.usage.completion_tokens === 20 && chat.usage.prompt_tokens > 0, "chat usage");

// streaming chat with usage: same text as the whole answer
const stream = await client.chat.completions.create({
  model: NAME,
  messages: [{ role: "system", content: "Tell stories." }, { role: "user", content: "Once upon a time" }],
  max_tokens: 20,
  temperature: 0,
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let usage = null;
let finish = null;
for await (const chunk of stream) {
  if (chunk.choices.length) {
    text += chunk.choices[0].delta.content ?? "";
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  if (chunk.usage) usage = chunk.usage;
}
check(text === chat.choices[0].message.content, "streamed chat text equals the whole answer");
check(finish === "length" && usage && usage.completion_tokens === 20, "stream finish and usage");

// completions, n > 1, stop, logprobs
const comp = await client.completions.create({ model: NAME, prompt: "Once upon a time", max_tokens: 30, temperature: 0 });
check(comp.object === "text_completion" && comp.choices[0].text.length > 0, "completion");
const stopAt = comp.choices[0].text.slice(10, 13);
const stopped = await client.completions.create({
  model: NAME, prompt: "Once upon a time", max_tokens: 30, temperature: 0, stop: [stopAt],
});
check(stopped.choices[0].text === comp.choices[0].text.slice(0, comp.choices[0].text.indexOf(stopAt)) &&
      stopped.choices[0].finish_reason === "stop", "stop string");
const many = await client.completions.create({ model: NAME, prompt: "Once upon a time", max_tokens: 10, n: 3, temperature: 0 });
check(many.choices.length === 3 && new Set(many.choices.map((c) => c.text)).size === 1, "n=3");
const lp = await client.chat.completions.create({
  model: NAME, messages: [{ role: "user", content: "hi" }], max_tokens: 3, logprobs: true, top_logprobs: 3,
});
check(lp.choices[0].logprobs.content.length === 3 && lp.choices[0].logprobs.content[0].top_logprobs.length === 3,
      "chat logprobs");
const clp = await client.completions.create({ model: NAME, prompt: "Once", max_tokens: 3, logprobs: 2 });
check(clp.choices[0].logprobs.token_logprobs.length === 3, "completion logprobs");

// errors through the SDK's classes
await expectError(client.chat.completions.create({ model: NAME, messages: [] }), OpenAI.BadRequestError, 400,
  "empty messages", (e) => e.param === "messages");
await expectError(client.completions.create({ model: NAME, prompt: "x", max_tokens: 600 }), OpenAI.BadRequestError, 400,
  "context length", (e) => e.code === "context_length_exceeded");
await expectError(client.completions.create({ model: NAME, prompt: "x", temperature: 5 }), OpenAI.BadRequestError, 400,
  "temperature range", (e) => e.param === "temperature");
await expectError(client.chat.completions.create({ model: "gpt-4", messages: [{ role: "user", content: "x" }] }),
  OpenAI.NotFoundError, 404, "unknown model");
const noKey = new OpenAI({ baseURL: `http://127.0.0.1:${srv.port}/v1`, apiKey: "wrong", maxRetries: 0 });
await expectError(noKey.models.list(), OpenAI.AuthenticationError, 401, "wrong API key");
check(await stopServer(srv) === 0, "server exit 0");

// a full queue: 429 RateLimitError
const small = await startServer(["--max-queue", "1", "--max-seqs", "1"]);
const c2 = new OpenAI({ baseURL: `http://127.0.0.1:${small.port}/v1`, apiKey: "none", maxRetries: 0, timeout: 60000 });
const results = await Promise.allSettled(Array.from({ length: 8 }, () =>
  c2.completions.create({ model: NAME, prompt: "Once upon a time", max_tokens: 480, ignore_eos: true })));
const limited = results.filter((r) => r.status === "rejected" && r.reason instanceof OpenAI.RateLimitError);
check(limited.length > 0, "a full queue gives RateLimitError");
check(results.some((r) => r.status === "fulfilled"), "the queued requests are answered");
check(await stopServer(small) === 0, "second server exit 0");

// the batch API: files.create, batches.create / retrieve / list / cancel, files.content
const dataDir = mkdtempSync(join(tmpdir(), "herd-sdk-batch-"));
const bs = await startServer(["--data-dir", dataDir]);
const c3 = new OpenAI({ baseURL: `http://127.0.0.1:${bs.port}/v1`, apiKey: "none", maxRetries: 0, timeout: 60000 });
const lines = Array.from({ length: 6 }, (_, i) => JSON.stringify({
  custom_id: `r${i}`, method: "POST", url: "/v1/chat/completions",
  body: { model: NAME, messages: [{ role: "user", content: `Tell me about ${i}` }], max_tokens: 8, temperature: 0 },
}));
lines.push("{not json");
const upload = await c3.files.create({
  file: await OpenAI.toFile(Buffer.from(lines.join("\n") + "\n"), "input.jsonl"), purpose: "batch",
});
check(upload.object === "file" && upload.purpose === "batch" && upload.filename === "input.jsonl" &&
      /^file-[0-9a-f]{24}$/.test(upload.id), "files.create");
const listed = await c3.files.list();
check(listed.data.some((f) => f.id === upload.id), "files.list");
const created = await c3.batches.create({
  input_file_id: upload.id, endpoint: "/v1/chat/completions", completion_window: "24h", metadata: { job: "sdk" },
});
check(created.object === "batch" && created.status === "validating" && created.metadata.job === "sdk", "batches.create");
let b = created;
for (let i = 0; i < 600 && !["completed", "failed", "expired", "cancelled"].includes(b.status); i++) {
  await new Promise((r) => setTimeout(r, 100));
  b = await c3.batches.retrieve(created.id);
}
check(b.status === "completed" && b.request_counts.total === 7 && b.request_counts.completed === 6 &&
      b.request_counts.failed === 1, `batch completed with counts (${b.status} ${JSON.stringify(b.request_counts)})`);
check(b.completed_at >= b.in_progress_at && b.in_progress_at >= b.created_at, "batch timestamps in order");
const out = await (await c3.files.content(b.output_file_id)).text();
const rows = out.trim().split("\n").map((l) => JSON.parse(l));
check(rows.length === 6 && new Set(rows.map((r) => r.custom_id)).size === 6 &&
      rows.every((r) => r.response.status_code === 200 && r.response.body.choices[0].message.content.length > 0),
      "files.content: every answer once");
const errs = (await (await c3.files.content(b.error_file_id)).text()).trim().split("\n").map((l) => JSON.parse(l));
check(errs.length === 1 && errs[0].error.code === "invalid_json" && errs[0].line === 7, "error file names the line");
const page = await c3.batches.list({ limit: 10 });
check(page.data.length === 1 && page.data[0].id === created.id, "batches.list");
await expectError(c3.batches.cancel(created.id), OpenAI.BadRequestError, 400, "a completed batch is not cancellable");
await expectError(c3.batches.retrieve("batch_../../etc/passwd"), OpenAI.BadRequestError, 400, "batch id traversal");
await expectError(c3.files.retrieve("file-0123456789abcdef01234567"), OpenAI.NotFoundError, 404, "unknown file");
const del = await c3.files.del(upload.id);
check(del.deleted === true, "files.del");
check(await stopServer(bs) === 0, "batch server exit 0");
rmSync(dataDir, { recursive: true, force: true });

console.log(`sdk: ${passed} passed, ${failed.length} failed`);
process.exit(failed.length ? 1 : 0);
