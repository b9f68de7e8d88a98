/* MC146818 CMOS RTC at ports 0x70/0x71: the host's wall-clock time in BCD or binary, 24 or
 * 12-hour mode per register B, the update-in-progress bit of register A, and the CMOS RAM
 * that firmware uses for memory sizes. Time runs from the host clock plus an offset that the
 * guest's writes to the time registers adjust. Interrupts (alarm, periodic, update-ended)
 * are not raised: no guest we boot depends on them. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devices/devices.h"
#include "devices/services.h"
#include "vmm/guest_mem.h"
#include "vmm/layout.h"
#include "vmm/state.h"

enum {
    RTC_SEC = 0x00,
    RTC_MIN = 0x02,
    RTC_HOUR = 0x04,
    RTC_WDAY = 0x06,
    RTC_MDAY = 0x07,
    RTC_MON = 0x08,
    RTC_YEAR = 0x09,
    RTC_REG_A = 0x0a,
    RTC_REG_B = 0x0b,
    RTC_REG_C = 0x0c,
    RTC_REG_D = 0x0d,
    RTC_CENTURY = 0x32,
};
#define REG_A_UIP       0x80
#define REG_B_SET       0x80
#define REG_B_DM_BINARY 0x04
#define REG_B_24H       0x02
#define REG_D_VRT       0x80
#define CMOS_SIZE       128
/* UIP is set for the 244 us before each update (plus the update itself, 1984 us). */
#define UIP_WINDOW_NS 2228000L

struct rtc {
    pthread_mutex_t lock;
    uint8_t index;
    uint8_t ram[CMOS_SIZE];
    int64_t offset; /* guest seconds minus host seconds */
};

static uint8_t to_bcd(unsigned v)
{
    return (uint8_t)(((v / 10) << 4) | (v % 10));
}
static unsigned from_bcd(uint8_t v)
{
    return (v >> 4) * 10 + (v & 0xf);
}

static uint8_t enc(const struct rtc *r, unsigned v)
{
    return r->ram[RTC_REG_B] & REG_B_DM_BINARY ? (uint8_t)v : to_bcd(v);
}

static unsigned dec(const struct rtc *r, uint8_t v)
{
    return r->ram[RTC_REG_B] & REG_B_DM_BINARY ? v : from_bcd(v);
}

static void guest_tm(const struct rtc *r, struct tm *tm, long *nsec)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t t = ts.tv_sec + r->offset;
    gmtime_r(&t, tm);
    *nsec = ts.tv_nsec;
}

static uint8_t encode_hour(const struct rtc *r, unsigned hour)
{
    if (r->ram[RTC_REG_B] & REG_B_24H)
        return enc(r, hour);
    unsigned h12 = hour % 12 ? hour % 12 : 12;
    return (uint8_t)(enc(r, h12) | (hour >= 12 ? 0x80 : 0));
}

static unsigned decode_hour(const struct rtc *r, uint8_t v)
{
    if (r->ram[RTC_REG_B] & REG_B_24H)
        return dec(r, v);
    unsigned h = dec(r, v & 0x7f) % 12;
    return (v & 0x80) ? h + 12 : h;
}

static uint8_t read_time_reg(struct rtc *r, uint8_t idx)
{
    struct tm tm;
    long nsec;
    guest_tm(r, &tm, &nsec);
    switch (idx) {
    case RTC_SEC: return enc(r, (unsigned)tm.tm_sec);
    case RTC_MIN: return enc(r, (unsigned)tm.tm_min);
    case RTC_HOUR: return encode_hour(r, (unsigned)tm.tm_hour);
    case RTC_WDAY: return enc(r, (unsigned)tm.tm_wday + 1);
    case RTC_MDAY: return enc(r, (unsigned)tm.tm_mday);
    case RTC_MON: return enc(r, (unsigned)tm.tm_mon + 1);
    case RTC_YEAR: return enc(r, (unsigned)tm.tm_year % 100);
    case RTC_CENTURY: return enc(r, (unsigned)(tm.tm_year + 1900) / 100);
    case RTC_REG_A:
        return (uint8_t)((r->ram[RTC_REG_A] & 0x7f) | (nsec >= 1000000000L - UIP_WINDOW_NS ? REG_A_UIP : 0));
    default: return 0;
    }
}

/* A write to a time register moves the guest's clock: recompute the offset. */
static void write_time_reg(struct rtc *r, uint8_t idx, uint8_t v)
{
    struct tm tm;
    long nsec;
    guest_tm(r, &tm, &nsec);
    switch (idx) {
    case RTC_SEC: tm.tm_sec = (int)dec(r, v); break;
    case RTC_MIN: tm.tm_min = (int)dec(r, v); break;
    case RTC_HOUR: tm.tm_hour = (int)decode_hour(r, v); break;
    case RTC_MDAY: tm.tm_mday = (int)dec(r, v); break;
    case RTC_MON: tm.tm_mon = (int)dec(r, v) - 1; break;
    case RTC_YEAR: tm.tm_year = (tm.tm_year / 100) * 100 + (int)dec(r, v); break;
    case RTC_CENTURY: tm.tm_year = ((int)dec(r, v) * 100 - 1900) + tm.tm_year % 100; break;
    default: return;
    }
    time_t want = timegm(&tm);
    if (want != (time_t)-1)
        r->offset = (int64_t)want - (int64_t)time(NULL);
}

/* Registers whose value comes from the clock rather than from CMOS RAM. */
static bool is_clock_reg(uint8_t idx)
{
    return idx == RTC_SEC || idx == RTC_MIN || idx == RTC_HOUR || (idx >= RTC_WDAY && idx <= RTC_YEAR) ||
           idx == RTC_CENTURY || idx == RTC_REG_A;
}

static void rtc_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct rtc *r = dev;
    memset(data, 0xff, len);
    if (off == 0)
        return; /* the index register is write-only */
    pthread_mutex_lock(&r->lock);
    uint8_t idx = r->index, v;
    if (is_clock_reg(idx)) {
        v = read_time_reg(r, idx);
    } else if (idx == RTC_REG_C) {
        v = r->ram[RTC_REG_C]; /* flags clear on read */
        r->ram[RTC_REG_C] = 0;
    } else {
        v = r->ram[idx];
    }
    pthread_mutex_unlock(&r->lock);
    *(uint8_t *)data = v;
}

static void rtc_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct rtc *r = dev;
    uint8_t v = *(const uint8_t *)data;
    pthread_mutex_lock(&r->lock);
    if (off == 0) {
        r->index = v & (CMOS_SIZE - 1); /* bit 7 is the NMI mask; clamp by construction */
    } else if (r->index == RTC_REG_C || r->index == RTC_REG_D) {
        /* read-only */
    } else if (is_clock_reg(r->index) && r->index != RTC_REG_A) {
        write_time_reg(r, r->index, v);
    } else {
        r->ram[r->index] = v;
    }
    pthread_mutex_unlock(&r->lock);
}

static const struct dev_ops rtc_ops = { .name = "rtc", .read = rtc_read, .write = rtc_write };

/* Memory sizes where PC firmware keeps them (extended memory, above 16 MiB, above 4 GiB). */
static void rtc_set_memory(struct rtc *r, uint64_t low_end, uint64_t high_size)
{
    uint64_t ext_kb = low_end > LAYOUT_HIGH_KERNEL ? (low_end - LAYOUT_HIGH_KERNEL) >> 10 : 0;
    if (ext_kb > 0xffff)
        ext_kb = 0xffff;
    r->ram[0x17] = r->ram[0x30] = (uint8_t)ext_kb;
    r->ram[0x18] = r->ram[0x31] = (uint8_t)(ext_kb >> 8);
    uint64_t above16 = low_end > (16 << 20) ? (low_end - (16 << 20)) >> 16 : 0;
    if (above16 > 0xffff)
        above16 = 0xffff;
    r->ram[0x34] = (uint8_t)above16, r->ram[0x35] = (uint8_t)(above16 >> 8);
    uint64_t high = high_size >> 16;
    r->ram[0x5b] = (uint8_t)high, r->ram[0x5c] = (uint8_t)(high >> 8), r->ram[0x5d] = (uint8_t)(high >> 16);
}

static void rtc_reset(void *dev)
{
    struct rtc *r = dev;
    pthread_mutex_lock(&r->lock);
    r->ram[RTC_REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz rate */
    r->ram[RTC_REG_B] = REG_B_24H;
    r->ram[RTC_REG_C] = 0;
    r->ram[RTC_REG_D] = REG_D_VRT;
    pthread_mutex_unlock(&r->lock);
}

static void rtc_destroy(void *dev)
{
    struct rtc *r = dev;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static int rtc_save(void *dev, struct st_writer *w);
static int rtc_load(void *dev, const struct st_section *s, char *err, size_t errlen);

int rtc_create(const struct dev_services *svc)
{
    struct rtc *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    /* glibc loads the time zone on the first gmtime_r(); doing it here keeps that file access
     * out of the sandboxed vCPU threads. */
    tzset();
    rtc_reset(r);
    uint64_t low = gm_low_end(svc->mem);
    rtc_set_memory(r, low, svc->mem->ram_size - low);
    int ret = svc->add_device(svc->ctx, "rtc", r, rtc_reset, rtc_destroy);
    if (ret < 0) {
        rtc_destroy(r);
        return ret;
    }
    svc->on_save(svc->ctx, r, 1, rtc_save, rtc_load, NULL);
    return dev_map_pio(svc, PORT_RTC, 2, &rtc_ops, r);
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

/* The guest's wall clock keeps its offset from the host's: after a restore it shows the real
 * time again, as a PC's battery-backed clock does after being off. */
static int rtc_save(void *dev, struct st_writer *w)
{
    struct rtc *r = dev;
    pthread_mutex_lock(&r->lock);
    st_put_u8(w, "index", r->index);
    st_put(w, "ram", r->ram, CMOS_SIZE);
    st_put_u64(w, "offset", (uint64_t)r->offset);
    pthread_mutex_unlock(&r->lock);
    return 0;
}

static int rtc_load(void *dev, const struct st_section *s, char *err, size_t errlen)
{
    struct rtc *r = dev;
    uint64_t index, offset;
    uint8_t ram[CMOS_SIZE];
    int ret;
    if ((ret = st_need_uint(s, "index", 0xff, &index, err, errlen)) < 0 ||
        (ret = st_need_uint(s, "offset", UINT64_MAX, &offset, err, errlen)) < 0 ||
        (ret = st_need(s, "ram", ram, CMOS_SIZE, err, errlen)) < 0)
        return ret;
    pthread_mutex_lock(&r->lock);
    r->index = (uint8_t)index;
    memcpy(r->ram, ram, CMOS_SIZE);
    r->offset = (int64_t)offset;
    pthread_mutex_unlock(&r->lock);
    return 0;
}
