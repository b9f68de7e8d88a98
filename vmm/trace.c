#include "vmm/trace.h"

#include <stdlib.h>

#include "common/util.h"

static struct {
    const char *what;
    uint64_t ns;
} marks[TRACE_MAX];
static unsigned nmarks;
static int enabled = -1; /* -1: not read yet */

bool trace_enabled(void)
{
    int e = __atomic_load_n(&enabled, __ATOMIC_RELAXED);
    if (e < 0) {
        /* The first call is the command line's, before any thread exists. */
        e = getenv("KVMBOX_TRACE") != NULL;
        __atomic_store_n(&enabled, e, __ATOMIC_RELAXED);
    }
    return e;
}

void trace_mark(const char *what)
{
    if (!trace_enabled())
        return;
    uint64_t now = monotonic_ns();
    unsigned i = __atomic_fetch_add(&nmarks, 1, __ATOMIC_RELAXED);
    if (i >= TRACE_MAX)
        return;
    marks[i].ns = now;
    /* Release: a reader that sees WHAT set sees NS too. */
    __atomic_store_n(&marks[i].what, what, __ATOMIC_RELEASE);
}

void trace_mark_once(const char *what)
{
    if (!trace_enabled())
        return;
    unsigned n = __atomic_load_n(&nmarks, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < n && i < TRACE_MAX; i++)
        if (__atomic_load_n(&marks[i].what, __ATOMIC_ACQUIRE) == what)
            return;
    trace_mark(what);
}

unsigned trace_get(const char **what, uint64_t *ns, unsigned max)
{
    unsigned n = __atomic_load_n(&nmarks, __ATOMIC_RELAXED), out = 0;
    for (unsigned i = 0; i < n && i < TRACE_MAX && out < max; i++) {
        const char *w = __atomic_load_n(&marks[i].what, __ATOMIC_ACQUIRE);
        if (!w)
            continue; /* still being written by another thread */
        what[out] = w, ns[out] = marks[i].ns, out++;
    }
    return out;
}
