/* PASS:/FAIL: lines, the SUMMARY line, and the exit through QEMU's isa-debug-exit port. */
#include "gt.h"

#define DEBUG_EXIT_PORT 0xf4

static unsigned npass, nfail;

static void line(const char *tag, const char *fmt, va_list ap)
{
    char buf[400];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    printf("%s: %s\n", tag, buf);
}

void pass(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line("PASS", fmt, ap);
    va_end(ap);
    npass++;
}

void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line("FAIL", fmt, ap);
    va_end(ap);
    nfail++;
}

void debug_exit(uint32_t code)
{
    outl(DEBUG_EXIT_PORT, code);
    for (;;) { /* the VMM has gone; if not, stop here */
        cli();
        hlt();
    }
}

void finish(void)
{
    printf("SUMMARY: pass=%u fail=%u\n", npass, nfail);
    debug_exit(nfail || !npass ? 1 : 0);
}
