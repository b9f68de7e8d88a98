/* The debug-exit port: writing V ends the VM with status (V << 1) | 1. The runner passes
 * code=V and expects that status; the boot protocol used is reported. */
#include "gt.h"

void test_main(void)
{
    uint32_t code = (uint32_t)arg_u64("code", 21);
    pass("booted through %s with command line '%s'", boot.protocol, boot.cmdline);
    printf("SUMMARY: pass=1 fail=0\n");
    debug_exit(code);
}
