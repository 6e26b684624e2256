#!/usr/bin/env python3
"""Constrained decoding through `herd serve` (issue 22, first part), on the
built-in random-ish story model that would otherwise write anything:
  - a GBNF `grammar` on /v1/completions and /v1/chat/completions: every
    answer matches it (checked by a regular expression written apart from
    the grammar), with temperature, top_p / top_k, n > 1, seeds and
    streaming; a bounded grammar ends with finish_reason "stop";
  - response_format json_object: answers that end ("stop") parse as JSON
    objects; those cut by max_tokens say "length" and are a prefix the
    grammar still allows;
  - response_format json_schema: ANSWERS answers (default 1,000) over a
    varied set of schemas (nesting, enums, optional properties, arrays with
    bounds, integer ranges, anyOf, $ref recursion, formats), every one that
    ends validated with npm ajv (an implementation apart from herd's); a
    schema feature herd cannot enforce is a 400 naming it;
  - errors: a bad grammar (the parser's message), an unknown type, grammar
    with a JSON response_format, a non-string.

usage: test_structured.py HERD_BINARY SOURCE_DIR"""
import json
import os
import re
import subprocess
import sys
import time

import herd_test as H

H.setup(sys.argv[1], sys.argv[2])

PERSON = r'''root ::= "{\"name\": \"" name "\", \"age\": " age ", \"pets\": [" pets? "]}"
name ::= [A-Z] [a-z]{1,9}
age  ::= [1-9] [0-9]?
pets ::= pet (", " pet){0,2}
pet  ::= "\"" ("cat" | "dog" | "fish") "\""
'''
PERSON_RE = re.compile(r'\{"name": "[A-Z][a-z]{1,9}", "age": [1-9][0-9]?, "pets": \[("(cat|dog|fish)"(, "(cat|dog|fish)"){0,2})?\]\}')


def test_grammar(srv):
    n_ok = 0
    for seed in range(12):
        body = H.completion("Once upon a time", grammar=PERSON, max_tokens=80, seed=seed, temperature=1.0,
                            top_p=0.95 if seed % 2 else 1.0, top_k=40 if seed % 3 == 0 else 0)
        st, j = srv.post("/v1/completions", body)[:2]
        c = j["choices"][0]
        good = st == 200 and PERSON_RE.fullmatch(c["text"]) and c["finish_reason"] == "stop"
        n_ok += bool(good)
        if not good:
            print("unexpected:", st, c, file=sys.stderr)
        parsed = json.loads(c["text"]) if good else None
        H.check(good and isinstance(parsed["age"], int), "grammar, seed %d: %r" % (seed, c["text"][:80]))
    # n > 1: every choice follows the grammar
    st, j = srv.post("/v1/chat/completions", H.chat("Tell me about a person.", grammar=PERSON, n=4,
                                                    temperature=1.0, seed=7, max_tokens=80))[:2]
    texts = [c["message"]["content"] for c in j["choices"]]
    H.check(st == 200 and len(texts) == 4 and all(PERSON_RE.fullmatch(t) for t in texts),
            "n=4 chat choices all match: %r" % texts)
    # greedy and streamed: the same text as not streamed
    body = H.completion("Once", grammar=PERSON, max_tokens=80)
    whole = srv.post("/v1/completions", body)[1]["choices"][0]["text"]
    chunks, done = H.stream(srv, "/v1/completions", body)
    streamed = "".join(ch["choices"][0].get("text", "") for ch in chunks if ch.get("choices"))
    H.check(done and streamed == whole and PERSON_RE.fullmatch(whole), "streamed greedy equals whole: %r" % whole)
    # a one-of grammar
    st, j = srv.post("/v1/completions", H.completion("The answer is", grammar='root ::= " yes" | " no"',
                                                      max_tokens=10))[:2]
    H.check(j["choices"][0]["text"] in (" yes", " no") and j["choices"][0]["finish_reason"] == "stop",
            "one of two: %r" % j["choices"][0])


def test_json_object(srv):
    stops = lengths = 0
    for seed in range(8):
        st, j = srv.post("/v1/chat/completions", H.chat("hi", response_format={"type": "json_object"},
                                                        max_tokens=60, seed=seed, temperature=0.8))[:2]
        c = j["choices"][0]
        text = c["message"]["content"]
        if c["finish_reason"] == "stop":
            stops += 1
            try:
                ok = isinstance(json.loads(text), dict)
            except ValueError:
                ok = False
            H.check(ok, "json_object answer parses: %r" % text[:200])
        else:
            lengths += 1
            H.check(c["finish_reason"] == "length" and text.startswith("{"),
                    "json_object cut by max_tokens says length and starts an object: %r" % text[:80])
    print("json_object: %d ended, %d cut by max_tokens" % (stops, lengths))
    H.check(stops + lengths == 8, "every json_object answer ended one way or the other")
    # an object that must end soon: logit_bias cannot push the model out of
    # the grammar, and a short answer completes (the model's own choice of
    # "}" is what ends it; max_tokens only bounds the wait)
    st, j = srv.post("/v1/completions", H.completion("{", response_format={"type": "json_object"}, max_tokens=200,
                                                      logit_bias={"0": -100}))[:2]
    H.check(st == 200 and j["choices"][0]["text"].startswith("{"), "json_object with logit_bias: %r"
            % j["choices"][0]["text"][:60])


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                      "email": {"type": "string", "format": "uuid"}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"enum": ["red", "green", "blue", 7, None]}, "minItems": 1, "maxItems": 4},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "when": {"type": "string", "format": "date"},
                                      "tags": {"type": "array", "items": {"type": "string", "maxLength": 5},
                                               "maxItems": 3},
                                      "score": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 5},
                                                          {"type": "null"}]}},
     "required": ["ok", "score"]},
    {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 9},
                                                         "kids": {"type": "array", "items": {"$ref": "#/$defs/node"},
                                                                  "maxItems": 2}},
                        "required": ["v"], "additionalProperties": False}},
     "$ref": "#/$defs/node"},
    {"type": "object", "properties": {"city": {"const": "Paris"}, "temp": {"type": "number", "minimum": 0},
                                      "unit": {"enum": ["C", "F"]}},
     "required": ["city", "temp", "unit"]},
    {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 4}, {"type": "boolean"}]},
]
ANSWERS = int(os.environ.get("HERD_STRUCTURED_ANSWERS", "1000"))


def ajv_validate(groups):
    """[(schema, [texts])] -> [[(valid, error)]] through npm ajv; None when ajv is not installed."""
    sdk = os.path.abspath(os.path.join(sys.argv[2], "tests", "server", "sdk"))
    if not os.path.isdir(os.path.join(sdk, "node_modules", "ajv")):
        return None
    p = subprocess.run(["node", os.path.join(sdk, "validate_schema.mjs")], cwd=sdk, capture_output=True, text=True,
                       input=json.dumps([{"schema": sc, "docs": docs} for sc, docs in groups]), timeout=120)
    if p.returncode != 0:
        raise RuntimeError("ajv: " + p.stderr)
    return [[(r["valid"], r["error"]) for r in g] for g in json.loads(p.stdout)]


def test_json_schema(srv):
    per_schema = max(8, ANSWERS // len(SCHEMAS))
    groups, lengths, total = [], 0, 0
    for k, sc in enumerate(SCHEMAS):
        texts, seed, answered = [], 1000 * k, 0
        while answered < per_schema and seed < 1000 * k + 200:
            rf = {"type": "json_schema", "json_schema": {"name": "s%d" % k, "schema": sc, "strict": True}}
            body = H.chat("Answer in JSON.", response_format=rf, n=8, temperature=1.0, seed=seed, max_tokens=120)
            if seed % 2:
                body = H.completion("Data:", response_format=rf, n=8, temperature=0.9, top_p=0.95, seed=seed,
                                    max_tokens=120)
            st, j = srv.post("/v1/chat/completions" if not seed % 2 else "/v1/completions", body)[:2]
            seed += 1
            if st != 200:
                H.check(False, "json_schema %d: status %s %s" % (k, st, j))
                break
            for c in j["choices"]:
                text = c["message"]["content"] if "message" in c else c["text"]
                total += 1
                answered += 1
                if c["finish_reason"] == "stop":
                    texts.append(text)
                else:
                    lengths += 1
        groups.append((sc, texts))
    results = ajv_validate(groups)
    n_valid = n_checked = 0
    for (sc, texts), res in zip(groups, results or [[] for _ in groups]):
        for text, (valid, error) in zip(texts, res):
            n_checked += 1
            n_valid += valid
            if not valid:
                H.check(False, "ajv refuses %r: %s (schema %s)" % (text[:200], error, json.dumps(sc)[:120]))
        for text in texts:  # the formats herd enforces, checked here (ajv runs without ajv-formats)
            for m in re.finditer(r'"(\d{4}-\d{2}-\d{2})"', text):
                H.check(re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])", m.group(1)), "a date: " + m.group(1))
    if results is None:
        print("note: npm ajv is not installed (scripts/install-deps.sh): %d answers not validated" % total)
    else:
        print("json_schema: %d answers, %d ended and all %d valid by ajv, %d cut by max_tokens"
              % (total, n_checked, n_valid, lengths))
        H.check(n_checked >= ANSWERS * 0.8, "at least 80 %% of %d answers ended (%d)" % (ANSWERS, n_checked))
    # what cannot be enforced is refused, naming it
    for sc, words in (({"type": "string", "pattern": "^a"}, "'pattern' cannot be enforced"),
                      ({"type": "object", "properties": {"e": {"type": "string", "format": "email"}}},
                       "at .properties.e: format 'email'"),
                      ({"type": "array", "uniqueItems": True}, "'uniqueItems'")):
        rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": sc}}
        st, j = srv.post("/v1/chat/completions", H.chat("x", response_format=rf, max_tokens=5))[:2]
        err = (j or {}).get("error", {})
        H.check(st == 400 and err.get("param") == "response_format.json_schema.schema" and words in err["message"],
                "unenforceable schema refused naming it: %s" % err)
    rf = {"type": "json_schema", "json_schema": {"schema": {"type": "string"}}}
    st, j = srv.post("/v1/chat/completions", H.chat("x", response_format=rf, max_tokens=5))[:2]
    H.check(st == 400 and "name" in j["error"]["message"], "json_schema without a name: 400")


def test_errors(srv):
    cases = [
        ({"grammar": "root ::= foo"}, "grammar", "'foo' is used but not defined"),
        ({"grammar": "root ::= \"a"}, "grammar", "line 1"),
        ({"grammar": 5}, "grammar", "GBNF"),
        ({"response_format": {"type": "xml"}}, "response_format", "unknown response_format type"),
        ({"response_format": "json"}, "response_format", "must be an object"),
        ({"response_format": {"type": "json_object"}, "grammar": "root ::= \"a\""}, "grammar", "cannot be combined"),
    ]
    for extra, param, words in cases:
        for path, body in (("/v1/completions", H.completion("x", max_tokens=5, **extra)),
                           ("/v1/chat/completions", H.chat("x", max_tokens=5, **extra))):
            st, j = srv.post(path, body)[:2]
            err = (j or {}).get("error", {})
            H.check(st == 400 and err.get("param") == param and words in err.get("message", ""),
                    "%s %s: 400 naming %s (%s %s)" % (path, extra, param, st, err))
    # text is plain output
    st, j = srv.post("/v1/completions", H.completion("x", max_tokens=5, response_format={"type": "text"}))[:2]
    H.check(st == 200, "response_format text is accepted")


def test_preemption():
    """One sequence slot, steps slowed down: low-priority grammar requests
    run, higher ones arrive and take the slot (the low ones are preempted,
    their KV dropped and later recomputed), and every answer still matches:
    the grammar state is kept with the request, not the sequence."""
    srv = H.Server("-q", "--max-seqs", "1", env={"HERD_TEST_STEP_DELAY_MS": "4"})
    try:
        import threading
        results = []

        def one(k, priority, delay):
            time.sleep(delay)
            body = H.completion("Story %d. Her name was" % k, grammar=PERSON, max_tokens=80, temperature=1.0,
                                seed=100 + k, priority=priority)
            results.append(srv.post("/v1/completions", body)[:2])
        ts = [threading.Thread(target=one, args=(k, 10 - k, 0.15 * k)) for k in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        texts = [c["text"] for st, j in results if st == 200 for c in j["choices"]]
        H.check(len(texts) == 6 and all(PERSON_RE.fullmatch(t) for t in texts),
                "answers under preemption all match (%d of 6): %r" % (len(texts), texts[:2]))
        pre = srv.metrics().get("herd_preemptions_total", 0)
        H.check(pre > 0, "preemption happened (herd_preemptions_total %s)" % pre)
    finally:
        srv.stop()


def main():
    test_preemption()
    srv = H.Server("-q")
    try:
        test_grammar(srv)
        test_json_object(srv)
        test_json_schema(srv)
        test_errors(srv)
        st = srv.request("GET", "/health")[0]
        H.check(st == 200, "the server is up after all of it")
    finally:
        srv.stop()
    H.finish("structured outputs")


main()
