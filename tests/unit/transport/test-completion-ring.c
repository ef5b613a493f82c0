/* SPDX-License-Identifier: MIT */
/*
 * The transports' shared completion ring: it holds exactly its in-flight
 * limit, refuses reservations past it, never loses a completion whose
 * request holds a reservation, and keeps FIFO order across wrap-around.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "completion-ring.h"

/* Filled to the transports' limit: every entry reserved, then every completion queued, none lost. */
static void test_fill_to_limit(void **state)
{
	static struct donor_completion out[DONOR_MAX_INFLIGHT + 1];
	struct donor_cq q;

	assert_int_equal(donor_cq_init(&q, DONOR_MAX_INFLIGHT), 0);
	for (unsigned i = 0; i < DONOR_MAX_INFLIGHT; i++)
		assert_int_equal(donor_cq_reserve(&q, 1), 0);
	assert_int_equal(donor_cq_room(&q), 0);
	assert_int_equal(donor_cq_reserve(&q, 1), -EAGAIN);
	for (unsigned i = 0; i < DONOR_MAX_INFLIGHT; i++)
		donor_cq_push(&q, 1000 + i, i % 3 ? 0 : -ETIMEDOUT, i % 2 ? DONOR_COMP_READ : DONOR_COMP_WRITE);
	assert_int_equal(donor_cq_queued(&q), DONOR_MAX_INFLIGHT);
	/* Queued but not collected still counts against the limit. */
	assert_int_equal(donor_cq_reserve(&q, 1), -EAGAIN);
	assert_int_equal(donor_cq_pop(&q, out, DONOR_MAX_INFLIGHT + 1), DONOR_MAX_INFLIGHT);
	for (unsigned i = 0; i < DONOR_MAX_INFLIGHT; i++) {
		assert_int_equal(out[i].cookie, 1000 + i);
		assert_int_equal(out[i].status, i % 3 ? 0 : -ETIMEDOUT);
		assert_int_equal(out[i].op, i % 2 ? DONOR_COMP_READ : DONOR_COMP_WRITE);
	}
	assert_int_equal(donor_cq_queued(&q), 0);
	assert_int_equal(donor_cq_room(&q), DONOR_MAX_INFLIGHT);
	assert_int_equal(donor_cq_pop(&q, out, 4), 0);
	donor_cq_destroy(&q);
}

/* A reservation of several entries is all or nothing; unreserve gives entries back. */
static void test_reserve_all_or_nothing(void **state)
{
	struct donor_cq q;

	assert_int_equal(donor_cq_init(&q, 8), 0);
	assert_int_equal(donor_cq_reserve(&q, 6), 0);
	assert_int_equal(donor_cq_reserve(&q, 3), -EAGAIN);
	assert_int_equal(donor_cq_room(&q), 2);
	donor_cq_unreserve(&q, 4);
	assert_int_equal(donor_cq_room(&q), 6);
	assert_int_equal(donor_cq_reserve(&q, 6), 0);
	assert_int_equal(donor_cq_room(&q), 0);
	donor_cq_destroy(&q);
}

/* Many rounds across the end of the array: order and counts hold. */
static void test_wraparound_fifo(void **state)
{
	struct donor_completion out[8];
	uint64_t next_push = 0, next_pop = 0;
	struct donor_cq q;

	assert_int_equal(donor_cq_init(&q, 7), 0);
	for (unsigned round = 0; round < 1000; round++) {
		unsigned want = 1 + round % 5, got;

		while (want && donor_cq_reserve(&q, 1) == 0) {
			donor_cq_push(&q, next_push++, 0, DONOR_COMP_WRITE);
			want--;
		}
		got = donor_cq_pop(&q, out, 1 + round % 4);
		for (unsigned i = 0; i < got; i++)
			assert_int_equal(out[i].cookie, next_pop++);
		assert_true(donor_cq_queued(&q) + donor_cq_room(&q) == 7);
	}
	while (donor_cq_queued(&q)) {
		unsigned got = donor_cq_pop(&q, out, 8);
		for (unsigned i = 0; i < got; i++)
			assert_int_equal(out[i].cookie, next_pop++);
	}
	assert_int_equal(next_pop, next_push);
	donor_cq_destroy(&q);
}

static void test_init_and_destroy(void **state)
{
	struct donor_cq q;

	assert_int_equal(donor_cq_init(&q, 0), -EINVAL);
	donor_cq_destroy(&q); /* zeroed by the failed init */
	donor_cq_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fill_to_limit),
		cmocka_unit_test(test_reserve_all_or_nothing),
		cmocka_unit_test(test_wraparound_fifo),
		cmocka_unit_test(test_init_and_destroy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
