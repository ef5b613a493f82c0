/* SPDX-License-Identifier: MIT */
/*
 * CRC32C for page checksums. Every evicted page is checksummed and every
 * fetched page verified, so this sits on both the eviction and the fault
 * path: the SSE4.2 crc32 instruction does 4 KiB in well under a
 * microsecond; the table version is the portable fallback.
 */
#include "crc32c.h"

#include <pthread.h>

#define CRC32C_POLY_REFLECTED 0x82F63B78u

static uint32_t table[256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static int have_sse42 = -1;

static void table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY_REFLECTED : c >> 1;
		table[i] = c;
	}
#if defined(__x86_64__)
	have_sse42 = __builtin_cpu_supports("sse4.2");
#else
	have_sse42 = 0;
#endif
}

static uint32_t crc32c_table(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len--)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;

	for (; len >= 8; len -= 8, p += 8) {
		uint64_t v;
		__builtin_memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	crc = (uint32_t)c;
	for (; len; len--)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc;
}
#endif

uint32_t crc32c(uint32_t seed, const void *data, size_t len)
{
	uint32_t crc = ~seed;

	pthread_once(&table_once, table_init);
#if defined(__x86_64__)
	if (have_sse42)
		return ~crc32c_hw(crc, data, len);
#endif
	return ~crc32c_table(crc, data, len);
}
