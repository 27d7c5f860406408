/*
 * Flash algorithm for the STM32F1 FPEC (PM0063 / PM0075), CMSIS-Pack calling
 * convention, as pyOCD loads it: position-independent, the first instruction is
 * the BKPT that every routine returns to (LR = base + 1). Build:
 * scripts/build-flash-algo (writes the blob that target_stm32f100rb.py embeds).
 *
 * The CMSIS entries (Init, UnInit, EraseChip, EraseSector, ProgramPage) serve
 * pyOCD's own flash code (its command line, FlashLoader). The tool calls Exec,
 * which runs a table of commands in one call, so that one call can erase pages,
 * program several pages and check them, with no host round trip in between:
 *
 *   word 0 = opcode << 28 | argument, then the operands:
 *   0 END
 *   1 ERASE  | count, address, step   erase `count` pages: address, address+step...
 *   2 MASS                            mass erase of main flash
 *   3 PROG   | bytes, dest, src       program `bytes` (even) from RAM `src` to
 *                                     flash `dest`, across page boundaries; a
 *                                     half-word 0xFFFF over an erased half-word
 *                                     is skipped (programming it changes nothing)
 *   4 CRC    | count, address, size   for `count` ranges of `size` bytes (a
 *                                     multiple of 4) from `address`: the CRC unit's
 *                                     value after feeding the range's words as
 *                                     they are (one result word per range)
 *   5 BLANK  | count, address, size   one result byte per range: 1 if every byte
 *                                     is 0xFF (exact: the AND of its words), 0 if
 *                                     not; padded to a word
 *   6 ZCRC   | count, address, size   the range's zlib CRC-32 (one word per range)
 *
 * Exec(r0 = table, r1 = results) returns 0, or (offset of the failing command in
 * the table) << 8 | FLASH_SR error bits (PGERR 0x04, WRPRTERR 0x10) | 1.
 *
 * CRC and ZCRC feed the STM32 CRC unit (RM0041 section 3: CRC-32, polynomial
 * 0x04C11DB7, initial value 0xFFFFFFFF, one 32-bit word per write to CRC_DR,
 * no reflection). ZCRC feeds it RBIT of each little-endian word and returns
 * NOT RBIT(CRC_DR), which is zlib.crc32 of the bytes. CRC feeds the words as
 * they are, two instructions a word fewer: the host computes the value to
 * expect with zlib over the bytes bit-reversed and word-swapped (a CRC-32 all
 * the same, for comparing with data the host holds).
 *
 * Clocks: Init(adr, clk, fnc) with clk >= 24000000 raises SYSCLK to 24 MHz, the
 * F100's maximum, from the PLL fed by HSI/2 (x6; no crystal needed), if and only
 * if the clock tree is as after reset (SYSCLK = HSI, AHB /1, PLL off); UnInit
 * puts it back. RM0041: the PLL is configured while off, SW selects it once
 * PLLRDY is set; the FLASH_ACR of the value line has no LATENCY field (zero wait
 * states up to 24 MHz), only HLFCYA, which must be off above 8 MHz and with the
 * PLL, so it is cleared and restored. The HSI stays on (the FPEC runs from it).
 * Init also turns the CRC unit's clock on (RCC_AHBENR.CRCEN) and UnInit restores
 * RCC_AHBENR.
 *
 * Programming keeps the FPEC busy: the next half-word is fetched and tested while
 * the previous one programs, and only the BSY poll and the store run between two
 * programming operations. PGERR / WRPRTERR, which are sticky, are checked once per
 * command; the host verifies what it wrote by CRC.
 */
    .syntax unified
    .cpu cortex-m3
    .thumb

    .equ FLASH_R,   0x40022000
    .equ ACR,       0x00
    .equ KEYR,      0x04
    .equ SR,        0x0C
    .equ CR,        0x10
    .equ AR,        0x14
    .equ SR_ERR,    0x14          /* PGERR | WRPRTERR */
    .equ SR_CLEAR,  0x34          /* EOP | WRPRTERR | PGERR */
    .equ CR_PG,     0x01
    .equ CR_PER,    0x02
    .equ CR_MER,    0x04
    .equ CR_STRT,   0x40
    .equ CR_LOCK,   0x80
    .equ ACR_HLFCYA, 0x08

    .equ RCC_R,     0x40021000
    .equ RCC_CR,    0x00
    .equ RCC_CFGR,  0x04
    .equ RCC_AHBENR, 0x14
    .equ PLLON,     0x01000000
    .equ PLLRDY,    0x02000000
    .equ CFGR_PLL_MASK, 0x003F0000 /* PLLSRC, PLLXTPRE, PLLMUL */
    .equ CFGR_PLL_X6, 0x00100000   /* PLLMUL 0100: x6, PLLSRC 0: HSI/2 */
    .equ CRCEN,     0x40

    .equ CRC_R,     0x40023000
    .equ CRC_DR,    0x00
    .equ CRC_CR,    0x08

    /* state words (see `state` below) */
    .equ S_FLAGS,   0             /* bit 0: clocks raised, bit 1: AHBENR saved */
    .equ S_AHBENR,  4
    .equ S_CFGR,    8
    .equ S_ACR,     12

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

/* r3 = FPEC; wait while BSY; CR = 0; r0 = the error flags (0: none). */
    .thumb_func
finish:
    ldr     r0, [r3, #SR]
    lsls    r0, r0, #31
    bmi     finish
    movs    r0, #0
    str     r0, [r3, #CR]
    ldr     r0, [r3, #SR]
    and     r0, r0, #SR_ERR
    bx      lr

/* Erase the page holding r1. r3 = FPEC. Returns the error flags. */
    .thumb_func
do_erase:
    push    {lr}
    bl      unlock
    movs    r0, #CR_PER
    str     r0, [r3, #CR]
    str     r1, [r3, #AR]
    movs    r0, #(CR_PER | CR_STRT)
    str     r0, [r3, #CR]
    bl      finish
    pop     {pc}

/* Mass erase. r3 = FPEC. Returns the error flags. */
    .thumb_func
do_mass:
    push    {lr}
    bl      unlock
    movs    r0, #CR_MER
    str     r0, [r3, #CR]
    movs    r0, #(CR_MER | CR_STRT)
    str     r0, [r3, #CR]
    bl      finish
    pop     {pc}

/* Program r6 bytes (even) from r5 to flash r4. r3 = FPEC. Returns the error flags.
   Clobbers r0, r1, r4-r7. */
    .thumb_func
do_prog:
    push    {lr}
    bl      unlock
    movs    r0, #CR_PG
    str     r0, [r3, #CR]
    movw    r7, #0xFFFF
    cbz     r6, 3f
1:  ldrh    r0, [r5], #2            /* the next half-word (while the last one programs) */
    cmp     r0, r7
    bne     2f
    ldrh    r1, [r4]
    cmp     r1, r7
    beq     4f                      /* 0xFFFF over 0xFFFF: nothing to do */
2:  ldr     r1, [r3, #SR]
    lsls    r1, r1, #31
    bmi     2b                      /* BSY */
    strh    r0, [r4]                /* start programming it */
4:  adds    r4, r4, #2
    subs    r6, r6, #2
    bhi     1b
3:  bl      finish
    pop     {pc}

/* int Init(uint32_t adr, uint32_t clk, uint32_t fnc) */
    .global Init
    .thumb_func
Init:
    push    {r4, r5, lr}
    adr     r5, state
    ldr     r4, =RCC_R
    ldr     r0, [r4, #RCC_AHBENR]
    str     r0, [r5, #S_AHBENR]
    orr     r0, r0, #CRCEN
    str     r0, [r4, #RCC_AHBENR]
    movs    r0, #2                  /* AHBENR saved, clocks not raised */
    str     r0, [r5, #S_FLAGS]
    ldr     r0, =24000000
    cmp     r1, r0
    blo     9f                      /* not asked */
    ldr     r0, [r4, #RCC_CR]
    tst     r0, #PLLON
    bne     9f                      /* the firmware's clock tree: leave it */
    ldr     r0, [r4, #RCC_CFGR]
    tst     r0, #0xFF               /* SW, SWS: HSI; HPRE: /1 */
    bne     9f
    str     r0, [r5, #S_CFGR]
    bic     r0, r0, #CFGR_PLL_MASK
    orr     r0, r0, #CFGR_PLL_X6
    str     r0, [r4, #RCC_CFGR]
    ldr     r0, [r4, #RCC_CR]
    orr     r0, r0, #PLLON
    str     r0, [r4, #RCC_CR]
1:  ldr     r0, [r4, #RCC_CR]
    tst     r0, #PLLRDY
    beq     1b
    ldr     r3, =FLASH_R
    ldr     r0, [r3, #ACR]
    str     r0, [r5, #S_ACR]
    bic     r0, r0, #ACR_HLFCYA
    str     r0, [r3, #ACR]
    ldr     r0, [r4, #RCC_CFGR]
    orr     r0, r0, #2              /* SW = PLL */
    str     r0, [r4, #RCC_CFGR]
2:  ldr     r0, [r4, #RCC_CFGR]
    and     r0, r0, #0xC
    cmp     r0, #8                  /* SWS = PLL */
    bne     2b
    movs    r0, #3
    str     r0, [r5, #S_FLAGS]
9:  ldr     r3, =FLASH_R
    movs    r0, #SR_CLEAR
    str     r0, [r3, #SR]
    movs    r0, #0
    pop     {r4, r5, pc}

/* int UnInit(uint32_t fnc): lock the FPEC, put the clocks back. */
    .global UnInit
    .thumb_func
UnInit:
    push    {r4, r5, lr}
    adr     r5, state
    ldr     r3, =FLASH_R
    movs    r0, #CR_LOCK
    str     r0, [r3, #CR]
    ldr     r4, =RCC_R
    ldr     r1, [r5, #S_FLAGS]
    tst     r1, #1
    beq     8f
    ldr     r0, [r4, #RCC_CFGR]
    bic     r0, r0, #3              /* SW = HSI */
    str     r0, [r4, #RCC_CFGR]
1:  ldr     r0, [r4, #RCC_CFGR]
    tst     r0, #0xC
    bne     1b
    ldr     r0, [r4, #RCC_CR]
    bic     r0, r0, #PLLON
    str     r0, [r4, #RCC_CR]
2:  ldr     r0, [r4, #RCC_CR]
    tst     r0, #PLLRDY
    bne     2b
    ldr     r0, [r5, #S_CFGR]
    str     r0, [r4, #RCC_CFGR]
    ldr     r0, [r5, #S_ACR]
    str     r0, [r3, #ACR]
8:  tst     r1, #2
    beq     9f
    ldr     r0, [r5, #S_AHBENR]
    str     r0, [r4, #RCC_AHBENR]
9:  movs    r0, #0
    str     r0, [r5, #S_FLAGS]
    pop     {r4, r5, pc}

/* int EraseChip(void) */
    .global EraseChip
    .thumb_func
EraseChip:
    push    {lr}
    ldr     r3, =FLASH_R
    bl      do_mass
    pop     {pc}

/* int EraseSector(uint32_t adr) */
    .global EraseSector
    .thumb_func
EraseSector:
    push    {lr}
    mov     r1, r0
    ldr     r3, =FLASH_R
    bl      do_erase
    pop     {pc}

/* int ProgramPage(uint32_t adr, uint32_t sz, uint8_t *buf) */
    .global ProgramPage
    .thumb_func
ProgramPage:
    push    {r4-r7, lr}
    mov     r4, r0
    adds    r6, r1, #1
    bic     r6, r6, #1
    mov     r5, r2
    ldr     r3, =FLASH_R
    bl      do_prog
    pop     {r4-r7, pc}

/* int Exec(uint32_t *table, uint32_t *results): see the top of this file.
   r10 = the command, r11 = the results, [sp] = the table. */
    .global Exec
    .thumb_func
Exec:
    push    {r4-r11, lr}
    push    {r0}
    mov     r10, r0
    mov     r11, r1
next:
    ldr     r3, =FLASH_R
    ldr     r0, [r10]
    lsrs    r1, r0, #28
    ubfx    r2, r0, #0, #28
    cmp     r1, #1
    beq     op_erase
    cmp     r1, #2
    beq     op_mass
    cmp     r1, #3
    beq     op_prog
    cmp     r1, #4
    beq     op_crc
    cmp     r1, #5
    beq     op_blank
    cmp     r1, #6
    beq     op_zcrc
    movs    r0, #0                  /* END (or an unknown command) */
done:
    add     sp, sp, #4
    pop     {r4-r11, pc}
fail:                               /* r0 = error flags */
    ldr     r1, [sp]
    sub     r1, r10, r1
    orr     r0, r0, r1, lsl #8
    orr     r0, r0, #1
    b       done

op_erase:                           /* count, address, step */
    ldr     r4, [r10, #4]
    ldr     r5, [r10, #8]
    mov     r6, r2
1:  mov     r1, r4
    bl      do_erase
    cmp     r0, #0
    bne     fail
    add     r4, r4, r5
    subs    r6, r6, #1
    bne     1b
    b       step3

op_mass:
    bl      do_mass
    cmp     r0, #0
    bne     fail
    add     r10, r10, #4
    b       next

op_prog:                            /* bytes, dest, src */
    ldr     r4, [r10, #4]
    ldr     r5, [r10, #8]
    mov     r6, r2
    bl      do_prog
    cmp     r0, #0
    bne     fail
    b       step3

/* From the command: r4 = address, r8 = size, r12 = count; r2 = the CRC unit. */
    .thumb_func
ranges:
    ldr     r4, [r10, #4]
    ldr     r8, [r10, #8]
    mov     r12, r2
    ldr     r2, =CRC_R
    bx      lr

/* r7 = end of the range at r4, r9 = end of its 16-byte blocks. */
    .thumb_func
bounds:
    add     r7, r4, r8
    bic     r9, r8, #15
    add     r9, r9, r4
    bx      lr

op_crc:
    bl      ranges
1:  movs    r0, #1
    str     r0, [r2, #CRC_CR]       /* RESET: CRC_DR = 0xFFFFFFFF */
    bl      bounds
    cmp     r4, r9
    bcs     3f
2:  ldmia   r4!, {r0, r1, r5, r6}
    str     r0, [r2]
    str     r1, [r2]
    str     r5, [r2]
    str     r6, [r2]
    cmp     r4, r9
    bcc     2b
3:  cmp     r4, r7
    bcs     5f
4:  ldr     r0, [r4], #4
    str     r0, [r2]
    cmp     r4, r7
    bcc     4b
5:  ldr     r0, [r2]
    str     r0, [r11], #4
    subs    r12, r12, #1
    bne     1b
    b       step3

op_zcrc:
    bl      ranges
1:  movs    r0, #1
    str     r0, [r2, #CRC_CR]
    bl      bounds
    cmp     r4, r9
    bcs     3f
2:  ldmia   r4!, {r0, r1, r5, r6}
    rbit    r0, r0
    str     r0, [r2]
    rbit    r1, r1
    str     r1, [r2]
    rbit    r5, r5
    str     r5, [r2]
    rbit    r6, r6
    str     r6, [r2]
    cmp     r4, r9
    bcc     2b
3:  cmp     r4, r7
    bcs     5f
4:  ldr     r0, [r4], #4
    rbit    r0, r0
    str     r0, [r2]
    cmp     r4, r7
    bcc     4b
5:  ldr     r0, [r2]
    rbit    r0, r0
    mvns    r0, r0
    str     r0, [r11], #4
    subs    r12, r12, #1
    bne     1b
    b       step3

op_blank:
    bl      ranges
1:  mov     r3, #-1                 /* AND of the words */
    bl      bounds
    cmp     r4, r9
    bcs     3f
2:  ldmia   r4!, {r0, r1, r5, r6}
    ands    r0, r1
    ands    r5, r6
    ands    r3, r0
    ands    r3, r5
    cmp     r4, r9
    bcc     2b
3:  cmp     r4, r7
    bcs     5f
4:  ldr     r0, [r4], #4
    ands    r3, r0
    cmp     r4, r7
    bcc     4b
5:  adds    r3, r3, #1              /* every bit set: 0 */
    ite     eq
    moveq   r0, #1
    movne   r0, #0
    strb    r0, [r11], #1
    subs    r12, r12, #1
    bne     1b
    add     r11, r11, #3
    bic     r11, r11, #3
step3:
    add     r10, r10, #12
    b       next

    .ltorg
    .align  2
state:
    .word   0, 0, 0, 0
    .global algo_end
algo_end:
