#!/usr/bin/env bash
# gpu_breakdown.sh — issue 16's decode measurements in one GPU-machine call, run there from the
# repo root after tools/pack_gpu.sh here (carry .gpu/; .gpu_base/ optionally holds the same
# binaries built at the commit before, for a before/after in the same run). Parts, run in the
# order of the arguments:
#   tests      the kernels' checks (what `make test-gpu` runs) on .gpu/libfgattn.so
#   testgpu    every check of `make test-gpu`, in its order, on the packed .gpu/ binaries (no make
#              there: the machine lacks cJSON/libuv/libmicrohttpd headers), each with a time limit;
#              CHECKS="check_gemv check_qgemv" runs only those
#   qbench     check_qengine.py --only-bench: the 8B shape's decode and prefill from F16 (bf16)
#              and every resident type (--gpu-weights quantized): what decides `auto`
#   llamacpp   build llama.cpp's llama-bench and llama-server from LLAMA_SRC (a .tar.xz of the
#              tree ../shared/reference/peers.md says to cut from llama-cpp-python's sdist) into
#              $W/lc, in the background (its own session: it outlives this call); later calls
#              wait for $W/lc/done
#   qpeer      qbench with llama-bench ($W/lc/build/bin, or LLAMA_BENCH) on the same files, in
#              the same call, and the table of both (bench/ENGINE.md); TYPES=f16,q4_0,... narrows it
#   attn       check_attention alone (attention, decode attention, kv_write and qkv_store)
#   proof      the engine proof at the SmolLM2 and Llama-3-layout shapes (tools/gpu_engine_check.py)
#   proof8b    the engine proof and benchmark at the Llama-3-8B shape (long: transformers fp32)
#   model      a random Llama-3-8B-shape model (gpu_engine_check's) and the copy ceiling; the
#              next three need it
#   engine     engine_check --bench at batch 1 and 8 (context 512), .gpu_base/ then .gpu/
#   breakdown  bench/decode_breakdown at batch 1 and 8, context 512
#   gemv       the GEMV benchmark with every variant (check_gemv.py --bench --variants)
# Logs go to $OUT (or /tmp/out); the last lines printed are the tables.
set -uo pipefail
O=${OUT:-/tmp/out}
W=${WORK:-/tmp/w}
mkdir -p "$O" "$W"
export PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH="$PWD/.gpu:${LD_LIBRARY_PATH:-}"
step() { echo "== $* ($(date -u +%T))"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
rc=0
part_tests() {
    step tests
    FG_ATTN_LIB=.gpu/libfgattn.so python3 tests/gpu/check_attention.py >"$O/check_attention.log" 2>&1 || rc=1
    tail -1 "$O/check_attention.log"
    python3 tests/gpu/check_gemv.py --lib .gpu/libfgattn.so >"$O/check_gemv.log" 2>&1 || rc=1
    tail -1 "$O/check_gemv.log"
    FG_SAMPLE_LIB=.gpu/libfgattn.so python3 tests/gpu/check_sample.py --no-bench >"$O/check_sample.log" 2>&1 || rc=1
    tail -1 "$O/check_sample.log"
    FG_SAMPLE_LIB=.gpu/libfgattn.so python3 tests/gpu/check_mask.py >"$O/check_mask.log" 2>&1 || rc=1
    tail -6 "$O/check_mask.log"
}
part_testgpu() {
    L=.gpu/libfgattn.so
    T=.gpu/smollm2_tokenizer.gguf
    run_check() { # NAME LIMIT CMD...: one check, its log, its last lines
        local n=$1 lim=$2
        shift 2
        case " ${CHECKS:-$n} " in *" $n "*) ;; *) return 0 ;; esac
        step "$n"
        local st=0
        timeout "$lim" "$@" >"$O/$n.log" 2>&1 || st=$?
        if [ "$st" != 0 ]; then
            rc=1
            echo "FAILED (exit $st$([ "$st" = 124 ] && echo ", past its ${lim} s")): $n"
        fi
        grep -E "FAIL|passed|PASS|Error|rror:" "$O/$n.log" | tail -4
    }
    run_check check_attention 300 env FG_ATTN_LIB=$L python3 tests/gpu/check_attention.py
    run_check check_family 60 env FG_ATTN_LIB=$L python3 tests/gpu/check_family.py
    run_check check_gemv 90 python3 tests/gpu/check_gemv.py --lib $L
    run_check check_qgemv 90 python3 tests/gpu/check_qgemv.py --lib $L
    run_check check_qgemv_stress 120 python3 tests/gpu/check_qgemv.py --lib $L --stress 100
    run_check check_qgemm 240 python3 tests/gpu/check_qgemm.py --lib $L
    run_check check_fp8 90 python3 tests/gpu/check_fp8.py --lib $L
    run_check check_sample 60 env FG_SAMPLE_LIB=$L python3 tests/gpu/check_sample.py --no-bench
    run_check check_mask 60 env FG_SAMPLE_LIB=$L python3 tests/gpu/check_mask.py --no-bench
    run_check check_upload 60 python3 tests/gpu/check_upload.py --lib $L --cuda .gpu/libflashgen_cuda.so
    run_check check_bias_top 60 env FG_SAMPLE_LIB=$L python3 tests/gpu/check_bias_top.py --no-bench
    run_check check_qengine 300 env FLASHGEN_CUDA_LIB="$PWD/.gpu/libflashgen_cuda.so" \
        python3 tests/gpu/check_qengine.py --bin .gpu --tokenizer $T --work "$W/qe"
    run_check check_tp 120 python3 tests/gpu/check_tp.py --engine-check .gpu/engine_check \
        --cuda .gpu/libflashgen_cuda.so --tokenizer $T --work "$W/tp" --no-bench
    rm -rf "$W/qe" "$W/tp"
}
part_qbench() {
    step "check_qengine --only-bench"
    FLASHGEN_CUDA_LIB="$PWD/.gpu/libflashgen_cuda.so" timeout 420 python3 tests/gpu/check_qengine.py \
        --bin .gpu --tokenizer .gpu/smollm2_tokenizer.gguf --work "$W/qb" --only-bench \
        >"$O/qengine_bench.log" 2>&1 || rc=1
    tail -20 "$O/qengine_bench.log"
    rm -rf "$W/qb"
}
part_llamacpp() {
    step "llama.cpp build (background) from ${LLAMA_SRC:?LLAMA_SRC: the llama.cpp tree as .tar.xz}"
    mkdir -p "$W/lc" && rm -f "$W/lc/done" && tar -xJf "$LLAMA_SRC" -C "$W/lc" || { rc=1; return; }
    setsid bash -c "cd '$W/lc' && cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DCMAKE_BUILD_TYPE=Release >cmake.log 2>&1 &&
        cmake --build build -j${LLAMA_JOBS:-12} --target llama-bench llama-server >build.log 2>&1;
        echo \$? >done" </dev/null >/dev/null 2>&1 &
}
part_qpeer() {
    local lb=${LLAMA_BENCH:-$W/lc/build/bin/llama-bench}
    step "check_qengine --only-bench --peer $lb"
    for _ in $(seq 1 300); do [ -n "${LLAMA_BENCH:-}" ] || [ -f "$W/lc/done" ] && break; sleep 2; done
    FLASHGEN_CUDA_LIB="$PWD/.gpu/libflashgen_cuda.so" timeout 560 python3 tests/gpu/check_qengine.py \
        --bin .gpu --tokenizer .gpu/smollm2_tokenizer.gguf --work "$W/qp" --only-bench \
        ${TYPES:+--types "$TYPES"} --peer "$lb" >"$O/qengine_peer.log" 2>&1 || rc=1
    grep -v '^flashgen:' "$O/qengine_peer.log" | tail -45
    rm -rf "$W/qp"
}
part_attn() {
    step "check_attention"
    FG_ATTN_LIB=.gpu/libfgattn.so python3 tests/gpu/check_attention.py >"$O/check_attention.log" 2>&1 || rc=1
    grep -E "qkv_store|kv_write|passed" "$O/check_attention.log" | tail -20
}
part_proof() {
    for shape in ${PROOF_SHAPES:-smollm2 llama3_small}; do
        step "proof $shape"
        python3 tools/gpu_engine_check.py --shape $shape --bin .gpu --work "$W/$shape" --cpu \
            >"$O/engine_$shape.log" 2>&1 || rc=1
        grep -E "^ +[0-9]+ +[0-9]+ |greedy 32|batched same" "$O/engine_$shape.log" | tail -13
    done
}
part_proof8b() {
    step "proof llama3_8b"
    python3 tools/gpu_engine_check.py --shape llama3_8b --bin .gpu --work "$W/p8b" --bench \
        >"$O/engine_llama3_8b.log" 2>&1 || rc=1
    grep -E "^ +[0-9]+ +[0-9]+ |greedy 32|batched same|^decode|^prefill|transformers generate" \
        "$O/engine_llama3_8b.log" | tail -24
}
M="$W/m8b"
COPY=0
part_model() {
    step "8B-shape model"
    [ -f "$M/config.json" ] || python3 -c "import sys; sys.path.insert(0, 'tools'); import gpu_engine_check as g; g.make_model('llama3_8b', '$M', 1234)"
    step "copy ceiling"
    COPY=$(python3 - <<'PY'
import torch
n = 1 << 30  # 2 GiB of bf16
a = torch.randn(n, device="cuda", dtype=torch.bfloat16); b = torch.empty_like(a)
for _ in range(3): b.copy_(a)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
ts = []
for _ in range(20):
    s.record(); b.copy_(a); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
ts.sort()
print(f"{2 * a.numel() * 2 / (ts[len(ts) // 2] * 1e-3) / 1e9:.0f}")
PY
)
    echo "device-to-device copy, 2 GiB, median of 20 (read + write): $COPY GB/s"
}
part_engine() {
    for b in ${ENGINE_BINS:-.gpu_base .gpu}; do
        [ -x "$b/engine_check" ] || continue
        step "engine_check --bench with $b"
        "$b/engine_check" --model "$M" --device cuda --bench --batches 1,8 --context 512 --gen 32 \
            --prefill 512 >"$O/enginebench_${b#.}.log" 2>&1 || rc=1
        cat "$O/enginebench_${b#.}.log" | grep -E "^decode|^prefill|weights|loaded"
    done
}
part_breakdown() {
    step "decode_breakdown"
    .gpu/decode_breakdown --model "$M" --batches ${BATCHES:-1,8} --context 512 --steps 32 --copy-gbs "$COPY" \
        >"$O/decode_breakdown.log" 2>&1 || rc=1
    cat "$O/decode_breakdown.log"
}
part_gemv() {
    step "gemv variants"
    timeout 240 python3 tests/gpu/check_gemv.py --bench --variants --lib .gpu/libfgattn.so \
        >"$O/gemv_variants.log" 2>&1 || rc=1
    tail -60 "$O/gemv_variants.log"
}
for p in "$@"; do "part_$p"; done
step "done rc=$rc"
exit $rc
