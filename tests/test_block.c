/* Unit tests for the block layer through its interface: qcow2 creation across cluster sizes,
 * versions and refcount widths; cluster mapping (block status) after writes, zeroes and
 * discards; refcounts (check finds nothing wrong, then finds a leak we make); the L2 cache
 * under more tables than it holds; hostile headers, one error each. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"
#include "tests/check_main.h"

static char dir[64], path[128];
static char err[BLK_ERRMSG_MAX];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/kvmbox-tblk.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/t.qcow2", dir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static struct blk *make(uint32_t cs, int version, uint32_t rbits, uint64_t size)
{
    struct blk_create_opts o = { .cluster_size = cs, .qcow2_version = version, .refcount_bits = rbits };
    ck_assert_msg(blk_create(path, "qcow2", size, &o, err, sizeof(err)) == 0, "%s", err);
    struct blk *b;
    ck_assert_msg(blk_open(path, NULL, BLK_O_RDWR, &b, NULL, err, sizeof(err)) == 0, "%s", err);
    return b;
}

static void assert_clean(struct blk *b)
{
    struct blk_check_result r;
    ck_assert_int_eq(blk_check(b, 0, &r), 0);
    ck_assert_msg(r.corruptions == 0 && r.leaks == 0, "corruptions %llu leaks %llu: %s",
                  (unsigned long long)r.corruptions, (unsigned long long)r.leaks, r.first_problem);
}

START_TEST(create_variants)
{
    static const struct {
        uint32_t cs;
        int v;
        uint32_t rb;
    } cases[] = {
        { 512, 3, 16 }, { 4096, 2, 16 }, { 65536, 3, 1 }, { 65536, 3, 64 }, { 2u << 20, 3, 8 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct blk *b = make(cases[i].cs, cases[i].v, cases[i].rb, 8 << 20);
        struct blk_info info;
        ck_assert_int_eq(blk_get_info(b, &info), 0);
        ck_assert_str_eq(info.format, "qcow2");
        ck_assert_uint_eq(info.cluster_size, cases[i].cs);
        ck_assert_int_eq(info.qcow2_version, cases[i].v);
        ck_assert_uint_eq(info.refcount_bits, cases[i].rb);
        uint8_t buf[3000], back[3000];
        for (size_t j = 0; j < sizeof(buf); j++)
            buf[j] = (uint8_t)(j * 7 + i);
        ck_assert_int_eq(blk_pwrite(b, buf, sizeof(buf), 12345), 0);
        ck_assert_int_eq(blk_pread(b, back, sizeof(back), 12345), 0);
        ck_assert(!memcmp(buf, back, sizeof(buf)));
        assert_clean(b);
        blk_close(b);
    }
}
END_TEST

START_TEST(mapping)
{
    struct blk *b = make(4096, 3, 16, 1 << 20);
    uint64_t pnum, host;
    unsigned st;
    ck_assert_int_eq(blk_block_status(b, 0, 1 << 20, &pnum, &st, &host), 0);
    ck_assert_uint_eq(st, 0); /* nothing allocated */
    ck_assert_uint_eq(pnum, 1 << 20);
    uint8_t buf[8192];
    memset(buf, 0xaa, sizeof(buf));
    ck_assert_int_eq(blk_pwrite(b, buf, sizeof(buf), 8192), 0);
    ck_assert_int_eq(blk_block_status(b, 8192, 1 << 19, &pnum, &st, &host), 0);
    ck_assert_uint_eq(st, BLK_STATUS_DATA | BLK_STATUS_ALLOCATED);
    ck_assert_uint_eq(pnum, 8192); /* two contiguous host clusters */
    ck_assert_uint_eq(host % 4096, 0);
    ck_assert_int_eq(blk_write_zeroes(b, 8192, 4096, BLK_ZERO_MAY_UNMAP), 0);
    ck_assert_int_eq(blk_block_status(b, 8192, 4096, &pnum, &st, &host), 0);
    ck_assert_uint_eq(st, BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED);
    ck_assert_int_eq(blk_pread(b, buf, 4096, 8192), 0);
    ck_assert_uint_eq(buf[0], 0);
    ck_assert_uint_eq(buf[4095], 0);
    ck_assert_int_eq(blk_discard(b, 12288, 4096), 0);
    ck_assert_int_eq(blk_block_status(b, 12288, 4096, &pnum, &st, &host), 0);
    ck_assert_uint_eq(st, 0);
    assert_clean(b); /* freed clusters: no leaks */
    /* Beyond the end is refused. */
    ck_assert_int_eq(blk_pread(b, buf, 2, (1 << 20) - 1), -EINVAL);
    blk_close(b);
}
END_TEST

/* blk_map: what may bypass the driver (virtio-blk's io_uring path) and what may not. */
START_TEST(direct_map)
{
    struct blk *b = make(4096, 3, 16, 1 << 20);
    int fd;
    uint64_t host;
    ck_assert_int_eq(blk_map(b, NULL, 0, 0, 4096, false, &fd, &host), 0); /* unallocated */
    uint8_t buf[12288];
    memset(buf, 0x5c, sizeof(buf));
    ck_assert_int_eq(blk_pwrite(b, buf, sizeof(buf), 16384), 0); /* 3 clusters */
    ck_assert_int_eq(blk_map(b, NULL, 0, 16384 + 100, 8000, false, &fd, &host), 1);
    uint8_t back[8000];
    ck_assert_int_eq(pread(fd, back, sizeof(back), (off_t)host), (ssize_t)sizeof(back));
    ck_assert(!memcmp(back, buf, sizeof(back))); /* the right bytes */
    blk_map_done(b, false);
    /* A write maps and holds the clusters; map_done lets go (discard would wait otherwise). */
    ck_assert_int_eq(blk_map(b, NULL, 0, 16384, 12288, true, &fd, &host), 1);
    blk_map_done(b, true);
    ck_assert_int_eq(blk_map(b, NULL, 0, 16384, 16384, false, &fd, &host), 0);          /* runs into a hole */
    ck_assert_int_eq(blk_map(b, NULL, 0, (1 << 20) - 512, 1024, false, &fd, &host), 0); /* past the end */
    ck_assert_int_eq(blk_write_zeroes(b, 20480, 4096, 0), 0);
    ck_assert_int_eq(blk_map(b, NULL, 0, 16384, 12288, false, &fd, &host), 0); /* a zero cluster */
    /* A cluster shared with a snapshot may be read in place but not overwritten. */
    ck_assert_int_eq(blk_snapshot_create(b, "s1"), 0);
    ck_assert_int_eq(blk_map(b, NULL, 0, 16384, 4096, false, &fd, &host), 1);
    blk_map_done(b, false);
    ck_assert_int_eq(blk_map(b, NULL, 0, 16384, 4096, true, &fd, &host), 0);
    assert_clean(b);
    blk_close(b);
    /* Raw maps everything, at the same offset. */
    char raw[300];
    snprintf(raw, sizeof(raw), "%s/r.raw", dir);
    ck_assert_int_eq(blk_create(raw, "raw", 1 << 20, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(blk_open(raw, "raw", BLK_O_RDWR, &b, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(blk_map(b, NULL, 0, 4096, 8192, true, &fd, &host), 1);
    ck_assert_uint_eq(host, 4096);
    blk_map_done(b, true);
    ck_assert_int_ge(blk_raw_flush_fd(b), 0);
    blk_close(b);
}
END_TEST

START_TEST(refcount_leak_found_and_repaired)
{
    struct blk *b = make(65536, 3, 16, 4 << 20);
    uint8_t buf[512] = { 1 };
    ck_assert_int_eq(blk_pwrite(b, buf, sizeof(buf), 0), 0);
    blk_close(b);
    /* Make a leak: the header cluster's refcount (first entry of the first refcount block)
     * goes from 1 to 2 while one thing references it. */
    int fd = open(path, O_RDWR);
    uint8_t rct[8];
    ck_assert_int_eq(pread(fd, rct, 8, 65536), 8);
    uint64_t rb = 0;
    for (int i = 0; i < 8; i++)
        rb = rb << 8 | rct[i];
    uint8_t two[2] = { 0, 2 };
    ck_assert_int_eq(pwrite(fd, two, 2, (off_t)rb), 2);
    close(fd);
    ck_assert_int_eq(blk_open(path, NULL, BLK_O_RDWR, &b, NULL, err, sizeof(err)), 0);
    struct blk_check_result r;
    ck_assert_int_eq(blk_check(b, 0, &r), 0);
    ck_assert_uint_eq(r.leaks, 1);
    ck_assert_uint_eq(r.corruptions, 0);
    ck_assert_int_eq(blk_check(b, BLK_REPAIR_LEAKS, &r), 0);
    ck_assert_uint_eq(r.leaks_fixed, 1);
    assert_clean(b);
    blk_close(b);
}
END_TEST

/* 512-byte clusters: each L2 table maps 32 KiB, so a 4 MiB write walks 128 tables through a
 * 16-entry cache, and grows the refcount table. */
START_TEST(l2_cache_and_growth)
{
    struct blk *b = make(512, 3, 16, 1 << 20);
    ck_assert_int_eq(blk_truncate(b, 8 << 20, false), 0);
    size_t n = 4 << 20;
    uint8_t *buf = malloc(n), *back = malloc(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i ^ (i >> 9));
    ck_assert_int_eq(blk_pwrite(b, buf, n, 4096), 0);
    ck_assert_int_eq(blk_pread(b, back, n, 4096), 0);
    ck_assert(!memcmp(buf, back, n));
    assert_clean(b);
    blk_close(b);
    free(buf), free(back);
}
END_TEST

static int open_with(uint64_t off, const void *bytes, size_t len)
{
    struct blk *b = make(65536, 3, 16, 4 << 20);
    blk_close(b);
    int fd = open(path, O_RDWR);
    ck_assert_int_eq(pwrite(fd, bytes, len, (off_t)off), (ssize_t)len);
    close(fd);
    int r = blk_open(path, "qcow2", BLK_O_FORCE_SHARE, &b, NULL, err, sizeof(err));
    if (r == 0)
        blk_close(b);
    return r;
}

START_TEST(hostile_headers)
{
    ck_assert_int_eq(open_with(20, "\0\0\0\x30", 4), -EINVAL); /* cluster bits 48 */
    ck_assert_ptr_nonnull(strstr(err, "cluster size"));
    ck_assert_int_eq(open_with(32, "\0\0\0\x01", 4), -ENOTSUP); /* encrypted */
    ck_assert_ptr_nonnull(strstr(err, "encrypted"));
    ck_assert_int_eq(open_with(36, "\x7f\xff\xff\xff", 4), -EINVAL);    /* L1 size */
    ck_assert_int_eq(open_with(40, "\0\0\x7f\0\0\0\0\0", 8), -EINVAL);  /* L1 past EOF */
    ck_assert_int_eq(open_with(48, "\0\0\x7f\0\0\0\0\0", 8), -EINVAL);  /* refcount table past EOF */
    ck_assert_int_eq(open_with(72, "\0\0\0\0\0\0\x10\0", 8), -ENOTSUP); /* unknown incompatible */
    ck_assert_int_eq(open_with(72, "\0\0\0\0\0\0\0\x04", 8), -ENOTSUP); /* external data file */
    ck_assert_ptr_nonnull(strstr(err, "external data file"));
    ck_assert_int_eq(open_with(96, "\0\0\0\x07", 4), -EINVAL);                       /* refcount order 7 */
    ck_assert_int_eq(open_with(24, "\x7f\xff\xff\xff\xff\xff\xff\xff", 8), -EINVAL); /* size */
}
END_TEST

START_TEST(raw_basics)
{
    snprintf(path, sizeof(path), "%s/t.raw", dir);
    ck_assert_int_eq(blk_create(path, "raw", 1 << 20, NULL, err, sizeof(err)), 0);
    struct blk *b;
    bool probed_raw = false;
    ck_assert_int_eq(blk_open(path, NULL, BLK_O_RDWR, &b, &probed_raw, err, sizeof(err)), 0);
    ck_assert(probed_raw);
    uint8_t buf[100] = { 9 }, back[100];
    ck_assert_int_eq(blk_pwrite(b, buf, 100, 1000), 0);
    ck_assert_int_eq(blk_pread(b, back, 100, 1000), 0);
    ck_assert(!memcmp(buf, back, 100));
    ck_assert_int_eq(blk_pread(b, back, 100, (1 << 20) - 50), -EINVAL);
    /* A second read-write open is refused: the image is locked. */
    struct blk *b2;
    ck_assert_int_eq(blk_open(path, NULL, BLK_O_RDWR, &b2, NULL, err, sizeof(err)), -EBUSY);
    ck_assert_ptr_nonnull(strstr(err, "in use"));
    blk_close(b);
}
END_TEST

/* What a qcow2 image of SIZE backed by BACKING (recorded name, format) opens to. */
static int overlay(const char *name, const char *backing, const char *fmt)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    struct blk_create_opts o = { .backing_file = backing, .backing_format = fmt };
    return blk_create(p, "qcow2", 1 << 20, &o, err, sizeof(err));
}

START_TEST(backing_path_rule)
{
    char out[256];
    blk_backing_path("top.qcow2", "base.qcow2", out, sizeof(out));
    ck_assert_str_eq(out, "base.qcow2");
    blk_backing_path("d1/link.qcow2", "base.qcow2", out, sizeof(out));
    ck_assert_str_eq(out, "d1/base.qcow2"); /* the path as given, not a symlink target's */
    blk_backing_path("/a/b/top", "../c/base", out, sizeof(out));
    ck_assert_str_eq(out, "/a/b/../c/base");
    blk_backing_path("/a/b/top", "/abs/base", out, sizeof(out));
    ck_assert_str_eq(out, "/abs/base");
}
END_TEST

START_TEST(chain_loops_and_files)
{
    char p[256], l[256];
    struct blk *b;
    /* a -> b -> c, c a symlink to a: a loop however it is spelled. */
    ck_assert_int_eq(overlay("a.qcow2", "b.qcow2", "qcow2"), 0);
    ck_assert_int_eq(overlay("b.qcow2", "c.qcow2", "qcow2"), 0);
    snprintf(l, sizeof(l), "%s/c.qcow2", dir);
    ck_assert_int_eq(symlink("a.qcow2", l), 0);
    snprintf(p, sizeof(p), "%s/a.qcow2", dir);
    ck_assert_int_eq(blk_open(p, NULL, BLK_O_RDWR, &b, NULL, err, sizeof(err)), -ELOOP);
    ck_assert_msg(strstr(err, "is a loop"), "%s", err);
    ck_assert_int_eq(blk_open(p, NULL, BLK_O_FORCE_SHARE, &b, NULL, err, sizeof(err)), -ELOOP);
    /* A FIFO or a device as backing file: refused, and the open does not hang. */
    snprintf(l, sizeof(l), "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(l, 0600), 0);
    ck_assert_int_eq(overlay("f.qcow2", "fifo", "raw"), 0);
    snprintf(p, sizeof(p), "%s/f.qcow2", dir);
    ck_assert_int_eq(blk_open(p, NULL, 0, &b, NULL, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "not a regular file"), "%s", err);
    ck_assert_int_eq(overlay("z.qcow2", "/dev/zero", "raw"), 0);
    snprintf(p, sizeof(p), "%s/z.qcow2", dir);
    ck_assert_int_eq(blk_open(p, NULL, 0, &b, NULL, err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(blk_open(l, "raw", 0, &b, NULL, err, sizeof(err)), -EINVAL); /* a FIFO as image */
    /* Creating over a FIFO: refused, not blocked. */
    ck_assert_int_eq(blk_create(l, "raw", 1 << 20, NULL, err, sizeof(err)), -EINVAL);
}
END_TEST

static void count_warning(void *opaque, const char *msg)
{
    ++*(int *)opaque;
}

START_TEST(untrusted_backing)
{
    char p[256], base[256];
    struct blk *b;
    snprintf(base, sizeof(base), "%s/base.raw", dir);
    ck_assert_int_eq(blk_create(base, "raw", 1 << 20, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(overlay("o.qcow2", "base.raw", NULL), 0); /* no format recorded */
    snprintf(p, sizeof(p), "%s/o.qcow2", dir);
    int warnings = 0;
    struct blk_open_opts o = { .flags = BLK_O_RDWR, .warn = count_warning, .warn_opaque = &warnings };
    ck_assert_int_eq(blk_open_opts(p, &o, &b, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(warnings, 1); /* the probed backing format */
    blk_close(b);
    o.flags |= BLK_O_UNTRUSTED;
    ck_assert_int_eq(blk_open_opts(p, &o, &b, NULL, err, sizeof(err)), -EPERM);
    ck_assert_msg(strstr(err, "untrusted"), "%s", err);
    o.backing = base, o.backing_format = "raw";
    ck_assert_int_eq(blk_open_opts(p, &o, &b, NULL, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(blk_backing(b));
    blk_close(b);
    /* The named file's own backing files are not followed. */
    ck_assert_int_eq(overlay("o2.qcow2", "o.qcow2", "qcow2"), 0);
    snprintf(p, sizeof(p), "%s/o2.qcow2", dir);
    char mid[256];
    snprintf(mid, sizeof(mid), "%s/o.qcow2", dir);
    o.backing = mid, o.backing_format = "qcow2";
    ck_assert_int_eq(blk_open_opts(p, &o, &b, NULL, err, sizeof(err)), -EPERM);
    ck_assert_msg(strstr(err, "of its own"), "%s", err);
}
END_TEST

START_TEST(create_locks_and_limits)
{
    struct blk *b, *b2;
    ck_assert_int_eq(blk_create(path, "qcow2", 1 << 20, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(blk_open(path, NULL, BLK_O_RDWR, &b, NULL, err, sizeof(err)), 0);
    /* Creating over an image in use is refused and leaves it alone. */
    ck_assert_int_eq(blk_create(path, "raw", 4096, NULL, err, sizeof(err)), -EBUSY);
    ck_assert_msg(strstr(err, "in use"), "%s", err);
    ck_assert_uint_eq(blk_length(b), 1 << 20);
    /* A reader and a writer exclude each other; readers share. */
    ck_assert_int_eq(blk_open(path, NULL, 0, &b2, NULL, err, sizeof(err)), -EBUSY);
    blk_close(b);
    ck_assert_int_eq(blk_open(path, NULL, 0, &b, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(blk_open(path, NULL, 0, &b2, NULL, err, sizeof(err)), 0);
    blk_close(b2);
    blk_close(b);
    /* The size limit open applies is the one create and resize apply. */
    struct blk_create_opts small = { .cluster_size = 512 };
    ck_assert_int_eq(blk_create(path, "qcow2", 129ULL << 30, &small, err, sizeof(err)), -EFBIG);
    ck_assert_int_eq(blk_create(path, "qcow2", 128ULL << 30, &small, err, sizeof(err)), 0);
    ck_assert_int_eq(blk_open(path, NULL, BLK_O_RDWR, &b, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(blk_truncate(b, 129ULL << 30, false), -EFBIG);
    ck_assert_uint_eq(blk_length(b), 128ULL << 30);
    blk_close(b);
    ck_assert_int_eq(blk_create(path, "qcow2", 3000ULL << 40, NULL, err, sizeof(err)), -EFBIG);
}
END_TEST

START_TEST(raw_partial_sector)
{
    snprintf(path, sizeof(path), "%s/p.raw", dir);
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    uint8_t buf[1000];
    memset(buf, 0x5a, sizeof(buf));
    ck_assert_int_eq(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
    close(fd);
    struct blk *b;
    ck_assert_int_eq(blk_open(path, "raw", BLK_O_RDWR, &b, NULL, err, sizeof(err)), 0);
    ck_assert_uint_eq(blk_length(b), 1024); /* the partial sector is a whole one, as in QEMU */
    uint8_t back[512];
    ck_assert_int_eq(blk_pread(b, back, 512, 512), 0);
    for (int i = 0; i < 512; i++)
        ck_assert_uint_eq(back[i], i < 1000 - 512 ? 0x5a : 0);
    blk_close(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("block");
    TCase *tc = tcase_create("qcow2");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, create_variants);
    tcase_add_test(tc, mapping);
    tcase_add_test(tc, direct_map);
    tcase_add_test(tc, refcount_leak_found_and_repaired);
    tcase_add_test(tc, l2_cache_and_growth);
    tcase_add_test(tc, hostile_headers);
    tcase_add_test(tc, raw_basics);
    tcase_add_test(tc, backing_path_rule);
    tcase_add_test(tc, chain_loops_and_files);
    tcase_add_test(tc, untrusted_backing);
    tcase_add_test(tc, create_locks_and_limits);
    tcase_add_test(tc, raw_partial_sector);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
