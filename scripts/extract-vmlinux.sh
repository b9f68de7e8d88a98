#!/bin/sh
# extract-vmlinux.sh BZIMAGE OUT: the uncompressed ELF kernel inside a bzImage, found through
# the setup header (boot protocol 2.08+: payload_offset at 0x248, payload_length at 0x24c,
# relative to the protected-mode code, which starts (setup_sects + 1) * 512 bytes in).
set -eu
in=$1 out=$2
u8() { od -An -tu1 -j "$1" -N1 "$in" | tr -d ' '; }
u32() { od -An -tu4 -j "$1" -N4 "$in" | tr -d ' '; }
[ "$(od -An -c -j 514 -N4 "$in" | tr -d ' ')" = "HdrS" ] || { echo "$in: not a bzImage" >&2; exit 1; }
setup=$(u8 497)
[ "$setup" -eq 0 ] && setup=4
start=$(( (setup + 1) * 512 + $(u32 584) ))
len=$(u32 588)
magic=$(od -An -tx1 -j "$start" -N4 "$in" | tr -d ' ')
case "$magic" in
1f8b*) tool="gzip -dc" ;;
fd377a58) tool="xz -dc" ;;
28b52ffd) tool="zstd -dc" ;;
02214c18) tool="lz4 -dc" ;;   # LZ4 legacy frame, as the kernel writes it
5d0000*) tool="lzma -dc" ;;
*) echo "$in: unknown payload compression (magic $magic)" >&2; exit 1 ;;
esac
tail -c +$((start + 1)) "$in" | head -c "$len" | $tool >"$out.tmp" 2>/dev/null || true
[ "$(od -An -c -N4 "$out.tmp" | tr -d ' ')" = "177ELF" ] || { echo "$in: payload did not decompress to ELF" >&2; rm -f "$out.tmp"; exit 1; }
mv "$out.tmp" "$out"
