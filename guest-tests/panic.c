/* Reports a panic through QEMU's pvpanic ISA port (0x505): the VMM must end with its panic
 * status (kvmbox: 6). Used by tests/t-cli.sh, not in tests.list (QEMU's pvpanic pauses or
 * exits differently, by its -action setting). */
#include "gt.h"

void test_main(void)
{
    uint8_t caps = inb(0x505);
    pass("pvpanic capabilities %x", caps);
    printf("SUMMARY: pass=1 fail=0\n");
    outb(0x505, 0x1);
    delay_us(500000);
    fail("still running after the panic report");
}
