#ifndef CRC32_H
#define CRC32_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32 (IEEE 802.3, as zlib's crc32): start with crc = 0, feed the data in pieces. */
uint32_t crc32_update(uint32_t crc, const void *data, size_t len);

#endif
