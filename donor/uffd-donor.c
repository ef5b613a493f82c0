/* SPDX-License-Identifier: MIT */
/*
 * uffd-donor: exports spare memory to uffd-pager instances over TCP. One
 * thread drives everything through io_uring (accept, recv, send of the TCP
 * listener, the control socket and SIGTERM/SIGINT via signalfd); request
 * handling lives in donor-server.c. Replies produced from one receive are
 * sent with one send, and a client that stops reading only stalls itself.
 * With --listen rdma://, the same TCP listener carries the control protocol
 * and donor-rdma.c adds the rdma_cm listener whose events come through the
 * ring as a poll; pages then move without this process.
 *
 * Pager connections run TLS 1.3 (proto/donor-tls.h) over memory buffers:
 * io_uring moves ciphertext (recv into conn.net, send from conn.inflight),
 * and conn_tls_pull/conn_tls_push turn it into the plaintext the session
 * reads and writes. Nothing reaches the session before the handshake has
 * proved the key, and its client id is the one the handshake proved.
 */
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>

#include "config.h"
#include "ctl-proto.h"
#include "donor-server.h"
#include "donor-slab.h"
#include "donor-tls.h"
#if HAVE_RDMA
#include "donor-rdma.h"
#endif
#include "log.h"
#include "util.h"

#define IN_CAP (DONOR_HDR_LEN + DONOR_MAX_PAYLOAD + 65536)
/* Before authentication one frame is in flight at a time; room for two covers any split. */
#define PREAUTH_IN_CAP (2 * (DONOR_HDR_LEN + DONOR_PREAUTH_MAX_PAYLOAD))
#define CTL_MAX_CONNS 64
#define CLOSE_GRACE_NS 2000000000ULL
/* Out of file descriptors: stop accepting this long rather than retry at once. */
#define ACCEPT_PAUSE_NS 250000000ULL
/* At most one warning per this period for each kind of refused connection. */
#define REFUSE_LOG_NS 10000000000ULL
/* Ciphertext received and not yet taken by TLS. */
#define NET_CAP (64u << 10)
/*
 * Plaintext encrypted per send: the pager decrypts one piece while this
 * loop encrypts the next, so a 64-page reply costs about one side's crypto
 * in latency, not both.
 */
#define PUSH_MAX (64u << 10)

enum op_kind { OP_ACCEPT, OP_CTL_ACCEPT, OP_RECV, OP_SEND, OP_SIGNAL, OP_RDMA };

/* Connection limits (command-line options; see usage()). */
struct limits {
	unsigned preauth_timeout_s; /* close a connection not authenticated by then */
	unsigned preauth_max;	    /* unauthenticated connections at once */
	unsigned preauth_per_addr;  /* unauthenticated connections from one address */
	unsigned max_conns;	    /* pager connections in all, authenticated or not */
};

/* A warning that repeats at most once per REFUSE_LOG_NS, saying how many it stood for. */
struct ratelog {
	uint64_t last;
	unsigned suppressed;
};

struct conn;
struct op {
	enum op_kind kind;
	struct conn *c;
};

struct conn {
	LIST_ENTRY(conn) link; /* in daemon.conns */
	int fd;
	bool ctl;
	struct donor_session *sess;
	struct donor_tls *tls; /* pager connections */
	uint8_t *net;
	size_t net_len;
	bool tls_ready;
	bool tls_more; /* TLS may hold plaintext that did not fit in c->in */
	struct op recv_op, send_op;
	uint8_t *in;
	size_t in_len;
	struct donor_buf inflight, ctl_out;
	size_t sent;
	bool recv_armed, send_armed, closing, shut;
	bool authed; /* counted in nconns only, no longer in npreauth */
	uint64_t closing_since, accepted_at;
	char addr[INET6_ADDRSTRLEN]; /* peer address without port: the per-address limit's key */
	char peer[64];
};

struct daemon {
	struct io_uring ring;
	struct donor_server *srv;
	struct donor_keyring keys; /* for each connection's TLS and the server's HELLO/AUTH */
	int lfd, cfd, sfd;
	struct op accept_op, ctl_accept_op, signal_op, rdma_op;
#if HAVE_RDMA
	struct donor_rdma *rd;
#endif
	struct sockaddr_storage accept_addr;
	socklen_t accept_len;
	struct signalfd_siginfo siginfo;
	LIST_HEAD(, conn) conns;
	unsigned nconns, nctl, npreauth;
	struct limits lim;
	uint64_t accept_paused_until; /* 0: both accepts are armed */
	bool accept_paused[2];	      /* [0] pager listener, [1] control socket */
	struct ratelog log_fds, log_total, log_addr, log_ctl, log_expire;
	bool stop;
};

static struct io_uring_sqe *get_sqe(struct daemon *d)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&d->ring);

	if (!sqe) {
		io_uring_submit(&d->ring);
		sqe = io_uring_get_sqe(&d->ring);
	}
	return sqe;
}

static void arm_accept(struct daemon *d, int fd, struct op *op)
{
	struct io_uring_sqe *sqe = get_sqe(d);

	d->accept_len = sizeof(d->accept_addr);
	io_uring_prep_accept(sqe, fd, op->kind == OP_ACCEPT ? (struct sockaddr *)&d->accept_addr : NULL,
			     op->kind == OP_ACCEPT ? &d->accept_len : NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, op);
}

static void arm_signal(struct daemon *d)
{
	struct io_uring_sqe *sqe = get_sqe(d);

	io_uring_prep_read(sqe, d->sfd, &d->siginfo, sizeof(d->siginfo), 0);
	io_uring_sqe_set_data(sqe, &d->signal_op);
}

/* Logs fmt unless one was logged less than REFUSE_LOG_NS ago; counts the ones it drops. */
static void __attribute__((format(printf, 2, 3))) ratelog_warn(struct ratelog *rl, const char *fmt, ...)
{
	uint64_t now = now_ns();
	char msg[256];
	va_list ap;

	if (rl->last && now - rl->last < REFUSE_LOG_NS) {
		rl->suppressed++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (rl->suppressed)
		log_warn("%s (and %u more times in the last %llus)", msg, rl->suppressed,
			 (unsigned long long)((now - rl->last) / 1000000000ULL));
	else
		log_warn("%s", msg);
	rl->last = now;
	rl->suppressed = 0;
}

static struct donor_buf *conn_out(struct conn *c)
{
	return c->ctl ? &c->ctl_out : donor_session_out(c->sess);
}

static void conn_close(struct conn *c)
{
	if (!c->closing) {
		c->closing = true;
		c->closing_since = now_ns();
	}
}

static void conn_free(struct daemon *d, struct conn *c)
{
	LIST_REMOVE(c, link);
	if (c->ctl)
		d->nctl--;
	else
		d->nconns--;
	if (!c->ctl && !c->authed)
		d->npreauth--;
	close(c->fd);
#if HAVE_RDMA
	if (c->sess)
		donor_rdma_session_gone(d->rd, c->sess);
#endif
	donor_session_free(c->sess);
	donor_tls_free(c->tls);
	free(c->net);
	donor_buf_release(&c->inflight);
	donor_buf_release(&c->ctl_out);
	free(c->in);
	free(c);
}

/* Unauthenticated connections from addr, and the oldest unauthenticated one of all. */
static unsigned preauth_from(struct daemon *d, const char *addr, struct conn **ret_oldest)
{
	struct conn *c, *oldest = NULL;
	unsigned n = 0;

	LIST_FOREACH(c, &d->conns, link) {
		if (c->ctl || c->authed)
			continue;
		if (strcmp(c->addr, addr) == 0)
			n++;
		if (!c->closing && (!oldest || c->accepted_at < oldest->accepted_at))
			oldest = c;
	}
	*ret_oldest = oldest;
	return n;
}

/*
 * Whether a new pager connection from addr may be taken. Strangers get a
 * bounded share: per address, and in all, where the oldest stranger makes
 * room for the newest, so a flood of idle connections cannot keep a pager
 * out (it authenticates within milliseconds; idlers wait for their deadline).
 */
static bool conn_admit(struct daemon *d, const char *addr)
{
	struct conn *oldest;
	unsigned from_addr;

	if (d->nconns >= d->lim.max_conns) {
		ratelog_warn(&d->log_total, "connection limit (%u, --max-connections) reached; refusing %s",
			     d->lim.max_conns, addr);
		return false;
	}
	from_addr = preauth_from(d, addr, &oldest);
	if (from_addr >= d->lim.preauth_per_addr) {
		ratelog_warn(&d->log_addr,
			     "%s has %u connections not yet authenticated (--preauth-per-address); refusing another",
			     addr, from_addr);
		return false;
	}
	if (d->npreauth >= d->lim.preauth_max && oldest) {
		ratelog_warn(&d->log_total,
			     "%u connections not yet authenticated (--preauth-max); dropping the oldest (%s)",
			     d->npreauth, oldest->peer);
		conn_close(oldest);
		oldest->closing_since = 0;
	}
	return true;
}

static void conn_new(struct daemon *d, int fd, bool ctl)
{
	char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
	struct conn *c;
	int one = 1;

	if (ctl && d->nctl >= CTL_MAX_CONNS) {
		ratelog_warn(&d->log_ctl, "control connection limit (%d) reached; refusing one", CTL_MAX_CONNS);
		close(fd);
		return;
	}
	if (!ctl) {
		getnameinfo((struct sockaddr *)&d->accept_addr, d->accept_len, host, sizeof(host), port,
			    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
		if (!conn_admit(d, host)) {
			close(fd);
			return;
		}
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->in = malloc(ctl ? CTL_REQUEST_MAX : PREAUTH_IN_CAP);
	if (!c || !c->in) {
		if (c)
			free(c);
		close(fd);
		return;
	}
	c->fd = fd;
	c->ctl = ctl;
	c->recv_op = (struct op){ OP_RECV, c };
	c->send_op = (struct op){ OP_SEND, c };
	donor_buf_init(&c->inflight);
	donor_buf_init(&c->ctl_out);
	c->accepted_at = now_ns();
	if (ctl) {
		snprintf(c->peer, sizeof(c->peer), "control");
	} else {
		snprintf(c->addr, sizeof(c->addr), "%s", host);
		snprintf(c->peer, sizeof(c->peer), "%s:%s", host, port);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->sess = donor_session_new(d->srv, c->peer);
		c->net = malloc(NET_CAP);
		if (!c->sess || !c->net || donor_tls_new_server_keys(&d->keys, &c->tls) < 0) {
			donor_session_free(c->sess);
			donor_tls_free(c->tls);
			free(c->net);
			free(c->in);
			free(c);
			close(fd);
			return;
		}
		donor_session_set_opaque(c->sess, c);
	}
	LIST_INSERT_HEAD(&d->conns, c, link);
	if (ctl) {
		d->nctl++;
	} else {
		d->nconns++;
		d->npreauth++;
	}
	log_debug("%s: connected", c->peer);
}

/* Queues one response line; a response that cannot be built is reported as such, never skipped. */
static void ctl_reply(struct conn *c, json_t *resp)
{
	static const char oom[] = "{\"ok\":false,\"error\":{\"code\":\"ENOMEM\",\"message\":\"out of memory\"}}\n";
	_cleanup_free_ char *line = NULL;
	size_t len;

	if (resp && ctl_line_dump(resp, &line, &len) == 0)
		donor_buf_put(&c->ctl_out, line, len);
	else
		donor_buf_put(&c->ctl_out, oom, sizeof(oom) - 1);
	json_decref(resp);
}

/* Answers every complete request line of the control protocol (proto/ctl-proto.h), in order. */
static void ctl_process(struct daemon *d, struct conn *c)
{
	size_t start = 0;

	for (size_t i = 0; i < c->in_len; i++) {
		if (c->in[i] != '\n')
			continue;
		ctl_reply(c, donor_server_control(d->srv, (const char *)c->in + start, i + 1 - start));
		start = i + 1;
	}
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
	if (c->in_len >= CTL_REQUEST_MAX) {
		ctl_reply(c, ctl_response_error(NULL, -EMSGSIZE, "request line over %d bytes", CTL_REQUEST_MAX));
		conn_close(c);
	}
}

/* Size of the receive buffer: small until the peer has authenticated. */
static size_t conn_in_cap(const struct conn *c)
{
	return c->ctl ? CTL_REQUEST_MAX : c->authed ? IN_CAP : PREAUTH_IN_CAP;
}

/* A connection that just authenticated leaves the pre-auth count and gets a full-size buffer. */
static void conn_authed(struct daemon *d, struct conn *c)
{
	uint8_t *in;

	/* A recv in flight without TLS targets the old buffer: grow only while none is armed
	 * (with TLS, recvs land in c->net). */
	if (c->authed || (!c->tls && c->recv_armed) || !donor_session_owner(c->sess))
		return;
	in = realloc(c->in, IN_CAP);
	if (!in) {
		log_warn("%s: out of memory for its receive buffer; closing", c->peer);
		conn_close(c);
		return;
	}
	c->in = in;
	c->authed = true;
	d->npreauth--;
}

/*
 * Moves received ciphertext through TLS: the handshake first, then
 * plaintext into c->in while it has room. Returns 0 or -errno (the
 * connection must close: failed handshake, forged or garbled record).
 */
static int conn_tls_pull(struct conn *c)
{
	c->tls_more = false;
	for (;;) {
		size_t took = 0;
		int r;

		if (c->net_len) {
			took = donor_tls_net_in(c->tls, c->net, c->net_len);
			memmove(c->net, c->net + took, c->net_len - took);
			c->net_len -= took;
		}
		if (!c->tls_ready) {
			r = donor_tls_handshake(c->tls);
			if (r == 0) {
				c->tls_ready = true;
				r = donor_session_set_tls_id(c->sess, donor_tls_peer_id(c->tls));
				if (r < 0)
					return r;
				continue;
			}
			if (r != -EAGAIN) {
				log_warn("%s: TLS handshake failed: %s", c->peer,
					 r == -EACCES ? "wrong key or invalid client id" : strerror(-r));
				return r;
			}
		} else {
			/* Before authentication c->in is small: the rest waits in TLS until HELLO/AUTH are done. */
			if (c->in_len >= conn_in_cap(c)) {
				c->tls_more = true;
				return 0;
			}
			r = donor_tls_read(c->tls, c->in + c->in_len, conn_in_cap(c) - c->in_len);
			if (r > 0) {
				c->in_len += (size_t)r;
				continue;
			}
			if (r != -EAGAIN) {
				if (r != -ECONNRESET)
					log_warn("%s: %s; closing", c->peer,
						 r == -EBADMSG ? "a TLS record failed authentication (changed on the way?)"
							       : "TLS error");
				return r;
			}
		}
		if (took == 0)
			return 0;
	}
}

/* Encrypts queued replies (and handshake messages) into c->inflight. Returns 0 or -errno. */
static int conn_tls_push(struct conn *c)
{
	struct donor_buf *out = donor_session_out(c->sess);
	size_t taken = 0, pend;
	int r;

	for (;;) {
		int w = 0;
		if (c->tls_ready && taken < out->len && taken < PUSH_MAX) {
			w = donor_tls_write(c->tls, out->data + taken, out->len - taken);
			if (w < 0)
				return w;
			taken += (size_t)w;
		}
		pend = donor_tls_net_pending(c->tls);
		if (pend == 0 && w == 0)
			break;
		r = donor_buf_reserve(&c->inflight, pend);
		if (r < 0)
			return r;
		c->inflight.len += donor_tls_net_out(c->tls, c->inflight.data + c->inflight.len, pend);
	}
	donor_buf_consume(out, taken);
	return 0;
}

static void conn_process(struct daemon *d, struct conn *c)
{
	size_t used = 0;
	int r;

	if (c->ctl) {
		ctl_process(d, c);
		return;
	}
	r = donor_session_input(c->sess, c->in, c->in_len, &used);
#if HAVE_RDMA
	donor_rdma_reconcile(d->rd);
#endif
	/* Only when a frame was consumed: a partial frame waits where it is instead of being copied per recv. */
	if (used) {
		memmove(c->in, c->in + used, c->in_len - used);
		c->in_len -= used;
	}
	if (r < 0 || donor_session_closing(c->sess))
		conn_close(c);
	else
		conn_authed(d, c);
}

/* Arms what a connection needs next; frees it when closed and idle. */
static void conn_pump(struct daemon *d, struct conn *c)
{
	struct donor_buf *out;

	if (c->closing && !c->shut) {
		bool drained = !c->send_armed && c->inflight.len == 0 && conn_out(c)->len == 0 &&
			       (!c->tls || donor_tls_net_pending(c->tls) == 0);
		if (drained || now_ns() - c->closing_since > CLOSE_GRACE_NS) {
			/* Wakes a pending recv or send so their completions come back. */
			shutdown(c->fd, SHUT_RDWR);
			c->shut = true;
		}
	}
	if (c->shut) {
		if (!c->recv_armed && !c->send_armed)
			conn_free(d, c);
		return;
	}
	out = conn_out(c);
	if (c->tls && !c->send_armed && c->inflight.len == 0) {
		c->sent = 0;
		if (conn_tls_push(c) < 0) {
			conn_close(c);
			c->closing_since = 0;
		}
	} else if (!c->send_armed && c->inflight.len == 0 && out->len > 0) {
		struct donor_buf t = c->inflight;
		c->inflight = *out;
		*out = t;
		c->sent = 0;
	}
	if (!c->send_armed && c->inflight.len > c->sent) {
		struct io_uring_sqe *sqe = get_sqe(d);
		io_uring_prep_send(sqe, c->fd, c->inflight.data + c->sent, c->inflight.len - c->sent,
				   MSG_NOSIGNAL);
		io_uring_sqe_set_data(sqe, &c->send_op);
		c->send_armed = true;
	}
	/* Input waiting behind a full output queue is handled once the queue drains. */
	/* A failed pull leaves an alert for the peer: it goes out within the close grace. */
	if (!c->closing && c->tls && (c->net_len > 0 || c->tls_more) && conn_tls_pull(c) < 0)
		conn_close(c);
	if (!c->closing && c->in_len > 0 && conn_out(c)->len < DONOR_SESSION_OUT_HIGH)
		conn_process(d, c);
	if (!c->closing && !c->ctl)
		conn_authed(d, c);
	if (!c->closing && !c->recv_armed && conn_out(c)->len < DONOR_SESSION_OUT_HIGH) {
		size_t cap = conn_in_cap(c);
		if (c->tls && c->net_len < NET_CAP) {
			struct io_uring_sqe *sqe = get_sqe(d);
			io_uring_prep_recv(sqe, c->fd, c->net + c->net_len, NET_CAP - c->net_len, 0);
			io_uring_sqe_set_data(sqe, &c->recv_op);
			c->recv_armed = true;
		} else if (!c->tls && c->in_len < cap) {
			struct io_uring_sqe *sqe = get_sqe(d);
			io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, cap - c->in_len, 0);
			io_uring_sqe_set_data(sqe, &c->recv_op);
			c->recv_armed = true;
		}
	}
}

#if HAVE_RDMA
static void arm_rdma(struct daemon *d)
{
	struct io_uring_sqe *sqe = get_sqe(d);

	io_uring_prep_poll_add(sqe, donor_rdma_fd(d->rd), POLLIN);
	io_uring_sqe_set_data(sqe, &d->rdma_op);
}
#endif

/* Closes the connections that did not authenticate within --preauth-timeout. */
static void preauth_expire(struct daemon *d, uint64_t now)
{
	uint64_t limit = (uint64_t)d->lim.preauth_timeout_s * 1000000000ULL;
	struct conn *c;
	unsigned n = 0;

	if (!d->npreauth)
		return;
	LIST_FOREACH(c, &d->conns, link) {
		if (c->ctl || c->authed || c->closing || now - c->accepted_at < limit)
			continue;
		log_debug("%s: not authenticated within %us; closing", c->peer, d->lim.preauth_timeout_s);
		conn_close(c);
		/* Nothing it sent is worth flushing an answer for. */
		c->closing_since = 0;
		n++;
	}
	if (n)
		ratelog_warn(&d->log_expire, "closed %u connections that did not authenticate within %us (--preauth-timeout)",
			     n, d->lim.preauth_timeout_s);
}

static void handle_cqe(struct daemon *d, struct op *op, int res)
{
	struct conn *c = op->c;

	switch (op->kind) {
	case OP_RDMA:
#if HAVE_RDMA
		donor_rdma_handle_events(d->rd);
		donor_rdma_reconcile(d->rd);
		if (!d->stop)
			arm_rdma(d);
#endif
		return;
	case OP_ACCEPT:
	case OP_CTL_ACCEPT:
		if (res >= 0) {
			conn_new(d, res, op->kind == OP_CTL_ACCEPT);
		} else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
			/*
			 * The pending connection stays queued, so accepting again at once
			 * fails again at once: wait for descriptors to come back (deadlines
			 * and closing peers free them) and keep the log short.
			 */
			ratelog_warn(&d->log_fds, "accept: %s; not accepting for %llu ms", strerror(-res),
				     ACCEPT_PAUSE_NS / 1000000ULL);
			d->accept_paused[op->kind == OP_CTL_ACCEPT] = true;
			d->accept_paused_until = now_ns() + ACCEPT_PAUSE_NS;
			return;
		} else if (res != -EINTR && res != -ECONNABORTED) {
			log_warn("accept: %s", strerror(-res));
		}
		if (!d->stop)
			arm_accept(d, op->kind == OP_ACCEPT ? d->lfd : d->cfd, op);
		return;
	case OP_SIGNAL:
		if (res == (int)sizeof(d->siginfo)) {
			log_info("signal %u received; shutting down", d->siginfo.ssi_signo);
			d->stop = true;
		} else if (!d->stop) {
			arm_signal(d);
		}
		return;
	case OP_RECV:
		c->recv_armed = false;
		if (res <= 0) {
			if (res < 0 && res != -ECONNRESET && !c->shut)
				log_debug("%s: recv: %s", c->peer, strerror(-res));
			conn_close(c);
			/* Nothing more will arrive: do not wait to flush to a peer that left. */
			if (res < 0 || !c->ctl) {
				c->closing_since = 0;
			}
			return;
		}
		if (c->tls) {
			c->net_len += (size_t)res;
			if (conn_tls_pull(c) < 0) {
				conn_close(c);
				return;
			}
		} else {
			c->in_len += (size_t)res;
		}
		conn_process(d, c);
		return;
	case OP_SEND:
		c->send_armed = false;
		if (res < 0) {
			conn_close(c);
			c->closing_since = 0;
			c->inflight.len = c->sent = 0;
			donor_buf_consume(conn_out(c), conn_out(c)->len);
			return;
		}
		c->sent += (size_t)res;
		if (c->sent >= c->inflight.len)
			c->inflight.len = c->sent = 0;
		return;
	default:
		log_err("unexpected completion kind %d", op->kind);
		return;
	}
}

/* A socket bound to url's address; main listens on it once the donor is ready to serve. */
static int bind_tcp(const char *url, bool loopback_only)
{
	_cleanup_free_ char *host = NULL;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res = NULL;
	const char *hp, *port;
	int fd, one = 1, r;

	if (strncmp(url, "tcp://", 6) == 0) {
		hp = url + 6;
	} else if (strncmp(url, "rdma://", 7) == 0) {
		/* rdma:// serves its control protocol over TCP on the same address and port. */
		hp = url + 7;
	} else {
		log_err("--listen %s: expected tcp://ADDRESS:PORT or rdma://ADDRESS:PORT", url);
		return -EINVAL;
	}
	r = split_host_port(hp, &host, &port);
	if (r == -EINVAL)
		log_err("--listen %s: missing address or port (tcp://ADDRESS:PORT)", url);
	if (r < 0)
		return r;
	r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		log_err("--listen %s: %s", url, gai_strerror(r));
		return -EINVAL;
	}
	if (loopback_only) {
		bool lo = res->ai_family == AF_INET
				  ? (ntohl(((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr) >> 24) == 127
				  : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr);
		if (!lo) {
			log_err("--listen %s: without --key-file the donor only listens on loopback", url);
			freeaddrinfo(res);
			return -EPERM;
		}
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		freeaddrinfo(res);
		return log_err_errno(r, "--listen %s: socket", url);
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
		r = -errno;
		freeaddrinfo(res);
		close(fd);
		return log_err_errno(r, "--listen %s", url);
	}
	freeaddrinfo(res);
	return fd;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_err("--control %s: path longer than %zu bytes", path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	/* Only a stale socket is replaced, never another kind of file. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_err("--control %s: exists and is not a socket", path);
			return -EEXIST;
		}
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return log_err_errno(-errno, "--control %s: socket", path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 16) < 0) {
		r = -errno;
		close(fd);
		return log_err_errno(r, "--control %s", path);
	}
	return fd;
}

/*
 * --preallocate: fresh memory is slow to fault in on some hosts (a
 * virtual machine whose host backs its memory lazily pays a trip to the
 * host per huge page); done here, no store waits for it later.
 */
static int preallocate_capacity(struct donor_server *srv, uint64_t capacity)
{
	unsigned want = (unsigned)(capacity / DONOR_SLAB_SIZE), done = 0;
	unsigned long long avail_kib = 0;
	uint64_t t0 = now_ns();
	char sz[32], line[128], av[32];
	FILE *f;
	int r;

	/* Faulting in more than the host has would wake the OOM killer, not fail. */
	f = fopen("/proc/meminfo", "re");
	while (f && fgets(line, sizeof(line), f) && sscanf(line, "MemAvailable: %llu kB", &avail_kib) != 1)
		;
	if (f)
		fclose(f);
	if (avail_kib && capacity > (uint64_t)avail_kib << 10) {
		log_err("--preallocate: --capacity %s is more than this host's available memory (%s, MemAvailable "
			"in /proc/meminfo): lower --capacity, or leave out --preallocate",
			format_size(capacity, sz, sizeof(sz)), format_size((uint64_t)avail_kib << 10, av, sizeof(av)));
		return -ENOMEM;
	}
	log_info("--preallocate: faulting in %s (%u slabs of %u MiB)", format_size(capacity, sz, sizeof(sz)), want,
		 DONOR_SLAB_SIZE >> 20);
	r = donor_slabs_preallocate(donor_server_slabs(srv), &done);
	if (r < 0) {
		log_err("--preallocate: only %u of the %u slabs of --capacity %s could be faulted in (%s): "
			"lower --capacity, or leave out --preallocate to take memory as it is used",
			done, want, format_size(capacity, sz, sizeof(sz)), strerror(-r));
		return r;
	}
	log_info("--preallocate: %u slabs faulted in in %.2f s", done, (double)(now_ns() - t0) / 1e9);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: uffd-donor --listen tcp://ADDRESS:PORT --capacity SIZE [options]\n"
		"Exports up to SIZE bytes of this host's memory to uffd-pager instances.\n\n"
		"  --listen tcp://ADDR:PORT  address to serve pagers on\n"
		"  --listen rdma://ADDR:PORT RDMA (one-sided verbs; control over TCP on the same\n"
		"                            address and port; ADDR must be on an RDMA device)\n"
		"  --capacity SIZE           memory to export (e.g. 512M, 8G); slabs are %u MiB\n"
		"  --key-file FILE           pre-shared key (mode 0600, 32..256 bytes); without it\n"
		"                            any local process may connect and only loopback is allowed\n"
		"  --client-key ID=FILE      client id ID must prove this key (same rules as --key-file)\n"
		"                            and no other; repeatable; other ids use --key-file\n"
		"  --client-keys-only        refuse the shared key: only ids with --client-key connect\n"
		"  --control PATH            Unix socket for JSON control (donor.stats, donor.set-capacity)\n"
		"  --lease SECONDS           how long a disconnected client keeps its slabs (default 60)\n"
		"  --preallocate             fault in the whole capacity at start and keep it (released\n"
		"                            slabs are kept and zeroed for reuse): stores never wait\n"
		"                            for new memory\n"
		"  --revoke-grace SECONDS    default deadline to move revoked slabs (default 30)\n"
		"  --max-connections N       pager connections at once (default 1024)\n"
		"  --preauth-timeout SECONDS close connections not authenticated by then (default 10)\n"
		"  --preauth-max N           connections not yet authenticated, in all (default 256);\n"
		"                            when full, the oldest of them is dropped for a new one\n"
		"  --preauth-per-address N   ... from one address (default 16); more are refused\n"
		"  --log-level LEVEL         error, warn, info (default), debug\n"
		"  --help, --version\n",
		DONOR_SLAB_SIZE >> 20);
}

static int parse_uint(const char *opt, const char *s, unsigned max, unsigned *ret)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max || s[0] == '-') {
		log_err("%s %s: expected an integer 0..%u", opt, s, max);
		return -EINVAL;
	}
	*ret = (unsigned)v;
	return 0;
}

/* Wipes the keys on every way out of main. */
static void keyring_clearp(struct donor_keyring **kr) { donor_keyring_clear(*kr); }

static void shutdown_drain(struct daemon *d)
{
	uint64_t until = now_ns() + CLOSE_GRACE_NS;
	struct conn *c, *next;

	donor_server_notify_shutdown(d->srv);
	LIST_FOREACH(c, &d->conns, link)
		conn_close(c);
	while (!LIST_EMPTY(&d->conns) && now_ns() < until + CLOSE_GRACE_NS) {
		struct __kernel_timespec ts = { .tv_nsec = 50000000 };
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		for (c = LIST_FIRST(&d->conns); c; c = next) {
			/* glibc's <sys/queue.h> has no LIST_FOREACH_SAFE; pumping may free c. */
			next = LIST_NEXT(c, link);
			conn_pump(d, c);
		}
		io_uring_submit_and_wait_timeout(&d->ring, &cqe, 1, &ts, NULL);
		io_uring_for_each_cqe(&d->ring, head, cqe) {
			struct op *op = io_uring_cqe_get_data(cqe);
			if (op && (op->kind == OP_RECV || op->kind == OP_SEND))
				handle_cqe(d, op, cqe->res);
			n++;
		}
		io_uring_cq_advance(&d->ring, n);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },   { "capacity", required_argument, NULL, 'c' },
		{ "key-file", required_argument, NULL, 'k' }, { "control", required_argument, NULL, 'C' },
		{ "lease", required_argument, NULL, 'L' },    { "revoke-grace", required_argument, NULL, 'g' },
		{ "log-level", required_argument, NULL, 'v' }, { "help", no_argument, NULL, 'h' },
		{ "max-connections", required_argument, NULL, 'M' },
		{ "preauth-timeout", required_argument, NULL, 'T' },
		{ "preauth-max", required_argument, NULL, 'P' },
		{ "preauth-per-address", required_argument, NULL, 'A' },
		{ "client-key", required_argument, NULL, 'K' },
		{ "client-keys-only", no_argument, NULL, 'O' },
		{ "preallocate", no_argument, NULL, 'p' },
		{ "version", no_argument, NULL, 'V' },	      {}
	};
	const char *listen_url = NULL, *key_file = NULL, *control = NULL;
	bool preallocate = false;
	struct donor_server_config cfg = { .lease_s = 60, .revoke_grace_s = 30 };
	struct daemon d = { .lfd = -1, .cfd = -1, .sfd = -1,
			    .lim = { .preauth_timeout_s = 10, .preauth_max = 256, .preauth_per_addr = 16,
				     .max_conns = 1024 } };
	_cleanup_(keyring_clearp) struct donor_keyring *keys = &d.keys;
	struct rlimit nofile;
	uint64_t last_tick = 0;
	sigset_t mask;
	char sz[32];
	int o, r;

	log_set_prefix("uffd-donor");
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'l':
			listen_url = optarg;
			break;
		case 'c':
			if (parse_size(optarg, &cfg.capacity) < 0) {
				log_err("--capacity %s: expected a size such as 512M or 8G", optarg);
				return 2;
			}
			break;
		case 'k':
			key_file = optarg;
			break;
		case 'K': {
			_cleanup_free_ char *id = strdup(optarg);
			char *eq = id ? strchr(id, '=') : NULL;

			if (!eq || eq == id || !eq[1]) {
				log_err("--client-key %s: expected ID=FILE", optarg);
				return 2;
			}
			*eq = '\0';
			if (donor_keyring_add(&d.keys, id, eq + 1) < 0)
				return 1;
			break;
		}
		case 'O':
			d.keys.shared_refused = true;
			break;
		case 'C':
			control = optarg;
			break;
		case 'p':
			preallocate = true;
			break;
		case 'L':
			if (parse_uint("--lease", optarg, 86400 * 7, &cfg.lease_s) < 0)
				return 2;
			break;
		case 'g':
			if (parse_uint("--revoke-grace", optarg, 86400, &cfg.revoke_grace_s) < 0)
				return 2;
			break;
		case 'M':
			if (parse_uint("--max-connections", optarg, 1u << 20, &d.lim.max_conns) < 0)
				return 2;
			break;
		case 'T':
			if (parse_uint("--preauth-timeout", optarg, 3600, &d.lim.preauth_timeout_s) < 0)
				return 2;
			break;
		case 'P':
			if (parse_uint("--preauth-max", optarg, 1u << 20, &d.lim.preauth_max) < 0)
				return 2;
			break;
		case 'A':
			if (parse_uint("--preauth-per-address", optarg, 1u << 20, &d.lim.preauth_per_addr) < 0)
				return 2;
			break;
		case 'v': {
			enum log_level lvl;
			if (log_parse_level(optarg, &lvl) < 0) {
				log_err("--log-level %s: allowed values are error, warn, info, debug", optarg);
				return 2;
			}
			log_set_level(lvl);
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("uffd-donor %s\n", UFFDVM_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc || !listen_url || !cfg.capacity) {
		log_err("%s", optind < argc ? "unexpected argument" : "--listen and --capacity are required");
		usage(stderr);
		return 2;
	}
	if (!d.lim.max_conns || !d.lim.preauth_timeout_s || !d.lim.preauth_max || !d.lim.preauth_per_addr) {
		log_err("--max-connections, --preauth-timeout, --preauth-max and --preauth-per-address must be at least 1");
		return 2;
	}
	/* Each connection is a descriptor: take what the hard limit allows (the unit sets LimitNOFILE). */
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < (rlim_t)d.lim.max_conns + CTL_MAX_CONNS + 32)
		log_warn("open file limit %llu is below --max-connections %u plus %u: accepting pauses when it is reached",
			 (unsigned long long)nofile.rlim_cur, d.lim.max_conns, CTL_MAX_CONNS + 32);
	if (d.keys.shared_refused && !d.keys.n) {
		log_err("--client-keys-only needs at least one --client-key ID=FILE");
		return 2;
	}
	if (d.keys.shared_refused && key_file)
		log_warn("--client-keys-only: the key in --key-file %s is not accepted", key_file);
	if (key_file) {
		if (donor_key_load(key_file, &d.keys.shared) < 0)
			return 1;
	} else if (!d.keys.shared_refused) {
		log_warn("no --key-file: every local process can use this donor's memory%s",
			 d.keys.n ? " under ids without --client-key" : "");
	}
	cfg.keys = &d.keys;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	d.sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	/* Without any secret key a donor is only for local processes. */
	d.lfd = bind_tcp(listen_url, d.keys.shared.len == 0 && !d.keys.shared_refused);
	if (d.lfd < 0)
		return 1;
	if (strncmp(listen_url, "rdma://", 7) == 0) {
#if HAVE_RDMA
		_cleanup_free_ char *host = NULL;
		const char *port;

		/* bind_tcp() above already refused a malformed address. */
		if (split_host_port(listen_url + 7, &host, &port) < 0 || donor_rdma_new(host, port, &d.rd) < 0)
			return 1;
		cfg.ext_handler = donor_rdma_ext;
		cfg.ext_opaque = d.rd;
#else
		log_err("--listen %s: this uffd-donor was built without RDMA support "
			"(libibverbs/librdmacm missing at build time; meson -Drdma=enabled)", listen_url);
		return 1;
#endif
	}
	if (control) {
		d.cfd = listen_unix(control);
		if (d.cfd < 0)
			return 1;
	}
	r = io_uring_queue_init(256, &d.ring, 0);
	if (r < 0) {
		log_err_errno(r, "io_uring_queue_init");
		return 1;
	}
	d.srv = donor_server_new(&cfg);
	if (!d.srv) {
		log_err("out of memory");
		return 1;
	}
	if (preallocate && preallocate_capacity(d.srv, cfg.capacity) < 0)
		return 1;
	/* Only now: a pager that connected earlier would wait for the preallocation and time out. */
	if (listen(d.lfd, 128) < 0) {
		log_err_errno(-errno, "--listen %s", listen_url);
		return 1;
	}
#if HAVE_RDMA
	if (d.rd) {
		donor_rdma_set_server(d.rd, d.srv);
		d.rdma_op = (struct op){ OP_RDMA, NULL };
		arm_rdma(&d);
	}
#endif
	d.accept_op = (struct op){ OP_ACCEPT, NULL };
	d.ctl_accept_op = (struct op){ OP_CTL_ACCEPT, NULL };
	d.signal_op = (struct op){ OP_SIGNAL, NULL };
	arm_accept(&d, d.lfd, &d.accept_op);
	if (d.cfd >= 0)
		arm_accept(&d, d.cfd, &d.ctl_accept_op);
	arm_signal(&d);
	log_info("listening on %s, capacity %s, lease %us%s", listen_url,
		 format_size(cfg.capacity, sz, sizeof(sz)), cfg.lease_s,
		 key_file || d.keys.shared_refused ? "" : " (no authentication key)");

	while (!d.stop) {
		struct __kernel_timespec ts = { .tv_nsec = 200000000 };
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		uint64_t now;

		io_uring_submit_and_wait_timeout(&d.ring, &cqe, 1, &ts, NULL);
		io_uring_for_each_cqe(&d.ring, head, cqe) {
			handle_cqe(&d, io_uring_cqe_get_data(cqe), cqe->res);
			n++;
		}
		io_uring_cq_advance(&d.ring, n);
		now = now_ns();
		if (d.accept_paused_until && now >= d.accept_paused_until) {
			d.accept_paused_until = 0;
			if (d.accept_paused[0])
				arm_accept(&d, d.lfd, &d.accept_op);
			if (d.accept_paused[1])
				arm_accept(&d, d.cfd, &d.ctl_accept_op);
			d.accept_paused[0] = d.accept_paused[1] = false;
		}
		if (now - last_tick > 100000000ULL) {
			preauth_expire(&d, now);
			donor_server_tick(d.srv, now);
#if HAVE_RDMA
			donor_rdma_reconcile(d.rd);
#endif
			last_tick = now;
		}
		for (struct conn *c = LIST_FIRST(&d.conns), *next; c; c = next) {
			next = LIST_NEXT(c, link);
			conn_pump(&d, c);
		}
	}
	shutdown_drain(&d);
	while (!LIST_EMPTY(&d.conns))
		conn_free(&d, LIST_FIRST(&d.conns));
#if HAVE_RDMA
	donor_rdma_free(d.rd);
#endif
	io_uring_queue_exit(&d.ring);
	donor_server_free(d.srv);
	close(d.lfd);
	if (d.cfd >= 0) {
		close(d.cfd);
		unlink(control);
	}
	close(d.sfd);
	log_info("stopped");
	return 0;
}
