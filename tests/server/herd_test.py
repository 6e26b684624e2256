"""What the end-to-end tests of `herd serve` share: a server process on
127.0.0.1 on a free port (stopped by the caller; every wait bounded), HTTP
helpers, streaming, request builders, and pass/fail bookkeeping.

Usage: HERD and SRC are set by the test that imports this (herd_test.setup)."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERD = SRC = MODEL = None
NAME = "stories260K"


def setup(herd, src):
    global HERD, SRC, MODEL
    HERD, SRC = herd, src
    MODEL = os.path.join(SRC, "models", "stories260K.gguf")


failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


class Server:
    def __init__(self, *args, env=None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="herd-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([HERD, "serve", "-m", MODEL, "--port", "0", "--threads", "1", *args],
                                     stdout=subprocess.DEVNULL, stderr=self.log,
                                     env=dict(os.environ, **env) if env else None)
        deadline = time.time() + 30
        # an explicit port (when the log says too little to find it)
        self.port = int(args[args.index("--port") + 1]) if "--port" in args else None
        while time.time() < deadline and self.port is None:
            with open(self.log.name) as f:
                m = re.search(r"on http://127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.05)
        if self.port is None:
            raise RuntimeError("server did not start: " + open(self.log.name).read())
        # the port opens before the model is loaded: /health is 503 until then
        while time.time() < deadline:
            try:
                if self.request("GET", "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.02)

    def request(self, method, path, body=None, headers=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return r.status, parsed, r

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def raw(self, data, read_timeout=5, until_close=False):
        """The bytes answered to data: up to the first complete answer, or
        (until_close) everything until the server closes."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=read_timeout)
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if not until_close and b"\r\n\r\n" in out and b"Content-Length" in out:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    m = re.search(rb"Content-Length: (\d+)", head)
                    if m and len(rest) >= int(m.group(1)):
                        break
        except OSError:
            pass
        s.close()
        return out

    def metrics(self):
        _, body, _ = self.request("GET", "/metrics")
        text = body.decode() if isinstance(body, bytes) else str(body)
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def stream(srv, path, body, on_chunk=None):
    """POSTs with stream: true; returns the list of parsed data chunks and
    whether [DONE] ended it."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("POST", path, body=json.dumps(dict(body, stream=True)), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    chunks, done, buf = [], False, b""
    assert r.status == 200, r.status
    assert r.getheader("Content-Type").startswith("text/event-stream")
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        payload = line[6:]
        if payload == b"[DONE]":
            done = True
            continue
        chunks.append(json.loads(payload))
        if on_chunk:
            on_chunk(chunks[-1])
    conn.close()
    return chunks, done


def chat(msg, **kw):
    return dict({"model": NAME, "messages": [{"role": "user", "content": msg}], "temperature": 0}, **kw)


def completion(prompt, **kw):
    return dict({"model": NAME, "prompt": prompt, "temperature": 0}, **kw)




def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def finish(what):
    """Prints the summary line and exits non-zero on a failure."""
    print(f"{what}: {passed} passed, {len(failures)} failed")
    for f in failures:
        print("  FAILED:", f)
    sys.exit(1 if failures else 0)
