/* SPDX-License-Identifier: MIT */
/*
 * What both sealing schemes share (seal.h: per VM, nonce from page and
 * version; dseal.h: per sharing group, nonce from the page's content):
 * AES-256-GCM over one 4 KiB page on a context keyed once, and the 0600
 * file their keys live in. OpenSSL EVP underneath.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#define GCM_PAGE_NONCE_LEN 12 /* GCM's native IV: no GHASH over the IV */
#define GCM_PAGE_TAG_LEN 16

/* Seals the 4 KiB page into out (may be page) on enc, keyed with AES-256-GCM. Returns 0 or -EIO. */
int gcm_page_seal(EVP_CIPHER_CTX *enc, const uint8_t nonce[GCM_PAGE_NONCE_LEN], const void *aad, size_t aad_len,
		  const void *page, void *out, uint8_t ret_tag[GCM_PAGE_TAG_LEN]);
/*
 * Opens a sealed page in place on dec. Returns 0, or -EBADMSG for any
 * mismatch (the tag is compared in constant time; buf then holds garbage).
 */
int gcm_page_open(EVP_CIPHER_CTX *dec, const uint8_t nonce[GCM_PAGE_NONCE_LEN], const void *aad, size_t aad_len,
		  void *buf, const uint8_t tag[GCM_PAGE_TAG_LEN]);
/*
 * Writes len bytes of key material to a fresh file at path that only the
 * pager's uid can read (a stale file of that name, left by a crashed
 * pager, is replaced), synced. Returns 0 or -errno (nothing left behind).
 */
int gcm_page_write_key_file(const char *path, const void *blob, size_t len);
/*
 * Reads exactly len bytes of key material from path into blob, trusting
 * only a regular file of the pager's uid that nobody else can access (no
 * symlink). Returns 0, -EPERM (not such a file), -EBADMSG (another size)
 * or -errno; on failure blob holds nothing of the file.
 */
int gcm_page_read_key_file(const char *path, void *blob, size_t len);
