/* Image locks: QEMU's protocol (its block/file-posix.c), so that kvmbox and QEMU processes
 * see each other's locks, both ways.
 *
 * Every lock is an OFD read lock on one byte. A process holding permission P locks byte
 * 100 + P; one that does not let others take P locks byte 200 + P. Permissions: 0 consistent
 * read, 1 write, 2 write-unchanged, 3 resize. After taking its bytes, a process tests (with
 * F_OFD_GETLK for a write lock) byte 200 + P for each P it holds (does someone refuse to share
 * it?) and byte 100 + P for each P it refuses to share (does someone hold it?).
 *
 *   reader: holds read; shares neither write nor resize      bytes 100, 201, 203
 *   writer: holds read, write, resize; shares neither        bytes 100, 101, 103, 201, 203
 *
 * exactly what qemu-img info and a QEMU guest disk take. Two writers, or a writer and a
 * reader, conflict; readers share. Because every process takes its bytes before it tests
 * the others', two processes that race can both fail, never both succeed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/blk_int.h"

#define LOCK_PERM_BASE   100
#define LOCK_SHARED_BASE 200
enum { PERM_READ = 1, PERM_WRITE = 2, PERM_RESIZE = 8, PERM_ALL = 0xf };

static int lock_byte(int fd, off_t off, short type)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };
    return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

/* 1 when another open file description holds a lock on byte OFF, 0 if not, -errno. */
static int byte_taken(int fd, off_t off)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1 };
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

static void unlock_all(int fd)
{
    struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    (void)fcntl(fd, F_OFD_SETLK, &fl);
}

static bool no_lock_support(int err)
{
    return err == -EINVAL || err == -ENOLCK || err == -EOPNOTSUPP || err == -ENOSYS;
}

int blk_lock_fd(int fd, bool write, const char *path, char *err, size_t errlen)
{
    unsigned held = PERM_READ | (write ? PERM_WRITE | PERM_RESIZE : 0), unshared = PERM_WRITE | PERM_RESIZE;
    int r = 0, p;
    for (p = 0; r == 0 && (1u << p) <= PERM_ALL; p++) {
        if (held & (1u << p))
            r = lock_byte(fd, LOCK_PERM_BASE + p, F_RDLCK);
        if (r == 0 && (unshared & (1u << p)))
            r = lock_byte(fd, LOCK_SHARED_BASE + p, F_RDLCK);
    }
    /* Someone holds a write lock over our bytes (a whole-file lock, say): that is a
     * conflict as well. */
    bool conflict = r == -EAGAIN || r == -EACCES;
    for (p = 0; r == 0 && (1u << p) <= PERM_ALL; p++) {
        if ((held & (1u << p)) && (r = byte_taken(fd, LOCK_SHARED_BASE + p)) == 1)
            break;
        if ((unshared & (1u << p)) && (r = byte_taken(fd, LOCK_PERM_BASE + p)) == 1)
            break;
    }
    conflict |= r == 1;
    if (r == 0)
        return 0;
    unlock_all(fd);
    if (!conflict && no_lock_support(r))
        return 0; /* file systems without OFD locks: go on unlocked, as before */
    if (!conflict) {
        snprintf(err, errlen, "cannot lock %s: %s", path, strerror(-r));
        return r;
    }
    /* A write lock over our bytes (a whole-file lock) or byte 101 taken: a writer. */
    bool writer = r != 1 || byte_taken(fd, LOCK_PERM_BASE + 1) == 1;
    snprintf(err, errlen, "image %s is in use by another process that is %s it", path,
             writer ? "writing" : "reading");
    return -EBUSY;
}

int blk_create_open(const char *path, int *fdp, bool *created, char *err, size_t errlen)
{
    /* O_NONBLOCK: a FIFO must not hang the open; it is refused below. */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NONBLOCK, 0644);
    *created = fd >= 0;
    if (fd < 0 && errno == EEXIST)
        fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0 || fcntl(fd, F_SETFL, 0) < 0) {
        r = -errno;
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(-r));
    } else if (!S_ISREG(st.st_mode)) {
        r = -EINVAL;
        snprintf(err, errlen, "cannot create %s: it exists and is not a regular file", path);
    } else {
        r = blk_lock_fd(fd, true, path, err, errlen); /* before anything is truncated */
    }
    if (r < 0) {
        close(fd);
        if (*created)
            unlink(path);
        return r;
    }
    *fdp = fd;
    return 0;
}
