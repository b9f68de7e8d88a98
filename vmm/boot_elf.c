/* ELF kernels: PVH (the Xen PHYS32_ENTRY note, hvm_start_info) and multiboot v1. */
#include <elf.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "firmware/e820.h"
#include "vmm/boot.h"
#include "vmm/layout.h"
#include "common/util.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC          0x336ec578
#define MB_HEADER_MAGIC          0x1badb002
#define MB_BOOT_MAGIC            0x2badb002
#define MB_SEARCH                8192
#define MAX_PHDRS                64

struct seg {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz;
};

struct elf {
    const struct boot_image *img;
    bool is64;
    uint64_t entry;
    unsigned nseg;
    struct seg seg[MAX_PHDRS];
};

/* Copies and validates the program headers: every file range inside the file. */
static int elf_parse(const struct boot_image *img, struct elf *e)
{
    memset(e, 0, sizeof(*e));
    e->img = img;
    if (img->size < sizeof(Elf32_Ehdr) || memcmp(img->data, ELFMAG, SELFMAG))
        return -ENOEXEC;
    uint8_t cls = img->data[EI_CLASS];
    if (img->data[EI_DATA] != ELFDATA2LSB || (cls != ELFCLASS32 && cls != ELFCLASS64))
        return -ENOEXEC;
    e->is64 = cls == ELFCLASS64;
    uint64_t phoff, phentsize, phnum;
    if (e->is64) {
        Elf64_Ehdr h;
        if (img->size < sizeof(h))
            return -ENOEXEC;
        memcpy(&h, img->data, sizeof(h));
        if (h.e_machine != EM_X86_64 && h.e_machine != EM_386)
            return -ENOEXEC;
        e->entry = h.e_entry, phoff = h.e_phoff, phentsize = h.e_phentsize, phnum = h.e_phnum;
        if (phentsize != sizeof(Elf64_Phdr))
            return -ENOEXEC;
    } else {
        Elf32_Ehdr h;
        memcpy(&h, img->data, sizeof(h));
        if (h.e_machine != EM_386 && h.e_machine != EM_X86_64)
            return -ENOEXEC;
        e->entry = h.e_entry, phoff = h.e_phoff, phentsize = h.e_phentsize, phnum = h.e_phnum;
        if (phentsize != sizeof(Elf32_Phdr))
            return -ENOEXEC;
    }
    if (phnum == 0 || phnum > MAX_PHDRS || phoff > img->size || phnum * phentsize > img->size - phoff)
        return -ENOEXEC;
    for (unsigned i = 0; i < phnum; i++) {
        const uint8_t *p = img->data + phoff + i * phentsize;
        struct seg *s = &e->seg[i];
        if (e->is64) {
            Elf64_Phdr ph;
            memcpy(&ph, p, sizeof(ph));
            *s = (struct seg){ ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz };
        } else {
            Elf32_Phdr ph;
            memcpy(&ph, p, sizeof(ph));
            *s = (struct seg){ ph.p_type, ph.p_offset, ph.p_paddr, ph.p_filesz, ph.p_memsz };
        }
        if (s->offset > img->size || s->filesz > img->size - s->offset)
            return -ENOEXEC;
    }
    e->nseg = (unsigned)phnum;
    return 0;
}

/* Finds the Xen PHYS32_ENTRY note; 0 when there is none. */
static uint64_t elf_pvh_entry(const struct elf *e)
{
    for (unsigned i = 0; i < e->nseg; i++) {
        const struct seg *s = &e->seg[i];
        if (s->type != PT_NOTE)
            continue;
        const uint8_t *p = e->img->data + s->offset, *end = p + s->filesz;
        while (end - p >= 12) {
            uint32_t namesz, descsz, type;
            memcpy(&namesz, p, 4), memcpy(&descsz, p + 4, 4), memcpy(&type, p + 8, 4);
            uint64_t nlen = ((uint64_t)namesz + 3) & ~3ULL, dlen = ((uint64_t)descsz + 3) & ~3ULL;
            if (nlen + dlen > (uint64_t)(end - p - 12))
                break;
            const uint8_t *name = p + 12, *desc = name + nlen;
            if (namesz == 4 && !memcmp(name, "Xen", 4) && type == XEN_ELFNOTE_PHYS32_ENTRY &&
                (descsz == 4 || descsz == 8)) {
                uint32_t entry;
                memcpy(&entry, desc, 4);
                return entry;
            }
            p += 12 + nlen + dlen;
        }
    }
    return 0;
}

/* kvmbox's own boot structures and the ACPI tables live below 1 MiB; a kernel segment may
 * sit anywhere in RAM except on top of them. */
static bool overlaps_firmware(uint64_t start, uint64_t end)
{
    return (start < LAYOUT_CMDLINE + LAYOUT_CMDLINE_MAX && end > LAYOUT_GDT) ||
           (start < LAYOUT_ACPI_BASE + LAYOUT_ACPI_SIZE && end > LAYOUT_ACPI_BASE);
}

/* Loads PT_LOAD segments at their physical addresses; returns the highest end address. */
static int elf_load(const struct boot_request *req, const struct elf *e, uint64_t *end_out, char *err,
                    size_t errlen)
{
    uint64_t top = 0;
    for (unsigned i = 0; i < e->nseg; i++) {
        const struct seg *s = &e->seg[i];
        if (s->type != PT_LOAD || s->memsz == 0)
            continue;
        uint64_t end;
        if (s->filesz > s->memsz || __builtin_add_overflow(s->paddr, s->memsz, &end))
            return errf(err, errlen, -ENOEXEC, "%s: bad ELF segment %u", req->kernel_path, i);
        uint8_t *dst = gm_ptr(req->gm, s->paddr, s->memsz);
        if (!dst || overlaps_firmware(s->paddr, end))
            return errf(err, errlen, -E2BIG,
                        "%s: segment at %#llx-%#llx is outside guest RAM or on kvmbox's boot data",
                        req->kernel_path, (unsigned long long)s->paddr, (unsigned long long)end);
        memcpy(dst, e->img->data + s->offset, s->filesz);
        memset(dst + s->filesz, 0, s->memsz - s->filesz);
        if (end > top)
            top = end;
    }
    if (!top)
        return errf(err, errlen, -ENOEXEC, "%s: ELF has nothing to load", req->kernel_path);
    *end_out = top;
    return 0;
}

static int put_cmdline(const struct boot_request *req, char *err, size_t errlen)
{
    size_t len = strlen(req->cmdline);
    if (len >= LAYOUT_CMDLINE_MAX)
        return errf(err, errlen, -E2BIG, "command line is too long (%zu bytes, at most %llu)", len,
                    LAYOUT_CMDLINE_MAX - 1);
    return gm_write(req->gm, LAYOUT_CMDLINE, req->cmdline, len + 1);
}

static int put_module(const struct boot_request *req, const struct boot_image *initrd, uint64_t kernel_end,
                      uint64_t *addr, char *err, size_t errlen)
{
    *addr = boot_place_high(req->gm, initrd->size, (kernel_end + 0xfff) & ~0xfffULL, LAYOUT_4G);
    if (!*addr)
        return errf(err, errlen, -E2BIG,
                    "initrd %s (%zu bytes) does not fit in guest RAM below 4 GiB after the kernel",
                    req->initrd_path, initrd->size);
    memcpy(gm_ptr(req->gm, *addr, initrd->size), initrd->data, initrd->size);
    return 0;
}

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};
struct hvm_modlist_entry {
    uint64_t paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};

int boot_load_pvh(const struct boot_request *req, const struct boot_image *img,
                  const struct boot_image *initrd, struct boot_info *out, char *err, size_t errlen)
{
    struct elf e;
    if (elf_parse(img, &e) < 0)
        return -ENOENT;
    uint64_t entry = elf_pvh_entry(&e);
    if (!entry)
        return -ENOENT;
    uint64_t kend;
    int r = elf_load(req, &e, &kend, err, errlen);
    if (r < 0 || (r = put_cmdline(req, err, errlen)) < 0)
        return r;

    /* One page at LAYOUT_START_INFO: start info, module list, then the memory map. */
    uint8_t *page = gm_ptr(req->gm, LAYOUT_START_INFO, 4096);
    memset(page, 0, 4096);
    struct hvm_start_info si = {
        .magic = HVM_START_MAGIC,
        .version = 1,
        .cmdline_paddr = LAYOUT_CMDLINE,
        .rsdp_paddr = req->rsdp_gpa,
    };
    size_t mod_off = sizeof(si), map_off = mod_off + sizeof(struct hvm_modlist_entry);
    if (initrd) {
        struct hvm_modlist_entry m = { .size = initrd->size };
        if ((r = put_module(req, initrd, kend, &m.paddr, err, errlen)) < 0)
            return r;
        memcpy(page + mod_off, &m, sizeof(m));
        si.nr_modules = 1;
        si.modlist_paddr = LAYOUT_START_INFO + mod_off;
    }
    if (req->ne820 > (int)((4096 - map_off) / sizeof(struct hvm_memmap_entry)))
        return errf(err, errlen, -E2BIG, "memory map has too many entries");
    for (int i = 0; i < req->ne820; i++) {
        struct hvm_memmap_entry m = { req->e820[i].addr, req->e820[i].size, req->e820[i].type, 0 };
        memcpy(page + map_off + i * sizeof(m), &m, sizeof(m));
    }
    si.memmap_paddr = LAYOUT_START_INFO + map_off;
    si.memmap_entries = (uint32_t)req->ne820;
    memcpy(page, &si, sizeof(si));

    *out = (struct boot_info){ BOOT_PVH, entry, LAYOUT_START_INFO, 0 };
    return 0;
}

struct mb_header {
    uint32_t magic, flags, checksum;
    uint32_t header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr;
};

struct mb_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr, config_table, boot_loader_name;
};

static int mb_find(const struct boot_image *img, struct mb_header *h, size_t *off)
{
    size_t lim = img->size < MB_SEARCH ? img->size : MB_SEARCH;
    for (size_t o = 0; o + 12 <= lim; o += 4) {
        memcpy(h, img->data + o, 12);
        if (h->magic == MB_HEADER_MAGIC && h->magic + h->flags + h->checksum == 0) {
            memset(&h->header_addr, 0, 20);
            if (o + sizeof(*h) <= img->size)
                memcpy(h, img->data + o, sizeof(*h));
            *off = o;
            return 0;
        }
    }
    return -ENOENT;
}

int boot_load_multiboot(const struct boot_request *req, const struct boot_image *img,
                        const struct boot_image *initrd, struct boot_info *out, char *err, size_t errlen)
{
    struct mb_header h;
    size_t hoff;
    if (mb_find(img, &h, &hoff) < 0)
        return -ENOENT;
    if (h.flags & 0x0000fffc)
        return errf(err, errlen, -ENOEXEC, "%s: multiboot header asks for unsupported features (flags %#x)",
                    req->kernel_path, h.flags);
    uint64_t kend, entry;
    int r;
    if (h.flags & 0x10000) {
        /* The a.out kludge (flag 16): the header says where the file goes. */
        if (h.header_addr < h.load_addr || h.header_addr - h.load_addr > hoff)
            return errf(err, errlen, -ENOEXEC, "%s: bad multiboot load addresses", req->kernel_path);
        uint64_t file_off = hoff - (h.header_addr - h.load_addr);
        uint64_t load_end = h.load_end_addr ? h.load_end_addr : h.load_addr + (img->size - file_off);
        uint64_t bss_end = h.bss_end_addr > load_end ? h.bss_end_addr : load_end;
        if (load_end < h.load_addr || load_end - h.load_addr > img->size - file_off)
            return errf(err, errlen, -ENOEXEC, "%s: multiboot load range exceeds the file", req->kernel_path);
        uint8_t *dst = gm_ptr(req->gm, h.load_addr, bss_end - h.load_addr);
        if (!dst || overlaps_firmware(h.load_addr, bss_end))
            return errf(err, errlen, -E2BIG, "%s: multiboot image does not fit in guest RAM above 1 MiB",
                        req->kernel_path);
        memcpy(dst, img->data + file_off, load_end - h.load_addr);
        memset(dst + (load_end - h.load_addr), 0, bss_end - load_end);
        kend = bss_end;
        entry = h.entry_addr;
    } else {
        struct elf e;
        if (elf_parse(img, &e) < 0)
            return errf(err, errlen, -ENOEXEC, "%s: multiboot kernel is not ELF and has no load addresses",
                        req->kernel_path);
        if ((r = elf_load(req, &e, &kend, err, errlen)) < 0)
            return r;
        entry = e.entry;
    }
    if ((r = put_cmdline(req, err, errlen)) < 0)
        return r;

    uint8_t *page = gm_ptr(req->gm, LAYOUT_START_INFO, 4096);
    memset(page, 0, 4096);
    struct mb_info mi = { .flags = 0x1 | 0x4 | 0x40 | 0x200 };
    uint64_t low_end = gm_low_end(req->gm);
    mi.mem_lower = (uint32_t)(LAYOUT_EBDA >> 10);
    mi.mem_upper = (uint32_t)((low_end - LAYOUT_HIGH_KERNEL) >> 10);
    mi.cmdline = (uint32_t)LAYOUT_CMDLINE;
    size_t off = sizeof(mi);
    static const char name[] = "kvmbox";
    memcpy(page + off, name, sizeof(name));
    mi.boot_loader_name = (uint32_t)(LAYOUT_START_INFO + off);
    off = (off + sizeof(name) + 15) & ~15UL;
    if (initrd) {
        uint64_t addr;
        if ((r = put_module(req, initrd, kend, &addr, err, errlen)) < 0)
            return r;
        uint32_t mod[4] = { (uint32_t)addr, (uint32_t)(addr + initrd->size), (uint32_t)LAYOUT_CMDLINE, 0 };
        memcpy(page + off, mod, sizeof(mod));
        mi.flags |= 0x8;
        mi.mods_count = 1;
        mi.mods_addr = (uint32_t)(LAYOUT_START_INFO + off);
        off += sizeof(mod);
    }
    if (off + (size_t)req->ne820 * 24 > 4096)
        return errf(err, errlen, -E2BIG, "memory map has too many entries");
    mi.mmap_addr = (uint32_t)(LAYOUT_START_INFO + off);
    for (int i = 0; i < req->ne820; i++) {
        uint8_t ent[24];
        uint32_t sz = 20;
        memcpy(ent, &sz, 4);
        memcpy(ent + 4, &req->e820[i], 20);
        memcpy(page + off, ent, 24);
        off += 24;
    }
    mi.mmap_length = (uint32_t)(req->ne820 * 24);
    memcpy(page, &mi, sizeof(mi));
    *out = (struct boot_info){ BOOT_MULTIBOOT, entry, LAYOUT_START_INFO, MB_BOOT_MAGIC };
    return 0;
}
