/* kvmbox img convert: copy an image (through its backing chain) into a new one. Runs that
 * read as zeroes are never written, so outputs stay sparse; with -c every data cluster is
 * written compressed. Several workers copy different chunks at once (like qemu-img's -m):
 * that overlaps reads with writes under cache=none and spreads compression over the CPUs. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"
#include "cli/cli_img.h"
#include "common/util.h"

#define CHUNK       (2u << 20) /* what one worker claims at a time */
#define MAX_WORKERS 16
#define MAX_O_ARGS  16

struct convert {
    struct blk *src, *dst;
    const char *src_name, *dst_name;
    uint64_t size;
    uint32_t gran; /* unit of zero detection and of writes: the target's cluster */
    bool compress; /* every data granule goes out through blk_write_compressed */
    bool existing; /* -n: the target may hold old data, so zeroes must be written */
    bool sparse;   /* skip zeroes (-S 0 turns it off) */
    bool progress;
    pthread_mutex_t lock; /* guards the fields below */
    uint64_t next, done;
    int err;
    bool reported;
};

static uint64_t align_down(uint64_t v, uint64_t a)
{
    return v - v % a;
}

/* A zero range: nothing to do in a fresh image; an existing one gets zeroes written. */
static int put_zeroes(struct convert *c, uint64_t off, uint64_t len)
{
    return c->existing ? blk_write_zeroes(c->dst, off, len, BLK_ZERO_MAY_UNMAP) : 0;
}

/* Writes LEN bytes of BUF at OFF, granule by granule: all-zero granules are skipped,
 * consecutive data granules go out as one request (or one compressed cluster each). */
static int put_data(struct convert *c, const uint8_t *buf, uint64_t off, uint64_t len)
{
    int r = 0;
    for (uint64_t p = 0; r == 0 && p < len;) {
        uint64_t m = len - p < c->gran ? len - p : c->gran;
        if (c->sparse && img_all_zero(buf + p, m)) {
            r = put_zeroes(c, off + p, m);
            p += m;
        } else if (c->compress) {
            r = blk_write_compressed(c->dst, off + p, buf + p, m);
            p += m;
        } else {
            uint64_t run = m;
            while (p + run < len) {
                uint64_t k = len - p - run < c->gran ? len - p - run : c->gran;
                if (c->sparse && img_all_zero(buf + p + run, k))
                    break;
                run += k;
            }
            r = blk_pwrite(c->dst, buf + p, run, off + p);
            p += run;
        }
    }
    return r;
}

/* Copies [off, off+len) (granule-aligned, at most CHUNK): known-zero runs of at least a
 * granule by block status alone, the rest by reading. *src_failed says which side failed. */
static int convert_range(struct convert *c, uint8_t *buf, uint64_t off, uint64_t len, bool *src_failed)
{
    uint64_t end = off + len;
    for (uint64_t pos = off; pos < end;) {
        uint64_t pnum, stop;
        bool zero = false;
        int r = c->sparse ? img_zero_run(c->src, pos, end - pos, &pnum, &zero) : 0;
        if (!c->sparse)
            pnum = end - pos;
        if (r < 0) {
            *src_failed = true;
            return r;
        }
        if (zero) {
            stop = pos + pnum == end ? end : align_down(pos + pnum, c->gran);
            if (stop > pos) {
                if ((r = put_zeroes(c, pos, stop - pos)) < 0)
                    return r;
                pos = stop;
                continue;
            }
            pnum = c->gran; /* a zero run shorter than a granule: read it with its neighbours */
        }
        stop = pos + pnum >= end ? end : align_down(pos + pnum + c->gran - 1, c->gran);
        if (stop > end)
            stop = end;
        if ((r = blk_pread(c->src, buf, stop - pos, pos)) < 0) {
            *src_failed = true;
            return r;
        }
        if ((r = put_data(c, buf, pos, stop - pos)) < 0)
            return r;
        pos = stop;
    }
    return 0;
}

static void show_progress(const struct convert *c)
{
    if (c->progress)
        fprintf(stderr, "\r    (%.2f/100%%)", c->size ? 100.0 * (double)c->done / (double)c->size : 100.0);
}

static void *convert_worker(void *arg)
{
    struct convert *c = arg;
    uint8_t *buf = aligned_alloc(4096, CHUNK);
    for (;;) {
        pthread_mutex_lock(&c->lock);
        if (!buf && !c->err)
            c->err = -ENOMEM;
        if (c->err || c->next >= c->size) {
            pthread_mutex_unlock(&c->lock);
            break;
        }
        uint64_t off = c->next, len = c->size - off < CHUNK ? c->size - off : CHUNK;
        c->next += len;
        pthread_mutex_unlock(&c->lock);

        bool src_failed = false;
        int r = convert_range(c, buf, off, len, &src_failed);

        pthread_mutex_lock(&c->lock);
        if (r < 0 && !c->err) {
            c->err = r;
            c->reported = true; /* one message: the first failure */
            img_blk_fail(src_failed ? c->src : c->dst, r, src_failed ? c->src_name : c->dst_name);
        }
        c->done += len;
        show_progress(c);
        pthread_mutex_unlock(&c->lock);
    }
    free(buf);
    return NULL;
}

/* Runs NW workers over the whole image; returns the first error. */
static int convert_run(struct convert *c, int nw)
{
    pthread_t th[MAX_WORKERS];
    int started = 0;
    pthread_mutex_init(&c->lock, NULL);
    for (; started < nw; started++)
        if (pthread_create(&th[started], NULL, convert_worker, c))
            break;
    if (!started)
        convert_worker(c); /* no threads to be had: do it here */
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&c->lock);
    if (c->progress)
        fputc('\n', stderr);
    return c->err;
}

static int cache_flags(const char *cmd, const char *mode, int *flags, bool *unsafe)
{
    if (!strcmp(mode, "none") || !strcmp(mode, "directsync"))
        *flags |= BLK_O_DIRECT;
    else if (!strcmp(mode, "unsafe"))
        *unsafe = true;
    else if (strcmp(mode, "writeback") && strcmp(mode, "writethrough"))
        return img_usage(cmd, "cache mode is none, writeback or unsafe, not '%s'", mode);
    return 0;
}

/* Whether PATH is one of the files SRC reads from (itself or a backing file): creating the
 * target would truncate it under the conversion, and the source is opened without a lock. */
static bool target_is_source(const char *path, struct blk *src)
{
    struct stat t, s;
    if (stat(path, &t) < 0)
        return false;
    for (struct blk *l = src; l; l = blk_backing(l)) {
        struct blk_info i;
        if (blk_get_info(l, &i) == 0 && stat(i.filename, &s) == 0 && s.st_dev == t.st_dev &&
            s.st_ino == t.st_ino)
            return true;
    }
    return false;
}

/* Creates (unless -n) and opens the target. */
static int open_target(struct convert *c, const char *fmt, struct blk_create_opts *o, int flags)
{
    if (!c->existing) {
        char err[BLK_ERRMSG_MAX] = "";
        int r = blk_create(c->dst_name, fmt, c->size, o, err, sizeof(err));
        if (r < 0)
            return img_fail("%s", *err ? err : strerror(-r));
        /* Useless unless complete: no ordering syncs on the way, one flush at the end. */
        flags |= BLK_O_UNORDERED;
    }
    if (img_open(c->dst_name, fmt, BLK_O_RDWR | flags, &c->dst))
        return IMG_ERR;
    if (blk_length(c->dst) < c->size) {
        img_fail("%s is smaller than %s", c->dst_name, c->src_name);
        blk_close(c->dst);
        return IMG_ERR;
    }
    struct blk_info i;
    if (blk_get_info(c->dst, &i) == 0 && i.cluster_size)
        c->gran = i.cluster_size;
    return 0;
}

int img_cmd_convert(int argc, char **argv)
{
    const char *ifmt = NULL, *ofmt = "raw", *tcache = "writeback", *scache = "writeback";
    char *oargs[MAX_O_ARGS];
    int noargs = 0, dflags = 0, sflags = 0;
    uint64_t workers = 8, sparse = 4096;
    bool unsafe = false, ignored = false, quiet = false;
    struct convert c = { .sparse = true };
    struct blk_create_opts o = { 0 };
    optind = 0;
    for (int ch; (ch = getopt(argc, argv, "f:O:cpqno:S:t:T:m:WU")) != -1;) {
        int bad = 0;
        switch (ch) {
        case 'f': ifmt = optarg; break;
        case 'O': ofmt = optarg; break;
        case 'c': c.compress = true; break;
        case 'p': c.progress = true; break;
        case 'q': quiet = true; break;
        case 'n': c.existing = true; break;
        case 'o':
            bad = noargs == MAX_O_ARGS;
            if (!bad)
                oargs[noargs++] = optarg;
            break;
        case 'S': bad = img_parse_size("convert", "-S", optarg, &sparse); break;
        case 't': tcache = optarg; break;
        case 'T': scache = optarg; break;
        case 'm': bad = parse_uint(optarg, 1, MAX_WORKERS, &workers) < 0; break;
        case 'W':
        case 'U': break; /* out-of-order writes are the default; reads share anyway */
        default: return img_usage("convert", "bad option");
        }
        if (bad)
            return img_usage("convert", "bad value for -%c", ch);
    }
    int r = img_check_format("convert", ifmt);
    if (r || (r = img_check_format("convert", ofmt)))
        return r;
    if (optind != argc - 2)
        return img_usage("convert", "expected SOURCE and TARGET");
    if (c.compress && strcmp(ofmt, "qcow2"))
        return img_usage("convert", "-c needs -O qcow2");
    if (sparse % 512 || sparse > CHUNK)
        return img_usage("convert", "-S must be a multiple of 512 up to 2M");
    if ((r = cache_flags("convert", tcache, &dflags, &unsafe)) ||
        (r = cache_flags("convert", scache, &sflags, &ignored)))
        return r;
    for (int i = 0; i < noargs; i++)
        if ((r = img_parse_create_opts("convert", oargs[i], ofmt, &o)))
            return r;
    c.src_name = argv[optind];
    c.dst_name = argv[optind + 1];
    c.sparse = sparse > 0;
    c.gran = sparse ? (uint32_t)sparse : 65536;
    c.progress = c.progress && !quiet && isatty(STDERR_FILENO);
    if (img_open(c.src_name, ifmt, BLK_O_FORCE_SHARE | sflags, &c.src))
        return IMG_ERR;
    c.size = blk_length(c.src);
    if (target_is_source(c.dst_name, c.src)) {
        blk_close(c.src);
        return img_fail("%s: the target is the source or one of its backing files", c.dst_name);
    }
    if (open_target(&c, ofmt, &o, dflags)) {
        blk_close(c.src);
        return IMG_ERR;
    }
    r = convert_run(&c, (int)workers);
    if (r == 0 && !unsafe && (r = blk_flush(c.dst)) < 0)
        img_blk_fail(c.dst, r, c.dst_name);
    else if (r < 0 && !c.reported)
        img_blk_fail(c.dst, r, c.dst_name);
    blk_close(c.dst);
    blk_close(c.src);
    return r < 0 ? IMG_ERR : IMG_OK;
}
