#include "firmware/aml.h"

#include <errno.h>
#include <string.h>

#define OP_ZERO       0x00
#define OP_ONE        0x01
#define OP_NAME       0x08
#define OP_BYTE       0x0a
#define OP_WORD       0x0b
#define OP_DWORD      0x0c
#define OP_STRING     0x0d
#define OP_QWORD      0x0e
#define OP_SCOPE      0x10
#define OP_BUFFER     0x11
#define OP_PACKAGE    0x12
#define OP_EXT        0x5b
#define OP_EXT_DEVICE 0x82
#define ROOT_CHAR     '\\'

void aml_init(struct aml *a, uint8_t *buf, size_t cap)
{
    memset(a, 0, sizeof(*a));
    a->buf = buf;
    a->cap = cap;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
    if (a->err)
        return;
    if (n > a->cap - a->len) {
        a->err = -ENOSPC;
        return;
    }
    memcpy(a->buf + a->len, p, n);
    a->len += n;
}

static void byte(struct aml *a, uint8_t b)
{
    aml_bytes(a, &b, 1);
}

static void le(struct aml *a, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        byte(a, (uint8_t)(v >> (8 * i)));
}

/* NameString: an optional root prefix and one 4-character segment, padded with '_'. */
static void name_string(struct aml *a, const char *name)
{
    if (*name == ROOT_CHAR) {
        byte(a, ROOT_CHAR);
        name++;
    }
    char seg[4] = { '_', '_', '_', '_' };
    size_t n = strlen(name);
    if (n == 0 || n > 4) {
        a->err = a->err ? a->err : -EINVAL;
        return;
    }
    memcpy(seg, name, n);
    aml_bytes(a, seg, 4);
}

void aml_name(struct aml *a, const char *name)
{
    byte(a, OP_NAME);
    name_string(a, name);
}

void aml_integer(struct aml *a, uint64_t v)
{
    if (v == 0)
        byte(a, OP_ZERO);
    else if (v == 1)
        byte(a, OP_ONE);
    else if (v <= 0xff)
        byte(a, OP_BYTE), le(a, v, 1);
    else if (v <= 0xffff)
        byte(a, OP_WORD), le(a, v, 2);
    else if (v <= 0xffffffff)
        byte(a, OP_DWORD), le(a, v, 4);
    else
        byte(a, OP_QWORD), le(a, v, 8);
}

void aml_string(struct aml *a, const char *s)
{
    byte(a, OP_STRING);
    aml_bytes(a, s, strlen(s) + 1);
}

/* EISA ID: three letters in 5 bits each, then four hex digits, stored big-endian. */
void aml_eisaid(struct aml *a, const char *id)
{
    if (strlen(id) != 7) {
        a->err = a->err ? a->err : -EINVAL;
        return;
    }
    uint16_t vendor = (uint16_t)(((id[0] - 0x40) & 0x1f) << 10 | ((id[1] - 0x40) & 0x1f) << 5 |
                                 ((id[2] - 0x40) & 0x1f));
    uint16_t product = 0;
    for (int i = 3; i < 7; i++) {
        char c = id[i];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
        product = (uint16_t)(product << 4 | (d & 0xf));
    }
    byte(a, OP_DWORD);
    byte(a, (uint8_t)(vendor >> 8)), byte(a, (uint8_t)vendor);
    byte(a, (uint8_t)(product >> 8)), byte(a, (uint8_t)product);
}

static void open_pkg(struct aml *a)
{
    if (a->depth == AML_MAX_DEPTH) {
        a->err = a->err ? a->err : -E2BIG;
        return;
    }
    a->open_at[a->depth++] = a->len; /* PkgLength goes here on close */
}

void aml_scope_open(struct aml *a, const char *name)
{
    byte(a, OP_SCOPE);
    open_pkg(a);
    name_string(a, name);
}

void aml_device_open(struct aml *a, const char *name)
{
    byte(a, OP_EXT), byte(a, OP_EXT_DEVICE);
    open_pkg(a);
    name_string(a, name);
}

void aml_package_open(struct aml *a, uint8_t nelems)
{
    byte(a, OP_PACKAGE);
    open_pkg(a);
    byte(a, nelems);
}

void aml_buffer_open(struct aml *a)
{
    byte(a, OP_BUFFER);
    open_pkg(a);
}

/* Inserts N bytes at OFF, shifting what follows. */
static void insert(struct aml *a, size_t off, const uint8_t *p, size_t n)
{
    if (a->err)
        return;
    if (n > a->cap - a->len) {
        a->err = -ENOSPC;
        return;
    }
    memmove(a->buf + off + n, a->buf + off, a->len - off);
    memcpy(a->buf + off, p, n);
    a->len += n;
}

void aml_close(struct aml *a)
{
    if (a->err || a->depth == 0) {
        a->err = a->err ? a->err : -EINVAL;
        return;
    }
    size_t at = a->open_at[--a->depth];
    /* A buffer starts with its size as an integer: insert it before the bytes. */
    if (at > 0 && a->buf[at - 1] == OP_BUFFER) {
        size_t n = a->len - at;
        uint8_t enc[5];
        size_t el;
        if (n <= 0xff)
            enc[0] = OP_BYTE, enc[1] = (uint8_t)n, el = 2;
        else
            enc[0] = OP_WORD, enc[1] = (uint8_t)n, enc[2] = (uint8_t)(n >> 8), el = 3;
        insert(a, at, enc, el);
    }
    /* PkgLength counts itself: 1 byte up to 63, else 2-4 bytes with the low nibble first. */
    size_t body = a->len - at;
    uint8_t enc[4];
    size_t el;
    if (body + 1 < 64) {
        enc[0] = (uint8_t)(body + 1), el = 1;
    } else {
        el = body + 2 < (1u << 12) ? 2 : body + 3 < (1u << 20) ? 3 : 4;
        size_t total = body + el;
        enc[0] = (uint8_t)(((el - 1) << 6) | (total & 0xf));
        for (size_t i = 1; i < el; i++)
            enc[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
    }
    insert(a, at, enc, el);
}

int aml_finish(struct aml *a)
{
    if (!a->err && a->depth)
        a->err = -EINVAL;
    return a->err ? a->err : (int)a->len;
}

/* ---- resource descriptors (ACPI 6.x, 6.4 "Resource Data Types") ---- */

void aml_res_io(struct aml *a, uint16_t base, uint8_t len)
{
    byte(a, 0x47), byte(a, 0x01); /* I/O, 16-bit decode */
    le(a, base, 2), le(a, base, 2);
    byte(a, 1), byte(a, len);
}

void aml_res_irq(struct aml *a, uint8_t irq)
{
    byte(a, 0x22); /* IRQ without flags: edge, active high */
    le(a, 1u << irq, 2);
}

static void addr_space(struct aml *a, uint8_t tag, unsigned w, uint8_t type, uint8_t type_flags,
                       uint64_t first, uint64_t last)
{
    byte(a, tag);
    le(a, 3 + 5 * w, 2); /* length of the rest */
    byte(a, type);
    byte(a, 0x0c); /* MinFixed, MaxFixed, producer */
    byte(a, type_flags);
    le(a, 0, w); /* granularity */
    le(a, first, w), le(a, last, w);
    le(a, 0, w); /* translation */
    le(a, last - first + 1, w);
}

void aml_res_bus(struct aml *a, uint16_t first, uint16_t last)
{
    addr_space(a, 0x88, 2, 2, 0, first, last);
}

void aml_res_io_window(struct aml *a, uint16_t first, uint16_t last)
{
    addr_space(a, 0x88, 2, 1, 0x03, first, last); /* ISA and non-ISA ranges */
}

void aml_res_mem32(struct aml *a, uint32_t first, uint32_t last)
{
    addr_space(a, 0x87, 4, 0, 0x01, first, last); /* read-write, non-cacheable */
}

void aml_res_mem64(struct aml *a, uint64_t first, uint64_t last)
{
    addr_space(a, 0x8a, 8, 0, 0x01, first, last);
}

void aml_res_end(struct aml *a)
{
    byte(a, 0x79), byte(a, 0x00);
}
