/* A tight loop of loops=N iterations, then exit: tells a host that runs guest code natively
 * (milliseconds) from one that emulates it (seconds). */
#include "gt.h"

void test_main(void)
{
    uint32_t n = (uint32_t)arg_u64("loops", 10000000);
    for (volatile uint32_t i = 0; i < n; i++)
        ;
    printf("KVMBOX-MARKER\n");
    debug_exit(0);
}
