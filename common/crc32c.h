/* SPDX-License-Identifier: MIT */
/* CRC32C (Castagnoli) of stored pages: SSE4.2 instruction when present, table otherwise. */
#pragma once

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t seed, const void *data, size_t len);
