/* The "info" reply (docs/api.md): the VM's settings as it was created, then what it is doing
 * now, all read through include/kvmbox.h. */
#include "vmm/api_cmds.h"

#include <json-c/json.h>
#include <stdio.h>
#include <unistd.h>

#include "include/kvmbox.h"
#include "vmm/settings.h"

static const char *const state_names[] = {
    [KVMBOX_STATE_RUNNING] = "running",
    [KVMBOX_STATE_PAUSED] = "paused",
    [KVMBOX_STATE_REBOOTING] = "rebooting",
    [KVMBOX_STATE_STOPPING] = "stopping",
};

void api_mac_str(const unsigned char *m, char *buf)
{
    snprintf(buf, API_MAC_STR_LEN, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

static void add_str(struct json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, json_object_new_string(v ? v : ""));
}

static void add_int(struct json_object *o, const char *key, int64_t v)
{
    json_object_object_add(o, key, json_object_new_int64(v));
}

static void add_bool(struct json_object *o, const char *key, bool v)
{
    json_object_object_add(o, key, json_object_new_boolean(v));
}

static void add_pci(struct json_object *o, unsigned slot)
{
    char text[16];
    snprintf(text, sizeof(text), "00:%02x.0", slot);
    add_str(o, "pci", text);
}

/* ---- settings: what the VM was created with (struct kvmbox_config) ------------------- */

/* Boot order classes as text: "disk,cdrom". */
static void boot_text(const uint8_t *order, char *buf, size_t len)
{
    static const char *const names[] = { "", "disk", "cdrom", "net" };
    size_t used = 0;
    buf[0] = '\0';
    for (unsigned k = 0; k < KVMBOX_BOOT_MAX && order[k] && order[k] < 4 && used < len; k++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", k ? "," : "", names[order[k]]);
}

static void info_disk_config(const struct kvmbox_disk *d, struct json_object *o)
{
    add_str(o, "path", d->path);
    add_bool(o, "readonly", d->readonly);
    add_str(o, "cache", d->cache_none ? "none" : "writeback");
    add_str(o, "serial", d->serial);
    add_bool(o, "untrusted", d->untrusted);
    add_int(o, "bootindex", d->bootindex);
}

static void info_cdrom_config(const struct kvmbox_cdrom *c, struct json_object *o)
{
    add_str(o, "path", c->path);
    add_int(o, "bootindex", c->bootindex);
}

/* The settings of the machine that are not per device; per device, the two above. */
static void info_config(const struct kvmbox_config *cfg, struct json_object *i)
{
    static const uint8_t dflt[] = { KVMBOX_BOOT_DISK, KVMBOX_BOOT_CDROM, 0 };
    char text[64];
    add_str(i, "kernel", cfg->kernel);
    if (cfg->initrd)
        add_str(i, "initrd", cfg->initrd);
    add_str(i, "cmdline", cfg->cmdline);
    add_str(i, "firmware", cfg->firmware); /* firmware boot (docs/firmware.md) */
    if (cfg->firmware) {
        boot_text(cfg->boot_order[0] ? cfg->boot_order : dflt, text, sizeof(text));
        add_str(i, "boot_order", text);
        boot_text(cfg->boot_once, text, sizeof(text));
        add_str(i, "boot_once", text);
        add_bool(i, "boot_menu", cfg->boot_menu);
    }
}

/* ---- state: what the VM is doing now ------------------------------------------------- */

static struct json_object *traffic_object(uint64_t frames, uint64_t bytes, uint64_t dropped)
{
    struct json_object *o = json_object_new_object();
    add_int(o, "frames", (int64_t)frames);
    add_int(o, "bytes", (int64_t)bytes);
    add_int(o, "dropped", (int64_t)dropped);
    return o;
}

void api_nic_stats(struct json_object *o, struct kvmbox_vm *vm, unsigned nic)
{
    struct kvmbox_nic_status st = { 0 };
    kvmbox_vm_nic_status(vm, nic, &st);
    add_str(o, "link", st.link_up ? "up" : "down");
    json_object_object_add(o, "rx", traffic_object(st.rx_frames, st.rx_bytes, st.rx_dropped));
    json_object_object_add(o, "tx", traffic_object(st.tx_frames, st.tx_bytes, st.tx_dropped));
}

static struct json_object *disks_array(struct kvmbox_vm *vm, const struct kvmbox_config *cfg)
{
    struct json_object *a = json_object_new_array();
    for (unsigned d = 0; d < cfg->ndisks; d++) {
        struct json_object *o = json_object_new_object();
        struct kvmbox_disk_status st = { 0 };
        kvmbox_vm_disk_status(vm, d, &st);
        info_disk_config(&cfg->disks[d], o);
        add_str(o, "format", st.format);
        add_int(o, "size", (int64_t)st.size);
        add_pci(o, st.pci_slot);
        add_str(o, "state", st.corrupt ? "corrupt" : "ok");
        add_int(o, "io_errors", (int64_t)st.io_errors);
        json_object_array_add(a, o);
    }
    return a;
}

static struct json_object *cdroms_array(struct kvmbox_vm *vm, const struct kvmbox_config *cfg)
{
    struct json_object *a = json_object_new_array();
    for (unsigned c = 0; c < cfg->ncdroms; c++) {
        struct json_object *o = json_object_new_object();
        struct kvmbox_cdrom_status st = { 0 };
        kvmbox_vm_cdrom_status(vm, c, &st);
        info_cdrom_config(&cfg->cdroms[c], o);
        add_int(o, "size", (int64_t)st.size);
        add_pci(o, st.pci_slot);
        json_object_array_add(a, o);
    }
    return a;
}

static struct json_object *nics_array(struct kvmbox_vm *vm, const struct kvmbox_config *cfg)
{
    struct json_object *a = json_object_new_array();
    for (unsigned k = 0; k < cfg->nnics; k++) {
        struct json_object *o = json_object_new_object();
        struct kvmbox_nic_status st = { 0 };
        char mac[API_MAC_STR_LEN];
        kvmbox_vm_nic_status(vm, k, &st);
        api_mac_str(st.mac, mac);
        add_str(o, "mac", mac);
        add_str(o, "backend", st.backend);
        add_pci(o, st.pci_slot);
        api_nic_stats(o, vm, k);
        json_object_array_add(a, o);
    }
    return a;
}

struct json_object *api_balloon_object(struct kvmbox_vm *vm)
{
    struct kvmbox_balloon_status b;
    if (kvmbox_vm_balloon_status(vm, &b) < 0)
        return NULL;
    struct json_object *o = json_object_new_object();
    add_int(o, "target", (int64_t)b.target);
    add_int(o, "actual", (int64_t)b.actual);
    add_int(o, "released", (int64_t)b.released);
    add_int(o, "reported", (int64_t)b.reported);
    add_bool(o, "free_page_reporting", b.free_page_reporting);
    add_int(o, "stats_interval", b.stats_interval);
    struct json_object *s = json_object_new_object();
    static const char *const names[] = { "swap_in", "swap_out", "major_faults", "minor_faults",
                                         "free",    "total",    "available",    "caches" };
    const int64_t v[] = { b.swap_in, b.swap_out, b.major_faults, b.minor_faults,
                          b.free,    b.total,    b.available,    b.caches };
    bool have = b.stats_age_ms != UINT64_MAX;
    for (unsigned k = 0; have && k < sizeof(v) / sizeof(v[0]); k++)
        if (v[k] >= 0)
            add_int(s, names[k], v[k]);
    if (have)
        add_int(s, "age_ms", (int64_t)b.stats_age_ms);
    json_object_object_add(o, "stats", s);
    return o;
}

struct json_object *api_info_object(struct kvmbox_vm *vm)
{
    const struct kvmbox_config *cfg = kvmbox_vm_config(vm);
    struct kvmbox_status st;
    kvmbox_vm_status(vm, &st);
    struct json_object *i = json_object_new_object();
    add_str(i, "name", cfg->name ? cfg->name : "vm");
    add_str(i, "state", state_names[st.state]);
    add_int(i, "pid", getpid());
    add_int(i, "cpus", st.cpus);
    add_int(i, "memory", (int64_t)st.mem_size);
    add_str(i, "hugepages", st.hugepages);
    json_object_object_add(i, "uptime", json_object_new_double((double)st.uptime_ns / 1e9));
    add_int(i, "reboots", st.reboots);
    info_config(cfg, i);
    json_object_object_add(i, "disks", disks_array(vm, cfg));
    json_object_object_add(i, "cdroms", cdroms_array(vm, cfg));
    json_object_object_add(i, "nics", nics_array(vm, cfg));
    struct json_object *b = api_balloon_object(vm);
    if (b)
        json_object_object_add(i, "balloon", b);
    /* Every setting the VM was built from, generated by the settings table (as definitions
     * are): the fields above are what the machine made of them. */
    struct json_object *c = json_object_new_object();
    config_to_json(cfg, c);
    json_object_object_add(i, "config", c);
    return i;
}
