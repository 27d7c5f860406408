/* The STM32VLDiscovery's two user LEDs (PC8 blue, PC9 green) and a busy-wait delay. */
#ifndef LED_H
#define LED_H

#include <stdint.h>

#define LED_BLUE  (1u << 8)   /* PC8, LD4 */
#define LED_GREEN (1u << 9)   /* PC9, LD3 */

/* Clock GPIOC and make PC8/PC9 push-pull outputs, both LEDs off. */
void led_init(void);

/* Light exactly the LEDs in mask (LED_BLUE | LED_GREEN); the others go off. */
void led_show(unsigned mask);

/* Spin for one blink phase: led_delay_loops iterations. */
void led_delay(void);

/* Iterations per blink phase; in RAM, so a debugger may change it while running. */
extern volatile uint32_t led_delay_loops;

#endif
