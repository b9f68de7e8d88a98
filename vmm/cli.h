/* Shared pieces of the command line: where VMs live, talking to a VM's control socket, and
 * VM definitions. Only the CLI (vmm/main.c, vmm/cli_*.c) uses this. */
#ifndef KVMBOX_CLI_H
#define KVMBOX_CLI_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

/* Exit statuses of the management verbs (run has its own, see README). */
#define CLI_OK 0
#define CLI_FAIL 1
#define CLI_USAGE 2

/* $KVMBOX_RUNTIME_DIR, else /run/kvmbox for root, else $XDG_RUNTIME_DIR/kvmbox, else
 * /tmp/kvmbox-UID; created 0700. */
int cli_runtime_dir(char *buf, size_t len);
/* $KVMBOX_CONFIG_DIR, else /etc/kvmbox/vms for root, else $XDG_CONFIG_HOME/kvmbox/vms or
 * ~/.config/kvmbox/vms; created 0700. */
int cli_config_dir(char *buf, size_t len);
void cli_socket_path(const char *name, char *buf, size_t len);
void cli_log_path(const char *name, char *buf, size_t len);
bool cli_valid_name(const char *name);

/* Connects to the VM called NAME. -ENOENT when no such VM runs (a stale socket is removed). */
int cli_connect(const char *name);
/* Sends {"request": REQ} and reads one reply line. Returns the parsed reply or NULL with
 * ERR set (connection problems, or {"ok":false} with the VM's error). */
struct json_object *cli_request_fd(int fd, const char *req, char *err, size_t errlen);
struct json_object *cli_request(const char *name, const char *req, char *err, size_t errlen);

/* Definitions: JSON objects whose keys are `kvmbox run` option names. */
struct json_object *cli_def_load(const char *name, char *err, size_t errlen);
int cli_def_save(const char *name, struct json_object *def, bool overwrite, char *err, size_t errlen);
/* `run` options (argv after "run") to a definition, and back (argv is malloc'ed, NULL-ended). */
struct json_object *cli_def_from_argv(int argc, char **argv);
char **cli_def_to_argv(struct json_object *def, int *argc);
void cli_new_uuid(char *buf);   /* 37 bytes */
void cli_mac_from_name(const char *name, char *buf); /* 18 bytes: 52:54:00:xx:xx:xx */

int cmd_run(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_ctl(const char *verb, int argc, char **argv);   /* list info pause resume shutdown reboot reset kill wait */
int cmd_console(int argc, char **argv);
int cmd_def(const char *verb, int argc, char **argv);   /* define undefine dumpconfig clone */

#endif
