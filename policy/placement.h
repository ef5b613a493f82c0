/* SPDX-License-Identifier: MIT */
/*
 * Donor choice for a page copy: the pure decision, no I/O. Power of two
 * choices (Mitzenmacher): take two distinct random donors among those that
 * may take the copy and keep the one with more free capacity. It spreads
 * load almost as well as always picking the emptiest donor, without every
 * pager stampeding the same one on a stale view of free space.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define POLICY_PLACE_MAX 64 /* donors a view may list (exclusion is a 64-bit mask) */

struct policy_donor_view {
	bool up;             /* answering and accepting writes (not down, draining or full) */
	uint64_t free_bytes; /* best estimate of what it can still take */
};

/*
 * Picks a donor for one copy among views[0..n) that are up, have free
 * bytes and whose bit is not set in exclude (donors already holding a copy
 * of the page). *rnd is the caller's PRNG state (any non-zero seed),
 * advanced. Returns the index, or -ENOSPC when no donor qualifies.
 */
int policy_place_donor(const struct policy_donor_view *views, unsigned n, uint64_t exclude, uint64_t *rnd);

/*
 * Picks up to want distinct donors for the copies of one page (calls
 * policy_place_donor() want times, excluding each pick). Returns how many
 * were stored in ret_idx (0..want).
 */
unsigned policy_place_copies(const struct policy_donor_view *views, unsigned n, unsigned want, uint64_t exclude,
			     uint64_t *rnd, unsigned *ret_idx);
