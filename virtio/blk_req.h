/* virtio-blk requests (virtio 1.2, 5.2.6), parsed by a pure function so that every way a
 * hostile driver can get a request wrong has its own reason and its own unit test.
 *
 * No assumption is made about how the driver splits a request into descriptors (2.6.4): the
 * device-readable buffers are one byte stream (16-byte header, then data going out), the
 * device-writable ones another (data coming in, then the status byte, always last). */
#ifndef KVMBOX_BLK_REQ_H
#define KVMBOX_BLK_REQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "virtio/queue.h"

#define VIRTIO_BLK_T_IN           0
#define VIRTIO_BLK_T_OUT          1
#define VIRTIO_BLK_T_FLUSH        4
#define VIRTIO_BLK_T_GET_ID       8
#define VIRTIO_BLK_T_DISCARD      11
#define VIRTIO_BLK_T_WRITE_ZEROES 13

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_WZ_UNMAP 1

enum blk_req_err {
    BR_OK = 0,
    /* No way to report a status: the device needs a reset. */
    BR_E_HDR_SHORT, /* fewer than 16 device-readable bytes for the header */
    BR_E_NO_STATUS, /* no device-writable byte for the status */
    /* Reported to the driver in the status byte. */
    BR_E_UNSUPP,   /* unknown request type, or one this device does not offer */
    BR_E_DIR,      /* data in the wrong direction for the type */
    BR_E_ALIGN,    /* data length not a multiple of 512 */
    BR_E_RANGE,    /* beyond the disk's capacity */
    BR_E_READONLY, /* a write, discard or write-zeroes on a read-only disk */
    BR_E_SEGMENTS, /* discard/write-zeroes: segment count or size wrong */
    BR_E_FLAGS,    /* discard/write-zeroes: reserved flags, or unmap on discard */
    BR_E_MAX
};
const char *blk_req_strerror(int err);
/* The status byte for a parse error; -1 for the errors that cannot be reported. */
int blk_req_status(int err);

struct blk_req_limits {
    uint64_t capacity; /* in 512-byte sectors */
    bool readonly;
    bool discard, write_zeroes; /* offered */
    uint32_t max_discard_sectors, max_write_zeroes_sectors;
};

#define BLK_REQ_MAX_IOV VIRTQ_CHAIN_MAX

struct blk_req {
    uint32_t type;
    uint64_t sector;
    uint64_t offset, len; /* bytes, for IN/OUT/DISCARD/WRITE_ZEROES */
    bool unmap;           /* WRITE_ZEROES may deallocate */
    int niov;             /* data buffers (IN: device-writable, OUT: readable) */
    struct iovec iov[BLK_REQ_MAX_IOV];
    uint8_t *status; /* NULL only for BR_E_NO_STATUS */
    uint32_t in_len; /* device-writable bytes before the status byte */
};

/* Parses chain C. Returns 0 or -enum blk_req_err; on errors other than the first two,
 * R->status points at the status byte to report through. */
int blk_req_parse(const struct virtq_chain *c, const struct blk_req_limits *lim, struct blk_req *r);

#endif
