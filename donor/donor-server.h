/* SPDX-License-Identifier: MIT */
/*
 * The donor's state machine without any I/O: client identities and their
 * leases, sessions (one per connection), request handling, control commands
 * and timers. The uffd-donor daemon feeds it bytes from io_uring and sends
 * what it queues; the fuzz target and unit tests drive it directly.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "donor-auth.h"
#include "donor-proto.h"

struct donor_server;
struct donor_session;

/*
 * Extension hook: opcodes the core does not know, from authenticated
 * sessions, go here (the RDMA backend's attach and key requests). The
 * handler queues its reply on donor_session_out(s) and returns 0, or
 * returns -errno for the core to send as an error reply.
 */
typedef int (*donor_ext_fn)(void *opaque, struct donor_session *s, const struct donor_hdr *h,
			    const uint8_t *payload);

struct donor_server_config {
	uint64_t capacity;
	const struct donor_key *key; /* copied; every id proves it (when keys is NULL) */
	const struct donor_keyring *keys; /* per-id keys instead of key; not copied, outlives the server */
	unsigned lease_s;	     /* how long a disconnected client keeps its slabs */
	unsigned revoke_grace_s;     /* default deadline of a capacity revocation */
	donor_ext_fn ext_handler;    /* may be NULL: unknown opcodes get EOPNOTSUPP */
	void *ext_opaque;
};

/*
 * Largest payload a client may send before it has authenticated: the bigger
 * of HELLO (u16 length + client id) and AUTH (nonce + MAC). A longer frame
 * from an unauthenticated peer closes the connection before its payload is
 * read, so a stranger never makes the donor buffer a full-size frame.
 */
#define DONOR_PREAUTH_MAX_PAYLOAD (2u + DONOR_CLIENT_ID_MAX)
_Static_assert(DONOR_PREAUTH_MAX_PAYLOAD >= DONOR_NONCE_LEN + DONOR_MAC_LEN, "AUTH fits before authentication");

/* Stop parsing input while this much output waits: a client that does not read stalls itself only. */
#define DONOR_SESSION_OUT_HIGH (4u << 20)

struct donor_server *donor_server_new(const struct donor_server_config *cfg);
void donor_server_free(struct donor_server *srv);

/* peer names the connection in logs. Returns NULL on ENOMEM. */
struct donor_session *donor_session_new(struct donor_server *srv, const char *peer);
/* Ends a session; its client's slabs stay for the lease period. NULL-safe. */
void donor_session_free(struct donor_session *s);

/*
 * Handles the complete frames at the start of data, queueing replies on the
 * session's output; stops early when output passes DONOR_SESSION_OUT_HIGH.
 * *ret_consumed says how much was used. Returns 0, or -errno when the
 * session must be closed once its output is sent (failed authentication,
 * lost framing).
 */
int donor_session_input(struct donor_session *s, const uint8_t *data, size_t len,
			size_t *ret_consumed);
/* Output waiting to be sent; the caller consumes what it sent. */
struct donor_buf *donor_session_out(struct donor_session *s);
/* True once the session should be closed (taken over by a newer one, or after an error). */
bool donor_session_closing(const struct donor_session *s);
void donor_session_set_opaque(struct donor_session *s, void *opaque);
void *donor_session_get_opaque(const struct donor_session *s);
/* Slab table, for backends that hand out slab memory directly (RDMA). */
struct donor_slabs *donor_server_slabs(struct donor_server *srv);
/* Owner id of an authenticated session's client in the slab table; 0 before authentication. */
uint32_t donor_session_owner(const struct donor_session *s);
const char *donor_session_peer(const struct donor_session *s);
/*
 * Records the client id a TLS handshake proved; HELLO must then name the
 * same id. Returns 0 or -EINVAL (invalid id, or HELLO already seen).
 */
int donor_session_set_tls_id(struct donor_session *s, const char *client_id);
/* Test hook: authenticates the session as client_id without a handshake. Returns 0 or -errno. */
int donor_session_force_auth(struct donor_session *s, const char *client_id);

/* Runs lease expiry and revocation deadlines. */
void donor_server_tick(struct donor_server *srv, uint64_t now_ns);
/* Queues a SHUTDOWN notification on every authenticated session. */
void donor_server_notify_shutdown(struct donor_server *srv);

/*
 * Executes one control request line (len bytes, a trailing newline
 * allowed) of the control protocol (proto/ctl-proto.h; the donor's commands
 * are donor.stats and donor.set-capacity) and returns the response object:
 * {"ok":true,"result":{...},"id":...} or {"ok":false,"error":{"code":...,
 * "message":...},"id":...}. NULL only when out of memory.
 */
json_t *donor_server_control(struct donor_server *srv, const char *line, size_t len);
