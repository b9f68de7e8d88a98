/* The CMOS RTC holds the host's time: the runner passes now=<unix seconds> just before it
 * starts the VM; the date and time the guest reads must match it. Honours register B's
 * binary/BCD and 12/24-hour bits and waits for update-in-progress to clear. */
#include "gt.h"

static uint8_t cmos(uint8_t reg)
{
    outb(0x70, reg);
    return inb(0x71);
}

static unsigned bcd(uint8_t v, bool binary)
{
    return binary ? v : (v >> 4) * 10 + (v & 0xf);
}

/* Days from 1970-01-01 to Y-M-D (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void test_main(void)
{
    uint64_t now = arg_u64("now", 0);
    for (int i = 0; i < 1000000 && (cmos(0x0a) & 0x80); i++)
        pause();
    uint8_t b = cmos(0x0b);
    bool binary = b & 0x04, h24 = b & 0x02;
    unsigned sec = bcd(cmos(0x00), binary), min = bcd(cmos(0x02), binary);
    uint8_t hr = cmos(0x04);
    unsigned hour = bcd(hr & 0x7f, binary);
    if (!h24)
        hour = (hour % 12) + ((hr & 0x80) ? 12 : 0);
    unsigned day = bcd(cmos(0x07), binary), mon = bcd(cmos(0x08), binary);
    unsigned year = bcd(cmos(0x09), binary), century = bcd(cmos(0x32), binary);
    if (century < 19 || century > 30)
        century = 20;
    unsigned full = century * 100 + year;
    printf("RTC: %u-%02u-%02u %02u:%02u:%02u (register B %x)\n", full, mon, day, hour, min, sec, b);
    check(mon >= 1 && mon <= 12 && day >= 1 && day <= 31 && hour < 24 && min < 60 && sec < 60,
          "RTC fields are in range");
    if (!now) {
        fail("no now= on the command line to compare with");
        return;
    }
    int64_t t = days_from_civil(full, mon, day) * 86400 + hour * 3600 + min * 60 + sec;
    int64_t diff = t - (int64_t)now;
    /* Generous: the guest boots slowly on an emulating host. */
    check(diff >= -5 && diff <= 60, "RTC equals the host's time (guest %lld, host %llu, difference %lld s)",
          (long long)t, (unsigned long long)now, (long long)diff);
}
