#!/bin/bash
# Fuzzes the qcow2 metadata parser and write path for a bounded time (block/qcow2_fuzz.c,
# libFuzzer with ASan and UBSan; FUZZ_SECONDS, 30 by default). The corpus grows in
# $BUILD/fuzz/corpus across runs; a crash leaves its input in $BUILD/fuzz/crash-*.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
. tests/fuzz-run.sh
fuzz_run "qcow2 fuzzing" fuzz-qcow2 corpus crash qemu-img
