#!/bin/bash
# The one test command (make check; README; .ci/run): builds kvmbox normally and with
# ASan+UBSan, runs the unit tests, the guest tests and the integration scripts against both
# builds, and ends with one "N passed, N failed, N skipped" line.
set -u
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)
LOG=$(mktemp -d /tmp/kvmbox-check.XXXXXX)
pass=0 fail=0 skip=0
failed_names=()

count() { # reads PASS/FAIL/SKIP lines from stdin, echoes them, updates the counters
    local line
    while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in
        PASS:*) pass=$((pass + 1)) ;;
        FAIL:*) fail=$((fail + 1)); failed_names+=("${line#FAIL: }") ;;
        SKIP:*) skip=$((skip + 1)) ;;
        esac
    done
}

build() { # build DIR SAN
    if make -s -j"$JOBS" BUILD="$1" SAN="$2" all "$1"/tests/.stamp >"$LOG/build-$1.log" 2>&1; then
        echo "PASS: build $1"
    else
        tail -30 "$LOG/build-$1.log"
        echo "FAIL: build $1"
        return 1
    fi
}

run_scripts() { # run_scripts BUILD_DIR pattern...
    local dir=$1 s rc out
    shift
    for s in "$@"; do
        [ -x "$s" ] || continue
        out="$LOG/$(basename "$s").$dir.log"
        local t0=$SECONDS
        KVMBOX="$dir/kvmbox" BUILD="$dir" timeout -k 10 300 "$s" >"$out" 2>&1
        rc=$?
        echo "$(basename "$s") [$dir]: $((SECONDS - t0)) s" >>"$LOG/times"
        count < <(grep -E '^(PASS|FAIL|SKIP):' "$out" | sed "s|^\(PASS\|FAIL\|SKIP\): |&[$dir] |")
        # A sanitizer report anywhere is a failure, even if the script's checks passed.
        if grep -qE 'runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer' "$out"; then
            grep -E -m3 'runtime error:|ERROR: (Address|Leak)Sanitizer' "$out"
            count <<<"FAIL: [$dir] $(basename "$s"): sanitizer report (see $out)"
        fi
        if [ $rc -ne 0 ] && [ $rc -ne 77 ] && ! grep -q '^FAIL:' "$out"; then
            tail -20 "$out"
            count <<<"FAIL: [$dir] $(basename "$s") exited with status $rc"
        fi
    done
}

for dir_san in "build 0" "build-asan 1"; do
    set -- $dir_san
    dir=$1 san=$2
    build "$dir" "$san" >"$LOG/build-result" 2>&1
    brc=$?
    count <"$LOG/build-result"
    [ $brc -eq 0 ] || continue
    count < <(tests/run-unit.sh $(find "$dir/tests" -maxdepth 1 -type f -name 'test_*' -perm -u+x | sort) 2>&1)
    if [ "$san" = 0 ]; then
        run_scripts "$dir" tests/t-*.sh
    else
        # Under ASan: everything that exercises kvmbox's own code paths, not the slow
        # Linux boots or the benchmarks. The bridge and tap pings take every 7th payload
        # size (the normal pass took every size): the sanitizers need the paths, not all
        # 1473 sizes again.
        STEP=7 run_scripts "$dir" $(ls tests/t-*.sh | grep -v -E 't-linux|t-img-fuzz|t-virtio-fuzz')
    fi
done

echo
if [ $fail -ne 0 ]; then
    echo "failed:"
    printf '  %s\n' "${failed_names[@]}"
fi
echo "logs: $LOG"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
