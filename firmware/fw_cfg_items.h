/* The contents of QEMU's firmware configuration interface (fw_cfg, QEMU docs/specs/fw_cfg.rst):
 * numbered items, named files with the file directory (item 0x19), and reads at an offset.
 * Pure data, no I/O: devices/fw_cfg.c serves it to the guest through ports and DMA. */
#ifndef KVMBOX_FW_CFG_ITEMS_H
#define KVMBOX_FW_CFG_ITEMS_H

#include <stddef.h>
#include <stdint.h>

/* Items with fixed numbers (all little-endian unless the spec says otherwise). */
#define FW_CFG_SIGNATURE      0x00 /* "QEMU" */
#define FW_CFG_ID             0x01 /* u32 features: bit 0 traditional interface, bit 1 DMA */
#define FW_CFG_UUID           0x02 /* 16 bytes */
#define FW_CFG_RAM_SIZE       0x03 /* u64 */
#define FW_CFG_NOGRAPHIC      0x04 /* u16 */
#define FW_CFG_NB_CPUS        0x05 /* u16 */
#define FW_CFG_BOOT_MENU      0x0e /* u16 */
#define FW_CFG_MAX_CPUS       0x0f /* u16 */
#define FW_CFG_FILE_DIR       0x19 /* be32 count, then entries of 64 bytes */
#define FW_CFG_FILE_FIRST     0x20 /* files are numbered from here */
#define FW_CFG_ITEMS_MAX      0x40 /* item numbers below this, plus files */
#define FW_CFG_FILES_MAX      (FW_CFG_ITEMS_MAX - FW_CFG_FILE_FIRST)
#define FW_CFG_NAME_MAX       56 /* bytes in a directory entry's name, NUL included */
#define FW_CFG_ID_TRADITIONAL 0x1u
#define FW_CFG_ID_DMA         0x2u

struct fw_cfg_item {
    uint8_t *data; /* owned copy; NULL for an absent item */
    uint32_t len;
    char name[FW_CFG_NAME_MAX]; /* files only */
};

struct fw_cfg_items {
    struct fw_cfg_item item[FW_CFG_ITEMS_MAX];
    unsigned nfiles;
};

void fw_cfg_items_init(struct fw_cfg_items *it);
void fw_cfg_items_free(struct fw_cfg_items *it);
/* Sets item KEY (< FW_CFG_FILE_FIRST, not the directory) to a copy of LEN bytes. Returns 0,
 * -EINVAL for a key that is a file's or the directory's, -ENOMEM. */
int fw_cfg_set(struct fw_cfg_items *it, uint16_t key, const void *data, uint32_t len)
    __attribute__((warn_unused_result));
int fw_cfg_set_u16(struct fw_cfg_items *it, uint16_t key, uint16_t v) __attribute__((warn_unused_result));
int fw_cfg_set_u32(struct fw_cfg_items *it, uint16_t key, uint32_t v) __attribute__((warn_unused_result));
/* Adds file NAME with a copy of LEN bytes (LEN may be 0) and rebuilds the directory. Returns
 * its item number, -EINVAL for an empty or too long name, -EEXIST for a name already there,
 * -ENOSPC when the directory is full, -ENOMEM. */
int fw_cfg_add_file(struct fw_cfg_items *it, const char *name, const void *data, uint32_t len)
    __attribute__((warn_unused_result));
/* Replaces the contents of file NAME (its directory entry's size too). 0, -ENOENT, -ENOMEM. */
int fw_cfg_replace_file(struct fw_cfg_items *it, const char *name, const void *data, uint32_t len)
    __attribute__((warn_unused_result));
/* Copies up to LEN bytes of item KEY from OFFSET into BUF; bytes past the item's end (and
 * every byte of an absent item) read as 0, as the spec says. Returns how many bytes came from
 * the item. */
uint32_t fw_cfg_read(const struct fw_cfg_items *it, uint16_t key, uint32_t offset, void *buf, uint32_t len);
/* Length of item KEY (0 for an absent one). */
uint32_t fw_cfg_len(const struct fw_cfg_items *it, uint16_t key);
/* The item number of file NAME, or -ENOENT. */
int fw_cfg_find(const struct fw_cfg_items *it, const char *name);

#endif
