/* For the PIO benchmark: count=N writes to port 0x80 (a port the VMM handles), then the
 * marker and exit. */
#include "gt.h"

void test_main(void)
{
    uint32_t n = (uint32_t)arg_u64("count", 100000);
    for (uint32_t i = 0; i < n; i++)
        outb(0x80, (uint8_t)i);
    printf("KVMBOX-MARKER\n");
    debug_exit(0);
}
