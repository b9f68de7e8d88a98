/* The settings table: one row per setting of a machine, with the functions that parse its
 * value's text into the config and format it back (vmm/settings.h). What is generated from
 * the table is in vmm/config_shapes.c. */
#include "vmm/settings.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/boot_firmware.h"
#include "common/util.h"

#define DEFAULT_MEM (256ULL << 20)

/* ---- helpers the rows share ------------------------------------------------------------ */

static int no_room(const char *key, char *err, size_t errlen)
{
    return errf(err, errlen, -EINVAL, "--%s: the settings are too long altogether", key);
}

/* *PATH made absolute against the working directory (lexically: a symlink in it stays a
 * symlink, so a relative backing name still resolves against the directory as given). In a
 * definition a relative path is refused: which directory would it be relative to? */
static int make_absolute(struct run_options *o, const char *key, const char **path, char *err, size_t errlen)
{
    const char *p = *path;
    if (!p || p[0] == '/')
        return 0;
    if (o->definition)
        return errf(err, errlen, -EINVAL,
                    "\"%s\": relative path '%s' (a definition names files "
                    "by absolute path)",
                    key, p);
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd)))
        return errf(err, errlen, -errno, "--%s: cannot make '%s' absolute: getcwd: %s", key, p,
                    strerror(errno));
    while (p[0] == '.' && p[1] == '/')
        p += 2;
    char buf[8192];
    int n = snprintf(buf, sizeof(buf), "%s%s%s", cwd, strcmp(cwd, "/") ? "/" : "", p);
    if (n < 0 || (size_t)n >= sizeof(buf) || !(*path = config_strndup(o, buf, (size_t)n)))
        return no_room(key, err, errlen);
    return 0;
}

/* Appends S to BUF, a ',' in it doubled (the value syntax's escape). */
static void put_escaped(char *buf, size_t len, const char *s)
{
    size_t n = strlen(buf);
    for (; *s && n + 2 < len; s++) {
        buf[n++] = *s;
        if (*s == ',')
            buf[n++] = ',';
    }
    buf[n] = '\0';
}

static void put(char *buf, size_t len, const char *fmt, const char *s)
{
    size_t n = strlen(buf);
    if (n < len)
        snprintf(buf + n, len - n, fmt, s);
}

static void put_uint(char *buf, size_t len, const char *fmt, unsigned v)
{
    size_t n = strlen(buf);
    if (n < len)
        snprintf(buf + n, len - n, fmt, v);
}

static unsigned one_if(bool b)
{
    return b ? 1 : 0;
}

static int text_copy(struct run_options *o, const char *key, const char *val, const char **out, char *err,
                     size_t errlen)
{
    if (!(*out = config_strndup(o, val, strlen(val))))
        return no_room(key, err, errlen);
    return 0;
}

static int bad(char *err, size_t errlen, const char *key, const char *val, const char *want)
{
    return errf(err, errlen, -EINVAL, "invalid value '%s' for --%s: %s", val, key, want);
}

static unsigned one_file(const char *path, const char *out[2])
{
    out[0] = path;
    return path ? 1 : 0;
}

/* ---- the rows ---------------------------------------------------------------------------- */

static int kernel_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (!*v)
        return bad(err, errlen, "kernel", v, "expected a file");
    return text_copy(o, "kernel", v, &o->vm.kernel, err, errlen)
               ?: make_absolute(o, "kernel", &o->vm.kernel, err, errlen);
}
static unsigned kernel_count(const struct kvmbox_config *c)
{
    return one_if(c->kernel && *c->kernel);
}
static void kernel_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    snprintf(b, l, "%s", c->kernel);
}
static unsigned kernel_files(const struct kvmbox_config *c, unsigned i, const char *out[2])
{
    return one_file(c->kernel, out);
}

static int initrd_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (!*v)
        return bad(err, errlen, "initrd", v, "expected a file");
    return text_copy(o, "initrd", v, &o->vm.initrd, err, errlen)
               ?: make_absolute(o, "initrd", &o->vm.initrd, err, errlen);
}
static unsigned initrd_count(const struct kvmbox_config *c)
{
    return one_if(c->initrd && *c->initrd);
}
static void initrd_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    snprintf(b, l, "%s", c->initrd);
}
static unsigned initrd_files(const struct kvmbox_config *c, unsigned i, const char *out[2])
{
    return one_file(c->initrd, out);
}

static int cmdline_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (strlen(v) >= KVMBOX_MAX_CMDLINE)
        return errf(err, errlen, -EINVAL, "--cmdline: longer than %d bytes", KVMBOX_MAX_CMDLINE - 1);
    return text_copy(o, "cmdline", v, &o->vm.cmdline, err, errlen);
}
static unsigned cmdline_count(const struct kvmbox_config *c)
{
    return one_if(c->cmdline && strcmp(c->cmdline, DEFAULT_CMDLINE));
}
static void cmdline_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    snprintf(b, l, "%s", c->cmdline);
}

/* SIZE[,hugepages=on|off][,overcommit=on|off]; a bare number is MiB, as with qemu -m. */
static int mem_parse(struct run_options *o, const char *arg, char *err, size_t errlen)
{
    const char *want = "expected SIZE[,hugepages=on|off][,overcommit=on|off], SIZE like 512M or 2G";
    char size[64];
    const char *comma = strchr(arg, ',');
    size_t slen = comma ? (size_t)(comma - arg) : strlen(arg);
    if (slen >= sizeof(size))
        return bad(err, errlen, "mem", arg, want);
    memcpy(size, arg, slen), size[slen] = '\0';
    bool huge = false, over = false;
    for (const char *p = comma; p; p = strchr(p + 1, ',')) {
        char kv[32];
        const char *end = strchr(p + 1, ',');
        snprintf(kv, sizeof(kv), "%.*s", end ? (int)(end - p - 1) : (int)strlen(p + 1), p + 1);
        if (!strncmp(kv, "hugepages=", 10) && config_parse_bool(kv + 10, &huge))
            continue;
        if (!strncmp(kv, "overcommit=", 11) && config_parse_bool(kv + 11, &over))
            continue;
        return bad(err, errlen, "mem", arg, want);
    }
    uint64_t v;
    if (parse_size(size, &v) < 0 || v == 0)
        return bad(err, errlen, "mem", size, "expected a size like 512M or 2G");
    if (strspn(size, "0123456789") == slen) {
        if (v > (UINT64_MAX >> 20))
            return bad(err, errlen, "mem", size, "too large");
        v <<= 20;
    }
    o->vm.mem_size = v, o->vm.hugepages = huge, o->vm.mem_overcommit = over;
    return 0;
}
static unsigned mem_count(const struct kvmbox_config *c)
{
    return one_if(c->mem_size != DEFAULT_MEM || c->hugepages || c->mem_overcommit);
}
static void mem_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    static const struct {
        unsigned shift;
        char unit;
    } units[] = { { 40, 'T' }, { 30, 'G' }, { 20, 'M' }, { 10, 'K' } };
    const char *unit = "B";
    uint64_t v = c->mem_size;
    char u[2] = { 0 };
    for (size_t k = 0; k < ARRAY_SIZE(units); k++)
        if (v && !(v & ((1ULL << units[k].shift) - 1))) {
            v >>= units[k].shift, u[0] = units[k].unit, unit = u;
            break;
        }
    snprintf(b, l, "%llu%s%s%s", (unsigned long long)v, unit, c->hugepages ? ",hugepages=on" : "",
             c->mem_overcommit ? ",overcommit=on" : "");
}

static int cpus_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    uint64_t n;
    if (parse_uint(v, 1, 4096, &n) < 0)
        return bad(err, errlen, "cpus", v, "expected a number from 1 to 4096");
    o->vm.cpus = (unsigned)n;
    return 0;
}
static unsigned cpus_count(const struct kvmbox_config *c)
{
    return one_if(c->cpus != 1);
}
static void cpus_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    snprintf(b, l, "%u", c->cpus);
}

/* "bios" (SeaBIOS) or a BIOS image; "uefi" is a word too (the library says why it is refused). */
static bool firmware_is_word(const char *v)
{
    return !strcmp(v, "bios") || !strcmp(v, "uefi");
}
static int firmware_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (!*v)
        return bad(err, errlen, "firmware", v, "expected bios or a file");
    if (text_copy(o, "firmware", v, &o->vm.firmware, err, errlen) < 0)
        return -EINVAL;
    return firmware_is_word(v) ? 0 : make_absolute(o, "firmware", &o->vm.firmware, err, errlen);
}
static unsigned firmware_count(const struct kvmbox_config *c)
{
    return one_if(c->firmware != NULL);
}
static void firmware_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    /* A running VM holds the image it chose for "bios": show the word it came from. */
    snprintf(b, l, "%s", strcmp(c->firmware, FW_DEFAULT_BIOS) ? c->firmware : "bios");
}
static unsigned firmware_files(const struct kvmbox_config *c, unsigned i, const char *out[2])
{
    return c->firmware && !firmware_is_word(c->firmware) ? one_file(c->firmware, out) : 0;
}

static int disk_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (o->vm.ndisks == KVMBOX_MAX_DISKS)
        return errf(err, errlen, -EINVAL, "more than %d disks", KVMBOX_MAX_DISKS);
    size_t n = strlen(v) + 1;
    if (n > sizeof(o->arena) - o->used)
        return no_room("disk", err, errlen);
    struct kvmbox_disk *d = &o->vm.disks[o->vm.ndisks];
    if (config_parse_disk(v, d, o->arena + o->used, n, err, errlen) < 0)
        return -EINVAL;
    o->used += n;
    if (make_absolute(o, "disk", &d->path, err, errlen) < 0 ||
        make_absolute(o, "disk", &d->backing, err, errlen) < 0)
        return -EINVAL;
    o->vm.ndisks++;
    return 0;
}
static unsigned disk_count(const struct kvmbox_config *c)
{
    return c->ndisks;
}
static void disk_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    const struct kvmbox_disk *d = &c->disks[i];
    b[0] = '\0';
    put_escaped(b, l, d->path);
    if (d->format)
        put(b, l, ",format=%s", d->format);
    if (d->readonly)
        put(b, l, "%s", ",readonly=on");
    if (d->cache_none)
        put(b, l, "%s", ",cache=none");
    if (d->serial)
        put(b, l, "%s", ",serial="), put_escaped(b, l, d->serial);
    if (d->workers)
        put_uint(b, l, ",workers=%u", d->workers);
    if (d->bootindex)
        put_uint(b, l, ",bootindex=%u", d->bootindex);
    if (d->untrusted)
        put(b, l, "%s", ",untrusted=on");
    if (d->backing)
        put(b, l, "%s", ",backing="), put_escaped(b, l, d->backing);
    if (d->backing_format)
        put(b, l, ",backing_format=%s", d->backing_format);
}
static unsigned disk_files(const struct kvmbox_config *c, unsigned i, const char *out[2])
{
    out[0] = c->disks[i].path, out[1] = c->disks[i].backing;
    return out[1] ? 2 : 1;
}

static int cdrom_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (o->vm.ncdroms == KVMBOX_MAX_CDROMS)
        return errf(err, errlen, -EINVAL, "more than %d CD-ROMs", KVMBOX_MAX_CDROMS);
    size_t n = strlen(v) + 1;
    if (n > sizeof(o->arena) - o->used)
        return no_room("cdrom", err, errlen);
    struct kvmbox_cdrom *cd = &o->vm.cdroms[o->vm.ncdroms];
    if (config_parse_cdrom(v, cd, o->arena + o->used, n, err, errlen) < 0)
        return -EINVAL;
    o->used += n;
    if (make_absolute(o, "cdrom", &cd->path, err, errlen) < 0)
        return -EINVAL;
    o->vm.ncdroms++;
    return 0;
}
static unsigned cdrom_count(const struct kvmbox_config *c)
{
    return c->ncdroms;
}
static void cdrom_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    b[0] = '\0';
    put_escaped(b, l, c->cdroms[i].path);
    if (c->cdroms[i].bootindex)
        put_uint(b, l, ",bootindex=%u", c->cdroms[i].bootindex);
}
static unsigned cdrom_files(const struct kvmbox_config *c, unsigned i, const char *out[2])
{
    return one_file(c->cdroms[i].path, out);
}

static int boot_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    return config_parse_boot(v, &o->vm, err, errlen);
}
static unsigned boot_count(const struct kvmbox_config *c)
{
    return one_if(c->boot_order[0]) + one_if(c->boot_once[0]) + one_if(c->boot_menu);
}
static void boot_list(const uint8_t *order, const char *sep, char *b, size_t l)
{
    static const char *const names[] = { "", "disk", "cdrom", "net" };
    for (unsigned k = 0; k < KVMBOX_BOOT_MAX && order[k] && order[k] < ARRAY_SIZE(names); k++)
        put(b, l, "%s", k ? sep : ""), put(b, l, "%s", names[order[k]]);
}
/* Value I of those present, in the order order, once=, menu=. */
static void boot_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    b[0] = '\0';
    if (c->boot_order[0] && i-- == 0) {
        boot_list(c->boot_order, ",", b, l);
    } else if (c->boot_once[0] && i-- == 0) {
        put(b, l, "%s", "once=");
        boot_list(c->boot_once, ":", b, l);
    } else {
        put(b, l, "%s", "menu=on");
    }
}

static int net_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (o->vm.nnics == KVMBOX_MAX_NICS)
        return errf(err, errlen, -EINVAL, "more than %d NICs", KVMBOX_MAX_NICS);
    if (!v)
        v = "";
    size_t n = strlen(v) + 1;
    if (n > sizeof(o->arena) - o->used)
        return no_room("net", err, errlen);
    if (config_parse_nic(v, &o->vm.nics[o->vm.nnics], o->arena + o->used, n, err, errlen) < 0)
        return -EINVAL;
    o->used += n;
    o->vm.nnics++;
    return 0;
}
static unsigned net_count(const struct kvmbox_config *c)
{
    return c->nnics;
}
static void net_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    const struct kvmbox_nic *n = &c->nics[i];
    static const char *const modes[] = { [KVMBOX_NET_USER] = "user",
                                         [KVMBOX_NET_TAP] = "tap,ifname=%s",
                                         [KVMBOX_NET_BRIDGE] = "bridge=%s",
                                         [KVMBOX_NET_SEGMENT] = "segment=%s" };
    b[0] = '\0';
    put(b, l, n->mode < ARRAY_SIZE(modes) ? modes[n->mode] : "user", n->name ? n->name : "");
    for (unsigned k = 0; k < n->nhostfwd && k < KVMBOX_MAX_HOSTFWD; k++)
        put(b, l, ",hostfwd=%s", n->hostfwd[k]);
    if (n->have_mac) {
        char mac[32];
        snprintf(mac, sizeof(mac), ",mac=%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1], n->mac[2],
                 n->mac[3], n->mac[4], n->mac[5]);
        put(b, l, "%s", mac);
    }
}

/* --balloon and --sandbox: on by default, so the config keeps whether they are off. */
static int switch_parse(const char *key, const char *v, bool *off, char *err, size_t errlen)
{
    bool on;
    if (!config_parse_bool(v, &on))
        return bad(err, errlen, key, v, "expected on or off");
    *off = !on;
    return 0;
}
static int balloon_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    return switch_parse("balloon", v, &o->vm.no_balloon, err, errlen);
}
static unsigned balloon_count(const struct kvmbox_config *c)
{
    return one_if(c->no_balloon);
}
static void off_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    snprintf(b, l, "off");
}
static int sandbox_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    return switch_parse("sandbox", v, &o->vm.no_sandbox, err, errlen);
}
static unsigned sandbox_count(const struct kvmbox_config *c)
{
    return one_if(c->no_sandbox);
}

static int no_reboot_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    o->vm.no_reboot = true;
    return 0;
}
static unsigned no_reboot_count(const struct kvmbox_config *c)
{
    return one_if(c->no_reboot);
}

static int timeout_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    uint64_t n;
    if (parse_uint(v, 1, 100000000, &n) < 0)
        return bad(err, errlen, "timeout", v, "expected a number of seconds >= 1");
    o->vm.timeout_secs = (unsigned)n;
    return 0;
}
static unsigned timeout_count(const struct kvmbox_config *c)
{
    return one_if(c->timeout_secs);
}
static void timeout_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    snprintf(b, l, "%u", c->timeout_secs);
}

/* The name's rules (a file name in the runtime and config directories) are the CLI's:
 * cli_valid_name checks it before anything is made from it. */
static int name_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    return text_copy(o, "name", v, &o->vm.name, err, errlen);
}
static unsigned name_count(const struct kvmbox_config *c)
{
    return one_if(c->name != NULL);
}
static void name_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    snprintf(b, l, "%s", c->name);
}

static int uuid_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (config_parse_uuid(v, o->vm.uuid) < 0)
        return bad(err, errlen, "uuid", v, "expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
    o->vm.have_uuid = true;
    return 0;
}
static unsigned uuid_count(const struct kvmbox_config *c)
{
    return one_if(c->have_uuid);
}
static void uuid_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    const uint8_t *u = c->uuid;
    snprintf(b, l, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
             u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

static int api_sock_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    if (!*v)
        return bad(err, errlen, "api-sock", v, "expected a path");
    return text_copy(o, "api-sock", v, &o->vm.api_sock, err, errlen)
               ?: make_absolute(o, "api-sock", &o->vm.api_sock, err, errlen);
}
static unsigned api_sock_count(const struct kvmbox_config *c)
{
    return one_if(c->api_sock != NULL);
}
static void api_sock_format(const struct kvmbox_config *c, unsigned i, char *b, size_t l)
{
    snprintf(b, l, "%s", c->api_sock);
}

static int daemonize_parse(struct run_options *o, const char *v, char *err, size_t errlen)
{
    o->daemonize = true;
    return 0;
}

#define ROW(k, ...)           \
    {                         \
        .key = k, __VA_ARGS__ \
    }
const struct setting settings[] = {
    ROW("kernel", .arg = "PATH", .kind = SETTING_TEXT, .parse = kernel_parse, .count = kernel_count,
        .format = kernel_format, .files = kernel_files,
        .help = "bzImage, ELF kernel with a PVH note, or multiboot kernel"),
    ROW("initrd", .arg = "PATH", .kind = SETTING_TEXT, .parse = initrd_parse, .count = initrd_count,
        .format = initrd_format, .files = initrd_files,
        .help = "initial ramdisk (Linux) or first module (PVH, multiboot)"),
    ROW("cmdline", .aliases = { "append" }, .arg = "STR", .kind = SETTING_TEXT, .dflt = DEFAULT_CMDLINE,
        .parse = cmdline_parse, .count = cmdline_count, .format = cmdline_format,
        .help = "kernel command line"),
    ROW("mem", .aliases = { "memory" }, .arg = "SIZE[,hugepages=on][,overcommit=on]", .kind = SETTING_TEXT,
        .dflt = "256M", .parse = mem_parse, .count = mem_count, .format = mem_format,
        .help = "guest RAM, with a K/M/G suffix (a bare number is MiB); huge pages from\n"
                "hugetlbfs (else transparent huge pages, else an error); overcommit: allow\n"
                "more than the host's RAM and swap"),
    ROW("cpus", .aliases = { "smp" }, .arg = "N", .kind = SETTING_NUMBER, .dflt = "1", .parse = cpus_parse,
        .count = cpus_count, .format = cpus_format, .help = "number of vCPUs"),
    ROW("firmware", .aliases = { "bios" }, .arg = "bios|PATH", .kind = SETTING_TEXT, .computed = true,
        .parse = firmware_parse, .count = firmware_count, .format = firmware_format, .files = firmware_files,
        .help = "boot through firmware (the default without --kernel: SeaBIOS); PATH:\n"
                "another BIOS image (uefi: not supported yet)"),
    ROW("disk", .aliases = { "drive" }, .kind = SETTING_LIST, .parse = disk_parse, .count = disk_count,
        .format = disk_format, .files = disk_files,
        .arg = "PATH[,format=raw|qcow2][,readonly=on][,cache=none|writeback][,serial=STR]\n"
               "[,workers=N][,bootindex=N][,untrusted=on[,backing=PATH[,backing_format=FMT]]]",
        .help = "a virtio-blk disk (repeatable; PCI slots in the order given; N I/O threads,\n"
                "default 4; \",,\" is a comma in PATH); untrusted: open no backing file the\n"
                "image names, only PATH (docs/security.md)"),
    ROW("cdrom", .arg = "PATH[,bootindex=N]", .kind = SETTING_LIST, .parse = cdrom_parse,
        .count = cdrom_count, .format = cdrom_format, .files = cdrom_files,
        .help = "a read-only CD-ROM with an ISO 9660 image (virtio-scsi; repeatable)"),
    ROW("boot", .arg = "cdrom,disk,net | once=cdrom | menu=on", .kind = SETTING_LIST, .parse = boot_parse,
        .count = boot_count, .format = boot_format,
        .help = "firmware boot order (default disk, then cdrom); once= applies to the first\n"
                "boot only; bootindex=N on --disk and --cdrom comes first; menu=on: the\n"
                "firmware's boot menu (repeatable: one of each)"),
    ROW("net", .aliases = { "nic" }, .kind = SETTING_LIST, .optional_value = true, .parse = net_parse,
        .count = net_count, .format = net_format,
        .arg = "[user][,hostfwd=tcp|udp:[ADDR]:HOSTPORT-[GADDR]:GPORT]...[,mac=MAC]\n"
               "| tap,ifname=NAME | bridge=BR | segment=NAME [,mac=MAC]",
        .help = "a virtio-net NIC (repeatable): user-mode NAT (no privileges), an existing\n"
                "tap, a new tap on bridge BR, or an isolated segment that VMs join by name"),
    ROW("balloon", .arg = "on|off", .kind = SETTING_TEXT, .dflt = "on", .parse = balloon_parse,
        .count = balloon_count, .format = off_format,
        .help = "the virtio-balloon device (`kvmbox balloon NAME SIZE`)"),
    ROW("sandbox", .arg = "on|off", .kind = SETTING_TEXT, .dflt = "on", .parse = sandbox_parse,
        .count = sandbox_count, .format = off_format,
        .help = "per-thread seccomp allow-lists (off is for debugging)"),
    ROW("no-reboot", .kind = SETTING_FLAG, .parse = no_reboot_parse, .count = no_reboot_count,
        .help = "a guest reset ends kvmbox (status 0) instead of rebooting"),
    ROW("timeout", .arg = "SECS", .kind = SETTING_NUMBER, .parse = timeout_parse, .count = timeout_count,
        .format = timeout_format, .help = "stop the guest after SECS seconds (status 124)"),
    ROW("name", .arg = "NAME", .kind = SETTING_TEXT, .computed = true, .parse = name_parse,
        .count = name_count, .format = name_format,
        .help = "the VM's name (default: generated); list/info/console use it"),
    ROW("uuid", .arg = "UUID", .kind = SETTING_TEXT, .computed = true, .parse = uuid_parse,
        .count = uuid_count, .format = uuid_format,
        .help = "the VM's UUID (SMBIOS; default: generated, and kept in the definition)"),
    ROW("api-sock", .arg = "PATH", .kind = SETTING_TEXT, .computed = true, .parse = api_sock_parse,
        .count = api_sock_count, .format = api_sock_format,
        .help = "control socket (default: RUNTIME_DIR/NAME.sock)"),
    ROW("daemonize", .kind = SETTING_FLAG, .process = true, .parse = daemonize_parse,
        .help = "run in the background; console via `kvmbox console NAME` (how this\n"
                "process runs, not part of the machine: `start` always daemonizes)"),
};
const size_t settings_count = ARRAY_SIZE(settings);
_Static_assert(ARRAY_SIZE(settings) <= SETTINGS_MAX, "raise SETTINGS_MAX");

const struct setting *setting_find(const char *name, bool aliases)
{
    for (size_t i = 0; i < settings_count; i++) {
        if (!strcmp(settings[i].key, name))
            return &settings[i];
        for (size_t a = 0; aliases && a < ARRAY_SIZE(settings[i].aliases) && settings[i].aliases[a]; a++)
            if (!strcmp(settings[i].aliases[a], name))
                return &settings[i];
    }
    return NULL;
}
