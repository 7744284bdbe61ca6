#!/usr/bin/env bash
# load_device.sh — issue 16's loading target in one device call: how long `flashgen generate`
# takes to have the random 8B-shape F16 GGUF (14.7 GB) ready on the GPU, from the page cache and
# from a cold file, each build given (the one under test and, for a before/after, an older one),
# as the engine's own "weights ready on cuda in S s: G GB at R GB/s" line reports it.
#
# Here, before the call: tools/pack_gpu.sh (packs .gpu/ with flashgen, libflashgen_cuda.so, the
# libraries the device lacks and the tokenizer keys). For a before/after, a second folder with
# flashgen + libflashgen_cuda.so + the three libraries from an older build (e.g. cp -r .gpu
# .gpu_old after running pack_gpu.sh at the older commit).
# On the device, from the repo root (carry .gpu/ and the old folder):
#   bench/load_device.sh .gpu [.gpu_old]
# On the CPU here, at the tiny shape: DEVICE=cpu SHAPE=tiny bench/load_device.sh build
#
# Runs: RUNS warm loads per build (the file read once before, so it is in the page cache), then
# one cold load per build, the file's pages dropped first with posix_fadvise(DONTNEED) (no root
# needed; pages another process holds mapped stay), then `dd` of the dropped file: the disk's own
# sequential rate, what a cold load is held to. Log lines and a table go to $OUT (or
# /tmp/out). The 14.7 GB file takes ~40 s to write; about 3 minutes in all on the H200.
set -uo pipefail
O=${OUT:-/tmp/out}
W=${WORK:-/tmp/w}
mkdir -p "$O" "$W"
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-llama3_8b}
RUNS=${RUNS:-3}
# READAHEADS="willneed pread chunks none": each build's loads once per FLASHGEN_READAHEAD mode
# (model/gguf.c gguf_will_read); "default" leaves it unset
READAHEADS=${READAHEADS:-default}
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(.gpu)
TOKENIZER=${TOKENIZER:-${BINS[0]}/smollm2_tokenizer.gguf}
[ -f "$TOKENIZER" ] || TOKENIZER=models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL=${MODEL:-$W/random_$SHAPE.f16.gguf}
step() { echo "== $* ($(date -u +%T))"; }
mode() { # M: FLASHGEN_READAHEAD=M for the next loads ("default": unset)
    if [ "$1" = default ]; then unset FLASHGEN_READAHEAD; else export FLASHGEN_READAHEAD=$1; fi
}

if [ ! -f "$MODEL" ]; then
    step "writing $MODEL"
    python3 tools/make_random_gguf.py --shape "$SHAPE" --tokenizer "$TOKENIZER" --out "$MODEL" ||
        exit 1
fi
ls -la "$MODEL"
nproc
evict() { # drop MODEL's pages from the page cache
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); \
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$MODEL"
}
load() { # BIN TAG: one load, its ready line (or the failure) into the table rows
    local bin=$1 tag=$2 log="$O/load_$(basename "$1")_$2.log"
    local t0 t1
    t0=$(date +%s.%N)
    LD_LIBRARY_PATH="$PWD/$bin:${LD_LIBRARY_PATH:-}" "$bin/flashgen" generate --model "$MODEL" \
        --prompt hi --max-new-tokens 1 --device "$DEVICE" >/dev/null 2>"$log"
    local rc=$?
    t1=$(date +%s.%N)
    local ready
    ready=$(grep -o 'weights ready.*' "$log" | tail -1)
    [ -n "$ready" ] || ready="(no ready line: an older build) last progress: $(grep -o 'loading [0-9].*' "$log" | tail -1)"
    printf '| %s | %s | %d | %s | %s |\n' "$bin" "$tag" "$rc" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" "$ready" |
        tee -a "$O/load_table.md"
}
{
    echo "load of $MODEL ($(stat -c %s "$MODEL") bytes), $DEVICE, $(date -u +%FT%TZ)"
    echo
    echo '| build | file | rc | process s | engine line |'
    echo '| --- | --- | --- | --- | --- |'
} >"$O/load_table.md"
cat "$MODEL" >/dev/null # into the page cache
for b in "${BINS[@]}"; do
    for m in $READAHEADS; do
        step "warm loads, $b, readahead $m"
        mode "$m"
        for i in $(seq "$RUNS"); do load "$b" "warm${i}_$m"; done
    done
done
for b in "${BINS[@]}"; do
    for m in $READAHEADS; do
        step "cold load, $b, readahead $m"
        mode "$m"
        evict
        load "$b" "cold_$m"
    done
done
unset FLASHGEN_READAHEAD
# the disk's own sequential rate on the same cold file, for "at disk speed": dd in 64 MB reads
step "dd of the cold file"
evict
t0=$(date +%s.%N)
dd if="$MODEL" of=/dev/null bs=64M status=none
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v n="$(stat -c %s "$MODEL")" \
    'BEGIN { printf "| (dd, bs=64M) | cold | 0 | %.2f | the disk: %.2f GB at %.2f GB/s |\n", b - a, n / 1e9, n / 1e9 / (b - a) }' |
    tee -a "$O/load_table.md"
# the same greedy tokens from every build: the weights reached the device unchanged (F16 → bf16
# rounding and llama's Q/K un-permute as the fp32 path did them)
step "greedy ids, every build"
ids0=
for b in "${BINS[@]}"; do
    ids=$(LD_LIBRARY_PATH="$PWD/$b:${LD_LIBRARY_PATH:-}" "$b/flashgen" generate --model "$MODEL" \
        --prompt "The capital of France is" --max-new-tokens 16 --device "$DEVICE" --print-ids \
        2>&1 >/dev/null | grep '^generated_ids')
    echo "$b: $ids" | tee -a "$O/load_table.md"
    [ -n "$ids0" ] || ids0=$ids
    [ "$ids" = "$ids0" ] || echo "MISMATCH: $b differs from ${BINS[0]}" | tee -a "$O/load_table.md"
done
echo
cat "$O/load_table.md"
