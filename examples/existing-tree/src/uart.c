#include "uart.h"
#include "board.h"

void uart_init(uint32_t baud)
{
    RCC_APB2ENR |= RCC_APB2ENR_IOPAEN | RCC_APB2ENR_USART1EN;
    uint32_t crh = GPIOA_CRH;
    crh &= ~(0xFu << 4);                          /* PA9 */
    crh |= GPIO_CRH_AF_PP_2MHZ << 4;
    GPIOA_CRH = crh;
    USART1_BRR = (CLOCK_HZ + baud / 2) / baud;    /* 115200 Bd: 69, 0.6 % fast */
    USART1_CR1 = USART_CR1_UE | USART_CR1_TE;
}

void uart_putc(char c)
{
    while (!(USART1_SR & USART_SR_TXE)) {
    }
    USART1_DR = (uint8_t)c;
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

void uart_puthex(uint32_t value)
{
    for (int shift = 28; shift >= 0; shift -= 4)
        uart_putc("0123456789abcdef"[(value >> shift) & 0xFu]);
}
