#!/usr/bin/env bash
# scripts/check_layers.sh on small trees: a clean one passes, and each kind
# of violation fails with the file, the line and the include named.
# Usage: test_check_layers.sh SOURCE_DIR
set -euo pipefail
check="$1/scripts/check_layers.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
failures=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $1" >&2; failures=$((failures + 1)); }

# A clean tree: the chain, a sibling, a same-directory include, a public header.
mk() { mkdir -p "$(dirname "$tmp/t/$1")" && printf '%b' "$2" >"$tmp/t/$1"; }
mk include/herd/status.h '#include <stdarg.h>\n'
mk src/base/log.h '#include "herd/status.h"\n'
mk src/gguf/gguf_read.c '#include "base/log.h"\n'
mk src/model/model.c '#include "base/log.h"\n#include "kernels/kernels.h"\n#include "model.h"\n'
mk src/model/model.h ''
mk src/kernels/kernels.h '#include "herd/status.h"\n'
mk src/jinja/jinja.h '#include "base/log.h"\n'
mk src/tokenizer/chat.c '#include "jinja/jinja.h"\n'
mk src/cli/main.c '#include "model/model.h"\n#include "tokenizer/chat.h"\n'
out=$("$check" --root "$tmp/t" --graph 2>&1) && ok || bad "clean tree: $out"
grep -q 'model      -> base(1) kernels(1)' <<<"$out" && ok || bad "graph: $out"

# Each case: a file, its text, and what the report must name.
expect_fail() {
    local name="$1" file="$2" text="$3" want="$4"
    rm -rf "$tmp/v" && cp -r "$tmp/t" "$tmp/v"
    mkdir -p "$(dirname "$tmp/v/$file")" && printf '%b' "$text" >"$tmp/v/$file"
    local rc=0
    out=$("$check" --root "$tmp/v" 2>&1) || rc=$?
    [ "$rc" = 1 ] && ok || bad "$name: exit $rc, want 1"
    grep -qF -- "$want" <<<"$out" && ok || bad "$name: want '$want' in: $out"
}
expect_fail "upward" src/tokenizer/bpe.c '#include <stdio.h>\n\n#include "model/model.h"\n' \
    'src/tokenizer/bpe.c:3: forbidden #include "model/model.h"'
expect_fail "jinja is base only" src/jinja/x.c '#include "tokenizer/chat.h"\n' \
    'src/jinja/x.c:1: forbidden #include "tokenizer/chat.h"'
expect_fail "beside" src/model/x.c '#include "sampling/sampler.h"\n' 'src/model/x.c:1: forbidden #include "sampling/sampler.h"'
expect_fail "http has no engine" src/http/conn.c '#include "engine/sched.h"\n' \
    'src/http/conn.c:1: forbidden #include "engine/sched.h"'
expect_fail "relative path" src/base/x.c '#include "../cli/cli.h"\n' 'src/base/x.c:1: forbidden #include "../cli/cli.h"'
expect_fail "public header" include/herd/x.h '#include "base/log.h"\n' \
    'include/herd/x.h:1: forbidden #include "base/log.h": public headers include only herd/*.h'
expect_fail "unknown module" src/widgets/page.c '#include "base/log.h"\n' "module 'widgets' has no layer rules"
expect_fail "known pair only" src/model/synth.c '#include "convert/quantize.h"\n' \
    'src/model/synth.c:1: forbidden #include "convert/quantize.h"'

echo "$pass passed, $failures failed"
[ "$failures" = 0 ]
