#ifndef UART_H
#define UART_H

#include <stdint.h>

/* USART1 transmit only, on PA9 (the STM32VLDiscovery's header pin PA9), 8N1. */
void uart_init(uint32_t baud);
void uart_putc(char c);
void uart_puts(const char *s);
void uart_puthex(uint32_t value);

#endif
