/* kvmbox img info, map and the snapshot listing: read-only reports, in qemu-img's human
 * layout or as JSON (json-c). */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/block.h"
#include "cli/cli_img.h"

/* One image of a backing chain as the commands show it: the top by the name it was given,
 * each backing file by the path it was opened at (blk_backing_path: its name resolved
 * against the directory of the layer above, as qemu names it). */
struct layer {
    struct blk *b;
    struct blk_info info;
};

/* The layers from TOP down (only TOP unless CHAIN) in a new array (*OUT); returns how
 * many, or a negative errno (also when a layer's snapshot table cannot be read). */
static int load_layers(struct blk *top, struct layer **out, bool chain)
{
    int n = 0, count = 0;
    for (struct blk *b = top; b; b = chain ? blk_backing(b) : NULL)
        count++;
    struct layer *l = *out = calloc((size_t)count, sizeof(*l));
    if (!l)
        return -ENOMEM;
    for (struct blk *b = top; b; b = chain ? blk_backing(b) : NULL, n++) {
        l[n].b = b;
        int r = blk_get_info(b, &l[n].info);
        if (r == 0)
            r = blk_snapshot_list(b, NULL, 0); /* a bad table fails info before it prints */
        if (r < 0)
            return r;
    }
    return n;
}

/* Where L's backing file is: the path it was opened at, else its name resolved as qemu does
 * (or, with --untrusted, the file --backing names). */
static void backing_full(const struct layer *l, char *out, size_t len)
{
    const char *allowed, *fmt;
    if (blk_backing(l->b))
        snprintf(out, len, "%s", l->info.backing_path);
    else if (img_untrusted(&allowed, &fmt))
        snprintf(out, len, "%s", allowed ? allowed : "(not opened: --untrusted)");
    else
        img_resolve_backing(l->info.filename, l->info.backing_file, out, len);
}

/* The snapshot table: returns its length (0 for images without snapshots) or a negative
 * errno; *out is allocated when the length is not 0. */
static int load_snapshots(struct blk *b, struct blk_snapshot **out)
{
    *out = NULL;
    int count = blk_snapshot_list(b, NULL, 0);
    if (count <= 0)
        return count;
    struct blk_snapshot *s = calloc((size_t)count, sizeof(*s));
    if (!s)
        return -ENOMEM;
    int again = blk_snapshot_list(b, s, count);
    if (again < 0) {
        free(s);
        return again;
    }
    *out = s;
    return again < count ? again : count; /* the table cannot change under us; still, no overrun */
}

int img_print_snapshots(struct blk *b)
{
    struct blk_snapshot *s;
    int n = load_snapshots(b, &s);
    if (n <= 0)
        return n;
    printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
           "ICOUNT");
    for (int i = 0; i < n; i++) {
        char date[32], clock[48], vmsize[32];
        time_t t = (time_t)s[i].date_sec;
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        uint64_t secs = s[i].vm_clock_nsec / 1000000000u;
        snprintf(clock, sizeof(clock), "%02llu:%02llu:%02llu.%03llu", (unsigned long long)(secs / 3600),
                 (unsigned long long)(secs / 60 % 60), (unsigned long long)(secs % 60),
                 (unsigned long long)(s[i].vm_clock_nsec / 1000000 % 1000));
        img_size_str(s[i].vm_state_size, vmsize, sizeof(vmsize));
        /* The block layer does not report the instruction count: the column stays empty. */
        printf("%-9s %-16s %8s%20s%13s%11s\n", s[i].id, s[i].name, vmsize, date, clock, "");
    }
    free(s);
    return 0;
}

static void info_human(const struct layer *l)
{
    const struct blk_info *i = &l->info;
    char vs[32], ds[32];
    img_size_str(i->virtual_size, vs, sizeof(vs));
    img_size_str(i->disk_size, ds, sizeof(ds));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n", l->info.filename,
           i->format, vs, (unsigned long long)i->virtual_size, ds);
    if (i->cluster_size)
        printf("cluster_size: %u\n", i->cluster_size);
    if (i->backing_file[0]) {
        char full[4096];
        backing_full(l, full, sizeof(full));
        printf("backing file: %s", i->backing_file);
        if (strcmp(full, i->backing_file))
            printf(" (actual path: %s)", full);
        printf("\n");
        if (i->backing_format[0])
            printf("backing file format: %s\n", i->backing_format);
    }
    img_print_snapshots(l->b); /* readable: load_layers checked it */
    if (strcmp(i->format, "qcow2"))
        return;
    printf("Format specific information:\n    compat: %s\n    compression type: zlib\n",
           i->qcow2_version >= 3 ? "1.1" : "0.10");
    if (i->qcow2_version >= 3)
        printf("    lazy refcounts: %s\n", i->lazy_refcounts ? "true" : "false");
    printf("    refcount bits: %u\n", i->refcount_bits);
    if (i->qcow2_version >= 3)
        printf("    corrupt: %s\n    extended l2: false\n", i->corrupt ? "true" : "false");
    if (i->dirty) /* qemu shows this only in JSON; a dirty image deserves a line */
        printf("    dirty: true\n");
}

static void add(struct json_object *o, const char *k, struct json_object *v)
{
    json_object_object_add(o, k, v);
}

static struct json_object *snapshots_json(struct blk *b)
{
    struct blk_snapshot *s;
    int n = load_snapshots(b, &s);
    struct json_object *arr = json_object_new_array();
    for (int k = 0; k < n; k++) {
        struct json_object *e = json_object_new_object();
        add(e, "id", json_object_new_string(s[k].id));
        add(e, "name", json_object_new_string(s[k].name));
        add(e, "vm-state-size", json_object_new_int64((int64_t)s[k].vm_state_size));
        add(e, "date-sec", json_object_new_int64(s[k].date_sec));
        add(e, "date-nsec", json_object_new_int64(s[k].date_nsec));
        add(e, "vm-clock-sec", json_object_new_int64((int64_t)(s[k].vm_clock_nsec / 1000000000u)));
        add(e, "vm-clock-nsec", json_object_new_int64((int64_t)(s[k].vm_clock_nsec % 1000000000u)));
        json_object_array_add(arr, e);
    }
    free(s);
    return arr;
}

static struct json_object *info_json(const struct layer *l)
{
    const struct blk_info *i = &l->info;
    struct json_object *o = json_object_new_object();
    add(o, "filename", json_object_new_string(l->info.filename));
    add(o, "format", json_object_new_string(i->format));
    add(o, "virtual-size", json_object_new_int64((int64_t)i->virtual_size));
    add(o, "actual-size", json_object_new_int64((int64_t)i->disk_size));
    add(o, "dirty-flag", json_object_new_boolean(i->dirty));
    if (i->cluster_size)
        add(o, "cluster-size", json_object_new_int64(i->cluster_size));
    if (i->backing_file[0]) {
        char full[4096];
        backing_full(l, full, sizeof(full));
        add(o, "backing-filename", json_object_new_string(i->backing_file));
        add(o, "full-backing-filename", json_object_new_string(full));
        if (i->backing_format[0])
            add(o, "backing-filename-format", json_object_new_string(i->backing_format));
    }
    if (!strcmp(i->format, "qcow2")) {
        struct json_object *d = json_object_new_object(), *fs = json_object_new_object();
        add(d, "compat", json_object_new_string(i->qcow2_version >= 3 ? "1.1" : "0.10"));
        add(d, "compression-type", json_object_new_string("zlib"));
        if (i->qcow2_version >= 3)
            add(d, "lazy-refcounts", json_object_new_boolean(i->lazy_refcounts));
        add(d, "refcount-bits", json_object_new_int((int)i->refcount_bits));
        if (i->qcow2_version >= 3) {
            add(d, "corrupt", json_object_new_boolean(i->corrupt));
            add(d, "extended-l2", json_object_new_boolean(false));
        }
        add(fs, "type", json_object_new_string("qcow2"));
        add(fs, "data", d);
        add(o, "format-specific", fs);
        struct json_object *sn = snapshots_json(l->b);
        if (json_object_array_length(sn))
            add(o, "snapshots", sn);
        else
            json_object_put(sn);
    }
    return o;
}

static int parse_output(const char *cmd, const char *s, bool *json)
{
    if (strcmp(s, "human") && strcmp(s, "json"))
        return img_usage(cmd, "--output is human or json, not '%s'", s);
    *json = !strcmp(s, "json");
    return 0;
}

int img_cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = { { "output", required_argument, NULL, 'O' },
                                              { "backing-chain", no_argument, NULL, 'B' },
                                              { "force-share", no_argument, NULL, 'U' },
                                              { 0 } };
    const char *fmt = NULL;
    bool chain = false, json = false;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "f:U", longopts, NULL)) != -1;) {
        int r = 0;
        if (c == 'f')
            fmt = optarg;
        else if (c == 'O')
            r = parse_output("info", optarg, &json);
        else if (c == 'B')
            chain = true;
        else if (c != 'U')
            return img_usage("info", "bad option");
        if (r)
            return r;
    }
    if (optind != argc - 1)
        return img_usage("info", "expected one FILE");
    int r = img_check_format("info", fmt);
    if (r)
        return r;
    struct blk *b;
    if (img_open(argv[optind], fmt, BLK_O_FORCE_SHARE | (chain ? 0 : BLK_O_NO_BACKING), &b))
        return IMG_ERR;
    struct layer *l = NULL;
    int n = load_layers(b, &l, chain);
    if (n < 0) {
        r = img_blk_fail(b, n, "info");
    } else if (json) {
        struct json_object *o = chain ? json_object_new_array() : info_json(&l[0]);
        for (int k = 0; chain && k < n; k++)
            json_object_array_add(o, info_json(&l[k]));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
    } else {
        for (int k = 0; k < n; k++) {
            if (k)
                printf("\n");
            info_human(&l[k]);
        }
    }
    free(l);
    blk_close(b);
    return r ? IMG_ERR : IMG_OK;
}

/* One line of `map`: a run of guest offsets that one layer decides the same way. */
struct map_ent {
    uint64_t start, len, host;
    int depth;
    bool present, zero, data, has_host;
};

/* The entry at OFF: walks down the chain while the range is unallocated. */
static int map_at(const struct layer *l, int nl, uint64_t off, struct map_ent *e)
{
    uint64_t len = blk_length(l[0].b) - off;
    *e = (struct map_ent){ .start = off, .zero = true };
    for (int d = 0; d < nl; d++) {
        e->depth = d;
        if (off >= blk_length(l[d].b))
            break; /* past the end of a shorter backing file: zeroes */
        uint64_t avail = blk_length(l[d].b) - off, m = 0, host = 0;
        unsigned st = 0;
        int r = blk_block_status(l[d].b, off, len < avail ? len : avail, &m, &st, &host);
        if (r < 0)
            return r;
        if (m == 0)
            return -EIO;
        len = m < len ? m : len;
        if ((st & BLK_STATUS_ALLOCATED) || d == nl - 1) {
            e->present = st & BLK_STATUS_ALLOCATED;
            e->data = st & BLK_STATUS_DATA;
            e->zero = (st & BLK_STATUS_ZERO) || !e->data;
            /* raw maps every byte to itself; qcow2 names a host offset for plain data */
            e->has_host = !strcmp(l[d].info.format, "raw") ||
                          (e->data && host && !(st & BLK_STATUS_COMPRESSED));
            e->host = host;
            break;
        }
    }
    e->len = len;
    return 0;
}

static bool map_mergeable(const struct map_ent *a, const struct map_ent *b)
{
    return a->depth == b->depth && a->present == b->present && a->zero == b->zero && a->data == b->data &&
           a->has_host == b->has_host && (!a->has_host || a->host + a->len == b->host);
}

static void map_print(const struct map_ent *e, const struct layer *l, bool json, bool *first)
{
    if (json) {
        printf("%s{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %s, \"zero\": %s, "
               "\"data\": %s",
               *first ? "[" : ",\n", (unsigned long long)e->start, (unsigned long long)e->len, e->depth,
               e->present ? "true" : "false", e->zero ? "true" : "false", e->data ? "true" : "false");
        if (e->has_host)
            printf(", \"offset\": %llu", (unsigned long long)e->host);
        printf("}");
    } else if (e->data && e->has_host) {
        printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)e->start, (unsigned long long)e->len,
               (unsigned long long)e->host, l[e->depth].info.filename);
    }
    *first = false;
}

int img_cmd_map(int argc, char **argv)
{
    static const struct option longopts[] = { { "output", required_argument, NULL, 'O' },
                                              { "force-share", no_argument, NULL, 'U' },
                                              { 0 } };
    const char *fmt = NULL;
    bool json = false;
    optind = 0;
    for (int c; (c = getopt_long(argc, argv, "f:U", longopts, NULL)) != -1;) {
        int r = 0;
        if (c == 'f')
            fmt = optarg;
        else if (c == 'O')
            r = parse_output("map", optarg, &json);
        else if (c != 'U')
            return img_usage("map", "bad option");
        if (r)
            return r;
    }
    if (optind != argc - 1)
        return img_usage("map", "expected one FILE");
    int r = img_check_format("map", fmt);
    if (r)
        return r;
    struct blk *b;
    if (img_open(argv[optind], fmt, BLK_O_FORCE_SHARE, &b))
        return IMG_ERR;
    struct layer *l = NULL;
    int nl = load_layers(b, &l, true);
    r = nl < 0 ? nl : 0;
    if (!json && r == 0)
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    struct map_ent cur = { 0 }, next;
    bool first = true, have = false;
    for (uint64_t off = 0; r == 0 && off < blk_length(b); off += next.len) {
        if ((r = map_at(l, nl, off, &next)) < 0)
            break;
        if (have && map_mergeable(&cur, &next)) {
            cur.len += next.len;
            continue;
        }
        if (have)
            map_print(&cur, l, json, &first);
        cur = next;
        have = true;
    }
    if (r == 0 && have)
        map_print(&cur, l, json, &first);
    if (json && r == 0)
        printf("%s\n", first ? "[]" : "]");
    if (r < 0) {
        fflush(stdout);
        r = img_blk_fail(b, r, "map");
    }
    free(l);
    blk_close(b);
    return r ? IMG_ERR : IMG_OK;
}
