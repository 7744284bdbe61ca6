#!/usr/bin/env bash
# gpu_family.sh — issue 12's GPU proof in one GPU-machine call, run there from the repo root
# after tools/pack_gpu.sh here (carry .gpu/). Parts, in the order of the arguments:
#   proof     tools/gpu_engine_check.py on the random-weight family models: qwen2 (biases),
#             mistral (window 16), gemma3_win (hd 256, window 16, soft-cap) with our CPU path,
#             gemma3_270m (the real 270M shape, vocab 262144) with the CPU on 3 prompts × 16 steps;
#             PROOF_SHAPES="a b" picks some
#   kernels   check_family.py and check_attention.py alone (the checks this issue adds to)
#   testgpu   `make test-gpu` in full (every kernel against its C twin) on .gpu/libfgattn.so
#   bench256  bench/bench_attention.py's prefill sweep at hd 256 (ours vs torch SDPA FA2, cuDNN)
# Logs go to $OUT (or /tmp/out), one per part; each part has its own time limit, and a failing
# part does not stop the next. The last lines printed are the summaries.
set -uo pipefail
O=${OUT:-/tmp/out}
W=${WORK:-/tmp/w}
mkdir -p "$O" "$W"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH="$PWD/.gpu:${LD_LIBRARY_PATH:-}"
step() { echo "== $* ($(date -u +%T))"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
rc=0
part_proof() {
    for shape in ${PROOF_SHAPES:-qwen2 mistral gemma3_win gemma3_270m}; do
        step "proof $shape"
        extra="--cpu"
        [ "$shape" = gemma3_270m ] && extra="--cpu --cpu-prompts 3 --cpu-steps 16"
        # shellcheck disable=SC2086
        timeout 100 python3 tools/gpu_engine_check.py --shape "$shape" --bin .gpu --work "$W/$shape" \
            $extra --json "$O/proof_$shape.json" >"$O/proof_$shape.log" 2>&1 || rc=1
        tail -16 "$O/proof_$shape.log"
        rm -rf "$W/$shape"
    done
}
part_kernels() {
    for c in check_family check_attention; do
        step "$c"
        FG_ATTN_LIB=.gpu/libfgattn.so timeout 120 python3 "tests/gpu/$c.py" >"$O/$c.log" 2>&1 || rc=1
        grep -E "^FAIL|passed|Error" "$O/$c.log" | tail -12
    done
}
# make test-gpu links build/libfgattn.so from the objects carried in build/ (kernels/*.cu.o,
# pic/): touched first so make takes them as newer than the sources; then .gpu/ gets that library
part_testgpu() {
    step test-gpu
    [ -d build ] && find build -type f -exec touch {} +
    timeout 240 make test-gpu >"$O/test_gpu.log" 2>&1 || rc=1
    grep -E "passed|FAIL|Error|rror:|^nvcc" "$O/test_gpu.log" | tail -20
    [ -f .gpu/libfgattn.so ] || cp build/libfgattn.so .gpu/
}
part_bench256() {
    step bench256
    FG_BENCH_ONLY=prefill FG_BENCH_QUICK=1 FG_BENCH_HD=256 FG_ATTN_LIB=.gpu/libfgattn.so \
        timeout 120 python3 bench/bench_attention.py >"$O/bench_hd256.log" 2>&1 || rc=1
    tail -12 "$O/bench_hd256.log"
}
for p in "$@"; do "part_$p"; done
step "done rc=$rc"
exit $rc
