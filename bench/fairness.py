#!/usr/bin/env python3
"""Fairness under a long prompt (issue: herd serve). 16 clients stream long
answers; once they are flowing, a 2,000-token prompt arrives. Measures
every stream's gaps between tokens: the median gap before the long prompt
(a decode step) and the largest gap while the long prompt is being
admitted (from its arrival until its first token). Target: the largest gap
is at most 3x the median step. Writes bench/results/fairness-<date>.json.

Usage: bench/fairness.py HERD MODEL.gguf [--threads N] [extra herd serve flags]
"""
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

herd, model = sys.argv[1], sys.argv[2]
extra = sys.argv[3:]
log = tempfile.NamedTemporaryFile("w+", delete=False)
proc = subprocess.Popen([herd, "serve", "-m", model, "--port", "0", "--max-seqs", "17", "-q", *extra],
                        stdout=subprocess.DEVNULL, stderr=log)
port = None
for _ in range(600):
    m = re.search(r"on http://127\.0\.0\.1:(\d+)", open(log.name).read())
    if m:
        port = int(m.group(1))
        break
    time.sleep(0.1)
assert port, open(log.name).read()
for _ in range(600):  # the model loads after the port opens
    try:
        c0 = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c0.request("GET", "/health")
        if c0.getresponse().status == 200:
            break
    except OSError:
        pass
    time.sleep(0.1)

conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
conn.request("GET", "/v1/models")
name = json.loads(conn.getresponse().read())["data"][0]["id"]
conn.close()

arrivals = [[] for _ in range(16)]
start = threading.Event()


def stream_client(i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"model": name, "prompt": [100 + i, 101, 102, 103], "max_tokens": 300, "ignore_eos": True,
            "temperature": 0, "stream": True}
    c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    while True:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: {") and b'"text":"' in line:
            arrivals[i].append(time.time())
            if len(arrivals[i]) == 20:
                start.set()
    c.close()


threads = [threading.Thread(target=stream_client, args=(i,)) for i in range(16)]
for t in threads:
    t.start()
start.wait(120)
time.sleep(1.0)
long_submit = time.time()
c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
body = {"model": name, "prompt": [100 + (k * 7) % 300 for k in range(2000)], "max_tokens": 4, "temperature": 0,
        "stream": True}
c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
r = c.getresponse()
long_first = None
while True:
    line = r.readline()
    if not line:
        break
    if long_first is None and line.startswith(b"data: {") and b'"text":"' in line:
        long_first = time.time()
c.close()
for t in threads:
    t.join(600)
proc.terminate()
proc.wait(30)

before, during = [], []
for a in arrivals:
    for x, y in zip(a, a[1:]):
        if y <= long_submit:
            before.append(y - x)
        elif x < long_first:
            during.append(y - x)
before.sort()
median_step = before[len(before) // 2]
worst = max(during) if during else 0
before_sorted, during_sorted = sorted(before), sorted(during)
print(f"| gaps before: p90 {before_sorted[int(len(before)*0.9)]*1e3:.1f} ms, max {before_sorted[-1]*1e3:.1f} ms; during: "
      f"p50 {during_sorted[len(during)//2]*1e3:.1f} ms, p90 {during_sorted[int(len(during)*0.9)]*1e3:.1f} ms |")
res = {"model": os.path.basename(model), "serve_flags": extra, "streams": 16, "long_prompt_tokens": 2000,
       "median_step_ms": median_step * 1e3, "max_gap_during_admission_ms": worst * 1e3,
       "ratio": worst / median_step, "target_ratio": 3.0, "long_prompt_ttft_s": long_first - long_submit}
print(f"| median decode step | {median_step * 1e3:.1f} ms |")
print(f"| largest stream gap while the 2,000-token prompt is admitted | {worst * 1e3:.1f} ms |")
print(f"| ratio | {res['ratio']:.2f} (target <= 3) |")
print(f"| long prompt TTFT | {res['long_prompt_ttft_s']:.2f} s |")
stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
os.makedirs("bench/results", exist_ok=True)
out = f"bench/results/fairness-{stamp}.json"
json.dump(res, open(out, "w"), indent=1)
print("wrote", out)
