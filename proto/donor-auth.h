/* SPDX-License-Identifier: MIT */
/*
 * Pre-shared-key authentication of donor sessions. The donor sends a fresh
 * random nonce per connection; the client answers
 * HMAC-SHA256(key, donor_nonce || client_nonce || client_id) and the donor
 * proves itself back with HMAC-SHA256(key, "donor" || client_nonce ||
 * donor_nonce || client_id). Each donor nonce admits one answer only, so a
 * recorded answer is worthless on a later connection, and a replayed
 * challenge cannot make a client accept an impostor donor.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "donor-proto.h"

#define DONOR_KEY_MAX 256u
#define DONOR_KEY_MIN 32u

struct donor_key {
	uint8_t bytes[DONOR_KEY_MAX];
	size_t len;
};

/*
 * Reads a key file: a regular file, not readable or writable by group or
 * others (0600 or 0400), 32..256 bytes after trailing whitespace is dropped.
 * Errors name the file and the reason on the log. Returns 0 or -errno
 * (-EPERM for loose permissions, -EINVAL for a bad length).
 */
int donor_key_load(const char *path, struct donor_key *ret_key);

/* A client id bound to a key of its own (uffd-donor --client-key ID=FILE). */
struct donor_client_key {
	char id[DONOR_CLIENT_ID_MAX + 1];
	struct donor_key key;
};

/*
 * The donor's keys. A listed id proves its own key and nothing else, so
 * holders of the shared key cannot claim it; other ids prove the shared
 * key, unless shared_refused (then only listed ids get in).
 */
struct donor_keyring {
	struct donor_key shared;
	bool shared_refused;
	struct donor_client_key *ids;
	size_t n;
};

/*
 * Loads path (as donor_key_load) as client_id's own key. Errors name the id
 * and file on the log. Returns 0 or -errno (-EINVAL for an invalid id,
 * -EEXIST when the id already has a key).
 */
int donor_keyring_add(struct donor_keyring *kr, const char *client_id, const char *path);
/* The key client_id must prove, or NULL when it may not connect. */
const struct donor_key *donor_keyring_find(const struct donor_keyring *kr, const char *client_id);
/* Wipes and frees the per-id keys and wipes the shared one. */
void donor_keyring_clear(struct donor_keyring *kr);

/* Fills buf with random bytes from getrandom(2). Returns 0 or -errno. */
int donor_random(void *buf, size_t len);

/*
 * The client's answer and the donor's proof (HMAC-SHA256, libcrypto).
 * client_id is at most DONOR_CLIENT_ID_MAX bytes. Returns 0, -EINVAL or
 * -EIO (libcrypto failed; out is zeroed then).
 */
int donor_auth_client_mac(const struct donor_key *key, const uint8_t donor_nonce[DONOR_NONCE_LEN],
			  const uint8_t client_nonce[DONOR_NONCE_LEN], const char *client_id,
			  uint8_t out[DONOR_MAC_LEN]);
int donor_auth_donor_mac(const struct donor_key *key, const uint8_t donor_nonce[DONOR_NONCE_LEN],
			 const uint8_t client_nonce[DONOR_NONCE_LEN], const char *client_id,
			 uint8_t out[DONOR_MAC_LEN]);

/* Compares in time independent of where the buffers differ. */
bool donor_ct_equal(const void *a, const void *b, size_t len);

/* Donor side of one handshake; a challenge is spent by its first check. */
struct donor_challenge {
	uint8_t nonce[DONOR_NONCE_LEN];
	int armed;
};

/* Draws a fresh nonce. Returns 0 or -errno. */
int donor_challenge_arm(struct donor_challenge *c);
/*
 * Checks a client's answer and disarms the challenge whatever the outcome.
 * Returns 0, -EACCES (wrong answer), -EALREADY (no challenge pending, e.g.
 * a replayed AUTH) or -EIO (libcrypto failed).
 */
int donor_challenge_check(struct donor_challenge *c, const struct donor_key *key,
			  const char *client_id, const struct donor_auth_req *answer);
