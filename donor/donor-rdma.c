/* SPDX-License-Identifier: MIT */
/*
 * RDMA serving for uffd-donor (see donor-rdma.h and docs/donor-protocol.md,
 * "RDMA"). Isolation rests on protection domains: every attached session
 * gets its own PD, its queue pair lives in it and its slabs are registered
 * in it, so an rkey of one client's region fails with a remote access error
 * on any other client's queue pair even if the address and key leak. The
 * donor never posts work requests: its CQ exists only because a QP needs
 * one.
 */
#include "donor-rdma.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "donor-auth.h"
#include "donor-slab.h"
#include "log.h"
#include "util.h"

#define TOKEN_LEN 32

struct region {
	uint32_t slab;
	uint8_t *mem;
	struct ibv_mr *mr;
};

struct rsess {
	struct rsess *next;
	struct donor_session *sess;
	uint8_t token[TOKEN_LEN];
	bool token_armed;
	struct rdma_cm_id *id; /* connected queue pair, or NULL */
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	bool qp_created;
	struct region *regs;
	unsigned nregs, capregs;
};

struct donor_rdma {
	struct rdma_event_channel *ch;
	struct rdma_cm_id *listen_id;
	struct donor_server *srv;
	struct rsess *sessions;
	char where[96];
};

static const char *peer(const struct rsess *r) { return donor_session_peer(r->sess); }

int donor_rdma_new(const char *host, const char *port, struct donor_rdma **ret_rd)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res = NULL;
	struct ibv_device **devs;
	struct donor_rdma *rd;
	int n = 0, r;

	devs = ibv_get_device_list(&n);
	if (!devs || n == 0) {
		r = devs ? ENODEV : errno;
		if (devs)
			ibv_free_device_list(devs);
		log_err("no RDMA device: %s (load an RDMA driver, e.g. rdma_rxe with "
			"'rdma link add rxe0 type rxe netdev eth0'; see ibv_devices)",
			r == ENODEV ? "no verbs device found"
				     : r == ENOSYS ? "the kernel has no RDMA (verbs) support loaded"
						   : strerror(r));
		return -ENODEV;
	}
	ibv_free_device_list(devs);
	r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		log_err("--listen rdma://%s:%s: %s", host, port, gai_strerror(r));
		return -EINVAL;
	}
	rd = calloc(1, sizeof(*rd));
	if (!rd) {
		freeaddrinfo(res);
		return -ENOMEM;
	}
	snprintf(rd->where, sizeof(rd->where), "rdma://%s:%s", host, port);
	rd->ch = rdma_create_event_channel();
	if (!rd->ch) {
		r = -errno;
		goto fail;
	}
	if (fcntl(rd->ch->fd, F_SETFL, fcntl(rd->ch->fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    rdma_create_id(rd->ch, &rd->listen_id, rd, RDMA_PS_TCP) < 0 ||
	    rdma_bind_addr(rd->listen_id, res->ai_addr) < 0) {
		r = -errno;
		goto fail;
	}
	/* A specific address must be on an RDMA device; the wildcard binds to none yet. */
	if (!rd->listen_id->verbs) {
		bool any = res->ai_family == AF_INET
				   ? ((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr == INADDR_ANY
				   : IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr);
		if (!any) {
			log_err("no RDMA device: --listen %s: the address is on no RDMA-capable interface",
				rd->where);
			freeaddrinfo(res);
			donor_rdma_free(rd);
			return -ENODEV;
		}
	}
	if (rdma_listen(rd->listen_id, 64) < 0) {
		r = -errno;
		goto fail;
	}
	freeaddrinfo(res);
	*ret_rd = rd;
	return 0;
fail:
	log_err_errno(r, "--listen %s", rd->where);
	freeaddrinfo(res);
	donor_rdma_free(rd);
	return r;
}

static void regions_drop(struct rsess *rs)
{
	for (unsigned i = 0; i < rs->nregs; i++)
		ibv_dereg_mr(rs->regs[i].mr);
	rs->nregs = 0;
}

/* Tears down the queue pair, regions and PD of a session (the control session stays). */
static void qp_teardown(struct rsess *rs)
{
	regions_drop(rs);
	if (rs->id) {
		if (rs->qp_created) {
			rdma_disconnect(rs->id);
			rdma_destroy_qp(rs->id);
		}
		rdma_destroy_id(rs->id);
	}
	if (rs->cq)
		ibv_destroy_cq(rs->cq);
	if (rs->pd)
		ibv_dealloc_pd(rs->pd);
	rs->id = NULL;
	rs->cq = NULL;
	rs->pd = NULL;
	rs->qp_created = false;
}

static void rsess_free(struct donor_rdma *rd, struct rsess *rs)
{
	for (struct rsess **pp = &rd->sessions; *pp; pp = &(*pp)->next) {
		if (*pp == rs) {
			*pp = rs->next;
			break;
		}
	}
	qp_teardown(rs);
	free(rs->regs);
	free(rs);
}

void donor_rdma_free(struct donor_rdma *rd)
{
	if (!rd)
		return;
	while (rd->sessions)
		rsess_free(rd, rd->sessions);
	if (rd->listen_id)
		rdma_destroy_id(rd->listen_id);
	if (rd->ch)
		rdma_destroy_event_channel(rd->ch);
	free(rd);
}

void donor_rdma_set_server(struct donor_rdma *rd, struct donor_server *srv) { rd->srv = srv; }
int donor_rdma_fd(const struct donor_rdma *rd) { return rd->ch->fd; }

static struct rsess *rsess_of(struct donor_rdma *rd, const struct donor_session *s)
{
	for (struct rsess *rs = rd->sessions; rs; rs = rs->next)
		if (rs->sess == s)
			return rs;
	return NULL;
}

void donor_rdma_session_gone(struct donor_rdma *rd, struct donor_session *s)
{
	struct rsess *rs;

	if (!rd)
		return;
	rs = rsess_of(rd, s);
	if (rs) {
		log_info("%s: control session ended; RDMA connection and %u regions released", peer(rs),
			 rs->nregs);
		rsess_free(rd, rs);
	}
}

/* Accepts a connection that presents a live token; anything else is rejected. */
static void on_connect_request(struct donor_rdma *rd, struct rdma_cm_id *id, const void *pdata,
			       uint8_t pdata_len, uint8_t reads_wanted)
{
	struct ibv_qp_init_attr qa = { .qp_type = IBV_QPT_RC,
				       .cap = { .max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1,
						.max_recv_sge = 1 } };
	struct rdma_conn_param cp = { .rnr_retry_count = 7 };
	struct ibv_device_attr da;
	struct rsess *rs = NULL;

	if (pdata && pdata_len >= TOKEN_LEN) {
		for (rs = rd->sessions; rs; rs = rs->next)
			if (rs->token_armed && !rs->id && donor_ct_equal(rs->token, pdata, TOKEN_LEN))
				break;
	}
	if (!rs) {
		log_warn("%s: RDMA connection without a valid token refused", rd->where);
		rdma_reject(id, NULL, 0);
		rdma_destroy_id(id);
		return;
	}
	/* One connection per token: a replayed token finds nothing. */
	rs->token_armed = false;
	memset(rs->token, 0, sizeof(rs->token));
	rs->id = id;
	id->context = rs;
	rs->pd = ibv_alloc_pd(id->verbs);
	rs->cq = rs->pd ? ibv_create_cq(id->verbs, 2, NULL, NULL, 0) : NULL;
	if (rs->cq) {
		qa.send_cq = qa.recv_cq = rs->cq;
		rs->qp_created = rdma_create_qp(id, rs->pd, &qa) == 0;
	}
	if (!rs->qp_created || ibv_query_device(id->verbs, &da) != 0) {
		log_warn_errno(-errno, "%s: cannot set up the RDMA queue pair", peer(rs));
		rdma_reject(id, NULL, 0);
		qp_teardown(rs);
		return;
	}
	/* The client reads from us: we are the responder of its RDMA READs. */
	cp.responder_resources = reads_wanted < da.max_qp_rd_atom ? reads_wanted : (uint8_t)da.max_qp_rd_atom;
	if (cp.responder_resources == 0)
		cp.responder_resources = 1;
	cp.initiator_depth = 0;
	if (rdma_accept(id, &cp) < 0) {
		log_warn_errno(-errno, "%s: rdma_accept", peer(rs));
		qp_teardown(rs);
		return;
	}
	log_info("%s: RDMA queue pair %u accepted (client %u)", peer(rs), id->qp->qp_num,
		 donor_session_owner(rs->sess));
}

void donor_rdma_handle_events(struct donor_rdma *rd)
{
	struct rdma_cm_event *ev;

	while (rdma_get_cm_event(rd->ch, &ev) == 0) {
		struct rdma_cm_id *id = ev->id;
		enum rdma_cm_event_type type = ev->event;
		uint8_t pdata[TOKEN_LEN], plen = 0, depth = 0;
		struct rsess *rs;

		if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
			plen = ev->param.conn.private_data_len < TOKEN_LEN ? ev->param.conn.private_data_len
									  : TOKEN_LEN;
			if (ev->param.conn.private_data)
				memcpy(pdata, ev->param.conn.private_data, plen);
			else
				plen = 0;
			/* The CM reports the peer's initiator depth as our responder resources. */
			depth = ev->param.conn.responder_resources;
		}
		/* Destroying an id before acking its event would deadlock: ack first. */
		rdma_ack_cm_event(ev);
		switch (type) {
		case RDMA_CM_EVENT_CONNECT_REQUEST:
			on_connect_request(rd, id, pdata, plen, depth);
			break;
		case RDMA_CM_EVENT_ESTABLISHED:
			break;
		case RDMA_CM_EVENT_DISCONNECTED:
		case RDMA_CM_EVENT_CONNECT_ERROR:
		case RDMA_CM_EVENT_UNREACHABLE:
		case RDMA_CM_EVENT_REJECTED:
			rs = id ? id->context : NULL;
			if (rs && rs != (void *)rd && rs->id == id) {
				log_info("%s: RDMA connection ended (%s); %u regions released", peer(rs),
					 rdma_event_str(type), rs->nregs);
				qp_teardown(rs);
			}
			break;
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
			log_err("%s: RDMA device removed; dropping every RDMA connection", rd->where);
			for (rs = rd->sessions; rs; rs = rs->next)
				qp_teardown(rs);
			break;
		case RDMA_CM_EVENT_TIMEWAIT_EXIT:
			break;
		default:
			log_debug("%s: RDMA event %s ignored", rd->where, rdma_event_str(type));
			break;
		}
	}
}

static int handle_attach(struct donor_rdma *rd, struct donor_session *s, const struct donor_hdr *h)
{
	struct rsess *rs = rsess_of(rd, s);
	int r;

	if (h->len != 0)
		return -EBADMSG;
	if (!rs) {
		rs = calloc(1, sizeof(*rs));
		if (!rs)
			return -ENOMEM;
		rs->sess = s;
		rs->next = rd->sessions;
		rd->sessions = rs;
	} else if (rs->id) {
		/* A client re-attaching has given up on its old queue pair. */
		qp_teardown(rs);
	}
	r = donor_random(rs->token, TOKEN_LEN);
	if (r < 0)
		return r;
	rs->token_armed = true;
	return donor_frame_put(donor_session_out(s), h->opcode, DONOR_F_REPLY, h->req_id, 0, rs->token,
			       TOKEN_LEN);
}

static int handle_slab_key(struct donor_rdma *rd, struct donor_session *s, const struct donor_hdr *h,
			   const uint8_t *p)
{
	struct donor_slabs *slabs = donor_server_slabs(rd->srv);
	struct rsess *rs = rsess_of(rd, s);
	struct region *reg = NULL;
	uint8_t rep[16];
	uint8_t *mem;
	uint32_t id;
	int r;

	r = donor_dec_u32(p, h->len, &id);
	if (r < 0)
		return r;
	if (!rs || !rs->qp_created)
		return -ENOTCONN;
	r = donor_slabs_lookup(slabs, donor_session_owner(s), id, false, &mem);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < rs->nregs; i++)
		if (rs->regs[i].slab == id && rs->regs[i].mem == mem)
			reg = &rs->regs[i];
	if (!reg) {
		if (rs->nregs == rs->capregs) {
			unsigned n = rs->capregs ? rs->capregs * 2 : 16;
			struct region *t = realloc(rs->regs, n * sizeof(*t));
			if (!t)
				return -ENOMEM;
			rs->regs = t;
			rs->capregs = n;
		}
		reg = &rs->regs[rs->nregs];
		reg->mr = ibv_reg_mr(rs->pd, mem, DONOR_SLAB_BYTES,
				     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
					     IBV_ACCESS_REMOTE_READ);
		if (!reg->mr) {
			r = -errno;
			log_warn_errno(r, "%s: ibv_reg_mr of slab %#x (16 MiB; RLIMIT_MEMLOCK?)", peer(rs), id);
			return r;
		}
		reg->slab = id;
		reg->mem = mem;
		rs->nregs++;
	}
	{
		uint64_t addr = htole64((uint64_t)(uintptr_t)reg->mem);
		uint32_t rkey = htole32(reg->mr->rkey);
		uint32_t fl = htole32(donor_slabs_is_revoked(slabs, id) ? DONOR_SLAB_F_REVOKED : 0);
		memcpy(rep, &addr, 8);
		memcpy(rep + 8, &rkey, 4);
		memcpy(rep + 12, &fl, 4);
	}
	return donor_frame_put(donor_session_out(s), h->opcode, DONOR_F_REPLY, h->req_id, 0, rep,
			       sizeof(rep));
}

int donor_rdma_ext(void *opaque, struct donor_session *s, const struct donor_hdr *h,
		   const uint8_t *payload)
{
	struct donor_rdma *rd = opaque;

	switch (h->opcode) {
	case DONOR_OP_RDMA_ATTACH:
		return handle_attach(rd, s, h);
	case DONOR_OP_RDMA_SLAB_KEY:
		return handle_slab_key(rd, s, h, payload);
	default:
		return -EOPNOTSUPP;
	}
}

void donor_rdma_reconcile(struct donor_rdma *rd)
{
	struct donor_slabs *slabs;

	if (!rd || !rd->srv)
		return;
	slabs = donor_server_slabs(rd->srv);
	for (struct rsess *rs = rd->sessions; rs; rs = rs->next) {
		uint32_t owner = donor_session_owner(rs->sess);

		for (unsigned i = 0; i < rs->nregs;) {
			struct region *g = &rs->regs[i];
			uint8_t *mem = NULL;

			if (owner && donor_slabs_lookup(slabs, owner, g->slab, false, &mem) == 0 &&
			    mem == g->mem) {
				i++;
				continue;
			}
			/* Freed, expired or taken over: the key must stop working now. */
			ibv_dereg_mr(g->mr);
			*g = rs->regs[--rs->nregs];
		}
	}
}
