"""herd route end to end: real `herd serve` replicas of the stories260K
model on 127.0.0.1 (and 127.0.0.2-4 for the DNS test), a real `herd route`
in front of them, and a Python client. Every wait is bounded; every process
is stopped at the end.

Covers: the OpenAI surface passed through, SSE relayed byte for byte,
request ids, API keys, every policy, cache-aware affinity on shared system
prompts, cancellation reaching the replica, a replica killed with -9 during
48 greedy streams (every stream completes with the text of an unbroken
run), ejection and readmission, misbehaving backends (garbage, a close
mid-header, a stall, 10 MB of headers), DNS membership changes, a drain and
a restart of the router, and the local pool (scale from zero, a crashed
child restarted).

Usage: test_route.py HERD SRC [TEST ...]"""
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import herd_test as ht  # noqa: E402
from herd_test import check  # noqa: E402

HERD = SRC = MODEL = None
LOGS = []  # every process's log: removed at the end when every check passed


def wait_for(cond, timeout, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return True
        except OSError:
            pass
        time.sleep(step)
    return False


def http_req(port, method, path, body=None, headers=None, timeout=60, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r.status, raw, r


def jreq(port, method, path, body=None, **kw):
    st, raw, r = http_req(port, method, path, body, **kw)
    try:
        return st, json.loads(raw) if raw else None, r
    except ValueError:
        return st, raw, r


class Replica:
    """A herd serve process on host:port (port 0: a free one)."""

    def __init__(self, *args, host="127.0.0.1", port=0, step_delay_ms=0):
        self.host = host
        self.env = dict(os.environ, HERD_TEST_STEP_DELAY_MS=str(step_delay_ms)) if step_delay_ms else None
        self.log = tempfile.NamedTemporaryFile("w+", prefix="herd-replica-", suffix=".log", delete=False)
        LOGS.append(self.log.name)
        self.args = args
        self.port = port
        self.start()

    def start(self):
        self.proc = subprocess.Popen([HERD, "serve", "-m", MODEL, "--host", self.host, "--port", str(self.port),
                                      "--threads", "1", "-q", *self.args],
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=self.env)
        if self.port == 0:
            def found():
                with open(self.log.name) as f:
                    m = re.search(r"on http://[0-9.]+:(\d+)", f.read())
                if m:
                    self.port = int(m.group(1))
                return self.port != 0 or self.proc.poll() is not None
            wait_for(found, 30)
        if not wait_for(lambda: http_req(self.port, "GET", "/readyz", host=self.host, timeout=2)[0] == 200, 30):
            raise RuntimeError("replica did not start: " + open(self.log.name).read()[-2000:])

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def metrics(self):
        return parse_metrics(http_req(self.port, "GET", "/metrics", host=self.host)[1])

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        check_log("a replica", self.log.name)


SANITIZER = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer")


def check_log(what, path):
    """A process a test started must not have reported a sanitizer error."""
    with open(path, errors="replace") as f:
        m = SANITIZER.search(f.read())
    check(not m, f"{what} reported {m.group(0) if m else ''} (see {path})")


def parse_metrics(raw):
    out = {}
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


class Router:
    def __init__(self, *args, wait_ready=True, prefix=None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="herd-route-", suffix=".log", delete=False)
        LOGS.append(self.log.name)
        cmd = [HERD, "route", "--port", "0", *args]
        self.proc = subprocess.Popen((prefix or []) + cmd, stdout=subprocess.DEVNULL, stderr=self.log)
        self.port = None

        def found():
            with open(self.log.name) as f:
                m = re.search(r"routing \([a-z-]+\) on http://127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
            return self.port is not None or self.proc.poll() is not None
        wait_for(found, 30)
        if self.port is None:
            raise RuntimeError("router did not start: " + open(self.log.name).read()[-3000:])
        if wait_ready and not wait_for(lambda: http_req(self.port, "GET", "/readyz", timeout=2)[0] == 200, 30):
            raise RuntimeError("router not ready: " + open(self.log.name).read()[-3000:])

    def req(self, method, path, body=None, **kw):
        return jreq(self.port, method, path, body, **kw)

    def wait_up(self, n, timeout=20):
        """Until n replicas are up (the router is ready with one)."""
        check(wait_for(lambda: sum(x["health"] == "up" for x in self.replicas()) == n, timeout),
              f"{n} replicas up: {self.replicas()}")

    def replicas(self):
        return self.req("GET", "/router/replicas")[1]["replicas"]

    def metrics(self):
        return parse_metrics(http_req(self.port, "GET", "/metrics")[1])

    def text(self):
        with open(self.log.name) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=40):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        check_log("the router", self.log.name)
        return rc


def chat(msg, system=None, **kw):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": msg}]
    return dict({"model": "stories260K", "messages": msgs, "temperature": 0, "max_tokens": 24}, **kw)


def raw_stream(port, body, headers=None, host="127.0.0.1"):
    """The decoded body of a streamed request, as bytes, and the response."""
    st, raw, r = http_req(port, "POST", "/v1/chat/completions", dict(body, stream=True), headers=headers, host=host)
    return st, raw, r


def stream_text(raw):
    """The content of a chat stream's chunks, whether it ended with [DONE],
    and the finish reason."""
    text, done, finish, errors = "", False, None, []
    for line in raw.decode().split("\n"):
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            continue
        c = json.loads(line[6:])
        if "error" in c:
            errors.append(c["error"])
            continue
        for ch in c.get("choices", []):
            text += ch.get("delta", {}).get("content") or ""
            finish = ch.get("finish_reason") or finish
    return text, done, finish, errors


# ------------------------------------------------------------------ tests


def test_bad_arguments():
    for args, want in [([], "one way"), (["--backend", "http://foo:80"], "IP address"),
                       (["--backend", "http://127.0.0.1:99999"], "port"),
                       (["--backend", "http://127.0.0.1:1", "--backends-dns", "a:1"], "one way"),
                       (["--backend", "http://127.0.0.1:1", "-m", "/nonexistent.gguf"], "nonexistent"),
                       (["--spawn", "2"], "needs -m"), (["--backends-dns", "nope"], "NAME:PORT"),
                       (["--backend", "http://127.0.0.1:1", "--policy", "random"], "--policy")]:
        p = subprocess.run([HERD, "route", "--port", "0", *args], capture_output=True, text=True, timeout=20)
        check(p.returncode in (1, 2) and want in p.stderr, f"herd route {args}: exit {p.returncode}, {p.stderr!r}")


def test_passthrough():
    reps = [Replica(), Replica()]
    rt = Router("--policy", "round-robin", *sum((["--backend", r.url] for r in reps), []))
    try:
        rt.wait_up(2)
        st, body, _ = rt.req("GET", "/v1/models")
        check(st == 200 and body["data"][0]["id"] == "stories260K", f"models through the router: {st} {body}")
        st, body, r = rt.req("POST", "/v1/chat/completions", chat("Once upon a time"),
                             headers={"X-Request-Id": "route-test-1"})
        check(st == 200 and body["choices"][0]["message"]["content"], f"chat through the router: {st} {body}")
        check(r.getheader("X-Request-Id") == "route-test-1", "the request id reaches the client")
        check(body["id"].endswith("route-test-1"), f"the request id reached the replica: {body['id']}")
        direct = jreq(reps[0].port, "POST", "/v1/chat/completions", chat("Once upon a time"))[1]
        check(direct["choices"][0]["message"]["content"] == body["choices"][0]["message"]["content"],
              "the same answer as a direct request")
        st, body, _ = rt.req("POST", "/tokenize", {"content": "Once upon a time"})
        check(st == 200 and body["tokens"], f"tokenize through the router: {st}")
        st, body, _ = rt.req("POST", "/v1/completions", {"model": "stories260K", "prompt": "The cat", "max_tokens": 5})
        check(st == 200 and body["choices"][0]["text"] is not None, "completions through the router")
        before = sum(parse_metrics(http_req(x.port, "GET", "/metrics")[1]).get(
            'herd_rejections_total{reason="bad_request"}', 0) for x in reps)
        st, body, _ = rt.req("POST", "/v1/chat/completions", {"model": "stories260K", "messages": "nope"})
        check(st == 400 and body["error"]["type"] == "invalid_request_error", f"a 400 is relayed: {st} {body}")
        after = sum(parse_metrics(http_req(x.port, "GET", "/metrics")[1]).get(
            'herd_rejections_total{reason="bad_request"}', 0) for x in reps)
        check(after - before == 1, f"a 4xx is not retried ({after - before} replicas saw it)")
        st, _, _ = rt.req("GET", "/v1/nothing-here")
        check(st == 404, f"an unknown /v1 path is the replica's 404: {st}")
        st, body, _ = rt.req("GET", "/readyz")
        check(st == 200, "router ready")
        m = rt.metrics()
        check(m.get("herd_router_replicas_up") == 2, f"two replicas up: {m.get('herd_router_replicas_up')}")
        check(any(k.startswith("herd_router_requests_total{") for k in m), "per-replica request counts")
    finally:
        rt.stop()
        for x in reps:
            x.stop()


def test_sse_byte_identical():
    rep = Replica()
    rt = Router("--backend", rep.url, "-m", MODEL)
    try:
        for i, body in enumerate([chat("Once upon a time", max_tokens=40),
                                  chat("Lily", max_tokens=30, stream_options={"include_usage": True}),
                                  dict(chat("Tom", max_tokens=20), logprobs=True, top_logprobs=2)]):
            h = {"X-Request-Id": f"same-{i}"}
            st1, via, r1 = raw_stream(rt.port, body, headers=h)
            st2, direct, _ = raw_stream(rep.port, body, headers=h)
            # the second of the two requests finds its prompt in the prefix
            # cache, and the clock may tick between them
            mask = lambda b: re.sub(rb'"(created|cached_tokens)":\d+', rb'"\1":0', b)  # noqa: E731
            check(st1 == 200 and st2 == 200, f"streams answered: {st1} {st2}")
            check(mask(via) == mask(direct), f"SSE through the router is byte-identical to a direct one ({i}):\n"
                  f"{via[:300]!r}\n{direct[:300]!r}")
            check(r1.getheader("Content-Type").startswith("text/event-stream"), "event-stream content type")
            check(b": herd" not in via, "the router's token comments never reach the client")
    finally:
        rt.stop()
        rep.stop()


def replica_of(r):
    return r.getheader("X-Herd-Replica")


def test_policies():
    reps = [Replica(), Replica(), Replica()]
    backends = sum((["--backend", r.url] for r in reps), [])
    try:
        for policy in ["round-robin", "least-outstanding", "power-of-two", "cache-aware"]:
            rt = Router("--policy", policy, "-m", MODEL, *backends)
            try:
                rt.wait_up(3)
                seen = {}
                for i in range(12):
                    st, _, r = rt.req("POST", "/v1/completions",
                                      {"model": "stories260K", "prompt": f"Story {i}:", "max_tokens": 2})
                    check(st == 200, f"{policy}: request {i} answered {st}")
                    seen[replica_of(r)] = seen.get(replica_of(r), 0) + 1
                names = {f"127.0.0.1:{x.port}" for x in reps}
                check(set(seen) <= names, f"{policy}: answered by the replicas {seen}")
                if policy == "round-robin":
                    check(sorted(seen.values()) == [4, 4, 4], f"round-robin takes turns: {seen}")
                m = rt.metrics()
                dec = sum(v for k, v in m.items() if k.startswith("herd_router_decisions_total") and policy in k)
                check(dec >= 12, f"{policy}: decisions counted ({dec})")
            finally:
                rt.stop()
    finally:
        for x in reps:
            x.stop()


def test_cache_affinity():
    reps = [Replica(), Replica(), Replica()]
    rt = Router("-m", MODEL, *sum((["--backend", r.url] for r in reps), []))
    try:
        rt.wait_up(3)
        systems = [f"You are storyteller number {k}. " * 12 + "Tell a short tale." for k in range(6)]
        where = {}
        for rnd in range(4):
            for k, s in enumerate(systems):
                st, _, r = rt.req("POST", "/v1/chat/completions", chat(f"turn {rnd}", system=s, max_tokens=2))
                check(st == 200, f"affinity request answered {st}")
                where.setdefault(k, set()).add(replica_of(r))
        check(all(len(v) == 1 for v in where.values()), f"each system prompt stays on one replica: {where}")
        check(len(set().union(*where.values())) >= 2, f"different prompts spread over replicas: {where}")
        m = rt.metrics()
        check(m.get("herd_router_cache_affinity_hits_total", 0) >= 18,
              f"affinity hits counted: {m.get('herd_router_cache_affinity_hits_total')}")
        # the replicas' prefix caches were hit
        hits = sum(parse_metrics(http_req(x.port, "GET", "/metrics")[1]).get("herd_prefix_cache_hits_total", 0)
                   for x in reps)
        check(hits > 0, f"the replicas' prefix caches were hit ({hits} blocks)")
    finally:
        rt.stop()
        for x in reps:
            x.stop()


def test_shared_prefix_everywhere_spreads():
    # one system prompt for all traffic: every replica ends up holding it,
    # so it is no reason to pin everyone to one replica
    reps = [Replica(), Replica(), Replica()]
    rt = Router("-m", MODEL, *sum((["--backend", r.url] for r in reps), []))
    try:
        rt.wait_up(3)
        system = "You are the help desk of a large company, polite and brief. " * 6
        used = set()
        for k in range(12):
            st, _, r = rt.req("POST", "/v1/chat/completions",
                              chat(f"user {k} asks about item {k * 37}", system=system, max_tokens=2))
            check(st == 200, f"shared-prefix request answered {st}")
            used.add(replica_of(r))
        check(len(used) >= 2, f"traffic sharing one system prompt spreads over replicas: {used}")
    finally:
        rt.stop()
        for x in reps:
            x.stop()


def test_two_routers_agree():
    reps = [Replica(), Replica(), Replica()]
    backends = sum((["--backend", r.url] for r in reps), [])
    a, b = Router("-m", MODEL, *backends), Router("-m", MODEL, *backends)
    try:
        a.wait_up(3)
        b.wait_up(3)
        agree = 0
        for k in range(12):
            body = chat(f"question {k}", system=f"You answer for team {k}. " * 10, max_tokens=2)
            first, second = (a, b) if k % 2 else (b, a)
            ra = first.req("POST", "/v1/chat/completions", body)[2]
            rb = second.req("POST", "/v1/chat/completions", dict(body, messages=body["messages"][:1] +
                                                                 [{"role": "user", "content": "another"}]))[2]
            agree += replica_of(ra) == replica_of(rb)
        check(agree == 12, f"two routers send a system prompt to the same replica ({agree}/12)")
    finally:
        a.stop()
        b.stop()
        for x in reps:
            x.stop()


def test_cancel_propagates():
    rep = Replica(step_delay_ms=20)
    rt = Router("--backend", rep.url)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=30)
        conn.request("POST", "/v1/chat/completions", json.dumps(chat("Once", max_tokens=400, stream=True,
                                                                      ignore_eos=True)),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.readline()
        running = lambda: parse_metrics(http_req(rep.port, "GET", "/metrics")[1]).get("herd_requests_running", 0)  # noqa
        check(wait_for(lambda: running() == 1, 10), "the replica runs the request")
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        check(wait_for(lambda: running() == 0, 10), "the client's disconnect cancelled the replica's request")
        check(wait_for(lambda: rt.metrics().get("herd_router_cancellations_total", 0) >= 1, 5),
              "the router counted the cancellation")
    finally:
        rt.stop()
        rep.stop()


def test_kill_one_of_three():
    reps = [Replica("--max-seqs", "16", step_delay_ms=10) for _ in range(3)]
    rt = Router("-m", MODEL, "--policy", "round-robin", *sum((["--backend", r.url] for r in reps), []))
    try:
        rt.wait_up(3)
        prompts = [chat(f"Story number {i} begins", max_tokens=60, ignore_eos=True) for i in range(48)]
        # the reference: each prompt once, straight to a replica, unbroken
        # (16 at a time: the batch a stream shares does not change its text)
        ref = [None] * 48

        def direct(i):
            ref[i] = stream_text(raw_stream(reps[0].port, prompts[i])[1])[0]

        for start in range(0, 48, 16):
            ts = [threading.Thread(target=direct, args=(i,)) for i in range(start, start + 16)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
        results = [None] * 48
        started = threading.Event()

        def run(i):
            st, raw, _ = raw_stream(rt.port, prompts[i])
            results[i] = (st, raw)
            started.set()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(48)]
        for t in threads:
            t.start()
        # kill one replica while streams run on it
        victim = reps[1]
        wait_for(lambda: parse_metrics(http_req(victim.port, "GET", "/metrics")[1]).get("herd_requests_running", 0)
                 > 0, 20, 0.01)
        time.sleep(0.2)
        victim.proc.kill()
        victim.proc.wait()
        for t in threads:
            t.join(120)
        ok = 0
        for i, (st, raw) in enumerate(r for r in results if r):
            text, done, finish, errors = stream_text(raw)
            good = st == 200 and done and not errors and text == ref[i] and finish == "length"
            ok += good
            if not good:
                print(f"stream {i}: status {st} done {done} errors {errors}\n  got  {text!r}\n  want {ref[i]!r}",
                      file=sys.stderr)
        check(ok == 48, f"all 48 streams complete with the text of an unbroken run ({ok} did)")
        m = rt.metrics()
        resumed = m.get('herd_router_resumes_total{outcome="resumed"}', 0)
        check(resumed >= 1, f"streams were resumed: {resumed}")
        name = f"127.0.0.1:{victim.port}"
        check(wait_for(lambda: rt.metrics().get(f'herd_router_replica_up{{replica="{name}"}}') == 0, 5),
              "the killed replica is ejected")
        victim.start()
        check(wait_for(lambda: rt.metrics().get(f'herd_router_replica_up{{replica="{name}"}}') == 1, 40),
              "the restarted replica is readmitted")
    finally:
        rt.stop()
        for x in reps:
            x.stop()


BIG = 80 << 20  # bytes: past the 64 MiB a router holds of a whole answer
_CHUNK = b'{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,' \
    b'"delta":{"content":"hi"},"finish_reason":null}]}'
SSE_BODIES = {
    "sse-crlf": b": keep-alive\r\n\r\ndata: " + _CHUNK + b"\r\n\r\ndata:" + _CHUNK + b"\r\n\r\ndata: [DONE]\r\n\r\n",
    "sse-cr": b"data: " + _CHUNK + b"\r\rdata:" + _CHUNK + b"\r\revent: x\rdata: [DONE]\r\r",
    "sse-lf": b"data: " + _CHUNK + b"\n\nid: 7\ndata: " + _CHUNK + b"\n\ndata: [DONE]\n\n",
}


class BadBackend:
    """A listener that misbehaves in one way per connection."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stop_flag = False
        self.conns = []
        self.requests = []  # every request's head, as received (probes and feeds left out)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop_flag:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)
            threading.Thread(target=self.answer, args=(c,), daemon=True).start()

    def answer(self, c):
        try:
            c.settimeout(5)
            req = b""
            while b"\r\n\r\n" not in req:
                d = c.recv(65536)
                if not d:
                    return
                req += d
            if req.startswith(b"GET /readyz"):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                c.close()
                return
            if req.startswith(b"GET /v1/herd/state") or req.startswith(b"GET /metrics"):
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                c.close()
                return
            self.requests.append(req.split(b"\r\n\r\n")[0])
            head_only = req.startswith(b"HEAD ")
            if self.mode == "garbage":
                c.sendall(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n" * 10)
            elif self.mode == "close-mid-header":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Ty")
            elif self.mode == "stall":
                time.sleep(4)
            elif self.mode == "429":
                body = b'{"error":{"message":"queue full","type":"server_error","param":null,"code":"queue_full"}}'
                c.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 7\r\n"
                          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            elif self.mode == "503":
                c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            elif self.mode == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            elif self.mode == "500":
                body = b'{"error":{"message":"boom","type":"server_error","param":null,"code":null}}'
                c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            elif self.mode == "big":  # an answer larger than any the router would hold whole
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                          b"Content-Length: " + str(BIG).encode() + b"\r\n\r\n")
                if not head_only:
                    block = bytes(range(256)) * 4096
                    for _ in range(BIG // len(block)):
                        c.sendall(block)
            elif self.mode == "cut":  # dies in the middle of an answer
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n" +
                          b"x" * 5000)
            elif self.mode == "echo":  # the request head it got, as the body
                head = self.requests[-1]
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close, X-Upstream-Private\r\n"
                          b"X-Upstream-Private: 1\r\nX-Upstream-Public: 1\r\n"
                          b"Content-Length: " + str(len(head)).encode() + b"\r\n\r\n" + head)
            elif self.mode in SSE_BODIES:  # a stream with other line endings than herd's
                body = SSE_BODIES[self.mode]
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                for k in range(0, len(body), 7):  # in small pieces: events split anywhere
                    piece = body[k:k + 7]
                    c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    time.sleep(0.001)
                c.sendall(b"0\r\n\r\n")
            elif self.mode == "huge-headers":
                c.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(10 * 1024):
                    c.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
            c.close()
        except OSError:
            pass

    def close(self):
        self.stop_flag = True
        self.sock.close()


def test_bad_backends():
    for mode, want in [("garbage", (502,)), ("close-mid-header", (502,)), ("stall", (504,)),
                       ("huge-headers", (502,))]:
        bad = BadBackend(mode)
        rt = Router("--backend", f"http://127.0.0.1:{bad.port}", "--upstream-timeout", "1", "--max-attempts", "1",
                    "--wait-timeout", "0")
        try:
            t0 = time.time()
            st, body, _ = rt.req("POST", "/v1/chat/completions", chat("hi"), timeout=20)
            check(st in want and isinstance(body, dict) and "error" in body,
                  f"{mode}: a clean error {want}: {st} {body}")
            check(time.time() - t0 < 10, f"{mode}: answered within bounds ({time.time() - t0:.1f} s)")
            check(http_req(rt.port, "GET", "/livez")[0] == 200, f"{mode}: the router stays up")
        finally:
            rt.stop()
            bad.close()


def errors_of(rt, backend):
    return rt.metrics().get(f'herd_router_errors_total{{replica="127.0.0.1:{backend.port}"}}', 0)


def test_retry_safety():
    """RELIABILITY E5: a 429 or 503 (the replica did not take the request)
    or a reset before the answer goes once to another replica, within the
    budget; a 429 every replica gives reaches the client with its
    Retry-After; a request that may have effects is not sent again once it
    reached a replica."""
    good = Replica()
    try:
        bad = BadBackend("429")
        rt = Router("--backend", f"http://127.0.0.1:{bad.port}")
        try:
            st, body, r = rt.req("POST", "/v1/chat/completions", chat("hi"))
            check(st == 429 and r.getheader("Retry-After") == "7" and body["error"]["code"] == "queue_full",
                  f"a 429 passes through with its Retry-After: {st} {r.getheader('Retry-After')}")
            check(len(bad.requests) == 1, f"a refusal is not sent back to the replica that refused it "
                  f"({len(bad.requests)} sends)")
            check(errors_of(rt, bad) == 0, "a 429 does not count against the replica")
        finally:
            rt.stop()
            bad.close()
        bad, bad2 = BadBackend("429"), BadBackend("429")
        rt = Router("--backend", f"http://127.0.0.1:{bad.port}", "--backend", f"http://127.0.0.1:{bad2.port}")
        try:
            rt.wait_up(2)
            st, body, r = rt.req("POST", "/v1/chat/completions", chat("hi"))
            check(st == 429 and r.getheader("Retry-After") == "7",
                  f"every replica full: the 429 and its Retry-After reach the client: {st}")
            check(len(bad.requests) + len(bad2.requests) == 2, "one retry, no more: "
                  f"{len(bad.requests) + len(bad2.requests)} sends")
        finally:
            rt.stop()
            bad.close()
            bad2.close()
        for mode in ("429", "503", "reset"):
            bad = BadBackend(mode)
            rt = Router("--policy", "round-robin", "--backend", f"http://127.0.0.1:{bad.port}", "--backend", good.url)
            try:
                rt.wait_up(2)
                for i in range(4):
                    st, body, r = rt.req("POST", "/v1/chat/completions", chat("hi"))
                    check(st == 200 and replica_of(r) == f"127.0.0.1:{good.port}",
                          f"{mode}: retried on the good replica: {st} {replica_of(r)}")
                m = rt.metrics()
                check(1 <= m.get("herd_router_retries_total", 0) <= 4, f"{mode}: retries counted "
                      f"{m.get('herd_router_retries_total')}")
                if mode != "reset":
                    check(errors_of(rt, bad) == 0, f"a {mode} does not count against the replica")
            finally:
                rt.stop()
                bad.close()
        # an unknown POST may have had effects: sent once, whatever comes back
        for mode, want in (("500", 500), ("reset", 502)):
            bad = BadBackend(mode)
            rt = Router("--policy", "round-robin", "--backend", f"http://127.0.0.1:{bad.port}", "--backend", good.url)
            try:
                rt.wait_up(2)
                got = [rt.req("POST", "/v1/admin/do-something-once", {"x": 1})[0] for _ in range(4)]
                check(got.count(want) == len(bad.requests) >= 1 and got.count(404) == 4 - got.count(want),
                      f"{mode}: a POST with effects is not sent again: {got}, {len(bad.requests)} sends to the bad one")
                check(rt.metrics().get("herd_router_retries_total", 0) == 0, f"{mode}: no retries")
                # a GET is free of effects: retried
                st = rt.req("GET", "/v1/models")[0]
                st2 = rt.req("GET", "/v1/models")[0]
                check(st == 200 and st2 == 200, f"{mode}: a GET is retried on the good replica: {st} {st2}")
            finally:
                rt.stop()
                bad.close()
    finally:
        good.stop()


def test_other_answers_relayed_as_they_come():
    """Answers other than generations are relayed as they arrive, whatever
    their size; one cut short is cut at the client too; HEAD keeps the
    replica's Content-Length; hop-by-hop headers stay on their hop."""
    for mode in ("big", "cut", "echo"):
        bad = BadBackend(mode)
        rt = Router("--backend", f"http://127.0.0.1:{bad.port}", "--max-attempts", "1")
        try:
            if mode == "big":
                conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=60)
                conn.request("GET", "/v1/files/big")
                r = conn.getresponse()
                got, want = hashlib.sha256(), hashlib.sha256()
                block = bytes(range(256)) * 4096
                for _ in range(BIG // len(block)):
                    want.update(block)
                n = 0
                while True:
                    d = r.read(1 << 20)
                    if not d:
                        break
                    got.update(d)
                    n += len(d)
                conn.close()
                check(r.status == 200 and n == BIG and got.digest() == want.digest(),
                      f"an answer of {BIG >> 20} MiB passes whole and unchanged: {r.status} {n}")
                conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=60)
                conn.request("HEAD", "/v1/files/big")
                r = conn.getresponse()
                r.read()
                conn.close()
                check(r.status == 200 and r.getheader("Content-Length") == str(BIG),
                      f"HEAD carries the replica's Content-Length: {r.getheader('Content-Length')}")
            elif mode == "cut":
                conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=30)
                conn.request("GET", "/v1/files/cut")
                r = conn.getresponse()
                try:
                    got = r.read()
                    cut = False
                except http.client.IncompleteRead as e:
                    got, cut = e.partial, True
                conn.close()
                check(cut and len(got) <= 5000, f"an answer cut at the replica is cut at the client "
                      f"(not a complete short one): {len(got)} bytes, cut={cut}")
                st, _, _ = rt.req("GET", "/livez")
                check(st == 200, "the router carries on")
            else:
                st, raw, r = http_req(rt.port, "GET", "/v1/echo",
                                      headers={"Connection": "keep-alive, X-Client-Private", "X-Client-Private": "1",
                                               "X-Client-Public": "1"})
                head = raw.decode(errors="replace").lower()
                check(st == 200 and "x-client-public: 1" in head and "x-client-private" not in head,
                      f"headers the client's Connection names stay on its hop: {head!r}")
                check(r.getheader("X-Upstream-Public") == "1" and r.getheader("X-Upstream-Private") is None,
                      "headers the replica's Connection names stay on its hop")
        finally:
            rt.stop()
            bad.close()


def test_sse_line_endings():
    """Streams from other servers, with CRLF or CR line endings, `data:`
    without its space, events split anywhere: relayed byte for byte."""
    for mode, body in SSE_BODIES.items():
        bad = BadBackend(mode)
        rt = Router("--backend", f"http://127.0.0.1:{bad.port}", "--max-attempts", "1")
        try:
            st, raw, _ = http_req(rt.port, "POST", "/v1/chat/completions", chat("hi", stream=True))
            check(st == 200 and raw == body, f"{mode}: relayed byte for byte: {raw[:200]!r}")
        finally:
            rt.stop()
            bad.close()


def test_resume_needs_a_herd_replica():
    """A stream whose herd replica dies is resumed only on a replica that
    takes herd_resume: with only another server left, the client gets an
    error event, then [DONE], and the other server never sees a resume."""
    rep = Replica(step_delay_ms=20)
    other = BadBackend("sse-lf")
    rt = Router("--policy", "round-robin", "--backend", rep.url, "--backend", f"http://127.0.0.1:{other.port}")
    try:
        rt.wait_up(2)
        check(wait_for(lambda: any(x["state_stream"] for x in rt.replicas()), 10), "the herd replica's stream is up")
        conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=30)
        conn.request("POST", "/v1/chat/completions",
                     json.dumps(chat("Once", max_tokens=300, stream=True, ignore_eos=True)),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        check(r.getheader("X-Herd-Replica") == f"127.0.0.1:{rep.port}", "the stream started on the herd replica")
        first = r.readline() + r.readline()
        rep.stop(signal.SIGKILL)
        rest = r.read()
        conn.close()
        text = (first + rest).decode(errors="replace")
        check('"code":"resume_failed"' in text and text.rstrip().endswith("data: [DONE]"),
              f"an error event, then [DONE]: {text[-300:]!r}")
        check(not any(b"herd_resume" in q or b"POST" in q for q in other.requests),
              f"the other server got no resume: {other.requests}")
        m = rt.metrics()
        check(m.get('herd_router_resumes_total{outcome="failed"}', 0) == 1 and
              m.get('herd_router_resumes_total{outcome="resumed"}', 0) == 0,
              f"the failed resume counted: {m}")
    finally:
        rt.stop()
        other.close()
        rep.stop()


def test_all_replicas_down():
    """RELIABILITY E3: every replica down: 503 with Retry-After at once, and
    the router's /readyz 503."""
    reps = [Replica(), Replica()]
    rt = Router(*sum((["--backend", r.url] for r in reps), []))
    try:
        rt.wait_up(2)
        for x in reps:
            x.stop(signal.SIGKILL)
        t0 = time.time()
        st, body, r = rt.req("POST", "/v1/chat/completions", chat("hi"))
        check(st == 503 and r.getheader("Retry-After") and body["error"]["code"] == "no_replica",
              f"503 with Retry-After: {st} {body}")
        check(time.time() - t0 < 2, f"answered at once ({time.time() - t0:.2f} s)")
        check(wait_for(lambda: http_req(rt.port, "GET", "/readyz")[0] == 503, 5), "the router's /readyz is 503")
        check(http_req(rt.port, "GET", "/livez")[0] == 200, "and /livez 200")
    finally:
        rt.stop()


def test_replica_hang():
    """RELIABILITY E2: a replica stopped with SIGSTOP is ejected by its
    probes, its streams resume elsewhere, and after SIGCONT it comes back
    (slow start)."""
    reps = [Replica(step_delay_ms=10), Replica(step_delay_ms=10)]
    rt = Router("-m", MODEL, "--policy", "round-robin", "--health-interval", "0.2", "--slow-start", "2",
                *sum((["--backend", r.url] for r in reps), []))
    try:
        rt.wait_up(2)
        prompts = [chat(f"Hang test {i}", max_tokens=32, ignore_eos=True) for i in range(8)]
        ref = [stream_text(raw_stream(reps[0].port, p)[1])[0] for p in prompts]
        results = [None] * 8

        def run(i):
            results[i] = raw_stream(rt.port, prompts[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        victim = reps[1]
        time.sleep(0.1)
        victim.proc.send_signal(signal.SIGSTOP)
        t0 = time.time()
        for t in threads:
            t.join(60)
        took = time.time() - t0
        good = sum(1 for i, r in enumerate(results) if r and r[0] == 200 and stream_text(r[1])[:2] == (ref[i], True)
                   and not stream_text(r[1])[3])
        check(good == 8, f"all 8 streams complete with the unbroken text despite the hung replica ({good})")
        check(took < 10, f"within the probe deadlines, not the upstream timeout ({took:.1f} s)")
        name = f"127.0.0.1:{victim.port}"
        check(any(x["replica"] == name and x["health"] == "ejected" for x in rt.replicas()), "the hung one is ejected")
        victim.proc.send_signal(signal.SIGCONT)
        check(wait_for(lambda: any(x["replica"] == name and x["health"] == "up" for x in rt.replicas()), 40),
              "readmitted after SIGCONT")
        check(any(x["replica"] == name and x["weight"] < 1 for x in rt.replicas()), "with a slow start")
    finally:
        rt.stop()
        for x in reps:
            x.proc.send_signal(signal.SIGCONT)
            x.stop()


def test_dns_membership():
    if os.geteuid() != 0 or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        print("SKIP test_dns_membership: needs root and unshare -m (a private /etc/hosts)")
        return
    port = ht.free_port()
    reps = [Replica(host=f"127.0.0.{k}", port=port) for k in (2, 3, 4)]
    hosts = tempfile.NamedTemporaryFile("w", prefix="herd-hosts-", delete=False)

    def write(addrs):
        # in place: the bind mount follows the inode
        with open(hosts.name, "r+") as f:
            f.seek(0)
            f.truncate()
            f.write("127.0.0.1 localhost\n" + "".join(f"{a} replicas.herd.test\n" for a in addrs))

    write(["127.0.0.2", "127.0.0.3"])
    hosts.close()
    rt = Router("--backends-dns", f"replicas.herd.test:{port}", "--resolve-every", "0.2", "--policy", "round-robin",
                prefix=["unshare", "-m", "sh", "-c", f'mount --bind {hosts.name} /etc/hosts && exec "$@"', "sh"])
    try:
        up = lambda: sorted(x["replica"] for x in rt.replicas() if x["health"] == "up" and not x["draining"])  # noqa
        check(wait_for(lambda: up() == [f"127.0.0.2:{port}", f"127.0.0.3:{port}"], 10), f"two replicas: {up()}")
        # a long stream on .2, then .2 leaves DNS and .4 joins: the stream completes
        res = {}

        def long_stream():
            res["r"] = raw_stream(rt.port, chat("Once", max_tokens=300, ignore_eos=True), headers={})

        seen = set()
        for i in range(6):
            seen.add(replica_of(rt.req("POST", "/v1/completions", {"model": "stories260K", "prompt": f"{i}",
                                                                   "max_tokens": 1})[2]))
        check(len(seen) == 2, f"both listed replicas answer: {seen}")
        t = threading.Thread(target=long_stream)
        t.start()
        time.sleep(0.3)
        write(["127.0.0.3", "127.0.0.4"])
        check(wait_for(lambda: up() == [f"127.0.0.3:{port}", f"127.0.0.4:{port}"], 10), f"membership moved: {up()}")
        t.join(60)
        text, done, _, errors = stream_text(res["r"][1])
        check(res["r"][0] == 200 and done and not errors, "a stream on a replica that left DNS completes")
        seen = set()
        for i in range(6):
            st, _, r = rt.req("POST", "/v1/completions", {"model": "stories260K", "prompt": f"{i}", "max_tokens": 1})
            check(st == 200, f"request after the change: {st}")
            seen.add(replica_of(r))
        check(seen == {f"127.0.0.3:{port}", f"127.0.0.4:{port}"}, f"only the listed replicas answer: {seen}")
        check(wait_for(lambda: all(x["replica"] != f"127.0.0.2:{port}" for x in rt.replicas()), 10),
              "the departed replica is removed once idle")
    finally:
        rt.stop()
        for x in reps:
            x.stop()
        os.unlink(hosts.name)


def test_drain_and_restart():
    rep = Replica()
    rt = Router("--backend", rep.url)
    try:
        res = {}

        def long_stream():
            res["r"] = raw_stream(rt.port, chat("Once", max_tokens=200, ignore_eos=True))

        t = threading.Thread(target=long_stream)
        t.start()
        time.sleep(0.3)
        port = rt.port
        rt.proc.send_signal(signal.SIGTERM)
        t.join(60)
        text, done, finish, errors = stream_text(res["r"][1])
        check(done and finish == "length" and not errors, "a stream in flight completes through the drain")
        check(rt.proc.wait(30) == 0, "the router exits 0 after its drain")
        rt2 = Router("--backend", rep.url, "--port", str(port))
        rt2.port = port
        try:
            st, _, _ = rt2.req("POST", "/v1/chat/completions", chat("hi"))
            check(st == 200, f"a restarted router on the same port serves: {st}")
        finally:
            rt2.stop()
    finally:
        rt.stop()
        rep.stop()


def test_api_keys():
    rep = Replica("--api-key", "replica-key")
    rt = Router("--backend", rep.url, "--api-key", "router-key", "--backend-api-key", "replica-key")
    try:
        st, body, _ = rt.req("POST", "/v1/chat/completions", chat("hi"))
        check(st == 401, f"no key at the router: 401 ({st})")
        st, body, _ = rt.req("POST", "/v1/chat/completions", chat("hi"),
                             headers={"Authorization": "Bearer router-key"})
        check(st == 200, f"the router's key, and the backend key sent on: {st} {body}")
        check(http_req(rt.port, "GET", "/readyz")[0] == 200, "probes stay open")
    finally:
        rt.stop()
        rep.stop()


def test_pool_scale_from_zero():
    rt = Router("--spawn", "0", "--min", "0", "--max", "1", "-m", MODEL, "--threads-per-replica", "1",
                "--scale-down-window", "2", "--wait-timeout", "60")
    try:
        t0 = time.time()
        st, body, _ = rt.req("POST", "/v1/chat/completions", chat("hi"), timeout=90)
        check(st == 200, f"the first request waits for a replica to start (no 503): {st} {body}")
        print(f"  scale from zero: first answer after {time.time() - t0:.2f} s")
        pool = rt.req("GET", "/router/replicas")[1]["pool"]
        check(pool["running"] == 1, f"one replica running: {pool}")
        check(wait_for(lambda: rt.req("GET", "/router/replicas")[1]["pool"]["running"] == 0, 30),
              "idle: scaled back to zero after the window")
    finally:
        rt.stop()


def test_pool_restart():
    rt = Router("--spawn", "2", "-m", MODEL, "--threads-per-replica", "1")
    try:
        check(wait_for(lambda: len([x for x in rt.replicas() if x["health"] == "up"]) == 2, 30), "two replicas up")
        out = subprocess.run(["pgrep", "-P", str(rt.proc.pid)], capture_output=True, text=True).stdout.split()
        check(len(out) == 2, f"two children: {out}")
        os.kill(int(out[0]), signal.SIGKILL)
        for i in range(10):
            st, _, _ = rt.req("POST", "/v1/completions", {"model": "stories260K", "prompt": "a", "max_tokens": 2})
            check(st == 200, f"requests keep being answered after a child died: {st}")
        check(wait_for(lambda: rt.req("GET", "/router/replicas")[1]["pool"]["restarts"] >= 1 and
                       len([x for x in rt.replicas() if x["health"] == "up"]) == 2, 30),
              "the crashed child is restarted and taken back")
    finally:
        check(rt.stop() == 0, "the router with its pool stops cleanly")
        time.sleep(0.5)
        left = subprocess.run(["pgrep", "-P", str(rt.proc.pid)], capture_output=True, text=True).stdout.split()
        check(not left, f"no child left behind: {left}")


TESTS = [test_bad_arguments, test_passthrough, test_sse_byte_identical, test_policies, test_cache_affinity,
         test_shared_prefix_everywhere_spreads, test_two_routers_agree,
         test_cancel_propagates,
         test_kill_one_of_three, test_replica_hang, test_all_replicas_down, test_retry_safety,
         test_other_answers_relayed_as_they_come, test_sse_line_endings, test_resume_needs_a_herd_replica,
         test_bad_backends, test_dns_membership, test_drain_and_restart, test_api_keys,
         test_pool_scale_from_zero, test_pool_restart]


def main():
    global HERD, SRC, MODEL
    HERD, SRC = sys.argv[1], sys.argv[2]
    MODEL = os.path.join(SRC, "models", "stories260K.gguf")
    ht.setup(HERD, SRC)
    only = set(sys.argv[3:])
    for t in TESTS:
        if only and t.__name__ not in only:
            continue
        t0 = time.time()
        try:
            t()
        except Exception as e:  # a test that raised is a failure, and the others still run
            check(False, f"{t.__name__} raised {type(e).__name__}: {e}")
        print(f"{t.__name__}: {time.time() - t0:.1f} s", flush=True)
    if not ht.failures:
        for name in LOGS:
            os.unlink(name)
    else:
        print("logs kept:", " ".join(LOGS))
    ht.finish("route_e2e")


if __name__ == "__main__":
    main()
