/* libFuzzer target for the qcow2 metadata parser: the input is an image file. It is opened
 * read-only (reads across it, block status, snapshot list, check), then for writing (a few
 * writes that allocate clusters and update refcounts and L2 tables, a discard, a flush, a
 * leak repair) - hostile metadata must never turn into a crash or a sanitizer report.
 * Built and run by `make fuzz-qcow2` (clang -fsanitize=fuzzer,address,undefined). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block.h"

/* Reads, maps and checks; nothing may fail in any way other than an error return. */
static void exercise_read(struct blk *b)
{
    uint8_t buf[4096];
    uint64_t len = blk_length(b);
    for (uint64_t off = 0; off < len && off < (64u << 20); off += 1u << 20)
        (void)blk_pread(b, buf, len - off < sizeof(buf) ? len - off : sizeof(buf), off);
    uint64_t pnum, host;
    unsigned st;
    for (uint64_t off = 0, n = 0; off < len && n < 64; off += pnum, n++)
        if (blk_block_status(b, off, len - off, &pnum, &st, &host) < 0 || pnum == 0)
            break;
    struct blk_snapshot sn[4];
    (void)blk_snapshot_list(b, sn, 4);
    struct blk_info info;
    (void)blk_get_info(b, &info);
    struct blk_check_result res;
    (void)blk_check(b, 0, &res);
}

/* Writes that allocate (a cluster at the start, an unaligned one in the middle), a discard
 * and a flush, then a leak repair. */
static void exercise_write(struct blk *b)
{
    static const uint8_t pattern[6000] = { 1, 2, 3 };
    uint64_t len = blk_length(b);
    if (len >= sizeof(pattern)) {
        (void)blk_pwrite(b, pattern, sizeof(pattern), 0);
        (void)blk_pwrite(b, pattern, 1000, len / 2 > 1000 ? len / 2 - 1000 : 0);
        (void)blk_discard(b, 0, len < (1u << 20) ? len : 1u << 20);
        (void)blk_write_zeroes(b, len / 4, len - len / 4 < 70000 ? len - len / 4 : 70000, 0);
    }
    (void)blk_flush(b);
    struct blk_check_result res;
    (void)blk_check(b, BLK_REPAIR_LEAKS, &res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("img", MFD_CLOEXEC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    char path[64], err[BLK_ERRMSG_MAX];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    struct blk *b;
    if (blk_open(path, "qcow2", BLK_O_FORCE_SHARE | BLK_O_NO_BACKING, &b, NULL, err, sizeof(err)) == 0) {
        exercise_read(b);
        blk_close(b);
    }
    if (blk_open(path, "qcow2", BLK_O_RDWR | BLK_O_NO_BACKING | BLK_O_NO_LOCK, &b, NULL, err, sizeof(err)) ==
        0) {
        exercise_write(b);
        blk_close(b);
    }
    close(fd);
    return 0;
}
