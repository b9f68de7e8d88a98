/* Command-line options of `kvmbox run` into a plain configuration: no side effects, so the
 * parser is unit-tested on its own. */
#ifndef KVMBOX_CONFIG_H
#define KVMBOX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "include/kvmbox.h"

#define DEFAULT_CMDLINE "console=ttyS0"

struct run_options {
    struct kvmbox_config vm;
    bool help;
    bool daemonize;
};

/* Parses ARGV (argv[0] is the subcommand name). Returns 0, or -EINVAL with ERR naming the
 * bad option. Strings in OPTS point into ARGV. */
int config_parse_run(int argc, char **argv, struct run_options *opts, char *err, size_t errlen)
    __attribute__((warn_unused_result));
extern const char config_run_usage[];

#endif
