/* SPDX-License-Identifier: MIT */
/* Per-VM stores: location encoding, slab table, copy placement and page I/O (see store.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "crc32c.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define PAGE_SZ 4096u

enum vslab_flags { VS_LIVE = 1, VS_MOVING = 2, VS_DEAD = 3, VS_TOMB = 4 };

struct vslab {
	uint32_t remote;
	uint8_t donor;
	uint8_t state; /* enum vslab_flags */
	uint16_t used;
	uint64_t bits[STORE_SLAB_SLOTS / 64];
};

struct store {
	char name[64];
	struct donor_pool *pool;
	struct spill *spill;
	unsigned replicas, max_copies;
	bool backup;
	pthread_mutex_t lock;       /* slab table */
	pthread_mutex_t alloc_lock; /* one slab allocation at a time */
	struct vslab *slabs;        /* STORE_MAX_SLABS entries, mmap'ed on demand */
	uint32_t nslabs;
	int32_t cur[POOL_MAX_DONORS];
	uint64_t free_slots[POOL_MAX_DONORS];
	uint64_t donor_pages[POOL_MAX_DONORS];
	uint64_t rnd;
	unsigned seen_gen;
	struct store_stats stats;
	struct pool_wait w;
	struct pool_op ops[128 * STORE_MAX_COPIES]; /* evictor's batch; guarded by io_lock */
	unsigned wr_owner[128 * STORE_MAX_COPIES];  /* page index of each op */
	unsigned wr_nops;
	int *wr_results;
	pthread_mutex_t io_lock;
};

unsigned store_copies_for(const struct policy_vm *pol)
{
	return pol->replicas + (pol->backup_spill ? 1 : 0);
}

int store_new(const char *vm_name, struct donor_pool *pool, struct spill *spill, const struct policy_vm *pol,
	      struct store **ret)
{
	struct store *st = calloc(1, sizeof(*st));

	if (!st)
		return -ENOMEM;
	st->slabs = mmap(NULL, (size_t)STORE_MAX_SLABS * sizeof(struct vslab), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (st->slabs == MAP_FAILED) {
		free(st);
		return -ENOMEM;
	}
	snprintf(st->name, sizeof(st->name), "%s", vm_name);
	st->pool = pool;
	st->spill = spill;
	st->replicas = pol->replicas ? pol->replicas : 1;
	st->backup = pol->backup_spill;
	st->max_copies = store_copies_for(pol);
	if (st->max_copies < 1)
		st->max_copies = 1;
	for (unsigned i = 0; i < POOL_MAX_DONORS; i++)
		st->cur[i] = -1;
	st->rnd = now_ns() ^ (uintptr_t)st;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->alloc_lock, NULL);
	pthread_mutex_init(&st->io_lock, NULL);
	pool_wait_init(&st->w);
	*ret = st;
	return 0;
}

void store_free(struct store *st)
{
	if (!st)
		return;
	for (uint32_t i = 0; i < st->nslabs; i++) {
		struct vslab *s = &st->slabs[i];
		if (s->state == VS_LIVE || s->state == VS_MOVING)
			donor_pool_free_slab(st->pool, s->donor, s->remote);
		if (s->state != VS_TOMB && s->used)
			donor_pool_count_pages(st->pool, s->donor, -(int64_t)s->used);
	}
	munmap(st->slabs, (size_t)STORE_MAX_SLABS * sizeof(struct vslab));
	pool_wait_destroy(&st->w);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->alloc_lock);
	pthread_mutex_destroy(&st->io_lock);
	free(st);
}

struct store_stats *store_stats(struct store *st) { return &st->stats; }
unsigned store_max_copies(const struct store *st) { return st->max_copies; }

uint64_t store_donor_pages(struct store *st, unsigned donor)
{
	uint64_t v;

	pthread_mutex_lock(&st->lock);
	v = donor < POOL_MAX_DONORS ? st->donor_pages[donor] : 0;
	pthread_mutex_unlock(&st->lock);
	return v;
}

/* Takes a free slot in one of our live slabs on donor d. Under st->lock. */
static uint32_t take_slot_locked(struct store *st, unsigned d)
{
	int32_t c = st->cur[d];

	if (c < 0 || st->slabs[c].state != VS_LIVE || st->slabs[c].used >= STORE_SLAB_SLOTS) {
		c = -1;
		for (uint32_t i = 0; i < st->nslabs; i++)
			if (st->slabs[i].donor == d && st->slabs[i].state == VS_LIVE &&
			    st->slabs[i].used < STORE_SLAB_SLOTS) {
				c = (int32_t)i;
				break;
			}
		st->cur[d] = c;
		if (c < 0)
			return LOC_NONE;
	}
	struct vslab *s = &st->slabs[c];
	for (unsigned w = 0; w < STORE_SLAB_SLOTS / 64; w++) {
		if (s->bits[w] == UINT64_MAX)
			continue;
		unsigned b = (unsigned)__builtin_ctzll(~s->bits[w]);
		s->bits[w] |= 1ULL << b;
		s->used++;
		st->free_slots[d]--;
		st->donor_pages[d]++;
		donor_pool_count_pages(st->pool, d, 1);
		atomic_fetch_add_explicit(&st->stats.remote_copies, 1, memory_order_relaxed);
		return LOC_REMOTE | ((uint32_t)c << 12) | (w * 64 + b);
	}
	return LOC_NONE; /* cannot happen: used < slots */
}

/* A remote location on donor d, allocating a slab if ours are full. */
static uint32_t alloc_remote(struct store *st, unsigned d)
{
	uint32_t loc, remote;

	pthread_mutex_lock(&st->lock);
	loc = take_slot_locked(st, d);
	pthread_mutex_unlock(&st->lock);
	if (loc != LOC_NONE)
		return loc;
	pthread_mutex_lock(&st->alloc_lock);
	pthread_mutex_lock(&st->lock);
	loc = take_slot_locked(st, d); /* another thread may have added one */
	pthread_mutex_unlock(&st->lock);
	if (loc == LOC_NONE && st->nslabs < STORE_MAX_SLABS && donor_pool_alloc_slab(st->pool, d, &remote) == 0) {
		pthread_mutex_lock(&st->lock);
		struct vslab *s = &st->slabs[st->nslabs];
		memset(s, 0, sizeof(*s));
		s->remote = remote;
		s->donor = (uint8_t)d;
		s->state = VS_LIVE;
		st->cur[d] = (int32_t)st->nslabs;
		st->nslabs++;
		st->free_slots[d] += STORE_SLAB_SLOTS;
		loc = take_slot_locked(st, d);
		pthread_mutex_unlock(&st->lock);
	}
	pthread_mutex_unlock(&st->alloc_lock);
	return loc;
}

static unsigned loc_donor(struct store *st, uint32_t loc)
{
	return st->slabs[(loc & ~LOC_REMOTE) >> 12].donor;
}

static unsigned views_for(struct store *st, struct policy_donor_view *v)
{
	unsigned n = donor_pool_views(st->pool, v);

	pthread_mutex_lock(&st->lock);
	for (unsigned i = 0; i < n; i++)
		if (v[i].up)
			v[i].free_bytes += st->free_slots[i] * PAGE_SZ;
	pthread_mutex_unlock(&st->lock);
	return n;
}

/* Donor copies for a page, excluding the donors in exclude; tries others when one fails. */
static unsigned place_remote(struct store *st, unsigned want, uint64_t exclude, uint32_t *out)
{
	struct policy_donor_view v[POOL_MAX_DONORS];
	unsigned n = views_for(st, v), got = 0;

	while (got < want) {
		int d = policy_place_donor(v, n, exclude, &st->rnd);
		if (d < 0)
			break;
		exclude |= 1ULL << d;
		uint32_t loc = alloc_remote(st, (unsigned)d);
		if (loc != LOC_NONE)
			out[got++] = loc;
	}
	return got;
}

int store_place(struct store *st, uint32_t *locs)
{
	unsigned got = 0;
	bool want_spill;

	for (unsigned i = 0; i < st->max_copies; i++)
		locs[i] = LOC_NONE;
	if (donor_pool_has_donors(st->pool))
		got = place_remote(st, st->replicas, 0, locs);
	/* The spill file is the backup, stands in for a missing replica, and takes what no donor can. */
	want_spill = st->backup || got < st->replicas;
	if (want_spill) {
		uint32_t slot = spill_alloc_slot(st->spill);
		if (slot != SPILL_NO_SLOT && slot < STORE_SPILL_MAX_SLOTS) {
			locs[got++] = slot;
			if (locs[0] == slot && donor_pool_has_donors(st->pool))
				atomic_fetch_add_explicit(&st->stats.spill_fallbacks, 1, memory_order_relaxed);
		} else {
			if (slot != SPILL_NO_SLOT)
				spill_free_slot(st->spill, slot);
			/* A required backup or the only copy is missing: the page stays. */
			if (st->backup || got == 0) {
				store_free_locs(st, locs);
				for (unsigned i = 0; i < st->max_copies; i++)
					locs[i] = LOC_NONE;
				return -ENOSPC;
			}
		}
	}
	return (int)got;
}

int store_place_one(struct store *st, const uint32_t *have, unsigned nhave, uint32_t *ret_loc)
{
	uint64_t exclude = 0;
	bool has_spill = false;

	for (unsigned i = 0; i < nhave; i++) {
		if (have[i] == LOC_NONE)
			continue;
		if (loc_is_remote(have[i]))
			exclude |= 1ULL << loc_donor(st, have[i]);
		else
			has_spill = true;
	}
	if (donor_pool_has_donors(st->pool) && place_remote(st, 1, exclude, ret_loc) == 1)
		return 0;
	if (!has_spill) {
		uint32_t slot = spill_alloc_slot(st->spill);
		if (slot != SPILL_NO_SLOT && slot < STORE_SPILL_MAX_SLOTS) {
			*ret_loc = slot;
			return 0;
		}
		if (slot != SPILL_NO_SLOT)
			spill_free_slot(st->spill, slot);
	}
	return -ENOSPC;
}

void store_free_loc(struct store *st, uint32_t loc)
{
	if (loc == LOC_NONE)
		return;
	if (!loc_is_remote(loc)) {
		spill_free_slot(st->spill, loc);
		return;
	}
	uint32_t idx = (loc & ~LOC_REMOTE) >> 12, slot = loc & (STORE_SLAB_SLOTS - 1);
	pthread_mutex_lock(&st->lock);
	struct vslab *s = &st->slabs[idx];
	if (idx < st->nslabs && s->state != VS_TOMB && (s->bits[slot / 64] & (1ULL << (slot % 64)))) {
		s->bits[slot / 64] &= ~(1ULL << (slot % 64));
		s->used--;
		st->donor_pages[s->donor]--;
		donor_pool_count_pages(st->pool, s->donor, -1);
		atomic_fetch_sub_explicit(&st->stats.remote_copies, 1, memory_order_relaxed);
		if (s->state == VS_LIVE) {
			st->free_slots[s->donor]++;
		}
	} else {
		vm_log_err(st->name, "double free of remote location 0x%x", loc);
	}
	pthread_mutex_unlock(&st->lock);
}

void store_free_locs(struct store *st, const uint32_t *locs)
{
	for (unsigned i = 0; i < st->max_copies; i++)
		store_free_loc(st, locs[i]);
}

static void remote_addr(struct store *st, uint32_t loc, unsigned *ret_donor, uint32_t *ret_slab, uint32_t *ret_slot)
{
	uint32_t idx = (loc & ~LOC_REMOTE) >> 12;

	pthread_mutex_lock(&st->lock);
	*ret_donor = st->slabs[idx].donor;
	*ret_slab = st->slabs[idx].remote;
	pthread_mutex_unlock(&st->lock);
	*ret_slot = loc & (STORE_SLAB_SLOTS - 1);
}

void store_write_begin(struct store *st, int *results)
{
	pthread_mutex_lock(&st->io_lock);
	st->wr_results = results;
	st->wr_nops = 0;
}

void store_write_add(struct store *st, unsigned first, unsigned n, void *const *bufs, const uint32_t *locs,
		     bool use_uring)
{
	uint32_t sslots[128];
	void *sbufs[128];
	int sres[128];
	unsigned sidx[128], ns = 0;
	uint64_t used_donors = 0;
	int *results = st->wr_results;

	for (unsigned j = 0; j < n && first + j < 128; j++) {
		unsigned i = first + j;
		results[i] = 0;
		for (unsigned c = 0; c < st->max_copies; c++) {
			uint32_t loc = locs[j * st->max_copies + c];
			if (loc == LOC_NONE)
				continue;
			if (!loc_is_remote(loc)) {
				sslots[ns] = loc;
				sbufs[ns] = bufs[j];
				sidx[ns++] = i;
				continue;
			}
			unsigned d;
			uint32_t slab, slot;
			remote_addr(st, loc, &d, &slab, &slot);
			struct pool_op *op = &st->ops[st->wr_nops];
			op->w = &st->w;
			st->wr_owner[st->wr_nops] = i;
			int r = donor_pool_submit(st->pool, d, true, slab, slot, bufs[j], op);
			if (r < 0) {
				if (!results[i])
					results[i] = r;
				continue;
			}
			used_donors |= 1ULL << d;
			st->wr_nops++;
		}
	}
	/* Each part leaves at once: the donors work on it while the caller prepares the next. */
	for (unsigned d = 0; d < POOL_MAX_DONORS; d++)
		if (used_donors & (1ULL << d))
			donor_pool_flush(st->pool, d);
	/* Spill copies meanwhile: local disk and network overlap. */
	if (ns) {
		if (use_uring) {
			spill_write_batch(st->spill, sslots, sbufs, sres, ns);
		} else {
			for (unsigned k = 0; k < ns; k++)
				sres[k] = spill_pwrite(st->spill, sslots[k], sbufs[k]);
		}
		for (unsigned k = 0; k < ns; k++)
			if (sres[k] < 0 && !results[sidx[k]])
				results[sidx[k]] = sres[k];
	}
}

void store_write_end(struct store *st)
{
	pool_wait_all(&st->w);
	for (unsigned k = 0; k < st->wr_nops; k++)
		if (st->ops[k].status < 0 && !st->wr_results[st->wr_owner[k]])
			st->wr_results[st->wr_owner[k]] = st->ops[k].status;
	st->wr_results = NULL;
	pthread_mutex_unlock(&st->io_lock);
}

void store_write(struct store *st, unsigned n, void *const *bufs, const uint32_t *locs, int *results, bool use_uring)
{
	store_write_begin(st, results);
	store_write_add(st, 0, n, bufs, locs, use_uring);
	store_write_end(st);
}

enum loc_health store_loc_health(struct store *st, uint32_t loc)
{
	uint32_t idx;
	int state;
	unsigned d;

	if (loc == LOC_NONE)
		return LOC_DEAD;
	if (!loc_is_remote(loc))
		return LOC_OK;
	idx = (loc & ~LOC_REMOTE) >> 12;
	pthread_mutex_lock(&st->lock);
	state = st->slabs[idx].state;
	d = st->slabs[idx].donor;
	pthread_mutex_unlock(&st->lock);
	switch (donor_pool_state(st->pool, d)) {
	case PD_DOWN:
	case PD_GONE:
		return LOC_DEAD;
	case PD_DRAINING:
	case PD_REMOVING:
		return state == VS_DEAD ? LOC_DEAD : LOC_MOVE;
	case PD_UP:
		break;
	}
	return state == VS_LIVE ? LOC_OK : state == VS_MOVING ? LOC_MOVE : LOC_DEAD;
}

struct sent_hook {
	void (*fn)(void *arg);
	void *arg;
};

static void call_sent(struct sent_hook *h)
{
	if (h && h->fn) {
		h->fn(h->arg);
		h->fn = NULL;
	}
}

/* One read from one copy; 0 when it arrived and matches crc. */
static int read_one(struct store *st, uint32_t loc, uint32_t crc, void *buf, bool fault_thread, struct sent_hook *hook)
{
	int r;

	if (!loc_is_remote(loc)) {
		call_sent(hook);
		r = fault_thread ? spill_read(st->spill, loc, buf) : spill_pread(st->spill, loc, buf);
	} else {
		struct pool_wait w;
		struct pool_op op = { .w = &w };
		unsigned d;
		uint32_t slab, slot;

		remote_addr(st, loc, &d, &slab, &slot);
		/* Stack wait: one page, waited for right here; the transport bounds the wait. */
		pool_wait_init(&w);
		r = donor_pool_submit(st->pool, d, false, slab, slot, buf, &op);
		if (r == 0) {
			donor_pool_flush(st->pool, d);
			call_sent(hook);
			pool_wait_all(&w);
			r = op.status;
		}
		pool_wait_destroy(&w);
	}
	if (r == 0 && crc32c(0, buf, PAGE_SZ) != crc)
		r = -EBADMSG;
	if (r < 0)
		atomic_fetch_add_explicit(&st->stats.bad_copies, 1, memory_order_relaxed);
	return r;
}

int store_read(struct store *st, const uint32_t *locs, uint32_t crc, void *buf, enum store_source *ret_source,
	       bool fault_thread)
{
	return store_read_ex(st, locs, crc, buf, ret_source, fault_thread, NULL, NULL);
}

int store_read_ex(struct store *st, const uint32_t *locs, uint32_t crc, void *buf, enum store_source *ret_source,
		  bool fault_thread, void (*sent)(void *arg), void *arg)
{
	struct sent_hook hook = { sent, arg };

	/* Healthy donor copies, then copies being moved, then the spill file. */
	for (int pass = 0; pass < 3; pass++) {
		for (unsigned c = 0; c < st->max_copies; c++) {
			uint32_t loc = locs[c];
			if (loc == LOC_NONE)
				continue;
			enum loc_health h = store_loc_health(st, loc);
			bool remote = loc_is_remote(loc);
			if ((pass == 0 && !(remote && h == LOC_OK)) || (pass == 1 && !(remote && h == LOC_MOVE)) ||
			    (pass == 2 && remote))
				continue;
			if (read_one(st, loc, crc, buf, fault_thread, &hook) == 0) {
				*ret_source = remote ? SRC_DONOR : SRC_SPILL;
				return 0;
			}
		}
	}
	return -EIO;
}

int store_read_async(struct store *st, const uint32_t *locs, void *buf, struct pool_op *op, uint64_t *donors)
{
	for (unsigned c = 0; c < st->max_copies; c++) {
		uint32_t loc = locs[c], slab, slot;
		unsigned d;
		int r;

		if (!loc_is_remote(loc) || store_loc_health(st, loc) != LOC_OK)
			continue;
		remote_addr(st, loc, &d, &slab, &slot);
		r = donor_pool_submit(st->pool, d, false, slab, slot, buf, op);
		if (r == 0)
			*donors |= 1ULL << d;
		return r;
	}
	return -ENOENT;
}

void store_flush(struct store *st, uint64_t donors)
{
	for (unsigned d = 0; d < POOL_MAX_DONORS; d++)
		if (donors & (1ULL << d))
			donor_pool_flush(st->pool, d);
}

bool store_refresh(struct store *st)
{
	unsigned gen = donor_pool_generation(st->pool);
	bool any = false;

	st->seen_gen = gen;
	pthread_mutex_lock(&st->lock);
	for (uint32_t i = 0; i < st->nslabs; i++) {
		struct vslab *s = &st->slabs[i];
		if (s->state == VS_TOMB || s->state == VS_DEAD)
			continue;
		enum pool_donor_state ds = donor_pool_state(st->pool, s->donor);
		if (ds == PD_DOWN || ds == PD_GONE) {
			if (s->state == VS_LIVE)
				st->free_slots[s->donor] -= STORE_SLAB_SLOTS - s->used;
			s->state = VS_DEAD;
			atomic_fetch_add_explicit(&st->stats.copies_lost, s->used, memory_order_relaxed);
			any = true;
		} else if (s->state == VS_LIVE &&
			   (ds != PD_UP || donor_pool_slab_revoked(st->pool, s->donor, s->remote))) {
			st->free_slots[s->donor] -= STORE_SLAB_SLOTS - s->used;
			s->state = VS_MOVING;
			any = true;
		} else if (s->state == VS_MOVING) {
			any = true;
		}
	}
	pthread_mutex_unlock(&st->lock);
	return any;
}

void store_release_empty(struct store *st)
{
	for (uint32_t i = 0; i < st->nslabs; i++) {
		struct vslab *s = &st->slabs[i];
		bool give_back = false;

		pthread_mutex_lock(&st->lock);
		if ((s->state == VS_MOVING || s->state == VS_DEAD) && s->used == 0) {
			give_back = s->state == VS_MOVING;
			s->state = VS_TOMB;
		}
		pthread_mutex_unlock(&st->lock);
		if (give_back)
			donor_pool_free_slab(st->pool, s->donor, s->remote);
	}
}

bool store_generation_changed(struct store *st)
{
	return donor_pool_generation(st->pool) != st->seen_gen;
}
