/* kvmbox img create, resize and snapshot: the commands that make or reshape an image's
 * metadata without copying guest data. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "cli/cli_img.h"

/* Up to this many -o arguments are merged, as qemu-img merges repeated -o. */
#define MAX_O_ARGS 16

/* The size of a backing file that create was given without a size, and its format when
 * none was named (written into FMT_OUT). */
static int backing_size(const char *image, const char *backing, const char *fmt, uint64_t *size,
                        char *fmt_out, size_t fmt_len)
{
    char path[4096];
    struct blk *b;
    img_resolve_backing(image, backing, path, sizeof(path));
    if (img_open(path, fmt, BLK_O_FORCE_SHARE, &b))
        return IMG_ERR;
    struct blk_info i;
    int r = blk_get_info(b, &i);
    *size = blk_length(b);
    snprintf(fmt_out, fmt_len, "%s", r == 0 ? i.format : "raw");
    blk_close(b);
    return 0;
}

/* qemu-img's confirmation line, with the options that apply to the format. */
static void print_formatting(const char *path, const char *fmt, uint64_t size,
                             const struct blk_create_opts *o)
{
    printf("Formatting '%s', fmt=%s", path, fmt);
    if (!strcmp(fmt, "qcow2"))
        printf(" cluster_size=%u compat=%s%s", o->cluster_size ? o->cluster_size : 65536,
               o->qcow2_version == 2 ? "0.10" : "1.1",
               o->preallocate_metadata ? " preallocation=metadata" : "");
    printf(" size=%llu", (unsigned long long)size);
    if (o->backing_file)
        printf(" backing_file=%s", o->backing_file);
    if (o->backing_format)
        printf(" backing_fmt=%s", o->backing_format);
    if (!strcmp(fmt, "qcow2"))
        printf(" lazy_refcounts=%s refcount_bits=%u", o->lazy_refcounts ? "on" : "off",
               o->refcount_bits ? o->refcount_bits : 16);
    printf("\n");
}

/* Whether preallocation=metadata took effect: the first cluster is allocated in the new
 * image. The create interface has the option, but a driver may not honour it yet; the
 * user should hear that rather than believe the metadata is there. */
static bool metadata_preallocated(const char *path, uint64_t size)
{
    struct blk *b;
    char err[BLK_ERRMSG_MAX];
    uint64_t pnum, host;
    unsigned st = 0;
    if (!size ||
        blk_open(path, "qcow2", BLK_O_FORCE_SHARE | BLK_O_NO_BACKING, &b, NULL, err, sizeof(err)) < 0)
        return true; /* nothing to preallocate, or nothing to say beyond what create said */
    int r = blk_block_status(b, 0, size, &pnum, &st, &host);
    blk_close(b);
    return r < 0 || (st & BLK_STATUS_ALLOCATED);
}

int img_cmd_create(int argc, char **argv)
{
    const char *fmt = "raw";
    char *oargs[MAX_O_ARGS];
    int noargs = 0;
    bool quiet = false;
    struct blk_create_opts o = { 0 };
    optind = 0;
    for (int c; (c = getopt(argc, argv, "f:b:F:o:qu")) != -1;) {
        if (c == 'f')
            fmt = optarg;
        else if (c == 'b')
            o.backing_file = optarg;
        else if (c == 'F')
            o.backing_format = optarg;
        else if (c == 'o' && noargs < MAX_O_ARGS)
            oargs[noargs++] = optarg;
        else if (c == 'q')
            quiet = true;
        else if (c != 'u') /* -u: qemu's "backing file need not exist"; kvmbox reads it only for the size */
            return img_usage("create", "bad option or too many -o");
    }
    int r = img_check_format("create", fmt);
    if (r || (r = img_check_format("create", o.backing_format)))
        return r;
    if (!strcmp(fmt, "raw") && o.backing_file)
        return img_usage("create", "raw images cannot have a backing file (use -f qcow2)");
    for (int i = 0; i < noargs; i++)
        if ((r = img_parse_create_opts("create", oargs[i], fmt, &o)))
            return r;
    if (optind >= argc || argc - optind > 2)
        return img_usage("create", "expected FILE [SIZE]");
    const char *path = argv[optind];
    uint64_t size = 0;
    if (optind + 1 < argc && img_parse_size("create", "size", argv[optind + 1], &size))
        return IMG_USAGE;
    if (optind + 1 >= argc && !o.backing_file)
        return img_usage("create", "a size is needed when there is no backing file");
    char bfmt[16];
    if (o.backing_file && (optind + 1 >= argc || !o.backing_format)) {
        uint64_t bsize;
        if (backing_size(path, o.backing_file, o.backing_format, &bsize, bfmt, sizeof(bfmt)))
            return IMG_ERR;
        if (optind + 1 >= argc)
            size = bsize;
        if (!o.backing_format)
            o.backing_format = bfmt; /* recorded, so that nothing probes it later */
    }
    char err[BLK_ERRMSG_MAX] = "";
    if ((r = blk_create(path, fmt, size, &o, err, sizeof(err))) < 0)
        return img_fail("%s", *err ? err : strerror(-r));
    if (!quiet)
        print_formatting(path, fmt, size, &o);
    if (o.preallocate_metadata && !metadata_preallocated(path, size))
        fprintf(stderr, "kvmbox img: warning: preallocation=metadata had no effect (the qcow2 driver does "
                        "not preallocate yet)\n");
    return IMG_OK;
}

int img_cmd_resize(int argc, char **argv)
{
    static const struct option longopts[] = { { "shrink", no_argument, NULL, 'S' }, { 0 } };
    const char *fmt = NULL;
    bool shrink = false, quiet = false;
    /* The size is the last argument and may start with '-': take it before getopt sees it. */
    if (argc < 3)
        return img_usage("resize", "expected FILE [+|-]SIZE");
    const char *s = argv[--argc];
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "f:q", longopts, NULL)) != -1;) {
        if (c == 'f')
            fmt = optarg;
        else if (c == 'S')
            shrink = true;
        else if (c == 'q')
            quiet = true;
        else
            return img_usage("resize", "bad option");
    }
    if (optind != argc - 1)
        return img_usage("resize", "expected FILE [+|-]SIZE");
    int r = img_check_format("resize", fmt);
    if (r)
        return r;
    int sign = *s == '+' ? 1 : *s == '-' ? -1 : 0;
    uint64_t v;
    if (img_parse_size("resize", "size", sign ? s + 1 : s, &v))
        return IMG_USAGE;
    struct blk *b;
    if (img_open(argv[optind], fmt, BLK_O_RDWR | BLK_O_NO_BACKING, &b))
        return IMG_ERR;
    uint64_t cur = blk_length(b), want = v;
    if (sign < 0 && v > cur) {
        r = img_fail("cannot shrink %s by %s: it is only %llu bytes", argv[optind], s + 1,
                     (unsigned long long)cur);
    } else if (sign > 0 && __builtin_add_overflow(cur, v, &want)) {
        r = img_fail("%s: the new size overflows", argv[optind]);
    } else {
        if (sign < 0)
            want = cur - v;
        if ((r = blk_truncate(b, want, shrink)) < 0 || (r = blk_flush(b)) < 0)
            r = img_blk_fail(b, r, "resize");
        else if (!quiet)
            printf("Image resized.\n");
    }
    blk_close(b);
    return r ? IMG_ERR : IMG_OK;
}

int img_cmd_snapshot(int argc, char **argv)
{
    char op = 0;
    const char *name = NULL, *fmt = NULL;
    optind = 0;
    /* -q is accepted: the operations print nothing on success anyway. */
    for (int c; (c = getopt(argc, argv, "c:a:d:lf:qU")) != -1;) {
        if (c == 'c' || c == 'a' || c == 'd' || c == 'l') {
            if (op)
                return img_usage("snapshot", "give one of -c, -l, -a and -d");
            op = (char)c;
            name = optarg;
        } else if (c == 'f') {
            fmt = optarg;
        } else if (c != 'q' && c != 'U') {
            return img_usage("snapshot", "bad option");
        }
    }
    if (!op)
        op = 'l'; /* as qemu-img: no operation lists */
    if (optind != argc - 1)
        return img_usage("snapshot", "expected [-c NAME | -l | -a NAME | -d NAME] FILE");
    int r = img_check_format("snapshot", fmt);
    if (r)
        return r;
    struct blk *b;
    int flags = BLK_O_NO_BACKING | (op == 'l' ? BLK_O_FORCE_SHARE : BLK_O_RDWR);
    if (img_open(argv[optind], fmt, flags, &b))
        return IMG_ERR;
    if (op == 'l') {
        if ((r = img_print_snapshots(b)) < 0)
            r = img_blk_fail(b, r, "listing snapshots");
    } else {
        r = op == 'c'   ? blk_snapshot_create(b, name)
            : op == 'a' ? blk_snapshot_apply(b, name)
                        : blk_snapshot_delete(b, name);
        if (r == 0)
            r = blk_flush(b);
        if (r < 0) {
            const char *what = op == 'c'   ? "creating snapshot"
                               : op == 'a' ? "applying snapshot"
                                           : "deleting snapshot";
            char ctx[320];
            snprintf(ctx, sizeof(ctx), "%s '%s'", what, name);
            r = img_blk_fail(b, r, ctx);
        }
    }
    blk_close(b);
    return r ? IMG_ERR : IMG_OK;
}
