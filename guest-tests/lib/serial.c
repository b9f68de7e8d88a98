/* COM1 as a 16550: 115200 8N1, FIFOs on, polled. */
#include "gt.h"

#define COM1     0x3f8
#define LSR_DR   0x01
#define LSR_THRE 0x20

void serial_init(void)
{
    outb(COM1 + 1, 0x00); /* no interrupts */
    outb(COM1 + 3, 0x80); /* DLAB */
    outb(COM1 + 0, 0x01); /* 115200 */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8N1 */
    outb(COM1 + 2, 0x07); /* FIFO on, cleared */
    outb(COM1 + 4, 0x0b); /* DTR, RTS, OUT2 */
}

void serial_putc(char c)
{
    if (c == '\n')
        serial_putc('\r');
    for (int i = 0; i < 100000 && !(inb(COM1 + 5) & LSR_THRE); i++)
        pause();
    outb(COM1, (uint8_t)c);
}

bool serial_can_read(void)
{
    return inb(COM1 + 5) & LSR_DR;
}

int serial_getc_timeout(uint32_t spins)
{
    while (spins--) {
        if (serial_can_read())
            return inb(COM1);
        pause();
    }
    return -1;
}
