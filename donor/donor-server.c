/* SPDX-License-Identifier: MIT */
/*
 * Donor request handling (see donor-server.h). Slabs belong to client
 * identities, not to connections: a pager that reconnects under the same
 * authenticated id within the lease finds its slabs again, and a newer
 * session of an id takes over from an older one (whose connection may be
 * half-dead). The pre-shared key is the trust boundary; ids separate
 * namespaces between pagers that share it.
 */
#include "donor-server.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-proto.h"
#include "donor-slab.h"
#include "log.h"
#include "util.h"

struct client {
	char id[DONOR_CLIENT_ID_MAX + 1];
	uint32_t owner; /* index + 1; also the owner id in the slab table */
	bool in_use;
	struct donor_session *sess;
	uint64_t detached_at;
	uint64_t pages_written, pages_read;
};

enum sess_state { SESS_NEW, SESS_CHALLENGED, SESS_AUTHED, SESS_DEAD };

struct donor_session {
	struct donor_server *srv;
	struct donor_session *next, *prev;
	enum sess_state state;
	char peer[64];
	char client_id[DONOR_CLIENT_ID_MAX + 1];
	char tls_id[DONOR_CLIENT_ID_MAX + 1]; /* proved by the TLS handshake; "" when none ran */
	struct donor_challenge chal;
	const struct donor_key *key; /* the key HELLO's client id proves; set by HELLO */
	struct client *client;
	bool closing;
	struct donor_buf out;
	void *opaque;
};

struct donor_server {
	struct donor_server_config cfg;
	struct donor_key key;
	struct donor_slabs *slabs;
	struct client *clients;
	unsigned nclients;
	struct donor_session *sessions;
	uint64_t errors;
};

struct donor_server *donor_server_new(const struct donor_server_config *cfg)
{
	struct donor_server *srv = calloc(1, sizeof(*srv));

	if (!srv)
		return NULL;
	srv->cfg = *cfg;
	if (cfg->key)
		srv->key = *cfg->key;
	srv->cfg.key = &srv->key;
	srv->slabs = donor_slabs_new(cfg->capacity);
	if (!srv->slabs) {
		free(srv);
		return NULL;
	}
	return srv;
}

void donor_server_free(struct donor_server *srv)
{
	if (!srv)
		return;
	while (srv->sessions)
		donor_session_free(srv->sessions);
	donor_slabs_free(srv->slabs);
	free(srv->clients);
	memset(&srv->key, 0, sizeof(srv->key));
	free(srv);
}

struct donor_session *donor_session_new(struct donor_server *srv, const char *peer)
{
	struct donor_session *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->srv = srv;
	snprintf(s->peer, sizeof(s->peer), "%s", peer ? peer : "?");
	donor_buf_init(&s->out);
	s->next = srv->sessions;
	if (srv->sessions)
		srv->sessions->prev = s;
	srv->sessions = s;
	return s;
}

static void detach(struct donor_session *s)
{
	if (s->client && s->client->sess == s) {
		s->client->sess = NULL;
		s->client->detached_at = now_ns();
		log_info("client %s (%s) disconnected; its %u slabs are kept for %us", s->client->id,
			 s->peer, donor_slabs_count(s->srv->slabs, s->client->owner), s->srv->cfg.lease_s);
	}
	s->client = NULL;
}

void donor_session_free(struct donor_session *s)
{
	if (!s)
		return;
	detach(s);
	if (s->prev)
		s->prev->next = s->next;
	else
		s->srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	donor_buf_release(&s->out);
	free(s);
}

struct donor_buf *donor_session_out(struct donor_session *s) { return &s->out; }
bool donor_session_closing(const struct donor_session *s) { return s->closing; }
void donor_session_set_opaque(struct donor_session *s, void *opaque) { s->opaque = opaque; }
void *donor_session_get_opaque(const struct donor_session *s) { return s->opaque; }

struct donor_slabs *donor_server_slabs(struct donor_server *srv) { return srv->slabs; }
uint32_t donor_session_owner(const struct donor_session *s)
{
	return s->state == SESS_AUTHED && s->client ? s->client->owner : 0;
}
const char *donor_session_peer(const struct donor_session *s) { return s->peer; }

static struct client *client_find(struct donor_server *srv, const char *id)
{
	for (unsigned i = 0; i < srv->nclients; i++)
		if (srv->clients[i].in_use && strcmp(srv->clients[i].id, id) == 0)
			return &srv->clients[i];
	return NULL;
}

static struct client *client_get(struct donor_server *srv, const char *id)
{
	struct client *c = client_find(srv, id);
	unsigned i;

	if (c)
		return c;
	for (i = 0; i < srv->nclients; i++)
		if (!srv->clients[i].in_use)
			break;
	if (i == srv->nclients) {
		/* Session pointers point at clients: grow by moving, then fix them up. */
		unsigned n = srv->nclients ? srv->nclients * 2 : 8;
		struct client *t = realloc(srv->clients, n * sizeof(*t));
		if (!t)
			return NULL;
		memset(t + srv->nclients, 0, (n - srv->nclients) * sizeof(*t));
		srv->clients = t;
		srv->nclients = n;
		for (unsigned k = 0; k < srv->nclients; k++)
			if (t[k].in_use && t[k].sess)
				t[k].sess->client = &t[k];
	}
	c = &srv->clients[i];
	memset(c, 0, sizeof(*c));
	c->in_use = true;
	c->owner = i + 1;
	/* memset above already terminated the id. */
	memcpy(c->id, id, strnlen(id, DONOR_CLIENT_ID_MAX));
	return c;
}

static int bind_client(struct donor_session *s)
{
	struct client *c = client_get(s->srv, s->client_id);

	if (!c)
		return -ENOMEM;
	if (c->sess && c->sess != s) {
		log_warn("client %s: new session from %s replaces the one from %s", c->id, s->peer,
			 c->sess->peer);
		c->sess->client = NULL;
		c->sess->closing = true;
	}
	c->sess = s;
	c->detached_at = 0;
	s->client = c;
	s->state = SESS_AUTHED;
	return 0;
}

int donor_session_set_tls_id(struct donor_session *s, const char *client_id)
{
	if (s->state != SESS_NEW || !donor_client_id_valid(client_id, strlen(client_id)))
		return -EINVAL;
	snprintf(s->tls_id, sizeof(s->tls_id), "%s", client_id);
	return 0;
}

int donor_session_force_auth(struct donor_session *s, const char *client_id)
{
	if (!donor_client_id_valid(client_id, strlen(client_id)))
		return -EINVAL;
	snprintf(s->client_id, sizeof(s->client_id), "%s", client_id);
	return bind_client(s);
}

static int reply_err(struct donor_session *s, const struct donor_hdr *h, int err)
{
	s->srv->errors++;
	return donor_frame_put(&s->out, h->opcode, DONOR_F_REPLY, h->req_id, (uint32_t)-err, NULL, 0);
}

static int reply_ok(struct donor_session *s, const struct donor_hdr *h, const void *p, size_t n)
{
	return donor_frame_put(&s->out, h->opcode, DONOR_F_REPLY, h->req_id, 0, p, n);
}

static int handle_hello(struct donor_session *s, const struct donor_hdr *h, const uint8_t *p)
{
	struct donor_hello_req req;
	int r;

	if (s->state != SESS_NEW) {
		reply_err(s, h, -EALREADY);
		return -EALREADY;
	}
	r = donor_dec_hello(p, h->len, &req);
	if (r < 0) {
		log_warn("%s: malformed HELLO", s->peer);
		reply_err(s, h, r);
		return r;
	}
	/* The id is the one the key holder proved in TLS; it cannot name another client's slabs. */
	if (s->tls_id[0] && strcmp(req.client_id, s->tls_id) != 0) {
		log_warn("%s: HELLO names client '%s' but TLS authenticated '%s'; closing", s->peer, req.client_id,
			 s->tls_id);
		reply_err(s, h, -EACCES);
		return -EACCES;
	}
	/* An id with its own key proves that key here too, the same one TLS required. */
	s->key = s->srv->cfg.keys ? donor_keyring_find(s->srv->cfg.keys, req.client_id) : &s->srv->key;
	if (!s->key) {
		log_warn("%s: client '%s' has no key of its own and the shared key is refused; closing", s->peer,
			 req.client_id);
		reply_err(s, h, -EACCES);
		return -EACCES;
	}
	r = donor_challenge_arm(&s->chal);
	if (r < 0) {
		reply_err(s, h, r);
		return r;
	}
	memcpy(s->client_id, req.client_id, sizeof(s->client_id));
	s->state = SESS_CHALLENGED;
	return reply_ok(s, h, s->chal.nonce, DONOR_NONCE_LEN);
}

static int handle_auth(struct donor_session *s, const struct donor_hdr *h, const uint8_t *p)
{
	struct donor_auth_reply rep = { .slab_size = DONOR_SLAB_SIZE, .page_size = PAGE_SIZE_4K };
	struct donor_auth_req req;
	int r;

	r = donor_dec_auth(p, h->len, &req);
	if (r == 0 && !s->key)
		r = -EALREADY; /* no HELLO yet, so no challenge either */
	if (r == 0)
		r = donor_challenge_check(&s->chal, s->key, s->client_id, &req);
	if (r < 0) {
		log_warn("%s: authentication of client '%s' failed: %s", s->peer,
			 s->state == SESS_CHALLENGED ? s->client_id : "?",
			 r == -EACCES ? "wrong answer (key mismatch?)" : strerror(-r));
		reply_err(s, h, r);
		return r;
	}
	/* The proof first: a libcrypto failure must leave no client bound. */
	r = donor_auth_donor_mac(s->key, s->chal.nonce, req.client_nonce, s->client_id, rep.donor_mac);
	if (r == 0)
		r = bind_client(s);
	if (r < 0) {
		reply_err(s, h, r);
		return r;
	}
	rep.lease_s = s->srv->cfg.lease_s;
	rep.nslabs = donor_slabs_count(s->srv->slabs, s->client->owner);
	log_info("client %s authenticated from %s (%u slabs held)", s->client_id, s->peer, rep.nslabs);
	return donor_enc_auth_reply(&s->out, h->req_id, &rep);
}

static int handle_write(struct donor_session *s, const struct donor_hdr *h, const uint8_t *p)
{
	struct donor_write_req w;
	uint8_t *mem;
	int r;

	r = donor_dec_write(p, h->len, &w);
	if (r == 0)
		r = donor_slabs_lookup(s->srv->slabs, s->client->owner, w.slab, true, &mem);
	/* Check every slot before writing any, so a rejected batch changes nothing. */
	for (uint32_t i = 0; r == 0 && i < w.count; i++) {
		uint32_t slot;
		const uint8_t *page;
		donor_write_entry(&w, i, &slot, &page);
		if (slot >= DONOR_SLAB_SLOTS)
			r = -ERANGE;
	}
	if (r < 0)
		return reply_err(s, h, r);
	for (uint32_t i = 0; i < w.count; i++) {
		uint32_t slot;
		const uint8_t *page;
		donor_write_entry(&w, i, &slot, &page);
		memcpy(mem + (size_t)slot * DONOR_SLOT_SIZE, page, DONOR_SLOT_SIZE);
	}
	s->client->pages_written += w.count;
	return reply_ok(s, h, NULL, 0);
}

static int handle_read(struct donor_session *s, const struct donor_hdr *h, const uint8_t *p)
{
	struct donor_read_req rd;
	size_t off;
	int r;

	r = donor_dec_read(p, h->len, &rd);
	for (uint32_t i = 0; r == 0 && i < rd.count; i++) {
		uint32_t slab, slot;
		uint8_t *mem;
		donor_read_entry(&rd, i, &slab, &slot);
		r = donor_slabs_lookup(s->srv->slabs, s->client->owner, slab, false, &mem);
		if (r == 0 && slot >= DONOR_SLAB_SLOTS)
			r = -ERANGE;
	}
	if (r < 0)
		return reply_err(s, h, r);
	r = donor_frame_begin(&s->out, h->opcode, DONOR_F_REPLY, h->req_id, 0, &off);
	if (r == 0)
		r = donor_buf_reserve(&s->out, (size_t)rd.count * DONOR_SLOT_SIZE);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < rd.count; i++) {
		uint32_t slab, slot;
		uint8_t *mem = NULL;
		donor_read_entry(&rd, i, &slab, &slot);
		donor_slabs_lookup(s->srv->slabs, s->client->owner, slab, false, &mem);
		donor_buf_put(&s->out, mem + (size_t)slot * DONOR_SLOT_SIZE, DONOR_SLOT_SIZE);
	}
	s->client->pages_read += rd.count;
	return donor_frame_end(&s->out, off);
}

static unsigned connected_clients(const struct donor_server *srv)
{
	unsigned n = 0;

	for (unsigned i = 0; i < srv->nclients; i++)
		if (srv->clients[i].in_use && srv->clients[i].sess)
			n++;
	return n;
}

static int handle_list(struct donor_session *s, const struct donor_hdr *h)
{
	struct donor_slabs *sl = s->srv->slabs;
	unsigned n = donor_slabs_count(sl, s->client->owner);
	_cleanup_free_ uint32_t *ids = NULL, *flags = NULL;
	size_t off;
	int r;

	if (n > DONOR_MAX_LIST_SLABS)
		n = DONOR_MAX_LIST_SLABS;
	ids = calloc(n + 1, sizeof(*ids));
	flags = calloc(n + 1, sizeof(*flags));
	if (!ids || !flags)
		return reply_err(s, h, -ENOMEM);
	donor_slabs_list(sl, s->client->owner, ids, flags, n);
	r = donor_frame_begin(&s->out, h->opcode, DONOR_F_REPLY, h->req_id, 0, &off);
	if (r == 0)
		r = donor_buf_put_u32(&s->out, n);
	for (unsigned i = 0; r == 0 && i < n; i++) {
		r = donor_buf_put_u32(&s->out, ids[i]);
		if (r == 0)
			r = donor_buf_put_u32(&s->out, flags[i]);
	}
	return r < 0 ? r : donor_frame_end(&s->out, off);
}

static int handle_frame(struct donor_session *s, const struct donor_hdr *h, const uint8_t *p)
{
	struct donor_slabs *sl = s->srv->slabs;
	uint32_t id;
	int r;

	if (h->flags != 0 || h->status != 0)
		return reply_err(s, h, -EBADMSG);
	if (s->state != SESS_AUTHED) {
		if (h->opcode == DONOR_OP_HELLO)
			return handle_hello(s, h, p);
		if (h->opcode == DONOR_OP_AUTH && s->state == SESS_CHALLENGED)
			return handle_auth(s, h, p);
		/* Unauthenticated peers learn nothing and lose the connection. */
		log_warn("%s: %s before authentication; closing", s->peer, donor_op_name(h->opcode));
		reply_err(s, h, -EACCES);
		return -EACCES;
	}
	switch (h->opcode) {
	case DONOR_OP_HELLO:
	case DONOR_OP_AUTH:
		return reply_err(s, h, -EISCONN);
	case DONOR_OP_ALLOC_SLAB:
		if (h->len != 0)
			return reply_err(s, h, -EBADMSG);
		r = donor_slabs_alloc(sl, s->client->owner, &id);
		if (r < 0)
			return reply_err(s, h, r);
		id = htole32(id);
		return reply_ok(s, h, &id, 4);
	case DONOR_OP_FREE_SLAB:
		r = donor_dec_u32(p, h->len, &id);
		if (r == 0)
			r = donor_slabs_release(sl, s->client->owner, id);
		return r < 0 ? reply_err(s, h, r) : reply_ok(s, h, NULL, 0);
	case DONOR_OP_WRITE_PAGES:
		return handle_write(s, h, p);
	case DONOR_OP_READ_PAGES:
		return handle_read(s, h, p);
	case DONOR_OP_PING:
		if (h->len > DONOR_PING_MAX)
			return reply_err(s, h, -EMSGSIZE);
		return reply_ok(s, h, p, h->len);
	case DONOR_OP_STATS: {
		struct donor_stats_reply st = {
			.capacity = donor_slabs_capacity(sl),
			.used = donor_slabs_used(sl),
			.own_bytes = (uint64_t)donor_slabs_count(sl, s->client->owner) * DONOR_SLAB_SIZE,
			.slab_size = DONOR_SLAB_SIZE,
			.clients = connected_clients(s->srv),
		};
		if (h->len != 0)
			return reply_err(s, h, -EBADMSG);
		return donor_enc_stats_reply(&s->out, h->req_id, &st);
	}
	case DONOR_OP_LIST_SLABS:
		if (h->len != 0)
			return reply_err(s, h, -EBADMSG);
		return handle_list(s, h);
	default:
		if (h->opcode > DONOR_OP_MAX_ && s->srv->cfg.ext_handler) {
			r = s->srv->cfg.ext_handler(s->srv->cfg.ext_opaque, s, h, p);
			return r < 0 ? reply_err(s, h, r) : 0;
		}
		return reply_err(s, h, -EOPNOTSUPP);
	}
}

int donor_session_input(struct donor_session *s, const uint8_t *data, size_t len,
			size_t *ret_consumed)
{
	size_t used = 0;
	int r = 0;

	while (!s->closing && s->out.len < DONOR_SESSION_OUT_HIGH) {
		struct donor_hdr h;

		r = donor_hdr_decode(data + used, len - used, &h);
		if (r == -EAGAIN) {
			r = 0;
			break;
		}
		if (r < 0) {
			/* Framing is lost: nothing after this point can be trusted. */
			struct donor_hdr e = { .opcode = 0 };
			log_warn("%s: bad frame header (%s); closing", s->peer, strerror(-r));
			reply_err(s, &e, r);
			break;
		}
		if (s->state != SESS_AUTHED && h.len > DONOR_PREAUTH_MAX_PAYLOAD) {
			/* Refused on the header: the payload is never waited for nor buffered. */
			log_warn("%s: %u-byte %s before authentication (at most %u); closing", s->peer, h.len,
				 donor_op_name(h.opcode), DONOR_PREAUTH_MAX_PAYLOAD);
			reply_err(s, &h, -EMSGSIZE);
			r = -EMSGSIZE;
			break;
		}
		if (len - used < DONOR_HDR_LEN + (size_t)h.len)
			break;
		r = handle_frame(s, &h, data + used + DONOR_HDR_LEN);
		used += DONOR_HDR_LEN + h.len;
		if (r < 0 && s->state != SESS_AUTHED)
			break;
		if (r == -ENOMEM)
			break;
		r = 0;
	}
	*ret_consumed = used;
	if (r < 0) {
		s->closing = true;
		s->state = SESS_DEAD;
	}
	return r;
}

static void notify_client(struct client *c, uint16_t kind, uint32_t deadline_ms,
			  const uint32_t *ids, uint32_t n)
{
	if (!c->sess)
		return;
	if (donor_enc_notify(&c->sess->out, kind, deadline_ms, ids, n) < 0)
		log_warn("client %s: cannot queue notification", c->id);
}

void donor_server_notify_shutdown(struct donor_server *srv)
{
	for (unsigned i = 0; i < srv->nclients; i++)
		if (srv->clients[i].in_use)
			notify_client(&srv->clients[i], DONOR_NOTIFY_SHUTDOWN, 0, NULL, 0);
}

void donor_server_tick(struct donor_server *srv, uint64_t now)
{
	unsigned n = donor_slabs_expire(srv->slabs, now);

	if (n)
		log_info("reclaimed %u revoked slabs at their deadline", n);
	for (unsigned i = 0; i < srv->nclients; i++) {
		struct client *c = &srv->clients[i];
		if (!c->in_use || c->sess)
			continue;
		if (now - c->detached_at >= (uint64_t)srv->cfg.lease_s * 1000000000ULL ||
		    donor_slabs_count(srv->slabs, c->owner) == 0) {
			n = donor_slabs_release_owner(srv->slabs, c->owner);
			if (n)
				log_info("client %s: lease expired, freed %u slabs", c->id, n);
			c->in_use = false;
		}
	}
}

static json_t *ctl_stats(struct donor_server *srv, const struct ctl_request *req)
{
	json_t *clients = json_array(), *o;
	uint64_t now = now_ns();

	for (unsigned i = 0; clients && i < srv->nclients; i++) {
		struct client *c = &srv->clients[i];
		unsigned n;
		if (!c->in_use)
			continue;
		n = donor_slabs_count(srv->slabs, c->owner);
		o = json_pack("{s:s, s:b, s:I, s:I, s:I, s:I}", "id", c->id, "connected", c->sess != NULL,
			      "slabs", (json_int_t)n, "bytes", (json_int_t)n * DONOR_SLAB_SIZE,
			      "pages_written", (json_int_t)c->pages_written, "pages_read",
			      (json_int_t)c->pages_read);
		if (o && !c->sess) {
			uint64_t gone = (now - c->detached_at) / 1000000000ULL;
			json_object_set_new(o, "lease_left_s",
					    json_integer(gone >= srv->cfg.lease_s ? 0 : srv->cfg.lease_s - gone));
		}
		json_array_append_new(clients, o);
	}
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "capacity",
			 (json_int_t)donor_slabs_capacity(srv->slabs), "used",
			 (json_int_t)donor_slabs_used(srv->slabs), "revoked",
			 (json_int_t)donor_slabs_revoked_bytes(srv->slabs), "slab_size",
			 (json_int_t)DONOR_SLAB_SIZE, "connected", (json_int_t)connected_clients(srv),
			 "errors", (json_int_t)srv->errors, "clients", clients);
}

/*
 * Revokes need slabs, one at a time from the client holding most (so the
 * biggest holders shrink towards the others), and notifies each owner once
 * with all its slabs and the deadline. Linear in the slab table plus need
 * times the client count: the event loop answers pings meanwhile even when
 * tens of thousands of slabs go.
 */
static json_t *revoke_slabs(struct donor_server *srv, unsigned need, unsigned grace_s)
{
	uint64_t deadline = now_ns() + (uint64_t)grace_s * 1000000000ULL;
	_cleanup_free_ unsigned *have = calloc(srv->nclients + 1, sizeof(*have));
	_cleanup_free_ unsigned *take = calloc(srv->nclients + 1, sizeof(*take));
	json_t *out = json_array();

	if (!out || !have || !take) {
		json_decref(out);
		return NULL;
	}
	/* Owner ids are client index + 1. */
	donor_slabs_count_unrevoked(srv->slabs, have, srv->nclients + 1);
	for (; need > 0; need--) {
		unsigned best = 0, best_n = 0;

		for (unsigned k = 0; k < srv->nclients; k++) {
			unsigned left = have[k + 1] - take[k + 1];
			if (srv->clients[k].in_use && left > best_n) {
				best = k + 1;
				best_n = left;
			}
		}
		if (!best)
			break;
		take[best]++;
	}
	for (unsigned k = 0; k < srv->nclients; k++) {
		struct client *c = &srv->clients[k];
		_cleanup_free_ uint32_t *ids = NULL;
		json_t *list;
		unsigned n;

		if (!take[k + 1])
			continue;
		ids = calloc(take[k + 1], sizeof(*ids));
		list = json_array();
		if (!ids || !list) {
			json_decref(list);
			continue;
		}
		n = donor_slabs_revoke_owner(srv->slabs, c->owner, take[k + 1], deadline, ids);
		for (unsigned i = 0; i < n; i++)
			json_array_append_new(list, json_integer(ids[i]));
		json_array_append_new(out, json_pack("{s:s, s:o}", "client", c->id, "slabs", list));
		log_info("capacity revoked: client %s must move %u slabs within %us", c->id, n, grace_s);
		notify_client(c, DONOR_NOTIFY_REVOKED, grace_s * 1000u, ids, n);
	}
	return out;
}

static json_t *ctl_set_capacity(struct donor_server *srv, const struct ctl_request *req)
{
	uint64_t cap = req->bytes, used, promised, keep;
	unsigned grace = json_object_get(req->args, "grace") ? (unsigned)req->number : srv->cfg.revoke_grace_s;
	unsigned need = 0;
	json_t *revoked;

	donor_slabs_set_capacity(srv->slabs, cap);
	used = donor_slabs_used(srv->slabs);
	promised = donor_slabs_revoked_bytes(srv->slabs);
	keep = used - promised;
	if (keep > cap)
		need = (unsigned)((keep - cap + DONOR_SLAB_SIZE - 1) / DONOR_SLAB_SIZE);
	log_info("capacity set to %llu bytes (%llu in use, %u slabs to revoke)",
		 (unsigned long long)cap, (unsigned long long)used, need);
	revoked = revoke_slabs(srv, need, grace);
	return json_pack("{s:I, s:I, s:I, s:o}", "capacity", (json_int_t)cap, "used", (json_int_t)used, "grace_s",
			 (json_int_t)grace, "revoked", revoked ? revoked : json_array());
}

/* The donor's control commands, on the framing and error shape of the pager's (proto/ctl-proto.h). */
enum donor_ctl_cmd { DONOR_CTL_STATS, DONOR_CTL_SET_CAPACITY, DONOR_CTL_MAX_ };

static const struct ctl_arg_spec args_none[] = { { .name = NULL } };
static const struct ctl_arg_spec args_set_capacity[] = {
	{ "capacity", CTL_ARG_BYTES, true, 0 },
	{ "grace", CTL_ARG_UINT, false, 86400 }, /* seconds; default --revoke-grace */
	{ .name = NULL },
};

static const struct ctl_command donor_commands[] = {
	{ DONOR_CTL_STATS, "donor.stats", 0, args_none, "capacity, use and every client's slabs and traffic" },
	{ DONOR_CTL_SET_CAPACITY, "donor.set-capacity", CTL_CMD_MUTATES, args_set_capacity,
	  "change the capacity; slabs over it are revoked from the clients holding most" },
};

_Static_assert(ARRAY_SIZE(donor_commands) == DONOR_CTL_MAX_, "one table entry per enum donor_ctl_cmd");

static json_t *(*const donor_handlers[])(struct donor_server *, const struct ctl_request *) = {
	[DONOR_CTL_STATS] = ctl_stats,
	[DONOR_CTL_SET_CAPACITY] = ctl_set_capacity,
};

json_t *donor_server_control(struct donor_server *srv, const char *line, size_t len)
{
	static const struct ctl_table table = { donor_commands, ARRAY_SIZE(donor_commands) };
	struct ctl_request req;
	json_t *result, *resp;
	char err[768];
	int r;

	r = ctl_request_parse_table(&table, line, len, &req, err, sizeof(err));
	if (r < 0) {
		resp = ctl_response_error(req.id, r, "%s", err);
	} else {
		result = donor_handlers[req.command->cmd](srv, &req);
		resp = result ? ctl_response_ok(req.id, result) : ctl_response_error(req.id, -ENOMEM, "out of memory");
	}
	ctl_request_clear(&req);
	return resp;
}
