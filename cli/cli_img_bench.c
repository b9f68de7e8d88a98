/* kvmbox img bench: qemu-img bench's request pattern and report. COUNT requests of SIZE
 * bytes at OFFSET + i * STEP (wrapping inside the image), DEPTH of them in flight: the block
 * layer's interface is synchronous, so the depth is that many threads, each taking the next
 * request number when its previous request completes. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "cli/cli_img.h"
#include "common/util.h"

#define MAX_DEPTH 256

struct bench {
    struct blk *b;
    bool write;
    uint64_t count, size, start, step, image, flush_every;
    int pattern;
    uint64_t next; /* the next request number (atomic) */
    int err;       /* the first error (atomic compare-and-swap from 0) */
};

/* Request I's offset, as qemu-img bench computes it: START + I * STEP modulo the image size
 * (so aligned steps keep requests aligned, which cache=none needs to bypass the page
 * cache); a request that would cross the end starts over at 0. */
static uint64_t request_offset(const struct bench *bn, uint64_t i)
{
    unsigned __int128 off = (unsigned __int128)bn->step * i + bn->start;
    uint64_t o = (uint64_t)(off % bn->image);
    return o + bn->size > bn->image ? 0 : o;
}

static void *bench_worker(void *arg)
{
    struct bench *bn = arg;
    uint8_t *buf = aligned_alloc(4096, (bn->size + 4095) & ~4095ULL);
    int expected = 0;
    if (!buf) {
        __atomic_compare_exchange_n(&bn->err, &expected, -ENOMEM, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        return NULL;
    }
    memset(buf, bn->pattern, bn->size);
    for (;;) {
        uint64_t i = __atomic_fetch_add(&bn->next, 1, __ATOMIC_RELAXED);
        if (i >= bn->count || __atomic_load_n(&bn->err, __ATOMIC_RELAXED))
            break;
        uint64_t off = request_offset(bn, i);
        int r = bn->write ? blk_pwrite(bn->b, buf, bn->size, off) : blk_pread(bn->b, buf, bn->size, off);
        if (r == 0 && bn->write && bn->flush_every && (i + 1) % bn->flush_every == 0)
            r = blk_flush(bn->b);
        if (r < 0) {
            expected = 0;
            __atomic_compare_exchange_n(&bn->err, &expected, r, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
            break;
        }
    }
    free(buf);
    return NULL;
}

/* Runs DEPTH workers; returns the elapsed seconds (the first error lands in bn->err). */
static double bench_run(struct bench *bn, unsigned depth)
{
    pthread_t th[MAX_DEPTH];
    unsigned started = 0;
    uint64_t t0 = monotonic_ns();
    for (; started < depth; started++)
        if (pthread_create(&th[started], NULL, bench_worker, bn))
            break;
    if (!started)
        bench_worker(bn);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (!bn->err && bn->write) {
        int r = blk_flush(bn->b); /* the writes are only done when they are durable */
        if (r < 0)
            bn->err = r;
    }
    return (double)(monotonic_ns() - t0) / 1e9;
}

int img_cmd_bench(int argc, char **argv)
{
    static const struct option longopts[] = { { "pattern", required_argument, NULL, 'P' },
                                              { "flush-interval", required_argument, NULL, 'F' },
                                              { "no-drain", no_argument, NULL, 'N' },
                                              { "force-share", no_argument, NULL, 'U' },
                                              { 0 } };
    const char *fmt = NULL, *cache = "writeback";
    uint64_t depth = 64, pattern = 0;
    bool quiet = false;
    struct bench bn = { .count = 75000, .size = 4096 };
    bool step_given = false;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "f:t:c:d:s:o:S:wnqi:U", longopts, NULL)) != -1;) {
        int bad = 0;
        switch (c) {
        case 'f': fmt = optarg; break;
        case 't': cache = optarg; break;
        case 'c': bad = parse_uint(optarg, 1, UINT32_MAX, &bn.count); break;
        case 'd': bad = parse_uint(optarg, 1, MAX_DEPTH, &depth); break;
        case 's': bad = parse_size(optarg, &bn.size) || !bn.size || bn.size > (64u << 20); break;
        case 'o': bad = parse_size(optarg, &bn.start); break;
        case 'S':
            bad = parse_size(optarg, &bn.step);
            step_given = true;
            break;
        case 'w': bn.write = true; break;
        case 'q': quiet = true; break;
        case 'P': bad = parse_uint(optarg, 0, 255, &pattern); break;
        case 'F': bad = parse_uint(optarg, 0, UINT32_MAX, &bn.flush_every); break;
        case 'n':
        case 'i':
        case 'N':
        case 'U': break; /* the AIO engine and draining are qemu's own */
        default: return img_usage("bench", "bad option");
        }
        if (bad)
            return img_usage("bench", "bad value '%s' for -%c", optarg, c == 'P' ? 'P' : c);
    }
    if (optind != argc - 1)
        return img_usage("bench", "expected one FILE");
    int flags = bn.write ? BLK_O_RDWR : BLK_O_FORCE_SHARE, r = img_check_format("bench", fmt);
    if (r)
        return r;
    if (!strcmp(cache, "none"))
        flags |= BLK_O_DIRECT;
    else if (strcmp(cache, "writeback") && strcmp(cache, "unsafe"))
        return img_usage("bench", "cache mode is none or writeback, not '%s'", cache);
    if (!step_given)
        bn.step = bn.size;
    bn.pattern = (int)pattern;
    if (img_open(argv[optind], fmt, flags, &bn.b))
        return IMG_ERR;
    if (bn.size > blk_length(bn.b)) {
        blk_close(bn.b);
        return img_fail("%s: requests of %llu bytes do not fit the image", argv[optind],
                        (unsigned long long)bn.size);
    }
    bn.image = blk_length(bn.b);
    if (!quiet)
        printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset %llu, step "
               "size %llu)\n",
               (unsigned long long)bn.count, bn.write ? "write" : "read", (unsigned long long)bn.size,
               (unsigned long long)depth, (unsigned long long)bn.start, (unsigned long long)bn.step);
    if (!quiet && bn.flush_every && bn.write)
        printf("Sending flush every %llu requests\n", (unsigned long long)bn.flush_every);
    double secs = bench_run(&bn, (unsigned)depth);
    if (bn.err)
        r = img_blk_fail(bn.b, bn.err, "bench");
    else if (!quiet)
        printf("Run completed in %3.3f seconds.\n", secs);
    blk_close(bn.b);
    return r ? IMG_ERR : IMG_OK;
}
