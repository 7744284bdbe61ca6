#!/usr/bin/env bash
# pack_gpu.sh — build here what the GPU machine runs and put it in .gpu/ (ignored) for `carry`:
# engine_check linked against libflashgen.a with only the libraries it needs (cJSON, copied
# beside it and found through $ORIGIN), flashgen itself, and the CUDA backend libflashgen_cuda.so.
# The GPU machine has CUDA and torch but not cJSON, libuv or libmicrohttpd (shared/GPU.md), so
# those three are copied too.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build}
make -j2 BUILD="$B" CUDA=1 "$B/libflashgen.a" "$B/libflashgen_cuda.so" "$B/tools/engine_check.o" \
    "$B/flashgen"
mkdir -p .gpu
gcc -o .gpu/engine_check "$B/tools/engine_check.o" "$B/libflashgen.a" -lcjson -lm -ldl -pthread \
    -Wl,-rpath,'$ORIGIN'
cp "$B/libflashgen_cuda.so" .gpu/
# the daemon too, with the three libraries the GPU machine lacks (found via LD_LIBRARY_PATH)
cp "$B/flashgen" .gpu/
for lib in libcjson.so.1 libuv.so.1 libmicrohttpd.so.12; do
    cp -L "$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')" ".gpu/$lib"
done
ls -la .gpu
