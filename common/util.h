/* Small helpers shared by the VMM: error messages, size parsing, time. */
#ifndef KVMBOX_UTIL_H
#define KVMBOX_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MUST_CHECK    __attribute__((warn_unused_result))
#define PRINTF(a, b)  __attribute__((format(printf, a, b)))

/* Writes one line into BUF (if non-NULL) and returns ERR (a negative errno), so callers can
 * write `return errf(err, len, -EINVAL, "...")`. */
int errf(char *buf, size_t len, int err, const char *fmt, ...) PRINTF(4, 5);

/* Parses "512", "64K", "256M", "8G", "1T" (binary units, optional trailing B/iB).
 * Returns 0 or -EINVAL (malformed) / -ERANGE (overflow). */
int parse_size(const char *s, uint64_t *out) MUST_CHECK;
/* Parses a decimal unsigned integer in [min, max]; -EINVAL or -ERANGE otherwise. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out) MUST_CHECK;
/* Formats a byte count as "256 MiB" style text. */
void format_size(uint64_t bytes, char *buf, size_t len);

uint64_t monotonic_ns(void);

/* Reads exactly LEN bytes at OFF, retrying short reads; past the end of the file the rest is
 * zeroes (ZERO_PAST_EOF) or -EIO. */
int pread_full(int fd, void *buf, size_t len, uint64_t off, bool zero_past_eof) MUST_CHECK;
/* Reads exactly LEN bytes at OFF; -EIO on a short file. */
int read_full_at(int fd, void *buf, size_t len, uint64_t off) MUST_CHECK;
/* Writes all of BUF at OFF, retrying short writes. */
int pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* Writes all of BUF (retrying on EINTR/short writes). */
int write_full(int fd, const void *buf, size_t len);

/* A directory kvmbox keeps sockets, logs or definitions in must be the caller's own, or
 * another local user who made it first (/tmp/kvmbox-UID) could plant sockets and symlinks in
 * it. Creates PATH (0700, missing parents too) when it is absent, then checks it as
 * ssh-agent and tmux do: a directory, not a symlink, owned by the effective uid, not
 * writable by group or others. FORBIDDEN bits (077: private; 022: not writable by others)
 * that are only read or search bits are taken away (chmod). Returns 0, or a negative errno
 * with ERR saying what is wrong with PATH. */
int dir_make_private(const char *path, unsigned forbidden, char *err, size_t errlen) MUST_CHECK;

#endif
