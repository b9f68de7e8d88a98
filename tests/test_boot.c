/* Unit tests for the kernel loaders, on synthetic images in a memory-backed guest RAM:
 * a bzImage setup header, an ELF with a PVH note, a multiboot ELF, and files that are none. */
#include <check.h>
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "firmware/e820.h"
#include "tests/check_main.h"
#include "vmm/boot.h"
#include "vmm/layout.h"

#define RAM (64u << 20)

static uint8_t *ram;
static struct guest_mem gm;
static char path[64];
static struct e820_entry map[2] = { { 0, 0x9fc00, E820_RAM }, { 0x100000, RAM - 0x100000, E820_RAM } };

static void setup(void)
{
    ram = calloc(1, RAM);
    ck_assert_ptr_nonnull(ram);
    gm_layout(&gm, ram, RAM);
    snprintf(path, sizeof(path), "/tmp/kvmbox-test-boot.XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
}

static void teardown(void)
{
    unlink(path);
    free(ram);
}

static void write_file(const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static int load(const char *cmdline, struct boot_info *bi, char *err)
{
    struct boot_request req = { .gm = &gm,
                                .kernel_path = path,
                                .cmdline = cmdline,
                                .rsdp_gpa = LAYOUT_ACPI_BASE,
                                .e820 = map,
                                .ne820 = 2 };
    return boot_load(&req, bi, err, 256);
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

/* A bzImage: boot sector + 1 setup sector + 3 sectors of "protected-mode kernel". */
static size_t make_bzimage(uint8_t *k, uint16_t version, uint16_t xloadflags, uint32_t cmdline_size)
{
    size_t size = 5 * 512;
    memset(k, 0, size);
    k[0x1f1] = 1; /* setup_sects */
    put16(k + 0x1fe, 0xaa55);
    k[0x201] = 0x66; /* header ends at 0x268 */
    memcpy(k + 0x202, "HdrS", 4);
    put16(k + 0x206, version);
    k[0x211] = 0x01;              /* LOADED_HIGH */
    put32(k + 0x22c, 0x37ffffff); /* initrd_addr_max */
    put16(k + 0x236, xloadflags);
    put32(k + 0x238, cmdline_size);
    put32(k + 0x260, 8192);          /* init_size */
    memset(k + 1024, 0x90, 3 * 512); /* the "kernel" after 2 setup sectors */
    return size;
}

START_TEST(bzimage_64bit)
{
    uint8_t k[5 * 512];
    write_file(k, make_bzimage(k, 0x20f, 0x1, 2048));
    struct boot_info bi;
    char err[256] = "";
    ck_assert_msg(load("console=ttyS0", &bi, err) == 0, "%s", err);
    ck_assert_int_eq(bi.proto, BOOT_LINUX64);
    ck_assert_uint_eq(bi.entry, LAYOUT_HIGH_KERNEL + 0x200);
    ck_assert_uint_eq(bi.arg, LAYOUT_ZERO_PAGE);
    const uint8_t *bp = ram + LAYOUT_ZERO_PAGE;
    uint32_t v;
    memcpy(&v, bp + 0x228, 4);
    ck_assert_uint_eq(v, LAYOUT_CMDLINE);
    ck_assert_str_eq((char *)ram + LAYOUT_CMDLINE, "console=ttyS0");
    ck_assert_uint_eq(bp[0x210], 0xff); /* type_of_loader */
    ck_assert_uint_eq(bp[0x1e8], 2);    /* e820 entries */
    uint64_t rsdp;
    memcpy(&rsdp, bp + 0x70, 8);
    ck_assert_uint_eq(rsdp, LAYOUT_ACPI_BASE);
    ck_assert_uint_eq(ram[LAYOUT_HIGH_KERNEL], 0x90); /* kernel body at 1 MiB */
}
END_TEST

START_TEST(bzimage_32bit_and_limits)
{
    uint8_t k[5 * 512];
    write_file(k, make_bzimage(k, 0x20a, 0, 2048));
    struct boot_info bi;
    char err[256];
    ck_assert_int_eq(load("", &bi, err), 0);
    ck_assert_int_eq(bi.proto, BOOT_LINUX32);
    /* a command line longer than the kernel accepts */
    write_file(k, make_bzimage(k, 0x20f, 1, 8));
    ck_assert_int_eq(load("this is longer than eight", &bi, err), -E2BIG);
    /* too old a protocol */
    write_file(k, make_bzimage(k, 0x200, 0, 0));
    ck_assert_int_eq(load("", &bi, err), -ENOEXEC);
    ck_assert_ptr_nonnull(strstr(err, "too old"));
}
END_TEST

/* ELF32 with one PT_LOAD at 1 MiB and (optionally) a PT_NOTE holding the PVH entry. */
static size_t make_elf(uint8_t *buf, bool pvh, bool multiboot)
{
    memset(buf, 0, 4096);
    Elf32_Ehdr *eh = (Elf32_Ehdr *)buf;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS32, eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_type = ET_EXEC, eh->e_machine = EM_386, eh->e_entry = 0x100010;
    eh->e_phoff = sizeof(*eh), eh->e_phentsize = sizeof(Elf32_Phdr), eh->e_phnum = pvh ? 2 : 1;
    Elf32_Phdr *ph = (Elf32_Phdr *)(buf + sizeof(*eh));
    ph[0] = (Elf32_Phdr){
        .p_type = PT_LOAD, .p_offset = 1024, .p_paddr = 0x100000, .p_filesz = 512, .p_memsz = 8192
    };
    memset(buf + 1024, 0xcc, 512);
    if (multiboot) {
        uint32_t mb[3] = { 0x1badb002, 0x3, (uint32_t) - (0x1badb002 + 0x3) };
        memcpy(buf + 1024, mb, sizeof(mb));
    }
    if (pvh) {
        ph[1] = (Elf32_Phdr){ .p_type = PT_NOTE, .p_offset = 2048, .p_filesz = 20 };
        uint32_t note[5] = { 4, 4, 18, 0, 0x100040 };
        memcpy(&note[3], "Xen", 4);
        memcpy(buf + 2048, note, sizeof(note));
    }
    return 4096;
}

START_TEST(pvh_elf)
{
    uint8_t buf[4096];
    write_file(buf, make_elf(buf, true, true));
    struct boot_info bi;
    char err[256] = "";
    ck_assert_msg(load("pvh", &bi, err) == 0, "%s", err);
    ck_assert_int_eq(bi.proto, BOOT_PVH); /* PVH wins over multiboot, as in QEMU */
    ck_assert_uint_eq(bi.entry, 0x100040);
    uint32_t magic, nmap;
    uint64_t cmd, rsdp;
    memcpy(&magic, ram + LAYOUT_START_INFO, 4);
    memcpy(&cmd, ram + LAYOUT_START_INFO + 24, 8);
    memcpy(&rsdp, ram + LAYOUT_START_INFO + 32, 8);
    memcpy(&nmap, ram + LAYOUT_START_INFO + 48, 4);
    ck_assert_uint_eq(magic, 0x336ec578);
    ck_assert_str_eq((char *)ram + cmd, "pvh");
    ck_assert_uint_eq(rsdp, LAYOUT_ACPI_BASE);
    ck_assert_uint_eq(nmap, 2);
    ck_assert_uint_eq(ram[0x100000 + 100], 0xcc);
    ck_assert_uint_eq(ram[0x100000 + 600], 0); /* bss zeroed */
}
END_TEST

START_TEST(multiboot_elf)
{
    uint8_t buf[4096];
    write_file(buf, make_elf(buf, false, true));
    struct boot_info bi;
    char err[256] = "";
    ck_assert_msg(load("mb", &bi, err) == 0, "%s", err);
    ck_assert_int_eq(bi.proto, BOOT_MULTIBOOT);
    ck_assert_uint_eq(bi.magic, 0x2badb002);
    ck_assert_uint_eq(bi.entry, 0x100010);
    uint32_t flags, cmd, mmap_len;
    memcpy(&flags, ram + LAYOUT_START_INFO, 4);
    memcpy(&cmd, ram + LAYOUT_START_INFO + 16, 4);
    memcpy(&mmap_len, ram + LAYOUT_START_INFO + 44, 4);
    ck_assert(flags & 0x40);
    ck_assert_str_eq((char *)ram + cmd, "mb");
    ck_assert_uint_eq(mmap_len, 2 * 24);
}
END_TEST

START_TEST(not_a_kernel)
{
    struct boot_info bi;
    char err[256];
    write_file("hello, I am a text file\n", 24);
    ck_assert_int_eq(load("", &bi, err), -ENOEXEC);
    ck_assert_ptr_nonnull(strstr(err, "not a kernel"));
    uint8_t buf[4096];
    write_file(buf, make_elf(buf, false, false)); /* ELF, but neither PVH nor multiboot */
    ck_assert_int_eq(load("", &bi, err), -ENOEXEC);
    write_file("", 0);
    ck_assert_int_eq(load("", &bi, err), -ENOEXEC);
    unlink(path);
    ck_assert_int_eq(load("", &bi, err), -ENOENT);
}
END_TEST

START_TEST(hostile_elf)
{
    uint8_t buf[4096];
    make_elf(buf, true, false);
    Elf32_Phdr *ph = (Elf32_Phdr *)(buf + sizeof(Elf32_Ehdr));
    ph[0].p_paddr = RAM - 100; /* segment runs past the end of RAM */
    write_file(buf, 4096);
    struct boot_info bi;
    char err[256];
    ck_assert_int_eq(load("", &bi, err), -E2BIG);
    make_elf(buf, true, false);
    ph[0].p_filesz = 0x10000; /* file range past the end of the file */
    write_file(buf, 4096);
    ck_assert_int_lt(load("", &bi, err), 0);
    make_elf(buf, true, false);
    ph[0].p_paddr = LAYOUT_ACPI_BASE; /* on top of kvmbox's ACPI tables */
    write_file(buf, 4096);
    ck_assert_int_eq(load("", &bi, err), -E2BIG);
    make_elf(buf, true, false);
    ((Elf32_Ehdr *)buf)->e_phnum = 1000;
    write_file(buf, 4096);
    ck_assert_int_lt(load("", &bi, err), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("boot");
    TCase *tc = tcase_create("loaders");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, bzimage_64bit);
    tcase_add_test(tc, bzimage_32bit_and_limits);
    tcase_add_test(tc, pvh_elf);
    tcase_add_test(tc, multiboot_elf);
    tcase_add_test(tc, not_a_kernel);
    tcase_add_test(tc, hostile_elf);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
