/* The pure parts of virtio-net's data path, so that unit tests and the fuzz target reach them
 * without a VM: checking a transmitted chain, and placing a received frame in buffers. */
#ifndef KVMBOX_NET_FRAME_H
#define KVMBOX_NET_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "net/net.h"
#include "virtio/queue.h"

enum net_frame_err {
    NF_OK = 0,
    NF_E_WRITABLE, /* a transmit buffer is device-writable */
    NF_E_SHORT,    /* less than a header and an Ethernet header */
    NF_E_LONG,     /* more than NET_MAX_FRAME */
    NF_E_MAX
};

/* Checks transmit chain C and fills IOV (room for VIRTQ_CHAIN_MAX) with what goes to the
 * backend: the whole chain when KEEP_HDR (tap with vnet headers), else the chain without its
 * first NET_HDR_LEN. Returns the iovec count, or -enum net_frame_err. */
int net_tx_frame(const struct virtq_chain *c, bool keep_hdr, struct iovec *iov);

/* Copies bytes [placed, placed + room) of the received stream (HDR, then DATA of DATA_LEN
 * bytes) into the device-writable segments of C, as far as C holds. Returns the bytes
 * written. */
size_t net_rx_copy(const struct virtq_chain *c, size_t placed, const uint8_t hdr[NET_HDR_LEN],
                   const uint8_t *data, size_t data_len);
/* Writes num_buffers into the header already copied to the start of C. */
void net_rx_set_num_buffers(const struct virtq_chain *c, uint16_t n);

#endif
