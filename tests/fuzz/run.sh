#!/usr/bin/env bash
# run.sh — run every libFuzzer target in BUILD_DIR for SECONDS each, all at the same time (each
# target is one single-threaded process), then print executions per target.
#
#   tests/fuzz/run.sh [BUILD_DIR=build-fuzz] [SECONDS=60] [TARGET...]
#
# Run from the repository root (fuzz_tokenizer loads models/SmolLM2-135M-Instruct.Q4_1.gguf when
# present). Seeds come from tests/fuzz/corpus/<target>/ (read only); new inputs are kept in
# BUILD_DIR/corpus/<target>/, logs in BUILD_DIR/logs/<target>.log, crashing inputs in
# BUILD_DIR/crashes/<target>-crash-<sha1>. Exits 1 when any target crashed, leaked, timed out or
# failed to start. Environment: FUZZ_ARGS adds libFuzzer flags to every target.
set -u
BUILD=${1:-build-fuzz}
SECS=${2:-60}
shift 2 2>/dev/null || shift $#
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=()
    for b in "$BUILD"/fuzz_*; do
        [ -x "$b" ] && [ -f "$b" ] && TARGETS+=("$(basename "$b")")
    done
fi
if [ ${#TARGETS[@]} -eq 0 ]; then
    echo "run.sh: no fuzz targets in $BUILD (make fuzz-build)" >&2
    exit 1
fi
mkdir -p "$BUILD/logs" "$BUILD/crashes"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

declare -A PID
for t in "${TARGETS[@]}"; do
    mkdir -p "$BUILD/corpus/$t"
    seeds=tests/fuzz/corpus/$t
    [ -d "$seeds" ] || seeds=
    dict=tests/fuzz/$t.dict
    dictarg=()
    [ -f "$dict" ] && dictarg=(-dict="$dict")
    # -malloc_limit_mb: every input is a few KB, so a single allocation of 512 MB is a bug
    # (an untrusted count used as a size); -timeout: one input running 10 s is a hang.
    timeout -k 10 $((SECS + 60)) "$BUILD/$t" -max_total_time="$SECS" -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -artifact_prefix="$BUILD/crashes/$t-" "${dictarg[@]}" ${FUZZ_ARGS:-} \
        "$BUILD/corpus/$t" $seeds >"$BUILD/logs/$t.log" 2>&1 &
    PID[$t]=$!
done

fail=0
printf '%-22s %12s %10s %8s  %s\n' target executions exec/s corpus status
for t in "${TARGETS[@]}"; do
    wait "${PID[$t]}"
    rc=$?
    log=$BUILD/logs/$t.log
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(ls "$BUILD/corpus/$t" | wc -l)
    status=ok
    if [ $rc -ne 0 ]; then
        status="FAILED (exit $rc; $log)"
        fail=1
    fi
    printf '%-22s %12s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$status"
done
if [ $fail -ne 0 ]; then
    for t in "${TARGETS[@]}"; do
        log=$BUILD/logs/$t.log
        if grep -qE '^==[0-9]+==ERROR|runtime error|SUMMARY: libFuzzer|Test unit written' "$log"; then
            echo "---- $t ($log) ----"
            grep -E -A40 '^==[0-9]+==ERROR|runtime error|SUMMARY: libFuzzer' "$log" | head -60
            grep 'Test unit written' "$log"
        fi
    done
fi
exit $fail
