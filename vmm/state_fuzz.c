/* libFuzzer target for the saved-state parser (vmm/state.c): the input is a state file. It is
 * parsed, then every section and field is looked up and read as a loader would - a hostile
 * file must never turn into a crash or a sanitizer report. Built and run by `make
 * fuzz-state` (clang -fsanitize=fuzzer,address,undefined). With STATE_FUZZ_SEED=FILE set,
 * the target first writes a valid seed file there. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/state.h"

static void write_seed(const char *path)
{
    struct st_writer w;
    st_writer_init(&w);
    st_begin(&w, "vm", 0, 1);
    st_put_str(&w, "name", "seed");
    st_put_u64(&w, "mem", 1 << 20);
    st_end(&w);
    st_begin(&w, "serial", 0, 1);
    st_put_u8(&w, "lcr", 3);
    st_put_u32(&w, "div", 1);
    st_end(&w);
    uint64_t off;
    FILE *f = fopen(path, "wb");
    if (st_finish(&w, 4096, &off) == 0 && f)
        fwrite(w.buf, 1, w.len, f);
    if (f)
        fclose(f);
    st_writer_free(&w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seed = getenv("STATE_FUZZ_SEED");
    if (seed)
        write_seed(seed);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct st_file f;
    char err[256];
    if (st_parse(data, size, &f, err, sizeof(err)) < 0)
        return 0;
    static const char *const fields[] = { "name", "mem", "lcr", "div", "x" };
    for (unsigned i = 0; i < f.nsections; i++) {
        struct st_section *s = st_find(&f, f.sections[i].name, f.sections[i].instance);
        for (unsigned j = 0; s && j < sizeof(fields) / sizeof(fields[0]); j++) {
            uint64_t v;
            uint8_t buf[8];
            uint32_t len;
            (void)st_get_uint(s, fields[j], &v);
            (void)st_get(s, fields[j], buf, sizeof(buf));
            (void)st_field(s, fields[j], &len);
        }
    }
    (void)st_unused(&f);
    st_free(&f);
    return 0;
}
