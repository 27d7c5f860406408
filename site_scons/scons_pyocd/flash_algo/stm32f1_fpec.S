/*
 * Flash algorithm for the STM32F1 FPEC (PM0063 / PM0075), CMSIS-Pack calling
 * convention, as pyOCD loads it: position-independent, no data section, the
 * first instruction is the BKPT that every routine returns to (LR = base + 1).
 *
 * What it does differently from pyOCD's stock STM32F103 algorithm: ProgramPage
 * fetches the next half-word and updates its counters while the FPEC is busy
 * programming the previous one, so only the final BSY poll and the branch back
 * run between two programming operations. It does not read each half-word back:
 * the host verifies the pages it wrote (CRC) after programming, and PGERR /
 * WRPRTERR, which are sticky, are checked once per page.
 *
 * Registers: r3 = FPEC base throughout. Returns 0 on success, 1 on error.
 * Build: scripts/build-flash-algo (writes the words into target_stm32f100rb.py).
 */
    .syntax unified
    .cpu cortex-m3
    .thumb

    .equ FLASH_R,   0x40022000
    .equ KEYR,      0x04
    .equ SR,        0x0C
    .equ CR,        0x10
    .equ AR,        0x14
    .equ SR_BSY,    0x01
    .equ SR_ERR,    0x14          /* PGERR | WRPRTERR */
    .equ SR_CLEAR,  0x34          /* EOP | WRPRTERR | PGERR */
    .equ CR_PG,     0x01
    .equ CR_PER,    0x02
    .equ CR_MER,    0x04
    .equ CR_STRT,   0x40
    .equ CR_LOCK,   0x80

    .text
    .global algo_start
algo_start:
    bkpt    #0
    b       algo_start

/* r3 = FPEC; unlock if CR.LOCK; clear the sticky flags. Clobbers r0. */
    .thumb_func
unlock:
    ldr     r0, [r3, #CR]
    tst     r0, #CR_LOCK
    beq     1f
    ldr     r0, =0x45670123
    str     r0, [r3, #KEYR]
    ldr     r0, =0xCDEF89AB
    str     r0, [r3, #KEYR]
1:  movs    r0, #SR_CLEAR
    str     r0, [r3, #SR]
    bx      lr

/* r3 = FPEC; wait while BSY; r0 = 0 if no error flag, else 1; CR = 0. */
    .thumb_func
finish:
    ldr     r0, [r3, #SR]
    lsls    r0, r0, #31
    bmi     finish
    movs    r0, #0
    str     r0, [r3, #CR]
    ldr     r0, [r3, #SR]
    tst     r0, #SR_ERR
    ite     eq
    moveq   r0, #0
    movne   r0, #1
    bx      lr

/* int Init(uint32_t adr, uint32_t clk, uint32_t fnc) */
    .global Init
    .thumb_func
Init:
    push    {lr}
    ldr     r3, =FLASH_R
    bl      unlock
    movs    r0, #0
    pop     {pc}

/* int UnInit(uint32_t fnc): lock the FPEC again. */
    .global UnInit
    .thumb_func
UnInit:
    ldr     r3, =FLASH_R
    movs    r0, #CR_LOCK
    str     r0, [r3, #CR]
    movs    r0, #0
    bx      lr

/* int EraseChip(void): mass erase of main flash. */
    .global EraseChip
    .thumb_func
EraseChip:
    push    {lr}
    ldr     r3, =FLASH_R
    bl      unlock
    movs    r0, #CR_MER
    str     r0, [r3, #CR]
    movs    r0, #(CR_MER | CR_STRT)
    str     r0, [r3, #CR]
    bl      finish
    pop     {pc}

/* int EraseSector(uint32_t adr): erase the page holding adr. */
    .global EraseSector
    .thumb_func
EraseSector:
    push    {lr}
    mov     r1, r0
    ldr     r3, =FLASH_R
    bl      unlock
    movs    r0, #CR_PER
    str     r0, [r3, #CR]
    str     r1, [r3, #AR]
    movs    r0, #(CR_PER | CR_STRT)
    str     r0, [r3, #CR]
    bl      finish
    pop     {pc}

/* int ProgramPage(uint32_t adr, uint32_t sz, uint8_t *buf) */
    .global ProgramPage
    .thumb_func
ProgramPage:
    push    {r4, r5, lr}
    mov     r4, r0                  /* r4 = flash address */
    adds    r1, r1, #1
    lsrs    r1, r1, #1              /* r1 = half-words to program */
    beq     3f
    ldr     r3, =FLASH_R
    bl      unlock
    movs    r0, #CR_PG
    str     r0, [r3, #CR]
    ldrh    r5, [r2], #2            /* first half-word */
1:  strh    r5, [r4], #2            /* start programming it */
    ldrh    r5, [r2], #2            /* meanwhile: fetch the next one */
    subs    r1, r1, #1              /* and count */
2:  ldr     r0, [r3, #SR]
    lsls    r0, r0, #31
    bmi     2b                      /* BSY */
    cmp     r1, #0
    bne     1b
3:  bl      finish
    pop     {r4, r5, pc}

    .ltorg
    .global algo_end
algo_end:
