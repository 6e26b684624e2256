#!/usr/bin/env bash
# Module boundaries, checked: reads every #include "..." in src/ and
# include/, and fails (exit 1) naming the file, the line and the include
# when a module includes one it must not. Dependencies point one way
# (../shared/DESIGN.md, "Layout"):
#
#   base <- gguf <- kernels <- model <- engine <- api, http <- web <- server, router, batch <- cli
#
# with jinja, tokenizer and sampling beside model, metrics on base alone,
# convert on gguf, kernels, model and the tokenizer, and quality (perplexity
# scoring) on model. The public headers
# (include/herd/*.h, "herd/...") are usable by all and include only each
# other. A module may always include itself.
#
# Usage: scripts/check_layers.sh [--graph] [--root DIR]
#   --graph     also print which module includes which, with the number of
#               include lines behind each edge
#   --root DIR  check the tree at DIR (default: this checkout); the tests
#               point it at a small tree with a planted violation
# CTest runs it (test check_layers, label unit).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
graph=0
while [ $# -gt 0 ]; do
    case "$1" in
    --graph) graph=1 ;;
    --root)
        [ $# -ge 2 ] || { echo "check_layers: --root needs a directory" >&2; exit 2; }
        root="$2"
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) echo "check_layers: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -d "$root/src" ] || { echo "check_layers: $root/src is not a directory" >&2; exit 2; }

# ------------------------------------------------------------------ the rules
# What each module may include besides itself and the public headers. A
# module that is not listed is an error: adding a directory under src/ means
# deciding here where it sits. http/, api/, router/ and batch/ are listed
# before they all exist so that they are checked from their first file.
declare -A may=(
    [base]=""
    [gguf]="base"
    [kernels]="base gguf"
    [metrics]="base"
    [jinja]="base"
    [tokenizer]="base gguf jinja"
    # the sampler's softmax uses the kernels' vector exp (sampler.c)
    [sampling]="base gguf kernels"
    [model]="base gguf kernels"
    [convert]="base gguf kernels model tokenizer"
    # measuring a model: perplexity and KL divergence arithmetic, the logits file
    [quality]="base gguf kernels model"
    [engine]="base gguf kernels model jinja tokenizer sampling metrics"
    [api]="base gguf kernels model jinja tokenizer sampling metrics engine"
    # issue 15: the HTTP layer has no engine include (the router and batch
    # use it without a model); it knows sockets, not OpenAI or tokens
    [http]="base metrics"
    # issue 21: the embedded pages, on the HTTP layer alone, so that herd
    # serve and herd route both serve them (the router must not include server)
    [web]="base metrics http"
    [server]="base gguf kernels model jinja tokenizer sampling metrics engine api http web"
    [router]="base gguf kernels model jinja tokenizer sampling metrics engine api http web"
    [batch]="base gguf kernels model jinja tokenizer sampling metrics engine api http"
    [cli]="base gguf kernels model jinja tokenizer sampling metrics engine api http convert quality server router batch web"
)

# Includes that break the rules today and are tracked to be fixed; each
# is FILE:INCLUDE and a reason. They are reported but do not fail the check,
# and only the exact pair is let through, so no new edge can hide behind one.
declare -A known=(
)

# ------------------------------------------------------------------ the scan
fail=0
declare -A edges=()  # "from to" -> number of include lines
declare -A seen=()   # known violations still present
modules_seen=" "

note_edge() {
    local key="$1 $2"
    edges[$key]=$((${edges[$key]:-0} + 1))
    case "$modules_seen" in *" $1 "*) ;; *) modules_seen+="$1 " ;; esac
}

# Sets mod to the module of a path relative to the root: src/<m>/... -> m,
# include/herd/... -> herd, else "". (A variable, not $(...): forks are most
# of the cost of a scan.)
module_of() {
    case "$1" in
    src/*/*) mod=${1#src/}; mod=${mod%%/*} ;;
    include/herd/*) mod=herd ;;
    *) mod="" ;;
    esac
}

cd "$root"
# Every directory under src/ must have rules, includes or not.
while IFS= read -r -d '' file; do
    module_of "$file"
    if [ -n "$mod" ] && [ "$mod" != herd ] && [ -z "${may[$mod]+x}" ]; then
        echo "$file: module '$mod' has no layer rules: add it to scripts/check_layers.sh" >&2
        fail=1
    fi
done < <(find src include -type f \( -name '*.c' -o -name '*.h' \) -print0 2>/dev/null)

# One grep over the tree (a fork per file would be most of the run time).
re='^[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)"'
while IFS=: read -r file n text; do
    [[ $text =~ $re ]] || continue
    inc=${BASH_REMATCH[1]}
    module_of "$file"
    from=$mod
    [ -n "$from" ] || continue
    [ "$from" = herd ] || [ -n "${may[$from]+x}" ] || continue # reported above
    # Resolve the include as the compiler does: beside the file first ("x.h",
    # "../m/x.h"), then through -I include and -I src.
    dir=${file%/*}
    if [ -e "$dir/$inc" ] || [[ $inc == ./* || $inc == ../* ]]; then
        target=$(realpath -m --relative-to=. "$dir/$inc")
    elif [ -e "include/$inc" ]; then
        target="include/$inc"
    else
        target="src/$inc"
    fi
    module_of "$target"
    to=$mod
    if [ -z "$to" ]; then
        echo "$file:$n: #include \"$inc\" resolves to $target, outside src/ and include/herd/" >&2
        fail=1
        continue
    fi
    note_edge "$from" "$to"
    [ "$to" = "$from" ] && continue
    [ "$to" = herd ] && continue
    if [ "$from" = herd ]; then
        echo "$file:$n: forbidden #include \"$inc\": public headers include only herd/*.h" >&2
        fail=1
        continue
    fi
    if [ -z "${may[$to]+x}" ]; then
        echo "$file:$n: #include \"$inc\": module '$to' has no layer rules: add it to scripts/check_layers.sh" >&2
        fail=1
        continue
    fi
    case " ${may[$from]} " in *" $to "*) continue ;; esac
    if [ -n "${known[$file:$inc]+x}" ]; then
        seen[$file:$inc]=1
        echo "$file:$n: known violation #include \"$inc\" ($from -> $to): ${known[$file:$inc]}" >&2
        continue
    fi
    echo "$file:$n: forbidden #include \"$inc\": $from may include only: ${may[$from]:-(nothing)}" >&2
    fail=1
done < <(grep -rn -E --include='*.c' --include='*.h' "$re" src include 2>/dev/null | LC_ALL=C sort -t: -k1,1 -k2,2n)

for k in "${!known[@]}"; do
    [ -n "${seen[$k]+x}" ] || echo "note: known violation $k no longer occurs: remove it from scripts/check_layers.sh" >&2
done

if [ "$graph" = 1 ]; then
    echo "module graph (module -> modules it includes, include lines in parentheses):"
    for m in $(tr ' ' '\n' <<<"$modules_seen" | sed '/^$/d' | sort); do
        line=""
        for k in $(printf '%s\n' "${!edges[@]}" | awk -v m="$m" '$1 == m && $2 != m {print $2}' | sort); do
            line+=" $k(${edges[$m $k]})"
        done
        printf '  %-10s ->%s\n' "$m" "${line:- (nothing)}"
    done
fi

if [ "$fail" != 0 ]; then
    echo "check_layers: FAILED (rules: scripts/check_layers.sh, ../shared/DESIGN.md)" >&2
    exit 1
fi
echo "check_layers: ok"
