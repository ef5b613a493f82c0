/* SPDX-License-Identifier: MIT */
/*
 * The e2e guests' data pattern, shared by the memory workload
 * (guest-workload.c) and the disk workload (guest-disk-workload.c): every
 * 8-byte word of a 4 KiB unit (a page, a disk block) is a function of
 * (seed, unit, generation, word), so a unit read back proves which unit and
 * which write of it it is. Header-only: both programs are static
 * executables built on their own.
 */
#pragma once

#include <stdint.h>

/* splitmix64 finalizer: cheap and every input bit reaches every output bit. */
static inline uint64_t pattern_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Word w of unit idx (below 2^32) at generation gen (below 2^12) under seed. */
static inline uint64_t pattern_word(uint64_t seed, uint64_t idx, uint64_t gen, unsigned w)
{
	return pattern_mix(seed ^ (idx << 20) ^ (gen << 52) ^ w);
}
