/* startmark: runs a command N times and measures, from just before exec, the wall time until
 * a marker string appears on its stdout and until it exits, plus its peak RSS.
 * usage: startmark N MARKER -- CMD ARGS...
 * prints: marker_ms median min max, exit_ms median min max, rss_kib median min max */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

static void stats(const char *name, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    printf("%s %.2f %.2f %.2f\n", name, med, v[0], v[n - 1]);
}

static int run_once(char **cmd, const char *marker, double *t_mark, double *t_exit, double *rss)
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
    return *t_mark < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 5 || strcmp(argv[3], "--")) {
        fprintf(stderr, "usage: startmark N MARKER -- CMD ARGS...\n");
        return 2;
    }
    int n = atoi(argv[1]);
    if (n < 1 || n > 1000)
        return 2;
    double *mark = calloc((size_t)n, sizeof(double)), *ex = calloc((size_t)n, sizeof(double)),
           *rss = calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++)
        if (run_once(argv + 4, argv[2], &mark[i], &ex[i], &rss[i]) < 0) {
            fprintf(stderr, "startmark: run %d: marker '%s' not seen\n", i, argv[2]);
            return 1;
        }
    stats("marker_ms", mark, n);
    stats("exit_ms", ex, n);
    stats("rss_kib", rss, n);
    return 0;
}
