/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of victim selection. Both selectors, through their ops table:
 * without sampling they return pages in fault order, keep the first
 * position of a page reported twice, honour pick limits, re-queue picked
 * pages only on a new fault, and stay consistent under a long random
 * sequence checked against a simple reference model. CLOCK's sampling: the
 * window's size, the second chance of a touched page, a random sequence
 * against a model of its two lists, and a Zipf trace on which it must
 * miss clearly less than FIFO.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "victim.h"

/* A selector under test and what one guest page costs it. */
struct impl {
	const struct policy_victim_ops *ops;
	size_t bytes_per_page;
};

static const struct impl fifo_impl = { &policy_victim_fifo, 4 };
static const struct impl clock_impl = { &policy_victim_clock, 9 };

#define OPS(state) (((const struct impl *)*(state))->ops)

static void test_find(void **state)
{
	assert_ptr_equal(policy_victim_find("fifo"), &policy_victim_fifo);
	assert_ptr_equal(policy_victim_find("clock"), &policy_victim_clock);
	assert_null(policy_victim_find("lru"));
	assert_null(policy_victim_find("CLOCK"));
	assert_null(policy_victim_find(""));
	assert_null(policy_victim_find(NULL));
	assert_string_equal(policy_victim_fifo.name, "fifo");
	assert_string_equal(policy_victim_clock.name, "clock");
	assert_string_equal(policy_victim_names(), POLICY_VICTIM_NAMES);
	assert_non_null(strstr(policy_victim_names(), "\"fifo\""));
	assert_non_null(strstr(policy_victim_names(), "\"clock\""));
	assert_non_null(policy_victim_find(POLICY_VICTIM_DEFAULT));
	/* Sampling is optional: both members or neither. */
	assert_null(policy_victim_fifo.on_referenced);
	assert_null(policy_victim_fifo.sample);
	assert_non_null(policy_victim_clock.on_referenced);
	assert_non_null(policy_victim_clock.sample);
}

static void test_create_limits(void **state)
{
	const struct policy_victim_ops *ops = OPS(state);
	void *s;

	errno = 0;
	assert_null(ops->create(0));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(ops->create(POLICY_VICTIM_MAX_PAGES + 1));
	assert_int_equal(errno, EINVAL);
	s = ops->create(1);
	assert_non_null(s);
	ops->destroy(s);
	ops->destroy(NULL);
}

static void test_order(void **state)
{
	const struct policy_victim_ops *ops = OPS(state);
	static const uint64_t faults[] = { 7, 3, 9, 0, 15, 4 };
	uint64_t out[16];
	void *s = ops->create(16);
	size_t n;

	assert_non_null(s);
	assert_int_equal(ops->pick(s, out, 16), 0);
	for (size_t i = 0; i < 6; i++)
		ops->on_resident(s, faults[i]);
	n = ops->pick(s, out, 16);
	assert_int_equal(n, 6);
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(out[i], faults[i]);
	/* Empty again. */
	assert_int_equal(ops->pick(s, out, 16), 0);
	ops->destroy(s);
}

static void test_duplicates(void **state)
{
	const struct policy_victim_ops *ops = OPS(state);
	uint64_t out[8];
	void *s = ops->create(8);

	ops->on_resident(s, 1);
	ops->on_resident(s, 2);
	ops->on_resident(s, 1); /* discarded and refaulted: keeps its old place */
	ops->on_resident(s, 3);
	ops->on_resident(s, 2);
	assert_int_equal(ops->pick(s, out, 8), 3);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[1], 2);
	assert_int_equal(out[2], 3);

	/* A picked page re-enters at the tail on its next fault. */
	ops->on_resident(s, 5);
	ops->on_resident(s, 1);
	ops->on_resident(s, 6);
	assert_int_equal(ops->pick(s, out, 8), 3);
	assert_int_equal(out[0], 5);
	assert_int_equal(out[1], 1);
	assert_int_equal(out[2], 6);
	ops->destroy(s);
}

static void test_pick_limits(void **state)
{
	const struct policy_victim_ops *ops = OPS(state);
	uint64_t out[8];
	void *s = ops->create(8);

	for (uint64_t p = 0; p < 8; p++)
		ops->on_resident(s, 7 - p);
	assert_int_equal(ops->pick(s, out, 0), 0);
	assert_int_equal(ops->pick(s, out, 3), 3);
	assert_int_equal(out[0], 7);
	assert_int_equal(out[2], 5);
	/* A page faulting in between picks goes behind the rest. */
	ops->on_resident(s, 6);
	assert_int_equal(ops->pick(s, out, 1), 1);
	assert_int_equal(out[0], 4);
	out[4] = 999;
	assert_int_equal(ops->pick(s, out, 8), 5);
	assert_int_equal(out[0], 3);
	assert_int_equal(out[3], 0);
	assert_int_equal(out[4], 6);
	/* Draining to empty resets the tail: the next page is the new head. */
	ops->on_resident(s, 2);
	assert_int_equal(ops->pick(s, out, 8), 1);
	assert_int_equal(out[0], 2);
	ops->destroy(s);
}

static void test_out_of_range(void **state)
{
	const struct policy_victim_ops *ops = OPS(state);
	uint64_t out[4];
	void *s = ops->create(4);

	ops->on_resident(s, 4);
	ops->on_resident(s, UINT64_MAX);
	ops->on_resident(s, 1ULL << 32); /* would alias page 0 if truncated */
	assert_int_equal(ops->pick(s, out, 4), 0);
	ops->on_resident(s, 3);
	assert_int_equal(ops->pick(s, out, 4), 1);
	assert_int_equal(out[0], 3);
	ops->destroy(s);
}

/*
 * Random operations compared with a straightforward O(n) FIFO model. With
 * sample() never called, CLOCK must pick in exactly this order too.
 */
static void test_random_model(void **state)
{
	const struct policy_victim_ops *ops = OPS(state);
	enum { NP = 257, STEPS = 200000 };
	uint64_t model[NP], out[NP];
	size_t mlen = 0;
	bool queued[NP] = { false };
	void *s = ops->create(NP);
	unsigned seed = 12345;

	assert_non_null(s);
	for (int step = 0; step < STEPS; step++) {
		seed = seed * 1103515245 + 12345;
		if ((seed >> 16) % 3) {
			uint64_t p = (seed >> 8) % NP;

			/* Nothing was sampled: no page is known to be in use, the order stays FIFO. */
			if (ops->on_referenced && (seed >> 24) % 2)
				ops->on_referenced(s, (p * 7) % NP);
			ops->on_resident(s, p);
			if (!queued[p]) {
				queued[p] = true;
				model[mlen++] = p;
			}
		} else {
			size_t max = (seed >> 20) % 9, n = ops->pick(s, out, max);
			size_t want = max < mlen ? max : mlen;

			assert_int_equal(n, want);
			for (size_t i = 0; i < n; i++) {
				assert_int_equal(out[i], model[i]);
				queued[model[i]] = false;
			}
			memmove(model, model + n, (mlen - n) * sizeof(model[0]));
			mlen -= n;
		}
	}
	assert_int_equal(ops->pick(s, out, NP), mlen);
	for (size_t i = 0; i < mlen; i++)
		assert_int_equal(out[i], model[i]);
	ops->destroy(s);
}

/* A guest of 16 GiB in 4 KiB pages: 4 bytes per page, usable in O(1) steps. */
static void test_large(void **state)
{
	const struct policy_victim_ops *ops = OPS(state);
	const uint64_t np = 4ULL << 20;
	uint64_t out[4];
	void *s = ops->create(np);

	assert_non_null(s);
	ops->on_resident(s, np - 1);
	ops->on_resident(s, 0);
	ops->on_resident(s, np / 2);
	assert_int_equal(ops->pick(s, out, 4), 3);
	assert_int_equal(out[0], np - 1);
	assert_int_equal(out[1], 0);
	assert_int_equal(out[2], np / 2);
	ops->destroy(s);
}

/*
 * A huge sparse guest: creating the selector writes nothing, so it costs
 * RAM only where pages were queued (the pager's registration thread used
 * to fill 4 bytes per guest page).
 */
static void test_create_is_lazy(void **state)
{
	const struct policy_victim_ops *ops = OPS(state);
	const uint64_t np = 64ULL << 20; /* 256 GiB of guest: 256 MiB of FIFO links, 576 MiB of CLOCK's */
	uint64_t out[4];
	void *s = ops->create(np);
	uintptr_t a = (uintptr_t)s & ~(uintptr_t)4095;
	const size_t n = (size_t)((np * ((const struct impl *)*state)->bytes_per_page + 4096) / 4096) + 1;
	unsigned char *vec = calloc(n, 1);
	size_t resident = 0;

	assert_non_null(s);
	assert_non_null(vec);
	ops->on_resident(s, np - 1);
	ops->on_resident(s, 7);
	ops->on_resident(s, np / 3);
	assert_int_equal(mincore((void *)a, n * 4096, vec), 0);
	for (size_t i = 0; i < n; i++)
		resident += vec[i] & 1;
	/* The header, and one page of each per-page array for each queued page. */
	assert_true(resident <= 1 + 3 * (((const struct impl *)*state)->bytes_per_page > 4 ? 2 : 1));
	assert_int_equal(ops->pick(s, out, 4), 3);
	assert_int_equal(out[0], np - 1);
	assert_int_equal(out[1], 7);
	assert_int_equal(out[2], np / 3);
	/* Picked pages may be queued again. */
	ops->on_resident(s, 7);
	assert_int_equal(ops->pick(s, out, 4), 1);
	assert_int_equal(out[0], 7);
	free(vec);
	ops->destroy(s);
}

/* ---- CLOCK's sampling ------------------------------------------------------------ */

static const struct policy_victim_ops *const clk = &policy_victim_clock;

/* The window is a quarter of the queue, at least 64 pages, filled from the oldest pages, topped up only. */
static void test_clock_window(void **state)
{
	uint64_t out[1024];
	void *s = clk->create(1000);

	(void)state;
	assert_non_null(s);
	assert_int_equal(clk->sample(s, out, 16), 0); /* nothing queued */
	for (uint64_t p = 0; p < 100; p++)
		clk->on_resident(s, 999 - p);
	assert_int_equal(clk->sample(s, out, 0), 0);
	/* 100 queued: the minimum window of 64, in fault order, max honoured. */
	assert_int_equal(clk->sample(s, out, 10), 10);
	for (size_t i = 0; i < 10; i++)
		assert_int_equal(out[i], 999 - i);
	assert_int_equal(clk->sample(s, out, 1024), 54);
	assert_int_equal(out[0], 989);
	assert_int_equal(out[53], 936);
	assert_int_equal(clk->sample(s, out, 1024), 0); /* full */
	for (uint64_t p = 0; p < 900; p++)
		clk->on_resident(s, p);
	/* 1000 queued: a quarter. */
	assert_int_equal(clk->sample(s, out, 1024), 250 - 64);
	assert_int_equal(out[0], 935);
	assert_int_equal(out[35], 900);
	assert_int_equal(out[36], 0);
	assert_int_equal(out[185], 149);
	/* Picking 100 sampled pages: 900 queued, window 225, 150 left in it. */
	assert_int_equal(clk->pick(s, out, 100), 100);
	for (size_t i = 0; i < 100; i++)
		assert_int_equal(out[i], 999 - i);
	assert_int_equal(clk->sample(s, out, 1024), 75);
	assert_int_equal(out[0], 150);
	assert_int_equal(out[74], 224);
	/* Sampling removes nothing: everything is still picked, window (0..224) first. */
	assert_int_equal(clk->pick(s, out, 1024), 900);
	for (size_t i = 0; i < 900; i++)
		assert_int_equal(out[i], i);
	assert_int_equal(clk->pick(s, out, 1024), 0);
	clk->destroy(s);
}

/* A touched sampled page gets its second chance; nothing else moves on a reference. */
static void test_clock_second_chance(void **state)
{
	uint64_t out[128], want[128];
	size_t nw = 0;
	void *s = clk->create(128);

	(void)state;
	for (uint64_t p = 0; p < 100; p++)
		clk->on_resident(s, p);
	assert_int_equal(clk->sample(s, out, 128), 64); /* 0..63 */
	clk->on_referenced(s, 5);  /* in use: behind 99 */
	clk->on_referenced(s, 5);  /* now unsampled: ignored */
	clk->on_referenced(s, 70); /* never sampled: ignored */
	clk->on_referenced(s, 120); /* not queued: ignored, and not queued by it */
	clk->on_referenced(s, 128); /* out of range */
	clk->on_referenced(s, UINT64_MAX);
	clk->on_referenced(s, (1ULL << 32) + 6); /* would alias page 6 if truncated */
	clk->on_resident(s, 7);    /* already queued (sampled): keeps its place */
	clk->on_resident(s, 80);   /* already queued (unsampled): keeps its place */
	/* The window is topped up again: page 64 replaces 5. */
	assert_int_equal(clk->sample(s, out, 128), 1);
	assert_int_equal(out[0], 64);
	for (uint64_t p = 0; p <= 64; p++)
		if (p != 5)
			want[nw++] = p;
	for (uint64_t p = 65; p < 100; p++)
		want[nw++] = p;
	want[nw++] = 5;
	/* Sampled pages first, then the rest in order, in one pick when it asks for more. */
	assert_int_equal(clk->pick(s, out, 10), 10);
	assert_int_equal(clk->pick(s, out + 10, 128), nw - 10);
	for (size_t i = 0; i < nw; i++)
		assert_int_equal(out[i], want[i]);
	/* A picked page is not queued: a reference does not bring it back, a fault does. */
	clk->on_referenced(s, 3);
	assert_int_equal(clk->pick(s, out, 128), 0);
	clk->on_resident(s, 3);
	assert_int_equal(clk->sample(s, out, 128), 1);
	clk->on_referenced(s, 3);
	assert_int_equal(clk->pick(s, out, 128), 1);
	assert_int_equal(out[0], 3);
	clk->destroy(s);
}

/* Random operations, sampling included, compared with an O(n) model of the two lists. */
static void test_clock_random_model(void **state)
{
	enum { NP = 1031, STEPS = 60000 };
	static uint64_t un[NP], sa[NP], out[NP];
	static unsigned char where[NP]; /* 0 not queued, 1 unsampled, 2 sampled */
	size_t nun = 0, nsa = 0;
	void *s = clk->create(NP);
	uint64_t seed = 0x9e3779b97f4a7c15ULL;

	(void)state;
	assert_non_null(s);
	memset(where, 0, sizeof(where));
	for (int step = 0; step < STEPS; step++) {
		unsigned op;
		uint64_t p;

		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		op = (unsigned)(seed % 10);
		p = (seed >> 16) % (NP + 3); /* a few out of range */
		if (op < 5) {
			clk->on_resident(s, p);
			if (p < NP && !where[p]) {
				where[p] = 1;
				un[nun++] = p;
			}
		} else if (op < 7) {
			clk->on_referenced(s, p);
			if (p < NP && where[p] == 2) {
				size_t k = 0;

				while (sa[k] != p)
					k++;
				memmove(sa + k, sa + k + 1, (nsa - k - 1) * sizeof(sa[0]));
				nsa--;
				where[p] = 1;
				un[nun++] = p;
			}
		} else if (op < 8) {
			size_t max = (seed >> 40) % 100, n = clk->sample(s, out, max);
			size_t w = (nun + nsa) / 4 < 64 ? 64 : (nun + nsa) / 4, want = 0;

			while (want < max && nsa < w && nun) {
				assert_true(want < n);
				assert_int_equal(out[want], un[0]);
				where[un[0]] = 2;
				sa[nsa++] = un[0];
				memmove(un, un + 1, (--nun) * sizeof(un[0]));
				want++;
			}
			assert_int_equal(n, want);
		} else {
			size_t max = (seed >> 40) % 20, n = clk->pick(s, out, max), i = 0;

			for (; i < max && nsa; i++) {
				assert_true(i < n);
				assert_int_equal(out[i], sa[0]);
				where[sa[0]] = 0;
				memmove(sa, sa + 1, (--nsa) * sizeof(sa[0]));
			}
			for (; i < max && nun; i++) {
				assert_true(i < n);
				assert_int_equal(out[i], un[0]);
				where[un[0]] = 0;
				memmove(un, un + 1, (--nun) * sizeof(un[0]));
			}
			assert_int_equal(n, i);
		}
	}
	assert_int_equal(clk->pick(s, out, NP), nsa + nun);
	for (size_t i = 0; i < nsa; i++)
		assert_int_equal(out[i], sa[i]);
	for (size_t i = 0; i < nun; i++)
		assert_int_equal(out[nsa + i], un[i]);
	clk->destroy(s);
}

/* ---- a Zipf workload, driven as the mechanism drives a selector ------------------------- */

enum { SIM_PAGES = 16384, SIM_CAPACITY = SIM_PAGES / 4, SIM_WARMUP = 200000, SIM_ACCESSES = 1000000 };

struct sim_counts {
	uint64_t misses, references, sampled;
};

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/*
 * Replays the same Zipf reference trace against ops with room for
 * SIM_CAPACITY pages: a miss makes the page resident (on_resident); over
 * capacity the mechanism samples (and drops the mappings of what sample()
 * returns, calling it until it has no more), then evicts what pick()
 * returns, up to batch pages at once; an access to a page whose mapping
 * was dropped is a minor fault (on_referenced) that maps it again. Misses
 * are counted after a warm-up.
 */
static struct sim_counts simulate(const struct policy_victim_ops *ops, const double *cdf, const uint32_t *perm,
				  bool sampling, size_t batch)
{
	static bool resident[SIM_PAGES], unmapped[SIM_PAGES];
	struct sim_counts c = { 0 };
	uint64_t rng = 0x2545f4914f6cdd1dULL, out[128];
	size_t nres = 0;
	void *s = ops->create(SIM_PAGES);

	assert_non_null(s);
	assert_true(batch <= 128);
	memset(resident, 0, sizeof(resident));
	memset(unmapped, 0, sizeof(unmapped));
	for (uint64_t i = 0; i < SIM_WARMUP + SIM_ACCESSES; i++) {
		double u = (double)(xorshift(&rng) >> 11) / (double)(1ULL << 53);
		size_t lo = 0, hi = SIM_PAGES - 1, n;
		uint32_t p;

		while (lo < hi) {
			size_t mid = (lo + hi) / 2;

			if (cdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		p = perm[lo];
		if (resident[p]) {
			if (unmapped[p]) {
				unmapped[p] = false;
				ops->on_referenced(s, p);
				c.references += i >= SIM_WARMUP;
			}
			continue;
		}
		c.misses += i >= SIM_WARMUP;
		resident[p] = true;
		nres++;
		ops->on_resident(s, p);
		if (nres <= SIM_CAPACITY)
			continue;
		do {
			n = sampling && ops->sample ? ops->sample(s, out, 128) : 0;
			for (size_t k = 0; k < n; k++) {
				assert_true(resident[out[k]]);
				assert_false(unmapped[out[k]]);
				unmapped[out[k]] = true;
			}
			c.sampled += i >= SIM_WARMUP ? n : 0;
		} while (n == 128);
		n = ops->pick(s, out, batch);
		assert_int_equal(n, batch);
		for (size_t k = 0; k < n; k++) {
			assert_true(resident[out[k]]);
			resident[out[k]] = unmapped[out[k]] = false;
		}
		nres -= n;
	}
	ops->destroy(s);
	return c;
}

static void sim_report(const char *what, struct sim_counts fifo, struct sim_counts clock)
{
	printf("zipf 0.99, %d pages, %d resident, %d accesses, %s: misses fifo %" PRIu64 ", clock %" PRIu64
	       " (%.1f%% fewer; %" PRIu64 " pages sampled, %" PRIu64 " minor faults, %.2f per miss)\n",
	       SIM_PAGES, SIM_CAPACITY, SIM_ACCESSES, what, fifo.misses, clock.misses,
	       100.0 * ((double)fifo.misses - (double)clock.misses) / (double)fifo.misses, clock.sampled,
	       clock.references, (double)clock.references / (double)clock.misses);
}

/*
 * The point of sampling: on a skewed workload (Zipf, theta 0.99, the
 * issue's benchmark) with a quarter of the pages resident, CLOCK keeps the
 * hot pages that FIFO evicts in turn (10.9% fewer misses when written).
 * Without sampling it is FIFO exactly.
 */
static void test_clock_zipf(void **state)
{
	static double cdf[SIM_PAGES];
	static uint32_t perm[SIM_PAGES];
	struct sim_counts fifo, clock, unsampled;
	uint64_t rng = 42;
	double sum = 0, acc = 0;

	(void)state;
	for (size_t k = 0; k < SIM_PAGES; k++)
		sum += 1.0 / pow((double)(k + 1), 0.99);
	for (size_t k = 0; k < SIM_PAGES; k++) {
		acc += 1.0 / pow((double)(k + 1), 0.99);
		cdf[k] = acc / sum;
	}
	cdf[SIM_PAGES - 1] = 1.0;
	/* Hot pages scattered over the page space, not at its start. */
	for (uint32_t k = 0; k < SIM_PAGES; k++)
		perm[k] = k;
	for (uint32_t k = SIM_PAGES - 1; k > 0; k--) {
		uint32_t j = (uint32_t)(xorshift(&rng) % (k + 1)), t = perm[k];

		perm[k] = perm[j];
		perm[j] = t;
	}
	fifo = simulate(&policy_victim_fifo, cdf, perm, true, 1);
	clock = simulate(&policy_victim_clock, cdf, perm, true, 1);
	unsampled = simulate(&policy_victim_clock, cdf, perm, false, 1);
	sim_report("one page per eviction", fifo, clock);
	assert_true(clock.misses * 10 <= fifo.misses * 9);
	assert_int_equal(unsampled.misses, fifo.misses);
	assert_int_equal(unsampled.references, 0);
	/*
	 * The evictor's batches (STORE_BATCH_MAX), an eighth of the window here:
	 * still clearly better (10.1% when written), a little less than above
	 * since a batch's last pages spent less time in the window.
	 */
	fifo = simulate(&policy_victim_fifo, cdf, perm, true, 128);
	clock = simulate(&policy_victim_clock, cdf, perm, true, 128);
	sim_report("128 pages per eviction", fifo, clock);
	assert_true(clock.misses * 100 <= fifo.misses * 92);
}

int main(void)
{
/* Each contract test once per selector, named after it. */
#define BOTH(f) { "fifo: " #f, f, NULL, NULL, (void *)&fifo_impl }, { "clock: " #f, f, NULL, NULL, (void *)&clock_impl }
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find),
		BOTH(test_create_limits),
		BOTH(test_order),
		BOTH(test_duplicates),
		BOTH(test_pick_limits),
		BOTH(test_out_of_range),
		BOTH(test_random_model),
		BOTH(test_large),
		BOTH(test_create_is_lazy),
		cmocka_unit_test(test_clock_window),
		cmocka_unit_test(test_clock_second_chance),
		cmocka_unit_test(test_clock_random_model),
		cmocka_unit_test(test_clock_zipf),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
