/* virtio-net (virtio 1.2, 5.1) on the network backends of net/.
 *
 * One I/O thread per NIC polls its doorbells (ioeventfds for the receive and transmit
 * queues) together with the backend's fds: transmitted chains become frames for the
 * backend; frames from the backend fill receive buffers, merged across several when the
 * driver accepted VIRTIO_NET_F_MRG_RXBUF. Nothing runs on the vCPU threads. A malformed
 * chain sets DEVICE_NEEDS_RESET on this NIC only; a malformed frame is dropped. */
#include "virtio/net.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "net/net.h"
#include "virtio/net_frame.h"
#include "virtio/virtio.h"
#include "devices/services.h"
#include "common/util.h"
#include "vmm/state.h"

#define VIRTIO_ID_NET 1
#define QUEUE_SIZE    256
#define RXQ           0
#define TXQ           1
#define TX_BUDGET     256 /* chains per round, so receiving is not starved */
#define MTU           1500

#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU        3
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN  9
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_HOST_ECN   13
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16
#define VIRTIO_NET_S_LINK_UP    1

struct vnet {
    struct virtio_dev vd;
    struct net_backend *be;
    char name[32];
    uint8_t config[12];
    pthread_t thread;
    bool thread_started;
    int quit_fd;
    /* Written by the I/O thread only (the backends deliver on it), read by `kvmbox info`. */
    uint64_t rx_frames, rx_bytes, rx_dropped, tx_frames, tx_bytes, tx_dropped;
    struct virtq_chain chain; /* the I/O thread's scratch */
    struct virtq_chain rx_chains[8];
};

static struct vnet *to_vnet(struct virtio_dev *vd)
{
    return (struct vnet *)vd;
}

/* One writer: a relaxed load and store, no locked read-modify-write on the data path. */
static void count(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* The status field the driver reads is the one record of the link's state. */
static bool link_is_up(struct vnet *n)
{
    return __atomic_load_n(&n->config[6], __ATOMIC_ACQUIRE) & VIRTIO_NET_S_LINK_UP;
}

/* vCPU thread. The status byte changes under vd->lock (vnet_set_link, API thread): read the
 * whole range under it too, so a driver never sees half of a change. */
static void config_read(struct virtio_dev *vd, unsigned off, void *data, unsigned len)
{
    pthread_mutex_lock(&vd->lock);
    memcpy(data, to_vnet(vd)->config + off, len);
    pthread_mutex_unlock(&vd->lock);
}

/* ---- transmit ---------------------------------------------------------------------------- */

/* Returns false when the queue is malformed (the device then needs a reset). */
static bool tx_one(struct vnet *n, struct virtio_queue *q, bool *more)
{
    struct virtq_chain *c = &n->chain;
    pthread_mutex_lock(&q->lock);
    int r = q->broken ? 0 : virtq_pop(&q->vq, c);
    if (r == 0 && !q->broken && virtq_enable_notify(&q->vq))
        r = virtq_pop(&q->vq, c);
    pthread_mutex_unlock(&q->lock);
    *more = r > 0;
    if (r < 0) {
        virtio_queue_error(&n->vd, TXQ, virtq_strerror(r));
        return false;
    }
    if (r == 0)
        return true;
    /* Every buffer device-readable, a whole header, at most a 64 KiB frame: else the frame
     * is dropped and the buffers go back. */
    struct iovec iov[VIRTQ_CHAIN_MAX];
    int cnt = net_tx_frame(c, n->be->vnet_hdr, iov);
    if (cnt > 0 && link_is_up(n)) {
        n->be->ops->send(n->be, iov, cnt);
        size_t bytes = 0;
        for (int i = 0; i < cnt; i++)
            bytes += iov[i].iov_len;
        count(&n->tx_frames, 1);
        count(&n->tx_bytes, bytes - (n->be->vnet_hdr ? NET_HDR_LEN : 0));
    } else {
        count(&n->tx_dropped, 1); /* malformed, or the cable is out: the buffers go back */
    }
    pthread_mutex_lock(&q->lock);
    virtq_push(&q->vq, c->head, 0);
    bool notify = virtq_should_notify(&q->vq);
    pthread_mutex_unlock(&q->lock);
    if (notify)
        virtio_notify(&n->vd, TXQ);
    return true;
}

/* Returns true when chains are left over (the budget ran out). */
static bool process_tx(struct vnet *n)
{
    struct virtio_queue *q = &n->vd.q[TXQ];
    if (!virtio_running(&n->vd) || !q->vq.live)
        return false;
    for (int i = 0; i < TX_BUDGET; i++) {
        bool more;
        if (!tx_one(n, q, &more) || !more)
            return false;
    }
    return true;
}

/* ---- receive ----------------------------------------------------------------------------- */

static bool rx_ready(struct vnet *n)
{
    struct virtio_queue *q = &n->vd.q[RXQ];
    if (!virtio_running(&n->vd))
        return false;
    pthread_mutex_lock(&q->lock);
    bool ready = !q->broken && q->vq.live && (virtq_has_avail(&q->vq) || virtq_enable_notify(&q->vq));
    pthread_mutex_unlock(&q->lock);
    return ready;
}

/* The backend's deliver callback: one frame into the receive queue. */
static bool rx_deliver(void *opaque, const uint8_t *frame, size_t len)
{
    struct vnet *n = opaque;
    struct virtio_queue *q = &n->vd.q[RXQ];
    uint8_t hdr[NET_HDR_LEN] = { 0 };
    const uint8_t *data = frame;
    if (n->be->vnet_hdr) { /* the tap's header: checksum and GSO state for the guest */
        if (len < NET_HDR_LEN)
            return true;
        memcpy(hdr, frame, NET_HDR_LEN);
        data += NET_HDR_LEN, len -= NET_HDR_LEN;
    }
    if (!link_is_up(n)) { /* taken off the backend and dropped, so nothing piles up there */
        count(&n->rx_dropped, 1);
        return true;
    }
    if (!virtio_running(&n->vd))
        return false;
    bool mrg = virtio_has(&n->vd, VIRTIO_NET_F_MRG_RXBUF);
    size_t total = NET_HDR_LEN + len, placed = 0;
    unsigned used = 0;
    uint32_t lens[8];
    pthread_mutex_lock(&q->lock);
    while (placed < total && used < (mrg ? 8u : 1u)) {
        struct virtq_chain *c = &n->rx_chains[used];
        int r = q->broken ? 0 : virtq_pop(&q->vq, c);
        if (r <= 0 || c->nread != 0) { /* no buffer, a bad ring, or a device-readable buffer */
            if (r > 0)
                used++;
            virtq_unpop(&q->vq, (uint16_t)used);
            pthread_mutex_unlock(&q->lock);
            if (r < 0 || (r > 0 && c->nread))
                virtio_queue_error(&n->vd, RXQ,
                                   r < 0 ? virtq_strerror(r) : "a receive buffer is device-readable");
            count(&n->rx_dropped, 1);
            return false;
        }
        size_t w = net_rx_copy(c, placed, hdr, data, len);
        lens[used++] = (uint32_t)w;
        placed += w;
    }
    if (placed < total) { /* too big for what the driver gave: drop it, keep the buffers */
        virtq_unpop(&q->vq, (uint16_t)used);
        pthread_mutex_unlock(&q->lock);
        count(&n->rx_dropped, 1);
        return true;
    }
    net_rx_set_num_buffers(&n->rx_chains[0], (uint16_t)used);
    for (unsigned i = 0; i < used; i++)
        virtq_push(&q->vq, n->rx_chains[i].head, lens[i]);
    bool notify = virtq_should_notify(&q->vq);
    pthread_mutex_unlock(&q->lock);
    count(&n->rx_frames, 1);
    count(&n->rx_bytes, len);
    if (notify)
        virtio_notify(&n->vd, RXQ);
    return true;
}

/* ---- the I/O thread --------------------------------------------------------------------- */

static void drain(int fd)
{
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing was pending */
    }
}

static void *io_thread(void *arg)
{
    struct vnet *n = arg;
    n->vd.svc->thread_sandbox(n->vd.svc->ctx, SANDBOX_NET);
    struct pollfd pfd[3 + NET_MAX_POLLFDS];
    bool tx_more = false;
    for (;;) {
        pfd[0] = (struct pollfd){ .fd = n->quit_fd, .events = POLLIN };
        pfd[1] = (struct pollfd){ .fd = n->vd.q[RXQ].kick_fd, .events = POLLIN };
        pfd[2] = (struct pollfd){ .fd = n->vd.q[TXQ].kick_fd, .events = POLLIN };
        int timeout = tx_more ? 0 : -1;
        /* A link that is down still drains the backend (and drops what it reads). */
        bool take = !link_is_up(n) || rx_ready(n);
        int nb = n->be->ops->poll_fill(n->be, pfd + 3, NET_MAX_POLLFDS, &timeout, take);
        if (poll(pfd, (nfds_t)(3 + nb), timeout) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents)
            break;
        if (pfd[1].revents)
            drain(pfd[1].fd); /* new receive buffers: rx_ready() sees them next round */
        if (pfd[2].revents)
            drain(pfd[2].fd);
        if (pfd[2].revents || tx_more)
            tx_more = process_tx(n);
        n->be->ops->poll_handle(n->be, pfd + 3, nb);
    }
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void kick(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* a full counter wakes the thread anyway */
    }
}

static void net_start(struct virtio_dev *vd)
{
    struct vnet *n = to_vnet(vd);
    if (n->be->ops->set_offload)
        n->be->ops->set_offload(n->be, vd->guest_features);
    kick(vd->q[RXQ].kick_fd);
    kick(vd->q[TXQ].kick_fd);
}

/* Frames are copied synchronously on the I/O thread under the queue locks: once the
 * transport has reset the queues, nothing of the old rings is touched. */
static void net_stop(struct virtio_dev *vd)
{
    struct vnet *n = to_vnet(vd);
    for (unsigned i = 0; i < 2; i++) {
        pthread_mutex_lock(&n->vd.q[i].lock); /* waits for a frame being copied */
        pthread_mutex_unlock(&n->vd.q[i].lock);
    }
}

static void net_destroy(struct virtio_dev *vd)
{
    struct vnet *n = to_vnet(vd);
    if (n->thread_started) {
        kick(n->quit_fd);
        pthread_join(n->thread, NULL);
    }
    if (n->quit_fd >= 0)
        close(n->quit_fd);
    virtio_pci_destroy(vd);
    if (n->be)
        n->be->ops->destroy(n->be);
    free(n);
}

void vnet_set_link(struct vnet *n, bool up)
{
    pthread_mutex_lock(&n->vd.lock);
    bool changed = link_is_up(n) != up;
    if (changed) {
        __atomic_store_n(&n->config[6], (uint8_t)(up ? VIRTIO_NET_S_LINK_UP : 0), __ATOMIC_RELEASE);
        n->vd.config_generation++;
    }
    pthread_mutex_unlock(&n->vd.lock);
    if (changed) {
        virtio_config_changed(&n->vd);
        kick(n->vd.q[RXQ].kick_fd); /* the I/O thread re-reads what it may take from the backend */
    }
}

void vnet_get_stats(struct vnet *n, struct vnet_stats *st)
{
    st->link_up = link_is_up(n);
    st->rx_frames = __atomic_load_n(&n->rx_frames, __ATOMIC_RELAXED);
    st->rx_bytes = __atomic_load_n(&n->rx_bytes, __ATOMIC_RELAXED);
    st->rx_dropped = __atomic_load_n(&n->rx_dropped, __ATOMIC_RELAXED);
    st->tx_frames = __atomic_load_n(&n->tx_frames, __ATOMIC_RELAXED);
    st->tx_bytes = __atomic_load_n(&n->tx_bytes, __ATOMIC_RELAXED);
    st->tx_dropped = __atomic_load_n(&n->tx_dropped, __ATOMIC_RELAXED);
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

/* The MAC the driver was given: a copy restored under another name (or with another mac=)
 * has another one, and the driver must hear of it. */
static int net_save(struct virtio_dev *vd, struct st_writer *w)
{
    st_put(w, "mac", to_vnet(vd)->config, 6);
    return 0;
}

/* Called with the transport loaded (its MSI routes installed): a MAC that differs from the
 * saved one is announced as a configuration change (a new config_generation and the
 * configuration interrupt), on which a driver reads its configuration again. A file
 * without the field (older kvmbox) announces nothing. */
static int net_load(struct virtio_dev *vd, const struct st_section *s, char *err, size_t errlen)
{
    struct vnet *n = to_vnet(vd);
    uint8_t mac[6];
    if (st_get(s, "mac", mac, sizeof(mac)) < 0 || !memcmp(mac, n->config, sizeof(mac)))
        return 0;
    pthread_mutex_lock(&vd->lock);
    vd->config_generation++;
    pthread_mutex_unlock(&vd->lock);
    if (virtio_running(vd))
        virtio_config_changed(vd);
    return 0;
}

static const struct virtio_dev_ops net_ops = {
    .name = "virtio-net",
    .config_read = config_read,
    .save = net_save,
    .load = net_load,
    .start = net_start,
    .stop = net_stop,
    .destroy = net_destroy,
};

int vnet_create(const struct dev_services *svc, struct pci_host *pci, const struct kvmbox_nic *nic,
                unsigned index, const struct vnet_env *env, struct vnet_info *out, char *err, size_t errlen)
{
    struct vnet *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    snprintf(n->name, sizeof(n->name), "virtio-net%u", index);
    n->quit_fd = -1;
    int r = net_backend_open(nic, env->vm_name, env->runtime_dir, env->sandbox, &n->be, err, errlen);
    if (r < 0) {
        char inner[KVMBOX_MSG_MAX];
        snprintf(inner, sizeof(inner), "%s", err);
        errf(err, errlen, r, "--net %u: %s", index + 1, inner);
        free(n);
        return r;
    }
    n->be->deliver = rx_deliver;
    n->be->deliver_opaque = n;
    n->be->log = svc->log; /* what the backend has to say about the guest's traffic */
    n->be->log_opaque = svc->ctx;
    uint8_t *mac = out->mac;
    if (nic->have_mac)
        memcpy(mac, nic->mac, 6);
    else
        net_default_mac(env->vm_name, index, mac);
    memcpy(n->config, mac, 6);
    n->config[6] = VIRTIO_NET_S_LINK_UP;
    n->config[8] = 1; /* max_virtqueue_pairs */
    n->config[10] = MTU & 0xff, n->config[11] = MTU >> 8;
    snprintf(out->desc, sizeof(out->desc), "%s", n->be->desc);
    uint64_t features = 1ULL << VIRTIO_NET_F_MAC | 1ULL << VIRTIO_NET_F_STATUS | 1ULL << VIRTIO_NET_F_MTU |
                        1ULL << VIRTIO_NET_F_MRG_RXBUF;
    if (n->be->vnet_hdr) /* the tap takes and gives partial checksums and GSO frames */
        features |= 1ULL << VIRTIO_NET_F_CSUM | 1ULL << VIRTIO_NET_F_GUEST_CSUM |
                    1ULL << VIRTIO_NET_F_HOST_TSO4 | 1ULL << VIRTIO_NET_F_HOST_TSO6 |
                    1ULL << VIRTIO_NET_F_HOST_ECN | 1ULL << VIRTIO_NET_F_GUEST_TSO4 |
                    1ULL << VIRTIO_NET_F_GUEST_TSO6 | 1ULL << VIRTIO_NET_F_GUEST_ECN;
    r = virtio_pci_init(&n->vd, svc, pci, n->name, VIRTIO_ID_NET, 0x020000, 2, QUEUE_SIZE, sizeof(n->config),
                        features, &net_ops, n);
    if (r < 0) {
        errf(err, errlen, r, "--net %u: cannot create its virtio-net device: %s", index + 1, strerror(-r));
        if (n->vd.registered)
            return r;
        n->be->ops->destroy(n->be);
        free(n);
        return r;
    }
    n->quit_fd = eventfd(0, EFD_CLOEXEC);
    if (n->quit_fd < 0)
        return errf(err, errlen, -errno, "eventfd: %s", strerror(errno));
    if ((r = pthread_create(&n->thread, NULL, io_thread, n)) != 0)
        return errf(err, errlen, -r, "cannot start a network thread: %s", strerror(r));
    n->thread_started = true;
    char tn[16];
    snprintf(tn, sizeof(tn), "net%u", index);
    pthread_setname_np(n->thread, tn);
    out->slot = n->vd.pci.slot;
    out->dev = n;
    return 0;
}
