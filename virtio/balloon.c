/* virtio-balloon (virtio 1.2, 5.5): inflate, deflate, statistics and free page reporting.
 *
 * The host sets a target (num_pages: pages the guest should give up); the guest inflates by
 * sending page frame numbers, which kvmbox returns to the host with MADV_DONTNEED, so they
 * read as zeroes when the guest touches them after deflating. Free page reporting sends
 * ranges of free guest memory that are given back the same way, without any target. The
 * statistics buffer is held by the device and given back to the guest whenever fresh
 * figures are wanted (every stats_interval seconds). One thread serves all the queues. */
#include "virtio/balloon.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "virtio/virtio.h"
#include "devices/services.h"
#include "vmm/guest_mem.h"
#include "common/util.h"
#include "vmm/state.h"

#define VIRTIO_ID_BALLOON 5
#define QUEUE_SIZE        128
#define NQUEUES           4
#define PAGE              4096ULL

#define VIRTIO_BALLOON_F_STATS_VQ       1
#define VIRTIO_BALLOON_F_DEFLATE_ON_OOM 2
#define VIRTIO_BALLOON_F_PAGE_REPORTING 5

enum role { INFLATE, DEFLATE, STATS, REPORTING, NROLES };

struct vballoon {
    struct virtio_dev vd;
    struct guest_mem *mem;      /* guest RAM (the VM's, through its services) */
    pthread_mutex_t lock;       /* config, stats, counters */
    uint32_t num_pages, actual; /* the configuration space */
    int qi[NROLES];             /* queue index of each role for the negotiated features:
                                      qindex() (written at DRIVER_OK on a vCPU thread, read by
                                      the balloon and API threads) */
    int stats_head;             /* the statistics chain held by the device, or -1 */
    struct balloon_stats stats;
    uint64_t stats_ns;
    unsigned stats_interval;
    uint64_t released, reported;
    pthread_t thread;
    bool thread_started;
    int quit_fd, timer_fd;
    struct virtq_chain chain;
};

static struct vballoon *to_vb(struct virtio_dev *vd)
{
    return (struct vballoon *)vd;
}

/* ---- configuration space: num_pages (host), actual (guest) ------------------------------ */

static void config_read(struct virtio_dev *vd, unsigned off, void *data, unsigned len)
{
    struct vballoon *b = to_vb(vd);
    uint8_t c[8];
    pthread_mutex_lock(&b->lock);
    memcpy(c, &b->num_pages, 4);
    memcpy(c + 4, &b->actual, 4);
    pthread_mutex_unlock(&b->lock);
    memcpy(data, c + off, len);
}

static void config_write(struct virtio_dev *vd, unsigned off, const void *data, unsigned len)
{
    struct vballoon *b = to_vb(vd);
    if (off < 4 || off + len > 8)
        return; /* num_pages is the device's */
    pthread_mutex_lock(&b->lock);
    uint8_t c[4];
    memcpy(c, &b->actual, 4);
    memcpy(c + (off - 4), data, len);
    memcpy(&b->actual, c, 4);
    pthread_mutex_unlock(&b->lock);
}

/* ---- queues ------------------------------------------------------------------------------- */

/* Atomic, relaxed: each entry is one int on its own, and the queue it names has its lock. */
static int qindex(struct vballoon *b, int role)
{
    return __atomic_load_n(&b->qi[role], __ATOMIC_RELAXED);
}

/* Takes one chain of queue ROLE; 1 with b->chain filled, 0 when empty, -1 on a bad ring. */
static int pop(struct vballoon *b, int role)
{
    int qi = qindex(b, role);
    if (qi < 0)
        return 0;
    struct virtio_queue *q = &b->vd.q[qi];
    pthread_mutex_lock(&q->lock);
    int r = q->broken || !q->vq.live ? 0 : virtq_pop(&q->vq, &b->chain);
    if (r == 0 && !q->broken && q->vq.live && virtq_enable_notify(&q->vq))
        r = virtq_pop(&q->vq, &b->chain);
    pthread_mutex_unlock(&q->lock);
    if (r < 0) {
        virtio_queue_error(&b->vd, (unsigned)qi, virtq_strerror(r));
        return -1;
    }
    return r;
}

static void give_back(struct vballoon *b, int role, uint16_t head, uint32_t len)
{
    int qi = qindex(b, role);
    if (qi < 0)
        return;
    struct virtio_queue *q = &b->vd.q[qi];
    pthread_mutex_lock(&q->lock);
    virtq_push(&q->vq, head, len);
    bool notify = virtq_should_notify(&q->vq);
    pthread_mutex_unlock(&q->lock);
    if (notify)
        virtio_notify(&b->vd, (unsigned)qi);
}

/* Releases a run of contiguous guest pages. */
static uint64_t release(struct vballoon *b, uint64_t gpa, uint64_t len)
{
    int64_t r = gm_discard(b->mem, gpa, len);
    return r > 0 ? (uint64_t)r : 0; /* a PFN outside RAM is ignored: nothing to give back */
}

/* Inflate: the buffers hold 32-bit PFNs of 4 KiB pages; runs are released together. */
static void inflate(struct vballoon *b)
{
    int r;
    while ((r = pop(b, INFLATE)) > 0) {
        uint64_t run = 0, len = 0, freed = 0;
        for (unsigned s = 0; s < b->chain.nread; s++) {
            const uint8_t *p = b->chain.seg[s].ptr;
            for (uint32_t o = 0; o + 4 <= b->chain.seg[s].len; o += 4) {
                uint32_t pfn;
                memcpy(&pfn, p + o, 4);
                uint64_t gpa = (uint64_t)pfn * PAGE;
                if (len && gpa == run + len) {
                    len += PAGE;
                    continue;
                }
                if (len)
                    freed += release(b, run, len);
                run = gpa, len = PAGE;
            }
        }
        if (len)
            freed += release(b, run, len);
        pthread_mutex_lock(&b->lock);
        b->released += freed;
        pthread_mutex_unlock(&b->lock);
        give_back(b, INFLATE, b->chain.head, 0);
    }
}

/* Deflate: the guest takes pages back; they fault in as zeroes, nothing to do here. */
static void deflate(struct vballoon *b)
{
    while (pop(b, DEFLATE) > 0)
        give_back(b, DEFLATE, b->chain.head, 0);
}

/* Free page reporting: each buffer is a range of free guest memory. */
static void reporting(struct vballoon *b)
{
    while (pop(b, REPORTING) > 0) {
        uint64_t freed = 0;
        /* Reported ranges are the device-writable buffers (5.5.6.7); nothing is written
         * into them, so the used length is 0. */
        for (unsigned s = b->chain.nread; s < b->chain.nseg; s++) {
            /* The chain names guest memory by address: turn its host pointer back into a GPA. */
            const struct guest_mem *gm = b->mem;
            uint8_t *ptr = b->chain.seg[s].ptr;
            for (unsigned i = 0; i < gm->nregions; i++) {
                const struct gm_region *g = &gm->regions[i];
                if (ptr >= g->host && ptr < g->host + g->size) {
                    freed += release(b, g->gpa + (uint64_t)(ptr - g->host), b->chain.seg[s].len);
                    break;
                }
            }
        }
        pthread_mutex_lock(&b->lock);
        b->released += freed;
        b->reported += freed;
        pthread_mutex_unlock(&b->lock);
        give_back(b, REPORTING, b->chain.head, 0);
    }
}

static const int stat_slot[] = {
    /* VIRTIO_BALLOON_S_* tag -> field order in balloon_stats */
    [0] = 0, [1] = 1, [2] = 2, [3] = 3, [4] = 4, [5] = 5, [6] = 6, [7] = 7,
};

/* Statistics: a readable buffer of {le16 tag, le64 value} pairs; the device keeps the chain
 * until it wants fresh figures. */
static void stats_arrived(struct vballoon *b)
{
    while (pop(b, STATS) > 0) {
        int64_t v[8];
        for (int i = 0; i < 8; i++)
            v[i] = -1;
        uint8_t buf[10];
        for (unsigned s = 0; s < b->chain.nread; s++)
            for (uint32_t o = 0; o + 10 <= b->chain.seg[s].len; o += 10) {
                memcpy(buf, b->chain.seg[s].ptr + o, 10);
                uint16_t tag = (uint16_t)(buf[0] | buf[1] << 8);
                uint64_t val;
                memcpy(&val, buf + 2, 8);
                if (tag < 8)
                    v[stat_slot[tag]] = (int64_t)(val > INT64_MAX ? INT64_MAX : val);
            }
        pthread_mutex_lock(&b->lock);
        b->stats = (struct balloon_stats){ .swap_in = v[0],
                                           .swap_out = v[1],
                                           .major_faults = v[2],
                                           .minor_faults = v[3],
                                           .free = v[4],
                                           .total = v[5],
                                           .available = v[6],
                                           .caches = v[7] };
        b->stats_ns = monotonic_ns();
        if (b->stats_head >= 0) /* a driver that sends a second buffer: give the first back */
            give_back(b, STATS, (uint16_t)b->stats_head, 0);
        b->stats_head = b->chain.head;
        pthread_mutex_unlock(&b->lock);
    }
}

/* Asks the guest for fresh statistics by returning the buffer it left with us. */
static void stats_request(struct vballoon *b)
{
    pthread_mutex_lock(&b->lock);
    int head = b->stats_head;
    b->stats_head = -1;
    pthread_mutex_unlock(&b->lock);
    if (head >= 0 && qindex(b, STATS) >= 0 && virtio_running(&b->vd))
        give_back(b, STATS, (uint16_t)head, 0);
}

static void drain(int fd)
{
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0) {
        /* EAGAIN */
    }
}

static void *io_thread(void *arg)
{
    struct vballoon *b = arg;
    pthread_setname_np(pthread_self(), "balloon"); /* a prctl: cheaper than from outside */
    b->vd.svc->thread_sandbox(b->vd.svc->ctx, SANDBOX_BALLOON);
    struct pollfd p[2 + NQUEUES];
    for (;;) {
        p[0] = (struct pollfd){ .fd = b->quit_fd, .events = POLLIN };
        p[1] = (struct pollfd){ .fd = b->timer_fd, .events = POLLIN };
        for (int i = 0; i < NQUEUES; i++)
            p[2 + i] = (struct pollfd){ .fd = b->vd.q[i].kick_fd, .events = POLLIN };
        if (poll(p, 2 + NQUEUES, -1) < 0 && errno != EINTR)
            return NULL;
        if (p[0].revents)
            return NULL;
        for (int i = 0; i < NQUEUES; i++)
            if (p[2 + i].revents)
                drain(p[2 + i].fd);
        if (p[1].revents) {
            drain(p[1].fd);
            stats_request(b);
        }
        if (!virtio_running(&b->vd))
            continue;
        inflate(b);
        deflate(b);
        reporting(b);
        stats_arrived(b);
    }
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void arm_timer(struct vballoon *b)
{
    struct itimerspec t = { 0 };
    t.it_interval.tv_sec = t.it_value.tv_sec = b->stats_interval;
    timerfd_settime(b->timer_fd, 0, &t, NULL);
}

static void kick(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* a full counter wakes the thread anyway */
    }
}

/* Queue numbers follow the negotiated features (5.5.2): statsq only with STATS_VQ, and
 * reporting_vq after it only with PAGE_REPORTING. */
static void balloon_start(struct virtio_dev *vd)
{
    struct vballoon *b = to_vb(vd);
    int next = 2;
    __atomic_store_n(&b->qi[INFLATE], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&b->qi[DEFLATE], 1, __ATOMIC_RELAXED);
    __atomic_store_n(&b->qi[STATS], virtio_has(vd, VIRTIO_BALLOON_F_STATS_VQ) ? next++ : -1,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&b->qi[REPORTING], virtio_has(vd, VIRTIO_BALLOON_F_PAGE_REPORTING) ? next++ : -1,
                     __ATOMIC_RELAXED);
    for (int i = 0; i < NQUEUES; i++)
        kick(vd->q[i].kick_fd);
}

static void balloon_stop(struct virtio_dev *vd)
{
    struct vballoon *b = to_vb(vd);
    for (unsigned i = 0; i < NQUEUES; i++) { /* waits for a chain being handled */
        pthread_mutex_lock(&vd->q[i].lock);
        pthread_mutex_unlock(&vd->q[i].lock);
    }
    pthread_mutex_lock(&b->lock);
    b->stats_head = -1;
    b->actual = 0;
    pthread_mutex_unlock(&b->lock);
}

static void balloon_destroy(struct virtio_dev *vd)
{
    struct vballoon *b = to_vb(vd);
    if (b->thread_started) {
        kick(b->quit_fd);
        pthread_join(b->thread, NULL);
    }
    if (b->quit_fd >= 0)
        close(b->quit_fd);
    if (b->timer_fd >= 0)
        close(b->timer_fd);
    virtio_pci_destroy(vd);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static int balloon_save(struct virtio_dev *vd, struct st_writer *w);
static int balloon_load(struct virtio_dev *vd, const struct st_section *s, char *err, size_t errlen);

static const struct virtio_dev_ops balloon_ops = {
    .name = "virtio-balloon",
    .config_read = config_read,
    .config_write = config_write,
    .start = balloon_start,
    .stop = balloon_stop,
    .destroy = balloon_destroy,
    .save = balloon_save,
    .load = balloon_load,
};

int vballoon_set_target(struct vballoon *b, uint64_t target, char *err, size_t errlen)
{
    uint64_t mem = b->mem->ram_size;
    char t[32], m[32], f[32];
    format_size(target, t, sizeof(t));
    format_size(mem, m, sizeof(m));
    format_size(BALLOON_MIN_TARGET, f, sizeof(f));
    if (target > mem)
        return errf(err, errlen, -ERANGE, "target %s is more than the guest's memory (%s)", t, m);
    if (target < BALLOON_MIN_TARGET)
        return errf(err, errlen, -ERANGE, "target %s is below the floor of %s", t, f);
    pthread_mutex_lock(&b->lock);
    b->num_pages = (uint32_t)((mem - target) / PAGE);
    pthread_mutex_unlock(&b->lock);
    pthread_mutex_lock(&b->vd.lock);
    b->vd.config_generation++;
    pthread_mutex_unlock(&b->vd.lock);
    virtio_config_changed(&b->vd);
    return 0;
}

void vballoon_set_stats_interval(struct vballoon *b, unsigned secs)
{
    pthread_mutex_lock(&b->lock);
    b->stats_interval = secs;
    arm_timer(b);
    pthread_mutex_unlock(&b->lock);
    if (secs)
        stats_request(b); /* fresh figures now, not only after the first interval */
}

void vballoon_get_info(struct vballoon *b, struct balloon_info *info)
{
    pthread_mutex_lock(&b->lock);
    uint64_t mem = b->mem->ram_size;
    info->target = mem - (uint64_t)b->num_pages * PAGE;
    /* The guest writes actual: a value beyond its memory is its own nonsense, shown as 0. */
    uint64_t given = (uint64_t)b->actual * PAGE;
    info->actual = given < mem ? mem - given : 0;
    info->released = b->released;
    info->reported = b->reported;
    info->stats_interval = b->stats_interval;
    info->reporting = qindex(b, REPORTING) >= 0 && virtio_running(&b->vd);
    info->stats = b->stats;
    info->stats.age_ms = b->stats_ns ? (monotonic_ns() - b->stats_ns) / 1000000 : UINT64_MAX;
    pthread_mutex_unlock(&b->lock);
}

int vballoon_create(const struct dev_services *svc, struct pci_host *pci, struct vballoon **out, char *err,
                    size_t errlen)
{
    struct vballoon *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->mem = svc->mem;
    b->stats_head = -1;
    b->quit_fd = b->timer_fd = -1;
    b->stats_interval = 5;
    for (int i = 0; i < NROLES; i++)
        b->qi[i] = -1;
    pthread_mutex_init(&b->lock, NULL);
    uint64_t features = 1ULL << VIRTIO_BALLOON_F_STATS_VQ | 1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM |
                        1ULL << VIRTIO_BALLOON_F_PAGE_REPORTING;
    int r = virtio_pci_init(&b->vd, svc, pci, "virtio-balloon", VIRTIO_ID_BALLOON, 0x00ff00, NQUEUES,
                            QUEUE_SIZE, 8, features, &balloon_ops, b);
    if (r < 0) {
        errf(err, errlen, r, "cannot create the virtio-balloon device: %s", strerror(-r));
        if (b->vd.registered)
            return r;
        pthread_mutex_destroy(&b->lock);
        free(b);
        return r;
    }
    b->quit_fd = eventfd(0, EFD_CLOEXEC);
    b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (b->quit_fd < 0 || b->timer_fd < 0)
        return errf(err, errlen, -errno, "eventfd/timerfd: %s", strerror(errno));
    arm_timer(b);
    if ((r = pthread_create(&b->thread, NULL, io_thread, b)) != 0)
        return errf(err, errlen, -r, "cannot start the balloon thread: %s", strerror(r));
    b->thread_started = true;
    *out = b;
    return 0;
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

/* The target and what the guest reported, and the statistics buffer the device holds (so
 * the driver's next statistics round still gets its buffer back). */
static int balloon_save(struct virtio_dev *vd, struct st_writer *w)
{
    struct vballoon *b = to_vb(vd);
    pthread_mutex_lock(&b->lock);
    st_put_u32(w, "num_pages", b->num_pages);
    st_put_u32(w, "actual", b->actual);
    st_put_u32(w, "stats_head", (uint32_t)b->stats_head);
    st_put_u32(w, "stats_interval", b->stats_interval);
    pthread_mutex_unlock(&b->lock);
    return 0;
}

static int balloon_load(struct virtio_dev *vd, const struct st_section *s, char *err, size_t errlen)
{
    struct vballoon *b = to_vb(vd);
    uint64_t num, actual, head, interval;
    uint64_t pages = b->mem->ram_size / PAGE;
    int r;
    if ((r = st_need_uint(s, "num_pages", pages, &num, err, errlen)) < 0 ||
        (r = st_need_uint(s, "actual", UINT32_MAX, &actual, err, errlen)) < 0 ||
        (r = st_need_uint(s, "stats_head", UINT32_MAX, &head, err, errlen)) < 0 ||
        (r = st_need_uint(s, "stats_interval", 86400, &interval, err, errlen)) < 0)
        return r;
    if (head != UINT32_MAX && head >= VIRTQ_MAX_SIZE)
        return errf(err, errlen, -EBADMSG, "saved state: the balloon's statistics buffer is out of range");
    pthread_mutex_lock(&b->lock);
    b->num_pages = (uint32_t)num;
    b->actual = (uint32_t)actual;
    b->stats_head = head == UINT32_MAX ? -1 : (int)head;
    b->stats_interval = (unsigned)interval;
    pthread_mutex_unlock(&b->lock);
    return 0;
}
