/* Shared pieces of the command line: where VMs live, talking to a VM's control socket, and
 * VM definitions. Only the CLI (cli/main.c, cli/cli_*.c) uses this. */
#ifndef KVMBOX_CLI_H
#define KVMBOX_CLI_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

/* Exit statuses of the management verbs (run has its own, see README). */
#define CLI_OK    0
#define CLI_FAIL  1
#define CLI_USAGE 2

/* $KVMBOX_RUNTIME_DIR, else /run/kvmbox for root, else $XDG_RUNTIME_DIR/kvmbox, else
 * /tmp/kvmbox-UID; created 0700, and refused (ERR says why) unless it is a directory of the
 * user's own without group or other permissions (see dir_make_private). */
int cli_runtime_dir(char *buf, size_t len, char *err, size_t errlen) MUST_CHECK;
/* $KVMBOX_CONFIG_DIR, else /etc/kvmbox/vms for root, else $XDG_CONFIG_HOME/kvmbox/vms or
 * ~/.config/kvmbox/vms; created 0700, refused unless the user's own and not writable by
 * others. */
int cli_config_dir(char *buf, size_t len, char *err, size_t errlen) MUST_CHECK;
/* Every path made from a VM name comes from these two: RUNTIME_DIR/NAME SUFFIX (".sock",
 * ".log", ".status") and CONFIG_DIR/NAME.json. An invalid name makes no path: -EINVAL with
 * ERR saying so (so `info ../x` cannot reach outside the directories). */
int cli_runtime_path(const char *name, const char *suffix, char *buf, size_t len, char *err,
                     size_t errlen) MUST_CHECK;
int cli_def_path(const char *name, char *buf, size_t len, char *err, size_t errlen) MUST_CHECK;
bool cli_valid_name(const char *name);
/* -EINVAL with ERR saying NAME is not a valid VM name. */
int cli_bad_name(const char *name, char *err, size_t errlen);
/* The exit status of a verb that failed with R: bad usage (2) for an invalid name, else 1. */
int cli_status(int r);

/* Connects to the VM called NAME. -ENOENT when no such VM runs (a stale socket is removed),
 * -EINVAL for an invalid name, -EPERM when the socket is served by a user that is neither us
 * nor root; ERR says which. */
int cli_connect(const char *name, char *err, size_t errlen);
/* Sends {"request": REQ} and reads one reply line. Returns the parsed reply or NULL with
 * ERR set (connection problems, or {"ok":false} with the VM's error). */
struct json_object *cli_request_fd(int fd, const char *req, char *err, size_t errlen);
/* cli_request_fd for a request that writes the file WATCH (save, snapshot-create): its reply
 * is waited for while WATCH grows, not only for the usual 30 s. */
struct json_object *cli_request_fd_watch(int fd, const char *req, const char *watch, char *err,
                                         size_t errlen);
/* cli_connect + cli_request_fd: 0 with *REPLY set, or the negative errno with ERR set. */
int cli_request(const char *name, const char *req, struct json_object **reply, char *err, size_t errlen);
int cli_request_watch(const char *name, const char *req, const char *watch, struct json_object **reply,
                      char *err, size_t errlen);

/* The JSON object in the regular file PATH (not followed if a symlink), read up to MAX bytes;
 * NULL when it is missing, not a regular file, empty, not JSON or not an object. */
struct json_object *cli_read_json_object(const char *path, size_t max);
/* The record a VM left when it ended (RUNTIME/NAME.status: {"name", "status", "reason",
 * "message", "ended"}), kept until a VM of that name starts again; NULL when there is none.
 * `kvmbox wait` and `info` fall back on it when no VM of that name runs. */
struct json_object *cli_last_run(const char *name);

/* Definitions: JSON objects of the settings table's keys (vmm/settings.h). */
struct json_object *cli_def_load(const char *name, char *err, size_t errlen);
int cli_def_save(const char *name, struct json_object *def, bool overwrite, char *err, size_t errlen);
void cli_new_uuid(char *buf);                        /* 37 bytes */
void cli_mac_from_name(const char *name, char *buf); /* 18 bytes: 52:54:00:xx:xx:xx */

/* A daemonized VM's log: from here on stdout and stderr go through a pipe to a thread that
 * appends to RUNTIME/NAME.log, rotating it to NAME.log.1 at 1 MiB ($KVMBOX_LOG_MAX bytes).
 * cli_log_stop drains the pipe, ends the thread and appends LAST_LINE (if not empty) on a
 * line of its own. */
struct cli_log;
int cli_log_start(const char *name, bool sandbox, struct cli_log **out, char *err, size_t errlen) MUST_CHECK;
void cli_log_stop(struct cli_log *log, const char *last_line);

int cmd_run(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_ctl(const char *verb, int argc,
            char **argv); /* list info pause resume shutdown reboot reset kill wait */
int cmd_console(int argc, char **argv);
int cmd_def(const char *verb, int argc, char **argv); /* define undefine dumpconfig clone settings */
int cmd_save(int argc, char **argv);                  /* save NAME FILE (cli/cli_save.c) */
int cmd_restore(int argc, char **argv);               /* restore FILE [--name NAME] [--paused] [--prefault] */
/* Runs the VM saved in FILE again (as `restore` does), under NAME (NULL: the saved name);
 * DISKS_REVERTED: the disks were just reverted to the snapshot taken with FILE (their
 * fingerprints are not compared). Returns the CLI status and prints what went wrong. */
int cli_restore_file(const char *file, const char *name, bool paused, bool prefault, bool disks_reverted);
/* snapshot NAME create|list|revert|delete|current (cli/cli_snapshot.c) */
int cmd_snapshot(int argc, char **argv);
/* The VM's snapshots for `info` (NULL: none): an array of {name, kind, created, current}. */
struct json_object *cli_snapshot_summary(const char *name);
/* How many snapshots VM NAME has (`undefine` refuses while it has any). */
int cli_snapshot_count(const char *name);
struct kvmbox_config;
/* Called by cmd_run: when `restore` is running it, tells the library what to restore. */
void cli_restore_apply(struct kvmbox_config *cfg);
struct run_options;
/* Runs the VM O describes (as `run` does after parsing; O's strings must outlive it). */
int cli_run_options(struct run_options *o);

#endif
