#!/usr/bin/env python3
"""Seed inputs for virtio/virtio_fuzz.c: well-formed rings (virtio-blk requests, net frames,
indirect tables) that the fuzzer then bends. Layout: 8 bytes of options, then guest RAM
(descriptors at 0, avail ring at 0x1000, used ring at 0x2000, buffers from 0x3000)."""
import os
import struct
import sys

RAM = 0x8000


def seed(qsz_log2, chains, event_idx=False, keep_hdr=False):
    ram = bytearray(RAM)
    desc_i = 0
    heads = []
    for chain in chains:  # chain: list of (addr, len, flags, indirect-table or None)
        head = desc_i
        for j, (addr, length, flags) in enumerate(chain):
            nxt = desc_i + 1 if j + 1 < len(chain) else 0
            if j + 1 < len(chain):
                flags |= 1
            struct.pack_into('<QIHH', ram, 16 * desc_i, addr, length, flags, nxt)
            desc_i += 1
        heads.append(head)
    struct.pack_into('<HH', ram, 0x1000, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into('<H', ram, 0x1004 + 2 * i, h)
    opts = bytes([qsz_log2, (1 if event_idx else 0) | (2 if keep_hdr else 0), 64, 0, 0, 0, 0, 0])
    return opts + bytes(ram)


def blk_hdr(addr, typ, sector):
    return addr, struct.pack('<IIQ', typ, 0, sector)


out = sys.argv[1]
os.makedirs(out, exist_ok=True)
W = 2
seeds = {
    'blk-read': seed(4, [[(0x3000, 16, 0), (0x4000, 4096, W), (0x5000, 1, W)]]),
    'blk-write': seed(4, [[(0x3000, 16, 0), (0x4000, 512, 0), (0x5000, 1, W)]], event_idx=True),
    'blk-many': seed(6, [[(0x3000, 16, 0), (0x4000, 512, W), (0x5000, 1, W)]] * 5),
    'net-tx': seed(8, [[(0x3000, 12, 0), (0x3100, 60, 0)], [(0x3200, 1514, 0)]], keep_hdr=True),
    'net-rx': seed(8, [[(0x4000, 2048, W)], [(0x4800, 6, W), (0x4900, 2000, W)]]),
    'indirect': seed(4, [[(0x6000, 48, 4)]]),
}
for name, data in seeds.items():
    b = bytearray(data)
    if name.startswith('blk'):  # a request header in the first buffer
        struct.pack_into('<IIQ', b, 8 + 0x3000, 0 if 'read' in name else 1, 0, 8)
    if name == 'indirect':      # the table: header, data, status
        for i, (a, l, f, n) in enumerate([(0x3000, 16, 1, 1), (0x4000, 512, 3, 2), (0x5000, 1, 2, 0)]):
            struct.pack_into('<QIHH', b, 8 + 0x6000 + 16 * i, a, l, f, n)
    with open(os.path.join(out, 'seed-' + name), 'wb') as f:
        f.write(b)
