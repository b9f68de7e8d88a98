/* The saved-VM file format: writer and hostile-input parser (vmm/state.h, docs/savestate.md).
 *
 * Header (64 bytes, little endian): magic "KVMBOXSV", u32 version, u32 header size,
 * u64 meta_size, u64 ram_offset, u64 ram_size, u32 nsections, u32 flags (0), 16 reserved
 * bytes (0), u32 CRC32 of bytes 0..59.
 * Section (32-byte header): name[16] (NUL padded), u32 instance, u32 version, u32 length,
 * u32 CRC32 of the payload; the payload padded with zeroes to 8 bytes. A payload is a list
 * of fields: u8 name length (1..31), the name, u32 length, the bytes. */
#include "vmm/state.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define HDR_CRC_OFF 60

static uint32_t crc(const uint8_t *p, size_t len)
{
    return (uint32_t)crc32(crc32(0, Z_NULL, 0), p, (uInt)len);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

static void set32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static void set64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static bool valid_name(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char(s[i]))
            return false;
    return true;
}

/* ---- parser ---------------------------------------------------------------------------- */

int st_parse_header(const uint8_t *buf, size_t len, struct st_header *h, char *err, size_t errlen)
{
    if (len < ST_HEADER_SIZE || memcmp(buf, ST_MAGIC, 8))
        return errf(err, errlen, -EINVAL, "not a kvmbox saved-state file (no KVMBOXSV header)");
    uint32_t version = get32(buf + 8);
    if (version != ST_VERSION)
        return errf(err, errlen, -EPROTO, "saved-state format version %u; this kvmbox reads version %u",
                    version, ST_VERSION);
    if (crc(buf, HDR_CRC_OFF) != get32(buf + HDR_CRC_OFF))
        return errf(err, errlen, -EBADMSG, "saved-state header is corrupt (checksum mismatch)");
    *h = (struct st_header){
        .version = version,
        .meta_size = get64(buf + 16),
        .ram_offset = get64(buf + 24),
        .ram_size = get64(buf + 32),
        .nsections = get32(buf + 40),
    };
    if (get32(buf + 12) != ST_HEADER_SIZE || get32(buf + 44))
        return errf(err, errlen, -EBADMSG, "saved-state header is corrupt (size or flags)");
    if (h->meta_size > ST_MAX_META || h->nsections > ST_MAX_SECTIONS)
        return errf(err, errlen, -EBADMSG, "saved-state header is corrupt (%u sections, %llu bytes)",
                    h->nsections, (unsigned long long)h->meta_size);
    uint64_t meta_end = ST_HEADER_SIZE + h->meta_size;
    if (h->ram_offset % ST_RAM_ALIGN || h->ram_offset < meta_end ||
        h->ram_offset - meta_end >= ST_RAM_ALIGN || h->ram_size % ST_RAM_ALIGN || h->ram_size > (1ULL << 46))
        return errf(err, errlen, -EBADMSG, "saved-state header is corrupt (RAM at %#llx, %llu bytes)",
                    (unsigned long long)h->ram_offset, (unsigned long long)h->ram_size);
    return 0;
}

/* Walks the fields of a payload; returns their number, or -1 when one is malformed. */
static long count_fields(const uint8_t *p, uint32_t len)
{
    long n = 0;
    uint32_t off = 0;
    while (off < len) {
        if (++n > ST_MAX_FIELDS || len - off < 1)
            return -1;
        uint32_t nl = p[off];
        if (len - off - 1 < nl + 4u || !valid_name((const char *)p + off + 1, nl, ST_FIELD_NAME_MAX))
            return -1;
        uint32_t dl = get32(p + off + 1 + nl);
        off += 1 + nl + 4;
        if (dl > len - off)
            return -1;
        off += dl;
    }
    return n;
}

static int parse_section(const uint8_t *p, uint64_t avail, struct st_section *s, uint64_t *used, char *err,
                         size_t errlen)
{
    if (avail < ST_SECTION_HEADER)
        return errf(err, errlen, -EBADMSG, "saved state is truncated (a section header is cut off)");
    size_t nl = strnlen((const char *)p, 16);
    if (!valid_name((const char *)p, nl, ST_NAME_MAX))
        return errf(err, errlen, -EBADMSG, "saved state is corrupt (a section has an invalid name)");
    for (size_t i = nl; i < 16; i++)
        if (p[i])
            return errf(err, errlen, -EBADMSG, "saved state is corrupt (a section has an invalid name)");
    memcpy(s->name, p, nl);
    s->name[nl] = 0;
    s->instance = get32(p + 16);
    s->version = get32(p + 20);
    s->len = get32(p + 24);
    uint64_t padded = ((uint64_t)s->len + 7) & ~7ULL;
    if (padded > avail - ST_SECTION_HEADER)
        return errf(err, errlen, -EBADMSG, "saved state is truncated (section '%s' is cut off)", s->name);
    s->data = p + ST_SECTION_HEADER;
    if (crc(s->data, s->len) != get32(p + 28))
        return errf(err, errlen, -EBADMSG, "saved state is corrupt (section '%s' fails its checksum)",
                    s->name);
    long n = count_fields(s->data, s->len);
    if (n < 0)
        return errf(err, errlen, -EBADMSG, "saved state is corrupt (section '%s' has a malformed field)",
                    s->name);
    s->nfields = (uint32_t)n;
    s->used = false;
    *used = ST_SECTION_HEADER + padded;
    return 0;
}

int st_parse(const uint8_t *buf, size_t len, struct st_file *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    int r = st_parse_header(buf, len, &out->h, err, errlen);
    if (r < 0)
        return r;
    if (len - ST_HEADER_SIZE < out->h.meta_size)
        return errf(err, errlen, -EBADMSG, "saved state is truncated (%zu of %llu bytes of sections)",
                    len - ST_HEADER_SIZE, (unsigned long long)out->h.meta_size);
    out->sections = calloc(out->h.nsections ? out->h.nsections : 1, sizeof(*out->sections));
    if (!out->sections)
        return errf(err, errlen, -ENOMEM, "out of memory");
    const uint8_t *p = buf + ST_HEADER_SIZE;
    uint64_t left = out->h.meta_size;
    for (unsigned i = 0; i < out->h.nsections; i++) {
        uint64_t used = 0;
        r = parse_section(p, left, &out->sections[i], &used, err, errlen);
        if (r < 0) {
            st_free(out);
            return r;
        }
        for (unsigned j = 0; j < i; j++)
            if (out->sections[j].instance == out->sections[i].instance &&
                !strcmp(out->sections[j].name, out->sections[i].name)) {
                r = errf(err, errlen, -EBADMSG, "saved state is corrupt (section '%s' %u twice)",
                         out->sections[i].name, out->sections[i].instance);
                st_free(out); /* after the message: it names the section */
                return r;
            }
        out->nsections = i + 1;
        p += used, left -= used;
    }
    if (left) {
        st_free(out);
        return errf(err, errlen, -EBADMSG, "saved state is corrupt (%llu bytes after the last section)",
                    (unsigned long long)left);
    }
    return 0;
}

void st_free(struct st_file *f)
{
    free(f->sections);
    f->sections = NULL;
    f->nsections = 0;
}

struct st_section *st_find(struct st_file *f, const char *name, uint32_t instance)
{
    for (unsigned i = 0; i < f->nsections; i++)
        if (f->sections[i].instance == instance && !strcmp(f->sections[i].name, name)) {
            f->sections[i].used = true;
            return &f->sections[i];
        }
    return NULL;
}

const struct st_section *st_unused(const struct st_file *f)
{
    for (unsigned i = 0; i < f->nsections; i++)
        if (!f->sections[i].used)
            return &f->sections[i];
    return NULL;
}

/* The payload was validated by st_parse: every field lies inside it. */
const void *st_field(const struct st_section *s, const char *name, uint32_t *len)
{
    size_t want = strlen(name);
    uint32_t off = 0;
    while (off < s->len) {
        uint32_t nl = s->data[off];
        uint32_t dl = get32(s->data + off + 1 + nl);
        const uint8_t *d = s->data + off + 1 + nl + 4;
        if (nl == want && !memcmp(s->data + off + 1, name, nl)) {
            *len = dl;
            return d;
        }
        off += 1 + nl + 4 + dl;
    }
    return NULL;
}

int st_get(const struct st_section *s, const char *name, void *dst, uint32_t len)
{
    uint32_t have;
    const void *p = st_field(s, name, &have);
    if (!p)
        return -ENOENT;
    if (have != len)
        return -EBADMSG;
    memcpy(dst, p, len);
    return 0;
}

int st_get_uint(const struct st_section *s, const char *name, uint64_t *v)
{
    uint32_t have;
    const uint8_t *p = st_field(s, name, &have);
    if (!p)
        return -ENOENT;
    switch (have) {
    case 1: *v = p[0]; return 0;
    case 2: *v = (uint64_t)p[0] | (uint64_t)p[1] << 8; return 0;
    case 4: *v = get32(p); return 0;
    case 8: *v = get64(p); return 0;
    default: return -EBADMSG;
    }
}

int st_need(const struct st_section *s, const char *name, void *dst, uint32_t len, char *err, size_t errlen)
{
    int r = st_get(s, name, dst, len);
    if (r == -ENOENT)
        return errf(err, errlen, -EBADMSG, "saved state: section %s %u has no field '%s'", s->name,
                    s->instance, name);
    if (r < 0)
        return errf(err, errlen, -EBADMSG, "saved state: field '%s' of section %s %u has the wrong size",
                    name, s->name, s->instance);
    return 0;
}

int st_need_uint(const struct st_section *s, const char *name, uint64_t max, uint64_t *v, char *err,
                 size_t errlen)
{
    int r = st_get_uint(s, name, v);
    if (r == -ENOENT)
        return errf(err, errlen, -EBADMSG, "saved state: section %s %u has no field '%s'", s->name,
                    s->instance, name);
    if (r < 0 || *v > max)
        return errf(err, errlen, -EBADMSG, "saved state: field '%s' of section %s %u is out of range", name,
                    s->name, s->instance);
    return 0;
}

/* ---- writer ---------------------------------------------------------------------------- */

void st_writer_init(struct st_writer *w)
{
    memset(w, 0, sizeof(*w));
    w->cap = 64 * 1024;
    w->buf = calloc(1, w->cap);
    w->len = ST_HEADER_SIZE;
    if (!w->buf)
        w->err = -ENOMEM;
}

void st_writer_free(struct st_writer *w)
{
    free(w->buf);
    w->buf = NULL;
}

static uint8_t *grow(struct st_writer *w, size_t n)
{
    if (w->err)
        return NULL;
    if (n > ST_MAX_META || w->len + n > ST_HEADER_SIZE + (size_t)ST_MAX_META) {
        w->err = -EFBIG;
        return NULL;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *b = realloc(w->buf, cap);
        if (!b) {
            w->err = -ENOMEM;
            return NULL;
        }
        memset(b + w->cap, 0, cap - w->cap);
        w->buf = b, w->cap = cap;
    }
    uint8_t *p = w->buf + w->len;
    w->len += n;
    return p;
}

void st_begin(struct st_writer *w, const char *name, uint32_t instance, uint32_t version)
{
    size_t nl = strlen(name);
    if (w->sec_start || !valid_name(name, nl, ST_NAME_MAX) || w->nsections == ST_MAX_SECTIONS) {
        w->err = w->err ? w->err : -EINVAL;
        return;
    }
    size_t start = w->len;
    uint8_t *p = grow(w, ST_SECTION_HEADER);
    if (!p)
        return;
    memset(p, 0, ST_SECTION_HEADER);
    memcpy(p, name, nl);
    set32(p + 16, instance);
    set32(p + 20, version);
    w->sec_start = start;
    w->nfields = 0;
}

void st_put(struct st_writer *w, const char *name, const void *data, uint32_t len)
{
    size_t nl = strlen(name);
    if (!w->sec_start || !valid_name(name, nl, ST_FIELD_NAME_MAX) || w->nfields == ST_MAX_FIELDS) {
        w->err = w->err ? w->err : -EINVAL;
        return;
    }
    uint8_t *p = grow(w, 1 + nl + 4 + (size_t)len);
    if (!p)
        return;
    p[0] = (uint8_t)nl;
    memcpy(p + 1, name, nl);
    set32(p + 1 + nl, len);
    if (len)
        memcpy(p + 1 + nl + 4, data, len);
    w->nfields++;
}

void st_put_u64(struct st_writer *w, const char *name, uint64_t v)
{
    uint8_t b[8];
    set64(b, v);
    st_put(w, name, b, 8);
}

void st_put_u32(struct st_writer *w, const char *name, uint32_t v)
{
    uint8_t b[4];
    set32(b, v);
    st_put(w, name, b, 4);
}

void st_put_u8(struct st_writer *w, const char *name, uint8_t v)
{
    st_put(w, name, &v, 1);
}

void st_put_str(struct st_writer *w, const char *name, const char *s)
{
    st_put(w, name, s, (uint32_t)strlen(s));
}

void st_end(struct st_writer *w)
{
    if (!w->sec_start) {
        w->err = w->err ? w->err : -EINVAL;
        return;
    }
    if (w->err)
        return;
    size_t payload = w->len - w->sec_start - ST_SECTION_HEADER;
    uint8_t *h = w->buf + w->sec_start;
    set32(h + 24, (uint32_t)payload);
    set32(h + 28, crc(h + ST_SECTION_HEADER, payload));
    size_t pad = (8 - payload % 8) % 8;
    uint8_t *p = pad ? grow(w, pad) : NULL;
    if (p)
        memset(p, 0, pad);
    w->sec_start = 0;
    w->nsections++;
}

int st_finish(struct st_writer *w, uint64_t ram_size, uint64_t *ram_offset)
{
    if (!w->err && w->sec_start)
        w->err = -EINVAL;
    if (w->err)
        return w->err;
    uint64_t meta = w->len - ST_HEADER_SIZE;
    uint64_t off = (w->len + ST_RAM_ALIGN - 1) & ~(uint64_t)(ST_RAM_ALIGN - 1);
    uint8_t *h = w->buf;
    memset(h, 0, ST_HEADER_SIZE);
    memcpy(h, ST_MAGIC, 8);
    set32(h + 8, ST_VERSION);
    set32(h + 12, ST_HEADER_SIZE);
    set64(h + 16, meta);
    set64(h + 24, off);
    set64(h + 32, ram_size);
    set32(h + 40, w->nsections);
    set32(h + HDR_CRC_OFF, crc(h, HDR_CRC_OFF));
    *ram_offset = off;
    return 0;
}
