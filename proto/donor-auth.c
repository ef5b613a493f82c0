/* SPDX-License-Identifier: MIT */
/*
 * Key loading and the challenge-response of donor sessions (see
 * donor-auth.h). HMAC-SHA256 and the constant-time compare come from
 * OpenSSL's libcrypto. The key never leaves this module except into
 * libcrypto's HMAC, and is never logged.
 */
#include "donor-auth.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

int donor_key_load(const char *path, struct donor_key *ret_key)
{
	_cleanup_close_ int fd = -1;
	uint8_t buf[DONOR_KEY_MAX + 64];
	struct stat st;
	ssize_t n;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return log_err_errno(-errno, "key file %s: cannot open", path);
	if (fstat(fd, &st) < 0)
		return log_err_errno(-errno, "key file %s: cannot stat", path);
	if (!S_ISREG(st.st_mode)) {
		log_err("key file %s: not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		log_err("key file %s: mode %04o gives access to group or others; use chmod 600",
			path, (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	n = read(fd, buf, sizeof(buf));
	if (n < 0)
		return log_err_errno(-errno, "key file %s: cannot read", path);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
			 buf[n - 1] == '\t'))
		n--;
	if ((size_t)n < DONOR_KEY_MIN || (size_t)n > DONOR_KEY_MAX) {
		/* A short key could be guessed offline from one recorded handshake. */
		log_err("key file %s: key is %zd bytes, required %u..%u (e.g. head -c 32 /dev/urandom | base64 > %s)",
			path, n, DONOR_KEY_MIN, DONOR_KEY_MAX, path);
		memset(buf, 0, sizeof(buf));
		return -EINVAL;
	}
	memcpy(ret_key->bytes, buf, (size_t)n);
	ret_key->len = (size_t)n;
	memset(buf, 0, sizeof(buf));
	return 0;
}

int donor_keyring_add(struct donor_keyring *kr, const char *client_id, const char *path)
{
	struct donor_client_key *ids;
	int r;

	if (!donor_client_id_valid(client_id, strlen(client_id))) {
		log_err("client key %s=%s: invalid client id (1..%u bytes of letters, digits and . _ : @ -)",
			client_id, path, DONOR_CLIENT_ID_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < kr->n; i++)
		if (strcmp(kr->ids[i].id, client_id) == 0) {
			log_err("client key %s=%s: client id %s already has a key", client_id, path, client_id);
			return -EEXIST;
		}
	/* A fresh array rather than realloc(): the old one is wiped, not left to the allocator. */
	ids = calloc(kr->n + 1, sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	r = donor_key_load(path, &ids[kr->n].key);
	if (r < 0) {
		log_err("client key for id %s not loaded", client_id);
		free(ids);
		return r;
	}
	snprintf(ids[kr->n].id, sizeof(ids[kr->n].id), "%s", client_id);
	if (kr->n) {
		memcpy(ids, kr->ids, kr->n * sizeof(*ids));
		OPENSSL_cleanse(kr->ids, kr->n * sizeof(*ids));
	}
	free(kr->ids);
	kr->ids = ids;
	kr->n++;
	return 0;
}

const struct donor_key *donor_keyring_find(const struct donor_keyring *kr, const char *client_id)
{
	for (size_t i = 0; i < kr->n; i++)
		if (strcmp(kr->ids[i].id, client_id) == 0)
			return &kr->ids[i].key;
	return kr->shared_refused ? NULL : &kr->shared;
}

void donor_keyring_clear(struct donor_keyring *kr)
{
	if (kr->ids)
		OPENSSL_cleanse(kr->ids, kr->n * sizeof(*kr->ids));
	free(kr->ids);
	kr->ids = NULL;
	kr->n = 0;
	OPENSSL_cleanse(&kr->shared, sizeof(kr->shared));
}

int donor_random(void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The longest MAC input: label, two nonces and the longest client id. */
#define MAC_INPUT_MAX (5 + 2 * DONOR_NONCE_LEN + DONOR_CLIENT_ID_MAX)

/* HMAC-SHA256(key, label || a || b || client_id) into out. Returns 0, -EINVAL or -EIO. */
static int mac(const struct donor_key *key, const char *label, const uint8_t *a, const uint8_t *b,
	       const char *client_id, uint8_t out[DONOR_MAC_LEN])
{
	size_t ll = strlen(label), il = strlen(client_id), outlen = 0;
	uint8_t msg[MAC_INPUT_MAX];
	int r = 0;

	if (ll > 5 || il > DONOR_CLIENT_ID_MAX)
		return -EINVAL;
	memcpy(msg, label, ll);
	memcpy(msg + ll, a, DONOR_NONCE_LEN);
	memcpy(msg + ll + DONOR_NONCE_LEN, b, DONOR_NONCE_LEN);
	memcpy(msg + ll + 2 * DONOR_NONCE_LEN, client_id, il);
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key->bytes, key->len, msg,
		       ll + 2 * DONOR_NONCE_LEN + il, out, DONOR_MAC_LEN, &outlen) ||
	    outlen != DONOR_MAC_LEN) {
		/* Never leave a predictable MAC behind: a zeroed one matches no peer's. */
		OPENSSL_cleanse(out, DONOR_MAC_LEN);
		r = -EIO;
	}
	OPENSSL_cleanse(msg, sizeof(msg));
	return r;
}

int donor_auth_client_mac(const struct donor_key *key, const uint8_t donor_nonce[DONOR_NONCE_LEN],
			  const uint8_t client_nonce[DONOR_NONCE_LEN], const char *client_id,
			  uint8_t out[DONOR_MAC_LEN])
{
	return mac(key, "", donor_nonce, client_nonce, client_id, out);
}

int donor_auth_donor_mac(const struct donor_key *key, const uint8_t donor_nonce[DONOR_NONCE_LEN],
			 const uint8_t client_nonce[DONOR_NONCE_LEN], const char *client_id,
			 uint8_t out[DONOR_MAC_LEN])
{
	/* The label keeps the donor's proof from ever equalling a client answer. */
	return mac(key, "donor", client_nonce, donor_nonce, client_id, out);
}

bool donor_ct_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

int donor_challenge_arm(struct donor_challenge *c)
{
	int r = donor_random(c->nonce, sizeof(c->nonce));

	c->armed = r == 0;
	return r;
}

int donor_challenge_check(struct donor_challenge *c, const struct donor_key *key,
			  const char *client_id, const struct donor_auth_req *answer)
{
	uint8_t want[DONOR_MAC_LEN];
	bool ok;
	int r;

	if (!c->armed)
		return -EALREADY;
	c->armed = 0;
	r = donor_auth_client_mac(key, c->nonce, answer->client_nonce, client_id, want);
	ok = r == 0 && donor_ct_equal(want, answer->mac, DONOR_MAC_LEN);
	OPENSSL_cleanse(want, sizeof(want));
	return r < 0 ? r : ok ? 0 : -EACCES;
}
