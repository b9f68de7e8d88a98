#!/bin/bash
# Fuzzes the qcow2 metadata parser and write path for a bounded time (block/qcow2_fuzz.c,
# libFuzzer with ASan and UBSan; FUZZ_SECONDS, 30 by default). The corpus grows in
# $BUILD/fuzz/corpus across runs; a crash leaves its input in $BUILD/fuzz/crash-*.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if ! command -v clang >/dev/null || ! command -v qemu-img >/dev/null; then
    echo "SKIP: qcow2 fuzzing: clang or qemu-img is not installed"
    exit 77
fi
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
     clang -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null; then
    echo "SKIP: qcow2 fuzzing: clang cannot link libFuzzer (libclang-rt-dev missing?)"
    exit 77
fi
log=$(mktemp /tmp/kvmbox-fuzz.XXXXXX.log)
if timeout 300 make -s BUILD="$BUILD" fuzz-qcow2 FUZZ_SECONDS="${FUZZ_SECONDS:-30}" >"$log" 2>&1; then
    echo "PASS: qcow2 fuzzing: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1), no crash;" \
         "corpus $(ls "$BUILD/fuzz/corpus" | wc -l) inputs"
    rm -f "$log"
else
    grep -E -m5 'ERROR|SUMMARY|runtime error|Test unit written' "$log"
    echo "FAIL: qcow2 fuzzing found a crash (log: $log; input: $BUILD/fuzz/crash-*)"
    exit 1
fi
