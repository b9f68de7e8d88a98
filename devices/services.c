/* printf-style wrappers around struct dev_services: the table itself takes finished lines,
 * so the VM's side needs no varargs. */
#include "devices/services.h"

#include <stdarg.h>
#include <stdio.h>

void dev_request_stop(const struct dev_services *s, enum kvmbox_stop reason, uint32_t code, const char *fmt,
                      ...)
{
    char msg[KVMBOX_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    s->request_stop(s->ctx, reason, code, msg);
}

void dev_log(const struct dev_services *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    s->log(s->ctx, line);
}
