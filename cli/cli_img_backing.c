/* kvmbox img commit and rebase: the commands that move data between an image and its
 * backing file, or change which backing file it has. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "cli/cli_img.h"

#define CHUNK (2u << 20)

static int cache_flag(const char *cmd, const char *mode, int *flags)
{
    if (!strcmp(mode, "none"))
        *flags |= BLK_O_DIRECT;
    else if (strcmp(mode, "writeback") && strcmp(mode, "unsafe") && strcmp(mode, "writethrough"))
        return img_usage(cmd, "cache mode is none, writeback or unsafe, not '%s'", mode);
    return 0;
}

/* Copies what TOP itself holds (data and zero clusters) into BASE. */
static int commit_copy(struct blk *top, struct blk *base, uint8_t *buf)
{
    uint64_t size = blk_length(top);
    for (uint64_t off = 0; off < size;) {
        uint64_t n = size - off < CHUNK ? size - off : CHUNK, pnum, host;
        unsigned st;
        int r = blk_block_status(top, off, n, &pnum, &st, &host);
        if (r < 0)
            return img_blk_fail(top, r, "commit: block status");
        if (pnum == 0)
            return img_fail("commit: block status of the top image made no progress");
        if (st & BLK_STATUS_DATA) {
            if ((r = blk_pread(top, buf, pnum, off)) < 0)
                return img_blk_fail(top, r, "commit: reading the top image");
            if ((r = blk_pwrite(base, buf, pnum, off)) < 0)
                return img_blk_fail(base, r, "commit: writing the backing file");
        } else if ((st & BLK_STATUS_ALLOCATED) && (r = blk_write_zeroes(base, off, pnum, 0)) < 0) {
            return img_blk_fail(base, r, "commit: writing zeroes to the backing file");
        }
        off += pnum;
    }
    return 0;
}

/* The top image keeps its clusters afterwards (qemu-img commit -d): it reads the same either
 * way, and the qcow2 v3 discard of this block layer would turn them into zeroes rather
 * than let the backing file show through. */
int img_cmd_commit(int argc, char **argv)
{
    const char *fmt = NULL, *cache = "writeback";
    bool quiet = false;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "f:t:dpqU")) != -1;) {
        if (c == 'f')
            fmt = optarg;
        else if (c == 't')
            cache = optarg;
        else if (c == 'q')
            quiet = true;
        else if (c != 'd' && c != 'p' && c != 'U')
            return img_usage("commit", "bad option");
    }
    int flags = 0, r = img_check_format("commit", fmt);
    if (r || (r = cache_flag("commit", cache, &flags)))
        return r;
    if (optind != argc - 1)
        return img_usage("commit", "expected one FILE");
    const char *path = argv[optind];
    struct blk *top, *base;
    /* The whole chain first, unlocked: a loop is named as one (opened below, the backing
     * file's lock would clash with the image's own and blame "another process"). */
    if (img_open(path, fmt, BLK_O_FORCE_SHARE, &top))
        return IMG_ERR;
    blk_close(top);
    if (img_open(path, fmt, BLK_O_RDWR | BLK_O_NO_BACKING | flags, &top))
        return IMG_ERR;
    struct blk_info i;
    if ((r = blk_get_info(top, &i)) < 0 || !i.backing_file[0]) {
        r = r < 0 ? img_blk_fail(top, r, path) : img_fail("%s has no backing file to commit into", path);
        blk_close(top);
        return r;
    }
    char bpath[4096];
    const char *allowed, *allowed_fmt, *bfmt = i.backing_format[0] ? i.backing_format : NULL;
    if (img_untrusted(&allowed, &allowed_fmt))
        snprintf(bpath, sizeof(bpath), "%s", allowed), bfmt = allowed_fmt; /* checked by the open above */
    else
        img_resolve_backing(path, i.backing_file, bpath, sizeof(bpath));
    if (img_open(bpath, bfmt, BLK_O_RDWR | flags, &base)) {
        blk_close(top);
        return IMG_ERR;
    }
    uint8_t *buf = aligned_alloc(4096, CHUNK);
    if (!buf)
        r = img_fail("out of memory");
    else if (blk_length(base) < blk_length(top) && (r = blk_truncate(base, blk_length(top), false)) < 0)
        r = img_blk_fail(base, r, "commit: growing the backing file");
    else if ((r = commit_copy(top, base, buf)) == 0 && (r = blk_flush(base)) < 0)
        r = img_blk_fail(base, r, "commit: flushing the backing file");
    if (r == 0 && !quiet)
        printf("Image committed.\n");
    free(buf);
    blk_close(base);
    blk_close(top);
    return r ? IMG_ERR : IMG_OK;
}

struct rebase {
    struct blk *top, *newb; /* newb NULL: no backing file afterwards */
    uint8_t *old, *neu;
    uint32_t gran;
};

/* Reads [off, off+len) as the new backing file shows it (zeroes past its end). */
static int read_new(struct rebase *rb, uint64_t off, uint64_t len)
{
    memset(rb->neu, 0, len);
    uint64_t have = rb->newb && off < blk_length(rb->newb) ? blk_length(rb->newb) - off : 0;
    if (have > len)
        have = len;
    int r = have ? blk_pread(rb->newb, rb->neu, have, off) : 0;
    return r < 0 ? img_blk_fail(rb->newb, r, "rebase: reading the new backing file") : 0;
}

/* Whether all of [off, off+len) reads as zeroes from B (NULL: no backing file), known
 * without reading; past B's end counts as zeroes. */
static bool known_zero(struct blk *b, uint64_t off, uint64_t len)
{
    if (!b || off >= blk_length(b))
        return true;
    uint64_t pnum, want = blk_length(b) - off < len ? blk_length(b) - off : len;
    bool zero;
    return img_zero_run(b, off, want, &pnum, &zero) == 0 && zero && pnum >= want;
}

/* For a range TOP does not hold: writes into TOP every granule that would read differently
 * once the new backing file replaces the old one. */
static int rebase_range(struct rebase *rb, uint64_t off, uint64_t len)
{
    if (known_zero(rb->top, off, len) && known_zero(rb->newb, off, len))
        return 0; /* zeroes both ways: nothing to compare */
    int r = blk_pread(rb->top, rb->old, len, off);
    if (r < 0)
        return img_blk_fail(rb->top, r, "rebase: reading through the old backing file");
    if ((r = read_new(rb, off, len)))
        return r;
    for (uint64_t p = 0; p < len; p += rb->gran) {
        uint64_t m = len - p < rb->gran ? len - p : rb->gran;
        if (memcmp(rb->old + p, rb->neu + p, m) && (r = blk_pwrite(rb->top, rb->old + p, m, off + p)) < 0)
            return img_blk_fail(rb->top, r, "rebase: writing");
    }
    return 0;
}

static int rebase_copy(struct rebase *rb)
{
    uint64_t size = blk_length(rb->top);
    for (uint64_t off = 0; off < size;) {
        uint64_t n = size - off < CHUNK ? size - off : CHUNK, pnum, host;
        unsigned st;
        int r = blk_block_status(rb->top, off, n, &pnum, &st, &host);
        if (r < 0)
            return img_blk_fail(rb->top, r, "rebase: block status");
        if (pnum == 0)
            return img_fail("rebase: block status made no progress");
        if (!(st & BLK_STATUS_ALLOCATED) && (r = rebase_range(rb, off, pnum)))
            return r;
        off += pnum;
    }
    return 0;
}

/* The format to record for the new backing file: -F, else what probing finds. */
static void backing_format(const char *image, const char *backing, const char *given, char *out, size_t len)
{
    char path[4096];
    struct blk *b;
    *out = 0;
    if (given) {
        snprintf(out, len, "%s", given);
        return;
    }
    img_resolve_backing(image, backing, path, sizeof(path));
    char err[BLK_ERRMSG_MAX];
    if (blk_open(path, NULL, BLK_O_FORCE_SHARE | BLK_O_NO_BACKING, &b, NULL, err, sizeof(err)) == 0) {
        struct blk_info i;
        if (blk_get_info(b, &i) == 0)
            snprintf(out, len, "%s", i.format);
        blk_close(b);
    }
}

/* rebase -u rewrites the name only; the safe rebase first copies into the image whatever
 * would read differently through the new backing file. */
int img_cmd_rebase(int argc, char **argv)
{
    const char *fmt = NULL, *nb = NULL, *nbf = NULL, *cache = "writeback";
    bool unsafe = false;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "f:b:F:t:T:upqU")) != -1;) {
        if (c == 'f')
            fmt = optarg;
        else if (c == 'b')
            nb = optarg;
        else if (c == 'F')
            nbf = optarg;
        else if (c == 't')
            cache = optarg;
        else if (c == 'u')
            unsafe = true;
        else if (c != 'p' && c != 'q' && c != 'T' && c != 'U')
            return img_usage("rebase", "bad option");
    }
    int flags = 0, r = img_check_format("rebase", fmt);
    if (r || (r = img_check_format("rebase", nbf)) || (r = cache_flag("rebase", cache, &flags)))
        return r;
    if (!nb || optind != argc - 1)
        return img_usage("rebase", "expected -b BACKING (\"\" for none) and one FILE");
    const char *path = argv[optind];
    struct rebase rb = { 0 };
    if (img_open(path, fmt, BLK_O_RDWR | flags | (unsafe ? BLK_O_NO_BACKING : 0), &rb.top))
        return IMG_ERR;
    char nbpath[4096], fmtbuf[16];
    backing_format(path, nb, nbf, fmtbuf, sizeof(fmtbuf));
    struct blk_info i;
    if (!unsafe && *nb) {
        img_resolve_backing(path, nb, nbpath, sizeof(nbpath));
        r = img_open(nbpath, *fmtbuf ? fmtbuf : NULL, BLK_O_FORCE_SHARE, &rb.newb);
    }
    if (r == 0 && !unsafe) {
        rb.gran = blk_get_info(rb.top, &i) == 0 && i.cluster_size ? i.cluster_size : 65536;
        rb.old = malloc(CHUNK);
        rb.neu = malloc(CHUNK);
        r = rb.old && rb.neu ? rebase_copy(&rb) : img_fail("out of memory");
    }
    if (r == 0 && (r = blk_set_backing(rb.top, *nb ? nb : NULL, *nb && *fmtbuf ? fmtbuf : NULL)) < 0)
        r = img_blk_fail(rb.top, r, "rebase");
    if (r == 0 && (r = blk_flush(rb.top)) < 0)
        r = img_blk_fail(rb.top, r, "rebase");
    free(rb.old);
    free(rb.neu);
    if (rb.newb)
        blk_close(rb.newb);
    blk_close(rb.top);
    return r ? IMG_ERR : IMG_OK;
}
