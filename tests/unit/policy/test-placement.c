/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of donor placement: only up donors with free space and not
 * excluded are chosen, copies land on distinct donors, and power of two
 * choices favours emptier donors while still using every eligible one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "placement.h"

static void test_none_eligible(void **state)
{
	struct policy_donor_view v[3] = { { false, 100 }, { true, 0 }, { true, 50 } };
	uint64_t rnd = 1;

	assert_int_equal(policy_place_donor(v, 0, 0, &rnd), -ENOSPC);
	assert_int_equal(policy_place_donor(v, 2, 0, &rnd), -ENOSPC);   /* down, full */
	assert_int_equal(policy_place_donor(v, 3, 1u << 2, &rnd), -ENOSPC); /* the only one excluded */
	for (int i = 0; i < 100; i++)
		assert_int_equal(policy_place_donor(v, 3, 0, &rnd), 2);
}

static void test_distinct_copies(void **state)
{
	struct policy_donor_view v[4] = { { true, 10 }, { true, 20 }, { false, 90 }, { true, 30 } };
	unsigned idx[3];
	uint64_t rnd = 42;

	for (int round = 0; round < 1000; round++) {
		unsigned got = policy_place_copies(v, 4, 3, 0, &rnd, idx);
		assert_int_equal(got, 3);
		assert_true(idx[0] != idx[1] && idx[1] != idx[2] && idx[0] != idx[2]);
		for (unsigned k = 0; k < got; k++)
			assert_int_not_equal(idx[k], 2);
	}
	/* Asking for more than there are gives what there is. */
	assert_int_equal(policy_place_copies(v, 4, 3, 1u << 0, &rnd, idx), 2);
	assert_int_equal(policy_place_copies(v, 4, 2, (1u << 0) | (1u << 1) | (1u << 3), &rnd, idx), 0);
}

static void test_prefers_free_space(void **state)
{
	struct policy_donor_view v[3] = { { true, 1000 }, { true, 10 }, { true, 10 } };
	unsigned hits[3] = { 0 };
	uint64_t rnd = 7;

	for (int i = 0; i < 30000; i++)
		hits[policy_place_donor(v, 3, 0, &rnd)]++;
	/* Donor 0 wins every pair it is in: 2 of 3 pairs. */
	assert_true(hits[0] > 18000 && hits[0] < 22000);
	/* The two equal donors share the rest, both used. */
	assert_true(hits[1] > 3000 && hits[2] > 3000);
}

static void test_two_equal(void **state)
{
	struct policy_donor_view v[2] = { { true, 5 }, { true, 5 } };
	unsigned hits[2] = { 0 };
	uint64_t rnd = 0; /* a zero seed still works */

	for (int i = 0; i < 10000; i++)
		hits[policy_place_donor(v, 2, 0, &rnd)]++;
	assert_true(hits[0] > 4000 && hits[1] > 4000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_none_eligible),
		cmocka_unit_test(test_distinct_copies),
		cmocka_unit_test(test_prefers_free_space),
		cmocka_unit_test(test_two_equal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
