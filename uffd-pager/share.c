/* SPDX-License-Identifier: MIT */
/*
 * Sharing groups (share.h): the pager-wide registry, the path of a page
 * through the content index and the group's store, the group's state
 * file kept in step with its index (and loaded after a crash), and the
 * group's own repair. Lock order: a VM's lock, then the group's, then its store's;
 * the group never calls into a VM.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "dseal.h"
#include "log.h"
#include "share-index.h"
#include "share-state.h"
#include "share.h"
#include "spill.h"
#include "util.h"
#include "vmstate.h"

#define CTX_KEEP 64 /* idle sealing contexts kept: about one per evictor and fault thread */
#define PUT_BATCH 32 /* pages a batched put seals and writes at once: the evictor's part */

/* A sealing context, pages to seal into and a write batch, for one thread at a time. */
struct sctx {
	struct dseal_ctx *c;
	void *buf;  /* PUT_BATCH pages */
	struct store_batch *wb;
};

struct share_group {
	struct share_group *next;
	char name[POLICY_NAME_MAX];
	struct donor_pool *pool;
	unsigned members;
	/* The strongest durability of the members (under lock): what new copies get. */
	unsigned replicas;
	bool backup;
	bool complete_pending; /* raised: entries stored before get their missing copies (repair) */
	bool complete_retry;   /* some could not get them: again once the donors change */
	pthread_mutex_t lock; /* the index and the idle contexts */
	pthread_cond_t settled; /* a pending entry became ready or went */
	struct share_index ix;
	struct sctx *idle[CTX_KEEP];
	unsigned nidle;
	struct dseal *seal;
	struct spill *spill;
	struct store *store;
	struct share_state *state; /* the index's records and the members, for the next pager (share-state.h) */
	bool from_file;            /* loaded from a dead pager's files: failures keep them */
	/* Members recorded in the state file that have not come back since a crash (under lock). */
	bool pending[SHARE_STATE_MAX_MEMBERS];
	unsigned npending;
	/* Each joined member's durability, by slot (under lock). */
	bool in[SHARE_STATE_MAX_MEMBERS];
	uint8_t m_replicas[SHARE_STATE_MAX_MEMBERS];
	bool m_backup[SHARE_STATE_MAX_MEMBERS];
	pthread_mutex_t repair_lock; /* one repair pass at a time, whichever member runs it */
	bool repair_retry;
	_Atomic uint64_t hits, stored, bad_copies, write_errors;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct share_group *groups;

static void sctx_free(struct sctx *s)
{
	if (!s)
		return;
	dseal_ctx_free(s->c);
	free(s->buf);
	if (s->wb)
		store_batch_destroy(s->wb);
	free(s->wb);
	free(s);
}

/* A context of the group's (allocated only when every one is in use). NULL when out of memory. */
static struct sctx *sctx_get(struct share_group *g)
{
	struct sctx *s = NULL;

	pthread_mutex_lock(&g->lock);
	if (g->nidle)
		s = g->idle[--g->nidle];
	pthread_mutex_unlock(&g->lock);
	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s || posix_memalign(&s->buf, PAGE_SIZE_4K, PUT_BATCH * PAGE_SIZE_4K) || dseal_ctx_new(g->seal, &s->c) < 0 ||
	    !(s->wb = malloc(sizeof(*s->wb)))) {
		sctx_free(s);
		return NULL;
	}
	store_batch_init(s->wb);
	return s;
}

static void sctx_put(struct share_group *g, struct sctx *s)
{
	pthread_mutex_lock(&g->lock);
	if (g->nidle < CTX_KEEP) {
		g->idle[g->nidle++] = s;
		s = NULL;
	}
	pthread_mutex_unlock(&g->lock);
	sctx_free(s);
}

static uint32_t loc_id(uint32_t loc) { return loc & (LOC_SHARED - 1); }

static int share_put(void *arg, const void *page, uint32_t *ret_loc)
{
	struct share_group *g = arg;
	uint32_t locs[STORE_MAX_COPIES], id, crc;
	uint8_t key[DSEAL_NONCE_LEN], tag[DSEAL_TAG_LEN];
	struct sctx *s = sctx_get(g);
	int r;

	if (!s)
		return -ENOMEM;
	r = dseal_key(s->c, page, key);
	if (r < 0) {
		sctx_put(g, s);
		return r;
	}
	pthread_mutex_lock(&g->lock);
	for (;;) {
		id = share_index_find(&g->ix, key);
		if (id == SHARE_NONE) {
			r = share_index_insert(&g->ix, key, &id);
			break;
		}
		if (share_index_entry(&g->ix, id)->state == SE_READY) {
			share_index_ref(&g->ix, id);
			pthread_mutex_unlock(&g->lock);
			sctx_put(g, s);
			atomic_fetch_add_explicit(&g->hits, 1, memory_order_relaxed);
			*ret_loc = LOC_SHARED | id;
			return 0;
		}
		/* Another member writes this content right now: its copy is ours once durable. */
		pthread_cond_wait(&g->settled, &g->lock);
	}
	pthread_mutex_unlock(&g->lock);
	if (r < 0) {
		sctx_put(g, s);
		return r;
	}
	/* New content: sealed, placed and written with the index unlocked (the entry is pending meanwhile). */
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		locs[c] = LOC_NONE;
	r = dseal_seal(s->c, key, page, s->buf, tag);
	crc = crc32c(0, s->buf, PAGE_SIZE_4K);
	if (r == 0 && (r = store_place(g->store, locs)) >= 0)
		r = store_write_page(g->store, s->buf, locs, id, 0);
	pthread_mutex_lock(&g->lock);
	struct share_entry *e = share_index_entry(&g->ix, id);
	if (r >= 0) {
		memcpy(e->locs, locs, sizeof(e->locs));
		memcpy(e->tag, tag, sizeof(tag));
		e->crc = crc;
		/* On file before any page map may name it: a page map never names an entry a crash lost. */
		r = share_state_set_ready(g->state, id, e);
	}
	if (r >= 0) {
		e->state = SE_READY;
	} else {
		store_free_locs(g->store, locs);
		share_index_remove(&g->ix, id);
	}
	pthread_cond_broadcast(&g->settled);
	pthread_mutex_unlock(&g->lock);
	sctx_put(g, s);
	if (r < 0) {
		atomic_fetch_add_explicit(&g->write_errors, 1, memory_order_relaxed);
		return r == -ENOSPC ? r : -EIO;
	}
	atomic_fetch_add_explicit(&g->stored, 1, memory_order_relaxed);
	*ret_loc = LOC_SHARED | id;
	return 0;
}

/*
 * Up to PUT_BATCH pages: hits take their references, new contents are
 * sealed and written in one batch (the donors work on all of them at
 * once), each page's copy it finds another thread writing is waited for
 * afterwards, one page at a time (share_put). Waiting only once this
 * thread's own pending entries are settled is what keeps two evictors
 * from waiting on each other.
 */
static void put_chunk(struct share_group *g, const void *const *pages, unsigned n, uint32_t *ret_locs, int *results)
{
	enum { P_DONE, P_OWN, P_SAME, P_LATER } what[PUT_BATCH];
	uint8_t keys[PUT_BATCH][DSEAL_NONCE_LEN], tags[PUT_BATCH][DSEAL_TAG_LEN];
	uint32_t id[PUT_BATCH], locs[PUT_BATCH][STORE_MAX_COPIES], crcs[PUT_BATCH];
	int widx[PUT_BATCH];
	unsigned same_as[PUT_BATCH], own = 0;
	struct sctx *s = sctx_get(g);

	for (unsigned i = 0; i < n; i++) {
		what[i] = P_DONE;
		widx[i] = -1;
		results[i] = s ? dseal_key(s->c, pages[i], keys[i]) : -ENOMEM;
		for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
			locs[i][c] = LOC_NONE;
	}
	pthread_mutex_lock(&g->lock);
	for (unsigned i = 0; i < n; i++) {
		if (results[i] < 0)
			continue;
		id[i] = share_index_find(&g->ix, keys[i]);
		if (id[i] == SHARE_NONE) {
			results[i] = share_index_insert(&g->ix, keys[i], &id[i]);
			if (results[i] == 0) {
				what[i] = P_OWN;
				own++;
			}
		} else if (share_index_entry(&g->ix, id[i])->state == SE_READY) {
			share_index_ref(&g->ix, id[i]);
			ret_locs[i] = LOC_SHARED | id[i];
			atomic_fetch_add_explicit(&g->hits, 1, memory_order_relaxed);
		} else {
			what[i] = P_LATER; /* another thread's write, unless one of ours */
			for (unsigned j = 0; j < i; j++)
				if (what[j] == P_OWN && id[j] == id[i]) {
					what[i] = P_SAME;
					same_as[i] = j;
					break;
				}
		}
	}
	pthread_mutex_unlock(&g->lock);
	if (own) {
		store_batch_reset(s->wb);
		for (unsigned i = 0; i < n; i++) {
			uint8_t *buf = (uint8_t *)s->buf + (size_t)i * PAGE_SIZE_4K;
			int r;

			if (what[i] != P_OWN)
				continue;
			r = dseal_seal(s->c, keys[i], pages[i], buf, tags[i]);
			crcs[i] = crc32c(0, buf, PAGE_SIZE_4K);
			if (r == 0 && (r = store_place(g->store, locs[i])) >= 0)
				widx[i] = store_batch_add(s->wb, buf, locs[i], id[i], 0);
			results[i] = r < 0 ? r : 0;
		}
		store_write_submit(g->store, s->wb, false);
		store_write_wait(g->store, s->wb);
	}
	pthread_mutex_lock(&g->lock);
	for (unsigned i = 0; i < n; i++) {
		if (what[i] != P_OWN)
			continue;
		struct share_entry *e = share_index_entry(&g->ix, id[i]);
		if (results[i] == 0 && widx[i] >= 0 && s->wb->results[widx[i]] == 0) {
			memcpy(e->locs, locs[i], sizeof(e->locs));
			memcpy(e->tag, tags[i], sizeof(e->tag));
			e->crc = crcs[i];
			results[i] = share_state_set_ready(g->state, id[i], e); /* before any page map names it */
		}
		if (results[i] == 0 && widx[i] >= 0 && s->wb->results[widx[i]] == 0) {
			e->state = SE_READY;
			ret_locs[i] = LOC_SHARED | id[i];
			atomic_fetch_add_explicit(&g->stored, 1, memory_order_relaxed);
		} else {
			results[i] = results[i] == -ENOSPC ? -ENOSPC : -EIO;
			store_free_locs(g->store, locs[i]);
			share_index_remove(&g->ix, id[i]);
			atomic_fetch_add_explicit(&g->write_errors, 1, memory_order_relaxed);
		}
	}
	for (unsigned i = 0; i < n; i++) {
		if (what[i] != P_SAME)
			continue;
		if (results[same_as[i]] == 0) {
			share_index_ref(&g->ix, id[i]);
			ret_locs[i] = LOC_SHARED | id[i];
			atomic_fetch_add_explicit(&g->hits, 1, memory_order_relaxed);
		} else {
			what[i] = P_LATER;
		}
	}
	if (own)
		pthread_cond_broadcast(&g->settled);
	pthread_mutex_unlock(&g->lock);
	if (s)
		sctx_put(g, s);
	for (unsigned i = 0; i < n; i++)
		if (what[i] == P_LATER)
			results[i] = share_put(g, pages[i], &ret_locs[i]);
}

static void share_put_batch(void *arg, const void *const *pages, unsigned n, uint32_t *ret_locs, int *results)
{
	for (unsigned i = 0; i < n; i += PUT_BATCH)
		put_chunk(arg, pages + i, n - i < PUT_BATCH ? n - i : PUT_BATCH, ret_locs + i, results + i);
}

/* A ready entry with no reference left goes: off the file first, so its slots are never named twice. Under lock. */
static void entry_free(struct share_group *g, uint32_t id)
{
	share_state_set_free(g->state, id);
	/* Bookkeeping only (store.h): safe under the group's lock. */
	store_free_locs(g->store, share_index_entry(&g->ix, id)->locs);
	share_index_remove(&g->ix, id);
}

/*
 * After a crash, once every member recorded in the state file is back
 * (or gone): copies no page map named are freed. Under lock.
 */
static void sweep_unclaimed(struct share_group *g)
{
	uint64_t freed = 0;

	for (uint32_t id = 0; id < g->ix.used; id++) {
		const struct share_entry *e = share_index_entry(&g->ix, id);

		if (e->state == SE_READY && e->refs == 0) {
			entry_free(g, id);
			freed++;
		}
	}
	log_info("sharing group %s: every member is back: %llu copies no member names freed, %llu kept", g->name,
		 (unsigned long long)freed, (unsigned long long)g->ix.live);
}

/* A recorded member is back, or gone for good. Under lock. */
static void member_settled(struct share_group *g, uint32_t slot)
{
	if (slot >= SHARE_STATE_MAX_MEMBERS || !g->pending[slot])
		return;
	g->pending[slot] = false;
	if (--g->npending == 0)
		sweep_unclaimed(g);
}

static void share_unref(void *arg, uint32_t loc)
{
	struct share_group *g = arg;
	uint32_t id = loc_id(loc);

	pthread_mutex_lock(&g->lock);
	if (!share_index_valid(&g->ix, id) || share_index_entry(&g->ix, id)->state != SE_READY) {
		log_err("sharing group %s: reference to entry %u that is not stored", g->name, id);
	} else if (share_index_unref(&g->ix, id) && !g->npending) {
		/* While members are still to come back, a count of zero may be one of theirs: the sweep decides. */
		entry_free(g, id);
	}
	pthread_mutex_unlock(&g->lock);
}

/* An entry's copies and what checks them, for I/O without the lock. False when id names no stored content. */
static bool entry_snapshot(struct share_group *g, uint32_t id, struct share_entry *ret)
{
	bool ok;

	pthread_mutex_lock(&g->lock);
	ok = share_index_valid(&g->ix, id) && share_index_entry(&g->ix, id)->state == SE_READY;
	if (ok)
		*ret = *share_index_entry(&g->ix, id);
	pthread_mutex_unlock(&g->lock);
	return ok;
}

/*
 * Reads one copy at a time (healthy ones first) and opens it: a copy that
 * passes its CRC32C but not the tag (someone forged the CRC) does not stop
 * the others from being tried.
 */
static int read_open(struct share_group *g, const struct share_entry *e, uint32_t id, void *buf,
		     enum store_source *ret_source)
{
	struct sctx *s = NULL;
	int r = -EIO;

	for (int pass = 0; pass < 2 && r < 0; pass++) {
		for (unsigned c = 0; c < STORE_MAX_COPIES && r < 0; c++) {
			uint32_t one[STORE_MAX_COPIES];

			if (e->locs[c] == LOC_NONE || (store_loc_health(g->store, e->locs[c]) == LOC_OK) != (pass == 0))
				continue;
			for (unsigned k = 0; k < STORE_MAX_COPIES; k++)
				one[k] = LOC_NONE;
			one[0] = e->locs[c];
			if (store_read(g->store, id, one, e->crc, buf, ret_source, false) < 0) {
				atomic_fetch_add_explicit(&g->bad_copies, 1, memory_order_relaxed);
				continue;
			}
			if (!s && !(s = sctx_get(g)))
				return -ENOMEM;
			r = dseal_open(s->c, e->key, buf, e->tag);
			if (r < 0) {
				atomic_fetch_add_explicit(&g->bad_copies, 1, memory_order_relaxed);
				atomic_fetch_add_explicit(&store_stats(g->store)->rejected, 1, memory_order_relaxed);
			}
		}
	}
	if (s)
		sctx_put(g, s);
	return r < 0 ? -EIO : 0;
}

static int share_read(void *arg, uint32_t loc, void *buf, enum store_source *ret_source)
{
	struct share_group *g = arg;
	struct share_entry e;

	if (!entry_snapshot(g, loc_id(loc), &e))
		return -EIO;
	return read_open(g, &e, loc_id(loc), buf, ret_source);
}

static enum loc_health share_health(void *arg, uint32_t loc)
{
	struct share_group *g = arg;
	struct share_entry e;

	if (!entry_snapshot(g, loc_id(loc), &e))
		return LOC_DEAD;
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		if (e.locs[c] != LOC_NONE && store_loc_health(g->store, e.locs[c]) != LOC_DEAD)
			return LOC_OK; /* readable; moving it is the group's business */
	return LOC_DEAD;
}

int share_read_async(struct share_group *g, uint32_t loc, void *buf, struct pool_op *op, uint64_t *donors,
		     struct share_fetch *ret)
{
	struct share_entry e;

	if (!entry_snapshot(g, loc_id(loc), &e))
		return -ENOENT;
	ret->id = loc_id(loc);
	memcpy(ret->key, e.key, sizeof(ret->key));
	memcpy(ret->tag, e.tag, sizeof(ret->tag));
	ret->crc = e.crc;
	return store_read_async(g->store, e.locs, buf, op, donors);
}

int share_fetch_open(struct share_group *g, const struct share_fetch *f, void *buf)
{
	struct sctx *s;
	int r;

	if (crc32c(0, buf, PAGE_SIZE_4K) != f->crc)
		return -EBADMSG;
	if (!(s = sctx_get(g)))
		return -EBADMSG; /* out of memory: the page is fetched on its fault instead */
	r = dseal_open(s->c, f->key, buf, f->tag);
	sctx_put(g, s);
	return r < 0 ? -EBADMSG : 0;
}

bool share_fetch_current(struct share_group *g, const struct share_fetch *f)
{
	bool same;

	pthread_mutex_lock(&g->lock);
	same = share_index_valid(&g->ix, f->id) && share_index_entry(&g->ix, f->id)->state == SE_READY &&
	       !memcmp(share_index_entry(&g->ix, f->id)->key, f->key, DSEAL_NONCE_LEN);
	pthread_mutex_unlock(&g->lock);
	return same;
}

const struct store_shared_ops share_store_ops = {
	.put_batch = share_put_batch,
	.unref = share_unref,
	.read = share_read,
	.health = share_health,
};

/* Re-creates or moves one entry's bad copies. Returns false if something must be retried. */
static bool repair_entry(struct share_group *g, uint32_t id, void *buf)
{
	enum loc_health h[STORE_MAX_COPIES];
	struct share_entry e;
	enum store_source src;
	unsigned bad = 0, good = 0;
	bool done = true;

	if (!entry_snapshot(g, id, &e))
		return true;
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++) {
		if (e.locs[c] == LOC_NONE)
			continue;
		h[c] = store_loc_health(g->store, e.locs[c]);
		bad += h[c] != LOC_OK;
		good += h[c] != LOC_DEAD;
	}
	if (!bad || !good)
		return true; /* nothing to do, or nothing left to do it from: readers find out */
	/* The sealed copy, CRC-checked: it is written back as it is. */
	if (store_read(g->store, id, e.locs, e.crc, buf, &src, false) < 0)
		return true;
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++) {
		uint32_t nl, one[STORE_MAX_COPIES];

		if (e.locs[c] == LOC_NONE || h[c] == LOC_OK)
			continue;
		if (store_place_one(g->store, e.locs, STORE_MAX_COPIES, &nl) < 0) {
			if (h[c] == LOC_MOVE) {
				done = false;
				continue;
			}
			nl = LOC_NONE;
		} else {
			for (unsigned k = 0; k < STORE_MAX_COPIES; k++)
				one[k] = LOC_NONE;
			one[0] = nl;
			if (store_write_page(g->store, buf, one, id, 0) < 0) {
				store_free_loc(g->store, nl);
				done = false;
				continue;
			}
		}
		pthread_mutex_lock(&g->lock);
		struct share_entry *cur = share_index_entry(&g->ix, id);
		if (share_index_valid(&g->ix, id) && cur->state == SE_READY && cur->locs[c] == e.locs[c] &&
		    !memcmp(cur->key, e.key, DSEAL_NONCE_LEN)) {
			/* The file first: the old slot may be handed out once freed. */
			share_state_set_loc(g->state, id, c, nl);
			store_free_loc(g->store, e.locs[c]);
			cur->locs[c] = nl;
			e.locs[c] = nl;
			if (nl != LOC_NONE)
				atomic_fetch_add_explicit(h[c] == LOC_DEAD ? &store_stats(g->store)->rereplications
									   : &store_stats(g->store)->moved,
							  1, memory_order_relaxed);
		} else if (nl != LOC_NONE) {
			store_free_loc(g->store, nl); /* the entry went meanwhile */
		}
		pthread_mutex_unlock(&g->lock);
	}
	return done;
}

/*
 * The group's durability becomes the strongest of its members': new
 * copies follow it at once; a raise also has the copies stored before
 * completed by the next repair pass. A weaker one after the strongest
 * member left applies to new copies only. Under lock.
 */
static void durability_update(struct share_group *g)
{
	unsigned r = 0;
	bool b = false, raised;

	for (unsigned i = 0; i < SHARE_STATE_MAX_MEMBERS; i++)
		if (g->in[i]) {
			r = g->m_replicas[i] > r ? g->m_replicas[i] : r;
			b |= g->m_backup[i];
		}
	if (!r && !b)
		return; /* no member: keep what the group had */
	if (r == g->replicas && b == g->backup)
		return;
	raised = r > g->replicas || (b && !g->backup);
	log_info("sharing group %s: durability now replicas %u, backup %s (the strongest of its members')%s", g->name, r,
		 b ? "spill" : "none", raised ? "; copies stored before get theirs" : "");
	g->replicas = r;
	g->backup = b;
	store_set_durability(g->store, r, b);
	g->complete_pending |= raised;
}

/*
 * Gives one entry the copies the group's durability asks for that it
 * lacks (after a raise): remote ones on donors it is not on yet, a spill
 * copy if backup is asked. Returns false if something must be retried.
 */
static bool complete_entry(struct share_group *g, uint32_t id, void *buf)
{
	struct share_entry e;
	enum store_source src;
	unsigned remote = 0, want_r;
	bool spill = false, want_b, done = true;

	if (!entry_snapshot(g, id, &e))
		return true;
	pthread_mutex_lock(&g->lock);
	want_r = g->replicas;
	want_b = g->backup;
	pthread_mutex_unlock(&g->lock);
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++) {
		if (e.locs[c] == LOC_NONE)
			continue;
		if (loc_is_remote(e.locs[c]))
			remote += store_loc_health(g->store, e.locs[c]) == LOC_OK;
		else
			spill = true;
	}
	if (remote >= want_r && (spill || !want_b))
		return true;
	/* The sealed copy, CRC-checked: written to the new places as it is. */
	if (store_read(g->store, id, e.locs, e.crc, buf, &src, false) < 0)
		return true; /* nothing readable: repair and readers find out */
	for (unsigned c = 0; c < STORE_MAX_COPIES && done; c++) {
		uint32_t nl, one[STORE_MAX_COPIES];

		if (e.locs[c] != LOC_NONE)
			continue;
		if (remote < want_r) {
			if (store_place_one(g->store, e.locs, STORE_MAX_COPIES, &nl) < 0) {
				done = false;
				break;
			}
		} else if (want_b && !spill) {
			nl = spill_alloc_slot(g->spill);
			if (nl == SPILL_NO_SLOT || nl >= STORE_SPILL_MAX_SLOTS) {
				if (nl != SPILL_NO_SLOT)
					spill_free_slot(g->spill, nl);
				done = false;
				break;
			}
		} else {
			break;
		}
		for (unsigned k = 0; k < STORE_MAX_COPIES; k++)
			one[k] = LOC_NONE;
		one[0] = nl;
		if (store_write_page(g->store, buf, one, id, 0) < 0) {
			store_free_loc(g->store, nl);
			done = false;
			break;
		}
		pthread_mutex_lock(&g->lock);
		struct share_entry *cur = share_index_entry(&g->ix, id);
		if (share_index_valid(&g->ix, id) && cur->state == SE_READY && cur->locs[c] == LOC_NONE &&
		    !memcmp(cur->key, e.key, DSEAL_NONCE_LEN)) {
			share_state_set_loc(g->state, id, c, nl); /* the file first, as every location change */
			cur->locs[c] = nl;
			e.locs[c] = nl;
		} else {
			store_free_loc(g->store, nl); /* the entry went or changed meanwhile */
			nl = LOC_NONE;
		}
		pthread_mutex_unlock(&g->lock);
		if (nl == LOC_NONE)
			break;
		if (loc_is_remote(nl))
			remote++;
		else
			spill = true;
		if (remote >= want_r && (spill || !want_b))
			break;
	}
	return done;
}

/* True while the process of a recorded member lives (a recycled pid has another start time). */
static bool member_alive(const struct share_member *m)
{
	uint64_t started;

	return m->pid > 0 && vmstate_pid_start(m->pid, &started) == 0 && started == m->start_ns;
}

/* Members still to come back whose process ended meanwhile will never name a copy again. */
static void check_pending(struct share_group *g)
{
	pthread_mutex_lock(&g->lock);
	for (uint32_t slot = 0; g->npending && slot < SHARE_STATE_MAX_MEMBERS; slot++) {
		struct share_member m;

		if (!g->pending[slot] || (share_state_member(g->state, slot, &m) && member_alive(&m)))
			continue;
		log_info("sharing group %s: member %s (pid %d) ended before it came back", g->name, m.name, (int)m.pid);
		share_state_member_clear(g->state, slot);
		member_settled(g, slot);
	}
	pthread_mutex_unlock(&g->lock);
}

bool share_repair(struct share_group *g)
{
	bool done = true;
	void *buf;

	if (!g || pthread_mutex_trylock(&g->repair_lock))
		return true; /* another member repairs right now */
	check_pending(g);
	pthread_mutex_lock(&g->lock);
	bool complete = g->complete_pending || (g->complete_retry && store_generation_changed(g->store));
	g->complete_pending = g->complete_retry = false;
	pthread_mutex_unlock(&g->lock);
	if (complete && !posix_memalign(&buf, PAGE_SIZE_4K, PAGE_SIZE_4K)) {
		uint32_t n;
		bool all = true;

		pthread_mutex_lock(&g->lock);
		n = g->ix.used;
		pthread_mutex_unlock(&g->lock);
		for (uint32_t id = 0; id < n; id++)
			all &= complete_entry(g, id, buf);
		free(buf);
		log_info("sharing group %s: copies completed to the group's durability over %u entries%s", g->name, n,
			 all ? "" : "; some could not be placed: again when the donors change");
		if (!all) {
			pthread_mutex_lock(&g->lock);
			g->complete_retry = true;
			pthread_mutex_unlock(&g->lock);
		}
	}
	if (!store_generation_changed(g->store) && !g->repair_retry) {
		pthread_mutex_unlock(&g->repair_lock);
		return true;
	}
	if (store_refresh(g->store) && !posix_memalign(&buf, PAGE_SIZE_4K, PAGE_SIZE_4K)) {
		uint32_t n;

		pthread_mutex_lock(&g->lock);
		n = g->ix.used;
		pthread_mutex_unlock(&g->lock);
		for (uint32_t id = 0; id < n; id++)
			done &= repair_entry(g, id, buf);
		free(buf);
		log_info("sharing group %s: repair pass over %u entries: %llu re-replicated, %llu moved%s", g->name, n,
			 (unsigned long long)atomic_load(&store_stats(g->store)->rereplications),
			 (unsigned long long)atomic_load(&store_stats(g->store)->moved), done ? "" : "; retrying");
	}
	g->repair_retry = !done;
	store_release_empty(g->store);
	pthread_mutex_unlock(&g->repair_lock);
	return done;
}

/* keep: members live on whose page maps name copies: the files and slabs stay for the next pager. */
static void group_free(struct share_group *g, bool keep)
{
	if (!g)
		return;
	if (g->ix.live && !keep)
		log_warn("sharing group %s: %llu entries still referenced at the end", g->name,
			 (unsigned long long)g->ix.live);
	for (unsigned i = 0; i < g->nidle; i++)
		sctx_free(g->idle[i]);
	if (keep) {
		store_detach(g->store);
		dseal_close(g->seal);
	} else {
		store_free(g->store);
		dseal_free(g->seal);
	}
	spill_free(g->spill, keep);
	share_state_close(g->state, keep);
	share_index_destroy(&g->ix);
	pthread_mutex_destroy(&g->lock);
	pthread_mutex_destroy(&g->repair_lock);
	pthread_cond_destroy(&g->settled);
	free(g);
}

/*
 * A group the dead pager left (its key and state files): its store's
 * slab table adopted, its index rebuilt from the records with no
 * references (the members' page maps bring them, share_group_adopt),
 * and the members it recorded whose process still runs awaited. Returns
 * 0, or -EBADMSG with err naming the file.
 */
static int group_load(struct share_group *g, char *err, size_t errlen)
{
	uint32_t n = share_state_nrecs(g->state), dup;
	struct share_entry *entries = calloc(n ? n : 1, sizeof(*entries));
	int r = 0;

	if (!entries) {
		snprintf(err, errlen, "sharing_group '%s': out of memory", g->name);
		return -ENOMEM;
	}
	for (uint32_t id = 0; id < n && r == 0; id++) {
		share_state_get(g->state, id, &entries[id]);
		for (unsigned c = 0; c < STORE_MAX_COPIES && r == 0 && entries[id].state == SE_READY; c++)
			if (store_adopt_loc(g->store, entries[id].locs[c]) < 0) {
				r = -EBADMSG;
				snprintf(err, errlen, "group state file %s: record %u names copy 0x%x that the group's "
					 "slab table never had", share_state_path(g->state), id, entries[id].locs[c]);
			}
	}
	if (r == 0 && (r = share_index_restore(&g->ix, entries, n, &dup)) < 0) {
		if (r == -EEXIST) {
			r = -EBADMSG;
			snprintf(err, errlen, "group state file %s: record %u repeats another record's content key",
				 share_state_path(g->state), dup);
		} else {
			snprintf(err, errlen, "sharing_group '%s': out of memory", g->name);
		}
	}
	free(entries);
	if (r < 0)
		return r;
	store_adopt_done(g->store);
	for (uint32_t slot = 0; slot < SHARE_STATE_MAX_MEMBERS; slot++) {
		struct share_member m;

		if (!share_state_member(g->state, slot, &m))
			continue;
		if (member_alive(&m)) {
			g->pending[slot] = true;
			g->npending++;
		} else {
			share_state_member_clear(g->state, slot);
		}
	}
	log_info("sharing group %s: recovered from %s: %llu copies, %u members to come back", g->name,
		 share_state_path(g->state), (unsigned long long)g->ix.live, g->npending);
	if (!g->npending)
		sweep_unclaimed(g);
	return 0;
}

/* The group's keys and state file: a dead pager's if it left them, else new ones. Returns 0 or -errno, err set. */
static int group_files(struct share_group *g, const char *dir, char *err, size_t errlen)
{
	int r = dseal_load(dir, g->name, &g->seal);

	if (r == 0) {
		g->from_file = true;
		r = share_state_open(dir, g->name, dseal_id(g->seal), store_state_bytes(), &g->state, err, errlen);
		if (r != -ENOENT)
			return r;
		/* Keys with no state file: the pager died while creating the group, no page map names it. */
		g->from_file = false;
		dseal_free(g->seal);
		g->seal = NULL;
	} else if (r != -ENOENT) {
		snprintf(err, errlen, "sharing_group '%s': cannot read its key file %s/%s.key: %s", g->name, dir, g->name,
			 strerror(-r));
		g->from_file = true; /* not ours to delete */
		return r;
	}
	if ((r = dseal_new(dir, g->name, &g->seal)) < 0) {
		snprintf(err, errlen, "sharing_group '%s': cannot create its key in %s: %s", g->name, dir, strerror(-r));
		return r;
	}
	return share_state_create(dir, g->name, dseal_id(g->seal), store_state_bytes(), &g->state, err, errlen);
}

static int group_new(const struct policy_vm *pol, struct donor_pool *pool, const char *state_dir,
		     struct share_group **ret, char *err, size_t errlen)
{
	struct share_group *g = calloc(1, sizeof(*g));
	char dir[512], label[POLICY_NAME_MAX + 8];
	uint64_t max_slots = pol->spill_max / PAGE_SIZE_4K;
	/* Room in every entry for the strongest durability a member may bring (store_set_durability). */
	struct policy_vm gpol = *pol;
	int r;

	gpol.replicas = POLICY_MAX_REPLICAS;
	gpol.backup_spill = true;
	if (!g)
		return -ENOMEM;
	pthread_mutex_init(&g->lock, NULL);
	pthread_mutex_init(&g->repair_lock, NULL);
	pthread_cond_init(&g->settled, NULL);
	snprintf(g->name, sizeof(g->name), "%s", pol->sharing_group);
	g->pool = pool;
	g->replicas = pol->replicas ? pol->replicas : 1;
	g->backup = pol->backup_spill;
	if (!max_slots || max_slots > STORE_SPILL_MAX_SLOTS)
		max_slots = STORE_SPILL_MAX_SLOTS;
	snprintf(label, sizeof(label), "group:%s", g->name);
	if ((size_t)snprintf(dir, sizeof(dir), "%s/groups", state_dir) >= sizeof(dir)) {
		r = -ENAMETOOLONG;
		snprintf(err, errlen, "sharing_group '%s': state dir path too long", g->name);
	} else if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "sharing_group '%s': cannot create %s: %s", g->name, dir, strerror(-r));
	} else if ((r = share_index_init(&g->ix)) < 0) {
		snprintf(err, errlen, "sharing_group '%s': out of memory", g->name);
	} else if ((r = group_files(g, dir, err, errlen)) < 0) {
		/* err set */
	} else if ((r = spill_new(dir, g->name, max_slots, g->from_file, &g->spill)) < 0) {
		snprintf(err, errlen, "sharing_group '%s': cannot %s its spill file in %s: %s", g->name,
			 g->from_file ? "open" : "create", dir, strerror(-r));
	} else if ((r = store_new(label, pool, g->spill, NULL, &gpol, share_state_store_area(g->state), g->from_file,
				  &g->store)) < 0) {
		snprintf(err, errlen, "sharing_group '%s': cannot set up its store: %s", g->name,
			 r == -EBADMSG ? "its state file holds no slab table" : strerror(-r));
	} else {
		store_set_durability(g->store, g->replicas, g->backup);
		if (g->from_file)
			r = group_load(g, err, errlen);
	}
	if (r < 0) {
		group_free(g, g->from_file);
		return r;
	}
	*ret = g;
	return 0;
}

/* The member's slot: its own if it is one the dead pager recorded, else a new one. Under lock. */
static int member_join(struct share_group *g, struct share_member *m, char *err, size_t errlen)
{
	for (uint32_t slot = 0; slot < SHARE_STATE_MAX_MEMBERS; slot++) {
		struct share_member was;

		if (g->pending[slot] && share_state_member(g->state, slot, &was) && was.pid == m->pid &&
		    was.start_ns == m->start_ns && !strcmp(was.name, m->name)) {
			m->slot = slot;
			return 0;
		}
	}
	if (share_state_member_add(g->state, m) < 0) {
		snprintf(err, errlen, "sharing_group '%s' has %u members, the most a group can have", g->name,
			 SHARE_STATE_MAX_MEMBERS);
		return -ENOSPC;
	}
	return 0;
}

int share_group_join(const struct policy_vm *pol, struct donor_pool *pool, const char *state_dir,
		     struct share_member *m, struct share_group **ret, char *err, size_t errlen)
{
	struct share_group *g;
	int r = 0;

	pthread_mutex_lock(&registry_lock);
	for (g = groups; g; g = g->next)
		if (!strcmp(g->name, pol->sharing_group) && g->pool == pool)
			break;
	if (!g && (r = group_new(pol, pool, state_dir, &g, err, errlen)) == 0) {
		g->next = groups;
		groups = g;
	}
	if (r == 0) {
		pthread_mutex_lock(&g->lock);
		r = member_join(g, m, err, errlen);
		if (r == 0) {
			g->in[m->slot] = true;
			g->m_replicas[m->slot] = (uint8_t)(pol->replicas ? pol->replicas : 1);
			g->m_backup[m->slot] = pol->backup_spill;
			durability_update(g);
		}
		pthread_mutex_unlock(&g->lock);
	}
	if (r == 0) {
		g->members++;
		*ret = g;
	} else if (g && !g->members) {
		struct share_group **p;

		for (p = &groups; *p && *p != g; p = &(*p)->next)
			;
		if (*p)
			*p = g->next;
		group_free(g, g->npending > 0 || g->from_file);
	}
	pthread_mutex_unlock(&registry_lock);
	return r;
}

int share_group_adopt(struct share_group *g, const struct share_member *m, const uint32_t *ids, size_t n, char *err,
		      size_t errlen)
{
	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < n; i++)
		if (!share_index_valid(&g->ix, ids[i]) || share_index_entry(&g->ix, ids[i])->state != SE_READY) {
			snprintf(err, errlen, "its page map names entry %u of sharing group '%s', which the group's state "
				 "file %s does not hold", ids[i], g->name, share_state_path(g->state));
			pthread_mutex_unlock(&g->lock);
			return -EBADMSG;
		}
	/* The page maps are the truth: each location naming an entry is one reference. */
	for (size_t i = 0; i < n; i++)
		share_index_ref(&g->ix, ids[i]);
	member_settled(g, m->slot);
	pthread_mutex_unlock(&g->lock);
	return 0;
}

void share_group_leave(struct share_group *g, const struct share_member *m, bool still_named)
{
	struct share_group **p;
	bool keep;

	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	if (m->slot < SHARE_STATE_MAX_MEMBERS) {
		g->in[m->slot] = false;
		durability_update(g);
	}
	if (still_named && m->slot < SHARE_STATE_MAX_MEMBERS && !g->pending[m->slot]) {
		g->pending[m->slot] = true; /* the next pager waits for it */
		g->npending++;
	} else if (!still_named) {
		share_state_member_clear(g->state, m->slot);
		member_settled(g, m->slot);
	}
	pthread_mutex_unlock(&g->lock);
	pthread_mutex_lock(&registry_lock);
	if (--g->members) {
		pthread_mutex_unlock(&registry_lock);
		return;
	}
	for (p = &groups; *p && *p != g; p = &(*p)->next)
		;
	if (*p)
		*p = g->next;
	pthread_mutex_unlock(&registry_lock);
	keep = g->npending > 0;
	group_free(g, keep);
}

void share_group_counts(struct share_group *g, uint64_t *ret_copies, uint64_t *ret_refs)
{
	pthread_mutex_lock(&g->lock);
	*ret_copies = g->ix.live;
	*ret_refs = g->ix.refs;
	pthread_mutex_unlock(&g->lock);
}

json_t *share_stats_json(void)
{
	json_t *a = json_array();

	pthread_mutex_lock(&registry_lock);
	for (struct share_group *g = groups; g && a; g = g->next) {
		uint64_t copies, refs;
		unsigned npending;

		share_group_counts(g, &copies, &refs);
		pthread_mutex_lock(&g->lock);
		npending = g->npending;
		pthread_mutex_unlock(&g->lock);
		json_array_append_new(
			a, json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "name", g->name,
				     "members_pending", (int)npending, "remote_copies",
				     (json_int_t)atomic_load(&store_stats(g->store)->remote_copies), "members",
				     (int)g->members, "copies", (json_int_t)copies, "references", (json_int_t)refs,
				     "bytes_saved", (json_int_t)(refs > copies ? (refs - copies) * PAGE_SIZE_4K : 0), "hits",
				     (json_int_t)atomic_load(&g->hits), "stored", (json_int_t)atomic_load(&g->stored),
				     "bad_copies", (json_int_t)atomic_load(&g->bad_copies), "rereplications",
				     (json_int_t)atomic_load(&store_stats(g->store)->rereplications), "copies_lost",
				     (json_int_t)atomic_load(&store_stats(g->store)->copies_lost)));
	}
	pthread_mutex_unlock(&registry_lock);
	return a;
}

/* One group's files at start-up: deleted (slabs given back) when none of its recorded members runs. */
static int remove_stale_group(const char *gdir, const char *name, struct donor_pool *pool)
{
	struct share_state *st = NULL;
	struct dseal *seal = NULL;
	char err[512], path[600];
	unsigned alive = 0, slabs;
	int r;

	if ((r = dseal_load(gdir, name, &seal)) < 0) {
		log_warn("sharing group %s: state file kept, its key file %s/%s.key cannot be read: %s", name, gdir, name,
			 strerror(-r));
		return 0;
	}
	r = share_state_open(gdir, name, dseal_id(seal), store_state_bytes(), &st, err, sizeof(err));
	dseal_close(seal);
	if (r < 0) {
		log_warn("%s; kept for inspection (its members are refused until it is removed)", err);
		return 0;
	}
	for (uint32_t slot = 0; slot < SHARE_STATE_MAX_MEMBERS; slot++) {
		struct share_member m;

		alive += share_state_member(st, slot, &m) && member_alive(&m);
	}
	if (alive) {
		log_info("sharing group %s: %u members running; recovered when the first registers again", name, alive);
		share_state_close(st, true);
		return 0;
	}
	slabs = store_release_orphan(pool, share_state_store_area(st), store_state_bytes());
	share_state_close(st, false);
	snprintf(path, sizeof(path), "%s/%s.key", gdir, name);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s.spill", gdir, name);
	unlink(path);
	log_info("sharing group %s: every member ended while no pager ran: files deleted, %u slabs given back", name,
		 slabs);
	return 1;
}

int share_remove_stale(const char *state_dir, struct donor_pool *pool)
{
	char gdir[512];
	struct dirent *e;
	DIR *d;
	int removed = 0;

	if ((size_t)snprintf(gdir, sizeof(gdir), "%s/groups", state_dir) >= sizeof(gdir))
		return -ENAMETOOLONG;
	d = opendir(gdir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		char name[POLICY_NAME_MAX];

		if (n <= 6 || n - 6 >= sizeof(name) || strcmp(e->d_name + n - 6, ".state"))
			continue;
		memcpy(name, e->d_name, n - 6);
		name[n - 6] = '\0';
		removed += remove_stale_group(gdir, name, pool);
	}
	closedir(d);
	return removed;
}
