/* CD-ROM command emulation. Each command copies what it needs out of the CDB, checks it and
 * builds its reply in a local buffer; the reply is then cut to the allocation length. */
#include "virtio/scsi_cdb.h"

#include <stdio.h>
#include <string.h>

/* Operation codes */
#define TEST_UNIT_READY   0x00
#define REQUEST_SENSE     0x03
#define INQUIRY           0x12
#define MODE_SENSE_6      0x1a
#define START_STOP_UNIT   0x1b
#define PREVENT_ALLOW     0x1e
#define READ_CAPACITY_10  0x25
#define READ_10           0x28
#define SEEK_10           0x2b
#define VERIFY_10         0x2f
#define READ_TOC          0x43
#define GET_CONFIGURATION 0x46
#define GET_EVENT_STATUS  0x4a
#define READ_DISC_INFO    0x51
#define READ_TRACK_INFO   0x52
#define MODE_SENSE_10     0x5a
#define READ_16           0x88
#define REPORT_LUNS       0xa0
#define READ_12           0xa8
#define SET_CD_SPEED      0xbb
#define MECHANISM_STATUS  0xbd

static uint32_t be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}
static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v >> 16), put16(p + 2, v);
}

/* Length of the CDB for each group of operation codes (SPC-4 4.2.5.1). */
static size_t cdb_len(uint8_t op)
{
    switch (op >> 5) {
    case 0: return 6;
    case 1:
    case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 0; /* reserved or vendor-specific groups: not ours */
    }
}

static void fail(struct scsi_cd *cd, struct scsi_reply *r, uint8_t key, uint8_t asc)
{
    r->status = SCSI_CHECK_CONDITION;
    r->len = 0, r->read = false;
    memset(r->sense, 0, sizeof(r->sense));
    r->sense[0] = 0x70; /* current error, fixed format */
    r->sense[2] = key;
    r->sense[7] = SCSI_SENSE_LEN - 8;
    r->sense[12] = asc;
    if (cd)
        cd->sense_key = key, cd->asc = asc, cd->ascq = 0;
}

/* The reply is LEN bytes; the initiator wants at most ALLOC. */
static void reply(struct scsi_reply *r, uint32_t len, uint32_t alloc)
{
    r->status = SCSI_GOOD;
    r->len = len < alloc ? len : alloc;
}

static void inquiry(struct scsi_cd *cd, const uint8_t *c, struct scsi_reply *r)
{
    uint32_t alloc = be16(c + 3);
    uint8_t *d = r->data;
    if (c[1] & 1) { /* EVPD: the supported pages and the device identification */
        d[0] = 0x05;
        d[1] = c[2];
        if (c[2] == 0x00) {
            d[3] = 2, d[4] = 0x00, d[5] = 0x83;
            return reply(r, 6, alloc);
        }
        if (c[2] == 0x83) { /* one T10 vendor ID designator */
            static const char id[] = "KVMBOX  CD-ROM";
            d[3] = (uint8_t)(4 + sizeof(id) - 1);
            d[4] = 0x02, d[5] = 0x01, d[7] = (uint8_t)(sizeof(id) - 1);
            memcpy(d + 8, id, sizeof(id) - 1);
            return reply(r, 8 + sizeof(id) - 1, alloc);
        }
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    }
    if (c[2])
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    d[0] = 0x05; /* CD/DVD device, connected */
    d[1] = 0x80; /* removable medium */
    d[2] = 0x05; /* SPC-3 */
    d[3] = 0x02; /* response data format 2 */
    d[4] = 36 - 5;
    memcpy(d + 8, "KVMBOX  ", 8);
    memcpy(d + 16, "CD-ROM          ", 16);
    memcpy(d + 32, cd->revision, 4);
    reply(r, 36, alloc);
}

static void request_sense(struct scsi_cd *cd, const uint8_t *c, struct scsi_reply *r)
{
    uint8_t *d = r->data;
    d[0] = 0x70, d[7] = SCSI_SENSE_LEN - 8;
    if (cd) {
        d[2] = cd->sense_key, d[12] = cd->asc, d[13] = cd->ascq;
        cd->sense_key = cd->asc = cd->ascq = 0;
    }
    reply(r, SCSI_SENSE_LEN, c[4]);
}

static void read_capacity(struct scsi_cd *cd, struct scsi_reply *r)
{
    uint64_t last = cd->blocks ? cd->blocks - 1 : 0;
    put32(r->data, last > 0xffffffffu ? 0xffffffffu : (uint32_t)last);
    put32(r->data + 4, CD_BLOCK);
    reply(r, 8, 8);
}

static void do_read(struct scsi_cd *cd, uint64_t lba, uint32_t n, struct scsi_reply *r)
{
    if (lba > cd->blocks || n > cd->blocks - lba)
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
    r->status = SCSI_GOOD;
    r->read = n != 0;
    r->lba = lba, r->nblocks = n;
    r->len = 0;
}

/* MODE SENSE page 0x2A: CD capabilities and mechanical status (MMC-3 6.3.11). */
static uint32_t page_2a(struct scsi_cd *cd, uint8_t *p)
{
    p[0] = 0x2a, p[1] = 0x14;
    p[2] = 0x03;                            /* reads CD-R and CD-RW media */
    p[4] = 0x71;                            /* audio play, mode 2 form 1/2, multisession */
    p[5] = 0x03;                            /* CD-DA commands, accurate stream */
    p[6] = 0x29 | (cd->prevent ? 0x02 : 0); /* tray, eject, lock (and its state) */
    put16(p + 8, 706);                      /* obsolete: maximum read speed, 4x (kB/s) */
    put16(p + 12, 2048);                    /* buffer size (KiB) */
    put16(p + 14, 706);
    return 22;
}

static void mode_sense(struct scsi_cd *cd, const uint8_t *c, bool ten, struct scsi_reply *r)
{
    uint8_t page = c[2] & 0x3f, pc = c[2] >> 6;
    uint32_t alloc = ten ? be16(c + 7) : c[4];
    uint32_t hdr = ten ? 8 : 4;
    if (pc == 3 || (page != 0x2a && page != 0x3f))
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    uint8_t *d = r->data;
    uint32_t len = hdr + page_2a(cd, d + hdr);
    if (pc == 1) /* changeable values: none */
        memset(d + hdr + 2, 0, len - hdr - 2);
    if (ten)
        put16(d, len - 2);
    else
        d[0] = (uint8_t)(len - 1);
    reply(r, len, alloc);
}

/* Logical block address to minutes/seconds/frames (150 frames of lead-in). */
static void put_addr(uint8_t *p, uint64_t lba, bool msf)
{
    if (!msf) {
        put32(p, lba > 0xffffffffu ? 0xffffffffu : (uint32_t)lba);
        return;
    }
    uint64_t f = lba + 150;
    if (f > 99ull * 60 * 75 + 59 * 75 + 74)
        f = 99ull * 60 * 75 + 59 * 75 + 74;
    p[0] = 0, p[1] = (uint8_t)(f / (60 * 75)), p[2] = (uint8_t)(f / 75 % 60), p[3] = (uint8_t)(f % 75);
}

/* READ TOC/PMA/ATIP (MMC-6 6.26): one data track and the lead-out; session information. */
static void read_toc(struct scsi_cd *cd, const uint8_t *c, struct scsi_reply *r)
{
    bool msf = c[1] & 0x02;
    uint8_t format = c[2] & 0x0f, track = c[6];
    uint32_t alloc = be16(c + 7);
    if (format == 0 && (c[9] >> 6)) /* the format field's older place (SFF-8020) */
        format = c[9] >> 6;
    uint8_t *d = r->data;
    uint32_t len;
    if (format == 0) {
        if (track > 1 && track != 0xaa)
            return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        d[2] = 1, d[3] = 1; /* first and last track */
        uint8_t *t = d + 4;
        if (track <= 1) {
            t[1] = 0x14, t[2] = 1; /* data track, copy permitted */
            put_addr(t + 4, 0, msf);
            t += 8;
        }
        t[1] = 0x14, t[2] = 0xaa; /* lead-out */
        put_addr(t + 4, cd->blocks, msf);
        t += 8;
        len = (uint32_t)(t - d);
    } else if (format == 1) { /* session information: one session, track 1 at 0 */
        d[2] = 1, d[3] = 1;
        d[5] = 0x14, d[6] = 1;
        put_addr(d + 8, 0, msf);
        len = 12;
    } else {
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    }
    put16(d, len - 2);
    reply(r, len, alloc);
}

/* GET CONFIGURATION (MMC-6 6.6): the CD-ROM profile, and the Profile List, Core and Removable
 * Medium features. */
static void get_configuration(struct scsi_cd *cd, const uint8_t *c, struct scsi_reply *r)
{
    uint8_t rt = c[1] & 3;
    uint32_t start = be16(c + 2), alloc = be16(c + 7);
    if (rt == 3)
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    uint8_t *d = r->data;
    put16(d + 6, 0x0008); /* current profile: CD-ROM */
    uint8_t *f = d + 8;
    if (start == 0) { /* Profile List */
        put16(f, 0x0000), f[2] = 0x03, f[3] = 4;
        put16(f + 4, 0x0008), f[6] = 0x01;
        f += 8;
    }
    if (rt != 2 && start <= 1) { /* Core: SCSI family (ATAPI-like physical interface 0) */
        put16(f, 0x0001), f[2] = 0x07, f[3] = 8;
        put32(f + 4, 0x00000001);
        f[8] = 0x01;
        f += 12;
    }
    if (rt != 2 && start <= 3) { /* Removable Medium: tray, eject, lock */
        put16(f, 0x0003), f[2] = 0x03, f[3] = 4;
        f[4] = 0x29 | (cd->prevent ? 0x04 : 0);
        f += 8;
    }
    uint32_t len = (uint32_t)(f - d);
    put32(d, len - 4);
    reply(r, len, alloc);
}

/* GET EVENT STATUS NOTIFICATION (MMC-6 6.8), polled only: the media class says a medium is
 * present and nothing changed. */
static void get_event_status(struct scsi_cd *cd, const uint8_t *c, struct scsi_reply *r)
{
    if (!(c[1] & 1))
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    uint32_t alloc = be16(c + 7);
    uint8_t *d = r->data;
    d[3] = 0x10; /* supported classes: media */
    if (!(c[4] & 0x10)) {
        d[2] = 0x80; /* no event available */
        put16(d, 2);
        return reply(r, 4, alloc);
    }
    d[2] = 0x04; /* media class */
    d[5] = 0x02; /* media present, tray closed */
    put16(d, 6);
    reply(r, 8, alloc);
}

/* READ DISC INFORMATION (MMC-6 6.22): a complete, finalized disc with one session. */
static void read_disc_info(struct scsi_cd *cd, const uint8_t *c, struct scsi_reply *r)
{
    if (c[1] & 7)
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    uint8_t *d = r->data;
    put16(d, 32);
    d[2] = 0x0e; /* last session complete, disc complete */
    d[3] = 1, d[4] = 1, d[5] = 1, d[6] = 1;
    d[7] = 0x20;             /* unrestricted use */
    memset(d + 16, 0xff, 8); /* no lead-in / last lead-out start times */
    reply(r, 34, be16(c + 7));
}

/* READ TRACK INFORMATION (MMC-6 6.27) for track 1 or the LBA inside it. */
static void read_track_info(struct scsi_cd *cd, const uint8_t *c, struct scsi_reply *r)
{
    uint8_t type = c[1] & 3;
    uint32_t addr = be32(c + 2);
    if ((type == 1 && addr != 1) || (type == 0 && addr >= cd->blocks) || type > 1)
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
    uint8_t *d = r->data;
    put16(d, 34);
    d[2] = 1, d[3] = 1; /* track 1, session 1 */
    d[5] = 0x04;        /* data track */
    d[6] = 0x01;        /* data mode 1 */
    put32(d + 24, cd->blocks > 0xffffffffu ? 0xffffffffu : (uint32_t)cd->blocks);
    reply(r, 36, be16(c + 7));
}

static void mechanism_status(const uint8_t *c, struct scsi_reply *r)
{
    memset(r->data, 0, 8); /* no changer, no fault, door closed, no slots */
    reply(r, 8, be16(c + 8));
}

static void report_luns(const uint8_t *c, struct scsi_reply *r)
{
    uint32_t alloc = be32(c + 6);
    memset(r->data, 0, 16);
    put32(r->data, 8); /* one LUN: 0 */
    reply(r, 16, alloc);
}

void scsi_cd_init(struct scsi_cd *cd, uint64_t size, const char *revision)
{
    memset(cd, 0, sizeof(*cd));
    cd->blocks = size / CD_BLOCK;
    snprintf(cd->revision, sizeof(cd->revision), "%-4.4s", revision ? revision : "");
}

/* Copies the CDB into a zero-padded local buffer: the guest's copy is never read twice, and
 * fields beyond what it sent read as 0. Returns false when it is shorter than its group's
 * length. */
static bool take_cdb(const uint8_t *cdb, size_t len, uint8_t c[16])
{
    memset(c, 0, 16);
    if (len == 0)
        return false;
    memcpy(c, cdb, len < 16 ? len : 16);
    size_t need = cdb_len(c[0]);
    return need && len >= need;
}

void scsi_cd_command(struct scsi_cd *cd, const uint8_t *cdb, size_t len, struct scsi_reply *r)
{
    uint8_t c[16];
    memset(r, 0, sizeof(*r));
    if (!take_cdb(cdb, len, c))
        return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
    switch (c[0]) {
    case TEST_UNIT_READY:
    case SEEK_10:
    case VERIFY_10:
    case SET_CD_SPEED: return reply(r, 0, 0);
    case START_STOP_UNIT: /* the medium stays: an eject of a locked tray is refused */
        if ((c[4] & 3) == 2 && cd->prevent)
            return fail(cd, r, SK_ILLEGAL_REQUEST, 0x53); /* MEDIUM REMOVAL PREVENTED */
        return reply(r, 0, 0);
    case PREVENT_ALLOW: cd->prevent = c[4] & 1; return reply(r, 0, 0);
    case REQUEST_SENSE: return request_sense(cd, c, r);
    case INQUIRY: return inquiry(cd, c, r);
    case READ_CAPACITY_10: return read_capacity(cd, r);
    case READ_10: return do_read(cd, be32(c + 2), be16(c + 7), r);
    case READ_12: return do_read(cd, be32(c + 2), be32(c + 6), r);
    case READ_16: return do_read(cd, be64(c + 2), be32(c + 10), r);
    case MODE_SENSE_6: return mode_sense(cd, c, false, r);
    case MODE_SENSE_10: return mode_sense(cd, c, true, r);
    case READ_TOC: return read_toc(cd, c, r);
    case GET_CONFIGURATION: return get_configuration(cd, c, r);
    case GET_EVENT_STATUS: return get_event_status(cd, c, r);
    case READ_DISC_INFO: return read_disc_info(cd, c, r);
    case READ_TRACK_INFO: return read_track_info(cd, c, r);
    case MECHANISM_STATUS: return mechanism_status(c, r);
    case REPORT_LUNS: return report_luns(c, r);
    default: return fail(cd, r, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
    }
}

void scsi_no_lun_command(const uint8_t *cdb, size_t len, struct scsi_reply *r)
{
    uint8_t c[16];
    memset(r, 0, sizeof(*r));
    if (!take_cdb(cdb, len, c))
        return fail(NULL, r, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
    switch (c[0]) {
    case INQUIRY:
        if (c[1] & 1)
            return fail(NULL, r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        r->data[0] = 0x7f; /* peripheral qualifier 3: no device here */
        r->data[2] = 0x05, r->data[3] = 0x02, r->data[4] = 36 - 5;
        return reply(r, 36, be16(c + 3));
    case REPORT_LUNS: return report_luns(c, r);
    case REQUEST_SENSE:
        r->data[0] = 0x70, r->data[7] = SCSI_SENSE_LEN - 8;
        r->data[2] = SK_ILLEGAL_REQUEST, r->data[12] = ASC_LUN_NOT_SUPPORTED;
        return reply(r, SCSI_SENSE_LEN, c[4]);
    default: return fail(NULL, r, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
    }
}
