"""The embedded pages over the wire (no browser): herd serve and herd route
answer /, /status and /web/* with their Content-Type, a strong ETag (304 on
If-None-Match), gzip when Accept-Encoding allows it (the same bytes once
inflated), the Content-Security-Policy and nosniff; HEAD has the headers
and no body; an unknown /web/ file is 404, POST / is 405; --no-web turns
the pages off (404) and leaves the other routes alone; the bytes served
are web/'s files.

Usage: test_web_assets.py HERD SRC"""
import gzip
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import herd_test  # noqa: E402
from herd_test import check  # noqa: E402

HERD, SRC = sys.argv[1], sys.argv[2]
herd_test.setup(HERD, SRC)
WEB = os.path.join(SRC, "web")
PAGES = {"/": ("index.html", "text/html"), "/status": ("status.html", "text/html"),
         "/web/app.js": ("app.js", "text/javascript"), "/web/markdown.js": ("markdown.js", "text/javascript"),
         "/web/status.js": ("status.js", "text/javascript"), "/web/prom.js": ("prom.js", "text/javascript"),
         "/web/style.css": ("style.css", "text/css"), "/web/icon.svg": ("icon.svg", "image/svg+xml")}


def get(port, path, method="GET", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hdrs, body


def check_pages(port, who):
    for path, (name, ctype) in PAGES.items():
        with open(os.path.join(WEB, name), "rb") as f:
            want = f.read()
        st, h, body = get(port, path)
        check(st == 200 and h.get("content-type", "").startswith(ctype), f"{who} {path}: 200 {ctype} ({st} {h})")
        check(body == want, f"{who} {path}: the bytes of web/{name}")
        csp = h.get("content-security-policy", "")
        check("default-src 'self'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
              and "unsafe-inline" not in csp, f"{who} {path}: CSP ({csp})")
        check(h.get("x-content-type-options") == "nosniff", f"{who} {path}: nosniff")
        check(h.get("cache-control") == "no-cache" and h.get("vary") == "Accept-Encoding",
              f"{who} {path}: Cache-Control no-cache, Vary ({h})")
        etag = h.get("etag", "")
        check(re.fullmatch(r'"[0-9a-f]{16}"', etag) is not None, f"{who} {path}: strong ETag ({etag})")
        check("content-encoding" not in h, f"{who} {path}: identity without Accept-Encoding")
        # conditional: the same tag (also as a list, or weak) is a 304 without a body
        for inm in (etag, f'"nope", {etag}', "W/" + etag, "*"):
            st, h2, b2 = get(port, path, headers={"If-None-Match": inm})
            check(st == 304 and b2 == b"" and h2.get("etag") == etag, f"{who} {path}: If-None-Match {inm} -> 304 ({st})")
        st, _, b2 = get(port, path, headers={"If-None-Match": '"0000000000000000"'})
        check(st == 200 and b2 == want, f"{who} {path}: another tag -> 200")
        # gzip when allowed; the twin has its own tag
        st, hz, bz = get(port, path, headers={"Accept-Encoding": "br, gzip;q=0.8"})
        if hz.get("content-encoding") == "gzip":
            check(gzip.decompress(bz) == want and hz.get("etag") == etag[:-1] + '-gz"',
                  f"{who} {path}: gzip inflates to the file, tag -gz")
            st, _, b3 = get(port, path, headers={"Accept-Encoding": "gzip", "If-None-Match": hz["etag"]})
            check(st == 304 and b3 == b"", f"{who} {path}: gzip's tag -> 304")
        else:
            check(len(want) < 200, f"{who} {path}: not gzipped although {len(want)} bytes")
        for ae in ("gzip;q=0", "identity", "*;q=0, br", "gzip;q=0.000, *"):
            st, hz, bz = get(port, path, headers={"Accept-Encoding": ae})
            check(st == 200 and "content-encoding" not in hz and bz == want, f"{who} {path}: Accept-Encoding {ae}")
        st, h, body = get(port, path, method="HEAD")
        check(st == 200 and body == b"" and h.get("content-length") == str(len(want)) and h.get("etag") == etag,
              f"{who} HEAD {path}: headers, no body ({st} {h})")
    st, h, body = get(port, "/web/nope.js")
    check(st == 404 and b"error" in body, f"{who} /web/nope.js: 404 ({st})")
    st, h, body = get(port, "/web/../index.html")
    check(st == 404, f"{who} /web/../index.html: 404 ({st})")
    st, h, body = get(port, "/", method="POST")
    check(st == 405, f"{who} POST /: 405 ({st})")


# --------------------------------------------------------------- herd serve
srv = herd_test.Server()
try:
    check_pages(srv.port, "serve")
    check(srv.request("GET", "/health")[0] == 200 and srv.request("GET", "/v1/models")[0] == 200,
          "serve: /health and /v1/models unchanged")
    st, body, r = srv.request("GET", "/metrics")
    check(st == 200 and r.getheader("Content-Security-Policy") is None, "serve: /metrics without the pages' headers")
    # a key protects the API, not the pages: a page must load to ask for the key
    keyed = herd_test.Server("--api-key", "sekrit")
    try:
        check(get(keyed.port, "/")[0] == 200 and get(keyed.port, "/web/app.js")[0] == 200, "serve --api-key: pages open")
        check(keyed.request("GET", "/v1/models")[0] == 401, "serve --api-key: /v1/models 401")
    finally:
        keyed.stop()
    off = herd_test.Server("--no-web")
    try:
        for path in PAGES:
            check(get(off.port, path)[0] == 404, f"serve --no-web: {path} 404")
        check(off.request("GET", "/health")[0] == 200 and off.request("GET", "/v1/models")[0] == 200,
              "serve --no-web: the API unchanged")
    finally:
        off.stop()

    # ---------------------------------------------------------- herd route
    def start_router(*args):
        log = tempfile.NamedTemporaryFile("w+", prefix="herd-route-", suffix=".log", delete=False)
        proc = subprocess.Popen([HERD, "route", "--port", "0", "--backend", f"http://127.0.0.1:{srv.port}", *args],
                                stdout=subprocess.DEVNULL, stderr=log)
        deadline, port = time.time() + 30, None
        while time.time() < deadline and port is None and proc.poll() is None:
            m = re.search(r"routing \([a-z-]+\) on http://127\.0\.0\.1:(\d+)", open(log.name).read())
            port = int(m.group(1)) if m else None
            time.sleep(0.05)
        if port is None:
            proc.kill()
            raise RuntimeError("router did not start: " + open(log.name).read())
        while time.time() < deadline and get(port, "/readyz")[0] != 200:
            time.sleep(0.05)
        return proc, port

    def stop(proc):
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    proc, port = start_router()
    try:
        check_pages(port, "route")
        st, _, body = get(port, "/v1/models")
        check(st == 200 and herd_test.NAME.encode() in body, "route: /v1/models still forwarded")
    finally:
        stop(proc)
    proc, port = start_router("--no-web")
    try:
        for path in PAGES:
            check(get(port, path)[0] == 404, f"route --no-web: {path} 404")
        check(get(port, "/v1/models")[0] == 200, "route --no-web: forwarding unchanged")
    finally:
        stop(proc)
finally:
    check(srv.stop() == 0, "serve stops cleanly")

print(f"{herd_test.passed} passed, {len(herd_test.failures)} failed")
sys.exit(1 if herd_test.failures else 0)
