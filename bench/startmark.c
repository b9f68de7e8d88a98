/* startmark: runs a command N times and measures, from just before exec, the wall time until
 * a marker string appears on its stdout and until it exits, plus its peak RSS.
 * usage: startmark [-t] N MARKER -- CMD ARGS...
 * prints: marker_ms median min max, exit_ms median min max, rss_kib median min max
 * With -t the command is kvmbox: each run gets KVMBOX_TRACE=FILE, and the steps kvmbox
 * recorded there (vmm/trace.h) are printed too, one line per step in time order:
 *   step AT_MS TOOK_MS NAME
 * AT_MS is the median time from the fork to the step, TOOK_MS the median time from the step
 * listed before it to this one (in the same run); "exec" is where kvmbox's main() starts,
 * and "marker seen" and "exited" are what this program saw. */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_STEPS 96

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void stats(const char *name, double *v, int n)
{
    double med = median(v, n);
    printf("%s %.2f %.2f %.2f\n", name, med, v[0], v[n - 1]);
}

/* Per step: its time from the fork in each run (NAN when a run did not have it). */
static struct step {
    char name[64];
    double *at;
    int n;
} steps[MAX_STEPS];
static int nsteps;

static struct step *step_get(const char *name, int runs)
{
    for (int i = 0; i < nsteps; i++)
        if (!strcmp(steps[i].name, name))
            return &steps[i];
    if (nsteps == MAX_STEPS)
        return NULL;
    struct step *s = &steps[nsteps++];
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->at = malloc((size_t)runs * sizeof(double));
    if (!s->at)
        return NULL;
    for (int i = 0; i < runs; i++)
        s->at[i] = NAN;
    return s;
}

struct mark {
    double at;
    char name[64];
};

/* Reads one run's trace (CLOCK_MONOTONIC ns, as t0), adds the parent's own observations,
 * and records each step's first occurrence. */
static void trace_collect(const char *path, double t0, double t_mark, double t_exit, int run, int runs)
{
    struct mark m[MAX_STEPS];
    int n = 0;
    FILE *f = fopen(path, "r");
    char line[256];
    while (f && n < MAX_STEPS - 2 && fgets(line, sizeof(line), f)) {
        unsigned long long ns;
        int off;
        if (sscanf(line, "%llu %n", &ns, &off) != 1)
            continue;
        line[strcspn(line, "\n")] = 0;
        const char *name = strcmp(line + off, "main") ? line + off : "exec";
        bool seen = false;
        for (int i = 0; i < n; i++)
            seen |= !strcmp(m[i].name, name);
        if (seen)
            continue; /* a step repeated (a reboot): the first one counts */
        m[n].at = (double)ns / 1e6 - t0;
        snprintf(m[n].name, sizeof(m[n].name), "%s", name);
        n++;
    }
    if (f)
        fclose(f);
    m[n].at = t_mark, snprintf(m[n].name, sizeof(m[n].name), "marker seen"), n++;
    m[n].at = t_exit, snprintf(m[n].name, sizeof(m[n].name), "exited"), n++;
    for (int i = 0; i < n; i++) {
        struct step *s = step_get(m[i].name, runs);
        if (s)
            s->at[run] = m[i].at;
    }
}

/* The median of the finite values among N. */
static double median_of(const double *v, int n)
{
    double *c = malloc((size_t)n * sizeof(double));
    int k = 0;
    for (int i = 0; c && i < n; i++)
        if (!isnan(v[i]))
            c[k++] = v[i];
    double m = k ? median(c, k) : NAN;
    free(c);
    return m;
}

static int run_once(char **cmd, const char *marker, const char *trace, double *t0_out, double *t_mark,
                    double *t_exit, double *rss)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        close(p[0]), close(p[1]);
        int devnull = open("/dev/null", 0);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        if (trace)
            setenv("KVMBOX_TRACE", trace, 1);
        execvp(cmd[0], cmd);
        _exit(127);
    }
    close(p[1]);
    char buf[65536];
    size_t have = 0;
    *t_mark = -1;
    for (;;) {
        ssize_t n = read(p[0], buf + have, sizeof(buf) - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        if (*t_mark < 0 && strstr(buf, marker))
            *t_mark = now_ms() - t0;
        if (have > sizeof(buf) / 2) {
            memmove(buf, buf + have - 256, 256);
            have = 256;
        }
    }
    close(p[0]);
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    *t_exit = now_ms() - t0;
    *rss = (double)ru.ru_maxrss;
    *t0_out = t0;
    return *t_mark < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    bool trace = argc > 1 && !strcmp(argv[1], "-t");
    if (trace)
        argc--, argv++;
    if (argc < 5 || strcmp(argv[3], "--")) {
        fprintf(stderr, "usage: startmark [-t] N MARKER -- CMD ARGS...\n");
        return 2;
    }
    int n = atoi(argv[1]);
    if (n < 1 || n > 1000)
        return 2;
    double *mark = calloc((size_t)n, sizeof(double)), *ex = calloc((size_t)n, sizeof(double)),
           *rss = calloc((size_t)n, sizeof(double));
    char path[64] = "";
    if (trace) {
        snprintf(path, sizeof(path), "/tmp/startmark-trace.XXXXXX");
        int fd = mkstemp(path);
        if (fd < 0)
            return 1;
        close(fd);
    }
    for (int i = 0; i < n; i++) {
        double t0;
        if (trace && truncate(path, 0) < 0)
            return 1;
        if (run_once(argv + 4, argv[2], trace ? path : NULL, &t0, &mark[i], &ex[i], &rss[i]) < 0) {
            fprintf(stderr, "startmark: run %d: marker '%s' not seen\n", i, argv[2]);
            if (trace)
                unlink(path);
            return 1;
        }
        if (trace)
            trace_collect(path, t0, mark[i], ex[i], i, n);
    }
    if (trace)
        unlink(path);
    stats("marker_ms", mark, n);
    stats("exit_ms", ex, n);
    stats("rss_kib", rss, n);
    /* Steps in the order of their median time from the fork; each one's duration is the
     * median, over the runs, of the time since the step listed before it. */
    double at[MAX_STEPS], *d = malloc((size_t)n * sizeof(double));
    int order[MAX_STEPS];
    for (int i = 0; i < nsteps; i++)
        at[i] = median_of(steps[i].at, n), order[i] = i;
    for (int i = 1; i < nsteps; i++)
        for (int j = i; j > 0 && at[order[j]] < at[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    for (int i = 0; d && i < nsteps; i++) {
        const struct step *s = &steps[order[i]], *prev = i ? &steps[order[i - 1]] : NULL;
        for (int r = 0; r < n; r++)
            d[r] = s->at[r] - (prev ? prev->at[r] : 0);
        printf("step %.3f %.3f %s\n", at[order[i]], median_of(d, n), s->name);
    }
    free(d);
    return 0;
}
