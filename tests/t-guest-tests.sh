#!/bin/bash
# The bare-metal guest tests under kvmbox, and under QEMU (TCG) as the reference PC.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
rc=0
guest-tests/run.sh --vmm kvmbox --build "$BUILD"
r=$?; [ $r -ne 0 ] && [ $r -ne 77 ] && rc=1
# QEMU runs the same kernels once, with the normal build (its result does not depend on ours).
if [ "$BUILD" = build ]; then
    guest-tests/run.sh --vmm qemu --build "$BUILD"
    r=$?; [ $r -ne 0 ] && [ $r -ne 77 ] && rc=1
fi
exit $rc
