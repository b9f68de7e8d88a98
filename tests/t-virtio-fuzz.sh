#!/bin/bash
# Fuzzes what a guest controls in virtio (rings, chains, blk requests, net frames; virtio/virtio_fuzz.c,
# libFuzzer with ASan and UBSan; FUZZ_SECONDS, 30 by default). The corpus grows in
# $BUILD/fuzz/virtio-corpus across runs; a crash leaves its input in $BUILD/fuzz/virtio-crash-*.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
. tests/fuzz-run.sh
fuzz_run "virtio fuzzing" fuzz-virtio virtio-corpus virtio-crash python3
