#include "vmm/console.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "devices/devices.h"
#include "vmm/vm.h"

struct console {
    struct vm *vm;
    struct serial *uart;
    int in_fd;
    int quit_fd; /* eventfd: console_stop() */
    bool escape;
    pthread_t thread;
    uint8_t buf[256]; /* bytes read but not yet accepted by the UART */
    size_t len, off;
};

static void drain_eventfd(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof(v)) > 0)
        ;
}

/* Hands buffered bytes to the UART, stopping at a full FIFO; returns false when the escape
 * was seen. */
static bool deliver(struct console *c)
{
    while (c->off < c->len) {
        size_t end = c->len;
        if (c->escape) {
            uint8_t *esc = memchr(c->buf + c->off, CONSOLE_ESCAPE, c->len - c->off);
            if (esc == c->buf + c->off) {
                vm_request_stop(c->vm, KVMBOX_STOP_DETACH, 0, "console escape (Ctrl-])");
                return false;
            }
            if (esc)
                end = (size_t)(esc - c->buf);
        }
        size_t n = serial_receive(c->uart, c->buf + c->off, end - c->off);
        c->off += n;
        if (n == 0)
            return true;
    }
    return true;
}

static void *console_thread(void *arg)
{
    struct console *c = arg;
    pthread_setname_np(pthread_self(), "console");
    vm_thread_sandbox(c->vm, SANDBOX_CONSOLE);
    bool eof = false;
    for (;;) {
        if (!deliver(c))
            return NULL;
        bool pending = c->off < c->len;
        struct pollfd p[3] = {
            { .fd = c->quit_fd, .events = POLLIN },
            { .fd = serial_rx_wait_fd(c->uart), .events = POLLIN },
            { .fd = (pending || eof) ? -1 : c->in_fd, .events = POLLIN },
        };
        /* With bytes pending, wait for the guest to drain the FIFO; otherwise for input. */
        if (!pending)
            p[1].fd = -1;
        if (poll(p, 3, pending ? 50 : -1) < 0 && errno != EINTR)
            return NULL;
        if (p[0].revents)
            return NULL;
        if (p[1].revents)
            drain_eventfd(p[1].fd);
        if (p[2].revents) {
            ssize_t n = read(c->in_fd, c->buf, sizeof(c->buf));
            if (n <= 0 && !(n < 0 && (errno == EINTR || errno == EAGAIN)))
                eof = true; /* /dev/null, closed pipe: no more input, the VM goes on */
            else if (n > 0)
                c->len = (size_t)n, c->off = 0;
        }
    }
}

/* Whether FD is /dev/null (character device 1:3): input that is at its end from the start. */
static bool is_dev_null(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);
}

int console_start(struct vm *vm, int in_fd, bool escape, struct serial *uart, struct console **out)
{
    *out = NULL;
    if (is_dev_null(in_fd))
        return 0; /* scripts and benchmarks: a thread would read EOF once and idle */
    struct console *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->vm = vm, c->uart = uart, c->in_fd = in_fd, c->escape = escape;
    c->quit_fd = eventfd(0, EFD_CLOEXEC);
    if (c->quit_fd < 0) {
        int e = -errno;
        free(c);
        return e;
    }
    int r = pthread_create(&c->thread, NULL, console_thread, c); /* which names itself */
    if (r) {
        close(c->quit_fd);
        free(c);
        return -r;
    }
    *out = c;
    return 0;
}

void console_stop(struct console *c)
{
    if (!c)
        return;
    uint64_t one = 1;
    if (write(c->quit_fd, &one, sizeof(one)) < 0) {
        /* cannot fail for an eventfd at 0 */
    }
    pthread_join(c->thread, NULL);
    close(c->quit_fd);
    free(c);
}
