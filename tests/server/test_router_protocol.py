"""What `herd serve` tells `herd route` (docs/modules/router-protocol.md),
end to end on the real binary: the state stream GET /v1/herd/state (hello,
load with its heartbeat, a blocks snapshot and changes that a late
subscriber's snapshot agrees with, several subscribers, the stream ending
on a drain that it does not hold up), token ids in streams
(X-Herd-Stream-Tokens: 1; without the header the bytes are today's), and
herd_resume: with temperature 0, breaking a stream after every one of its
first 30 tokens (in the middle of a multi-byte character, across a stop
string, with no tokens left) and resuming it as herd route does gives the
client the text, finish_reason and usage of the run that never broke.

Usage: test_router_protocol.py HERD_BINARY SOURCE_DIR"""
import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herd_test as H  # noqa: E402
from herd_test import check  # noqa: E402

H.setup(sys.argv[1], sys.argv[2])
BREAKS = 30  # every break point from the first token to the 30th


# ------------------------------------------------------------- helpers

def post_raw(srv, path, body, headers=None):
    """The raw body of a streamed answer (chunked coding undone)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request("POST", path, body=json.dumps(body), headers=h)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, raw


def sse_events(raw):
    """[(herd line object or None, data payload or None)] per event."""
    out = []
    for ev in raw.decode().split("\n\n"):
        if not ev:
            continue
        herd = data = None
        for line in ev.split("\n"):
            if line.startswith(": herd "):
                herd = json.loads(line[7:])
            elif line.startswith("data: "):
                data = line[6:]
        out.append((herd, data))
    return out


def piece(chunk, chat):
    ch = chunk["choices"][0]
    return (ch["delta"].get("content") or "") if chat else ch["text"]


def full_run(srv, path, body):
    """A streamed run with token ids: its events, text, finish, usage, id, created."""
    status, raw = post_raw(srv, path, dict(body, stream=True, stream_options={"include_usage": True}),
                           {"X-Herd-Stream-Tokens": "1"})
    assert status == 200, raw
    chat = path.endswith("chat/completions")
    run = {"events": [], "text": "", "finish": None, "usage": None, "tokens": []}
    for herd, data in sse_events(raw):
        if data == "[DONE]" or data is None:
            continue
        chunk = json.loads(data)
        run["id"], run["created"] = chunk["id"], chunk["created"]
        if not chunk["choices"]:
            run["usage"] = chunk["usage"]
            continue
        text = piece(chunk, chat)
        run["text"] += text
        run["finish"] = chunk["choices"][0]["finish_reason"] or run["finish"]
        if herd:
            run["tokens"] += herd["t"]
            run["events"].append((herd, text))
    return run


def router_view(run, k):
    """What herd route had when the stream broke right after the event that
    brought the k-th token: the tokens, the b of the last `: herd` line,
    and the text its client had received."""
    toks, b, text = [], 0, ""
    for herd, t in run["events"]:
        toks += herd["t"]
        b = herd["b"]
        text += t
        if len(toks) >= k:
            break
    return toks, b, text


def resume(srv, path, body, run, k, what):
    """Breaks run after its k-th token and resumes it; checks the client's
    text, finish, usage, id, created and that no role comes again."""
    toks, b, before = router_view(run, k)
    if len(toks) != k:
        return
    check(len(before.encode()) == b, f"{what} k={k}: b={b} is the bytes the client had ({len(before.encode())})")
    res = {"tokens": toks, "text_bytes": b, "id": run["id"], "created": run["created"]}
    status, raw = post_raw(srv, path, dict(body, stream=True, stream_options={"include_usage": True},
                                           herd_resume=res), {"X-Herd-Stream-Tokens": "1"})
    check(status == 200, f"{what} k={k}: resume answered {status} {raw[:200]}")
    if status != 200:
        return
    chat = path.endswith("chat/completions")
    after, finish, usage, b_last, role, ids = "", None, None, b, False, set()
    for herd, data in sse_events(raw):
        if data == "[DONE]" or data is None:
            continue
        chunk = json.loads(data)
        ids.add((chunk["id"], chunk["created"]))
        if not chunk["choices"]:
            usage = chunk["usage"]
            continue
        after += piece(chunk, chat)
        finish = chunk["choices"][0]["finish_reason"] or finish
        role = role or (chat and "role" in chunk["choices"][0]["delta"])
        if herd:
            b_last = herd["b"]
    check(before + after == run["text"],
          f"{what} k={k}: text {before!r} + {after!r} is the unbroken run's {run['text']!r}")
    check(finish == run["finish"], f"{what} k={k}: finish {finish} == {run['finish']}")
    check(usage and usage["completion_tokens"] == run["usage"]["completion_tokens"] and
          usage["prompt_tokens"] == run["usage"]["prompt_tokens"],
          f"{what} k={k}: usage {usage} == {run['usage']}")
    check(ids == {(run["id"], run["created"])}, f"{what} k={k}: id and created carried on: {ids}")
    check(not role, f"{what} k={k}: no second role chunk")
    check(b_last == len(run["text"].encode()), f"{what} k={k}: the resumed b counts from the start ({b_last})")


# --------------------------------------------------------- token lines

def test_tokens_header(srv):
    body = H.completion("Once upon a time", max_tokens=24, stream=True)
    hdr = {"X-Request-Id": "same-id"}
    _, plain = post_raw(srv, "/v1/completions", body, hdr)
    _, marked = post_raw(srv, "/v1/completions", body, dict(hdr, **{"X-Herd-Stream-Tokens": "1"}))
    norm = lambda raw: re.sub(rb'"created":\d+', b'"created":0', raw)
    stripped = re.sub(rb": herd [^\n]*\n", b"", marked)
    check(b": herd" not in plain, "no comment lines without the header")
    check(norm(stripped) == norm(plain), "the header only adds comment lines: the rest is byte for byte the same")
    # every event has its line; the tokens are the output's; b counts its bytes
    run = full_run(srv, "/v1/chat/completions", H.chat("Tell me a story", max_tokens=40))
    check(len(run["tokens"]) == run["usage"]["completion_tokens"],
          f"token lines carry every generated token ({len(run['tokens'])} == {run['usage']['completion_tokens']})")
    _, detok, _ = srv.post("/detokenize", {"tokens": run["tokens"]})
    check(detok["prompt"].strip() == run["text"].strip(), "the tokens decode to the text")
    check(run["events"][-1][0]["b"] == len(run["text"].encode()), "the last b is the text's bytes")
    # n choices: each line names its choice
    _, raw = post_raw(srv, "/v1/completions", H.completion("The dog", max_tokens=6, n=2, stream=True, temperature=1,
                                                           seed=3), {"X-Herd-Stream-Tokens": "1"})
    cs = [h["c"] for h, _ in sse_events(raw) if h]
    check(sorted(set(cs)) == [0, 1] and len(cs) == 12, f"n=2: lines for choices 0 and 1, six each ({cs})")


# --------------------------------------------------------------- resume

def test_resume(srv):
    cases = [
        ("chat", "/v1/chat/completions", H.chat("Tell me a story about a cat", max_tokens=BREAKS)),
        ("completion", "/v1/completions", H.completion("Once upon a time", max_tokens=BREAKS)),
        # bytes 0xC3 and 0xA9 ("é") pushed up, repeats pushed down: the
        # output holds é split over two tokens (and lone bytes, as U+FFFD)
        ("multibyte", "/v1/completions", H.completion("Once upon a time", max_tokens=BREAKS,
                                                      logit_bias={"198": 30, "172": 29}, presence_penalty=2,
                                                      frequency_penalty=2)),
    ]
    runs = {}
    for what, path, body in cases:
        run = runs[what] = full_run(srv, path, body)
        check(len(run["tokens"]) == BREAKS, f"{what}: the unbroken run has {BREAKS} tokens ({len(run['tokens'])})")
        for k in range(1, BREAKS + 1):
            resume(srv, path, body, run, k, what)
    held = [i for i, (h, t) in enumerate(runs["multibyte"]["events"]) if h["t"] and t == ""]
    check(any("é" in t for _, t in runs["multibyte"]["events"][1:]) and held,
          f"multibyte: a character split across tokens, held back at events {held}")
    # a stop string spanning token boundaries: the run holds text back, then stops
    base = runs["completion"]
    stop = base["text"][base["text"].index(" little") + 4:][:6]  # "le gir": three tokens' text
    for what, path, body in [("stop", "/v1/completions", H.completion("Once upon a time", max_tokens=BREAKS, stop=[stop])),
                             ("chat stop", "/v1/chat/completions",
                              H.chat("Tell me a story about a cat", max_tokens=BREAKS,
                                     stop=[runs["chat"]["text"][20:25]]))]:
        run = full_run(srv, path, body)
        check(run["finish"] == "stop", f"{what}: the unbroken run stops ({run['finish']})")
        for k in range(1, len(run["tokens"]) + 1):
            resume(srv, path, body, run, k, what)


def test_resume_errors(srv):
    good = {"tokens": [432, 383], "text_bytes": 7, "id": "cmpl-x", "created": 1}
    base = H.completion("Once upon a time", max_tokens=8, stream=True)
    for res, extra, what in [
        ("x", {}, "not an object"),
        (dict(good, tokens=[432, 10 ** 6]), {}, "a token outside the vocabulary"),
        (dict(good, tokens="432"), {}, "tokens not an array"),
        (dict(good, text_bytes=8), {}, "text_bytes past the tokens' text"),
        (dict(good, text_bytes=-1), {}, "negative text_bytes"),
        (dict(good, id=""), {}, "an empty id"),
        (dict(good, created="now"), {}, "created not an integer"),
        (dict(good, extra=1), {}, "an unknown field"),
        (good, {"stream": False}, "without stream"),
        (good, {"n": 2}, "with n 2"),
        (dict(good, tokens=[432] * 9, text_bytes=0), {}, "more tokens than max_tokens"),
    ]:
        st, body, _ = srv.post("/v1/completions", dict(base, herd_resume=res, **extra))
        check(st == 400 and body["error"]["param"] == "herd_resume", f"herd_resume {what}: 400 ({st} {body})")


# --------------------------------------------------------- state stream

class Subscriber:
    """A GET /v1/herd/state reader on its own thread: every event, when it came."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(b"GET /v1/herd/state HTTP/1.1\r\nHost: x\r\n\r\n")
        self.events, self.ended, self.head = [], False, b""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                if not self.head and b"\r\n\r\n" in buf:
                    self.head, _, buf = buf.partition(b"\r\n\r\n")
                while self.head:  # chunked: size line, data, CRLF
                    line, sep, rest = buf.partition(b"\r\n")
                    if not sep:
                        break
                    size = int(line, 16)
                    if len(rest) < size + 2:
                        break
                    if size == 0:
                        self.ended = True
                        return
                    for ev in rest[:size].decode().split("\n\n"):
                        if ev.startswith("data: "):
                            with self.lock:
                                self.events.append((time.time(), json.loads(ev[6:])))
                    buf = rest[size + 2:]
        except OSError:
            pass
        finally:
            self.ended = True

    def of(self, kind):
        with self.lock:
            return [e for _, e in self.events if e["type"] == kind]

    def hashes(self):
        """The set a router would hold: blocks applied in order, reset forgets."""
        held = set()
        with self.lock:
            evs = [e for _, e in self.events]
        for e in evs:
            if e["type"] == "reset":
                held.clear()
            elif e["type"] == "blocks":
                held |= set(e["stored"])
                held -= set(e["evicted"])
        return held

    def wait(self, cond, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.sock.close()


def test_state_stream():
    # a small KV cache (97 blocks), so that prompts evict each other
    srv = H.Server("--kv-mem", "1000000", "--max-seqs", "2", "-q", env={"HERD_TEST_STEP_DELAY_MS": "5"})
    try:
        st, _, _ = srv.post("/v1/herd/state", {})
        check(st == 405, f"POST /v1/herd/state: 405 ({st})")
        a = Subscriber(srv.port)
        check(a.wait(lambda: a.of("blocks")), "subscriber a: a snapshot arrives")
        hello = a.of("hello")
        check(len(hello) == 1 and a.events[0][1]["type"] == "hello", "hello first, once")
        h = hello[0] if hello else {}
        check(re.fullmatch(r"[0-9a-f]{16}", h.get("instance", "")) and h.get("model") == H.NAME and
              h.get("block_tokens") == 16 and h.get("hash") == "xxh3-64-chain-v1" and h.get("kv_blocks_total", 0) > 0 and
              h.get("n_ctx") == 512, f"hello's fields: {h}")
        check(a.of("blocks")[0] == {"type": "blocks", "stored": [], "evicted": []}, "an empty cache's snapshot")
        # distinct long prompts fill the cache, then evict each other
        words = "the cat sat on a mat and the dog ran to the park with a ball".split()
        for i in range(20):
            prompt = " ".join(words[(i + j) % len(words)] + str(i) for j in range(60))
            st, _, _ = srv.post("/v1/completions", H.completion(prompt, max_tokens=8))
            check(st == 200, f"prompt {i}: 200")
        a.wait(lambda: any(e["evicted"] for e in a.of("blocks")))
        stored = [x for e in a.of("blocks") for x in e["stored"]]
        evicted = [x for e in a.of("blocks") for x in e["evicted"]]
        check(len(stored) > h.get("kv_blocks_total", 0) // 2 and evicted,
              f"blocks stored ({len(stored)}) and evicted ({len(evicted)})")
        check(all(re.fullmatch(r"[0-9a-f]{16}", x) for x in stored + evicted), "hashes are 16 lowercase hex digits")
        check(set(evicted) <= set(stored), "only stored hashes are evicted")
        # the same prompt again hits the cache: nothing new is stored
        n_before = len(stored)
        prompt = " ".join(words[(19 + j) % len(words)] + "19" for j in range(60))
        srv.post("/v1/completions", H.completion(prompt, max_tokens=1))
        time.sleep(0.2)
        check(len([x for e in a.of("blocks") for x in e["stored"]]) == n_before,
              "a cached prompt again stores no block")
        # a late subscriber's snapshot is what a's changes add up to
        time.sleep(0.1)
        b = Subscriber(srv.port)
        check(b.wait(lambda: b.of("blocks")), "subscriber b: a snapshot arrives")
        time.sleep(0.1)
        check(b.hashes() == a.hashes() and len(a.hashes()) <= h.get("kv_blocks_total", 0),
              f"b's snapshot ({len(b.hashes())} hashes) equals a's snapshot + changes ({len(a.hashes())})")
        # load: a running request shows, the heartbeat keeps coming while idle
        t0 = time.time()
        srv.post("/v1/completions", H.completion("Once upon a time", max_tokens=40))
        check(a.wait(lambda: any(e["running"] == 1 for e in a.of("load"))), "load shows the running request")
        check(a.wait(lambda: a.of("load")[-1]["running"] == 0), "and its end")
        time.sleep(2.5)
        with a.lock:
            times = [t for t, e in a.events if t > t0 + 0.5]
        gaps = [y - x for x, y in zip(times, times[1:])]
        check(gaps and max(gaps) <= 1.0, f"idle: an event at least every second (largest gap {max(gaps or [0]):.2f} s)")
        load = a.of("load")[-1]
        check(load["kv_total"] == h.get("kv_blocks_total") and 0 < load["kv_used"] <= load["kv_total"],
              f"load's KV numbers: {load}")
        with b.lock:
            b_loads = len([1 for t, e in b.events if e["type"] == "load" and t > t0 + 0.5])
        check(b_loads >= 2, "both subscribers get the heartbeat")
        # a drain ends the streams and is not held up by them (30 s drain timeout)
        t_term = time.time()
        rc = srv.stop()
        check(rc == 0 and time.time() - t_term < 5, f"drain with two subscribers: exit {rc} in {time.time() - t_term:.1f} s")
        check(a.wait(lambda: a.ended, 2) and b.wait(lambda: b.ended, 2), "the state streams end on the drain")
        a.close()
        b.close()
    finally:
        srv.stop()


def main():
    srv = H.Server("-q")
    try:
        test_tokens_header(srv)
        test_resume_errors(srv)
        test_resume(srv)
    finally:
        srv.stop()
    test_state_stream()
    H.finish("router protocol")


main()
