/* SPDX-License-Identifier: MIT */
/*
 * The page state machine, race by race: what the fault thread and the
 * evictor decide for every state and flag combination they can meet.
 * Each case is a sequence the two threads can really produce.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "page-state.h"

static void test_missing_fault(void **state)
{
	/* first touch and evicted-as-zero pages get the zero page */
	assert_int_equal(page_on_missing(PG_UNTOUCHED, 0, false), FAULT_ZERO);
	assert_int_equal(page_on_missing(PG_ZERO, 0, false), FAULT_ZERO);
	/* stored pages are fetched; committed-but-not-recorded ones too (their copy is current) */
	assert_int_equal(page_on_missing(PG_STORED, 0, true), FAULT_FETCH);
	assert_int_equal(page_on_missing(PG_EVICT_COMMITTED, 0, true), FAULT_FETCH);
	/* an all-zero page caught between commit and record has no copy: zeros, never a read of nothing */
	assert_int_equal(page_on_missing(PG_EVICT_COMMITTED, 0, false), FAULT_ZERO);
	/* the map says resident: a duplicate message or a balloon discard; decided by EEXIST */
	assert_int_equal(page_on_missing(PG_RESIDENT, 0, false), FAULT_RECHECK_ZERO);
	assert_int_equal(page_on_missing(PG_EVICTING, 0, false), FAULT_RECHECK_ZERO);
	/* a page whose every copy failed verification is never installed, whatever its state */
	assert_int_equal(page_on_missing(PG_STORED, PGF_LOST, true), FAULT_NOTHING);
	assert_int_equal(page_on_missing(PG_EVICT_COMMITTED, PGF_LOST, true), FAULT_NOTHING);
}

static void test_wp_fault(void **state)
{
	/* the evictor owns the page from write-protect to punch: the writer waits */
	assert_true(page_wp_waits_for_evictor(PG_EVICTING));
	assert_true(page_wp_waits_for_evictor(PG_EVICT_COMMITTED));
	/* anywhere else a WP fault is a leftover marker: un-protect and wake */
	assert_false(page_wp_waits_for_evictor(PG_RESIDENT));
	assert_false(page_wp_waits_for_evictor(PG_STORED));
	assert_false(page_wp_waits_for_evictor(PG_ZERO));
	assert_false(page_wp_waits_for_evictor(PG_UNTOUCHED));
}

static void test_evict_verdict(void **state)
{
	/* copies durable, nothing happened meanwhile: commit */
	assert_int_equal(page_evict_verdict(true, 0), EVICT_COMMIT);
	/* a write landed between write-protect and commit: the page goes back, the write is kept */
	assert_int_equal(page_evict_verdict(true, PGF_WRITE_PENDING), EVICT_GIVE_BACK);
	/* the store refused it (full, I/O error, WP failed with EAGAIN): stays resident */
	assert_int_equal(page_evict_verdict(false, 0), EVICT_GIVE_BACK);
	/* discarded by the guest while being evicted: a hole, recorded as zero, nothing stored */
	assert_int_equal(page_evict_verdict(false, PGF_DISCARDED), EVICT_FORGET);
	/* discarded, then written again (refilled): the write wins */
	assert_int_equal(page_evict_verdict(true, PGF_DISCARDED | PGF_WRITE_PENDING), EVICT_GIVE_BACK);
	assert_int_equal(page_evict_verdict(false, PGF_DISCARDED | PGF_WRITE_PENDING), EVICT_GIVE_BACK);
}

static void test_after_punch(void **state)
{
	bool wake = true;

	assert_int_equal(page_after_punch(false, 0, &wake), PG_STORED);
	assert_false(wake);
	/* all-zero pages are never stored */
	assert_int_equal(page_after_punch(true, 0, &wake), PG_ZERO);
	assert_false(wake);
	/* a writer that hit the page after the commit waited for the punch: wake it; its retry refaults the copy */
	assert_int_equal(page_after_punch(false, PGF_WRITE_PENDING, &wake), PG_STORED);
	assert_true(wake);
	/* discarded after the commit: zero, the copy is dropped */
	assert_int_equal(page_after_punch(false, PGF_DISCARDED, &wake), PG_ZERO);
	assert_false(wake);
}

static void test_discard(void **state)
{
	/* nothing held */
	assert_int_equal(page_on_discard(PG_UNTOUCHED, 0), DISCARD_NOTHING);
	assert_int_equal(page_on_discard(PG_ZERO, 0), DISCARD_NOTHING);
	/* resident or stored and idle: forgotten at once (a stored page's copies are freed) */
	assert_int_equal(page_on_discard(PG_RESIDENT, 0), DISCARD_ZERO);
	assert_int_equal(page_on_discard(PG_STORED, 0), DISCARD_ZERO);
	assert_int_equal(page_on_discard(PG_STORED, PGF_LOST), DISCARD_ZERO);
	/* a thread works on it: flagged, that thread finishes the discard */
	assert_int_equal(page_on_discard(PG_STORED, PGF_FETCHING), DISCARD_DEFER);
	assert_int_equal(page_on_discard(PG_EVICTING, 0), DISCARD_DEFER);
	assert_int_equal(page_on_discard(PG_EVICT_COMMITTED, PGF_WRITE_PENDING), DISCARD_DEFER);
}

static void test_refill_and_fetch_end(void **state)
{
	/* zeros placed after a discard: only an eviction still reading the page must give it back */
	assert_true(page_refill_gives_back(PG_EVICTING));
	assert_false(page_refill_gives_back(PG_EVICT_COMMITTED));
	assert_false(page_refill_gives_back(PG_RESIDENT));
	/* a fetch that placed its copy records the page only if it is still the stored one */
	assert_true(page_fetch_installs(PG_STORED));
	assert_true(page_fetch_installs(PG_EVICT_COMMITTED));
	assert_false(page_fetch_installs(PG_RESIDENT));
	assert_false(page_fetch_installs(PG_ZERO));
}

/* The whole life of one page through the decisions, as the two threads drive it. */
static void test_lifecycle(void **state)
{
	uint8_t st = PG_UNTOUCHED, flags = 0;
	bool wake;

	assert_int_equal(page_on_missing(st, flags, false), FAULT_ZERO);
	st = PG_RESIDENT;                      /* zero page installed */
	st = PG_EVICTING;                      /* picked, write-protected, copy written */
	assert_true(page_wp_waits_for_evictor(st));
	flags |= PGF_WRITE_PENDING;            /* the guest writes: WP fault */
	assert_int_equal(page_evict_verdict(true, flags), EVICT_GIVE_BACK);
	st = PG_RESIDENT, flags = 0;           /* given back, writer woken by the un-protect */
	st = PG_EVICTING;                      /* next round: nobody writes */
	assert_int_equal(page_evict_verdict(true, flags), EVICT_COMMIT);
	st = PG_EVICT_COMMITTED;
	flags |= PGF_WRITE_PENDING;            /* a write after the commit: it waits */
	st = page_after_punch(false, flags, &wake);
	assert_int_equal(st, PG_STORED);
	assert_true(wake);                     /* woken after the punch... */
	flags = 0;
	assert_int_equal(page_on_missing(st, flags, true), FAULT_FETCH); /* ...its retry refaults the copy */
}

/* A pager died at any point; the next one settles every page from the map and the memfd. */
static void test_adopt(void **state)
{
	/* whatever the map says, a page the memfd holds is resident, its content current */
	for (uint8_t st = PG_UNTOUCHED; st <= PG_EVICT_COMMITTED; st++) {
		assert_int_equal(page_on_adopt(st, 0, true), PG_RESIDENT);
		assert_int_equal(page_on_adopt(st, PGF_FETCHING | PGF_WRITE_PENDING, true), PG_RESIDENT);
	}
	/* died between commit and punch record: the hole is the punch, the copy is committed */
	assert_int_equal(page_on_adopt(PG_EVICT_COMMITTED, 0, false), PG_STORED);
	assert_int_equal(page_on_adopt(PG_EVICT_COMMITTED, PGF_WRITE_PENDING, false), PG_STORED);
	/* ...unless the guest discarded it after the commit */
	assert_int_equal(page_on_adopt(PG_EVICT_COMMITTED, PGF_DISCARDED, false), PG_ZERO);
	/* died mid-fetch, before the copy was placed: still stored */
	assert_int_equal(page_on_adopt(PG_STORED, PGF_FETCHING, false), PG_STORED);
	assert_int_equal(page_on_adopt(PG_STORED, PGF_LOST, false), PG_STORED);
	/* resident or mid-eviction with a hole: never punched before a commit, so the guest discarded it */
	assert_int_equal(page_on_adopt(PG_RESIDENT, 0, false), PG_ZERO);
	assert_int_equal(page_on_adopt(PG_EVICTING, 0, false), PG_ZERO);
	assert_int_equal(page_on_adopt(PG_ZERO, 0, false), PG_ZERO);
	assert_int_equal(page_on_adopt(PG_UNTOUCHED, 0, false), PG_UNTOUCHED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_missing_fault), cmocka_unit_test(test_wp_fault), cmocka_unit_test(test_evict_verdict),
		cmocka_unit_test(test_after_punch),   cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_discard),       cmocka_unit_test(test_refill_and_fetch_end),
		cmocka_unit_test(test_adopt),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
