/* SPDX-License-Identifier: MIT */
/*
 * AES-256-GCM page sealing through OpenSSL EVP (seal.h). The cipher
 * context of each thread is initialised with the key once; a page then
 * costs one IV set, one update over 4 KiB and the tag, with no allocation.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "gcm-page.h"
#include "log.h"
#include "seal.h"
#include "util.h"

#define SEAL_NONCE_LEN GCM_PAGE_NONCE_LEN
#define SEAL_AAD_LEN (SEAL_ID_LEN + 8 + 4)

struct seal {
	uint8_t key[SEAL_KEY_LEN];
	uint8_t id[SEAL_ID_LEN];
	char path[512];
};

struct seal_ctx {
	EVP_CIPHER_CTX *enc, *dec;
	uint8_t id[SEAL_ID_LEN];
};

int seal_new_from_key(const uint8_t key[SEAL_KEY_LEN], const uint8_t id[SEAL_ID_LEN], struct seal **ret)
{
	struct seal *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	memcpy(s->key, key, SEAL_KEY_LEN);
	memcpy(s->id, id, SEAL_ID_LEN);
	*ret = s;
	return 0;
}

int seal_new(const char *dir, const char *name, struct seal **ret)
{
	uint8_t key[SEAL_KEY_LEN], id[SEAL_ID_LEN], blob[SEAL_KEY_LEN + SEAL_ID_LEN];
	struct seal *s;
	int r;

	if (RAND_bytes(key, sizeof(key)) != 1 || RAND_bytes(id, sizeof(id)) != 1)
		return -EIO;
	r = seal_new_from_key(key, id, &s);
	OPENSSL_cleanse(key, sizeof(key));
	if (r < 0)
		return r;
	if ((size_t)snprintf(s->path, sizeof(s->path), "%s/%s.key", dir, name) >= sizeof(s->path)) {
		seal_free(s, true);
		return -ENAMETOOLONG;
	}
	memcpy(blob, s->key, SEAL_KEY_LEN);
	memcpy(blob + SEAL_KEY_LEN, s->id, SEAL_ID_LEN);
	r = gcm_page_write_key_file(s->path, blob, sizeof(blob));
	OPENSSL_cleanse(blob, sizeof(blob));
	if (r < 0) {
		seal_free(s, true); /* nothing of ours to delete */
		return r;
	}
	*ret = s;
	return 0;
}

int seal_load(const char *dir, const char *name, struct seal **ret)
{
	uint8_t blob[SEAL_KEY_LEN + SEAL_ID_LEN];
	char path[512];
	int r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s.key", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	r = gcm_page_read_key_file(path, blob, sizeof(blob));
	if (r < 0)
		return r;
	r = seal_new_from_key(blob, blob + SEAL_KEY_LEN, ret);
	OPENSSL_cleanse(blob, sizeof(blob));
	if (r == 0)
		snprintf((*ret)->path, sizeof((*ret)->path), "%s", path);
	return r;
}

void seal_free(struct seal *s, bool keep_file)
{
	if (!s)
		return;
	if (s->path[0] && !keep_file && unlink(s->path) < 0)
		log_warn("cannot delete key file %s: %s", s->path, strerror(errno));
	OPENSSL_cleanse(s->key, sizeof(s->key));
	free(s);
}

const char *seal_path(const struct seal *s) { return s->path; }

int seal_ctx_new(const struct seal *s, struct seal_ctx **ret)
{
	struct seal_ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->enc = EVP_CIPHER_CTX_new();
	c->dec = EVP_CIPHER_CTX_new();
	memcpy(c->id, s->id, SEAL_ID_LEN);
	/* Key schedule now; each page then only sets its IV. */
	if (!c->enc || !c->dec || EVP_EncryptInit_ex(c->enc, EVP_aes_256_gcm(), NULL, s->key, NULL) != 1 ||
	    EVP_DecryptInit_ex(c->dec, EVP_aes_256_gcm(), NULL, s->key, NULL) != 1) {
		seal_ctx_free(c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

void seal_ctx_free(struct seal_ctx *c)
{
	if (!c)
		return;
	EVP_CIPHER_CTX_free(c->enc);
	EVP_CIPHER_CTX_free(c->dec);
	free(c);
}

/* The nonce is (page, version): unique per key as long as versions are. The AAD adds the VM. */
static void nonce_aad(const struct seal_ctx *c, uint64_t page, uint32_t version, uint8_t *nonce, uint8_t *aad)
{
	for (int i = 0; i < 8; i++)
		nonce[i] = (uint8_t)(page >> (8 * i));
	for (int i = 0; i < 4; i++)
		nonce[8 + i] = (uint8_t)(version >> (8 * i));
	memcpy(aad, c->id, SEAL_ID_LEN);
	memcpy(aad + SEAL_ID_LEN, nonce, SEAL_NONCE_LEN);
}

int seal_page(struct seal_ctx *c, uint64_t page, uint32_t version, void *buf, uint8_t tag[SEAL_TAG_LEN])
{
	uint8_t nonce[SEAL_NONCE_LEN], aad[SEAL_AAD_LEN];

	nonce_aad(c, page, version, nonce, aad);
	return gcm_page_seal(c->enc, nonce, aad, sizeof(aad), buf, buf, tag);
}

int seal_open(struct seal_ctx *c, uint64_t page, uint32_t version, void *buf, const uint8_t tag[SEAL_TAG_LEN])
{
	uint8_t nonce[SEAL_NONCE_LEN], aad[SEAL_AAD_LEN];

	nonce_aad(c, page, version, nonce, aad);
	return gcm_page_open(c->dec, nonce, aad, sizeof(aad), buf, tag);
}
