#!/usr/bin/env python3
"""Observability of `herd serve`, end to end on 127.0.0.1: /metrics counts
exactly the traffic sent (requests, tokens, histograms, rejections), in the
Prometheus text format (linted by promtool) and in OpenMetrics when asked;
vLLM's names mirror herd's and go away with --no-vllm-metrics; every metric
the Grafana dashboard and the alert rules name is exported; a real
Prometheus server scraping herd sees the same counts through its HTTP API;
and the logs (text and JSON) carry the request id on every line about a
request.

Usage: test_observability.py HERD_BINARY SOURCE_DIR
Prometheus and promtool come from Debian's prometheus package
(scripts/install-deps.sh); the parts that need them are skipped with a note
when they are absent.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herd_test  # noqa: E402
from herd_test import Server, chat, check, completion, free_port, stream  # noqa: E402

HERD, SRC = sys.argv[1], sys.argv[2]
herd_test.setup(HERD, SRC)

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Samples as (name, labels dict, value), and families' TYPE by name."""
    samples, types, helps = [], {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line.startswith("# HELP "):
            helps.add(line.split(" ", 3)[2])
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, line
            samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples, types, helps


def value(samples, name, **labels):
    """Sum of the samples of name whose labels include these."""
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in labels.items()))


def scrape(srv, accept=None):
    _, body, r = srv.request("GET", "/metrics", headers={"Accept": accept} if accept else None)
    text = body.decode() if isinstance(body, bytes) else json.dumps(body)
    return text, r.getheader("Content-Type")


# ------------------------------------------------------------- known traffic
srv = Server("--log-format", "json")
sent = {"requests": 0, "prompt": 0, "completion": 0, "choices_2plus": 0}


def account(usage, choices_tokens):
    sent["requests"] += 1
    sent["prompt"] += usage["prompt_tokens"]
    sent["completion"] += usage["completion_tokens"]
    sent["choices_2plus"] += sum(1 for t in choices_tokens if t >= 2)


for i in range(5):
    code, body, _ = srv.post("/v1/completions", completion(f"Once upon a time {i}", max_tokens=6 + i, ignore_eos=True))
    check(code == 200, f"completion {i}: {code}")
    account(body["usage"], [body["usage"]["completion_tokens"]])
for i in range(2):
    chunks, done = stream(srv, "/v1/chat/completions",
                          chat(f"Hello {i}", max_tokens=5, ignore_eos=True, stream_options={"include_usage": True}))
    usage = [c for c in chunks if c.get("usage")][-1]["usage"]
    account(usage, [usage["completion_tokens"]])
code, body, _ = srv.post("/v1/completions", completion("x", max_tokens="many"))
check(code == 400, f"a bad request is refused ({code})")

# the gauges are published at the top of the scheduler's next loop: wait for idle
deadline = time.time() + 10
while True:
    text, ctype = scrape(srv)
    samples, types, helps = parse(text)
    if value(samples, "herd_requests_running") == 0 or time.time() > deadline:
        break
    time.sleep(0.05)
check(ctype.startswith("text/plain; version=0.0.4"), f"Prometheus text format by default ({ctype})")
check(value(samples, "herd_request_success_total") == sent["requests"],
      f"requests finished: {value(samples, 'herd_request_success_total')} == {sent['requests']}")
check(value(samples, "herd_request_success_total", finished_reason="length") == sent["requests"],
      "all finished by length")
check(value(samples, "herd_prompt_tokens_total") == sent["prompt"],
      f"prompt tokens {value(samples, 'herd_prompt_tokens_total')} == usage {sent['prompt']}")
check(value(samples, "herd_generation_tokens_total") == sent["completion"],
      f"generated tokens {value(samples, 'herd_generation_tokens_total')} == usage {sent['completion']}")
for h in ("herd_time_to_first_token_seconds", "herd_e2e_request_latency_seconds", "herd_request_queue_time_seconds",
          "herd_request_prefill_time_seconds"):
    check(value(samples, h + "_count") == sent["requests"], f"{h}: one observation per request")
check(value(samples, "herd_inter_token_latency_seconds_count") == sent["completion"] - sent["requests"],
      "inter-token latency: one observation per token after each choice's first")
check(value(samples, "herd_time_per_output_token_seconds_count") == sent["choices_2plus"],
      "time per output token: one per choice of 2+ tokens")
check(value(samples, "herd_step_tokens_sum") >= sent["completion"], "step tokens cover the generated tokens")
check(abs(value(samples, "herd_step_duration_seconds_count") - value(samples, "herd_steps_total")) <= 1 and
      value(samples, "herd_steps_total") > 0, "a step duration per step")
check(value(samples, "herd_rejections_total", reason="bad_request") == 1, "the bad request counted")
check(value(samples, "herd_http_responses_total", code="2xx") >= sent["requests"], "2xx responses counted")
check(value(samples, "herd_requests_running") == 0 and value(samples, "herd_requests_waiting") == 0, "idle gauges")
check(value(samples, "herd_model_info", model_name=herd_test.NAME, arch="llama") == 1, "model info")
check(value(samples, "herd_build_info") == 1, "build info")
for p in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
          "process_start_time_seconds", "process_max_fds", "process_virtual_memory_bytes"):
    check(value(samples, p) > 0, f"{p} exported")
check(abs(value(samples, "process_start_time_seconds") - time.time()) < 600, "process start time is recent")

# histograms: cumulative buckets ending in +Inf == _count
names = {n[:-7] for n, _, _ in samples if n.endswith("_bucket")}
for h in sorted(names):
    series = {}
    for n, l, v in samples:
        if n == h + "_bucket":
            key = tuple(sorted((k, x) for k, x in l.items() if k != "le"))
            series.setdefault(key, []).append((l["le"], v))
    for key, buckets in series.items():
        counts = [v for _, v in buckets]
        ok = buckets[-1][0] == "+Inf" and counts == sorted(counts)
        ok = ok and counts[-1] == value(samples, h + "_count", **dict(key))
        check(ok, f"{h}{dict(key)}: cumulative buckets, +Inf == _count")
# every family has HELP and TYPE
untyped = sorted({n for n, _, _ in samples if n not in types and re.sub(r"_(bucket|sum|count)$", "", n) not in types})
unhelped = sorted({n for n, _, _ in samples if n not in helps and re.sub(r"_(bucket|sum|count)$", "", n) not in helps})
check(not untyped and not unhelped, f"every family has TYPE and HELP lines (missing: {untyped} {unhelped})")

# vLLM's names mirror herd's, labelled with the model name
for herd_name, vllm_name in (("herd_request_success_total", "vllm:request_success_total"),
                             ("herd_prompt_tokens_total", "vllm:prompt_tokens_total"),
                             ("herd_generation_tokens_total", "vllm:generation_tokens_total"),
                             ("herd_time_to_first_token_seconds_count", "vllm:time_to_first_token_seconds_count"),
                             ("herd_inter_token_latency_seconds_count", "vllm:inter_token_latency_seconds_count"),
                             ("herd_e2e_request_latency_seconds_count", "vllm:e2e_request_latency_seconds_count"),
                             ("herd_request_queue_time_seconds_count", "vllm:request_queue_time_seconds_count"),
                             ("herd_requests_running", "vllm:num_requests_running"),
                             ("herd_requests_waiting", "vllm:num_requests_waiting"),
                             ("herd_kv_cache_usage_ratio", "vllm:kv_cache_usage_perc"),
                             ("herd_kv_cache_usage_ratio", "vllm:gpu_cache_usage_perc"),
                             ("herd_preemptions_total", "vllm:num_preemptions_total"),
                             ("herd_prefix_cache_queries_total", "vllm:prefix_cache_queries_total"),
                             ("herd_prefix_cache_hits_total", "vllm:prefix_cache_hits_total")):
    check(any(n == vllm_name for n, _, _ in samples) and
          value(samples, vllm_name, model_name=herd_test.NAME) == value(samples, herd_name),
          f"{vllm_name} == {herd_name}")

# OpenMetrics when the scraper asks for it
om, om_type = scrape(srv, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
check(om_type.startswith("application/openmetrics-text; version=1.0.0"), f"OpenMetrics content type ({om_type})")
check(om.endswith("# EOF\n"), "OpenMetrics ends with # EOF")
check("# TYPE herd_prompt_tokens counter\n" in om and "\nherd_prompt_tokens_total " in om,
      "OpenMetrics names a counter family without _total")

# the dashboard and the alert rules name only exported metrics
exported = {re.sub(r"_(bucket|sum|count)$", "", n) for n, _, _ in samples} | {n for n, _, _ in samples}
exported |= {"up"}  # Prometheus's own
KEYWORDS = {"sum", "by", "rate", "histogram_quantile", "le", "job", "instance", "code", "reason", "priority",
            "finished_reason", "deriv", "and", "changes", "or", "on", "without", "avg", "max", "min", "count"}


def metric_names(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)           # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)            # selectors' labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)           # ranges
    expr = re.sub(r"\$__\w+|\$\w+", "", expr)        # Grafana variables
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in KEYWORDS}


dash = json.load(open(os.path.join(SRC, "deploy", "grafana", "herd-dashboard.json")))
dash_exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
dash_names = set().union(*(metric_names(e) for e in dash_exprs))
check(len(dash_exprs) >= 20 and len(dash_names) >= 20, f"the dashboard queries {len(dash_names)} metrics")
missing = sorted(dash_names - exported)
check(not missing, f"every metric the dashboard names is exported (missing: {missing})")
rules = open(os.path.join(SRC, "deploy", "prometheus", "herd-alerts.yml")).read()
rule_exprs = re.findall(r"expr: >\n((?:\s{10,}.*\n)+)|expr: (.*)\n", rules)
rule_names = set().union(*(metric_names(a or b) for a, b in rule_exprs))
missing = sorted(rule_names - exported)
check(len(rule_exprs) == 8 and not missing, f"every metric the alert rules name is exported (missing: {missing})")

# ---------------------------------------------------------------- logs
srv_log = open(srv.log.name).read().splitlines()
records = []
for line in srv_log:
    try:
        records.append(json.loads(line))
    except ValueError:
        check(False, f"--log-format json: a line that is not JSON: {line!r}")
check(records and all({"ts", "level", "msg"} <= set(r) for r in records), "every JSON line has ts, level, msg")
access = [r for r in records if r.get("msg") == "request"]
check(len(access) >= sent["requests"] + 1, f"an access line per request ({len(access)})")
check(all(re.fullmatch(r"[A-Za-z0-9._-]+", r.get("request_id", "")) for r in access), "access lines carry the id")
done = [r for r in access if r.get("path") == "/v1/completions" and r.get("status") == 200]
check(done and all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 and "ttft_ms" in r for r in done),
      "access lines carry tokens and TTFT")
code, _, r = srv.post("/v1/completions", completion("Hi", max_tokens=2), headers={"X-Request-Id": "my-req.42"})
check(r.getheader("X-Request-Id") == "my-req.42", "X-Request-Id echoed")
code, _, r = srv.post("/v1/completions", completion("Hi", max_tokens=2), headers={"X-Request-Id": "bad id/$"})
check(re.fullmatch(r"req-[0-9a-f]+-\d+", r.getheader("X-Request-Id") or ""), "an unsafe X-Request-Id is replaced")

# ------------------------------------------- promtool lints the exposition
promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
if promtool:
    lint = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    problems = [l for l in lint.stdout.decode().splitlines() + lint.stderr.decode().splitlines()
                if l.strip() and "should not contain ':'" not in l]
    check(not problems, f"promtool check metrics: only vLLM's colons noted ({problems})")
else:
    print("note: promtool is absent (Debian package prometheus): lint skipped")

# ------------------------------- a real Prometheus scraping herd on 127.0.0.1
if prometheus:
    tmp = tempfile.mkdtemp(prefix="herd-prom-")
    pport = free_port()
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "scrape_configs:\n  - job_name: herd\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{srv.port}']}}]\n")
    plog = open(os.path.join(tmp, "prometheus.log"), "w")
    prom = subprocess.Popen([prometheus, "--config.file", os.path.join(tmp, "prometheus.yml"),
                             "--storage.tsdb.path", os.path.join(tmp, "data"),
                             "--web.listen-address", f"127.0.0.1:{pport}"], stdout=plog, stderr=plog)

    def query(q):
        url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                res = json.load(r)["data"]["result"]
            return float(res[0]["value"][1]) if res else None
        except OSError:
            return None

    def wait_for(q, want, seconds=60):
        deadline, got = time.time() + seconds, None
        while time.time() < deadline:
            got = query(q)
            if got == want:
                break
            time.sleep(0.5)
        return got

    try:
        got = wait_for('up{job="herd"}', 1.0)
        check(got == 1.0, f"Prometheus sees the herd target up ({got})")
        # more known traffic after the first scrape
        before = {"requests": sent["requests"], "completion": sent["completion"]}
        for i in range(3):
            code, body, _ = srv.post("/v1/completions", completion(f"The end {i}", max_tokens=4, ignore_eos=True))
            account(body["usage"], [body["usage"]["completion_tokens"]])
        n_done = sent["requests"] + 2  # the two X-Request-Id probes above finished too
        got = wait_for('sum(herd_request_success_total{job="herd"})', float(n_done))
        check(got == n_done, f"Prometheus: requests finished {got} == {n_done}")
        got = wait_for('sum(vllm:request_success_total{job="herd"})', float(n_done))
        check(got == n_done, f"Prometheus: vllm:request_success_total {got} == {n_done}")
        got = query('sum(herd_e2e_request_latency_seconds_count{job="herd"})')
        check(got == n_done, f"Prometheus: e2e latency observations {got} == {n_done}")
        got = query('herd_generation_tokens_total{job="herd"}')
        check(got is not None and got >= sent["completion"] and got - before["completion"] >= 12,
              f"Prometheus: generated tokens {got} (sent {sent['completion']} + 2 probes)")
        got = query('herd_rejections_total{job="herd",reason="bad_request"}')
        check(got == 1, f"Prometheus: one bad request ({got})")
    finally:
        prom.terminate()
        try:
            prom.wait(20)
        except subprocess.TimeoutExpired:
            prom.kill()
        shutil.rmtree(tmp, ignore_errors=True)
else:
    print("note: prometheus is absent (Debian package prometheus): the scrape test skipped")
srv.stop()

# ---------------------------------- --no-vllm-metrics: herd's names only, lint clean
srv = Server("--no-vllm-metrics", "--log-format", "text", "--log-level", "warn", "--port", str(free_port()))
srv.post("/v1/completions", completion("Hi", max_tokens=2))
text, _ = scrape(srv)
check("vllm:" not in text and "herd_request_success_total" in text, "--no-vllm-metrics leaves vLLM's names out")
if promtool:
    lint = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    check(lint.returncode == 0, f"promtool check metrics is clean: {lint.stdout.decode()}{lint.stderr.decode()}")
srv.stop()
check(not any("request" in l and "INFO" in l for l in open(srv.log.name)), "--log-level warn: no access lines")

herd_test.finish("observability")
