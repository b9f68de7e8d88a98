/* The settings table (vmm/settings.c), walked row by row: every setting, through its key and
 * each alias, parses from the command line, makes a definition holding its canonical value,
 * and that definition parses back into the same machine. A row added to the table without a
 * sample here fails `every_row_has_a_sample`; a row whose format does not parse back fails
 * `round_trip`. Then the refusals: unknown keys and options, relative paths, bad values. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check_main.h"
#include "vmm/config.h"
#include "vmm/settings.h"

/* One sample per setting: the option's value as a user types it (NULL for a flag) and the
 * canonical text (or JSON number) its definition must then hold. "@" stands for the working
 * directory, which relative paths are made absolute against. */
struct sample {
    const char *key;
    const char *value;
    const char *canonical; /* the definition's value (for a list: its one element) */
};

static const struct sample samples[] = {
    { "kernel", "k.elf", "@/k.elf" },
    { "initrd", "./sub/i.img", "@/sub/i.img" },
    { "cmdline", "console=ttyS0 quiet a,b", "console=ttyS0 quiet a,b" },
    { "mem", "65536K,overcommit=yes,hugepages=on", "64M,hugepages=on,overcommit=on" },
    { "cpus", "3", "3" },
    { "firmware", "fw.bin", "@/fw.bin" },
    { "disk",
      "d,,1.img,format=qcow2,readonly=on,cache=none,serial=S1,workers=2,bootindex=3,"
      "untrusted=on,backing=/b.raw,backing_format=raw",
      "@/d,,1.img,format=qcow2,readonly=on,cache=none,serial=S1,workers=2,bootindex=3,"
      "untrusted=on,backing=/b.raw,backing_format=raw" },
    { "cdrom", "/x.iso,bootindex=2", "/x.iso,bootindex=2" },
    { "boot", "d,c", "cdrom,disk" },
    { "net", "user,hostfwd=tcp:127.0.0.1:2222-:22,mac=52:54:00:AB:cd:01",
      "user,hostfwd=tcp:127.0.0.1:2222-:22,mac=52:54:00:ab:cd:01" },
    { "balloon", "no", "off" },
    { "sandbox", "off", "off" },
    { "no-reboot", NULL, NULL },
    { "timeout", "3600", "3600" },
    { "name", "vm-1", "vm-1" },
    { "uuid", "12345678-9ABC-def0-1234-56789abcdef0", "12345678-9abc-def0-1234-56789abcdef0" },
    { "api-sock", "s/x.sock", "@/s/x.sock" },
    { "daemonize", NULL, NULL }, /* not stored: checked to stay out of definitions */
};

static const struct sample *sample_of(const char *key)
{
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
        if (!strcmp(samples[i].key, key))
            return &samples[i];
    return NULL;
}

/* "@/x" with the working directory for "@". */
static void expand(const char *text, char *buf, size_t len)
{
    char cwd[4096];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    if (text[0] == '@')
        snprintf(buf, len, "%s%s", cwd, text + 1);
    else
        snprintf(buf, len, "%s", text);
}

/* kvmbox run --OPT [VALUE], plus a kernel when the sample does not boot anything itself. */
static int parse_one(struct run_options *o, const char *opt, const struct sample *s, char *err)
{
    char optbuf[64];
    char *argv[8];
    int argc = 0;
    argv[argc++] = "run";
    snprintf(optbuf, sizeof(optbuf), "--%s", opt);
    argv[argc++] = optbuf;
    if (s->value)
        argv[argc++] = (char *)s->value;
    bool boots = !strcmp(s->key, "kernel") || !strcmp(s->key, "firmware") || !strcmp(s->key, "disk") ||
                 !strcmp(s->key, "cdrom");
    if (!boots) {
        argv[argc++] = "--kernel";
        argv[argc++] = "/k";
    }
    argv[argc] = NULL;
    return config_parse_run(argc, argv, o, err, 512);
}

static struct json_object *def_of(const struct kvmbox_config *c)
{
    struct json_object *d = json_object_new_object();
    config_to_def(c, d);
    return d;
}

START_TEST(every_row_has_a_sample)
{
    for (size_t i = 0; i < settings_count; i++)
        ck_assert_msg(sample_of(settings[i].key), "setting %s has no sample in tests/test_config.c",
                      settings[i].key);
}
END_TEST

/* Row _i, through its key and each alias. */
START_TEST(round_trip)
{
    const struct setting *row = &settings[_i];
    const struct sample *s = sample_of(row->key);
    ck_assert_ptr_nonnull(s);
    static struct run_options o, back;
    char err[512];
    for (int a = -1; a < 3 && (a < 0 || row->aliases[a]); a++) {
        const char *opt = a < 0 ? row->key : row->aliases[a];
        ck_assert_msg(parse_one(&o, opt, s, err) == 0, "--%s: %s", opt, err);
        struct json_object *def = def_of(&o.vm), *v;
        bool stored = json_object_object_get_ex(def, row->key, &v);
        if (row->process) {
            ck_assert_msg(!stored, "--%s is stored in a definition", opt);
            json_object_put(def);
            continue;
        }
        ck_assert_msg(stored, "--%s: not in the definition %s", opt, json_object_to_json_string(def));
        char want[8192];
        if (row->kind == SETTING_FLAG) {
            ck_assert(json_object_get_boolean(v));
        } else {
            expand(s->canonical, want, sizeof(want));
            struct json_object *item = row->kind == SETTING_LIST ? json_object_array_get_idx(v, 0) : v;
            ck_assert_msg(item && !strcmp(json_object_get_string(item), want), "--%s: stored %s, want %s",
                          opt, json_object_to_json_string(v), want);
            if (row->kind == SETTING_NUMBER)
                ck_assert(json_object_is_type(item, json_type_int));
        }
        /* The definition parses into the same machine, which makes the same definition. */
        ck_assert_msg(config_from_def(def, &back, err, sizeof(err)) == 0, "--%s: %s: %s", opt,
                      json_object_to_json_string(def), err);
        struct json_object *again = def_of(&back.vm);
        ck_assert_msg(json_object_equal(def, again), "--%s: %s became %s", opt,
                      json_object_to_json_string(def), json_object_to_json_string(again));
        /* And info's view has the value too, with every other setting at its default. */
        struct json_object *info = json_object_new_object(), *iv;
        config_to_json(&back.vm, info);
        ck_assert(json_object_object_get_ex(info, row->key, &iv) && json_object_equal(iv, v));
        for (size_t k = 0; k < settings_count; k++) {
            const struct setting *other = &settings[k];
            if (other->process)
                continue;
            ck_assert_msg(json_object_object_get_ex(info, other->key, &iv), "info lacks %s", other->key);
        }
        json_object_put(info), json_object_put(again), json_object_put(def);
    }
}
END_TEST

/* A definition from text; O gets the result. */
static int from_text(const char *text, struct run_options *o, char *err)
{
    struct json_object *d = json_tokener_parse(text);
    ck_assert_ptr_nonnull(d);
    int r = config_from_def(d, o, err, 512);
    json_object_put(d);
    return r;
}

START_TEST(definitions_refused)
{
    static struct run_options o;
    char err[512];
    static const struct {
        const char *def, *says;
    } bad[] = {
        { "{\"kernel\": \"/k\", \"memz\": \"1G\"}", "unknown key \"memz\"" },
        { "{\"kernel\": \"/k\", \"memory\": \"1G\"}",
          "unknown key \"memory\"" }, /* an alias is an option name */
        { "{\"kernel\": \"/k\", \"daemonize\": true}", "\"daemonize\" is not part" },
        { "{\"kernel\": \"k\"}", "\"kernel\": relative path 'k'" },
        { "{\"kernel\": \"/k\", \"disk\": [\"d.img\"]}", "\"disk\": relative path 'd.img'" },
        { "{\"kernel\": \"/k\", \"disk\": [\"/d.img,untrusted=on,backing=b\"]}", "relative path 'b'" },
        { "{\"kernel\": \"/k\", \"cdrom\": [\"x.iso\"]}", "relative path 'x.iso'" },
        { "{\"kernel\": \"/k\", \"api-sock\": \"x.sock\"}", "relative path 'x.sock'" },
        { "{\"kernel\": \"/k\", \"cpus\": 0}", "\"cpus\": invalid value '0'" },
        { "{\"kernel\": \"/k\", \"cpus\": \"many\"}", "\"cpus\": invalid value 'many'" },
        { "{\"kernel\": \"/k\", \"mem\": 64}", "\"mem\": expected a string" },
        { "{\"kernel\": \"/k\", \"cpus\": [2]}", "\"cpus\": expected a number" },
        { "{\"kernel\": [\"/k\"]}", "\"kernel\": expected a string" },
        { "{\"kernel\": \"/k\", \"mem\": \"lots\"}", "\"mem\": invalid value 'lots'" },
        { "{\"kernel\": \"/k\", \"no-reboot\": \"yes\"}", "\"no-reboot\": expected true or false" },
        { "{\"kernel\": \"/k\", \"disk\": [7]}", "\"disk\": expected a list of strings" },
        { "{\"kernel\": \"/k\", \"disk\": [\"/d,format=vmdk\"]}", "\"disk\": --disk: format must be" },
        { "{\"kernel\": \"/k\", \"net\": [\"wifi\"]}", "\"net\": --net: unknown mode 'wifi'" },
        { "{\"kernel\": \"/k\", \"uuid\": \"x\"}", "\"uuid\": invalid value 'x'" },
        { "{\"kernel\": \"/k\", \"firmware\": \"bios\"}", "exclude each other" },
        { "{\"name\": \"n\"}", "nothing for firmware to boot" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(from_text(bad[i].def, &o, err) == -EINVAL, "%s was accepted", bad[i].def);
        ck_assert_msg(strstr(err, bad[i].says) && !strchr(err, '\n'), "%s: said '%s', not '%s'", bad[i].def,
                      err, bad[i].says);
    }
    /* The same values are fine where they are absolute, known and good. */
    ck_assert_int_eq(
        from_text("{\"kernel\": \"/k\", \"disk\": \"/d.img\", \"cpus\": \"2\", \"no-reboot\": false}", &o,
                  err),
        0);
    ck_assert_uint_eq(o.vm.ndisks, 1); /* a single string is a one-item list */
    ck_assert_uint_eq(o.vm.cpus, 2);
    ck_assert(!o.vm.no_reboot);
}
END_TEST

START_TEST(options_refused)
{
    static struct run_options o;
    char err[512];
    char *a1[] = { "run", "--kernel", "/k", "--memz", "1G", NULL };
    ck_assert_int_eq(config_parse_run(5, a1, &o, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--memz"));
    /* The issue's replay bug: an option after a disk is an option, never the disk's value. */
    char *a2[] = { "run", "--kernel", "/k", "--net", "--disk", "/x.img", "--no-reboot", NULL };
    ck_assert_int_eq(config_parse_run(7, a2, &o, err, sizeof(err)), 0);
    struct json_object *def = def_of(&o.vm), *v;
    ck_assert(json_object_object_get_ex(def, "disk", &v) && json_object_array_length(v) == 1);
    ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(v, 0)), "/x.img");
    ck_assert(json_object_object_get_ex(def, "no-reboot", &v) && json_object_get_boolean(v));
    ck_assert(json_object_object_get_ex(def, "net", &v) &&
              !strcmp(json_object_get_string(json_object_array_get_idx(v, 0)), "user"));
    json_object_put(def);
}
END_TEST

/* Defaults are not stored (a definition says what differs), and info shows them. */
START_TEST(defaults)
{
    static struct run_options o;
    char err[512];
    char *a[] = { "run", "--kernel",  "/k", "--mem",     "256M",          "--cpus",
                  "1",   "--balloon", "on", "--cmdline", DEFAULT_CMDLINE, NULL };
    ck_assert_int_eq(config_parse_run(11, a, &o, err, sizeof(err)), 0);
    struct json_object *def = def_of(&o.vm), *info = json_object_new_object(), *v;
    ck_assert_int_eq(json_object_object_length(def), 1); /* the kernel */
    config_to_json(&o.vm, info);
    for (size_t i = 0; i < settings_count; i++) {
        const struct setting *s = &settings[i];
        if (s->process || !s->dflt)
            continue;
        ck_assert(json_object_object_get_ex(info, s->key, &v));
        char text[64];
        snprintf(text, sizeof(text), "%s", json_object_get_string(v));
        ck_assert_msg(!strcmp(text, s->dflt), "%s: info shows %s, default %s", s->key, text, s->dflt);
    }
    /* A size that is no whole number of KiB is kept in bytes, and parses back as bytes. */
    char *b[] = { "run", "--kernel", "/k", "--mem", "1000B", NULL };
    ck_assert_int_eq(config_parse_run(5, b, &o, err, sizeof(err)), 0);
    json_object_put(def);
    def = def_of(&o.vm);
    ck_assert(json_object_object_get_ex(def, "mem", &v));
    ck_assert_str_eq(json_object_get_string(v), "1000B");
    json_object_put(def), json_object_put(info);
}
END_TEST

START_TEST(usage_names_every_option)
{
    char buf[16384];
    size_t n = config_usage(buf, sizeof(buf));
    ck_assert_uint_lt(n, sizeof(buf));
    for (size_t i = 0; i < settings_count; i++) {
        char opt[64];
        snprintf(opt, sizeof(opt), "--%s", settings[i].key);
        ck_assert_msg(strstr(buf, opt), "--help lacks %s", opt);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("settings table");
    tcase_add_test(tc, every_row_has_a_sample);
    tcase_add_loop_test(tc, round_trip, 0, (int)settings_count);
    tcase_add_test(tc, definitions_refused);
    tcase_add_test(tc, options_refused);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, usage_names_every_option);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
