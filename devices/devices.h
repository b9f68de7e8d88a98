/* PC devices. Each file holds one device behind one struct dev_ops; its constructor
 * registers it on the VM's bus and with the VM (for reset and teardown) through the
 * services it is given (devices/services.h). */
#ifndef KVMBOX_DEVICES_H
#define KVMBOX_DEVICES_H

#include <stddef.h>
#include <stdint.h>

struct dev_services;
struct serial;

#define MUST_CHECK_DEV __attribute__((warn_unused_result))

/* 16550A UART at PORT raising ISA IRQ. Transmitted bytes go to OUTPUT(CTX, ...), called
 * with the UART's lock held, so it must not call back into the UART. */
int serial_create(const struct dev_services *svc, uint16_t port, unsigned irq,
                  void (*output)(void *ctx, const uint8_t *buf, size_t len), void *ctx,
                  struct serial **out) MUST_CHECK_DEV;
/* Feeds received bytes to the UART; returns how many fit in its receive FIFO. */
size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len);
/* Free space in the receive FIFO; the console thread waits on serial_rx_wait_fd() becoming
 * readable when it is 0. */
size_t serial_rx_space(struct serial *s);
int serial_rx_wait_fd(struct serial *s);

int rtc_create(const struct dev_services *svc) MUST_CHECK_DEV; /* MC146818 CMOS RTC at 0x70 */
/* Keyboard controller, enough for reset. */
int i8042_create(const struct dev_services *svc) MUST_CHECK_DEV;
struct pm;
/* ACPI PM1a event/control, PM timer, reset register. */
int pm_create(const struct dev_services *svc, struct pm **out) MUST_CHECK_DEV;
/* Presses the ACPI power button: sets PWRBTN_STS and raises the SCI if the guest enabled it. */
void pm_power_button(struct pm *p);
/* QEMU isa-debug-exit at 0xf4. */
int debug_exit_create(const struct dev_services *svc) MUST_CHECK_DEV;
/* QEMU pvpanic, ISA port 0x505. */
int pvpanic_create(const struct dev_services *svc) MUST_CHECK_DEV;
/* Port 0x80: POST codes and I/O delay. */
int post_create(const struct dev_services *svc) MUST_CHECK_DEV;
/* Firmware debug log (port 0x402) appended to PATH. */
int debugcon_create(const struct dev_services *svc, const char *path) MUST_CHECK_DEV;

#endif
