/* 16550A UART (NS16550A datasheet): THR/RBR with 16-byte FIFOs, IER/IIR interrupts,
 * LCR/DLAB divisor latch, MCR loopback, LSR and MSR. Transmitted bytes go straight to the
 * console (vm_console_output); received bytes come from the console thread through serial_receive(). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/devices.h"
#include "devices/services.h"
#include "common/util.h"
#include "vmm/state.h"

enum { RBR_THR = 0, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR };

#define IER_RDI      0x01 /* received data available */
#define IER_THRI     0x02 /* transmitter holding register empty */
#define IER_RLSI     0x04 /* receiver line status */
#define IER_MSI      0x08 /* modem status */
#define IIR_NONE     0x01
#define IIR_MSI      0x00
#define IIR_THRI     0x02
#define IIR_RDI      0x04
#define IIR_RLSI     0x06
#define IIR_FIFO     0xc0
#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04
#define LCR_DLAB     0x80
#define MCR_DTR      0x01
#define MCR_RTS      0x02
#define MCR_OUT1     0x04
#define MCR_OUT2     0x08
#define MCR_LOOP     0x10
#define LSR_DR       0x01
#define LSR_OE       0x02
#define LSR_THRE     0x20
#define LSR_TEMT     0x40
#define MSR_CTS      0x10
#define MSR_DSR      0x20
#define MSR_RI       0x40
#define MSR_DCD      0x80
#define FIFO_SIZE    16

struct serial {
    const struct dev_services *svc;
    pthread_mutex_t lock;
    unsigned irq;
    void (*out)(void *ctx, const uint8_t *buf, size_t len);
    void *out_ctx;
    int rx_wait_fd; /* eventfd: signalled when the guest drains the RX FIFO */
    uint8_t rx[FIFO_SIZE];
    unsigned rx_head, rx_count;
    uint8_t ier, lcr, mcr, lsr, msr, scr, fcr;
    uint16_t divisor;
    bool thri_pending; /* THRE interrupt armed until IIR is read or THR written */
    bool irq_level;
};

static uint8_t modem_status(const struct serial *s)
{
    if (s->mcr & MCR_LOOP) {
        uint8_t m = 0;
        if (s->mcr & MCR_RTS)
            m |= MSR_CTS;
        if (s->mcr & MCR_DTR)
            m |= MSR_DSR;
        if (s->mcr & MCR_OUT1)
            m |= MSR_RI;
        if (s->mcr & MCR_OUT2)
            m |= MSR_DCD;
        return m;
    }
    return MSR_CTS | MSR_DSR | MSR_DCD;
}

static uint8_t pending_iir(const struct serial *s)
{
    if ((s->ier & IER_RLSI) && (s->lsr & LSR_OE))
        return IIR_RLSI;
    if ((s->ier & IER_RDI) && s->rx_count)
        return IIR_RDI;
    if ((s->ier & IER_THRI) && s->thri_pending)
        return IIR_THRI;
    return IIR_NONE;
}

/* Called with the lock held. ISA interrupts are edge-triggered: we drive the line level. */
static void update_irq(struct serial *s)
{
    bool level = pending_iir(s) != IIR_NONE;
    /* Like QEMU, OUT2 and loopback do not gate the line: guests differ in what they expect
     * and none relies on the gating. */
    if (level != s->irq_level) {
        s->irq_level = level;
        s->svc->irq_line(s->svc->ctx, s->irq, level);
    }
}

static void rx_push(struct serial *s, uint8_t c)
{
    if (s->rx_count == FIFO_SIZE) {
        s->lsr |= LSR_OE;
        return;
    }
    s->rx[(s->rx_head + s->rx_count) % FIFO_SIZE] = c;
    s->rx_count++;
}

static uint8_t rx_pop(struct serial *s)
{
    if (!s->rx_count)
        return 0;
    uint8_t c = s->rx[s->rx_head];
    s->rx_head = (s->rx_head + 1) % FIFO_SIZE;
    s->rx_count--;
    if (s->rx_count == 0 && s->rx_wait_fd >= 0) {
        uint64_t one = 1;
        if (write(s->rx_wait_fd, &one, sizeof(one)) < 0) {
            /* eventfd overflow cannot happen with one writer adding 1; nothing to do */
        }
    }
    return c;
}

static void transmit(struct serial *s, uint8_t c)
{
    if (s->mcr & MCR_LOOP)
        rx_push(s, c);
    else
        s->out(s->out_ctx, &c, 1);
    s->thri_pending = true; /* transmission is instant: THR is empty again */
}

static uint8_t serial_read_reg(struct serial *s, unsigned reg)
{
    switch (reg) {
    case RBR_THR:
        if (s->lcr & LCR_DLAB)
            return (uint8_t)s->divisor;
        return rx_pop(s);
    case IER: return s->lcr & LCR_DLAB ? (uint8_t)(s->divisor >> 8) : s->ier;
    case IIR_FCR: {
        uint8_t iir = pending_iir(s);
        if (iir == IIR_THRI)
            s->thri_pending = false; /* reading IIR clears a THRE interrupt */
        return iir | ((s->fcr & FCR_ENABLE) ? IIR_FIFO : 0);
    }
    case LCR: return s->lcr;
    case MCR: return s->mcr;
    case LSR: {
        uint8_t lsr = s->lsr | LSR_THRE | LSR_TEMT | (s->rx_count ? LSR_DR : 0);
        s->lsr &= (uint8_t)~LSR_OE; /* overrun clears on read */
        return lsr;
    }
    case MSR: {
        uint8_t now = modem_status(s);
        uint8_t delta = (uint8_t)(((now ^ s->msr) >> 4) & 0x0f);
        s->msr = now;
        return now | delta;
    }
    default: return s->scr;
    }
}

static void serial_write_reg(struct serial *s, unsigned reg, uint8_t v)
{
    switch (reg) {
    case RBR_THR:
        if (s->lcr & LCR_DLAB)
            s->divisor = (uint16_t)((s->divisor & 0xff00) | v);
        else
            transmit(s, v);
        break;
    case IER:
        if (s->lcr & LCR_DLAB) {
            s->divisor = (uint16_t)((s->divisor & 0x00ff) | v << 8);
        } else {
            /* Enabling THRI while THR is empty raises the interrupt at once. */
            if ((v & IER_THRI) && !(s->ier & IER_THRI))
                s->thri_pending = true;
            s->ier = v & 0x0f;
        }
        break;
    case IIR_FCR:
        if (v & FCR_CLEAR_RX)
            s->rx_head = s->rx_count = 0;
        s->fcr = v & (FCR_ENABLE | 0xc0);
        break;
    case LCR: s->lcr = v; break;
    case MCR: s->mcr = v & 0x1f; break;
    case SCR: s->scr = v; break;
    default: break; /* LSR and MSR are read-only */
    }
}

static void serial_read(void *dev, uint64_t off, void *data, unsigned len)
{
    struct serial *s = dev;
    pthread_mutex_lock(&s->lock);
    memset(data, 0, len);
    *(uint8_t *)data = serial_read_reg(s, (unsigned)off & 7);
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

static void serial_write(void *dev, uint64_t off, const void *data, unsigned len)
{
    struct serial *s = dev;
    pthread_mutex_lock(&s->lock);
    serial_write_reg(s, (unsigned)off & 7, *(const uint8_t *)data);
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

static const struct dev_ops serial_ops = { .name = "serial", .read = serial_read, .write = serial_write };

static void serial_reset(void *dev)
{
    struct serial *s = dev;
    pthread_mutex_lock(&s->lock);
    s->rx_head = s->rx_count = 0;
    s->ier = s->mcr = s->scr = s->fcr = 0;
    s->lcr = 0x03;
    s->lsr = 0;
    s->msr = modem_status(s);
    s->divisor = 12; /* 9600 baud */
    s->thri_pending = false;
    s->irq_level = false;
    pthread_mutex_unlock(&s->lock);
}

static void serial_destroy(void *dev)
{
    struct serial *s = dev;
    if (s->rx_wait_fd >= 0)
        close(s->rx_wait_fd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len)
{
    pthread_mutex_lock(&s->lock);
    size_t n = 0;
    while (n < len && s->rx_count < FIFO_SIZE)
        rx_push(s, buf[n++]);
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return n;
}

size_t serial_rx_space(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = FIFO_SIZE - s->rx_count;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int serial_rx_wait_fd(struct serial *s)
{
    return s->rx_wait_fd;
}

static int serial_save(void *dev, struct st_writer *w);
static int serial_load(void *dev, const struct st_section *sec, char *err, size_t errlen);

int serial_create(const struct dev_services *svc, uint16_t port, unsigned irq,
                  void (*output)(void *ctx, const uint8_t *buf, size_t len), void *ctx, struct serial **out)
{
    struct serial *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->svc = svc, s->irq = irq, s->out = output, s->out_ctx = ctx;
    pthread_mutex_init(&s->lock, NULL);
    s->rx_wait_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->rx_wait_fd < 0) {
        int e = -errno;
        serial_destroy(s);
        return e;
    }
    serial_reset(s);
    int r = svc->add_device(svc->ctx, "serial", s, serial_reset, serial_destroy);
    if (r < 0) {
        serial_destroy(s);
        return r;
    }
    svc->on_save(svc->ctx, s, 1, serial_save, serial_load, NULL);
    *out = s;
    return dev_map_pio(svc, port, 8, &serial_ops, s);
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

static int serial_save(void *dev, struct st_writer *w)
{
    struct serial *s = dev;
    pthread_mutex_lock(&s->lock);
    uint8_t rx[FIFO_SIZE];
    for (unsigned i = 0; i < s->rx_count; i++)
        rx[i] = s->rx[(s->rx_head + i) % FIFO_SIZE];
    st_put(w, "rx", rx, s->rx_count);
    st_put_u8(w, "ier", s->ier), st_put_u8(w, "lcr", s->lcr), st_put_u8(w, "mcr", s->mcr);
    st_put_u8(w, "lsr", s->lsr), st_put_u8(w, "msr", s->msr), st_put_u8(w, "scr", s->scr);
    st_put_u8(w, "fcr", s->fcr);
    st_put_u32(w, "divisor", s->divisor);
    st_put_u8(w, "thri_pending", s->thri_pending);
    st_put_u8(w, "irq_level", s->irq_level);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int serial_load(void *dev, const struct st_section *sec, char *err, size_t errlen)
{
    struct serial *s = dev;
    uint64_t v[10];
    static const char *const f[10] = { "ier", "lcr", "mcr",     "lsr",          "msr",
                                       "scr", "fcr", "divisor", "thri_pending", "irq_level" };
    for (unsigned i = 0; i < 10; i++) {
        int r = st_need_uint(sec, f[i], i == 7 ? 0xffff : i >= 8 ? 1 : 0xff, &v[i], err, errlen);
        if (r < 0)
            return r;
    }
    uint32_t n;
    const uint8_t *rx = st_field(sec, "rx", &n);
    if (!rx || n > FIFO_SIZE)
        return errf(err, errlen, -EBADMSG, "saved state: the serial port's receive FIFO is malformed");
    pthread_mutex_lock(&s->lock);
    memcpy(s->rx, rx, n);
    s->rx_head = 0, s->rx_count = n;
    s->ier = (uint8_t)v[0], s->lcr = (uint8_t)v[1], s->mcr = (uint8_t)v[2], s->lsr = (uint8_t)v[3];
    s->msr = (uint8_t)v[4], s->scr = (uint8_t)v[5], s->fcr = (uint8_t)v[6];
    s->divisor = (uint16_t)v[7];
    s->thri_pending = v[8];
    /* The line as it was: the kernel's irqchip state is restored, but not which sources drive
     * its pins, so a high line is raised again. */
    s->irq_level = false;
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}
