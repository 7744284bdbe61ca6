#!/usr/bin/env bash
# pack_gpu.sh — build here what the GPU machine runs and put it in .gpu/ (ignored) for `carry`:
# engine_check and bench/decode_breakdown linked against libflashgen.a with only the libraries
# they need (cJSON, copied beside them and found through $ORIGIN), flashgen itself, the CUDA
# backend libflashgen_cuda.so and the kernels' test library libfgattn.so (`make test-gpu`).
# The GPU machine has CUDA and torch but not cJSON, libuv or libmicrohttpd, so
# those three are copied too.
# BASE=DIR also packs engine_check and libflashgen_cuda.so from the build folder DIR (built the
# same way at an earlier commit) into .gpu_base/, for a before/after in one GPU run
# (bench/gpu_breakdown.sh).
# Also the tokenizer keys of the default model (.gpu/smollm2_tokenizer.gguf) for
# bench/serving_device.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
make -j2 BUILD="$B" CUDA=1 "$B/libflashgen.a" "$B/libflashgen_cuda.so" "$B/libfgattn.so" \
    "$B/tools/engine_check.o" "$B/flashgen"
mkdir -p .gpu
gcc -o .gpu/engine_check "$B/tools/engine_check.o" "$B/libflashgen.a" -lcjson -lm -ldl -pthread \
    -Wl,-rpath,'$ORIGIN'
gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I. -o .gpu/decode_breakdown \
    bench/decode_breakdown.c "$B/libflashgen.a" -lcjson -lm -ldl -pthread -Wl,-rpath,'$ORIGIN'
cp "$B/libflashgen_cuda.so" "$B/libfgattn.so" .gpu/
# the daemon too, with the three libraries the GPU machine lacks (found via LD_LIBRARY_PATH)
cp "$B/flashgen" .gpu/
for lib in libcjson.so.1 libuv.so.1 libmicrohttpd.so.12; do
    cp -L "$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')" ".gpu/$lib"
done
# the tokenizer keys of the default model (2 MB), which bench/serving_device.sh writes its random
# 8B-shape GGUF with (the 100 MB model itself does not travel)
if [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    python3 tools/make_random_gguf.py --tokenizer-only \
        --tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf --out .gpu/smollm2_tokenizer.gguf
fi
if [ -n "${BASE:-}" ]; then
    mkdir -p .gpu_base
    gcc -o .gpu_base/engine_check "$BASE/tools/engine_check.o" "$BASE/libflashgen.a" -lcjson -lm \
        -ldl -pthread -Wl,-rpath,'$ORIGIN'
    cp "$BASE/libflashgen_cuda.so" .gpu/libcjson.so.1 .gpu_base/
fi
ls -la .gpu ${BASE:+.gpu_base}
