/* virtio-scsi controller with a CD-ROM behind it. One thread serves the control, event and
 * request queues; commands are decoded by virtio/scsi_cdb.c and reads go to the block layer
 * straight into the guest's buffers.
 *
 * A request chain is: device-readable struct virtio_scsi_req_cmd (LUN, tag, CDB), optional
 * data-out, then device-writable struct virtio_scsi_resp_cmd (sense length, residual, status,
 * response, sense) and data-in. Headers may be split over descriptors at any byte: they are
 * gathered into local copies, so the guest's memory is read once. */
#include "virtio/scsi.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block.h"
#include "vmm/state.h"
#include "virtio/scsi_cdb.h"
#include "virtio/virtio.h"
#include "devices/services.h"
#include "common/util.h"

#define VIRTIO_ID_SCSI 8
#define QUEUE_SIZE     128
#define NQUEUES        3 /* control, event, one request queue */
#define Q_CTRL         0
#define Q_EVENT        1
#define Q_REQ          2
#define CDB_SIZE       32
#define SENSE_SIZE     96
#define REQ_HDR        (8 + 8 + 3 + CDB_SIZE)
#define RESP_HDR       (4 + 4 + 2 + 1 + 1 + SENSE_SIZE)
#define CONFIG_LEN     36

/* response codes (5.6.6.1) */
#define S_OK         0
#define S_OVERRUN    1
#define S_BAD_TARGET 3
#define S_FAILURE    9
/* control requests */
#define T_TMF               0
#define T_AN_QUERY          1
#define T_AN_SUBSCRIBE      2
#define S_FUNCTION_COMPLETE 0
#define S_FUNCTION_REJECTED 11

struct vscsi {
    struct virtio_dev vd;
    struct blk *blk;
    struct scsi_cd cd; /* only the I/O thread touches it (and reset, threads parked) */
    uint8_t config[CONFIG_LEN];
    pthread_t thread;
    bool thread_started;
    int quit_fd;
    struct virtq_chain chain;
    char name[24];
    char *path; /* the medium's image file, for the saved state's fingerprint */
};

int iso9660_check(const uint8_t *buf, size_t buflen)
{
    if (buflen < ISO9660_PROBE_LEN)
        return -ENOEXEC;
    return memcmp(buf + 32769, "CD001", 5) ? -ENOEXEC : 0;
}

static struct vscsi *to_vs(struct virtio_dev *vd)
{
    return (struct vscsi *)vd;
}

static void config_read(struct virtio_dev *vd, unsigned off, void *data, unsigned len)
{
    memcpy(data, to_vs(vd)->config + off, len);
}

static void build_config(struct vscsi *s)
{
    uint8_t *c = s->config;
    virtio_put_le(c, 0, 1, 4);              /* num_queues */
    virtio_put_le(c, 4, QUEUE_SIZE - 2, 4); /* seg_max */
    virtio_put_le(c, 8, 0xffff, 4);         /* max_sectors */
    virtio_put_le(c, 12, QUEUE_SIZE, 4);    /* cmd_per_lun */
    virtio_put_le(c, 16, 16, 4);            /* event_info_size */
    virtio_put_le(c, 20, SENSE_SIZE, 4);
    virtio_put_le(c, 24, CDB_SIZE, 4);
    virtio_put_le(c, 28, 0, 2); /* max_channel */
    virtio_put_le(c, 30, 0, 2); /* max_target */
    virtio_put_le(c, 32, 0, 4); /* max_lun */
}

/* ---- chains: gathering and scattering over the segments ---------------------------------- */

/* Copies up to LEN device-readable bytes from the start of chain C into BUF; returns how many. */
static size_t gather(const struct virtq_chain *c, uint8_t *buf, size_t len)
{
    size_t got = 0;
    for (unsigned i = 0; i < c->nread && got < len; i++) {
        size_t n = c->seg[i].len < len - got ? c->seg[i].len : len - got;
        memcpy(buf + got, c->seg[i].ptr, n);
        got += n;
    }
    return got;
}

/* Device-writable bytes of C. */
static uint64_t writable(const struct virtq_chain *c)
{
    uint64_t n = 0;
    for (unsigned i = c->nread; i < c->nseg; i++)
        n += c->seg[i].len;
    return n;
}

/* Copies LEN bytes into the writable part of C from byte OFF on (the caller has checked that
 * they fit). */
static void scatter(const struct virtq_chain *c, uint64_t off, const uint8_t *buf, size_t len)
{
    for (unsigned i = c->nread; i < c->nseg && len; i++) {
        const struct virtq_seg *g = &c->seg[i];
        if (off >= g->len) {
            off -= g->len;
            continue;
        }
        size_t n = g->len - off < len ? (size_t)(g->len - off) : len;
        memcpy(g->ptr + off, buf, n);
        buf += n, len -= n, off = 0;
    }
}

/* Reads LEN bytes of the medium at POS into the writable part of C from byte OFF on. */
static int read_medium(struct vscsi *s, const struct virtq_chain *c, uint64_t off, uint64_t pos, uint64_t len)
{
    for (unsigned i = c->nread; i < c->nseg && len; i++) {
        const struct virtq_seg *g = &c->seg[i];
        if (off >= g->len) {
            off -= g->len;
            continue;
        }
        uint64_t n = g->len - off < len ? g->len - off : len;
        int r = blk_pread(s->blk, g->ptr + off, (size_t)n, pos);
        if (r < 0)
            return r;
        pos += n, len -= n, off = 0;
    }
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------ */

static void put_resp(uint8_t *resp, uint32_t sense_len, uint32_t residual, uint8_t status, uint8_t response)
{
    virtio_put_le(resp, 0, sense_len, 4);
    virtio_put_le(resp, 4, residual, 4);
    resp[10] = status, resp[11] = response;
}

/* Handles one command chain; returns the bytes written into it. */
static uint32_t handle_cmd(struct vscsi *s, const struct virtq_chain *c)
{
    uint8_t req[REQ_HDR] = { 0 }, resp[RESP_HDR] = { 0 };
    uint64_t wlen = writable(c);
    if (wlen < RESP_HDR || gather(c, req, sizeof(req)) < sizeof(req))
        return 0; /* no room for a response: nothing can be said */
    uint64_t datain = wlen - RESP_HDR;
    /* LUN: 1, target, then the flat-space LUN (0x40 | high, low). */
    unsigned target = req[1], lun = ((req[2] & 0x3f) << 8) | req[3];
    if (req[0] != 1 || target != 0) {
        put_resp(resp, 0, 0, 0, S_BAD_TARGET);
        scatter(c, 0, resp, RESP_HDR);
        return RESP_HDR;
    }
    struct scsi_reply r;
    if (lun == 0)
        scsi_cd_command(&s->cd, req + 19, CDB_SIZE, &r);
    else
        scsi_no_lun_command(req + 19, CDB_SIZE, &r);
    uint32_t sent = 0;
    uint8_t response = S_OK;
    if (r.status == SCSI_GOOD && r.read) {
        uint64_t bytes = (uint64_t)r.nblocks * CD_BLOCK;
        if (bytes > datain) {
            response = S_OVERRUN;
        } else if (read_medium(s, c, RESP_HDR, r.lba * CD_BLOCK, bytes) < 0) {
            /* the image could not be read: MEDIUM ERROR, UNRECOVERED READ ERROR */
            r.status = SCSI_CHECK_CONDITION;
            memset(r.sense, 0, sizeof(r.sense));
            r.sense[0] = 0x70, r.sense[2] = 0x3, r.sense[7] = SCSI_SENSE_LEN - 8, r.sense[12] = 0x11;
        } else {
            sent = (uint32_t)bytes;
        }
    } else if (r.status == SCSI_GOOD) {
        sent = r.len < datain ? r.len : (uint32_t)datain;
        scatter(c, RESP_HDR, r.data, sent);
    }
    uint32_t sense_len = r.status == SCSI_CHECK_CONDITION ? SCSI_SENSE_LEN : 0;
    memcpy(resp + 12, r.sense, sense_len);
    uint64_t residual = datain - sent;
    put_resp(resp, sense_len, residual > 0xffffffffu ? 0xffffffffu : (uint32_t)residual, r.status, response);
    scatter(c, 0, resp, RESP_HDR);
    return RESP_HDR + sent;
}

/* Control queue: task management completes at once (no command is ever outstanding when
 * this thread looks), asynchronous notification is not offered. */
static uint32_t handle_ctrl(const struct virtq_chain *c)
{
    uint8_t req[4] = { 0 }, out[5] = { 0 };
    if (gather(c, req, 4) < 4)
        return 0;
    uint32_t type = (uint32_t)virtio_get_le(req, 0, 4);
    uint64_t w = writable(c);
    if (type == T_TMF && w >= 1) {
        out[0] = S_FUNCTION_COMPLETE;
        scatter(c, 0, out, 1);
        return 1;
    }
    if ((type == T_AN_QUERY || type == T_AN_SUBSCRIBE) && w >= 5) {
        out[4] = S_OK; /* event_actual 0: no events */
        scatter(c, 0, out, 5);
        return 5;
    }
    if (w >= 1) {
        out[0] = S_FUNCTION_REJECTED;
        scatter(c, 0, out, 1);
        return 1;
    }
    return 0;
}

/* Takes, handles and returns the chains of queue QI one by one. The queue's lock is held
 * from taking a chain to giving it back, so a device reset (scsi_stop) waits for a request
 * being handled and no request touches guest memory after it. */
static void serve_queue(struct vscsi *s, unsigned qi)
{
    struct virtio_queue *q = &s->vd.q[qi];
    for (;;) {
        pthread_mutex_lock(&q->lock);
        int r = q->broken || !q->vq.live ? 0 : virtq_pop(&q->vq, &s->chain);
        if (r == 0 && !q->broken && q->vq.live && virtq_enable_notify(&q->vq))
            r = virtq_pop(&q->vq, &s->chain);
        bool notify = false;
        if (r > 0) {
            uint32_t len = qi == Q_REQ ? handle_cmd(s, &s->chain) : handle_ctrl(&s->chain);
            virtq_push(&q->vq, s->chain.head, len);
            notify = virtq_should_notify(&q->vq);
        }
        pthread_mutex_unlock(&q->lock);
        if (r < 0)
            virtio_queue_error(&s->vd, qi, virtq_strerror(r));
        if (r <= 0)
            return;
        if (notify)
            virtio_notify(&s->vd, qi);
    }
}

static void serve(struct vscsi *s)
{
    serve_queue(s, Q_CTRL);
    serve_queue(s, Q_REQ);
    /* Event queue buffers stay with the device: no event is ever sent (no hot plug). */
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
    struct vscsi *s = arg;
    /* Same needs as a virtio-blk queue thread: image reads, eventfds, interrupts. */
    s->vd.svc->thread_sandbox(s->vd.svc->ctx, SANDBOX_BLK);
    struct pollfd p[1 + NQUEUES];
    for (;;) {
        p[0] = (struct pollfd){ .fd = s->quit_fd, .events = POLLIN };
        for (int i = 0; i < NQUEUES; i++)
            p[1 + i] = (struct pollfd){ .fd = s->vd.q[i].kick_fd, .events = POLLIN };
        if (poll(p, 1 + NQUEUES, -1) < 0 && errno != EINTR)
            return NULL;
        if (p[0].revents)
            return NULL;
        for (int i = 0; i < NQUEUES; i++)
            if (p[1 + i].revents)
                drain(p[1 + i].fd);
        if (virtio_running(&s->vd))
            serve(s);
    }
}

static void kick(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* a full counter wakes the thread anyway */
    }
}

static void scsi_start(struct virtio_dev *vd)
{
    for (int i = 0; i < NQUEUES; i++)
        kick(vd->q[i].kick_fd);
}

static void scsi_stop(struct virtio_dev *vd)
{
    struct vscsi *s = to_vs(vd);
    for (unsigned i = 0; i < NQUEUES; i++) { /* waits for a request being handled */
        pthread_mutex_lock(&vd->q[i].lock);
        pthread_mutex_unlock(&vd->q[i].lock);
    }
    s->cd.prevent = false;
}

static void scsi_destroy(struct virtio_dev *vd)
{
    struct vscsi *s = to_vs(vd);
    if (s->thread_started) {
        kick(s->quit_fd);
        pthread_join(s->thread, NULL);
    }
    if (s->quit_fd >= 0)
        close(s->quit_fd);
    virtio_pci_destroy(vd);
    if (s->blk)
        blk_close(s->blk);
    free(s->path);
    free(s);
}

static int scsi_save(struct virtio_dev *vd, struct st_writer *w);
static int scsi_load(struct virtio_dev *vd, const struct st_section *sec, char *err, size_t errlen);

static const struct virtio_dev_ops scsi_ops = {
    .name = "virtio-scsi",
    .config_read = config_read,
    .start = scsi_start,
    .stop = scsi_stop,
    .destroy = scsi_destroy,
    .save = scsi_save,
    .load = scsi_load,
};

static int open_iso(struct vscsi *s, const char *path, char *err, size_t errlen)
{
    char berr[BLK_ERRMSG_MAX];
    int r = blk_open(path, "raw", 0, &s->blk, NULL, berr, sizeof(berr));
    if (r < 0)
        return errf(err, errlen, r, "--cdrom %s: %s", path, berr);
    uint8_t *probe = malloc(ISO9660_PROBE_LEN);
    if (!probe)
        return errf(err, errlen, -ENOMEM, "out of memory");
    bool iso = blk_length(s->blk) >= ISO9660_PROBE_LEN &&
               blk_pread(s->blk, probe, ISO9660_PROBE_LEN, 0) >= 0 &&
               iso9660_check(probe, ISO9660_PROBE_LEN) == 0;
    free(probe);
    if (!iso)
        return errf(err, errlen, -ENOEXEC,
                    "--cdrom %s: not an ISO 9660 image (no CD001 volume "
                    "descriptor at 32 KiB)",
                    path);
    return 0;
}

int vscsi_create(const struct dev_services *svc, struct pci_host *pci, const struct kvmbox_cdrom *cd,
                 unsigned index, struct vscsi_info *out, char *err, size_t errlen)
{
    struct vscsi *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->quit_fd = -1;
    snprintf(s->name, sizeof(s->name), "virtio-scsi%u", index);
    s->path = strdup(cd->path);
    int r = s->path ? open_iso(s, cd->path, err, errlen) : -ENOMEM;
    if (r < 0) {
        if (s->blk)
            blk_close(s->blk);
        free(s->path);
        free(s);
        return r;
    }
    scsi_cd_init(&s->cd, blk_length(s->blk), KVMBOX_VERSION);
    build_config(s);
    r = virtio_pci_init(&s->vd, svc, pci, s->name, VIRTIO_ID_SCSI, 0x010000, NQUEUES, QUEUE_SIZE, CONFIG_LEN,
                        0, &scsi_ops, s);
    if (r < 0) {
        errf(err, errlen, r, "--cdrom %s: cannot create its virtio-scsi device: %s", cd->path, strerror(-r));
        if (s->vd.registered)
            return r;
        blk_close(s->blk);
        free(s->path);
        free(s);
        return r;
    }
    s->quit_fd = eventfd(0, EFD_CLOEXEC);
    if (s->quit_fd < 0)
        return errf(err, errlen, -errno, "eventfd: %s", strerror(errno));
    if ((r = pthread_create(&s->thread, NULL, io_thread, s)) != 0)
        return errf(err, errlen, -r, "cannot start the virtio-scsi thread: %s", strerror(r));
    s->thread_started = true;
    char tn[16];
    snprintf(tn, sizeof(tn), "scsi%u", index);
    pthread_setname_np(s->thread, tn);
    out->slot = s->vd.pci.slot;
    out->size = blk_length(s->blk);
    return 0;
}

/* ---- saved state (vmm/snapshot.h) ---------------------------------------------------------- */

static int medium_fingerprint(const char *path, uint64_t *size, uint64_t *mtime_ns)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    *mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ULL + (uint64_t)st.st_mtim.tv_nsec;
    return 0;
}

/* Requests are handled whole under their queue's lock, which the transport took before this:
 * none is in flight, and its completion is in the used ring. What is the LUN's own is the
 * medium lock (PREVENT ALLOW MEDIUM REMOVAL) and the sense data REQUEST SENSE returns next;
 * the medium never changes while the VM runs (no eject), so it is recorded like a disk: path
 * and fingerprint (size and modification time of the image file). */
static int scsi_save(struct virtio_dev *vd, struct st_writer *w)
{
    struct vscsi *s = to_vs(vd);
    uint64_t size, mtime;
    int r = medium_fingerprint(s->path, &size, &mtime);
    if (r < 0)
        return r;
    uint8_t sense[3] = { s->cd.sense_key, s->cd.asc, s->cd.ascq };
    st_put_u8(w, "prevent", s->cd.prevent);
    st_put(w, "sense", sense, sizeof(sense));
    st_put_str(w, "medium", s->path);
    st_put_u64(w, "medium_size", size);
    st_put_u64(w, "medium_mtime_ns", mtime);
    return 0;
}

static int scsi_load(struct virtio_dev *vd, const struct st_section *sec, char *err, size_t errlen)
{
    struct vscsi *s = to_vs(vd);
    uint64_t prevent, size, mtime, cur_size = 0, cur_mtime = 0;
    uint8_t sense[3];
    uint32_t plen;
    int r;
    if ((r = st_need_uint(sec, "prevent", 1, &prevent, err, errlen)) < 0 ||
        (r = st_need(sec, "sense", sense, sizeof(sense), err, errlen)) < 0 ||
        (r = st_need_uint(sec, "medium_size", UINT64_MAX, &size, err, errlen)) < 0 ||
        (r = st_need_uint(sec, "medium_mtime_ns", UINT64_MAX, &mtime, err, errlen)) < 0)
        return r;
    const char *medium = st_field(sec, "medium", &plen);
    if (!medium)
        return errf(err, errlen, -EBADMSG, "saved state: %s has no medium", s->name);
    if (strlen(s->path) != plen || memcmp(s->path, medium, plen))
        return errf(err, errlen, -EINVAL, "CD-ROM %s is %s, but the state was saved with %.*s", s->name,
                    s->path, (int)(plen > 512 ? 512 : plen), medium);
    if ((r = medium_fingerprint(s->path, &cur_size, &cur_mtime)) < 0)
        return errf(err, errlen, r, "CD-ROM %s: %s", s->path, strerror(-r));
    if (cur_size != size || cur_mtime != mtime)
        return errf(err, errlen, -ESTALE,
                    "CD-ROM %s changed since the state was saved (size or "
                    "modification time differ); the saved guest may hold its old contents",
                    s->path);
    s->cd.prevent = prevent;
    s->cd.sense_key = sense[0] & 0xf, s->cd.asc = sense[1], s->cd.ascq = sense[2];
    return 0;
}
