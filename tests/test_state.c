/* Unit tests for the saved-state file format (vmm/state.c): a round trip, and one test per
 * way a hostile file is refused. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "tests/check_main.h"
#include "vmm/state.h"

/* A small valid file: sections "vm" 0 and "serial" 0. */
static uint8_t *make_file(size_t *len)
{
    struct st_writer w;
    st_writer_init(&w);
    st_begin(&w, "vm", 0, 1);
    st_put_str(&w, "name", "guest");
    st_put_u64(&w, "mem", 256ULL << 20);
    st_put_u32(&w, "cpus", 2);
    st_end(&w);
    st_begin(&w, "serial", 0, 3);
    st_put_u8(&w, "lcr", 0x03);
    uint8_t fifo[5] = { 1, 2, 3, 4, 5 };
    st_put(&w, "fifo", fifo, sizeof(fifo));
    st_put(&w, "empty", NULL, 0);
    st_end(&w);
    uint64_t ram_off;
    ck_assert_int_eq(st_finish(&w, 1 << 20, &ram_off), 0);
    ck_assert_int_eq(ram_off % ST_RAM_ALIGN, 0);
    *len = w.len;
    return w.buf;
}

START_TEST(round_trip)
{
    size_t len;
    uint8_t *buf = make_file(&len);
    struct st_file f;
    char err[256];
    ck_assert_int_eq(st_parse(buf, len, &f, err, sizeof(err)), 0);
    ck_assert_uint_eq(f.nsections, 2);
    ck_assert_uint_eq(f.h.ram_size, 1 << 20);
    struct st_section *vm = st_find(&f, "vm", 0), *ser = st_find(&f, "serial", 0);
    ck_assert_ptr_nonnull(vm);
    ck_assert_ptr_nonnull(ser);
    ck_assert_ptr_null(st_find(&f, "serial", 1));
    ck_assert_uint_eq(ser->version, 3);
    uint64_t v;
    ck_assert_int_eq(st_get_uint(vm, "mem", &v), 0);
    ck_assert_uint_eq(v, 256ULL << 20);
    ck_assert_int_eq(st_get_uint(vm, "cpus", &v), 0);
    ck_assert_uint_eq(v, 2);
    ck_assert_int_eq(st_get_uint(ser, "lcr", &v), 0);
    ck_assert_uint_eq(v, 3);
    uint8_t fifo[5];
    ck_assert_int_eq(st_get(ser, "fifo", fifo, 5), 0);
    ck_assert_uint_eq(fifo[4], 5);
    ck_assert_int_eq(st_get(ser, "fifo", fifo, 4), -EBADMSG);
    ck_assert_int_eq(st_get(ser, "nope", fifo, 4), -ENOENT);
    uint32_t l = 99;
    ck_assert_ptr_nonnull(st_field(ser, "empty", &l));
    ck_assert_uint_eq(l, 0);
    ck_assert_ptr_null(st_unused(&f));
    st_free(&f);
    free(buf);
}
END_TEST

START_TEST(unknown_section_found)
{
    size_t len;
    uint8_t *buf = make_file(&len);
    struct st_file f;
    ck_assert_int_eq(st_parse(buf, len, &f, NULL, 0), 0);
    st_find(&f, "vm", 0);
    const struct st_section *u = st_unused(&f);
    ck_assert_ptr_nonnull(u);
    ck_assert_str_eq(u->name, "serial");
    st_free(&f);
    free(buf);
}
END_TEST

static int parse_err(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    struct st_file f;
    int r = st_parse(buf, len, &f, err, errlen);
    if (r == 0)
        st_free(&f);
    return r;
}

static void fix_header_crc(uint8_t *buf)
{
    uint32_t c = (uint32_t)crc32(0, buf, 60);
    memcpy(buf + 60, &c, 4);
}

START_TEST(every_truncation_refused)
{
    size_t len;
    uint8_t *buf = make_file(&len);
    char err[256];
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        int r = parse_err(copy, n, err, sizeof(err));
        ck_assert_msg(r < 0, "truncated to %zu bytes accepted", n);
        ck_assert_ptr_null(strchr(err, '\n'));
        free(copy);
    }
    free(buf);
}
END_TEST

START_TEST(every_bit_flip_refused)
{
    size_t len;
    uint8_t *buf = make_file(&len);
    /* Any single bit flipped in the header or the sections is caught by a check or a CRC. */
    for (size_t i = 0; i < len; i++)
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (uint8_t)(1 << b);
            int r = parse_err(buf, len, NULL, 0);
            /* Flips in a section's zero padding are outside any CRC: harmless. */
            if (r == 0) {
                ck_assert_msg(i >= ST_HEADER_SIZE, "flip in header byte %zu accepted", i);
            }
            buf[i] ^= (uint8_t)(1 << b);
        }
    free(buf);
}
END_TEST

START_TEST(foreign_and_version)
{
    size_t len;
    uint8_t *buf = make_file(&len);
    char err[256];
    buf[0] = 'X';
    ck_assert_int_eq(parse_err(buf, len, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "not a kvmbox saved-state file"));
    buf[0] = 'K';
    buf[8] = 2; /* version 2, header CRC fixed: refused by its version, not its CRC */
    fix_header_crc(buf);
    ck_assert_int_eq(parse_err(buf, len, err, sizeof(err)), -EPROTO);
    ck_assert_ptr_nonnull(strstr(err, "version 2"));
    free(buf);
}
END_TEST

START_TEST(hostile_counts)
{
    size_t len;
    uint8_t *buf = make_file(&len);
    char err[256];
    uint32_t big = 0xffffffff;
    memcpy(buf + 40, &big, 4); /* nsections */
    fix_header_crc(buf);
    ck_assert_int_eq(parse_err(buf, len, err, sizeof(err)), -EBADMSG);
    uint32_t three = 3;
    memcpy(buf + 40, &three, 4); /* one more section than there is */
    fix_header_crc(buf);
    ck_assert_int_eq(parse_err(buf, len, err, sizeof(err)), -EBADMSG);
    ck_assert_ptr_nonnull(strstr(err, "truncated"));
    free(buf);
}
END_TEST

START_TEST(duplicate_section_refused)
{
    struct st_writer w;
    st_writer_init(&w);
    for (int i = 0; i < 2; i++) {
        st_begin(&w, "serial", 0, 1);
        st_put_u8(&w, "lcr", 3);
        st_end(&w);
    }
    uint64_t off;
    ck_assert_int_eq(st_finish(&w, 0, &off), 0);
    char err[256];
    ck_assert_int_eq(parse_err(w.buf, w.len, err, sizeof(err)), -EBADMSG);
    ck_assert_ptr_nonnull(strstr(err, "'serial' 0 twice"));
    st_writer_free(&w);
}
END_TEST

START_TEST(writer_refuses_bad_names)
{
    struct st_writer w;
    st_writer_init(&w);
    st_begin(&w, "Bad-Name", 0, 1);
    uint64_t off;
    ck_assert_int_eq(st_finish(&w, 0, &off), -EINVAL);
    st_writer_free(&w);
    st_writer_init(&w);
    st_put_u8(&w, "x", 1); /* outside a section */
    ck_assert_int_eq(st_finish(&w, 0, &off), -EINVAL);
    st_writer_free(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("state");
    TCase *tc = tcase_create("format");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, unknown_section_found);
    tcase_add_test(tc, every_truncation_refused);
    tcase_add_test(tc, every_bit_flip_refused);
    tcase_add_test(tc, foreign_and_version);
    tcase_add_test(tc, hostile_counts);
    tcase_add_test(tc, writer_refuses_bad_names);
    tcase_add_test(tc, duplicate_section_refused);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
