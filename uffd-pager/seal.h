/* SPDX-License-Identifier: MIT */
/*
 * Page sealing: AES-256-GCM (OpenSSL EVP) over every page copy that leaves
 * guest memory for a donor or the spill file. One key per VM, drawn at
 * registration and kept only on the pager host, in a 0600 file of the
 * pager's state dir. The nonce is (page index, page version) and the
 * associated data binds the VM's random id, the page index and the
 * version, so a copy of another page, another VM or an older version of
 * the same page fails to open exactly like flipped bits do.
 *
 * A struct seal holds the key; each thread that seals or opens pages has a
 * struct seal_ctx of its own, allocated up front, so sealing on the fault
 * path allocates nothing.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define SEAL_KEY_LEN 32
#define SEAL_ID_LEN 16
#define SEAL_TAG_LEN 16

struct seal;
struct seal_ctx;

/*
 * Draws a fresh key and VM id (RAND_bytes) and writes them to DIR/NAME.key
 * (mode 0600, created exclusively; a stale file of that name is replaced).
 * Returns 0 or -errno.
 */
int seal_new(const char *dir, const char *name, struct seal **ret);
/* A seal from a given key and id, with no file (tests, tools). Returns 0 or -errno. */
int seal_new_from_key(const uint8_t key[SEAL_KEY_LEN], const uint8_t id[SEAL_ID_LEN], struct seal **ret);
/* The key an earlier pager wrote to DIR/NAME.key, for a VM it adopts (0600 and ours, else -EPERM). Returns 0 or -errno. */
int seal_load(const char *dir, const char *name, struct seal **ret);
/* Wipes the key and deletes its file unless keep_file (the VM lives on). NULL-safe. Every seal_ctx must be freed first. */
void seal_free(struct seal *s, bool keep_file);
/* The key file's path, "" without one. */
const char *seal_path(const struct seal *s);

/* A per-thread context with the key schedule loaded. Returns 0 or -errno. */
int seal_ctx_new(const struct seal *s, struct seal_ctx **ret);
void seal_ctx_free(struct seal_ctx *c);

/*
 * Encrypts the 4 KiB page in place and writes its tag. The caller
 * guarantees (page, version) is never sealed with other contents under
 * this key (the page map bumps the version per eviction). Returns 0 or -EIO.
 */
int seal_page(struct seal_ctx *c, uint64_t page, uint32_t version, void *buf, uint8_t tag[SEAL_TAG_LEN]);
/*
 * Decrypts in place and checks the tag. Returns 0, or -EBADMSG when the
 * copy is not this VM's page at this version (buf then holds garbage and
 * must not be used).
 */
int seal_open(struct seal_ctx *c, uint64_t page, uint32_t version, void *buf, const uint8_t tag[SEAL_TAG_LEN]);
