/* blkio: drives the block layer from the command line, for the interop and crash tests.
 *   blkio [-f FMT] FILE write OFF LEN SEED | read OFF LEN SEED (verify) | zero OFF LEN |
 *         discard OFF LEN | flush | workload SEED COUNT LOG   (one command per run)
 * Data is a deterministic pattern of SEED and the byte offset, so any reader can check it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"

static uint8_t pat(uint64_t seed, uint64_t off)
{
    uint64_t x = (off >> 3) * 0x9e3779b97f4a7c15ULL ^ seed * 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    return (uint8_t)(x >> (8 * (off & 7)));
}

static int die(const char *what, struct blk *b)
{
    fprintf(stderr, "blkio: %s: %s\n", what, b ? blk_errmsg(b) : strerror(errno));
    return 1;
}

/* Random writes with a flush every few; each completed flush is logged with the writes it
 * covers, so a test that kills us can check exactly those. */
static int workload(struct blk *b, uint64_t seed, unsigned count, const char *log)
{
    FILE *f = fopen(log, "w");
    if (!f)
        return die("log", NULL);
    uint64_t size = blk_length(b);
    uint8_t *buf = malloc(256 << 10);
    if (!buf)
        return die("out of memory", NULL);
    srand((unsigned)seed);
    for (unsigned i = 0; i < count; i++) {
        uint64_t len = ((uint64_t)(rand() % 64) + 1) * 4096;
        uint64_t off = ((uint64_t)rand() * 4096) % (size - len);
        off &= ~511ULL;
        for (uint64_t j = 0; j < len; j++)
            buf[j] = pat(seed + i, off + j);
        /* Logged before it starts: a write cut short by a kill may have changed its range. */
        fprintf(f, "S %u %llu %llu\n", i, (unsigned long long)off, (unsigned long long)len);
        fflush(f);
        if (blk_pwrite(b, buf, len, off) < 0) {
            free(buf);
            return die("write", b);
        }
        fprintf(f, "W %u %llu %llu\n", i, (unsigned long long)off, (unsigned long long)len);
        if (i % 8 == 7) {
            if (blk_flush(b) < 0) {
                free(buf);
                return die("flush", b);
            }
            fprintf(f, "F %u\n", i);
        }
        fflush(f);
    }
    free(buf);
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    const char *fmt = NULL;
    int a = 1;
    if (argc > 2 && !strcmp(argv[1], "-f"))
        fmt = argv[2], a = 3;
    if (argc - a < 2) {
        fprintf(stderr, "usage: blkio [-f FMT] FILE CMD ARGS...\n");
        return 2;
    }
    const char *cmd = argv[a + 1];
    bool rw = strcmp(cmd, "read");
    struct blk *b;
    char err[512];
    if (blk_open(argv[a], fmt, rw ? BLK_O_RDWR : BLK_O_FORCE_SHARE, &b, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "blkio: %s\n", err);
        return 1;
    }
    uint64_t off = argc > a + 2 ? strtoull(argv[a + 2], NULL, 0) : 0;
    uint64_t len = argc > a + 3 ? strtoull(argv[a + 3], NULL, 0) : 0;
    uint64_t seed = argc > a + 4 ? strtoull(argv[a + 4], NULL, 0) : 0;
    int rc = 0;
    if (!strcmp(cmd, "write") || !strcmp(cmd, "read")) {
        uint8_t *buf = malloc(len ? len : 1);
        if (!strcmp(cmd, "write")) {
            for (uint64_t j = 0; j < len; j++)
                buf[j] = pat(seed, off + j);
            rc = blk_pwrite(b, buf, len, off) < 0 || blk_flush(b) < 0 ? die("write", b) : 0;
        } else if (blk_pread(b, buf, len, off) < 0) {
            rc = die("read", b);
        } else {
            for (uint64_t j = 0; j < len; j++)
                if (buf[j] != (seed == (uint64_t)-1 ? 0 : pat(seed, off + j))) {
                    fprintf(stderr, "blkio: mismatch at %llu\n", (unsigned long long)(off + j));
                    rc = 1;
                    break;
                }
        }
        free(buf);
    } else if (!strcmp(cmd, "zero")) {
        rc = blk_write_zeroes(b, off, len, BLK_ZERO_MAY_UNMAP) < 0 || blk_flush(b) < 0 ? die("zero", b) : 0;
    } else if (!strcmp(cmd, "discard")) {
        rc = blk_discard(b, off, len) < 0 || blk_flush(b) < 0 ? die("discard", b) : 0;
    } else if (!strcmp(cmd, "workload")) {
        rc = workload(b, off, (unsigned)len, argv[a + 4]);
    } else {
        fprintf(stderr, "blkio: unknown command %s\n", cmd);
        rc = 2;
    }
    blk_close(b);
    return rc;
}
