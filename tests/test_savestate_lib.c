/* Saving and restoring through the library, as an embedder does (include/kvmbox.h,
 * docs/savestate.md), with the counting guest (guest-tests/savestate.c) and a NIC on a
 * private segment:
 *  - kvmbox_vm_save_fd to a file, then a restore from an fd (kvmbox_config.restore_fd): the
 *    guest goes on at exactly the next count, under its name with its (explicit) MAC;
 *  - three copies at once from that one file (kvmbox_vm_clone): each goes on from the saved
 *    count, with its own name and a MAC of its own, derived from that name (the explicit MAC
 *    of the original is not theirs);
 *  - a save to a pipe, stored by a reader, restores like a file; refusals: a pipe as
 *    restore_fd, a save fd that holds data, a clone without a state file;
 *  - 100 restores of one file in a row (create, run to the next line, destroy): the process's
 *    open fds do not change at all and its RSS stays within a small bound.
 * Every wait is bounded by the guest's progress (no console output for 60 s fails). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "net/net.h"
#include "tests/check_main.h"

#define QUIET_MS      60000
#define LEAK_RUNS     100
#define LEAK_WARMUP   5
#define RSS_BOUND_KIB (8 * 1024)

static char guest[PATH_MAX];
static const uint8_t explicit_mac[6] = { 0x52, 0x54, 0x00, 0x5a, 0x11, 0xb0 };
static char tmpdir[256];

/* A VM run on a thread of its own, with all its console output collected. */
struct vmrun {
    struct kvmbox_vm *vm;
    pthread_t thread;
    struct kvmbox_result res;
    int r;
    uint64_t pos;
    char *out;
    size_t len, cap;
};

static void *run_thread(void *arg)
{
    struct vmrun *v = arg;
    v->r = kvmbox_vm_run(v->vm, &v->res);
    return NULL;
}

static bool have_kvm(void)
{
    if (access(guest, R_OK) == 0 && access("/dev/kvm", R_OK | W_OK) == 0)
        return true;
    fprintf(stderr, "SKIP: library save/restore test: needs /dev/kvm and %s\n", guest);
    return false;
}

static void base_config(struct kvmbox_config *cfg)
{
    kvmbox_config_init(cfg);
    cfg->kernel = guest;
    cfg->cmdline = "period=50";
    cfg->mem_size = 64 << 20;
    cfg->name = "lib-orig";
    cfg->runtime_dir = tmpdir;
    cfg->nnics = 1;
    cfg->nics[0].mode = KVMBOX_NET_SEGMENT;
    cfg->nics[0].name = "libseg";
    cfg->nics[0].have_mac = true; /* kept by a restore under the same name, not by a copy */
    memcpy(cfg->nics[0].mac, explicit_mac, 6);
}

static int start(struct vmrun *v, const struct kvmbox_config *cfg, const char *clone_name)
{
    memset(v, 0, sizeof(*v));
    int r = clone_name ? kvmbox_vm_clone(cfg, clone_name, &v->vm, &v->res)
                       : kvmbox_vm_create(cfg, &v->vm, &v->res);
    if (r < 0)
        return r;
    kvmbox_vm_console_attach(v->vm);
    ck_assert_int_eq(pthread_create(&v->thread, NULL, run_thread, v), 0);
    return 0;
}

/* Takes what the guest printed; false when there was nothing new. */
static bool collect(struct vmrun *v)
{
    bool got = false;
    for (;;) {
        if (v->cap - v->len < 4097) {
            v->cap = v->cap ? v->cap * 2 : 65536;
            v->out = realloc(v->out, v->cap);
            ck_assert_ptr_nonnull(v->out);
        }
        size_t n = kvmbox_vm_console_read(v->vm, &v->pos, v->out + v->len, 4096);
        if (!n)
            break;
        v->len += n;
        got = true;
    }
    if (v->out)
        v->out[v->len] = '\0';
    return got;
}

static unsigned count_lines(const char *text)
{
    unsigned n = 0;
    for (const char *p = text; p && (p = strstr(p, "COUNT ")); p++)
        if ((p == text || p[-1] == '\n') && strchr(p, '\n'))
            n++;
    return n;
}

/* Waits until the guest printed WANT complete COUNT lines in all. */
static void wait_counts(struct vmrun *v, unsigned want)
{
    while (!v->out || count_lines(v->out) < want) {
        if (collect(v))
            continue;
        struct kvmbox_result res;
        ck_assert_msg(kvmbox_vm_result(v->vm, &res) != 0, "the VM ended (%s) before %u lines:\n%s",
                      res.message, want, v->out ? v->out : "");
        struct pollfd p = { .fd = kvmbox_vm_console_fd(v->vm), .events = POLLIN };
        ck_assert_msg(poll(&p, 1, QUIET_MS) > 0, "no console output for %d s waiting for %u lines",
                      QUIET_MS / 1000, want);
        uint64_t x;
        ck_assert_int_eq(read(p.fd, &x, sizeof(x)), sizeof(x));
    }
}

static void finish(struct vmrun *v, bool stop)
{
    if (stop)
        kvmbox_vm_stop(v->vm, KVMBOX_STOP_DETACH);
    pthread_join(v->thread, NULL);
    collect(v);
    kvmbox_vm_console_detach(v->vm);
    kvmbox_vm_destroy(v->vm);
    v->vm = NULL;
}

/* The COUNT lines of BEFORE followed by AFTER (a line cut by the save runs on in AFTER):
 * 0, 1, 2... with no gap and no LEAP line. Returns the last count, -1 on a gap. */
static long counts_follow(const char *before, const char *after)
{
    size_t lb = strlen(before), la = strlen(after);
    char *all = malloc(lb + la + 1);
    ck_assert_ptr_nonnull(all);
    memcpy(all, before, lb), memcpy(all + lb, after, la + 1);
    long next = 0;
    bool ok = !strstr(all, "LEAP");
    for (char *line = strtok(all, "\n"); line && ok; line = strtok(NULL, "\n")) {
        unsigned long c;
        if (sscanf(line, "COUNT %lu ms=", &c) == 1 && !strncmp(line, "COUNT ", 6)) {
            if ((long)c != next) {
                fprintf(stderr, "count %lu where %ld was due\n", c, next);
                ok = false;
            }
            next = (long)c + 1;
        }
    }
    free(all);
    return ok ? next - 1 : -1;
}

/* The count of the last complete COUNT line of TEXT. */
static long last_count(const char *text)
{
    long last = -1;
    for (const char *p = text; (p = strstr(p, "COUNT ")); p++) {
        unsigned long c;
        if ((p == text || p[-1] == '\n') && strchr(p, '\n') && sscanf(p, "COUNT %lu", &c) == 1)
            last = (long)c;
    }
    return last;
}

static void mac_str(const uint8_t m[6], char *b)
{
    snprintf(b, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

/* The NIC's MAC: the explicit one (NAME NULL), or the one derived from NAME. */
static void check_mac(struct kvmbox_vm *vm, const char *name)
{
    struct kvmbox_nic_status st;
    uint8_t want[6];
    char a[18], b[18];
    ck_assert_int_eq(kvmbox_vm_nic_status(vm, 0, &st), 0);
    if (name)
        net_default_mac(name, 0, want);
    else
        memcpy(want, explicit_mac, 6), name = "the original";
    mac_str(st.mac, a), mac_str(want, b);
    ck_assert_msg(!memcmp(st.mac, want, 6), "%s has MAC %s, want %s", name, a, b);
}

/* Boots the counting guest, lets it print a few lines and saves it through kvmbox_vm_save_fd
 * into a new file; returns the file (open) and the output up to the save in *BEFORE. */
static int boot_and_save(const char *file, char **before)
{
    struct kvmbox_config cfg;
    base_config(&cfg);
    struct vmrun v;
    ck_assert_msg(start(&v, &cfg, NULL) == 0, "create: %s", v.res.message);
    wait_counts(&v, 4);
    int fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);

    /* A save fd that holds data is refused, and the VM runs on. */
    char err[KVMBOX_MSG_MAX];
    char used[PATH_MAX];
    snprintf(used, sizeof(used), "%s/used", tmpdir);
    int ufd = open(used, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_eq(write(ufd, "data", 4), 4);
    ck_assert_int_eq(kvmbox_vm_save_fd(v.vm, ufd, err, sizeof(err)), -EEXIST);
    ck_assert_msg(strstr(err, "not empty"), "%s", err);
    close(ufd);
    wait_counts(&v, count_lines(v.out) + 1);

    int r = kvmbox_vm_save_fd(v.vm, fd, err, sizeof(err));
    ck_assert_msg(r == 0, "save_fd: %s", err);
    finish(&v, false);
    ck_assert_int_eq(v.r, 0);
    ck_assert_int_eq(v.res.reason, KVMBOX_STOP_DETACH);
    ck_assert_msg(strstr(v.res.message, "saved to fd"), "%s", v.res.message);
    *before = v.out;
    return fd;
}

struct pipe_copy {
    int in, out;
    int r;
};

static void *copy_pipe(void *arg)
{
    struct pipe_copy *c = arg;
    char buf[1 << 16];
    ssize_t n;
    while ((n = read(c->in, buf, sizeof(buf))) > 0)
        if (write(c->out, buf, (size_t)n) != n) {
            c->r = -1;
            break;
        }
    return NULL;
}

START_TEST(save_fd_restore_fd_and_clones)
{
    if (!have_kvm())
        return;
    char file[PATH_MAX];
    snprintf(file, sizeof(file), "%s/orig.state", tmpdir);
    char *before;
    int fd = boot_and_save(file, &before);
    long saved = last_count(before);
    ck_assert_int_ge(saved, 3);
    struct kvmbox_config cfg;
    base_config(&cfg);

    /* Restored from the fd under its own name: the next count, its own MAC. */
    cfg.restore_fd = fd;
    struct vmrun v;
    ck_assert_msg(start(&v, &cfg, NULL) == 0, "restore from fd: %s", v.res.message);
    close(fd); /* the library holds its own */
    wait_counts(&v, 3);
    check_mac(v.vm, NULL);
    finish(&v, true);
    ck_assert_msg(counts_follow(before, v.out) > saved, "the restored guest did not go on:\n%s", v.out);
    free(v.out);

    /* Three copies of it at once from the same file, by its path this time. */
    cfg.restore_fd = -1;
    cfg.restore_path = file;
    struct vmrun c[3];
    const char *names[3] = { "lib-clone0", "lib-clone1", "lib-clone2" };
    for (int i = 0; i < 3; i++)
        ck_assert_msg(start(&c[i], &cfg, names[i]) == 0, "clone %d: %s", i, c[i].res.message);
    for (int i = 0; i < 3; i++) {
        wait_counts(&c[i], 3);
        ck_assert_str_eq(kvmbox_vm_config(c[i].vm)->name, names[i]);
        check_mac(c[i].vm, names[i]);
    }
    struct kvmbox_nic_status s0, s1, s2;
    ck_assert_int_eq(kvmbox_vm_nic_status(c[0].vm, 0, &s0), 0);
    ck_assert_int_eq(kvmbox_vm_nic_status(c[1].vm, 0, &s1), 0);
    ck_assert_int_eq(kvmbox_vm_nic_status(c[2].vm, 0, &s2), 0);
    ck_assert(memcmp(s0.mac, s1.mac, 6) && memcmp(s1.mac, s2.mac, 6) && memcmp(s0.mac, s2.mac, 6));

    /* The second copy is saved into a pipe; what a reader stores restores as a file does. */
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    char streamed[PATH_MAX];
    snprintf(streamed, sizeof(streamed), "%s/streamed.state", tmpdir);
    struct pipe_copy pc = { .in = p[0],
                            .out = open(streamed, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) };
    ck_assert_int_ge(pc.out, 0);
    pthread_t reader;
    ck_assert_int_eq(pthread_create(&reader, NULL, copy_pipe, &pc), 0);
    char err[KVMBOX_MSG_MAX];
    int r = kvmbox_vm_save_fd(c[1].vm, p[1], err, sizeof(err));
    ck_assert_msg(r == 0, "save to a pipe: %s", err);
    close(p[1]);
    pthread_join(reader, NULL);
    close(p[0]);
    close(pc.out);
    ck_assert_int_eq(pc.r, 0);
    finish(&c[1], false);
    ck_assert_int_eq(c[1].res.reason, KVMBOX_STOP_DETACH);
    for (int i = 0; i < 3; i += 2) {
        finish(&c[i], true);
        ck_assert_msg(counts_follow(before, c[i].out) > saved, "copy %d did not go on from count %ld:\n%s", i,
                      saved, c[i].out);
        free(c[i].out);
    }
    ck_assert_msg(counts_follow(before, c[1].out) > saved, "copy 1 did not go on:\n%s", c[1].out);

    /* The streamed copy goes on where copy 1 stopped, with copy 1's name and MAC. */
    char *before1 = malloc(strlen(before) + c[1].len + 1);
    strcpy(before1, before), strcat(before1, c[1].out);
    free(c[1].out);
    struct kvmbox_config cfg1 = cfg;
    cfg1.restore_path = streamed;
    cfg1.name = names[1];
    ck_assert_msg(start(&v, &cfg1, names[1]) == 0, "restore of the streamed state: %s", v.res.message);
    wait_counts(&v, 3);
    check_mac(v.vm, names[1]);
    finish(&v, true);
    long at1 = last_count(before1);
    ck_assert_msg(counts_follow(before1, v.out) > at1, "the streamed copy did not go on from %ld:\n%s", at1,
                  v.out);
    free(v.out);
    free(before1);
    free(before);
}
END_TEST

START_TEST(bad_restore_input)
{
    if (!have_kvm())
        return;
    struct kvmbox_config cfg;
    base_config(&cfg);
    struct kvmbox_vm *vm = NULL;
    struct kvmbox_result res;
    /* A clone is made from a state file. */
    ck_assert_int_eq(kvmbox_vm_clone(&cfg, "x", &vm, &res), -EINVAL);
    ck_assert_msg(res.config_error && strstr(res.message, "restore_path"), "%s", res.message);
    /* A pipe cannot be mapped. */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    cfg.restore_fd = p[0];
    ck_assert_int_eq(kvmbox_vm_create(&cfg, &vm, &res), -EINVAL);
    ck_assert_msg(res.config_error && strstr(res.message, "not a regular file"), "%s", res.message);
    ck_assert_ptr_null(vm);
    /* Both a path and an fd. */
    cfg.restore_path = "/nonexistent";
    ck_assert_int_eq(kvmbox_vm_create(&cfg, &vm, &res), -EINVAL);
    ck_assert_msg(strstr(res.message, "exclude"), "%s", res.message);
    close(p[0]), close(p[1]);
}
END_TEST

static unsigned open_fds(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%ld %ld", &pages, &rss), 2);
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

START_TEST(restores_do_not_leak)
{
    if (!have_kvm())
        return;
    char file[PATH_MAX];
    snprintf(file, sizeof(file), "%s/leak.state", tmpdir);
    char *before;
    int fd = boot_and_save(file, &before);
    free(before);
    struct kvmbox_config cfg;
    base_config(&cfg);
    cfg.restore_fd = fd;
    unsigned fds0 = 0;
    long rss0 = 0;
    double ms[LEAK_RUNS];
    for (int i = 0; i < LEAK_WARMUP + LEAK_RUNS; i++) {
        if (i == LEAK_WARMUP)
            fds0 = open_fds(), rss0 = rss_kib();
        struct vmrun v;
        double t0 = now_ms();
        ck_assert_msg(start(&v, &cfg, NULL) == 0, "restore %d: %s", i, v.res.message);
        /* Any output is the guest running on: a restored guest prints within its period. */
        while (!v.len) {
            struct pollfd p = { .fd = kvmbox_vm_console_fd(v.vm), .events = POLLIN };
            if (collect(&v))
                break;
            ck_assert_msg(poll(&p, 1, QUIET_MS) > 0, "restore %d: no output for %d s", i, QUIET_MS / 1000);
            uint64_t x;
            ck_assert_int_eq(read(p.fd, &x, sizeof(x)), sizeof(x));
        }
        if (i >= LEAK_WARMUP)
            ms[i - LEAK_WARMUP] = now_ms() - t0;
        finish(&v, true);
        free(v.out);
    }
    unsigned fds1 = open_fds();
    long rss1 = rss_kib();
    qsort(ms, LEAK_RUNS, sizeof(ms[0]), cmp_double);
    fprintf(stderr,
            "INFO: %d restores in one process: open fds %u -> %u, RSS %ld -> %ld KiB; create to "
            "first output median %.2f ms (min %.2f, max %.2f; the guest prints every 50 ms)\n",
            LEAK_RUNS, fds0, fds1, rss0, rss1, ms[LEAK_RUNS / 2], ms[0], ms[LEAK_RUNS - 1]);
    ck_assert_uint_eq(fds1, fds0);
#ifdef __SANITIZE_ADDRESS__
    /* ASan keeps freed memory in quarantine (up to 256 MiB): RSS grows without a leak there.
     * LeakSanitizer reports real leaks when the test process ends. */
    fprintf(stderr, "INFO: ASan build: RSS is not bounded here (its quarantine holds freed memory)\n");
#else
    ck_assert_msg(rss1 - rss0 < RSS_BOUND_KIB, "RSS grew by %ld KiB over %d restores", rss1 - rss0,
                  LEAK_RUNS);
#endif
    close(fd);
}
END_TEST

static void cleanup(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) {
        /* left behind in /tmp: nothing else to do */
    }
}

int main(int argc, char **argv)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    snprintf(guest, sizeof(guest), "%s/../guest-tests/savestate.elf", dirname(self));
    char *real = realpath(guest, NULL);
    if (real) {
        snprintf(guest, sizeof(guest), "%s", real);
        free(real);
    }
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kvmbox-savelib.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("savestate_lib");
    TCase *tc = tcase_create("library");
    /* The guest's progress bounds each wait (QUIET_MS); this only catches a hang. */
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, bad_restore_input);
    tcase_add_test(tc, save_fd_restore_fd_and_clones);
    tcase_add_test(tc, restores_do_not_leak);
    suite_add_tcase(s, tc);
    int r = run_suite(s);
    cleanup();
    return r;
}
