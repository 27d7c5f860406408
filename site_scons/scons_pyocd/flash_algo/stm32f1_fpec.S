/*
 * Flash algorithm for the STM32F1 FPEC (PM0063 / PM0075), CMSIS-Pack calling
 * convention, as pyOCD loads it: position-independent, the first instruction is
 * the BKPT that every routine returns to (LR = base + 1). Build:
 * scripts/build-flash-algo (writes the blob that target_stm32f100rb.py embeds).
 *
 * Two interfaces share the code:
 *
 * - The CMSIS entries (Init, UnInit, EraseChip, EraseSector, ProgramPage) serve
 *   pyOCD's own flash code (its command line, FlashLoader).
 * - ExecA and ExecB run a command table from the first or the second half of the
 *   work area (load address + WORK_A / WORK_B), so that one call erases,
 *   programs several pages and checks them, and the host only writes PC to
 *   start a call. They end at the BKPT themselves (no LR needed); the host sets
 *   SP once. Everything they use lies before `exec_end`, except MASS and
 *   CLOCK 0 (before `extra_end`): the tool loads only what it needs.
 *
 * A table: word 0 = where the results go (the status word, then the results),
 * then commands, each word 0 = opcode << 28 | argument, then the operands:
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
 *   7 CLOCK  | up                     up = 1: raise the clock (below); 0: put it
 *                                     back and lock the FPEC
 *   8 CMP    | count, a, b            compare `count` words at a and b: one bit per
 *                                     word, 1 where they differ, 32 to a result word
 *
 * At the end Exec writes its status to the status word: 0, or (offset of the
 * failing command from the table's first command) << 8 | FLASH_SR error bits
 * (PGERR 0x04, WRPRTERR 0x10) | 1. The host writes 0xFFFFFFFF there first, so a
 * call that never got to the end (a fault) is seen as such.
 *
 * CRC and ZCRC feed the STM32 CRC unit (RM0041 section 3: CRC-32, polynomial
 * 0x04C11DB7, initial value 0xFFFFFFFF, one 32-bit word per write to CRC_DR,
 * no reflection). ZCRC feeds it RBIT of each little-endian word and returns
 * NOT RBIT(CRC_DR), which is zlib.crc32 of the bytes. CRC feeds the words as
 * they are, two instructions a word fewer: the host computes the value to
 * expect with zlib over the bytes bit-reversed and word-swapped (a CRC-32 all
 * the same, for comparing with data the host holds).
 *
 * Clocks: raising (CLOCK 1, or Init with clk >= 24000000) sets SYSCLK to 24 MHz,
 * the F100's maximum, from the PLL fed by HSI/2 (x6; no crystal needed), if and
 * only if the clock tree is as after reset (SYSCLK = HSI, AHB /1, PLL off);
 * putting back (CLOCK 0, UnInit) undoes it. RM0041: the PLL is configured while
 * off, SW selects it once PLLRDY is set; the value line's FLASH_ACR has no
 * LATENCY field (zero wait states up to 24 MHz), only HLFCYA, which must be off
 * above 8 MHz and with the PLL: it is cleared and restored. The HSI stays on
 * (the FPEC runs from it). Raising also turns the CRC unit's clock on
 * (RCC_AHBENR.CRCEN); putting back restores RCC_AHBENR. A system reset does all
 * of that too.
 *
 * Programming keeps the FPEC busy: the next half-word is fetched and tested while
 * the previous one programs, and only the BSY poll and the store run between two
 * programming operations. PGERR / WRPRTERR, which are sticky, are checked once per
 * command; the host verifies what it wrote by CRC.
 */
    .syntax unified
    .cpu cortex-m3
    .thumb

    .equ WORK_A,    0x500         /* from the load address: the two halves */
    .equ WORK_B,    0x1280

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
    .equ CRC_CR,    0x08

    /* state words (see `state`) */
    .equ S_FLAGS,   0             /* bit 0: clocks raised, bit 1: AHBENR saved */
    .equ S_AHBENR,  4
    .equ S_CFGR,    8
    .equ S_ACR,     12

    .text
    .global algo_start
algo_start:
    bkpt    #0
    b       algo_start

/* -- the tool's entries ------------------------------------------------------- */

    .global ExecA
    .thumb_func
ExecA:
    adr     r0, algo_start
    add     r0, r0, #WORK_A
    b       Exec

    .global ExecB
    .thumb_func
ExecB:
    adr     r0, algo_start
    add     r0, r0, #WORK_B

/* r0 = the table. r10 = the command, r11 = the results, [sp] = the first command,
   [sp, #4] = the status word. */
    .thumb_func
Exec:
    push    {r4-r11, lr}
    ldr     r1, [r0], #4
    add     r11, r1, #4
    push    {r0, r1}
    mov     r10, r0
next:
    ldr     r3, =FLASH_R
    ldr     r0, [r10]
    lsrs    r1, r0, #28
    ubfx    r2, r0, #0, #28
    tbh     [pc, r1, lsl #1]
jumps:
    .hword  (done0 - jumps) / 2, (op_erase - jumps) / 2, (op_mass - jumps) / 2, (op_prog - jumps) / 2
    .hword  (op_crc - jumps) / 2, (op_blank - jumps) / 2, (op_zcrc - jumps) / 2, (op_clock - jumps) / 2
    .hword  (op_cmp - jumps) / 2, (done0 - jumps) / 2, (done0 - jumps) / 2, (done0 - jumps) / 2
    .hword  (done0 - jumps) / 2, (done0 - jumps) / 2, (done0 - jumps) / 2, (done0 - jumps) / 2

done0:
    movs    r0, #0
done:
    ldr     r1, [sp, #4]
    str     r0, [r1]                /* the status word */
    add     sp, sp, #8
    pop     {r4-r11, lr}
    b       algo_start
fail:                               /* r0 = error flags */
    ldr     r1, [sp]
    sub     r1, r10, r1
    orr     r0, r0, r1, lsl #8
    orr     r0, r0, #1
    b       done

op_erase:                           /* count, address, step */
    ldrd    r4, r5, [r10, #4]
    mov     r6, r2
1:  mov     r1, r4
    bl      do_erase
    cmp     r0, #0
    bne     fail
    add     r4, r4, r5
    subs    r6, r6, #1
    bne     1b
    b       step3

op_prog:                            /* bytes, dest, src */
    ldrd    r4, r5, [r10, #4]
    mov     r6, r2
    bl      do_prog
    cmp     r0, #0
    bne     fail
    b       step3

op_cmp:                             /* count, a, b */
    ldrd    r4, r5, [r10, #4]
1:  movs    r7, #0                  /* the bits of 32 words */
    movs    r1, #1
2:  ldr     r0, [r4], #4
    ldr     r3, [r5], #4
    cmp     r0, r3
    it      ne
    orrne   r7, r7, r1
    subs    r2, r2, #1
    beq     3f
    lsls    r1, r1, #1
    bne     2b
    str     r7, [r11], #4
    b       1b
3:  str     r7, [r11], #4
    b       step3

op_clock:
    cbz     r2, 1f
    bl      clock_up
    b       2f
1:  bl      clock_down
2:  add     r10, r10, #4
    b       next

/* From the command: r4 = address, r8 = size, r12 = count; r2 = the CRC unit. */
    .thumb_func
ranges:
    ldrd    r4, r8, [r10, #4]
    mov     r12, r2
    ldr     r2, =CRC_R
    bx      lr

/* r9 = end of the range at r4, r7 = end of its 24-byte blocks. Clobbers r0, r1. */
    .thumb_func
bounds:
    add     r9, r4, r8              /* end */
    movs    r0, #24
    udiv    r1, r8, r0
    mul     r1, r1, r0
    add     r7, r4, r1              /* end of the 24-byte blocks */
    bx      lr

op_crc:
    bl      ranges
1:  movs    r0, #1
    str     r0, [r2, #CRC_CR]       /* RESET: CRC_DR = 0xFFFFFFFF */
    bl      bounds
    mov     lr, r7
    b       3f
2:  ldmia   r4!, {r0, r1, r3, r5, r6, r7}
    str     r0, [r2]
    str     r1, [r2]
    str     r3, [r2]
    str     r5, [r2]
    str     r6, [r2]
    str     r7, [r2]
3:  cmp     r4, lr
    bcc     2b
    b       5f
4:  ldr     r0, [r4], #4
    str     r0, [r2]
5:  cmp     r4, r9
    bcc     4b
    ldr     r0, [r2]
    str     r0, [r11], #4
    subs    r12, r12, #1
    bne     1b
    b       step3

op_zcrc:
    bl      ranges
1:  movs    r0, #1
    str     r0, [r2, #CRC_CR]
    add     r9, r4, r8
    b       3f
2:  ldr     r0, [r4], #4
    rbit    r0, r0
    str     r0, [r2]
3:  cmp     r4, r9
    bcc     2b
    ldr     r0, [r2]
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
    mov     lr, r7
    b       3f
2:  ldmia   r4!, {r0, r1, r2, r5, r6, r7}
    ands    r0, r1
    ands    r2, r5
    ands    r6, r7
    ands    r3, r0
    ands    r3, r2
    ands    r3, r6
3:  cmp     r4, lr
    bcc     2b
    b       5f
4:  ldr     r0, [r4], #4
    ands    r3, r0
5:  cmp     r4, r9
    bcc     4b
    adds    r3, r3, #1              /* every bit set: 0 */
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

/* -- shared routines ---------------------------------------------------------- */

/* r3 = FPEC; unlock if CR.LOCK; clear the sticky flags. Clobbers r0. */
    .thumb_func
unlock:
    ldr     r0, [r3, #CR]
    lsls    r0, r0, #24             /* LOCK (bit 7) into the sign */
    bpl     1f
    ldr     r0, =0x45670123
    str     r0, [r3, #KEYR]
    ldr     r0, =0xCDEF89AB
    str     r0, [r3, #KEYR]
1:  movs    r0, #SR_CLEAR
    str     r0, [r3, #SR]
    bx      lr

/* r3 = FPEC; r0 = CR bits: start the operation; wait while BSY; CR = 0; r0 = the
   error flags (0: none). */
    .thumb_func
start_finish:
    str     r0, [r3, #CR]
    orr     r0, r0, #CR_STRT
    str     r0, [r3, #CR]
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
    str     r1, [r3, #AR]
    movs    r0, #CR_PER
    bl      start_finish
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

/* Raise the clocks (see the top). Clobbers r0, r1, r3-r5. */
    .thumb_func
clock_up:
    adr     r5, state
    ldr     r4, =RCC_R
    ldr     r0, [r4, #RCC_AHBENR]
    str     r0, [r5, #S_AHBENR]
    orr     r0, r0, #CRCEN
    str     r0, [r4, #RCC_AHBENR]
    movs    r1, #2                  /* AHBENR saved */
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
    movs    r1, #3
9:  str     r1, [r5, #S_FLAGS]
    bx      lr

    .ltorg
    .align  2
state:
    .word   0, 0, 0, 0
    .global exec_end
exec_end:

/* -- loaded only when used (MASS, CLOCK 0; see EXTRA_SIZE) --------------------------- */

op_mass:
    bl      do_mass
    cmp     r0, #0
    bne     fail
    add     r10, r10, #4
    b       next


/* Mass erase. r3 = FPEC. Returns the error flags. */
    .thumb_func
do_mass:
    push    {lr}
    bl      unlock
    movs    r0, #CR_MER
    bl      start_finish
    pop     {pc}

/* Put the clocks back and lock the FPEC. Clobbers r0, r1, r3-r5. */
    .thumb_func
clock_down:
    adr     r5, state
    ldr     r3, =FLASH_R
    movs    r0, #CR_LOCK
    str     r0, [r3, #CR]
    ldr     r4, =RCC_R
    ldr     r1, [r5, #S_FLAGS]
    lsls    r0, r1, #31             /* clocks raised? */
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
8:  lsls    r0, r1, #30             /* AHBENR saved? */
    bpl     9f
    ldr     r0, [r5, #S_AHBENR]
    str     r0, [r4, #RCC_AHBENR]
9:  movs    r0, #0
    str     r0, [r5, #S_FLAGS]
    bx      lr

    .ltorg
    .global extra_end
extra_end:


/* -- the CMSIS entries, for pyOCD ----------------------------------------------- */

/* int Init(uint32_t adr, uint32_t clk, uint32_t fnc) */
    .global Init
    .thumb_func
Init:
    push    {r4, r5, lr}
    ldr     r0, =24000000
    cmp     r1, r0
    blo     1f
    bl      clock_up
1:  ldr     r3, =FLASH_R
    movs    r0, #SR_CLEAR
    str     r0, [r3, #SR]
    movs    r0, #0
    pop     {r4, r5, pc}

/* int UnInit(uint32_t fnc) */
    .global UnInit
    .thumb_func
UnInit:
    push    {r4, r5, lr}
    bl      clock_down
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

    .ltorg
    .global algo_end
algo_end:
