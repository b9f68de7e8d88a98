/* The 16550 as a guest driver sees it: scratch register, divisor latch, line status after
 * transmit, loopback (bytes sent come back, modem lines follow MCR), and input from the
 * host: the runner feeds "ping\n" on the console and the test reads it through RBR/LSR.DR. */
#include "gt.h"

#define COM1 0x3f8
enum { RBR = 0, IER = 1, IIR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

static void test_registers(void)
{
    outb(COM1 + SCR, 0xa5);
    check(inb(COM1 + SCR) == 0xa5, "scratch register keeps its value");
    outb(COM1 + LCR, 0x83);
    outb(COM1 + RBR, 0x0c), outb(COM1 + IER, 0x00);
    uint8_t dll = inb(COM1 + RBR), dlm = inb(COM1 + IER);
    outb(COM1 + LCR, 0x03);
    check(dll == 0x0c && dlm == 0, "divisor latch reads back (%x %x)", dll, dlm);
    outb(COM1 + LCR, 0x83), outb(COM1 + RBR, 0x01), outb(COM1 + LCR, 0x03);
    check(inb(COM1 + LCR) == 0x03, "line control reads back");
    uint8_t lsr = inb(COM1 + LSR);
    check((lsr & 0x60) == 0x60, "THRE and TEMT set when idle (LSR %x)", lsr);
}

/* Nothing may be printed while in loopback: it would loop back too. Results are reported
 * after leaving it. */
static void test_loopback(void)
{
    outb(COM1 + MCR, 0x1b); /* loopback, OUT2, RTS, DTR */
    while (inb(COM1 + LSR) & 1)
        inb(COM1 + RBR);
    const char msg[] = "loop";
    for (int i = 0; i < 4; i++)
        outb(COM1 + RBR, (uint8_t)msg[i]);
    char got[5] = { 0 };
    int n = 0;
    for (int spins = 0; n < 4 && spins < 100000; spins++)
        if (inb(COM1 + LSR) & 1)
            got[n++] = (char)inb(COM1 + RBR);
    bool drained = !(inb(COM1 + LSR) & 1);
    uint8_t msr = inb(COM1 + MSR);
    outb(COM1 + MCR, 0x0b);
    check(n == 4 && !memcmp(got, msg, 4), "loopback returns what was sent ('%s')", got);
    check(drained, "DR clear once the FIFO is drained");
    check((msr & 0xf0) == 0xb0, "modem status follows MCR in loopback (MSR %x)", msr);
}

static void test_input(void)
{
    printf("READY-FOR-INPUT\n");
    char line[16] = { 0 };
    unsigned n = 0;
    uint32_t waited = 0; /* in 10 ms steps of the PM timer: up to 20 s */
    while (n < sizeof(line) - 1 && waited < 2000) {
        if (!serial_can_read()) {
            delay_us(10000);
            waited++;
            continue;
        }
        char c = (char)inb(COM1 + RBR);
        if (c == '\n' || c == '\r')
            break;
        line[n++] = c;
    }
    check(!strncmp(line, "ping", 5), "input from the host arrives through RBR ('%s')", line);
}

void test_main(void)
{
    /* Input first, before loopback drains the FIFO. The runner sends it once it sees
     * READY-FOR-INPUT, since initialising the UART may clear what came earlier. */
    if (arg_u64("input", 1))
        test_input();
    test_registers();
    test_loopback();
}
