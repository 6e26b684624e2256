#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_jinja: the real chat templates of
tests/data/chat-templates.json and the small templates of
tests/data/jinja-cases.json, one file each.

    python3 tests/fuzz/make_jinja_seeds.py tests/fuzz/corpus/jinja
"""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    sources = [t["template"] for t in json.load(open(os.path.join(DATA, "chat-templates.json")))["templates"]]
    sources += [c["template"] for c in json.load(open(os.path.join(DATA, "jinja-cases.json")))["cases"]]
    for src in sources:
        data = src.encode("utf-8")
        with open(os.path.join(out, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
            f.write(data)
    print(f"{len(sources)} seeds -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
