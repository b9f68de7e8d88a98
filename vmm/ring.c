#include "vmm/ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int ring_init(struct ring *r, size_t cap)
{
    r->buf = malloc(cap);
    r->cap = cap;
    r->written = 0;
    return r->buf ? 0 : -ENOMEM;
}

void ring_free(struct ring *r)
{
    free(r->buf);
    r->buf = NULL;
}

void ring_put(struct ring *r, const uint8_t *data, size_t len)
{
    if (len > r->cap) { /* only the tail survives */
        r->written += len - r->cap;
        data += len - r->cap;
        len = r->cap;
    }
    size_t at = (size_t)(r->written % r->cap);
    size_t first = len < r->cap - at ? len : r->cap - at;
    memcpy(r->buf + at, data, first);
    memcpy(r->buf, data + first, len - first);
    r->written += len;
}

size_t ring_get(const struct ring *r, uint64_t *pos, uint8_t *out, size_t len, uint64_t *lost)
{
    *lost = 0;
    if (*pos > r->written)
        *pos = r->written;
    if (r->written - *pos > r->cap) {
        *lost = r->written - r->cap - *pos;
        *pos = r->written - r->cap;
    }
    size_t avail = (size_t)(r->written - *pos);
    size_t n = len < avail ? len : avail;
    size_t at = (size_t)(*pos % r->cap);
    size_t first = n < r->cap - at ? n : r->cap - at;
    memcpy(out, r->buf + at, first);
    memcpy(out + first, r->buf, n - first);
    *pos += n;
    return n;
}
