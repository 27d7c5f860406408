/*
 * Vector table and reset code for the STM32F100xB, in C.
 *
 * The table goes first in flash (section .isr_vector, placed at 0x08000000 by
 * stm32f100rb.ld): word 0 is the initial stack pointer, word 1 the reset
 * vector. The core exception handlers are weak aliases of Default_Handler, so
 * defining e.g. SysTick_Handler anywhere replaces it.
 */
#include <stdint.h>

/* Defined by the linker script. */
extern uint32_t _estack;          /* top of SRAM: 0x20002000 */
extern uint32_t _sidata;          /* load address (in flash) of .data */
extern uint32_t _sdata, _edata;   /* .data in SRAM */
extern uint32_t _sbss, _ebss;     /* .bss in SRAM */

int main(void);

void Reset_Handler(void);
void Default_Handler(void);
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* STM32F100xB peripheral interrupts: IRQ 0 (WWDG) to IRQ 55 (TIM7), RM0041 table 55. */
#define IRQ_COUNT 56

typedef void (*handler_t)(void);

__attribute__((section(".isr_vector"), used))
const struct {
    uint32_t *initial_sp;
    handler_t handler[15 + IRQ_COUNT];
} vectors = {
    &_estack,
    {
        Reset_Handler,
        NMI_Handler,
        HardFault_Handler,
        MemManage_Handler,
        BusFault_Handler,
        UsageFault_Handler,
        0, 0, 0, 0,                 /* reserved */
        SVC_Handler,
        DebugMon_Handler,
        0,                          /* reserved */
        PendSV_Handler,
        SysTick_Handler,
        [15 ... 15 + IRQ_COUNT - 1] = Default_Handler,
    },
};

void Reset_Handler(void)
{
    const uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;)
        *dst++ = *src++;
    for (uint32_t *dst = &_sbss; dst < &_ebss;)
        *dst++ = 0;
    main();
    for (;;) {
    }
}

/* An unexpected exception or interrupt: stop here, where a debugger will find it. */
void Default_Handler(void)
{
    for (;;) {
    }
}
