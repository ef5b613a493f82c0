/* SPDX-License-Identifier: MIT */
/*
 * Pure decisions of the disk cache (disk-cache/): which directory entry a
 * new block goes to (CLOCK, an approximation of LRU that needs one
 * reference bit per entry and no list to maintain on a hit), and which
 * cache blocks an I/O request touches. No syscalls: unit-tested in
 * tests/unit/policy.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per-entry flags of the cache directory. */
enum {
	POLICY_DC_VALID = 1u << 0, /* holds a block */
	POLICY_DC_REF = 1u << 1,   /* read since the hand last passed */
};

/*
 * CLOCK over n > 0 entries starting at *hand: a free entry is taken at
 * once; a referenced one loses its bit and is passed over; the first valid
 * unreferenced one is the victim (found within two sweeps). Moves *hand
 * just past the chosen entry. Returns its index.
 */
size_t policy_dc_clock_pick(uint8_t *flags, size_t n, size_t *hand);

/*
 * Blocks of block_size (a power of two) that [offset, offset+count) touches:
 * the first and how many (0 for count 0). Whether the first and the last are
 * only partly covered is what writes need: a partly written block cannot
 * be updated in place and is dropped.
 */
struct policy_dc_span {
	uint64_t first;
	uint64_t n;
	bool head_partial, tail_partial;
};
void policy_dc_span(uint64_t offset, uint64_t count, uint32_t block_size, struct policy_dc_span *ret);

/*
 * Directory entries a cache of size bytes in blocks of block_size holds
 * (size rounded down to whole blocks).
 */
static inline uint64_t policy_dc_entries(uint64_t size, uint32_t block_size)
{
	return block_size ? size / block_size : 0;
}
