/* Turns PVH's hvm_start_info or multiboot's info into one struct boot_info, then runs the
 * test. */
#include "gt.h"

#define PVH_MAGIC     0x336ec578
#define MB_BOOT_MAGIC 0x2badb002

struct boot_info boot;

static void copy_cmdline(uint32_t addr)
{
    const char *s = (const char *)(uintptr_t)addr;
    size_t i = 0;
    if (addr)
        for (; s[i] && i + 1 < sizeof(boot.cmdline); i++)
            boot.cmdline[i] = s[i];
    boot.cmdline[i] = 0;
}

static void from_pvh(const uint8_t *si)
{
    uint64_t cmd, rsdp, map;
    uint32_t n;
    memcpy(&cmd, si + 24, 8), memcpy(&rsdp, si + 32, 8), memcpy(&map, si + 40, 8), memcpy(&n, si + 48, 4);
    boot.protocol = "pvh";
    copy_cmdline((uint32_t)cmd);
    boot.rsdp = (uint32_t)rsdp;
    for (uint32_t i = 0; i < n && boot.nmem < MAX_MEM_RANGES; i++) {
        const uint8_t *e = (const uint8_t *)(uintptr_t)map + 24 * i;
        struct mem_range *r = &boot.mem[boot.nmem++];
        memcpy(&r->addr, e, 8), memcpy(&r->size, e + 8, 8), memcpy(&r->type, e + 16, 4);
    }
}

static void from_multiboot(const uint8_t *mi)
{
    uint32_t flags, cmd, len, addr;
    memcpy(&flags, mi, 4), memcpy(&cmd, mi + 16, 4), memcpy(&len, mi + 44, 4), memcpy(&addr, mi + 48, 4);
    boot.protocol = "multiboot";
    copy_cmdline(flags & 0x4 ? cmd : 0);
    if (!(flags & 0x40))
        return;
    for (uint32_t off = 0; off + 24 <= len && boot.nmem < MAX_MEM_RANGES;) {
        const uint8_t *e = (const uint8_t *)(uintptr_t)(addr + off);
        uint32_t size;
        memcpy(&size, e, 4);
        struct mem_range *r = &boot.mem[boot.nmem++];
        memcpy(&r->addr, e + 4, 8), memcpy(&r->size, e + 12, 8), memcpy(&r->type, e + 20, 4);
        off += size + 4;
    }
}

const char *arg_str(const char *key, char *buf, size_t len, const char *dflt)
{
    size_t kl = strlen(key);
    for (const char *p = boot.cmdline; *p;) {
        while (*p == ' ')
            p++;
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            p += kl + 1;
            size_t i = 0;
            while (p[i] && p[i] != ' ' && i + 1 < len)
                buf[i] = p[i], i++;
            buf[i] = 0;
            return buf;
        }
        while (*p && *p != ' ')
            p++;
    }
    return dflt;
}

uint64_t arg_u64(const char *key, uint64_t dflt)
{
    char buf[32];
    const char *s = arg_str(key, buf, sizeof(buf), NULL);
    if (!s || !*s)
        return dflt;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (uint64_t)(*s - '0');
    return v;
}

void gt_start(uint32_t magic, uint32_t info);
void gt_start(uint32_t magic, uint32_t info)
{
    serial_init();
    printf("\n"); /* firmware (QEMU's SeaBIOS) may have left a partial line */
    const uint8_t *p = (const uint8_t *)(uintptr_t)info;
    uint32_t m;
    memcpy(&m, p, 4);
    if (m == PVH_MAGIC)
        from_pvh(p);
    else if (magic == MB_BOOT_MAGIC)
        from_multiboot(p);
    else
        boot.protocol = "unknown";
    idt_init();
    test_main();
    finish();
}
