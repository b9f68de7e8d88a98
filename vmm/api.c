/* Control socket server: one thread, epoll over the listening socket, the clients, the
 * console-output eventfd and a quit eventfd. Clients are hostile too: messages are bounded,
 * every request is parsed with json-c and validated, a bad one gets an error reply, a client
 * that misbehaves (oversized line, output it does not read) is dropped; the VM never notices. */
#include "vmm/api.h"
#include "virtio/blk.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
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

#include "devices/devices.h"
#include "virtio/balloon.h"
#include "virtio/net.h"
#include "vmm/util.h"
#include "vmm/vm.h"
#include "vmm/snapshot.h"

#define MAX_PENDING_OUT (4u << 20) /* a console client this far behind is dropped */
#define STR_(x) #x
#define STR(x) STR_(x)
#define TAG_LISTEN ((uint64_t)-1)
#define TAG_QUIT ((uint64_t)-2)
#define TAG_OUTPUT ((uint64_t)-3)

struct client {
    int fd;
    bool console, waiting, closing;
    bool detaching;            /* a console client half-closed: flush what it was sent, then close */
    char *in;                  /* API_MAX_MESSAGE + 1 bytes */
    size_t in_len;
    uint8_t *out;
    size_t out_len, out_cap;
    uint64_t console_pos;      /* next ring position to send */
    uint64_t deadline;         /* monotonic ns by which it must complete a request; 0 for a
                                * console or waiting client, which may stay */
};

struct api {
    struct vm *vm;
    char *path;
    int listen_fd, epoll_fd, quit_fd;
    pthread_t thread;
    bool thread_started;
    struct client *clients[API_MAX_CLIENTS];
    uint64_t console_seen;     /* ring position up to which some console client got output */
    bool bound;                /* we bound the socket at path: */
    dev_t sock_dev;            /* ...this one, the only thing api_stop removes */
    ino_t sock_ino;
};

/* ---- replies ------------------------------------------------------------------------ */

static char *reply_json(struct json_object *o)
{
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

static char *reply_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *reply_error(const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(0));
    json_object_object_add(o, "error", json_object_new_string(msg));
    return reply_json(o);
}

static struct json_object *ok_object(void)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ok", json_object_new_boolean(1));
    return o;
}

static const char *vm_state(struct vm *vm)
{
    if (vm->stop_requested)
        return "stopping";
    if (vm->reset_requested)
        return "rebooting";
    return vm->paused ? "paused" : "running";
}

static struct json_object *balloon_object(struct vm *vm);

#define MAC_STR_LEN 18

static void mac_str(const uint8_t *m, char *buf)
{
    snprintf(buf, MAC_STR_LEN, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static struct json_object *traffic_object(uint64_t frames, uint64_t bytes, uint64_t dropped)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "frames", json_object_new_int64((int64_t)frames));
    json_object_object_add(o, "bytes", json_object_new_int64((int64_t)bytes));
    json_object_object_add(o, "dropped", json_object_new_int64((int64_t)dropped));
    return o;
}

static void nic_add_stats(struct json_object *o, struct vnet *dev)
{
    struct vnet_stats st;
    vnet_get_stats(dev, &st);
    json_object_object_add(o, "link", json_object_new_string(st.link_up ? "up" : "down"));
    json_object_object_add(o, "rx", traffic_object(st.rx_frames, st.rx_bytes, st.rx_dropped));
    json_object_object_add(o, "tx", traffic_object(st.tx_frames, st.tx_bytes, st.tx_dropped));
}

/* Boot order classes as text: "disk,cdrom". */
static void boot_text(const uint8_t *order, char *buf, size_t len)
{
    static const char *const names[] = { "", "disk", "cdrom", "net" };
    size_t used = 0;
    buf[0] = '\0';
    for (unsigned k = 0; k < KVMBOX_BOOT_MAX && order[k] && order[k] < 4 && used < len; k++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", k ? "," : "", names[order[k]]);
}

/* Firmware, boot order and CD-ROMs (firmware boot, docs/firmware.md). */
static void fw_info(struct vm *vm, struct json_object *i)
{
    static const uint8_t dflt[] = { KVMBOX_BOOT_DISK, KVMBOX_BOOT_CDROM, 0 };
    char text[64];
    json_object_object_add(i, "firmware", json_object_new_string(vm->firmware ? vm->firmware : ""));
    if (vm->firmware) {
        boot_text(vm->cfg.boot_order[0] ? vm->cfg.boot_order : dflt, text, sizeof(text));
        json_object_object_add(i, "boot_order", json_object_new_string(text));
        boot_text(vm->cfg.boot_once, text, sizeof(text));
        json_object_object_add(i, "boot_once", json_object_new_string(text));
        json_object_object_add(i, "boot_menu", json_object_new_boolean(vm->cfg.boot_menu));
    }
    struct json_object *cds = json_object_new_array();
    for (unsigned c = 0; c < vm->cfg.ncdroms; c++) {
        struct json_object *o = json_object_new_object();
        char slot[16];
        snprintf(slot, sizeof(slot), "00:%02x.0", vm->cdrom_info[c].slot);
        json_object_object_add(o, "path", json_object_new_string(vm->cfg.cdroms[c].path));
        json_object_object_add(o, "size", json_object_new_int64((int64_t)vm->cdrom_info[c].size));
        json_object_object_add(o, "bootindex", json_object_new_int((int)vm->cfg.cdroms[c].bootindex));
        json_object_object_add(o, "pci", json_object_new_string(slot));
        json_object_array_add(cds, o);
    }
    json_object_object_add(i, "cdroms", cds);
}

static struct json_object *info_object(struct vm *vm)
{
    struct json_object *i = json_object_new_object();
    pthread_mutex_lock(&vm->lock);
    json_object_object_add(i, "name", json_object_new_string(vm->cfg.name ? vm->cfg.name : "vm"));
    json_object_object_add(i, "state", json_object_new_string(vm_state(vm)));
    pthread_mutex_unlock(&vm->lock);
    json_object_object_add(i, "pid", json_object_new_int(getpid()));
    json_object_object_add(i, "cpus", json_object_new_int((int)vm->ncpus));
    json_object_object_add(i, "memory", json_object_new_int64((int64_t)vm->mem.ram_size));
    json_object_object_add(i, "hugepages", json_object_new_string(vm->mem.huge ? vm->mem.huge : "off"));
    json_object_object_add(i, "uptime", json_object_new_double((double)(monotonic_ns() - vm->start_ns) / 1e9));
    json_object_object_add(i, "reboots", json_object_new_int((int)vm->reboots));
    json_object_object_add(i, "kernel", json_object_new_string(vm->kernel ? vm->kernel : ""));
    if (vm->initrd)
        json_object_object_add(i, "initrd", json_object_new_string(vm->initrd));
    json_object_object_add(i, "cmdline", json_object_new_string(vm->cmdline ? vm->cmdline : ""));
    struct json_object *disks = json_object_new_array();
    for (unsigned d = 0; d < vm->cfg.ndisks; d++) {
        const struct kvmbox_disk *k = &vm->cfg.disks[d];
        struct json_object *o = json_object_new_object();
        char slot[16];
        snprintf(slot, sizeof(slot), "00:%02x.0", vm->disk_info[d].slot);
        json_object_object_add(o, "path", json_object_new_string(k->path));
        json_object_object_add(o, "format", json_object_new_string(vm->disk_info[d].format));
        json_object_object_add(o, "size", json_object_new_int64((int64_t)vm->disk_info[d].size));
        json_object_object_add(o, "readonly", json_object_new_boolean(k->readonly));
        json_object_object_add(o, "cache", json_object_new_string(k->cache_none ? "none" : "writeback"));
        json_object_object_add(o, "serial", json_object_new_string(k->serial ? k->serial : ""));
        json_object_object_add(o, "pci", json_object_new_string(slot));
        json_object_object_add(o, "untrusted", json_object_new_boolean(k->untrusted));
        struct vblk_state st = { 0 };
        if (vm->disk_info[d].dev)
            vblk_get_state(vm->disk_info[d].dev, &st);
        json_object_object_add(o, "state", json_object_new_string(st.corrupt ? "corrupt" : "ok"));
        json_object_object_add(o, "io_errors", json_object_new_int64((int64_t)st.io_errors));
        json_object_object_add(o, "bootindex", json_object_new_int((int)k->bootindex));
        json_object_array_add(disks, o);
    }
    json_object_object_add(i, "disks", disks);
    fw_info(vm, i);
    struct json_object *nics = json_object_new_array();
    for (unsigned k = 0; k < vm->cfg.nnics; k++) {
        struct json_object *o = json_object_new_object();
        const uint8_t *m = vm->nic_info[k].mac;
        char mac[MAC_STR_LEN], slot[16];
        mac_str(m, mac);
        snprintf(slot, sizeof(slot), "00:%02x.0", vm->nic_info[k].slot);
        json_object_object_add(o, "mac", json_object_new_string(mac));
        json_object_object_add(o, "backend", json_object_new_string(vm->nic_info[k].desc));
        json_object_object_add(o, "pci", json_object_new_string(slot));
        nic_add_stats(o, vm->nic_info[k].dev);
        json_object_array_add(nics, o);
    }
    json_object_object_add(i, "nics", nics);
    if (vm->balloon)
        json_object_object_add(i, "balloon", balloon_object(vm));
    return i;
}

static struct json_object *balloon_object(struct vm *vm)
{
    struct balloon_info b;
    vballoon_get_info(vm->balloon, &b);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "target", json_object_new_int64((int64_t)b.target));
    json_object_object_add(o, "actual", json_object_new_int64((int64_t)b.actual));
    json_object_object_add(o, "released", json_object_new_int64((int64_t)b.released));
    json_object_object_add(o, "reported", json_object_new_int64((int64_t)b.reported));
    json_object_object_add(o, "free_page_reporting", json_object_new_boolean(b.reporting));
    json_object_object_add(o, "stats_interval", json_object_new_int((int)b.stats_interval));
    struct json_object *s = json_object_new_object();
    static const char *const names[] = { "swap_in", "swap_out", "major_faults", "minor_faults",
                                         "free", "total", "available", "caches" };
    const int64_t v[] = { b.stats.swap_in, b.stats.swap_out, b.stats.major_faults,
                          b.stats.minor_faults, b.stats.free, b.stats.total, b.stats.available,
                          b.stats.caches };
    for (int k = 0; k < 8; k++)
        if (b.stats.age_ms != UINT64_MAX && v[k] >= 0)
            json_object_object_add(s, names[k], json_object_new_int64(v[k]));
    if (b.stats.age_ms != UINT64_MAX)
        json_object_object_add(s, "age_ms", json_object_new_int64((int64_t)b.stats.age_ms));
    json_object_object_add(o, "stats", s);
    return o;
}

/* {"request":"balloon", "target": BYTES, "stats_interval": SECONDS}: either or both. */
static struct json_object *balloon_request(struct vm *vm, struct json_object *req, char **reply)
{
    if (!vm->balloon) {
        *reply = reply_error("this VM has no balloon device (it was started with --balloon off)");
        return NULL;
    }
    struct json_object *t, *si;
    bool has_t = json_object_object_get_ex(req, "target", &t);
    bool has_si = json_object_object_get_ex(req, "stats_interval", &si);
    if ((has_t && !json_object_is_type(t, json_type_int)) ||
        (has_si && !json_object_is_type(si, json_type_int))) {
        *reply = reply_error("target (bytes) and stats_interval (seconds) are integers");
        return NULL;
    }
    if (has_si && (json_object_get_int64(si) < 0 || json_object_get_int64(si) > 86400)) {
        *reply = reply_error("stats_interval must be 0 to 86400 seconds");
        return NULL;
    }
    char err[256];
    if (has_t && (json_object_get_int64(t) < 0 ||
                  vballoon_set_target(vm->balloon, (uint64_t)json_object_get_int64(t), err, sizeof(err)) < 0)) {
        *reply = reply_error("%s", json_object_get_int64(t) < 0 ? "target must not be negative" : err);
        return NULL;
    }
    if (has_si)
        vballoon_set_stats_interval(vm->balloon, (unsigned)json_object_get_int64(si));
    struct json_object *o = ok_object();
    json_object_object_add(o, "balloon", balloon_object(vm));
    return o;
}

/* {"request":"link", "nic": INDEX | "MAC", "state": "up" | "down"} */
static struct json_object *link_request(struct vm *vm, struct json_object *req, char **reply)
{
    struct json_object *nic, *state;
    if (!json_object_object_get_ex(req, "nic", &nic) || !json_object_object_get_ex(req, "state", &state) ||
        !json_object_is_type(state, json_type_string) ||
        (!json_object_is_type(nic, json_type_int) && !json_object_is_type(nic, json_type_string))) {
        *reply = reply_error("link needs \"nic\" (an index from 0, or a MAC) and \"state\" (\"up\" or \"down\")");
        return NULL;
    }
    const char *st = json_object_get_string(state);
    if (strcmp(st, "up") && strcmp(st, "down")) {
        *reply = reply_error("link state must be \"up\" or \"down\", not \"%.40s\"", st);
        return NULL;
    }
    int idx = -1;
    if (json_object_is_type(nic, json_type_int)) {
        int64_t i = json_object_get_int64(nic);
        idx = i >= 0 && i < (int64_t)vm->cfg.nnics ? (int)i : -1;
    } else {
        for (unsigned k = 0; k < vm->cfg.nnics && idx < 0; k++) {
            const uint8_t *m = vm->nic_info[k].mac;
            char mac[MAC_STR_LEN];
            mac_str(m, mac);
            if (!strcasecmp(mac, json_object_get_string(nic)))
                idx = (int)k;
        }
    }
    if (idx < 0) {
        *reply = reply_error("no NIC %.40s (this VM has %u; `kvmbox info` lists them)",
                             json_object_get_string(nic), vm->cfg.nnics);
        return NULL;
    }
    vnet_set_link(vm->nic_info[idx].dev, !strcmp(st, "up"));
    struct json_object *o = ok_object(), *n = json_object_new_object();
    json_object_object_add(n, "index", json_object_new_int(idx));
    nic_add_stats(n, vm->nic_info[idx].dev);
    json_object_object_add(o, "nic", n);
    return o;
}

/* ---- request dispatch --------------------------------------------------------------- */

enum api_action api_handle(struct vm *vm, const char *line, size_t len, char **reply)
{
    struct json_tokener *tok = json_tokener_new();
    if (!tok) {
        *reply = reply_error("out of memory");
        return API_REPLY;
    }
    struct json_object *req = json_tokener_parse_ex(tok, line, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    while (used < len && (line[used] == ' ' || line[used] == '\r' || line[used] == '\t'))
        used++;
    struct json_object *cmd;
    if (!req || jerr != json_tokener_success || used < len) {
        json_object_put(req);
        *reply = reply_error("malformed JSON: %s", jerr == json_tokener_continue ? "incomplete message"
                             : jerr != json_tokener_success ? json_tokener_error_desc(jerr)
                                                            : "trailing characters");
        return API_REPLY;
    }
    if (!json_object_is_type(req, json_type_object) ||
        !json_object_object_get_ex(req, "request", &cmd) || !json_object_is_type(cmd, json_type_string)) {
        json_object_put(req);
        *reply = reply_error("a request is an object with a string member \"request\"");
        return API_REPLY;
    }
    const char *c = json_object_get_string(cmd);
    enum api_action act = API_REPLY;
    struct json_object *o = NULL;
    if (!strcmp(c, "info")) {
        o = ok_object();
        json_object_object_add(o, "info", info_object(vm));
    } else if (!strcmp(c, "pause")) {
        int r = vm_pause(vm);
        *reply = r < 0 ? reply_error("cannot pause: %s", strerror(-r)) : NULL;
        if (r == 0)
            o = ok_object();
    } else if (!strcmp(c, "resume")) {
        vm_resume(vm);
        o = ok_object();
    } else if (!strcmp(c, "shutdown")) {
        pm_power_button(vm->pm);
        o = ok_object();
    } else if (!strcmp(c, "reboot")) {
        /* Like virsh reboot in ACPI mode: a clean shutdown that ends in a fresh boot. */
        __atomic_store_n(&vm->reboot_on_poweroff, true, __ATOMIC_SEQ_CST);
        pm_power_button(vm->pm);
        o = ok_object();
    } else if (!strcmp(c, "reset")) {
        vm_request_reset(vm);
        o = ok_object();
    } else if (!strcmp(c, "kill")) {
        vm_request_stop(vm, KVMBOX_STOP_KILLED, 0, "killed through the API");
        o = ok_object();
    } else if (!strcmp(c, "balloon")) {
        *reply = NULL;
        o = balloon_request(vm, req, reply);
    } else if (!strcmp(c, "link")) {
        *reply = NULL;
        o = link_request(vm, req, reply);
    } else if (!strcmp(c, "config")) {
        struct json_object *def = vm->cfg.config_json ? json_tokener_parse(vm->cfg.config_json) : NULL;
        o = ok_object();
        json_object_object_add(o, "config", def ? def : json_object_new_object());
    } else if (!strcmp(c, "save")) {
        /* The VM's main thread writes the file (vmm/snapshot.c); this thread waits for it. */
        struct json_object *file;
        char serr[KVMBOX_MSG_MAX];
        if (!json_object_object_get_ex(req, "file", &file) || !json_object_is_type(file, json_type_string) ||
            json_object_get_string(file)[0] != '/')
            *reply = reply_error("save needs a member \"file\" with an absolute path");
        else if (vm_save_request(vm, json_object_get_string(file), serr, sizeof(serr)) < 0)
            *reply = reply_error("%s", serr);
        else
            o = ok_object();
    } else if (!strcmp(c, "console")) {
        o = ok_object();
        act = API_REPLY_THEN_CONSOLE;
    } else if (!strcmp(c, "wait")) {
        act = API_WAIT;
        *reply = NULL;
    } else {
        *reply = reply_error("unknown request '%.64s'", c);
    }
    json_object_put(req);
    if (o)
        *reply = reply_json(o);
    return act;
}

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
    if (cl->console) {
        pthread_mutex_lock(&a->vm->out_lock);
        a->vm->console_listeners--;
        pthread_mutex_unlock(&a->vm->out_lock);
    }
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
            uint64_t lost;
            pthread_mutex_lock(&a->vm->out_lock);
            size_t n = ring_get(&a->vm->out_ring, &cl->console_pos, buf, sizeof(buf), &lost);
            pthread_mutex_unlock(&a->vm->out_lock);
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
        }
        else
            update_epoll(a, i);
    }
}

static void start_console(struct api *a, struct client *cl)
{
    cl->console = true;
    /* Under out_lock: output put in the ring before this is pumped to the client below
     * (client_readable), output after it wakes this thread. */
    pthread_mutex_lock(&a->vm->out_lock);
    a->vm->console_listeners++;
    pthread_mutex_unlock(&a->vm->out_lock);
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
            reply = reply_error("too many console and wait clients (%d); the other slots are kept for requests",
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
    size_t n = serial_receive(a->vm->com1, (uint8_t *)cl->in, cl->in_len);
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
            queue_line(cl, reply_error("message too long (limit %d bytes)", API_MAX_MESSAGE));
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
    vm_thread_sandbox(a->vm, SANDBOX_API);
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
                while (read(a->vm->out_event_fd, &v, sizeof(v)) > 0)
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
        return errf(err, errlen, -EEXIST, "API socket path %s exists and is not a socket; not removing it", path);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return errf(err, errlen, -errno, "socket: %s", strerror(errno));
    int r = connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ? 0 : errno;
    close(probe);
    if (r == 0)
        return errf(err, errlen, -EADDRINUSE, "a VM named '%s' is already running (%s)",
                    a->vm->cfg.name ? a->vm->cfg.name : "?", path);
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
        return errf(err, errlen, -EADDRINUSE, "a VM named '%s' is already running (%s)",
                    a->vm->cfg.name ? a->vm->cfg.name : "?", path);
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

int api_start(struct vm *vm, const char *path, struct api **out, char *err, size_t errlen)
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
        watch(a, a->quit_fd, TAG_QUIT) < 0 || watch(a, vm->out_event_fd, TAG_OUTPUT) < 0)
        return errf(err, errlen, -errno, "API event loop setup: %s", strerror(errno));
    r = pthread_create(&a->thread, NULL, api_thread, a); /* which names itself */
    if (r)
        return errf(err, errlen, -r, "cannot start the API thread: %s", strerror(r));
    a->thread_started = true;
    return 0;
}

static void answer_waiters(struct api *a)
{
    const struct kvmbox_result *res = &a->vm->result;
    for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
        struct client *cl = a->clients[i];
        if (!cl || !cl->waiting)
            continue;
        struct json_object *o = ok_object();
        json_object_object_add(o, "status", json_object_new_int(kvmbox_exit_status(res)));
        json_object_object_add(o, "message", json_object_new_string(res->message));
        queue_line(cl, reply_json(o));
        /* Blocking for a moment is fine here: the VM is gone and the client asked. */
        setsockopt(cl->fd, SOL_SOCKET, SO_SNDTIMEO, &(struct timeval){ .tv_sec = 1 },
                   sizeof(struct timeval));
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
