/* The ACPI PM timer (3.579545 MHz) is the clock tests measure other clocks against: it is
 * there on kvmbox and QEMU alike and needs no calibration. */
#include "gt.h"

static uint16_t pmtmr_port;

uint32_t pmtimer_read(void)
{
    if (!pmtmr_port)
        pmtmr_port = (uint16_t)fadt_pm_tmr();
    return pmtmr_port ? inl(pmtmr_port) & 0xffffff : 0;
}

void delay_us(uint32_t us)
{
    uint32_t start = pmtimer_read();
    uint64_t ticks = (uint64_t)us * 3579545 / 1000000;
    if (!pmtmr_port)
        return;
    while (((pmtimer_read() - start) & 0xffffff) < ticks)
        pause();
}
