#!/bin/sh
# Runs the Check unit-test binaries given as arguments; one PASS/FAIL line per binary.
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
