/* The control socket's requests: the table, the checks every request gets from it, and one
 * small function per request that calls the library (include/kvmbox.h) and builds the reply.
 * Nothing here knows struct vm. */
#include "vmm/api_cmds.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "include/kvmbox.h"

/* ---- replies ------------------------------------------------------------------------ */

char *api_reply_json(struct json_object *o)
{
    const char *s = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE)
                      : NULL;
    char *line = s ? strdup(s) : NULL;
    json_object_put(o);
    return line;
}

char *api_reply_error(const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(0));
    json_object_object_add(o, "error", json_object_new_string(msg));
    return api_reply_json(o);
}

struct json_object *api_ok_object(void)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    return o;
}

static char *reply_ok(void)
{
    return api_reply_json(api_ok_object());
}

/* ---- requests ----------------------------------------------------------------------- */

static char *cmd_info(struct kvmbox_vm *vm, struct json_object *req)
{
    struct json_object *o = api_ok_object();
    json_object_object_add(o, "info", api_info_object(vm));
    return api_reply_json(o);
}

static char *cmd_pause(struct kvmbox_vm *vm, struct json_object *req)
{
    int r = kvmbox_vm_pause(vm);
    return r < 0 ? api_reply_error("cannot pause: %s", strerror(-r)) : reply_ok();
}

static char *cmd_resume(struct kvmbox_vm *vm, struct json_object *req)
{
    int r = kvmbox_vm_resume(vm);
    return r < 0 ? api_reply_error("cannot resume: %s", strerror(-r)) : reply_ok();
}

static char *cmd_shutdown(struct kvmbox_vm *vm, struct json_object *req)
{
    kvmbox_vm_power_button(vm);
    return reply_ok();
}

static char *cmd_reboot(struct kvmbox_vm *vm, struct json_object *req)
{
    kvmbox_vm_reboot(vm);
    return reply_ok();
}

static char *cmd_reset(struct kvmbox_vm *vm, struct json_object *req)
{
    kvmbox_vm_reset(vm);
    return reply_ok();
}

static char *cmd_kill(struct kvmbox_vm *vm, struct json_object *req)
{
    kvmbox_vm_stop_with(vm, KVMBOX_STOP_KILLED, "killed through the API");
    return reply_ok();
}

static char *cmd_config(struct kvmbox_vm *vm, struct json_object *req)
{
    const char *json = kvmbox_vm_config(vm)->config_json;
    struct json_object *def = json ? json_tokener_parse(json) : NULL;
    struct json_object *o = api_ok_object();
    json_object_object_add(o, "config", def ? def : json_object_new_object());
    return api_reply_json(o);
}

static char *cmd_console(struct kvmbox_vm *vm, struct json_object *req)
{
    return reply_ok();
}

/* {"request":"balloon", "target": BYTES, "stats_interval": SECONDS}: either or both. */
static char *cmd_balloon(struct kvmbox_vm *vm, struct json_object *req)
{
    struct kvmbox_balloon_status st;
    if (kvmbox_vm_balloon_status(vm, &st) < 0)
        return api_reply_error("this VM has no balloon device (it was started with --balloon off)");
    struct json_object *t, *si;
    bool has_t = json_object_object_get_ex(req, "target", &t);
    bool has_si = json_object_object_get_ex(req, "stats_interval", &si);
    int64_t secs = has_si ? json_object_get_int64(si) : 0;
    if (secs < 0 || secs > 86400)
        return api_reply_error("stats_interval must be 0 to 86400 seconds");
    if (has_t && json_object_get_int64(t) < 0)
        return api_reply_error("target must not be negative");
    char err[256];
    if (has_t && kvmbox_vm_set_balloon_target(vm, (uint64_t)json_object_get_int64(t), err, sizeof(err)) < 0)
        return api_reply_error("%s", err);
    if (has_si)
        kvmbox_vm_set_balloon_stats_interval(vm, (unsigned)secs);
    struct json_object *o = api_ok_object();
    json_object_object_add(o, "balloon", api_balloon_object(vm));
    return api_reply_json(o);
}

/* NIC as an index from 0 or a MAC; -1 for no such NIC. */
static int find_nic(struct kvmbox_vm *vm, struct json_object *nic)
{
    unsigned n = kvmbox_vm_config(vm)->nnics;
    if (json_object_is_type(nic, json_type_int)) {
        int64_t i = json_object_get_int64(nic);
        return i >= 0 && i < (int64_t)n ? (int)i : -1;
    }
    for (unsigned k = 0; k < n; k++) {
        struct kvmbox_nic_status st;
        char mac[API_MAC_STR_LEN];
        if (kvmbox_vm_nic_status(vm, k, &st) < 0)
            continue;
        api_mac_str(st.mac, mac);
        if (!strcasecmp(mac, json_object_get_string(nic)))
            return (int)k;
    }
    return -1;
}

/* {"request":"link", "nic": INDEX | "MAC", "state": "up" | "down"} */
static char *cmd_link(struct kvmbox_vm *vm, struct json_object *req)
{
    struct json_object *nic, *state;
    json_object_object_get_ex(req, "nic", &nic);
    json_object_object_get_ex(req, "state", &state);
    const char *st = json_object_get_string(state);
    if (strcmp(st, "up") && strcmp(st, "down"))
        return api_reply_error("link state must be \"up\" or \"down\", not \"%.40s\"", st);
    int idx = find_nic(vm, nic);
    if (idx < 0 || kvmbox_vm_set_link(vm, (unsigned)idx, !strcmp(st, "up")) < 0)
        return api_reply_error("no NIC %.40s (this VM has %u; `kvmbox info` lists them)",
                               json_object_get_string(nic), kvmbox_vm_config(vm)->nnics);
    struct json_object *o = api_ok_object(), *n = json_object_new_object();
    json_object_object_add(n, "index", json_object_new_int(idx));
    api_nic_stats(n, vm, (unsigned)idx);
    json_object_object_add(o, "nic", n);
    return api_reply_json(o);
}

/* {"request":"save", "file": "/ABSOLUTE/PATH"}: the VM's main thread writes the state file
 * (vmm/snapshot.c) while this thread waits; the VM ends once it is saved, as virsh save. */
static char *cmd_save(struct kvmbox_vm *vm, struct json_object *req)
{
    struct json_object *file;
    char err[KVMBOX_MSG_MAX];
    json_object_object_get_ex(req, "file", &file);
    if (json_object_get_string(file)[0] != '/')
        return api_reply_error("save needs a member \"file\" with an absolute path");
    if (kvmbox_vm_save(vm, json_object_get_string(file), err, sizeof(err)) < 0)
        return api_reply_error("%s", err);
    return api_reply_json(api_ok_object());
}

/* {"request":"snapshot-create", "name": SNAP, "kind": "full"|"disk"|"memory", "file": "/PATH"}:
 * a whole-VM snapshot (vmm/vm_snapshot.c), the state written to "file" (not for "disk"); the
 * VM runs on. {"request":"snapshot-delete", "name": SNAP}: the disks' internal snapshots
 * deleted. Both are served on the VM's main thread while this one waits. */
static char *cmd_snapshot_create(struct kvmbox_vm *vm, struct json_object *req)
{
    struct json_object *name, *kind, *file;
    char err[KVMBOX_MSG_MAX];
    json_object_object_get_ex(req, "name", &name);
    const char *k = json_object_object_get_ex(req, "kind", &kind) ? json_object_get_string(kind) : "full";
    const char *f = json_object_object_get_ex(req, "file", &file) ? json_object_get_string(file) : NULL;
    if (kvmbox_vm_snapshot_create(vm, json_object_get_string(name), k, f, err, sizeof(err)) < 0)
        return api_reply_error("%s", err);
    return api_reply_json(api_ok_object());
}

static char *cmd_snapshot_delete(struct kvmbox_vm *vm, struct json_object *req)
{
    struct json_object *name;
    char err[KVMBOX_MSG_MAX];
    json_object_object_get_ex(req, "name", &name);
    if (kvmbox_vm_snapshot_delete(vm, json_object_get_string(name), err, sizeof(err)) < 0)
        return api_reply_error("%s", err);
    return api_reply_json(api_ok_object());
}

/* ---- the table ---------------------------------------------------------------------- */

const struct api_cmd api_cmds[] = {
    { .name = "info", .run = cmd_info },
    { .name = "pause", .run = cmd_pause },
    { .name = "resume", .run = cmd_resume },
    { .name = "shutdown", .run = cmd_shutdown },
    /* Like virsh reboot in ACPI mode: a clean shutdown that ends in a fresh boot. */
    { .name = "reboot", .run = cmd_reboot },
    { .name = "reset", .run = cmd_reset },
    { .name = "kill", .run = cmd_kill },
    { .name = "balloon",
      .args = { { "target", API_ARG_INT, false }, { "stats_interval", API_ARG_INT, false } },
      .usage = "target (bytes) and stats_interval (seconds) are integers",
      .run = cmd_balloon },
    { .name = "link",
      .args = { { "nic", API_ARG_INT_OR_STRING, true }, { "state", API_ARG_STRING, true } },
      .usage = "link needs \"nic\" (an index from 0, or a MAC) and \"state\" (\"up\" or \"down\")",
      .run = cmd_link },
    { .name = "config", .run = cmd_config },
    { .name = "save",
      .args = { { "file", API_ARG_STRING, true } },
      .usage = "save needs a member \"file\" with an absolute path",
      .run = cmd_save },
    { .name = "snapshot-create",
      .args = { { "name", API_ARG_STRING, true },
                { "kind", API_ARG_STRING, false },
                { "file", API_ARG_STRING, false } },
      .usage = "snapshot-create needs \"name\", and \"kind\" and \"file\" (an absolute path) as strings",
      .run = cmd_snapshot_create },
    { .name = "snapshot-delete",
      .args = { { "name", API_ARG_STRING, true } },
      .usage = "snapshot-delete needs a member \"name\"",
      .run = cmd_snapshot_delete },
    { .name = "console", .action = API_REPLY_THEN_CONSOLE, .run = cmd_console },
    { .name = "wait", .action = API_WAIT },
    { .name = NULL },
};

/* ---- parsing and dispatch ----------------------------------------------------------- */

static bool arg_fits(const struct api_arg *a, struct json_object *v)
{
    bool is_int = json_object_is_type(v, json_type_int);
    bool is_str = json_object_is_type(v, json_type_string);
    switch (a->type) {
    case API_ARG_INT: return is_int;
    case API_ARG_STRING: return is_str;
    case API_ARG_INT_OR_STRING: return is_int || is_str;
    }
    return false;
}

static bool args_fit(const struct api_cmd *c, struct json_object *req)
{
    for (const struct api_arg *a = c->args; a->name; a++) {
        struct json_object *v;
        if (!json_object_object_get_ex(req, a->name, &v)) {
            if (a->required)
                return false;
        } else if (!arg_fits(a, v)) {
            return false;
        }
    }
    return true;
}

static struct json_object *parse_json(const char *line, size_t len, char **reply)
{
    struct json_tokener *tok = json_tokener_new();
    if (!tok) {
        *reply = api_reply_error("out of memory");
        return NULL;
    }
    struct json_object *req = json_tokener_parse_ex(tok, line, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    while (used < len && (line[used] == ' ' || line[used] == '\r' || line[used] == '\t'))
        used++;
    if (req && jerr == json_tokener_success && used == len)
        return req;
    json_object_put(req);
    *reply = api_reply_error("malformed JSON: %s", jerr == json_tokener_continue ? "incomplete message"
                                                   : jerr != json_tokener_success
                                                       ? json_tokener_error_desc(jerr)
                                                       : "trailing characters");
    return NULL;
}

const struct api_cmd *api_parse(const char *line, size_t len, struct json_object **out, char **reply)
{
    *out = NULL;
    *reply = NULL;
    struct json_object *req = parse_json(line, len, reply), *name;
    if (!req)
        return NULL;
    if (!json_object_is_type(req, json_type_object) || !json_object_object_get_ex(req, "request", &name) ||
        !json_object_is_type(name, json_type_string)) {
        json_object_put(req);
        *reply = api_reply_error("a request is an object with a string member \"request\"");
        return NULL;
    }
    const char *n = json_object_get_string(name);
    const struct api_cmd *c = api_cmds;
    while (c->name && strcmp(c->name, n))
        c++;
    if (!c->name)
        *reply = api_reply_error("unknown request '%.64s'", n);
    else if (!args_fit(c, req))
        *reply = api_reply_error("%s", c->usage);
    if (*reply) {
        json_object_put(req);
        return NULL;
    }
    *out = req;
    return c;
}

enum api_action api_handle(struct kvmbox_vm *vm, const char *line, size_t len, char **reply)
{
    struct json_object *req;
    const struct api_cmd *c = api_parse(line, len, &req, reply);
    if (!c)
        return API_REPLY;
    *reply = c->run ? c->run(vm, req) : NULL;
    json_object_put(req);
    return c->action;
}
