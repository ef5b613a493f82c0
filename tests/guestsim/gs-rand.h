/* SPDX-License-Identifier: MIT */
/*
 * Random sources for guestsim: a stateless 64-bit mixer (page contents must
 * be recomputable from (seed, page, generation) alone, so they use a
 * counter-based generator), a small per-thread generator for access
 * decisions, a Zipf rank generator and a keyed permutation that scatters
 * the Zipf hot set over the address space. Everything is deterministic
 * given the seed so a failing run can be replayed.
 */
#pragma once

#include <stdint.h>

#define GS_GOLDEN 0x9e3779b97f4a7c15ULL

/* splitmix64's finaliser: a bijective, well-avalanched 64-bit mix. */
static inline uint64_t gs_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* xoshiro256**: fast, good enough for choosing pages and read/write. */
struct gs_rng {
	uint64_t s[4];
};

void gs_rng_seed(struct gs_rng *rng, uint64_t seed, uint64_t stream);

static inline uint64_t gs_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t gs_rng_next(struct gs_rng *rng)
{
	uint64_t *s = rng->s;
	uint64_t result = gs_rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = gs_rotl(s[3], 45);
	return result;
}

/* Uniform in [0, n) (n > 0); the multiply-high bias is far below 2^-32. */
static inline uint64_t gs_rng_below(struct gs_rng *rng, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)gs_rng_next(rng) * n) >> 64);
}

/* Uniform double in [0, 1). */
static inline double gs_rng_unit(struct gs_rng *rng)
{
	return (double)(gs_rng_next(rng) >> 11) * 0x1.0p-53;
}

/*
 * Zipf ranks over [0, n) with exponent theta in (0, 1) (Gray et al.'s
 * method, as used by YCSB): rank 0 is the hottest.
 */
struct gs_zipf {
	uint64_t n;
	double theta, alpha, zetan, eta, two_threshold;
};

/* Returns 0 or -EINVAL (n == 0 or theta outside (0, 1)). */
int gs_zipf_init(struct gs_zipf *z, uint64_t n, double theta);
uint64_t gs_zipf_next(const struct gs_zipf *z, struct gs_rng *rng);

/*
 * A keyed bijection of [0, n): a 4-round Feistel network over the next even
 * power of two, cycle-walked back into range. Needs no table, so it costs
 * no memory even for millions of pages.
 */
struct gs_perm {
	uint64_t n;
	unsigned half_bits;
	uint64_t half_mask;
	uint64_t keys[4];
};

void gs_perm_init(struct gs_perm *p, uint64_t n, uint64_t key);
uint64_t gs_perm_apply(const struct gs_perm *p, uint64_t x);
