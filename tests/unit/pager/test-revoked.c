/* SPDX-License-Identifier: MIT */
/*
 * The pager's set of revoked donor slabs: lookups, removal, expiry after
 * the donor's deadline, and that it stays bounded and cheap when a donor
 * revokes tens of thousands of slabs, repeats itself, or sends one
 * notification per slab.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "../../lib/test-budget.h"
#include "revoked.h"
#include "util.h"

#define SEC 1000000000ULL

static void test_basic(void **state)
{
	struct revoked_set rs = { 0 };
	uint32_t ids[] = { 0x30001, 7, 0x10002, 7 };

	(void)state;
	assert_int_equal(revoked_set_add(&rs, ids, 4, 1000, SEC), 0);
	assert_int_equal(rs.n, 3);
	assert_true(revoked_set_has(&rs, 7));
	assert_true(revoked_set_has(&rs, 0x30001));
	assert_false(revoked_set_has(&rs, 8));
	revoked_set_remove(&rs, 7);
	revoked_set_remove(&rs, 7);
	assert_false(revoked_set_has(&rs, 7));
	assert_int_equal(rs.n, 2);
	assert_int_equal(revoked_set_add(&rs, NULL, 0, 0, SEC), 0);
	/* Past the deadline and the margin the donor has freed the slabs itself. */
	revoked_set_prune(&rs, SEC + SEC + REVOKED_MARGIN_NS - 1);
	assert_int_equal(rs.n, 2);
	revoked_set_prune(&rs, SEC + SEC + REVOKED_MARGIN_NS + 1);
	assert_int_equal(rs.n, 0);
	revoked_set_clear(&rs);
}

/* 20,000 slabs revoked, the notification repeated, then some one per notification: bounded and quick. */
static void test_many(void **state)
{
	enum { N = 20000 };
	struct revoked_set rs = { 0 };
	uint32_t *ids = malloc(N * sizeof(*ids));
	uint64_t t0 = now_ns(), el;

	(void)state;
	assert_non_null(ids);
	for (unsigned i = 0; i < N; i++)
		ids[i] = (i * 7919u) % 65535u + 1;
	for (unsigned r = 0; r < 50; r++)
		assert_int_equal(revoked_set_add(&rs, ids, N, 30000, SEC), 0);
	assert_int_equal(rs.n, N);
	for (unsigned i = 0; i < N; i += 4)
		assert_int_equal(revoked_set_add(&rs, &ids[i], 1, 30000, SEC), 0);
	assert_int_equal(rs.n, N);
	for (unsigned i = 0; i < N; i++)
		assert_true(revoked_set_has(&rs, ids[i]));
	for (unsigned i = 0; i < N; i += 2)
		revoked_set_remove(&rs, ids[i]);
	assert_int_equal(rs.n, N / 2);
	el = now_ns() - t0;
	print_message("revoked set: 20k ids x 50 + 5k single adds + 30k lookups/removals in %.3f s\n",
		      (double)el / 1e9);
	/* A list scanned per lookup takes minutes here; the set takes milliseconds (bound generous for sanitizers). */
	assert_true(el < 20 * SEC * test_budget_x());
	revoked_set_clear(&rs);
	free(ids);
}

/* A hostile donor sending ids it cannot have does not grow the set past the donor id space. */
static void test_bounded(void **state)
{
	enum { N = 100000 };
	struct revoked_set rs = { 0 };
	uint32_t *ids = malloc(N * sizeof(*ids));

	(void)state;
	assert_non_null(ids);
	for (unsigned i = 0; i < N; i++)
		ids[i] = i + 1;
	assert_int_equal(revoked_set_add(&rs, ids, N, 1000, SEC), -E2BIG);
	assert_int_equal(rs.n, REVOKED_SET_MAX);
	assert_int_equal(revoked_set_add(&rs, ids, N, 1000, SEC), -E2BIG);
	assert_int_equal(rs.n, REVOKED_SET_MAX);
	/* Expired entries go when the next notification comes. */
	assert_int_equal(revoked_set_add(&rs, ids, 10, 1000, 100 * SEC), 0);
	assert_int_equal(rs.n, 10);
	revoked_set_clear(&rs);
	free(ids);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_many),
		cmocka_unit_test(test_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
