#!/bin/bash
# Fuzzes the saved-state file parser (vmm/state_fuzz.c, libFuzzer with ASan and UBSan;
# FUZZ_SECONDS, 30 by default). The corpus grows in $BUILD/fuzz/state-corpus across runs; a
# crash leaves its input in $BUILD/fuzz/state-crash-*.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
. tests/fuzz-run.sh
fuzz_run "saved-state fuzzing" fuzz-state state-corpus state-crash clang
