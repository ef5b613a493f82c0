/* SPDX-License-Identifier: MIT */
/*
 * Donor slab table and pager slot map (see donor-slab.h). Slab memory is
 * mmap'ed on allocation and unmapped on release, so a donor holds only what
 * is in use and a freed slab's contents are gone before anyone reuses it.
 * A preallocated table instead faults in its whole capacity at start and
 * keeps it: a released slab goes back to the pool and is zeroed when it is
 * handed out again.
 */
#include "donor-slab.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* id = generation << 16 | index + 1; index 0xffff is unused so no id is 0. */
#define IDX_BITS 16
#define IDX_MASK ((1u << IDX_BITS) - 1)
#define MAX_SLABS IDX_MASK

struct slab {
	uint8_t *mem;
	uint32_t owner;
	uint16_t gen;
	bool revoked;
	uint64_t deadline;
};

struct donor_slabs {
	uint64_t capacity;
	struct slab *tab;
	unsigned ntab, live;
	uint8_t **pool; /* preallocated slab memory not in use (zeroed when handed out) */
	unsigned npool, pool_cap; /* pool_cap 0: not preallocated, released slabs are unmapped */
};

static unsigned capacity_slabs(const struct donor_slabs *s)
{
	uint64_t n = s->capacity / DONOR_SLAB_SIZE;

	return n > MAX_SLABS ? MAX_SLABS : (unsigned)n;
}

static uint8_t *map_slab(void)
{
	/* NORESERVE: a slab costs nothing until pages are written into it (2 MiB at a time with huge pages). */
	uint8_t *mem = mmap(NULL, DONOR_SLAB_BYTES, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (mem == MAP_FAILED)
		return NULL;
	/*
	 * Huge pages where the kernel has them: a slab fills 4 KiB at a time,
	 * and a fault per page was most of what storing a page cost the donor.
	 * Advice only: without THP, 4 KiB pages as before.
	 */
	(void)madvise(mem, DONOR_SLAB_BYTES, MADV_HUGEPAGE);
	return mem;
}

/* Unmaps pooled memory beyond what the capacity leaves room for next to the live slabs. */
static void trim_pool(struct donor_slabs *s)
{
	unsigned room = capacity_slabs(s) > s->live ? capacity_slabs(s) - s->live : 0;

	while (s->npool > room)
		munmap(s->pool[--s->npool], DONOR_SLAB_BYTES);
}

struct donor_slabs *donor_slabs_new(uint64_t capacity)
{
	struct donor_slabs *s = calloc(1, sizeof(*s));

	if (s)
		s->capacity = capacity;
	return s;
}

void donor_slabs_free(struct donor_slabs *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < s->ntab; i++)
		if (s->tab[i].mem)
			munmap(s->tab[i].mem, DONOR_SLAB_BYTES);
	while (s->npool)
		munmap(s->pool[--s->npool], DONOR_SLAB_BYTES);
	free(s->pool);
	free(s->tab);
	free(s);
}

int donor_slabs_preallocate(struct donor_slabs *s, unsigned *ret_done)
{
	unsigned want = capacity_slabs(s);
	int r = 0;

	s->pool = calloc(want ? want : 1, sizeof(*s->pool));
	if (!s->pool)
		return -ENOMEM;
	s->pool_cap = want;
	while (s->npool < want) {
		uint8_t *mem = map_slab();

		if (!mem) {
			r = -ENOMEM;
			break;
		}
		/* Faulted in now, while nobody waits: a first touch costs more than the copy into it. */
		if (madvise(mem, DONOR_SLAB_BYTES, MADV_POPULATE_WRITE) < 0) {
			r = -errno;
			munmap(mem, DONOR_SLAB_BYTES);
			break;
		}
		s->pool[s->npool++] = mem;
	}
	*ret_done = s->npool;
	return r;
}

uint64_t donor_slabs_capacity(const struct donor_slabs *s) { return s->capacity; }
uint64_t donor_slabs_used(const struct donor_slabs *s) { return (uint64_t)s->live * DONOR_SLAB_SIZE; }
void donor_slabs_set_capacity(struct donor_slabs *s, uint64_t capacity)
{
	s->capacity = capacity;
	trim_pool(s);
}

static struct slab *find(const struct donor_slabs *s, uint32_t id)
{
	uint32_t idx = (id & IDX_MASK) - 1;
	struct slab *sl;

	if ((id & IDX_MASK) == 0 || idx >= s->ntab)
		return NULL;
	sl = &s->tab[idx];
	if (!sl->mem || sl->gen != (uint16_t)(id >> IDX_BITS))
		return NULL;
	return sl;
}

static uint32_t make_id(const struct donor_slabs *s, const struct slab *sl)
{
	return (uint32_t)sl->gen << IDX_BITS | (uint32_t)(sl - s->tab + 1);
}

int donor_slabs_alloc(struct donor_slabs *s, uint32_t owner, uint32_t *ret_id)
{
	struct slab *sl = NULL;
	void *mem;

	if (owner == 0)
		return -EINVAL;
	if (donor_slabs_used(s) + DONOR_SLAB_SIZE > s->capacity)
		return -ENOSPC;
	for (unsigned i = 0; i < s->ntab; i++) {
		if (!s->tab[i].mem) {
			sl = &s->tab[i];
			break;
		}
	}
	if (!sl) {
		struct slab *t;
		unsigned n = s->ntab ? s->ntab * 2 : 16;

		if (s->ntab >= MAX_SLABS)
			return -ENOSPC;
		if (n > MAX_SLABS)
			n = MAX_SLABS;
		t = realloc(s->tab, n * sizeof(*t));
		if (!t)
			return -ENOMEM;
		memset(t + s->ntab, 0, (n - s->ntab) * sizeof(*t));
		s->tab = t;
		sl = &s->tab[s->ntab];
		s->ntab = n;
	}
	if (s->npool) {
		/*
		 * Zeroed here, not at release: an RDMA key of the former owner
		 * works until donor_rdma_reconcile() runs after the request batch
		 * that freed the slab, so only now can no one write into it.
		 */
		mem = s->pool[--s->npool];
		memset(mem, 0, DONOR_SLAB_BYTES);
	} else {
		mem = map_slab();
		if (!mem)
			return -ENOMEM;
	}
	sl->mem = mem;
	sl->owner = owner;
	sl->gen++;
	sl->revoked = false;
	sl->deadline = 0;
	s->live++;
	*ret_id = make_id(s, sl);
	return 0;
}

static void drop(struct donor_slabs *s, struct slab *sl)
{
	if (s->npool < s->pool_cap && s->live - 1 + s->npool < capacity_slabs(s))
		s->pool[s->npool++] = sl->mem;
	else
		munmap(sl->mem, DONOR_SLAB_BYTES);
	sl->mem = NULL;
	sl->owner = 0;
	sl->revoked = false;
	s->live--;
}

int donor_slabs_release(struct donor_slabs *s, uint32_t owner, uint32_t id)
{
	struct slab *sl = find(s, id);

	if (!sl || sl->owner != owner)
		return -ENOENT;
	drop(s, sl);
	return 0;
}

unsigned donor_slabs_release_owner(struct donor_slabs *s, uint32_t owner)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->ntab; i++) {
		if (s->tab[i].mem && s->tab[i].owner == owner) {
			drop(s, &s->tab[i]);
			n++;
		}
	}
	return n;
}

int donor_slabs_lookup(struct donor_slabs *s, uint32_t owner, uint32_t id, bool for_write,
		       uint8_t **ret_mem)
{
	struct slab *sl = find(s, id);

	if (!sl || sl->owner != owner)
		return -ENOENT;
	if (for_write && sl->revoked)
		return -EROFS;
	*ret_mem = sl->mem;
	return 0;
}

unsigned donor_slabs_count(const struct donor_slabs *s, uint32_t owner)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->ntab; i++)
		if (s->tab[i].mem && (owner == 0 || s->tab[i].owner == owner))
			n++;
	return n;
}

unsigned donor_slabs_list(const struct donor_slabs *s, uint32_t owner, uint32_t *ids,
			  uint32_t *flags, unsigned max)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->ntab; i++) {
		const struct slab *sl = &s->tab[i];
		if (!sl->mem || sl->owner != owner)
			continue;
		if (n < max) {
			ids[n] = make_id(s, sl);
			if (flags)
				flags[n] = sl->revoked ? DONOR_SLAB_F_REVOKED : 0;
		}
		n++;
	}
	return n;
}

uint32_t donor_slabs_owner(const struct donor_slabs *s, uint32_t id)
{
	const struct slab *sl = find(s, id);

	return sl ? sl->owner : 0;
}

int donor_slabs_revoke(struct donor_slabs *s, uint32_t id, uint64_t deadline_ns)
{
	struct slab *sl = find(s, id);

	if (!sl)
		return -ENOENT;
	sl->revoked = true;
	sl->deadline = deadline_ns;
	return 0;
}

bool donor_slabs_is_revoked(const struct donor_slabs *s, uint32_t id)
{
	const struct slab *sl = find(s, id);

	return sl && sl->revoked;
}

void donor_slabs_count_unrevoked(const struct donor_slabs *s, unsigned *counts, unsigned n)
{
	for (unsigned i = 0; i < s->ntab; i++) {
		const struct slab *sl = &s->tab[i];
		if (sl->mem && !sl->revoked && sl->owner < n)
			counts[sl->owner]++;
	}
}

unsigned donor_slabs_revoke_owner(struct donor_slabs *s, uint32_t owner, unsigned max, uint64_t deadline_ns,
				  uint32_t *ret_ids)
{
	unsigned n = 0;

	for (unsigned i = s->ntab; i-- > 0 && n < max;) {
		struct slab *sl = &s->tab[i];
		if (!sl->mem || sl->revoked || sl->owner != owner)
			continue;
		sl->revoked = true;
		sl->deadline = deadline_ns;
		ret_ids[n++] = make_id(s, sl);
	}
	return n;
}

unsigned donor_slabs_expire(struct donor_slabs *s, uint64_t now)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->ntab; i++) {
		if (s->tab[i].mem && s->tab[i].revoked && s->tab[i].deadline <= now) {
			drop(s, &s->tab[i]);
			n++;
		}
	}
	return n;
}

uint64_t donor_slabs_revoked_bytes(const struct donor_slabs *s)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < s->ntab; i++)
		if (s->tab[i].mem && s->tab[i].revoked)
			n += DONOR_SLAB_SIZE;
	return n;
}

void donor_slot_map_init(struct donor_slot_map *m)
{
	memset(m, 0, sizeof(*m));
}

int donor_slot_alloc(struct donor_slot_map *m, uint32_t *ret_slot)
{
	const unsigned words = DONOR_SLAB_SLOTS / 64;

	if (m->used >= DONOR_SLAB_SLOTS)
		return -ENOSPC;
	for (unsigned k = 0; k < words; k++) {
		unsigned w = (m->hint + k) % words;
		if (m->bits[w] != UINT64_MAX) {
			unsigned b = (unsigned)__builtin_ctzll(~m->bits[w]);
			m->bits[w] |= 1ULL << b;
			m->used++;
			m->hint = w;
			*ret_slot = w * 64 + b;
			return 0;
		}
	}
	return -ENOSPC;
}

int donor_slot_free(struct donor_slot_map *m, uint32_t slot)
{
	if (slot >= DONOR_SLAB_SLOTS)
		return -ERANGE;
	if (!(m->bits[slot / 64] & (1ULL << (slot % 64))))
		return -ENOENT;
	m->bits[slot / 64] &= ~(1ULL << (slot % 64));
	m->used--;
	return 0;
}

bool donor_slot_is_used(const struct donor_slot_map *m, uint32_t slot)
{
	return slot < DONOR_SLAB_SLOTS && (m->bits[slot / 64] & (1ULL << (slot % 64)));
}
