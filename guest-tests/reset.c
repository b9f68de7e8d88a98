/* Reset through the FADT's RESET_REG (method=acpi, the default) or the i8042's pulse-reset
 * command (method=kbd). Run with --no-reboot / -no-reboot, so a reset ends the VM with 0. */
#include "gt.h"

void test_main(void)
{
    char buf[16];
    const char *method = arg_str("method", buf, sizeof(buf), "acpi");
    const uint8_t *f = acpi_find("FACP");
    if (!strncmp(method, "kbd", 4)) {
        pass("resetting through the i8042 (0xfe to port 0x64)");
        outb(0x64, 0xfe);
    } else if (f && (f[112 + 1] & 0x04) && f[116] == 1) {
        uint64_t port;
        memcpy(&port, f + 120, 8);
        pass("resetting through RESET_REG: %x to port %x", f[128], (unsigned)port);
        outb((uint16_t)port, f[128]);
    } else {
        fail("the FADT has no I/O RESET_REG");
        return;
    }
    delay_us(500000);
    fail("still running 0.5 s after the reset request");
}
