#include "led.h"
#include "stm32f100.h"

/*
 * Busy-wait iterations per blink phase. After reset the core runs from the
 * 8 MHz HSI; one iteration of the loop below is a handful of cycles, so this
 * is roughly half a second (0.6 s in the simulator).
 */
#define BLINK_DELAY_LOOPS 400000u

/* In .data (initialised from flash by startup), so a debugger can change the speed live. */
volatile uint32_t led_delay_loops = BLINK_DELAY_LOOPS;

void led_init(void)
{
    RCC_APB2ENR |= RCC_APB2ENR_IOPCEN;
    uint32_t crh = GPIOC_CRH;
    crh &= ~(0xFu << 0 | 0xFu << 4);                                /* PC8, PC9 */
    crh |= GPIO_CRH_OUT_PP_2MHZ << 0 | GPIO_CRH_OUT_PP_2MHZ << 4;
    GPIOC_CRH = crh;
    led_show(0);
}

void led_show(unsigned mask)
{
    const unsigned all = LED_BLUE | LED_GREEN;
    /* One BSRR write sets and clears atomically: no glitch, no read-modify-write of ODR. */
    GPIOC_BSRR = (mask & all) | (~mask & all) << 16;
}

void led_delay(void)
{
    for (volatile uint32_t i = 0; i < led_delay_loops; i++) {
    }
}
