/* The console: a thread that moves bytes from the console input fd into COM1's receive FIFO
 * (as fast as the guest drains it) and watches for the Ctrl-] escape. */
#ifndef KVMBOX_CONSOLE_H
#define KVMBOX_CONSOLE_H

#include <stdbool.h>

struct vm;
struct serial;
struct console;

#define CONSOLE_ESCAPE 0x1d /* Ctrl-] */

/* Starts the console thread on IN_FD, or sets *OUT to NULL and starts nothing when IN_FD is
 * /dev/null (nothing will ever come). Returns 0 or a negative errno. */
int console_start(struct vm *vm, int in_fd, bool escape, struct serial *uart, struct console **out)
    __attribute__((warn_unused_result));
/* Stops and frees C (NULL: nothing). */
void console_stop(struct console *c);

#endif
