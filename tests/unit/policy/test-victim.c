/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of victim selection: the FIFO returns pages in fault order,
 * keeps the first position of a page reported twice, honours pick limits,
 * re-queues picked pages only on a new fault, and stays consistent under
 * a long random sequence checked against a simple reference model.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "victim.h"

static const struct policy_victim_ops *ops = &policy_victim_fifo;

static void test_find(void **state)
{
	assert_ptr_equal(policy_victim_find("fifo"), &policy_victim_fifo);
	assert_null(policy_victim_find("lru"));
	assert_null(policy_victim_find(""));
	assert_null(policy_victim_find(NULL));
	assert_string_equal(policy_victim_fifo.name, "fifo");
	assert_non_null(strstr(policy_victim_names(), "fifo"));
}

static void test_create_limits(void **state)
{
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

/* Random operations compared with a straightforward O(n) model. */
static void test_random_model(void **state)
{
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
	const uint64_t np = 64ULL << 20; /* 256 GiB of guest: 256 MiB of next[] */
	uint64_t out[4];
	void *s = ops->create(np);
	uintptr_t a = (uintptr_t)s & ~(uintptr_t)4095;
	const size_t n = (size_t)((np * 4 + 4096) / 4096) + 1;
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
	assert_true(resident <= 4);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_create_limits),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_pick_limits),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_random_model),
		cmocka_unit_test(test_large),
		cmocka_unit_test(test_create_is_lazy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
