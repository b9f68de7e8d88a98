/* SMBIOS 2.8 structures (DSP0134 3.x keeps their layout). */
#include "firmware/smbios.h"

#include <errno.h>
#include <string.h>

#define STR_MAX 64

struct out {
    uint8_t *p;
    size_t len, cap;
    int err;
    unsigned count, max_size;
};

static uint8_t *room(struct out *o, size_t n)
{
    if (o->err || n > o->cap - o->len) {
        o->err = -ENOSPC;
        return NULL;
    }
    uint8_t *p = o->p + o->len;
    memset(p, 0, n);
    o->len += n;
    return p;
}

/* A structure: its formatted part (LEN bytes, handle HANDLE), then its strings, each NUL
 * terminated, then one more NUL (two when there are none). */
static uint8_t *structure(struct out *o, uint8_t type, uint8_t len, uint16_t handle)
{
    uint8_t *s = room(o, len);
    if (s)
        s[0] = type, s[1] = len, s[2] = (uint8_t)handle, s[3] = (uint8_t)(handle >> 8);
    return s;
}

static void strings(struct out *o, size_t start, const char *const *str, unsigned n)
{
    unsigned used = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t l = strnlen(str[i], STR_MAX);
        if (!l)
            continue;
        uint8_t *p = room(o, l + 1);
        if (p)
            memcpy(p, str[i], l);
        used++;
    }
    room(o, used ? 1 : 2);
    size_t size = o->len - start;
    o->count++;
    if (size > o->max_size)
        o->max_size = (unsigned)size;
}

/* String number of the I-th string of STR (0 for an empty one). */
static uint8_t str_no(const char *const *str, unsigned i)
{
    if (!*str[i])
        return 0;
    uint8_t n = 0;
    for (unsigned j = 0; j <= i; j++)
        n += *str[j] != '\0';
    return n;
}

static void type1(struct out *o, const struct smbios_info *in)
{
    const char *str[] = { "kvmbox", "kvmbox PC", in->version ? in->version : "", in->name ? in->name : "",
                          "kvmbox" };
    size_t start = o->len;
    uint8_t *t = structure(o, 1, 27, 0x100);
    if (!t)
        return;
    t[4] = str_no(str, 0), t[5] = str_no(str, 1), t[6] = str_no(str, 2), t[7] = str_no(str, 3);
    /* SMBIOS 2.6+: the first three UUID fields are little-endian. */
    const uint8_t *u = in->uuid;
    const uint8_t swapped[16] = { u[3], u[2], u[1],  u[0],  u[5],  u[4],  u[7],  u[6],
                                  u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15] };
    memcpy(t + 8, swapped, 16);
    t[24] = 6; /* wake-up type: power switch */
    t[25] = 0, t[26] = str_no(str, 4);
    strings(o, start, str, 5);
}

static void simple(struct out *o, uint8_t type, uint8_t len, uint16_t handle)
{
    size_t start = o->len;
    if (structure(o, type, len, handle))
        strings(o, start, NULL, 0);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s = (uint8_t)(s + *p++);
    return s;
}

int smbios_build(const struct smbios_info *info, uint8_t *tables, size_t cap,
                 uint8_t anchor[SMBIOS_ANCHOR_LEN])
{
    struct out o = { .p = tables, .cap = cap };
    type1(&o, info);
    simple(&o, 32, 11, 0x2000); /* system boot information: no errors */
    simple(&o, 127, 4, 0x7f00); /* end of table */
    if (o.err)
        return o.err;
    uint8_t *a = anchor;
    memset(a, 0, SMBIOS_ANCHOR_LEN);
    memcpy(a, "_SM_", 4);
    a[5] = SMBIOS_ANCHOR_LEN;
    a[6] = 2, a[7] = 8; /* version 2.8 */
    a[8] = (uint8_t)o.max_size, a[9] = (uint8_t)(o.max_size >> 8);
    memcpy(a + 16, "_DMI_", 5);
    a[22] = (uint8_t)o.len, a[23] = (uint8_t)(o.len >> 8);
    a[28] = (uint8_t)o.count, a[29] = (uint8_t)(o.count >> 8);
    a[30] = 0x28; /* BCD revision 2.8 */
    a[21] = (uint8_t)(0x100 - sum(a + 16, 15));
    a[4] = (uint8_t)(0x100 - sum(a, SMBIOS_ANCHOR_LEN));
    return (int)o.len;
}
