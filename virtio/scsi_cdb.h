/* A read-only CD-ROM logical unit (SCSI MMC-6 / SPC-4 / SBC-3 commands), as a pure function of
 * the command descriptor block: no I/O, no guest memory. The guest is hostile: every length
 * and address in a CDB is checked, and a bad command fails with CHECK CONDITION and sense data
 * (ILLEGAL REQUEST ...), never anything else. */
#ifndef KVMBOX_SCSI_CDB_H
#define KVMBOX_SCSI_CDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CD_BLOCK             2048u
#define SCSI_GOOD            0x00
#define SCSI_CHECK_CONDITION 0x02
#define SCSI_SENSE_LEN       18  /* fixed-format sense data */
#define SCSI_REPLY_MAX       256 /* the largest non-read reply */

/* Sense keys and additional sense codes (SPC-4 4.5.6, annex D). */
#define SK_NOT_READY             0x2
#define SK_ILLEGAL_REQUEST       0x5
#define SK_UNIT_ATTENTION        0x6
#define ASC_INVALID_OPCODE       0x20
#define ASC_LBA_OUT_OF_RANGE     0x21
#define ASC_INVALID_FIELD_IN_CDB 0x24
#define ASC_LUN_NOT_SUPPORTED    0x25
#define ASC_MEDIUM_NOT_PRESENT   0x3a

struct scsi_cd {
    uint64_t blocks;              /* 2048-byte blocks on the medium */
    bool prevent;                 /* PREVENT ALLOW MEDIUM REMOVAL state */
    uint8_t sense_key, asc, ascq; /* the last error, for REQUEST SENSE */
    char revision[5];             /* INQUIRY product revision (4 characters) */
};

struct scsi_reply {
    uint8_t status;                /* SCSI_GOOD or SCSI_CHECK_CONDITION */
    uint8_t sense[SCSI_SENSE_LEN]; /* with CHECK CONDITION */
    /* Data for the initiator (GOOD, not a read): LEN bytes of DATA, already cut to the
     * CDB's allocation length. */
    uint8_t data[SCSI_REPLY_MAX];
    uint32_t len;
    /* A read (GOOD): NBLOCKS blocks from LBA, checked against the medium. */
    bool read;
    uint64_t lba;
    uint32_t nblocks;
};

/* Initializes a CD of SIZE bytes (the last partial block is not readable). */
void scsi_cd_init(struct scsi_cd *cd, uint64_t size, const char *revision);
/* Runs the CDB of LEN bytes (LEN >= 1; up to 32 are looked at) for LUN 0. */
void scsi_cd_command(struct scsi_cd *cd, const uint8_t *cdb, size_t len, struct scsi_reply *r);
/* The reply for a LUN that does not exist: INQUIRY says "no device" (peripheral qualifier 3),
 * REPORT LUNS and REQUEST SENSE answer, anything else is LOGICAL UNIT NOT SUPPORTED. */
void scsi_no_lun_command(const uint8_t *cdb, size_t len, struct scsi_reply *r);

#endif
