/* SPDX-License-Identifier: MIT */
/*
 * The disk cache's store over donors (dcache.h). A directory entry i owns
 * the slots of one block in slab i / entries_per_slab; slabs are allocated
 * from the donors round-robin the first time one of their entries is
 * used, and given up with their donor. Reads are synchronous: submit the
 * pages needed, flush, wait until that many read completions arrived (the
 * transport completes every request, one way or another, within its
 * timeout). Stores are not waited for: the sealed block goes to one of
 * STAGING buffers, its writes are submitted, and the entry is PENDING (a
 * lookup of it waits for it; nothing else reads it) until its completions
 * are collected, by the next operation or by dcache_reap(). Completions of
 * both kinds share the connection and are told apart by their cookie.
 */
#include "dcache.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "disk-cache.h"
#include "donor-auth.h"
#include "log.h"
#include "seal.h"
#include "transport.h"
#include "util.h"

#define NIL UINT32_MAX
#define STAGING 16			  /* stores in flight */
#define COOKIE_STORE (1ULL << 63)	  /* | staging index << 32 | page */
#define DC_PENDING (1u << 4)		  /* written to the donor, not yet acknowledged */
#define RETRY_NS (5ULL * 1000000000ULL) /* a lost donor is tried again after this */

struct dc_entry {
	uint64_t key;
	uint32_t gen;  /* seal version the copy was stored under */
	uint32_t next; /* hash chain */
};

struct dc_slab {
	int donor; /* -1: not allocated */
	uint32_t id;
};

struct dc_revoke {
	int donor;
	uint32_t slab; /* UINT32_MAX: the whole donor shuts down */
};

struct dc_staging {
	bool busy;
	int donor;
	uint32_t entry, gen;
	uint64_t key;
	unsigned left; /* completions outstanding */
	int err;
	uint8_t *buf, *tags;
};

struct dc_donor {
	struct dcache *dc;
	int idx;
	const char *url;
	struct donor_conn *conn;
	uint64_t retry_at;
};

struct dcache {
	pthread_mutex_t lock;
	uint32_t block_size, ppb; /* pages per block */
	uint32_t n, eps;	  /* entries; entries per slab */
	uint32_t nslabs, nbuckets;
	struct dc_entry *e;
	uint8_t *flags;
	uint32_t *bucket;
	struct dc_slab *slabs;
	size_t hand;
	uint32_t gen;
	unsigned rr;
	struct dc_donor donors[DCACHE_MAX_DONORS];
	unsigned n_donors;
	struct donor_key key;
	char client_id[DONOR_CLIENT_ID_MAX + 1];
	unsigned timeout_ms;
	struct seal *seal;
	struct seal_ctx *sctx;
	uint8_t *buf;  /* one block read, opened in place */
	uint8_t *tags; /* ppb x SEAL_TAG_LEN */
	struct dc_staging stg[STAGING];
	unsigned stg_next;
	unsigned read_left; /* completions the current lookup waits for */
	int read_err;
	struct dcache_stats st;
	bool warned_full, warned_gen;
	/* Donor notifications arrive on the transport's thread: queued here, applied under lock. */
	pthread_mutex_t nq_lock;
	struct dc_revoke *nq;
	size_t nq_len, nq_cap;
};

static uint32_t hash_key(const struct dcache *dc, uint64_t key)
{
	key ^= key >> 29;
	key *= 0xbf58476d1ce4e5b9ULL;
	key ^= key >> 32;
	return (uint32_t)key & (dc->nbuckets - 1);
}

static uint32_t find(const struct dcache *dc, uint64_t key)
{
	for (uint32_t i = dc->bucket[hash_key(dc, key)]; i != NIL; i = dc->e[i].next)
		if (dc->e[i].key == key)
			return i;
	return NIL;
}

/* Removes entry i from the directory (its slots simply become unused). */
static void forget(struct dcache *dc, uint32_t i)
{
	uint32_t *p = &dc->bucket[hash_key(dc, dc->e[i].key)];

	if (!(dc->flags[i] & (POLICY_DC_VALID | DC_PENDING)))
		return;
	while (*p != i)
		p = &dc->e[*p].next;
	*p = dc->e[i].next;
	dc->flags[i] = 0;
	dc->st.used_bytes -= dc->block_size;
}

static void insert(struct dcache *dc, uint32_t i, uint64_t key, uint32_t gen)
{
	uint32_t b = hash_key(dc, key);

	dc->e[i] = (struct dc_entry){ .key = key, .gen = gen, .next = dc->bucket[b] };
	dc->bucket[b] = i;
	dc->flags[i] = DC_PENDING; /* VALID, unreferenced, once the donor acknowledged it */
	dc->st.used_bytes += dc->block_size;
}

/* Forgets every block in slab k and marks it unallocated. */
static void slab_gone(struct dcache *dc, uint32_t k)
{
	uint32_t end = (k + 1) * dc->eps < dc->n ? (k + 1) * dc->eps : dc->n;

	for (uint32_t i = k * dc->eps; i < end; i++)
		forget(dc, i);
	dc->slabs[k].donor = -1;
}

static void donor_lost(struct dcache *dc, struct dc_donor *d, int err)
{
	log_warn("disk cache: donor %s lost (%s); its blocks are misses from now on", d->url, strerrordesc_np(-err));
	donor_close(d->conn);
	d->conn = NULL;
	d->retry_at = now_ns() + RETRY_NS;
	dc->st.donor_failures++;
	dc->st.donors_up--;
	/* close() cancelled what was outstanding: those buffers are free again. */
	for (unsigned k = 0; k < STAGING; k++)
		if (dc->stg[k].busy && dc->stg[k].donor == d->idx) {
			dc->stg[k].busy = false;
			dc->st.store_failures++;
		}
	for (uint32_t k = 0; k < dc->nslabs; k++)
		if (dc->slabs[k].donor == d->idx)
			slab_gone(dc, k);
}

/* The connection is beyond use after these; other statuses concern one request. */
static bool conn_error(int r)
{
	return r == -ECONNRESET || r == -ETIMEDOUT || r == -ECANCELED || r == -ENOTCONN || r == -EPIPE ||
	       r == -EPROTO || r == -EBADMSG;
}

static void notify_cb(struct donor_conn *conn, const struct donor_notification *n, void *opaque)
{
	struct dc_donor *d = opaque;
	struct dcache *dc = d->dc;
	size_t want = n->kind == DONOR_NOTIFY_REVOKED ? n->nslabs : 1;

	pthread_mutex_lock(&dc->nq_lock);
	if (dc->nq_len + want > dc->nq_cap) {
		size_t cap = (dc->nq_len + want) * 2;
		struct dc_revoke *q = realloc(dc->nq, cap * sizeof(*q));

		if (!q) {
			/* Cannot queue: treat it as the donor going away, which needs one slot at most. */
			want = 0;
			if (dc->nq_len < dc->nq_cap)
				dc->nq[dc->nq_len++] = (struct dc_revoke){ d->idx, UINT32_MAX };
		} else {
			dc->nq = q;
			dc->nq_cap = cap;
		}
	}
	if (want && n->kind == DONOR_NOTIFY_REVOKED)
		for (uint32_t i = 0; i < n->nslabs; i++)
			dc->nq[dc->nq_len++] = (struct dc_revoke){ d->idx, n->slabs[i] };
	else if (want)
		dc->nq[dc->nq_len++] = (struct dc_revoke){ d->idx, UINT32_MAX };
	pthread_mutex_unlock(&dc->nq_lock);
}

/* Applies queued notifications: revoked slabs are dropped and freed (a cache need not move them). */
static void apply_notifications(struct dcache *dc)
{
	struct dc_revoke *q;
	size_t len;

	pthread_mutex_lock(&dc->nq_lock);
	q = dc->nq;
	len = dc->nq_len;
	dc->nq = NULL;
	dc->nq_len = dc->nq_cap = 0;
	pthread_mutex_unlock(&dc->nq_lock);
	for (size_t j = 0; j < len; j++) {
		struct dc_donor *d = &dc->donors[q[j].donor];

		if (!d->conn)
			continue;
		if (q[j].slab == UINT32_MAX) {
			donor_lost(dc, d, -ESHUTDOWN);
			continue;
		}
		for (uint32_t k = 0; k < dc->nslabs; k++)
			if (dc->slabs[k].donor == d->idx && dc->slabs[k].id == q[j].slab) {
				slab_gone(dc, k);
				(void)donor_free_slab(d->conn, q[j].slab);
			}
	}
	free(q);
}

static int connect_donor(struct dcache *dc, struct dc_donor *d)
{
	struct donor_connect_opts opts = { .timeout_ms = dc->timeout_ms, .notify_cb = notify_cb, .notify_opaque = d };
	uint64_t cap = 0, used = 0;
	int r;

	d->retry_at = now_ns() + RETRY_NS;
	r = donor_connect(d->url, &dc->key, dc->client_id, &opts, &d->conn);
	if (r < 0) {
		d->conn = NULL;
		log_warn("disk cache: cannot connect to donor %s as %s: %s (retrying every %llu s)", d->url,
			 dc->client_id, strerrordesc_np(-r), (unsigned long long)(RETRY_NS / 1000000000ULL));
		return r;
	}
	/* Slabs this id still holds are a former run's blocks, which nothing can vouch for: free them. */
	if (d->conn->info.nslabs) {
		uint32_t ids[256], fl[256];
		int n;

		while ((n = donor_list_slabs(d->conn, ids, fl, ARRAY_SIZE(ids))) > 0) {
			int k = n < (int)ARRAY_SIZE(ids) ? n : (int)ARRAY_SIZE(ids);

			for (int i = 0; i < k; i++)
				if (donor_free_slab(d->conn, ids[i]) < 0)
					k = -1;
			if (k < 0 || n <= (int)ARRAY_SIZE(ids))
				break;
		}
	}
	if (donor_stats(d->conn, &cap, &used) == 0 && cap > used)
		dc->st.donor_capacity += cap - used;
	dc->st.donors_up++;
	log_info("disk cache: donor %s connected as %s", d->url, dc->client_id);
	return 0;
}

static struct dc_donor *live_donor(struct dcache *dc, struct dc_donor *d)
{
	if (!d->conn && now_ns() >= d->retry_at)
		(void)connect_donor(dc, d);
	return d->conn ? d : NULL;
}

/* Gives slab k a donor slab. Returns 0 or -errno (-ENOSPC: no donor has room). */
static int place_slab(struct dcache *dc, uint32_t k)
{
	bool full = false;

	for (unsigned a = 0; a < dc->n_donors; a++) {
		struct dc_donor *d = live_donor(dc, &dc->donors[(dc->rr + a) % dc->n_donors]);
		uint32_t id;
		int r;

		if (!d)
			continue;
		r = donor_alloc_slab(d->conn, &id);
		if (r == 0) {
			dc->slabs[k] = (struct dc_slab){ .donor = d->idx, .id = id };
			dc->rr = (unsigned)d->idx + 1;
			return 0;
		}
		if (conn_error(r))
			donor_lost(dc, d, r);
		else
			full = true;
	}
	if (!full)
		return -ENOTCONN; /* every donor is down: said when each was lost */
	if (!dc->warned_full) {
		dc->warned_full = true;
		log_warn("disk cache: no donor has room for more blocks at %" PRIu64 " MiB cached of %" PRIu64
			 " MiB configured (cache size larger than the donors' free memory?)",
			 dc->st.used_bytes >> 20, dc->st.size >> 20);
	}
	return -ENOSPC;
}

/* Collects what d has completed, waiting up to timeout_ms for the first. Returns the count or -ECONNRESET. */
static int drain(struct dcache *dc, struct dc_donor *d, int timeout_ms)
{
	struct donor_completion c[64];
	int got = donor_poll_completions(d->conn, c, 64, timeout_ms);

	if (got < 0)
		return -ECONNRESET; /* completions may be left behind: the connection is done */
	for (int k = 0; k < got; k++) {
		if (c[k].cookie & COOKIE_STORE) {
			struct dc_staging *g = &dc->stg[(c[k].cookie >> 32) & 0xffff];

			if (g->busy && g->left) {
				g->left--;
				if (c[k].status && !g->err)
					g->err = c[k].status;
			}
		} else if (dc->read_left) {
			dc->read_left--;
			if (c[k].status && !dc->read_err)
				dc->read_err = c[k].status;
		}
	}
	return got;
}

/* Settles the stores whose completions are all in. */
static void finalize(struct dcache *dc)
{
	for (unsigned k = 0; k < STAGING; k++) {
		struct dc_staging *g = &dc->stg[k];
		uint32_t i = g->entry;
		bool ours;

		if (!g->busy || g->left)
			continue;
		g->busy = false;
		/* The entry may have been dropped or reused meanwhile: then this copy is nobody's. */
		ours = (dc->flags[i] & DC_PENDING) && dc->e[i].key == g->key && dc->e[i].gen == g->gen;
		if (g->err) {
			dc->st.store_failures++;
			if (ours)
				forget(dc, i);
			if (conn_error(g->err) && dc->donors[g->donor].conn)
				donor_lost(dc, &dc->donors[g->donor], g->err);
			continue;
		}
		dc->st.stores++;
		if (ours)
			dc->flags[i] = POLICY_DC_VALID;
	}
}

/* Collects every completion already in, on every donor with stores in flight. */
static void reap(struct dcache *dc)
{
	for (unsigned n = 0; n < dc->n_donors; n++) {
		struct dc_donor *d = &dc->donors[n];
		bool busy = false;
		int r;

		for (unsigned k = 0; k < STAGING && !busy; k++)
			busy = dc->stg[k].busy && dc->stg[k].donor == d->idx;
		if (!busy || !d->conn)
			continue;
		while ((r = drain(dc, d, 0)) > 0)
			;
		if (r < 0)
			donor_lost(dc, d, r);
	}
	finalize(dc);
}

/* Waits until staging buffer g's store is settled. */
static void wait_store(struct dcache *dc, struct dc_staging *g)
{
	uint64_t deadline = now_ns() + (uint64_t)dc->timeout_ms * 3000000ULL + 1000000000ULL;
	struct dc_donor *d = &dc->donors[g->donor];

	while (g->busy && g->left && d->conn) {
		int r = drain(dc, d, 100);

		if (r < 0 || (g->left && now_ns() > deadline)) {
			donor_lost(dc, d, r < 0 ? r : -ETIMEDOUT); /* the transport broke its promise */
			break;
		}
	}
	finalize(dc);
}

/* Reads pages [first, first+n) of entry i's block into dc->buf/tags. Returns 0 or -errno. */
static int block_read(struct dcache *dc, uint32_t i, uint32_t first, uint32_t n)
{
	struct dc_slab *s = &dc->slabs[i / dc->eps];
	struct dc_donor *d = &dc->donors[s->donor];
	uint32_t slot = (i % dc->eps) * dc->ppb + first;
	uint64_t deadline = now_ns() + (uint64_t)dc->timeout_ms * 3000000ULL + 1000000000ULL;
	unsigned sent = 0;
	int r = 0, r2;

	dc->read_left = 0;
	dc->read_err = 0;
	for (; sent < n; sent++) {
		r = donor_submit_read_tag(d->conn, s->id, slot + sent, dc->buf + (size_t)sent * PAGE_SIZE_4K,
					  dc->tags + sent * SEAL_TAG_LEN, sent);
		if (r < 0)
			break;
		dc->read_left++;
	}
	r2 = donor_flush(d->conn);
	if (r == 0)
		r = r2;
	while (dc->read_left) {
		r2 = drain(dc, d, 100);
		if (r2 < 0 || (dc->read_left && now_ns() > deadline)) {
			dc->read_left = 0;
			donor_lost(dc, d, r2 < 0 ? r2 : -ETIMEDOUT);
			finalize(dc);
			return -ECONNRESET;
		}
	}
	if (r == 0)
		r = dc->read_err;
	if (r < 0 && conn_error(r))
		donor_lost(dc, d, r);
	finalize(dc);
	return r;
}

int dcache_lookup(struct dcache *dc, uint64_t key, uint32_t first, uint32_t n, void *buf)
{
	uint32_t i;
	int r = -ENOENT;

	if (first >= dc->ppb || n == 0 || n > dc->ppb - first)
		return -EINVAL;
	pthread_mutex_lock(&dc->lock);
	apply_notifications(dc);
	reap(dc);
	i = find(dc, key);
	if (i != NIL && (dc->flags[i] & DC_PENDING)) {
		/* Stored a moment ago: its acknowledgement is close, the image is a millisecond away. */
		for (unsigned k = 0; k < STAGING; k++)
			if (dc->stg[k].busy && dc->stg[k].entry == i && dc->stg[k].key == key)
				wait_store(dc, &dc->stg[k]);
		i = find(dc, key);
	}
	if (i == NIL || !(dc->flags[i] & POLICY_DC_VALID))
		goto miss;
	r = block_read(dc, i, first, n);
	if (r < 0) {
		/* donor_lost may have forgotten it already */
		forget(dc, i);
		dc->st.drops++;
		r = -ENOENT;
		goto miss;
	}
	for (uint32_t p = 0; p < n; p++) {
		r = seal_open(dc->sctx, key * dc->ppb + first + p, dc->e[i].gen, dc->buf + (size_t)p * PAGE_SIZE_4K,
			      dc->tags + p * SEAL_TAG_LEN);
		if (r < 0) {
			/* Changed, swapped or stale: this copy is not the block; the image still is. */
			/* A hostile donor must not flood the log: the first few, then every 1000th. */
			if (dc->st.integrity_failures < 10 || dc->st.integrity_failures % 1000 == 0)
				log_warn("disk cache: block %" PRIu64 " from donor %s failed to open (%s; %" PRIu64
					 " so far); read from the image",
					 key, dc->donors[dc->slabs[i / dc->eps].donor].url, strerrordesc_np(-r),
					 dc->st.integrity_failures + 1);
			dc->st.integrity_failures++;
			forget(dc, i);
			r = -ENOENT;
			goto miss;
		}
	}
	memcpy(buf, dc->buf, (size_t)n * PAGE_SIZE_4K);
	dc->flags[i] |= POLICY_DC_REF;
	dc->st.hits++;
	pthread_mutex_unlock(&dc->lock);
	return 0;
miss:
	dc->st.misses++;
	pthread_mutex_unlock(&dc->lock);
	return -ENOENT;
}

/*
 * Seals buf into a staging buffer under a fresh generation and submits its
 * writes to entry i's slots; the entry is PENDING until they are
 * acknowledged. Returns 0 or -errno.
 */
static int put(struct dcache *dc, uint32_t i, uint64_t key, const void *buf)
{
	unsigned gi = dc->stg_next;
	struct dc_staging *g = &dc->stg[gi];
	struct dc_donor *d;
	struct dc_slab *s;
	uint32_t gen, slot;
	unsigned sent = 0;
	int r = 0;

	if (dc->gen == UINT32_MAX) {
		/* (page, generation) is the nonce: never reuse one. */
		if (!dc->warned_gen)
			log_warn("disk cache: 2^32 stores under one key; storing no more blocks until restart");
		dc->warned_gen = true;
		return -EOVERFLOW;
	}
	dc->stg_next = (gi + 1) % STAGING;
	if (g->busy)
		wait_store(dc, g);
	if (dc->slabs[i / dc->eps].donor < 0 && (r = place_slab(dc, i / dc->eps)) < 0)
		return r;
	s = &dc->slabs[i / dc->eps];
	d = &dc->donors[s->donor];
	slot = (i % dc->eps) * dc->ppb;
	gen = ++dc->gen;
	memcpy(g->buf, buf, dc->block_size);
	for (uint32_t p = 0; p < dc->ppb; p++) {
		r = seal_page(dc->sctx, key * dc->ppb + p, gen, g->buf + (size_t)p * PAGE_SIZE_4K,
			      g->tags + p * SEAL_TAG_LEN);
		if (r < 0)
			return r;
	}
	for (; sent < dc->ppb; sent++) {
		r = donor_submit_write_tag(d->conn, s->id, slot + sent, g->buf + (size_t)sent * PAGE_SIZE_4K,
					   g->tags + sent * SEAL_TAG_LEN, COOKIE_STORE | (uint64_t)gi << 32 | sent);
		if (r < 0)
			break;
	}
	if (sent == 0) {
		if (conn_error(r))
			donor_lost(dc, d, r);
		return r;
	}
	*g = (struct dc_staging){ .busy = true, .donor = d->idx, .entry = i, .gen = gen, .key = key, .left = sent,
				  .err = r, .buf = g->buf, .tags = g->tags };
	insert(dc, i, key, gen);
	r = donor_flush(d->conn);
	if (r < 0 && conn_error(r))
		donor_lost(dc, d, r); /* settles g as failed and forgets the entry with the slab */
	return 0;
}

static void store_locked(struct dcache *dc, uint64_t key, const void *buf, bool only_if_cached)
{
	uint32_t i;
	int r;

	apply_notifications(dc);
	reap(dc);
	i = find(dc, key);
	if (i == NIL && only_if_cached)
		return;
	if (i != NIL)
		forget(dc, i); /* the old copy is void from here: a failed rewrite leaves a miss */
	else
		i = (uint32_t)policy_dc_clock_pick(dc->flags, dc->n, &dc->hand);
	forget(dc, i);
	r = put(dc, i, key, buf);
	if (r < 0)
		dc->st.store_failures++; /* stores are counted when acknowledged (finalize) */
}

void dcache_reap(struct dcache *dc)
{
	pthread_mutex_lock(&dc->lock);
	apply_notifications(dc);
	reap(dc);
	pthread_mutex_unlock(&dc->lock);
}

void dcache_store(struct dcache *dc, uint64_t key, const void *buf)
{
	pthread_mutex_lock(&dc->lock);
	store_locked(dc, key, buf, false);
	pthread_mutex_unlock(&dc->lock);
}

void dcache_update(struct dcache *dc, uint64_t key, const void *buf)
{
	pthread_mutex_lock(&dc->lock);
	store_locked(dc, key, buf, true);
	pthread_mutex_unlock(&dc->lock);
}

void dcache_drop(struct dcache *dc, uint64_t key)
{
	uint32_t i;

	pthread_mutex_lock(&dc->lock);
	i = find(dc, key);
	if (i != NIL) {
		forget(dc, i);
		dc->st.drops++;
	}
	pthread_mutex_unlock(&dc->lock);
}

void dcache_count_bytes(struct dcache *dc, uint64_t from_memory, uint64_t from_disk)
{
	pthread_mutex_lock(&dc->lock);
	dc->st.bytes_from_memory += from_memory;
	dc->st.bytes_from_disk += from_disk;
	pthread_mutex_unlock(&dc->lock);
}

void dcache_get_stats(struct dcache *dc, struct dcache_stats *ret)
{
	pthread_mutex_lock(&dc->lock);
	*ret = dc->st;
	pthread_mutex_unlock(&dc->lock);
}

int dcache_write_stats(struct dcache *dc, const char *path)
{
	struct dcache_stats s;
	char tmp[4096];
	FILE *f;
	int r = 0;

	dcache_get_stats(dc, &s);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f,
		"{\"size\": %" PRIu64 ", \"block_size\": %" PRIu64 ", \"used_bytes\": %" PRIu64 ", \"hits\": %" PRIu64
		", \"misses\": %" PRIu64 ", \"bytes_from_memory\": %" PRIu64 ", \"bytes_from_disk\": %" PRIu64
		", \"stores\": %" PRIu64 ", \"store_failures\": %" PRIu64 ", \"drops\": %" PRIu64
		", \"integrity_failures\": %" PRIu64 ", \"donor_failures\": %" PRIu64
		", \"donors\": %u, \"donors_up\": %u, \"donor_free_bytes_at_start\": %" PRIu64 "}\n",
		s.size, s.block_size, s.used_bytes, s.hits, s.misses, s.bytes_from_memory, s.bytes_from_disk, s.stores,
		s.store_failures, s.drops, s.integrity_failures, s.donor_failures, s.donors, s.donors_up,
		s.donor_capacity);
	if (fflush(f) != 0 || ferror(f))
		r = -EIO;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

uint32_t dcache_block_size(const struct dcache *dc) { return dc->block_size; }

int dcache_new(const struct dcache_config *cfg, struct dcache **ret)
{
	uint8_t k[SEAL_KEY_LEN], id[SEAL_ID_LEN];
	struct dcache *dc;
	uint64_t n;
	int r;

	if (cfg->block_size < DCACHE_BLOCK_MIN || cfg->block_size > DCACHE_BLOCK_MAX ||
	    (cfg->block_size & (cfg->block_size - 1))) {
		log_err("disk cache: block size %u is not a power of two from 4K to 1M", cfg->block_size);
		return -EINVAL;
	}
	n = policy_dc_entries(cfg->size, cfg->block_size);
	if (n == 0 || n >= NIL / 2) {
		log_err("disk cache: size %" PRIu64 " holds %" PRIu64 " blocks of %u (allowed: 1 to 2^31)", cfg->size,
			n, cfg->block_size);
		return -EINVAL;
	}
	if (cfg->n_donors == 0 || cfg->n_donors > DCACHE_MAX_DONORS) {
		log_err("disk cache: %u donors given (allowed: 1..%d)", cfg->n_donors, DCACHE_MAX_DONORS);
		return -EINVAL;
	}
	if (!cfg->client_id || !donor_client_id_valid(cfg->client_id, strlen(cfg->client_id))) {
		log_err("disk cache: client id '%s' is invalid (allowed: 1..64 characters of A-Z a-z 0-9 . _ : @ -)",
			cfg->client_id ? cfg->client_id : "");
		return -EINVAL;
	}
	dc = calloc(1, sizeof(*dc));
	if (!dc)
		return -ENOMEM;
	pthread_mutex_init(&dc->lock, NULL);
	pthread_mutex_init(&dc->nq_lock, NULL);
	dc->block_size = cfg->block_size;
	dc->ppb = cfg->block_size / PAGE_SIZE_4K;
	dc->n = (uint32_t)n;
	dc->eps = DONOR_SLAB_SLOTS / dc->ppb;
	dc->nslabs = (dc->n + dc->eps - 1) / dc->eps;
	for (dc->nbuckets = 1; dc->nbuckets < dc->n; dc->nbuckets <<= 1)
		;
	dc->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 2000;
	snprintf(dc->client_id, sizeof(dc->client_id), "%s", cfg->client_id);
	dc->st.size = n * cfg->block_size;
	dc->st.block_size = cfg->block_size;
	dc->st.donors = cfg->n_donors;
	dc->e = calloc(dc->n, sizeof(*dc->e));
	dc->flags = calloc(dc->n, 1);
	dc->bucket = malloc(dc->nbuckets * sizeof(*dc->bucket));
	dc->slabs = malloc(dc->nslabs * sizeof(*dc->slabs));
	dc->buf = aligned_alloc(PAGE_SIZE_4K, dc->block_size);
	dc->tags = malloc((size_t)dc->ppb * SEAL_TAG_LEN);
	if (!dc->e || !dc->flags || !dc->bucket || !dc->slabs || !dc->buf || !dc->tags) {
		r = -ENOMEM;
		goto fail;
	}
	for (unsigned g = 0; g < STAGING; g++) {
		dc->stg[g].buf = aligned_alloc(PAGE_SIZE_4K, dc->block_size);
		dc->stg[g].tags = malloc((size_t)dc->ppb * SEAL_TAG_LEN);
		if (!dc->stg[g].buf || !dc->stg[g].tags) {
			r = -ENOMEM;
			goto fail;
		}
	}
	memset(dc->bucket, 0xff, dc->nbuckets * sizeof(*dc->bucket));
	for (uint32_t s = 0; s < dc->nslabs; s++)
		dc->slabs[s].donor = -1;
	for (unsigned i = 0; i < cfg->n_donors; i++)
		dc->donors[i] = (struct dc_donor){ .dc = dc, .idx = (int)i, .url = cfg->donors[i] };
	dc->n_donors = cfg->n_donors;
	if (cfg->key_file && cfg->key_file[0]) {
		r = donor_key_load(cfg->key_file, &dc->key);
		if (r < 0)
			goto fail;
	}
	/* A key of this process's own: no copy is readable by anyone else, or after a restart. */
	if (RAND_bytes(k, sizeof(k)) != 1 || RAND_bytes(id, sizeof(id)) != 1) {
		r = -EIO;
		goto fail;
	}
	r = seal_new_from_key(k, id, &dc->seal);
	OPENSSL_cleanse(k, sizeof(k));
	if (r == 0)
		r = seal_ctx_new(dc->seal, &dc->sctx);
	if (r < 0)
		goto fail;
	*ret = dc;
	return 0;
fail:
	dcache_free(dc);
	return r;
}

void dcache_start(struct dcache *dc)
{
	pthread_mutex_lock(&dc->lock);
	for (unsigned i = 0; i < dc->n_donors; i++)
		(void)connect_donor(dc, &dc->donors[i]);
	if (dc->st.donor_capacity < dc->st.size)
		log_warn("disk cache: size %" PRIu64 " MiB is more than the donors' free memory (%" PRIu64
			 " MiB): at most that much is cached",
			 dc->st.size >> 20, dc->st.donor_capacity >> 20);
	pthread_mutex_unlock(&dc->lock);
}

void dcache_free(struct dcache *dc)
{
	if (!dc)
		return;
	for (unsigned i = 0; i < dc->n_donors; i++) {
		struct dc_donor *d = &dc->donors[i];

		if (!d->conn)
			continue;
		/* Give the memory back now rather than after the donor's lease. */
		for (uint32_t k = 0; k < dc->nslabs; k++)
			if (dc->slabs[k].donor == d->idx)
				(void)donor_free_slab(d->conn, dc->slabs[k].id);
		donor_close(d->conn);
	}
	/* Closed connections write into no staging buffer any more. */
	for (unsigned k = 0; k < STAGING; k++) {
		free(dc->stg[k].buf);
		free(dc->stg[k].tags);
	}
	seal_ctx_free(dc->sctx);
	seal_free(dc->seal, false); /* no file: nothing kept */
	OPENSSL_cleanse(&dc->key, sizeof(dc->key));
	free(dc->e);
	free(dc->flags);
	free(dc->bucket);
	free(dc->slabs);
	free(dc->buf);
	free(dc->tags);
	free(dc->nq);
	pthread_mutex_destroy(&dc->lock);
	pthread_mutex_destroy(&dc->nq_lock);
	free(dc);
}
