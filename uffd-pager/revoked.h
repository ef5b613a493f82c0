/* SPDX-License-Identifier: MIT */
/*
 * The slab ids a donor has revoked (asked the pager to move off), kept per
 * donor. A sorted array: a notification is merged in O(n log n), lookups
 * from the store's move pass are O(log n), repeated ids are kept once, and
 * entries go once their slab is freed or the donor's deadline (plus a
 * margin) has passed, when the donor has freed the slab itself. So the set
 * never holds more than the donor's id space, however often it revokes.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Donor slab ids carry a 16-bit index: no more than this many are live at once. */
#define REVOKED_SET_MAX 65535u
/* Kept past the donor's deadline: notification delay and clock skew between the hosts. */
#define REVOKED_MARGIN_NS (30ULL * 1000000000ULL)

struct revoked_entry {
	uint32_t slab;
	uint64_t expires_ns; /* CLOCK_MONOTONIC */
};

struct revoked_set {
	struct revoked_entry *v; /* sorted by slab, no duplicates */
	unsigned n, cap;
};

/* Zero-initialised is empty. Frees the array; the set is empty again. */
void revoked_set_clear(struct revoked_set *rs);
/*
 * Adds ids (revoked now with deadline_ms left) after dropping expired
 * entries. Returns 0, -ENOMEM (set unchanged) or -E2BIG (more than
 * REVOKED_SET_MAX ids: the lowest REVOKED_SET_MAX are kept).
 */
int revoked_set_add(struct revoked_set *rs, const uint32_t *ids, unsigned n, uint32_t deadline_ms, uint64_t now_ns);
bool revoked_set_has(const struct revoked_set *rs, uint32_t slab);
/* Forgets a slab (freed by the pager). */
void revoked_set_remove(struct revoked_set *rs, uint32_t slab);
/* Drops entries whose expiry is before now. */
void revoked_set_prune(struct revoked_set *rs, uint64_t now_ns);
