/* Entry of every guest-test kernel: a multiboot v1 header and a PVH note, both pointing at
 * _start, which is entered in 32-bit protected mode with paging off. EAX holds the
 * multiboot magic (multiboot) or anything (PVH); EBX points at the boot information. */
#define MB_MAGIC 0x1badb002
#define MB_FLAGS 0x00000003 /* modules page-aligned, memory information */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

#ifndef NO_PVH
    .section .note.Xen, "a", @note
    .align 4
    .long 4, 4, 18          /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start
#endif

    .text
    .code32
    .globl _start
_start:
    cli
    cld
    lgdt gdt_ptr
    ljmp $0x08, $1f
1:  mov $0x10, %ecx
    mov %ecx, %ds
    mov %ecx, %es
    mov %ecx, %ss
    mov %ecx, %fs
    mov %ecx, %gs
    mov $stack_top, %esp
    push %ebx               /* boot information */
    push %eax               /* multiboot magic, if any */
    call gt_start           /* never returns */
2:  hlt
    jmp 2b

    .section .rodata
    .align 8
    .globl gt_gdt
gt_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff /* 0x10: flat data */
gdt_ptr:
    .word gdt_ptr - gt_gdt - 1
    .long gt_gdt
    .globl gt_gdt_ptr
    .set gt_gdt_ptr, gdt_ptr

    .bss
    .align 16
    .space 16384
stack_top:
    .section .note.GNU-stack, "", @progbits
