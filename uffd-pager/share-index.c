/* SPDX-License-Identifier: MIT */
/* A sharing group's content index: chained hash over an entry array with a free list (share-index.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "share-index.h"

#define INITIAL_BUCKETS 1024u

/* The key is a MAC output: any of its bytes are as good as a hash. */
static uint32_t bucket_of(const struct share_index *ix, const uint8_t *key)
{
	uint32_t h;

	memcpy(&h, key, sizeof(h));
	return h & (ix->nbuckets - 1);
}

int share_index_init(struct share_index *ix)
{
	memset(ix, 0, sizeof(*ix));
	ix->buckets = malloc(INITIAL_BUCKETS * sizeof(*ix->buckets));
	if (!ix->buckets)
		return -ENOMEM;
	memset(ix->buckets, 0xff, INITIAL_BUCKETS * sizeof(*ix->buckets));
	ix->nbuckets = INITIAL_BUCKETS;
	ix->free_head = SHARE_NONE;
	return 0;
}

void share_index_destroy(struct share_index *ix)
{
	free(ix->e);
	free(ix->buckets);
	memset(ix, 0, sizeof(*ix));
}

uint32_t share_index_find(const struct share_index *ix, const uint8_t key[DSEAL_NONCE_LEN])
{
	for (uint32_t id = ix->buckets[bucket_of(ix, key)]; id != SHARE_NONE; id = ix->e[id].next)
		if (!memcmp(ix->e[id].key, key, DSEAL_NONCE_LEN))
			return id;
	return SHARE_NONE;
}

/* Doubles the buckets once entries outnumber them (chains stay ~1 long). */
static void maybe_rehash(struct share_index *ix)
{
	uint32_t n = ix->nbuckets * 2, *b;

	if (ix->live <= ix->nbuckets || n > SHARE_MAX_ENTRIES || !(b = malloc((size_t)n * sizeof(*b))))
		return; /* a longer chain is slower, not wrong */
	memset(b, 0xff, (size_t)n * sizeof(*b));
	free(ix->buckets);
	ix->buckets = b;
	ix->nbuckets = n;
	for (uint32_t id = 0; id < ix->used; id++) {
		struct share_entry *e = &ix->e[id];
		uint32_t k;

		if (e->state == SE_FREE)
			continue;
		k = bucket_of(ix, e->key);
		e->next = b[k];
		b[k] = id;
	}
}

int share_index_insert(struct share_index *ix, const uint8_t key[DSEAL_NONCE_LEN], uint32_t *ret_id)
{
	uint32_t id, k;

	if (ix->free_head != SHARE_NONE) {
		id = ix->free_head;
		ix->free_head = ix->e[id].next;
	} else {
		if (ix->used >= SHARE_MAX_ENTRIES)
			return -ENOSPC;
		if (ix->used == ix->cap) {
			uint32_t cap = ix->cap ? ix->cap * 2 : 1024;
			struct share_entry *e;

			if (cap > SHARE_MAX_ENTRIES)
				cap = SHARE_MAX_ENTRIES;
			e = realloc(ix->e, (size_t)cap * sizeof(*e));
			if (!e)
				return -ENOMEM;
			ix->e = e;
			ix->cap = cap;
		}
		id = ix->used++;
	}
	struct share_entry *e = &ix->e[id];
	memset(e, 0, sizeof(*e));
	memcpy(e->key, key, DSEAL_NONCE_LEN);
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		e->locs[c] = LOC_NONE;
	e->refs = 1;
	e->state = SE_PENDING;
	k = bucket_of(ix, key);
	e->next = ix->buckets[k];
	ix->buckets[k] = id;
	ix->live++;
	ix->refs++;
	maybe_rehash(ix);
	*ret_id = id;
	return 0;
}

int share_index_restore(struct share_index *ix, const struct share_entry *entries, uint32_t n, uint32_t *ret_dup)
{
	uint32_t cap = n > 1024 ? n : 1024;

	if (n > SHARE_MAX_ENTRIES)
		return -ENOSPC;
	ix->e = calloc(cap, sizeof(*ix->e));
	if (!ix->e)
		return -ENOMEM;
	ix->cap = cap;
	ix->used = n;
	for (uint32_t id = 0; id < n; id++)
		if (entries[id].state == SE_READY)
			ix->live++;
	/* Buckets for every entry at once: chains stay about one long. */
	while (ix->nbuckets < ix->live && ix->nbuckets < SHARE_MAX_ENTRIES) {
		uint32_t *b = realloc(ix->buckets, (size_t)ix->nbuckets * 2 * sizeof(*b));

		if (!b)
			return -ENOMEM;
		ix->buckets = b;
		ix->nbuckets *= 2;
	}
	memset(ix->buckets, 0xff, (size_t)ix->nbuckets * sizeof(*ix->buckets));
	for (uint32_t i = n; i-- > 0;) {
		struct share_entry *e = &ix->e[i];

		*e = entries[i];
		e->refs = 0;
		if (e->state != SE_READY) {
			memset(e, 0, sizeof(*e));
			e->next = ix->free_head;
			ix->free_head = i;
			continue;
		}
		if (share_index_find(ix, e->key) != SHARE_NONE) {
			*ret_dup = i;
			return -EEXIST;
		}
		uint32_t k = bucket_of(ix, e->key);
		e->next = ix->buckets[k];
		ix->buckets[k] = i;
	}
	return 0;
}

bool share_index_valid(const struct share_index *ix, uint32_t id)
{
	return id < ix->used && ix->e[id].state != SE_FREE;
}

void share_index_ref(struct share_index *ix, uint32_t id)
{
	ix->e[id].refs++;
	ix->refs++;
}

bool share_index_unref(struct share_index *ix, uint32_t id)
{
	struct share_entry *e = &ix->e[id];

	if (!e->refs)
		return false;
	ix->refs--;
	return --e->refs == 0;
}

void share_index_remove(struct share_index *ix, uint32_t id)
{
	struct share_entry *e = &ix->e[id];
	uint32_t *p = &ix->buckets[bucket_of(ix, e->key)];

	while (*p != SHARE_NONE && *p != id)
		p = &ix->e[*p].next;
	if (*p == id)
		*p = e->next;
	ix->refs -= e->refs;
	e->refs = 0;
	e->state = SE_FREE;
	e->next = ix->free_head;
	ix->free_head = id;
	ix->live--;
}
