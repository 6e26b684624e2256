// The rendered manifests against the real binary: every probe path the
// Deployments name answers 200 on the port they name, every metric the HPA,
// the prometheus-adapter rule, the KEDA trigger and the alert rules name is
// in /metrics, and the container args themselves are accepted: each distinct
// engine and router command line from the overlays runs as written, with
// only the model path, the address and the port swapped for local ones
// (port 0: a free one), and each drains and exits 0 on SIGTERM.
// Usage: node served.mjs HERD MODEL RENDERED.yaml...
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, basename } from "node:path";
import { parseAllDocuments, parse } from "yaml";

const [herd, model, ...files] = process.argv.slice(2);
if (!herd || !model || files.length === 0) {
  console.error("usage: node served.mjs HERD MODEL RENDERED.yaml...");
  process.exit(2);
}
let failures = 0;
const fail = (msg) => {
  failures++;
  console.error(`FAIL ${msg}`);
};
const deadline = Date.now() + 100_000; // the whole test, whatever hangs
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- what the manifests name ----
const workloads = []; // {overlay, kind, name, container, podLabels}
const services = [];
const metricNames = new Map(); // name -> where it is named
const METRIC_RE = /\b(herd_[a-z0-9_]+|vllm:[a-z0-9_:]+|process_[a-z0-9_]+)/g;
const nameMetrics = (text, where) => {
  for (const m of String(text).matchAll(METRIC_RE)) if (!metricNames.has(m[1])) metricNames.set(m[1], where);
};
for (const file of files) {
  const overlay = basename(file, ".yaml");
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const o = doc.toJS();
    if (!o) continue;
    const where = `${overlay} ${o.kind}/${o.metadata.name}`;
    const pod =
      o.kind === "Deployment" || o.kind === "Job"
        ? o.spec.template
        : o.kind === "CronJob"
          ? o.spec.jobTemplate.spec.template
          : null;
    if (pod)
      for (const c of pod.spec.containers)
        workloads.push({ overlay, kind: o.kind, name: o.metadata.name, c, labels: pod.metadata?.labels || {} });
    if (o.kind === "Service") services.push({ overlay, o });
    if (o.kind === "HorizontalPodAutoscaler")
      for (const m of o.spec.metrics || []) nameMetrics(JSON.stringify(m), where);
    if (o.kind === "ScaledObject") for (const t of o.spec.triggers) nameMetrics(t.metadata?.query, where);
    if (o.kind === "PrometheusRule")
      for (const g of o.spec.groups) for (const r of g.rules) nameMetrics(r.expr, `${where} ${r.alert || r.record}`);
    if (o.kind === "ConfigMap" && o.data?.["config.yaml"]) {
      const cfg = parse(o.data["config.yaml"]);
      for (const r of cfg.rules || []) nameMetrics(r.seriesQuery, where);
    }
  }
}
if (metricNames.size === 0) fail("no metric names found in the manifests (HPA, KEDA, rules, adapter)");

// ---- static agreement: probes, ports, args, Services ----
const argValue = (args, flag) => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
};
const portNumber = (c, port) =>
  typeof port === "number" ? port : (c.ports || []).find((p) => p.name === port)?.containerPort;
for (const w of workloads) {
  const args = w.c.args || [];
  const where = `${w.overlay} ${w.kind}/${w.name}`;
  const listen = argValue(args, "--port");
  for (const p of w.c.ports || [])
    if (listen !== undefined && String(p.containerPort) !== listen)
      fail(`${where}: containerPort ${p.containerPort} but --port ${listen}`);
  for (const kind of ["startupProbe", "livenessProbe", "readinessProbe"]) {
    const pr = w.c[kind];
    if (!pr) {
      if (args[0] !== "batch") fail(`${where}: no ${kind}`);
      continue;
    }
    const n = portNumber(w.c, pr.httpGet?.port);
    if (!n) fail(`${where}: ${kind} port ${pr.httpGet?.port} is no container port`);
    else if (listen !== undefined && String(n) !== listen) fail(`${where}: ${kind} on ${n} but --port ${listen}`);
  }
}
for (const { overlay, o } of services) {
  const sel = o.spec.selector || {};
  const targets = workloads.filter(
    (w) => w.overlay === overlay && Object.entries(sel).every(([k, v]) => w.labels[k] === v),
  );
  if (targets.length === 0) fail(`${overlay} Service/${o.metadata.name} selects no pod`);
  for (const p of o.spec.ports)
    for (const w of targets)
      if (!portNumber(w.c, p.targetPort ?? p.port))
        fail(`${overlay} Service/${o.metadata.name}: targetPort ${p.targetPort} is no port of ${w.name}`);
}

// ---- the binary ----
const tmp = mkdtempSync(join(tmpdir(), "herd-k8s-"));
const children = new Set();
const cleanup = () => {
  for (const ch of children) ch.kill("SIGKILL");
  rmSync(tmp, { recursive: true, force: true });
};
process.on("exit", cleanup);

// The container's args with local substitutes: $(VAR) from its env (the
// model path replaced), the address 127.0.0.1, the port 0, extra swaps.
function localArgs(w, swaps = {}) {
  const env = Object.fromEntries((w.c.env || []).map((e) => [e.name, e.value]));
  env.HERD_MODEL = model;
  Object.assign(env, swaps.env || {});
  const args = (w.c.args || []).map((a) => a.replace(/\$\(([A-Z_]+)\)/g, (_, v) => env[v] ?? `$(${v})`));
  const set = (flag, v) => {
    const i = args.indexOf(flag);
    if (i >= 0) args[i + 1] = v;
  };
  set("--host", "127.0.0.1");
  set("--port", "0");
  for (const [flag, v] of Object.entries(swaps.flags || {})) set(flag, v);
  return args;
}

// Starts herd ARGS; resolves with {child, port} once stderr shows the
// address (pattern's group 1), or rejects.
function start(args, pattern, label) {
  return new Promise((resolve, reject) => {
    const child = spawn(herd, args, { stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let log = "";
    const timer = setTimeout(() => reject(new Error(`${label}: no address within 20 s\n${log}`)), 20_000);
    const onData = (d) => {
      log += d;
      const m = log.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]), log: () => log });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => {
      clearTimeout(timer);
      children.delete(child);
      reject(new Error(`${label}: exited ${code} before listening: ${args.join(" ")}\n${log}`));
    });
  });
}

async function get(port, path, accept = 200) {
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5000) });
      const body = await r.text();
      if (r.status === accept || Date.now() > deadline) return { status: r.status, body };
    } catch (e) {
      if (Date.now() > deadline) return { status: 0, body: String(e) };
    }
    await sleep(100);
  }
}

function stop(proc, label) {
  return new Promise((resolve) => {
    if (proc.child.exitCode !== null) {
      fail(`${label} had already exited (${proc.child.exitCode})`);
      return resolve();
    }
    const timer = setTimeout(() => {
      fail(`${label} did not exit within 10 s of SIGTERM`);
      proc.child.kill("SIGKILL");
    }, 10_000);
    proc.child.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) fail(`${label} exited ${code} after SIGTERM`);
      resolve();
    });
    proc.child.kill("SIGTERM");
  });
}

// /metrics text has NAME as a series (NAME or NAME{...}) or a family (# TYPE NAME)
const exposes = (text, name) =>
  text.split("\n").some((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`) || l === `# TYPE ${name}` ||
    l.startsWith(`# TYPE ${name} `));

const probes = (w) =>
  ["startupProbe", "livenessProbe", "readinessProbe"].map((k) => w.c[k]?.httpGet?.path).filter(Boolean);
const distinct = (ws) => [...new Map(ws.map((w) => [JSON.stringify(w.c.args), w])).values()];
const engines = distinct(workloads.filter((w) => w.c.args?.[0] === "serve"));
const routers = distinct(workloads.filter((w) => w.c.args?.[0] === "route"));
const batches = distinct(workloads.filter((w) => w.c.args?.[0] === "batch"));
if (engines.length === 0) fail("no herd serve container in the manifests");
if (routers.length === 0) fail("no herd route container in the manifests");

try {
  const engineMetrics = [...metricNames.keys()].filter((n) => !n.startsWith("herd_router_"));
  const routerMetrics = [...metricNames.keys()].filter((n) => n.startsWith("herd_router_"));
  let firstEngine = null;
  for (const w of engines) {
    const label = `${w.overlay} ${w.name} (herd ${localArgs(w).join(" ")})`;
    const e = await start(localArgs(w), /ready: .* on http:\/\/127\.0\.0\.1:(\d+)/, label);
    for (const path of probes(w)) {
      const r = await get(e.port, path);
      if (r.status !== 200) fail(`${label}: GET ${path} -> ${r.status}`);
    }
    const c = await fetch(`http://127.0.0.1:${e.port}/v1/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: basename(model, ".gguf"), prompt: "Once upon", max_tokens: 4 }),
    });
    if (c.status !== 200) fail(`${label}: a completion got ${c.status}`);
    const m = await get(e.port, "/metrics");
    for (const name of engineMetrics)
      if (!exposes(m.body, name)) fail(`${label}: /metrics has no ${name} (named by ${metricNames.get(name)})`);
    if (!firstEngine) firstEngine = e;
    else await stop(e, label);
  }
  for (const w of routers) {
    const args = localArgs(w, { flags: { "--backends-dns": `127.0.0.1:${firstEngine.port}` } });
    const label = `${w.overlay} ${w.name} (herd ${args.join(" ")})`;
    const r = await start(args, /routing \([a-z-]+\) on http:\/\/127\.0\.0\.1:(\d+)/, label);
    for (const path of probes(w)) {
      const g = await get(r.port, path);
      if (g.status !== 200) fail(`${label}: GET ${path} -> ${g.status}`);
    }
    const m = await get(r.port, "/metrics");
    if (!exposes(m.body, "herd_router_replicas_up")) fail(`${label}: /metrics has no herd_router_* series`);
    for (const name of routerMetrics)
      if (!exposes(m.body, name)) fail(`${label}: /metrics has no ${name} (named by ${metricNames.get(name)})`);
    await stop(r, label);
  }
  if (firstEngine) await stop(firstEngine, "the first engine");

  // herd batch (issue 18's interface): run each Job's args on a one-line file
  const hasBatch = spawnSync(herd, ["batch", "--help"]).status === 0;
  if (!hasBatch && batches.length)
    console.log(`note: this herd has no batch command yet: ${batches.length} batch command line(s) not run`);
  for (const w of hasBatch ? batches : []) {
    const env = { JOB_COMPLETION_INDEX: "0", SHARDS: "1" };
    const args = localArgs(w, { env }).map((a) => a.replace(/^\/data\//, `${tmp}/`));
    for (const a of args) if (a.startsWith(tmp) && a.includes("/nightly/")) spawnSync("mkdir", ["-p", join(tmp, "nightly")]);
    const input = args[args.indexOf("--input") + 1];
    writeFileSync(
      input,
      JSON.stringify({ custom_id: "a", method: "POST", url: "/v1/completions",
        body: { model: basename(model, ".gguf"), prompt: "Once", max_tokens: 2 } }) + "\n",
    );
    const r = spawnSync(herd, args, { encoding: "utf8", timeout: 30_000 });
    if (r.status !== 0) fail(`${w.overlay} ${w.name}: herd ${args.join(" ")} exited ${r.status}\n${r.stderr}`);
  }
} catch (e) {
  fail(e.message);
}
cleanup();
if (failures) {
  console.error(`${failures} failure(s)`);
  process.exit(1);
}
console.log(
  `ok: ${engines.length} engine and ${routers.length} router command lines run; probes answer; ` +
    `${metricNames.size} metric names served: ${[...metricNames.keys()].join(", ")}`,
);
