/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the disk cache's pure decisions: CLOCK takes free entries
 * first, spares what was read since the hand passed, keeps a hot working
 * set resident while a scan streams through, always finds a victim when
 * every entry is referenced; spans name the blocks a request touches and
 * whether its ends cover them only in part.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "disk-cache.h"

static void test_free_first(void **state)
{
	uint8_t f[4] = { POLICY_DC_VALID, 0, POLICY_DC_VALID | POLICY_DC_REF, 0 };
	size_t hand = 0;

	/* Entry 0 is valid and unreferenced: the hand takes it; then the free entry 1. */
	assert_int_equal(policy_dc_clock_pick(f, 4, &hand), 0);
	assert_int_equal(hand, 1);
	assert_int_equal(policy_dc_clock_pick(f, 4, &hand), 1);
	/* 2 is referenced: passed over (its bit cleared), 3 is free. */
	assert_int_equal(policy_dc_clock_pick(f, 4, &hand), 3);
	assert_int_equal(f[2], POLICY_DC_VALID);
}

static void test_all_referenced(void **state)
{
	uint8_t f[8];
	size_t hand = 5;

	memset(f, POLICY_DC_VALID | POLICY_DC_REF, sizeof(f));
	/* A full sweep clears every bit, then the hand's own start is the victim. */
	assert_int_equal(policy_dc_clock_pick(f, 8, &hand), 5);
	assert_int_equal(hand, 6);
	for (int i = 0; i < 8; i++)
		assert_int_equal(f[i], POLICY_DC_VALID);
}

/* A simulated cache of n entries: a hot set read between scan blocks stays in. */
static void test_hot_set_survives_scan(void **state)
{
	enum { N = 64, HOT = 16 };
	uint8_t f[N] = { 0 };
	uint64_t key[N];
	size_t hand = 0;
	unsigned hot_hits = 0, hot_reads = 0;

	for (uint64_t i = 0; i < 5000; i++) {
		uint64_t k = (i % 4 == 0) ? 1000000 + i : (i % HOT); /* 3 of 4 reads on the hot set */
		int hit = -1;

		for (int e = 0; e < N; e++)
			if ((f[e] & POLICY_DC_VALID) && key[e] == k)
				hit = e;
		if (k < HOT && i > 1000) {
			hot_reads++;
			hot_hits += hit >= 0;
		}
		if (hit >= 0) {
			f[hit] |= POLICY_DC_REF;
			continue;
		}
		size_t v = policy_dc_clock_pick(f, N, &hand);
		key[v] = k;
		f[v] = POLICY_DC_VALID; /* inserted unreferenced: a block read once goes first */
	}
	assert_int_equal(hot_reads, 3000);
	/* Once warm, every hot read hits: the scan only ever evicts scan blocks. */
	assert_int_equal(hot_hits, hot_reads);
}

static void test_span(void **state)
{
	struct policy_dc_span s;

	policy_dc_span(0, 65536, 65536, &s);
	assert_int_equal(s.first, 0);
	assert_int_equal(s.n, 1);
	assert_false(s.head_partial);
	assert_false(s.tail_partial);

	policy_dc_span(4096, 4096, 65536, &s);
	assert_int_equal(s.first, 0);
	assert_int_equal(s.n, 1);
	assert_true(s.head_partial);
	assert_true(s.tail_partial);

	policy_dc_span(65536 - 512, 65536 + 1024, 65536, &s);
	assert_int_equal(s.first, 0);
	assert_int_equal(s.n, 3);
	assert_true(s.head_partial);
	assert_true(s.tail_partial);

	policy_dc_span(3 * 65536, 2 * 65536 + 100, 65536, &s);
	assert_int_equal(s.first, 3);
	assert_int_equal(s.n, 3);
	assert_false(s.head_partial);
	assert_true(s.tail_partial);

	policy_dc_span(123, 0, 65536, &s);
	assert_int_equal(s.n, 0);

	/* The last byte of a 64-bit disk. */
	policy_dc_span(UINT64_MAX - 4095, 4095, 4096, &s);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.first, (UINT64_MAX - 4095) / 4096);
	assert_int_equal(policy_dc_entries(4ULL << 30, 65536), 65536);
	assert_int_equal(policy_dc_entries((1ULL << 20) + 5, 65536), 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_free_first),
		cmocka_unit_test(test_all_referenced),
		cmocka_unit_test(test_hot_set_survives_scan),
		cmocka_unit_test(test_span),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
