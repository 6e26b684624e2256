// Tool calling through herd serve with the official openai npm SDK as the
// client, for each family's call format (a Hermes/Qwen, a Llama 3.x, a
// Mistral and a marker-less template from tests/data/templates; with
// ../shared also the real Qwen2.5, Llama 3.1 and Mistral Nemo templates):
// tool_choice "required" and a named function (the call parses and its
// arguments validate with ajv against the function's parameters), the
// same streamed (tool_call deltas accumulated as the SDK's users do), a
// multi-turn conversation with the tool's result rendered back, "none",
// and bad tool requests as the SDK's BadRequestError. The model is a
// random-weight `herd synth` file: left alone it writes anything, so every
// call that parses was made so by the constraint.
// Usage: node tools_test.mjs HERD_BINARY SOURCE_DIR SHARED_DIR
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Ajv from "ajv";
import OpenAI from "openai";
import { startServer as startHerd, stopServer } from "./herd_server.mjs";

const [herd, src, shared] = process.argv.slice(2);
const tmp = mkdtempSync(join(tmpdir(), "herd-tools-"));
const ajv = new Ajv({ strict: false });
let passed = 0;
const failed = [];
function check(cond, what) {
  if (cond) passed++;
  else {
    failed.push(what);
    console.error("FAIL:", what);
  }
}

const model = join(tmp, "tiny.gguf");
const synth = spawnSync(herd, ["synth", "--shape", "tiny", "-o", model], { encoding: "utf8" });
if (synth.status !== 0) throw new Error("herd synth: " + synth.stderr);

function startServer(template) {
  return startHerd(herd, model, ["--ctx", "4096", "--chat-template", template]);
}

const TOOLS = [
  { type: "function", function: { name: "get_weather", description: "Weather in a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 12 },
                                                unit: { enum: ["C", "F"] } },
                  required: ["city", "unit"], additionalProperties: false } } },
  { type: "function", function: { name: "add", description: "Add two integers",
    parameters: { type: "object", properties: { a: { type: "integer", minimum: 0, maximum: 99 },
                                                b: { type: "integer", minimum: 0, maximum: 99 } },
                  required: ["a", "b"], additionalProperties: false } } },
  { type: "function", function: { name: "now", description: "The time, no arguments" } },
];
const byName = Object.fromEntries(TOOLS.map((t) => [t.function.name, t.function]));

function validCall(call, want) {
  const fn = byName[call?.function?.name];
  // OpenAI's "call_" and 24 characters; Mistral's templates take 9 alphanumerics only
  if (!fn || (want && call.function.name !== want) || !/^(call_[A-Za-z0-9]{24}|[A-Za-z0-9]{9})$/.test(call.id || ""))
    return false;
  let args;
  try {
    args = JSON.parse(call.function.arguments);
  } catch {
    return false;
  }
  return ajv.validate(fn.parameters || { type: "object" }, args);
}

async function testTemplate(name, template) {
  const srv = await startServer(template);
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${srv.port}/v1`, apiKey: "none", maxRetries: 0 });
  const ask = [{ role: "user", content: "What is the weather in Paris, and what is 2 + 3?" }];
  try {
    for (let seed = 0; seed < 4; seed++) {
      const r = await client.chat.completions.create({ model: "tiny", messages: ask, tools: TOOLS,
        tool_choice: "required", temperature: 1, seed, max_tokens: 120 });
      const c = r.choices[0];
      check(c.finish_reason === "tool_calls" && c.message.tool_calls?.length === 1 &&
            validCall(c.message.tool_calls[0]) && c.message.content === null,
            `${name}: required, seed ${seed}: ${JSON.stringify(c.message)}`);
    }
    for (const fname of ["add", "now", "get_weather"]) {
      const r = await client.chat.completions.create({ model: "tiny", messages: ask, tools: TOOLS,
        tool_choice: { type: "function", function: { name: fname } }, temperature: 0.8, seed: 9, max_tokens: 120 });
      const c = r.choices[0];
      check(c.finish_reason === "tool_calls" && validCall(c.message.tool_calls?.[0], fname),
            `${name}: named ${fname}: ${JSON.stringify(c.message)}`);
    }
    // streamed: accumulate the deltas by index
    const stream = await client.chat.completions.create({ model: "tiny", messages: ask, tools: TOOLS,
      tool_choice: { type: "function", function: { name: "add" } }, stream: true, max_tokens: 120 });
    const acc = [];
    let finish = null, heads = 0, finishAlone = false;
    for await (const chunk of stream) {
      const ch = chunk.choices[0];
      if (!ch) continue;
      if (ch.finish_reason === "tool_calls") finishAlone = !ch.delta?.tool_calls && !ch.delta?.content;
      for (const d of ch.delta?.tool_calls || []) {
        // OpenAI's order: id, type and name with empty arguments first
        if (d.id) heads += d.type === "function" && d.function?.name && d.function.arguments === "" ? 1 : 0;
        acc[d.index] ??= { id: "", type: "function", function: { name: "", arguments: "" } };
        if (d.id) acc[d.index].id = d.id;
        if (d.function?.name) acc[d.index].function.name += d.function.name;
        if (d.function?.arguments) acc[d.index].function.arguments += d.function.arguments;
      }
      finish = ch.finish_reason || finish;
    }
    check(finish === "tool_calls" && acc.length === 1 && validCall(acc[0], "add"),
          `${name}: streamed named call: ${JSON.stringify(acc)} ${finish}`);
    check(heads === 1 && finishAlone, `${name}: streamed as OpenAI does (head delta, arguments, finish alone)`);
    // the tool's result rendered back through the template, then an answer in words
    const call = { id: "abcDEF123", type: "function", function: { name: "add", arguments: "{\"a\":2,\"b\":3}" } };
    const r2 = await client.chat.completions.create({ model: "tiny", tools: TOOLS, tool_choice: "none", max_tokens: 8,
      messages: [...ask, { role: "assistant", content: null, tool_calls: [call] },
                 { role: "tool", tool_call_id: "abcDEF123", content: "5" }] });
    check(typeof r2.choices[0].message.content === "string" && !r2.choices[0].message.tool_calls &&
          ["stop", "length"].includes(r2.choices[0].finish_reason), `${name}: a turn after the tool's result`);
    // bad requests, as the SDK's own error class
    const bad = [
      [{ tool_choice: { type: "function", function: { name: "nope" } } }, "not among the tools"],
      [{ tools: [{ type: "function", function: { name: "bad name!" } }] }, "name"],
      [{ tools: [{ type: "function", function: { name: "f", parameters: { type: "string", pattern: "x" } } }],
         tool_choice: "required" }, "'pattern' cannot be enforced"],
      [{ tools: [], tool_choice: "required" }, "needs 'tools'"],
      [{ tool_choice: "required", response_format: { type: "json_object" } }, "cannot be combined"],
    ];
    for (const [extra, words] of bad) {
      try {
        await client.chat.completions.create({ model: "tiny", messages: ask, tools: TOOLS, max_tokens: 4, ...extra });
        check(false, `${name}: ${JSON.stringify(extra)} should be refused`);
      } catch (e) {
        check(e instanceof OpenAI.BadRequestError && e.message.includes(words),
              `${name}: ${JSON.stringify(extra)} -> ${e.constructor.name}: ${e.message}`);
      }
    }
  } finally {
    await stopServer(srv);
  }
}

const templates = ["hermes", "llama3", "mistral", "generic"].map((n) => [n, join(src, "tests/data/templates", n + ".jinja")]);
const fixtures = join(shared, "fixtures", "chat", "templates.json");
if (existsSync(fixtures)) {
  for (const t of JSON.parse(readFileSync(fixtures, "utf8")).templates) {
    if (["Qwen-Qwen2.5-7B-Instruct", "meta-llama-Llama-3.1-8B-Instruct", "mistralai-Mistral-Nemo-Instruct-2407"]
        .includes(t.name)) {
      const f = join(tmp, t.name + ".jinja");
      writeFileSync(f, t.template);
      templates.push([t.name, f]);
    }
  }
} else {
  console.log(`note: ${fixtures} is absent: the real families' templates are not tried`);
}
try {
  for (const [name, file] of templates) await testTemplate(name, file);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(`tools: ${passed} passed, ${failed.length} failed`);
for (const f of failed) console.log("  FAILED:", f);
process.exit(failed.length ? 1 : 0);
