/* libFuzzer target for the qcow2 metadata parser: the input is an image file; open it
 * read-only, read across it, and check it. Any crash or sanitizer report is a bug. Built and
 * run by `make fuzz-qcow2` (clang -fsanitize=fuzzer,address,undefined). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block.h"

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
        uint8_t buf[4096];
        uint64_t len = blk_length(b);
        for (uint64_t off = 0; off < len && off < (64u << 20); off += 1u << 20)
            blk_pread(b, buf, len - off < sizeof(buf) ? len - off : sizeof(buf), off);
        struct blk_check_result res;
        blk_check(b, 0, &res);
        uint64_t pnum, host;
        unsigned st;
        if (len)
            blk_block_status(b, 0, len, &pnum, &st, &host);
        blk_close(b);
    }
    close(fd);
    return 0;
}
