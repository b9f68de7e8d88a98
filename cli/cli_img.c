/* kvmbox img: the subcommand table and what the subcommands share (messages, opening,
 * option and size parsing, backing-name resolution, zero detection). Each subcommand lives
 * in a cli/cli_img_*.c file by concern; all of them use only block/block.h. */
#include "cli/cli_img.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "common/util.h"

static const char img_help[] =
    "usage: kvmbox img [--untrusted [--backing PATH] [--backing-format FMT]] <command> [options]\n"
    "  --untrusted  the images are hostile: no backing file they name is opened; --backing\n"
    "               names the one allowed for an image that has one (its own are not followed)\n"
    "  create [-q] [-f raw|qcow2] [-b BACKING [-F FMT]] [-o OPTIONS] FILE [SIZE]\n"
    "         OPTIONS: cluster_size=N, compat=0.10|1.1, lazy_refcounts=on|off, refcount_bits=N,\n"
    "                  preallocation=off|metadata, backing_file=F, backing_fmt=FMT\n"
    "  info [-f FMT] [--output human|json] [--backing-chain] [-U] FILE\n"
    "  convert [-f FMT] [-O raw|qcow2] [-c] [-p] [-q] [-n] [-o OPTIONS] [-S BYTES] [-t CACHE] [-T CACHE] SRC "
    "DST\n"
    "  check [-f FMT] [-r leaks|all] [--output human|json] [-q] FILE\n"
    "  compare [-f FMT] [-F FMT] [-s] [-q] FILE1 FILE2\n"
    "  map [-f FMT] [--output human|json] FILE\n"
    "  resize [-f FMT] [--shrink] [-q] FILE [+|-]SIZE\n"
    "  snapshot [-q] [-c NAME | -l | -a NAME | -d NAME] FILE\n"
    "  commit [-f FMT] [-t CACHE] [-d] [-q] FILE\n"
    "  rebase [-f FMT] [-t CACHE] [-u] [-q] -b BACKING [-F FMT] FILE   (-b \"\" removes the backing file)\n"
    "  bench [-f FMT] [-t none|writeback] [-c COUNT] [-d DEPTH] [-s SIZE] [-o OFFSET] [-S STEP] [-w]\n"
    "        [--flush-interval N] [--pattern BYTE] FILE\n"
    "CACHE is none (O_DIRECT), writeback or unsafe. Sizes take K, M, G and T suffixes.\n"
    "Exit status: 0 ok, 1 error, 2 usage; check: 2 corruptions, 3 leaks, 63 not supported;\n"
    "compare: 1 images differ, 2 cannot open, 4 read error.\n";

int img_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kvmbox img: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return IMG_ERR;
}

int img_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvmbox img %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputs(" (see kvmbox img --help)\n", stderr);
    va_end(ap);
    return IMG_USAGE;
}

int img_blk_fail(struct blk *b, int err, const char *what)
{
    const char *msg = b ? blk_errmsg(b) : NULL;
    return img_fail("%s: %s", what, msg && *msg ? msg : strerror(err < 0 ? -err : EIO));
}

/* The options before the command (kvmbox img --untrusted [--backing PATH [--backing-format
 * FMT]] COMMAND ...): they apply to every image the command opens. CLI state, set once in
 * cli_img_main before the command runs. */
static struct {
    bool untrusted;
    const char *backing, *backing_format;
} policy;

static void warn_line(void *opaque, const char *msg)
{
    fprintf(stderr, "kvmbox img: warning: %s\n", msg);
}

bool img_untrusted(const char **backing, const char **backing_format)
{
    *backing = policy.backing;
    *backing_format = policy.backing_format;
    return policy.untrusted;
}

int img_open(const char *path, const char *fmt, int flags, struct blk **out)
{
    char err[BLK_ERRMSG_MAX] = "";
    bool probed_raw = false;
    struct blk_open_opts o = { .format = fmt,
                               .flags = flags | (policy.untrusted ? BLK_O_UNTRUSTED : 0),
                               .backing = policy.backing,
                               .backing_format = policy.backing_format,
                               .warn = warn_line };
    int r = blk_open_opts(path, &o, out, &probed_raw, err, sizeof(err));
    if (r < 0)
        return img_fail("%s", *err ? err : strerror(-r));
    return 0;
}

int img_check_format(const char *cmd, const char *fmt)
{
    if (fmt && strcmp(fmt, "raw") && strcmp(fmt, "qcow2"))
        return img_usage(cmd, "unknown image format '%s' (kvmbox knows raw and qcow2)", fmt);
    return 0;
}

void img_resolve_backing(const char *image, const char *backing, char *out, size_t len)
{
    blk_backing_path(image, backing, out, len);
}

int img_parse_size(const char *cmd, const char *what, const char *s, uint64_t *out)
{
    if (parse_size(s, out) < 0)
        return img_usage(cmd, "invalid %s '%s' (a number with an optional K, M, G or T suffix)", what, s);
    return 0;
}

static int parse_on_off(const char *cmd, const char *key, const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "true"))
        *out = true;
    else if (!strcmp(v, "off") || !strcmp(v, "false"))
        *out = false;
    else
        return img_usage(cmd, "%s takes on or off, not '%s'", key, v);
    return 0;
}

/* One key=value of -o; qcow2's keys are refused for raw like qemu-img does. */
static int parse_create_opt(const char *cmd, const char *k, char *v, bool qcow2, struct blk_create_opts *o)
{
    uint64_t n;
    if (!strcmp(k, "backing_file")) {
        o->backing_file = v;
    } else if (!strcmp(k, "backing_fmt")) {
        o->backing_format = v;
        return img_check_format(cmd, v);
    } else if (!strcmp(k, "preallocation")) {
        if (strcmp(v, "off") && (strcmp(v, "metadata") || !qcow2))
            return img_usage(cmd, "preallocation is off%s, not '%s'", qcow2 ? " or metadata" : "", v);
        o->preallocate_metadata = !strcmp(v, "metadata");
    } else if (!qcow2) {
        return img_usage(cmd, "raw images take no option '%s'", k);
    } else if (!strcmp(k, "cluster_size")) {
        if (img_parse_size(cmd, "cluster_size", v, &n))
            return IMG_USAGE;
        if (n < 512 || n > (2u << 20) || (n & (n - 1)))
            return img_usage(cmd, "cluster_size must be a power of two from 512 to 2M, not %s", v);
        o->cluster_size = (uint32_t)n;
    } else if (!strcmp(k, "compat")) {
        if (!strcmp(v, "0.10") || !strcmp(v, "v2"))
            o->qcow2_version = 2;
        else if (!strcmp(v, "1.1") || !strcmp(v, "v3"))
            o->qcow2_version = 3;
        else
            return img_usage(cmd, "compat is 0.10 or 1.1, not '%s'", v);
    } else if (!strcmp(k, "lazy_refcounts")) {
        return parse_on_off(cmd, k, v, &o->lazy_refcounts);
    } else if (!strcmp(k, "refcount_bits")) {
        if (parse_uint(v, 1, 64, &n) < 0 || (n & (n - 1)))
            return img_usage(cmd, "refcount_bits must be a power of two from 1 to 64, not '%s'", v);
        o->refcount_bits = (uint32_t)n;
    } else {
        return img_usage(cmd,
                         "unknown -o option '%s' (cluster_size, compat, lazy_refcounts, refcount_bits, "
                         "preallocation, backing_file, backing_fmt)",
                         k);
    }
    return 0;
}

int img_parse_create_opts(const char *cmd, char *s, const char *format, struct blk_create_opts *o)
{
    bool qcow2 = format && !strcmp(format, "qcow2");
    for (char *save, *kv = strtok_r(s, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return img_usage(cmd, "-o takes key=value pairs, not '%s'", kv);
        *eq = 0;
        int r = parse_create_opt(cmd, kv, eq + 1, qcow2, o);
        if (r)
            return r;
    }
    return 0;
}

void img_size_str(uint64_t v, char *buf, size_t len)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    unsigned u = 0;
    double d = (double)v;
    /* The unit keeps the number under 1000, as qemu's size_to_str does. */
    while (d >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
        d /= 1024;
        u++;
    }
    snprintf(buf, len, "%0.3g %s", d, units[u]);
}

bool img_all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    return n == 0 || (b[0] == 0 && !memcmp(b, b + 1, n - 1));
}

int img_zero_run(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, bool *zero)
{
    uint64_t n = len;
    /* Walk down the chain while the range is undecided (unallocated) in the layer above;
     * each layer can only shorten the run. */
    for (struct blk *l = b; l; l = blk_backing(l)) {
        if (off >= blk_length(l))
            break; /* past the end of a shorter backing file: zeroes */
        uint64_t avail = blk_length(l) - off, m = 0, host;
        unsigned st = 0;
        int r = blk_block_status(l, off, n < avail ? n : avail, &m, &st, &host);
        if (r < 0)
            return r;
        if (m == 0)
            return -EIO; /* no progress would loop forever */
        n = m < n ? m : n;
        if ((st & BLK_STATUS_ALLOCATED) || !blk_backing(l)) {
            *zero = (st & BLK_STATUS_ZERO) || !(st & BLK_STATUS_DATA);
            *pnum = n;
            return 0;
        }
    }
    *zero = true;
    *pnum = n;
    return 0;
}

int cli_img_main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        { "create", img_cmd_create }, { "info", img_cmd_info },         { "convert", img_cmd_convert },
        { "check", img_cmd_check },   { "compare", img_cmd_compare },   { "map", img_cmd_map },
        { "resize", img_cmd_resize }, { "snapshot", img_cmd_snapshot }, { "commit", img_cmd_commit },
        { "rebase", img_cmd_rebase }, { "bench", img_cmd_bench },
    };
    /* Options before the command: the untrusted mode. */
    while (argc >= 2 && !strncmp(argv[1], "--", 2) && strcmp(argv[1], "--help")) {
        if (!strcmp(argv[1], "--untrusted")) {
            policy.untrusted = true;
            argv++, argc--;
        } else if (!strcmp(argv[1], "--backing") && argc >= 3) {
            policy.backing = argv[2];
            argv += 2, argc -= 2;
        } else if (!strcmp(argv[1], "--backing-format") && argc >= 3) {
            policy.backing_format = argv[2];
            argv += 2, argc -= 2;
        } else {
            fprintf(stderr, "kvmbox img: unknown option '%s' before the command (see kvmbox img --help)\n",
                    argv[1]);
            return IMG_USAGE;
        }
    }
    if ((policy.backing || policy.backing_format) && !policy.untrusted) {
        fprintf(stderr,
                "kvmbox img: --backing and --backing-format go with --untrusted (see kvmbox img --help)\n");
        return IMG_USAGE;
    }
    if (policy.backing_format && img_check_format("img", policy.backing_format))
        return IMG_USAGE;
    if (argc < 2) {
        fputs(img_help, stderr);
        return IMG_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(img_help, stdout);
        return IMG_OK;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kvmbox img: unknown command '%s' (see kvmbox img --help)\n", argv[1]);
    return IMG_USAGE;
}
