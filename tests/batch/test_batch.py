#!/usr/bin/env python3
"""herd batch run / merge end to end (RELIABILITY rows G1-G3 for the CLI):
answers and errors in OpenAI's batch output shape, bad lines one by one,
resume after kill -9 at random moments, shards merged equal to one run, a
changed input refused, a full disk and a removed output directory stopping
the job with every written line whole.

Usage: test_batch.py HERD SRC"""
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERD, SRC = sys.argv[1], sys.argv[2]
MODEL = os.path.join(SRC, "models", "stories260K.gguf")
NAME = "stories260K"
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print("FAIL:", what, flush=True)


def run(*args, limit_fsize=None, timeout=300):
    def pre():
        if limit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))
    return subprocess.run([HERD, "batch", *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=pre)


def batch(*args, **kw):
    return run("run", "-m", MODEL, "--threads", "1", "-q", *args, **kw)


def request(i, tokens=24):
    """A greedy line, chat or completion by parity (greedy: the same text
    whatever else runs beside it)."""
    if i % 2:
        body = {"model": NAME, "prompt": f"Once upon a time {i}", "max_tokens": tokens, "temperature": 0}
        return {"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions", "body": body}
    body = {"model": NAME, "messages": [{"role": "user", "content": f"Tell me about {i}"}], "max_tokens": tokens,
            "temperature": 0}
    return {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def write_input(path, n, tokens=24, extra=()):
    lines = [json.dumps(request(i, tokens)) for i in range(n)]
    for at, text in extra:
        lines.insert(at, text)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    data = open(path, "rb").read()
    assert not data or data.endswith(b"\n"), f"{path} ends with a torn line"
    return [json.loads(l) for l in data.split(b"\n") if l.strip()]


def texts(rows):
    """custom_id -> generated text, for the answered rows."""
    out = {}
    for r in rows:
        b = r["response"]["body"]
        c = b["choices"][0]
        out[r["custom_id"]] = c["message"]["content"] if "message" in c else c["text"]
    return out


work = tempfile.mkdtemp(prefix="herd-batch-")
try:
    # ------------------------------------------------ shapes and bad lines (G3)
    inp = os.path.join(work, "in.jsonl")
    out = os.path.join(work, "out.jsonl")
    err = os.path.join(work, "err.jsonl")
    big = json.dumps({"custom_id": "huge", "method": "POST", "url": "/v1/completions",
                      "body": {"model": NAME, "prompt": "x" * (10 << 20)}})
    bad = [(2, "{not json"), (3, json.dumps({"method": "POST", "url": "/v1/completions", "body": {}})),
           (4, json.dumps(request(1))), (5, json.dumps({**request(100), "url": "/v1/embeddings"})),
           (6, json.dumps({**request(101), "body": {**request(101)["body"], "model": "gpt-4o"}})),
           (7, json.dumps({**request(103), "body": {"model": NAME, "prompt": "x " * 3000}})),
           (8, big), (9, ""), (10, '{"custom_id": "latin1", "body": "caf\xe9"}')]
    lines = write_input(inp, 12, extra=bad)
    # the non-UTF-8 line: rewrite it as Latin-1 bytes
    raw = open(inp, "rb").read().replace("caf\xe9".encode(), b"caf\xe9")
    open(inp, "wb").write(raw[:-1])  # and no trailing newline
    r = batch("-i", inp, "-o", out, "-e", err)
    check(r.returncode == 0, f"a job with bad lines finishes with exit 0 ({r.returncode}: {r.stderr[-400:]})")
    answers, errors = read_jsonl(out), read_jsonl(err)
    check(sorted(a["custom_id"] for a in answers) == sorted(f"c{i}" for i in range(12)),
          "every good line is answered once")
    a0 = answers[0]
    check(set(a0) == {"id", "custom_id", "response", "error"} and a0["error"] is None and
          a0["response"]["status_code"] == 200 and a0["id"].startswith("batch_req_") and
          a0["response"]["request_id"].startswith("req_") and "usage" in a0["response"]["body"],
          f"answer lines have OpenAI's batch output shape ({a0})")
    by_line = {e["line"]: e for e in errors}
    check(sorted(by_line) == [3, 4, 5, 6, 7, 8, 9, 11], f"one error per bad line, by line number ({sorted(by_line)})")
    check(by_line[3]["error"]["code"] == "invalid_json" and "line 3" in by_line[3]["error"]["message"],
          "invalid JSON: an error with its line number")
    check(by_line[4]["error"]["code"] == "missing_custom_id", "a line without custom_id")
    check(by_line[5]["error"]["code"] == "duplicate_custom_id" and by_line[5]["custom_id"] == "c1",
          "a repeated custom_id")
    check(by_line[6]["error"]["code"] == "invalid_url", "an unknown url")
    check(by_line[7]["response"]["status_code"] == 404 and
          by_line[7]["response"]["body"]["error"]["code"] == "model_not_found", "another model: 404 in the error file")
    check(by_line[8]["response"]["status_code"] == 400 and
          by_line[8]["response"]["body"]["error"]["code"] == "context_length_exceeded",
          "a prompt over the context: 400 context_length_exceeded")
    check(by_line[9]["error"]["code"] == "line_too_long", "a 10 MB line is refused on its own")
    check(by_line[11]["error"]["code"] == "invalid_json", "a line that is not UTF-8 is refused on its own")

    # a rerun writes nothing more
    r = batch("-i", inp, "-o", out, "-e", err)
    check(r.returncode == 0 and len(read_jsonl(out)) == 12 and len(read_jsonl(err)) == 8,
          "a rerun of a finished job writes nothing again")
    # a changed input is refused, --restart starts over
    with open(inp, "ab") as f:
        f.write(b"\n" + json.dumps(request(50)).encode() + b"\n")
    r = batch("-i", inp, "-o", out, "-e", err)
    check(r.returncode == 1 and "--restart" in r.stderr, f"a changed input is refused ({r.stderr[-300:]})")
    r = batch("-i", inp, "-o", out, "-e", err, "--restart")
    check(r.returncode == 0 and len(read_jsonl(out)) == 13, "--restart runs the new input from scratch")
    # whole-file problems
    binf = os.path.join(work, "bin.jsonl")
    open(binf, "wb").write(os.urandom(4096) + b"\0")
    r = batch("-i", binf, "-o", os.path.join(work, "b.jsonl"))
    check(r.returncode == 1 and "not a JSONL text file" in r.stderr, "a binary file is refused as a whole")
    empty = os.path.join(work, "empty.jsonl")
    open(empty, "w").close()
    r = batch("-i", empty, "-o", os.path.join(work, "e.jsonl"))
    check(r.returncode == 1 and "empty" in r.stderr, "an empty file is refused")
    r = batch("-i", os.path.join(work, "missing.jsonl"), "-o", os.path.join(work, "x.jsonl"))
    check(r.returncode == 1 and "No such file" in r.stderr, "a missing input is a clear error")

    # ------------------------------------------------- a reference single run
    N = 240
    inp = os.path.join(work, "big.jsonl")
    write_input(inp, N, tokens=40)
    ref_out = os.path.join(work, "ref.jsonl")
    t0 = time.time()
    r = batch("-i", inp, "-o", ref_out)
    ref_s = time.time() - t0
    ref = texts(read_jsonl(ref_out))
    check(r.returncode == 0 and len(ref) == N, f"the reference run answers all {N} lines")

    # ------------------------------------------------ kill -9 at random (G2)
    out = os.path.join(work, "killed.jsonl")
    rng = random.Random(7)
    kills = 0
    for _ in range(20):
        p = subprocess.Popen([HERD, "batch", "run", "-m", MODEL, "--threads", "1", "-q", "-i", inp, "-o", out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, max(0.1, ref_s / 3)))
        if p.poll() is None:
            p.kill()
            kills += 1
        p.wait()
        # whatever the moment, the files hold whole lines only
        data = open(out, "rb").read() if os.path.exists(out) else b""
        if data and not data.endswith(b"\n"):
            pass  # a torn tail is allowed on disk: the next run cuts it; read_jsonl below checks after that
    r = batch("-i", inp, "-o", out)
    rows = read_jsonl(out)
    ids = [x["custom_id"] for x in rows]
    check(r.returncode == 0 and len(ids) == N and len(set(ids)) == N,
          f"after {kills} kill -9s and a rerun every custom_id is in the output exactly once ({len(ids)}, {len(set(ids))})")
    check(texts(rows) == ref, "the resumed job's answers equal a single uninterrupted run's")

    # ----------------------------------------------------- shards and merge
    parts = []
    for i in range(3):
        o = os.path.join(work, f"shard{i}.jsonl")
        r = batch("-i", inp, "-o", o, "--shard", f"{i}/3")
        check(r.returncode == 0, f"shard {i}/3 runs ({r.stderr[-200:]})")
        parts += [o, o + ".errors.jsonl"]
    merged = os.path.join(work, "merged.jsonl")
    r = run("merge", "-i", inp, "-o", merged, *[p for p in parts if os.path.exists(p)])
    rows = read_jsonl(merged)
    check(r.returncode == 0 and [x["custom_id"] for x in rows] == [f"c{i}" for i in range(N)],
          f"merge puts the shards back in input order ({r.stderr[-200:]})")
    check(texts(rows) == ref, "merged shards equal a single run")
    r = run("merge", "-i", inp, "-o", os.path.join(work, "m2.jsonl"), parts[0], parts[2])
    check(r.returncode == 1 and "missing" in r.stderr and not os.path.exists(os.path.join(work, "m2.jsonl")),
          "a merge with a shard left out fails and writes nothing")
    r = run("merge", "-i", inp, "-o", os.path.join(work, "m3.jsonl"), parts[0], parts[0], parts[2], parts[4])
    check(r.returncode == 1 and "two results" in r.stderr, "a part given twice is caught")

    # ------------------------------------------------- a full disk (G1)
    out = os.path.join(work, "full.jsonl")
    r = batch("-i", inp, "-o", out, limit_fsize=20000)
    check(r.returncode == 1 and "File too large" in r.stderr and "rerun" in r.stderr,
          f"a full disk (ulimit -f) stops the job with a clear error ({r.returncode}: {r.stderr[-300:]})")
    data = open(out, "rb").read()
    check(data.endswith(b"\n") and len(data) <= 20000, "what was written before the disk filled is whole lines")
    r = batch("-i", inp, "-o", out)
    rows = read_jsonl(out)
    check(r.returncode == 0 and sorted(x["custom_id"] for x in rows) == sorted(ref) and texts(rows) == ref,
          "with room again, the rerun completes the job, every custom_id once")
    r = batch("-i", inp, "-o", "/dev/full", "-e", os.path.join(work, "full-err.jsonl"))
    check(r.returncode == 1 and "not a regular file" in r.stderr and not os.path.exists("/dev/full.state"),
          "/dev/full as the output is refused (it cannot be resumed), nothing written beside it")

    # -------------------------------------- the output directory disappears
    gone = os.path.join(work, "gone")
    os.mkdir(gone)
    long_inp = os.path.join(work, "long.jsonl")
    write_input(long_inp, 400, tokens=200)
    p = subprocess.Popen([HERD, "batch", "run", "-m", MODEL, "--threads", "1", "-q", "-i", long_inp, "-o",
                          os.path.join(gone, "o.jsonl")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    shutil.rmtree(gone)
    _, stderr = p.communicate(timeout=300)
    check(p.returncode == 1 and "removed" in stderr, f"a removed output directory stops the job ({stderr[-300:]})")

    # ------------------------------------------------------------ SIGTERM
    out = os.path.join(work, "term.jsonl")
    p = subprocess.Popen([HERD, "batch", "run", "-m", MODEL, "--threads", "1", "-q", "-i", long_inp, "-o", out],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=120)
    check(p.returncode == 1 and "rerun" in stderr, f"SIGTERM stops the job, saying how to go on ({stderr[-200:]})")
    done = len(read_jsonl(out))
    check(done < 400, "SIGTERM stopped before the end")
finally:
    shutil.rmtree(work, ignore_errors=True)

print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
