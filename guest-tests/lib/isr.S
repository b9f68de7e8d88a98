/* Interrupt entry stubs for vectors 0-63: push the vector (and a dummy error code where the
 * CPU pushes none), save registers, call gt_interrupt(vector). */
    .text
    .code32
.macro STUB vec
    .globl isr\vec
isr\vec:
    .if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17)
    .else
    push $0
    .endif
    push $\vec
    jmp isr_common
.endm

.altmacro
.set i, 0
.rept 64
    STUB %i
    .set i, i + 1
.endr

isr_common:
    pusha
    push 32(%esp)           /* vector */
    call gt_interrupt
    add $4, %esp
    popa
    add $8, %esp            /* vector, error code */
    /* Return without IRET, which KVM's instruction emulator on PVM hosts cannot do in 32-bit
     * mode: the interrupt came from ring 0 with the same CS, so the frame (EIP, CS, EFLAGS)
     * can be unwound as POPF + RET. An interrupt between the two nests safely. */
    push %eax
    mov 12(%esp), %eax      /* EFLAGS */
    xchg %eax, 8(%esp)      /* CS slot <- EFLAGS; EAX <- CS (unused) */
    mov 4(%esp), %eax       /* EIP */
    mov %eax, 12(%esp)      /* EFLAGS slot <- EIP */
    pop %eax
    add $4, %esp            /* drop the old EIP slot: stack is now EFLAGS, EIP */
    popfl
    ret

.macro ENTRY vec
    .long isr\vec
.endm

    .section .rodata
    .globl isr_table
isr_table:
.set i, 0
.rept 64
    ENTRY %i
    .set i, i + 1
.endr
    .section .note.GNU-stack, "", @progbits
