#!/bin/bash
# Fuzzes the qcow2 metadata parser for a bounded time (libFuzzer with ASan and UBSan).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if ! command -v clang >/dev/null || ! command -v qemu-img >/dev/null; then
    echo "SKIP: qcow2 fuzzing: clang or qemu-img is not installed"
    exit 77
fi
if make -s BUILD="$BUILD" fuzz-qcow2 FUZZ_SECONDS=${FUZZ_SECONDS:-30} >"/tmp/kvmbox-fuzz.log" 2>&1; then
    echo "PASS: qcow2 fuzzing: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' /tmp/kvmbox-fuzz.log | tail -1), no crash"
else
    grep -E -m5 'ERROR|SUMMARY|runtime error' /tmp/kvmbox-fuzz.log
    echo "FAIL: qcow2 fuzzing found a crash (see /tmp/kvmbox-fuzz.log and crash-* files)"
    exit 1
fi
