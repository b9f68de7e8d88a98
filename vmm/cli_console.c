/* kvmbox console NAME: attach the terminal to a running VM's serial console through its
 * control socket. Ctrl-] detaches; the VM keeps running (like virsh console). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "vmm/cli.h"
#include "vmm/console.h"
#include "vmm/util.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* Detaching without losing output: stop sending, then print everything the VM sends until
 * it closes the connection (it does once what it queued for us is out), for at most 2 s. */
static void detach(int sock)
{
    shutdown(sock, SHUT_WR);
    char buf[4096];
    uint64_t deadline = monotonic_ns() + 2000000000ULL;
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
    bool in_open = true;
    for (;;) {
        struct pollfd p[2] = { { .fd = sock, .events = POLLIN },
                               { .fd = in_open ? STDIN_FILENO : -1, .events = POLLIN } };
        if (stop_signal) { /* SIGTERM, SIGINT (not from the tty: raw mode sends ^C to the guest) */
            detach(sock);
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
            if (n <= 0) {
                in_open = false;
                continue;
            }
            char *esc = memchr(buf, CONSOLE_ESCAPE, (size_t)n);
            if (write_full(sock, buf, esc ? (size_t)(esc - buf) : (size_t)n) < 0)
                return 1;
            if (esc) {
                detach(sock);
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
    int fd = cli_connect(argv[1]);
    if (fd < 0) {
        fprintf(stderr, "kvmbox: no running VM named '%s'\n", argv[1]);
        return CLI_FAIL;
    }
    char err[512];
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
