/* SPDX-License-Identifier: MIT */
/*
 * Seeding, Zipf rank generation and the hot-set permutation of guestsim.
 * The Zipf normaliser zeta(n, theta) is summed exactly for the first terms
 * and approximated by its integral for the tail, so start-up stays instant
 * for guests of tens of millions of pages.
 */
#include "gs-rand.h"

#include <errno.h>
#include <math.h>

void gs_rng_seed(struct gs_rng *rng, uint64_t seed, uint64_t stream)
{
	uint64_t z = gs_mix64(seed ^ gs_mix64(stream + 0x5851f42d4c957f2dULL));

	for (int i = 0; i < 4; i++) {
		z += GS_GOLDEN;
		rng->s[i] = gs_mix64(z);
	}
	/* xoshiro's all-zero state is a fixed point. */
	if (!(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]))
		rng->s[0] = 1;
}

#define ZETA_EXACT_TERMS 100000ULL

static double zeta(uint64_t n, double theta)
{
	uint64_t exact = n < ZETA_EXACT_TERMS ? n : ZETA_EXACT_TERMS;
	double sum = 0.0;

	for (uint64_t i = 1; i <= exact; i++)
		sum += pow((double)i, -theta);
	if (n > exact) {
		/* Midpoint rule: sum_{k+1..n} i^-t ~ integral over [k+0.5, n+0.5]. */
		double a = (double)exact + 0.5, b = (double)n + 0.5;

		sum += (pow(b, 1.0 - theta) - pow(a, 1.0 - theta)) / (1.0 - theta);
	}
	return sum;
}

int gs_zipf_init(struct gs_zipf *z, uint64_t n, double theta)
{
	double zeta2;

	if (n == 0 || !(theta > 0.0 && theta < 1.0))
		return -EINVAL;
	z->n = n;
	z->theta = theta;
	z->alpha = 1.0 / (1.0 - theta);
	z->zetan = zeta(n, theta);
	zeta2 = zeta(2, theta);
	z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / z->zetan);
	z->two_threshold = 1.0 + pow(0.5, theta);
	return 0;
}

uint64_t gs_zipf_next(const struct gs_zipf *z, struct gs_rng *rng)
{
	double u = gs_rng_unit(rng);
	double uz = u * z->zetan;
	uint64_t r;

	if (uz < 1.0 || z->n == 1)
		return 0;
	if (uz < z->two_threshold)
		return 1;
	r = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
	return r < z->n ? r : z->n - 1;
}

void gs_perm_init(struct gs_perm *p, uint64_t n, uint64_t key)
{
	unsigned bits = 2;

	while (bits < 64 && (1ULL << bits) < n)
		bits++;
	bits += bits & 1;
	p->n = n;
	p->half_bits = bits / 2;
	p->half_mask = (1ULL << p->half_bits) - 1;
	for (int i = 0; i < 4; i++)
		p->keys[i] = gs_mix64(key + (uint64_t)(i + 1) * GS_GOLDEN);
}

uint64_t gs_perm_apply(const struct gs_perm *p, uint64_t x)
{
	if (p->n <= 1)
		return 0;
	/* Cycle walking: the domain is at most 4n, so ~2 rounds on average. */
	do {
		uint64_t l = x >> p->half_bits, r = x & p->half_mask;

		for (int i = 0; i < 4; i++) {
			uint64_t nl = r;

			r = l ^ (gs_mix64(r ^ p->keys[i]) & p->half_mask);
			l = nl;
		}
		x = (l << p->half_bits) | r;
	} while (x >= p->n);
	return x;
}
