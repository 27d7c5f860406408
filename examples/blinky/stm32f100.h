/*
 * The few STM32F100RB registers this example touches (RM0041).
 * Addresses rather than CMSIS structs: three registers do not justify a vendor header.
 */
#ifndef STM32F100_H
#define STM32F100_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(addr))

/* RCC (base 0x40021000): APB2 peripheral clock enable. */
#define RCC_APB2ENR       REG32(0x40021018u)
#define RCC_APB2ENR_IOPCEN (1u << 4)

/* GPIOC (base 0x40011000). */
#define GPIOC_CRH         REG32(0x40011004u)  /* mode/config of pins 8..15, 4 bits each */
#define GPIOC_BSRR        REG32(0x40011010u)  /* low half sets pins, high half resets them */

/* CRH nibble for "general-purpose push-pull output, 2 MHz": CNF = 00, MODE = 10. */
#define GPIO_CRH_OUT_PP_2MHZ 0x2u

#endif
