/* Application-processor start-up code. smp_start() copies it to TRAMP_BASE (below 1 MiB, as
 * the SIPI vector requires); an AP starts here in real mode at CS = TRAMP_BASE >> 4, enters
 * flat protected mode, takes a stack and calls the C entry with its start-up index. */
#define TRAMP_BASE 0x10000
#define OFF(x) ((x) - tramp_start)

    .section .rodata
    .globl tramp_start, tramp_end, tramp_count, tramp_stacks, tramp_entry
    .code16
tramp_start:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl OFF(tramp_gdtr)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(TRAMP_BASE + OFF(tramp32))
    .code32
tramp32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $1, %eax
    lock xadd %eax, (TRAMP_BASE + OFF(tramp_count))
    mov %eax, %ecx
    inc %ecx
    shl $12, %ecx
    add (TRAMP_BASE + OFF(tramp_stacks)), %ecx
    mov %ecx, %esp
    push %eax
    call *(TRAMP_BASE + OFF(tramp_entry))
1:  cli
    hlt
    jmp 1b
    .align 8
tramp_gdt:
    .quad 0, 0x00cf9a000000ffff, 0x00cf92000000ffff
tramp_gdtr:
    .word 23
    .long TRAMP_BASE + OFF(tramp_gdt)
    .align 4
tramp_count:  .long 0
tramp_stacks: .long 0
tramp_entry:  .long 0
tramp_end:
    .section .note.GNU-stack, "", @progbits
