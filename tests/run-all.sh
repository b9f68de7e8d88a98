#!/bin/bash
# The one test command (make check; README; .ci/run): builds kvmbox normally, with
# ASan+UBSan and with ThreadSanitizer (clang), runs the unit tests, the guest tests and the
# integration scripts against each build, and ends with one "N passed, N failed, N skipped"
# line. CHECK_PASSES="build build-asan build-tsan" (the default) chooses the passes,
# CHECK_ONLY="unit-tests t-api ..." the programs (default: all).
#
# A sanitizer report is a failure even when the script's own checks passed: ASan/UBSan
# reports are found in the script's output, TSan reports in the files its runtime writes
# (TSAN_OPTIONS=log_path=...; daemonized VMs' stderr goes to their own logs, so the output
# alone would miss them). The TSan build keeps its seccomp sandbox on: its filters allow
# what the TSan runtime needs to report (vmm/sandbox_gen.c).
#
# The three builds come first; then the test programs run CHECK_JOBS at a time (default: one
# per CPU; CHECK_JOBS=1 runs them one after the other), longest first. It says what it is
# doing as it goes (a CI log shows progress): "==> SCRIPT [BUILD]" when a script starts and,
# when it ends, its PASS:/FAIL:/SKIP: lines (labelled with the build) and "<== SCRIPT
# [BUILD]: N passed, N failed, N skipped, S s". Each script's whole output and the
# per-script times are kept in the log directory printed at the end.
#
# Hang guard: each script runs under tests/lib/progress.py (--tree: the VMs it daemonizes are
# watched too). It is stopped only when it stops making progress: no new line in its log and
# no CPU used for GUARD_QUIET s, or no new line while it used GUARD_CPU CPU-seconds, or after
# GUARD_CAP s in any case. Scripts bound their own waits the same way, more tightly, so a
# stuck step shows up as a FAIL line of the script long before this guard fires.
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib/progress.sh
JOBS=$(nproc 2>/dev/null || echo 2)
LOG=$(mktemp -d /tmp/kvmbox-check.XXXXXX)
# TSan report files (TSAN_OPTIONS=log_path): any user a test runs kvmbox as can create them.
chmod 711 "$LOG" && mkdir -m 1733 "$LOG/tsan"
GUARD_QUIET=${GUARD_QUIET:-300} GUARD_CPU=${GUARD_CPU:-1800} GUARD_CAP=${GUARD_CAP:-3600}
pass=0 fail=0 skip=0
failed_names=()
T0=$SECONDS

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

label() { # label BUILD_DIR < output: its PASS/FAIL/SKIP lines as "PASS: [BUILD_DIR] ..."
    local line
    while IFS= read -r line; do
        case "$line" in
        PASS:* | FAIL:* | SKIP:*) printf '%s: [%s] %s\n' "${line%%:*}" "$1" "${line#*: }" ;;
        esac
    done
}

guard() { # guard NAME CMD...: CMD under the hang guard (stdout must be a file: its log)
    local name=$1
    shift
    progress_run --tree --name "$name" --quiet "$GUARD_QUIET" --cpu-quiet "$GUARD_CPU" \
        --cap "$GUARD_CAP" -- "$@"
}

build() { # build DIR SAN TSAN (the TSan build is clang's, whatever CC the environment has)
    local cc=()
    [ "$3" = 1 ] && cc=(CC=clang)
    if make -s -j"$JOBS" BUILD="$1" SAN="$2" TSAN="$3" "${cc[@]}" all "$1"/tests/.stamp >"$LOG/build-$1.log" 2>&1; then
        echo "PASS: build $1"
    else
        tail -30 "$LOG/build-$1.log"
        echo "FAIL: build $1"
        return 1
    fi
}

# The jobs: one test program against one build each. make check runs CHECK_JOBS of them side
# by side (default: one per CPU), longest first, never two of the same script at once (a
# script's fixed names and files are its own: /tmp/vhome in t-security, its netns names...).
# Every wait in them follows progress, so sharing the CPUs with each other is the same as
# sharing them with other work: it makes them slower, not failures.
CHECK_JOBS=${CHECK_JOBS:-$JOBS}
declare -A job_name=() job_dir=() job_t0=() running=()
q_dir=() q_name=() q_cmd=()

enqueue() { # enqueue BUILD_DIR NAME CMD... (CHECK_ONLY="unit-tests t-api ...": only those)
    if [ -n "${CHECK_ONLY:-}" ] && [[ " $CHECK_ONLY " != *" ${2%.sh} "* ]]; then return; fi
    q_dir+=("$1") q_name+=("$2")
    shift 2
    q_cmd+=("$*")
}

# est NAME: about how long NAME takes (s, on this project's CI host), for the order only.
est() {
    case "$1" in
    t-linux-early.sh) echo 480 ;;
    t-firmware-cd.sh | t-savestate-fw.sh | t-img-safety.sh) echo 200 ;;
    t-firmware.sh | t-virtio-net.sh) echo 120 ;;
    t-config.sh | t-virtio-blk.sh | t-snapshot.sh) echo 70 ;;
    t-img-interop.sh | t-install.sh | t-savestate.sh | t-img-crash.sh | t-img-fuzz.sh) echo 45 ;;
    t-*-fuzz.sh | t-balloon.sh) echo 30 ;;
    *) echo 10 ;;
    esac
}

# start_job I: queue entry I in the background, its output in its log.
start_job() {
    local i=$1 name=${q_name[$1]} dir=${q_dir[$1]} step=1 pid
    local tsan="$LOG/tsan/$name.$dir"
    [ "$dir" = build ] || step=7
    echo "==> $name [$dir]"
    # shellcheck disable=SC2086 # q_cmd is the command's words
    TSAN_OPTIONS="log_path=$tsan ${TSAN_OPTIONS:-}" KVMBOX="$dir/kvmbox" BUILD="$dir" STEP=$step \
        guard "$name [$dir]" ${q_cmd[$i]} >"$LOG/$name.$dir.log" 2>&1 &
    pid=$!
    job_name[$pid]=$name job_dir[$pid]=$dir job_t0[$pid]=$SECONDS running[$name]=1
}

# finish_job PID RC: a job that ended, its lines counted (labelled with its build).
finish_job() {
    local pid=$1 rc=$2 name=${job_name[$1]} dir=${job_dir[$1]} t0=${job_t0[$1]}
    local out="$LOG/$name.$dir.log" tsan="$LOG/tsan/$name.$dir" tsan_reports
    local p0=$pass f0=$fail s0=$skip
    unset "job_name[$pid]" "job_dir[$pid]" "job_t0[$pid]" "running[$name]"
    echo "$name [$dir]: $((SECONDS - t0)) s" >>"$LOG/times"
    count < <(label "$dir" <"$out")
    # A sanitizer report anywhere is a failure, even if the script's checks passed.
    if grep -qE 'runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer|WARNING: ThreadSanitizer' "$out"; then
        grep -E -m3 'runtime error:|ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer' "$out"
        count <<<"FAIL: [$dir] $name: sanitizer report (see $out)"
    fi
    tsan_reports=$(grep -l 'WARNING: ThreadSanitizer' "$tsan".* 2>/dev/null)
    if [ -n "$tsan_reports" ]; then
        # shellcheck disable=SC2086 # one argument per report file
        grep -h -A3 'WARNING: ThreadSanitizer' $tsan_reports | head -12
        count <<<"FAIL: [$dir] $name: ThreadSanitizer report (see ${tsan_reports%%$'\n'*})"
    fi
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && ! grep -q '^FAIL:' "$out"; then
        tail -20 "$out"
        count <<<"FAIL: [$dir] $name exited with status $rc"
    fi
    grep '^progress: ' "$out" | sed 's/^/    /'
    echo "<== $name [$dir]: $((pass - p0)) passed, $((fail - f0)) failed, $((skip - s0)) skipped, $((SECONDS - t0)) s"
}

# run_queue: every queued job, CHECK_JOBS at a time, the longest first.
run_queue() {
    local order i pid rc started
    mapfile -t order < <(for i in "${!q_name[@]}"; do echo "$(est "${q_name[$i]}") $i"; done |
        sort -k1,1nr -k2,2n | cut -d' ' -f2)
    while [ ${#order[@]} -gt 0 ] || [ ${#job_name[@]} -gt 0 ]; do
        started=1
        while [ $started = 1 ] && [ ${#job_name[@]} -lt "$CHECK_JOBS" ]; do
            started=0
            for i in "${!order[@]}"; do
                [ -z "${running[${q_name[${order[$i]}]}]:-}" ] || continue
                start_job "${order[$i]}"
                unset "order[$i]"
                order=("${order[@]}")
                started=1
                break
            done
        done
        [ ${#job_name[@]} -gt 0 ] || continue
        pid=
        wait -n -p pid
        rc=$?
        # a process substitution of count's may end here too: only jobs are ours
        [ -n "$pid" ] && [ -n "${job_name[$pid]:-}" ] && finish_job "$pid" "$rc"
    done
}

# The TSan pass: the guest tests and the integration scripts that run kvmbox's threads
# (vCPUs, device I/O threads, API, console, log). Not the Linux boots, the fuzzers, the
# image-format scripts (kvmbox img is single-threaded: the ASan pass covers it), t-install
# (it builds its own trees) or the firmware boots (SeaBIOS and GRUB through port exits:
# minutes each under TSan). Every 7th payload size, as under ASan. docs/testing.md says
# what it costs.
TSAN_SCRIPTS="t-guest-tests t-api t-balloon t-cli t-lifecycle t-overcommit t-sandbox t-security
              t-virtio-blk t-virtio-net t-virtio-reboot t-savestate"

# The builds first, one after the other (each uses every CPU), then every job of the passes
# whose build succeeded.
for dir in ${CHECK_PASSES:-build build-asan build-tsan}; do
    case "$dir" in
    build) san=0 tsan=0 ;;
    build-asan) san=1 tsan=0 ;;
    build-tsan) san=0 tsan=1 ;;
    *) echo "run-all: unknown pass $dir (CHECK_PASSES: build build-asan build-tsan)"; exit 2 ;;
    esac
    echo "==> build $dir"
    build "$dir" "$san" "$tsan" >"$LOG/build-result" 2>&1
    brc=$?
    count <"$LOG/build-result"
    [ $brc -eq 0 ] || continue
    # shellcheck disable=SC2046 # one argument per test binary
    enqueue "$dir" unit-tests tests/run-unit.sh $(find "$dir/tests" -maxdepth 1 -type f -name 'test_*' -perm -u+x | sort)
    if [ "$dir" = build ]; then
        scripts=$(ls tests/t-*.sh)
    elif [ "$dir" = build-asan ]; then
        # Under ASan: everything that exercises kvmbox's own code paths, not the slow
        # Linux boots or the benchmarks. The bridge and tap pings take every 7th payload
        # size (the normal pass took every size): the sanitizers need the paths, not all
        # 1473 sizes again.
        # shellcheck disable=SC2010 # our own file names
        scripts=$(ls tests/t-*.sh | grep -v -E 't-linux|t-img-fuzz|t-virtio-fuzz|t-state-fuzz')
    else
        scripts=$(for s in $TSAN_SCRIPTS; do echo "tests/$s.sh"; done)
    fi
    for s in $scripts; do
        [ -x "$s" ] && enqueue "$dir" "$(basename "$s")" "$s"
    done
done
echo "running ${#q_name[@]} test programs, $CHECK_JOBS at a time"
run_queue

echo
echo "longest: $(sort -t: -k2 -nr "$LOG/times" | head -5 | paste -sd';' | sed 's/;/; /g')"
echo "took $((SECONDS - T0)) s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $fail -ne 0 ]; then
    echo "failed:"
    printf '  %s\n' "${failed_names[@]}"
fi
echo "logs: $LOG"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
