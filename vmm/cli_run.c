/* kvmbox run and kvmbox start: the foreground console, or a daemon reachable through its
 * control socket. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <termios.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "vmm/cli.h"
#include "vmm/config.h"
#include "vmm/sandbox.h"

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
    cfmakeraw(&raw); /* the guest sends \r\n itself; kvmbox prints only after restoring */
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
    bool sandbox;
};

/* Turns SIGINT/SIGTERM/SIGHUP into an orderly stop: the terminal is restored, the socket
 * removed, and the status says which signal ended the VM. */
static void *signal_thread(void *arg)
{
    struct signal_waiter *w = arg;
    int sig;
    pthread_setname_np(pthread_self(), "signal");
    if (sandbox_enter(SANDBOX_SIGNAL, w->sandbox) < 0)
        fprintf(stderr, "kvmbox: warning: the signal thread runs without its seccomp sandbox\n");
    sandbox_selftest(SANDBOX_SIGNAL);
    if (sigwait(&w->set, &sig) == 0 && sig != SIGUSR2) {
        w->signo = sig;
        kvmbox_vm_stop(w->vm, KVMBOX_STOP_DETACH);
    }
    return NULL;
}

static int run_vm(struct kvmbox_vm *vm, bool console, bool sandbox)
{
    struct signal_waiter w = { .vm = vm, .sandbox = sandbox };
    sigemptyset(&w.set);
    sigaddset(&w.set, SIGINT), sigaddset(&w.set, SIGTERM), sigaddset(&w.set, SIGHUP);
    sigaddset(&w.set, SIGUSR2);
    pthread_t sig_thread;
    bool have_sig_thread = pthread_create(&sig_thread, NULL, signal_thread, &w) == 0;
    struct term_state term = { 0 };
    if (console)
        term_raw(&term);
    struct kvmbox_result res;
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
        res.reason == KVMBOX_STOP_PANIC || res.reason == KVMBOX_STOP_NO_BOOT)
        fprintf(stderr, "kvmbox: %s\n", res.message);
    return kvmbox_exit_status(&res);
}

static int create_vm(struct run_options *o, struct kvmbox_vm **vm, char *msg, size_t len)
{
    struct kvmbox_result res;
    char rt[2048];
    if (!o->vm.runtime_dir && cli_runtime_dir(rt, sizeof(rt)) == 0)
        o->vm.runtime_dir = rt; /* segments live next to the control sockets */
    if (kvmbox_vm_create(&o->vm, vm, &res) < 0) {
        snprintf(msg, len, "%s", res.message);
        return res.config_error ? KVMBOX_EXIT_USAGE : KVMBOX_EXIT_FAILURE;
    }
    return 0;
}

/* The child reports "<status> <message>" through the pipe once the VM exists or failed. */
static int daemonize_and_run(struct run_options *o)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        perror("kvmbox: pipe");
        return KVMBOX_EXIT_FAILURE;
    }
    char log[4200];
    cli_log_path(o->vm.name, log, sizeof(log));
    pid_t pid = fork();
    if (pid < 0) {
        perror("kvmbox: fork");
        return KVMBOX_EXIT_FAILURE;
    }
    if (pid > 0) {
        close(p[1]);
        char buf[1024] = "";
        ssize_t n = read(p[0], buf, sizeof(buf) - 1);
        close(p[0]);
        if (n <= 0) {
            fprintf(stderr, "kvmbox: the VM process died while starting (see %s)\n", log);
            return KVMBOX_EXIT_FAILURE;
        }
        buf[n] = 0;
        int status = atoi(buf);
        const char *text = strchr(buf, ' ') ? strchr(buf, ' ') + 1 : "";
        if (status)
            fprintf(stderr, "kvmbox: %s\n", text);
        else
            printf("%s\n", text);
        return status;
    }
    close(p[0]);
    setsid();
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0)
        dup2(fd, STDOUT_FILENO), dup2(fd, STDERR_FILENO);
    if (null >= 0)
        dup2(null, STDIN_FILENO);
    o->vm.console_in = -1;
    o->vm.console_out = STDOUT_FILENO;
    o->vm.console_escape = false;
    struct kvmbox_vm *vm;
    char msg[600];
    int status = create_vm(o, &vm, msg, sizeof(msg));
    char out[700];
    int n = snprintf(out, sizeof(out), "%d %s", status, status ? msg : o->vm.name);
    if (write(p[1], out, (size_t)n) < 0) {
        /* the parent went away; run anyway */
    }
    close(p[1]);
    if (status)
        _exit(status);
    _exit(run_vm(vm, false, !o->vm.no_sandbox));
}

int cmd_run(int argc, char **argv)
{
    struct run_options o;
    char err[512];
    if (config_parse_run(argc, argv, &o, err, sizeof(err)) < 0) {
        fprintf(stderr, "kvmbox: %s (see kvmbox run --help)\n", err);
        return KVMBOX_EXIT_USAGE;
    }
    if (o.help) {
        fputs(config_run_usage, stdout);
        return 0;
    }
    char gen_name[32], sock[4200], uuid[37];
    if (!o.vm.name) {
        uint32_t r = 0;
        if (getrandom(&r, sizeof(r), 0) < 0)
            r = (uint32_t)getpid();
        snprintf(gen_name, sizeof(gen_name), "vm-%06x", r & 0xffffff);
        o.vm.name = gen_name;
    }
    if (!cli_valid_name(o.vm.name)) {
        fprintf(stderr, "kvmbox: invalid VM name '%s' (letters, digits, '-', '_', '.')\n", o.vm.name);
        return KVMBOX_EXIT_USAGE;
    }
    if (!o.vm.api_sock) {
        cli_socket_path(o.vm.name, sock, sizeof(sock));
        o.vm.api_sock = sock;
    }
    struct json_object *def = cli_def_from_argv(argc, argv);
    json_object_object_add(def, "name", json_object_new_string(o.vm.name));
    struct json_object *u;
    if (!json_object_object_get_ex(def, "uuid", &u)) {
        cli_new_uuid(uuid);
        json_object_object_add(def, "uuid", json_object_new_string(uuid));
        json_object_object_get_ex(def, "uuid", &u);
    }
    /* The firmware shows the VM's UUID (SMBIOS type 1), the same one the definition keeps. */
    if (!o.vm.have_uuid && config_parse_uuid(json_object_get_string(u), o.vm.uuid) == 0)
        o.vm.have_uuid = true;
    char *def_text = strdup(json_object_to_json_string_ext(def, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(def);
    o.vm.config_json = def_text;

    /* Signals are taken by a thread of ours; block them before any thread exists. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT), sigaddset(&set, SIGTERM), sigaddset(&set, SIGHUP), sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status;
    if (o.daemonize) {
        status = daemonize_and_run(&o);
    } else {
        o.vm.console_in = STDIN_FILENO;
        o.vm.console_out = STDOUT_FILENO;
        o.vm.console_escape = isatty(STDIN_FILENO);
        struct kvmbox_vm *vm;
        status = create_vm(&o, &vm, err, sizeof(err));
        if (status)
            fprintf(stderr, "kvmbox: %s\n", err);
        else
            status = run_vm(vm, o.vm.console_escape, !o.vm.no_sandbox);
    }
    free(def_text);
    return status;
}

int cmd_start(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmbox start NAME\n");
        return CLI_USAGE;
    }
    char err[512];
    struct json_object *def = cli_def_load(argv[1], err, sizeof(err));
    if (!def) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_FAIL;
    }
    int n;
    char **args = cli_def_to_argv(def, &n);
    json_object_put(def);
    char *extra[] = { "--daemonize", NULL };
    for (int i = 0; extra[i]; i++) {
        args = realloc(args, sizeof(char *) * (size_t)(n + 2));
        args[n++] = strdup(extra[i]);
        args[n] = NULL;
    }
    int status = cmd_run(n, args);
    for (int i = 0; i < n; i++)
        free(args[i]);
    free(args);
    return status;
}
