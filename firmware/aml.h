/* A small AML (ACPI Machine Language) emitter: just the terms kvmbox's DSDT needs. Nested
 * terms (Scope, Device, Package, Buffer) are opened and closed; the package length is
 * patched in on close. Errors (out of space, nesting too deep) stick and are returned by
 * aml_finish(). */
#ifndef KVMBOX_AML_H
#define KVMBOX_AML_H

#include <stddef.h>
#include <stdint.h>

#define AML_MAX_DEPTH 8

struct aml {
    uint8_t *buf;
    size_t len, cap;
    int err;
    unsigned depth;
    size_t open_at[AML_MAX_DEPTH]; /* offset of each open term's PkgLength */
};

void aml_init(struct aml *a, uint8_t *buf, size_t cap);
int aml_finish(struct aml *a); /* bytes emitted, or negative errno */

void aml_name(struct aml *a, const char *name); /* NameOp NameString (then a value) */
void aml_integer(struct aml *a, uint64_t v);    /* smallest integer encoding */
void aml_string(struct aml *a, const char *s);
void aml_eisaid(struct aml *a, const char *id); /* "PNP0501" -> DWord */
void aml_scope_open(struct aml *a, const char *name);
void aml_device_open(struct aml *a, const char *name);
void aml_package_open(struct aml *a, uint8_t nelems);
void aml_buffer_open(struct aml *a); /* size filled in on close */
void aml_close(struct aml *a);
void aml_bytes(struct aml *a, const void *p, size_t n);

/* Resource descriptors, inside a buffer. */
void aml_res_io(struct aml *a, uint16_t base, uint8_t len);
void aml_res_irq(struct aml *a, uint8_t irq);
void aml_res_bus(struct aml *a, uint16_t first, uint16_t last);
void aml_res_io_window(struct aml *a, uint16_t first, uint16_t last);
void aml_res_mem32(struct aml *a, uint32_t first, uint32_t last);
void aml_res_mem64(struct aml *a, uint64_t first, uint64_t last);
void aml_res_end(struct aml *a);

#endif
