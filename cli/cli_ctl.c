/* virsh's everyday verbs over the control socket: list, info, pause, resume, shutdown,
 * reboot, reset, kill, wait. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "cli/cli.h"
#include "common/util.h"

static const char *jstr(struct json_object *o, const char *key, const char *dflt)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : dflt;
}

static int64_t jint(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

/* 0 with *INFO set, or a negative errno with ERR set. */
static int info_of(const char *name, struct json_object **info, char *err, size_t errlen)
{
    struct json_object *r, *i;
    *info = NULL;
    int rc = cli_request(name, "info", &r, err, errlen);
    if (rc < 0)
        return rc;
    if (!json_object_object_get_ex(r, "info", &i)) {
        json_object_put(r);
        return errf(err, errlen, -EPROTO, "malformed info reply");
    }
    *info = json_object_get(i);
    json_object_put(r);
    return 0;
}

static bool name_in(char **names, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return true;
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of files DIR/<name><SUFFIX>, sorted. */
static int list_names(const char *dir, const char *suffix, char ***out)
{
    DIR *d = opendir(dir);
    int n = 0;
    *out = NULL;
    if (!d)
        return 0;
    struct dirent *e;
    size_t sl = strlen(suffix);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l <= sl || strcmp(e->d_name + l - sl, suffix))
            continue;
        char **p = realloc(*out, sizeof(char *) * (size_t)(n + 1));
        if (!p)
            break;
        *out = p;
        (*out)[n++] = strndup(e->d_name, l - sl);
    }
    closedir(d);
    if (n > 1)
        qsort(*out, (size_t)n, sizeof(char *), cmp_str);
    return n;
}

static int cmd_list(int argc, char **argv)
{
    bool all = argc > 1 && !strcmp(argv[1], "--all");
    char dir[2048], cdir[2048], err[512], mem[32];
    if (cli_runtime_dir(dir, sizeof(dir), err, sizeof(err)) < 0 ||
        (all && cli_config_dir(cdir, sizeof(cdir), err, sizeof(err)) < 0)) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_FAIL;
    }
    char **running;
    int nr = list_names(dir, ".sock", &running);
    printf("%-20s %-10s %5s %10s %8s\n", "NAME", "STATE", "CPUS", "MEMORY", "PID");
    char **live = calloc((size_t)nr + 1, sizeof(char *));
    int nlive = 0;
    for (int i = 0; i < nr; i++) {
        struct json_object *info;
        if (info_of(running[i], &info, err, sizeof(err)) < 0)
            continue; /* stale socket: cli_connect removed it */
        format_size((uint64_t)jint(info, "memory"), mem, sizeof(mem));
        printf("%-20s %-10s %5lld %10s %8lld\n", running[i], jstr(info, "state", "?"),
               (long long)jint(info, "cpus"), mem, (long long)jint(info, "pid"));
        live[nlive++] = running[i];
        json_object_put(info);
    }
    if (all) {
        char **defs;
        int nd = list_names(cdir, ".json", &defs);
        for (int i = 0; i < nd; i++) {
            if (!name_in(live, nlive, defs[i]))
                printf("%-20s %-10s %5s %10s %8s\n", defs[i], "shut off", "-", "-", "-");
            free(defs[i]);
        }
        free(defs);
    }
    for (int i = 0; i < nr; i++)
        free(running[i]);
    free(running);
    free(live);
    return CLI_OK;
}

/* info on a VM that is not running: what its last run left, if anything. */
/* The snapshots line of `info` (none: nothing). */
static void print_snapshots(struct json_object *snaps)
{
    size_t n = snaps ? json_object_array_length(snaps) : 0;
    if (!n)
        return;
    printf("Snapshots: %zu:", n);
    for (size_t i = 0; i < n; i++) {
        struct json_object *s = json_object_array_get_idx(snaps, i), *cur;
        bool current = json_object_object_get_ex(s, "current", &cur) && json_object_get_boolean(cur);
        printf(" %s (%s%s)", jstr(s, "name", "?"), jstr(s, "kind", "?"), current ? ", current" : "");
    }
    printf("\n");
}

static int info_ended(const char *name, bool json, const char *err)
{
    struct json_object *last = cli_last_run(name);
    struct json_object *snaps = cli_snapshot_summary(name);
    if (!last && snaps) { /* never ran here, but has snapshots */
        last = json_object_new_object();
        json_object_object_add(last, "name", json_object_new_string(name));
    }
    if (!last) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return CLI_FAIL;
    }
    json_object_object_add(last, "state", json_object_new_string("shut off"));
    if (snaps)
        json_object_object_add(last, "snapshots", json_object_get(snaps));
    if (json) {
        printf("%s\n",
               json_object_to_json_string_ext(last, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                        JSON_C_TO_STRING_NOSLASHESCAPE));
    } else {
        time_t t = (time_t)jint(last, "ended");
        char when[64];
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %z", localtime(&t));
        if (jint(last, "ended"))
            printf("Name:     %s\nState:    shut off\nEnded:    %s: %s, status %lld\n", name, when,
                   jstr(last, "message", ""), (long long)jint(last, "status"));
        else
            printf("Name:     %s\nState:    shut off\n", name);
        print_snapshots(snaps);
    }
    json_object_put(snaps);
    json_object_put(last);
    return CLI_OK;
}

static int cmd_info(int argc, char **argv)
{
    bool json = false;
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else
            name = argv[i];
    }
    if (!name) {
        fprintf(stderr, "usage: kvmbox info NAME [--json]\n");
        return CLI_USAGE;
    }
    char err[512], mem[32];
    struct json_object *info;
    int rc = info_of(name, &info, err, sizeof(err));
    if (rc == -ENOENT)
        return info_ended(name, json, err);
    if (rc < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return cli_status(rc);
    }
    struct json_object *snaps = cli_snapshot_summary(name);
    if (snaps)
        json_object_object_add(info, "snapshots", json_object_get(snaps));
    if (json) {
        printf("%s\n",
               json_object_to_json_string_ext(info, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                        JSON_C_TO_STRING_NOSLASHESCAPE));
    } else {
        format_size((uint64_t)jint(info, "memory"), mem, sizeof(mem));
        struct json_object *up;
        double uptime = json_object_object_get_ex(info, "uptime", &up) ? json_object_get_double(up) : 0;
        printf("Name:     %s\nState:    %s\nPID:      %lld\nvCPUs:    %lld\nMemory:   %s\n"
               "Huge pages: %s\nUptime:   %.1f s\nReboots:  %lld\nKernel:   %s\nCmdline:  %s\n",
               jstr(info, "name", name), jstr(info, "state", "?"), (long long)jint(info, "pid"),
               (long long)jint(info, "cpus"), mem, jstr(info, "hugepages", "off"), uptime,
               (long long)jint(info, "reboots"), jstr(info, "kernel", ""), jstr(info, "cmdline", ""));
        if (*jstr(info, "firmware", ""))
            printf("Firmware: %s\nBoot:     %s%s%s\n", jstr(info, "firmware", ""),
                   jstr(info, "boot_order", ""), *jstr(info, "boot_once", "") ? ", first boot: " : "",
                   jstr(info, "boot_once", ""));
        struct json_object *cds;
        if (json_object_object_get_ex(info, "cdroms", &cds))
            for (size_t i = 0; i < json_object_array_length(cds); i++) {
                struct json_object *e = json_object_array_get_idx(cds, i);
                char sz[32];
                format_size((uint64_t)jint(e, "size"), sz, sizeof(sz));
                printf("CD-ROM:   %s (%s, ro, pci %s)\n", jstr(e, "path", "?"), sz, jstr(e, "pci", "?"));
            }
        const char *keys[] = { "disks", "nics" }, *labels[] = { "Disk:     ", "NIC:      " };
        for (int k = 0; k < 2; k++) {
            struct json_object *arr;
            if (!json_object_object_get_ex(info, keys[k], &arr))
                continue;
            for (size_t i = 0; i < json_object_array_length(arr); i++) {
                struct json_object *e = json_object_array_get_idx(arr, i);
                if (k == 0 && json_object_is_type(e, json_type_object)) {
                    char sz[32];
                    format_size((uint64_t)jint(e, "size"), sz, sizeof(sz));
                    struct json_object *ro;
                    bool readonly = json_object_object_get_ex(e, "readonly", &ro) &&
                                    json_object_get_boolean(ro);
                    printf("%s%s (%s, %s, %s, cache=%s, serial '%s', pci %s), %s, %lld I/O errors\n",
                           labels[k], jstr(e, "path", "?"), jstr(e, "format", "?"), sz,
                           readonly ? "ro" : "rw", jstr(e, "cache", "?"), jstr(e, "serial", ""),
                           jstr(e, "pci", "?"), jstr(e, "state", "ok"), (long long)jint(e, "io_errors"));
                } else if (k == 1 && json_object_is_type(e, json_type_object)) {
                    struct json_object *rx, *tx;
                    printf("%s%s %s (pci %s), link %s", labels[k], jstr(e, "mac", "?"),
                           jstr(e, "backend", "?"), jstr(e, "pci", "?"), jstr(e, "link", "?"));
                    if (json_object_object_get_ex(e, "rx", &rx) && json_object_object_get_ex(e, "tx", &tx))
                        printf(", rx %lld frames %lld bytes (%lld dropped), tx %lld frames %lld bytes (%lld "
                               "dropped)",
                               (long long)jint(rx, "frames"), (long long)jint(rx, "bytes"),
                               (long long)jint(rx, "dropped"), (long long)jint(tx, "frames"),
                               (long long)jint(tx, "bytes"), (long long)jint(tx, "dropped"));
                    printf("\n");
                } else {
                    printf("%s%s\n", labels[k], json_object_get_string(e));
                }
            }
        }
    }
    if (!json) {
        struct json_object *b, *st;
        if (json_object_object_get_ex(info, "balloon", &b)) {
            char t[32], a[32], r[32];
            format_size((uint64_t)jint(b, "target"), t, sizeof(t));
            format_size((uint64_t)jint(b, "actual"), a, sizeof(a));
            format_size((uint64_t)jint(b, "released"), r, sizeof(r));
            printf("Balloon:  target %s, guest holds %s, %s given back to the host\n", t, a, r);
            if (json_object_object_get_ex(b, "stats", &st) && json_object_object_length(st) > 0) {
                printf("Guest:   ");
                json_object_object_foreach(st, k, v)
                {
                    if (!strcmp(k, "age_ms") || strstr(k, "faults") || strstr(k, "swap")) {
                        printf(" %s %lld", k, (long long)json_object_get_int64(v));
                        continue;
                    }
                    char sz[32];
                    format_size((uint64_t)json_object_get_int64(v), sz, sizeof(sz));
                    printf(" %s %s", k, sz);
                }
                printf(" (every %lld s)\n", (long long)jint(b, "stats_interval"));
            }
        }
        print_snapshots(snaps);
    }
    json_object_put(snaps);
    json_object_put(info);
    return CLI_OK;
}

/* Blocks on a "wait" request; returns the VM's exit status, or -ETIMEDOUT / -errno. */
static int wait_for_end(const char *name, int timeout_ms, char *msg, size_t len)
{
    int fd = cli_connect(name, msg, len);
    if (fd < 0)
        return fd;
    const char req[] = "{\"request\":\"wait\"}\n";
    if (write_full(fd, req, sizeof(req) - 1) < 0) {
        close(fd);
        return -ECONNRESET;
    }
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r = poll(&p, 1, timeout_ms);
    if (r == 0) {
        close(fd);
        return -ETIMEDOUT;
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -ECONNRESET;
    buf[n] = 0;
    struct json_object *o = json_tokener_parse(buf), *ok;
    if (!o)
        return -EPROTO;
    if (!json_object_object_get_ex(o, "ok", &ok) || !json_object_get_boolean(ok)) {
        errf(msg, len, -EAGAIN, "%s", jstr(o, "error", "the VM refused the wait"));
        json_object_put(o);
        return -EAGAIN;
    }
    int status = (int)jint(o, "status");
    snprintf(msg, len, "%s", jstr(o, "message", ""));
    json_object_put(o);
    return status;
}

static int cmd_wait(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmbox wait NAME\n");
        return CLI_USAGE;
    }
    char msg[512];
    int r = wait_for_end(argv[1], -1, msg, sizeof(msg));
    struct json_object *last;
    /* It ended before we asked, or as we asked: its record says how. */
    if ((r == -ENOENT || r == -ECONNRESET) && (last = cli_last_run(argv[1]))) {
        r = (int)jint(last, "status");
        json_object_put(last);
        return r;
    }
    if (r == -ECONNRESET || r == -EPROTO) {
        fprintf(stderr, "kvmbox: lost VM '%s' while waiting: %s\n", argv[1], strerror(-r));
        return KVMBOX_EXIT_FAILURE;
    }
    if (r < 0) {
        fprintf(stderr, "kvmbox: %s\n", msg);
        return cli_status(r);
    }
    return r;
}

static int cmd_shutdown(int argc, char **argv)
{
    static const struct option opts[] = { { "timeout", required_argument, NULL, 't' },
                                          { "force", no_argument, NULL, 'f' },
                                          { 0 } };
    uint64_t timeout = 60;
    bool force = false;
    optind = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (c == 't' && parse_uint(optarg, 0, 86400, &timeout) == 0)
            continue;
        if (c == 'f') {
            force = true;
            continue;
        }
        fprintf(stderr, "usage: kvmbox shutdown NAME [--timeout SECS] [--force]\n");
        return CLI_USAGE;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: kvmbox shutdown NAME [--timeout SECS] [--force]\n");
        return CLI_USAGE;
    }
    const char *name = argv[optind];
    char err[512];
    struct json_object *r;
    int rc = cli_request(name, "shutdown", &r, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return cli_status(rc);
    }
    json_object_put(r);
    int st = wait_for_end(name, (int)timeout * 1000, err, sizeof(err));
    if (st >= 0 || st == -ENOENT || st == -ECONNRESET) {
        printf("%s shut down\n", name);
        return CLI_OK;
    }
    if (!force) {
        fprintf(stderr, "kvmbox: %s did not shut down within %llu s (use --force to kill it)\n", name,
                (unsigned long long)timeout);
        return CLI_FAIL;
    }
    if (cli_request(name, "kill", &r, err, sizeof(err)) == 0)
        json_object_put(r);
    printf("%s did not shut down within %llu s: killed\n", name, (unsigned long long)timeout);
    return CLI_OK;
}

static int simple_verb(const char *verb, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: kvmbox %s NAME\n", verb);
        return CLI_USAGE;
    }
    char err[512];
    struct json_object *r;
    int rc = cli_request(argv[1], verb, &r, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return cli_status(rc);
    }
    json_object_put(r);
    if (!strcmp(verb, "kill")) {
        char msg[512];
        wait_for_end(argv[1], 10000, msg, sizeof(msg)); /* return once it is gone */
    }
    return CLI_OK;
}

/* kvmbox balloon NAME [SIZE] [--stats-interval S] */
static int cmd_balloon(int argc, char **argv)
{
    const char *name = NULL, *size = NULL, *interval = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--stats-interval") && i + 1 < argc)
            interval = argv[++i];
        else if (!name)
            name = argv[i];
        else if (!size)
            size = argv[i];
        else
            name = NULL, i = argc;
    }
    uint64_t bytes = 0, secs = 0;
    if (name && size && parse_size(size, &bytes) < 0) {
        fprintf(stderr, "kvmbox: balloon: '%s' is not a size (like 512M or 2G; a bare number is MiB)\n",
                size);
        return CLI_USAGE;
    }
    if (name && interval && parse_uint(interval, 0, 86400, &secs) < 0) {
        fprintf(stderr, "kvmbox: balloon: --stats-interval '%s' is not a number of seconds from 0 to 86400\n",
                interval);
        return CLI_USAGE;
    }
    if (!name || (!size && !interval)) {
        fprintf(stderr, "usage: kvmbox balloon NAME [SIZE] [--stats-interval SECONDS]\n"
                        "  SIZE: the memory the guest should keep, like 512M (a bare number is MiB)\n");
        return CLI_USAGE;
    }
    if (size && strspn(size, "0123456789") == strlen(size))
        bytes <<= 20; /* as with --mem and virsh setmem: a bare number is MiB */
    char req[256], err[512];
    int n = snprintf(req, sizeof(req), "{\"request\":\"balloon\"");
    if (size)
        n += snprintf(req + n, sizeof(req) - (size_t)n, ",\"target\":%llu", (unsigned long long)bytes);
    if (interval)
        n += snprintf(req + n, sizeof(req) - (size_t)n, ",\"stats_interval\":%llu", (unsigned long long)secs);
    snprintf(req + n, sizeof(req) - (size_t)n, "}");
    struct json_object *r;
    int rc = cli_request(name, req, &r, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return cli_status(rc);
    }
    json_object_put(r);
    return CLI_OK;
}

/* kvmbox link NAME NIC up|down: NIC is an index from 0 (the order of --net) or a MAC. */
static int cmd_link(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[3], "up") && strcmp(argv[3], "down"))) {
        fprintf(stderr, "usage: kvmbox link NAME NIC up|down\n"
                        "  NIC: its index from 0, in the order of --net, or its MAC\n");
        return CLI_USAGE;
    }
    uint64_t idx;
    bool by_index = parse_uint(argv[2], 0, KVMBOX_MAX_NICS - 1, &idx) == 0;
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "request", json_object_new_string("link"));
    json_object_object_add(req, "nic",
                           by_index ? json_object_new_int((int)idx) : json_object_new_string(argv[2]));
    json_object_object_add(req, "state", json_object_new_string(argv[3]));
    char err[512];
    struct json_object *r;
    int rc = cli_request(argv[1], json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN), &r, err,
                         sizeof(err));
    json_object_put(req);
    if (rc < 0) {
        fprintf(stderr, "kvmbox: %s\n", err);
        return cli_status(rc);
    }
    json_object_put(r);
    return CLI_OK;
}

int cmd_ctl(const char *verb, int argc, char **argv)
{
    if (!strcmp(verb, "balloon"))
        return cmd_balloon(argc, argv);
    if (!strcmp(verb, "link"))
        return cmd_link(argc, argv);
    if (!strcmp(verb, "list"))
        return cmd_list(argc, argv);
    if (!strcmp(verb, "info"))
        return cmd_info(argc, argv);
    if (!strcmp(verb, "wait"))
        return cmd_wait(argc, argv);
    if (!strcmp(verb, "shutdown"))
        return cmd_shutdown(argc, argv);
    return simple_verb(verb, argc, argv);
}
