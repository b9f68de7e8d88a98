/* Embedding kvmbox: boot a kernel as a sandbox and collect its verdict, no CLI involved.
 * usage: embed [--control] KERNEL [CMDLINE]
 *   prints the guest's console and the stop reason; exits with the status `kvmbox run` would.
 *   --control: also steer the guest while it runs, as `kvmbox pause/resume/info/shutdown` do
 *   through the control socket: once it has printed a line, pause it (and check it prints
 *   nothing while paused), resume it, show its state, then press its power button.
 * usage: embed --clones N KERNEL [CMDLINE]
 *   boot the guest with a NIC, let it print a line, save it into a file (kvmbox_vm_save_fd),
 *   then run N copies of it from that file at once (kvmbox_vm_clone), each under its own name
 *   with its own MAC, and print each copy's name, MAC and next line; then stop them. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvmbox.h"

struct runner {
    struct kvmbox_vm *vm;
    struct kvmbox_result res;
    int r;
};

static void *run_vm(void *arg)
{
    struct runner *rn = arg;
    rn->r = kvmbox_vm_run(rn->vm, &rn->res);
    return NULL;
}

/* Follows the console from *POS until a newline or until the guest has ended; 0 or -1. */
static int wait_line(struct kvmbox_vm *vm, uint64_t *pos)
{
    struct kvmbox_result res;
    for (;;) {
        char buf[512];
        size_t n = kvmbox_vm_console_read(vm, pos, buf, sizeof(buf));
        if (n && memchr(buf, '\n', n))
            return 0;
        if (n)
            continue;
        if (kvmbox_vm_result(vm, &res) == 0)
            return -1; /* it ended before printing a line */
        struct pollfd p = { .fd = kvmbox_vm_console_fd(vm), .events = POLLIN };
        uint64_t v;
        if (poll(&p, 1, 1000) > 0 && read(p.fd, &v, sizeof(v)) < 0)
            return -1;
    }
}

static void show_state(struct kvmbox_vm *vm, const char *when)
{
    static const char *const names[] = { "running", "paused", "rebooting", "stopping" };
    struct kvmbox_status st;
    kvmbox_vm_status(vm, &st);
    fprintf(stderr, "embed: %s: %s, %u vCPU(s), %llu MiB, up %.1f s, %u reboot(s)\n", when, names[st.state],
            st.cpus, (unsigned long long)(st.mem_size >> 20), (double)st.uptime_ns / 1e9, st.reboots);
}

/* Pause, check the guest is quiet, resume, then ask it to power off. Returns 0, or -1 when
 * something did not behave. */
static int steer(struct kvmbox_vm *vm)
{
    uint64_t pos = 0;
    kvmbox_vm_console_attach(vm);
    int r = wait_line(vm, &pos);
    if (r == 0 && (r = kvmbox_vm_pause(vm)) < 0)
        fprintf(stderr, "embed: cannot pause: %s\n", strerror(-r));
    if (r == 0) {
        show_state(vm, "paused");
        uint64_t at = kvmbox_vm_console_end(vm);
        sleep(1);
        if (kvmbox_vm_console_end(vm) != at) {
            fprintf(stderr, "embed: the guest printed while paused\n");
            r = -1;
        }
        kvmbox_vm_resume(vm);
        pos = at;
    }
    if (r == 0 && wait_line(vm, &pos) == 0)
        show_state(vm, "resumed, printing again");
    kvmbox_vm_console_detach(vm);
    kvmbox_vm_power_button(vm);
    return r < 0 ? -1 : 0;
}

/* The text of the next complete line from *POS on (a line cut at the save is skipped). */
static int next_line(struct kvmbox_vm *vm, uint64_t *pos, char *line, size_t len)
{
    size_t n = 0;
    bool started = *pos > 0;
    for (;;) {
        char c;
        if (kvmbox_vm_console_read(vm, pos, &c, 1)) {
            if (c == '\n' && started && n) {
                line[n] = '\0';
                return 0;
            }
            if (c == '\n')
                started = true, n = 0;
            else if (c != '\r' && n + 1 < len)
                line[n++] = c;
            continue;
        }
        struct kvmbox_result res;
        struct pollfd p = { .fd = kvmbox_vm_console_fd(vm), .events = POLLIN };
        uint64_t v;
        if (kvmbox_vm_result(vm, &res) == 0 || poll(&p, 1, 60000) <= 0 || read(p.fd, &v, sizeof(v)) < 0)
            return -1;
    }
}

static int clones(const char *kernel, const char *cmdline, int n)
{
    char dir[] = "/tmp/embed-clones.XXXXXX", state[64], line[256];
    if (n < 1 || n > 16 || !mkdtemp(dir))
        return 2;
    snprintf(state, sizeof(state), "%s/vm.state", dir);
    struct kvmbox_config cfg;
    kvmbox_config_init(&cfg);
    cfg.kernel = kernel;
    cfg.cmdline = cmdline;
    cfg.mem_size = 64 << 20;
    cfg.name = "original";
    cfg.runtime_dir = dir; /* the segment's socket lives there */
    cfg.nnics = 1;
    cfg.nics[0].mode = KVMBOX_NET_SEGMENT;
    cfg.nics[0].name = "embed";
    struct runner rn[17];
    pthread_t t[17];
    char err[KVMBOX_MSG_MAX];
    int fd = open(state, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600), r = -1, started = 0;
    uint64_t pos = 0;
    if (fd < 0 || kvmbox_vm_create(&cfg, &rn[0].vm, &rn[0].res) < 0)
        goto out;
    kvmbox_vm_console_attach(rn[0].vm);
    pthread_create(&t[0], NULL, run_vm, &rn[0]);
    if (next_line(rn[0].vm, &pos, line, sizeof(line)) == 0) {
        printf("original: %s\n", line);
        r = kvmbox_vm_save_fd(rn[0].vm, fd, err, sizeof(err));
        if (r < 0)
            fprintf(stderr, "embed: save: %s\n", err);
    }
    if (r < 0)
        kvmbox_vm_stop(rn[0].vm, KVMBOX_STOP_DETACH);
    pthread_join(t[0], NULL);
    kvmbox_vm_destroy(rn[0].vm);
    cfg.restore_fd = fd; /* the original's configuration, restored from the file */
    for (int i = 0; r == 0 && i < n; i++, started++) {
        char name[32];
        snprintf(name, sizeof(name), "copy-%d", i);
        if ((r = kvmbox_vm_clone(&cfg, name, &rn[i].vm, &rn[i].res)) < 0) {
            fprintf(stderr, "embed: %s: %s\n", name, rn[i].res.message);
            break;
        }
        kvmbox_vm_console_attach(rn[i].vm);
        pthread_create(&t[i], NULL, run_vm, &rn[i]);
    }
    for (int i = 0; i < started; i++) {
        struct kvmbox_nic_status st;
        pos = 0;
        kvmbox_vm_nic_status(rn[i].vm, 0, &st);
        if (next_line(rn[i].vm, &pos, line, sizeof(line)) < 0)
            r = -1;
        printf("%s: MAC %02x:%02x:%02x:%02x:%02x:%02x, next line: %s\n", kvmbox_vm_config(rn[i].vm)->name,
               st.mac[0], st.mac[1], st.mac[2], st.mac[3], st.mac[4], st.mac[5], r < 0 ? "(none)" : line);
        kvmbox_vm_stop(rn[i].vm, KVMBOX_STOP_DETACH);
    }
    for (int i = 0; i < started; i++) {
        pthread_join(t[i], NULL);
        kvmbox_vm_destroy(rn[i].vm);
    }
out:
    if (fd >= 0)
        close(fd);
    unlink(state);
    rmdir(dir);
    return r < 0 ? 4 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "--clones"))
        return clones(argv[3], argc > 4 ? argv[4] : "", atoi(argv[2]));
    int control = argc > 1 && !strcmp(argv[1], "--control");
    if (argc < 2 + control) {
        fprintf(stderr, "usage: %s [--control] KERNEL [CMDLINE]\n", argv[0]);
        return 2;
    }
    struct kvmbox_config cfg;
    kvmbox_config_init(&cfg);
    cfg.kernel = argv[1 + control];
    cfg.cmdline = argc > 2 + control ? argv[2 + control] : "";
    cfg.mem_size = 64 << 20;
    cfg.timeout_secs = 60;
    cfg.console_out = STDOUT_FILENO;
    cfg.console_in = -1;

    struct runner rn;
    if (kvmbox_vm_create(&cfg, &rn.vm, &rn.res) < 0) {
        fprintf(stderr, "embed: %s\n", rn.res.message);
        return rn.res.config_error ? 2 : 4;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, run_vm, &rn)) {
        kvmbox_vm_destroy(rn.vm);
        return 4;
    }
    int steered = control ? steer(rn.vm) : 0;
    pthread_join(t, NULL);
    kvmbox_vm_destroy(rn.vm);
    if (rn.r < 0) {
        fprintf(stderr, "embed: %s\n", rn.res.message);
        return 4;
    }
    int status = kvmbox_exit_status(&rn.res);
    fprintf(stderr, "embed: guest stopped: %s (status %d)\n", rn.res.message, status);
    return steered < 0 ? 4 : status;
}
