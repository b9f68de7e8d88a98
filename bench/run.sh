#!/bin/bash
# make bench: start-up time, memory and PIO exit cost of kvmbox against QEMU (microvm and
# q35, -accel kvm) on the same tiny bare-metal guest, in one run, with ratios:
#   1. start to marker, start to exit and peak RSS (kvmbox with the sandbox on and off)
#   2. kvmbox's start-up and teardown step by step (its KVMBOX_TRACE timestamps), each step
#      marked as the host's (kernel, KVM), the guest's or kvmbox's own, next to what the same
#      KVM calls cost alone (bench/kvmcost.c) and what a no-op process costs
#   3. memory of a running VM: RSS less the guest RAM it touched, without and with --net user
#   4. growth: start to marker and own memory for 1-64 vCPUs and 64 MiB-64 GiB, both VMMs
#   5. the PIO exit round trip
# Not a test: numbers vary with the host and its load (printed). Results are recorded in
# docs/benchmarks.md. Environment: RUNS (default 30), GROWTH_RUNS (default 20), PIO_N,
# SKIP_GROWTH=1, SKIP_Q35=1, ONLY_GROWTH=1 (section 4 alone).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
KVMBOX=${KVMBOX:-$BUILD/kvmbox}
RUNS=${RUNS:-30}
GROWTH_RUNS=${GROWTH_RUNS:-20}
PIO_N=${PIO_N:-100000}
MARKER=KVMBOX-MARKER
GT=$BUILD/guest-tests
T=$(mktemp -d /tmp/kvmbox-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
gcc -O2 -o "$T/startmark" bench/startmark.c -lm || exit 1
gcc -O2 -o "$T/kvmcost" bench/kvmcost.c || exit 1
printf '#include <unistd.h>\nint main(void) { return write(1, "%s\\n", %d) < 0; }\n' "$MARKER" \
    $((${#MARKER} + 1)) >"$T/noop.c"
gcc -O2 -o "$T/noop-dynamic" "$T/noop.c" || exit 1
gcc -O2 -static -o "$T/noop-static" "$T/noop.c" 2>/dev/null || rm -f "$T/noop-static"
QEMU=$(command -v qemu-system-x86_64 || true)
QCPU="-cpu host,-arch-capabilities"
QBASE="-accel kvm $QCPU -nodefaults -no-user-config -nographic -serial stdio -monitor none"
QEXIT="-device isa-debug-exit,iobase=0xf4,iosize=4"

echo "kvmbox $($KVMBOX --version | cut -d' ' -f2), $(nproc) CPUs, kernel $(uname -r), $(date -u '+%F %H:%M UTC')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "guest: $GT/marker.elf (prints a marker, then debug-exit); $RUNS runs each; times in ms"
echo

declare -A MED
measure() { # measure NAME CMD...
    local name=$1
    shift
    if ! "$T/startmark" "$RUNS" "$MARKER" -- "$@" >"$T/$name" 2>"$T/$name.err"; then
        printf '%-22s failed: %s\n' "$name" "$(head -2 "$T/$name.err" | tr '\n' ' ')"
        return 1
    fi
    local m e r
    m=$(awk '/marker_ms/ {print $2" ("$3"-"$4")"}' "$T/$name")
    e=$(awk '/exit_ms/ {print $2" ("$3"-"$4")"}' "$T/$name")
    r=$(awk '/rss_kib/ {printf "%.1f", $2/1024}' "$T/$name")
    MED[$name.marker]=$(awk '/marker_ms/ {print $2}' "$T/$name")
    MED[$name.exit]=$(awk '/exit_ms/ {print $2}' "$T/$name")
    MED[$name.rss]=$r
    printf '%-22s %-24s %-24s %8s\n' "$name" "$m" "$e" "$r"
}

# Own memory: RSS minus the guest RAM the guest touched (guest RAM is the VMM's anonymous
# memory, so its touched pages count in RSS; with transparent huge pages one touch costs
# 2 MiB). Measured on a running VM (marker.elf halt=1) from /proc/PID/smaps: the guest RAM
# mapping is the one sized like the guest's memory. Prints "RSS GUEST OWN PRIVATE HELPER
# HELPER_PRIVATE" in KiB to $T/own-NAME.kib (PRIVATE: own pages not shared with any other
# process; HELPER: the RSS of kvmbox's child processes, the user network's kvmbox-slirp,
# which is part of the VM's cost: OWN does not include it).
own_memory() { # own_memory NAME MEM_MIB CMD...
    local name=$1 memkb=$(($2 * 1024))
    shift 2
    "$@" </dev/null >"$T/own-$name" 2>&1 &
    local pid=$!
    for _ in $(seq 1 200); do grep -q "$MARKER" "$T/own-$name" 2>/dev/null && break; sleep 0.05; done
    sleep 0.3
    local child helpers="" h
    for h in $(pgrep -P "$pid"); do
        if [ "$(cat /proc/"$h"/comm 2>/dev/null)" = kvmbox-slirp ]; then
            helpers="$helpers /proc/$h/smaps_rollup"
        else
            child=${child:-$h} # a wrapper's child is the VMM itself
        fi
    done
    awk -v memkb=$memkb '
        /^[0-9a-f]+-[0-9a-f]+ / { inmap = 0 }
        /^Size:/ { size = $2; if (size >= memkb && size <= memkb + 4096) inmap = 1 }
        /^Rss:/ { total += $2; if (inmap) guest += $2 }
        /^Private_(Clean|Dirty):/ { if (!inmap) priv += $2 }
        END { printf "%d %d %d %d", total, guest, total - guest, priv }
    ' "/proc/${child:-$pid}/smaps" >"$T/own-$name.kib" 2>/dev/null || printf "0 0 0 0" >"$T/own-$name.kib"
    # shellcheck disable=SC2086 # a list of files
    awk '/^Rss:/ { r += $2 } /^Private_(Clean|Dirty):/ { p += $2 } END { printf " %d %d\n", r, p }' \
        /dev/null $helpers >>"$T/own-$name.kib" 2>/dev/null
    # Where kvmbox's own resident memory is, by kind of mapping.
    [ "$name" = kvmbox ] && awk -v memkb=$memkb '
        /^[0-9a-f]+-[0-9a-f]+ / { f = $6; inmap = 0 }
        /^Size:/ { if ($2 >= memkb && $2 <= memkb + 4096) inmap = 1 }
        /^Rss:/ {
            if (inmap) next
            k = f ~ /libc\.so|ld-linux/ ? "libc and ld.so (shared)" : f ~ /\.so/ ? "other libraries (shared)" : \
                f ~ /kvmbox/ ? "the kvmbox binary" : f == "[heap]" ? "heap" : f == "[stack]" ? "main stack" : \
                f == "" ? "anonymous (thread stacks, mmaps)" : f
            kb[k] += $2
        }
        END { for (k in kb) if (kb[k] > 4) printf "      %-36s %6d KiB\n", k, kb[k] }
    ' "/proc/${child:-$pid}/smaps" >"$T/own-split" 2>/dev/null
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
show_own() { # show_own NAME
    read -r rss guest own priv hrss hpriv <"$T/own-$1.kib"
    awk -v n="$1" -v r="$rss" -v g="$guest" -v o="$own" -v p="$priv" -v hr="${hrss:-0}" -v hp="${hpriv:-0}" 'BEGIN {
        printf "  %-22s RSS %6.2f MiB = guest RAM touched %5.2f MiB + own %5.2f MiB (private %4.2f MiB)\n",
               n, r/1024, g/1024, o/1024, p/1024
        if (hr > 0)
            printf "  %-22s + its helper process kvmbox-slirp: RSS %.2f MiB (private %.2f MiB); own in all %.2f MiB\n",
                   "", hr/1024, hp/1024, (o+hr)/1024 }'
}
if [ -z "${ONLY_GROWTH:-}" ]; then
printf '%-22s %-24s %-24s %8s\n' "vmm" "start->marker med(min-max)" "start->exit med(min-max)" "RSS MiB"
measure kvmbox "$KVMBOX" run --kernel "$GT/marker.elf" --mem 64M
measure "kvmbox --sandbox off" "$KVMBOX" run --kernel "$GT/marker.elf" --mem 64M --sandbox off
if [ -n "$QEMU" ]; then
    measure qemu-microvm "$QEMU" -M microvm $QBASE -m 64M $QEXIT -kernel "$GT/marker.elf"
    [ -n "${SKIP_Q35:-}" ] || measure qemu-q35 "$QEMU" -M q35 $QBASE -m 64M $QEXIT -kernel "$GT/marker.elf"
fi

echo
echo "ratios (other / kvmbox, median):"
for q in "kvmbox --sandbox off" qemu-microvm qemu-q35; do
    [ -n "${MED[$q.marker]:-}" ] || continue
    awk -v n="$q" -v a="${MED[kvmbox.marker]}" -v b="${MED[$q.marker]}" \
        -v c="${MED[kvmbox.exit]}" -v d="${MED[$q.exit]}" -v e="${MED[kvmbox.rss]}" -v f="${MED[$q.rss]}" \
        'BEGIN { printf "  %-22s marker %.2fx  exit %.2fx  RSS %.2fx\n", n, b/a, d/c, f/e }'
done

# ---- 2. the start-up breakdown ----------------------------------------------------------
echo
echo "kvmbox start-up and teardown, step by step ($RUNS runs; KVMBOX_TRACE timestamps, medians):"
"$T/startmark" -t "$RUNS" "$MARKER" -- "$KVMBOX" run --kernel "$GT/marker.elf" --mem 64M \
    >"$T/trace" 2>"$T/trace.err" || echo "  failed: $(head -1 "$T/trace.err")"
"$T/kvmcost" "$RUNS" 1 64 >"$T/host" 2>"$T/host.err" || echo "  kvmcost failed: $(head -1 "$T/host.err")"
for p in noop-static noop-dynamic; do
    [ -x "$T/$p" ] && "$T/startmark" "$RUNS" "$MARKER" -- "$T/$p" >"$T/$p.out" 2>/dev/null
done
# Whose time each step is: host (kernel or KVM work in one call), guest (the guest's code,
# which KVM runs; the same under any VMM), ours (kvmbox's code and the calls it chose).
awk -v hostfile="$T/host" -v ns="$T/noop-static.out" -v nd="$T/noop-dynamic.out" '
    BEGIN {
        while ((getline l < hostfile) > 0) { split(l, f, " "); h = f[2]; sub(/^host [0-9.]+ /, "", l); host[l] = h }
        while ((getline l < ns) > 0) if (l ~ /^exit_ms/) { split(l, f, " "); noop_s = f[2] }
        while ((getline l < nd) > 0) if (l ~ /^exit_ms/) { split(l, f, " "); noop_d = f[2] }
        who["exec"] = "host+ours"; ref["exec"] = sprintf("no-op process: static %s, dynamic %s", noop_s, noop_d)
        split("create|configuration checked|guest RAM mapped|devices created|control socket|kernel loaded|boot page tables|console thread started|vCPU threads started|vCPU 0 sandboxed|vCPU threads joined|console thread joined|control socket closed|destroy|devices destroyed|destroyed|main returns", o, "|")
        for (i in o) who[o[i]] = "ours"
        who["/dev/kvm opened"] = "host"
        who["vCPU 0 has the supported CPUID"] = "host"; ref["vCPU 0 has the supported CPUID"] = host["open /dev/kvm, KVM_GET_SUPPORTED_CPUID"]
        who["KVM_CREATE_VM"] = "host"; ref["KVM_CREATE_VM"] = host["KVM_CREATE_VM"]
        who["memory slots"] = "host"; ref["memory slots"] = host["memory slots"]
        who["KVM_CREATE_IRQCHIP"] = "host"; ref["KVM_CREATE_IRQCHIP"] = host["KVM_CREATE_IRQCHIP"]
        who["irqfds, GSI routing, ioeventfds"] = "host"; ref["irqfds, GSI routing, ioeventfds"] = "routing alone " host["KVM_SET_GSI_ROUTING"]
        who["KVM_CREATE_PIT2"] = "host"; ref["KVM_CREATE_PIT2"] = host["KVM_CREATE_PIT2"]
        who["e820 and ACPI tables"] = "ours+host"; ref["e820 and ACPI tables"] = "first touch of guest RAM (a 2 MiB THP)"
        who["vCPUs created"] = "host"; ref["vCPUs created"] = host["vCPUs (create, CPUID, LAPIC, registers)"]
        who["vCPU 0 thread running"] = "host"; ref["vCPU 0 thread running"] = "scheduler: a new thread gets a CPU"
        who["vCPU 0 first exit"] = "host"; ref["vCPU 0 first exit"] = host["first KVM_RUN to the first exit"]
        who["first guest output"] = "guest"; who["stop requested"] = "guest"; who["marker seen"] = "guest"
        who["KVM VM closed"] = "host"; ref["KVM VM closed"] = host["close: vCPUs and VM (teardown)"]
        who["exited"] = "host"; ref["exited"] = "process exit"
        split("vCPU 0 thread running|vCPU 0 has the supported CPUID|KVM_CREATE_PIT2|vCPU 0 sandboxed|vCPU 0 first exit|first guest output|stop requested", t, "|")
        for (i in t) thread[t[i]] = "vcpu0"
        thread["exec"] = thread["marker seen"] = thread["exited"] = "-"
        printf "  %-32s %-6s %8s %8s  %-9s %s\n", "step", "thread", "at", "since", "whose", "reference (same calls alone, medians)"
    }
    # Steps come in the order of their median time from the fork; "since" is the time from the
    # step listed before it, whichever thread that was (vCPU 0 works alongside the main thread
    # until the go), so the column adds up to the time of the marker and of the exit.
    $1 == "step" {
        name = $0; sub(/^step [-0-9.]+ [-0-9.]+ /, "", name)
        w = (name in who) ? who[name] : "?"
        took = $2 - prev; prev = $2
        printf "  %-32s %-6s %8.3f %8.3f  %-9s %s\n", name, (name in thread) ? thread[name] : "main", $2, took, w, (name in ref) ? ref[name] : ""
        if (!after) sum[w] += took; else tsum[w] += took
        if (name == "marker seen") { after = 1; mark_at = $2 }
    }
    END {
        printf "  start to marker %.2f ms:", mark_at
        for (w in sum) printf "  %s %.2f", w, sum[w]
        printf "\n  marker to exit:"
        for (w in tsum) printf "  %s %.2f", w, tsum[w]
        printf "\n"
    }' "$T/trace"

# ---- 3. memory of a running VM (own_memory and show_own are above) -----------------------------
echo
echo "memory of a running VM (64 MiB guest, halted after the marker):"
own_memory kvmbox 64 "$KVMBOX" run --kernel "$GT/marker.elf" --mem 64M --cmdline halt=1
show_own kvmbox
sort -t: -k1 "$T/own-split"
own_memory "kvmbox --net user" 64 "$KVMBOX" run --kernel "$GT/marker.elf" --mem 64M --cmdline halt=1 --net user
show_own "kvmbox --net user"
if [ -n "$QEMU" ]; then
    own_memory qemu-microvm 64 "$QEMU" -M microvm $QBASE -m 64M -kernel "$GT/marker.elf" -append halt=1
    show_own qemu-microvm
fi
"$T/startmark" "$RUNS" "$MARKER" -- "$KVMBOX" run --kernel "$GT/marker.elf" --mem 64M --net user \
    >"$T/netuser" 2>/dev/null &&
    awk -v base="${MED[kvmbox.marker]}" '/marker_ms/ { printf "  --net user start to marker: %.2f ms (%.2f ms more than without)\n", $2, $2 - base }' "$T/netuser"
awk -v a="$(cut -d' ' -f3 "$T/own-kvmbox.kib")" -v b="$(cut -d' ' -f3 "$T/own-kvmbox --net user.kib")" \
    -v h="$(cut -d' ' -f5 "$T/own-kvmbox --net user.kib")" \
    'BEGIN { printf "  --net user own memory: %.2f MiB more (in kvmbox %.2f MiB, the helper process %.2f MiB)\n", (b+h-a)/1024, (b-a)/1024, h/1024 }'

fi # ONLY_GROWTH

# ---- 4. growth with vCPUs and guest memory --------------------------------------------------
# QEMU gets its RAM from a memory backend with reserve=off in every row (like kvmbox's
# MAP_NORESERVE; it cannot map more than the host has without it), kvmbox overcommit=on.
if [ -z "${SKIP_GROWTH:-}" ]; then
    echo
    maxcpus=$(python3 -c 'import fcntl, os
fd = os.open("/dev/kvm", os.O_RDWR)
print(fcntl.ioctl(fd, 0xae03, 66))' 2>/dev/null || echo 64)
    echo "growth ($GROWTH_RUNS runs each; start->marker median ms, own memory MiB; KVM_CAP_MAX_VCPUS $maxcpus):"
    printf '  %-14s %9s %9s %9s %7s %7s %10s %8s %8s\n' "vCPUs/memory" "kvmbox" "qemu" "k/q" \
        "k grow" "q grow" "KVM alone" "k own" "q own"
    kb0="" qb0=""
    for cfg in 1:64 2:64 4:64 8:64 16:64 32:64 64:64 1:1024 1:16384 1:65536; do
        c=${cfg%%:*} m=${cfg##*:}
        [ "$c" -le "$maxcpus" ] || continue
        "$T/startmark" "$GROWTH_RUNS" "$MARKER" -- "$KVMBOX" run --kernel "$GT/marker.elf" \
            --mem "${m}M,overcommit=on" --cpus "$c" >"$T/g-k" 2>/dev/null
        km=$(awk '/marker_ms/ {print $2}' "$T/g-k")
        # what KVM alone takes for the parts that grow: memory slots and vCPU creation
        kk=$("$T/kvmcost" "$GROWTH_RUNS" "$c" "$m" 2>/dev/null |
            awk '/memory slots|vCPUs \(create/ { s += $2 } END { printf "%.2f", s }')
        qm=""
        if [ -n "$QEMU" ]; then
            "$T/startmark" "$GROWTH_RUNS" "$MARKER" -- "$QEMU" -M microvm,memory-backend=ram $QBASE \
                -object "memory-backend-ram,id=ram,size=${m}M,reserve=off" -m "${m}M" -smp "$c" $QEXIT \
                -kernel "$GT/marker.elf" >"$T/g-q" 2>/dev/null
            qm=$(awk '/marker_ms/ {print $2}' "$T/g-q")
        fi
        own_memory g-k "$m" "$KVMBOX" run --kernel "$GT/marker.elf" --mem "${m}M,overcommit=on" \
            --cpus "$c" --cmdline halt=1
        ko=$(cut -d' ' -f3 "$T/own-g-k.kib")
        qo=0
        if [ -n "$QEMU" ]; then
            own_memory g-q "$m" "$QEMU" -M microvm,memory-backend=ram $QBASE \
                -object "memory-backend-ram,id=ram,size=${m}M,reserve=off" -m "${m}M" -smp "$c" \
                -kernel "$GT/marker.elf" -append halt=1
            qo=$(cut -d' ' -f3 "$T/own-g-q.kib")
        fi
        [ -n "$kb0" ] || kb0=$km qb0=${qm:-0}
        awk -v cfg="$c / $((m >= 1024 ? m / 1024 : m))$([ "$m" -ge 1024 ] && echo G || echo M)" \
            -v km="${km:-0}" -v kk="$kk" -v qm="${qm:-0}" -v kb="$kb0" -v qb="$qb0" -v ko="$ko" -v qo="$qo" 'BEGIN {
            printf "  %-14s %9.2f %9.2f %8.2fx %6.2fx %6.2fx %10.2f %8.2f %8.2f\n", cfg, km, qm,
                   (qm > 0 ? km / qm : 0), (kb > 0 ? km / kb : 0), (qb > 0 ? qm / qb : 0), kk, ko / 1024, qo / 1024 }'
    done
    echo "  (grow: start->marker against the 1 vCPU / 64 MiB row of the same VMM; KVM alone: the"
    echo "   memory slots and the vCPUs' creation, one after the other, by bench/kvmcost.c)"
fi

[ -n "${ONLY_GROWTH:-}" ] && exit 0

# ---- 5. PIO exits ---------------------------------------------------------------------------
echo
echo "PIO exit round trip ($PIO_N writes to port 0x80 by $GT/pio.elf, minus the marker-only run):"
pio_cost() { # pio_cost NAME CMD...  -> us per exit
    local name=$1
    shift
    "$T/startmark" 5 "$MARKER" -- "$@" >"$T/pio-$name" 2>/dev/null || { echo "  $name: failed"; return; }
    local full base
    full=$(awk '/exit_ms/ {print $2}' "$T/pio-$name")
    base=${MED[$name.exit]:-0}
    awk -v n="$name" -v f="$full" -v b="$base" -v c="$PIO_N" \
        'BEGIN { printf "  %-14s %.2f us per exit (%.0f ms total)\n", n, (f-b)*1000/c, f }'
}
pio_cost kvmbox "$KVMBOX" run --kernel "$GT/pio.elf" --mem 64M --cmdline "count=$PIO_N"
if [ -n "$QEMU" ]; then
    pio_cost qemu-microvm "$QEMU" -M microvm $QBASE -m 64M $QEXIT -kernel "$GT/pio.elf" -append "count=$PIO_N"
    [ -n "${SKIP_Q35:-}" ] || pio_cost qemu-q35 "$QEMU" -M q35 $QBASE -m 64M $QEXIT -kernel "$GT/pio.elf" \
        -append "count=$PIO_N"
fi
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
