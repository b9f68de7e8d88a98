#!/bin/sh
# extract-vmlinux.sh BZIMAGE OUT: writes OUT, the uncompressed ELF kernel inside BZIMAGE.
#
# Found through the setup header (Documentation/arch/x86/boot.rst), never by scanning for magic
# numbers: boot protocol 2.08 or later has payload_offset (0x248) and payload_length (0x24c),
# relative to the protected-mode code, which starts (setup_sects + 1) * 512 bytes into the
# file (setup_sects at 0x1f1; 0 means 4). The payload's first bytes name the compressor; the
# kernel build appends the uncompressed size as its last 4 bytes (little-endian), and OUT is
# checked against it and against the ELF magic.
set -eu
[ $# -eq 2 ] || { echo "usage: extract-vmlinux.sh BZIMAGE OUT" >&2; exit 2; }
in=$1 out=$2

u8() { od -An -tu1 -j "$1" -N1 "$in" | tr -d ' '; }
u16() { od -An -tu2 -j "$1" -N2 "$in" | tr -d ' '; }
u32() { od -An -tu4 -j "$1" -N4 "$in" | tr -d ' '; }
hex() { od -An -tx1 -j "$1" -N"$2" "$in" | tr -d ' \n'; }

[ "$(hex 0x202 4)" = "48647253" ] || { echo "extract-vmlinux: $in: no setup header (HdrS)" >&2; exit 1; }
version=$(u16 0x206)
[ "$version" -ge $((0x0208)) ] ||
    { echo "extract-vmlinux: $in: boot protocol $(printf %#x "$version") has no payload fields (needs 2.08)" >&2; exit 1; }
setup_sects=$(u8 0x1f1)
[ "$setup_sects" -eq 0 ] && setup_sects=4
start=$(( (setup_sects + 1) * 512 + $(u32 0x248) ))
len=$(u32 0x24c)
size=$(stat -c %s "$in")
[ "$len" -ge 8 ] && [ $((start + len)) -le "$size" ] ||
    { echo "extract-vmlinux: $in: payload [$start, +$len) outside the file ($size bytes)" >&2; exit 1; }

case "$(hex "$start" 4)" in
1f8b*)     name=gzip  tool="gzip -dc" ;;
fd377a58)  name=xz    tool="xz -dc" ;;
28b52ffd)  name=zstd  tool="zstd -qdc" ;;
02214c18)  name=lz4   tool="lz4 -dc" ;;    # the legacy frame the kernel's lz4 -l writes
5d0000*)   name=lzma  tool="xz --format=lzma -dc" ;;
425a68*)   name=bzip2 tool="bzip2 -dc" ;;
894c5a4f)  name=lzo   tool="lzop -dc" ;;
*) echo "extract-vmlinux: $in: unknown payload compression (first bytes $(hex "$start" 4))" >&2; exit 1 ;;
esac
command -v "${tool%% *}" >/dev/null ||
    { echo "extract-vmlinux: $in: payload is $name but ${tool%% *} is not installed" >&2; exit 1; }
expect=$(u32 $((start + len - 4)))

tmp="$out.tmp.$$"
trap 'rm -f "$tmp" "$tmp.err"' EXIT
# The appended size trails the compressed stream; some decompressors warn about it (lz4
# treats it as a truncated frame), so their status is not the verdict: the checks below are.
tail -c +$((start + 1)) "$in" | head -c "$len" | $tool >"$tmp" 2>"$tmp.err" || true
got=$(stat -c %s "$tmp")
if [ "$(od -An -tx1 -N4 "$tmp" | tr -d ' ')" != "7f454c46" ] || [ "$got" -ne "$expect" ]; then
    echo "extract-vmlinux: $in: $name payload decompressed to $got bytes (expected an ELF of $expect)" >&2
    sed 's/^/extract-vmlinux: /' "$tmp.err" >&2
    exit 1
fi
mv "$tmp" "$out"
echo "extract-vmlinux: $out: $got bytes from a $len-byte $name payload"
