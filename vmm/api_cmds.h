/* The control socket's requests (docs/api.md): one table row per request, naming its
 * arguments and their JSON types and the library call that serves it. The server
 * (vmm/api_server.c) hands each line to api_handle() and acts on what it returns.
 *
 * Parsing and checking a line against the table (api_parse) is pure and unit-tested
 * (tests/test_api.c); serving a request goes through include/kvmbox.h only, and is tested
 * there against a running guest. */
#ifndef KVMBOX_API_CMDS_H
#define KVMBOX_API_CMDS_H

#include <stdbool.h>
#include <stddef.h>

struct json_object;
struct kvmbox_vm;

/* What the server does with the connection after a request. */
enum api_action {
    API_REPLY,              /* send the reply */
    API_REPLY_THEN_CONSOLE, /* send it, then the connection carries the console */
    API_WAIT,               /* no reply now: answer when the VM ends */
};

enum api_arg_type { API_ARG_INT = 1, API_ARG_STRING, API_ARG_INT_OR_STRING };
#define API_MAX_ARGS 3

struct api_arg {
    const char *name; /* NULL ends the list */
    enum api_arg_type type;
    bool required;
};

struct api_cmd {
    const char *name;
    struct api_arg args[API_MAX_ARGS + 1];
    const char *usage; /* the error when the arguments do not fit args[] */
    enum api_action action;
    /* Serves a checked request; returns the reply line (malloc'd, NULL: out of memory).
     * NULL for "wait", which the server answers when the VM ends. */
    char *(*run)(struct kvmbox_vm *vm, struct json_object *req);
};

/* The requests, ending with a row whose name is NULL. */
extern const struct api_cmd api_cmds[];

/* Parses one request line (LEN bytes, no newline) and checks it against the table. Returns
 * its row with *REQ the parsed object (the caller puts it), or NULL with *REPLY the error
 * reply (malloc'd): malformed JSON, no string "request", an unknown request, arguments that
 * are missing or of the wrong type. Pure: touches no VM. */
const struct api_cmd *api_parse(const char *line, size_t len, struct json_object **req, char **reply);

/* api_parse, then the request's run(): *REPLY gets the reply line (NULL for API_WAIT). */
enum api_action api_handle(struct kvmbox_vm *vm, const char *line, size_t len, char **reply);

/* Reply lines, for the server's own messages: {"ok":false,"error":...} and {"ok":true,...}. */
char *api_reply_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
struct json_object *api_ok_object(void);
char *api_reply_json(struct json_object *o); /* takes O; NULL when out of memory */

/* The "info" object (vmm/api_info.c). */
struct json_object *api_info_object(struct kvmbox_vm *vm);
/* A NIC's link and traffic counters, added to O (info and the link reply). */
void api_nic_stats(struct json_object *o, struct kvmbox_vm *vm, unsigned nic);
struct json_object *api_balloon_object(struct kvmbox_vm *vm);
#define API_MAC_STR_LEN 18
void api_mac_str(const unsigned char *mac, char *buf);

#endif
