#!/bin/bash
# Fuzzes what a guest controls in virtio (rings, chains, blk requests, net frames; virtio/virtio_fuzz.c,
# libFuzzer with ASan and UBSan; FUZZ_SECONDS, 30 by default). The corpus grows in
# $BUILD/fuzz/virtio-corpus across runs; a crash leaves its input in $BUILD/fuzz/virtio-crash-*.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if ! command -v clang >/dev/null || ! command -v python3 >/dev/null; then
    echo "SKIP: virtio fuzzing: clang or python3 is not installed"
    exit 77
fi
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
     clang -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null; then
    echo "SKIP: virtio fuzzing: clang cannot link libFuzzer (libclang-rt-dev missing?)"
    exit 77
fi
log=$(mktemp /tmp/kvmbox-fuzz.XXXXXX.log)
if timeout 300 make -s BUILD="$BUILD" fuzz-virtio FUZZ_SECONDS="${FUZZ_SECONDS:-30}" >"$log" 2>&1; then
    echo "PASS: virtio fuzzing: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1), no crash;" \
         "corpus $(ls "$BUILD/fuzz/virtio-corpus" | wc -l) inputs"
    rm -f "$log"
else
    grep -E -m5 'ERROR|SUMMARY|runtime error|Test unit written' "$log"
    echo "FAIL: virtio fuzzing found a crash (log: $log; input: $BUILD/fuzz/virtio-crash-*)"
    exit 1
fi
