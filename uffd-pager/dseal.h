/* SPDX-License-Identifier: MIT */
/*
 * Deterministic page sealing for sharing groups (docs/sharing.md): equal
 * pages must give equal copies, so the nonce is derived from the page
 * (a synthetic IV): nonce = HMAC-SHA256(MAC key, page) truncated to 12
 * bytes, then AES-256-GCM with that nonce and the group's random id as
 * associated data. The nonce doubles as the content key of the group's
 * index. One MAC key, cipher key and id per group, drawn when the group
 * is created and kept in a 0600 file of the pager's state dir. All
 * through OpenSSL's EVP APIs.
 */
#pragma once

#include <stdint.h>

#define DSEAL_KEY_LEN 32   /* MAC key and cipher key, each */
#define DSEAL_ID_LEN 16
#define DSEAL_NONCE_LEN 12 /* the content key: GCM's native IV length */
#define DSEAL_TAG_LEN 16

struct dseal;
struct dseal_ctx;

/*
 * Draws fresh keys and id (RAND_bytes) and writes them to DIR/NAME.key
 * (mode 0600; a stale file of that name is replaced). Returns 0 or -errno.
 */
int dseal_new(const char *dir, const char *name, struct dseal **ret);
/* From given keys, with no file (tests, tools). Returns 0 or -errno. */
int dseal_new_from_keys(const uint8_t mac_key[DSEAL_KEY_LEN], const uint8_t enc_key[DSEAL_KEY_LEN],
			const uint8_t id[DSEAL_ID_LEN], struct dseal **ret);
/*
 * The keys a pager wrote to DIR/NAME.key, for a group that outlived it.
 * Returns 0, -ENOENT, -EPERM (not a 0600 file of this uid) or -EBADMSG.
 */
int dseal_load(const char *dir, const char *name, struct dseal **ret);
/* Wipes the keys and deletes the key file. Every dseal_ctx must be freed first. NULL-safe. */
void dseal_free(struct dseal *s);
/* Wipes the keys; the key file stays for the next pager. NULL-safe. */
void dseal_close(struct dseal *s);
/* The group's random id (the associated data of every copy, and its state file's). */
const uint8_t *dseal_id(const struct dseal *s);
const char *dseal_path(const struct dseal *s);

/* A context for one thread at a time, keys loaded. Returns 0 or -errno. */
int dseal_ctx_new(const struct dseal *s, struct dseal_ctx **ret);
void dseal_ctx_free(struct dseal_ctx *c);

/* The content key (the nonce) of a 4 KiB page. Returns 0 or -EIO. */
int dseal_key(struct dseal_ctx *c, const void *page, uint8_t ret_nonce[DSEAL_NONCE_LEN]);
/*
 * Seals the 4 KiB page into out (may be page) under the nonce dseal_key
 * gave for it: same page, same key, same output. Returns 0 or -EIO.
 */
int dseal_seal(struct dseal_ctx *c, const uint8_t nonce[DSEAL_NONCE_LEN], const void *page, void *out,
	       uint8_t ret_tag[DSEAL_TAG_LEN]);
/*
 * Opens a copy in place. Returns 0, or -EBADMSG when it is not the page
 * sealed under this nonce and tag by this group (buf then holds garbage).
 */
int dseal_open(struct dseal_ctx *c, const uint8_t nonce[DSEAL_NONCE_LEN], void *buf,
	       const uint8_t tag[DSEAL_TAG_LEN]);
