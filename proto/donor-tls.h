/* SPDX-License-Identifier: MIT */
/*
 * TLS 1.3 for the donor link, both ends (OpenSSL libssl). The key file's
 * bytes are stretched with HKDF-SHA256 into an external PSK; the client
 * offers it under a PSK identity that is its client id, so the donor learns
 * the id from the handshake itself. No certificates are involved. Every
 * byte after the handshake travels in AES-256-GCM records keyed from that
 * handshake (with an ephemeral ECDHE share mixed in), so an on-path party
 * can neither read nor change nor replay frames.
 *
 * The SSL object talks to a BIO pair, never to a socket: callers move
 * ciphertext between the network and the pair themselves (the donor through
 * io_uring, the pager with blocking sockets), and all buffers are fixed at
 * creation, so no record costs an allocation. A donor_tls is not
 * thread-safe; callers that read and write from two threads serialise the
 * calls.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "donor-auth.h"

struct donor_tls;

/* Client side: offers the PSK derived from key under identity client_id. Returns 0 or -errno. */
int donor_tls_new_client(const struct donor_key *key, const char *client_id, struct donor_tls **ret);
/* Donor side: accepts any valid client id holding the PSK derived from key. Returns 0 or -errno. */
int donor_tls_new_server(const struct donor_key *key, struct donor_tls **ret);
/*
 * Donor side with per-id keys: the PSK is derived from the key keys holds
 * for the offered identity (donor_keyring_find), so an id with its own key
 * is refused with the shared one. keys must outlive the object. Returns 0
 * or -errno.
 */
int donor_tls_new_server_keys(const struct donor_keyring *keys, struct donor_tls **ret);
/* NULL-safe. */
void donor_tls_free(struct donor_tls *t);

/*
 * Advances the handshake. Returns 0 once it is complete, -EAGAIN while it
 * needs ciphertext moved (donor_tls_net_out/net_in), -EACCES when the peer
 * holds another key or offers no acceptable identity, -EPROTO otherwise.
 */
int donor_tls_handshake(struct donor_tls *t);
/* Client id the peer authenticated with (donor side, after the handshake), else "". */
const char *donor_tls_peer_id(const struct donor_tls *t);

/* Ciphertext from the network: takes up to len bytes. Returns the count taken (0 when full). */
size_t donor_tls_net_in(struct donor_tls *t, const void *buf, size_t len);
/* Ciphertext for the network: moves up to max bytes into buf. Returns the count. */
size_t donor_tls_net_out(struct donor_tls *t, void *buf, size_t max);
/* Ciphertext bytes waiting for donor_tls_net_out. */
size_t donor_tls_net_pending(const struct donor_tls *t);

/*
 * Encrypts up to len bytes of plaintext. Returns the count taken (0 when the
 * outgoing ciphertext buffer is full: move it out first) or -EPROTO.
 */
int donor_tls_write(struct donor_tls *t, const void *buf, size_t len);
/*
 * Decrypts into buf. Returns the count (> 0), -EAGAIN (needs ciphertext),
 * -ECONNRESET (peer closed), -EBADMSG (a record failed authentication: the
 * stream was tampered with) or -EPROTO.
 */
int donor_tls_read(struct donor_tls *t, void *buf, size_t len);

/* Blocking helpers over a connected socket, each bounded by deadline (now_ns() clock). */
/* Runs the handshake to its end. Returns 0 or -errno (-ETIMEDOUT, -EACCES, ...). */
int donor_tls_sock_handshake(struct donor_tls *t, int fd, uint64_t deadline);
/* Encrypts and sends all of buf. Returns 0 or -errno. */
int donor_tls_sock_send(struct donor_tls *t, int fd, const void *buf, size_t len, uint64_t deadline);
/* Receives exactly len bytes of plaintext. Returns 0 or -errno. */
int donor_tls_sock_recv(struct donor_tls *t, int fd, void *buf, size_t len, uint64_t deadline);
