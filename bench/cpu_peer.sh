#!/usr/bin/env bash
# bench/cpu_peer.sh — flashgen's CPU backend against llama.cpp's llama-bench on the same GGUF
# files, the same machine, the same thread count, interleaved (issue 13's CPU target).
#
# Per round and per file: llama-bench -t T -p 512 -n 128 -r 1 (pp512, tg128), then
# tools/bench_cpu --blocks --threads T --lens 512 --gen 128 --reps 1 (prefill of a 512-token
# prompt, decode of 128 tokens after a 16-token one); the engines swap places every round (A B,
# B A, ...) so that a drift in the machine's load falls on both. After the rounds, once per
# file: the long prompt (llama-bench -p LONG -n 0 --no-warmup; bench_cpu --lens LONG-1, so that
# prompt and picked token fit SmolLM2's 8192-token context). The
# 1-minute load average is recorded before every run. Prints one table: per file and test, the
# median over the rounds of each engine (min–max beside it), and ours / llama.cpp.
#
# Usage: bench/cpu_peer.sh [OUTDIR]      (default bench/results/cpu_peer_<UTC date-time>)
# Environment: LLAMA_BENCH (default /work/llamacpp/build-cpu/bin/llama-bench), BENCH_CPU
# (build/tools/bench_cpu), MODELS (space-separated GGUF paths; default the SmolLM2 Q4_1 file and
# its Q8_0 copy, made by bench/requant_gguf.py when missing), Q8_DIR (where that copy goes,
# /work/cpupeer-models), ROUNDS (3), THREADS (2), LONG (8192; 0 skips the long prompt).
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_BENCH=${LLAMA_BENCH:-/work/llamacpp/build-cpu/bin/llama-bench}
BENCH_CPU=${BENCH_CPU:-build/tools/bench_cpu}
Q41=models/SmolLM2-135M-Instruct.Q4_1.gguf
Q8_DIR=${Q8_DIR:-/work/cpupeer-models}
Q80=$Q8_DIR/SmolLM2-135M-Instruct.Q8_0.gguf
MODELS=${MODELS:-"$Q41 $Q80"}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
LONG=${LONG:-8192}
OUTDIR=${1:-bench/results/cpu_peer_$(date -u +%Y%m%dT%H%M)}

for exe in "$LLAMA_BENCH" "$BENCH_CPU"; do
    [ -x "$exe" ] || { echo "cpu_peer: $exe not found (build it first)" >&2; exit 1; }
done
if [[ " $MODELS " == *" $Q80 "* && ! -f $Q80 ]]; then
    mkdir -p "$Q8_DIR"
    python3 bench/requant_gguf.py "$Q41" "$Q80" --type Q8_0
fi
mkdir -p "$OUTDIR"
RUNS=$OUTDIR/runs.jsonl
: >"$RUNS"
LOG=$OUTDIR/log
{
    echo "cpu_peer: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -srm), $(nproc) cores"
    grep -m1 'model name' /proc/cpuinfo
    echo "flashgen $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- kernels model tools || echo '+dirty'); llama.cpp $("$LLAMA_BENCH" --version 2>&1 | head -1)"
    echo "threads $THREADS, rounds $ROUNDS, long prompt $LONG"
} | tee "$LOG"

load1() { cut -d' ' -f1 /proc/loadavg; }

# llama MODEL ROUND ARGS...: one llama-bench run, its tests appended to runs.jsonl
llama() {
    local model=$1 round=$2 l0 out
    shift 2
    l0=$(load1)
    echo "[round $round] llama-bench -m $model -t $THREADS $* (load $l0)" | tee -a "$LOG"
    out=$("$LLAMA_BENCH" -m "$model" -t "$THREADS" -o json "$@" 2>>"$LOG")
    python3 - "$model" "$round" "$l0" "$(load1)" "$out" >>"$RUNS" <<'EOF'
import json, sys
model, rnd, l0, l1, out = sys.argv[1:]
for t in json.loads(out):
    test = f"pp{t['n_prompt']}" if t["n_gen"] == 0 else f"tg{t['n_gen']}"
    print(json.dumps({"engine": "llama.cpp", "model": model, "round": int(rnd), "test": test,
                      "tps": t["avg_ts"], "load": [float(l0), float(l1)]}))
EOF
}

# ours MODEL ROUND LENS GEN [LABEL]: one bench_cpu run (prefill at LENS, decode of GEN tokens);
# LABEL names the prefill test in the table (default ppLENS)
ours() {
    local model=$1 round=$2 lens=$3 gen=$4 label=${5:-pp$3} l0 out
    l0=$(load1)
    echo "[round $round] bench_cpu --model $model --threads $THREADS --lens $lens --gen $gen (load $l0)" | tee -a "$LOG"
    out=$("$BENCH_CPU" --model "$model" --blocks --threads "$THREADS" --lens "$lens" --gen "$gen" \
        --reps 1 --json 2>>"$LOG" | tee -a "$LOG" | grep '^BENCH_JSON ' | cut -d' ' -f2-)
    python3 - "$model" "$round" "$l0" "$(load1)" "$gen" "$label" "$out" >>"$RUNS" <<'EOF'
import json, sys
model, rnd, l0, l1, gen, label, out = sys.argv[1:]
j = json.loads(out)
rows = [(label, v) for n, v in j["prefill"].items()]
if int(gen) >= 128:
    rows.append((f"tg{gen}", j["decode"]))
for test, v in rows:
    print(json.dumps({"engine": "flashgen", "model": model, "round": int(rnd), "test": test,
                      "tps": v, "load": [float(l0), float(l1)]}))
EOF
}

for ((r = 1; r <= ROUNDS; r++)); do
    for m in $MODELS; do
        if ((r % 2)); then
            llama "$m" "$r" -p 512 -n 128 -r 1
            ours "$m" "$r" 512 128
        else
            ours "$m" "$r" 512 128
            llama "$m" "$r" -p 512 -n 128 -r 1
        fi
    done
done
if ((LONG > 0)); then
    for m in $MODELS; do
        llama "$m" 0 -p "$LONG" -n 0 -r 1 --no-warmup
        # the prompt and the one token it picks must fit SmolLM2's 8192-token context
        ours "$m" 0 "$((LONG - 1))" 1 "pp$LONG"
    done
fi

python3 - "$RUNS" <<'EOF' | tee "$OUTDIR/table.md" | tee -a "$LOG"
import json, os, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
loads = [x for r in runs for x in r["load"]]
print(f"\n1-minute load average over the runs: {min(loads):.2f} – {max(loads):.2f}\n")
print("| file | test | flashgen tokens/s | llama.cpp tokens/s | flashgen / llama.cpp |")
print("| --- | --- | ---: | ---: | ---: |")
keys = []
for r in runs:
    k = (r["model"], r["test"])
    if k not in keys:
        keys.append(k)
for model, test in keys:
    cell, med = {}, {}
    for eng in ("flashgen", "llama.cpp"):
        v = [r["tps"] for r in runs if (r["model"], r["test"], r["engine"]) == (model, test, eng)]
        if not v:
            cell[eng], med[eng] = "—", None
            continue
        med[eng] = statistics.median(v)
        cell[eng] = f"{med[eng]:.1f}" + (f" ({min(v):.1f}–{max(v):.1f})" if len(v) > 1 else "")
    ratio = f"{med['flashgen'] / med['llama.cpp']:.2f}×" if None not in med.values() else "—"
    print(f"| {os.path.basename(model)} | {test} | {cell['flashgen']} | {cell['llama.cpp']} | {ratio} |")
EOF
echo "cpu_peer: runs in $RUNS, table in $OUTDIR/table.md"
