/* The control plane: the request table and its checks (pure, no VM), then the library calls
 * the API is made of (include/kvmbox.h: status, pause, resume, console, balloon, info through
 * the table) driven against a running guest (guest-tests/ctl.c), as an embedder would. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "tests/check_main.h"
#include "vmm/api_cmds.h"

/* ---- parsing against the table (pure) ---- */

/* Parses LINE; returns the error message of the reply, or "" when it parsed. */
static const char *parse_error(const char *line)
{
    static char msg[256];
    struct json_object *req;
    char *reply;
    const struct api_cmd *c = api_parse(line, strlen(line), &req, &reply);
    msg[0] = '\0';
    if (c) {
        ck_assert_ptr_null(reply);
        json_object_put(req);
        return msg;
    }
    ck_assert_ptr_nonnull(reply);
    struct json_object *o = json_tokener_parse(reply), *ok, *err;
    ck_assert_msg(o && json_object_object_get_ex(o, "ok", &ok) && !json_object_get_boolean(ok) &&
                      json_object_object_get_ex(o, "error", &err),
                  "not an error reply: %s", reply);
    snprintf(msg, sizeof(msg), "%s", json_object_get_string(err));
    json_object_put(o);
    free(reply);
    return msg;
}

START_TEST(parse_refuses_bad_lines)
{
    ck_assert_str_eq(parse_error("{\"request\": \"info\"}"), "");
    ck_assert_str_eq(parse_error("{\"request\": \"info\"}  \r"), "");
    ck_assert_str_eq(parse_error("{\"request\": \"info\""), "malformed JSON: incomplete message");
    ck_assert_str_eq(parse_error("{\"request\": \"info\"} x"), "malformed JSON: trailing characters");
    ck_assert(!strncmp(parse_error("{request}"), "malformed JSON: ", 16));
    const char *shape = "a request is an object with a string member \"request\"";
    ck_assert_str_eq(parse_error("[\"info\"]"), shape);
    ck_assert_str_eq(parse_error("{\"req\": \"info\"}"), shape);
    ck_assert_str_eq(parse_error("{\"request\": 1}"), shape);
    ck_assert_str_eq(parse_error("\"info\""), shape);
    ck_assert_str_eq(parse_error("{\"request\": \"Info\"}"), "unknown request 'Info'");
    ck_assert_str_eq(parse_error("{\"request\": \"\"}"), "unknown request ''");
}
END_TEST

START_TEST(parse_checks_arguments)
{
    const char *link = "link needs \"nic\" (an index from 0, or a MAC) and \"state\" (\"up\" or \"down\")";
    ck_assert_str_eq(parse_error("{\"request\":\"link\",\"nic\":0,\"state\":\"down\"}"), "");
    ck_assert_str_eq(parse_error("{\"request\":\"link\",\"nic\":\"52:54:00:00:00:01\",\"state\":\"up\"}"),
                     "");
    ck_assert_str_eq(parse_error("{\"request\":\"link\",\"state\":\"down\"}"), link);
    ck_assert_str_eq(parse_error("{\"request\":\"link\",\"nic\":0}"), link);
    ck_assert_str_eq(parse_error("{\"request\":\"link\",\"nic\":1.5,\"state\":\"up\"}"), link);
    ck_assert_str_eq(parse_error("{\"request\":\"link\",\"nic\":0,\"state\":true}"), link);
    const char *balloon = "target (bytes) and stats_interval (seconds) are integers";
    ck_assert_str_eq(parse_error("{\"request\":\"balloon\"}"), "");
    ck_assert_str_eq(parse_error("{\"request\":\"balloon\",\"target\":1048576}"), "");
    ck_assert_str_eq(parse_error("{\"request\":\"balloon\",\"target\":\"1G\"}"), balloon);
    ck_assert_str_eq(parse_error("{\"request\":\"balloon\",\"stats_interval\":null}"), balloon);
    /* Three arguments (API_MAX_ARGS): each checked for its type, "name" required. */
    const char *snap =
        "snapshot-create needs \"name\", and \"kind\" and \"file\" (an absolute path) as strings";
    ck_assert_str_eq(parse_error("{\"request\":\"snapshot-create\",\"name\":\"s\",\"kind\":\"full\","
                                 "\"file\":\"/x\"}"),
                     "");
    ck_assert_str_eq(parse_error("{\"request\":\"snapshot-create\",\"kind\":\"full\"}"), snap);
    ck_assert_str_eq(parse_error("{\"request\":\"snapshot-create\",\"name\":\"s\",\"file\":7}"), snap);
    /* Members a request does not take are ignored, as before the table. */
    ck_assert_str_eq(parse_error("{\"request\":\"pause\",\"extra\":[1,2]}"), "");
}
END_TEST

START_TEST(table_is_consistent)
{
    static const char *const documented[] = { "info",   "pause",           "resume",         "shutdown",
                                              "reboot", "reset",           "kill",           "balloon",
                                              "link",   "config",          "console",        "wait",
                                              "save",   "snapshot-create", "snapshot-delete" };
    unsigned n = 0;
    for (const struct api_cmd *c = api_cmds; c->name; c++, n++) {
        for (const struct api_cmd *d = c + 1; d->name; d++)
            ck_assert_msg(strcmp(c->name, d->name), "request %s twice", c->name);
        ck_assert_msg(c->run || c->action == API_WAIT, "%s serves nothing", c->name);
        ck_assert_msg(!c->args[0].name || c->usage, "%s has arguments but no usage", c->name);
    }
    ck_assert_uint_eq(n, sizeof(documented) / sizeof(documented[0]));
    /* Every documented request is in the table: it parses, or lacks its arguments. */
    for (unsigned k = 0; k < n; k++) {
        char line[64];
        snprintf(line, sizeof(line), "{\"request\":\"%s\"}", documented[k]);
        const char *err = parse_error(line);
        ck_assert_msg(!*err || !strncmp(err, documented[k], strlen(documented[k])), "%s: %s", documented[k],
                      err);
    }
}
END_TEST

START_TEST(wait_is_answered_later)
{
    char *reply = (char *)1;
    ck_assert_int_eq(api_handle(NULL, "{\"request\":\"wait\"}", 18, &reply), API_WAIT);
    ck_assert_ptr_null(reply);
    ck_assert_int_eq(api_handle(NULL, "nope", 4, &reply), API_REPLY);
    ck_assert_ptr_nonnull(strstr(reply, "\"ok\":false"));
    free(reply);
}
END_TEST

/* ---- the library against a running guest ---- */

static char guest[PATH_MAX]; /* BUILD/guest-tests/ctl.elf, next to BUILD/tests/ */

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

/* Console output from *POS until it holds TEXT; fails only if the guest falls silent for
 * 60 s (its ticks come every 200 ms of guest time, however slow the host). */
static void wait_output(struct kvmbox_vm *vm, uint64_t *pos, const char *text)
{
    static char seen[65536];
    size_t len = 0;
    for (;;) {
        char buf[4096];
        size_t n = kvmbox_vm_console_read(vm, pos, buf, sizeof(buf));
        if (n) {
            if (len + n >= sizeof(seen)) { /* keep the tail: TEXT may straddle */
                memmove(seen, seen + len / 2, len - len / 2);
                len -= len / 2;
            }
            memcpy(seen + len, buf, n);
            len += n;
            seen[len] = '\0';
            if (strstr(seen, text))
                return;
            continue;
        }
        struct pollfd p = { .fd = kvmbox_vm_console_fd(vm), .events = POLLIN };
        int r = poll(&p, 1, 60000);
        ck_assert_msg(r > 0, "no console output for 60 s while waiting for '%s'", text);
        uint64_t v;
        ck_assert_int_eq(read(p.fd, &v, sizeof(v)), sizeof(v));
    }
}

static enum kvmbox_state state_of(struct kvmbox_vm *vm)
{
    struct kvmbox_status st;
    ck_assert_int_eq(kvmbox_vm_status(vm, &st), 0);
    return st.state;
}

/* A request through the table; returns the parsed reply (checked "ok"). */
static struct json_object *request(struct kvmbox_vm *vm, const char *line)
{
    char *reply = NULL;
    ck_assert_int_eq(api_handle(vm, line, strlen(line), &reply), API_REPLY);
    ck_assert_ptr_nonnull(reply);
    struct json_object *o = json_tokener_parse(reply), *ok;
    ck_assert_msg(o && json_object_object_get_ex(o, "ok", &ok) && json_object_get_boolean(ok), "%s -> %s",
                  line, reply);
    free(reply);
    return o;
}

static const char *info_str(struct json_object *o, const char *key)
{
    struct json_object *info, *v;
    ck_assert(json_object_object_get_ex(o, "info", &info));
    ck_assert_msg(json_object_object_get_ex(info, key, &v), "info has no %s", key);
    return json_object_get_string(v);
}

static void check_balloon(struct kvmbox_vm *vm)
{
    struct kvmbox_balloon_status b;
    char msg[256] = "";
    ck_assert_int_eq(kvmbox_vm_balloon_status(vm, &b), 0);
    ck_assert_uint_eq(b.target, 64u << 20);
    ck_assert_int_eq(kvmbox_vm_set_balloon_target(vm, 1ULL << 40, msg, sizeof(msg)), -ERANGE);
    ck_assert_msg(msg[0], "no message for a target above guest memory");
    ck_assert_int_eq(kvmbox_vm_set_balloon_stats_interval(vm, 86401), -EINVAL);
    ck_assert_int_eq(kvmbox_vm_set_balloon_stats_interval(vm, 5), 0);
    ck_assert_int_eq(kvmbox_vm_balloon_status(vm, &b), 0);
    ck_assert_uint_eq(b.stats_interval, 5);
}

static void check_info(struct kvmbox_vm *vm)
{
    struct json_object *o = request(vm, "{\"request\":\"info\"}");
    ck_assert_str_eq(info_str(o, "name"), "embedded");
    ck_assert_str_eq(info_str(o, "state"), "running");
    ck_assert_str_eq(info_str(o, "cpus"), "1");
    ck_assert_str_eq(info_str(o, "memory"), "67108864");
    ck_assert_str_eq(info_str(o, "kernel"), guest);
    json_object_put(o);
    struct kvmbox_nic_status ns;
    struct kvmbox_disk_status ds;
    ck_assert_int_eq(kvmbox_vm_nic_status(vm, 0, &ns), -ENODEV);
    ck_assert_int_eq(kvmbox_vm_disk_status(vm, 0, &ds), -ENODEV);
    ck_assert_int_eq(kvmbox_vm_set_link(vm, 0, false), -ENODEV);
}

START_TEST(library_controls_a_running_vm)
{
    if (access(guest, R_OK) < 0 || access("/dev/kvm", R_OK | W_OK) < 0) {
        fprintf(stderr, "SKIP: library control test: needs /dev/kvm and %s\n", guest);
        return;
    }
    struct kvmbox_config cfg;
    kvmbox_config_init(&cfg);
    cfg.kernel = guest;
    cfg.mem_size = 64 << 20;
    cfg.name = "embedded";
    struct runner rn = { 0 };
    struct kvmbox_result res;
    ck_assert_msg(kvmbox_vm_create(&cfg, &rn.vm, &res) == 0, "create: %s", res.message);
    struct kvmbox_vm *vm = rn.vm;
    ck_assert_int_eq(kvmbox_vm_result(vm, &res), -EBUSY);
    kvmbox_vm_console_attach(vm);
    uint64_t pos = 0;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_vm, &rn), 0);
    wait_output(vm, &pos, "TICK 1 ");

    /* Paused, the guest prints nothing; resumed, it ticks on. */
    ck_assert_int_eq(kvmbox_vm_pause(vm), 0);
    ck_assert_int_eq(state_of(vm), KVMBOX_STATE_PAUSED);
    uint64_t at_pause = kvmbox_vm_console_end(vm);
    usleep(700 * 1000);
    ck_assert_uint_eq(kvmbox_vm_console_end(vm), at_pause);
    ck_assert_int_eq(kvmbox_vm_resume(vm), 0);
    ck_assert_int_eq(state_of(vm), KVMBOX_STATE_RUNNING);
    pos = at_pause;
    wait_output(vm, &pos, "TICK ");

    /* The same through the request table. */
    json_object_put(request(vm, "{\"request\":\"pause\"}"));
    ck_assert_int_eq(state_of(vm), KVMBOX_STATE_PAUSED);
    json_object_put(request(vm, "{\"request\":\"resume\"}"));
    ck_assert_int_eq(state_of(vm), KVMBOX_STATE_RUNNING);

    ck_assert_uint_eq(kvmbox_vm_console_write(vm, "hi there\n", 9), 9);
    wait_output(vm, &pos, "ECHO: hi there");
    check_info(vm);
    check_balloon(vm);

    kvmbox_vm_power_button(vm); /* the guest powers off through ACPI */
    pthread_join(t, NULL);
    ck_assert_int_eq(rn.r, 0);
    ck_assert_int_eq(rn.res.reason, KVMBOX_STOP_POWEROFF);
    ck_assert_int_eq(kvmbox_vm_result(vm, &res), 0);
    ck_assert_int_eq(res.reason, KVMBOX_STOP_POWEROFF);
    ck_assert_int_eq(state_of(vm), KVMBOX_STATE_STOPPING);
    kvmbox_vm_console_detach(vm);
    kvmbox_vm_destroy(vm);
}
END_TEST

int main(int argc, char **argv)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    snprintf(guest, sizeof(guest), "%s/../guest-tests/ctl.elf", dirname(self));
    char *real = realpath(guest, NULL);
    if (real) {
        snprintf(guest, sizeof(guest), "%s", real);
        free(real);
    }
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("requests");
    tcase_add_test(tc, parse_refuses_bad_lines);
    tcase_add_test(tc, parse_checks_arguments);
    tcase_add_test(tc, table_is_consistent);
    tcase_add_test(tc, wait_is_answered_later);
    suite_add_tcase(s, tc);
    TCase *live = tcase_create("library");
    /* The guest's progress bounds each wait (wait_output); this only catches a hang. */
    tcase_set_timeout(live, 600);
    tcase_add_test(live, library_controls_a_running_vm);
    suite_add_tcase(s, live);
    return run_suite(s);
}
