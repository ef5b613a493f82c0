/* SPDX-License-Identifier: MIT */
/*
 * A sharing group's content index (docs/sharing.md): one entry per
 * distinct page the group stores, found by its content key (the
 * deterministic seal's nonce), holding the group store's copies, the tag
 * and CRC32C of the sealed copy, and a reference count (one per page-map
 * location naming it). Pure bookkeeping: no I/O, no locking (share.c
 * holds the group's lock around every call). Entry numbers are what a
 * shared location names; a number is reused only after its entry's count
 * fell to zero and share_index_remove was called.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "dseal.h"
#include "store.h"

#define SHARE_NONE UINT32_MAX
#define SHARE_MAX_ENTRIES (1u << 30) /* what the 30 bits of a shared location can name */

enum share_entry_state { SE_FREE = 0, SE_PENDING /* its copies are being written */, SE_READY };

struct share_entry {
	uint8_t key[DSEAL_NONCE_LEN];
	uint8_t tag[DSEAL_TAG_LEN];
	uint32_t crc;  /* CRC32C of the sealed copy */
	uint32_t refs;
	uint32_t next; /* hash chain; free list when SE_FREE */
	uint32_t locs[STORE_MAX_COPIES]; /* in the group's store, LOC_NONE where none */
	uint8_t state; /* enum share_entry_state */
};

struct share_index {
	struct share_entry *e; /* may move on insert: no pointer outlives the caller's lock */
	uint32_t cap, used;    /* entries allocated, entries ever handed out (high water) */
	uint32_t free_head;
	uint32_t *buckets;
	uint32_t nbuckets; /* a power of two */
	uint64_t live;     /* entries not free */
	uint64_t refs;     /* sum of their counts */
};

/* An empty index. Returns 0 or -ENOMEM. */
int share_index_init(struct share_index *ix);
/* Frees it; safe on a zeroed or destroyed index. */
void share_index_destroy(struct share_index *ix);
/* The entry with this key (pending or ready), or SHARE_NONE. */
uint32_t share_index_find(const struct share_index *ix, const uint8_t key[DSEAL_NONCE_LEN]);
/*
 * A new SE_PENDING entry for key (absent: the caller looked) with one
 * reference and no copies. Returns 0, -ENOMEM or -ENOSPC (2^30 entries).
 */
int share_index_insert(struct share_index *ix, const uint8_t key[DSEAL_NONCE_LEN], uint32_t *ret_id);
/* True when id names an entry that is not free. */
bool share_index_valid(const struct share_index *ix, uint32_t id);
static inline struct share_entry *share_index_entry(const struct share_index *ix, uint32_t id) { return &ix->e[id]; }
void share_index_ref(struct share_index *ix, uint32_t id);
/*
 * Drops one reference. Returns true when it was the last: the caller
 * frees the entry's copies, then calls share_index_remove.
 */
bool share_index_unref(struct share_index *ix, uint32_t id);
/*
 * Rebuilds a fresh index (share_index_init'ed, nothing inserted) from n
 * entries numbered 0..n-1 as a state file recorded them (share-state.h):
 * SE_READY ones keep their number with no references, the others are
 * free. Returns 0, -ENOMEM, or -EEXIST when two ready entries have the
 * same key (ret_dup: the second).
 */
int share_index_restore(struct share_index *ix, const struct share_entry *entries, uint32_t n, uint32_t *ret_dup);
/* Unlinks an entry (no references left, or a pending write failed) and frees its number. */
void share_index_remove(struct share_index *ix, uint32_t id);
