# shellcheck shell=bash
# Sourced by the tests/t-*-fuzz.sh scripts: runs one libFuzzer target for a bounded time.
# fuzz_run WHAT TARGET CORPUS CRASH TOOL: `make TARGET` (FUZZ_SECONDS, 30 by default) with
# its corpus in $BUILD/fuzz/CORPUS and crash inputs in $BUILD/fuzz/CRASH-*; SKIP when clang,
# libFuzzer or TOOL (something the target's seeds need) is missing.
fuzz_run() {
    local what=$1 target=$2 corpus=$BUILD/fuzz/$3 crash=$BUILD/fuzz/$4 tool=$5 log
    if ! command -v clang >/dev/null || ! command -v "$tool" >/dev/null; then
        echo "SKIP: $what: clang or $tool is not installed"
        exit 77
    fi
    if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
         clang -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null; then
        echo "SKIP: $what: clang cannot link libFuzzer (libclang-rt-dev missing?)"
        exit 77
    fi
    log=$(mktemp /tmp/kvmbox-fuzz.XXXXXX.log)
    # The fuzzer stops itself after FUZZ_SECONDS; the watchdog (tests/lib/progress.sh) is for
    # a hang: nothing printed and no CPU used for 300 s, or 3000 s in all (builds included).
    . tests/lib/progress.sh
    if progress_run --name "$target" --quiet 300 --cpu-quiet 1200 --cap 3000 \
        -- make -s BUILD="$BUILD" "$target" FUZZ_SECONDS="${FUZZ_SECONDS:-30}" >"$log" 2>&1; then
        echo "PASS: $what: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1), no crash;" \
             "corpus $(ls "$corpus" | wc -l) inputs"
        rm -f "$log"
    else
        grep -E -m5 'ERROR|SUMMARY|runtime error|Test unit written' "$log"
        echo "FAIL: $what found a crash (log: $log; input: $crash-*)"
        exit 1
    fi
}
