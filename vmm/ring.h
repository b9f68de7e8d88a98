/* A byte ring that remembers the last CAP bytes written. Readers keep their own absolute
 * position, so any number of readers can follow it; a reader that falls more than CAP behind
 * skips what was overwritten and learns how much. Not locked: callers hold a lock. */
#ifndef KVMBOX_RING_H
#define KVMBOX_RING_H

#include <stddef.h>
#include <stdint.h>

struct ring {
    uint8_t *buf;
    size_t cap;
    uint64_t written; /* total bytes ever written */
};

int ring_init(struct ring *r, size_t cap) __attribute__((warn_unused_result));
void ring_free(struct ring *r);
void ring_put(struct ring *r, const uint8_t *data, size_t len);
/* Copies up to LEN bytes from *POS on into OUT and advances *POS. *LOST gets the number of
 * bytes that were overwritten before this reader got them. Returns the bytes copied. */
size_t ring_get(const struct ring *r, uint64_t *pos, uint8_t *out, size_t len, uint64_t *lost);

#endif
