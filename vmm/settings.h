/* The one configuration model: every setting of a machine is one row of settings[], and
 * everything that shows a configuration is generated from that table:
 *
 *   kvmbox run --OPTION VALUE ...  --(config_parse_run)-->  struct kvmbox_config
 *   definition {"KEY": VALUE, ...} --(config_from_def)-->   struct kvmbox_config
 *   struct kvmbox_config --(config_to_def)-->  a definition (define, dumpconfig, clone, start)
 *   struct kvmbox_config --(config_to_json)--> info --json's "config" (every setting)
 *
 * (the rows: vmm/settings.c; the generated shapes: vmm/config_shapes.c)
 * A row parses a value's text into the config and formats the config back into the same
 * canonical text, so a definition written from a config parses into the same config
 * (tests/test_config.c and tests/t-config.sh walk the table to prove it for every row). */
#ifndef KVMBOX_SETTINGS_H
#define KVMBOX_SETTINGS_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "vmm/config.h"

enum setting_kind {
    SETTING_TEXT,   /* one value; a JSON string in definitions */
    SETTING_NUMBER, /* one value; a JSON number */
    SETTING_FLAG,   /* no value; true in a definition when given */
    SETTING_LIST,   /* repeatable; a JSON array of strings, in the order given */
};

#define SETTINGS_MAX      32    /* rows the table may have (getopt's table is sized by it) */
#define SETTING_VALUE_MAX 10000 /* the longest canonical text of one value (a disk with backing) */

struct setting {
    const char *key;        /* definition key, option --KEY, and info's config key */
    const char *aliases[3]; /* other option names (NULL-ended): --memory, --smp, ... */
    const char *arg;        /* the value's syntax and unit, for --help; NULL for a flag */
    const char *help;       /* lines of --help (after the option line), '\n'-separated */
    enum setting_kind kind;
    bool optional_value; /* --net alone is a value too ("user") */
    bool process;        /* how this kvmbox process runs (--daemonize): never stored */
    bool live;           /* can change on a running VM (none can yet) */
    bool computed;       /* when not given, the value depends on other settings (the
                                * name, UUID and socket are made up; firmware follows kernel) */
    const char *dflt;    /* canonical text of the default; NULL: none */
    /* VAL (NULL for a flag) into O. 0, or -EINVAL with ERR naming the setting. */
    int (*parse)(struct run_options *o, const char *val, char *err, size_t errlen);
    /* How many values C has for the setting: 0 when it is at its default. */
    unsigned (*count)(const struct kvmbox_config *c);
    /* The canonical text of value I (not for flags). */
    void (*format)(const struct kvmbox_config *c, unsigned i, char *buf, size_t len);
    /* The files value I names and needs (up to 2: a disk and its backing file); the count. */
    unsigned (*files)(const struct kvmbox_config *c, unsigned i, const char *out[2]);
};

extern const struct setting settings[];
extern const size_t settings_count;

/* The row whose key (or, with ALIASES, one of whose option names) is NAME; NULL if none. */
const struct setting *setting_find(const char *name, bool aliases);

/* Sets O to the defaults `kvmbox run` starts from (kvmbox_config_init, the default command
 * line, an empty arena). */
void config_options_init(struct run_options *o);
/* Checks what no single setting can: something to boot, --kernel without --firmware. */
int config_check(const struct run_options *o, char *err, size_t errlen) __attribute__((warn_unused_result));
/* A definition (a JSON object of KEY: value) into O: unknown keys, process settings, values
 * of the wrong JSON type or that their row refuses, and relative paths are each refused with
 * one line naming the key. Returns 0 or -EINVAL. */
int config_from_def(struct json_object *def, struct run_options *o, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* Adds to OBJ the machine settings C has that are not at their default: a definition. */
void config_to_def(const struct kvmbox_config *c, struct json_object *obj);
/* Adds to OBJ every machine setting of C, defaults included (null for none): the
 * configuration `info --json` shows. */
void config_to_json(const struct kvmbox_config *c, struct json_object *obj);
/* Every file C names (kernel, initrd, firmware image, disks and backing files, CD-ROMs) is
 * there and readable: 0, or -ENOENT (or the access error) with ERR naming the setting. */
int config_check_files(const struct kvmbox_config *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* The table itself as JSON (`kvmbox settings --json`): key, aliases, kind, arg, default,
 * stored, live, computed. */
struct json_object *config_settings_json(void);
/* `kvmbox run --help`, generated from the table, into BUF. Returns the length it needs. */
size_t config_usage(char *buf, size_t len);

#endif
