/* kvmbox img: create, info, convert, check, compare, map and resize, with qemu-img's
 * option names and exit statuses, on kvmbox's block layer. */
#include "block/cli_img.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/block.h"
#include "vmm/util.h"

#define CHUNK (2u << 20)

static const char img_usage[] =
    "usage: kvmbox img <command> [options]\n"
    "  create [-f raw|qcow2] [-b BACKING [-F FMT]] [-o cluster_size=N,compat=0.10|1.1,lazy_refcounts=on,refcount_bits=N] FILE [SIZE]\n"
    "  info [-f FMT] [--output human|json] [--backing-chain] FILE\n"
    "  convert [-f FMT] [-O raw|qcow2] [-c] [-p] [-o OPTIONS] [-t none|writeback|unsafe] SRC DST\n"
    "  check [-f FMT] [-r leaks|all] FILE\n"
    "  compare [-f FMT] [-F FMT] FILE1 FILE2\n"
    "  map [-f FMT] [--output human|json] FILE\n"
    "  resize [-f FMT] [--shrink] FILE [+|-]SIZE\n"
    "  snapshot [-c NAME | -l | -a NAME | -d NAME] FILE\n"
    "  commit [-f FMT] FILE\n"
    "  rebase [-f FMT] [-u] -b BACKING [-F FMT] FILE\n"
    "  bench [-f FMT] [-t none|writeback] [-c COUNT] [-d DEPTH] [-s SIZE] [-o OFFSET] [-S STEP] [-w] FILE\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kvmbox img: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int usage_error(const char *what)
{
    fprintf(stderr, "kvmbox img: %s (see kvmbox img --help)\n", what);
    return 2;
}

/* -o key=value,... */
static int parse_create_opts(const char *s, struct blk_create_opts *o)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *save, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return usage_error("-o takes key=value pairs");
        *eq++ = 0;
        uint64_t v;
        if (!strcmp(kv, "cluster_size") && parse_size(eq, &v) == 0 && v <= (2u << 20))
            o->cluster_size = (uint32_t)v;
        else if (!strcmp(kv, "compat") && (!strcmp(eq, "0.10") || !strcmp(eq, "v2")))
            o->qcow2_version = 2;
        else if (!strcmp(kv, "compat") && (!strcmp(eq, "1.1") || !strcmp(eq, "v3")))
            o->qcow2_version = 3;
        else if (!strcmp(kv, "lazy_refcounts"))
            o->lazy_refcounts = !strcmp(eq, "on");
        else if (!strcmp(kv, "refcount_bits") && parse_uint(eq, 1, 64, &v) == 0)
            o->refcount_bits = (uint32_t)v;
        else if (!strcmp(kv, "preallocation") && !strcmp(eq, "off"))
            ;
        else {
            fprintf(stderr, "kvmbox img: unsupported option %s=%s\n", kv, eq);
            return 2;
        }
    }
    return 0;
}

static int open_image(const char *path, const char *fmt, int flags, struct blk **b)
{
    char err[BLK_ERRMSG_MAX];
    bool raw = false;
    if (blk_open(path, fmt, flags, b, &raw, err, sizeof(err)) < 0)
        return fail("%s", err);
    return 0;
}

static int cmd_create(int argc, char **argv)
{
    const char *fmt = "raw", *backing = NULL, *bfmt = NULL;
    struct blk_create_opts o = { 0 };
    optind = 0;
    for (int c; (c = getopt(argc, argv, "+f:b:F:o:")) != -1;) {
        if (c == 'f') fmt = optarg;
        else if (c == 'b') backing = optarg;
        else if (c == 'F') bfmt = optarg;
        else if (c == 'o') { int r = parse_create_opts(optarg, &o); if (r) return r; }
        else return usage_error("bad option for create");
    }
    if (optind >= argc)
        return usage_error("create needs a file name");
    const char *path = argv[optind];
    uint64_t size = 0;
    if (optind + 1 < argc && parse_size(argv[optind + 1], &size) < 0)
        return usage_error("invalid size (use K, M, G or T suffixes)");
    if (optind + 1 >= argc && !backing)
        return usage_error("create needs a size");
    o.backing_file = backing;
    o.backing_format = bfmt;
    if (backing && !size) { /* the backing file's size */
        struct blk *b;
        char bpath[4096];
        if (backing[0] != '/' && strchr(path, '/'))
            snprintf(bpath, sizeof(bpath), "%.*s/%s", (int)(strrchr(path, '/') - path), path, backing);
        else
            snprintf(bpath, sizeof(bpath), "%s", backing);
        if (open_image(bpath, bfmt, BLK_O_FORCE_SHARE, &b))
            return 1;
        size = blk_length(b);
        if (!bfmt) {
            struct blk_info i;
            blk_get_info(b, &i);
            static char f[16];
            snprintf(f, sizeof(f), "%s", i.format);
            o.backing_format = f;
        }
        blk_close(b);
    }
    char err[BLK_ERRMSG_MAX];
    if (blk_create(path, fmt, size, &o, err, sizeof(err)) < 0)
        return fail("%s", err);
    printf("Formatting '%s', fmt=%s size=%llu\n", path, fmt, (unsigned long long)size);
    return 0;
}

static void print_snapshots(struct blk *b);

static struct json_object *info_json(struct blk *b)
{
    struct blk_info i;
    blk_get_info(b, &i);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "filename", json_object_new_string(i.filename));
    json_object_object_add(o, "format", json_object_new_string(i.format));
    json_object_object_add(o, "virtual-size", json_object_new_int64((int64_t)i.virtual_size));
    json_object_object_add(o, "actual-size", json_object_new_int64((int64_t)i.disk_size));
    json_object_object_add(o, "dirty-flag", json_object_new_boolean(i.dirty));
    if (i.cluster_size)
        json_object_object_add(o, "cluster-size", json_object_new_int64(i.cluster_size));
    if (i.backing_file[0]) {
        json_object_object_add(o, "backing-filename", json_object_new_string(i.backing_file));
        if (i.backing_path[0])
            json_object_object_add(o, "full-backing-filename", json_object_new_string(i.backing_path));
        if (i.backing_format[0])
            json_object_object_add(o, "backing-filename-format", json_object_new_string(i.backing_format));
    }
    if (!strcmp(i.format, "qcow2")) {
        struct json_object *d = json_object_new_object(), *fs = json_object_new_object();
        json_object_object_add(d, "compat", json_object_new_string(i.qcow2_version >= 3 ? "1.1" : "0.10"));
        json_object_object_add(d, "refcount-bits", json_object_new_int((int)i.refcount_bits));
        json_object_object_add(d, "corrupt", json_object_new_boolean(i.corrupt));
        json_object_object_add(d, "lazy-refcounts", json_object_new_boolean(i.lazy_refcounts));
        json_object_object_add(fs, "type", json_object_new_string("qcow2"));
        json_object_object_add(fs, "data", d);
        json_object_object_add(o, "format-specific", fs);
        struct json_object *sn = json_object_new_array();
        struct blk_snapshot s[64];
        int n = blk_snapshot_list(b, s, 64);
        for (int k = 0; k < n && k < 64; k++) {
            struct json_object *e = json_object_new_object();
            json_object_object_add(e, "id", json_object_new_string(s[k].id));
            json_object_object_add(e, "name", json_object_new_string(s[k].name));
            json_object_object_add(e, "vm-state-size", json_object_new_int64((int64_t)s[k].vm_state_size));
            json_object_object_add(e, "date-sec", json_object_new_int64(s[k].date_sec));
            json_object_object_add(e, "date-nsec", json_object_new_int64(s[k].date_nsec));
            json_object_array_add(sn, e);
        }
        json_object_object_add(o, "snapshots", sn);
    }
    return o;
}

static void info_human(struct blk *b)
{
    struct blk_info i;
    char vs[32], ds[32];
    blk_get_info(b, &i);
    format_size(i.virtual_size, vs, sizeof(vs));
    format_size(i.disk_size, ds, sizeof(ds));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n", i.filename,
           i.format, vs, (unsigned long long)i.virtual_size, ds);
    if (i.cluster_size)
        printf("cluster_size: %u\n", i.cluster_size);
    if (i.backing_file[0]) {
        printf("backing file: %s", i.backing_file);
        if (i.backing_path[0] && strcmp(i.backing_path, i.backing_file))
            printf(" (actual path: %s)", i.backing_path);
        printf("\n");
        if (i.backing_format[0])
            printf("backing file format: %s\n", i.backing_format);
    }
    if (!strcmp(i.format, "qcow2"))
        printf("Format specific information:\n    compat: %s\n    lazy refcounts: %s\n    refcount bits: %u\n"
               "    corrupt: %s\n    dirty: %s\n", i.qcow2_version >= 3 ? "1.1" : "0.10",
               i.lazy_refcounts ? "true" : "false", i.refcount_bits, i.corrupt ? "true" : "false",
               i.dirty ? "true" : "false");
    print_snapshots(b);
}

static int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = { { "output", required_argument, NULL, 'O' },
                                          { "backing-chain", no_argument, NULL, 'B' }, { 0 } };
    const char *fmt = NULL, *output = "human";
    bool chain = false;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "+f:U", opts, NULL)) != -1;) {
        if (c == 'f') fmt = optarg;
        else if (c == 'O') output = optarg;
        else if (c == 'B') chain = true;
        else if (c == 'U') ;
        else return usage_error("bad option for info");
    }
    if (optind != argc - 1)
        return usage_error("info needs one file name");
    if (strcmp(output, "human") && strcmp(output, "json"))
        return usage_error("--output is human or json");
    struct blk *b;
    if (open_image(argv[optind], fmt, BLK_O_FORCE_SHARE | (chain ? 0 : 0), &b))
        return 1;
    if (!strcmp(output, "json")) {
        struct json_object *o = chain ? json_object_new_array() : info_json(b);
        for (struct blk *l = b; chain && l; l = blk_backing(l))
            json_object_array_add(o, info_json(l));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
    } else {
        for (struct blk *l = b; l; l = chain ? blk_backing(l) : NULL) {
            info_human(l);
            if (chain && blk_backing(l))
                printf("\n");
        }
    }
    blk_close(b);
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1));
}

static void progress(bool on, uint64_t done, uint64_t total)
{
    if (on)
        fprintf(stderr, "\r    (%.2f/100%%)", total ? 100.0 * (double)done / (double)total : 100.0);
}

static int cmd_convert(int argc, char **argv)
{
    const char *ifmt = NULL, *ofmt = "raw", *cache = "writeback";
    bool compress = false, prog = false;
    struct blk_create_opts o = { 0 };
    optind = 0;
    for (int c; (c = getopt(argc, argv, "+f:O:cpo:t:T:U")) != -1;) {
        if (c == 'f') ifmt = optarg;
        else if (c == 'O') ofmt = optarg;
        else if (c == 'c') compress = true;
        else if (c == 'p') prog = isatty(STDERR_FILENO);
        else if (c == 'o') { int r = parse_create_opts(optarg, &o); if (r) return r; }
        else if (c == 't') cache = optarg;
        else if (c == 'T' || c == 'U') ;
        else return usage_error("bad option for convert");
    }
    if (optind != argc - 2)
        return usage_error("convert needs a source and a destination");
    if (compress && strcmp(ofmt, "qcow2"))
        return usage_error("-c needs -O qcow2");
    struct blk *src, *dst;
    if (open_image(argv[optind], ifmt, BLK_O_FORCE_SHARE, &src))
        return 1;
    uint64_t size = blk_length(src);
    char err[BLK_ERRMSG_MAX];
    if (blk_create(argv[optind + 1], ofmt, size, &o, err, sizeof(err)) < 0) {
        blk_close(src);
        return fail("%s", err);
    }
    /* The new image is only worth something once complete: no ordering syncs on the way,
     * one flush at the end (as qemu-img convert does). */
    int flags = BLK_O_RDWR | BLK_O_UNORDERED | (!strcmp(cache, "none") ? BLK_O_DIRECT : 0);
    if (open_image(argv[optind + 1], ofmt, flags, &dst)) {
        blk_close(src);
        return 1;
    }
    struct blk_info di;
    blk_get_info(dst, &di);
    uint32_t cs = di.cluster_size ? di.cluster_size : 65536;
    size_t chunk = CHUNK > cs ? CHUNK : cs;
    uint8_t *buf = aligned_alloc(4096, chunk);
    int r = buf ? 0 : -ENOMEM;
    for (uint64_t off = 0; r == 0 && off < size;) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        uint64_t pnum;
        unsigned st;
        uint64_t host;
        /* An unallocated or zero run in an image without backing needs no reading. */
        if (!blk_backing(src) && blk_block_status(src, off, n, &pnum, &st, &host) == 0 &&
            (!(st & BLK_STATUS_DATA)) && pnum > 0) {
            off += pnum;
            progress(prog, off, size);
            continue;
        }
        if ((r = blk_pread(src, buf, n, off)) < 0) {
            fail("reading %s: %s", argv[optind], blk_errmsg(src));
            break;
        }
        /* Zero clusters are skipped (the new image reads as zeroes already); runs of data
         * clusters go out as one write. */
        for (size_t p = 0; r == 0 && p < n;) {
            size_t m = n - p < cs ? n - p : cs;
            if (all_zero(buf + p, m)) {
                p += m;
                continue;
            }
            if (compress) {
                r = blk_write_compressed(dst, off + p, buf + p, m);
                p += m;
            } else {
                size_t run = m;
                while (p + run < n && !all_zero(buf + p + run, n - p - run < cs ? n - p - run : cs))
                    run += n - p - run < cs ? n - p - run : cs;
                r = blk_pwrite(dst, buf + p, run, off + p);
                p += run;
            }
            if (r < 0)
                fail("writing %s: %s", argv[optind + 1], blk_errmsg(dst));
        }
        off += n;
        progress(prog, off, size);
    }
    if (r == 0 && (r = blk_flush(dst)) < 0)
        fail("flushing %s: %s", argv[optind + 1], blk_errmsg(dst));
    if (prog)
        fputc('\n', stderr);
    free(buf);
    blk_close(dst);
    blk_close(src);
    return r < 0 ? 1 : 0;
}

static int cmd_check(int argc, char **argv)
{
    const char *fmt = NULL, *repair = NULL;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "+f:r:U")) != -1;) {
        if (c == 'f') fmt = optarg;
        else if (c == 'r') repair = optarg;
        else if (c == 'U') ;
        else return usage_error("bad option for check");
    }
    if (optind != argc - 1)
        return usage_error("check needs one file name");
    unsigned rep = 0;
    if (repair && !strcmp(repair, "leaks"))
        rep = BLK_REPAIR_LEAKS;
    else if (repair && !strcmp(repair, "all"))
        rep = BLK_REPAIR_LEAKS | BLK_REPAIR_ERRORS;
    else if (repair)
        return usage_error("-r takes leaks or all");
    struct blk *b;
    if (open_image(argv[optind], fmt, rep ? BLK_O_RDWR | BLK_O_NO_BACKING : BLK_O_FORCE_SHARE | BLK_O_NO_BACKING, &b))
        return 1;
    struct blk_check_result res;
    int r = blk_check(b, rep, &res);
    if (r < 0) {
        fail("check failed: %s", blk_errmsg(b));
        blk_close(b);
        return 1;
    }
    if (res.leaks_fixed || res.corruptions_fixed)
        printf("The following inconsistencies were found and repaired:\n\n    %llu leaked clusters\n    %llu corruptions\n\n",
               (unsigned long long)res.leaks_fixed, (unsigned long long)res.corruptions_fixed);
    uint64_t corrupt = res.corruptions - res.corruptions_fixed, leaks = res.leaks - res.leaks_fixed;
    if (corrupt) {
        printf("%llu errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
               (unsigned long long)corrupt);
        if (res.first_problem[0])
            printf("First: %s\n", res.first_problem);
    }
    if (leaks)
        printf("\n%llu leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
               (unsigned long long)leaks);
    if (!corrupt && !leaks)
        printf("No errors were found on the image.\n");
    struct blk_info i;
    blk_get_info(b, &i);
    if (res.total_clusters)
        printf("%llu/%llu = %.2f%% allocated, %.2f%% fragmented, %.2f%% compressed clusters\n",
               (unsigned long long)res.allocated_clusters, (unsigned long long)res.total_clusters,
               100.0 * (double)res.allocated_clusters / (double)res.total_clusters, 0.0,
               res.allocated_clusters ? 100.0 * (double)res.compressed_clusters / (double)res.allocated_clusters : 0.0);
    if (res.image_end_offset)
        printf("Image end offset: %llu\n", (unsigned long long)res.image_end_offset);
    blk_close(b);
    return corrupt ? 2 : leaks ? 3 : 0;
}

static int cmd_compare(int argc, char **argv)
{
    const char *fa = NULL, *fb = NULL;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "+f:F:U")) != -1;) {
        if (c == 'f') fa = optarg;
        else if (c == 'F') fb = optarg;
        else if (c == 'U') ;
        else { usage_error("bad option for compare"); return 2; }
    }
    if (optind != argc - 2) {
        usage_error("compare needs two file names");
        return 2;
    }
    struct blk *a, *b;
    if (open_image(argv[optind], fa, BLK_O_FORCE_SHARE, &a))
        return 2;
    if (open_image(argv[optind + 1], fb, BLK_O_FORCE_SHARE, &b)) {
        blk_close(a);
        return 2;
    }
    uint64_t sa = blk_length(a), sb = blk_length(b), max = sa > sb ? sa : sb;
    uint8_t *x = malloc(CHUNK), *y = malloc(CHUNK);
    int status = x && y ? 0 : 2;
    for (uint64_t off = 0; status == 0 && off < max; off += CHUNK) {
        size_t n = max - off < CHUNK ? (size_t)(max - off) : CHUNK;
        size_t na = off >= sa ? 0 : sa - off < n ? (size_t)(sa - off) : n;
        size_t nb = off >= sb ? 0 : sb - off < n ? (size_t)(sb - off) : n;
        memset(x, 0, n), memset(y, 0, n);
        if ((na && blk_pread(a, x, na, off) < 0) || (nb && blk_pread(b, y, nb, off) < 0)) {
            fail("read error during compare");
            status = 2;
            break;
        }
        if (memcmp(x, y, n)) {
            size_t i = 0;
            while (x[i] == y[i])
                i++;
            printf("Content mismatch at offset %llu!\n", (unsigned long long)(off + i));
            status = 1;
        }
    }
    if (status == 0)
        printf("Images are identical.\n");
    free(x), free(y);
    blk_close(a), blk_close(b);
    return status;
}

static int cmd_map(int argc, char **argv)
{
    static const struct option opts[] = { { "output", required_argument, NULL, 'O' }, { 0 } };
    const char *fmt = NULL, *output = "human";
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "+f:U", opts, NULL)) != -1;) {
        if (c == 'f') fmt = optarg;
        else if (c == 'O') output = optarg;
        else if (c == 'U') ;
        else return usage_error("bad option for map");
    }
    if (optind != argc - 1)
        return usage_error("map needs one file name");
    struct blk *b;
    if (open_image(argv[optind], fmt, BLK_O_FORCE_SHARE, &b))
        return 1;
    bool json = !strcmp(output, "json");
    struct json_object *arr = json_object_new_array();
    if (!json)
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    int r = 0;
    for (uint64_t off = 0; off < blk_length(b);) {
        uint64_t pnum = 0, host = 0;
        unsigned st = 0;
        int depth = 0;
        struct blk *l = b;
        /* Find the layer that decides this range. */
        for (; l; l = blk_backing(l), depth++) {
            if ((r = blk_block_status(l, off, blk_length(b) - off < blk_length(l) - off ? blk_length(b) - off : blk_length(l) - off, &pnum, &st, &host)) < 0)
                break;
            if (st & BLK_STATUS_ALLOCATED || !blk_backing(l) || off >= blk_length(blk_backing(l)))
                break;
        }
        if (r < 0 || !pnum)
            break;
        if (json) {
            struct json_object *o = json_object_new_object();
            json_object_object_add(o, "start", json_object_new_int64((int64_t)off));
            json_object_object_add(o, "length", json_object_new_int64((int64_t)pnum));
            json_object_object_add(o, "depth", json_object_new_int(depth));
            json_object_object_add(o, "present", json_object_new_boolean(st & BLK_STATUS_ALLOCATED));
            json_object_object_add(o, "zero", json_object_new_boolean(!(st & BLK_STATUS_DATA)));
            json_object_object_add(o, "data", json_object_new_boolean(st & BLK_STATUS_DATA));
            if (host && (st & BLK_STATUS_DATA) && !(st & BLK_STATUS_COMPRESSED))
                json_object_object_add(o, "offset", json_object_new_int64((int64_t)host));
            json_object_array_add(arr, o);
        } else if (st & BLK_STATUS_DATA) {
            printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)off, (unsigned long long)pnum,
                   (unsigned long long)host, l ? blk_errmsg(l)[0] ? argv[optind] : argv[optind] : argv[optind]);
        }
        off += pnum;
    }
    if (json)
        printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
    json_object_put(arr);
    blk_close(b);
    return r < 0 ? 1 : 0;
}

/* Copies what the top image itself holds into its backing file. The top image keeps its
 * clusters (as with qemu-img commit -d): its content reads the same either way. */
static int cmd_commit(int argc, char **argv)
{
    const char *fmt = NULL;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "+f:dqp")) != -1;)
        if (c == 'f') fmt = optarg;
        else if (c != 'd' && c != 'q' && c != 'p') return usage_error("bad option for commit");
    if (optind != argc - 1)
        return usage_error("commit needs one file name");
    struct blk *top, *base;
    if (open_image(argv[optind], fmt, BLK_O_RDWR | BLK_O_NO_BACKING, &top))
        return 1;
    struct blk_info i;
    blk_get_info(top, &i);
    if (!i.backing_file[0]) {
        blk_close(top);
        return fail("%s has no backing file", argv[optind]);
    }
    char bpath[4200];
    if (i.backing_file[0] == '/' || !strchr(argv[optind], '/'))
        snprintf(bpath, sizeof(bpath), "%s", i.backing_file);
    else
        snprintf(bpath, sizeof(bpath), "%.*s/%s", (int)(strrchr(argv[optind], '/') - argv[optind]), argv[optind], i.backing_file);
    if (open_image(bpath, i.backing_format[0] ? i.backing_format : NULL, BLK_O_RDWR, &base)) {
        blk_close(top);
        return 1;
    }
    uint8_t *buf = malloc(CHUNK);
    int r = buf ? 0 : -ENOMEM;
    uint64_t size = blk_length(top) < blk_length(base) ? blk_length(top) : blk_length(base);
    for (uint64_t off = 0; r == 0 && off < size;) {
        uint64_t n = size - off < CHUNK ? size - off : CHUNK, pnum, host;
        unsigned st;
        if ((r = blk_block_status(top, off, n, &pnum, &st, &host)) < 0)
            break;
        if (st & BLK_STATUS_DATA)
            r = blk_pread(top, buf, pnum, off) < 0 ? -EIO : blk_pwrite(base, buf, pnum, off);
        else if (st & BLK_STATUS_ZERO)
            r = blk_write_zeroes(base, off, pnum, 0);
        off += pnum;
    }
    if (r == 0)
        r = blk_flush(base);
    if (r < 0)
        fail("commit failed: %s %s", blk_errmsg(top), blk_errmsg(base));
    else
        printf("Image committed.\n");
    free(buf);
    blk_close(base);
    blk_close(top);
    return r < 0 ? 1 : 0;
}

/* rebase -u rewrites the name only; a safe rebase first copies into the image whatever would
 * read differently through the new backing file. */
static int cmd_rebase(int argc, char **argv)
{
    const char *fmt = NULL, *nb = NULL, *nbf = NULL;
    bool unsafe = false;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "+f:b:F:up")) != -1;) {
        if (c == 'f') fmt = optarg;
        else if (c == 'b') nb = optarg;
        else if (c == 'F') nbf = optarg;
        else if (c == 'u') unsafe = true;
        else if (c != 'p') return usage_error("bad option for rebase");
    }
    if (!nb || optind != argc - 1)
        return usage_error("rebase needs -b BACKING (\"\" for none) and a file");
    struct blk *top, *newb = NULL;
    if (open_image(argv[optind], fmt, BLK_O_RDWR | (unsafe ? BLK_O_NO_BACKING : 0), &top))
        return 1;
    int r = 0;
    if (!unsafe && *nb) {
        char path[4200];
        if (nb[0] == '/' || !strchr(argv[optind], '/'))
            snprintf(path, sizeof(path), "%s", nb);
        else
            snprintf(path, sizeof(path), "%.*s/%s", (int)(strrchr(argv[optind], '/') - argv[optind]), argv[optind], nb);
        if (open_image(path, nbf, BLK_O_FORCE_SHARE, &newb)) {
            blk_close(top);
            return 1;
        }
    }
    if (!unsafe) {
        uint8_t *a = malloc(CHUNK), *c = malloc(CHUNK);
        uint64_t size = blk_length(top);
        for (uint64_t off = 0; r == 0 && off < size;) {
            uint64_t n = size - off < CHUNK ? size - off : CHUNK, pnum, host;
            unsigned st;
            if ((r = blk_block_status(top, off, n, &pnum, &st, &host)) < 0)
                break;
            if (!(st & BLK_STATUS_ALLOCATED)) {
                uint64_t nlen = newb && off < blk_length(newb) ? (blk_length(newb) - off < pnum ? blk_length(newb) - off : pnum) : 0;
                memset(c, 0, pnum);
                if ((r = blk_pread(top, a, pnum, off)) == 0 && (!nlen || (r = blk_pread(newb, c, nlen, off)) == 0) &&
                    memcmp(a, c, pnum))
                    r = blk_pwrite(top, a, pnum, off);
            }
            off += pnum;
        }
        free(a), free(c);
    }
    if (r == 0 && !nbf && newb) {
        struct blk_info i;
        blk_get_info(newb, &i);
        static char f[16];
        snprintf(f, sizeof(f), "%s", i.format);
        nbf = f;
    }
    if (r == 0)
        r = blk_set_backing(top, *nb ? nb : NULL, nbf);
    if (r == 0)
        r = blk_flush(top);
    if (r < 0)
        fail("rebase failed: %s", blk_errmsg(top));
    blk_close(newb);
    blk_close(top);
    return r < 0 ? 1 : 0;
}

struct bench_job {
    struct blk *b;
    bool write;
    uint64_t size, step, start, image;
    uint64_t first, count; /* request numbers this thread issues */
    int err;
};

static void *bench_thread(void *arg)
{
    struct bench_job *j = arg;
    uint8_t *buf = aligned_alloc(4096, (j->size + 4095) & ~4095ULL);
    if (!buf) {
        j->err = -ENOMEM;
        return NULL;
    }
    memset(buf, 0xa5, j->size);
    uint64_t span = j->image - j->size;
    for (uint64_t i = j->first; i < j->first + j->count && !j->err; i++) {
        uint64_t off = span ? (j->start + i * j->step) % (span + 1) : 0;
        off &= ~511ULL;
        j->err = j->write ? blk_pwrite(j->b, buf, j->size, off) : blk_pread(j->b, buf, j->size, off);
    }
    free(buf);
    return NULL;
}

/* Like qemu-img bench: COUNT requests of SIZE bytes, DEPTH in flight (one thread each), at
 * offsets START + i * STEP (wrapping at the end of the image). */
static int cmd_bench(int argc, char **argv)
{
    const char *fmt = NULL, *cache = "writeback";
    uint64_t count = 75000, depth = 64, size = 4096, start = 0, step = 0;
    bool write = false;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "+f:t:c:d:s:o:S:wnq")) != -1;) {
        int bad = 0;
        if (c == 'f') fmt = optarg;
        else if (c == 't') cache = optarg;
        else if (c == 'c') bad = parse_uint(optarg, 1, UINT32_MAX, &count);
        else if (c == 'd') bad = parse_uint(optarg, 1, 1024, &depth);
        else if (c == 's') bad = parse_size(optarg, &size);
        else if (c == 'o') bad = parse_size(optarg, &start);
        else if (c == 'S') bad = parse_size(optarg, &step);
        else if (c == 'w') write = true;
        else if (c != 'n' && c != 'q') return usage_error("bad option for bench");
        if (bad)
            return usage_error("bad number for bench");
    }
    if (optind != argc - 1)
        return usage_error("bench needs one file name");
    if (!step)
        step = size;
    struct blk *b;
    int flags = (write ? BLK_O_RDWR : BLK_O_FORCE_SHARE) | (!strcmp(cache, "none") ? BLK_O_DIRECT : 0);
    if (open_image(argv[optind], fmt, flags, &b))
        return 1;
    if (size == 0 || size > blk_length(b)) {
        blk_close(b);
        return usage_error("request size must be between 1 and the image size");
    }
    printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset %llu, step size %llu)\n",
           (unsigned long long)count, write ? "write" : "read", (unsigned long long)size,
           (unsigned long long)depth, (unsigned long long)start, (unsigned long long)step);
    struct bench_job *jobs = calloc(depth, sizeof(*jobs));
    pthread_t *th = calloc(depth, sizeof(*th));
    uint64_t t0 = monotonic_ns(), per = count / depth, extra = count % depth, next = 0;
    for (uint64_t i = 0; i < depth; i++) {
        jobs[i] = (struct bench_job){ b, write, size, step, start, blk_length(b), next, per + (i < extra), 0 };
        next += jobs[i].count;
        pthread_create(&th[i], NULL, bench_thread, &jobs[i]);
    }
    int err = 0;
    for (uint64_t i = 0; i < depth; i++) {
        pthread_join(th[i], NULL);
        if (jobs[i].err)
            err = jobs[i].err;
    }
    if (!err && write)
        err = blk_flush(b);
    double secs = (double)(monotonic_ns() - t0) / 1e9;
    if (err)
        fail("bench: %s", blk_errmsg(b));
    else
        printf("Run completed in %.3f seconds.\n", secs);
    free(jobs), free(th);
    blk_close(b);
    return err ? 1 : 0;
}

static void print_snapshots(struct blk *b)
{
    struct blk_snapshot s[64];
    int n = blk_snapshot_list(b, s, 64);
    if (n <= 0)
        return;
    printf("Snapshot list:\n%-10s%-20s%10s%21s%16s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK");
    for (int i = 0; i < n && i < 64; i++) {
        char date[32];
        time_t t = s[i].date_sec;
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        printf("%-10s%-20s%10llu%21s%16s\n", s[i].id, s[i].name, (unsigned long long)s[i].vm_state_size, date, "00:00:00.000");
    }
}

static int cmd_snapshot(int argc, char **argv)
{
    char op = 0;
    const char *arg = NULL, *fmt = NULL;
    optind = 0;
    for (int c; (c = getopt(argc, argv, "+c:a:d:lf:U")) != -1;) {
        if (c == 'c' || c == 'a' || c == 'd' || c == 'l') {
            if (op)
                return usage_error("snapshot takes one of -c, -l, -a, -d");
            op = (char)c, arg = optarg;
        } else if (c == 'f') {
            fmt = optarg;
        } else if (c != 'U') {
            return usage_error("bad option for snapshot");
        }
    }
    if (!op || optind != argc - 1)
        return usage_error("snapshot needs -c NAME, -l, -a NAME or -d NAME, and a file");
    struct blk *b;
    if (open_image(argv[optind], fmt, op == 'l' ? BLK_O_FORCE_SHARE | BLK_O_NO_BACKING : BLK_O_RDWR | BLK_O_NO_BACKING, &b))
        return 1;
    int r = 0;
    if (op == 'l')
        print_snapshots(b);
    else
        r = op == 'c' ? blk_snapshot_create(b, arg) : op == 'a' ? blk_snapshot_apply(b, arg) : blk_snapshot_delete(b, arg);
    if (r == 0)
        r = blk_flush(b);
    if (r < 0)
        fail("%s", blk_errmsg(b));
    blk_close(b);
    return r < 0 ? 1 : 0;
}

static int cmd_resize(int argc, char **argv)
{
    static const struct option opts[] = { { "shrink", no_argument, NULL, 'S' }, { 0 } };
    const char *fmt = NULL;
    bool shrink = false;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "+f:", opts, NULL)) != -1;) {
        if (c == 'f') fmt = optarg;
        else if (c == 'S') shrink = true;
        else return usage_error("bad option for resize");
    }
    if (optind != argc - 2)
        return usage_error("resize needs a file and a size");
    const char *s = argv[optind + 1];
    int sign = *s == '+' ? 1 : *s == '-' ? -1 : 0;
    uint64_t v;
    if (parse_size(sign ? s + 1 : s, &v) < 0)
        return usage_error("invalid size");
    struct blk *b;
    if (open_image(argv[optind], fmt, BLK_O_RDWR | BLK_O_NO_BACKING, &b))
        return 1;
    uint64_t cur = blk_length(b), want = sign > 0 ? cur + v : sign < 0 ? (v > cur ? 0 : cur - v) : v;
    int r = blk_truncate(b, want, shrink);
    if (r < 0)
        fail("%s", blk_errmsg(b));
    else
        printf("Image resized.\n");
    blk_close(b);
    return r < 0 ? 1 : 0;
}

int cli_img_main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(img_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        { "create", cmd_create }, { "info", cmd_info }, { "convert", cmd_convert },
        { "check", cmd_check }, { "compare", cmd_compare }, { "map", cmd_map },
        { "resize", cmd_resize }, { "snapshot", cmd_snapshot }, { "commit", cmd_commit },
        { "rebase", cmd_rebase }, { "bench", cmd_bench },
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kvmbox img: unknown command '%s'\n%s", argv[1], img_usage);
    return 2;
}
