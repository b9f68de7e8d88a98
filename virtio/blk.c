/* virtio-blk (virtio 1.2, 5.2) on the block layer.
 *
 * Data path: the driver rings a queue's doorbell -> the ioeventfd wakes this device's queue
 * thread -> it pops chains, parses each into a request and hands it to a pool of I/O workers
 * -> a worker runs the block-layer call, writes the status, pushes the used element and
 * raises the queue's MSI-X vector through an irqfd. No vCPU thread waits for I/O.
 *
 * Raw images take a faster path: reads, writes and flushes go to the image file through
 * io_uring, submitted and reaped by the queue thread itself, so a request costs no thread
 * switch. qcow2 (whose driver maps clusters and updates metadata synchronously) and the rare
 * requests (GET_ID, DISCARD, WRITE_ZEROES, unaligned transfers) go to the worker pool.
 * docs/virtio.md has the measurements behind this split. */
#include "virtio/blk.h"

#include <errno.h>
#include <liburing.h>
#include <stdarg.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "block/block.h"
#include "virtio/blk_req.h"
#include "virtio/virtio.h"
#include "devices/services.h"
#include "common/util.h"
#include "vmm/state.h"

#define VIRTIO_ID_BLOCK     2
#define QUEUE_SIZE          256
#define SEG_MAX             (QUEUE_SIZE - 2)
#define SIZE_MAX_SEG        (1u << 20) /* largest segment the driver may send */
#define DEFAULT_WORKERS     4
#define MAX_WORKERS         64
#define MAX_DISCARD_SECTORS (1u << 22)

#define VIRTIO_BLK_F_SIZE_MAX     1
#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_TOPOLOGY     10
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

struct blk_io {
    struct blk_io *next;
    unsigned qi;
    uint64_t expect; /* io_uring: the byte count a complete transfer returns */
    bool mapped;     /* io_uring transfer through blk_map(): blk_map_done() after */
    struct virtq_chain chain;
    struct blk_req req;
};

struct vblk {
    struct virtio_dev vd;
    struct blk *blk;
    char name[32];
    const char *path; /* the image, for messages (the VM owns the string) */
    char serial[VIRTIO_BLK_ID_BYTES + 1];
    struct blk_req_limits lim;
    uint8_t config[64];

    pthread_t queue_thread;
    bool queue_thread_started;
    int quit_fd;

    pthread_mutex_t lock; /* the work list, in-flight count, free list, stopping */
    pthread_cond_t work_cond, idle_cond;
    struct blk_io *work_head, *work_tail, *free_list;
    unsigned inflight;
    bool stopping, quit;
    pthread_t workers[MAX_WORKERS];
    unsigned nworkers;

    /* Run-time trouble, for the host: counters read by `kvmbox info` (relaxed atomics, one
     * writer per increment) and log lines, at most LOG_BURST per LOG_WINDOW_NS. */
    bool corrupt;             /* the block layer fenced the image off */
    uint64_t io_errors;       /* requests completed with IOERR because I/O failed */
    pthread_mutex_t log_lock; /* the fields below */
    uint64_t log_window;      /* start of the current window (monotonic ns) */
    unsigned log_count, log_suppressed;

    bool uring; /* mapped reads and writes (and raw flushes) through io_uring */
    struct io_uring ring;
    int ring_fd;           /* eventfd signalled on completions */
    unsigned ring_pending; /* prepared, not yet submitted */
};

static struct vblk *to_vblk(struct virtio_dev *vd)
{
    return (struct vblk *)vd;
}

/* ---- configuration space --------------------------------------------------------------- */

static void build_config(struct vblk *b, uint32_t opt_io_sectors)
{
    uint8_t *c = b->config;
    virtio_put_le(c, 0, b->lim.capacity, 8);
    virtio_put_le(c, 8, SIZE_MAX_SEG, 4);
    virtio_put_le(c, 12, SEG_MAX, 4);
    virtio_put_le(c, 20, 512, 4);            /* blk_size */
    c[24] = 0;                               /* physical_block_exp */
    c[25] = 0;                               /* alignment_offset */
    virtio_put_le(c, 26, 1, 2);              /* min_io_size, in blocks */
    virtio_put_le(c, 28, opt_io_sectors, 4); /* opt_io_size: a qcow2 cluster */
    virtio_put_le(c, 34, 1, 2);              /* num_queues */
    virtio_put_le(c, 36, b->lim.max_discard_sectors, 4);
    virtio_put_le(c, 40, 1, 4);                                   /* max_discard_seg */
    virtio_put_le(c, 44, opt_io_sectors ? opt_io_sectors : 8, 4); /* discard_sector_alignment */
    virtio_put_le(c, 48, b->lim.max_write_zeroes_sectors, 4);
    virtio_put_le(c, 52, 1, 4); /* max_write_zeroes_seg */
    c[56] = 1;                  /* write_zeroes_may_unmap */
}

static void config_read(struct virtio_dev *vd, unsigned off, void *data, unsigned len)
{
    memcpy(data, to_vblk(vd)->config + off, len);
}

/* ---- what the host hears ---------------------------------------------------------------- */

#define LOG_BURST     10
#define LOG_WINDOW_NS (60ULL * 1000000000)

/* A line for the VM's log, unless this disk has said LOG_BURST things this minute already
 * (how many were held back is said when the next minute starts). */
static void disk_log(struct vblk *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void disk_log(struct vblk *b, const char *fmt, ...)
{
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    uint64_t now = monotonic_ns();
    unsigned held_back = 0;
    pthread_mutex_lock(&b->log_lock);
    if (now - b->log_window >= LOG_WINDOW_NS) {
        held_back = b->log_suppressed;
        b->log_window = now, b->log_count = 0, b->log_suppressed = 0;
    }
    bool say = b->log_count < LOG_BURST;
    if (say)
        b->log_count++;
    else
        b->log_suppressed++;
    pthread_mutex_unlock(&b->log_lock);
    if (held_back)
        dev_log(b->vd.svc, "disk %s: %u more messages were held back", b->path, held_back);
    if (say)
        dev_log(b->vd.svc, "disk %s: %s", b->path, line);
}

/* The block layer fenced the image off (blk_set_event_fn): said once, whatever the rate. */
static void disk_event(void *opaque, const char *msg)
{
    struct vblk *b = opaque;
    __atomic_store_n(&b->corrupt, true, __ATOMIC_RELAXED);
    dev_log(b->vd.svc, "disk %s: %s", b->path, msg);
}

static const char *req_name(uint32_t type)
{
    switch (type) {
    case VIRTIO_BLK_T_IN: return "read";
    case VIRTIO_BLK_T_OUT: return "write";
    case VIRTIO_BLK_T_FLUSH: return "flush";
    case VIRTIO_BLK_T_DISCARD: return "discard";
    case VIRTIO_BLK_T_WRITE_ZEROES: return "write-zeroes";
    default: return "request";
    }
}

/* A request failed on the host (not the guest's mistake): counted and said. */
static void io_failed(struct vblk *b, const struct blk_req *r, int err)
{
    __atomic_fetch_add(&b->io_errors, 1, __ATOMIC_RELAXED);
    disk_log(b, "%s of %llu bytes at offset %llu failed: %s; the guest gets an I/O error", req_name(r->type),
             (unsigned long long)r->len, (unsigned long long)r->offset, strerror(-err));
}

void vblk_get_state(struct vblk *b, struct vblk_state *st)
{
    st->corrupt = __atomic_load_n(&b->corrupt, __ATOMIC_RELAXED);
    st->io_errors = __atomic_load_n(&b->io_errors, __ATOMIC_RELAXED);
}

/* ---- requests -------------------------------------------------------------------------- */

struct blk *vblk_image(struct vblk *b)
{
    return b->blk;
}

static int run_request(struct vblk *b, struct blk_req *r)
{
    switch (r->type) {
    case VIRTIO_BLK_T_IN: return blk_preadv(b->blk, r->iov, r->niov, r->offset);
    case VIRTIO_BLK_T_OUT: return blk_pwritev(b->blk, r->iov, r->niov, r->offset);
    case VIRTIO_BLK_T_FLUSH: return blk_flush(b->blk);
    case VIRTIO_BLK_T_GET_ID: {
        char id[VIRTIO_BLK_ID_BYTES] = { 0 };
        memcpy(id, b->serial, strnlen(b->serial, sizeof(id)));
        size_t done = 0;
        for (int i = 0; i < r->niov; i++) {
            memcpy(r->iov[i].iov_base, id + done, r->iov[i].iov_len);
            done += r->iov[i].iov_len;
        }
        return 0;
    }
    case VIRTIO_BLK_T_DISCARD: return blk_discard(b->blk, r->offset, r->len);
    case VIRTIO_BLK_T_WRITE_ZEROES:
        return blk_write_zeroes(b->blk, r->offset, r->len, r->unmap ? BLK_ZERO_MAY_UNMAP : 0);
    default: return -ENOTSUP;
    }
}

/* Writes the status, gives the chain back and interrupts the driver if it wants that. */
static void complete(struct vblk *b, struct blk_io *io, uint8_t status, uint32_t written)
{
    struct virtio_queue *q = &b->vd.q[io->qi];
    *io->req.status = status;
    pthread_mutex_lock(&q->lock);
    virtq_push(&q->vq, io->chain.head, written);
    bool notify = virtq_should_notify(&q->vq);
    pthread_mutex_unlock(&q->lock);
    if (notify)
        virtio_notify(&b->vd, io->qi);
}

static void release(struct vblk *b, struct blk_io *io)
{
    pthread_mutex_lock(&b->lock);
    io->next = b->free_list;
    b->free_list = io;
    if (--b->inflight == 0)
        pthread_cond_broadcast(&b->idle_cond);
    pthread_mutex_unlock(&b->lock);
}

static void *worker(void *arg)
{
    struct vblk *b = arg;
    b->vd.svc->thread_sandbox(b->vd.svc->ctx, SANDBOX_BLK);
    for (;;) {
        pthread_mutex_lock(&b->lock);
        while (!b->work_head && !b->quit)
            pthread_cond_wait(&b->work_cond, &b->lock);
        struct blk_io *io = b->work_head;
        if (!io) {
            pthread_mutex_unlock(&b->lock);
            return NULL;
        }
        b->work_head = io->next;
        if (!b->work_head)
            b->work_tail = NULL;
        pthread_mutex_unlock(&b->lock);
        int r = run_request(b, &io->req);
        if (r < 0 && r != -ENOTSUP)
            io_failed(b, &io->req, r);
        uint32_t written = 1 + (io->req.type == VIRTIO_BLK_T_IN || io->req.type == VIRTIO_BLK_T_GET_ID
                                    ? (uint32_t)io->req.len
                                    : 0);
        complete(b, io, r < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK, r < 0 ? 1 : written);
        release(b, io);
    }
}

/* Takes a request slot; NULL when the device is stopping (the chain is then dropped: the
 * driver is resetting the device). */
static struct blk_io *get_io(struct vblk *b)
{
    pthread_mutex_lock(&b->lock);
    struct blk_io *io = NULL;
    if (!b->stopping) {
        io = b->free_list;
        if (io)
            b->free_list = io->next;
        else
            io = malloc(sizeof(*io));
        if (io)
            b->inflight++;
    }
    pthread_mutex_unlock(&b->lock);
    return io;
}

/* Requests for the pool, gathered over one round of the queue and handed over at once. */
struct batch {
    struct blk_io *head, *tail;
    unsigned n;
};

static void batch_add(struct batch *bt, struct blk_io *io)
{
    io->next = NULL;
    if (bt->tail)
        bt->tail->next = io;
    else
        bt->head = io;
    bt->tail = io;
    bt->n++;
}

static void batch_submit(struct vblk *b, struct batch *bt)
{
    if (!bt->n)
        return;
    pthread_mutex_lock(&b->lock);
    if (b->work_tail)
        b->work_tail->next = bt->head;
    else
        b->work_head = bt->head;
    b->work_tail = bt->tail;
    if (bt->n == 1)
        pthread_cond_signal(&b->work_cond);
    else
        pthread_cond_broadcast(&b->work_cond);
    pthread_mutex_unlock(&b->lock);
    *bt = (struct batch){ 0 };
}

/* ---- io_uring (raw images) --------------------------------------------------------------- */

/* Submits what is prepared. When the kernel refuses for now (EAGAIN, EBUSY: memory or
 * completion-queue pressure), the entries stay in the submission queue and the queue thread
 * tries again within a millisecond (queue_thread): a request is never left unsubmitted,
 * which would leave it in flight for ever and a device reset waiting on it. */
static void ring_submit(struct vblk *b)
{
    if (!b->uring || !io_uring_sq_ready(&b->ring))
        return;
    int r;
    do
        r = io_uring_submit(&b->ring);
    while (r == -EINTR);
    b->ring_pending = io_uring_sq_ready(&b->ring);
}

/* Prepares IO on the ring when it can go there; false sends it to the pool. */
static bool ring_prepare(struct vblk *b, struct blk_io *io)
{
    struct blk_req *r = &io->req;
    if (!b->uring ||
        (r->type != VIRTIO_BLK_T_IN && r->type != VIRTIO_BLK_T_OUT && r->type != VIRTIO_BLK_T_FLUSH))
        return false;
    bool write = r->type == VIRTIO_BLK_T_OUT;
    int fd = -1;
    uint64_t host = 0;
    io->mapped = false;
    if (r->type == VIRTIO_BLK_T_FLUSH) /* honest for raw: the data on stable storage, as blk_flush */
        fd = blk_raw_flush_fd(b->blk);
    else if (blk_map(b->blk, r->iov, r->niov, r->offset, r->len, write, &fd, &host) == 1)
        io->mapped = true;
    if (fd < 0)
        return false; /* qcow2 metadata to write back, or clusters to allocate: the pool */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    if (!sqe) { /* full: push out what is prepared and try once more */
        ring_submit(b);
        sqe = io_uring_get_sqe(&b->ring);
    }
    if (!sqe) {
        if (io->mapped)
            blk_map_done(b->blk, write);
        io->mapped = false;
        return false;
    }
    if (r->type == VIRTIO_BLK_T_IN)
        io_uring_prep_readv(sqe, fd, r->iov, (unsigned)r->niov, host);
    else if (write)
        io_uring_prep_writev(sqe, fd, r->iov, (unsigned)r->niov, host);
    else
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io->expect = r->type == VIRTIO_BLK_T_FLUSH ? 0 : r->len;
    io_uring_sqe_set_data(sqe, io);
    b->ring_pending++;
    return true;
}

/* Completions from the ring: pushed to the used ring together, one interrupt for all. A
 * short transfer (a file that shrank under us) is finished by the pool. */
static void ring_reap(struct vblk *b)
{
    uint64_t v;
    if (read(b->ring_fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: completions already reaped */
    }
    struct virtio_queue *q = &b->vd.q[0];
    struct blk_io *done[256];
    uint8_t st[256];
    unsigned n = 0;
    struct batch retry = { 0 };
    struct io_uring_cqe *cqe;
    while (n < 256 && io_uring_peek_cqe(&b->ring, &cqe) == 0) {
        struct blk_io *io = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&b->ring, cqe);
        if (io->mapped)
            blk_map_done(b->blk, io->req.type == VIRTIO_BLK_T_OUT);
        if (res >= 0 && (uint64_t)res == io->expect) {
            done[n] = io, st[n++] = VIRTIO_BLK_S_OK;
        } else if (res >= 0 || res == -EINTR || res == -EAGAIN) {
            batch_add(&retry, io);
        } else {
            io_failed(b, &io->req, res);
            done[n] = io, st[n++] = VIRTIO_BLK_S_IOERR;
        }
    }
    if (n) {
        pthread_mutex_lock(&q->lock);
        for (unsigned i = 0; i < n; i++) {
            *done[i]->req.status = st[i];
            uint32_t w = 1 + (st[i] == VIRTIO_BLK_S_OK && done[i]->req.type == VIRTIO_BLK_T_IN
                                  ? (uint32_t)done[i]->req.len
                                  : 0);
            virtq_push(&q->vq, done[i]->chain.head, w);
        }
        bool notify = virtq_should_notify(&q->vq);
        pthread_mutex_unlock(&q->lock);
        if (notify)
            virtio_notify(&b->vd, 0);
        for (unsigned i = 0; i < n; i++)
            release(b, done[i]);
    }
    batch_submit(b, &retry);
    if (io_uring_cq_ready(&b->ring)) { /* more than one round's worth: come back */
        uint64_t one = 1;
        if (write(b->ring_fd, &one, sizeof(one)) < 0) {
            /* a full counter: the thread wakes anyway */
        }
    }
}

/* Parses one popped chain: bad requests are answered at once, good ones go to the ring or to
 * the pool. Returns false when the request cannot even carry a status (the device needs a
 * reset). */
static bool dispatch(struct vblk *b, struct blk_io *io, struct batch *bt)
{
    int r = blk_req_parse(&io->chain, &b->lim, &io->req);
    if (r == 0) {
        if (!ring_prepare(b, io))
            batch_add(bt, io);
        return true;
    }
    int st = blk_req_status(r);
    if (st < 0) {
        unsigned qi = io->qi;
        release(b, io);
        virtio_queue_error(&b->vd, qi, blk_req_strerror(r));
        return false;
    }
    complete(b, io, (uint8_t)st, 1);
    release(b, io);
    return true;
}

static void process_queue_batch(struct vblk *b, unsigned qi, struct batch *bt)
{
    struct virtio_queue *q = &b->vd.q[qi];
    for (;;) {
        pthread_mutex_lock(&q->lock);
        if (!virtio_running(&b->vd) || q->broken || !q->vq.live) {
            pthread_mutex_unlock(&q->lock);
            return;
        }
        struct blk_io *io = get_io(b);
        if (!io) {
            pthread_mutex_unlock(&q->lock);
            return;
        }
        io->qi = qi;
        int r = virtq_pop(&q->vq, &io->chain);
        if (r == 0 && virtq_enable_notify(&q->vq))
            r = virtq_pop(&q->vq, &io->chain);
        pthread_mutex_unlock(&q->lock);
        if (r <= 0) {
            release(b, io);
            if (r < 0)
                virtio_queue_error(&b->vd, qi, virtq_strerror(r));
            return;
        }
        if (!dispatch(b, io, bt))
            return;
    }
}

static void process_queue(struct vblk *b, unsigned qi)
{
    struct batch bt = { 0 };
    process_queue_batch(b, qi, &bt);
    ring_submit(b);
    batch_submit(b, &bt);
}

static void *queue_thread(void *arg)
{
    struct vblk *b = arg;
    b->vd.svc->thread_sandbox(b->vd.svc->ctx, SANDBOX_BLK);
    struct pollfd p[3] = { { .fd = b->vd.q[0].kick_fd, .events = POLLIN },
                           { .fd = b->quit_fd, .events = POLLIN },
                           { .fd = b->uring ? b->ring_fd : -1, .events = POLLIN } };
    for (;;) {
        if (poll(p, 3, b->ring_pending ? 1 : -1) < 0 && errno != EINTR)
            return NULL;
        if (p[1].revents)
            return NULL;
        if (p[2].revents)
            ring_reap(b); /* completions first: they free queue entries */
        ring_submit(b);   /* anything the kernel refused last time */
        uint64_t v;
        if (p[0].revents && read(p[0].fd, &v, sizeof(v)) < 0) {
            /* EAGAIN: another wakeup consumed it */
        }
        if (p[0].revents)
            process_queue(b, 0);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void blk_start(struct virtio_dev *vd)
{
    struct vblk *b = to_vblk(vd);
    pthread_mutex_lock(&b->lock);
    b->stopping = false;
    pthread_mutex_unlock(&b->lock);
    uint64_t one = 1; /* requests queued before DRIVER_OK */
    if (write(vd->q[0].kick_fd, &one, sizeof(one)) < 0) {
        /* the counter is full: the thread will wake anyway */
    }
}

static void blk_stop(struct virtio_dev *vd)
{
    struct vblk *b = to_vblk(vd);
    pthread_mutex_lock(&b->lock);
    b->stopping = true;
    bool said = false;
    while (b->inflight) {
        /* Requests in flight must finish before the guest may reuse their buffers. Say so
         * when that takes long (a storage back end that hangs), so a hang has a name. */
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += 10;
        if (pthread_cond_timedwait(&b->idle_cond, &b->lock, &t) == ETIMEDOUT && !said) {
            dev_log(b->vd.svc, "%s: waiting for %u requests in flight to finish", b->name, b->inflight);
            said = true;
        }
    }
    pthread_mutex_unlock(&b->lock);
}

/* The guest is gone for good: flush and close the image, so its lock is released before
 * anyone waiting for the VM hears that it ended. */
static void blk_quiesce(void *opaque)
{
    struct vblk *b = opaque;
    blk_stop(&b->vd);
    if (b->blk) {
        blk_flush(b->blk);
        blk_close(b->blk);
        b->blk = NULL;
    }
}

static void blk_destroy(struct virtio_dev *vd)
{
    struct vblk *b = to_vblk(vd);
    blk_stop(vd);
    if (b->queue_thread_started) {
        uint64_t one = 1;
        if (write(b->quit_fd, &one, sizeof(one)) < 0) {
            /* cannot fail on a fresh eventfd */
        }
        pthread_join(b->queue_thread, NULL);
    }
    pthread_mutex_lock(&b->lock);
    b->quit = true;
    pthread_cond_broadcast(&b->work_cond);
    pthread_mutex_unlock(&b->lock);
    for (unsigned i = 0; i < b->nworkers; i++)
        pthread_join(b->workers[i], NULL);
    while (b->free_list) {
        struct blk_io *io = b->free_list;
        b->free_list = io->next;
        free(io);
    }
    if (b->quit_fd >= 0)
        close(b->quit_fd);
    if (b->uring) {
        io_uring_queue_exit(&b->ring);
        close(b->ring_fd);
    }
    virtio_pci_destroy(vd);
    if (b->blk) {
        blk_flush(b->blk); /* whatever the guest did not flush is on disk when kvmbox ends */
        blk_close(b->blk);
    }
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->log_lock);
    pthread_cond_destroy(&b->work_cond);
    pthread_cond_destroy(&b->idle_cond);
    free(b);
}

static int blk_save(struct virtio_dev *vd, struct st_writer *w);

static const struct virtio_dev_ops blk_ops = {
    .name = "virtio-blk",
    .config_read = config_read,
    .start = blk_start,
    .stop = blk_stop,
    .destroy = blk_destroy,
    .save = blk_save,
};

/* io_uring for raw images when the host has it (some sandboxes refuse io_uring_setup: then
 * the pool serves every request). */
static void setup_ring(struct vblk *b)
{
    if (getenv("KVMBOX_NO_URING"))
        return;
    if (io_uring_queue_init(QUEUE_SIZE, &b->ring, 0) < 0)
        return;
    b->ring_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (b->ring_fd < 0 || io_uring_register_eventfd(&b->ring, b->ring_fd) < 0) {
        if (b->ring_fd >= 0)
            close(b->ring_fd);
        io_uring_queue_exit(&b->ring);
        return;
    }
    b->uring = true;
}

static void open_warning(void *opaque, const char *msg)
{
    struct vblk *b = opaque;
    dev_log(b->vd.svc, "warning: disk %s: %s", b->path, msg);
}

static int open_image(struct vblk *b, const struct kvmbox_disk *d, char *err, size_t errlen)
{
    struct blk_open_opts o = {
        .format = d->format,
        .flags = (d->readonly ? 0 : BLK_O_RDWR) | (d->cache_none ? BLK_O_DIRECT : 0) |
                 (d->untrusted ? BLK_O_UNTRUSTED : 0),
        .backing = d->backing,
        .backing_format = d->backing_format,
        .warn = open_warning,
        .warn_opaque = b,
    };
    bool probed_raw = false;
    char e[BLK_ERRMSG_MAX] = "";
    int r = blk_open_opts(d->path, &o, &b->blk, &probed_raw, e, sizeof(e));
    if (r < 0)
        return errf(err, errlen, r, "disk %s: %s", d->path, e[0] ? e : strerror(-r));
    if (probed_raw && !d->readonly)
        dev_log(b->vd.svc,
                "warning: disk %s: no format given and it looks like a raw image; writes to its "
                "first sector are allowed. Say format=raw to make this warning go away.",
                d->path);
    return 0;
}

int vblk_create(const struct dev_services *svc, struct pci_host *pci, const struct kvmbox_disk *d,
                unsigned index, struct vblk_info *out, char *err, size_t errlen)
{
    struct vblk *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    snprintf(b->name, sizeof(b->name), "virtio-blk%u", index);
    pthread_mutex_init(&b->lock, NULL);
    pthread_mutex_init(&b->log_lock, NULL);
    pthread_cond_init(&b->work_cond, NULL);
    pthread_cond_init(&b->idle_cond, NULL);
    b->quit_fd = -1;
    b->path = d->path;
    b->vd.svc = svc; /* for messages during the open; virtio_pci_init sets it again */
    int r = open_image(b, d, err, errlen);
    if (r < 0)
        goto fail_early;
    blk_set_event_fn(b->blk, disk_event, b);
    snprintf(b->serial, sizeof(b->serial), "%s", d->serial ? d->serial : "");
    struct blk_info info;
    uint32_t opt_io = 0;
    if (blk_get_info(b->blk, &info) == 0) {
        if (info.cluster_size >= 512)
            opt_io = info.cluster_size / 512;
        snprintf(out->format, sizeof(out->format), "%s", info.format);
    }
    out->size = blk_length(b->blk);
    b->lim = (struct blk_req_limits){
        .capacity = blk_length(b->blk) / 512,
        .readonly = d->readonly,
        .discard = !d->readonly,
        .write_zeroes = !d->readonly,
        .max_discard_sectors = MAX_DISCARD_SECTORS,
        .max_write_zeroes_sectors = MAX_DISCARD_SECTORS,
    };
    build_config(b, opt_io);
    uint64_t features = 1ULL << VIRTIO_BLK_F_SIZE_MAX | 1ULL << VIRTIO_BLK_F_SEG_MAX |
                        1ULL << VIRTIO_BLK_F_BLK_SIZE | 1ULL << VIRTIO_BLK_F_FLUSH |
                        1ULL << VIRTIO_BLK_F_TOPOLOGY;
    if (d->readonly)
        features |= 1ULL << VIRTIO_BLK_F_RO;
    else
        features |= 1ULL << VIRTIO_BLK_F_DISCARD | 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
    r = virtio_pci_init(&b->vd, svc, pci, b->name, VIRTIO_ID_BLOCK, 0x018000, 1, QUEUE_SIZE, 60, features,
                        &blk_ops, b);
    if (r < 0) {
        /* Registered with the VM or not, the device is torn down here or by the VM. */
        errf(err, errlen, r, "disk %s: cannot create its virtio-blk device: %s", d->path, strerror(-r));
        if (b->vd.registered)
            return r;
        goto fail_early;
    }
    b->quit_fd = eventfd(0, EFD_CLOEXEC);
    if (b->quit_fd < 0)
        return errf(err, errlen, -errno, "eventfd: %s", strerror(errno));
    setup_ring(b);
    unsigned nworkers = d->workers ? d->workers : DEFAULT_WORKERS;
    for (unsigned i = 0; i < nworkers && i < MAX_WORKERS; i++) {
        if ((r = pthread_create(&b->workers[i], NULL, worker, b)) != 0)
            return errf(err, errlen, -r, "cannot start an I/O thread: %s", strerror(r));
        char tn[16];
        snprintf(tn, sizeof(tn), "blk%u-io%u", index, i);
        pthread_setname_np(b->workers[i], tn);
        b->nworkers++;
    }
    if ((r = pthread_create(&b->queue_thread, NULL, queue_thread, b)) != 0)
        return errf(err, errlen, -r, "cannot start a queue thread: %s", strerror(r));
    b->queue_thread_started = true;
    char tn[16];
    snprintf(tn, sizeof(tn), "blk%u-queue", index);
    pthread_setname_np(b->queue_thread, tn);
    out->slot = b->vd.pci.slot;
    out->dev = b;
    svc->on_quiesce(svc->ctx, &b->vd, blk_quiesce);
    return 0;

fail_early:
    if (b->blk)
        blk_close(b->blk);
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->log_lock);
    pthread_cond_destroy(&b->work_cond);
    pthread_cond_destroy(&b->idle_cond);
    free(b);
    return r;
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

/* Requests in flight finish (their completions are in the used ring the save writes), and
 * the image is flushed: the disk on the host holds everything the saved guest has written.
 * Nothing of the device's own is saved: its queue state is the transport's. */
static int blk_save(struct virtio_dev *vd, struct st_writer *w)
{
    struct vblk *b = to_vblk(vd);
    blk_stop(vd);
    return b->blk ? blk_flush(b->blk) : 0;
}
