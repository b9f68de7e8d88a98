# shellcheck shell=bash
# Time limits that follow progress, for test scripts (source this file). A test never guesses
# how fast this host is: it waits for as long as what it waits for keeps making progress (new
# output; for silent guests, CPU use), with a generous overall cap against hangs. The rules
# and options are in tests/lib/progress.py (the one implementation); docs/testing.md says
# which limits the suite uses and why.
#
#   progress_run [--quiet N] [--cpu-quiet C] [--cap N] [--watch FILE]... [--name WHAT] -- CMD...
#       Runs CMD like `timeout --foreground -k 10` would: its status, or 124 with one
#       "progress: ..." line on stderr when it made no progress for N s (default 60) or ran
#       past the cap (default 600 s). Progress is CMD's stdout (if it is a file) or a --watch
#       FILE growing. SIGTERM goes to CMD only, once (never to its group, never SIGCONT).
#         progress_run --quiet 60 --cap 600 -- "$KVMBOX" run --kernel k.elf >"$T/out" 2>&1
#
#       In the background use "$PROGRESS" run ... & instead: then $! is the watchdog itself,
#       and a SIGTERM to it stops CMD the same way (the function would leave a subshell there).
#
#   wait_output [--pid PID] [--count N] [--quiet N] [--cpu-quiet C] [--cap N] FILE REGEX
#       0 once N lines (default 1) of FILE match REGEX (Python re); 1, with one line on stderr,
#       when FILE stopped growing for --quiet s (default 60), the cap passed (default 600 s)
#       or PID ended first. For a VM's console log: `wait_output "$LOG" '^READY'`.
#
#   wait_exit [--quiet N] [--cpu-quiet C] [--cap N] PID FILE
#       0 once process PID has ended (reap it with `wait PID` for its status); 1, with one
#       line on stderr, when FILE (the log of what PID waits on) stops making progress first.
#
#   poll_until CAP CMD...
#       Runs CMD every 0.1 s until it succeeds (0) or CAP seconds have passed (1): for a
#       condition that has no output to watch (a socket appears, info shows a state). CAP
#       only bounds a failure; choose it generously (it costs nothing when CMD succeeds).
PROGRESS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/progress.py

progress_run() { "$PROGRESS" run "$@"; }

wait_output() {
    local opts=()
    while [ $# -gt 2 ]; do opts+=("$1"); shift; done
    "$PROGRESS" wait "${opts[@]}" -- "$1" "$2"
}

wait_exit() {
    local opts=()
    while [ $# -gt 2 ]; do opts+=("$1"); shift; done
    "$PROGRESS" wait "${opts[@]}" --pid "$1" -- "$2"
}

poll_until() {
    local cap=$1 end
    shift
    end=$((${EPOCHREALTIME/./} + cap * 1000000))
    until "$@"; do
        [ "${EPOCHREALTIME/./}" -lt "$end" ] || return 1
        sleep 0.1
    done
}
