/* Embedding kvmbox: boot a kernel as a sandbox and collect its verdict, no CLI involved.
 * usage: embed [--control] KERNEL [CMDLINE]
 *   prints the guest's console and the stop reason; exits with the status `kvmbox run` would.
 *   --control: also steer the guest while it runs, as `kvmbox pause/resume/info/shutdown` do
 *   through the control socket: once it has printed a line, pause it (and check it prints
 *   nothing while paused), resume it, show its state, then press its power button. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
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

int main(int argc, char **argv)
{
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
