/* ACPI poweroff as an OS does it: SLP_TYPa from \_S5 and SLP_EN written to PM1a_CNT. The VMM
 * must end with status 0; if the guest is still running afterwards, it reports FAIL. */
#include "gt.h"

void test_main(void)
{
    uint8_t typ;
    uint16_t cnt = fadt_pm1a_cnt();
    if (!acpi_s5(&typ) || !cnt) {
        fail("no \\_S5 or PM1a_CNT to power off with");
        return;
    }
    pass("powering off: SLP_TYP %u to port %x", typ, cnt);
    outw(cnt, (uint16_t)((typ << 10) | (1u << 13)));
    delay_us(500000);
    fail("still running 0.5 s after the S5 request");
}
