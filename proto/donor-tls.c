/* SPDX-License-Identifier: MIT */
/*
 * TLS 1.3 with an external PSK for the donor link (see donor-tls.h).
 * Why PSK and not certificates: deployments already hold one key file per
 * donor, and a PSK identity is the natural place for the client id, so
 * the id is authenticated by the handshake rather than asserted in a frame.
 * The key file is run through HKDF so that its length and alphabet do not
 * matter to TLS; psk_dhe_ke (OpenSSL's default) adds an ECDHE share, so a
 * key that leaks later does not open recorded sessions.
 */
#include "donor-tls.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "util.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define PSK_LEN 48
/* Ciphertext produced by SSL and not yet taken: a whole write batch fits. */
#define OUT_BUF (512u << 10)
/* Ciphertext received and not yet decrypted: several full records. */
#define IN_BUF (128u << 10)

/* TLS_AES_256_GCM_SHA384, the one suite both ends allow. */
static const unsigned char suite_id[2] = { 0x13, 0x02 };

struct donor_tls {
	SSL *ssl;
	BIO *net; /* our end of the pair; the SSL object holds the other */
	bool server, done;
	uint8_t psk[PSK_LEN];
	const struct donor_keyring *keys; /* donor with per-id keys: the PSK follows the offered identity */
	char id[DONOR_CLIENT_ID_MAX + 1]; /* client: our id; donor: the peer's, once known */
};

static SSL_CTX *ctx[2];
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;
static int tls_index = -1;

static SSL_CTX *ctx_make(bool server)
{
	SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!c)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) || !SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(c, "TLS_AES_256_GCM_SHA384")) {
		SSL_CTX_free(c);
		return NULL;
	}
	/* No resumption: every connection proves the key afresh. */
	SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
	if (server)
		SSL_CTX_set_num_tickets(c, 0);
	else
		/* No trust anchors: a peer that skips the PSK and shows a certificate is refused. */
		SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return c;
}

static void ctx_init(void)
{
	ctx[0] = ctx_make(false);
	ctx[1] = ctx_make(true);
	tls_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* HKDF-SHA256 of the key file's bytes into the PSK. Returns 0 or -EIO. */
static int derive_psk(const struct donor_key *key, uint8_t out[PSK_LEN])
{
	/* Without a key file the PSK is public: the donor then listens on loopback only. */
	static const char keyless[] = "uffdvm donor link without a key file";
	static const char salt[] = "uffdvm donor link", info[] = "tls13 external psk v2";
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[5];
	int r = -EIO;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
						      key->len ? (void *)key->bytes : (void *)keyless,
						      key->len ? key->len : sizeof(keyless) - 1);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof(salt) - 1);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, sizeof(info) - 1);
	params[4] = OSSL_PARAM_construct_end();
	if (kc && EVP_KDF_derive(kc, out, PSK_LEN, params) == 1)
		r = 0;
	EVP_KDF_CTX_free(kc);
	EVP_KDF_free(kdf);
	return r;
}

static SSL_SESSION *psk_session(SSL *ssl, const struct donor_tls *t)
{
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, suite_id);
	SSL_SESSION *s = SSL_SESSION_new();

	if (!s || !cipher || !SSL_SESSION_set1_master_key(s, t->psk, PSK_LEN) || !SSL_SESSION_set_cipher(s, cipher) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
		SSL_SESSION_free(s);
		return NULL;
	}
	return s;
}

static int use_psk_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen, SSL_SESSION **sess)
{
	struct donor_tls *t = SSL_get_ex_data(ssl, tls_index);
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, suite_id);

	*sess = NULL;
	/* After a HelloRetryRequest md names the hash in use; ours must match it. */
	if (!t || !cipher || (md && md != SSL_CIPHER_get_handshake_digest(cipher)))
		return 1;
	*sess = psk_session(ssl, t);
	if (!*sess)
		return 0;
	*id = (const unsigned char *)t->id;
	*idlen = strlen(t->id);
	return 1;
}

static int find_psk_cb(SSL *ssl, const unsigned char *identity, size_t identity_len, SSL_SESSION **sess)
{
	struct donor_tls *t = SSL_get_ex_data(ssl, tls_index);

	*sess = NULL;
	/* An unknown identity gets no PSK: with no certificate either, the handshake fails. */
	if (!t || !donor_client_id_valid((const char *)identity, identity_len))
		return 1;
	memcpy(t->id, identity, identity_len);
	t->id[identity_len] = '\0';
	if (t->keys) {
		const struct donor_key *key = donor_keyring_find(t->keys, t->id);

		/* An id without a key of its own, when the shared key is refused, gets no PSK either. */
		if (!key) {
			log_debug("tls: client id '%s' has no key of its own and the shared key is refused", t->id);
			return 1;
		}
		if (derive_psk(key, t->psk) < 0)
			return 0;
	}
	*sess = psk_session(ssl, t);
	return *sess ? 1 : 0;
}

static int tls_new(const struct donor_key *key, const struct donor_keyring *keys, const char *client_id, bool server,
		   struct donor_tls **ret)
{
	struct donor_tls *t;
	BIO *inner = NULL;

	pthread_once(&ctx_once, ctx_init);
	if (!ctx[server] || tls_index < 0)
		return -EIO;
	if (!server && !donor_client_id_valid(client_id, strlen(client_id)))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->server = server;
	t->keys = keys;
	if (!server)
		snprintf(t->id, sizeof(t->id), "%s", client_id);
	if ((key && derive_psk(key, t->psk) < 0) || !(t->ssl = SSL_new(ctx[server])) ||
	    !BIO_new_bio_pair(&inner, OUT_BUF, &t->net, IN_BUF)) {
		donor_tls_free(t);
		return -EIO;
	}
	SSL_set_bio(t->ssl, inner, inner);
	SSL_set_ex_data(t->ssl, tls_index, t);
	if (server) {
		SSL_set_psk_find_session_callback(t->ssl, find_psk_cb);
		SSL_set_accept_state(t->ssl);
	} else {
		SSL_set_psk_use_session_callback(t->ssl, use_psk_cb);
		SSL_set_connect_state(t->ssl);
	}
	*ret = t;
	return 0;
}

int donor_tls_new_client(const struct donor_key *key, const char *client_id, struct donor_tls **ret)
{
	return tls_new(key, NULL, client_id, false, ret);
}

int donor_tls_new_server(const struct donor_key *key, struct donor_tls **ret)
{
	return tls_new(key, NULL, NULL, true, ret);
}

int donor_tls_new_server_keys(const struct donor_keyring *keys, struct donor_tls **ret)
{
	return tls_new(NULL, keys, NULL, true, ret);
}

void donor_tls_free(struct donor_tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl); /* also frees the inner BIO */
	BIO_free(t->net);
	OPENSSL_cleanse(t->psk, sizeof(t->psk));
	free(t);
}

static void log_ssl_errors(const char *what)
{
	unsigned long e;
	char buf[256];

	while ((e = ERR_get_error())) {
		ERR_error_string_n(e, buf, sizeof(buf));
		log_debug("tls %s: %s", what, buf);
	}
}

int donor_tls_handshake(struct donor_tls *t)
{
	int r, e;

	if (t->done)
		return 0;
	ERR_clear_error();
	r = SSL_do_handshake(t->ssl);
	if (r == 1) {
		/* Only a PSK handshake proves the peer holds the key. */
		if (!SSL_session_reused(t->ssl))
			return -EACCES;
		t->done = true;
		return 0;
	}
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return -EAGAIN;
	log_ssl_errors("handshake");
	/* A wrong key shows up as a failed binder or Finished: to the caller, a refused key. */
	return e == SSL_ERROR_SSL ? -EACCES : -EPROTO;
}

const char *donor_tls_peer_id(const struct donor_tls *t) { return t->server && t->done ? t->id : ""; }

size_t donor_tls_net_in(struct donor_tls *t, const void *buf, size_t len)
{
	int n = len ? BIO_write(t->net, buf, (int)MIN(len, (size_t)INT32_MAX)) : 0;

	return n > 0 ? (size_t)n : 0;
}

size_t donor_tls_net_out(struct donor_tls *t, void *buf, size_t max)
{
	int n = max ? BIO_read(t->net, buf, (int)MIN(max, (size_t)INT32_MAX)) : 0;

	return n > 0 ? (size_t)n : 0;
}

size_t donor_tls_net_pending(const struct donor_tls *t) { return BIO_ctrl_pending(t->net); }

int donor_tls_write(struct donor_tls *t, const void *buf, size_t len)
{
	int r, e;

	if (!len)
		return 0;
	ERR_clear_error();
	r = SSL_write(t->ssl, buf, (int)MIN(len, (size_t)(1u << 30)));
	if (r > 0)
		return r;
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
		return 0;
	log_ssl_errors("write");
	return -EPROTO;
}

int donor_tls_read(struct donor_tls *t, void *buf, size_t len)
{
	unsigned long err;
	int r, e;

	ERR_clear_error();
	r = SSL_read(t->ssl, buf, (int)MIN(len, (size_t)(1u << 30)));
	if (r > 0)
		return r;
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return -EAGAIN;
	if (e == SSL_ERROR_ZERO_RETURN)
		return -ECONNRESET;
	err = ERR_peek_error();
	log_ssl_errors("read");
	if (ERR_GET_LIB(err) == ERR_LIB_SSL && ERR_GET_REASON(err) == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC)
		return -EBADMSG;
	return -EPROTO;
}

/* Sends every ciphertext byte SSL has produced. Returns 0 or -errno. */
static int sock_flush(struct donor_tls *t, int fd, uint64_t deadline)
{
	uint8_t buf[16384];
	size_t n;

	while ((n = donor_tls_net_out(t, buf, sizeof(buf))) > 0) {
		size_t off = 0;
		while (off < n) {
			ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
			int r;
			if (w > 0) {
				off += (size_t)w;
				continue;
			}
			if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				return -errno;
			r = poll_until(fd, POLLOUT, deadline);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* Receives what the socket has (waiting for some) into the TLS input. Returns 0 or -errno. */
static int sock_fill(struct donor_tls *t, int fd, uint64_t deadline)
{
	uint8_t buf[16384];
	size_t room = BIO_ctrl_get_write_guarantee(t->net);
	ssize_t n;
	int r;

	if (room == 0)
		return -EPROTO; /* a full input buffer that SSL cannot use: not a TLS peer */
	for (;;) {
		r = poll_until(fd, POLLIN, deadline);
		if (r < 0)
			return r;
		n = recv(fd, buf, MIN(sizeof(buf), room), MSG_DONTWAIT);
		if (n > 0)
			break;
		if (n == 0)
			return -ECONNRESET;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
	}
	return donor_tls_net_in(t, buf, (size_t)n) == (size_t)n ? 0 : -EPROTO;
}

int donor_tls_sock_handshake(struct donor_tls *t, int fd, uint64_t deadline)
{
	for (;;) {
		int r = donor_tls_handshake(t), f = sock_flush(t, fd, deadline);

		if (r == 0 || r != -EAGAIN)
			return r == 0 ? f : r;
		if (f < 0)
			return f;
		r = sock_fill(t, fd, deadline);
		if (r < 0)
			return r;
	}
}

int donor_tls_sock_send(struct donor_tls *t, int fd, const void *buf, size_t len, uint64_t deadline)
{
	const uint8_t *p = buf;

	while (len > 0) {
		int n = donor_tls_write(t, p, len), r;
		if (n < 0)
			return n;
		p += n;
		len -= (size_t)n;
		r = sock_flush(t, fd, deadline);
		if (r < 0)
			return r;
	}
	return 0;
}

int donor_tls_sock_recv(struct donor_tls *t, int fd, void *buf, size_t len, uint64_t deadline)
{
	uint8_t *p = buf;

	while (len > 0) {
		int n = donor_tls_read(t, p, len), r;
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n != -EAGAIN)
			return n;
		r = sock_flush(t, fd, deadline);
		if (r == 0)
			r = sock_fill(t, fd, deadline);
		if (r < 0)
			return r;
	}
	return 0;
}
