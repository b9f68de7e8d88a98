#include "net/net.h"

#include <errno.h>
#include <string.h>

#include "common/util.h"

ssize_t net_gather(const struct iovec *iov, int iovcnt, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > cap - n)
            return -1;
        memcpy(buf + n, iov[i].iov_base, iov[i].iov_len);
        n += iov[i].iov_len;
    }
    return (ssize_t)n;
}

void net_default_mac(const char *name, unsigned index, uint8_t mac[6])
{
    /* FNV-1a over the name and the index: the same VM gets the same MACs every time. */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    h = (h ^ index) * 0x100000001b3ULL;
    h ^= h >> 33, h *= 0xff51afd7ed558ccdULL, h ^= h >> 33; /* spread every input bit */
    mac[0] = 0x52, mac[1] = 0x54; /* locally administered (bit 1), unicast (bit 0 clear) */
    for (int i = 2; i < 6; i++)
        mac[i] = (uint8_t)(h >> (8 * (i - 2)));
}

int net_backend_open(const struct kvmbox_nic *nic, const char *vm_name, const char *runtime_dir, bool sandbox,
                     struct net_backend **out, char *err, size_t errlen)
{
    switch (nic->mode) {
    case KVMBOX_NET_USER: return net_slirp_open(nic, vm_name, sandbox, out, err, errlen);
    case KVMBOX_NET_TAP:
    case KVMBOX_NET_BRIDGE: return net_tap_open(nic, out, err, errlen);
    case KVMBOX_NET_SEGMENT: return net_segment_open(nic, vm_name, runtime_dir, out, err, errlen);
    }
    return errf(err, errlen, -EINVAL, "unknown network mode %d", (int)nic->mode);
}
