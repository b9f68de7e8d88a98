/* Table-loader commands for kvmbox's ACPI tables. */
#include "firmware/table_loader.h"

#include <errno.h>
#include <string.h>

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void put_name(uint8_t *p, const char *name)
{
    strncpy((char *)p, name, TL_FILE_MAX - 1);
}

struct cmds {
    uint8_t *buf;
    unsigned n, max;
};

static uint8_t *next_cmd(struct cmds *c, uint32_t command)
{
    if (c->n == c->max)
        return NULL;
    uint8_t *p = c->buf + (size_t)c->n++ * TL_CMD_SIZE;
    memset(p, 0, TL_CMD_SIZE);
    put32(p, command);
    return p;
}

static int allocate(struct cmds *c, const char *file, uint32_t align, uint8_t zone)
{
    uint8_t *p = next_cmd(c, TL_ALLOCATE);
    if (!p)
        return -ENOSPC;
    put_name(p + 4, file);
    put32(p + 60, align);
    p[64] = zone;
    return 0;
}

/* The file holding blob offset OFF, and OFF within that file (the same: see the header). */
static const char *file_of(const struct acpi_fixups *fix, uint32_t off)
{
    return off < fix->rsdp_len ? TL_RSDP_FILE : TL_TABLES_FILE;
}

int table_loader_build(const struct acpi_fixups *fix, size_t bloblen, uint8_t *cmds, unsigned maxcmds)
{
    struct cmds c = { cmds, 0, maxcmds };
    if (fix->rsdp_len == 0 || fix->rsdp_len > bloblen)
        return -EINVAL;
    /* FACS wants 64-byte alignment; the RSDP lives in the F segment where OSes scan for it. */
    int r;
    if ((r = allocate(&c, TL_TABLES_FILE, 64, TL_ZONE_HIGH)) < 0 ||
        (r = allocate(&c, TL_RSDP_FILE, 16, TL_ZONE_FSEG)) < 0)
        return r;
    for (unsigned i = 0; i < fix->nptr; i++) {
        const struct acpi_ptr *a = &fix->ptr[i];
        if ((a->size != 4 && a->size != 8) || a->off > bloblen || a->size > bloblen - a->off ||
            (a->off < fix->rsdp_len && a->off + a->size > fix->rsdp_len))
            return -EINVAL;
        uint8_t *p = next_cmd(&c, TL_ADD_POINTER);
        if (!p)
            return -ENOSPC;
        put_name(p + 4, file_of(fix, a->off));
        put_name(p + 60, TL_TABLES_FILE);
        put32(p + 116, a->off);
        p[120] = a->size;
    }
    for (unsigned i = 0; i < fix->nsum; i++) {
        const struct acpi_sum *s = &fix->sum[i];
        bool in_rsdp = s->start < fix->rsdp_len;
        if (s->start > bloblen || s->len > bloblen - s->start || s->at < s->start ||
            s->at >= s->start + s->len || (in_rsdp && s->start + s->len > fix->rsdp_len))
            return -EINVAL;
        uint8_t *p = next_cmd(&c, TL_ADD_CHECKSUM);
        if (!p)
            return -ENOSPC;
        put_name(p + 4, file_of(fix, s->start));
        put32(p + 60, s->at);
        put32(p + 64, s->start);
        put32(p + 68, s->len);
    }
    return (int)(c.n * TL_CMD_SIZE);
}
