#include "led.h"

/* Blink phases, shown in turn: blue, green, both, none. */
static const unsigned pattern[] = { LED_BLUE, LED_GREEN, LED_BLUE | LED_GREEN, 0 };

/* Completed pattern cycles (.bss), for a debugger to watch. */
volatile unsigned cycles;

int main(void)
{
    led_init();
    for (;;) {
        for (unsigned i = 0; i < sizeof pattern / sizeof pattern[0]; i++) {
            led_show(pattern[i]);
            led_delay();
        }
        cycles++;
    }
}
