/* kvmbox img compare: do two images show the guest the same bytes? Runs both sides know
 * to be zero are skipped without reading. Exit statuses as qemu-img compare: 0 identical,
 * 1 different (the first differing offset is printed), 2 an image cannot be opened,
 * 3 block status failed, 4 a read failed. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "cli/cli_img.h"

#define CHUNK (2u << 20)

enum { CMP_SAME = 0, CMP_DIFFERENT = 1, CMP_OPEN_ERROR = 2, CMP_STATUS_ERROR = 3, CMP_READ_ERROR = 4 };

struct side {
    struct blk *b;
    const char *name;
    uint8_t *buf;
};

/* Reads [off, off+len) of S into its buffer, or zeroes when ZERO says it reads as zeroes. */
static int fetch(struct side *s, uint64_t off, uint64_t len, bool zero)
{
    if (zero) {
        memset(s->buf, 0, len);
        return 0;
    }
    int r = blk_pread(s->b, s->buf, len, off);
    if (r < 0) {
        char what[4200];
        snprintf(what, sizeof(what), "reading %s", s->name);
        img_blk_fail(s->b, r, what);
    }
    return r;
}

static int status_failed(struct side *s, int r)
{
    char what[4200];
    snprintf(what, sizeof(what), "block status of %s", s->name);
    img_blk_fail(s->b, r, what);
    return CMP_STATUS_ERROR;
}

/* Compares [0, end) of both; *first gets the first differing offset. */
static int compare_common(struct side *a, struct side *b, uint64_t end, uint64_t *first)
{
    for (uint64_t pos = 0; pos < end;) {
        uint64_t n = end - pos < CHUNK ? end - pos : CHUNK, pa, pb;
        bool za, zb;
        int r;
        if ((r = img_zero_run(a->b, pos, n, &pa, &za)) < 0)
            return status_failed(a, r);
        if ((r = img_zero_run(b->b, pos, n, &pb, &zb)) < 0)
            return status_failed(b, r);
        n = pa < pb ? pa : pb;
        if (!(za && zb)) {
            if (fetch(a, pos, n, za) < 0 || fetch(b, pos, n, zb) < 0)
                return CMP_READ_ERROR;
            if (memcmp(a->buf, b->buf, n)) {
                uint64_t i = 0;
                while (a->buf[i] == b->buf[i])
                    i++;
                *first = pos + i;
                return CMP_DIFFERENT;
            }
        }
        pos += n;
    }
    return CMP_SAME;
}

/* The part of the longer image past the shorter one must read as zeroes. */
static int compare_tail(struct side *s, uint64_t start, uint64_t *first)
{
    for (uint64_t pos = start, end = blk_length(s->b); pos < end;) {
        uint64_t n = end - pos < CHUNK ? end - pos : CHUNK;
        bool zero;
        int r = img_zero_run(s->b, pos, n, &n, &zero);
        if (r < 0)
            return status_failed(s, r);
        if (!zero) {
            if (fetch(s, pos, n, false) < 0)
                return CMP_READ_ERROR;
            if (!img_all_zero(s->buf, n)) {
                uint64_t i = 0;
                while (!s->buf[i])
                    i++;
                *first = pos + i;
                return CMP_DIFFERENT;
            }
        }
        pos += n;
    }
    return CMP_SAME;
}

int img_cmd_compare(int argc, char **argv)
{
    const char *fa = NULL, *fb = NULL;
    bool strict = false, quiet = false;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "f:F:sqpT:U")) != -1;) {
        if (c == 'f')
            fa = optarg;
        else if (c == 'F')
            fb = optarg;
        else if (c == 's')
            strict = true;
        else if (c == 'q')
            quiet = true;
        else if (c != 'p' && c != 'T' && c != 'U')
            return img_usage("compare", "bad option");
    }
    if (optind != argc - 2)
        return img_usage("compare", "expected FILE1 FILE2");
    int r = img_check_format("compare", fa);
    if (r || (r = img_check_format("compare", fb)))
        return r;
    struct side a = { .name = argv[optind] }, b = { .name = argv[optind + 1] };
    if (img_open(a.name, fa, BLK_O_FORCE_SHARE, &a.b))
        return CMP_OPEN_ERROR;
    if (img_open(b.name, fb, BLK_O_FORCE_SHARE, &b.b)) {
        blk_close(a.b);
        return CMP_OPEN_ERROR;
    }
    uint64_t sa = blk_length(a.b), sb = blk_length(b.b), first = 0;
    a.buf = malloc(CHUNK);
    b.buf = malloc(CHUNK);
    if (!a.buf || !b.buf) {
        img_fail("out of memory");
        r = CMP_READ_ERROR;
    } else if (strict && sa != sb) {
        if (!quiet)
            printf("Strict mode: Image size mismatch!\n");
        r = CMP_DIFFERENT;
    } else if ((r = compare_common(&a, &b, sa < sb ? sa : sb, &first)) == CMP_SAME && sa != sb) {
        if (!quiet)
            printf("Warning: Image size mismatch!\n");
        r = compare_tail(sa > sb ? &a : &b, sa < sb ? sa : sb, &first);
    }
    /* qemu-img names the 512-byte sector that differs; so do we, for scripts that parse it */
    if (r == CMP_DIFFERENT && !quiet && !(strict && sa != sb))
        printf("Content mismatch at offset %llu!\n", (unsigned long long)(first & ~511ULL));
    else if (r == CMP_SAME && !quiet)
        printf("Images are identical.\n");
    free(a.buf);
    free(b.buf);
    blk_close(a.b);
    blk_close(b.b);
    return r;
}
