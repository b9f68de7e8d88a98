/* kvmbox console NAME: attach the terminal to a running VM's serial console through its
 * control socket. Ctrl-] detaches; the VM keeps running (like virsh console). So does the
 * end of the input (stdin at end of file: </dev/null, a pipe whose writer is done), once
 * the VM has taken what was sent (like nc -N). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli.h"
#include "vmm/console.h"
#include "common/util.h"

#define DETACH_WAIT_MS 2000 /* Ctrl-] or a signal: output already on its way */
/* End of input: the VM closes once the guest has taken what we sent (a guest that takes
 * nothing for 10 s is given up on there); this only guards against a VM that hangs. */
#define EOF_DETACH_WAIT_MS 300000

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* Detaching without losing output: stop sending, then print everything the VM sends until
 * it closes the connection (it does once what it queued for us is out and what we sent has
 * reached the guest), for at most WAIT_MS. */
static void detach(int sock, unsigned wait_ms)
{
    shutdown(sock, SHUT_WR);
    char buf[4096];
    uint64_t deadline = monotonic_ns() + wait_ms * 1000000ULL;
    while (monotonic_ns() < deadline) {
        struct pollfd p = { .fd = sock, .events = POLLIN };
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = read(sock, buf, sizeof(buf));
        if (n <= 0)
            return;
        write_full(STDOUT_FILENO, buf, (size_t)n);
    }
}

/* SIGTERM, SIGINT and SIGHUP stay blocked except inside ppoll(), so one that arrives between
 * the stop_signal check and the wait cannot be missed (a paused VM sends nothing that would
 * wake us again). */
static int pump(int sock, const sigset_t *waitmask)
{
    char buf[4096];
    for (;;) {
        struct pollfd p[2] = { { .fd = sock, .events = POLLIN }, { .fd = STDIN_FILENO, .events = POLLIN } };
        if (stop_signal) { /* SIGTERM, SIGINT (not from the tty: raw mode sends ^C to the guest) */
            detach(sock, DETACH_WAIT_MS);
            return 0;
        }
        if (ppoll(p, 2, NULL, waitmask) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (p[0].revents) {
            ssize_t n = read(sock, buf, sizeof(buf));
            if (n <= 0)
                return 1; /* the VM ended */
            write_full(STDOUT_FILENO, buf, (size_t)n);
        }
        if (p[1].revents) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0) { /* the input ended: everything read went out above */
                detach(sock, EOF_DETACH_WAIT_MS);
                return 0;
            }
            char *esc = memchr(buf, CONSOLE_ESCAPE, (size_t)n);
            if (write_full(sock, buf, esc ? (size_t)(esc - buf) : (size_t)n) < 0)
                return 1;
            if (esc) {
                detach(sock, DETACH_WAIT_MS);
                return 0;
            }
        }
    }
}

int cmd_console(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmbox console NAME\n");
        return CLI_USAGE;
    }
    char err[512];
    int fd = cli_connect(argv[1], err, sizeof(err));
    if (fd < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return cli_status(fd);
    }
    struct json_object *r = cli_request_fd(fd, "console", err, sizeof(err));
    if (!r) {
        fprintf(stderr, "kvmbox: %s\n", err);
        close(fd);
        return CLI_FAIL;
    }
    json_object_put(r);
    bool tty = isatty(STDIN_FILENO);
    struct termios saved, raw;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        cfmakeraw(&raw);
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw);
        fprintf(stderr, "Connected to %s (escape character is ^])\r\n", argv[1]);
    } else {
        tty = false;
    }
    sigset_t stops, waitmask;
    sigemptyset(&stops);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGHUP);
    sigprocmask(SIG_BLOCK, &stops, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGHUP);
    struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: ppoll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    int ended = pump(fd, &waitmask);
    if (tty)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    close(fd);
    if (ended == 1)
        fprintf(stderr, "\nkvmbox: %s has stopped\n", argv[1]);
    return CLI_OK;
}
