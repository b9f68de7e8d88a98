#!/bin/bash
# One configuration model (issue 12), end to end. For every setting of the table (read from
# `kvmbox settings --json`, so a new row is walked too) and each of its aliases:
#   kvmbox run --daemonize --OPTION VALUE  ->  dumpconfig  ->  define  ->  start (from another
#   directory)  ->  info --json
# and the check, field by field over the whole table: the definition holds the setting's
# canonical value; the first and the restarted VM's info "config" both equal the definition
# for every key it has and show the default for every key it has not; the restarted VM's
# definition is the first one. A row without a sample here fails. Then the refusals: a
# definition with a relative path, an unknown key, a bad value, a wrong JSON type or a
# missing file is refused by define with one line naming it and status 2 (and --force
# defines the missing file anyway); and the replay bug the issue found (--no-reboot after
# --disk stored as a disk).
set -u
cd "$(dirname "$0")/.." || exit 1
KVMBOX=${KVMBOX:-build/kvmbox}
BUILD=${BUILD:-build}
GT=$BUILD/guest-tests
if [ ! -c /dev/kvm ]; then
    echo "SKIP: config: no /dev/kvm on this host"
    exit 77
fi
[ -f "$GT/ctl.elf" ] || { echo "FAIL: config: guest kernels are not built"; exit 1; }
command -v python3 >/dev/null || { echo "SKIP: config: no python3"; exit 77; }
KVMBOX=$(realpath "$KVMBOX")
K=$(realpath "$GT/ctl.elf")
T=$(mktemp -d /tmp/kvmbox-config.XXXXXX)
export KVMBOX_RUNTIME_DIR=$T/run KVMBOX_CONFIG_DIR=$T/defs
NS=
cleanup() {
    for s in "$T"/run/*.sock; do [ -e "$s" ] && "$KVMBOX" kill "$(basename "$s" .sock)" >/dev/null 2>&1; done
    [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fails=0
ok() { echo "PASS: config: $*"; }
bad() { echo "FAIL: config: $*"; fails=$((fails + 1)); }

# A network namespace of our own with a tap and a bridge, so the tap and bridge NICs round
# trip too; every VM of this test runs in it (their sockets are files: the verbs reach them).
NETNS=()
if [ "$(id -u)" = 0 ] && [ -c /dev/net/tun ] && command -v ip >/dev/null &&
    ip netns add "kvmbox-cfg-$$" 2>/dev/null; then
    NS=kvmbox-cfg-$$
    ip -n "$NS" link set lo up
    ip -n "$NS" link add kbr0 type bridge && ip -n "$NS" link set kbr0 up &&
        ip -n "$NS" tuntap add ktap0 mode tap && ip -n "$NS" link set ktap0 up || NS_BROKEN=1
    NETNS=(ip netns exec "$NS")
fi

# Files the samples name. Relative paths are given from $T, and start runs from /.
cp "$K" "$T/k.elf"
printf 'an initrd' >"$T/i.img"
truncate -s 8M "$T/d,1.img"
truncate -s 4M "$T/base.raw"
"$KVMBOX" img create -f qcow2 -b "$T/base.raw" -F raw "$T/ov.qcow2" >/dev/null 2>&1 ||
    qemu-img create -q -f qcow2 -b "$T/base.raw" -F raw "$T/ov.qcow2" >/dev/null 2>&1
cp /usr/share/seabios/bios-256k.bin "$T/fw.bin" 2>/dev/null
# A boot sector that halts (cli; hlt; jmp $-2): the firmware boots it and the VM stays up.
python3 -c 'import sys; b=bytearray(512); b[0:4]=b"\xfa\xf4\xeb\xfd"; b[510:512]=b"\x55\xaa"; sys.stdout.buffer.write(b)' >"$T/boot.img"
truncate -s 1M "$T/boot.img"
HAVE_ISO=
if command -v xorriso >/dev/null; then
    mkdir "$T/isodir" && echo hello >"$T/isodir/hello.txt"
    xorriso -as mkisofs -quiet -o "$T/x.iso" "$T/isodir" 2>/dev/null && HAVE_ISO=1
fi
UUID=12345678-9ABC-def0-1234-56789abcdef0
BASE=(--kernel "$K" --mem 64M)
FWBASE=(--disk "$T/boot.img,format=raw" --mem 64M)

# SAMPLES: "KEY|VALUE|CANONICAL|BASE|NEEDS": VALUE as typed (from $T), CANONICAL as stored
# ("-" for a flag), BASE the rest of the command line (kernel or firmware), NEEDS what the
# host must have (netns, iso, fw, or -). A key may have several samples.
SAMPLES=(
    "kernel|k.elf|$T/k.elf|-mem|-"
    "initrd|i.img|$T/i.img|kernel|-"
    "cmdline|console=ttyS0 a,b=c|console=ttyS0 a,b=c|kernel|-"
    "mem|96M,overcommit=on|96M,overcommit=on|kernel|-"
    "mem|64M,hugepages=on|64M,hugepages=on|kernel|-"
    "cpus|2|2|kernel|-"
    "firmware|fw.bin|$T/fw.bin|fw|fw"
    "firmware|bios|bios|fw|-"
    "disk|d,,1.img,format=raw,readonly=on,cache=none,serial=S1,workers=2,bootindex=3|$T/d,,1.img,format=raw,readonly=on,cache=none,serial=S1,workers=2,bootindex=3|kernel|-"
    "disk|ov.qcow2,format=qcow2,untrusted=on,backing=base.raw,backing_format=raw|$T/ov.qcow2,format=qcow2,untrusted=on,backing=$T/base.raw,backing_format=raw|kernel|-"
    "cdrom|x.iso,bootindex=2|$T/x.iso,bootindex=2|kernel|iso"
    "boot|d,c|cdrom,disk|fw|-"
    "boot|once=cdrom|once=cdrom|fw|-"
    "boot|menu=on|menu=on|fw|-"
    "net|user,hostfwd=tcp:127.0.0.1:0-:22,mac=52:54:00:12:34:56|user,hostfwd=tcp:127.0.0.1:0-:22,mac=52:54:00:12:34:56|kernel|-"
    "net|segment=cfg$$|segment=cfg$$|kernel|-"
    "net|tap,ifname=ktap0|tap,ifname=ktap0|kernel|netns"
    "net|bridge=kbr0|bridge=kbr0|kernel|netns"
    "balloon|off|off|kernel|-"
    "sandbox|off|off|kernel|-"
    "no-reboot||-|kernel|-"
    "timeout|3600|3600|kernel|-"
    "name|cfg-named|cfg-named|kernel|-"
    "uuid|$UUID|${UUID,,}|kernel|-"
    "api-sock|x.sock|$T/x.sock|kernel|-"
    "daemonize||-|kernel|-"
)

TABLE=$("$KVMBOX" settings --json) || { bad "kvmbox settings --json failed"; exit 1; }
mapfile -t ROWS < <(python3 -c '
import json,sys
for r in json.loads(sys.argv[1]):
    print(r["key"], " ".join(r["aliases"]), sep="|")' "$TABLE")
[ "${#ROWS[@]}" -gt 10 ] || { bad "the settings table has ${#ROWS[@]} rows"; exit 1; }

# check_round_trip KEY CANONICAL DEF1 INFO1 DEF2 INFO2: the comparison, field by field.
check_round_trip() {
    python3 - "$TABLE" "$@" <<'EOF'
import json, sys
table = json.loads(sys.argv[1])
key, canon = sys.argv[2], sys.argv[3]
def1, info1, def2, info2 = (json.loads(a) for a in sys.argv[4:8])
row = next(r for r in table if r["key"] == key)
errors = []
if not row["stored"]:
    if key in def1:
        errors.append("%s is stored in the definition" % key)
elif row["kind"] == "flag":
    if def1.get(key) is not True:
        errors.append("definition has %s=%r, want true" % (key, def1.get(key)))
elif row["kind"] == "list":
    if canon not in def1.get(key, []):
        errors.append("definition has %s=%r, want it to hold %r" % (key, def1.get(key), canon))
else:
    want = int(canon) if row["kind"] == "number" else canon
    if def1.get(key) != want:
        errors.append("definition has %s=%r, want %r" % (key, def1.get(key), want))
for r in table:
    k = r["key"]
    if not r["stored"]:
        continue
    for which, info in (("first", info1), ("restarted", info2)):
        got = info["config"].get(k, "<missing>")
        if k in def1:
            if got != def1[k]:
                errors.append("%s VM's info: %s=%r, definition %r" % (which, k, got, def1[k]))
        elif not r["computed"]:
            want = r["default"] if r["kind"] not in ("list", "flag") else ([] if r["kind"] == "list" else False)
            if got != want:
                errors.append("%s VM's info: %s=%r, the default is %r" % (which, k, got, want))
if def2 != def1:
    errors.append("the restarted VM's definition differs: %s vs %s" % (json.dumps(def2), json.dumps(def1)))
if errors:
    print("; ".join(errors))
    sys.exit(1)
EOF
}

# kill_vm NAME INFO_JSON: kill it and wait until its process is gone (`kill` returns once
# the control socket is, and the process may still hold a tap or a disk lock for a moment).
kill_vm() {
    local pid i
    pid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$2" 2>/dev/null)
    "$KVMBOX" kill "$1" >/dev/null 2>&1
    for ((i = 0; i < 600; i++)); do
        [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
        sleep 0.1
    done
}

# One sample through one option name: run, dumpconfig, define, start, info.
n=0
walk() { # walk KEY OPT VALUE CANON BASE
    local key=$1 opt=$2 val=$3 canon=$4 base=$5 name def1 info1 def2 info2 out rc
    n=$((n + 1))
    name=cfg-$n
    local args=(run --daemonize --name "$name")
    case $base in
        kernel) args+=("${BASE[@]}") ;;
        -mem) args+=(--mem 64M) ;;
        fw) args+=("${FWBASE[@]}") ;;
    esac
    [ "$key" = name ] && { name=$val; args[3]=$val; }
    if [ -n "$val" ]; then args+=("--$opt" "$val"); else args+=("--$opt"); fi
    local what="--$opt${val:+ $val}"
    out=$(cd "$T" && "${NETNS[@]}" "$KVMBOX" "${args[@]}" 2>&1) || { bad "$what: run failed: $out"; return; }
    def1=$("$KVMBOX" dumpconfig "$name") && info1=$("$KVMBOX" info "$name" --json) ||
        { bad "$what: dumpconfig or info failed"; "$KVMBOX" kill "$name" >/dev/null 2>&1; return; }
    kill_vm "$name" "$info1"
    printf '%s\n' "$def1" >"$T/$name.json"
    out=$(cd / && "$KVMBOX" define "$T/$name.json" 2>&1) || { bad "$what: define of its dumpconfig failed: $out"; return; }
    out=$(cd / && "${NETNS[@]}" "$KVMBOX" start "$name" 2>&1) || { bad "$what: start failed: $out"; "$KVMBOX" undefine "$name" >/dev/null; return; }
    def2=$("$KVMBOX" dumpconfig "$name") && info2=$("$KVMBOX" info "$name" --json) || { bad "$what: after start: dumpconfig or info failed"; }
    kill_vm "$name" "$info2"
    "$KVMBOX" undefine "$name" >/dev/null
    out=$(check_round_trip "$key" "$canon" "$def1" "$info1" "$def2" "$info2") &&
        ok "$what: run, dumpconfig, define, start and info agree" || bad "$what: $out"
}

for row in "${ROWS[@]}"; do
    key=${row%%|*}
    aliases=${row#*|}
    found=
    for s in "${SAMPLES[@]}"; do
        IFS='|' read -r skey sval scanon sbase sneeds <<<"$s"
        [ "$skey" = "$key" ] || continue
        found=1
        case $sneeds in
            netns) [ -n "$NS" ] && [ -z "${NS_BROKEN:-}" ] || { echo "SKIP: config: --$key $sval: needs root, /dev/net/tun and ip netns"; continue; } ;;
            iso) [ -n "$HAVE_ISO" ] || { echo "SKIP: config: --$key $sval: no xorriso to make an ISO"; continue; } ;;
            fw) [ -f "$T/fw.bin" ] || { echo "SKIP: config: --$key $sval: no SeaBIOS image"; continue; } ;;
        esac
        for opt in "$key" $aliases; do
            walk "$key" "$opt" "$sval" "$scanon" "$sbase"
        done
    done
    [ -n "$found" ] || bad "setting '$key' has no sample in tests/t-config.sh: add one so it is round-tripped"
done

# --- definitions that are refused: one line naming the problem, status 2 ----------------
refused() { # refused DESCRIPTION JSON SAYS
    printf '%s\n' "$2" >"$T/bad.json"
    local out rc
    out=$("$KVMBOX" define "$T/bad.json" 2>&1); rc=$?
    if [ "$rc" = 2 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -qF -- "$3" <<<"$out" && [ ! -e "$T/defs/bad.json" ]; then
        ok "define refuses $1 ($out)"
    else
        bad "define of $1: status $rc, said: $out (want status 2, one line with: $3)"
    fi
    rm -f "$T/defs/bad.json"
}
refused "a relative kernel" "{\"name\": \"bad\", \"kernel\": \"k.elf\"}" '"kernel": relative path'
refused "a relative disk" "{\"name\": \"bad\", \"kernel\": \"$K\", \"disk\": [\"d.img\"]}" '"disk": relative path'
refused "an unknown key" "{\"name\": \"bad\", \"kernel\": \"$K\", \"memz\": \"1G\"}" 'unknown key "memz"'
refused "an option alias as a key" "{\"name\": \"bad\", \"kernel\": \"$K\", \"smp\": 2}" 'unknown key "smp"'
refused "daemonize (not a machine setting)" "{\"name\": \"bad\", \"kernel\": \"$K\", \"daemonize\": true}" '"daemonize" is not part'
refused "a bad value" "{\"name\": \"bad\", \"kernel\": \"$K\", \"mem\": \"lots\"}" '"mem": invalid value'
refused "a bad disk option" "{\"name\": \"bad\", \"kernel\": \"$K\", \"disk\": [\"$T/d,,1.img,cache=some\"]}" 'cache must be'
refused "a wrong JSON type" "{\"name\": \"bad\", \"kernel\": \"$K\", \"cpus\": [2]}" '"cpus": expected a number'
refused "a missing kernel" "{\"name\": \"bad\", \"kernel\": \"$T/nothing.elf\"}" '"kernel": '"$T"'/nothing.elf: No such file'
refused "a missing disk" "{\"name\": \"bad\", \"kernel\": \"$K\", \"disk\": [\"$T/nothing.img\"]}" '"disk": '"$T"'/nothing.img: No such file'
refused "a missing initrd" "{\"name\": \"bad\", \"kernel\": \"$K\", \"initrd\": \"$T/nothing\"}" '"initrd": '
refused "a missing CD-ROM" "{\"name\": \"bad\", \"kernel\": \"$K\", \"cdrom\": [\"$T/nothing.iso\"]}" '"cdrom": '
refused "a missing backing file" "{\"name\": \"bad\", \"kernel\": \"$K\", \"disk\": [\"$T/ov.qcow2,untrusted=on,backing=$T/gone.raw\"]}" 'gone.raw: No such file'
refused "no name" "{\"kernel\": \"$K\"}" 'needs a "name"'
refused "nothing to boot" "{\"name\": \"bad\"}" 'nothing for firmware to boot'
printf '{"name": "forced", "kernel": "%s"}\n' "$T/later.elf" >"$T/forced.json"
out=$("$KVMBOX" define "$T/forced.json" --force 2>&1); rc=$?
[ $rc = 0 ] && ok "define --force stores a definition whose kernel is not there yet" || bad "define --force: status $rc: $out"
out=$("$KVMBOX" start forced 2>&1); rc=$?
[ $rc = 2 ] && grep -q later.elf <<<"$out" && ok "and start says the kernel is missing, status 2 ($out)" ||
    bad "start of a definition with a missing kernel: status $rc: $out"
cp "$K" "$T/later.elf"
out=$("$KVMBOX" start forced 2>&1); rc=$?
[ $rc = 0 ] && ok "once the kernel is there it starts" || bad "start once the kernel is there: status $rc: $out"
"$KVMBOX" kill forced >/dev/null 2>&1

out=$("$KVMBOX" run --kernel "$K" --memz 1G 2>&1); rc=$?
[ $rc = 2 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q -- "--memz" <<<"$out" &&
    ok "run refuses an unknown option with one line naming it, status 2 ($out)" ||
    bad "run --memz: status $rc: $out"

# --- the issue's examples ---------------------------------------------------------------
out=$(cd "$T" && "${NETNS[@]}" "$KVMBOX" run --name ex1 --daemonize --kernel k.elf --smp 2 --memory 64M \
    --drive "d,,1.img,format=raw" --nic segment=ex 2>&1) || bad "the issue's first example does not run: $out"
d=$("$KVMBOX" dumpconfig ex1)
python3 -c '
import json,sys; d=json.loads(sys.argv[1]); T=sys.argv[2]
assert d["kernel"]==T+"/k.elf" and d["cpus"]==2 and d["mem"]=="64M" and d["disk"]==[T+"/d,,1.img,format=raw"] and d["net"]==["segment=ex"], d' "$d" "$T" &&
    ok "run --smp --memory --drive --nic keeps every setting in its definition" ||
    bad "run with aliases lost settings: $d"
"$KVMBOX" kill ex1 >/dev/null
out=$(cd "$T" && "$KVMBOX" run --name ex2 --daemonize --kernel k.elf --mem 64M --net segment=ex --disk "d,,1.img,format=raw" --no-reboot 2>&1) ||
    bad "the issue's second example does not run: $out"
d=$("$KVMBOX" dumpconfig ex2)
python3 -c '
import json,sys; d=json.loads(sys.argv[1]); T=sys.argv[2]
assert d["disk"]==[T+"/d,,1.img,format=raw"] and d["no-reboot"] is True, d' "$d" "$T" &&
    ok "--no-reboot after --disk is a flag in the definition, not a disk" || bad "--no-reboot after --disk: $d"
"$KVMBOX" kill ex2 >/dev/null
# clone keeps every setting but the machine's own: name, UUID, disks, MACs, socket.
printf '%s\n' "$d" >"$T/ex2.json"
"$KVMBOX" define "$T/ex2.json" >/dev/null && "$KVMBOX" clone ex2 ex3 >/dev/null
c=$("$KVMBOX" dumpconfig ex3)
python3 -c '
import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2])
same=[k for k in a if k not in ("name","uuid","disk","net")]
assert all(a[k]==b.get(k) for k in same) and b["name"]=="ex3" and b["uuid"]!=a["uuid"], (a,b)
assert b["disk"][0].startswith(sys.argv[3]+"/ex3-disk0") and "mac=" in b["net"][0], b' "$d" "$c" "$T" &&
    ok "clone keeps every setting but name, UUID, disks and MACs" || bad "clone: $d -> $c"

[ $fails = 0 ] && echo "config: all passed" || echo "config: $fails failed"
[ $fails = 0 ]
