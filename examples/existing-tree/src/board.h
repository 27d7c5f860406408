/*
 * STM32F100RB registers used by the beacon firmware (RM0041), and the board's clock.
 */
#ifndef BOARD_H
#define BOARD_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(addr))

/* After reset the core and both APB buses run from the 8 MHz HSI. */
#define CLOCK_HZ 8000000u

#define RCC_APB2ENR        REG32(0x40021018u)
#define RCC_APB2ENR_IOPAEN (1u << 2)
#define RCC_APB2ENR_USART1EN (1u << 14)

#define GPIOA_CRH          REG32(0x40010804u)   /* pins 8..15, 4 bits each */
#define GPIO_CRH_AF_PP_2MHZ 0xAu                /* CNF = 10 (alternate push-pull), MODE = 10 */

#define USART1_SR          REG32(0x40013800u)
#define USART1_DR          REG32(0x40013804u)
#define USART1_BRR         REG32(0x40013808u)
#define USART1_CR1         REG32(0x4001380Cu)
#define USART_SR_TXE       (1u << 7)
#define USART_CR1_UE       (1u << 13)
#define USART_CR1_TE       (1u << 3)

#endif
