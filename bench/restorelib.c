/* Library-only restore time (bench/savestate-bench.sh, docs/benchmarks.md): what an embedder
 * that restores a prepared VM over and over pays, without the CLI's process start and
 * daemonizing.
 *   restorelib KERNEL MEM_MIB STATE RUNS [CMDLINE]
 * When STATE does not exist it is made first: KERNEL (guest-tests/savestate.elf) boots with
 * CMDLINE (default "mode=dots touch=64"), prints 10 lines and is saved with kvmbox_vm_save_fd.
 * Then RUNS times in this one process: kvmbox_vm_create with restore_path = STATE, run on a
 * thread until the guest's first output, stop, destroy. Prints one line per figure:
 *   create_ms MEDIAN MIN MAX       kvmbox_vm_create alone
 *   output_ms MEDIAN MIN MAX       kvmbox_vm_create to the first byte the guest prints
 *   rss_kib BEFORE AFTER           the process's RSS after the first run and after the last
 *   fds BEFORE AFTER               its open file descriptors, the same
 *   rss_at_output_kib MEDIAN       RSS while the restored guest runs, minus that before it
 * Not a test: numbers vary with the host and its load. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvmbox.h"

struct runner {
    struct kvmbox_vm *vm;
    struct kvmbox_result res;
};

static void *run_vm(void *arg)
{
    struct runner *rn = arg;
    kvmbox_vm_run(rn->vm, &rn->res);
    return NULL;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static long rss_kib(void)
{
    long size = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld %ld", &size, &rss) != 2)
        rss = 0;
    if (f)
        fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* Waits until the guest printed NEWLINES lines since *POS (0: any byte); -1 when it printed
 * nothing for 60 s or ended. */
static int wait_output(struct kvmbox_vm *vm, uint64_t *pos, int newlines)
{
    int seen = 0;
    for (;;) {
        char buf[4096];
        size_t n = kvmbox_vm_console_read(vm, pos, buf, sizeof(buf));
        if (n && !newlines)
            return 0;
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '\n' && ++seen >= newlines)
                return 0;
        if (n)
            continue;
        struct kvmbox_result res;
        if (kvmbox_vm_result(vm, &res) == 0) {
            fprintf(stderr, "restorelib: the VM ended: %s\n", res.message);
            return -1;
        }
        struct pollfd p = { .fd = kvmbox_vm_console_fd(vm), .events = POLLIN };
        uint64_t v;
        if (poll(&p, 1, 60000) <= 0 || read(p.fd, &v, sizeof(v)) < 0)
            return -1;
    }
}

static int start(struct kvmbox_config *cfg, struct runner *rn, pthread_t *t)
{
    memset(rn, 0, sizeof(*rn));
    if (kvmbox_vm_create(cfg, &rn->vm, &rn->res) < 0) {
        fprintf(stderr, "restorelib: %s\n", rn->res.message);
        return -1;
    }
    kvmbox_vm_console_attach(rn->vm);
    return pthread_create(t, NULL, run_vm, rn) ? -1 : 0;
}

static void end(struct runner *rn, pthread_t t, bool stop)
{
    if (stop)
        kvmbox_vm_stop(rn->vm, KVMBOX_STOP_DETACH);
    pthread_join(t, NULL);
    kvmbox_vm_console_detach(rn->vm);
    kvmbox_vm_destroy(rn->vm);
}

static int make_state(struct kvmbox_config *cfg, const char *state)
{
    struct runner rn;
    pthread_t t;
    uint64_t pos = 0;
    if (start(cfg, &rn, &t) < 0 || wait_output(rn.vm, &pos, 10) < 0)
        return -1;
    int fd = open(state, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    char err[KVMBOX_MSG_MAX];
    double t0 = now_ms();
    if (fd < 0 || kvmbox_vm_save_fd(rn.vm, fd, err, sizeof(err)) < 0) {
        fprintf(stderr, "restorelib: save: %s\n", fd < 0 ? strerror(errno) : err);
        return -1;
    }
    end(&rn, t, false);
    printf("save_ms %.1f\n", now_ms() - t0);
    close(fd);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void show(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    printf("%s %.2f %.2f %.2f\n", what, v[n / 2], v[0], v[n - 1]);
}

int main(int argc, char **argv)
{
    if (argc < 5 || atoi(argv[4]) < 1) {
        fprintf(stderr, "usage: restorelib KERNEL MEM_MIB STATE RUNS [CMDLINE]\n");
        return 2;
    }
    struct kvmbox_config cfg;
    kvmbox_config_init(&cfg);
    cfg.kernel = argv[1];
    cfg.mem_size = (uint64_t)atoll(argv[2]) << 20;
    cfg.cmdline = argc > 5 ? argv[5] : "mode=dots touch=64";
    cfg.name = "restorelib";
    const char *state = argv[3];
    int runs = atoi(argv[4]);
    if (access(state, F_OK) < 0 && make_state(&cfg, state) < 0)
        return 1;
    cfg.restore_path = state;
    double *create = calloc((size_t)runs, sizeof(double)), *output = calloc((size_t)runs, sizeof(double));
    double *rss = calloc((size_t)runs, sizeof(double));
    long rss0 = 0;
    int fds0 = 0;
    for (int i = 0; i < runs; i++) {
        struct runner rn;
        pthread_t t;
        uint64_t pos = 0;
        long base = rss_kib();
        double t0 = now_ms();
        if (start(&cfg, &rn, &t) < 0)
            return 1;
        create[i] = now_ms() - t0;
        if (wait_output(rn.vm, &pos, 0) < 0)
            return 1;
        output[i] = now_ms() - t0;
        rss[i] = (double)(rss_kib() - base);
        end(&rn, t, true);
        if (i == 0)
            rss0 = rss_kib(), fds0 = open_fds();
    }
    show("create_ms", create, runs);
    show("output_ms", output, runs);
    printf("rss_kib %ld %ld\n", rss0, rss_kib());
    printf("fds %d %d\n", fds0, open_fds());
    show("rss_at_output_kib", rss, runs);
    free(create), free(output), free(rss);
    return 0;
}
