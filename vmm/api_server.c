/* Control socket server: one thread, epoll over the listening socket, the clients, the
 * console-output eventfd and a quit eventfd. Clients are hostile too: messages are bounded,
 * every request line goes to vmm/api_cmds.c (parsed with json-c and checked against the
 * request table), a bad one gets an error reply, a client that misbehaves (oversized line,
 * output it does not read) is dropped; the VM never notices. The VM is reached only through
 * include/kvmbox.h (and vmm/control.h for the thread's sandbox). */
#include "vmm/api.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "vmm/api_cmds.h"
#include "vmm/control.h"
#include "common/util.h"

#define MAX_PENDING_OUT (4u << 20) /* a console client this far behind is dropped */
#define STR_(x)         #x
#define STR(x)          STR_(x)
#define TAG_LISTEN      ((uint64_t)-1)
#define TAG_QUIT        ((uint64_t)-2)
#define TAG_OUTPUT      ((uint64_t)-3)

struct client {
    int fd;
    bool console, waiting, closing;
    bool detaching; /* a console client half-closed: flush what it was sent, then close */
    char *in;       /* API_MAX_MESSAGE + 1 bytes */
    size_t in_len;
    uint8_t *out;
    size_t out_len, out_cap;
    uint64_t console_pos; /* next ring position to send */
    uint64_t deadline;    /* monotonic ns by which it must complete a request; 0 for a
                                * console or waiting client, which may stay */
};

struct api {
    struct kvmbox_vm *vm;
    char *path;
    int listen_fd, epoll_fd, quit_fd;
    pthread_t thread;
    bool thread_started;
    struct client *clients[API_MAX_CLIENTS];
    uint64_t console_seen; /* ring position up to which some console client got output */
    bool bound;            /* we bound the socket at path: */
    dev_t sock_dev;        /* ...this one, the only thing api_stop removes */
    ino_t sock_ino;
};

/* ---- clients ------------------------------------------------------------------------ */

static int queue_out(struct client *cl, const void *data, size_t len)
{
    if (cl->out_len + len > MAX_PENDING_OUT)
        return -ENOBUFS;
    if (cl->out_len + len > cl->out_cap) {
        size_t cap = cl->out_cap ? cl->out_cap : 4096;
        while (cap < cl->out_len + len)
            cap *= 2;
        uint8_t *p = realloc(cl->out, cap);
        if (!p)
            return -ENOMEM;
        cl->out = p, cl->out_cap = cap;
    }
    memcpy(cl->out + cl->out_len, data, len);
    cl->out_len += len;
    return 0;
}

static int queue_line(struct client *cl, char *line)
{
    int r = line ? queue_out(cl, line, strlen(line)) : -ENOMEM;
    if (r == 0)
        r = queue_out(cl, "\n", 1);
    free(line);
    return r;
}

static void client_free(struct api *a, unsigned idx)
{
    struct client *cl = a->clients[idx];
    if (!cl)
        return;
    if (cl->console)
        kvmbox_vm_console_detach(a->vm);
    epoll_ctl(a->epoll_fd, EPOLL_CTL_DEL, cl->fd, NULL);
    close(cl->fd);
    free(cl->in), free(cl->out), free(cl);
    a->clients[idx] = NULL;
}

/* A console client that goes away with output it never got: that output counts as unseen
 * again, for the next client to attach. */
static void console_unsent(struct api *a, struct client *cl)
{
    uint64_t sent = cl->console_pos - (cl->out_len < cl->console_pos ? cl->out_len : cl->console_pos);
    if (cl->console && a->console_seen > sent)
        a->console_seen = sent;
}

/* Says why (best effort: the client may not be reading) and disconnects it. */
static void drop_client(struct api *a, unsigned idx, const char *why)
{
    struct client *cl = a->clients[idx];
    char line[256];
    int n = snprintf(line, sizeof(line), "{\"ok\":false,\"error\":\"%s\"}\n", why);
    if (cl->out_len == 0 && send(cl->fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* it goes either way */
    }
    client_free(a, idx);
}

static uint64_t request_deadline(void)
{
    return monotonic_ns() + API_REQUEST_TIMEOUT_S * 1000000000ULL;
}

/* Disconnects request clients past their deadline; returns the next deadline (0: none). */
static uint64_t expire_clients(struct api *a)
{
    uint64_t now = monotonic_ns(), next = 0;
    for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
        struct client *cl = a->clients[i];
        if (!cl || !cl->deadline)
            continue;
        if (cl->deadline <= now && cl->console) {
            console_unsent(a, cl); /* detaching, and the guest reads nothing: no JSON on a console */
            client_free(a, i);
        } else if (cl->deadline <= now)
            drop_client(a, i, "no complete request in " STR(API_REQUEST_TIMEOUT_S) " s; disconnected");
        else if (!next || cl->deadline < next)
            next = cl->deadline;
    }
    return next;
}

static unsigned long_lived_clients(struct api *a)
{
    unsigned n = 0;
    for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
        n += a->clients[i] && (a->clients[i]->console || a->clients[i]->waiting);
    return n;
}

static void update_epoll(struct api *a, unsigned idx)
{
    struct client *cl = a->clients[idx];
    struct epoll_event ev = { .events = (cl->detaching ? 0 : EPOLLIN) | (cl->out_len ? EPOLLOUT : 0),
                              .data.u64 = idx };
    epoll_ctl(a->epoll_fd, EPOLL_CTL_MOD, cl->fd, &ev);
}

static int flush_out(struct client *cl)
{
    while (cl->out_len) {
        ssize_t n = send(cl->fd, cl->out, cl->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        memmove(cl->out, cl->out + n, cl->out_len - (size_t)n);
        cl->out_len -= (size_t)n;
    }
    return 0;
}

/* A detaching console client: flush, then close once everything it was sent is out and
 * everything it sent has reached the guest (`kvmbox console <file` detaches when the file
 * ends: the guest gets all of it, at the pace it reads). Returns true when the client is
 * gone. */
static bool detach_progress(struct api *a, unsigned idx)
{
    struct client *cl = a->clients[idx];
    if (flush_out(cl) < 0) {
        console_unsent(a, cl);
        client_free(a, idx);
        return true;
    }
    if (cl->out_len == 0 && cl->in_len == 0) {
        client_free(a, idx); /* the client reads up to this close, then exits */
        return true;
    }
    update_epoll(a, idx);
    return false;
}

/* Copies new console output from the ring to every console client. */
static void pump_console(struct api *a)
{
    uint8_t buf[8192];
    for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
        struct client *cl = a->clients[i];
        if (!cl || !cl->console)
            continue;
        if (cl->detaching) { /* it gets nothing new: it asked to go */
            detach_progress(a, i);
            continue;
        }
        for (;;) {
            size_t n = kvmbox_vm_console_read(a->vm, &cl->console_pos, buf, sizeof(buf));
            if (n == 0)
                break;
            if (queue_out(cl, buf, n) < 0) {
                cl->closing = true;
                break;
            }
        }
        if (cl->console_pos > a->console_seen)
            a->console_seen = cl->console_pos;
        if (!cl->closing && flush_out(cl) < 0)
            cl->closing = true;
        if (cl->closing) {
            console_unsent(a, cl);
            client_free(a, i);
        } else
            update_epoll(a, i);
    }
}

static void start_console(struct api *a, struct client *cl)
{
    cl->console = true;
    /* Output put in the ring before this is pumped to the client below (client_readable),
     * output after it wakes this thread. */
    kvmbox_vm_console_attach(a->vm);
    /* Output nobody has seen yet (within the ring's bound) is replayed to the first client
     * that attaches, so nothing is lost while nobody is attached. */
    cl->console_pos = a->console_seen;
    cl->in_len = 0;
}

static void handle_lines(struct api *a, struct client *cl)
{
    char *nl;
    while (!cl->console && !cl->closing && (nl = memchr(cl->in, '\n', cl->in_len))) {
        size_t len = (size_t)(nl - cl->in);
        char *reply = NULL;
        enum api_action act = api_handle(a->vm, cl->in, len, &reply);
        memmove(cl->in, nl + 1, cl->in_len - len - 1);
        cl->in_len -= len + 1;
        cl->deadline = cl->waiting ? 0 : request_deadline(); /* a waiting client may ask more */
        if ((act == API_WAIT || act == API_REPLY_THEN_CONSOLE) &&
            long_lived_clients(a) >= API_MAX_CLIENTS - API_RESERVED_CLIENTS) {
            free(reply);
            reply = api_reply_error(
                "too many console and wait clients (%d); the other slots are kept for requests",
                API_MAX_CLIENTS - API_RESERVED_CLIENTS);
            act = API_REPLY;
        }
        if (act == API_WAIT) {
            cl->waiting = true;
            cl->deadline = 0;
            continue;
        }
        if (queue_line(cl, reply) < 0)
            cl->closing = true;
        if (act == API_REPLY_THEN_CONSOLE) {
            start_console(a, cl);
            cl->deadline = 0;
        }
    }
}

static void console_input(struct api *a, struct client *cl)
{
    size_t n = kvmbox_vm_console_write(a->vm, cl->in, cl->in_len);
    memmove(cl->in, cl->in + n, cl->in_len - n);
    cl->in_len -= n;
    if (n && cl->detaching)
        cl->deadline = request_deadline(); /* the guest is still taking it in */
}

static void client_readable(struct api *a, unsigned idx)
{
    struct client *cl = a->clients[idx];
    if (cl->in_len == API_MAX_MESSAGE) {
        if (cl->console) {
            console_input(a, cl); /* the guest is slow to read: try again later */
            return;
        }
    }
    ssize_t n = recv(cl->fd, cl->in + cl->in_len, API_MAX_MESSAGE - cl->in_len, MSG_DONTWAIT);
    if (n == 0 && cl->console) {
        /* `kvmbox console` detaches by shutting down its sending side and reading on until
         * we close: everything queued for it reaches it, nothing is lost or counted seen. */
        cl->detaching = true;
        /* Its input goes on reaching the guest; a guest that takes none for the request
         * timeout does not keep the client (and its slot) for ever. */
        cl->deadline = request_deadline();
        detach_progress(a, idx);
        return;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        console_unsent(a, cl);
        client_free(a, idx);
        return;
    }
    if (n < 0)
        return;
    cl->in_len += (size_t)n;
    if (cl->console) {
        console_input(a, cl);
    } else {
        handle_lines(a, cl);
        if (!cl->console && cl->in_len == API_MAX_MESSAGE) {
            queue_line(cl, api_reply_error("message too long (limit %d bytes)", API_MAX_MESSAGE));
            flush_out(cl);
            cl->closing = true;
        }
    }
    if (cl->console && cl->in_len == 0)
        pump_console(a);
    if (a->clients[idx] && (cl->closing || flush_out(cl) < 0))
        client_free(a, idx);
    else if (a->clients[idx])
        update_epoll(a, idx);
}

static bool peer_allowed(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false;
    return cred.uid == geteuid() || cred.uid == 0;
}

/* With every slot taken: the request client idle longest, if idle long enough to give way. */
static int evictable(struct api *a)
{
    int best = -1;
    for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
        if (a->clients[i] && a->clients[i]->deadline && !a->clients[i]->console &&
            (best < 0 || a->clients[i]->deadline < a->clients[best]->deadline))
            best = (int)i;
    uint64_t idle_since = best < 0 ? 0 : a->clients[best]->deadline - API_REQUEST_TIMEOUT_S * 1000000000ULL;
    return best >= 0 && monotonic_ns() - idle_since >= API_EVICT_AFTER_S * 1000000000ULL ? best : -1;
}

static void accept_client(struct api *a)
{
    int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return;
    if (!peer_allowed(fd)) {
        close(fd);
        return;
    }
    unsigned idx = 0;
    while (idx < API_MAX_CLIENTS && a->clients[idx])
        idx++;
    int old = idx < API_MAX_CLIENTS ? -1 : evictable(a);
    if (old >= 0) {
        drop_client(a, (unsigned)old, "idle while another client needed the slot; disconnected");
        idx = (unsigned)old;
    }
    struct client *cl = idx < API_MAX_CLIENTS ? calloc(1, sizeof(*cl)) : NULL;
    if (cl)
        cl->in = malloc(API_MAX_MESSAGE + 1);
    if (!cl || !cl->in) {
        static const char busy[] = "{\"ok\":false,\"error\":\"too many clients\"}\n";
        if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            /* the client goes away either way */
        }
        close(fd);
        if (cl)
            free(cl);
        return;
    }
    cl->fd = fd;
    cl->deadline = request_deadline();
    a->clients[idx] = cl;
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = idx };
    epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
}

static bool any_console_input_pending(struct api *a)
{
    for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
        if (a->clients[i] && a->clients[i]->console && a->clients[i]->in_len)
            return true;
    return false;
}

static void *api_thread(void *arg)
{
    struct api *a = arg;
    pthread_setname_np(pthread_self(), "api");
    control_api_thread_sandbox(a->vm);
    for (;;) {
        struct epoll_event ev[16];
        int timeout = any_console_input_pending(a) ? 20 : -1;
        uint64_t next = expire_clients(a), now = monotonic_ns();
        if (next) {
            int ms = next <= now ? 0 : (int)((next - now) / 1000000 + 1);
            if (timeout < 0 || ms < timeout)
                timeout = ms;
        }
        int n = epoll_wait(a->epoll_fd, ev, 16, timeout);
        if (n < 0 && errno != EINTR)
            return NULL;
        for (int i = 0; i < n; i++) {
            uint64_t tag = ev[i].data.u64;
            if (tag == TAG_QUIT)
                return NULL;
            if (tag == TAG_LISTEN) {
                accept_client(a);
            } else if (tag == TAG_OUTPUT) {
                uint64_t v;
                while (read(kvmbox_vm_console_fd(a->vm), &v, sizeof(v)) > 0)
                    ;
                pump_console(a);
            } else if (tag < API_MAX_CLIENTS && a->clients[tag]) {
                if (a->clients[tag]->detaching && (ev[i].events & (EPOLLERR | EPOLLHUP))) {
                    console_unsent(a, a->clients[tag]); /* it is gone: it gets nothing more */
                    client_free(a, (unsigned)tag);
                } else if (a->clients[tag]->detaching)
                    detach_progress(a, (unsigned)tag);
                else if (ev[i].events & (EPOLLERR | EPOLLHUP) && !(ev[i].events & EPOLLIN)) {
                    console_unsent(a, a->clients[tag]);
                    client_free(a, (unsigned)tag);
                } else if (ev[i].events & EPOLLIN)
                    client_readable(a, (unsigned)tag);
                else if (flush_out(a->clients[tag]) < 0)
                    client_free(a, (unsigned)tag);
                else
                    update_epoll(a, (unsigned)tag);
            }
        }
        for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
            struct client *cl = a->clients[i];
            if (!cl || !cl->console || !cl->in_len)
                continue;
            console_input(a, cl);
            if (cl->detaching && cl->in_len == 0)
                detach_progress(a, i);
        }
    }
}

/* ---- setup and teardown ---------------------------------------------------------------- */

static const char *vm_name(struct api *a)
{
    const char *name = kvmbox_vm_config(a->vm)->name;
    return name ? name : "?";
}

/* What may already be at PATH: nothing; a socket a running VM listens on (the name is
 * taken); a socket nobody listens on (left by a VM that died: removed). Anything else is not
 * ours to remove: --api-sock pointing at a file must not delete it. */
static int clear_path(struct api *a, const struct sockaddr_un *sa, char *err, size_t errlen)
{
    const char *path = sa->sun_path;
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : errf(err, errlen, -errno, "API socket %s: %s", path, strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return errf(err, errlen, -EEXIST, "API socket path %s exists and is not a socket; not removing it",
                    path);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return errf(err, errlen, -errno, "socket: %s", strerror(errno));
    int r = connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ? 0 : errno;
    close(probe);
    if (r == 0)
        return errf(err, errlen, -EADDRINUSE, "a VM named '%s' is already running (%s)", vm_name(a), path);
    if (r != ECONNREFUSED)
        return errf(err, errlen, -r, "API socket %s: %s", path, strerror(r));
    struct stat again; /* the same stale socket, not one a VM starting now just bound */
    if (lstat(path, &again) == 0 && again.st_dev == st.st_dev && again.st_ino == st.st_ino)
        unlink(path);
    return 0;
}

static int bind_socket(struct api *a, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path))
        return errf(err, errlen, -ENAMETOOLONG, "API socket path %s is too long", path);
    strcpy(sa.sun_path, path);
    a->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (a->listen_fd < 0)
        return errf(err, errlen, -errno, "socket: %s", strerror(errno));
    int r = clear_path(a, &sa, err, errlen);
    if (r < 0)
        return r;
    mode_t old = umask(0177);
    r = bind(a->listen_fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (r < 0 && errno == EADDRINUSE) /* another VM bound it since clear_path */
        return errf(err, errlen, -EADDRINUSE, "a VM named '%s' is already running (%s)", vm_name(a), path);
    if (r < 0)
        return errf(err, errlen, -errno, "cannot create API socket %s: %s", path, strerror(errno));
    struct stat st; /* what we bound, so that only that is removed at the end */
    if (lstat(path, &st) == 0)
        a->sock_dev = st.st_dev, a->sock_ino = st.st_ino, a->bound = true;
    if (listen(a->listen_fd, 16) < 0)
        return errf(err, errlen, -errno, "listen on %s: %s", path, strerror(errno));
    return 0;
}

/* Removes the socket we bound, if PATH still is that socket. */
static void unlink_socket(struct api *a)
{
    struct stat st;
    if (a->bound && lstat(a->path, &st) == 0 && st.st_dev == a->sock_dev && st.st_ino == a->sock_ino)
        unlink(a->path);
    a->bound = false;
}

static int watch(struct api *a, int fd, uint64_t tag)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };
    return epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int api_start(struct kvmbox_vm *vm, const char *path, struct api **out, char *err, size_t errlen)
{
    struct api *a = calloc(1, sizeof(*a));
    if (!a)
        return errf(err, errlen, -ENOMEM, "out of memory");
    a->vm = vm;
    a->listen_fd = a->epoll_fd = a->quit_fd = -1;
    *out = a;
    a->path = strdup(path);
    if (!a->path)
        return errf(err, errlen, -ENOMEM, "out of memory");
    int r = bind_socket(a, path, err, errlen);
    if (r < 0)
        return r; /* api_stop removes the socket only if we bound it */
    a->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    a->quit_fd = eventfd(0, EFD_CLOEXEC);
    if (a->epoll_fd < 0 || a->quit_fd < 0 || watch(a, a->listen_fd, TAG_LISTEN) < 0 ||
        watch(a, a->quit_fd, TAG_QUIT) < 0 || watch(a, kvmbox_vm_console_fd(vm), TAG_OUTPUT) < 0)
        return errf(err, errlen, -errno, "API event loop setup: %s", strerror(errno));
    r = pthread_create(&a->thread, NULL, api_thread, a); /* which names itself */
    if (r)
        return errf(err, errlen, -r, "cannot start the API thread: %s", strerror(r));
    a->thread_started = true;
    return 0;
}

static void answer_waiters(struct api *a)
{
    struct kvmbox_result res = { .reason = KVMBOX_STOP_ERROR };
    if (kvmbox_vm_result(a->vm, &res) < 0) /* api_stop without a stop: destroy mid-creation */
        snprintf(res.message, sizeof(res.message), "the VM was destroyed");
    for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
        struct client *cl = a->clients[i];
        if (!cl || !cl->waiting)
            continue;
        struct json_object *o = api_ok_object();
        json_object_object_add(o, "status", json_object_new_int(kvmbox_exit_status(&res)));
        json_object_object_add(o, "message", json_object_new_string(res.message));
        queue_line(cl, api_reply_json(o));
        /* Blocking for a moment is fine here: the VM is gone and the client asked. */
        setsockopt(cl->fd, SOL_SOCKET, SO_SNDTIMEO, &(struct timeval){ .tv_sec = 1 }, sizeof(struct timeval));
        while (cl->out_len) {
            ssize_t n = send(cl->fd, cl->out, cl->out_len, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            memmove(cl->out, cl->out + n, cl->out_len - (size_t)n);
            cl->out_len -= (size_t)n;
        }
    }
}

void api_stop(struct api *a)
{
    if (!a)
        return;
    if (a->thread_started) {
        uint64_t one = 1;
        if (write(a->quit_fd, &one, sizeof(one)) < 0) {
            /* cannot fail on a fresh eventfd */
        }
        pthread_join(a->thread, NULL);
        /* The name is free before anyone hears the VM ended: `kvmbox wait NAME && kvmbox
         * start NAME` (or clone) must not find the old socket. */
        unlink_socket(a);
        pump_console(a); /* the last output to attached consoles */
        answer_waiters(a);
    }
    for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
        client_free(a, i);
    if (a->path)
        unlink_socket(a);
    if (a->listen_fd >= 0)
        close(a->listen_fd);
    if (a->epoll_fd >= 0)
        close(a->epoll_fd);
    if (a->quit_fd >= 0)
        close(a->quit_fd);
    free(a->path);
    free(a);
}
