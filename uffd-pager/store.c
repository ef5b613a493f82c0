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

enum vslab_flags { VS_LIVE = 1, VS_MOVING = 2, VS_DEAD = 3, VS_TOMB = 4 };

struct vslab {
	uint32_t remote;
	uint8_t donor;
	uint8_t state; /* enum vslab_flags */
	uint16_t used;
	uint64_t bits[STORE_SLAB_SLOTS / 64];
};

/*
 * The slab table as it lies in the VM's state file (vmstate.h), so that a
 * pager that adopts the VM finds which remote slab each location names;
 * donors by URL, since the new pager numbers its donors afresh. The slot
 * bitmaps and counts are rebuilt from the page map on adoption (the map
 * is the truth: slots a dead pager had taken for copies it never
 * committed are free again).
 */
#define STORE_AREA_MAGIC 0x41545355u /* "USTA" */
struct store_area {
	uint32_t magic;
	uint32_t nslabs;
	char donor_urls[POOL_MAX_DONORS][POLICY_URL_MAX]; /* by the donor index in vslab.donor */
	struct vslab slabs[STORE_MAX_SLABS];
};

size_t store_state_bytes(void)
{
	return sizeof(struct store_area);
}

struct store {
	char name[64];
	struct donor_pool *pool;
	struct spill *spill;
	_Atomic unsigned replicas; /* a sharing group's may change (store_set_durability) */
	unsigned max_copies;
	_Atomic bool backup;
	pthread_mutex_t lock;       /* slab table */
	pthread_mutex_t alloc_lock; /* one slab allocation at a time */
	struct store_area *area;    /* the state file's (or our own anonymous mapping) */
	bool own_area;
	bool adopt_repair;          /* adopted copies on dead donors: the first refresh starts a repair pass */
	int32_t cur[POOL_MAX_DONORS];
	uint64_t free_slots[POOL_MAX_DONORS];
	uint64_t donor_pages[POOL_MAX_DONORS];
	uint64_t rnd; /* placement draws, under lock */
	unsigned seen_gen;
	struct store_stats stats;
	/* Sealing (NULL: copies in clear): one cipher context per thread that seals or opens. */
	struct seal *seal;
	struct seal_ctx *ctx_evict, *ctx_fault, *ctx_repair;
	/* The sharing group (NULL: none): shared locations are its. */
	const struct store_shared_ops *shared;
	void *shared_arg;
};

unsigned store_copies_for(const struct policy_vm *pol)
{
	return pol->replicas + (pol->backup_spill ? 1 : 0);
}

/* Frees what store_new set up before failing or at the end. */
static void store_release(struct store *st, bool keep_seal_file)
{
	if (st->own_area && st->area)
		munmap(st->area, sizeof(struct store_area));
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->alloc_lock);
	seal_ctx_free(st->ctx_evict);
	seal_ctx_free(st->ctx_fault);
	seal_ctx_free(st->ctx_repair);
	seal_free(st->seal, keep_seal_file);
	free(st);
}

/*
 * Adoption: donor indexes of the dead pager become this pager's (the URL
 * is the donor's identity; one not in the pool is added, down if it
 * cannot be reached), slots are counted again by store_adopt_loc.
 */
static void adopt_slab_table(struct store *st)
{
	char old[POOL_MAX_DONORS][POLICY_URL_MAX];
	int map[POOL_MAX_DONORS];

	memcpy(old, st->area->donor_urls, sizeof(old));
	memset(st->area->donor_urls, 0, sizeof(st->area->donor_urls));
	for (unsigned d = 0; d < POOL_MAX_DONORS; d++) {
		old[d][POLICY_URL_MAX - 1] = '\0';
		map[d] = old[d][0] ? donor_pool_adopt(st->pool, old[d]) : -1;
		if (map[d] >= 0)
			memcpy(st->area->donor_urls[map[d]], old[d], POLICY_URL_MAX);
	}
	if (st->area->nslabs > STORE_MAX_SLABS)
		st->area->nslabs = STORE_MAX_SLABS;
	for (uint32_t i = 0; i < st->area->nslabs; i++) {
		struct vslab *s = &st->area->slabs[i];
		int d = s->donor < POOL_MAX_DONORS ? map[s->donor] : -1;

		s->used = 0;
		memset(s->bits, 0, sizeof(s->bits));
		if (d < 0 || (s->state != VS_LIVE && s->state != VS_MOVING && s->state != VS_DEAD)) {
			s->state = VS_TOMB; /* unknown donor, given back, or never finished */
			continue;
		}
		s->donor = (uint8_t)d;
		/* A dead slab's id may name another slab on a donor that came back: it stays dead. */
		if (s->state == VS_MOVING)
			s->state = VS_LIVE; /* store_refresh decides again */
	}
}

int store_new(const char *vm_name, struct donor_pool *pool, struct spill *spill, struct seal *seal,
	      const struct policy_vm *pol, void *area, bool adopt, struct store **ret)
{
	struct store *st = calloc(1, sizeof(*st));
	int r;

	if (!st)
		return -ENOMEM;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->alloc_lock, NULL);
	if (seal && ((r = seal_ctx_new(seal, &st->ctx_evict)) < 0 || (r = seal_ctx_new(seal, &st->ctx_fault)) < 0 ||
		     (r = seal_ctx_new(seal, &st->ctx_repair)) < 0)) {
		store_release(st, true);
		return r;
	}
	st->area = area;
	if (!area) {
		st->area = mmap(NULL, sizeof(struct store_area), PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		st->own_area = st->area != MAP_FAILED;
		if (st->area == MAP_FAILED) {
			st->area = NULL;
			store_release(st, true);
			return -ENOMEM;
		}
	}
	if (adopt && st->area->magic != STORE_AREA_MAGIC) {
		store_release(st, true);
		return -EBADMSG;
	}
	st->seal = seal;
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
	if (adopt)
		adopt_slab_table(st);
	else
		st->area->magic = STORE_AREA_MAGIC;
	*ret = st;
	return 0;
}

unsigned store_release_orphan(struct donor_pool *pool, const void *area, size_t bytes)
{
	const struct store_area *a = area;
	unsigned freed = 0;

	if (bytes < sizeof(*a) || a->magic != STORE_AREA_MAGIC)
		return 0;
	for (uint32_t i = 0; i < a->nslabs && i < STORE_MAX_SLABS; i++) {
		const struct vslab *s = &a->slabs[i];
		char url[POLICY_URL_MAX];
		int d;

		/* A dead slab's id may name another slab now; a tomb was given back already. */
		if ((s->state != VS_LIVE && s->state != VS_MOVING) || s->donor >= POOL_MAX_DONORS)
			continue;
		memcpy(url, a->donor_urls[s->donor], sizeof(url));
		url[sizeof(url) - 1] = '\0';
		d = donor_pool_find_up(pool, url);
		if (d >= 0) {
			donor_pool_free_slab(pool, (unsigned)d, s->remote);
			freed++;
		}
	}
	return freed;
}

int store_adopt_loc(struct store *st, uint32_t loc)
{
	if (loc == LOC_NONE)
		return 0;
	/* The group counts its own references (share_group_adopt); none without a group. */
	if (loc_is_shared(loc))
		return st->shared ? 0 : -EXDEV;
	if (!loc_is_remote(loc))
		return spill_mark_used(st->spill, loc);
	uint32_t idx = (loc & ~LOC_REMOTE) >> 12, slot = loc & (STORE_SLAB_SLOTS - 1);
	if (idx >= st->area->nslabs)
		return -EBADMSG;
	struct vslab *s = &st->area->slabs[idx];
	if (s->state != VS_TOMB && !(s->bits[slot / 64] & (1ULL << (slot % 64)))) {
		s->bits[slot / 64] |= 1ULL << (slot % 64);
		s->used++;
	}
	return 0;
}

void store_adopt_done(struct store *st)
{
	pthread_mutex_lock(&st->lock);
	for (uint32_t i = 0; i < st->area->nslabs; i++) {
		struct vslab *s = &st->area->slabs[i];

		if (s->state == VS_TOMB)
			continue;
		st->donor_pages[s->donor] += s->used;
		donor_pool_count_pages(st->pool, s->donor, s->used);
		atomic_fetch_add_explicit(&st->stats.remote_copies, s->used, memory_order_relaxed);
		if (s->state == VS_LIVE)
			st->free_slots[s->donor] += STORE_SLAB_SLOTS - s->used;
		else if (s->used)
			st->adopt_repair = true;
	}
	pthread_mutex_unlock(&st->lock);
}

void store_free(struct store *st)
{
	if (!st)
		return;
	for (uint32_t i = 0; i < st->area->nslabs; i++) {
		struct vslab *s = &st->area->slabs[i];
		if (s->state == VS_LIVE || s->state == VS_MOVING)
			donor_pool_free_slab(st->pool, s->donor, s->remote);
		if (s->state != VS_TOMB && s->used)
			donor_pool_count_pages(st->pool, s->donor, -(int64_t)s->used);
	}
	store_release(st, false);
}

void store_detach(struct store *st)
{
	if (!st)
		return;
	/* The slabs stay with the donors (the lease keeps them) and the table in the state file. */
	for (uint32_t i = 0; i < st->area->nslabs; i++) {
		struct vslab *s = &st->area->slabs[i];
		if (s->state != VS_TOMB && s->used)
			donor_pool_count_pages(st->pool, s->donor, -(int64_t)s->used);
	}
	store_release(st, true);
}

bool store_sealed(const struct store *st) { return st->seal != NULL; }

struct store_stats *store_stats(struct store *st) { return &st->stats; }

void store_set_shared(struct store *st, const struct store_shared_ops *ops, void *arg)
{
	st->shared = ops;
	st->shared_arg = arg;
}

bool store_shares(const struct store *st) { return st->shared != NULL; }

void store_put_shared_batch(struct store *st, const void *const *pages, unsigned n, uint32_t *ret_locs, int *results)
{
	unsigned ok = 0;

	if (!st->shared) {
		for (unsigned i = 0; i < n; i++)
			results[i] = -EINVAL;
		return;
	}
	st->shared->put_batch(st->shared_arg, pages, n, ret_locs, results);
	for (unsigned i = 0; i < n; i++)
		ok += results[i] == 0;
	atomic_fetch_add_explicit(&st->stats.shared_refs, ok, memory_order_relaxed);
}

unsigned store_max_copies(const struct store *st) { return st->max_copies; }

void store_set_durability(struct store *st, unsigned replicas, bool backup)
{
	if (replicas < 1)
		replicas = 1;
	if (replicas + backup > st->max_copies)
		replicas = st->max_copies - backup;
	atomic_store(&st->replicas, replicas);
	atomic_store(&st->backup, backup);
}

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

	if (c < 0 || st->area->slabs[c].state != VS_LIVE || st->area->slabs[c].used >= STORE_SLAB_SLOTS) {
		c = -1;
		for (uint32_t i = 0; i < st->area->nslabs; i++)
			if (st->area->slabs[i].donor == d && st->area->slabs[i].state == VS_LIVE &&
			    st->area->slabs[i].used < STORE_SLAB_SLOTS) {
				c = (int32_t)i;
				break;
			}
		st->cur[d] = c;
		if (c < 0)
			return LOC_NONE;
	}
	struct vslab *s = &st->area->slabs[c];
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
	if (loc == LOC_NONE && st->area->nslabs < STORE_MAX_SLABS && donor_pool_alloc_slab(st->pool, d, &remote) == 0) {
		pthread_mutex_lock(&st->lock);
		if (!st->area->donor_urls[d][0]) /* before any slab names the donor */
			snprintf(st->area->donor_urls[d], POLICY_URL_MAX, "%s", donor_pool_url(st->pool, d));
		struct vslab *s = &st->area->slabs[st->area->nslabs];
		memset(s, 0, sizeof(*s));
		s->remote = remote;
		s->donor = (uint8_t)d;
		s->state = VS_LIVE;
		st->cur[d] = (int32_t)st->area->nslabs;
		st->area->nslabs++;
		st->free_slots[d] += STORE_SLAB_SLOTS;
		loc = take_slot_locked(st, d);
		pthread_mutex_unlock(&st->lock);
	}
	pthread_mutex_unlock(&st->alloc_lock);
	return loc;
}

static unsigned loc_donor(struct store *st, uint32_t loc)
{
	return st->area->slabs[(loc & ~LOC_REMOTE) >> 12].donor;
}

static unsigned views_for(struct store *st, struct policy_donor_view *v)
{
	unsigned n = donor_pool_views(st->pool, v);

	pthread_mutex_lock(&st->lock);
	for (unsigned i = 0; i < n; i++)
		if (v[i].up)
			v[i].free_bytes += st->free_slots[i] * PAGE_SIZE_4K;
	pthread_mutex_unlock(&st->lock);
	return n;
}

/* Donor copies for a page, excluding the donors in exclude; tries others when one fails. */
static unsigned place_remote(struct store *st, unsigned want, uint64_t exclude, uint32_t *out)
{
	struct policy_donor_view v[POOL_MAX_DONORS];
	unsigned n = views_for(st, v), got = 0;

	while (got < want) {
		/* The evictor, repair and (for a sharing group's store) every member's evictor place copies. */
		pthread_mutex_lock(&st->lock);
		int d = policy_place_donor(v, n, exclude, &st->rnd);
		pthread_mutex_unlock(&st->lock);
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
	const unsigned replicas = atomic_load(&st->replicas);
	const bool backup = atomic_load(&st->backup);

	if (donor_pool_has_donors(st->pool))
		got = place_remote(st, replicas, 0, locs);
	/* The spill file is the backup, stands in for a missing replica, and takes what no donor can. */
	want_spill = backup || got < replicas;
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
			if (backup || got == 0) {
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
		if (have[i] == LOC_NONE || loc_is_shared(have[i]))
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
	if (loc_is_shared(loc)) {
		if (st->shared) {
			atomic_fetch_sub_explicit(&st->stats.shared_refs, 1, memory_order_relaxed);
			st->shared->unref(st->shared_arg, loc);
		} else {
			vm_log_err(st->name, "shared location 0x%x in a store without a sharing group", loc);
		}
		return;
	}
	if (!loc_is_remote(loc)) {
		spill_free_slot(st->spill, loc);
		return;
	}
	uint32_t idx = (loc & ~LOC_REMOTE) >> 12, slot = loc & (STORE_SLAB_SLOTS - 1);
	pthread_mutex_lock(&st->lock);
	struct vslab *s = &st->area->slabs[idx];
	if (idx < st->area->nslabs && s->state != VS_TOMB && (s->bits[slot / 64] & (1ULL << (slot % 64)))) {
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
	*ret_donor = st->area->slabs[idx].donor;
	*ret_slab = st->area->slabs[idx].remote;
	pthread_mutex_unlock(&st->lock);
	*ret_slot = loc & (STORE_SLAB_SLOTS - 1);
}

void store_batch_init(struct store_batch *b)
{
	b->n = b->submitted = b->nops = 0;
	pool_wait_init(&b->w);
}

void store_batch_destroy(struct store_batch *b)
{
	pool_wait_destroy(&b->w);
}

void store_batch_reset(struct store_batch *b)
{
	b->n = b->submitted = b->nops = 0;
}

int store_batch_add(struct store_batch *b, void *buf, const uint32_t *locs, uint64_t page, uint32_t version)
{
	unsigned i = b->n;

	if (i >= STORE_BATCH_MAX)
		return -ENOSPC;
	b->bufs[i] = buf;
	b->pages[i] = page;
	b->checks[i] = version;
	memcpy(b->locs[i], locs, sizeof(b->locs[i]));
	b->results[i] = 0;
	b->n++;
	return (int)i;
}

/*
 * Queues a write of buf (and its tag, NULL for a page in clear) to remote
 * location loc, completing into op; ORs its donor into *donors. Returns 0 or -errno.
 */
static int submit_remote_write(struct store *st, uint32_t loc, void *buf, const uint8_t *tag, struct pool_op *op,
			       uint64_t *donors)
{
	unsigned d;
	uint32_t slab, slot;
	int r;

	remote_addr(st, loc, &d, &slab, &slot);
	r = donor_pool_submit(st->pool, d, true, slab, slot, buf, tag, op);
	if (r == 0)
		*donors |= 1ULL << d;
	return r;
}

void store_write_submit(struct store *st, struct store_batch *b, bool use_uring)
{
	/* Placement puts at most one copy of a page in the spill file, but locs come from the caller. */
	uint32_t sslots[STORE_BATCH_MAX * STORE_MAX_COPIES];
	void *sbufs[STORE_BATCH_MAX * STORE_MAX_COPIES];
	int sres[STORE_BATCH_MAX * STORE_MAX_COPIES];
	unsigned sidx[STORE_BATCH_MAX * STORE_MAX_COPIES], ns = 0;
	uint64_t used_donors = 0;

	for (unsigned i = b->submitted; i < b->n; i++) {
		/* Sealed once, in place: every copy of the page gets the same ciphertext and tag. */
		if (st->seal && seal_page(use_uring ? st->ctx_evict : st->ctx_repair, b->pages[i], b->checks[i],
					  b->bufs[i], b->tags[i]) < 0) {
			b->results[i] = -EIO;
			continue;
		}
		for (unsigned c = 0; c < st->max_copies; c++) {
			uint32_t loc = b->locs[i][c];
			if (loc == LOC_NONE)
				continue;
			if (!loc_is_remote(loc)) {
				sslots[ns] = loc;
				sbufs[ns] = b->bufs[i];
				sidx[ns++] = i;
				continue;
			}
			struct pool_op *op = &b->ops[b->nops];
			op->w = &b->w;
			int r = submit_remote_write(st, loc, b->bufs[i], st->seal ? b->tags[i] : NULL, op, &used_donors);
			if (r < 0) {
				if (!b->results[i])
					b->results[i] = r;
				continue;
			}
			b->owner[b->nops++] = (uint16_t)i;
		}
	}
	b->submitted = b->n;
	/* Each part leaves at once: the donors work on it while the caller prepares the next. */
	store_flush(st, used_donors);
	/* Spill copies meanwhile: local disk and network overlap. */
	if (ns) {
		if (use_uring) {
			spill_write_batch(st->spill, sslots, sbufs, sres, ns);
		} else {
			for (unsigned k = 0; k < ns; k++)
				sres[k] = spill_pwrite(st->spill, sslots[k], sbufs[k]);
		}
		for (unsigned k = 0; k < ns; k++) {
			/* The tag beside the slot; a copy without its tag could never be opened. */
			if (sres[k] == 0 && st->seal)
				sres[k] = spill_write_tag(st->spill, sslots[k], b->tags[sidx[k]]);
			if (sres[k] < 0 && !b->results[sidx[k]])
				b->results[sidx[k]] = sres[k];
		}
	}
}

int store_write_wait(struct store *st, struct store_batch *b)
{
	int first_err = 0;

	(void)st;
	pool_wait_all(&b->w);
	for (unsigned k = 0; k < b->nops; k++)
		if (b->ops[k].status < 0 && !b->results[b->owner[k]])
			b->results[b->owner[k]] = b->ops[k].status;
	b->nops = 0;
	for (unsigned i = 0; i < b->n && !first_err; i++)
		first_err = b->results[i];
	return first_err;
}

int store_write_page(struct store *st, void *buf, const uint32_t *locs, uint64_t page, uint32_t version)
{
	struct pool_op ops[STORE_MAX_COPIES];
	uint8_t tag[SEAL_TAG_LEN];
	struct pool_wait w;
	uint64_t donors = 0;
	unsigned nops = 0;
	int r = 0;

	/*
	 * Repair re-seals a copy it opened under the same (page, version):
	 * the same plaintext gives the same ciphertext, so no nonce is reused
	 * for different contents.
	 */
	if (st->seal && seal_page(st->ctx_repair, page, version, buf, tag) < 0)
		return -EIO;
	/* One page: a batch's arrays would be 12 KiB of stack for a single write. */
	pool_wait_init(&w);
	for (unsigned c = 0; c < st->max_copies; c++) {
		int rc;

		if (locs[c] == LOC_NONE)
			continue;
		if (loc_is_remote(locs[c])) {
			ops[nops].w = &w;
			rc = submit_remote_write(st, locs[c], buf, st->seal ? tag : NULL, &ops[nops], &donors);
			if (rc == 0)
				nops++;
		} else {
			rc = spill_pwrite(st->spill, locs[c], buf);
			if (rc == 0 && st->seal)
				rc = spill_write_tag(st->spill, locs[c], tag);
		}
		if (rc < 0 && !r)
			r = rc;
	}
	store_flush(st, donors);
	pool_wait_all(&w);
	pool_wait_destroy(&w);
	for (unsigned k = 0; k < nops && !r; k++)
		r = ops[k].status < 0 ? ops[k].status : 0;
	return r;
}

enum loc_health store_loc_health(struct store *st, uint32_t loc)
{
	uint32_t idx;
	int state;
	unsigned d;

	if (loc == LOC_NONE)
		return LOC_DEAD;
	if (loc_is_shared(loc))
		return st->shared ? st->shared->health(st->shared_arg, loc) : LOC_DEAD;
	if (!loc_is_remote(loc))
		return LOC_OK;
	idx = (loc & ~LOC_REMOTE) >> 12;
	pthread_mutex_lock(&st->lock);
	state = st->area->slabs[idx].state;
	d = st->area->slabs[idx].donor;
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

bool store_locs_healthy(struct store *st, const uint32_t locs[STORE_MAX_COPIES])
{
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		if (locs[c] != LOC_NONE && store_loc_health(st, locs[c]) != LOC_OK)
			return false;
	return true;
}

enum { RD_NONE, RD_DONOR, RD_SPILL_RING, RD_DONE };

/* Starts the next copy in rd->order. Returns 0 when one is on its way (or read synchronously), -EIO when none is left. */
static int read_start_next(struct store *st, struct store_read *rd)
{
	while (rd->next < rd->ncopies) {
		uint32_t loc = rd->locs[rd->order[rd->next++]];
		int r;

		rd->cur_loc = loc;
		if (loc_is_shared(loc)) {
			/* The group reads and opens its copy itself, synchronously. */
			rd->status = st->shared ? st->shared->read(st->shared_arg, loc, rd->buf, &rd->src) : -EIO;
			rd->inflight = RD_DONE;
			return 0;
		}
		if (!loc_is_remote(loc)) {
			rd->src = SRC_SPILL;
			if (rd->fault_thread) {
				r = spill_read_submit(st->spill, loc, rd->buf);
				if (r == 0) {
					rd->inflight = RD_SPILL_RING;
					return 0;
				}
			} else {
				/* Not the fault thread: nothing queues behind this read, a plain pread will do. */
				rd->status = spill_pread(st->spill, loc, rd->buf);
				rd->inflight = RD_DONE;
				return 0;
			}
		} else {
			unsigned d;
			uint32_t slab, slot;

			rd->src = SRC_DONOR;
			remote_addr(st, loc, &d, &slab, &slot);
			rd->op.w = &rd->w;
			r = donor_pool_submit(st->pool, d, false, slab, slot, rd->buf, NULL, &rd->op);
			if (r == 0) {
				donor_pool_flush(st->pool, d);
				rd->inflight = RD_DONOR;
				return 0;
			}
		}
		atomic_fetch_add_explicit(&st->stats.bad_copies, 1, memory_order_relaxed);
	}
	return -EIO;
}

/* The check of one copy: CRC32C in clear, the tag when sealed (opened in place). Returns 0 or -EBADMSG. */
static int check_copy(struct store *st, struct seal_ctx *ctx, uint64_t page, uint32_t crc, void *buf,
		      const uint8_t *tag)
{
	if (st->seal)
		return seal_open(ctx, page, crc, buf, tag);
	return crc32c(0, buf, PAGE_SIZE_4K) == crc ? 0 : -EBADMSG;
}

int store_check_copy(struct store *st, uint64_t page, uint32_t crc, void *buf, const uint8_t *tag)
{
	return check_copy(st, st->ctx_fault, page, crc, buf, tag);
}

void store_count_rejected(struct store *st)
{
	atomic_fetch_add_explicit(&st->stats.rejected, 1, memory_order_relaxed);
}

/* Waits for the copy in flight; 0 when it arrived and passes its check (sealed: then in clear). */
static int read_finish(struct store *st, struct store_read *rd, unsigned spin_us)
{
	const uint8_t *tag = rd->op.tag;
	int r;

	switch (rd->inflight) {
	case RD_DONOR:
		/* The transport bounds the wait. */
		pool_wait_spin(&rd->w, spin_us);
		r = rd->op.status;
		break;
	case RD_SPILL_RING:
		r = spill_read_wait(st->spill);
		break;
	case RD_DONE:
		r = rd->status;
		break;
	default:
		return -EIO;
	}
	rd->inflight = RD_NONE;
	if (loc_is_shared(rd->cur_loc)) {
		/* The group checked (and opened) it already. */
		if (r < 0)
			atomic_fetch_add_explicit(&st->stats.bad_copies, 1, memory_order_relaxed);
		rd->copy_refused |= r == -EBADMSG;
		return r < 0 ? -EIO : 0;
	}
	if (r == 0 && st->seal && rd->src == SRC_SPILL) {
		r = spill_read_tag(st->spill, rd->cur_loc, rd->tag);
		tag = rd->tag;
	}
	if (r == 0) {
		r = check_copy(st, rd->fault_thread ? st->ctx_fault : st->ctx_repair, rd->page, rd->crc, rd->buf, tag);
		/*
		 * A faulting page stays STORED at this version, so its copies are its own. Repair reads
		 * without holding the page: a refault may have freed the slot for another page's copy.
		 */
		if (r < 0 && rd->fault_thread)
			store_count_rejected(st);
		rd->copy_refused |= r < 0;
	}
	if (r < 0)
		atomic_fetch_add_explicit(&st->stats.bad_copies, 1, memory_order_relaxed);
	return r;
}

int store_read_submit(struct store *st, struct store_read *rd, uint64_t page, const uint32_t *locs, uint32_t crc,
		      void *buf, bool fault_thread)
{
	memcpy(rd->locs, locs, sizeof(rd->locs));
	rd->page = page;
	rd->crc = crc;
	rd->buf = buf;
	rd->fault_thread = fault_thread;
	rd->copy_refused = false;
	rd->ncopies = rd->next = 0;
	rd->inflight = RD_NONE;
	pool_wait_init(&rd->w);
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
			rd->order[rd->ncopies++] = (uint8_t)c;
		}
	}
	return read_start_next(st, rd);
}

int store_read_wait(struct store *st, struct store_read *rd, enum store_source *ret_source, unsigned spin_us)
{
	int r = -EIO;

	while (rd->inflight != RD_NONE) {
		r = read_finish(st, rd, spin_us);
		if (r == 0)
			break;
		r = -EIO;
		if (read_start_next(st, rd) < 0)
			break;
	}
	pool_wait_destroy(&rd->w);
	if (r == 0)
		*ret_source = rd->src;
	else if (rd->copy_refused)
		r = -EBADMSG;
	return r;
}

int store_read(struct store *st, uint64_t page, const uint32_t *locs, uint32_t crc, void *buf,
	       enum store_source *ret_source, bool fault_thread)
{
	struct store_read rd;

	store_read_submit(st, &rd, page, locs, crc, buf, fault_thread);
	return store_read_wait(st, &rd, ret_source, 0);
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
		r = donor_pool_submit(st->pool, d, false, slab, slot, buf, NULL, op);
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
	any = st->adopt_repair;
	st->adopt_repair = false;
	for (uint32_t i = 0; i < st->area->nslabs; i++) {
		struct vslab *s = &st->area->slabs[i];
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
	/* The evictor appends slabs under st->lock; the ones seen here are enough. */
	pthread_mutex_lock(&st->lock);
	uint32_t nslabs = st->area->nslabs;
	pthread_mutex_unlock(&st->lock);

	for (uint32_t i = 0; i < nslabs; i++) {
		struct vslab *s = &st->area->slabs[i];
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
