/* The control socket: JSON requests, one object per line, from clients of the same user.
 * docs/api.md describes the protocol. The server (vmm/api_server.c) owns the socket, the
 * clients, their time limits and console streaming; the requests themselves are a table in
 * vmm/api_cmds.c (see api_cmds.h). Both reach the VM through include/kvmbox.h only. */
#ifndef KVMBOX_API_H
#define KVMBOX_API_H

#include <stddef.h>

struct kvmbox_vm;
struct api;

#define API_MAX_MESSAGE (64 * 1024)
#define API_MAX_CLIENTS 32
/* Console and "wait" clients stay connected for long; they may hold all slots but these, so
 * that requests (info, shutdown, kill) always get through. */
#define API_RESERVED_CLIENTS 4
/* A client that is not attached to the console or waiting must complete a request within
 * this many seconds of connecting or of its last reply, or it is disconnected: half a line
 * held open must not keep a slot for ever. */
#define API_REQUEST_TIMEOUT_S 10
/* With every slot taken, a new client takes the slot of the request client that has been
 * idle longest, if that one has been idle at least this long. */
#define API_EVICT_AFTER_S 3

/* Binds PATH (0600). A live socket at PATH means the name is taken (-EADDRINUSE); a stale
 * one (nobody listening) is removed. Starts the API thread. */
int api_start(struct kvmbox_vm *vm, const char *path, struct api **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Answers pending "wait" requests with the VM's result, disconnects everyone, removes the
 * socket and stops the thread. */
void api_stop(struct api *api);

#endif
