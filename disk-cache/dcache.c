/* SPDX-License-Identifier: MIT */
/*
 * The disk cache's store over donors (dcache.h). A directory entry i owns
 * the slots of one block in slab i / entries_per_slab; slabs are allocated
 * from the donors round-robin the first time one of their entries is
 * stored, and given up with their donor.
 *
 * Threads: any number of request threads (lookups, stores, updates, drops)
 * and one writer. One lock guards the directory, the queue and the
 * connections' bookkeeping and is never held across a donor round trip or
 * a seal. An entry is QUEUED (a plaintext copy waits in the queue), PENDING
 * (the writer sealed it into a staging buffer and submitted its writes;
 * the plaintext is kept until the donor acknowledged them) or VALID (only
 * the donor has it). Lookups of a QUEUED or PENDING block copy the
 * plaintext; lookups of a VALID one take a reader slot (buffers of their
 * own, so nothing a transport may still write into is ever the caller's),
 * submit the reads, and wait.
 *
 * Completions: whoever waits on a connection polls it for everyone
 * (leader/follower: one poller per connection at a time, the others wait
 * on a condition variable), so a lone lookup collects its own completions
 * with no hand-off to another thread. The cookie says whose a completion
 * is (reader slot or staging buffer, with a ticket so a late completion
 * of a slot's former use is ignored).
 *
 * Connections are reference counted: a lost one is marked dead, its
 * donor's blocks are forgotten at once, and the writer closes it when
 * nobody uses it any more; slots that still had requests on it are freed
 * only then (closing cancels what a transport might still write).
 */
#include "dcache.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
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
#define READERS 16			  /* lookups reading from donors at once (nbdkit's default thread count) */
#define STRIPES 4096			  /* invalidation counts, by block hash */
#define COOKIE_STORE (1ULL << 63)	  /* | ticket << 32 | slot << 16 | page */
#define DC_QUEUED (1u << 4)		  /* a plaintext copy waits in the queue */
#define DC_PENDING (1u << 5)		  /* written to the donor, not yet acknowledged */
#define RETRY_NS (5ULL * 1000000000ULL) /* a lost donor is tried again after this */
#define POLL_MS 20
#define WRITER_NICE 10
/*
 * A queued block is stored while a request waits for the image (the CPU
 * is idle then, the guest is not running on it), else after this long,
 * or at once when the queue is half full.
 */
#define DEFER_NS (20ULL * 1000000ULL)
#define ACK_BATCH_MS 5 /* the writer collects acknowledgements in batches: CPU a guest needs more */
#define IDLE_WAIT_MS 100 /* an idle writer looks at its queues this often (a queued block does not wake it) */

struct dc_item {
	uint64_t key;
	uint64_t queued_at; /* now_ns() */
	uint32_t entry;
	struct dc_item *next; /* queue order */
	uint8_t data[];
};

struct dc_entry {
	uint64_t key;
	uint32_t gen;	      /* seal version the copy was stored under */
	uint32_t next;	      /* hash chain */
	struct dc_item *item; /* QUEUED, PENDING: the plaintext */
};

struct dc_slab {
	int donor; /* -1: not allocated */
	uint32_t id;
};

struct dc_conn {
	struct dcache *dc;
	struct donor_conn *conn;
	int donor;
	unsigned refs;	      /* threads using conn now */
	bool dead, polling;   /* lost (closed once refs is 0); someone polls it */
	struct dc_conn *next; /* on the dying list */
};

struct dc_note {
	struct dc_conn *c;
	uint32_t slab; /* UINT32_MAX: the whole donor shuts down */
};

struct dc_staging {
	bool busy;
	struct dc_conn *c;
	uint32_t entry, gen, ticket;
	uint64_t key;
	unsigned left; /* completions outstanding */
	int err;
	struct dc_item *item;
	uint8_t *buf, *tags;
};

struct dc_reader {
	bool busy;
	struct dc_conn *c;
	uint32_t ticket;
	unsigned left;
	int err;
	uint8_t *buf, *tags;
	struct seal_ctx *sctx;
};

struct dc_donor {
	int idx;
	const char *url;
	struct dc_conn *cur;
	uint64_t retry_at;
};

struct dcache {
	pthread_mutex_t lock;
	pthread_cond_t done; /* completions dispatched, a slot freed */
	pthread_cond_t work; /* something for the writer */
	uint32_t block_size, ppb; /* pages per block */
	uint32_t n, eps;	  /* entries; entries per slab */
	uint32_t nslabs, nbuckets;
	struct dc_entry *e;
	uint8_t *flags;
	uint32_t *bucket;
	struct dc_slab *slabs;
	uint32_t stripe[STRIPES];
	size_t hand;
	uint32_t gen, ticket;
	unsigned rr;
	struct dc_donor donors[DCACHE_MAX_DONORS];
	unsigned n_donors;
	struct dc_conn *dying;
	struct donor_key key;
	char client_id[DONOR_CLIENT_ID_MAX + 1];
	unsigned timeout_ms;
	struct seal *seal;
	struct seal_ctx *wctx; /* the writer's */
	struct dc_staging stg[STAGING];
	struct dc_reader rd[READERS];
	struct dc_item *qhead, **qtail;
	uint64_t queue_max;
	unsigned image_busy; /* requests waiting for the image now */
	struct dcache_stats st;
	bool warned_full, warned_gen, stop, started, write_fill;
	pthread_t writer;
	/* Donor notifications arrive on the transport's thread: queued here, applied by the writer. */
	pthread_mutex_t nq_lock;
	struct dc_note *nq;
	size_t nq_len, nq_cap;
	/*
	 * Item buffers are recycled (at most the queue's bound of them): a
	 * malloc/free of a block per miss had glibc's thread arenas give the
	 * memory back and fault it in again every time.
	 */
	pthread_mutex_t free_lock;
	struct dc_item *free_items;
};

static uint64_t mix(uint64_t key)
{
	key ^= key >> 29;
	key *= 0xbf58476d1ce4e5b9ULL;
	key ^= key >> 32;
	return key;
}

static uint32_t hash_key(const struct dcache *dc, uint64_t key) { return (uint32_t)mix(key) & (dc->nbuckets - 1); }
static uint32_t *stripe_of(struct dcache *dc, uint64_t key) { return &dc->stripe[(mix(key) >> 20) % STRIPES]; }

static uint64_t deadline_after(const struct dcache *dc)
{
	/* The transport completes every request within its timeout; a margin for the rest. */
	return now_ns() + (uint64_t)dc->timeout_ms * 3000000ULL + 1000000000ULL;
}

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *m, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)ms * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_cond_timedwait(cv, m, &ts);
}

static uint32_t find(const struct dcache *dc, uint64_t key)
{
	for (uint32_t i = dc->bucket[hash_key(dc, key)]; i != NIL; i = dc->e[i].next)
		if (dc->e[i].key == key)
			return i;
	return NIL;
}

/* Removes entry i from the directory (its slots become unused; a queued copy is discarded when its turn comes). */
static void forget(struct dcache *dc, uint32_t i)
{
	uint32_t *p = &dc->bucket[hash_key(dc, dc->e[i].key)];

	if (!(dc->flags[i] & (POLICY_DC_VALID | DC_PENDING | DC_QUEUED)))
		return;
	while (*p != i)
		p = &dc->e[*p].next;
	*p = dc->e[i].next;
	dc->flags[i] = 0;
	dc->e[i].item = NULL;
	dc->st.used_bytes -= dc->block_size;
}

/* Whether the queue's first block is to be stored now (DEFER_NS). */
static bool store_due(const struct dcache *dc)
{
	return dc->qhead && (dc->image_busy || dc->st.queued_bytes * 2 > dc->queue_max ||
			     now_ns() - dc->qhead->queued_at >= DEFER_NS);
}

static void insert_queued(struct dcache *dc, uint32_t i, struct dc_item *item)
{
	uint32_t b = hash_key(dc, item->key);

	dc->e[i] = (struct dc_entry){ .key = item->key, .next = dc->bucket[b], .item = item };
	dc->bucket[b] = i;
	dc->flags[i] = DC_QUEUED;
	dc->st.used_bytes += dc->block_size;
	item->entry = i;
	item->next = NULL;
	item->queued_at = now_ns();
	*dc->qtail = item;
	dc->qtail = &item->next;
	dc->st.queued_bytes += dc->block_size;
	/*
	 * Only a block due now wakes the writer: a miss queues its block just
	 * as its answer goes out, and a wake-up then competes with the reply
	 * for the CPU. The next request that waits for the image wakes it
	 * (dcache_image_busy), else its own timeout (IDLE_WAIT_MS).
	 */
	if (store_due(dc))
		pthread_cond_signal(&dc->work);
}

static void put_item(struct dcache *dc, struct dc_item *item)
{
	if (!item)
		return;
	pthread_mutex_lock(&dc->free_lock);
	item->next = dc->free_items;
	dc->free_items = item;
	pthread_mutex_unlock(&dc->free_lock);
}

static void drop_item(struct dcache *dc, struct dc_item *item)
{
	dc->st.queued_bytes -= dc->block_size;
	put_item(dc, item);
}

/* Forgets every block in slab k and marks it unallocated. */
static void slab_gone(struct dcache *dc, uint32_t k)
{
	uint32_t end = (k + 1) * dc->eps < dc->n ? (k + 1) * dc->eps : dc->n;

	for (uint32_t i = k * dc->eps; i < end; i++)
		forget(dc, i);
	dc->slabs[k].donor = -1;
}

/* Marks c lost: its donor's blocks are misses from now on; the writer closes it once unused. */
static void conn_failed(struct dcache *dc, struct dc_conn *c, int err)
{
	struct dc_donor *d = &dc->donors[c->donor];

	if (c->dead)
		return;
	c->dead = true;
	log_warn("disk cache: donor %s lost (%s); its blocks are misses from now on", d->url, strerrordesc_np(-err));
	if (d->cur == c) {
		d->cur = NULL;
		d->retry_at = now_ns() + RETRY_NS;
	}
	dc->st.donor_failures++;
	dc->st.donors_up--;
	for (uint32_t k = 0; k < dc->nslabs; k++)
		if (dc->slabs[k].donor == c->donor)
			slab_gone(dc, k);
	c->next = dc->dying;
	dc->dying = c;
	pthread_cond_signal(&dc->work);
	pthread_cond_broadcast(&dc->done);
}

static void conn_put(struct dcache *dc, struct dc_conn *c)
{
	if (--c->refs == 0 && c->dead)
		pthread_cond_signal(&dc->work);
}

/* The connection is beyond use after these; other statuses concern one request. */
static bool conn_error(int r)
{
	return r == -ECONNRESET || r == -ETIMEDOUT || r == -ECANCELED || r == -ENOTCONN || r == -EPIPE ||
	       r == -EPROTO || r == -EBADMSG;
}

/* Hands completions to their reader slot or staging buffer; late ones of a slot's former use are ignored. */
static void dispatch(struct dcache *dc, const struct donor_completion *comp, int n)
{
	for (int k = 0; k < n; k++) {
		uint64_t ck = comp[k].cookie;
		uint32_t ticket = (uint32_t)(ck >> 32) & 0x7fffffffu, idx = (uint32_t)(ck >> 16) & 0xffffu;
		unsigned *left;
		int *err;

		if (ck & COOKIE_STORE) {
			struct dc_staging *g = &dc->stg[idx % STAGING];

			if (!g->busy || g->ticket != ticket)
				continue;
			left = &g->left;
			err = &g->err;
		} else {
			struct dc_reader *r = &dc->rd[idx % READERS];

			if (!r->busy || r->ticket != ticket)
				continue;
			left = &r->left;
			err = &r->err;
		}
		if (*left) {
			--*left;
			if (comp[k].status && !*err)
				*err = comp[k].status;
		}
	}
}

/*
 * One poll of c (waiting up to ms) for everyone, or a wait while another
 * thread polls it. Lock held (dropped meanwhile). Returns 0 or -ECONNRESET.
 */
static int poll_round(struct dcache *dc, struct dc_conn *c, int ms)
{
	struct donor_completion comp[64];
	int got;

	if (c->polling) {
		if (ms)
			timed_wait(&dc->done, &dc->lock, (unsigned)ms);
		return 0;
	}
	c->polling = true;
	pthread_mutex_unlock(&dc->lock);
	got = donor_poll_completions(c->conn, comp, ARRAY_SIZE(comp), ms);
	pthread_mutex_lock(&dc->lock);
	c->polling = false;
	if (got > 0)
		dispatch(dc, comp, got);
	pthread_cond_broadcast(&dc->done);
	return got < 0 ? -ECONNRESET : 0; /* completions may be left behind: the connection is done */
}

/* Waits until *left is 0. Lock held; the caller holds a reference on c. Returns 0 or -errno. */
static int wait_left(struct dcache *dc, struct dc_conn *c, const unsigned *left)
{
	uint64_t deadline = deadline_after(dc);

	while (*left) {
		int r = poll_round(dc, c, POLL_MS);

		if (r < 0)
			return r;
		if (*left && now_ns() > deadline)
			return -ETIMEDOUT; /* the transport broke its promise */
	}
	return 0;
}

/* Settles the stores whose completions are all in. */
static void settle(struct dcache *dc, struct dc_staging *g)
{
	uint32_t i = g->entry;
	/* The entry may have been dropped or reused meanwhile: then this copy is nobody's. */
	bool ours = (dc->flags[i] & DC_PENDING) && dc->e[i].key == g->key && dc->e[i].gen == g->gen &&
		    dc->e[i].item == g->item;

	if (g->err || g->left) {
		dc->st.store_failures++;
		if (ours)
			forget(dc, i);
	} else {
		dc->st.stores++;
		if (ours) {
			dc->flags[i] = POLICY_DC_VALID;
			dc->e[i].item = NULL;
		}
	}
	drop_item(dc, g->item);
	g->item = NULL;
	g->busy = false;
	pthread_cond_broadcast(&dc->done);
}

static void finalize(struct dcache *dc)
{
	for (unsigned k = 0; k < STAGING; k++) {
		struct dc_staging *g = &dc->stg[k];

		if (!g->busy || g->left)
			continue;
		if (g->err && conn_error(g->err))
			conn_failed(dc, g->c, g->err);
		settle(dc, g);
	}
}

static void notify_cb(struct donor_conn *conn, const struct donor_notification *n, void *opaque)
{
	struct dc_conn *c = opaque;
	struct dcache *dc = c->dc;
	size_t want = n->kind == DONOR_NOTIFY_REVOKED ? n->nslabs : 1;

	pthread_mutex_lock(&dc->nq_lock);
	if (dc->nq_len + want > dc->nq_cap) {
		size_t cap = (dc->nq_len + want) * 2;
		struct dc_note *q = realloc(dc->nq, cap * sizeof(*q));

		if (!q) {
			/* Cannot queue: treat it as the donor going away, which needs one slot at most. */
			want = 0;
			if (dc->nq_len < dc->nq_cap)
				dc->nq[dc->nq_len++] = (struct dc_note){ c, UINT32_MAX };
		} else {
			dc->nq = q;
			dc->nq_cap = cap;
		}
	}
	if (want && n->kind == DONOR_NOTIFY_REVOKED)
		for (uint32_t i = 0; i < n->nslabs; i++)
			dc->nq[dc->nq_len++] = (struct dc_note){ c, n->slabs[i] };
	else if (want)
		dc->nq[dc->nq_len++] = (struct dc_note){ c, UINT32_MAX };
	/*
	 * Not dc->lock: a thread holding it may wait for a reply this thread
	 * delivers. The writer looks at the queue every IDLE_WAIT_MS at most.
	 */
	pthread_mutex_unlock(&dc->nq_lock);
}

/* Writer, lock held (dropped meanwhile): applies notifications; revoked slabs are dropped and freed, not moved. */
static void apply_notifications(struct dcache *dc)
{
	struct dc_note *q;
	size_t len;

	pthread_mutex_lock(&dc->nq_lock);
	q = dc->nq;
	len = dc->nq_len;
	dc->nq = NULL;
	dc->nq_len = dc->nq_cap = 0;
	pthread_mutex_unlock(&dc->nq_lock);
	for (size_t j = 0; j < len; j++) {
		struct dc_conn *c = q[j].c;
		bool ours = false;

		if (c->dead)
			continue;
		if (q[j].slab == UINT32_MAX) {
			conn_failed(dc, c, -ESHUTDOWN);
			continue;
		}
		for (uint32_t k = 0; k < dc->nslabs; k++)
			if (dc->slabs[k].donor == c->donor && dc->slabs[k].id == q[j].slab) {
				slab_gone(dc, k);
				ours = true;
			}
		if (!ours)
			continue;
		/* Only the writer closes connections: c stays valid while the lock is dropped. */
		pthread_mutex_unlock(&dc->lock);
		(void)donor_free_slab(c->conn, q[j].slab);
		pthread_mutex_lock(&dc->lock);
	}
	free(q);
}

/* Connects donor d (no lock held). Returns the connection or NULL. */
static struct dc_conn *connect_donor(struct dcache *dc, struct dc_donor *d, uint64_t *ret_free)
{
	struct dc_conn *c = calloc(1, sizeof(*c));
	struct donor_connect_opts opts = { .timeout_ms = dc->timeout_ms, .notify_cb = notify_cb, .notify_opaque = c };
	uint64_t cap = 0, used = 0;
	int r;

	*ret_free = 0;
	if (!c)
		return NULL;
	c->dc = dc;
	c->donor = d->idx;
	r = donor_connect(d->url, &dc->key, dc->client_id, &opts, &c->conn);
	if (r < 0) {
		log_warn("disk cache: cannot connect to donor %s as %s: %s (retrying every %llu s)", d->url,
			 dc->client_id, strerrordesc_np(-r), (unsigned long long)(RETRY_NS / 1000000000ULL));
		free(c);
		return NULL;
	}
	/* Slabs this id still holds are a former run's blocks, which nothing can vouch for: free them. */
	if (c->conn->info.nslabs) {
		uint32_t ids[256], fl[256];
		int n;

		while ((n = donor_list_slabs(c->conn, ids, fl, ARRAY_SIZE(ids))) > 0) {
			int k = n < (int)ARRAY_SIZE(ids) ? n : (int)ARRAY_SIZE(ids);

			for (int i = 0; i < k; i++)
				if (donor_free_slab(c->conn, ids[i]) < 0)
					k = -1;
			if (k < 0 || n <= (int)ARRAY_SIZE(ids))
				break;
		}
	}
	if (donor_stats(c->conn, &cap, &used) == 0 && cap > used)
		*ret_free = cap - used;
	log_info("disk cache: donor %s connected as %s", d->url, dc->client_id);
	return c;
}

static void install(struct dcache *dc, struct dc_donor *d, struct dc_conn *c, uint64_t free_bytes)
{
	d->cur = c;
	dc->st.donor_capacity += free_bytes;
	dc->st.donors_up++;
}

/* Writer, lock held (dropped meanwhile): reconnects the donors that are due. */
static void reconnect(struct dcache *dc)
{
	for (unsigned i = 0; i < dc->n_donors && !dc->stop; i++) {
		struct dc_donor *d = &dc->donors[i];
		struct dc_conn *c;
		uint64_t fr;

		if (d->cur || now_ns() < d->retry_at)
			continue;
		d->retry_at = now_ns() + RETRY_NS;
		pthread_mutex_unlock(&dc->lock);
		c = connect_donor(dc, d, &fr);
		pthread_mutex_lock(&dc->lock);
		if (c)
			install(dc, d, c, fr);
	}
}

/* Writer, lock held (dropped meanwhile): closes lost connections nobody uses, frees what was outstanding on them. */
static void close_dying(struct dcache *dc)
{
	struct dc_conn **pp = &dc->dying;

	while (*pp) {
		struct dc_conn *c = *pp;

		if (c->refs) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		pthread_mutex_unlock(&dc->lock);
		donor_close(c->conn); /* cancels what was outstanding: nothing writes into our buffers after this */
		pthread_mutex_lock(&dc->lock);
		pthread_mutex_lock(&dc->nq_lock);
		for (size_t j = 0; j < dc->nq_len; j++)
			if (dc->nq[j].c == c)
				dc->nq[j--] = dc->nq[--dc->nq_len];
		pthread_mutex_unlock(&dc->nq_lock);
		for (unsigned k = 0; k < STAGING; k++)
			if (dc->stg[k].busy && dc->stg[k].c == c)
				settle(dc, &dc->stg[k]);
		for (unsigned k = 0; k < READERS; k++)
			if (dc->rd[k].busy && dc->rd[k].c == c)
				dc->rd[k].busy = false;
		free(c);
		pthread_cond_broadcast(&dc->done);
		pp = &dc->dying; /* the list may have changed meanwhile */
	}
}

/* Writer, lock held (dropped meanwhile): gives slab k a donor slab. Returns 0 or -errno (-ENOSPC: all full). */
static int place_slab(struct dcache *dc, uint32_t k)
{
	bool full = false;

	for (unsigned a = 0; a < dc->n_donors; a++) {
		struct dc_donor *d = &dc->donors[(dc->rr + a) % dc->n_donors];
		struct dc_conn *c = d->cur;
		uint32_t id;
		int r;

		if (!c)
			continue;
		c->refs++;
		pthread_mutex_unlock(&dc->lock);
		r = donor_alloc_slab(c->conn, &id);
		pthread_mutex_lock(&dc->lock);
		if (r == 0 && !c->dead) {
			dc->slabs[k] = (struct dc_slab){ .donor = d->idx, .id = id };
			dc->rr = (unsigned)d->idx + 1;
			conn_put(dc, c);
			return 0;
		}
		if (r < 0 && conn_error(r))
			conn_failed(dc, c, r);
		else if (r < 0)
			full = true;
		conn_put(dc, c);
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

static bool still_queued(const struct dcache *dc, const struct dc_item *item)
{
	return (dc->flags[item->entry] & DC_QUEUED) && dc->e[item->entry].item == item;
}

/* Writer, lock held (dropped meanwhile): seals the queue's first block into g and submits its writes. */
static void store_one(struct dcache *dc, struct dc_staging *g)
{
	struct dc_item *item = dc->qhead;
	uint32_t i = item->entry, k = i / dc->eps, gen, slot, slab;
	struct dc_conn *c;
	unsigned sent = 0;
	int r = 0, rf;

	dc->qhead = item->next;
	if (!dc->qhead)
		dc->qtail = &dc->qhead;
	if (!still_queued(dc, item)) {
		drop_item(dc, item); /* dropped or evicted while it waited */
		return;
	}
	if (dc->gen == UINT32_MAX) {
		/* (page, generation) is the nonce: never reuse one. */
		if (!dc->warned_gen)
			log_warn("disk cache: 2^32 stores under one key; storing no more blocks until restart");
		dc->warned_gen = true;
		r = -EOVERFLOW;
	} else if (dc->slabs[k].donor < 0) {
		r = place_slab(dc, k);
		if (!still_queued(dc, item)) {
			drop_item(dc, item);
			return;
		}
	}
	if (r < 0) {
		forget(dc, i);
		dc->st.store_failures++;
		drop_item(dc, item);
		return;
	}
	c = dc->donors[dc->slabs[k].donor].cur; /* a slab's donor is up: slabs go with their connection */
	gen = ++dc->gen;
	dc->e[i].gen = gen;
	dc->flags[i] = DC_PENDING;
	*g = (struct dc_staging){ .busy = true, .c = c, .entry = i, .gen = gen, .ticket = ++dc->ticket & 0x7fffffffu,
				  .key = item->key, .left = dc->ppb, .item = item, .buf = g->buf, .tags = g->tags };
	slot = (i % dc->eps) * dc->ppb;
	slab = dc->slabs[k].id;
	c->refs++;
	pthread_mutex_unlock(&dc->lock);
	memcpy(g->buf, item->data, dc->block_size);
	for (uint32_t p = 0; p < dc->ppb && r == 0; p++)
		r = seal_page(dc->wctx, item->key * dc->ppb + p, gen, g->buf + (size_t)p * PAGE_SIZE_4K,
			      g->tags + p * SEAL_TAG_LEN);
	for (; r == 0 && sent < dc->ppb; sent++) {
		uint64_t cookie = COOKIE_STORE | (uint64_t)g->ticket << 32 | (uint64_t)(g - dc->stg) << 16 | sent;

		r = donor_submit_write_tag(c->conn, slab, slot + sent, g->buf + (size_t)sent * PAGE_SIZE_4K,
					   g->tags + sent * SEAL_TAG_LEN, cookie);
		if (r < 0)
			break;
	}
	rf = sent ? donor_flush(c->conn) : 0;
	pthread_mutex_lock(&dc->lock);
	if (sent < dc->ppb) {
		g->left -= dc->ppb - sent;
		if (!g->err)
			g->err = r < 0 ? r : -EIO;
	}
	if (r < 0 && conn_error(r))
		conn_failed(dc, c, r); /* its stores settle when it is closed */
	else if (rf < 0 && conn_error(rf))
		conn_failed(dc, c, rf);
	conn_put(dc, c);
}

static struct dc_staging *free_staging(struct dcache *dc)
{
	for (unsigned k = 0; k < STAGING; k++)
		if (!dc->stg[k].busy)
			return &dc->stg[k];
	return NULL;
}

/* A live connection with stores to collect, or NULL. */
static struct dc_conn *stores_on(struct dcache *dc)
{
	for (unsigned k = 0; k < STAGING; k++)
		if (dc->stg[k].busy && dc->stg[k].left && !dc->stg[k].c->dead)
			return dc->stg[k].c;
	return NULL;
}

/* The writer: seals and submits queued blocks, collects their acknowledgements, and keeps the connections. */
static void *writer_main(void *arg)
{
	struct dcache *dc = arg;

	/*
	 * Caching is worth less than answering: under CPU contention the
	 * request threads (and the guest) go first; a writer that falls behind
	 * only makes the queue skip blocks.
	 */
	(void)setpriority(PRIO_PROCESS, (id_t)gettid(), WRITER_NICE);
	pthread_mutex_lock(&dc->lock);
	while (!dc->stop) {
		struct dc_staging *g;
		struct dc_conn *c;
		int r;

		apply_notifications(dc);
		close_dying(dc);
		reconnect(dc);
		finalize(dc);
		if (dc->stop)
			break;
		if (store_due(dc) && (g = free_staging(dc))) {
			store_one(dc, g);
			continue;
		}
		if ((c = stores_on(dc))) {
			/*
			 * Blocks are served from their plaintext until acknowledged: only a
			 * store waiting for a staging buffer needs them now. Else a batch
			 * every few ms, not a wakeup per page.
			 */
			bool need = store_due(dc);

			if (!need) {
				timed_wait(&dc->work, &dc->lock, ACK_BATCH_MS);
				if (store_due(dc) || !(c = stores_on(dc)))
					continue; /* a block to store first; or someone else collected them */
			}
			c->refs++;
			r = poll_round(dc, c, need ? POLL_MS : 0);
			if (r < 0)
				conn_failed(dc, c, r);
			conn_put(dc, c);
			continue;
		}
		timed_wait(&dc->work, &dc->lock, dc->qhead ? (unsigned)(DEFER_NS / 1000000ULL) : IDLE_WAIT_MS);
	}
	pthread_mutex_unlock(&dc->lock);
	return NULL;
}

/* Waits for a free reader slot (lock held). */
static struct dc_reader *take_reader(struct dcache *dc)
{
	for (;;) {
		for (unsigned k = 0; k < READERS; k++)
			if (!dc->rd[k].busy)
				return &dc->rd[k];
		timed_wait(&dc->done, &dc->lock, 100);
	}
}

int dcache_lookup(struct dcache *dc, uint64_t key, uint32_t first, uint32_t n, void *buf)
{
	struct dc_reader *rk;
	struct dc_conn *c;
	uint32_t i, gen = 0, slot, slab;
	unsigned sent = 0;
	int r = 0, rf, bad = 0, donor;

	if (first >= dc->ppb || n == 0 || n > dc->ppb - first)
		return -EINVAL;
	pthread_mutex_lock(&dc->lock);
	rk = take_reader(dc); /* taken first: waiting for one may change the directory */
	i = find(dc, key);
	if (i == NIL)
		goto miss;
	if (dc->flags[i] & (DC_QUEUED | DC_PENDING)) {
		/* Not on a donor yet (or not acknowledged): the plaintext is still here. */
		memcpy(buf, dc->e[i].item->data + (size_t)first * PAGE_SIZE_4K, (size_t)n * PAGE_SIZE_4K);
		goto hit;
	}
	donor = dc->slabs[i / dc->eps].donor;
	c = dc->donors[donor].cur;
	gen = dc->e[i].gen;
	slot = (i % dc->eps) * dc->ppb + first;
	slab = dc->slabs[i / dc->eps].id;
	*rk = (struct dc_reader){ .busy = true, .c = c, .ticket = ++dc->ticket & 0x7fffffffu, .left = n, .buf = rk->buf,
				  .tags = rk->tags, .sctx = rk->sctx };
	c->refs++;
	pthread_mutex_unlock(&dc->lock);
	for (; sent < n; sent++) {
		r = donor_submit_read_tag(c->conn, slab, slot + sent, rk->buf + (size_t)sent * PAGE_SIZE_4K,
					  rk->tags + sent * SEAL_TAG_LEN, (uint64_t)rk->ticket << 32 | (uint64_t)(rk - dc->rd) << 16 | sent);
		if (r < 0)
			break;
	}
	rf = sent ? donor_flush(c->conn) : 0;
	pthread_mutex_lock(&dc->lock);
	if (sent < n) {
		rk->left -= n - sent;
		rk->err = r;
	} else if (rf < 0)
		rk->err = rf;
	r = wait_left(dc, c, &rk->left);
	if (r < 0 || (rk->err && conn_error(rk->err))) {
		conn_failed(dc, c, r < 0 ? r : rk->err); /* forgets this block with the donor's others */
		if (!rk->left)
			rk->busy = false; /* else freed when the connection is closed */
		conn_put(dc, c);
		dc->st.drops++;
		goto miss_out;
	}
	conn_put(dc, c);
	if (rk->err) {
		rk->busy = false;
		if ((dc->flags[i] & POLICY_DC_VALID) && dc->e[i].key == key && dc->e[i].gen == gen) {
			forget(dc, i);
			dc->st.drops++;
		}
		goto miss_out;
	}
	/* The slot is ours until released: open the pages without the lock. */
	pthread_mutex_unlock(&dc->lock);
	for (uint32_t p = 0; p < n && !bad; p++)
		bad = seal_open(rk->sctx, key * dc->ppb + first + p, gen, rk->buf + (size_t)p * PAGE_SIZE_4K,
				rk->tags + p * SEAL_TAG_LEN);
	if (!bad)
		memcpy(buf, rk->buf, (size_t)n * PAGE_SIZE_4K);
	pthread_mutex_lock(&dc->lock);
	rk->busy = false;
	pthread_cond_broadcast(&dc->done);
	if ((dc->flags[i] & POLICY_DC_VALID) && dc->e[i].key == key && dc->e[i].gen == gen) {
		if (bad) {
			/* Changed, swapped or stale: this copy is not the block; the image still is. */
			/* A hostile donor must not flood the log: the first few, then every 1000th. */
			if (dc->st.integrity_failures < 10 || dc->st.integrity_failures % 1000 == 0)
				log_warn("disk cache: block %" PRIu64 " from donor %s failed to open (%s; %" PRIu64
					 " so far); read from the image",
					 key, dc->donors[donor].url, strerrordesc_np(-bad), dc->st.integrity_failures + 1);
			dc->st.integrity_failures++;
			forget(dc, i);
			goto miss;
		}
		dc->flags[i] |= POLICY_DC_REF;
	} else if (bad)
		goto miss; /* evicted and its slots reused while we read: a plain miss */
	dc->st.hits++;
	pthread_mutex_unlock(&dc->lock);
	return 0;
hit:
	dc->flags[i] |= POLICY_DC_REF;
	dc->st.hits++;
	pthread_mutex_unlock(&dc->lock);
	return 0;
miss_out:
	pthread_cond_broadcast(&dc->done);
miss:
	dc->st.misses++;
	pthread_mutex_unlock(&dc->lock);
	return -ENOENT;
}

void dcache_image_busy(struct dcache *dc, bool busy)
{
	pthread_mutex_lock(&dc->lock);
	if (busy && dc->image_busy++ == 0 && dc->qhead)
		pthread_cond_signal(&dc->work);
	else if (!busy)
		dc->image_busy--;
	pthread_mutex_unlock(&dc->lock);
}

uint32_t dcache_snapshot(struct dcache *dc, uint64_t key)
{
	uint32_t v;

	pthread_mutex_lock(&dc->lock);
	v = *stripe_of(dc, key);
	pthread_mutex_unlock(&dc->lock);
	return v;
}

static struct dc_item *new_item(struct dcache *dc, uint64_t key, const void *buf)
{
	struct dc_item *item;

	pthread_mutex_lock(&dc->free_lock);
	item = dc->free_items;
	if (item)
		dc->free_items = item->next;
	pthread_mutex_unlock(&dc->free_lock);
	if (!item)
		item = malloc(sizeof(*item) + dc->block_size);

	if (item) {
		item->key = key;
		memcpy(item->data, buf, dc->block_size);
	}
	return item;
}

void dcache_store(struct dcache *dc, uint64_t key, const void *buf, uint32_t snap)
{
	struct dc_item *item = new_item(dc, key, buf);
	uint32_t i;

	pthread_mutex_lock(&dc->lock);
	if (*stripe_of(dc, key) != snap || find(dc, key) != NIL || dc->stop) {
		/* A write came since this was read, or another reader cached the block already. */
		put_item(dc, item);
	} else if (!dc->st.donors_up) {
		dc->st.store_failures++; /* no donor to store it on: not worth a copy in the queue */
		put_item(dc, item);
	} else if (!item || dc->st.queued_bytes + dc->block_size > dc->queue_max) {
		dc->st.store_skips++; /* only a cache: the writer is behind, this block is not kept */
		put_item(dc, item);
	} else {
		i = (uint32_t)policy_dc_clock_pick(dc->flags, dc->n, &dc->hand);
		forget(dc, i);
		insert_queued(dc, i, item);
	}
	pthread_mutex_unlock(&dc->lock);
}

void dcache_update(struct dcache *dc, uint64_t key, const void *buf, uint32_t snap)
{
	struct dc_item *item = NULL;
	uint32_t *s, i;

	pthread_mutex_lock(&dc->lock);
	s = stripe_of(dc, key);
	if ((dc->write_fill || find(dc, key) != NIL) && *s == snap) {
		/* Worth a copy: made without the lock, then checked again. */
		pthread_mutex_unlock(&dc->lock);
		item = new_item(dc, key, buf);
		pthread_mutex_lock(&dc->lock);
	}
	i = find(dc, key);
	if (i != NIL) {
		forget(dc, i); /* the old copy is void from here */
		/* Another write or drop of the block since snap: which bytes the image has last is not known here. */
		if (item && *s == snap && !dc->stop && dc->st.queued_bytes + dc->block_size <= dc->queue_max) {
			insert_queued(dc, i, item);
			item = NULL;
		} else
			dc->st.drops++;
	} else if (item && *s == snap && !dc->stop) {
		/* write_fill: a block written whole is cached like one read (the swap case: written, then read back). */
		if (dc->st.queued_bytes + dc->block_size > dc->queue_max)
			dc->st.store_skips++;
		else {
			i = (uint32_t)policy_dc_clock_pick(dc->flags, dc->n, &dc->hand);
			forget(dc, i);
			insert_queued(dc, i, item);
			item = NULL;
		}
	}
	++*s;
	pthread_mutex_unlock(&dc->lock);
	put_item(dc, item);
}

void dcache_drop(struct dcache *dc, uint64_t key)
{
	uint32_t i;

	pthread_mutex_lock(&dc->lock);
	++*stripe_of(dc, key);
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
		", \"stores\": %" PRIu64 ", \"store_failures\": %" PRIu64 ", \"store_skips\": %" PRIu64
		", \"queued_bytes\": %" PRIu64 ", \"drops\": %" PRIu64 ", \"integrity_failures\": %" PRIu64
		", \"donor_failures\": %" PRIu64
		", \"donors\": %u, \"donors_up\": %u, \"donor_free_bytes_at_start\": %" PRIu64 "}\n",
		s.size, s.block_size, s.used_bytes, s.hits, s.misses, s.bytes_from_memory, s.bytes_from_disk, s.stores,
		s.store_failures, s.store_skips, s.queued_bytes, s.drops, s.integrity_failures, s.donor_failures,
		s.donors, s.donors_up, s.donor_capacity);
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
	pthread_mutex_init(&dc->free_lock, NULL);
	pthread_cond_init(&dc->done, NULL);
	pthread_cond_init(&dc->work, NULL);
	dc->qtail = &dc->qhead;
	dc->block_size = cfg->block_size;
	dc->ppb = cfg->block_size / PAGE_SIZE_4K;
	dc->n = (uint32_t)n;
	dc->eps = DONOR_SLAB_SLOTS / dc->ppb;
	dc->nslabs = (dc->n + dc->eps - 1) / dc->eps;
	for (dc->nbuckets = 1; dc->nbuckets < dc->n; dc->nbuckets <<= 1)
		;
	dc->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 2000;
	dc->queue_max = cfg->queue_bytes ? cfg->queue_bytes : DCACHE_QUEUE_DEFAULT;
	dc->write_fill = cfg->write_fill;
	snprintf(dc->client_id, sizeof(dc->client_id), "%s", cfg->client_id);
	dc->st.size = n * cfg->block_size;
	dc->st.block_size = cfg->block_size;
	dc->st.donors = cfg->n_donors;
	dc->e = calloc(dc->n, sizeof(*dc->e));
	dc->flags = calloc(dc->n, 1);
	dc->bucket = malloc(dc->nbuckets * sizeof(*dc->bucket));
	dc->slabs = malloc(dc->nslabs * sizeof(*dc->slabs));
	if (!dc->e || !dc->flags || !dc->bucket || !dc->slabs) {
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
	for (unsigned g = 0; g < READERS; g++) {
		dc->rd[g].buf = aligned_alloc(PAGE_SIZE_4K, dc->block_size);
		dc->rd[g].tags = malloc((size_t)dc->ppb * SEAL_TAG_LEN);
		if (!dc->rd[g].buf || !dc->rd[g].tags) {
			r = -ENOMEM;
			goto fail;
		}
	}
	memset(dc->bucket, 0xff, dc->nbuckets * sizeof(*dc->bucket));
	for (uint32_t s = 0; s < dc->nslabs; s++)
		dc->slabs[s].donor = -1;
	for (unsigned i = 0; i < cfg->n_donors; i++)
		dc->donors[i] = (struct dc_donor){ .idx = (int)i, .url = cfg->donors[i] };
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
		r = seal_ctx_new(dc->seal, &dc->wctx);
	for (unsigned g = 0; g < READERS && r == 0; g++)
		r = seal_ctx_new(dc->seal, &dc->rd[g].sctx);
	if (r < 0)
		goto fail;
	*ret = dc;
	return 0;
fail:
	dcache_free(dc);
	return r;
}

int dcache_start(struct dcache *dc)
{
	int r;

	for (unsigned i = 0; i < dc->n_donors; i++) {
		struct dc_donor *d = &dc->donors[i];
		uint64_t fr;
		struct dc_conn *c = connect_donor(dc, d, &fr);

		pthread_mutex_lock(&dc->lock);
		if (c)
			install(dc, d, c, fr);
		else
			d->retry_at = now_ns() + RETRY_NS;
		pthread_mutex_unlock(&dc->lock);
	}
	if (dc->st.donor_capacity < dc->st.size)
		log_warn("disk cache: size %" PRIu64 " MiB is more than the donors' free memory (%" PRIu64
			 " MiB): at most that much is cached",
			 dc->st.size >> 20, dc->st.donor_capacity >> 20);
	r = pthread_create(&dc->writer, NULL, writer_main, dc);
	if (r)
		return -r;
	dc->started = true;
	return 0;
}

void dcache_free(struct dcache *dc)
{
	struct dc_item *item;

	if (!dc)
		return;
	if (dc->started) {
		pthread_mutex_lock(&dc->lock);
		dc->stop = true;
		pthread_cond_signal(&dc->work);
		pthread_mutex_unlock(&dc->lock);
		pthread_join(dc->writer, NULL);
	}
	/* No other thread now. */
	for (unsigned i = 0; i < dc->n_donors; i++) {
		struct dc_conn *c = dc->donors[i].cur;

		if (!c)
			continue;
		/* Give the memory back now rather than after the donor's lease. */
		for (uint32_t k = 0; k < dc->nslabs; k++)
			if (dc->slabs && dc->slabs[k].donor == c->donor)
				(void)donor_free_slab(c->conn, dc->slabs[k].id);
		donor_close(c->conn);
		free(c);
	}
	while (dc->dying) {
		struct dc_conn *c = dc->dying;

		dc->dying = c->next;
		donor_close(c->conn);
		free(c);
	}
	/* Closed connections write into no buffer any more. */
	while ((item = dc->qhead)) {
		dc->qhead = item->next;
		free(item);
	}
	while ((item = dc->free_items)) {
		dc->free_items = item->next;
		free(item);
	}
	for (unsigned k = 0; k < STAGING; k++) {
		free(dc->stg[k].item);
		free(dc->stg[k].buf);
		free(dc->stg[k].tags);
	}
	for (unsigned k = 0; k < READERS; k++) {
		seal_ctx_free(dc->rd[k].sctx);
		free(dc->rd[k].buf);
		free(dc->rd[k].tags);
	}
	seal_ctx_free(dc->wctx);
	seal_free(dc->seal, false); /* no file: nothing kept */
	OPENSSL_cleanse(&dc->key, sizeof(dc->key));
	free(dc->e);
	free(dc->flags);
	free(dc->bucket);
	free(dc->slabs);
	free(dc->nq);
	pthread_cond_destroy(&dc->done);
	pthread_cond_destroy(&dc->work);
	pthread_mutex_destroy(&dc->lock);
	pthread_mutex_destroy(&dc->nq_lock);
	pthread_mutex_destroy(&dc->free_lock);
	free(dc);
}
