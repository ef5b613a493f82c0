/* SPDX-License-Identifier: MIT */
/* Pure decisions of the disk cache: CLOCK replacement and block spans (disk-cache.h). */
#include "disk-cache.h"

size_t policy_dc_clock_pick(uint8_t *flags, size_t n, size_t *hand)
{
	size_t h = *hand % n;

	/* Two sweeps always suffice: the first clears every reference bit it passes. */
	for (size_t step = 0; step < 2 * n; step++, h = (h + 1) % n) {
		if (!(flags[h] & POLICY_DC_VALID))
			break;
		if (!(flags[h] & POLICY_DC_REF))
			break;
		flags[h] &= (uint8_t)~POLICY_DC_REF;
	}
	*hand = (h + 1) % n;
	return h;
}

void policy_dc_span(uint64_t offset, uint64_t count, uint32_t block_size, struct policy_dc_span *ret)
{
	uint64_t mask = (uint64_t)block_size - 1, end = offset + count;

	*ret = (struct policy_dc_span){ 0 };
	if (count == 0 || block_size == 0)
		return;
	ret->first = offset / block_size;
	ret->n = (end - 1) / block_size - ret->first + 1;
	ret->head_partial = (offset & mask) != 0 || (ret->n == 1 && (end & mask) != 0);
	ret->tail_partial = (end & mask) != 0 || (ret->n == 1 && (offset & mask) != 0);
}
