/* kvmbox run and kvmbox start: the foreground console, or a daemon reachable through its
 * control socket. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "cli/cli.h"
#include "vmm/config.h"
#include "vmm/sandbox.h"
#include "vmm/settings.h"

#define SIG_KICK SIGUSR1 /* interrupts the main thread's blocking call while the VM is built */
#define SIG_QUIT SIGUSR2 /* ends the signal thread */

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

/* ---- signals ------------------------------------------------------------------------ */

/* SIGINT, SIGTERM and SIGHUP end `kvmbox run` in order at any time: while the VM is being
 * built (opening images, connecting backends: an open of a FIFO blocks for ever), by
 * interrupting the build so that it unwinds; once it runs, by stopping it. Either way the
 * status is 128 + the signal and nothing is left behind. The signals stay blocked in every
 * thread; this thread takes them with sigwait. */
struct signals {
    pthread_mutex_t lock;
    sigset_t set; /* SIGINT, SIGTERM, SIGHUP, SIG_QUIT */
    pthread_t main, thread;
    bool started, sandbox;
    bool building;        /* the main thread is in kvmbox_vm_create */
    struct kvmbox_vm *vm; /* the VM once built (and not to be abandoned) */
    int signo;            /* the first stop signal */
};

static void on_kick(int sig)
{
    (void)sig; /* only there to make the blocking call fail with EINTR */
}

/* Interrupts the build until it gives up: a kick can land just before the blocking call, so
 * it is repeated every 50 ms. Returns false when the thread is to end. */
static bool interrupt_build(struct signals *s)
{
    for (;;) {
        pthread_mutex_lock(&s->lock);
        bool building = s->building;
        pthread_mutex_unlock(&s->lock);
        if (!building)
            return true;
        pthread_kill(s->main, SIG_KICK);
        struct timespec ts = { .tv_nsec = 50 * 1000 * 1000 };
        if (sigtimedwait(&s->set, NULL, &ts) == SIG_QUIT)
            return false;
    }
}

static void *signal_thread(void *arg)
{
    struct signals *s = arg;
    pthread_setname_np(pthread_self(), "signal");
    if (sandbox_enter(SANDBOX_SIGNAL, s->sandbox) < 0)
        fprintf(stderr, "kvmbox: warning: the signal thread runs without its seccomp sandbox\n");
    sandbox_selftest(SANDBOX_SIGNAL);
    for (;;) {
        int sig;
        if (sigwait(&s->set, &sig) != 0 || sig == SIG_QUIT)
            return NULL;
        pthread_mutex_lock(&s->lock);
        if (!s->signo)
            s->signo = sig;
        struct kvmbox_vm *vm = s->vm;
        pthread_mutex_unlock(&s->lock);
        if (vm)
            kvmbox_vm_stop(vm, KVMBOX_STOP_DETACH);
        else if (!interrupt_build(s))
            return NULL;
    }
}

static void signals_start(struct signals *s, bool sandbox)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    sigemptyset(&s->set);
    sigaddset(&s->set, SIGINT), sigaddset(&s->set, SIGTERM), sigaddset(&s->set, SIGHUP);
    sigaddset(&s->set, SIG_QUIT);
    s->main = pthread_self();
    s->sandbox = sandbox;
    struct sigaction sa = { .sa_handler = on_kick }; /* no SA_RESTART: the call returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_KICK, &sa, NULL);
    s->started = pthread_create(&s->thread, NULL, signal_thread, s) == 0;
}

static void signals_stop(struct signals *s)
{
    if (s->started) {
        pthread_kill(s->thread, SIG_QUIT);
        pthread_join(s->thread, NULL);
    }
    s->started = false;
    pthread_mutex_destroy(&s->lock);
}

static int signal_seen(struct signals *s)
{
    pthread_mutex_lock(&s->lock);
    int sig = s->signo;
    pthread_mutex_unlock(&s->lock);
    return sig;
}

/* ---- what a run leaves for the verbs ----------------------------------------------- */

struct run_ctx {
    struct run_options *o;
    struct signals sig;
    bool daemon;
    bool keep_status; /* record the exit in NAME.status (daemons, and --name given) */
    char sock[4200];  /* RUNTIME/NAME.sock, when there is no --api-sock */
    char alias[4200]; /* RUNTIME/NAME.sock -> the --api-sock path; "" when none */
    char alias_target[PATH_MAX];
    char end_line[KVMBOX_MSG_MAX + 160]; /* a daemon's last log line */
};

static const char *const reason_names[] = {
    [KVMBOX_STOP_POWEROFF] = "poweroff", [KVMBOX_STOP_DEBUG_EXIT] = "debug-exit",
    [KVMBOX_STOP_RESET] = "reset",       [KVMBOX_STOP_PANIC] = "panic",
    [KVMBOX_STOP_TIMEOUT] = "timeout",   [KVMBOX_STOP_DETACH] = "stopped",
    [KVMBOX_STOP_ERROR] = "error",       [KVMBOX_STOP_KILLED] = "killed",
};

/* Writes RUNTIME/NAME.status (a new file renamed into place: readers see the old record or
 * the new one, and nothing planted under the name is followed). */
static void write_status(const char *name, int status, const struct kvmbox_result *res, int signo)
{
    char path[4200], tmp[4300], err[512];
    if (cli_runtime_path(name, ".status", path, sizeof(path), err, sizeof(err)) < 0)
        return;
    char *slash = strrchr(path, '/');
    snprintf(tmp, sizeof(tmp), "%.*s/.%s.XXXXXX", (int)(slash - path), path, slash + 1);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(name));
    json_object_object_add(o, "status", json_object_new_int(status));
    json_object_object_add(o, "reason",
                           json_object_new_string(signo ? "signal"
                                                  : res->reason < ARRAY_SIZE(reason_names)
                                                      ? reason_names[res->reason]
                                                      : "?"));
    json_object_object_add(o, "message", json_object_new_string(res->message));
    json_object_object_add(o, "ended", json_object_new_int64((int64_t)time(NULL)));
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE);
    int r = write_full(fd, text, strlen(text));
    if (r == 0)
        r = write_full(fd, "\n", 1);
    json_object_put(o);
    if (close(fd) < 0 || r < 0 || rename(tmp, path) < 0)
        unlink(tmp);
}

static int run_status(struct run_ctx *c, const struct kvmbox_result *res)
{
    int sig = signal_seen(&c->sig);
    return sig ? 128 + sig : kvmbox_exit_status(res);
}

static void remove_alias(struct run_ctx *c)
{
    char target[PATH_MAX];
    ssize_t n = c->alias[0] ? readlink(c->alias, target, sizeof(target) - 1) : -1;
    if (n < 0)
        return;
    target[n] = 0;
    if (!strcmp(target, c->alias_target)) /* still ours */
        unlink(c->alias);
    c->alias[0] = 0;
}

/* The library calls this when the VM has ended, before its socket goes: the record is in
 * place before `kvmbox wait` or `info` can find the VM gone. */
static void on_end(const struct kvmbox_result *res, void *opaque)
{
    struct run_ctx *c = opaque;
    int status = run_status(c, res), sig = signal_seen(&c->sig);
    if (c->keep_status)
        write_status(c->o->vm.name, status, res, sig);
    remove_alias(c);      /* the name now leads to the record just written */
    if (c->daemon && sig) /* the last line of NAME.log, written once all output is in */
        snprintf(c->end_line, sizeof(c->end_line),
                 "kvmbox: VM %s ended: stopped by signal %d (%s), status %d\n", c->o->vm.name, sig,
                 strsignal(sig), status);
    else if (c->daemon)
        snprintf(c->end_line, sizeof(c->end_line), "kvmbox: VM %s ended: %s, status %d\n", c->o->vm.name,
                 res->message, status);
}

/* A VM whose control socket is elsewhere (--api-sock) is found by name through a symlink
 * RUNTIME/NAME.sock to it: list, info and the other verbs work unchanged. */
static int make_alias(struct run_ctx *c, char *err, size_t errlen)
{
    const char *sock = c->o->vm.api_sock;
    if (sock[0] == '/') {
        snprintf(c->alias_target, sizeof(c->alias_target), "%s", sock);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)))
            return errf(err, errlen, -errno, "getcwd: %s", strerror(errno));
        if (snprintf(c->alias_target, sizeof(c->alias_target), "%s/%s", cwd, sock) >=
            (int)sizeof(c->alias_target))
            return errf(err, errlen, -ENAMETOOLONG, "API socket path %s is too long", sock);
    }
    struct stat a, t;
    if (stat(c->alias, &a) == 0 && stat(c->alias_target, &t) == 0 && a.st_dev == t.st_dev &&
        a.st_ino == t.st_ino) {
        c->alias[0] = 0; /* --api-sock names the usual place */
        return 0;
    }
    if (symlink(c->alias_target, c->alias) == 0)
        return 0;
    int e = errno;
    c->alias[0] = 0;
    if (e == EEXIST) /* a VM of that name started while we were building ours */
        return errf(err, errlen, -EADDRINUSE, "a VM named '%s' is already running", c->o->vm.name);
    return errf(err, errlen, -e, "cannot link %s to the API socket: %s", c->alias, strerror(e));
}

/* ---- building and running ----------------------------------------------------------- */

/* The library's run-time events: stderr, which is NAME.log for a daemon. One write per
 * line, so lines from several threads do not interleave. */
static void log_line(void *opaque, const char *line)
{
    char buf[1100];
    /* A foreground console has the terminal in raw mode: it needs the carriage return.
     * (Whether stderr is a terminal is decided before the VM starts: the sandboxed threads
     * that call this may not ask.) */
    int n = snprintf(buf, sizeof(buf), "kvmbox: %s%s", line, *(const bool *)opaque ? "\r\n" : "\n");
    if (n > 0 && write(STDERR_FILENO, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1) < 0) {
        /* nowhere left to say it */
    }
}

/* Builds the VM with SIG_KICK deliverable to this thread, so a stop signal can interrupt a
 * blocking call. Returns 0, a status for the failure with MSG set, or 128 + signal (MSG
 * empty) when a signal came while building. */
static int build_vm(struct run_ctx *c, struct kvmbox_vm **vm, char *msg, size_t len)
{
    struct run_options *o = c->o;
    struct kvmbox_result res;
    int status = 0;
    *vm = NULL;
    msg[0] = 0;
    sigset_t kick;
    sigemptyset(&kick);
    sigaddset(&kick, SIG_KICK);
    pthread_mutex_lock(&c->sig.lock);
    c->sig.building = true;
    int sig = c->sig.signo;
    pthread_mutex_unlock(&c->sig.lock);
    static bool stderr_tty;
    stderr_tty = isatty(STDERR_FILENO);
    o->vm.log = log_line;
    o->vm.log_opaque = &stderr_tty;
    if (!sig) {
        pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
        if (kvmbox_vm_create(&o->vm, vm, &res) < 0) {
            snprintf(msg, len, "%s", res.message);
            status = res.config_error ? KVMBOX_EXIT_USAGE : KVMBOX_EXIT_FAILURE;
        }
        pthread_sigmask(SIG_BLOCK, &kick, NULL);
    }
    if (status == 0 && c->alias[0] && make_alias(c, msg, len) < 0)
        status = KVMBOX_EXIT_USAGE;
    pthread_mutex_lock(&c->sig.lock);
    c->sig.building = false;
    sig = c->sig.signo;
    if (status == 0 && !sig)
        c->sig.vm = *vm; /* from now on a signal stops it */
    pthread_mutex_unlock(&c->sig.lock);
    if (status || sig) {
        remove_alias(c);
        kvmbox_vm_destroy(*vm);
        *vm = NULL;
    }
    if (sig) {
        msg[0] = 0;
        return 128 + sig;
    }
    return status;
}

static int run_built(struct run_ctx *c, struct kvmbox_vm *vm, bool console)
{
    struct term_state term = { 0 };
    if (console)
        term_raw(&term);
    struct kvmbox_result res;
    int r = kvmbox_vm_run(vm, &res);
    term_restore(&term);
    signals_stop(&c->sig); /* before the VM goes: the thread may be stopping it */
    kvmbox_vm_destroy(vm);
    remove_alias(c);
    if (r < 0) {
        fprintf(stderr, "kvmbox: %s\n", res.message);
        return KVMBOX_EXIT_FAILURE;
    }
    if (c->sig.signo)
        return 128 + c->sig.signo;
    if (res.reason == KVMBOX_STOP_ERROR || res.reason == KVMBOX_STOP_TIMEOUT ||
        res.reason == KVMBOX_STOP_PANIC || res.reason == KVMBOX_STOP_NO_BOOT)
        fprintf(stderr, "kvmbox: %s\n", res.message);
    return kvmbox_exit_status(&res);
}

/* ---- the daemon ------------------------------------------------------------------------ */

/* The daemon holds nothing its caller had open but stdin/stdout/stderr (replaced next) and
 * KEEP: a pipe the caller reads to its end (`$(kvmbox run --daemonize ...)`), a lock, a
 * terminal. The configuration names files by path, never by descriptor. */
static void close_inherited_fds(int keep)
{
    for (int fd = 3; fd < keep; fd++)
        close(fd);
    if (close_range((unsigned)keep + 1, ~0U, 0) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = keep + 1; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
        close((int)fd);
}

/* The caller's side: waits for the child's "<status> <message>" report. A stop signal is
 * passed on to the child, which abandons the build; the caller then ends with 128 + it. */
static int daemon_parent(pid_t child, int rd, const char *name)
{
    sigset_t stops;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT), sigaddset(&stops, SIGTERM), sigaddset(&stops, SIGHUP);
    int sfd = signalfd(-1, &stops, SFD_CLOEXEC); /* the signals are blocked: they queue here */
    char buf[1024];
    size_t n = 0;
    int forwarded = 0;
    for (;;) {
        struct pollfd p[2] = { { .fd = rd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        struct signalfd_siginfo si;
        if ((p[1].revents & POLLIN) && read(sfd, &si, sizeof(si)) == sizeof(si)) {
            kill(child, (int)si.ssi_signo);
            if (!forwarded)
                forwarded = (int)si.ssi_signo;
        }
        if (p[0].revents) {
            ssize_t r = read(rd, buf + n, sizeof(buf) - 1 - n);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0 || (n += (size_t)r) == sizeof(buf) - 1)
                break;
        }
    }
    close(rd);
    if (sfd >= 0)
        close(sfd);
    buf[n] = 0;
    int status = n ? atoi(buf) : KVMBOX_EXIT_FAILURE;
    const char *text = strchr(buf, ' ') ? strchr(buf, ' ') + 1 : "";
    if (forwarded && status)
        return 128 + forwarded; /* asked to stop: no complaint */
    if (!n) {
        char log[4200], err[512];
        if (cli_runtime_path(name, ".log", log, sizeof(log), err, sizeof(err)) < 0)
            snprintf(log, sizeof(log), "its log");
        fprintf(stderr, "kvmbox: the VM process died while starting (see %s)\n", log);
        return KVMBOX_EXIT_FAILURE;
    }
    if (status)
        fprintf(stderr, "kvmbox: %s\n", text);
    else
        printf("%s\n", text);
    return forwarded ? 128 + forwarded : status;
}

static void report(int fd, int status, const char *text)
{
    char out[700];
    int n = snprintf(out, sizeof(out), "%d %s", status, text);
    if (write(fd, out, (size_t)(n < (int)sizeof(out) ? n : (int)sizeof(out) - 1)) < 0) {
        /* the caller went away; the VM runs anyway */
    }
    close(fd);
}

/* The child reports "<status> <message>" through the pipe once the VM exists or failed. */
static int daemonize_and_run(struct run_ctx *c)
{
    struct run_options *o = c->o;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        perror("kvmbox: pipe");
        return KVMBOX_EXIT_FAILURE;
    }
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("kvmbox: fork");
        return KVMBOX_EXIT_FAILURE;
    }
    if (pid > 0) {
        close(p[1]);
        return daemon_parent(pid, p[0], o->vm.name);
    }
    close(p[0]);
    if (p[1] < 3) { /* the caller ran us with stdin, stdout or stderr closed */
        int fd = fcntl(p[1], F_DUPFD_CLOEXEC, 3);
        close(p[1]);
        p[1] = fd;
    }
    close_inherited_fds(p[1]);
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0)
        dup2(null, STDIN_FILENO), close(null);
    char msg[600];
    struct cli_log *log = NULL;
    if (cli_log_start(o->vm.name, !o->vm.no_sandbox, &log, msg, sizeof(msg)) < 0) {
        report(p[1], KVMBOX_EXIT_USAGE, msg);
        _exit(KVMBOX_EXIT_USAGE);
    }
    o->vm.console_in = -1;
    o->vm.console_out = STDOUT_FILENO;
    o->vm.console_escape = false;
    c->daemon = true;
    signals_start(&c->sig, !o->vm.no_sandbox);
    struct kvmbox_vm *vm;
    int status = build_vm(c, &vm, msg, sizeof(msg));
    report(p[1], status, status ? msg : o->vm.name);
    if (status) {
        if (msg[0])
            fprintf(stderr, "kvmbox: %s\n", msg);
        signals_stop(&c->sig);
    } else {
        status = run_built(c, vm, false);
    }
    cli_log_stop(log, c->end_line);
    _exit(status);
}

/* ---- kvmbox run ------------------------------------------------------------------------ */

/* Refuses a name a running VM has (before anything is opened: its disks are locked, and a
 * lock conflict would hide the real reason), and forgets the last run's record. */
static int claim_name(struct run_ctx *c, char *err, size_t errlen)
{
    const char *name = c->o->vm.name;
    int fd = cli_connect(name, err, errlen);
    if (fd >= 0) {
        close(fd);
        return errf(err, errlen, -EADDRINUSE, "a VM named '%s' is already running", name);
    }
    if (fd != -ENOENT)
        return fd;
    char path[4200];
    int r = cli_runtime_path(name, ".status", path, sizeof(path), err, errlen);
    if (r < 0)
        return r;
    unlink(path);
    return cli_runtime_path(name, ".sock", c->alias, sizeof(c->alias), err, errlen);
}

/* Runs the machine O describes: in the foreground, or as a daemon with O->daemonize. Its
 * definition (what dumpconfig shows and what `define` would store) is made from O by the
 * settings table, before the CLI fills in what it computes (the socket's usual place). */
static int run_options(struct run_options *o)
{
    char err[600];
    cli_restore_apply(&o->vm); /* `kvmbox restore` runs us */
    struct run_ctx c = { .o = o };
    c.keep_status = o->daemonize || o->vm.name;
    char gen_name[32], rt[2048];
    if (!o->vm.name) {
        uint32_t r = 0;
        if (getrandom(&r, sizeof(r), 0) < 0)
            r = (uint32_t)getpid();
        snprintf(gen_name, sizeof(gen_name), "vm-%06x", r & 0xffffff);
        o->vm.name = gen_name;
    }
    if (!cli_valid_name(o->vm.name)) {
        cli_bad_name(o->vm.name, err, sizeof(err));
        fprintf(stderr, "kvmbox: %s\n", err);
        return KVMBOX_EXIT_USAGE;
    }
    /* The firmware shows the VM's UUID (SMBIOS type 1), the same one the definition keeps. */
    if (!o->vm.have_uuid) {
        char uuid[37];
        cli_new_uuid(uuid);
        o->vm.have_uuid = config_parse_uuid(uuid, o->vm.uuid) == 0;
    }
    struct json_object *def = json_object_new_object();
    config_to_def(&o->vm, def);
    char *def_text = strdup(
        json_object_to_json_string_ext(def, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(def);
    o->vm.config_json = def_text;
    if (cli_runtime_dir(rt, sizeof(rt), err, sizeof(err)) < 0 || claim_name(&c, err, sizeof(err)) < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        free(def_text);
        return KVMBOX_EXIT_USAGE;
    }
    if (!o->vm.api_sock) { /* the usual place: no alias needed */
        snprintf(c.sock, sizeof(c.sock), "%s", c.alias);
        o->vm.api_sock = c.sock;
        c.alias[0] = 0;
    }
    if (!o->vm.runtime_dir)
        o->vm.runtime_dir = rt; /* segments live next to the control sockets */
    o->vm.on_end = on_end;
    o->vm.on_end_opaque = &c;

    /* Signals are taken by a thread of ours; block them before any thread exists. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT), sigaddset(&set, SIGTERM), sigaddset(&set, SIGHUP), sigaddset(&set, SIG_QUIT);
    sigaddset(&set, SIG_KICK);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status;
    if (o->daemonize) {
        status = daemonize_and_run(&c);
    } else {
        o->vm.console_in = STDIN_FILENO;
        o->vm.console_out = STDOUT_FILENO;
        o->vm.console_escape = isatty(STDIN_FILENO);
        signals_start(&c.sig, !o->vm.no_sandbox);
        struct kvmbox_vm *vm;
        status = build_vm(&c, &vm, err, sizeof(err));
        if (status) {
            if (err[0])
                fprintf(stderr, "kvmbox: %s\n", err);
            signals_stop(&c.sig);
        } else {
            status = run_built(&c, vm, o->vm.console_escape);
        }
    }
    free(def_text);
    return status;
}

int cli_run_options(struct run_options *o)
{
    return run_options(o);
}

int cmd_run(int argc, char **argv)
{
    /* The options hold their strings (192 KiB): on the heap, not the main thread's stack. */
    struct run_options *o = malloc(sizeof(*o));
    char err[600];
    if (!o) {
        fprintf(stderr, "kvmbox: out of memory\n");
        return KVMBOX_EXIT_FAILURE;
    }
    int status;
    if (config_parse_run(argc, argv, o, err, sizeof(err)) < 0) {
        fprintf(stderr, "kvmbox: %s (see kvmbox run --help)\n", err);
        status = KVMBOX_EXIT_USAGE;
    } else if (o->help) {
        char usage[8192];
        size_t n = config_usage(usage, sizeof(usage));
        fwrite(usage, 1, n < sizeof(usage) ? n : sizeof(usage) - 1, stdout);
        status = 0;
    } else {
        status = run_options(o);
    }
    free(o);
    return status;
}

/* `start NAME`: the stored definition, parsed by the same table, run as a daemon. A
 * definition that no longer parses (a key this version does not know, a relative path) is
 * refused with the line that says why, status 2. */
int cmd_start(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmbox start NAME\n");
        return CLI_USAGE;
    }
    char err[600];
    if (!cli_valid_name(argv[1])) {
        cli_bad_name(argv[1], err, sizeof(err));
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_USAGE;
    }
    struct json_object *def = cli_def_load(argv[1], err, sizeof(err));
    if (!def) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_FAIL;
    }
    struct run_options *o = malloc(sizeof(*o));
    int status = KVMBOX_EXIT_USAGE;
    if (!o)
        snprintf(err, sizeof(err), "out of memory");
    else if (config_from_def(def, o, err, sizeof(err)) < 0)
        ;
    else if (!o->vm.name || strcmp(o->vm.name, argv[1]))
        snprintf(err, sizeof(err), "the definition of '%s' names another VM", argv[1]);
    else
        err[0] = 0;
    json_object_put(def);
    if (o && !err[0]) {
        o->daemonize = true;
        status = run_options(o);
    } else {
        fprintf(stderr, "kvmbox: definition of %s: %s\n", argv[1], err);
    }
    free(o);
    return status;
}
