#!/bin/bash
# Installing and embedding: `make install` into a temporary DESTDIR puts the binary, both
# libraries (libkvmbox.so.VERSION with its soname and dev links, libkvmbox.a), kvmbox.h and
# kvmbox.pc in place; examples/embed.c then builds the way an embedder builds it,
#     cc prog.c $(pkg-config --cflags --libs kvmbox)            (shared)
#     ... $(pkg-config --static --libs kvmbox), -l:libkvmbox.a   (static)
# found through PKG_CONFIG_PATH/PKG_CONFIG_SYSROOT_DIR, and each program runs a guest.
# Build hygiene: the tree also builds with `make CC=clang` and `make CFLAGS='-O0 -g'` (each in
# a temporary build directory; the clang-built kvmbox runs a guest too).
set -u
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
K=$BUILD/guest-tests/debug-exit.elf
T=$(mktemp -d /tmp/kvmbox-install.XXXXXX)
trap 'rm -rf "$T"' EXIT
. tests/lib/progress.sh
JOBS=$(nproc 2>/dev/null || echo 2)
fails=0
ok() { echo "PASS: install: $*"; }
bad() { echo "FAIL: install: $*"; fails=$((fails + 1)); }

case "$BUILD" in
*san*)
    echo "SKIP: install: $BUILD is a sanitizer build; installing is tested with the normal build"
    exit 77 ;;
esac

# guest NAME CMD...: CMD runs debug-exit.elf with code=21 and must end with status 43.
EMBED_ARGS=("$K" "code=21") RUN_ARGS=(run --kernel "$K" --cmdline "code=21")
guest() {
    local name=$1 rc
    shift
    if [ ! -c /dev/kvm ]; then
        echo "SKIP: install: $name: no /dev/kvm on this host"
        return
    fi
    progress_run --name "$name" --quiet 60 --cpu-quiet 60 --cap 600 -- "$@" \
        >"$T/run.out" 2>"$T/run.err" </dev/null
    rc=$?
    if [ $rc -eq 43 ]; then ok "$name runs a guest (status 43)"
    else bad "$name: status $rc, expected 43: $(head -3 "$T/run.err")"; fi
}

# ---- make install -------------------------------------------------------------------------
D=$T/dest
P=/usr/local
if make -s BUILD="$BUILD" DESTDIR="$D" install >"$T/install.log" 2>&1; then
    ok "make install DESTDIR=... (default PREFIX $P)"
else
    bad "make install: $(tail -5 "$T/install.log")"
fi
missing=""
for f in bin/kvmbox bin/kvmbox-slirp lib/libkvmbox.a lib/libkvmbox.so.0.1.0 lib/libkvmbox.so.0 lib/libkvmbox.so \
         include/kvmbox.h lib/pkgconfig/kvmbox.pc; do
    [ -e "$D$P/$f" ] || missing="$missing $f"
done
if [ -z "$missing" ]; then ok "installed kvmbox and kvmbox-slirp, both libraries, header and kvmbox.pc"
else bad "not installed:$missing"; fi
if [ "$(readlink "$D$P/lib/libkvmbox.so")" = libkvmbox.so.0 ] &&
    [ "$(readlink "$D$P/lib/libkvmbox.so.0")" = libkvmbox.so.0.1.0 ]; then
    ok "libkvmbox.so -> libkvmbox.so.0 -> libkvmbox.so.0.1.0"
else
    bad "library links: libkvmbox.so -> '$(readlink "$D$P/lib/libkvmbox.so")', libkvmbox.so.0 -> '$(readlink "$D$P/lib/libkvmbox.so.0")'"
fi
soname=$(readelf -d "$D$P/lib/libkvmbox.so.0.1.0" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ "$soname" = libkvmbox.so.0 ]; then ok "soname libkvmbox.so.0"
else bad "soname is '$soname', expected libkvmbox.so.0"; fi
# The shared library's interface is include/kvmbox.h: nothing else is exported.
others=$(nm -D --defined-only "$D$P/lib/libkvmbox.so.0.1.0" 2>/dev/null | awk '{print $3}' |
    grep -v -E '^kvmbox_|^KVMBOX_0$' | head -5 | paste -sd' ')
if [ -z "$others" ] && nm -D --defined-only "$D$P/lib/libkvmbox.so.0.1.0" | grep -q ' kvmbox_vm_create'; then
    ok "the shared library exports kvmbox_* only"
else
    bad "the shared library exports more than kvmbox_*: $others"
fi
"$D$P/bin/kvmbox" --version >"$T/version" 2>&1
if grep -q '^kvmbox 0\.1\.0' "$T/version"; then ok "installed kvmbox --version"
else bad "installed kvmbox --version: $(head -2 "$T/version")"; fi
guest "installed kvmbox" "$D$P/bin/kvmbox" "${RUN_ARGS[@]}"
# --net user starts the helper installed next to kvmbox (a missing one fails with status 2)
guest "installed kvmbox --net user (kvmbox-slirp found next to it)" env PATH=/usr/bin:/bin \
    "$D$P/bin/kvmbox" "${RUN_ARGS[@]}" --net user

# ---- an embedder's build through pkg-config --------------------------------------------------
export PKG_CONFIG_PATH=$D$P/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$D
if ! pkg-config --exists kvmbox 2>"$T/pc.err"; then
    bad "pkg-config does not find kvmbox: $(head -2 "$T/pc.err")"
fi
CFL=$(pkg-config --cflags kvmbox)
# shellcheck disable=SC2046,SC2086 # pkg-config's flags are words
if cc -o "$T/embed-shared" examples/embed.c $CFL $(pkg-config --libs kvmbox) 2>"$T/cc.err"; then
    ok "cc embed.c \$(pkg-config --cflags --libs kvmbox) (shared)"
else
    bad "building embed.c against the shared library: $(head -5 "$T/cc.err")"
fi
if [ -x "$T/embed-shared" ]; then
    if readelf -d "$T/embed-shared" | grep -q 'NEEDED.*\[libkvmbox\.so\.0\]'; then
        ok "embed-shared needs libkvmbox.so.0"
    else
        bad "embed-shared does not need libkvmbox.so.0: $(readelf -d "$T/embed-shared" | grep NEEDED | paste -sd' ')"
    fi
    guest "embed (shared)" env LD_LIBRARY_PATH="$D$P/lib" "$T/embed-shared" "${EMBED_ARGS[@]}"
    grep -q "embed: guest stopped" "$T/run.err" || bad "embed (shared) did not report the stop"
fi
# Static: the same flags with --static (Requires.private and Libs.private: json-c, liburing,
# zlib, -ldl, -pthread), naming the archive so the linker does not pick the .so.
LIBS=$(pkg-config --static --libs kvmbox)
LIBS=${LIBS/-lkvmbox/-l:libkvmbox.a}
# shellcheck disable=SC2086 # pkg-config's flags are words
if cc -o "$T/embed-static" examples/embed.c $CFL $LIBS 2>"$T/cc.err"; then
    ok "cc embed.c with pkg-config --static (static libkvmbox.a)"
else
    bad "building embed.c against the static library: $(head -5 "$T/cc.err")"
fi
if [ -x "$T/embed-static" ]; then
    if readelf -d "$T/embed-static" | grep -q 'NEEDED.*libkvmbox'; then
        bad "embed-static needs libkvmbox.so"
    else
        ok "embed-static does not need libkvmbox.so"
    fi
    guest "embed (static)" "$T/embed-static" "${EMBED_ARGS[@]}"
fi
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

# ---- make install PREFIX=... ----------------------------------------------------------------
if make -s BUILD="$BUILD" PREFIX=/opt/kvmbox DESTDIR="$D" install >"$T/install2.log" 2>&1 &&
    grep -q '^prefix=/opt/kvmbox$' "$D/opt/kvmbox/lib/pkgconfig/kvmbox.pc" &&
    [ -x "$D/opt/kvmbox/bin/kvmbox" ]; then
    ok "make install PREFIX=/opt/kvmbox: files and kvmbox.pc follow the prefix"
else
    bad "make install PREFIX=/opt/kvmbox: $(tail -3 "$T/install2.log"; grep prefix= "$D/opt/kvmbox/lib/pkgconfig/kvmbox.pc" 2>&1)"
fi

# ---- build hygiene: CC=clang, CFLAGS='-O0 -g' -------------------------------------------------
# hygiene NAME DIR MAKE-ARGS...: the binary and both libraries build; the compile lines keep
# kvmbox's own flags (-D_GNU_SOURCE, -Werror) whatever the user's CFLAGS are.
hygiene() {
    local name=$1 dir=$2
    shift 2
    if ! command -v "${CCNAME:-cc}" >/dev/null; then
        echo "SKIP: install: $name: ${CCNAME:-cc} is not installed"
        return 1
    fi
    if progress_run --name "$name" --quiet 300 --cap 3600 -- make -j"$JOBS" BUILD="$dir" "$@" \
        "$dir/kvmbox" "$dir/libkvmbox.so.0.1.0" "$dir/examples/embed" >"$T/$name.log" 2>&1; then
        ok "make $* builds kvmbox and libkvmbox"
    else
        bad "make $*: $(grep -v -E '^(cc|clang|gcc) ' "$T/$name.log" | grep -m3 -E 'error|Error')"
        return 1
    fi
    if grep -E '^\S+ .*-c vmm/vm\.c' "$T/$name.log" | grep -q -- '-D_GNU_SOURCE.*-Werror'; then
        ok "make $*: compile lines keep -D_GNU_SOURCE and -Werror"
    else
        bad "make $*: kvmbox's own flags are missing: $(grep -m1 -- '-c vmm/vm\.c' "$T/$name.log")"
    fi
}
CCNAME=clang hygiene clang "$T/b-clang" CC=clang && guest "clang-built kvmbox" "$T/b-clang/kvmbox" "${RUN_ARGS[@]}"
if hygiene O0 "$T/b-O0" CFLAGS='-O0 -g'; then
    if grep -E -- '-c vmm/vm\.c' "$T/O0.log" | grep -q -- '-O0 -g'; then ok "CFLAGS='-O0 -g' reaches the compiler"
    else bad "CFLAGS='-O0 -g' is not on the compile line"; fi
fi

[ $fails -eq 0 ]
