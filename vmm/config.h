/* Command-line options of `kvmbox run` into a plain configuration: no side effects, so the
 * parser is unit-tested on its own. */
#ifndef KVMBOX_CONFIG_H
#define KVMBOX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "include/kvmbox.h"

#define DEFAULT_CMDLINE "console=ttyS0"

#define DISK_SPEC_MAX 4352

struct run_options {
    struct kvmbox_config vm;
    bool help;
    bool daemonize;
    char disk_text[KVMBOX_MAX_DISKS][DISK_SPEC_MAX]; /* --disk values, split in place */
    char nic_text[KVMBOX_MAX_NICS][1024];             /* --net values, split in place */
    char cdrom_text[KVMBOX_MAX_CDROMS][DISK_SPEC_MAX]; /* --cdrom values */
};

/* Parses one --net value: [user][,hostfwd=...]... | tap,ifname=NAME | bridge=BR |
 * segment=NAME, each with [,mac=XX:XX:XX:XX:XX:XX]. Empty means user. The strings N gets
 * point into BUF. Returns 0 or -EINVAL with ERR naming the problem. */
int config_parse_nic(const char *spec, struct kvmbox_nic *n, char *buf, size_t buflen,
                     char *err, size_t errlen) __attribute__((warn_unused_result));

/* Parses one --disk value: PATH[,format=raw|qcow2][,readonly=on|off][,cache=none|writeback]
 * [,serial=STR] (",," is a comma inside the path, as with QEMU). The strings D gets point
 * into BUF. Returns 0 or -EINVAL with ERR naming the problem. */
int config_parse_disk(const char *spec, struct kvmbox_disk *d, char *buf, size_t buflen,
                      char *err, size_t errlen) __attribute__((warn_unused_result));

/* Parses one --cdrom value: PATH[,bootindex=N]. Strings point into BUF. 0 or -EINVAL. */
int config_parse_cdrom(const char *spec, struct kvmbox_cdrom *cd, char *buf, size_t buflen,
                       char *err, size_t errlen) __attribute__((warn_unused_result));
/* Parses one --boot value into C->boot_order, C->boot_once or C->boot_menu: [order=]LIST,
 * once=LIST or menu=on|off, LIST being cdrom, disk, net (or c, d, n) separated by ',' (once=
 * takes ':' or '+'). */
int config_parse_boot(const char *spec, struct kvmbox_config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Parses a UUID "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into 16 bytes. 0 or -EINVAL. */
int config_parse_uuid(const char *s, uint8_t out[16]) __attribute__((warn_unused_result));

/* Parses ARGV (argv[0] is the subcommand name). Returns 0, or -EINVAL with ERR naming the
 * bad option. Strings in OPTS point into ARGV or into OPTS itself. */
int config_parse_run(int argc, char **argv, struct run_options *opts, char *err, size_t errlen)
    __attribute__((warn_unused_result));
extern const char config_run_usage[];

#endif
