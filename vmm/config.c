#include "vmm/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/util.h"

const char config_run_usage[] =
    "usage: kvmbox run --kernel PATH | --disk IMAGE | --cdrom ISO [options]\n"
    "  --kernel PATH     bzImage, ELF kernel with a PVH note, or multiboot kernel\n"
    "  --initrd PATH     initial ramdisk (Linux) or first module (PVH, multiboot)\n"
    "  --cmdline STR     kernel command line (default: \"" DEFAULT_CMDLINE "\")\n"
    "  --mem SIZE[,hugepages=on][,overcommit=on]  guest RAM, with K/M/G suffix (default\n"
    "                    256M); huge pages from hugetlbfs (else transparent huge pages, else\n"
    "                    an error); overcommit: allow more than the host's RAM and swap\n"
    "  --cpus N          number of vCPUs (default 1)\n"
    "  --no-reboot       a guest reset ends kvmbox (status 0) instead of rebooting\n"
    "  --timeout SECS    stop the guest after SECS seconds (status 124)\n"
    "  --name NAME       the VM's name (default: generated); kvmbox list/info/console use it\n"
    "  --api-sock PATH   control socket (default: RUNTIME_DIR/NAME.sock)\n"
    "  --daemonize       run in the background; console via `kvmbox console NAME`\n"
    "  --disk PATH[,format=raw|qcow2][,readonly=on][,cache=none|writeback][,serial=STR]\n"
    "            [,workers=N][,bootindex=N][,untrusted=on[,backing=PATH[,backing_format=FMT]]]\n"
    "                    a virtio-blk disk (repeatable; PCI slots in the order given; N I/O\n"
    "                    threads, default 4); untrusted: open no backing file the image names,\n"
    "                    only PATH (docs/security.md)\n"
    "  --net [user][,hostfwd=tcp|udp:[ADDR]:HOSTPORT-[GADDR]:GPORT]...[,mac=MAC]\n"
    "  --net tap,ifname=NAME | bridge=BR | segment=NAME [,mac=MAC]\n"
    "                    a virtio-net NIC (repeatable): user-mode NAT (no privileges), an\n"
    "                    existing tap, a new tap on bridge BR, or an isolated segment that\n"
    "                    VMs join by name\n"
    "  --firmware bios|PATH  boot through firmware (the default without --kernel:\n"
    "                    SeaBIOS); PATH: another BIOS image (uefi: not supported yet)\n"
    "  --cdrom PATH[,bootindex=N]  a read-only CD-ROM with an ISO 9660 image (virtio-scsi;\n"
    "                    repeatable)\n"
    "  --boot cdrom,disk,net | once=cdrom | menu=on  firmware boot order (default disk,\n"
    "                    then cdrom); once= applies to the first boot only; bootindex=N on\n"
    "                    --disk and --cdrom comes first; menu=on: the firmware's boot menu\n"
    "  --balloon on|off  the virtio-balloon device (default on; `kvmbox balloon NAME SIZE`)\n"
    "  --sandbox on|off  per-thread seccomp allow-lists (default on; off is for debugging)\n"
    "  -h, --help        this text\n";

enum { OPT_KERNEL = 256, OPT_INITRD, OPT_CMDLINE, OPT_MEM, OPT_CPUS, OPT_NO_REBOOT, OPT_TIMEOUT,
       OPT_NAME, OPT_API_SOCK, OPT_DAEMONIZE, OPT_UUID, OPT_DISK, OPT_NET, OPT_BALLOON,
       OPT_SANDBOX, OPT_FIRMWARE, OPT_CDROM, OPT_BOOT };

static const struct option run_opts[] = {
    { "kernel", required_argument, NULL, OPT_KERNEL },
    { "initrd", required_argument, NULL, OPT_INITRD },
    { "cmdline", required_argument, NULL, OPT_CMDLINE },
    { "append", required_argument, NULL, OPT_CMDLINE },
    { "mem", required_argument, NULL, OPT_MEM },
    { "memory", required_argument, NULL, OPT_MEM },
    { "cpus", required_argument, NULL, OPT_CPUS },
    { "smp", required_argument, NULL, OPT_CPUS },
    { "no-reboot", no_argument, NULL, OPT_NO_REBOOT },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "name", required_argument, NULL, OPT_NAME },
    { "api-sock", required_argument, NULL, OPT_API_SOCK },
    { "daemonize", no_argument, NULL, OPT_DAEMONIZE },
    { "uuid", required_argument, NULL, OPT_UUID },
    { "disk", required_argument, NULL, OPT_DISK },
    { "drive", required_argument, NULL, OPT_DISK },
    { "net", optional_argument, NULL, OPT_NET },
    { "balloon", required_argument, NULL, OPT_BALLOON },
    { "sandbox", required_argument, NULL, OPT_SANDBOX },
    { "nic", optional_argument, NULL, OPT_NET },
    { "firmware", required_argument, NULL, OPT_FIRMWARE },
    { "bios", required_argument, NULL, OPT_FIRMWARE },
    { "cdrom", required_argument, NULL, OPT_CDROM },
    { "boot", required_argument, NULL, OPT_BOOT },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

static int bad_value(char *err, size_t errlen, const char *opt, const char *val, const char *want)
{
    return errf(err, errlen, -EINVAL, "invalid value '%s' for --%s: %s", val, opt, want);
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "on", "yes", "true", "1" }, *const no[] = { "off", "no", "false", "0" };
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (!strcmp(v, yes[i]))
            return *out = true, true;
        if (!strcmp(v, no[i]))
            return *out = false, true;
    }
    return false;
}

/* Copies the next comma-separated field of *P into *OUT (",," is a literal comma). */
static void next_field(const char **p, char **out)
{
    char *o = *out;
    const char *s = *p;
    while (*s) {
        if (*s == ',' && s[1] == ',') {
            *o++ = ',', s += 2;
            continue;
        }
        if (*s == ',') {
            s++;
            break;
        }
        *o++ = *s++;
    }
    *o++ = '\0';
    *p = s;
    *out = o;
}

static int parse_bootindex(const char *opt, const char *val, unsigned *out, char *err, size_t errlen)
{
    uint64_t n;
    if (parse_uint(val, 1, 999, &n) < 0)
        return errf(err, errlen, -EINVAL, "--%s: bootindex must be a number from 1 to 999, not '%s'",
                    opt, val);
    *out = (unsigned)n;
    return 0;
}

static int disk_option(struct kvmbox_disk *d, char *kv, char *err, size_t errlen)
{
    char *val = strchr(kv, '=');
    if (!val)
        return errf(err, errlen, -EINVAL, "--disk: option '%s' needs a value (KEY=VALUE)", kv);
    *val++ = '\0';
    if (!strcmp(kv, "format")) {
        if (strcmp(val, "raw") && strcmp(val, "qcow2"))
            return errf(err, errlen, -EINVAL, "--disk: format must be raw or qcow2, not '%s'", val);
        d->format = val;
    } else if (!strcmp(kv, "readonly") || !strcmp(kv, "ro")) {
        if (!parse_bool(val, &d->readonly))
            return errf(err, errlen, -EINVAL, "--disk: readonly must be on or off, not '%s'", val);
    } else if (!strcmp(kv, "cache")) {
        if (!strcmp(val, "none"))
            d->cache_none = true;
        else if (!strcmp(val, "writeback"))
            d->cache_none = false;
        else
            return errf(err, errlen, -EINVAL, "--disk: cache must be none or writeback, not '%s'", val);
    } else if (!strcmp(kv, "serial")) {
        if (strlen(val) > 20)
            return errf(err, errlen, -EINVAL, "--disk: serial '%s' is longer than 20 bytes", val);
        d->serial = val;
    } else if (!strcmp(kv, "workers")) {
        uint64_t n;
        if (parse_uint(val, 1, 64, &n) < 0)
            return errf(err, errlen, -EINVAL, "--disk: workers must be a number from 1 to 64, not '%s'", val);
        d->workers = (unsigned)n;
    } else if (!strcmp(kv, "file")) {
        d->path = val;
    } else if (!strcmp(kv, "untrusted")) {
        if (!parse_bool(val, &d->untrusted))
            return errf(err, errlen, -EINVAL, "--disk: untrusted must be on or off, not '%s'", val);
    } else if (!strcmp(kv, "backing")) {
        if (!*val)
            return errf(err, errlen, -EINVAL, "--disk: backing needs a path");
        d->backing = val;
    } else if (!strcmp(kv, "backing_format")) {
        if (strcmp(val, "raw") && strcmp(val, "qcow2"))
            return errf(err, errlen, -EINVAL, "--disk: backing_format must be raw or qcow2, not '%s'", val);
        d->backing_format = val;
    } else if (!strcmp(kv, "bootindex")) {
        return parse_bootindex("disk", val, &d->bootindex, err, errlen);
    } else {
        return errf(err, errlen, -EINVAL, "--disk: unknown option '%s' (format, readonly, cache, "
                    "serial, workers, bootindex, untrusted, backing, backing_format)", kv);
    }
    return 0;
}

int config_parse_disk(const char *spec, struct kvmbox_disk *d, char *buf, size_t buflen, char *err,
                      size_t errlen)
{
    memset(d, 0, sizeof(*d));
    if (strlen(spec) + 1 > buflen)
        return errf(err, errlen, -EINVAL, "--disk: value too long");
    char *o = buf;
    const char *p = spec;
    char *path = o;
    next_field(&p, &o);
    /* "file=PATH,..." is accepted too; otherwise the first field is the path. */
    d->path = strncmp(path, "file=", 5) ? path : path + 5;
    while (*p) {
        char *kv = o;
        next_field(&p, &o);
        if (*kv && disk_option(d, kv, err, errlen) < 0)
            return -EINVAL;
    }
    if (!d->path || !*d->path)
        return errf(err, errlen, -EINVAL, "--disk: no image path in '%s'", spec);
    if ((d->backing || d->backing_format) && !d->untrusted)
        return errf(err, errlen, -EINVAL, "--disk: backing and backing_format go with untrusted=on");
    return 0;
}

int config_parse_cdrom(const char *spec, struct kvmbox_cdrom *cd, char *buf, size_t buflen,
                       char *err, size_t errlen)
{
    memset(cd, 0, sizeof(*cd));
    if (strlen(spec) + 1 > buflen)
        return errf(err, errlen, -EINVAL, "--cdrom: value too long");
    char *o = buf;
    const char *p = spec;
    cd->path = o;
    next_field(&p, &o);
    while (*p) {
        char *kv = o;
        next_field(&p, &o);
        if (!*kv)
            continue;
        if (strncmp(kv, "bootindex=", 10))
            return errf(err, errlen, -EINVAL, "--cdrom: unknown option '%s' (bootindex)", kv);
        if (parse_bootindex("cdrom", kv + 10, &cd->bootindex, err, errlen) < 0)
            return -EINVAL;
    }
    if (!*cd->path)
        return errf(err, errlen, -EINVAL, "--cdrom: no image path in '%s'", spec);
    return 0;
}

/* One class list: "cdrom,disk,net" (also QEMU's letters c d n), into OUT (END-terminated). */
static int parse_boot_list(char *list, uint8_t *out, char *err, size_t errlen)
{
    static const struct { const char *name; uint8_t dev; } names[] = {
        { "disk", KVMBOX_BOOT_DISK }, { "hd", KVMBOX_BOOT_DISK }, { "c", KVMBOX_BOOT_DISK },
        { "cdrom", KVMBOX_BOOT_CDROM }, { "d", KVMBOX_BOOT_CDROM },
        { "net", KVMBOX_BOOT_NET }, { "network", KVMBOX_BOOT_NET }, { "n", KVMBOX_BOOT_NET },
    };
    unsigned n = 0;
    memset(out, 0, KVMBOX_BOOT_MAX + 1);
    for (char *save = NULL, *w = strtok_r(list, ",:", &save); w; w = strtok_r(NULL, ",:", &save)) {
        uint8_t dev = 0;
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
            if (!strcmp(w, names[i].name))
                dev = names[i].dev;
        if (!dev)
            return errf(err, errlen, -EINVAL, "--boot: unknown device '%s' (cdrom, disk, net)", w);
        for (unsigned i = 0; i < n; i++)
            if (out[i] == dev)
                return errf(err, errlen, -EINVAL, "--boot: '%s' named twice", w);
        out[n++] = dev;
    }
    return n ? 0 : errf(err, errlen, -EINVAL, "--boot: no device named");
}

int config_parse_boot(const char *spec, struct kvmbox_config *c, char *err, size_t errlen)
{
    char buf[128];
    if (strlen(spec) >= sizeof(buf))
        return errf(err, errlen, -EINVAL, "--boot: value too long");
    snprintf(buf, sizeof(buf), "%s", spec);
    /* menu=on|off; once=LIST (its devices separated by ':' or '+'); else order=LIST or LIST */
    if (!strncmp(buf, "menu=", 5)) {
        if (!parse_bool(buf + 5, &c->boot_menu))
            return errf(err, errlen, -EINVAL, "--boot: menu must be on or off, not '%s'", buf + 5);
        return 0;
    }
    if (!strncmp(buf, "once=", 5)) {
        for (char *q = buf; *q; q++)
            if (*q == '+')
                *q = ':';
        return parse_boot_list(buf + 5, c->boot_once, err, errlen);
    }
    return parse_boot_list(buf + (strncmp(buf, "order=", 6) ? 0 : 6), c->boot_order, err, errlen);
}

int config_parse_uuid(const char *s, uint8_t out[16])
{
    static const int dash[] = { 8, 13, 18, 23 };
    if (strlen(s) != 36)
        return -EINVAL;
    for (size_t i = 0; i < ARRAY_SIZE(dash); i++)
        if (s[dash[i]] != '-')
            return -EINVAL;
    for (int i = 0, j = 0; i < 16; i++, j += 2) {
        while (s[j] == '-')
            j++;
        if (!isxdigit((unsigned char)s[j]) || !isxdigit((unsigned char)s[j + 1]))
            return -EINVAL;
        char h[3] = { s[j], s[j + 1], 0 };
        out[i] = (uint8_t)strtoul(h, NULL, 16);
    }
    return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
    unsigned v[6];
    char tail;
    if (strlen(s) != 17 ||
        sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
        return -EINVAL;
    for (int i = 0; i < 6; i++) {
        if (!isxdigit((unsigned char)s[3 * i]) || !isxdigit((unsigned char)s[3 * i + 1]))
            return -EINVAL;
        mac[i] = (uint8_t)v[i];
    }
    return mac[0] & 1 ? -EINVAL : 0; /* a multicast address cannot be a NIC's */
}

static int nic_option(struct kvmbox_nic *n, char *kv, bool first, char *err, size_t errlen)
{
    char *val = strchr(kv, '=');
    if (val)
        *val++ = '\0';
    if (first && !val) {
        if (!strcmp(kv, "user"))
            n->mode = KVMBOX_NET_USER;
        else if (!strcmp(kv, "tap"))
            n->mode = KVMBOX_NET_TAP;
        else
            return errf(err, errlen, -EINVAL, "--net: unknown mode '%s' (user, tap, bridge=BR, "
                        "segment=NAME)", kv);
        return 0;
    }
    if (!val || !*val)
        return errf(err, errlen, -EINVAL, "--net: option '%s' needs a value", kv);
    if (first && !strcmp(kv, "bridge")) {
        n->mode = KVMBOX_NET_BRIDGE, n->name = val;
    } else if (first && !strcmp(kv, "segment")) {
        n->mode = KVMBOX_NET_SEGMENT, n->name = val;
    } else if (!strcmp(kv, "ifname")) {
        n->name = val;
    } else if (!strcmp(kv, "mac")) {
        if (parse_mac(val, n->mac) < 0)
            return errf(err, errlen, -EINVAL, "--net: malformed MAC address '%s' (want six "
                        "hex bytes like 52:54:00:12:34:56, not a multicast address)", val);
        n->have_mac = true;
    } else if (!strcmp(kv, "hostfwd")) {
        if (n->nhostfwd == KVMBOX_MAX_HOSTFWD)
            return errf(err, errlen, -EINVAL, "--net: more than %d hostfwd rules", KVMBOX_MAX_HOSTFWD);
        if (strncmp(val, "tcp:", 4) && strncmp(val, "udp:", 4))
            return errf(err, errlen, -EINVAL, "--net: hostfwd '%s' must start with tcp: or udp:", val);
        n->hostfwd[n->nhostfwd++] = val;
    } else {
        return errf(err, errlen, -EINVAL, "--net: unknown option '%s' (mac, hostfwd, ifname)", kv);
    }
    return 0;
}

int config_parse_nic(const char *spec, struct kvmbox_nic *n, char *buf, size_t buflen, char *err,
                     size_t errlen)
{
    memset(n, 0, sizeof(*n));
    if (!spec)
        spec = "";
    if (strlen(spec) + 1 > buflen)
        return errf(err, errlen, -EINVAL, "--net: value too long");
    memcpy(buf, spec, strlen(spec) + 1);
    bool first = true;
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        /* A first field that is an option (mac=, hostfwd=) means user mode. */
        bool lead = first && strncmp(kv, "mac=", 4) && strncmp(kv, "hostfwd=", 8);
        if (nic_option(n, kv, lead, err, errlen) < 0)
            return -EINVAL;
        first = false;
    }
    if (n->mode == KVMBOX_NET_TAP && !n->name)
        return errf(err, errlen, -EINVAL, "--net tap needs ifname=NAME (an existing tap device)");
    if ((n->mode == KVMBOX_NET_TAP || n->mode == KVMBOX_NET_BRIDGE) && strlen(n->name) >= 16)
        return errf(err, errlen, -EINVAL, "--net: interface name '%s' is longer than 15 bytes", n->name);
    if (n->nhostfwd && n->mode != KVMBOX_NET_USER)
        return errf(err, errlen, -EINVAL, "--net: hostfwd is for user mode only");
    return 0;
}

/* --OPT on|off for a feature that is on by default: *OFF is set when it is turned off. */
static int parse_off_switch(const char *opt, const char *arg, bool *off, char *err, size_t errlen)
{
    bool on;
    if (!parse_bool(arg, &on))
        return bad_value(err, errlen, opt, arg, "expected on or off");
    *off = !on;
    return 0;
}

static int apply(int c, const char *arg, struct run_options *o, char *err, size_t errlen)
{
    uint64_t v;
    switch (c) {
    case OPT_KERNEL: o->vm.kernel = arg; return 0;
    case OPT_FIRMWARE:
        if (!*arg)
            return bad_value(err, errlen, "firmware", arg, "expected bios or a file");
        o->vm.firmware = arg;
        return 0;
    case OPT_INITRD: o->vm.initrd = arg; return 0;
    case OPT_CMDLINE: o->vm.cmdline = arg; return 0;
    case OPT_NO_REBOOT: o->vm.no_reboot = true; return 0;
    case OPT_NAME: o->vm.name = arg; return 0;
    case OPT_API_SOCK: o->vm.api_sock = arg; return 0;
    case OPT_DAEMONIZE: o->daemonize = true; return 0;
    case OPT_UUID:
        if (config_parse_uuid(arg, o->vm.uuid) < 0)
            return bad_value(err, errlen, "uuid", arg, "expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
        o->vm.have_uuid = true;
        return 0;
    case OPT_CDROM:
        if (o->vm.ncdroms == KVMBOX_MAX_CDROMS)
            return errf(err, errlen, -EINVAL, "more than %d CD-ROMs", KVMBOX_MAX_CDROMS);
        if (config_parse_cdrom(arg, &o->vm.cdroms[o->vm.ncdroms], o->cdrom_text[o->vm.ncdroms],
                               sizeof(o->cdrom_text[0]), err, errlen) < 0)
            return -EINVAL;
        o->vm.ncdroms++;
        return 0;
    case OPT_BOOT: return config_parse_boot(arg, &o->vm, err, errlen);
    case 'h': o->help = true; return 0;
    case OPT_BALLOON: return parse_off_switch("balloon", arg, &o->vm.no_balloon, err, errlen);
    case OPT_SANDBOX: return parse_off_switch("sandbox", arg, &o->vm.no_sandbox, err, errlen);
    case OPT_NET:
        if (o->vm.nnics == KVMBOX_MAX_NICS)
            return errf(err, errlen, -EINVAL, "more than %d NICs", KVMBOX_MAX_NICS);
        if (config_parse_nic(arg, &o->vm.nics[o->vm.nnics], o->nic_text[o->vm.nnics],
                             sizeof(o->nic_text[0]), err, errlen) < 0)
            return -EINVAL;
        o->vm.nnics++;
        return 0;
    case OPT_DISK:
        if (o->vm.ndisks == KVMBOX_MAX_DISKS)
            return errf(err, errlen, -EINVAL, "more than %d disks", KVMBOX_MAX_DISKS);
        if (config_parse_disk(arg, &o->vm.disks[o->vm.ndisks], o->disk_text[o->vm.ndisks],
                              DISK_SPEC_MAX, err, errlen) < 0)
            return -EINVAL;
        o->vm.ndisks++;
        return 0;
    case OPT_MEM: {
        /* SIZE[,hugepages=on|off][,overcommit=on|off] */
        char size[64];
        const char *comma = strchr(arg, ',');
        snprintf(size, sizeof(size), "%.*s", comma ? (int)(comma - arg) : (int)strlen(arg), arg);
        for (const char *p = comma; p; p = strchr(p + 1, ',')) {
            char kv[32];
            const char *end = strchr(p + 1, ',');
            snprintf(kv, sizeof(kv), "%.*s", end ? (int)(end - p - 1) : (int)strlen(p + 1), p + 1);
            bool on;
            if (!strncmp(kv, "hugepages=", 10) && parse_bool(kv + 10, &on))
                o->vm.hugepages = on;
            else if (!strncmp(kv, "overcommit=", 11) && parse_bool(kv + 11, &on))
                o->vm.mem_overcommit = on;
            else
                return bad_value(err, errlen, "mem", arg,
                                 "expected SIZE[,hugepages=on|off][,overcommit=on|off]");
        }
        arg = size;
        if (parse_size(arg, &v) < 0 || v == 0)
            return bad_value(err, errlen, "mem", arg, "expected a size like 512M or 2G");
        /* A bare number means MiB, as with qemu -m. */
        if (strspn(arg, "0123456789") == strlen(arg)) {
            if (v > (UINT64_MAX >> 20))
                return bad_value(err, errlen, "mem", arg, "too large");
            v <<= 20;
        }
        o->vm.mem_size = v;
        return 0;
    }
    case OPT_CPUS:
        if (parse_uint(arg, 1, 4096, &v) < 0)
            return bad_value(err, errlen, "cpus", arg, "expected a number from 1 to 4096");
        o->vm.cpus = (unsigned)v;
        return 0;
    case OPT_TIMEOUT:
        if (parse_uint(arg, 1, 100000000, &v) < 0)
            return bad_value(err, errlen, "timeout", arg, "expected a number of seconds >= 1");
        o->vm.timeout_secs = (unsigned)v;
        return 0;
    default:
        return -EINVAL;
    }
}

int config_parse_run(int argc, char **argv, struct run_options *o, char *err, size_t errlen)
{
    /* Not the text buffers (78 KiB): each is written when its option is parsed, and zeroing
     * them made every `kvmbox run` keep 78 KiB more of stack resident. */
    memset(o, 0, offsetof(struct run_options, disk_text));
    kvmbox_config_init(&o->vm);
    o->vm.cmdline = DEFAULT_CMDLINE;
    optind = 0; /* full reset of getopt state: the parser may run more than once */
    opterr = 0;
    for (;;) {
        int idx = 0;
        int c = getopt_long(argc, argv, ":h", run_opts, &idx);
        if (c == -1)
            break;
        if (c == '?')
            return errf(err, errlen, -EINVAL, "unknown option '%s'", argv[optind - 1]);
        if (c == ':')
            return errf(err, errlen, -EINVAL, "option '%s' needs a value", argv[optind - 1]);
        const char *arg = optarg;
        /* --net takes an optional value: "--net" alone is user mode; "--net VALUE" is
         * accepted as well as "--net=VALUE". */
        if (c == OPT_NET && !arg && optind < argc && argv[optind][0] != '-')
            arg = argv[optind++];
        int r = apply(c, arg, o, err, errlen);
        if (r < 0)
            return r;
    }
    if (optind < argc)
        return errf(err, errlen, -EINVAL, "unexpected argument '%s'", argv[optind]);
    if (o->vm.kernel && o->vm.firmware)
        return errf(err, errlen, -EINVAL, "--kernel and --firmware exclude each other (a kernel "
                    "is booted directly, without firmware)");
    if (!o->help && !o->vm.kernel && !o->vm.firmware && !o->vm.ndisks && !o->vm.ncdroms)
        return errf(err, errlen, -EINVAL, "no kernel given and nothing for firmware to boot "
                    "(--kernel PATH, --disk IMAGE or --cdrom ISO)");
    return 0;
}
