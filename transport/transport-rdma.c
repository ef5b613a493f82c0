/* SPDX-License-Identifier: MIT */
/*
 * rdma:// backend of the donor transport. The control channel is a tcp://
 * connection to the same address and port (authentication, slabs,
 * notifications, exactly as for TCP), plus two requests of its own: ATTACH
 * returns a one-time token that this side presents as rdma_cm private data
 * to connect an RC queue pair, and SLAB_KEY returns the address and rkey of
 * one slab's region, registered by the donor in a protection domain that
 * only this queue pair uses. Pages then move with one-sided RDMA WRITE and
 * RDMA READ between a staging ring registered once here (never the
 * caller's buffers, which may be guest RAM) and the donor's slab memory.
 *
 * Data path: submit_* copies a write into its staging slot (reads land in
 * theirs) and queues a work request; flush(), or a full batch, posts the
 * queued chain with one ibv_post_send. Only every SIGNAL_EVERY-th request
 * and the last of each post are signalled: RC completes in order, so one
 * completion retires every earlier request. poll_completions() busy-polls
 * the CQ for a short while when requests are outstanding (the fault path)
 * and otherwise sleeps until the event thread, woken by the completion
 * channel, has made progress. The event thread also expires requests past
 * their deadline and turns rdma_cm disconnects into failures.
 *
 * Failures: any error completion, a deadline passed, a disconnect or the
 * control connection dying moves the QP to the error state and completes
 * every outstanding request (-ECONNRESET, the failing one with its own
 * error, e.g. -EACCES for a remote access error); later submits return
 * -ENOTCONN and the notify callback hears SHUTDOWN once, as with TCP.
 *
 * Completions queue in the shared, preallocated ring of completion-ring.c
 * (the same as TCP's): a request takes its entry before it is queued, so
 * retiring it never allocates and never drops it; at the in-flight limit,
 * submit waits for the caller to collect (transport.h).
 *
 * Locking: one mutex guards the ring, the key table, the completion ring
 * and the state; verbs calls on the data path are made under it.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "completion-ring.h"
#include "log.h"
#include "transport-private.h"
#include "transport-rdma.h"
#include "transport.h"
#include "util.h"

#define RING 256	 /* send queue depth = staging slots */
#define SIGNAL_EVERY 16u /* selective signalling period */
#define POST_BATCH 32u	 /* queued requests that are posted without waiting for flush() */
#define TOKEN_LEN 32
#define SPIN_US_DEFAULT 500

struct wr_slot {
	uint64_t cookie, deadline;
	void *page, *tag; /* reads: where the slot's page and tag go (tag NULL: dropped) */
	uint8_t op; /* DONOR_COMP_* */
	bool raw;
};

struct slab_key {
	uint32_t slab, rkey;
	uint64_t addr;
	bool revoked;
};

struct rdma_conn {
	struct donor_conn base;
	struct donor_conn *ctl;
	donor_notify_fn notify_cb;
	void *notify_opaque;
	unsigned timeout_ms;
	uint64_t spin_ns;

	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	bool qp_created, connected;
	uint8_t *staging;
	struct ibv_mr *smr;
	int evfd, wakefd;
	pthread_t thr;
	bool thr_started;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct wr_slot slots[RING];
	struct ibv_send_wr wrs[RING];
	struct ibv_sge sges[RING];
	uint64_t head, post, tail; /* next to queue, next to post, oldest outstanding */
	unsigned since_signal;
	struct donor_cq comp; /* page completions for the caller */
	struct slab_key *keys; /* sorted by slab */
	size_t nkeys, capkeys;
	int dead; /* 0 or -errno */
	bool closing, ctl_shutdown, dead_notified;
	int raw_status;
	bool raw_done;
};

static inline struct rdma_conn *to_rdma(struct donor_conn *c)
{
	return container_of(c, struct rdma_conn, base);
}

/* ---- completions ------------------------------------------------------- */

static void signal_completions(struct rdma_conn *rc)
{
	uint64_t one = 1;

	if (write(rc->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_debug("donor rdma: eventfd write: %m");
	pthread_cond_broadcast(&rc->cond);
}

static void slot_finish(struct rdma_conn *rc, uint64_t seq, int status)
{
	struct wr_slot *s = &rc->slots[seq % RING];

	if (status == 0 && s->op == DONOR_COMP_READ) {
		const uint8_t *st = rc->staging + (seq % RING) * DONOR_SLOT_SIZE;
		memcpy(s->page, st, PAGE_SIZE_4K);
		if (s->tag)
			memcpy(s->tag, st + PAGE_SIZE_4K, DONOR_TAG_SIZE);
	}
	if (s->raw) {
		rc->raw_status = status;
		rc->raw_done = true;
		return;
	}
	/* The request took its ring entry when it was queued: this cannot fail. */
	donor_cq_push(&rc->comp, s->cookie, status, s->op);
}

static int wc_errno(enum ibv_wc_status st)
{
	switch (st) {
	case IBV_WC_REM_ACCESS_ERR:
		return -EACCES;
	case IBV_WC_RETRY_EXC_ERR:
	case IBV_WC_RNR_RETRY_EXC_ERR:
		return -ETIMEDOUT;
	case IBV_WC_REM_INV_REQ_ERR:
		return -EINVAL;
	case IBV_WC_LOC_PROT_ERR:
		return -EFAULT;
	case IBV_WC_WR_FLUSH_ERR:
		return -ECONNRESET;
	default:
		return -EIO;
	}
}

/*
 * The connection is unusable: flush the QP and fail everything outstanding
 * (bad_seq, if outstanding, with bad_err). Lock held.
 */
static void fatal_locked(struct rdma_conn *rc, int err, uint64_t bad_seq, int bad_err)
{
	struct ibv_qp_attr qa = { .qp_state = IBV_QPS_ERR };

	if (rc->dead)
		return;
	rc->dead = err;
	if (rc->qp_created)
		ibv_modify_qp(rc->id->qp, &qa, IBV_QP_STATE);
	for (uint64_t seq = rc->tail; seq < rc->head; seq++)
		slot_finish(rc, seq, seq == bad_seq ? bad_err : err);
	/* The staging slots stay untouched: nothing is queued again on a dead connection. */
	rc->tail = rc->post = rc->head;
	signal_completions(rc);
}

/* Retires what the CQ reports. Lock held. Returns how many requests finished. */
static unsigned progress_locked(struct rdma_conn *rc)
{
	struct ibv_wc wc[32];
	unsigned done = 0;
	int n;

	if (!rc->cq)
		return 0;
	n = ibv_poll_cq(rc->cq, 32, wc);
	if (n < 0) {
		fatal_locked(rc, -EIO, UINT64_MAX, 0);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		uint64_t seq = wc[i].wr_id;

		if (wc[i].status != IBV_WC_SUCCESS) {
			if (!rc->dead)
				log_warn("donor rdma: work request failed: %s",
					 ibv_wc_status_str(wc[i].status));
			fatal_locked(rc, -ECONNRESET, seq, wc_errno(wc[i].status));
			continue;
		}
		if (seq < rc->tail || seq >= rc->post)
			continue;
		/* In-order completion: this one retires every earlier unsignalled request too. */
		for (uint64_t s = rc->tail; s <= seq; s++, done++)
			slot_finish(rc, s, 0);
		rc->tail = seq + 1;
	}
	if (done)
		signal_completions(rc);
	return done;
}

/* Posts everything queued as one chain. Lock held. Returns 0 or -errno. */
static int post_locked(struct rdma_conn *rc)
{
	struct ibv_send_wr *first = NULL, *prev = NULL, *bad = NULL;
	uint64_t dl = now_ns() + (uint64_t)rc->timeout_ms * 1000000ULL;
	int r;

	if (rc->dead)
		return -ENOTCONN;
	if (rc->post == rc->head)
		return 0;
	for (uint64_t seq = rc->post; seq < rc->head; seq++) {
		struct ibv_send_wr *w = &rc->wrs[seq % RING];

		w->next = NULL;
		w->send_flags = 0;
		if (++rc->since_signal >= SIGNAL_EVERY || seq + 1 == rc->head) {
			w->send_flags = IBV_SEND_SIGNALED;
			rc->since_signal = 0;
		}
		rc->slots[seq % RING].deadline = dl;
		if (prev)
			prev->next = w;
		else
			first = w;
		prev = w;
	}
	r = ibv_post_send(rc->id->qp, first, &bad);
	rc->post = rc->head;
	if (r) {
		/* ibv_post_send returns a positive errno. */
		log_warn("donor rdma: ibv_post_send: %s", strerror(r));
		fatal_locked(rc, -ECONNRESET, bad ? bad->wr_id : UINT64_MAX, -r);
		return -ENOTCONN;
	}
	return 0;
}

static void timed_wait_ms(struct rdma_conn *rc, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += (long)ms * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&rc->cond, &rc->lock, &ts);
}

/* Gives up on the donor once the oldest posted request is past its deadline. Lock held. */
static void expire_locked(struct rdma_conn *rc)
{
	if (!rc->dead && rc->tail != rc->post && rc->slots[rc->tail % RING].deadline <= now_ns()) {
		log_warn("donor rdma: request outstanding for over %u ms; giving up on the donor",
			 rc->timeout_ms);
		fatal_locked(rc, -ETIMEDOUT, UINT64_MAX, 0);
	}
}

/* Makes room for one request in the ring. Lock held (dropped while waiting). */
static int ring_space_locked(struct rdma_conn *rc)
{
	uint64_t until = now_ns() + (uint64_t)rc->timeout_ms * 1000000ULL;

	while (rc->head - rc->tail >= RING) {
		int r = post_locked(rc);
		if (r < 0)
			return r;
		if (progress_locked(rc))
			continue;
		if (rc->dead)
			return -ENOTCONN;
		if (now_ns() > until) {
			fatal_locked(rc, -ETIMEDOUT, UINT64_MAX, 0);
			return -ETIMEDOUT;
		}
		timed_wait_ms(rc, 1);
	}
	return 0;
}

/*
 * Takes the completion-ring entry of one request. Lock held (dropped while
 * waiting for the caller to collect). Returns 0, -ENOTCONN or -EBUSY.
 */
static int comp_room_locked(struct rdma_conn *rc)
{
	uint64_t until = now_ns() + (uint64_t)rc->timeout_ms * 1000000ULL;

	while (donor_cq_reserve(&rc->comp, 1) < 0) {
		if (rc->dead)
			return -ENOTCONN;
		/* What is queued must go out: its completions may be what the caller waits for. */
		if (post_locked(rc) < 0)
			return -ENOTCONN;
		progress_locked(rc);
		if (now_ns() > until)
			return -EBUSY;
		timed_wait_ms(rc, 1);
	}
	return 0;
}

/* ---- keys --------------------------------------------------------------- */

static struct slab_key *key_find(struct rdma_conn *rc, uint32_t slab)
{
	size_t lo = 0, hi = rc->nkeys;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (rc->keys[mid].slab == slab)
			return &rc->keys[mid];
		if (rc->keys[mid].slab < slab)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int key_insert(struct rdma_conn *rc, const struct slab_key *k)
{
	struct slab_key *old = key_find(rc, k->slab);
	size_t i;

	if (old) {
		*old = *k;
		return 0;
	}
	if (rc->nkeys == rc->capkeys) {
		size_t n = rc->capkeys ? rc->capkeys * 2 : 64;
		struct slab_key *t = realloc(rc->keys, n * sizeof(*t));
		if (!t)
			return -ENOMEM;
		rc->keys = t;
		rc->capkeys = n;
	}
	for (i = 0; i < rc->nkeys && rc->keys[i].slab < k->slab; i++)
		;
	memmove(&rc->keys[i + 1], &rc->keys[i], (rc->nkeys - i) * sizeof(*k));
	rc->keys[i] = *k;
	rc->nkeys++;
	return 0;
}

static void key_remove(struct rdma_conn *rc, uint32_t slab)
{
	struct slab_key *k = key_find(rc, slab);

	if (!k)
		return;
	memmove(k, k + 1, (size_t)(&rc->keys[rc->nkeys] - (k + 1)) * sizeof(*k));
	rc->nkeys--;
}

/* Asks the donor for a slab's region and remembers it. Not under the lock. */
static int fetch_key(struct rdma_conn *rc, uint32_t slab)
{
	uint32_t le = htole32(slab), fl;
	struct slab_key k = { .slab = slab };
	struct donor_buf rep;
	int r;

	r = donor_tcp_call(rc->ctl, DONOR_OP_RDMA_SLAB_KEY, &le, 4, &rep);
	if (r < 0)
		return r;
	if (rep.len != 16) {
		donor_buf_release(&rep);
		return -EPROTO;
	}
	k.addr = donor_get_u64(rep.data);
	k.rkey = donor_get_u32(rep.data + 8);
	fl = donor_get_u32(rep.data + 12);
	k.revoked = fl & DONOR_SLAB_F_REVOKED;
	donor_buf_release(&rep);
	pthread_mutex_lock(&rc->lock);
	r = key_insert(rc, &k);
	pthread_mutex_unlock(&rc->lock);
	return r;
}

/* ---- data path ---------------------------------------------------------- */

/* Queues one request at (addr, rkey). Lock held. */
static int queue_locked(struct rdma_conn *rc, uint8_t op, uint64_t addr, uint32_t rkey, void *page,
			void *tag, uint64_t cookie, bool raw)
{
	uint64_t seq;
	unsigned i;
	int r;

	/* Raw reads (test hook) report through raw_status, never through the completion ring. */
	r = raw ? 0 : comp_room_locked(rc);
	if (r < 0)
		return r;
	r = ring_space_locked(rc);
	/* Waiting for room may have found the connection dead; nothing is queued then. */
	if (r == 0 && rc->dead)
		r = -ENOTCONN;
	if (r < 0) {
		if (!raw)
			donor_cq_unreserve(&rc->comp, 1);
		return r;
	}
	seq = rc->head;
	i = seq % RING;
	rc->slots[i] = (struct wr_slot){ .cookie = cookie, .page = page, .tag = tag, .op = op, .raw = raw };
	if (op == DONOR_COMP_WRITE) {
		uint8_t *st = rc->staging + (size_t)i * DONOR_SLOT_SIZE;
		memcpy(st, page, PAGE_SIZE_4K);
		if (tag)
			memcpy(st + PAGE_SIZE_4K, tag, DONOR_TAG_SIZE);
		else
			memset(st + PAGE_SIZE_4K, 0, DONOR_TAG_SIZE);
	}
	rc->sges[i] = (struct ibv_sge){ .addr = (uintptr_t)(rc->staging + (size_t)i * DONOR_SLOT_SIZE),
					.length = DONOR_SLOT_SIZE,
					.lkey = rc->smr->lkey };
	rc->wrs[i] = (struct ibv_send_wr){
		.wr_id = seq,
		.sg_list = &rc->sges[i],
		.num_sge = 1,
		.opcode = op == DONOR_COMP_WRITE ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ,
		.wr.rdma = { .remote_addr = addr, .rkey = rkey },
	};
	rc->head++;
	/* Accepted: should posting fail, this request completes with the error like the rest. */
	if (rc->head - rc->post >= POST_BATCH)
		post_locked(rc);
	return 0;
}

static int submit(struct rdma_conn *rc, uint8_t op, uint32_t slab, uint32_t slot, void *page, void *tag,
		  uint64_t cookie)
{
	struct slab_key *k;
	int r;

	if (slot >= DONOR_SLAB_SLOTS)
		return -ERANGE;
	pthread_mutex_lock(&rc->lock);
	k = rc->dead ? NULL : key_find(rc, slab);
	if (rc->dead)
		r = -ENOTCONN;
	else if (!k)
		r = -ENOENT;
	else if (op == DONOR_COMP_WRITE && k->revoked)
		r = -EROFS;
	else
		r = queue_locked(rc, op, k->addr + (uint64_t)slot * DONOR_SLOT_SIZE, k->rkey, page, tag,
				 cookie, false);
	pthread_mutex_unlock(&rc->lock);
	return r;
}

static int rdma_submit_write(struct donor_conn *c, uint32_t slab, uint32_t slot, const void *page,
			     const void *tag, uint64_t cookie)
{
	return submit(to_rdma(c), DONOR_COMP_WRITE, slab, slot, (void *)page, (void *)tag, cookie);
}

static int rdma_submit_read(struct donor_conn *c, uint32_t slab, uint32_t slot, void *page, void *tag,
			    uint64_t cookie)
{
	return submit(to_rdma(c), DONOR_COMP_READ, slab, slot, page, tag, cookie);
}

static int rdma_flush(struct donor_conn *c)
{
	struct rdma_conn *rc = to_rdma(c);
	int r;

	pthread_mutex_lock(&rc->lock);
	r = post_locked(rc);
	pthread_mutex_unlock(&rc->lock);
	return r;
}

static int rdma_poll_completions(struct donor_conn *c, struct donor_completion *out, unsigned max,
				 int timeout_ms)
{
	struct rdma_conn *rc = to_rdma(c);
	uint64_t start = now_ns(), until = start + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ULL;
	unsigned n = 0;
	int r = 0;

	pthread_mutex_lock(&rc->lock);
	for (;;) {
		uint64_t now;

		progress_locked(rc);
		if (donor_cq_queued(&rc->comp) > 0 || timeout_ms == 0)
			break;
		/* Nothing can ever arrive on a broken connection with nothing outstanding. */
		if (rc->dead && rc->tail == rc->head) {
			r = rc->dead;
			break;
		}
		now = now_ns();
		if (timeout_ms > 0 && now >= until)
			break;
		expire_locked(rc);
		if (rc->tail != rc->post && now - start < rc->spin_ns) {
			/* Fault path: spin on the CQ, letting the submitter in between polls. */
			pthread_mutex_unlock(&rc->lock);
			sched_yield();
			pthread_mutex_lock(&rc->lock);
			continue;
		}
		/* Idle: the event thread wakes us when the completion channel fires. */
		timed_wait_ms(rc, 20);
	}
	n = donor_cq_pop(&rc->comp, out, max);
	if (donor_cq_queued(&rc->comp) == 0) {
		uint64_t v;
		if (read(rc->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			r = r ? r : -errno;
	}
	pthread_mutex_unlock(&rc->lock);
	return n > 0 ? (int)n : r;
}

static int rdma_get_fd(struct donor_conn *c) { return to_rdma(c)->evfd; }

/* ---- control path ------------------------------------------------------- */

static int check_alive(struct rdma_conn *rc)
{
	int r;

	pthread_mutex_lock(&rc->lock);
	r = rc->dead ? -ENOTCONN : 0;
	pthread_mutex_unlock(&rc->lock);
	return r;
}

static int rdma_alloc_slab(struct donor_conn *c, uint32_t *ret_slab)
{
	struct rdma_conn *rc = to_rdma(c);
	uint32_t id;
	int r = check_alive(rc);

	if (r == 0)
		r = donor_alloc_slab(rc->ctl, &id);
	if (r < 0)
		return r;
	r = fetch_key(rc, id);
	if (r < 0) {
		/* A slab we cannot reach is no use to anyone: give it back. */
		donor_free_slab(rc->ctl, id);
		return r;
	}
	*ret_slab = id;
	return 0;
}

static int rdma_free_slab(struct donor_conn *c, uint32_t slab)
{
	struct rdma_conn *rc = to_rdma(c);
	int r = donor_free_slab(rc->ctl, slab);

	if (r == 0 || r == -ENOENT) {
		pthread_mutex_lock(&rc->lock);
		key_remove(rc, slab);
		pthread_mutex_unlock(&rc->lock);
	}
	return r;
}

static int rdma_list_slabs(struct donor_conn *c, uint32_t *ids, uint32_t *flags, size_t max)
{
	struct rdma_conn *rc = to_rdma(c);
	_cleanup_free_ uint32_t *all = calloc(DONOR_MAX_LIST_SLABS, sizeof(*all));
	_cleanup_free_ uint32_t *fl = calloc(DONOR_MAX_LIST_SLABS, sizeof(*fl));
	int n, r;

	if (!all || !fl)
		return -ENOMEM;
	n = donor_list_slabs(rc->ctl, all, fl, DONOR_MAX_LIST_SLABS);
	if (n < 0)
		return n;
	for (int i = 0; i < n && i < (int)DONOR_MAX_LIST_SLABS; i++) {
		bool known;
		pthread_mutex_lock(&rc->lock);
		known = key_find(rc, all[i]) != NULL;
		pthread_mutex_unlock(&rc->lock);
		if (!known && (r = fetch_key(rc, all[i])) < 0)
			return r;
		if ((size_t)i < max) {
			ids[i] = all[i];
			if (flags)
				flags[i] = fl[i];
		}
	}
	return n;
}

static int rdma_ping(struct donor_conn *c)
{
	struct rdma_conn *rc = to_rdma(c);
	int r = check_alive(rc);

	return r < 0 ? r : donor_ping(rc->ctl);
}

/* Notifications of the control connection, passed on as this connection's. */
static void ctl_notify(struct donor_conn *ctl, const struct donor_notification *n, void *opaque)
{
	struct rdma_conn *rc = opaque;
	bool forward = true;
	uint64_t one = 1;

	pthread_mutex_lock(&rc->lock);
	if (n->kind == DONOR_NOTIFY_REVOKED) {
		for (uint32_t i = 0; i < n->nslabs; i++) {
			struct slab_key *k = key_find(rc, n->slabs[i]);
			if (k)
				k->revoked = true;
		}
	} else if (n->kind == DONOR_NOTIFY_SHUTDOWN) {
		/* Either the donor is stopping or the control connection died: the event thread checks which. */
		rc->ctl_shutdown = true;
		/* Once per connection: the event thread may have told already. */
		forward = !rc->dead_notified;
		rc->dead_notified = true;
	}
	pthread_mutex_unlock(&rc->lock);
	if (n->kind == DONOR_NOTIFY_SHUTDOWN && write(rc->wakefd, &one, sizeof(one)) < 0)
		log_debug("donor rdma: wake: %m");
	if (forward && rc->notify_cb)
		rc->notify_cb(&rc->base, n, rc->notify_opaque);
}

static void *event_thread(void *arg)
{
	struct rdma_conn *rc = arg;

	pthread_setname_np(pthread_self(), "donor-rdma-ev");

	for (;;) {
		struct pollfd pfd[3] = { { .fd = rc->cc->fd, .events = POLLIN },
					 { .fd = rc->ch->fd, .events = POLLIN },
					 { .fd = rc->wakefd, .events = POLLIN } };
		bool tell = false, check_ctl, idle;
		struct rdma_cm_event *ev;
		uint64_t v;

		pthread_mutex_lock(&rc->lock);
		if (rc->closing) {
			pthread_mutex_unlock(&rc->lock);
			break;
		}
		/* Arm first, then poll: a completion between the two still fires the channel. */
		ibv_req_notify_cq(rc->cq, 0);
		progress_locked(rc);
		expire_locked(rc);
		/* Deadlines need a look only while requests are out; idle connections sleep longer. */
		idle = rc->tail == rc->post && !rc->ctl_shutdown;
		if (rc->dead && !rc->dead_notified) {
			rc->dead_notified = true;
			tell = true;
		}
		check_ctl = rc->ctl_shutdown && !rc->dead;
		pthread_mutex_unlock(&rc->lock);
		if (tell && rc->notify_cb) {
			/* A dead connection is, for the pager, the donor going away. */
			struct donor_notification n = { .kind = DONOR_NOTIFY_SHUTDOWN };
			rc->notify_cb(&rc->base, &n, rc->notify_opaque);
		}
		/* flush() of an empty batch only reports whether the control connection is dead. */
		if (check_ctl && donor_flush(rc->ctl) == -ENOTCONN) {
			pthread_mutex_lock(&rc->lock);
			fatal_locked(rc, -ECONNRESET, UINT64_MAX, 0);
			pthread_mutex_unlock(&rc->lock);
			continue;
		}
		if (poll(pfd, 3, idle ? 1000 : 50) <= 0)
			continue;
		if (pfd[0].revents & POLLIN) {
			struct ibv_cq *cq;
			void *ctx;
			if (ibv_get_cq_event(rc->cc, &cq, &ctx) == 0)
				ibv_ack_cq_events(cq, 1);
		}
		while ((pfd[1].revents & POLLIN) && rdma_get_cm_event(rc->ch, &ev) == 0) {
			enum rdma_cm_event_type type = ev->event;
			rdma_ack_cm_event(ev);
			if (type == RDMA_CM_EVENT_DISCONNECTED || type == RDMA_CM_EVENT_DEVICE_REMOVAL) {
				pthread_mutex_lock(&rc->lock);
				if (!rc->dead)
					log_warn("donor rdma: %s", rdma_event_str(type));
				rc->connected = false;
				fatal_locked(rc, -ECONNRESET, UINT64_MAX, 0);
				pthread_mutex_unlock(&rc->lock);
			}
		}
		if (pfd[2].revents & POLLIN && read(rc->wakefd, &v, sizeof(v)) < 0)
			log_debug("donor rdma: wake read: %m");
	}
	return NULL;
}

/* ---- test hooks ----------------------------------------------------------- */

int donor_rdma_slab_key(struct donor_conn *c, uint32_t slab, uint64_t *ret_addr, uint32_t *ret_rkey)
{
	struct rdma_conn *rc;
	struct slab_key *k;
	int r = 0;

	if (c->ops != &donor_rdma_ops)
		return -EINVAL;
	rc = to_rdma(c);
	pthread_mutex_lock(&rc->lock);
	k = key_find(rc, slab);
	if (k) {
		*ret_addr = k->addr;
		*ret_rkey = k->rkey;
	} else {
		r = -ENOENT;
	}
	pthread_mutex_unlock(&rc->lock);
	return r;
}

int donor_rdma_raw_read(struct donor_conn *c, uint64_t addr, uint32_t rkey, void *page)
{
	struct rdma_conn *rc;
	uint64_t until;
	int r;

	if (c->ops != &donor_rdma_ops)
		return -EINVAL;
	rc = to_rdma(c);
	until = now_ns() + (uint64_t)rc->timeout_ms * 2000000ULL;
	pthread_mutex_lock(&rc->lock);
	rc->raw_done = false;
	r = rc->dead ? -ENOTCONN : queue_locked(rc, DONOR_COMP_READ, addr, rkey, page, NULL, 0, true);
	if (r == 0)
		r = post_locked(rc);
	while (r == 0 && !rc->raw_done) {
		progress_locked(rc);
		if (rc->raw_done)
			break;
		if (now_ns() > until) {
			r = -ETIMEDOUT;
			break;
		}
		timed_wait_ms(rc, 5);
	}
	if (r == 0)
		r = rc->raw_status;
	pthread_mutex_unlock(&rc->lock);
	return r;
}

/* ---- setup and teardown --------------------------------------------------- */

/* Waits for the next connection event on the (blocking) channel; expects want. */
static int cm_wait(struct rdma_conn *rc, enum rdma_cm_event_type want, uint64_t deadline,
		   const char *url)
{
	struct pollfd pfd = { .fd = rc->ch->fd, .events = POLLIN };
	struct rdma_cm_event *ev;
	enum rdma_cm_event_type got;
	int status, r;

	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline) {
			log_err("donor %s: timed out waiting for %s", url, rdma_event_str(want));
			return -ETIMEDOUT;
		}
		r = poll(&pfd, 1, (int)((deadline - now) / 1000000ULL) + 1);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r > 0)
			break;
	}
	if (rdma_get_cm_event(rc->ch, &ev) < 0)
		return -errno;
	got = ev->event;
	status = ev->status;
	rdma_ack_cm_event(ev);
	if (got == want)
		return 0;
	log_err("donor %s: %s (status %d) while waiting for %s", url, rdma_event_str(got), status,
		rdma_event_str(want));
	switch (got) {
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_ROUTE_ERROR:
		return -ENETUNREACH;
	case RDMA_CM_EVENT_REJECTED:
		return -ECONNREFUSED;
	default:
		return -ECONNRESET;
	}
}

static void rdma_close(struct donor_conn *c)
{
	struct rdma_conn *rc;
	uint64_t one = 1;

	if (!c)
		return;
	rc = to_rdma(c);
	pthread_mutex_lock(&rc->lock);
	rc->closing = true;
	pthread_mutex_unlock(&rc->lock);
	if (rc->thr_started) {
		if (write(rc->wakefd, &one, sizeof(one)) < 0)
			log_debug("donor rdma: wake: %m");
		pthread_join(rc->thr, NULL);
	}
	pthread_mutex_lock(&rc->lock);
	fatal_locked(rc, -ECANCELED, UINT64_MAX, 0);
	pthread_mutex_unlock(&rc->lock);
	if (rc->id && rc->connected)
		rdma_disconnect(rc->id);
	if (rc->qp_created)
		rdma_destroy_qp(rc->id);
	if (rc->smr)
		ibv_dereg_mr(rc->smr);
	if (rc->cq)
		ibv_destroy_cq(rc->cq);
	if (rc->cc)
		ibv_destroy_comp_channel(rc->cc);
	if (rc->pd)
		ibv_dealloc_pd(rc->pd);
	if (rc->id)
		rdma_destroy_id(rc->id);
	if (rc->ch)
		rdma_destroy_event_channel(rc->ch);
	donor_close(rc->ctl);
	if (rc->evfd >= 0)
		close(rc->evfd);
	if (rc->wakefd >= 0)
		close(rc->wakefd);
	free(rc->staging);
	donor_cq_destroy(&rc->comp);
	free(rc->keys);
	pthread_mutex_destroy(&rc->lock);
	pthread_cond_destroy(&rc->cond);
	free(rc);
}

static int check_devices(const char *url)
{
	int n = 0, err;
	struct ibv_device **devs = ibv_get_device_list(&n);

	if (devs && n > 0) {
		ibv_free_device_list(devs);
		return 0;
	}
	err = devs ? ENODEV : errno;
	if (devs)
		ibv_free_device_list(devs);
	log_err("no RDMA device: cannot connect to donor %s: %s (load an RDMA driver, e.g. rdma_rxe "
		"with 'rdma link add rxe0 type rxe netdev eth0'; see ibv_devices)",
		url,
		err == ENODEV	? "no verbs device found"
		: err == ENOSYS ? "the kernel has no RDMA (verbs) support loaded"
				: strerror(err));
	return -ENODEV;
}

/* Sets up the queue pair and connects it with token. */
static int connect_qp(struct rdma_conn *rc, const char *url, const char *host, const char *port,
		      const uint8_t *token, uint64_t deadline)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	struct ibv_qp_init_attr qa = { .qp_type = IBV_QPT_RC,
				       .sq_sig_all = 0,
				       .cap = { .max_send_wr = RING, .max_recv_wr = 1, .max_send_sge = 1,
						.max_recv_sge = 1 } };
	struct rdma_conn_param cp = { .private_data = token,
				      .private_data_len = TOKEN_LEN,
				      .retry_count = 7,
				      .rnr_retry_count = 7 };
	struct ibv_device_attr da;
	int r;

	r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		log_err("donor %s: %s", url, gai_strerror(r));
		return -EHOSTUNREACH;
	}
	rc->ch = rdma_create_event_channel();
	r = rc->ch ? rdma_create_id(rc->ch, &rc->id, rc, RDMA_PS_TCP) : -1;
	if (r == 0)
		r = rdma_resolve_addr(rc->id, NULL, res->ai_addr, (int)rc->timeout_ms);
	freeaddrinfo(res);
	if (r < 0) {
		r = -errno;
		return log_err_errno(r, "donor %s: rdma_resolve_addr", url);
	}
	r = cm_wait(rc, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, url);
	if (r == 0 && !rc->id->verbs) {
		log_err("no RDMA device: donor %s is not reachable through an RDMA device", url);
		r = -ENODEV;
	}
	if (r == 0)
		r = rdma_resolve_route(rc->id, (int)rc->timeout_ms) < 0 ? -errno : 0;
	if (r == 0)
		r = cm_wait(rc, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, url);
	if (r < 0)
		return r;
	rc->pd = ibv_alloc_pd(rc->id->verbs);
	rc->cc = rc->pd ? ibv_create_comp_channel(rc->id->verbs) : NULL;
	rc->cq = rc->cc ? ibv_create_cq(rc->id->verbs, RING + 16, rc, rc->cc, 0) : NULL;
	if (!rc->cq)
		return log_err_errno(-errno, "donor %s: cannot create PD/CQ", url);
	qa.send_cq = qa.recv_cq = rc->cq;
	if (rdma_create_qp(rc->id, rc->pd, &qa) < 0)
		return log_err_errno(-errno, "donor %s: rdma_create_qp", url);
	rc->qp_created = true;
	/* Staging is the only local memory the device touches; registered once, here. */
	/* One slot (page + tag, 4112 bytes) per entry; RING slots are a whole number of pages. */
	rc->staging = aligned_alloc(PAGE_SIZE_4K, (size_t)RING * DONOR_SLOT_SIZE);
	if (!rc->staging)
		return -ENOMEM;
	memset(rc->staging, 0, (size_t)RING * DONOR_SLOT_SIZE);
	rc->smr = ibv_reg_mr(rc->pd, rc->staging, (size_t)RING * DONOR_SLOT_SIZE, IBV_ACCESS_LOCAL_WRITE);
	if (!rc->smr)
		return log_err_errno(-errno, "donor %s: ibv_reg_mr of the staging ring", url);
	if (ibv_query_device(rc->id->verbs, &da) != 0)
		return log_err_errno(-errno, "donor %s: ibv_query_device", url);
	/* RDMA READs in flight at once; the donor answers as responder. */
	cp.initiator_depth = da.max_qp_init_rd_atom < 16 ? (uint8_t)da.max_qp_init_rd_atom : 16;
	cp.responder_resources = 0;
	if (rdma_connect(rc->id, &cp) < 0)
		return log_err_errno(-errno, "donor %s: rdma_connect", url);
	r = cm_wait(rc, RDMA_CM_EVENT_ESTABLISHED, deadline, url);
	if (r < 0)
		return r;
	rc->connected = true;
	/* From here the event thread reads the channels without blocking. */
	if (fcntl(rc->ch->fd, F_SETFL, fcntl(rc->ch->fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    fcntl(rc->cc->fd, F_SETFL, fcntl(rc->cc->fd, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static int rdma_connect_url(const char *url, const struct donor_key *key, const char *client_id,
			    const struct donor_connect_opts *opts, struct donor_conn **ret_conn)
{
	struct donor_connect_opts copts = { 0 };
	_cleanup_free_ char *host = NULL, *tcp_url = NULL;
	const char *hp, *port, *spin;
	struct rdma_conn *rc;
	pthread_condattr_t ca;
	struct donor_buf rep = { 0 };
	uint8_t token[TOKEN_LEN];
	uint64_t deadline;
	int r;

	if (strncmp(url, "rdma://", 7) != 0)
		return -EINVAL;
	hp = url + 7;
	r = split_host_port(hp, &host, &port);
	if (r == -EINVAL)
		log_err("donor %s: expected rdma://ADDRESS:PORT", url);
	if (r < 0)
		return r;
	if (asprintf(&tcp_url, "tcp://%s", hp) < 0)
		return -ENOMEM;
	r = check_devices(url);
	if (r < 0)
		return r;

	rc = calloc(1, sizeof(*rc));
	if (!rc)
		return -ENOMEM;
	rc->base.ops = &donor_rdma_ops;
	rc->evfd = rc->wakefd = -1;
	rc->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : 5000;
	rc->notify_cb = opts ? opts->notify_cb : NULL;
	rc->notify_opaque = opts ? opts->notify_opaque : NULL;
	spin = getenv("UFFDVM_RDMA_SPIN_US");
	rc->spin_ns = (spin ? strtoull(spin, NULL, 10) : SPIN_US_DEFAULT) * 1000ULL;
	pthread_mutex_init(&rc->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rc->cond, &ca);
	pthread_condattr_destroy(&ca);
	r = donor_cq_init(&rc->comp, DONOR_MAX_INFLIGHT);
	rc->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	rc->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r == 0 && (rc->evfd < 0 || rc->wakefd < 0))
		r = -errno;
	deadline = now_ns() + (uint64_t)rc->timeout_ms * 1000000ULL;

	/* Control channel: the TCP protocol, authentication included, on the same address and port. */
	copts.timeout_ms = rc->timeout_ms;
	copts.notify_cb = ctl_notify;
	copts.notify_opaque = rc;
	if (r == 0)
		r = donor_tcp_ops.connect(tcp_url, key, client_id, &copts, &rc->ctl);
	if (r == 0) {
		r = donor_tcp_call(rc->ctl, DONOR_OP_RDMA_ATTACH, NULL, 0, &rep);
		if (r == -EOPNOTSUPP)
			log_err("donor %s: the donor does not serve RDMA on this port (started with tcp://?)",
				url);
		if (r == 0 && rep.len != TOKEN_LEN)
			r = -EPROTO;
		if (r == 0)
			memcpy(token, rep.data, TOKEN_LEN);
		donor_buf_release(&rep);
	}
	if (r == 0)
		r = connect_qp(rc, url, host, port, token, deadline);
	memset(token, 0, sizeof(token));
	if (r == 0) {
		rc->base.info = rc->ctl->info;
		r = -pthread_create(&rc->thr, NULL, event_thread, rc);
		rc->thr_started = r == 0;
	}
	/* A reconnecting client finds its slabs (and needs their keys) at once. */
	if (r == 0 && rc->base.info.nslabs > 0) {
		int n = rdma_list_slabs(&rc->base, NULL, NULL, 0);
		r = n < 0 ? n : 0;
	}
	if (r < 0) {
		rdma_close(&rc->base);
		return r;
	}
	*ret_conn = &rc->base;
	return 0;
}

const struct donor_transport_ops donor_rdma_ops = {
	.name = "rdma",
	.scheme = "rdma://",
	.connect = rdma_connect_url,
	.close = rdma_close,
	.alloc_slab = rdma_alloc_slab,
	.free_slab = rdma_free_slab,
	.list_slabs = rdma_list_slabs,
	.submit_write = rdma_submit_write,
	.submit_read = rdma_submit_read,
	.flush = rdma_flush,
	.poll_completions = rdma_poll_completions,
	.get_fd = rdma_get_fd,
	.ping = rdma_ping,
};
