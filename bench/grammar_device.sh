#!/usr/bin/env bash
# grammar_device.sh — issue 15's mask cost on the GPU in one device call: tools/bench_grammar_step
# (the worker's engine step with and without JSON Schema masks) on the random 8B-shape F16 GGUF
# (SmolLM2 vocabulary, tools/make_random_gguf.py) at 1, 64 and 256 decode rows.
#
# Here (packs DIR, default /work/main/.gpuwt/maskperf, for `run`'s carry):
#   bench/grammar_device.sh pack [DIR]
# On the device, from the repository root (carry: the packed folder, e.g. .gpuwt/maskperf):
#   cd .gpuwt/maskperf && ./grammar_device.sh run      # logs to $OUT (or /tmp/out)
# Environment: DEVICE (cuda; cpu for a dry run here), ROWS (1,64,256), STEPS (48), CONTEXT (128), MODEL (/tmp/w/random_llama3_8b.f16.gguf,
# written when missing: ~10 s), THREADS (the mask pool's threads; default all cores), SCHEMA
# (bounded or free; default both), WALK (0: skip the walk A/B).
set -uo pipefail
cmd=${1:-run}
if [ "$cmd" = pack ]; then
    set -e
    cd "$(dirname "$0")/.."
    D=${2:-/work/main/.gpuwt/maskperf}
    B=${BUILD:-build}
    make -j2 BUILD="$B" CUDA=1 "$B/libflashgen.a" "$B/libflashgen_cuda.so" \
        "$B/tools/bench_grammar_step.o"
    mkdir -p "$D"
    gcc -o "$D/bench_grammar_step" "$B/tools/bench_grammar_step.o" "$B/libflashgen.a" -lcjson -lm \
        -ldl -pthread -Wl,-rpath,'$ORIGIN'
    cp "$B/libflashgen_cuda.so" tools/make_random_gguf.py bench/grammar_device.sh "$D/"
    # the walk A/B on the device's CPU: bench_grammar_walk, and the same tool linked against
    # model/grammar.c and model/grammar_mask.c of WALK_BASE (default cc0f758: before the
    # per-state transition tables; both files and their headers from that commit, so the
    # matcher's layout is the base's throughout)
    make -j2 BUILD="$B" "$B/tools/bench_grammar_walk.o"
    gcc -o "$D/bench_grammar_walk" "$B/tools/bench_grammar_walk.o" "$B/libflashgen.a" -lcjson -lm \
        -ldl -pthread -Wl,-rpath,'$ORIGIN'
    T=$(mktemp -d)
    WB=${WALK_BASE:-cc0f758}
    for f in grammar.c grammar_mask.c grammar.h grammar_impl.h; do
        git show "$WB:model/$f" >"$T/$f"
    done
    for f in grammar grammar_mask; do
        gcc -std=c11 -D_GNU_SOURCE -O2 -I. -Imodel -I/usr/include/cjson -pthread \
            -c "$T/$f.c" -o "$T/$f.o"
    done
    gcc -o "$D/bench_grammar_walk_base" "$B/tools/bench_grammar_walk.o" "$T/grammar.o" \
        "$T/grammar_mask.o" "$B/libflashgen.a" -lcjson -lm -ldl -pthread -Wl,-rpath,'$ORIGIN'
    rm -rf "$T"
    git rev-parse "$WB" >"$D/walk_base"
    cp -L "$(ldconfig -p | awk '$1 == "libcjson.so.1" {print $NF; exit}')" "$D/libcjson.so.1"
    python3 tools/make_random_gguf.py --tokenizer-only \
        --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf --out "$D/smollm2_tokenizer.gguf"
    git rev-parse HEAD >"$D/commit"
    du -sh "$D"
    exit 0
fi
cd "$(dirname "$0")"
O=${OUT:-/tmp/out}
mkdir -p "$O" /tmp/w
MODEL=${MODEL:-/tmp/w/random_llama3_8b.f16.gguf}
echo "== $(date -u +%FT%TZ) commit $(cat commit 2>/dev/null)"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
lscpu | grep -E "^Model name|^CPU\(s\)"
rc=0
[ -f "$MODEL" ] || python3 make_random_gguf.py --shape llama3_8b --tokenizer smollm2_tokenizer.gguf \
    --out "$MODEL" || rc=1
echo "== $(date -u +%T) bench_grammar_step"
[ $rc = 0 ] && ./bench_grammar_step --model "$MODEL" --device "${DEVICE:-cuda}" --rows "${ROWS:-1,64,256}" \
    --steps "${STEPS:-48}" --context "${CONTEXT:-128}" ${THREADS:+--threads "$THREADS"} \
    ${SCHEMA:+--schema "$SCHEMA"} 2>&1 | tee "$O/bench_grammar_step.log" || rc=1
echo "== $(date -u +%T) walk A/B (bench_grammar_walk: base = $(cat walk_base 2>/dev/null), then this commit)"
[ "${WALK:-1}" = 0 ] || for _ in 1 2; do
    for b in bench_grammar_walk_base bench_grammar_walk; do
        [ $rc = 0 ] && { printf '%-24s ' "$b"; ./$b "$MODEL" 2>&1; } | tee -a "$O/bench_grammar_walk.log"
    done
done
echo "== $(date -u +%T) done rc=$rc"
exit $rc
