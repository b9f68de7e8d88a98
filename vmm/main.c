/* The kvmbox command line: a thin client of libkvmbox. The one place that prints the final
 * error and picks the process exit status. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "vmm/config.h"
#if __has_include("block/cli_img.h")
#include "block/cli_img.h"
#define HAVE_IMG 1
#endif

static const char usage[] =
    "usage: kvmbox <command> [options]\n"
    "\n"
    "commands:\n"
    "  run        boot a kernel in a new VM (kvmbox run --help)\n"
#ifdef HAVE_IMG
    "  img        create, inspect and convert disk images (kvmbox img --help)\n"
#endif
    "  help       this text\n"
    "  version    print the version (also --version)\n"
    "\n"
    "exit status of run: 0 guest powered off, odd = the guest's debug-exit code (v<<1)|1,\n"
    "2 bad usage or configuration, 4 kvmbox failure, 6 guest panic, 124 --timeout expired\n";

struct term_state {
    bool raw;
    struct termios saved;
};

/* Raw mode, so keys (Ctrl-C included) go to the guest; Ctrl-] is the escape. */
static void term_raw(struct term_state *t)
{
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &t->saved) < 0)
        return;
    struct termios raw = t->saved;
    cfmakeraw(&raw);
    raw.c_oflag |= OPOST | ONLCR; /* keep newline handling for kvmbox's own messages */
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0)
        t->raw = true;
}

static void term_restore(struct term_state *t)
{
    if (t->raw)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &t->saved);
    t->raw = false;
}

struct signal_waiter {
    struct kvmbox_vm *vm;
    sigset_t set;
    int signo;
};

/* Turns SIGINT/SIGTERM/SIGHUP into an orderly stop: the terminal is restored and the
 * status says which signal ended the VM. */
static void *signal_thread(void *arg)
{
    struct signal_waiter *w = arg;
    int sig;
    if (sigwait(&w->set, &sig) == 0 && sig != SIGUSR2) {
        w->signo = sig;
        kvmbox_vm_stop(w->vm, KVMBOX_STOP_DETACH);
    }
    return NULL;
}

static int cmd_run(int argc, char **argv)
{
    struct run_options o;
    char err[512];
    if (config_parse_run(argc, argv, &o, err, sizeof(err)) < 0) {
        fprintf(stderr, "kvmbox: %s\n%s", err, config_run_usage);
        return KVMBOX_EXIT_USAGE;
    }
    if (o.help) {
        fputs(config_run_usage, stdout);
        return 0;
    }
    o.vm.console_in = STDIN_FILENO;
    o.vm.console_out = STDOUT_FILENO;
    o.vm.console_escape = isatty(STDIN_FILENO);

    struct signal_waiter w = { .signo = 0 };
    sigemptyset(&w.set);
    sigaddset(&w.set, SIGINT), sigaddset(&w.set, SIGTERM), sigaddset(&w.set, SIGHUP);
    sigaddset(&w.set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &w.set, NULL); /* before any thread exists */
    signal(SIGPIPE, SIG_IGN);

    struct kvmbox_result res;
    struct kvmbox_vm *vm;
    if (kvmbox_vm_create(&o.vm, &vm, &res) < 0) {
        fprintf(stderr, "kvmbox: %s\n", res.message);
        return res.config_error ? KVMBOX_EXIT_USAGE : KVMBOX_EXIT_FAILURE;
    }
    w.vm = vm;
    pthread_t sig_thread;
    bool have_sig_thread = pthread_create(&sig_thread, NULL, signal_thread, &w) == 0;
    struct term_state term = { 0 };
    if (o.vm.console_escape)
        term_raw(&term);
    int r = kvmbox_vm_run(vm, &res);
    term_restore(&term);
    if (have_sig_thread) {
        pthread_kill(sig_thread, SIGUSR2);
        pthread_join(sig_thread, NULL);
    }
    kvmbox_vm_destroy(vm);
    if (r < 0) {
        fprintf(stderr, "kvmbox: %s\n", res.message);
        return KVMBOX_EXIT_FAILURE;
    }
    if (w.signo)
        return 128 + w.signo;
    if (res.reason == KVMBOX_STOP_ERROR || res.reason == KVMBOX_STOP_TIMEOUT ||
        res.reason == KVMBOX_STOP_PANIC)
        fprintf(stderr, "kvmbox: %s\n", res.message);
    return kvmbox_exit_status(&res);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return KVMBOX_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 1, argv + 1);
#ifdef HAVE_IMG
    if (!strcmp(cmd, "img"))
        return cli_img_main(argc - 1, argv + 1);
#endif
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("kvmbox %s\n", kvmbox_version());
        return 0;
    }
    fprintf(stderr, "kvmbox: unknown command '%s'\n%s", cmd, usage);
    return KVMBOX_EXIT_USAGE;
}
