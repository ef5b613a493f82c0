/* SPDX-License-Identifier: MIT */
/*
 * Pager-side interface to donors, independent of the wire: an asynchronous
 * ops table implemented by the TCP backend (transport-tcp.c) and the RDMA
 * backend (transport-rdma.c). A backend embeds struct
 * donor_conn first in its own connection struct and gets back with
 * container_of. Pages move with submit_*() + flush() and finish through
 * poll_completions(), each carrying the caller's cookie; slab management is
 * synchronous (rare, off the fault path).
 *
 * Threading contract (all backends): every call is safe from any thread;
 * the intended use is one submitter thread and one completer thread, or,
 * with complete_cb, any number of submitters whose page I/O is finished
 * by the backend's own thread (one hand-off less on the fault path).
 * Buffers passed to submit_* must stay valid until their completion is
 * returned. Notifications are delivered by calling notify_cb from the
 * backend's own thread, without transport locks held; the callback must not
 * block for long and may call submit/flush but not close.
 *
 * Every request completes, one way or another: a donor that dies or stops
 * answering makes outstanding requests complete with -ETIMEDOUT or
 * -ECONNRESET within the connection's timeout.
 *
 * In-flight limit: at most DONOR_MAX_INFLIGHT page requests per connection
 * are accepted and not yet collected (outstanding, or completed but not
 * yet returned by poll_completions()/complete_cb). Each backend's
 * completion ring (completion-ring.h) is allocated at that size when it
 * connects, so no completion is ever dropped. A submit_* that would go
 * past the limit sends what is batched and waits up to the connection's
 * timeout for the caller to collect completions, then returns -EBUSY (the
 * connection stays up). A caller that submits and collects in one thread
 * keeps fewer than DONOR_MAX_INFLIGHT requests outstanding.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "donor-proto.h"

/*
 * Page requests per connection between submit_* and their collected
 * completion: 32 MiB of pages, far more than the pager keeps out (evictor
 * batches of 128 pages per VM, a few fetches per fault thread); the ring
 * costs 128 KiB per connection.
 */
#define DONOR_MAX_INFLIGHT 8192u

struct donor_conn;
struct donor_key;

enum donor_completion_op { DONOR_COMP_WRITE = 1, DONOR_COMP_READ = 2 };

struct donor_completion {
	uint64_t cookie;
	int status; /* 0 or -errno */
	uint8_t op; /* enum donor_completion_op */
};

struct donor_notification {
	enum donor_notify_kind kind;
	uint32_t deadline_ms; /* REVOKED: time left to move the slabs */
	uint32_t nslabs;
	const uint32_t *slabs;
};

typedef void (*donor_notify_fn)(struct donor_conn *conn, const struct donor_notification *n,
				void *opaque);
typedef void (*donor_complete_fn)(struct donor_conn *conn, const struct donor_completion *c, void *opaque);

struct donor_connect_opts {
	unsigned timeout_ms;	    /* per request and for connecting; 0 = 5000 */
	donor_notify_fn notify_cb;  /* may be NULL */
	void *notify_opaque;
	/*
	 * Optional: page I/O completions are handed to this callback from the
	 * backend's receiving thread (no transport locks held) as soon as they
	 * arrive instead of waiting for poll_completions(). A backend without
	 * support (RDMA) queues them as before, and even the TCP backend may
	 * queue a completion it produced in a caller's thread (a failed send),
	 * so callers keep polling too: every completion is delivered exactly
	 * once, by one path or the other. The callback must not block.
	 */
	donor_complete_fn complete_cb;
	void *complete_opaque;
};

struct donor_conn_info {
	uint32_t slab_size, page_size; /* what the donor serves */
	uint32_t lease_s;	       /* slabs survive a disconnect this long */
	uint32_t nslabs;	       /* slabs this client id already held at connect */
};

struct donor_transport_ops {
	const char *name;   /* "tcp", "rdma" */
	const char *scheme; /* URL prefix it serves, e.g. "tcp://" */
	/* Connects and authenticates. Returns 0 or -errno (-EACCES: key refused). */
	int (*connect)(const char *url, const struct donor_key *key, const char *client_id,
		       const struct donor_connect_opts *opts, struct donor_conn **ret_conn);
	/* Fails what is outstanding with -ECANCELED; NULL-safe. */
	void (*close)(struct donor_conn *conn);
	int (*alloc_slab)(struct donor_conn *conn, uint32_t *ret_slab);
	int (*free_slab)(struct donor_conn *conn, uint32_t slab);
	/* Slabs this client owns (after a reconnect). Returns the total count >= 0 or -errno. */
	int (*list_slabs)(struct donor_conn *conn, uint32_t *ids, uint32_t *flags, size_t max);
	/*
	 * Queues page writes/reads of one slot: the 4 KiB page and its
	 * DONOR_TAG_SIZE-byte tag (a write with tag NULL stores zeros; a read
	 * with tag NULL drops it). page and tag stay the caller's until the
	 * completion. Returns 0 or -errno: -ENOTCONN once the connection
	 * failed, -EBUSY at the in-flight limit (see above).
	 */
	int (*submit_write)(struct donor_conn *conn, uint32_t slab, uint32_t slot, const void *page,
			    const void *tag, uint64_t cookie);
	int (*submit_read)(struct donor_conn *conn, uint32_t slab, uint32_t slot, void *page, void *tag,
			   uint64_t cookie);
	/* Sends what is queued. Returns 0 or -errno. */
	int (*flush)(struct donor_conn *conn);
	/*
	 * Waits up to timeout_ms (0: don't wait, <0: forever) for completions.
	 * Returns how many were stored in out (0..max) or -errno.
	 */
	int (*poll_completions)(struct donor_conn *conn, struct donor_completion *out, unsigned max,
				int timeout_ms);
	/* An fd that polls readable while completions are waiting. */
	int (*get_fd)(struct donor_conn *conn);
	/* Round trip with no data, e.g. for health checks. Returns 0 or -errno. */
	int (*ping)(struct donor_conn *conn);
	/*
	 * Optional (NULL: unknown): the donor's whole capacity and what is
	 * allocated of it, in bytes, for placement by free space. Returns 0 or -errno.
	 */
	int (*stats)(struct donor_conn *conn, uint64_t *ret_capacity, uint64_t *ret_used);
};

/* The part every backend shares; backends embed it first. */
struct donor_conn {
	const struct donor_transport_ops *ops;
	struct donor_conn_info info;
};

extern const struct donor_transport_ops donor_tcp_ops;
/* rdma://ADDR:PORT (transport-rdma.c); defined only when config.h has HAVE_RDMA. */
extern const struct donor_transport_ops donor_rdma_ops;

/* Picks the backend by URL scheme and connects. Returns 0, -EPROTONOSUPPORT or the backend's -errno. */
int donor_connect(const char *url, const struct donor_key *key, const char *client_id,
		  const struct donor_connect_opts *opts, struct donor_conn **ret_conn);

static inline void donor_close(struct donor_conn *c)
{
	if (c)
		c->ops->close(c);
}
static inline int donor_alloc_slab(struct donor_conn *c, uint32_t *ret_slab)
{
	return c->ops->alloc_slab(c, ret_slab);
}
static inline int donor_free_slab(struct donor_conn *c, uint32_t slab)
{
	return c->ops->free_slab(c, slab);
}
static inline int donor_list_slabs(struct donor_conn *c, uint32_t *ids, uint32_t *flags, size_t max)
{
	return c->ops->list_slabs(c, ids, flags, max);
}
static inline int donor_submit_write(struct donor_conn *c, uint32_t slab, uint32_t slot,
				     const void *page, uint64_t cookie)
{
	return c->ops->submit_write(c, slab, slot, page, NULL, cookie);
}
static inline int donor_submit_read(struct donor_conn *c, uint32_t slab, uint32_t slot, void *page,
				    uint64_t cookie)
{
	return c->ops->submit_read(c, slab, slot, page, NULL, cookie);
}
/* The same with the slot's tag (the pager's sealed copies). */
static inline int donor_submit_write_tag(struct donor_conn *c, uint32_t slab, uint32_t slot,
					 const void *page, const void *tag, uint64_t cookie)
{
	return c->ops->submit_write(c, slab, slot, page, tag, cookie);
}
static inline int donor_submit_read_tag(struct donor_conn *c, uint32_t slab, uint32_t slot, void *page,
					void *tag, uint64_t cookie)
{
	return c->ops->submit_read(c, slab, slot, page, tag, cookie);
}
static inline int donor_flush(struct donor_conn *c) { return c->ops->flush(c); }
static inline int donor_poll_completions(struct donor_conn *c, struct donor_completion *out,
					 unsigned max, int timeout_ms)
{
	return c->ops->poll_completions(c, out, max, timeout_ms);
}
static inline int donor_get_fd(struct donor_conn *c) { return c->ops->get_fd(c); }
static inline int donor_ping(struct donor_conn *c) { return c->ops->ping(c); }
static inline int donor_stats(struct donor_conn *c, uint64_t *ret_capacity, uint64_t *ret_used)
{
	return c->ops->stats ? c->ops->stats(c, ret_capacity, ret_used) : -EOPNOTSUPP;
}
