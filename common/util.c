#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int errf(char *buf, size_t len, int err, const char *fmt, ...)
{
    if (buf && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return err;
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end)
        return -EINVAL;
    if (errno == ERANGE || v < min || v > max)
        return -ERANGE;
    *out = v;
    return 0;
}

int parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s)
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    case 't':
    case 'T':
        shift = 40;
        end++;
        break;
    case 'b':
    case 'B': break;
    default: return -EINVAL;
    }
    if (shift && *end == 'i')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *out = (uint64_t)v << shift;
    return 0;
}

void format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    unsigned u = 0;
    double v = (double)bytes;
    while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    if (v == (uint64_t)v)
        snprintf(buf, len, "%llu %s", (unsigned long long)v, units[u]);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
}

uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int pread_full(int fd, void *buf, size_t len, uint64_t off, bool zero_past_eof)
{
    char *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            if (!zero_past_eof)
                return -EIO;
            memset(p, 0, len);
            return 0;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int read_full_at(int fd, void *buf, size_t len, uint64_t off)
{
    return pread_full(fd, buf, len, off, false);
}

int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int dir_make_private(const char *path, unsigned forbidden, char *err, size_t errlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp) || !tmp[0])
        return errf(err, errlen, -ENAMETOOLONG, "%s: bad directory name", path);
    /* Parents: made 0700 when missing. Only the last component is checked: it holds our
     * files, and its owner alone can add or replace entries in it. */
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        mkdir(tmp, 0700); /* a failure shows in the last mkdir */
        *p = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        return errf(err, errlen, -e, "cannot create %s: %s", path, strerror(e));
    }
    /* Opened without following a symlink, then checked and (only) tightened through the
     * descriptor: what is checked is what is changed. */
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) /* O_DIRECTORY may say ENOTDIR for a link */
        return lstat(path, &st) == 0 && S_ISLNK(st.st_mode)
                   ? errf(err, errlen, -ELOOP, "%s is a symbolic link, not a directory of yours", path)
                   : errf(err, errlen, -ENOTDIR, "%s is not a directory", path);
    if (fd < 0) {
        int e = errno;
        return errf(err, errlen, -e, "%s: %s", path, strerror(e));
    }
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    if (r == 0 && st.st_uid != geteuid())
        r = errf(err, errlen, -EPERM,
                 "%s belongs to uid %u, not to you (uid %u): another user may "
                 "have made it",
                 path, (unsigned)st.st_uid, (unsigned)geteuid());
    else if (r == 0 && (st.st_mode & forbidden & 022))
        /* Others could have put anything in it already. */
        r = errf(err, errlen, -EPERM, "%s is writable by other users (mode %04o)", path,
                 (unsigned)(st.st_mode & 07777));
    else if (r == 0 && (st.st_mode & forbidden) && fchmod(fd, st.st_mode & 07777 & ~forbidden) < 0)
        /* Ours, and only readable by others (mkdir -p under umask 022): nobody could have put
         * anything in it, so taking the read bits away is all it needs. */
        r = errf(err, errlen, -errno, "cannot make %s private (chmod go-rwx): %s", path, strerror(errno));
    else if (r < 0)
        errf(err, errlen, r, "%s: %s", path, strerror(-r));
    close(fd);
    return r;
}
