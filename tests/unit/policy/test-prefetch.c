/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the prefetch stream detector: a sequential or strided
 * stream (also backwards) is found after two deltas, its window grows while
 * faults land where the last prediction ended and shrinks when they stop,
 * random faults and interleaved streams with no majority predict nothing
 * for one detector, while the stream table follows each of two interleaved
 * streams and still predicts nothing for random faults; vCPUs scanning
 * pages interleaved as guestsim splits them (vCPU t of n owns t, t + n, ...),
 * drifting apart at random, fault about as rarely as one vCPU alone;
 * max_window 0 turns prediction off.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "prefetch.h"

static void test_sequential_found_and_grows(void **state)
{
	struct prefetch_detector d;
	int64_t s;
	unsigned n, last = 0;
	uint64_t p = 1000;

	(void)state;
	prefetch_detector_init(&d, 32);
	assert_int_equal(prefetch_on_fault(&d, p, &s), 0);
	assert_int_equal(prefetch_on_fault(&d, p + 1, &s), 0); /* one delta is no majority */
	n = prefetch_on_fault(&d, p + 2, &s);
	assert_int_equal(s, 1);
	assert_int_equal(n, PREFETCH_MIN_WINDOW);
	p += 2;
	/* Prefetched pages fault no more: the next fault is right after the window. */
	for (int i = 0; i < 6; i++) {
		p += n + 1;
		last = n;
		n = prefetch_on_fault(&d, p, &s);
		assert_int_equal(s, 1);
		assert_true(n >= last);
		assert_true(n <= 32);
	}
	assert_int_equal(n, 32);
	/* A fault inside the window (the prefetch was late) is the stream going on, too. */
	p += 3;
	assert_int_equal(prefetch_on_fault(&d, p, &s), 32);
	assert_int_equal(s, 1);
}

static void test_stride_and_backwards(void **state)
{
	struct prefetch_detector d;
	int64_t s;
	unsigned n;

	(void)state;
	prefetch_detector_init(&d, 16);
	prefetch_on_fault(&d, 100, &s);
	prefetch_on_fault(&d, 103, &s);
	n = prefetch_on_fault(&d, 106, &s);
	assert_int_equal(n, PREFETCH_MIN_WINDOW);
	assert_int_equal(s, 3);
	/* The window predicted 109..118; the next fault at 121 continues it. */
	n = prefetch_on_fault(&d, 106 + 3 * (PREFETCH_MIN_WINDOW + 1), &s);
	assert_int_equal(s, 3);
	assert_int_equal(n, 2 * PREFETCH_MIN_WINDOW);

	prefetch_detector_init(&d, 16);
	prefetch_on_fault(&d, 5000, &s);
	prefetch_on_fault(&d, 4999, &s);
	n = prefetch_on_fault(&d, 4998, &s);
	assert_int_equal(s, -1);
	assert_int_equal(n, PREFETCH_MIN_WINDOW);
}

static void test_random_predicts_nothing(void **state)
{
	struct prefetch_detector d;
	unsigned predicted = 0;
	int64_t s;

	(void)state;
	srand(7);
	prefetch_detector_init(&d, 64);
	for (int i = 0; i < 10000; i++)
		predicted += prefetch_on_fault(&d, (uint64_t)rand() % 65536, &s) > 0;
	assert_true(predicted < 10); /* chance repeats only */
}

static void test_break_shrinks_window(void **state)
{
	struct prefetch_detector d;
	uint64_t p = 0;
	unsigned n = 0;
	int64_t s;

	(void)state;
	prefetch_detector_init(&d, 64);
	for (int i = 0; i < 12; i++) {
		p += n + 1;
		n = prefetch_on_fault(&d, p, &s);
	}
	assert_int_equal(n, 64);
	/* Random jumps: the majority is lost within half the history, then nothing is predicted. */
	unsigned zeros = 0;
	for (int i = 0; i < PREFETCH_HISTORY; i++) {
		p += 100003 * (uint64_t)(i + 1);
		zeros += prefetch_on_fault(&d, p, &s) == 0;
	}
	assert_true(zeros >= PREFETCH_HISTORY / 2);
	assert_int_equal(prefetch_on_fault(&d, p + 77777, &s), 0);
	/* A new stream starts small again. */
	p += 500000;
	for (int i = 0; i < PREFETCH_HISTORY; i++)
		n = prefetch_on_fault(&d, ++p, &s);
	assert_int_equal(s, 1);
	assert_true(n >= PREFETCH_MIN_WINDOW && n < 64);
}

static void test_interleaved_streams_no_majority(void **state)
{
	struct prefetch_detector d;
	unsigned predicted = 0;
	int64_t s;

	(void)state;
	prefetch_detector_init(&d, 32);
	for (uint64_t i = 0; i < 100; i++) {
		predicted += prefetch_on_fault(&d, 1000 + i * 7, &s) > 0;
		predicted += prefetch_on_fault(&d, 900000 + i * 13, &s) > 0;
	}
	assert_int_equal(predicted, 0);
}

static void test_streams_interleaved(void **state)
{
	struct prefetch_streams st;
	uint64_t a = 1000, b = 900000;
	unsigned na = 0, nb = 0, ga = 0, gb = 0;
	int64_t s;

	(void)state;
	prefetch_streams_init(&st, 32);
	/* Two vCPUs scanning their own halves, faults alternating; each skips what was prefetched for it. */
	for (int i = 0; i < 40; i++) {
		a += na + 1;
		na = prefetch_streams_on_fault(&st, a, &s);
		if (na) {
			assert_int_equal(s, 1);
			ga++;
		}
		b += 2 * (nb + 1);
		nb = prefetch_streams_on_fault(&st, b, &s);
		if (nb) {
			assert_int_equal(s, 2);
			gb++;
		}
	}
	assert_true(ga >= 35);
	assert_true(gb >= 35);
	assert_int_equal(na, 32);
	assert_int_equal(nb, 32);
}

static void test_streams_random(void **state)
{
	struct prefetch_streams st;
	unsigned predicted = 0;
	int64_t s;

	(void)state;
	srand(11);
	prefetch_streams_init(&st, 64);
	for (int i = 0; i < 20000; i++)
		predicted += prefetch_streams_on_fault(&st, (uint64_t)rand() % 262144, &s) > 0;
	assert_true(predicted < 20);
}

/*
 * Replays nthreads vCPUs scanning sequentially, vCPU t owning pages t,
 * t + nthreads, ... (guestsim's split); a random vCPU takes each step, so
 * they drift apart as a random walk; with seed 0 they take turns instead,
 * the last vCPU starting lead of its pages ahead. A page faults unless an
 * earlier prediction covered it. Returns the pages touched per fault.
 */
static double interleaved_scan(unsigned nthreads, unsigned seed, unsigned lead)
{
	enum { NPAGES = 65536 };
	static unsigned char present[NPAGES];
	struct prefetch_streams st;
	uint64_t pos[8] = { 0 };
	unsigned long touched = 0, faults = 0;

	memset(present, 0, sizeof(present));
	prefetch_streams_init(&st, 64);
	srand(seed);
	pos[nthreads - 1] = lead;
	for (unsigned step = 0;; step++) {
		unsigned t = seed ? (unsigned)rand() % nthreads : step % nthreads;
		uint64_t page = pos[t]++ * nthreads + t;
		int64_t s;

		if (page >= NPAGES)
			break;
		touched++;
		if (present[page])
			continue;
		faults++;
		present[page] = 1;
		unsigned n = prefetch_streams_on_fault(&st, page, &s);
		for (unsigned i = 1; i <= n; i++) {
			int64_t q = (int64_t)page + s * (int64_t)i;
			if (q >= 0 && q < NPAGES)
				present[q] = 1;
		}
	}
	return (double)touched / (double)faults;
}

static void test_streams_interleaved_vcpus(void **state)
{
	(void)state;
	/* One vCPU: the window grows to 64, so about 64 pages per fault. */
	assert_true(interleaved_scan(1, 3, 0) > 60);
	/* Each vCPU's faults used to land within PREFETCH_NEAR of the other's and break its majority. */
	for (unsigned seed = 1; seed <= 5; seed++) {
		assert_true(interleaved_scan(2, seed, 0) > 50);
		assert_true(interleaved_scan(3, seed, 0) > 40);
	}
	/*
	 * Taking turns a few pages apart, their faults used to alternate on one
	 * unpredicted stream (+d, -(d - 2), ...): about 2 pages per fault.
	 */
	for (unsigned lead = 0; lead <= 150; lead += 5)
		assert_true(interleaved_scan(2, 0, lead) > 50);
}

static void test_disabled(void **state)
{
	struct prefetch_detector d;
	int64_t s = 99;

	(void)state;
	prefetch_detector_init(&d, 0);
	for (uint64_t p = 0; p < 50; p++)
		assert_int_equal(prefetch_on_fault(&d, p, &s), 0);
	assert_int_equal(s, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sequential_found_and_grows),
		cmocka_unit_test(test_stride_and_backwards),
		cmocka_unit_test(test_random_predicts_nothing),
		cmocka_unit_test(test_break_shrinks_window),
		cmocka_unit_test(test_interleaved_streams_no_majority),
		cmocka_unit_test(test_streams_interleaved),
		cmocka_unit_test(test_streams_random),
		cmocka_unit_test(test_streams_interleaved_vcpus),
		cmocka_unit_test(test_disabled),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
