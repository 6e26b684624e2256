#!/usr/bin/env bash
# Drives the herd binary as a user would: usage errors, help for every
# command, inspect on every GGUF we have, synth and convert end to end, and
# (when ../shared and numpy are present) the converted default model checked
# against llama2.c's own greedy output through the float64 reference.
# Usage: test_cli.sh HERD_BINARY SOURCE_DIR SHARED_DIR
set -u
HERD=$1
SRC=$2
SHARED=$3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# expect_exit CODE CMD...: runs CMD, checks its exit code
expect_exit() {
    local want=$1
    shift
    "$@" >"$TMP/out" 2>"$TMP/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else bad "exit $got (want $want): $*"; cat "$TMP/err" >&2; fi
}

# --- usage and help -------------------------------------------------------
expect_exit 2 "$HERD"
expect_exit 2 "$HERD" frobnicate
grep -q "unknown command 'frobnicate'" "$TMP/err" && grep -q "usage: herd COMMAND" "$TMP/err" && ok || bad "unknown command message"
[ "$(head -1 "$TMP/err")" = "herd: unknown command 'frobnicate'" ] && ok || bad "first line names the command"
expect_exit 0 "$HERD" help
grep -q inspect "$TMP/out" && grep -q synth "$TMP/out" && grep -q convert "$TMP/out" && ok || bad "help lists commands"
expect_exit 0 "$HERD" --version
for cmd in inspect synth convert run eval bench tokenize detokenize chat-template imatrix; do
    expect_exit 0 "$HERD" "$cmd" --help
    grep -q "usage: herd $cmd" "$TMP/out" && ok || bad "$cmd --help"
    expect_exit 0 "$HERD" help "$cmd"
    expect_exit 2 "$HERD" "$cmd" --no-such-flag
    [ "$(head -1 "$TMP/err")" = "herd $cmd: unknown option '--no-such-flag'" ] && ok || bad "$cmd unknown flag line"
    grep -q "usage: herd $cmd" "$TMP/err" && ok || bad "$cmd usage on stderr"
done
expect_exit 2 "$HERD" inspect
expect_exit 2 "$HERD" inspect a b
expect_exit 2 "$HERD" inspect --ctx abc "$SRC/models/stories260K.gguf"
expect_exit 2 "$HERD" synth --shape tiny
expect_exit 2 "$HERD" synth --shape nope -o "$TMP/x.gguf"
expect_exit 2 "$HERD" synth --shape tiny --type Q9_K -o "$TMP/x.gguf"
expect_exit 2 "$HERD" convert gguf a b -o "$TMP/x.gguf"

# --- inspect --------------------------------------------------------------
files=("$SRC/models/stories260K.gguf" "$SRC"/tests/data/*.gguf "$SRC"/tests/fuzz/corpus/gguf/valid-*)
if [ -d "$SHARED/fixtures" ]; then
    files+=("$SHARED"/fixtures/models/*.gguf "$SHARED"/fixtures/tokenizer/*.gguf)
else
    echo "note: $SHARED/fixtures absent; inspecting the repository's own files only" >&2
fi
for f in "${files[@]}"; do
    expect_exit 0 "$HERD" inspect "$f"
    grep -q "^tensors (" "$TMP/out" && ok || bad "inspect $f: no tensor section"
    expect_exit 0 "$HERD" inspect --json --ctx 256 "$f"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ram_estimate"]["n_ctx"]==256; assert len(d["tensors"])==d["n_tensors"]' "$TMP/out" && ok || bad "inspect --json $f"
done
"$HERD" inspect "$SRC/models/stories260K.gguf" >"$TMP/out"
grep -q "runnable      yes" "$TMP/out" && grep -q "n_layer 5" "$TMP/out" && grep -q "512 tokens" "$TMP/out" && ok || bad "stories260K summary"
"$HERD" inspect "$SRC/tests/data/ggml-vocab-llama-spm.gguf" >"$TMP/out"
grep -q "vocabulary only" "$TMP/out" && ok || bad "vocab-only file"
# broken files: exit 1 with the reason, never a crash
head -c 1000 "$SRC/models/stories260K.gguf" >"$TMP/cut.gguf"
expect_exit 1 "$HERD" inspect "$TMP/cut.gguf"
grep -q "truncated" "$TMP/err" && grep -q "cut.gguf" "$TMP/err" && ok || bad "truncated message"
printf 'GGUF' >"$TMP/magic.gguf"
expect_exit 1 "$HERD" inspect "$TMP/magic.gguf"
expect_exit 1 "$HERD" inspect "$TMP/does-not-exist.gguf"
expect_exit 1 "$HERD" inspect "$SRC/tests/fuzz/corpus/gguf/bad-alignment-3"

# --- synth and convert ----------------------------------------------------
expect_exit 0 "$HERD" synth --list-shapes
grep -q "tinyllama-1.1b" "$TMP/out" && grep -q "llama-3.2-1b" "$TMP/out" && ok || bad "list shapes"
expect_exit 0 "$HERD" synth --shape tiny --type Q8_0 --seed 9 -o "$TMP/a.gguf"
expect_exit 0 "$HERD" synth --shape tiny --type Q8_0 --seed 9 -o "$TMP/b.gguf"
cmp -s "$TMP/a.gguf" "$TMP/b.gguf" && ok || bad "synth is deterministic"
"$HERD" inspect "$TMP/a.gguf" | grep -q "runnable      yes" && ok || bad "synth model runnable"
expect_exit 1 "$HERD" synth --shape tiny -o "$TMP/c.gguf" --vocab "$TMP/missing.gguf"
[ ! -e "$TMP/c.gguf" ] && ok || bad "failed synth leaves no file"
S=$SRC/tests/data/stories260K
expect_exit 0 "$HERD" convert llama2c "$S/stories260K.bin" "$S/tok512.bin" -o "$TMP/s.gguf"
cmp -s "$TMP/s.gguf" "$SRC/models/stories260K.gguf" && ok || bad "convert reproduces the committed default model"
expect_exit 0 "$HERD" convert llama2c "$S/stories260K.bin" "$S/tok512.bin" -o "$TMP/s8.gguf" --type Q8_0
expect_exit 1 "$HERD" convert llama2c "$S/tok512.bin" "$S/tok512.bin" -o "$TMP/bad.gguf"
[ ! -e "$TMP/bad.gguf" ] && ok || bad "failed convert leaves no file"

# --- run and eval -----------------------------------------------------------
# llama2.c's own greedy output from BOS alone (run.c prints `steps` tokens)
"$HERD" run --prompt-ids 1 -n 60 --greedy >"$TMP/g60.txt" 2>"$TMP/err"
cmp -s "$TMP/g60.txt" "$S/greedy-bos-60.txt" && ok || bad "greedy 60 tokens differ from llama2.c"
grep -q "tokens/s" "$TMP/err" && ok || bad "run prints timings to stderr"
"$HERD" run --prompt-ids 1 -n 256 --greedy --threads 1 >"$TMP/g256.txt" 2>/dev/null
cmp -s "$TMP/g256.txt" "$S/greedy-bos-256.txt" && ok || bad "greedy 256 tokens differ from llama2.c"
"$HERD" run -p "Once upon a time" -n 20 --seed 5 --json >"$TMP/a.json" 2>/dev/null
"$HERD" run -p "Once upon a time" -n 20 --seed 5 --json >"$TMP/b.json" 2>/dev/null
python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); assert a["ids"]==b["ids"] and a["prompt_ids"][0]==1 and len(a["ids"])==20, (a,b)' "$TMP/a.json" "$TMP/b.json" && ok || bad "seeded run is deterministic"
expect_exit 2 "$HERD" run
expect_exit 2 "$HERD" run -p x --prompt-ids 1
expect_exit 2 "$HERD" run --prompt-ids 1,x
expect_exit 1 "$HERD" run --prompt-ids 1,512
grep -q "invalid token id 512" "$TMP/err" && ok || bad "out-of-vocabulary id message"
# a KV cache larger than the machine's memory: refused at start, named
expect_exit 1 "$HERD" serve --kv-mem 1000000000000000 --port 0
grep -q "KV cache of [0-9]* bytes .* is more than the [0-9]* bytes of memory available; lower --kv-mem" "$TMP/err" && ok ||
    bad "KV cache over the memory: $(cat "$TMP/err")"
expect_exit 1 "$HERD" run --prompt-ids 1,2,3 --ctx 3
grep -q "context" "$TMP/err" && ok || bad "prompt longer than the context message"
expect_exit 1 "$HERD" run -m "$TMP/cut.gguf" --prompt-ids 1
grep -q "truncated" "$TMP/err" && ok || bad "corrupt model message"
expect_exit 0 "$HERD" eval --ids 1,403,407 --top 3
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["n_vocab"]==512 and len(d["positions"])==3 and len(d["positions"][0]["top"])==3 and len(d["last_logits"])==512' "$TMP/out" && ok || bad "eval JSON shape"

expect_exit 0 "$HERD" bench -p 16 -n 4 -r 1 --batch 2 --batch-prompt 4 --no-ceilings --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); t=[r["test"] for r in d["results"]]; assert t==["pp16","tg4","tg4-b2"], t; assert all(r["tokens_per_s"]>0 for r in d["results"])' "$TMP/out" && ok || bad "bench JSON"
# tg's read-bandwidth floor measured beside its repetitions: its fraction is the
# median of the repetitions' own (bytes x tokens/s / the higher bandwidth around each)
expect_exit 0 "$HERD" bench -p 0 -n 4 -r 2 --batch 0 --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"][0]; assert r["test"]=="tg4" and r["read_gbps_beside"]>0 and 0<r["fraction_of_ceiling"]<2, r' "$TMP/out" && ok || bad "bench tg floor beside the repetitions"
# every family's tiny shape through run, eval and bench (phi3 has no attn_q tensor, MoE no ffn_gate, ...)
for shape in qwen3-tiny gemma2-tiny gemma3-tiny phi3-tiny mistral-tiny mixtral-tiny qwen2moe-tiny qwen3moe-tiny; do
    expect_exit 0 "$HERD" synth --shape "$shape" --type Q8_0 -o "$TMP/fam.gguf"
    expect_exit 0 "$HERD" run -m "$TMP/fam.gguf" -p "Once upon a time" -n 4 --temp 0
    expect_exit 0 "$HERD" eval -m "$TMP/fam.gguf" --ids 1,403,407,9 --batch 1
    expect_exit 0 "$HERD" bench -m "$TMP/fam.gguf" -p 16 -n 4 -r 1 --batch 2 --batch-prompt 4 --no-ceilings
    expect_exit 0 "$HERD" inspect "$TMP/fam.gguf"
    grep -q "runnable      yes\|runnable.*yes" "$TMP/out" && ok || bad "inspect $shape: not runnable"
done

# --- imatrix ------------------------------------------------------------------
# the default model over this repository's docs: one entry per block
# matrix (stories260K: 5 layers x 7), llama.cpp's layout, chunks in the trailer
cat "$SRC"/docs/*.md >"$TMP/text.txt"
expect_exit 0 "$HERD" imatrix -f "$TMP/text.txt" -o "$TMP/imx.dat" --ctx 64 --chunks 4
python3 - "$TMP/imx.dat" <<'PYEOF' && ok || bad "imatrix file layout"
import struct, sys
b = open(sys.argv[1], "rb").read()
n, = struct.unpack_from("<i", b, 0); o = 4
names = []
for _ in range(n):
    l, = struct.unpack_from("<i", b, o); names.append(b[o + 4:o + 4 + l].decode()); o += 4 + l
    ncall, nval = struct.unpack_from("<ii", b, o); o += 8 + 4 * nval
    assert ncall == 4 and nval > 0, (ncall, nval)
chunks, dlen = struct.unpack_from("<ii", b, o)
assert chunks == 4 and o + 8 + dlen == len(b)
assert n == 35 and "blk.0.attn_q.weight" in names and "blk.4.ffn_down.weight" in names, names
PYEOF
expect_exit 1 "$HERD" imatrix -f "$TMP/no-such.txt" -o "$TMP/x.dat"
grep -q "no-such.txt" "$TMP/err" && ok || bad "imatrix names the missing text"
printf 'too short' >"$TMP/short.txt"
expect_exit 1 "$HERD" imatrix -f "$TMP/short.txt" -o "$TMP/x.dat"
grep -q "fewer than one chunk" "$TMP/err" && [ ! -e "$TMP/x.dat" ] && ok || bad "imatrix on too little text"
expect_exit 2 "$HERD" imatrix -f "$TMP/text.txt" -o "$TMP/x.dat" --ctx 8
expect_exit 1 "$HERD" imatrix -f "$TMP/text.txt" -o "$TMP/no-such-dir/x.dat" --ctx 64 --chunks 1
grep -q "no-such-dir" "$TMP/err" && ok || bad "imatrix names the unwritable output"

# --- the built-in profiler --------------------------------------------------
# shares of each table add up to 100 %; matmuls, attention and norms appear
check_profile() { # FILE TABLES: each table's share column sums to ~100
    python3 - "$1" "$2" <<'PY'
import re, sys
text, want = open(sys.argv[1]).read(), int(sys.argv[2])
tables = re.split(r"^profile: ", text, flags=re.M)[1:]
assert len(tables) == want, f"{len(tables)} profile tables, want {want}"
for t in tables:
    shares = [float(m) for m in re.findall(r"\|\s+([\d.]+)%\s+\|", t)]
    assert abs(sum(shares) - 100) < 1.0, (sum(shares), t)
    for op in ("matmul f32 ffn gate/up", "attention", "rmsnorm", "silu * up"):
        assert op in t, (op, t)
    # a prompt ropes and stores in a step of its own; decode (one token per
    # sequence) in each attention task, for its own KV head
    assert "rope + kv cache store" in t or "rope + kv store + attention" in t, t
PY
}
expect_exit 0 "$HERD" bench -p 16 -n 4 -r 1 --batch 2 --batch-prompt 4 --no-ceilings --profile
check_profile "$TMP/out" 3 && ok || bad "bench --profile: three tables whose shares add up"
expect_exit 0 "$HERD" run --prompt-ids 1,403 -n 4 --greedy --profile
check_profile "$TMP/err" 2 && grep -q "| sampling " "$TMP/err" && ok || bad "run --profile: prompt and generation tables, sampling"
expect_exit 0 "$HERD" run --prompt-ids 1,403 -n 4 --greedy
! grep -q "^profile:" "$TMP/err" && ok || bad "no profile without --profile"

# --- chat-template -----------------------------------------------------------
V=$SRC/tests/data/ggml-vocab-llama-spm.gguf
printf '[{"role":"user","content":"Hello"}]' >"$TMP/msgs.json"
# a model without a template falls back to ChatML
"$HERD" chat-template -m "$V" --messages "$TMP/msgs.json" --add-generation-prompt >"$TMP/out"
printf '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n' | cmp -s - "$TMP/out" && ok || bad "ChatML fallback"
# a built-in by name gets the model's BOS
"$HERD" chat-template -m "$V" --template llama3 --messages "$TMP/msgs.json" >"$TMP/out"
printf '<s><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>' | cmp -s - "$TMP/out" && ok || bad "--template llama3 with the model's BOS"
# a file, no model: BOS/EOS empty unless given
printf '{{ bos_token }}|{%% for m in messages %%}{{ m.content | upper }}{%% endfor %%}|{{ eos_token }}\n' >"$TMP/t.jinja"
[ "$("$HERD" chat-template --template "$TMP/t.jinja" --messages "$TMP/msgs.json")" = "|HELLO|" ] && ok || bad "--template FILE"
[ "$("$HERD" chat-template --template "$TMP/t.jinja" --messages "$TMP/msgs.json" --bos B --eos E)" = "B|HELLO|E" ] && ok || bad "--bos/--eos"
printf '{{ strftime_now("%%d %%b %%Y") }}' >"$TMP/date.jinja"
[ "$("$HERD" chat-template --template "$TMP/date.jinja" --messages "$TMP/msgs.json" --now 2026-07-26)" = "26 Jul 2026" ] && ok || bad "--now"
printf '[{"type":"function","function":{"name":"f"}}]' >"$TMP/tools.json"
printf '{%% if tools is defined %%}{{ tools | map(attribute="function.name") | join }}{%% else %%}none{%% endif %%}' >"$TMP/tools.jinja"
[ "$("$HERD" chat-template --template "$TMP/tools.jinja" --messages "$TMP/msgs.json" --tools "$TMP/tools.json")" = "f" ] && ok || bad "--tools"
[ "$("$HERD" chat-template --template "$TMP/tools.jinja" --messages "$TMP/msgs.json")" = "none" ] && ok || bad "no --tools: tools undefined"
# errors: the template's own message with line and column, exit 1
printf 'ok\n{{ raise_exception("Conversation roles must alternate") }}' >"$TMP/raise.jinja"
expect_exit 1 "$HERD" chat-template --template "$TMP/raise.jinja" --messages "$TMP/msgs.json"
grep -q "line 2, column 4: Conversation roles must alternate" "$TMP/err" && ok || bad "raise_exception message with position"
printf '{%% for %%}' >"$TMP/broken.jinja"
expect_exit 1 "$HERD" chat-template --template "$TMP/broken.jinja" --messages "$TMP/msgs.json"
grep -q "line 1, column" "$TMP/err" && ok || bad "parse error with position"
printf '[{"role": ' >"$TMP/badmsgs.json"
expect_exit 1 "$HERD" chat-template --template chatml --messages "$TMP/badmsgs.json"
expect_exit 1 "$HERD" chat-template --template no-such-template-name --messages "$TMP/msgs.json"
grep -q "chatml" "$TMP/err" && ok || bad "unknown template lists the built-in names"
expect_exit 2 "$HERD" chat-template --template chatml
expect_exit 2 "$HERD" chat-template --messages "$TMP/msgs.json"
expect_exit 2 "$HERD" chat-template --template chatml --messages "$TMP/msgs.json" --now yesterday
# the model's own template (phi-3's vocabulary carries one)
if [ -f "$SHARED/fixtures/tokenizer/ggml-vocab-phi-3.gguf" ]; then
    "$HERD" chat-template -m "$SHARED/fixtures/tokenizer/ggml-vocab-phi-3.gguf" --messages "$TMP/msgs.json" >"$TMP/out"
    printf '<s><|user|>\nHello<|end|>\n<|assistant|>\n' | cmp -s - "$TMP/out" && ok || bad "phi-3's own template"
fi

# run --chat: the prompt is the rendered template, tokenized with special tokens and nothing added
M=$SRC/models/stories260K.gguf
"$HERD" chat-template -m "$M" --template chatml --messages "$TMP/msgs.json" --add-generation-prompt >"$TMP/rendered.txt"
want=$("$HERD" tokenize -m "$M" --no-bos --special -f "$TMP/rendered.txt")
got=$("$HERD" run -m "$M" --chat --chat-template chatml -p Hello -n 1 --greedy --json | grep -o '"prompt_ids": *\[[0-9, ]*\]' | sed 's/.*\[/[/; s/ //g')
[ -n "$want" ] && [ "$got" = "$want" ] && ok || bad "run --chat prompt ids ($got vs $want)"
expect_exit 2 "$HERD" run --chat --prompt-ids 1,2
expect_exit 1 "$HERD" run -m "$M" --chat --chat-template "$TMP/raise.jinja" -p Hello -n 1

# --- tokenize / detokenize --------------------------------------------------
V=$SRC/tests/data/ggml-vocab-llama-spm.gguf
[ "$("$HERD" tokenize -m "$V" "Hello world")" = "[1,15043,3186]" ] && ok || bad "tokenize with BOS"
[ "$("$HERD" tokenize -m "$V" --no-bos "Hello world")" = "[15043,3186]" ] && ok || bad "tokenize --no-bos"
[ "$("$HERD" detokenize -m "$V" 1 15043 3186)" = "Hello world" ] && ok || bad "detokenize"
[ "$("$HERD" tokenize -m "$V" --no-bos --special "<s>Hello</s>")" = "[1,15043,2]" ] && ok || bad "tokenize --special"
[ "$("$HERD" detokenize -m "$V" 198 172)" = "$(printf '\xc3\xa9')" ] && ok || bad "detokenize joins byte tokens into one character"
expect_exit 2 "$HERD" detokenize -m "$V" 32000
expect_exit 2 "$HERD" detokenize -m "$V" abc
[ "$("$HERD" tokenize "Once upon a time")" = "[1,403,407,261,378]" ] && ok || bad "tokenize on the default model"
printf 'Hello world' >"$TMP/hello.txt"
[ "$("$HERD" tokenize -m "$V" -f "$TMP/hello.txt")" = "[1,15043,3186]" ] && ok || bad "tokenize --file"
[ "$(printf 'Hello world' | "$HERD" tokenize -m "$V" -f - -q)" = "3" ] && ok || bad "tokenize from stdin, --quiet"
"$HERD" tokenize -m "$V" -f "$TMP/hello.txt" --repeat 3 -q 2>"$TMP/err" >/dev/null
grep -q "median of 3" "$TMP/err" && ok || bad "tokenize --repeat timing"
expect_exit 2 "$HERD" tokenize -m "$V" -f "$TMP/hello.txt" "also text"
expect_exit 1 "$HERD" tokenize -m "$V" -f "$TMP/missing.txt"
if [ -d "$SHARED/fixtures" ]; then
    G2=$SHARED/fixtures/tokenizer/ggml-vocab-gpt-2.gguf
    [ "$("$HERD" tokenize -m "$G2" "Hello world")" = "[15496,995]" ] && ok || bad "tokenize (GPT-2 BPE)"
    [ "$("$HERD" detokenize -m "$G2" 18435 995)" = " Hello world" ] && ok || bad "detokenize (GPT-2 BPE)"
    expect_exit 1 "$HERD" tokenize -m "$G2" "$(printf 'bad \xff byte')"
    grep -q "UTF-8" "$TMP/err" && ok || bad "invalid UTF-8 message"
fi

# --- the converted model computes what llama2.c computed ------------------
PY=/usr/bin/python3
if [ -f "$SHARED/tools/reference.py" ] && $PY -c 'import numpy' 2>/dev/null; then
    $PY "$SHARED/tools/reference.py" "$TMP/s.gguf" --ids 1 --n-predict 60 --top 1 >"$TMP/ref.json" &&
    $PY - "$TMP/s.gguf" "$TMP/ref.json" "$S/greedy-bos-60.txt" "$SHARED/tools" <<'PYEOF' && ok || bad "reference greedy text differs from llama2.c's"
import json, sys
sys.path.insert(0, sys.argv[4])
import gguf_fixture as G
toks = G.GGUFFile(sys.argv[1]).get("tokenizer.ggml.tokens")
out = b""
for i in json.load(open(sys.argv[2]))["greedy_ids"]:
    t = toks[i]
    out += bytes([int(t[3:5], 16)]) if t.startswith("<0x") and len(t) == 6 else t.replace("\u2581", " ").encode()
text = out.decode().lstrip(" ")
want = open(sys.argv[3]).read().rstrip("\n")
if text != want:
    print("got:  %r\nwant: %r" % (text, want), file=sys.stderr)
    sys.exit(1)
PYEOF
else
    echo "note: skipping the reference check (needs $SHARED/tools/reference.py and python3-numpy)" >&2
fi

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
