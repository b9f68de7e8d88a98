/* A multiboot kernel that triple-faults: an IDT with no entries, then an exception.
 * kvmbox must end with status 4 and name the exit, rip and the instruction bytes. */
.section .text
.code32
.globl _start
.align 4
mbh: .long 0x1BADB002, 0x00000003, -(0x1BADB002 + 0x3)
_start:
    lidt idtr
    ud2
idtr: .word 0
      .long 0
