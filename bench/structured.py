#!/usr/bin/env python3
"""Serving throughput with and without constrained decoding, side by side:
C clients (default 16) send chat requests to one `herd serve` for S seconds
per phase, alternating unconstrained and json_schema phases R times
(default 3), and the table gives completion tokens/s per phase and the
median ratio. The schema is a story object with a long string, so the
constrained answers run to max_tokens as the free ones do (ignore_eos).
Writes bench/results/structured-<UTC time>.json.

usage: bench/structured.py -m MODEL.gguf [--herd build/bin/herd] [--clients 16] [--seconds 20] [--reps 3]
       [--max-tokens 64] [--threads N]"""
import argparse
import datetime
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("-m", "--model", required=True)
ap.add_argument("--herd", default=os.path.join(here, "..", "build", "bin", "herd"))
ap.add_argument("--clients", type=int, default=16)
ap.add_argument("--seconds", type=float, default=20)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--max-tokens", type=int, default=64)
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--story-max-length", type=int, default=0,
                help="bound the story string (maxLength): each character is then a state of its own")
a = ap.parse_args()

SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                           "story": {"type": "string"},
                                           "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["title", "story", "rating"], "additionalProperties": False}
if a.story_max_length:
    SCHEMA["properties"]["story"]["maxLength"] = a.story_max_length

args = [a.herd, "serve", "-m", a.model, "--port", "0", "--max-seqs", str(a.clients), "-q"]
if a.threads:
    args += ["--threads", str(a.threads)]
proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
port = None
deadline = time.time() + 120
log = ""
while time.time() < deadline and port is None:
    line = proc.stderr.readline()
    log += line
    m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
    if m:
        port = int(m.group(1))
if port is None:
    sys.exit("herd serve did not start: " + log)
threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
name = os.path.splitext(os.path.basename(a.model))[0]


def post(body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    return r.status, j


while time.time() < deadline:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/health")
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    time.sleep(0.2)


def phase(constrained):
    stop = time.time() + a.seconds
    tokens, requests, errors = [0], [0], [0]
    lock = threading.Lock()

    def client(k):
        seed = k * 100000
        while time.time() < stop:
            body = {"model": name, "messages": [{"role": "user", "content": "Tell me a story, number %d." % seed}],
                    "max_tokens": a.max_tokens, "temperature": 0.8, "seed": seed}
            if constrained:
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "story", "schema": SCHEMA}}
            else:
                body["ignore_eos"] = True
            seed += 1
            st, j = post(body)
            with lock:
                if st == 200:
                    tokens[0] += j["usage"]["completion_tokens"]
                    requests[0] += 1
                else:
                    errors[0] += 1
    t0 = time.time()
    ts = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.time() - t0
    return {"constrained": constrained, "tokens_per_second": tokens[0] / dt, "requests": requests[0],
            "errors": errors[0], "seconds": dt}


try:
    post({"model": name, "messages": [{"role": "user", "content": "warm up"}], "max_tokens": 8,
          "response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": SCHEMA}}})
    phases = []
    for r in range(a.reps):
        for constrained in (False, True):
            p = phase(constrained)
            phases.append(p)
            print("rep %d %-13s %8.1f tokens/s, %d requests, %d errors" % (
                r + 1, "json_schema" if constrained else "unconstrained", p["tokens_per_second"], p["requests"],
                p["errors"]), file=sys.stderr)
finally:
    proc.terminate()
    proc.wait(timeout=60)
free = [p["tokens_per_second"] for p in phases if not p["constrained"]]
cons = [p["tokens_per_second"] for p in phases if p["constrained"]]
ratios = [c / f for f, c in zip(free, cons)]
print("| model | clients | unconstrained tokens/s (median) | json_schema tokens/s (median) | ratio (median of pairs) |")
print("| --- | --- | --- | --- | --- |")
print("| %s | %d | %.1f | %.1f | %.3f |" % (name, a.clients, statistics.median(free), statistics.median(cons),
                                            statistics.median(ratios)))
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
out = os.path.join(here, "results", "structured-%s.json" % stamp)
with open(out, "w") as f:
    json.dump({"model": a.model, "clients": a.clients, "seconds": a.seconds, "max_tokens": a.max_tokens,
               "schema": SCHEMA,
               "phases": phases, "ratio_median": statistics.median(ratios)}, f, indent=1)
print("wrote " + out, file=sys.stderr)
