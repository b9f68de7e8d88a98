/* The values of `kvmbox run`'s settings (a disk, a NIC, a boot order...) into the library's
 * plain configuration: no side effects, so the parsers are unit-tested on their own. Which
 * settings exist, their option names and definition keys: vmm/settings.h. */
#ifndef KVMBOX_CONFIG_H
#define KVMBOX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/kvmbox.h"

#define DEFAULT_CMDLINE "console=ttyS0"

#define DISK_SPEC_MAX 4352
#define CONFIG_ARENA  (192 * 1024)

/* The settings of `kvmbox run` (and of a definition) parsed into the library's config. The
 * strings the config points at live in ARENA, so an options struct is self-contained. */
struct run_options {
    struct kvmbox_config vm;
    bool help;
    bool daemonize;           /* how this process runs, not part of the machine */
    bool definition;          /* parsing a stored definition: relative paths are refused */
    size_t used;              /* bytes of ARENA in use */
    char arena[CONFIG_ARENA]; /* not zeroed: each string is written when it is made */
};

/* A copy of S (N bytes and a NUL) in O's arena; NULL when the arena is full. */
char *config_strndup(struct run_options *o, const char *s, size_t n);

/* Parses one --net value: [user][,hostfwd=...]... | tap,ifname=NAME | bridge=BR |
 * segment=NAME, each with [,mac=XX:XX:XX:XX:XX:XX]. Empty means user. The strings N gets
 * point into BUF. Returns 0 or -EINVAL with ERR naming the problem. */
int config_parse_nic(const char *spec, struct kvmbox_nic *n, char *buf, size_t buflen, char *err,
                     size_t errlen) __attribute__((warn_unused_result));

/* Parses one --disk value: PATH[,format=raw|qcow2][,readonly=on|off][,cache=none|writeback]
 * [,serial=STR] (",," is a comma inside the path, as with QEMU). The strings D gets point
 * into BUF. Returns 0 or -EINVAL with ERR naming the problem. */
int config_parse_disk(const char *spec, struct kvmbox_disk *d, char *buf, size_t buflen, char *err,
                      size_t errlen) __attribute__((warn_unused_result));

/* Parses one --cdrom value: PATH[,bootindex=N]. Strings point into BUF. 0 or -EINVAL. */
int config_parse_cdrom(const char *spec, struct kvmbox_cdrom *cd, char *buf, size_t buflen, char *err,
                       size_t errlen) __attribute__((warn_unused_result));
/* Parses one --boot value into C->boot_order, C->boot_once or C->boot_menu: [order=]LIST,
 * once=LIST or menu=on|off, LIST being cdrom, disk, net (or c, d, n) separated by ',' (once=
 * takes ':' or '+'). */
int config_parse_boot(const char *spec, struct kvmbox_config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Parses a UUID "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into 16 bytes. 0 or -EINVAL. */
int config_parse_uuid(const char *s, uint8_t out[16]) __attribute__((warn_unused_result));

/* Parses ARGV (argv[0] is the subcommand name) with the options generated from the settings
 * table (vmm/settings.c). Returns 0, or -EINVAL with ERR naming the bad option. Relative
 * paths are made absolute against the working directory. */
int config_parse_run(int argc, char **argv, struct run_options *opts, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Shared value parsers the settings table uses. */
bool config_parse_bool(const char *v, bool *out);
int config_parse_mac(const char *s, uint8_t mac[6]);

#endif
