/* SPDX-License-Identifier: MIT */
/*
 * SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), small and dependency-free,
 * for the donor's pre-shared-key challenge-response. Not constant-time
 * beyond what the algorithm gives for free; donor_ct_equal() compares MACs.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define DONOR_SHA256_LEN 32
#define DONOR_SHA256_BLOCK 64

struct donor_sha256 {
	uint32_t h[8];
	uint64_t total;
	uint8_t buf[DONOR_SHA256_BLOCK];
	size_t fill;
};

void donor_sha256_init(struct donor_sha256 *c);
void donor_sha256_update(struct donor_sha256 *c, const void *data, size_t len);
void donor_sha256_final(struct donor_sha256 *c, uint8_t out[DONOR_SHA256_LEN]);
void donor_sha256(const void *data, size_t len, uint8_t out[DONOR_SHA256_LEN]);

struct donor_hmac {
	struct donor_sha256 inner, outer;
};

void donor_hmac_init(struct donor_hmac *h, const void *key, size_t key_len);
void donor_hmac_update(struct donor_hmac *h, const void *data, size_t len);
void donor_hmac_final(struct donor_hmac *h, uint8_t out[DONOR_SHA256_LEN]);
void donor_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
		       uint8_t out[DONOR_SHA256_LEN]);

/* Compares in time independent of where the buffers differ. Returns 1 if equal. */
int donor_ct_equal(const void *a, const void *b, size_t len);
