#!/bin/sh
# Runs the Check unit-test binaries given as arguments; one PASS/FAIL line per binary.
# Check stops a test that runs longer than its timeout (4 s, or what the suite sets): wall
# time, which a busy host stretches. Ten times that is the cap here; a hang is what it is
# for, not a slow host (tests/run-all.sh guards the whole run by progress).
export CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-10}
fail=0
for t in "$@"; do
    name=$(basename "$t")
    if out=$("$t" 2>&1); then
        echo "PASS: unit/$name ($(echo "$out" | grep -o '[0-9]*%: Checks: [0-9]*' | tail -1))"
    else
        echo "$out" | sed 's/^/    /'
        echo "FAIL: unit/$name"
        fail=1
    fi
done
exit $fail
