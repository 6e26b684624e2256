#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_http1_response: the answers herd serve
gives (whole JSON, SSE over chunked coding, errors), every framing the
parser knows (Content-Length, chunked with extensions and trailers, until
close, none for HEAD / 204 / 304), interim 1xx answers, pipelined answers,
and broken ones. Each file starts with two control bytes: the piece size
the target feeds at a time, and bit 0 set for a response to HEAD.

    python3 tests/fuzz/make_http1_response_seeds.py tests/fuzz/corpus/http1_response
"""
import os
import sys

SSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
       b"Transfer-Encoding: chunked\r\nX-Request-Id: req-1\r\n\r\n"
       b"1c\r\ndata: {\"choices\":[\"a\"]}\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
JSON = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nX-Request-Id: r\r\n\r\n"
        b"{\"status\":\"ok\"}")

SEEDS = {
    "json": (255, 0, JSON),
    "json-bytewise": (1, 0, JSON),
    "sse": (255, 0, SSE),
    "sse-split7": (7, 0, SSE),
    "error-503-close": (255, 0, b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"),
    "chunk-ext-trailers": (255, 0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n"
                                   b"0\r\nX-Trailer: 1\r\n\r\n"),
    "until-close": (255, 0, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end"),
    "head": (255, 1, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
    "no-content": (255, 0, b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"),
    "interim": (255, 0, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
    "pipelined": (255, 0, JSON + JSON + SSE),
    "bare-lf": (255, 0, b"HTTP/1.1 200\nContent-Length: 2\n\nok"),
    "bad-cl-te": (255, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "bad-chunk": (255, 0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\n"),
    "bad-status": (255, 0, b"HTTP/1.1 2x0 OK\r\n\r\n"),
    "switching": (255, 0, b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
    "body-too-large": (255, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, (piece, flags, data) in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([piece, flags]) + data)


if __name__ == "__main__":
    main()
