#!/bin/bash
# "Nothing lost, nobody in": the block layer's safety rules, each against the behaviour a
# user relies on, with Debian's qemu-img as the oracle.
#   locks     a running VM's image: every `kvmbox img` verb that writes refuses (one line,
#             status 1, the image's sha256 unchanged); kvmbox and QEMU see each other's locks
#   limits    sizes whose L1 table open would refuse are refused by create and resize
#   raw       a raw image of a size that is not a multiple of 512 (QEMU rounds up)
#   chains    deep backing chains, loops by identity, relative names through symlinks,
#             FIFOs as backing files, untrusted mode, the probe warning
#   check     COPIED flags, shared clusters, bad refcount blocks: kvmbox's check and repair
#             against qemu-img check
#   snapshot  damaged snapshot tables: apply refuses, nothing changes
#   overlap   writes onto metadata (L2 tables, refcount blocks) from img and from a guest:
#             refused, the image marked corrupt, the host told; ENOSPC told as well
# Sections run with $KVMBOX (make check runs the script once per build, ASan included; a
# binary of another build may be stale). SECTIONS="locks check" picks some.
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
GT=$BUILD/guest-tests
command -v qemu-img >/dev/null || { echo "SKIP: img safety: qemu-img is not installed"; exit 77; }
BINS=$KVMBOX
SECTIONS=${SECTIONS:-locks limits raw chains check snapshot overlap}
export ASAN_OPTIONS=exitcode=86 UBSAN_OPTIONS=exitcode=86:print_stacktrace=1 LSAN_OPTIONS=exitcode=86
T=$(mktemp -d /tmp/kvmbox-safety.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
VMS=()
cleanup() {
    for v in "${VMS[@]}"; do "$KVMBOX" kill "$v" >/dev/null 2>&1; done
    rm -rf "$T"
}
trap cleanup EXIT
fails=0
ok() { echo "PASS: img safety: $*"; }
bad() { echo "FAIL: img safety: $*"; fails=$((fails + 1)); }
have_kvm() { [ -c /dev/kvm ] && [ -f "$GT/touch.elf" ]; }

# img BIN ARGS...: runs `BIN img ARGS`; sets $rc, $out (stdout), $err (stderr) and fails the
# case on a crash or a sanitizer report.
img() {
    local bin=$1
    shift
    timeout -k 5 120 "$bin" img "$@" >"$T/out" 2>"$T/err"
    rc=$?
    out=$(cat "$T/out")
    err=$(cat "$T/err")
    if [ $rc -ge 64 ] && [ $rc != 77 ] || grep -qE 'Sanitizer|runtime error' "$T/err"; then
        bad "$bin img $1: crashed or sanitizer report (status $rc): $(grep -m1 -E 'ERROR|runtime error' "$T/err")"
        return 1
    fi
    return 0
}
# refused DESC: the last img call failed with status 1 and exactly one line on stderr.
refused() {
    [ $rc = 1 ] && [ "$(wc -l <"$T/err")" = 1 ]
}
# byte_locked FILE BYTE: someone holds an OFD lock on BYTE of FILE (/proc/locks).
byte_locked() { grep -q ":$(stat -c %i "$1") $2 $2\$" /proc/locks; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
rd64() { od -An -tu8 --endian=big -j "$2" -N8 "$1" | tr -d ' '; }
rd32() { od -An -tu4 --endian=big -j "$2" -N4 "$1" | tr -d ' '; }
wr() { printf "$(sed 's/../\\x&/g' <<<"$3")" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
wr64() { wr "$1" "$2" "$(printf '%016x' "$3")"; }
wr32() { wr "$1" "$2" "$(printf '%08x' "$3")"; }
# start_vm NAME DISKSPEC...: a daemonized idle guest holding the disks.
start_vm() {
    local name=$1 args=() d
    shift
    for d in "$@"; do args+=(--disk "$d"); done
    VMS+=("$name")
    "$KVMBOX" run --daemonize --name "$name" --kernel "$GT/touch.elf" --mem 96M \
        --cmdline "touch=1 hold=900" "${args[@]}" >/dev/null
}

# ---- locks ------------------------------------------------------------------------------
sec_locks() {
    if ! have_kvm; then
        echo "SKIP: img safety: locks against a running VM need /dev/kvm and $GT/touch.elf"
        return
    fi
    local d=$T/locks
    mkdir -p "$d"
    qemu-img create -q -f qcow2 "$d/base.qcow2" 64M
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$d/img.qcow2"
    qemu-io -c 'write -P 0x5a 0 8M' "$d/img.qcow2" >/dev/null
    qemu-img snapshot -c s1 "$d/img.qcow2"
    qemu-img create -q -f qcow2 -b img.qcow2 -F qcow2 "$d/top.qcow2"
    qemu-img create -q -f raw "$d/src.raw" 64M
    if ! start_vm lk "$d/img.qcow2,format=qcow2"; then
        bad "locks: the VM holding the image did not start"
        return
    fi
    local s0 b0 t0
    s0=$(sha "$d/img.qcow2") b0=$(sha "$d/base.qcow2") t0=$(sha "$d/top.qcow2")
    for bin in $BINS; do
        local verbs=(
            "create qcow2|create -f qcow2 $d/img.qcow2 1M"
            "create raw|create -f raw $d/img.qcow2 1M"
            "create with a backing file|create -f qcow2 -b base.qcow2 -F qcow2 $d/img.qcow2"
            "convert onto it|convert -O qcow2 $d/src.raw $d/img.qcow2"
            "convert -n into it|convert -n -O qcow2 $d/src.raw $d/img.qcow2"
            "commit|commit $d/img.qcow2"
            "commit into it (from an overlay)|commit $d/top.qcow2"
            "rebase|rebase -b '' $d/img.qcow2"
            "rebase -u|rebase -u -b other.qcow2 $d/img.qcow2"
            "resize|resize $d/img.qcow2 +1M"
            "snapshot -c|snapshot -c s2 $d/img.qcow2"
            "snapshot -a|snapshot -a s1 $d/img.qcow2"
            "snapshot -d|snapshot -d s1 $d/img.qcow2"
            "check -r leaks|check -r leaks $d/img.qcow2"
            "check -r all|check -r all $d/img.qcow2"
            "bench -w|bench -w -c 10 $d/img.qcow2"
            "resize of its backing file|resize $d/base.qcow2 +1M"
        )
        for v in "${verbs[@]}"; do
            local desc=${v%%|*} args
            eval "args=(${v#*|})"
            img "$bin" "${args[@]}" || continue
            if refused && [ "$(sha "$d/img.qcow2")" = "$s0" ] && [ "$(sha "$d/base.qcow2")" = "$b0" ] &&
                [ "$(sha "$d/top.qcow2")" = "$t0" ]; then
                ok "locks ($bin): $desc on a running VM's image is refused ($err)"
            else
                bad "locks ($bin): $desc: status $rc, stderr '$err', image $( [ "$(sha "$d/img.qcow2")" = "$s0" ] && echo unchanged || echo CHANGED)"
                s0=$(sha "$d/img.qcow2") b0=$(sha "$d/base.qcow2") t0=$(sha "$d/top.qcow2")
            fi
        done
        # Readers share with readers only: -U reads anyway; the base, read by the VM, reads.
        img "$bin" info -U "$d/img.qcow2" && [ $rc = 0 ] && ok "locks ($bin): info -U reads a running VM's image" ||
            bad "locks ($bin): info -U: status $rc $err"
        img "$bin" compare "$d/base.qcow2" "$d/base.qcow2" && [ $rc = 0 ] &&
            ok "locks ($bin): the VM's backing file can be read by others" || bad "locks ($bin): compare the base: $rc $err"
    done
    # QEMU sees kvmbox's locks.
    local q
    q=$(qemu-img info "$d/img.qcow2" 2>&1) && bad "locks: qemu-img info opened a running kvmbox VM's image" ||
        ok "locks: qemu-img info refuses a running kvmbox VM's image ($(head -1 <<<"$q"))"
    q=$(qemu-img create -f qcow2 "$d/img.qcow2" 1M 2>&1 >/dev/null) && bad "locks: qemu-img create truncated it" ||
        ok "locks: so does qemu-img create ($(head -1 <<<"$q"))"
    q=$(qemu-img info "$d/base.qcow2" 2>&1) && ok "locks: qemu-img reads the VM's backing file" ||
        bad "locks: qemu-img info of the backing file: $q"
    [ "$(sha "$d/img.qcow2")" = "$s0" ] && ok "locks: the image is intact" || bad "locks: the image changed"
    "$KVMBOX" kill lk >/dev/null 2>&1
    # kvmbox sees QEMU's: a writer (qemu-io holding the image open) keeps out kvmbox's
    # writers and readers; a QEMU reader keeps out kvmbox's writers only.
    qemu-io -c 'sleep 20000' "$d/img.qcow2" >/dev/null 2>&1 &
    local qpid=$!
    for _ in $(seq 50); do byte_locked "$d/img.qcow2" 101 && break; sleep 0.1; done
    s0=$(sha "$d/img.qcow2")
    img "$KVMBOX" resize "$d/img.qcow2" +1M
    refused && [ "$(sha "$d/img.qcow2")" = "$s0" ] && ok "locks: a QEMU writer keeps out kvmbox's writers ($err)" ||
        bad "locks: kvmbox resize beside a QEMU writer: $rc $err"
    # (kvmbox img's read-only verbs read like qemu-img -U; a VM's read-only disk locks.)
    out=$("$KVMBOX" run --kernel "$GT/spin.elf" --cmdline loops=1 --disk "$d/img.qcow2,format=qcow2,readonly=on" 2>&1)
    [ $? = 2 ] && grep -q "in use by another process that is writing it" <<<"$out" &&
        ok "locks: ... and a kvmbox VM's read-only disk ($out)" || bad "locks: read-only VM disk beside a QEMU writer: $out"
    kill $qpid 2>/dev/null
    wait $qpid 2>/dev/null
    qemu-io -r -c 'sleep 20000' "$d/img.qcow2" >/dev/null 2>&1 &
    qpid=$!
    for _ in $(seq 50); do byte_locked "$d/img.qcow2" 201 && break; sleep 0.1; done
    img "$KVMBOX" resize "$d/img.qcow2" +1M
    refused && [ "$(sha "$d/img.qcow2")" = "$s0" ] && ok "locks: a QEMU reader keeps out kvmbox's writers ($err)" ||
        bad "locks: kvmbox resize beside a QEMU reader: $rc $err"
    out=$("$KVMBOX" run --kernel "$GT/spin.elf" --cmdline loops=1 --disk "$d/img.qcow2,format=qcow2,readonly=on" 2>&1)
    [ $? = 1 ] && ok "locks: ... but not a kvmbox VM's read-only disk" || bad "locks: read-only VM disk beside a QEMU reader: $out"
    kill $qpid 2>/dev/null
    wait $qpid 2>/dev/null
    # create on a FIFO or a directory: refused without blocking.
    mkfifo "$d/fifo"
    img "$KVMBOX" create -f raw "$d/fifo" 1M
    refused && ok "locks: create refuses a FIFO ($err)" || bad "locks: create on a FIFO: $rc $err"
}

# ---- limits -----------------------------------------------------------------------------
sec_limits() {
    local d=$T/limits
    mkdir -p "$d"
    for bin in $BINS; do
        # cluster size, size: kvmbox must accept exactly what qemu-img accepts, and what it
        # accepts must open.
        for c in "512 16T" "512 100T" "512 128G" "512 129G" "65536 3000T" "65536 2048T" "65536 2049T" "2M 2048T"; do
            set -- $c
            rm -f "$d/k.qcow2" "$d/q.qcow2"
            qemu-img create -q -f qcow2 -o cluster_size=$1 "$d/q.qcow2" "$2" 2>/dev/null
            local qrc=$?
            img "$bin" create -q -f qcow2 -o cluster_size=$1 "$d/k.qcow2" "$2" || continue
            if [ $qrc = 0 ] && [ $rc = 0 ]; then
                img "$bin" info "$d/k.qcow2" && [ $rc = 0 ] && ok "limits ($bin): $2 with $1-byte clusters: created and opens, as with qemu-img" ||
                    bad "limits ($bin): $2 with $1-byte clusters: created, but info says: $err"
            elif [ $qrc != 0 ] && refused && [ ! -e "$d/k.qcow2" ]; then
                ok "limits ($bin): $2 with $1-byte clusters: refused like qemu-img, nothing left behind ($err)"
            else
                bad "limits ($bin): $2 with $1-byte clusters: qemu-img $qrc, kvmbox $rc ($err), file: $(ls -la "$d/k.qcow2" 2>&1)"
            fi
        done
        img "$bin" create -q -f qcow2 -o cluster_size=512 "$d/r.qcow2" 1G
        local s0
        s0=$(sha "$d/r.qcow2")
        img "$bin" resize "$d/r.qcow2" 129G
        refused && [ "$(sha "$d/r.qcow2")" = "$s0" ] && ok "limits ($bin): resize beyond the limit is refused ($err)" ||
            bad "limits ($bin): resize to 129G with 512-byte clusters: $rc $err"
        img "$bin" resize "$d/r.qcow2" 128G && [ $rc = 0 ] && qemu-img check -q "$d/r.qcow2" &&
            ok "limits ($bin): resize to the limit works and qemu-img check agrees" || bad "limits ($bin): resize to 128G: $rc $err"
        rm -f "$d"/*
    done
}

# ---- raw --------------------------------------------------------------------------------
sec_raw() {
    local d=$T/raw
    mkdir -p "$d"
    head -c 1000 /dev/urandom >"$d/p.raw"
    for bin in $BINS; do
        img "$bin" info --output json "$d/p.raw"
        [ $rc = 0 ] && grep -q '"virtual-size": 1024' <<<"$out" &&
            grep -q '"virtual-size": 1024' <<<"$(qemu-img info --output json "$d/p.raw")" &&
            ok "raw ($bin): a 1000-byte raw image is 1024 bytes, as for qemu-img" || bad "raw ($bin): info: $out $err"
        img "$bin" convert -O qcow2 "$d/p.raw" "$d/p.qcow2"
        [ $rc = 0 ] && qemu-img compare -q "$d/p.raw" "$d/p.qcow2" &&
            ok "raw ($bin): converted whole (the tail reads as zeroes)" || bad "raw ($bin): convert: $rc $err"
    done
    if have_kvm && [ -f "$GT/blk-fault.elf" ]; then
        cp "$d/p.raw" "$d/g.raw"
        out=$("$KVMBOX" run --kernel "$GT/blk-fault.elf" --mem 64M --timeout 300 --cmdline "capacity=2 tail=1" \
            --disk "$d/g.raw,format=raw" 2>&1)
        local st=$?
        [ $st = 1 ] && grep -q "SUMMARY: pass=4 fail=0" <<<"$out" && cmp -s -n 512 "$d/p.raw" "$d/g.raw" &&
            [ "$(stat -c %s "$d/g.raw")" = 1024 ] &&
            ok "raw: the guest sees 2 sectors, writes the partial one (the file grows to 1024 bytes, as with QEMU) and cannot read past it" ||
            bad "raw: guest on a 1000-byte disk: status $st, size $(stat -c %s "$d/g.raw"): $(grep -E 'FAIL|CAPACITY' <<<"$out" | tr '\n' ' ')"
    else
        echo "SKIP: img safety: raw: the guest part needs /dev/kvm and $GT/blk-fault.elf"
    fi
}

# ---- chains -------------------------------------------------------------------------------
sec_chains() {
    local d=$T/chains
    mkdir -p "$d"
    # A legitimate 1000-deep chain (qemu-img 7.2 reads it; it crashes at 2000).
    qemu-img create -q -f qcow2 "$d/l0.qcow2" 1M
    qemu-io -c 'write -P 0x37 64k 64k' "$d/l0.qcow2" >/dev/null
    local i
    for i in $(seq 1 1000); do
        "$KVMBOX" img create -q -f qcow2 -b "l$((i - 1)).qcow2" -F qcow2 "$d/l$i.qcow2" 1M || break
    done
    qemu-io -c 'write -P 0x38 128k 4k' "$d/l1000.qcow2" >/dev/null
    qemu-img convert -O raw "$d/l1000.qcow2" "$d/deep-qemu.raw"
    for bin in $BINS; do
        img "$bin" convert -O raw "$d/l1000.qcow2" "$d/deep.raw"
        [ $rc = 0 ] && cmp -s "$d/deep.raw" "$d/deep-qemu.raw" &&
            ok "chains ($bin): a 1000-deep backing chain reads as qemu-img reads it" || bad "chains ($bin): 1000 deep: $rc $err"
        img "$bin" info --backing-chain "$d/l1000.qcow2"
        [ $rc = 0 ] && [ "$(grep -c '^image: ' <<<"$out")" = 1001 ] &&
            ok "chains ($bin): info --backing-chain lists its 1001 images" || bad "chains ($bin): info of 1000 deep: $rc $err"
    done
    if have_kvm && [ -f "$GT/blk-fault.elf" ]; then
        out=$("$KVMBOX" run --kernel "$GT/blk-fault.elf" --mem 64M --timeout 300 --cmdline "capacity=2048 write=512 len=4096" \
            --disk "$d/l1000.qcow2,format=qcow2" 2>&1)
        [ $? = 1 ] && grep -q "fail=0" <<<"$out" && ok "chains: a VM runs on the 1000-deep chain and writes to it" ||
            bad "chains: VM on 1000 deep: $(tail -2 <<<"$out" | tr '\n' ' ')"
    fi

    # Loops, found by identity however they are spelled.
    qemu-img create -q -f qcow2 -u -b lb.qcow2 -F qcow2 "$d/la.qcow2" 1M
    qemu-img create -q -f qcow2 -u -b la.qcow2 -F qcow2 "$d/lb.qcow2" 1M
    ln -s la.qcow2 "$d/lc.qcow2"
    qemu-img create -q -f qcow2 -u -b lc.qcow2 -F qcow2 "$d/ld.qcow2" 1M
    qemu-img create -q -f qcow2 -u -b ld.qcow2 -F qcow2 "$d/le.qcow2" 1M
    qemu-img create -q -f qcow2 -u -b ../chains/le.qcow2 -F qcow2 "$d/la2.qcow2" 1M
    cp "$d/la2.qcow2" "$d/la.qcow2" # la -> le -> ld -> lc (a symlink to la)
    for bin in $BINS; do
        for v in "convert -O raw $d/la.qcow2 $d/x.raw" "info --backing-chain $d/la.qcow2" "map $d/la.qcow2" \
                 "commit $d/la.qcow2" "rebase -b '' $d/la.qcow2"; do
            local args
            eval "args=($v)"
            img "$bin" "${args[@]}" || continue
            refused && grep -q "is a loop" <<<"$err" && ! grep -q "another process" <<<"$err" &&
                ok "chains ($bin): ${v%% *} names a loop through a symlink as a loop ($err)" ||
                bad "chains ($bin): ${v%% *} on a loop: $rc $err"
        done
    done

    # Relative backing names through a symlink: the directory of the path as given.
    mkdir -p "$d/s1" "$d/s2"
    qemu-img create -q -f qcow2 "$d/s1/base.qcow2" 1M
    qemu-img create -q -f qcow2 "$d/s2/base.qcow2" 2M
    qemu-img create -q -f qcow2 -u -b base.qcow2 -F qcow2 "$d/s2/top.qcow2" 4M
    ln -s ../s2/top.qcow2 "$d/s1/link.qcow2"
    local want
    want=$(qemu-img info --backing-chain "$d/s1/link.qcow2" | grep '^image:' | tail -1)
    for bin in $BINS; do
        img "$bin" info --backing-chain "$d/s1/link.qcow2"
        [ "$(grep '^image:' <<<"$out" | tail -1)" = "$want" ] && [ "$want" = "image: $d/s1/base.qcow2" ] &&
            ok "chains ($bin): img resolves a relative backing name beside the symlink, as qemu-img ($want)" ||
            bad "chains ($bin): symlink resolution: $(grep '^image:' <<<"$out" | tr '\n' ' ') (qemu-img: $want)"
    done
    if have_kvm; then
        if start_vm sl "$d/s1/link.qcow2,format=qcow2"; then
            byte_locked "$d/s1/base.qcow2" 201 && ! byte_locked "$d/s2/base.qcow2" 201 &&
                ok "chains: run resolves it the same way (s1/base.qcow2 is the one it holds)" ||
                bad "chains: run through a symlink holds $(byte_locked "$d/s2/base.qcow2" 201 && echo s2 || echo neither)"
            "$KVMBOX" kill sl >/dev/null 2>&1
        else
            bad "chains: the VM on the symlinked image did not start"
        fi
    fi

    # FIFOs and devices are not backing files; nothing hangs.
    mkfifo "$d/fifo"
    qemu-img create -q -f qcow2 -u -b fifo -F raw "$d/f.qcow2" 1M
    qemu-img create -q -f qcow2 -u -b /dev/zero -F raw "$d/z.qcow2" 1M
    for bin in $BINS; do
        for v in "convert -O raw $d/f.qcow2 $d/x.raw" "map $d/f.qcow2" "info --backing-chain $d/f.qcow2" \
                 "convert -O raw $d/z.qcow2 $d/x.raw" "info $d/fifo"; do
            local args
            eval "args=($v)"
            img "$bin" "${args[@]}" || continue
            refused && grep -q "not a regular file" <<<"$err" && ok "chains ($bin): ${v%% *} refuses a FIFO or device ($err)" ||
                bad "chains ($bin): ${v%% *} with a FIFO or device: $rc $err"
        done
    done
    if have_kvm; then
        out=$(timeout -k 5 60 "$KVMBOX" run --kernel "$GT/spin.elf" --cmdline loops=1 --disk "$d/f.qcow2,format=qcow2" 2>&1)
        [ $? = 2 ] && grep -q "not a regular file" <<<"$out" && ok "chains: run refuses a FIFO as backing file ($out)" ||
            bad "chains: run with a FIFO backing file: $out"
    fi

    # Untrusted images: a hostile image names a host file as its backing file.
    printf 'SECRET-HOST-FILE\n' >"$d/secret"
    truncate -s 1M "$d/secret"
    qemu-img create -q -f qcow2 -u -b "$d/secret" -F raw "$d/hostile.qcow2" 1M
    # No format recorded (so it is probed): the backing-format extension becomes one of an
    # unknown type, which readers skip.
    local ext
    ext=$(LC_ALL=C grep -obUaF "$(printf '\xe2\x79\x2a\xca')" "$d/hostile.qcow2" | head -1 | cut -d: -f1)
    wr "$d/hostile.qcow2" "$ext" 12345678
    qemu-img create -q -f qcow2 "$d/trusted-base.qcow2" 1M
    qemu-io -c 'write -P 0x44 0 4k' "$d/trusted-base.qcow2" >/dev/null
    for bin in $BINS; do
        img "$bin" convert -O raw "$d/hostile.qcow2" "$d/x.raw"
        [ $rc = 0 ] && grep -q "SECRET-HOST-FILE" "$d/x.raw" && grep -q "warning: backing file $d/secret: its format is not recorded" <<<"$err" &&
            [ "$(grep -c warning <<<"$err")" = 1 ] &&
            ok "chains ($bin): by default the named file is read (as QEMU does), with one warning that its format was probed" ||
            bad "chains ($bin): default mode: $rc '$err'"
        rm -f "$d/x.raw"
        img "$bin" --untrusted convert -O raw "$d/hostile.qcow2" "$d/x.raw"
        refused && [ ! -e "$d/x.raw" ] && grep -q "untrusted" <<<"$err" &&
            ok "chains ($bin): --untrusted opens no backing file the image names ($err)" || bad "chains ($bin): --untrusted: $rc $err"
        img "$bin" --untrusted --backing "$d/trusted-base.qcow2" --backing-format qcow2 convert -O raw "$d/hostile.qcow2" "$d/x.raw"
        [ $rc = 0 ] && ! grep -q "SECRET" "$d/x.raw" && [ "$(head -c 1 "$d/x.raw" | od -An -tx1 | tr -d ' ')" = 44 ] &&
            ok "chains ($bin): --untrusted --backing reads the backing file the caller names instead" ||
            bad "chains ($bin): --untrusted --backing: $rc $err"
        img "$bin" --untrusted --backing "$d/l999.qcow2" --backing-format qcow2 convert -O raw "$d/l1000.qcow2" "$d/x.raw"
        refused && grep -q "of its own" <<<"$err" && ok "chains ($bin): ... but not that file's own backing files ($err)" ||
            bad "chains ($bin): --untrusted --backing with a chain below: $rc $err"
    done
    if have_kvm; then
        out=$("$KVMBOX" run --kernel "$GT/spin.elf" --cmdline loops=1 --disk "$d/hostile.qcow2,format=qcow2,untrusted=on" 2>&1)
        [ $? = 2 ] && grep -q "names a backing file.*untrusted" <<<"$out" && [ "$(wc -l <<<"$out")" = 1 ] &&
            ok "chains: run --disk ...,untrusted=on refuses the image's backing file ($out)" || bad "chains: run untrusted: $out"
        out=$("$KVMBOX" run --kernel "$GT/spin.elf" --cmdline loops=1 \
            --disk "$d/hostile.qcow2,format=qcow2,untrusted=on,backing=$d/trusted-base.qcow2,backing_format=qcow2" 2>&1)
        [ $? = 1 ] && ok "chains: ... and runs with the backing file the caller names" || bad "chains: run untrusted with backing=: $out"
        out=$("$KVMBOX" run --kernel "$GT/spin.elf" --cmdline loops=1 --disk "$d/hostile.qcow2,format=qcow2" 2>&1)
        [ $? = 1 ] && grep -q "warning: disk .*its format is not recorded" <<<"$out" &&
            ok "chains: run warns when it probes a backing file's format" || bad "chains: run probe warning: $out"
    fi
}

# ---- check --------------------------------------------------------------------------------
# qcheck IMG: qemu-img check's status and error/leak counts, as "STATUS ERRORS LEAKS".
qcheck() {
    local o
    o=$(qemu-img check "$1" 2>&1)
    local st=$?
    echo "$st $(grep -o '^[0-9]* errors were found' <<<"$o" | cut -d' ' -f1) $(grep -o '^[0-9]* leaked clusters' <<<"$o" | cut -d' ' -f1)"
}
sec_check() {
    local d=$T/check
    mkdir -p "$d"
    head -c 4M /dev/urandom >"$d/data.raw"
    qemu-img convert -O qcow2 "$d/data.raw" "$d/base.qcow2"
    local B=$d/base.qcow2 L1 L2 RCT RB e
    L1=$(rd64 "$B" 40) L2=$(($(rd64 "$B" "$L1") & 0x00fffffffffffe00)) RCT=$(rd64 "$B" 48) RB=$(rd64 "$B" "$RCT")
    # The cases: NAME, and how each is made from base.qcow2 (64 data clusters, one L2 table).
    cp "$B" "$d/one-cluster.qcow2"   # every L2 entry points at data cluster 0
    e=$(rd64 "$B" "$L2")
    for i in $(seq 1 63); do wr64 "$d/one-cluster.qcow2" $((L2 + 8 * i)) "$e"; done
    cp "$B" "$d/copied-l2.qcow2"     # COPIED cleared on an entry whose refcount is 1
    e=$(rd64 "$B" $((L2 + 40)))
    wr64 "$d/copied-l2.qcow2" $((L2 + 40)) $((e & 0x7fffffffffffffff))
    cp "$B" "$d/copied-l1.qcow2"     # COPIED cleared on the L1 entry
    wr64 "$d/copied-l1.qcow2" "$L1" "$L2"
    cp "$B" "$d/rb-unaligned.qcow2"  # the refcount block's offset is not cluster-aligned
    wr64 "$d/rb-unaligned.qcow2" "$RCT" $((RB + 512))
    cp "$B" "$d/rb-past-eof.qcow2"   # the refcount block lies past the end of the file
    wr64 "$d/rb-past-eof.qcow2" "$RCT" $((0x7f0000000))
    cp "$B" "$d/rb-is-data.qcow2"    # the refcount block is a data cluster too
    wr64 "$d/rb-is-data.qcow2" "$RCT" $(($(rd64 "$B" $((L2 + 24))) & 0x00fffffffffffe00))
    cp "$B" "$d/data-unaligned.qcow2" # a data offset that is not cluster-aligned (not repairable)
    wr64 "$d/data-unaligned.qcow2" $((L2 + 56)) $(($(rd64 "$B" $((L2 + 56))) + 4096))
    qemu-img create -q -f qcow2 -o cluster_size=4096 "$d/c0.qcow2" 1M
    qemu-io -c 'write -P 0x11 0 64k' "$d/c0.qcow2" >/dev/null
    qemu-img convert -c -O qcow2 -o cluster_size=4096 "$d/c0.qcow2" "$d/compressed-copied.qcow2"
    local G1 G2
    G1=$(rd64 "$d/compressed-copied.qcow2" 40)
    G2=$(($(rd64 "$d/compressed-copied.qcow2" "$G1") & 0x00fffffffffffe00))
    wr64 "$d/compressed-copied.qcow2" "$G2" $(($(rd64 "$d/compressed-copied.qcow2" "$G2") | 0x8000000000000000))
    for bin in $BINS; do
        for c in one-cluster copied-l2 copied-l1 rb-unaligned rb-past-eof rb-is-data data-unaligned compressed-copied; do
            local img=$d/$c.qcow2 q k
            q=$(qcheck "$img")
            img "$bin" check "$img" || continue
            k="$rc $(grep -o '^[0-9]* errors were found' <<<"$out" | cut -d' ' -f1) $(grep -o '^[0-9]* leaked clusters' <<<"$out" | cut -d' ' -f1)"
            # A broken refcount block: qemu-img reads refcounts through it anyway (garbage,
            # hence its counts) or cannot (unaligned: status 1, "check failed"); kvmbox reports
            # the block. Both must say the image is corrupt.
            if [ "$q" = "$k" ] || { [ "${c#rb-}" != "$c" ] && [ "${k%% *}" = 2 ] && [ "${q%% *}" != 0 ]; }; then
                ok "check ($bin): $c: found as qemu-img finds it (status, errors, leaks: $k)"
            else
                bad "check ($bin): $c: kvmbox '$k', qemu-img '$q'"
            fi
            # Repaired: what qemu-img's own repair leaves, kvmbox's leaves (clean, but for the
            # unaligned data offset neither repairs).
            cp "$img" "$d/k.qcow2"
            cp "$img" "$d/q.qcow2"
            qemu-img check -q -r all "$d/q.qcow2" >/dev/null 2>&1
            img "$bin" check -r all "$d/k.qcow2" || continue
            local after want
            after=$(qcheck "$d/k.qcow2") want=$(qcheck "$d/q.qcow2")
            # (qemu-img 7.2 repairs neither an unaligned data offset nor, it turns out, COPIED
            # on a compressed entry, nor an unaligned refcount block; kvmbox repairs the last two.)
            case $c in data-unaligned | rb-unaligned | compressed-copied) ;; *)
                [ "$want" = "0  " ] || bad "check: qemu-img did not repair $c ($want)" ;; esac
            if [ "$after" = "0  " ] || { [ $c = data-unaligned ] && [ "$after" = "$want" ]; }; then
                ok "check ($bin): $c: -r all leaves what qemu-img check calls '${after// /,}' (status $rc)"
            else
                bad "check ($bin): $c: after -r all qemu-img check says '$after' (its own repair: '$want'); kvmbox: $(head -5 <<<"$out" | tr '\n' ' ')"
            fi
            case $c in
            one-cluster)
                # Every guest cluster now shares data cluster 0: a write to one must copy it.
                "${BUILD}/tests/blkio" "$d/k.qcow2" write $((5 * 65536)) 65536 7 >/dev/null 2>&1
                qemu-img convert -O raw "$d/k.qcow2" "$d/k.raw"
                cmp -s -n 65536 "$d/k.raw" "$d/data.raw" && cmp -s -n 65536 "$d/k.raw" "$d/data.raw" $((6 * 65536)) 0 &&
                    ! cmp -s -n 65536 "$d/k.raw" "$d/data.raw" $((5 * 65536)) 0 && [ "$(qcheck "$d/k.qcow2")" = "0  " ] &&
                    ok "check ($bin): after the repair a write to one guest cluster changes that one only" ||
                    bad "check ($bin): a write after repairing one-cluster changed others, or left it unclean" ;;
            compressed-copied)
                qemu-img compare -q "$d/k.qcow2" "$d/c0.qcow2" && ok "check ($bin): $c: data intact" || bad "check ($bin): $c: data changed" ;;
            data-unaligned | one-cluster) ;;
            *)
                qemu-img compare -q "$d/k.qcow2" "$d/data.raw" 2>/dev/null && ok "check ($bin): $c: data intact" || bad "check ($bin): $c: data changed" ;;
            esac
        done
        # A persistent dirty bitmap kvmbox does not keep: writing clears the auto-clear bit
        # (QEMU then knows the bitmap is stale instead of trusting it to list our writes).
        qemu-img create -q -f qcow2 "$d/bm.qcow2" 4M
        qemu-img bitmap --add "$d/bm.qcow2" b0
        "${bin%/kvmbox}/tests/blkio" "$d/bm.qcow2" write 0 4096 1 >/dev/null 2>&1
        qemu-img info "$d/bm.qcow2" 2>&1 | grep -q "bitmaps are now considered inconsistent" &&
            ok "check ($bin): a write to an image with a dirty bitmap marks the bitmap stale for QEMU" ||
            bad "check ($bin): a dirty bitmap survived a kvmbox write as if it were current"
    done
}

# ---- overlap ------------------------------------------------------------------------------
# qerrors IMG: qemu-img check's "ERRORS LEAKS".
qerrors() { local q; q=$(qcheck "$1"); echo "${q#* }"; }
corrupt_bit() { qemu-img info "$1" | grep -q "corrupt: true"; }
sec_overlap() {
    local d=$T/overlap
    mkdir -p "$d"
    head -c 4M /dev/urandom >"$d/data.raw"
    qemu-img convert -O qcow2 "$d/data.raw" "$d/base.qcow2"
    local B=$d/base.qcow2 L1 L2 RCT RB
    L1=$(rd64 "$B" 40) L2=$(($(rd64 "$B" "$L1") & 0x00fffffffffffe00)) RCT=$(rd64 "$B" 48) RB=$(rd64 "$B" "$RCT")
    # name | how | the write (offset length) that must be refused
    cp "$B" "$d/data-is-l2.qcow2"       # guest cluster 0's data cluster is the L2 table
    wr64 "$d/data-is-l2.qcow2" "$L2" $((0x8000000000000000 | L2))
    cp "$B" "$d/data-is-refblock.qcow2" # guest cluster 3's data cluster is the refcount block
    wr64 "$d/data-is-refblock.qcow2" $((L2 + 24)) $((0x8000000000000000 | RB))
    cp "$B" "$d/data-is-rct.qcow2"      # guest cluster 5's data cluster is the refcount table
    wr64 "$d/data-is-rct.qcow2" $((L2 + 40)) $((0x8000000000000000 | RCT))
    cp "$B" "$d/l2-is-refblock.qcow2"   # the L2 table is the refcount block: a new mapping would be written into it
    wr64 "$d/l2-is-refblock.qcow2" "$L1" $((0x8000000000000000 | RB))
    cp "$B" "$d/refblock-is-l2.qcow2"   # the refcount block is the L2 table: a new refcount would be written into it
    wr64 "$d/refblock-is-l2.qcow2" "$RCT" "$L2"
    wr64 "$d/refblock-is-l2.qcow2" $((L2 + 80)) 0 # (guest cluster 10 unallocated: writing it allocates)
    qemu-img create -q -f qcow2 "$d/big.qcow2" 64M
    for bin in $BINS; do
        local blkio=${bin%/kvmbox}/tests/blkio
        for c in "data-is-l2 0 65536" "data-is-refblock $((3 * 65536 + 512)) 4096" "data-is-rct $((5 * 65536)) 512" \
                 "l2-is-refblock $((20 * 65536)) 65536" "refblock-is-l2 $((10 * 65536)) 4096"; do
            set -- $c
            local img=$d/w.qcow2 before after
            cp "$d/$1.qcow2" "$img"
            before=$(qerrors "$img")
            out=$("$blkio" "$img" write "$2" "$3" 9 2>&1)
            local st=$?
            after=$(qerrors "$img")
            if [ $st != 0 ] && grep -q "preventing" <<<"$out" && [ "$after" = "$before" ] && corrupt_bit "$img"; then
                ok "overlap ($bin): $1: the write is refused ($out), the damage did not grow (qemu-img: $after), the image is marked corrupt"
            else
                bad "overlap ($bin): $1: status $st '$out', qemu-img before '$before' after '$after', corrupt bit $(corrupt_bit "$img" && echo set || echo clear)"
                continue
            fi
            out=$("$blkio" "$img" write 0 512 9 2>&1)
            [ $? != 0 ] && grep -q "marked corrupt" <<<"$out" && ok "overlap ($bin): $1: nothing writes to it afterwards ($out)" ||
                bad "overlap ($bin): $1: a second writer: $out"
            # Repaired as far as qemu-img repairs it (an L1 entry pointing at a refcount block
            # leaves L2 entries past the end, which neither repairs); the mark goes when clean.
            cp "$d/$1.qcow2" "$d/q.qcow2"
            qemu-img check -q -r all "$d/q.qcow2" >/dev/null 2>&1
            img "$bin" check -r all "$img"
            after=$(qcheck "$img")
            if [ "$after" = "$(qcheck "$d/q.qcow2")" ] && { [ "$after" != "0  " ] || ! corrupt_bit "$img"; }; then
                ok "overlap ($bin): $1: check -r all repairs it as far as qemu-img does ('${after// /,}')$([ "$after" = "0  " ] && echo ' and lifts the mark')"
            else
                bad "overlap ($bin): $1: after check -r all: '$after' (qemu-img's repair: '$(qcheck "$d/q.qcow2")'), $(qemu-img info "$img" | grep corrupt)"
            fi
        done
        # Ordinary writes are not refused: a clean image stays clean.
        out=$("$blkio" "$d/big.qcow2" workload 2 1000 "$d/wl.log" 2>&1)
        [ $? = 0 ] && qemu-img check -q "$d/big.qcow2" && ! corrupt_bit "$d/big.qcow2" &&
            ok "overlap ($bin): a random write workload on a sound image goes through" || bad "overlap ($bin): workload: $out"
    done

    if ! have_kvm || [ ! -f "$GT/blk-fault.elf" ]; then
        echo "SKIP: img safety: overlap through a guest needs /dev/kvm and $GT/blk-fault.elf"
        return
    fi
    # Through a guest: the write fails with IOERR, the VM's log says why, `kvmbox info` shows
    # the disk corrupt, qemu-img finds no more damage than before and the corrupt bit.
    for c in "data-is-l2 0" "data-is-refblock 384"; do
        set -- $c
        local img=$d/g-$1.qcow2 name=ov-$1 before
        cp "$d/$1.qcow2" "$img"
        before=$(qerrors "$img")
        if ! "$KVMBOX" run --daemonize --name "$name" --kernel "$GT/blk-fault.elf" --mem 64M \
            --cmdline "write=$2 expect=ioerr hold=600" --disk "$img,format=qcow2" >/dev/null; then
            bad "overlap: $1: the VM did not start"
            continue
        fi
        VMS+=("$name")
        local log=$T/run/$name.log
        for _ in $(seq 600); do grep -q "HOLDING" "$log" 2>/dev/null && break; sleep 0.2; done
        local info
        info=$("$KVMBOX" info "$name" --json 2>&1)
        grep -q "PASS: the write at sector $2 fails with IOERR" "$log" && grep -q "AFTER read status=ioerr" "$log" &&
            ok "overlap: $1: the guest's write fails with IOERR, and so does its next read" ||
            bad "overlap: $1: guest: $(grep -E 'WRITE|AFTER|FAIL' "$log" | tr '\n' ' ')"
        grep -q "^kvmbox: disk $img: .*is corrupt: preventing a data write" "$log" &&
            ok "overlap: $1: the VM's log says so ($(grep -m1 'is corrupt' "$log" | cut -c1-160)...)" ||
            bad "overlap: $1: nothing in the VM's log: $(grep kvmbox: "$log" | head -3)"
        python3 -c 'import json,sys; d=json.loads(sys.argv[1])["disks"][0]; assert d["state"]=="corrupt" and d["io_errors"]>=1, d' "$info" &&
            ok "overlap: $1: kvmbox info shows the disk corrupt with its I/O errors" || bad "overlap: $1: info: $info"
        "$KVMBOX" kill "$name" >/dev/null 2>&1
        [ "$(qerrors "$img")" = "$before" ] && corrupt_bit "$img" &&
            ok "overlap: $1: qemu-img check finds no more damage than before ($before) and the corrupt bit set" ||
            bad "overlap: $1: after the guest: qemu-img '$(qerrors "$img")' (before '$before'), $(qemu-img info "$img" | grep corrupt)"
    done

    # A full host file system: the guest gets an I/O error and the host hears of it. A small
    # tmpfs in a private mount namespace (needs root and unshare).
    local m=$d/mnt
    mkdir -p "$m"
    if ! unshare -m true 2>/dev/null; then
        echo "SKIP: img safety: overlap: ENOSPC needs a private mount namespace (unshare -m)"
        return
    fi
    for fmt in qcow2 raw; do
        out=$(unshare -m sh -c 'mount -t tmpfs -o size=8M kvmbox-enospc "$1" || exit 99
            if [ "$2" = qcow2 ]; then qemu-img create -q -f qcow2 "$1/img" 64M; else truncate -s 64M "$1/img"; fi
            "$3" run --kernel "$4" --mem 64M --timeout 600 --cmdline "write=0 fill=1 expect=ioerr" --disk "$1/img,format=$2"
            echo "STATUS $?"
            if [ "$2" = qcow2 ]; then qemu-img check "$1/img" >/dev/null 2>&1; echo "QCHECK $?"; else echo "QCHECK 0"; fi' sh "$m" "$fmt" "$KVMBOX" "$GT/blk-fault.elf" 2>&1)
        if grep -q "STATUS 99" <<<"$out" || [ -z "$out" ]; then
            echo "SKIP: img safety: overlap: cannot mount a tmpfs here"
            return
        fi
        grep -q "STATUS 1" <<<"$out" && grep -q "PASS: filling the disk: ioerr" <<<"$out" &&
            grep -q "kvmbox: disk .*: write of .* failed: No space left on device" <<<"$out" && grep -qE "QCHECK (0|3)" <<<"$out" &&
            ok "overlap: ENOSPC on $fmt: the guest gets an I/O error, the host log says 'No space left on device', no corruption" ||
            bad "overlap: ENOSPC on $fmt: $(grep -E 'STATUS|QCHECK|kvmbox:|FAIL' <<<"$out" | tr '\n' ' ')"
    done
}

# ---- snapshot -----------------------------------------------------------------------------
sec_snapshot() {
    local d=$T/snapshot
    mkdir -p "$d"
    head -c 4M /dev/urandom >"$d/data.raw"
    qemu-img convert -O qcow2 "$d/data.raw" "$d/snap.qcow2"
    qemu-img snapshot -c s1 "$d/snap.qcow2"
    qemu-io -c 'write -P 0x77 0 1M' "$d/snap.qcow2" >/dev/null
    local S=$d/snap.qcow2 SNT RCT L1 RB SL1 SL2
    SNT=$(rd64 "$S" 64) RCT=$(rd64 "$S" 48) L1=$(rd64 "$S" 40) RB=$(rd64 "$S" "$RCT") SL1=$(rd64 "$S" "$SNT")
    SL2=$(($(rd64 "$S" "$SL1") & 0x00fffffffffffe00))
    # name | field offset | value
    local cases=(
        "l1-is-the-refcount-table|$SNT|$(printf '%016x' "$RCT")"
        "l1-is-the-active-l1|$SNT|$(printf '%016x' "$L1")"
        "l1-is-the-header|$SNT|0000000000000000"
        "l1-is-a-refcount-block|$SNT|$(printf '%016x' "$RB")"
        "l1-misaligned|$SNT|$(printf '%016x' $((SL1 + 512)))"
        "l1-past-eof|$SNT|00007f0000000000"
        "l1-too-small-for-the-size|$((SNT + 8))|00000000"
        "l1-entry-is-the-refcount-table|$SL1|$(printf '%016x' "$RCT")"
        "l1-entry-is-a-refcount-block|$SL1|$(printf '%016x' "$RB")"
        "l1-entry-is-the-active-l1|$SL1|$(printf '%016x' "$L1")"
        "l1-entry-misaligned|$SL1|$(printf '%016x' $((SL2 + 512)))"
        "size-absurd|$((SNT + 48))|1000000000000000"
    )
    for bin in $BINS; do
        for c in "${cases[@]}"; do
            IFS='|' read -r name off hex <<<"$c"
            local img=$d/h.qcow2 s0 q
            cp "$S" "$img"
            wr "$img" "$off" "$hex"
            cp "$img" "$d/q.qcow2"
            q=$(qemu-img snapshot -a s1 "$d/q.qcow2" 2>&1 >/dev/null) && q="qemu-img applies it" || q="qemu-img refuses it too"
            s0=$(sha "$img")
            img "$bin" snapshot -a s1 "$img" || continue
            refused && [ "$(sha "$img")" = "$s0" ] && ok "snapshot ($bin): $name: apply refused, nothing changed ($err; $q)" ||
                bad "snapshot ($bin): $name: apply: status $rc '$err', image $([ "$(sha "$img")" = "$s0" ] && echo unchanged || echo CHANGED)"
            img "$bin" snapshot -d s1 "$img" || continue
            refused && [ "$(sha "$img")" = "$s0" ] && ok "snapshot ($bin): $name: delete refused too, nothing changed" ||
                bad "snapshot ($bin): $name: delete: status $rc '$err', image $([ "$(sha "$img")" = "$s0" ] && echo unchanged || echo CHANGED)"
        done
        # A sound snapshot still applies, and the image reads as it did when it was taken.
        cp "$S" "$d/good.qcow2"
        img "$bin" snapshot -a s1 "$d/good.qcow2"
        [ $rc = 0 ] && qemu-img compare -q "$d/good.qcow2" "$d/data.raw" && qemu-img check -q "$d/good.qcow2" &&
            ok "snapshot ($bin): a sound snapshot applies and reads as it was taken" || bad "snapshot ($bin): sound apply: $rc $err"
    done
}

for s in $SECTIONS; do
    "sec_$s"
done
[ $fails -eq 0 ]
