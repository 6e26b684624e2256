#!/usr/bin/env python3
"""herd serve's /v1/files and /v1/batches end to end (RELIABILITY rows
G1-G4 for the server): uploads, the batch lifecycle and its request counts,
answers equal to `herd batch run`'s, whole-file problems failing at
validating, per-line problems in the error file, cancel, expiry, kill -9 of
the server at random moments with every custom_id answered exactly once
after restarts, a full disk (a small tmpfs, as root) keeping the server up
and the batch resuming once space is freed, and file ids that try to leave
the data directory refused with 400.

Usage: test_batch_api.py HERD SRC"""
import atexit
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
import herd_test as t  # noqa: E402

HERD, SRC = sys.argv[1], sys.argv[2]
t.setup(HERD, SRC)
check = t.check
ROOT = tempfile.mkdtemp(prefix="herd-batch-api-")
TERMINAL = ("completed", "failed", "expired", "cancelled")


def request(i, tokens=16):
    body = {"model": t.NAME, "messages": [{"role": "user", "content": f"Tell me about {i}"}], "max_tokens": tokens,
            "temperature": 0}
    if tokens > 100:  # long lines run their full length
        body["ignore_eos"] = True
    return {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(n, tokens=16, extra=()):
    rows = [json.dumps(request(i, tokens)) for i in range(n)]
    for at, text in extra:
        rows.insert(at, text)
    return ("\n".join(rows) + "\n").encode()


def multipart(fields, boundary="herdtestboundary7MA4YWxkTrZu0gW"):
    out = b""
    for name, value, filename in fields:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += disp.encode() + b"\r\n"
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(srv, data, purpose=b"batch", filename="input.jsonl", headers=None):
    body, h = multipart([("purpose", purpose, None), ("file", data, filename)])
    return srv.request("POST", "/v1/files", body, headers=dict(h, **(headers or {})))


def create(srv, file_id, endpoint="/v1/chat/completions", **kw):
    return srv.post("/v1/batches", dict({"input_file_id": file_id, "endpoint": endpoint,
                                         "completion_window": "24h"}, **kw))


def wait(srv, bid, until=TERMINAL, timeout=240):
    deadline = time.time() + timeout
    b = None
    while time.time() < deadline:
        st, b, _ = srv.request("GET", f"/v1/batches/{bid}")
        if st == 200 and b["status"] in until:
            return b
        time.sleep(0.1)
    return b


def content(srv, fid):
    if not fid:
        return []
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("GET", f"/v1/files/{fid}/content")
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    assert resp.status == 200, (resp.status, raw[:200])
    assert raw.endswith(b"\n"), "a torn line"
    return [json.loads(x) for x in raw.split(b"\n") if x.strip()]


def texts(rows):
    out = {}
    for r in rows:
        b = r["response"]["body"]
        c = b["choices"][0]
        out[r["custom_id"]] = c["message"]["content"] if "message" in c else c["text"]
    return out


STARTED = []


def server(data_dir, *args, **kw):
    srv = t.Server("-q", "--data-dir", data_dir, *args, **kw)
    STARTED.append(srv)
    return srv


@atexit.register
def stop_all():
    """No server outlives the test, whatever ended it."""
    for srv in STARTED:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


# a reference: the same lines through `herd batch run`
REF_N = 24
ref_in = os.path.join(ROOT, "ref.jsonl")
open(ref_in, "wb").write(jsonl(REF_N))
r = subprocess.run([HERD, "batch", "run", "-m", t.MODEL, "--threads", "1", "-q", "--input", ref_in, "--output",
                    os.path.join(ROOT, "ref.out"), "--errors", os.path.join(ROOT, "ref.err")],
                   capture_output=True, text=True, timeout=300)
assert r.returncode == 0, r.stderr
REF = texts([json.loads(x) for x in open(os.path.join(ROOT, "ref.out"))])
assert len(REF) == REF_N

# ------------------------------------------------------------------ no --data-dir
srv = t.Server("-q")
STARTED.append(srv)
st, body, _ = srv.request("GET", "/v1/batches")
check(st == 404 and body["error"]["code"] == "batch_api_off" and "--data-dir" in body["error"]["message"],
      f"no --data-dir: 404 saying how to turn it on ({st} {body})")
srv.stop()

# ---------------------------------------------------------- files, a whole batch
data = os.path.join(ROOT, "data")
srv = server(data, "--batch-max-file-mb", "1", "--batch-max-requests", "40")
st, f, _ = upload(srv, jsonl(REF_N, extra=[(3, "{not json"), (5, json.dumps(dict(request(99), custom_id="c0"))),
                                          (7, json.dumps(dict(request(98), url="/v1/embeddings")))]))
check(st == 200 and f["object"] == "file" and f["purpose"] == "batch" and f["filename"] == "input.jsonl" and
      f["bytes"] > 0, f"upload ({st} {f})")
fid = f["id"]
st, got, _ = srv.request("GET", f"/v1/files/{fid}")
check(st == 200 and got == f, "retrieve a file")
st, lst, _ = srv.request("GET", "/v1/files?purpose=batch&limit=5")
check(st == 200 and lst["object"] == "list" and [x["id"] for x in lst["data"]] == [fid], "list files")
raw = srv.raw(f"GET /v1/files/{fid}/content HTTP/1.1\r\nHost: x\r\n\r\n".encode())
check(raw.startswith(b"HTTP/1.1 200") and raw.split(b"\r\n\r\n", 1)[1].split(b"\n")[3] == b"{not json",
      "a file's content is its bytes")

st, b, _ = create(srv, fid, metadata={"team": "eval"})
check(st == 200 and b["object"] == "batch" and b["status"] == "validating" and b["metadata"] == {"team": "eval"} and
      b["expires_at"] - b["created_at"] == 86400, f"create a batch ({st} {b})")
# an interactive request while the batch runs is answered at once
st, ans, _ = srv.post("/v1/chat/completions", t.chat("hello", max_tokens=4))
check(st == 200, "a chat request beside a running batch")
b = wait(srv, b["id"])
rc = b["request_counts"]
check(b["status"] == "completed" and rc == {"total": REF_N + 3, "completed": REF_N, "failed": 3},
      f"completed with counts ({b['status']} {rc} {b.get('errors')})")
check(b["in_progress_at"] and b["finalizing_at"] and b["completed_at"] and b["errors"] is None, "timestamps set")
out, errs = content(srv, b["output_file_id"]), content(srv, b["error_file_id"])
check(texts(out) == REF, "answers equal herd batch run's")
codes = sorted((e["line"], e["error"]["code"] if e["error"] else e["response"]["status_code"]) for e in errs)
check(codes == [(4, "invalid_json"), (6, "duplicate_custom_id"), (8, "invalid_url")], f"per-line errors ({codes})")
st, of, _ = srv.request("GET", f"/v1/files/{b['output_file_id']}")
check(st == 200 and of["purpose"] == "batch_output", "the output is a file with purpose batch_output")
st, page, _ = srv.request("GET", "/v1/batches?limit=1")
check(st == 200 and [x["id"] for x in page["data"]] == [b["id"]] and page["has_more"] is False, "list batches")
st, _, _ = srv.post(f"/v1/batches/{b['id']}/cancel", {})
check(st == 400, "a completed batch cannot be cancelled")

# whole-file problems fail at validating
for what, blob, code in [("empty", b"\n\n", "empty_file"), ("binary", b"\x00\x01\x02{}\n", "invalid_file_format"),
                         ("too many", jsonl(41), "too_many_requests")]:
    st, f2, _ = upload(srv, blob)
    check(st == 200, f"{what} file uploads ({st} {f2})")
    st, b2, _ = create(srv, f2["id"])
    check(st == 200, f"a batch on the {what} file is created ({st} {b2})")
    b2 = wait(srv, b2["id"])
    check(b2["status"] == "failed" and b2["errors"]["data"][0]["code"] == code and b2["failed_at"],
          f"{what} input fails validation ({b2['status']} {b2.get('errors')})")

# bad uploads and bad create bodies
st, body, _ = upload(srv, b"x" * 1_020_000)
check(st == 413 and body["error"]["code"] == "file_too_large", f"a file over --batch-max-file-mb: 413 ({st})")
ans = srv.raw(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
              b"Content-Length: 5000000\r\n\r\n")
check(ans.startswith(b"HTTP/1.1 413"), f"an upload body over the limit is refused from its head ({ans[:30]!r})")
ans = srv.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 17000000\r\n\r\n")
check(ans.startswith(b"HTTP/1.1 413"), "other routes keep --max-body")
st, body, _ = upload(srv, jsonl(2), purpose=b"fine-tune")
check(st == 400 and body["error"]["param"] == "purpose", "purpose other than batch: 400")
st, body, _ = srv.request("POST", "/v1/files", b"{}", headers={"Content-Type": "application/json"})
check(st == 400, "an upload that is not multipart: 400")
b_ok = multipart([("purpose", b"batch", None)])
st, body, _ = srv.request("POST", "/v1/files", b_ok[0], headers=b_ok[1])
check(st == 400 and body["error"]["param"] == "file", "an upload without a file part: 400")
st, body, _ = srv.request("POST", "/v1/files", b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"})
check(st == 400, "a torn multipart body: 400")
for bad, param in [({"input_file_id": fid, "endpoint": "/v1/embeddings", "completion_window": "24h"}, "endpoint"),
                   ({"input_file_id": fid, "endpoint": "/v1/completions", "completion_window": "1h"},
                    "completion_window"),
                   ({"endpoint": "/v1/completions", "completion_window": "24h"}, "input_file_id"),
                   ({"input_file_id": fid, "endpoint": "/v1/completions", "completion_window": "24h",
                     "metadata": {"k": "v" * 600}}, "metadata")]:
    st, body, _ = srv.post("/v1/batches", bad)
    check(st == 400 and body["error"]["param"] == param, f"create with a bad {param}: 400 ({st} {body})")
st, body, _ = create(srv, b["output_file_id"])
check(st == 400 and body["error"]["param"] == "input_file_id", "an output file is not a batch input")
st, body, _ = create(srv, "file-0123456789abcdef01234567")
check(st == 404, "an unknown input file: 404")

# G4: ids that try to leave the data directory
before = set(os.listdir(ROOT))
bad_ids = [b"../x", b"/etc/passwd", b"a/b", b"..", b"x.", b"%00", b"file-%00", b"\xe2\x88\x95etc\xe2\x88\x95passwd",
           b"\xc0\xae\xc0\xae/x", b"..%2F..%2Fetc%2Fpasswd", b"file-0123456789abcdef0123456/../x"]
for bid in bad_ids:
    for method, prefix, suffix in [(b"GET", b"/v1/files/", b""), (b"GET", b"/v1/files/", b"/content"),
                                   (b"DELETE", b"/v1/files/", b""), (b"GET", b"/v1/batches/", b""),
                                   (b"POST", b"/v1/batches/", b"/cancel")]:
        req = method + b" " + prefix + bid + suffix + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        ans = srv.raw(req)
        check(ans.startswith(b"HTTP/1.1 400"), f"{method.decode()} {prefix + bid + suffix!r}: 400 ({ans[:40]!r})")
st, body, _ = srv.post("/v1/batches", {"input_file_id": "../../etc/passwd", "endpoint": "/v1/completions",
                                       "completion_window": "24h"})
check(st == 400, "an input_file_id with a path: 400")
check(set(os.listdir(ROOT)) == before and sorted(os.listdir(data)) == ["batches", "files"],
      "nothing created outside the data directory")

st, body, _ = srv.request("DELETE", f"/v1/files/{fid}")
check(st == 200 and body == {"id": fid, "object": "file", "deleted": True}, "delete a file")
st, _, _ = srv.request("GET", f"/v1/files/{fid}")
check(st == 404, "a deleted file is gone")
check(srv.stop() == 0, "server exits 0")

# an upload without the API key gets no more than --max-body before its 401
keyed = os.path.join(ROOT, "keyed")
srv = server(keyed, "--api-key", "sk-batch", "--max-body", "65536")
ans = srv.raw(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
              b"Content-Length: 1000000\r\n\r\n")
check(ans.startswith(b"HTTP/1.1 413"), f"no key: the upload limit is --max-body ({ans[:30]!r})")
st, f, _ = upload(srv, jsonl(600), headers={"Authorization": "Bearer sk-batch"})
check(st == 200 and f["bytes"] > 65536, f"with the key: an upload over --max-body is taken ({st})")
st, _, _ = upload(srv, jsonl(2))
check(st == 401, f"an upload without the key: 401 ({st})")
srv.stop()

# ---------------------------------------------------------------- cancel
data = os.path.join(ROOT, "cancel")
srv = server(data, "--max-seqs", "2")
st, f, _ = upload(srv, jsonl(60, tokens=200))
st, b, _ = create(srv, f["id"])
b = wait(srv, b["id"], until=("in_progress",))
deadline = time.time() + 60
while time.time() < deadline and wait(srv, b["id"], until=("in_progress",))["request_counts"]["completed"] < 2:
    time.sleep(0.1)
st, body, _ = srv.request("DELETE", f"/v1/files/{f['id']}")
check(st == 409 and body["error"]["code"] == "file_in_use", f"the input of a running batch is not deleted ({st})")
st, c, _ = srv.post(f"/v1/batches/{b['id']}/cancel", {})
check(st == 200 and c["status"] in ("cancelling", "cancelled") and c["cancelling_at"], f"cancel ({st} {c})")
b = wait(srv, b["id"])
out = content(srv, b["output_file_id"])
check(b["status"] == "cancelled" and b["cancelled_at"] and 2 <= len(out) < 60 and
      b["request_counts"]["completed"] == len(out), f"cancelled, answers kept ({b['status']} {len(out)})")
srv.stop()

# ---------------------------------------------------------------- expiry
data = os.path.join(ROOT, "expire")
srv = server(data, "--max-seqs", "1", "--batch-window", "3")
st, f, _ = upload(srv, jsonl(60, tokens=400))
st, b, _ = create(srv, f["id"])
b = wait(srv, b["id"])
out, errs = content(srv, b["output_file_id"]), content(srv, b["error_file_id"])
ids = [r["custom_id"] for r in out] + [e["custom_id"] for e in errs]
check(b["status"] == "expired" and b["expired_at"] and all(e["error"]["code"] == "batch_expired" for e in errs) and
      sorted(ids) == sorted(f"c{i}" for i in range(60)) and
      b["request_counts"]["completed"] + b["request_counts"]["failed"] == 60,
      f"expired: every line answered or batch_expired, once ({b['status']} {len(out)} {len(errs)})")
srv.stop()

# -------------------------------------------------- G2: kill -9, restart, resume
data = os.path.join(ROOT, "kill")
srv = server(data)
st, f, _ = upload(srv, jsonl(REF_N))
st, b, _ = create(srv, f["id"])
bid = b["id"]
rng = random.Random(7)
for k in range(6):
    time.sleep(rng.uniform(0.2, 1.5))
    srv.stop(sig=signal.SIGKILL)
    srv = server(data)
    st, b, _ = srv.request("GET", f"/v1/batches/{bid}")
    check(st == 200 and b["status"] in ("validating", "in_progress", "finalizing", "completed"),
          f"after kill -9 #{k + 1} the batch is still there ({st} {b and b['status']})")
b = wait(srv, bid)
out = content(srv, b["output_file_id"])
check(b["status"] == "completed" and len(out) == REF_N and texts(out) == REF and b["request_counts"]["completed"] ==
      REF_N, f"after 6 kills: every custom_id once, answers equal ({b['status']} {len(out)})")
check(srv.stop() == 0, "server exits 0 after the kills")

# ------------------------------------- G1: a full disk keeps the server up (root)
if os.geteuid() == 0 and shutil.which("mount"):
    mnt = os.path.join(ROOT, "tmpfs")
    os.makedirs(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt]).returncode == 0:
        try:
            srv = server(mnt)
            st, f, _ = upload(srv, jsonl(40, tokens=64))
            st, b, _ = create(srv, f["id"])
            filler = os.path.join(mnt, "filler")
            with open(filler, "wb") as fh:  # leave ~20 KiB: a few answers fit, then ENOSPC
                free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
                fh.write(b"\0" * max(0, free - 20_000))
            deadline = time.time() + 120
            while time.time() < deadline:
                st, b, _ = srv.request("GET", f"/v1/batches/{b['id']}")
                if b.get("errors"):
                    break
                time.sleep(0.2)
            check(b["status"] == "in_progress" and b["errors"]["data"][0]["code"] == "output_write_failed" and
                  "No space" in b["errors"]["data"][0]["message"], f"a full disk is reported ({b})")
            st, _, _ = srv.post("/v1/chat/completions", t.chat("still there?", max_tokens=4))
            check(st == 200 and srv.proc.poll() is None, "the server stays up on a full disk")
            os.unlink(filler)
            b = wait(srv, b["id"])
            out, errs = content(srv, b["output_file_id"]), content(srv, b["error_file_id"])
            check(b["status"] == "completed" and b["errors"] is None and len(out) == 40 and not errs and
                  len({r["custom_id"] for r in out}) == 40, f"space freed: the batch resumes and completes ({b})")
            srv.stop()
        finally:
            subprocess.run(["umount", "-l", mnt])
    else:
        print("note: cannot mount a tmpfs here; the full-disk case is skipped")
else:
    print("note: not root; the full-disk (tmpfs) case is skipped")

shutil.rmtree(ROOT, ignore_errors=True)
t.finish("batch API")
