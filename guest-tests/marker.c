/* For the start-up benchmark: print a marker as early as possible, then exit (or, with
 * halt=1, stay up so the VMM's memory can be measured). */
#include "gt.h"

void test_main(void)
{
    printf("KVMBOX-MARKER\n");
    if (arg_u64("halt", 0))
        for (;;) {
            cli();
            hlt();
        }
    debug_exit(0);
}
