/* SPDX-License-Identifier: MIT */
/*
 * Deterministic sealing (dseal.h) through OpenSSL EVP: HMAC-SHA256 from
 * EVP_MAC keyed once per context, AES-256-GCM with the key schedule set
 * once per context; a page then costs one MAC and one IV set, update and
 * tag.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "dseal.h"
#include "gcm-page.h"
#include "log.h"
#include "util.h"

struct dseal {
	uint8_t mac_key[DSEAL_KEY_LEN];
	uint8_t enc_key[DSEAL_KEY_LEN];
	uint8_t id[DSEAL_ID_LEN];
	char path[512];
};

struct dseal_ctx {
	EVP_MAC *mac;
	EVP_MAC_CTX *hmac;
	EVP_CIPHER_CTX *enc, *dec;
	uint8_t id[DSEAL_ID_LEN];
};

int dseal_new_from_keys(const uint8_t mac_key[DSEAL_KEY_LEN], const uint8_t enc_key[DSEAL_KEY_LEN],
			const uint8_t id[DSEAL_ID_LEN], struct dseal **ret)
{
	struct dseal *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	memcpy(s->mac_key, mac_key, DSEAL_KEY_LEN);
	memcpy(s->enc_key, enc_key, DSEAL_KEY_LEN);
	memcpy(s->id, id, DSEAL_ID_LEN);
	*ret = s;
	return 0;
}

/* Keys and id to a fresh file only the pager's uid can read. Returns 0 or -errno. */
static int write_key_file(const struct dseal *s)
{
	uint8_t blob[2 * DSEAL_KEY_LEN + DSEAL_ID_LEN];
	int r;

	memcpy(blob, s->mac_key, DSEAL_KEY_LEN);
	memcpy(blob + DSEAL_KEY_LEN, s->enc_key, DSEAL_KEY_LEN);
	memcpy(blob + 2 * DSEAL_KEY_LEN, s->id, DSEAL_ID_LEN);
	r = gcm_page_write_key_file(s->path, blob, sizeof(blob));
	OPENSSL_cleanse(blob, sizeof(blob));
	return r;
}

int dseal_new(const char *dir, const char *name, struct dseal **ret)
{
	uint8_t mk[DSEAL_KEY_LEN], ek[DSEAL_KEY_LEN], id[DSEAL_ID_LEN];
	struct dseal *s;
	int r;

	if (RAND_bytes(mk, sizeof(mk)) != 1 || RAND_bytes(ek, sizeof(ek)) != 1 || RAND_bytes(id, sizeof(id)) != 1)
		return -EIO;
	r = dseal_new_from_keys(mk, ek, id, &s);
	OPENSSL_cleanse(mk, sizeof(mk));
	OPENSSL_cleanse(ek, sizeof(ek));
	if (r < 0)
		return r;
	if ((size_t)snprintf(s->path, sizeof(s->path), "%s/%s.key", dir, name) >= sizeof(s->path) ||
	    (r = write_key_file(s)) < 0) {
		s->path[0] = '\0'; /* nothing of ours to delete */
		dseal_free(s);
		return r < 0 ? r : -ENAMETOOLONG;
	}
	*ret = s;
	return 0;
}

int dseal_load(const char *dir, const char *name, struct dseal **ret)
{
	uint8_t blob[2 * DSEAL_KEY_LEN + DSEAL_ID_LEN];
	char path[512];
	int r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s.key", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	r = gcm_page_read_key_file(path, blob, sizeof(blob));
	if (r < 0)
		return r;
	r = dseal_new_from_keys(blob, blob + DSEAL_KEY_LEN, blob + 2 * DSEAL_KEY_LEN, ret);
	OPENSSL_cleanse(blob, sizeof(blob));
	if (r == 0)
		snprintf((*ret)->path, sizeof((*ret)->path), "%s", path);
	return r;
}

void dseal_close(struct dseal *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}

const uint8_t *dseal_id(const struct dseal *s) { return s->id; }

void dseal_free(struct dseal *s)
{
	if (!s)
		return;
	if (s->path[0] && unlink(s->path) < 0)
		log_warn("cannot delete key file %s: %s", s->path, strerror(errno));
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}

const char *dseal_path(const struct dseal *s) { return s->path; }

int dseal_ctx_new(const struct dseal *s, struct dseal_ctx **ret)
{
	struct dseal_ctx *c = calloc(1, sizeof(*c));
	OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
				OSSL_PARAM_construct_end() };

	if (!c)
		return -ENOMEM;
	memcpy(c->id, s->id, DSEAL_ID_LEN);
	c->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	c->hmac = c->mac ? EVP_MAC_CTX_new(c->mac) : NULL;
	c->enc = EVP_CIPHER_CTX_new();
	c->dec = EVP_CIPHER_CTX_new();
	/* Keys now; each page then only re-initialises the MAC and sets its IV. */
	if (!c->hmac || !c->enc || !c->dec || EVP_MAC_init(c->hmac, s->mac_key, DSEAL_KEY_LEN, params) != 1 ||
	    EVP_EncryptInit_ex(c->enc, EVP_aes_256_gcm(), NULL, s->enc_key, NULL) != 1 ||
	    EVP_DecryptInit_ex(c->dec, EVP_aes_256_gcm(), NULL, s->enc_key, NULL) != 1) {
		dseal_ctx_free(c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

void dseal_ctx_free(struct dseal_ctx *c)
{
	if (!c)
		return;
	EVP_MAC_CTX_free(c->hmac);
	EVP_MAC_free(c->mac);
	EVP_CIPHER_CTX_free(c->enc);
	EVP_CIPHER_CTX_free(c->dec);
	free(c);
}

int dseal_key(struct dseal_ctx *c, const void *page, uint8_t ret_nonce[DSEAL_NONCE_LEN])
{
	uint8_t mac[32];
	size_t len = 0;

	/* A NULL key re-initialises with the key set in dseal_ctx_new. */
	if (EVP_MAC_init(c->hmac, NULL, 0, NULL) != 1 || EVP_MAC_update(c->hmac, page, PAGE_SIZE_4K) != 1 ||
	    EVP_MAC_final(c->hmac, mac, &len, sizeof(mac)) != 1 || len != sizeof(mac))
		return -EIO;
	memcpy(ret_nonce, mac, DSEAL_NONCE_LEN);
	return 0;
}

int dseal_seal(struct dseal_ctx *c, const uint8_t nonce[DSEAL_NONCE_LEN], const void *page, void *out,
	       uint8_t ret_tag[DSEAL_TAG_LEN])
{
	return gcm_page_seal(c->enc, nonce, c->id, DSEAL_ID_LEN, page, out, ret_tag);
}

int dseal_open(struct dseal_ctx *c, const uint8_t nonce[DSEAL_NONCE_LEN], void *buf, const uint8_t tag[DSEAL_TAG_LEN])
{
	/*
	 * The tag and nonce come from the pager's own index, never from the
	 * store, so a copy of other content (of this group or any) fails here;
	 * recomputing the MAC of the plaintext would add nothing.
	 */
	return gcm_page_open(c->dec, nonce, c->id, DSEAL_ID_LEN, buf, tag);
}
