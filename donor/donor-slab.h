/* SPDX-License-Identifier: MIT */
/*
 * Slab bookkeeping. On the donor, struct donor_slabs hands out fixed-size
 * slabs of anonymous memory up to a capacity and checks ownership on every
 * lookup; a slab id carries a generation so a stale id never reaches a
 * reused slab. On the pager, struct donor_slot_map tracks which 4 KiB slots
 * of one slab hold a page. Both are pure bookkeeping (the donor table mmaps
 * slab memory, nothing else) and are unit-tested alone.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "donor-proto.h"

struct donor_slabs;

/* Owner 0 means "free"; callers use owner ids >= 1. */
struct donor_slabs *donor_slabs_new(uint64_t capacity);
void donor_slabs_free(struct donor_slabs *s);

uint64_t donor_slabs_capacity(const struct donor_slabs *s);
uint64_t donor_slabs_used(const struct donor_slabs *s);
/*
 * Faults in the whole capacity now and keeps it while the table lives: a
 * store never waits for the kernel to find memory, and a released slab is
 * kept rather than unmapped (zeroed when handed out again). *ret_done says how many slabs were
 * faulted in. Returns 0, -ENOMEM or the errno of MADV_POPULATE_WRITE.
 */
int donor_slabs_preallocate(struct donor_slabs *s, unsigned *ret_done);
/*
 * Changes the capacity; slabs beyond it stay until released or revoked.
 * Preallocated memory not in use beyond the new capacity is unmapped; a
 * larger capacity is mapped on demand.
 */
void donor_slabs_set_capacity(struct donor_slabs *s, uint64_t capacity);

/* Returns 0, -ENOSPC (capacity reached) or -ENOMEM. */
int donor_slabs_alloc(struct donor_slabs *s, uint32_t owner, uint32_t *ret_id);
/* Returns 0 or -ENOENT (no such slab, or owned by someone else: indistinguishable on purpose). */
int donor_slabs_release(struct donor_slabs *s, uint32_t owner, uint32_t id);
/* Frees every slab of owner; returns how many. */
unsigned donor_slabs_release_owner(struct donor_slabs *s, uint32_t owner);
/*
 * Memory of a slab owned by owner. Returns 0, -ENOENT (see above) or
 * -EROFS (write to a revoked slab: its owner must move it, not refill it).
 */
int donor_slabs_lookup(struct donor_slabs *s, uint32_t owner, uint32_t id, bool for_write,
		       uint8_t **ret_mem);
/* Number of slabs of owner (all owners when owner is 0). */
unsigned donor_slabs_count(const struct donor_slabs *s, uint32_t owner);
/*
 * Lists up to max slab ids of owner (with DONOR_SLAB_F_* flags when flags is
 * not NULL); returns how many there are in total.
 */
unsigned donor_slabs_list(const struct donor_slabs *s, uint32_t owner, uint32_t *ids,
			  uint32_t *flags, unsigned max);
/* Owner of a slab id, 0 if the id is not live. */
uint32_t donor_slabs_owner(const struct donor_slabs *s, uint32_t id);
/* Marks a live slab revoked with a deadline (CLOCK_MONOTONIC ns). Returns 0 or -ENOENT. */
int donor_slabs_revoke(struct donor_slabs *s, uint32_t id, uint64_t deadline_ns);
bool donor_slabs_is_revoked(const struct donor_slabs *s, uint32_t id);
/*
 * Adds each owner's live slabs not yet revoked to counts[owner], for owners
 * below n, in one pass over the table.
 */
void donor_slabs_count_unrevoked(const struct donor_slabs *s, unsigned *counts, unsigned n);
/*
 * Revokes up to max of owner's slabs not yet revoked, newest (highest
 * numbered) first, in one pass; their ids go to ret_ids (room for max).
 * Returns how many.
 */
unsigned donor_slabs_revoke_owner(struct donor_slabs *s, uint32_t owner, unsigned max, uint64_t deadline_ns,
				  uint32_t *ret_ids);
/* Frees revoked slabs whose deadline is <= now; returns how many. */
unsigned donor_slabs_expire(struct donor_slabs *s, uint64_t now);
/* Bytes already promised back (revoked but not yet freed). */
uint64_t donor_slabs_revoked_bytes(const struct donor_slabs *s);

/* Pager-side slot allocator of one slab. */
struct donor_slot_map {
	uint64_t bits[DONOR_SLAB_SLOTS / 64];
	uint32_t used;
	uint32_t hint;
};

void donor_slot_map_init(struct donor_slot_map *m);
/* Returns 0 or -ENOSPC. */
int donor_slot_alloc(struct donor_slot_map *m, uint32_t *ret_slot);
/* Returns 0, -ERANGE (slot out of range) or -ENOENT (not allocated). */
int donor_slot_free(struct donor_slot_map *m, uint32_t slot);
bool donor_slot_is_used(const struct donor_slot_map *m, uint32_t slot);
