/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of guestsim's building blocks: the page pattern must be
 * deterministic and catch any single flipped byte, the hot-set permutation
 * must be a bijection, the Zipf generator must produce the skew it claims,
 * and the histogram must bucket and rank values within its stated precision.
 * A wrong helper would make guestsim pass a broken pager, hence these checks.
 */
#include "gs-hist.h"
#include "gs-pattern.h"
#include "gs-rand.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static uint64_t page_a[GS_PAGE_WORDS], page_b[GS_PAGE_WORDS], scratch[GS_PAGE_WORDS];

static void test_pattern_roundtrip(void **state)
{
	for (int c = GS_CONTENT_RANDOM; c <= GS_CONTENT_REALISTIC; c++) {
		struct gs_mismatch m;

		gs_page_fill(page_a, 9, 1234, 3, (enum gs_content)c);
		assert_int_equal(page_a[0], GS_MAGIC);
		assert_int_equal(page_a[1], 1234);
		assert_int_equal(page_a[2], 3);
		assert_true(gs_page_verify(page_a, 9, 1234, 3, (enum gs_content)c, scratch, &m));
		/* Same inputs, same bytes; any other input changes the body. */
		gs_page_fill(page_b, 9, 1234, 3, (enum gs_content)c);
		assert_memory_equal(page_a, page_b, PAGE_SIZE_4K);
		gs_page_fill(page_b, 9, 1234, 4, (enum gs_content)c);
		assert_memory_not_equal(page_a + 3, page_b + 3, PAGE_SIZE_4K - 24);
		gs_page_fill(page_b, 9, 1235, 3, (enum gs_content)c);
		assert_memory_not_equal(page_a + 3, page_b + 3, PAGE_SIZE_4K - 24);
		gs_page_fill(page_b, 10, 1234, 3, (enum gs_content)c);
		assert_memory_not_equal(page_a + 3, page_b + 3, PAGE_SIZE_4K - 24);
	}
}

static void test_pattern_detects_every_byte(void **state)
{
	unsigned char *p = (unsigned char *)page_a;

	for (int c = GS_CONTENT_RANDOM; c <= GS_CONTENT_REALISTIC; c++) {
		gs_page_fill(page_a, 1, 77, 5, (enum gs_content)c);
		for (unsigned off = 0; off < PAGE_SIZE_4K; off++) {
			struct gs_mismatch m;

			p[off] ^= 0x01;
			assert_false(gs_page_verify(page_a, 1, 77, 5, (enum gs_content)c, scratch, &m));
			assert_int_equal(m.offset, off);
			assert_int_equal(m.bad_bytes, 1);
			p[off] ^= 0x01;
		}
		assert_true(gs_page_verify(page_a, 1, 77, 5, (enum gs_content)c, scratch, NULL));
	}
}

static void test_pattern_diagnosis(void **state)
{
	struct gs_mismatch m;

	/* A stale generation is recognisable from the header. */
	gs_page_fill(page_a, 1, 42, 6, GS_CONTENT_RANDOM);
	assert_false(gs_page_verify(page_a, 1, 42, 7, GS_CONTENT_RANDOM, scratch, &m));
	assert_int_equal(m.found_magic, GS_MAGIC);
	assert_int_equal(m.found_index, 42);
	assert_int_equal(m.found_gen, 6);
	assert_false(m.found_zero);
	/* Generation 0 is a never-written page: zeros verify, a filled page does not. */
	memset(page_b, 0, sizeof(page_b));
	assert_true(gs_page_verify(page_b, 1, 42, 0, GS_CONTENT_RANDOM, scratch, NULL));
	assert_false(gs_page_verify(page_b, 1, 42, 1, GS_CONTENT_REALISTIC, scratch, &m));
	assert_true(m.found_zero);
	assert_false(gs_page_verify(page_a, 1, 42, 0, GS_CONTENT_RANDOM, scratch, &m));
}

static void test_realistic_is_mixed(void **state)
{
	unsigned zero_words = 0, total = 0, text_bytes = 0;

	/* Each chunk kind should show up: zero runs, ASCII text, other data. */
	for (uint64_t i = 0; i < 256; i++) {
		const unsigned char *b = (const unsigned char *)page_a;

		gs_page_fill(page_a, 3, i, 1, GS_CONTENT_REALISTIC);
		for (unsigned w = 3; w < GS_PAGE_WORDS; w++, total++)
			zero_words += page_a[w] == 0;
		for (unsigned k = 24; k < PAGE_SIZE_4K; k++)
			text_bytes += b[k] >= 'a' && b[k] <= 'z';
	}
	/* Zero chunks are 1/4 and structs add some zero words: 25%..45%. */
	assert_in_range(zero_words * 100 / total, 25, 45);
	assert_in_range(text_bytes * 100 / (256 * (PAGE_SIZE_4K - 24)), 5, 30);
}

static void test_perm_bijection(void **state)
{
	static const uint64_t sizes[] = { 1, 2, 3, 5, 1000, 4097, 65543 };

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		uint64_t n = sizes[s], fixed = 0;
		unsigned char *seen = calloc(n, 1);
		struct gs_perm p;

		assert_non_null(seen);
		gs_perm_init(&p, n, 12345 + s);
		for (uint64_t x = 0; x < n; x++) {
			uint64_t y = gs_perm_apply(&p, x);

			assert_true(y < n);
			assert_false(seen[y]);
			seen[y] = 1;
			fixed += y == x;
		}
		if (n >= 1000)
			assert_true(fixed < n / 100);
		free(seen);
	}
}

static void test_perm_scatters_hot_set(void **state)
{
	struct gs_perm p;
	unsigned adjacent = 0;

	gs_perm_init(&p, 100000, 1);
	for (uint64_t r = 0; r + 1 < 100; r++) {
		uint64_t a = gs_perm_apply(&p, r), b = gs_perm_apply(&p, r + 1);

		adjacent += a + 1 == b || b + 1 == a;
	}
	assert_true(adjacent < 3);
}

static double exact_zeta(uint64_t n, double theta)
{
	double s = 0;

	for (uint64_t i = 1; i <= n; i++)
		s += pow((double)i, -theta);
	return s;
}

static void test_zipf_normaliser(void **state)
{
	struct gs_zipf z;

	/* Above 100000 terms the tail is integrated: must stay within 1e-6. */
	assert_int_equal(gs_zipf_init(&z, 2000000, 0.99), 0);
	assert_true(fabs(z.zetan / exact_zeta(2000000, 0.99) - 1.0) < 1e-6);
	assert_int_equal(gs_zipf_init(&z, 10, 0.5), 0);
	assert_true(fabs(z.zetan - exact_zeta(10, 0.5)) < 1e-12);
	assert_int_equal(gs_zipf_init(&z, 10, 1.0), -EINVAL);
	assert_int_equal(gs_zipf_init(&z, 0, 0.5), -EINVAL);
}

static void test_zipf_skew(void **state)
{
	enum { N = 10000, SAMPLES = 2000000 };
	uint64_t *hits = calloc(N, sizeof(*hits)), top = 0;
	struct gs_zipf z;
	struct gs_rng rng;
	double p0, p9;

	assert_non_null(hits);
	assert_int_equal(gs_zipf_init(&z, N, 0.99), 0);
	gs_rng_seed(&rng, 5, 0);
	for (int i = 0; i < SAMPLES; i++) {
		uint64_t r = gs_zipf_next(&z, &rng);

		assert_true(r < N);
		hits[r]++;
	}
	/* P(rank k) = (k+1)^-theta / zeta(N): rank 0 and rank 9 within 3%. */
	p0 = (double)hits[0] / SAMPLES;
	p9 = (double)hits[9] / SAMPLES;
	assert_true(fabs(p0 * z.zetan - 1.0) < 0.03);
	assert_true(fabs(p9 * z.zetan / pow(10, -0.99) - 1.0) < 0.03);
	for (int k = 0; k < N / 100; k++)
		top += hits[k];
	/* The hottest 1% of pages take about half of the accesses at theta 0.99. */
	assert_in_range(top * 100 / SAMPLES, 45, 60);
	free(hits);
}

static void test_rng_deterministic(void **state)
{
	struct gs_rng a, b, c;
	int same_c = 0;

	gs_rng_seed(&a, 7, 1);
	gs_rng_seed(&b, 7, 1);
	gs_rng_seed(&c, 7, 2);
	for (int i = 0; i < 1000; i++) {
		uint64_t x = gs_rng_next(&a);

		assert_int_equal(x, gs_rng_next(&b));
		same_c += x == gs_rng_next(&c);
		assert_true(gs_rng_below(&a, 17) < 17);
		gs_rng_below(&b, 17);
		gs_rng_next(&c);
	}
	assert_int_equal(same_c, 0);
}

static void test_hist_buckets(void **state)
{
	for (uint64_t v = 0; v < 5000000; v = v < 100 ? v + 1 : v + v / 7) {
		unsigned b = gs_hist_bucket(v);

		assert_true(b < GS_HIST_BUCKETS);
		assert_true(gs_hist_bucket_low(b) <= v);
		assert_true(v < gs_hist_bucket_low(b + 1));
	}
	assert_int_equal(gs_hist_bucket(UINT64_MAX), GS_HIST_BUCKETS - 1);
}

static void test_hist_quantiles(void **state)
{
	struct gs_hist *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));

	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(gs_hist_quantile(a, 0.5), 0);
	/* 1..100000 split over two histograms, then merged. */
	for (uint64_t v = 1; v <= 100000; v++)
		gs_hist_add(v % 2 ? a : b, v);
	gs_hist_merge(a, b);
	assert_int_equal(a->count, 100000);
	assert_int_equal(a->min, 1);
	assert_int_equal(a->max, 100000);
	assert_int_equal(a->sum, 100000ULL * 100001 / 2);
	assert_true(fabs((double)gs_hist_quantile(a, 0.5) / 50000 - 1) < 0.035);
	assert_true(fabs((double)gs_hist_quantile(a, 0.9) / 90000 - 1) < 0.035);
	assert_true(fabs((double)gs_hist_quantile(a, 0.99) / 99000 - 1) < 0.035);
	assert_true(gs_hist_quantile(a, 0.999) <= 100000);
	assert_int_equal(gs_hist_quantile(a, 1.0), 100000);
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pattern_roundtrip),
		cmocka_unit_test(test_pattern_detects_every_byte),
		cmocka_unit_test(test_pattern_diagnosis),
		cmocka_unit_test(test_realistic_is_mixed),
		cmocka_unit_test(test_perm_bijection),
		cmocka_unit_test(test_perm_scatters_hot_set),
		cmocka_unit_test(test_zipf_normaliser),
		cmocka_unit_test(test_zipf_skew),
		cmocka_unit_test(test_rng_deterministic),
		cmocka_unit_test(test_hist_buckets),
		cmocka_unit_test(test_hist_quantiles),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
