/* SPDX-License-Identifier: MIT */
/*
 * TCP backend of the donor transport. Submissions are appended to a batch
 * buffer (consecutive writes to one slab share a WRITE_PAGES frame, reads
 * share a READ_PAGES frame, up to DONOR_MAX_BATCH pages) and sent by flush()
 * with blocking sends bounded by SO_SNDTIMEO. Written pages are not copied
 * into the batch: it holds headers and slot numbers, and flush() gathers
 * the caller's pages in place with sendmsg() (the transport contract keeps
 * them valid until their completion). A receiver thread matches replies to
 * outstanding requests by id, copies read pages out, and either hands each
 * completion to the caller's complete_cb right away (the pager's fault
 * path: no completer thread in between) or queues it and signals an
 * eventfd; it also expires requests older than the timeout and fails
 * everything when the connection breaks, so no caller ever waits on a dead
 * donor. It blocks in recv (SO_RCVTIMEO 50 ms bounds each wait so the
 * expiry scan runs): one syscall per wake-up.
 *
 * Everything after the TCP connect runs in TLS 1.3 (proto/donor-tls.h):
 * flush() gathers the batch and its pages into one plaintext buffer,
 * encrypts it into records and sends the ciphertext; the receiver feeds
 * what recv returns to the TLS layer and parses the plaintext it yields.
 * Both buffers are allocated at connect time, so neither direction
 * allocates per page. A record that fails authentication (tampering on
 * the way) breaks the connection like a framing error: nothing from it is
 * ever delivered.
 *
 * Completions queue in the shared, preallocated ring of completion-ring.c:
 * each page takes its entry at submit time, so the receiver never has to
 * allocate to complete a request and none is ever dropped; at the
 * in-flight limit, submit waits for the caller to collect (transport.h).
 *
 * Locks: send_lock serialises the batch and socket writes; lock guards the
 * outstanding list, completion ring and connection state. Order:
 * send_lock before lock. The receiver thread takes lock only.
 */
#include <endian.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <unistd.h>

#include "donor-auth.h"
#include "donor-tls.h"
#include "completion-ring.h"
#include "log.h"
#include "transport-private.h"
#include "transport.h"
#include "util.h"

/* Pages gathered by one flush; submit() flushes before more would be queued. */
#define TCP_MAX_SEGS (2 * DONOR_MAX_BATCH)
/* Plaintext gathered per encryption and ciphertext per send/recv: both sizes are only a tuning. */
#define TCP_PLAIN_CAP ((size_t)DONOR_HDR_LEN + DONOR_MAX_PAYLOAD)
#define TCP_CIPHER_CAP ((size_t)64 << 10)
/* The receiver compacts its plaintext buffer only when less than this is free behind the data. */
#define TCP_RX_SLACK ((size_t)32 << 10)

struct pend {
	TAILQ_ENTRY(pend) link; /* outstanding: in tcp_conn.pending; spare: in tcp_conn.spare */
	uint64_t req_id, deadline;
	uint8_t op;
	bool sent, sync, done;
	int status;
	unsigned n;
	uint64_t cookies[DONOR_MAX_BATCH];
	void *pages[DONOR_MAX_BATCH];
	void *tags[DONOR_MAX_BATCH]; /* reads: where each slot's tag goes, NULL = dropped */
	struct donor_buf reply; /* sync requests: payload of the reply */
};

struct tcp_conn {
	struct donor_conn base;
	int fd, evfd;
	/* TLS state; tls_lock serialises its calls (the sender and the receiver both use it, briefly). */
	struct donor_tls *tls;
	pthread_mutex_t tls_lock;
	uint8_t *plain, *cipher; /* sender's buffers (send_lock), TCP_PLAIN_CAP and TCP_CIPHER_CAP */
	unsigned timeout_ms;
	donor_notify_fn notify_cb;
	void *notify_opaque;
	donor_complete_fn complete_cb;
	void *complete_opaque;
	pthread_t thr;
	bool thr_started;

	pthread_mutex_t send_lock;
	struct donor_buf batch;
	size_t open_off;
	/* Pages to send in place: page i goes right after batch byte segs[i].off. */
	struct tcp_seg {
		size_t off;
		const void *page, *tag;
	} segs[TCP_MAX_SEGS];
	unsigned nsegs;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	TAILQ_HEAD(pend_list, pend) pending; /* outstanding requests, oldest first */
	TAILQ_HEAD(, pend) spare;	     /* finished requests kept for reuse */
	struct pend *open;	    /* the request the batch's open frame belongs to */
	struct donor_cq cq;
	unsigned room_waiters; /* submitters waiting for the caller to collect completions */
	uint64_t next_id;
	int dead; /* 0 or -errno */
	bool closing;
};

static inline struct tcp_conn *to_tcp(struct donor_conn *c) { return container_of(c, struct tcp_conn, base); }

static uint64_t deadline_after(unsigned ms) { return now_ns() + (uint64_t)ms * 1000000ULL; }

/* An absolute CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait on cond. */
static void cond_deadline(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Called with lock held. */
static struct pend *pend_new(struct tcp_conn *t, uint8_t op)
{
	struct pend *p = TAILQ_FIRST(&t->spare);

	if (p)
		TAILQ_REMOVE(&t->spare, p, link);
	else if (!(p = calloc(1, sizeof(*p))))
		return NULL;
	memset(p, 0, offsetof(struct pend, cookies));
	donor_buf_init(&p->reply);
	p->op = op;
	p->req_id = ++t->next_id;
	TAILQ_INSERT_TAIL(&t->pending, p, link);
	return p;
}

static void pend_unlink(struct tcp_conn *t, struct pend *p)
{
	TAILQ_REMOVE(&t->pending, p, link);
	if (t->open == p)
		t->open = NULL;
}

static void pend_put(struct tcp_conn *t, struct pend *p)
{
	donor_buf_release(&p->reply);
	TAILQ_INSERT_HEAD(&t->spare, p, link);
}

/* After completions were collected (lock held): submitters waiting for room may go on. */
static void room_freed(struct tcp_conn *t)
{
	if (t->room_waiters)
		pthread_cond_broadcast(&t->cond);
}

/* Completes p with status (lock held); reads copy their pages from payload first. */
static void pend_finish(struct tcp_conn *t, struct pend *p, int status, const uint8_t *payload,
			size_t len)
{
	pend_unlink(t, p);
	if (p->sync) {
		p->status = status;
		if (status == 0 && len)
			donor_buf_put(&p->reply, payload, len);
		p->done = true;
		/* The waiter owns p from here on. */
		pthread_cond_broadcast(&t->cond);
		return;
	}
	if (status == 0 && p->op == DONOR_OP_READ_PAGES) {
		if (len != (size_t)p->n * DONOR_SLOT_SIZE)
			status = -EBADMSG;
		else
			for (unsigned i = 0; i < p->n; i++) {
				const uint8_t *slot = payload + (size_t)i * DONOR_SLOT_SIZE;
				memcpy(p->pages[i], slot, PAGE_SIZE_4K);
				if (p->tags[i])
					memcpy(p->tags[i], slot + PAGE_SIZE_4K, DONOR_TAG_SIZE);
			}
	} else if (status == 0 && len != 0) {
		status = -EBADMSG;
	}
	/* Each page took its ring entry when it was submitted: these pushes cannot fail. */
	for (unsigned i = 0; i < p->n; i++)
		donor_cq_push(&t->cq, p->cookies[i], status,
			      p->op == DONOR_OP_READ_PAGES ? DONOR_COMP_READ : DONOR_COMP_WRITE);
	pend_put(t, p);
	/* With a callback the receiver delivers; waking a poller would cost a context switch per reply. */
	if (!t->complete_cb)
		pthread_cond_broadcast(&t->cond);
}

/* Receiver thread, with complete_cb: hands queued completions over, outside the lock. */
static void deliver(struct tcp_conn *t)
{
	struct donor_completion out[64];
	unsigned n;

	do {
		pthread_mutex_lock(&t->lock);
		n = donor_cq_pop(&t->cq, out, ARRAY_SIZE(out));
		if (n)
			room_freed(t);
		pthread_mutex_unlock(&t->lock);
		for (unsigned i = 0; i < n; i++)
			t->complete_cb(&t->base, &out[i], t->complete_opaque);
	} while (n == ARRAY_SIZE(out));
}

static void signal_completions(struct tcp_conn *t)
{
	uint64_t one = 1;

	if (write(t->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_debug("donor tcp: eventfd write: %m");
}

/* Marks the connection broken and fails every request (lock held). */
static void fail_all(struct tcp_conn *t, int err)
{
	struct pend *p;

	if (!t->dead)
		t->dead = err;
	while ((p = TAILQ_FIRST(&t->pending)))
		pend_finish(t, p, err, NULL, 0);
	t->open = NULL;
	/* Submitters waiting for room give up on a dead connection. */
	pthread_cond_broadcast(&t->cond);
}

static int send_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* SO_SNDTIMEO expired: the donor stopped reading. */
			return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Encrypts len bytes of plaintext and sends the records (send_lock held).
 * tls_lock is held only around the TLS calls, never across a send: the
 * receiver must keep decrypting while a send waits for the donor to read.
 */
static int tls_send(struct tcp_conn *t, const uint8_t *p, size_t len)
{
	for (;;) {
		size_t n;
		int w = 0, r;

		pthread_mutex_lock(&t->tls_lock);
		/* A send's worth of records, not a send per record (a partial write ends after each). */
		while (len && donor_tls_net_pending(t->tls) < TCP_CIPHER_CAP) {
			w = donor_tls_write(t->tls, p, len);
			if (w <= 0)
				break;
			p += w;
			len -= (size_t)w;
		}
		n = w < 0 ? 0 : donor_tls_net_out(t->tls, t->cipher, TCP_CIPHER_CAP);
		pthread_mutex_unlock(&t->tls_lock);
		if (w < 0)
			return w;
		if (n == 0 && len == 0)
			return 0;
		r = send_all(t->fd, t->cipher, n);
		if (r < 0)
			return r;
	}
}

/* Sends the batch with its pages gathered into one plaintext buffer (send_lock held). */
static int send_batch(struct tcp_conn *t)
{
	static const uint8_t zero_tag[DONOR_TAG_SIZE];
	struct iovec iov[3 * TCP_MAX_SEGS + 1];
	unsigned niov = 0;
	size_t prev = 0, fill = 0;

	for (unsigned i = 0; i < t->nsegs; i++) {
		if (t->segs[i].off > prev)
			iov[niov++] = (struct iovec){ t->batch.data + prev, t->segs[i].off - prev };
		iov[niov++] = (struct iovec){ (void *)t->segs[i].page, PAGE_SIZE_4K };
		iov[niov++] = (struct iovec){ (void *)(t->segs[i].tag ? t->segs[i].tag : zero_tag), DONOR_TAG_SIZE };
		prev = t->segs[i].off;
	}
	if (t->batch.len > prev)
		iov[niov++] = (struct iovec){ t->batch.data + prev, t->batch.len - prev };
	/* One gathered buffer makes full-size records; a record per piece would multiply their cost. */
	for (unsigned i = 0; i < niov; i++) {
		const uint8_t *src = iov[i].iov_base;
		size_t left = iov[i].iov_len;
		while (left > 0) {
			size_t k = TCP_PLAIN_CAP - fill < left ? TCP_PLAIN_CAP - fill : left;
			int r;
			memcpy(t->plain + fill, src, k);
			fill += k;
			src += k;
			left -= k;
			if (fill == TCP_PLAIN_CAP) {
				r = tls_send(t, t->plain, fill);
				if (r < 0)
					return r;
				fill = 0;
			}
		}
	}
	return fill ? tls_send(t, t->plain, fill) : 0;
}

/* Sends the batch (send_lock held). */
static int flush_locked(struct tcp_conn *t)
{
	uint64_t dl = deadline_after(t->timeout_ms);
	int r;

	pthread_mutex_lock(&t->lock);
	r = t->dead;
	t->open = NULL;
	/* Deadlines start when requests leave, so batching time is not charged. */
	for (struct pend *p = TAILQ_LAST(&t->pending, pend_list); p && !p->sent; p = TAILQ_PREV(p, pend_list, link)) {
		p->sent = true;
		p->deadline = dl;
	}
	pthread_mutex_unlock(&t->lock);
	if (r < 0) {
		t->batch.len = 0;
		t->nsegs = 0;
		return -ENOTCONN;
	}
	if (t->batch.len == 0)
		return 0;
	r = send_batch(t);
	t->batch.len = 0;
	t->nsegs = 0;
	if (r < 0) {
		pthread_mutex_lock(&t->lock);
		fail_all(t, r);
		pthread_mutex_unlock(&t->lock);
		signal_completions(t);
		shutdown(t->fd, SHUT_RDWR);
	}
	return r;
}

static int tcp_flush(struct donor_conn *c)
{
	struct tcp_conn *t = to_tcp(c);
	int r;

	pthread_mutex_lock(&t->send_lock);
	r = flush_locked(t);
	pthread_mutex_unlock(&t->send_lock);
	return r;
}

/*
 * Adds a page to the open WRITE_PAGES frame by reference: its slot number
 * goes into the batch, the page is gathered at flush time; the frame's
 * count and length cover it already (send_lock held).
 */
static int write_add_ref(struct tcp_conn *t, uint32_t slot, const void *page, const void *tag)
{
	uint8_t *h;
	uint32_t n;
	int r;

	if (t->nsegs >= TCP_MAX_SEGS)
		return -E2BIG;
	n = donor_frame_count(&t->batch, t->open_off);
	if (n >= DONOR_MAX_BATCH)
		return -E2BIG;
	r = donor_buf_put_u32(&t->batch, slot);
	if (r < 0)
		return r;
	t->segs[t->nsegs++] = (struct tcp_seg){ .off = t->batch.len, .page = page, .tag = tag };
	h = t->batch.data + t->open_off;
	donor_set_u32(h + DONOR_HDR_LEN + 4, n + 1);
	donor_set_u32(h + 20, donor_get_u32(h + 20) + 4 + DONOR_SLOT_SIZE);
	return 0;
}

/*
 * Takes the ring entry of one page request (send_lock and lock held; lock
 * is dropped while flushing and waiting). At the in-flight limit, what is
 * batched is sent first, since its replies may be what the caller waits
 * for, then the caller gets the connection's timeout to collect. Returns 0,
 * -ENOTCONN or -EBUSY.
 */
static int take_room(struct tcp_conn *t)
{
	struct timespec until;
	bool flushed = false;

	while (!t->dead && donor_cq_reserve(&t->cq, 1) < 0) {
		if (!flushed) {
			pthread_mutex_unlock(&t->lock);
			flush_locked(t);
			pthread_mutex_lock(&t->lock);
			flushed = true;
			cond_deadline(&until, t->timeout_ms);
			continue;
		}
		t->room_waiters++;
		if (pthread_cond_timedwait(&t->cond, &t->lock, &until) == ETIMEDOUT && !t->dead &&
		    donor_cq_room(&t->cq) == 0) {
			t->room_waiters--;
			return -EBUSY;
		}
		t->room_waiters--;
	}
	return t->dead ? -ENOTCONN : 0;
}

static int submit(struct tcp_conn *t, uint8_t op, uint32_t slab, uint32_t slot, void *page, void *tag,
		  uint64_t cookie)
{
	struct pend *p;
	int r = 0;

	if (slot >= DONOR_SLAB_SLOTS)
		return -ERANGE;
	pthread_mutex_lock(&t->send_lock);
	pthread_mutex_lock(&t->lock);
	r = take_room(t);
	if (r < 0) {
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_unlock(&t->send_lock);
		return r;
	}
	p = t->open;
	if (p && (p->op != op || p->n >= DONOR_MAX_BATCH ||
		  (op == DONOR_OP_WRITE_PAGES && donor_get_u32(t->batch.data + t->open_off + DONOR_HDR_LEN) != slab)))
		p = NULL;
	if (!p) {
		p = pend_new(t, op);
		if (!p) {
			donor_cq_unreserve(&t->cq, 1);
			pthread_mutex_unlock(&t->lock);
			pthread_mutex_unlock(&t->send_lock);
			return -ENOMEM;
		}
		r = op == DONOR_OP_WRITE_PAGES ? donor_enc_write_begin(&t->batch, p->req_id, slab, &t->open_off)
					       : donor_enc_read_begin(&t->batch, p->req_id, &t->open_off);
		t->open = p;
	}
	if (r == 0)
		r = op == DONOR_OP_WRITE_PAGES ? write_add_ref(t, slot, page, tag)
					       : donor_enc_read_add(&t->batch, t->open_off, slab, slot);
	if (r < 0) {
		/* Out of memory mid-batch: the batch cannot be trusted any more. This page was not accepted. */
		donor_cq_unreserve(&t->cq, 1);
		fail_all(t, r);
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_unlock(&t->send_lock);
		signal_completions(t);
		return r;
	}
	p->cookies[p->n] = cookie;
	p->pages[p->n] = page;
	p->tags[p->n] = tag;
	p->n++;
	pthread_mutex_unlock(&t->lock);
	/* A full batch goes out at once; the pipe stays busy while the caller fills the next. */
	if (t->batch.len + (size_t)t->nsegs * DONOR_SLOT_SIZE >= DONOR_MAX_PAYLOAD || t->nsegs >= TCP_MAX_SEGS)
		r = flush_locked(t);
	pthread_mutex_unlock(&t->send_lock);
	return r;
}

static int tcp_submit_write(struct donor_conn *c, uint32_t slab, uint32_t slot, const void *page,
			    const void *tag, uint64_t cookie)
{
	return submit(to_tcp(c), DONOR_OP_WRITE_PAGES, slab, slot, (void *)page, (void *)tag, cookie);
}

static int tcp_submit_read(struct donor_conn *c, uint32_t slab, uint32_t slot, void *page, void *tag,
			   uint64_t cookie)
{
	return submit(to_tcp(c), DONOR_OP_READ_PAGES, slab, slot, page, tag, cookie);
}

/* A synchronous request: the reply payload lands in ret_reply (may be NULL). */
static int call(struct tcp_conn *t, uint8_t op, const void *payload, size_t len,
		struct donor_buf *ret_reply)
{
	struct pend *p;
	int r;

	pthread_mutex_lock(&t->send_lock);
	r = flush_locked(t);
	if (r < 0) {
		pthread_mutex_unlock(&t->send_lock);
		return r;
	}
	pthread_mutex_lock(&t->lock);
	p = pend_new(t, op);
	if (!p) {
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_unlock(&t->send_lock);
		return -ENOMEM;
	}
	p->sync = true;
	pthread_mutex_unlock(&t->lock);
	r = donor_frame_put(&t->batch, op, 0, p->req_id, 0, payload, len);
	if (r == 0)
		r = flush_locked(t);
	else
		t->batch.len = 0, t->nsegs = 0;
	pthread_mutex_unlock(&t->send_lock);

	pthread_mutex_lock(&t->lock);
	if (r < 0 && !p->done)
		pend_finish(t, p, r, NULL, 0);
	while (!p->done)
		pthread_cond_wait(&t->cond, &t->lock);
	r = p->status;
	if (r == 0 && ret_reply) {
		*ret_reply = p->reply;
		donor_buf_init(&p->reply);
	}
	pend_put(t, p);
	pthread_mutex_unlock(&t->lock);
	return r;
}

int donor_tcp_call(struct donor_conn *c, uint8_t op, const void *payload, size_t len,
		   struct donor_buf *ret_reply)
{
	if (c->ops != &donor_tcp_ops)
		return -EINVAL;
	return call(to_tcp(c), op, payload, len, ret_reply);
}

static int tcp_alloc_slab(struct donor_conn *c, uint32_t *ret_slab)
{
	struct donor_buf rep;
	int r = call(to_tcp(c), DONOR_OP_ALLOC_SLAB, NULL, 0, &rep);

	if (r < 0)
		return r;
	r = donor_dec_u32(rep.data, rep.len, ret_slab);
	donor_buf_release(&rep);
	return r;
}

static int tcp_free_slab(struct donor_conn *c, uint32_t slab)
{
	uint32_t le = htole32(slab);

	return call(to_tcp(c), DONOR_OP_FREE_SLAB, &le, 4, NULL);
}

static int tcp_list_slabs(struct donor_conn *c, uint32_t *ids, uint32_t *flags, size_t max)
{
	struct donor_list_reply lr;
	struct donor_buf rep;
	int r = call(to_tcp(c), DONOR_OP_LIST_SLABS, NULL, 0, &rep);

	if (r < 0)
		return r;
	r = donor_dec_list_reply(rep.data, rep.len, &lr);
	if (r == 0) {
		for (uint32_t i = 0; i < lr.count && i < max; i++) {
			ids[i] = donor_get_u32(lr.entries + 8 * i);
			if (flags)
				flags[i] = donor_get_u32(lr.entries + 8 * i + 4);
		}
		r = (int)lr.count;
	}
	donor_buf_release(&rep);
	return r;
}

static int tcp_ping(struct donor_conn *c)
{
	static const char probe[8] = "uffdvm!";
	struct donor_buf rep;
	int r = call(to_tcp(c), DONOR_OP_PING, probe, sizeof(probe), &rep);

	if (r < 0)
		return r;
	if (rep.len != sizeof(probe) || memcmp(rep.data, probe, sizeof(probe)) != 0)
		r = -EBADMSG;
	donor_buf_release(&rep);
	return r;
}

static int tcp_stats(struct donor_conn *c, uint64_t *ret_capacity, uint64_t *ret_used)
{
	struct donor_stats_reply st;
	struct donor_buf rep;
	int r = call(to_tcp(c), DONOR_OP_STATS, NULL, 0, &rep);

	if (r < 0)
		return r;
	r = donor_dec_stats_reply(rep.data, rep.len, &st);
	donor_buf_release(&rep);
	if (r == 0) {
		*ret_capacity = st.capacity;
		*ret_used = st.used;
	}
	return r;
}

static int tcp_poll_completions(struct donor_conn *c, struct donor_completion *out, unsigned max,
				int timeout_ms)
{
	struct tcp_conn *t = to_tcp(c);
	struct timespec until;
	unsigned n = 0;
	int r = 0;

	if (timeout_ms > 0)
		cond_deadline(&until, (unsigned)timeout_ms);
	pthread_mutex_lock(&t->lock);
	while (donor_cq_queued(&t->cq) == 0 && timeout_ms != 0) {
		/* Nothing can ever arrive on a broken connection with nothing outstanding. */
		if (t->dead && TAILQ_EMPTY(&t->pending)) {
			r = t->dead;
			break;
		}
		if (timeout_ms < 0)
			pthread_cond_wait(&t->cond, &t->lock);
		else if (pthread_cond_timedwait(&t->cond, &t->lock, &until) == ETIMEDOUT)
			break;
	}
	n = donor_cq_pop(&t->cq, out, max);
	if (n)
		room_freed(t);
	if (donor_cq_queued(&t->cq) == 0) {
		uint64_t v;
		if (read(t->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			r = r ? r : -errno;
	}
	pthread_mutex_unlock(&t->lock);
	return n > 0 ? (int)n : r;
}

static int tcp_get_fd(struct donor_conn *c) { return to_tcp(c)->evfd; }

static void handle_notify(struct tcp_conn *t, const uint8_t *p, size_t len)
{
	struct donor_notification n = { 0 };
	struct donor_notify dn;
	_cleanup_free_ uint32_t *ids = NULL;

	if (donor_dec_notify(p, len, &dn) < 0) {
		log_warn("donor tcp: malformed NOTIFY ignored");
		return;
	}
	ids = calloc(dn.count + 1, sizeof(*ids));
	if (!ids)
		return;
	for (uint32_t i = 0; i < dn.count; i++)
		ids[i] = donor_get_u32(dn.slabs + 4 * i);
	n.kind = (enum donor_notify_kind)dn.kind;
	n.deadline_ms = dn.deadline_ms;
	n.nslabs = dn.count;
	n.slabs = ids;
	if (t->notify_cb)
		t->notify_cb(&t->base, &n, t->notify_opaque);
}

/* Returns 0 to go on, -errno when the stream cannot be trusted any more. */
static int handle_frame(struct tcp_conn *t, const struct donor_hdr *h, const uint8_t *payload)
{
	struct pend *p;

	if (h->flags == DONOR_F_NOTIFY && h->opcode == DONOR_OP_NOTIFY) {
		handle_notify(t, payload, h->len);
		return 0;
	}
	if (h->flags != DONOR_F_REPLY)
		return -EBADMSG;
	pthread_mutex_lock(&t->lock);
	TAILQ_FOREACH(p, &t->pending, link) {
		if (p->req_id != h->req_id)
			continue;
		if (p->op != h->opcode) {
			pthread_mutex_unlock(&t->lock);
			return -EBADMSG;
		}
		/* Statuses are positive errno values on the wire; clamp nonsense. */
		pend_finish(t, p, h->status ? -(int)(h->status > 4095 ? EIO : h->status) : 0, payload,
			    h->len);
		break;
	}
	/* No match: the request already timed out; its late reply is dropped. */
	pthread_mutex_unlock(&t->lock);
	return 0;
}

/* The oldest outstanding request if it was sent and its deadline passed (lock held), else NULL. */
static struct pend *expired(struct tcp_conn *t, uint64_t now)
{
	struct pend *p = TAILQ_FIRST(&t->pending);

	return p && p->sent && p->deadline <= now ? p : NULL;
}

static void expire(struct tcp_conn *t)
{
	uint64_t now = now_ns();
	struct pend *p;
	bool any = false;

	if (t->complete_cb) {
		pthread_mutex_lock(&t->lock);
		while ((p = expired(t, now)))
			pend_finish(t, p, -ETIMEDOUT, NULL, 0);
		pthread_mutex_unlock(&t->lock);
		deliver(t); /* also what a failed send in another thread queued */
		return;
	}

	pthread_mutex_lock(&t->lock);
	while ((p = expired(t, now))) {
		pend_finish(t, p, -ETIMEDOUT, NULL, 0);
		any = true;
	}
	pthread_mutex_unlock(&t->lock);
	if (any)
		signal_completions(t);
}

/* Handles the complete frames in buf[*start, *len). Returns 0 or -EPROTO. */
static int consume_frames(struct tcp_conn *t, const uint8_t *buf, size_t *start, size_t len)
{
	size_t used = *start;
	int r;

	for (;;) {
		struct donor_hdr h;
		r = donor_hdr_decode(buf + used, len - used, &h);
		if (r == -EAGAIN || (r == 0 && len - used < DONOR_HDR_LEN + (size_t)h.len))
			break;
		if (r == 0)
			r = handle_frame(t, &h, buf + used + DONOR_HDR_LEN);
		if (r < 0) {
			log_warn("donor tcp: bad frame from donor: %s", strerror(-r));
			*start = used;
			return -EPROTO;
		}
		used += DONOR_HDR_LEN + h.len;
	}
	*start = used;
	return 0;
}

/*
 * Feeds n bytes of ciphertext to TLS and handles the frames the plaintext
 * completes. Returns 0 or -errno (-EPROTO for anything untrustworthy).
 */
static int receive_records(struct tcp_conn *t, const uint8_t *in, size_t n, uint8_t *buf, size_t cap,
			   size_t *start, size_t *len)
{
	size_t off = 0;

	for (;;) {
		size_t took = 0;
		int r;

		/* Keep room for a full record behind the data; compact only when it runs short. */
		if (cap - *len < TCP_RX_SLACK && *start > 0) {
			memmove(buf, buf + *start, *len - *start);
			*len -= *start;
			*start = 0;
		}
		pthread_mutex_lock(&t->tls_lock);
		if (off < n)
			took = donor_tls_net_in(t->tls, in + off, n - off);
		r = donor_tls_read(t->tls, buf + *len, cap - *len);
		pthread_mutex_unlock(&t->tls_lock);
		off += took;
		if (r == -EAGAIN) {
			if (off >= n)
				return 0;
			if (took == 0)
				return -EPROTO; /* TLS can use neither what it holds nor more: not a TLS peer */
			continue;
		}
		if (r < 0) {
			if (r == -EBADMSG)
				log_warn("donor tcp: a TLS record from the donor failed authentication "
					 "(changed on the way?); closing the connection");
			return r == -ECONNRESET ? r : -EPROTO;
		}
		*len += (size_t)r;
		r = consume_frames(t, buf, start, *len);
		if (r < 0)
			return r;
		if (*start == *len)
			*start = *len = 0;
	}
}

static void *receiver(void *arg)
{
	struct tcp_conn *t = arg;
	size_t cap = DONOR_HDR_LEN + DONOR_MAX_PAYLOAD + 65536, len = 0, start = 0;
	_cleanup_free_ uint8_t *buf = malloc(cap);
	_cleanup_free_ uint8_t *in = malloc(TCP_CIPHER_CAP);
	uint64_t next_expire = 0;
	bool closing;
	int err = 0;

	pthread_setname_np(pthread_self(), "donor-tcp-rx");

	if (!buf || !in)
		err = -ENOMEM;
	/* The handshake may have read past the AUTH reply: what TLS holds comes first. */
	if (!err)
		err = receive_records(t, NULL, 0, buf, cap, &start, &len);
	while (!err) {
		ssize_t n;

		/* One syscall per wake-up: a blocking recv that SO_RCVTIMEO cuts off for the expiry scan. */
		n = recv(t->fd, in, TCP_CIPHER_CAP, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			expire(t);
			next_expire = now_ns() + 10000000ULL;
			continue;
		}
		if (n == 0) {
			err = -ECONNRESET;
			break;
		}
		if (n < 0) {
			err = -errno;
			break;
		}
		if (now_ns() >= next_expire) {
			expire(t);
			next_expire = now_ns() + 10000000ULL;
		}
		err = receive_records(t, in, (size_t)n, buf, cap, &start, &len);
		if (t->complete_cb)
			deliver(t);
		else
			signal_completions(t);
	}
	pthread_mutex_lock(&t->lock);
	closing = t->closing;
	fail_all(t, closing ? -ECANCELED : err);
	pthread_mutex_unlock(&t->lock);
	if (t->complete_cb)
		deliver(t);
	signal_completions(t);
	if (!closing && t->notify_cb) {
		/* A dead connection is, for the pager, the donor going away. */
		struct donor_notification n = { .kind = DONOR_NOTIFY_SHUTDOWN };
		t->notify_cb(&t->base, &n, t->notify_opaque);
	}
	return NULL;
}

/* Reads one whole frame during the handshake, before the receiver thread runs. */
static int read_frame(struct tcp_conn *t, uint64_t deadline, struct donor_hdr *h, uint8_t *payload, size_t max)
{
	uint8_t hdr[DONOR_HDR_LEN];
	int r = donor_tls_sock_recv(t->tls, t->fd, hdr, sizeof(hdr), deadline);

	if (r < 0)
		return r;
	if (donor_hdr_decode(hdr, sizeof(hdr), h) < 0 || h->len > max)
		return -EPROTO;
	return donor_tls_sock_recv(t->tls, t->fd, payload, h->len, deadline);
}

static int handshake(struct tcp_conn *t, const struct donor_key *key, const char *client_id,
		     uint64_t deadline)
{
	uint8_t nonce[DONOR_NONCE_LEN], want[DONOR_MAC_LEN], payload[256];
	struct donor_auth_reply rep;
	struct donor_auth_req req;
	struct donor_hdr h;
	struct donor_buf b;
	int r;

	donor_buf_init(&b);
	/* TLS first: the PSK identity is the client id, and every frame below is inside the session. */
	r = donor_tls_new_client(key, client_id, &t->tls);
	if (r == 0)
		r = donor_tls_sock_handshake(t->tls, t->fd, deadline);
	if (r == 0)
		r = donor_enc_hello(&b, 1, client_id);
	if (r == 0)
		r = donor_tls_sock_send(t->tls, t->fd, b.data, b.len, deadline);
	if (r == 0)
		r = read_frame(t, deadline, &h, payload, sizeof(payload));
	if (r == 0 && (h.opcode != DONOR_OP_HELLO || h.req_id != 1 || !(h.flags & DONOR_F_REPLY)))
		r = -EPROTO;
	if (r == 0 && h.status)
		r = -(int)(h.status > 4095 ? EPROTO : h.status);
	if (r == 0)
		r = donor_dec_hello_reply(payload, h.len, nonce) < 0 ? -EPROTO : 0;
	if (r == 0)
		r = donor_random(req.client_nonce, sizeof(req.client_nonce));
	if (r == 0)
		r = donor_auth_client_mac(key, nonce, req.client_nonce, client_id, req.mac);
	if (r == 0) {
		b.len = 0;
		r = donor_enc_auth(&b, 2, &req);
	}
	if (r == 0)
		r = donor_tls_sock_send(t->tls, t->fd, b.data, b.len, deadline);
	if (r == 0)
		r = read_frame(t, deadline, &h, payload, sizeof(payload));
	if (r == 0 && (h.opcode != DONOR_OP_AUTH || h.req_id != 2 || !(h.flags & DONOR_F_REPLY)))
		r = -EPROTO;
	if (r == 0 && h.status)
		r = -(int)(h.status > 4095 ? EPROTO : h.status);
	if (r == 0)
		r = donor_dec_auth_reply(payload, h.len, &rep) < 0 ? -EPROTO : 0;
	if (r == 0) {
		/* The donor must know the key too, or anyone could collect our pages. */
		r = donor_auth_donor_mac(key, nonce, req.client_nonce, client_id, want);
		if (r == 0 && !donor_ct_equal(want, rep.donor_mac, DONOR_MAC_LEN))
			r = -EACCES;
	}
	if (r == 0 && (rep.slab_size != DONOR_SLAB_SIZE || rep.page_size != PAGE_SIZE_4K))
		r = -EPROTO;
	if (r == 0)
		t->base.info = (struct donor_conn_info){ .slab_size = rep.slab_size,
							 .page_size = rep.page_size,
							 .lease_s = rep.lease_s,
							 .nslabs = rep.nslabs };
	donor_buf_release(&b);
	return r;
}

static int dial(const char *url, unsigned timeout_ms, uint64_t deadline)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	_cleanup_free_ char *host = NULL;
	const char *port;
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	int fd, r, one = 1, soerr = 0;
	socklen_t sl = sizeof(soerr);

	r = split_host_port(url + 6, &host, &port);
	if (r < 0)
		return r;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -EHOSTUNREACH;
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		freeaddrinfo(res);
		return -errno;
	}
	r = connect(fd, res->ai_addr, res->ai_addrlen) < 0 ? -errno : 0;
	freeaddrinfo(res);
	if (r == -EINPROGRESS) {
		r = poll_until(fd, POLLOUT, deadline);
		if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr)
			r = -soerr;
	}
	if (r == 0) {
		/* Blocking from here on, but never unbounded: sends give up after the timeout. */
		r = fcntl(fd, F_SETFL, 0) < 0 ? -errno : 0;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

static void tcp_close(struct donor_conn *c)
{
	struct tcp_conn *t;
	struct pend *p;

	if (!c)
		return;
	t = to_tcp(c);
	pthread_mutex_lock(&t->lock);
	t->closing = true;
	pthread_mutex_unlock(&t->lock);
	if (t->fd >= 0)
		shutdown(t->fd, SHUT_RDWR);
	if (t->thr_started)
		pthread_join(t->thr, NULL);
	pthread_mutex_lock(&t->lock);
	fail_all(t, -ECANCELED);
	pthread_mutex_unlock(&t->lock);
	while ((p = TAILQ_FIRST(&t->spare))) {
		TAILQ_REMOVE(&t->spare, p, link);
		donor_buf_release(&p->reply);
		free(p);
	}
	if (t->fd >= 0)
		close(t->fd);
	if (t->evfd >= 0)
		close(t->evfd);
	donor_tls_free(t->tls);
	free(t->plain);
	free(t->cipher);
	pthread_mutex_destroy(&t->tls_lock);
	donor_buf_release(&t->batch);
	donor_cq_destroy(&t->cq);
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->send_lock);
	pthread_cond_destroy(&t->cond);
	free(t);
}

static int tcp_connect(const char *url, const struct donor_key *key, const char *client_id,
		       const struct donor_connect_opts *opts, struct donor_conn **ret_conn)
{
	static const struct donor_key no_key = { .len = 0 };
	struct tcp_conn *t;
	pthread_condattr_t ca;
	uint64_t deadline;
	int r;

	if (strncmp(url, "tcp://", 6) != 0 || !donor_client_id_valid(client_id, strlen(client_id)))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->base.ops = &donor_tcp_ops;
	t->fd = t->evfd = -1;
	t->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : 5000;
	t->notify_cb = opts ? opts->notify_cb : NULL;
	t->notify_opaque = opts ? opts->notify_opaque : NULL;
	t->complete_cb = opts ? opts->complete_cb : NULL;
	t->complete_opaque = opts ? opts->complete_opaque : NULL;
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->send_lock, NULL);
	pthread_mutex_init(&t->tls_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
	donor_buf_init(&t->batch);
	TAILQ_INIT(&t->pending);
	TAILQ_INIT(&t->spare);
	deadline = deadline_after(t->timeout_ms);

	r = donor_cq_init(&t->cq, DONOR_MAX_INFLIGHT);
	if (r == 0) {
		t->plain = malloc(TCP_PLAIN_CAP);
		t->cipher = malloc(TCP_CIPHER_CAP);
		r = t->plain && t->cipher ? 0 : -ENOMEM;
	}
	if (r == 0) {
		t->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		r = t->evfd < 0 ? -errno : 0;
	}
	if (r == 0) {
		t->fd = dial(url, t->timeout_ms, deadline);
		r = t->fd < 0 ? t->fd : 0;
	}
	if (r == 0)
		r = handshake(t, key ? key : &no_key, client_id, deadline);
	if (r == 0) {
		/* The receiver blocks in recv; this bounds each wait so expiry runs at least every 50 ms. */
		struct timeval rtv = { .tv_sec = 0, .tv_usec = 50000 };
		if (setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &rtv, sizeof(rtv)) < 0)
			r = -errno;
	}
	if (r == 0) {
		r = -pthread_create(&t->thr, NULL, receiver, t);
		t->thr_started = r == 0;
	}
	if (r < 0) {
		tcp_close(&t->base);
		return r;
	}
	*ret_conn = &t->base;
	return 0;
}

const struct donor_transport_ops donor_tcp_ops = {
	.name = "tcp",
	.scheme = "tcp://",
	.connect = tcp_connect,
	.close = tcp_close,
	.alloc_slab = tcp_alloc_slab,
	.free_slab = tcp_free_slab,
	.list_slabs = tcp_list_slabs,
	.submit_write = tcp_submit_write,
	.submit_read = tcp_submit_read,
	.flush = tcp_flush,
	.poll_completions = tcp_poll_completions,
	.get_fd = tcp_get_fd,
	.ping = tcp_ping,
	.stats = tcp_stats,
};
