/* SPDX-License-Identifier: MIT */
/* Power-of-two-choices donor placement (see placement.h). */
#include <errno.h>

#include "placement.h"

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ULL;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

int policy_place_donor(const struct policy_donor_view *views, unsigned n, uint64_t exclude, uint64_t *rnd)
{
	unsigned cand[POLICY_PLACE_MAX], nc = 0, a, b;

	if (n > POLICY_PLACE_MAX)
		n = POLICY_PLACE_MAX;
	for (unsigned i = 0; i < n; i++)
		if (views[i].up && views[i].free_bytes > 0 && !(exclude & (1ULL << i)))
			cand[nc++] = i;
	if (nc == 0)
		return -ENOSPC;
	if (nc == 1)
		return (int)cand[0];
	a = (unsigned)(xorshift64(rnd) % nc);
	b = (unsigned)(xorshift64(rnd) % (nc - 1));
	if (b >= a)
		b++; /* two distinct candidates */
	/* Ties go to the first draw, which is random: no bias to low indices. */
	return (int)(views[cand[b]].free_bytes > views[cand[a]].free_bytes ? cand[b] : cand[a]);
}

unsigned policy_place_copies(const struct policy_donor_view *views, unsigned n, unsigned want, uint64_t exclude,
			     uint64_t *rnd, unsigned *ret_idx)
{
	unsigned got = 0;

	while (got < want) {
		int d = policy_place_donor(views, n, exclude, rnd);
		if (d < 0)
			break;
		ret_idx[got++] = (unsigned)d;
		exclude |= 1ULL << d;
	}
	return got;
}
