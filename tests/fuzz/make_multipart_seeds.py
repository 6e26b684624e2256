#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_multipart: the uploads the openai SDKs
send (node 4 through form-data-encoder, byte for byte as captured; node 5
through undici; python through httpx), curl's and a browser's framing,
LF-only line ends, binary data that looks like a delimiter, empty parts, a
preamble and an epilogue, escapes in parameters, and broken bodies (no
close, no blank line, junk after a delimiter, too many parts, headers near
the 8 KiB cap). Each file starts with one byte, the boundary's length
less one, then the boundary, then the body (fuzz_multipart.c).

    python3 tests/fuzz/make_multipart_seeds.py tests/fuzz/corpus/multipart
"""
import os
import sys


def part(b, headers, data, eol=b"\r\n"):
    return b"--" + b + eol + eol.join(headers) + eol + eol + data + eol


def body(b, parts, eol=b"\r\n", close=True):
    out = b"".join(part(b, h, d, eol) for h, d in parts)
    return out + (b"--" + b + b"--" + eol if close else b"")


def disp(name, filename=None):
    s = b'Content-Disposition: form-data; name="' + name + b'"'
    return s + (b'; filename="' + filename + b'"' if filename is not None else b"")


JSONL = b'{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{}}\n'
UNDICI = b"----formdata-undici-012345678901"  # openai-node 5 (native fetch)
FDE = b"form-data-boundary-bckholoopcfkwqft"  # openai-node 4 (form-data-encoder)
HTTPX = b"8d5e7c0a3b1f4e2d9c6a0b7e5f3d1c2a"
CURL = b"------------------------d74496d66958873e"
WEBKIT = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"

SEEDS = {
    "sdk": (UNDICI, body(UNDICI, [([disp(b"purpose")], b"batch"),
                                  ([disp(b"file", b"batch.jsonl"), b"Content-Type: application/jsonl"], JSONL * 2)])),
    "sdk-node4": (FDE, body(FDE, [([disp(b"purpose")], b"batch"),
                                  ([disp(b"file", b"batch.jsonl"), b"Content-Type: application/octet-stream"],
                                   b'{"custom_id":"r1"}\n--\0\r\n--x')]) + b"\r\n"),
    "sdk-python": (HTTPX, body(HTTPX, [([disp(b"purpose")], b"batch"),
                                       ([disp(b"file", b"input.jsonl"), b"Content-Type: application/octet-stream"],
                                        JSONL)])),
    "curl": (CURL, body(CURL, [([disp(b"purpose")], b"batch"),
                               ([disp(b"file", b"a.jsonl"), b"Content-Type: application/octet-stream"], JSONL)])),
    "browser-empty-file": (WEBKIT, body(WEBKIT, [([disp(b"purpose")], b"batch"),
                                                 ([disp(b"file", b""), b"Content-Type: application/octet-stream"],
                                                  b"")])),
    "lf": (b"B", body(b"B", [([disp(b"a")], b"x--B"), ([b'content-disposition: form-data; name="e"'], b"")],
                      eol=b"\n")),
    "binary": (b"bnd", body(b"bnd", [([disp(b"file", b"b.bin")], bytes(range(256)) + b"\n--bnd\r\r\n--bn\r\n-")])),
    "empty-parts": (b"B", b"--B\r\n" + disp(b"a") + b"\r\n\r\n\r\n--B\r\n" + disp(b"b") + b"\r\n\r\n--B--\r\n"),
    "preamble-epilogue": (b"B", b"preamble --B\r\n" + body(b"B", [([disp(b"a")], b"1")]) + b"epilogue\r\n--B\r\n"),
    "padding": (b"B", b"--B \t\r\n" + disp(b"a") + b"\r\n\r\n1\r\n--B--  \r\n"),
    "params": (b"a'()+_,-./:=? z", body(b"a'()+_,-./:=? z", [
        ([b'CONTENT-DISPOSITION:form-data;name="a\\"b";filename*=UTF-8\'\'x.txt;filename="C:\\\\x;y"',
          b"content-type:  text/plain; charset=utf-8  ", b"X-Other: 1"], b"v")])),
    "boundary-70": (b"b" * 70, body(b"b" * 70, [([disp(b"file", b"f")], (b"\r\n--" + b"b" * 69 + b"a") * 4)])),
    "no-close": (b"B", body(b"B", [([disp(b"a")], b"data")], close=False)),
    "no-blank-line": (b"B", b"--B\r\n" + disp(b"a") + b"\r\nno blank line"),
    "unterminated-quote": (b"B", b'--B\r\nContent-Disposition: form-data; name="a\r\n\r\nx\r\n--B--'),
    "junk-after-boundary": (b"B", b"--B junk\r\n" + disp(b"a") + b"\r\n\r\nx\r\n--B--"),
    "too-many-parts": (b"B", body(b"B", [([disp(b"p%d" % i)], b"%d" % i) for i in range(9)])),
    "headers-near-cap": (b"B", body(b"B", [([disp(b"a"), b"X-Pad: " + b"p" * 8140], b"x")])),
    "not-form-data": (b"B", body(b"B", [([b"Content-Disposition: attachment; name=a"], b"x")])),
    "content-type": (b"multipart/form-data; boundary=\"x y\"", b""),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, (boundary, data) in SEEDS.items():
        assert 1 <= len(boundary) <= 70, name
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([len(boundary) - 1]) + boundary + data)


if __name__ == "__main__":
    main()
