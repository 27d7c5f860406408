/*
 * beacon: prints a status line on USART1 (PA9, 115200 8N1) about once a second:
 * the firmware version, a report counter and the CRC-32 of the settings block.
 */
#include <stdint.h>

#include "crc32.h"
#include "uart.h"

#define FIRMWARE_VERSION "1.4.2"

/* Busy-wait iterations between two reports: about one second on the 8 MHz HSI. */
#define REPORT_PERIOD_LOOPS 1000000u

/* Factory settings, checked at every report so a corrupted flash shows. */
static const struct settings {
    uint32_t node_id;
    uint32_t report_period_loops;
    char site[16];
} settings = { 0x00C0FFEEu, REPORT_PERIOD_LOOPS, "lab bench 3" };

/* Reports sent since reset (.bss), for a debugger to watch. */
volatile uint32_t reports;

static void delay(uint32_t loops)
{
    for (volatile uint32_t i = 0; i < loops; i++) {
    }
}

int main(void)
{
    uart_init(115200);
    uart_puts("beacon " FIRMWARE_VERSION " node ");
    uart_puthex(settings.node_id);
    uart_puts(" at ");
    uart_puts(settings.site);
    uart_puts("\r\n");
    for (;;) {
        uart_puts("report ");
        uart_puthex(reports++);
        uart_puts(" settings crc ");
        uart_puthex(crc32_update(0, &settings, sizeof settings));
        uart_puts("\r\n");
        delay(settings.report_period_loops);
    }
}
