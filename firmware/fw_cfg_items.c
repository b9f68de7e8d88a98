/* fw_cfg items and the file directory. The directory (item 0x19) is a be32 count followed
 * by one 64-byte entry per file: be32 size, be16 select, be16 reserved, char name[56], sorted
 * by name as QEMU does (firmware may search it either way). */
#include "firmware/fw_cfg_items.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DIR_ENTRY 64

void fw_cfg_items_init(struct fw_cfg_items *it)
{
    memset(it, 0, sizeof(*it));
}

void fw_cfg_items_free(struct fw_cfg_items *it)
{
    for (unsigned i = 0; i < FW_CFG_ITEMS_MAX; i++)
        free(it->item[i].data);
    memset(it, 0, sizeof(*it));
}

static int store(struct fw_cfg_item *item, const void *data, uint32_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    if (len)
        memcpy(copy, data, len);
    free(item->data);
    item->data = copy, item->len = len;
    return 0;
}

int fw_cfg_set(struct fw_cfg_items *it, uint16_t key, const void *data, uint32_t len)
{
    if (key >= FW_CFG_FILE_FIRST || key == FW_CFG_FILE_DIR)
        return -EINVAL;
    return store(&it->item[key], data, len);
}

int fw_cfg_set_u16(struct fw_cfg_items *it, uint16_t key, uint16_t v)
{
    uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
    return fw_cfg_set(it, key, b, sizeof(b));
}

int fw_cfg_set_u32(struct fw_cfg_items *it, uint16_t key, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    return fw_cfg_set(it, key, b, sizeof(b));
}

int fw_cfg_find(const struct fw_cfg_items *it, const char *name)
{
    for (unsigned i = 0; i < it->nfiles; i++)
        if (!strcmp(it->item[FW_CFG_FILE_FIRST + i].name, name))
            return (int)(FW_CFG_FILE_FIRST + i);
    return -ENOENT;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static int cmp_names(const void *a, const void *b)
{
    return strncmp((const char *)a + 8, (const char *)b + 8, FW_CFG_NAME_MAX);
}

static int rebuild_dir(struct fw_cfg_items *it)
{
    uint32_t len = 4 + it->nfiles * DIR_ENTRY;
    uint8_t *d = calloc(1, len);
    if (!d)
        return -ENOMEM;
    put_be32(d, it->nfiles);
    for (unsigned i = 0; i < it->nfiles; i++) {
        const struct fw_cfg_item *f = &it->item[FW_CFG_FILE_FIRST + i];
        uint8_t *e = d + 4 + i * DIR_ENTRY;
        uint16_t sel = (uint16_t)(FW_CFG_FILE_FIRST + i);
        put_be32(e, f->len);
        e[4] = (uint8_t)(sel >> 8), e[5] = (uint8_t)sel;
        memcpy(e + 8, f->name, FW_CFG_NAME_MAX);
    }
    qsort(d + 4, it->nfiles, DIR_ENTRY, cmp_names);
    free(it->item[FW_CFG_FILE_DIR].data);
    it->item[FW_CFG_FILE_DIR].data = d, it->item[FW_CFG_FILE_DIR].len = len;
    return 0;
}

int fw_cfg_add_file(struct fw_cfg_items *it, const char *name, const void *data, uint32_t len)
{
    size_t n = strlen(name);
    if (n == 0 || n >= FW_CFG_NAME_MAX)
        return -EINVAL;
    if (fw_cfg_find(it, name) >= 0)
        return -EEXIST;
    if (it->nfiles == FW_CFG_FILES_MAX)
        return -ENOSPC;
    struct fw_cfg_item *f = &it->item[FW_CFG_FILE_FIRST + it->nfiles];
    int r = store(f, data, len);
    if (r < 0)
        return r;
    memset(f->name, 0, sizeof(f->name));
    memcpy(f->name, name, n);
    it->nfiles++;
    r = rebuild_dir(it);
    if (r < 0) {
        it->nfiles--;
        free(f->data);
        memset(f, 0, sizeof(*f));
        return r;
    }
    return (int)(FW_CFG_FILE_FIRST + it->nfiles - 1);
}

int fw_cfg_replace_file(struct fw_cfg_items *it, const char *name, const void *data, uint32_t len)
{
    int key = fw_cfg_find(it, name);
    if (key < 0)
        return key;
    int r = store(&it->item[key], data, len);
    return r < 0 ? r : rebuild_dir(it);
}

uint32_t fw_cfg_len(const struct fw_cfg_items *it, uint16_t key)
{
    return key < FW_CFG_ITEMS_MAX ? it->item[key].len : 0;
}

uint32_t fw_cfg_read(const struct fw_cfg_items *it, uint16_t key, uint32_t offset, void *buf, uint32_t len)
{
    uint32_t have = fw_cfg_len(it, key), n = 0;
    if (offset < have) {
        n = have - offset < len ? have - offset : len;
        memcpy(buf, it->item[key].data + offset, n);
    }
    memset((uint8_t *)buf + n, 0, len - n);
    return n;
}
