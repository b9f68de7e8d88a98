/* The saved-VM file format (docs/savestate.md): a header, named and versioned sections of
 * named fields (each section with its CRC32), then guest RAM, page aligned, so that a restore
 * can map it copy-on-write. The parser treats the file as hostile: every length, count and
 * offset is bounded before use. Pure code: no KVM, no VM (unit-tested, fuzzed). */
#ifndef KVMBOX_STATE_H
#define KVMBOX_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define ST_MAGIC          "KVMBOXSV"
#define ST_VERSION        1
#define ST_HEADER_SIZE    64
#define ST_SECTION_HEADER 32
#define ST_NAME_MAX       15          /* section names: [a-z0-9_] */
#define ST_FIELD_NAME_MAX 31          /* field names: [a-z0-9_] */
#define ST_MAX_META       (64u << 20) /* all sections together */
#define ST_MAX_SECTIONS   4096
#define ST_MAX_FIELDS     4096 /* per section */
#define ST_RAM_ALIGN      4096 /* RAM starts on a page boundary of the file */

struct st_header {
    uint32_t version;
    uint64_t meta_size; /* bytes of sections after the header */
    uint64_t ram_offset;
    uint64_t ram_size;
    uint32_t nsections;
};

struct st_section {
    char name[ST_NAME_MAX + 1];
    uint32_t instance;
    uint32_t version;
    const uint8_t *data; /* fields, validated by st_parse */
    uint32_t len;
    uint32_t nfields;
    bool used; /* a loader took it (st_unused finds the rest) */
};

struct st_file {
    struct st_header h;
    unsigned nsections;
    struct st_section *sections; /* malloc'ed by st_parse; st_free */
};

/* Parses the header (the first ST_HEADER_SIZE bytes of BUF). Returns 0, or -EINVAL (not a
 * kvmbox state file), -EPROTO (another format version), -EBADMSG (corrupt header), with ERR
 * saying which in one line. */
int st_parse_header(const uint8_t *buf, size_t len, struct st_header *h, char *err, size_t errlen) MUST_CHECK;
/* Parses a whole state file's header and sections from BUF (at least ST_HEADER_SIZE +
 * meta_size bytes; RAM need not be there). Checks every bound and every section's CRC.
 * Returns 0 with OUT filled (st_free it), or a negative errno with ERR set. */
int st_parse(const uint8_t *buf, size_t len, struct st_file *out, char *err, size_t errlen) MUST_CHECK;
void st_free(struct st_file *f);

/* The section NAME/INSTANCE, marked used; NULL when absent. */
struct st_section *st_find(struct st_file *f, const char *name, uint32_t instance);
/* The first section no loader took (an unknown one), or NULL. */
const struct st_section *st_unused(const struct st_file *f);
/* Field NAME of S: its bytes and length, or NULL when absent. */
const void *st_field(const struct st_section *s, const char *name, uint32_t *len);
/* Copies field NAME into DST, which must have exactly its length: -ENOENT when absent,
 * -EBADMSG when the length differs. */
int st_get(const struct st_section *s, const char *name, void *dst, uint32_t len) MUST_CHECK;
/* Unsigned integers of any stored width 1, 2, 4 or 8 (-EBADMSG otherwise). */
int st_get_uint(const struct st_section *s, const char *name, uint64_t *v) MUST_CHECK;

/* For loaders: like st_get and st_get_uint, but a missing field, a wrong size or a value
 * above MAX is an error with ERR naming the section and field (-EBADMSG). */
int st_need(const struct st_section *s, const char *name, void *dst, uint32_t len, char *err,
            size_t errlen) MUST_CHECK;
int st_need_uint(const struct st_section *s, const char *name, uint64_t max, uint64_t *v, char *err,
                 size_t errlen) MUST_CHECK;

/* Building a state file in memory: sections of fields. Errors (-ENOMEM, a bad name) stick
 * in w->err and are returned by st_finish. */
struct st_writer {
    uint8_t *buf; /* ST_HEADER_SIZE bytes of header, then sections */
    size_t len, cap;
    size_t sec_start; /* offset of the open section's header, or 0 */
    uint32_t nfields;
    unsigned nsections;
    int err;
};

void st_writer_init(struct st_writer *w);
void st_writer_free(struct st_writer *w);
void st_begin(struct st_writer *w, const char *name, uint32_t instance, uint32_t version);
void st_put(struct st_writer *w, const char *name, const void *data, uint32_t len);
void st_put_u64(struct st_writer *w, const char *name, uint64_t v);
void st_put_u32(struct st_writer *w, const char *name, uint32_t v);
void st_put_u8(struct st_writer *w, const char *name, uint8_t v);
void st_put_str(struct st_writer *w, const char *name, const char *s);
void st_end(struct st_writer *w);
/* Writes the header (RAM of RAM_SIZE bytes at the first ST_RAM_ALIGN boundary after the
 * sections) into w->buf; w->buf[0..w->len) is then the file up to its padding. Returns 0 or
 * the first error. *RAM_OFFSET gets where RAM starts. */
int st_finish(struct st_writer *w, uint64_t ram_size, uint64_t *ram_offset) MUST_CHECK;

#endif
