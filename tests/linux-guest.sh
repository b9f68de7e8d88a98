# shellcheck shell=bash
# Sourced by the tests/t-linux-*.sh scripts that boot Debian's cloud kernel: the checks they
# all start with. Expects VMM (kvmbox, or qemu for the validation modes), KVMBOX and G.

# linux_need_host WHAT: under kvmbox, one SKIP line (exit 77) unless this host runs guests
# natively (scripts/host-native.sh decides at run time), and a FAIL if kvmbox is not built.
linux_need_host() {
    [ "$VMM" = kvmbox ] || return 0
    local why
    if ! why=$(scripts/host-native.sh); then
        echo "SKIP: $1: $why"
        exit 77
    fi
    [ -x "$KVMBOX" ] || { echo "FAIL: $1: $KVMBOX is not built"; exit 1; }
}

# linux_fetch_guest WHAT LOG: makes the guest in $G (scripts/fetch-guest.sh, output in LOG);
# on failure prints the log's tail and a FAIL line and returns 1.
linux_fetch_guest() {
    scripts/fetch-guest.sh "$G" >"$2" 2>&1 && return 0
    tail -5 "$2"
    echo "FAIL: $1: scripts/fetch-guest.sh could not make the guest"
    return 1
}
