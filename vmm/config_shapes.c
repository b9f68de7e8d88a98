/* The shapes a configuration takes, all generated from the settings table (vmm/settings.c):
 * the `run` option parser and its --help, definitions both ways, info's configuration, the
 * files a configuration needs, and the table as JSON. */
#include "vmm/settings.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

/* ---- the option parser ------------------------------------------------------------------ */

void config_options_init(struct run_options *o)
{
    /* Not the arena (192 KiB): each string is written when it is made, and zeroing it made
     * every `kvmbox run` keep that much more stack resident. */
    memset(o, 0, offsetof(struct run_options, arena));
    kvmbox_config_init(&o->vm);
    o->vm.cmdline = DEFAULT_CMDLINE;
}

int config_check(const struct run_options *o, char *err, size_t errlen)
{
    if (o->vm.kernel && o->vm.firmware)
        return errf(err, errlen, -EINVAL,
                    "--kernel and --firmware exclude each other (a kernel "
                    "is booted directly, without firmware)");
    if (!o->help && !o->vm.kernel && !o->vm.firmware && !o->vm.ndisks && !o->vm.ncdroms)
        return errf(err, errlen, -EINVAL,
                    "no kernel given and nothing for firmware to boot "
                    "(--kernel PATH, --disk IMAGE or --cdrom ISO)");
    return 0;
}

/* getopt_long's table, generated: every key and alias; val = 256 + the row's index. */
static size_t make_long_options(struct option *opts)
{
    size_t n = 0;
    for (size_t i = 0; i < settings_count; i++) {
        const struct setting *s = &settings[i];
        int has = s->kind == SETTING_FLAG ? no_argument
                  : s->optional_value     ? optional_argument
                                          : required_argument;
        opts[n++] = (struct option){ s->key, has, NULL, 256 + (int)i };
        for (size_t a = 0; a < ARRAY_SIZE(s->aliases) && s->aliases[a]; a++)
            opts[n++] = (struct option){ s->aliases[a], has, NULL, 256 + (int)i };
    }
    opts[n++] = (struct option){ "help", no_argument, NULL, 'h' };
    opts[n] = (struct option){ NULL, 0, NULL, 0 };
    return n;
}

int config_parse_run(int argc, char **argv, struct run_options *o, char *err, size_t errlen)
{
    /* each key, up to 3 aliases, --help and the end */
    struct option opts[SETTINGS_MAX * (1 + ARRAY_SIZE(settings[0].aliases)) + 2];
    make_long_options(opts);
    config_options_init(o);
    optind = 0; /* full reset of getopt state: the parser may run more than once */
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, ":h", opts, NULL);
        if (c == -1)
            break;
        if (c == '?')
            return errf(err, errlen, -EINVAL, "unknown option '%s'", argv[optind - 1]);
        if (c == ':')
            return errf(err, errlen, -EINVAL, "option '%s' needs a value", argv[optind - 1]);
        if (c == 'h') {
            o->help = true;
            continue;
        }
        const struct setting *s = &settings[c - 256];
        const char *arg = optarg;
        /* An optional value (--net) may be the next word, not only --net=VALUE. */
        if (s->optional_value && !arg && optind < argc && argv[optind][0] != '-')
            arg = argv[optind++];
        int r = s->parse(o, arg, err, errlen);
        if (r < 0)
            return r;
    }
    if (optind < argc)
        return errf(err, errlen, -EINVAL, "unexpected argument '%s'", argv[optind]);
    return config_check(o, err, errlen);
}

size_t config_usage(char *buf, size_t len)
{
    size_t n = 0;
#define OUT(...) (n += (size_t)snprintf(buf + (n < len ? n : len), n < len ? len - n : 0, __VA_ARGS__))
    OUT("usage: kvmbox run --kernel PATH | --disk IMAGE | --cdrom ISO [options]\n");
    for (size_t i = 0; i < settings_count; i++) {
        const struct setting *s = &settings[i];
        OUT("  --%s", s->key);
        for (size_t a = 0; a < ARRAY_SIZE(s->aliases) && s->aliases[a]; a++)
            OUT(", --%s", s->aliases[a]);
        for (const char *p = s->arg; p && *p;) {
            size_t l = strcspn(p, "\n");
            OUT("%s%.*s\n", p == s->arg ? " " : "        ", (int)l, p);
            p += l + (p[l] == '\n');
        }
        if (!s->arg)
            OUT("\n");
        for (const char *p = s->help; p && *p;) {
            size_t l = strcspn(p, "\n");
            OUT("        %.*s\n", (int)l, p);
            p += l + (p[l] == '\n');
        }
        if (s->dflt)
            OUT("        (default: %s)\n", *s->dflt ? s->dflt : "\"\"");
    }
    OUT("  -h, --help\n        this text\n");
#undef OUT
    return n;
}

/* ---- definitions and info ---------------------------------------------------------------- */

/* One JSON value of a definition as the text its row parses. */
static int def_value_text(const struct setting *s, struct json_object *v, char *buf, size_t len, char *err,
                          size_t errlen)
{
    if (s->kind == SETTING_NUMBER && json_object_is_type(v, json_type_int)) {
        snprintf(buf, len, "%lld", (long long)json_object_get_int64(v));
        return 0;
    }
    if (!json_object_is_type(v, json_type_string))
        return errf(err, errlen, -EINVAL, "\"%s\": expected %s", s->key,
                    s->kind == SETTING_NUMBER ? "a number"
                    : s->kind == SETTING_LIST ? "a list of strings"
                                              : "a string");
    snprintf(buf, len, "%s", json_object_get_string(v));
    return 0;
}

static int def_one(const struct setting *s, struct json_object *v, struct run_options *o, char *err,
                   size_t errlen)
{
    if (s->kind == SETTING_FLAG) {
        if (!json_object_is_type(v, json_type_boolean))
            return errf(err, errlen, -EINVAL, "\"%s\": expected true or false", s->key);
        return json_object_get_boolean(v) ? s->parse(o, NULL, err, errlen) : 0;
    }
    char *text = malloc(SETTING_VALUE_MAX), why[512];
    if (!text)
        return errf(err, errlen, -ENOMEM, "out of memory");
    int r = 0;
    bool list = s->kind == SETTING_LIST && json_object_is_type(v, json_type_array);
    size_t n = list ? json_object_array_length(v) : 1;
    for (size_t i = 0; i < n && r == 0; i++) {
        struct json_object *item = list ? json_object_array_get_idx(v, i) : v;
        r = def_value_text(s, item, text, SETTING_VALUE_MAX, err, errlen);
        /* The row names its option (--mem); say which key of the definition it was. */
        if (r == 0 && (r = s->parse(o, text, why, sizeof(why))) < 0)
            errf(err, errlen, r, why[0] == '"' ? "%.0s%s" : "\"%s\": %s", s->key, why);
    }
    free(text);
    return r < 0 ? -EINVAL : 0;
}

int config_from_def(struct json_object *def, struct run_options *o, char *err, size_t errlen)
{
    config_options_init(o);
    o->definition = true;
    if (!json_object_is_type(def, json_type_object))
        return errf(err, errlen, -EINVAL, "a definition is a JSON object");
    json_object_object_foreach(def, key, val)
    {
        const struct setting *s = setting_find(key, false);
        if (!s)
            return errf(err, errlen, -EINVAL, "unknown key \"%.64s\" (`kvmbox settings` lists them)", key);
        if (s->process)
            return errf(err, errlen, -EINVAL,
                        "\"%s\" is not part of a definition (it says how "
                        "one `kvmbox run` runs)",
                        key);
        if (def_one(s, val, o, err, errlen) < 0)
            return -EINVAL;
    }
    return config_check(o, err, errlen);
}

static struct json_object *value_json(const struct setting *s, const char *text)
{
    if (s->kind == SETTING_NUMBER)
        return json_object_new_int64(strtoll(text, NULL, 10));
    return json_object_new_string(text);
}

/* Adds S's values in C to OBJ; with ALL, its default (or null) when it has none. */
static void add_setting(const struct setting *s, const struct kvmbox_config *c, bool all,
                        struct json_object *obj)
{
    unsigned n = s->count(c);
    if (!n && !all)
        return;
    char *text = malloc(SETTING_VALUE_MAX); /* not on the API thread's small stack */
    if (!text)
        return;
    if (s->kind == SETTING_FLAG) {
        json_object_object_add(obj, s->key, json_object_new_boolean(n > 0));
    } else if (s->kind == SETTING_LIST) {
        struct json_object *arr = json_object_new_array();
        for (unsigned i = 0; i < n; i++) {
            s->format(c, i, text, SETTING_VALUE_MAX);
            json_object_array_add(arr, json_object_new_string(text));
        }
        json_object_object_add(obj, s->key, arr);
    } else if (n) {
        s->format(c, 0, text, SETTING_VALUE_MAX);
        json_object_object_add(obj, s->key, value_json(s, text));
    } else {
        json_object_object_add(obj, s->key, s->dflt ? value_json(s, s->dflt) : NULL);
    }
    free(text);
}

void config_to_def(const struct kvmbox_config *c, struct json_object *obj)
{
    for (size_t i = 0; i < settings_count; i++)
        if (!settings[i].process)
            add_setting(&settings[i], c, false, obj);
}

void config_to_json(const struct kvmbox_config *c, struct json_object *obj)
{
    for (size_t i = 0; i < settings_count; i++)
        if (!settings[i].process)
            add_setting(&settings[i], c, true, obj);
}

int config_check_files(const struct kvmbox_config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < settings_count; i++) {
        const struct setting *s = &settings[i];
        for (unsigned k = 0, n = s->files ? s->count(c) : 0; k < n; k++) {
            const char *f[2] = { NULL, NULL };
            for (unsigned j = 0, m = s->files(c, k, f); j < m; j++) {
                struct stat st;
                if (stat(f[j], &st) < 0 || access(f[j], R_OK) < 0)
                    return errf(err, errlen, -errno, "\"%s\": %s: %s", s->key, f[j], strerror(errno));
                if (S_ISDIR(st.st_mode))
                    return errf(err, errlen, -EISDIR, "\"%s\": %s is a directory", s->key, f[j]);
            }
        }
    }
    return 0;
}

struct json_object *config_settings_json(void)
{
    static const char *const kinds[] = { "text", "number", "flag", "list" };
    struct json_object *arr = json_object_new_array();
    for (size_t i = 0; i < settings_count; i++) {
        const struct setting *s = &settings[i];
        struct json_object *o = json_object_new_object(), *al = json_object_new_array();
        json_object_object_add(o, "key", json_object_new_string(s->key));
        for (size_t a = 0; a < ARRAY_SIZE(s->aliases) && s->aliases[a]; a++)
            json_object_array_add(al, json_object_new_string(s->aliases[a]));
        json_object_object_add(o, "aliases", al);
        json_object_object_add(o, "kind", json_object_new_string(kinds[s->kind]));
        json_object_object_add(o, "arg", s->arg ? json_object_new_string(s->arg) : NULL);
        json_object_object_add(o, "default", s->dflt ? value_json(s, s->dflt) : NULL);
        json_object_object_add(o, "stored", json_object_new_boolean(!s->process));
        json_object_object_add(o, "live", json_object_new_boolean(s->live));
        json_object_object_add(o, "computed", json_object_new_boolean(s->computed));
        json_object_array_add(arr, o);
    }
    return arr;
}
