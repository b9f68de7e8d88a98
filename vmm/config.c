#include "vmm/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

bool config_parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = { "on", "yes", "true", "1" }, *const no[] = { "off", "no", "false",
                                                                                   "0" };
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
        return errf(err, errlen, -EINVAL, "--%s: bootindex must be a number from 1 to 999, not '%s'", opt,
                    val);
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
        if (!config_parse_bool(val, &d->readonly))
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
        if (!config_parse_bool(val, &d->untrusted))
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
        return errf(err, errlen, -EINVAL,
                    "--disk: unknown option '%s' (format, readonly, cache, "
                    "serial, workers, bootindex, untrusted, backing, backing_format)",
                    kv);
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

int config_parse_cdrom(const char *spec, struct kvmbox_cdrom *cd, char *buf, size_t buflen, char *err,
                       size_t errlen)
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
    static const struct {
        const char *name;
        uint8_t dev;
    } names[] = {
        { "disk", KVMBOX_BOOT_DISK },   { "hd", KVMBOX_BOOT_DISK }, { "c", KVMBOX_BOOT_DISK },
        { "cdrom", KVMBOX_BOOT_CDROM }, { "d", KVMBOX_BOOT_CDROM }, { "net", KVMBOX_BOOT_NET },
        { "network", KVMBOX_BOOT_NET }, { "n", KVMBOX_BOOT_NET },
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
        if (!config_parse_bool(buf + 5, &c->boot_menu))
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

int config_parse_mac(const char *s, uint8_t mac[6])
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
            return errf(err, errlen, -EINVAL,
                        "--net: unknown mode '%s' (user, tap, bridge=BR, "
                        "segment=NAME)",
                        kv);
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
        if (config_parse_mac(val, n->mac) < 0)
            return errf(err, errlen, -EINVAL,
                        "--net: malformed MAC address '%s' (want six "
                        "hex bytes like 52:54:00:12:34:56, not a multicast address)",
                        val);
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

char *config_strndup(struct run_options *o, const char *s, size_t n)
{
    if (n + 1 > sizeof(o->arena) - o->used)
        return NULL;
    char *p = o->arena + o->used;
    memcpy(p, s, n);
    p[n] = '\0';
    o->used += n + 1;
    return p;
}
