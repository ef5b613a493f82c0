/* SPDX-License-Identifier: MIT */
/*
 * The page map's verbs (uffd-pager/pagemap.h), one by one and race by
 * race: each sequence below is one the fault thread, the evictor and
 * repair can really produce, replayed without a uffd. After every test
 * the counters must agree with a count of the entries' states.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pagemap.h"

static struct pagemap pm;

static int setup1(void **state)
{
	if (pagemap_init(&pm, 1, -1, 0) < 0 || pagemap_grow(&pm, 64) < 0)
		return -1;
	return 0;
}

static int setup3(void **state)
{
	if (pagemap_init(&pm, 3, -1, 0) < 0 || pagemap_grow(&pm, 64) < 0)
		return -1;
	return 0;
}

/* The counters are what the states say: resident = RESIDENT + EVICTING + EVICT_COMMITTED. */
static int teardown(void **state)
{
	uint64_t resident = 0, stored = 0, zero = 0;

	for (uint64_t p = 0; p < pagemap_npages(&pm); p++) {
		switch (pagemap_entry(&pm, p)->state) {
		case PG_RESIDENT:
		case PG_EVICTING:
		case PG_EVICT_COMMITTED:
			resident++;
			break;
		case PG_STORED:
			stored++;
			break;
		case PG_ZERO:
			zero++;
			break;
		}
	}
	assert_int_equal(pagemap_resident(&pm), resident);
	assert_int_equal(pagemap_stored(&pm), stored);
	assert_int_equal(pagemap_zero(&pm), zero);
	pagemap_destroy(&pm);
	pagemap_destroy(&pm); /* twice: a no-op */
	return 0;
}

static void locs_of(uint32_t *locs, uint32_t a, uint32_t b, uint32_t c)
{
	for (unsigned i = 0; i < STORE_MAX_COPIES; i++)
		locs[i] = LOC_NONE;
	locs[0] = a;
	locs[1] = b;
	locs[2] = c;
}

static void assert_no_copies(uint64_t page)
{
	uint32_t locs[STORE_MAX_COPIES];

	pagemap_get_locs(&pm, page, locs);
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		assert_int_equal(locs[c], LOC_NONE);
	assert_false(pagemap_has_copy(&pm, page));
}

static uint8_t state_of(uint64_t page) { return pagemap_entry(&pm, page)->state; }
static uint8_t flags_of(uint64_t page) { return pagemap_entry(&pm, page)->flags; }

static void make_resident(uint64_t page)
{
	uint32_t freed[STORE_MAX_COPIES];

	assert_true(pagemap_installed(&pm, page, freed));
	assert_int_equal(state_of(page), PG_RESIDENT);
}

/* Resident, evicted with these copies, punched: STORED. */
static void make_stored(uint64_t page, const uint32_t *locs, uint32_t crc)
{
	uint32_t freed[STORE_MAX_COPIES];
	bool wake;

	make_resident(page);
	assert_true(pagemap_evict_begin(&pm, page));
	assert_int_equal(pagemap_evict_verdict(&pm, page, true), EVICT_COMMIT);
	pagemap_evict_commit(&pm, page, locs, crc);
	assert_true(pagemap_punched(&pm, page, false, &wake, freed));
	assert_false(wake);
	assert_int_equal(state_of(page), PG_STORED);
}

static void test_layout(void **state)
{
	struct pagemap one, three;

	assert_int_equal(pagemap_init(&one, 1, -1, 0), 0);
	assert_int_equal(pagemap_init(&three, 3, -1, 0), 0);
	/* 12 bytes per page at one copy (16 with the FIFO), 4 more per further copy */
	assert_int_equal(one.hdr->entry_size, 12);
	assert_int_equal(three.hdr->entry_size, 20);
	assert_int_equal(one.hdr->magic, PAGEMAP_MAGIC);
	assert_int_equal(one.hdr->version, PAGEMAP_VERSION);
	assert_int_equal(three.hdr->ncopies, 3);
	assert_int_equal(pagemap_npages(&one), 0);
	assert_true(pagemap_init(&(struct pagemap){ 0 }, 0, -1, 0) < 0);
	assert_true(pagemap_init(&(struct pagemap){ 0 }, STORE_MAX_COPIES + 1, -1, 0) < 0);
	pagemap_destroy(&one);

	/* growing keeps what is there, even when the mapping moves (three replaces the fixture's map) */
	uint32_t locs[STORE_MAX_COPIES];
	assert_int_equal(pagemap_grow(&three, 10), 0);
	pagemap_destroy(&pm);
	pm = three;
	make_stored(7, (locs_of(locs, 70, 71, 72), locs), 0xabcd);
	assert_int_equal(pagemap_grow(&pm, 1 << 20), 0);
	assert_int_equal(pagemap_npages(&pm), 10 + (1 << 20));
	assert_int_equal(state_of(7), PG_STORED);
	assert_int_equal(pagemap_entry(&pm, 7)->crc, 0xabcd);
	pagemap_get_locs(&pm, 7, locs);
	assert_int_equal(locs[0], 70);
	assert_int_equal(locs[1], 71);
	assert_int_equal(locs[2], 72);
	assert_int_equal(locs[3], LOC_NONE);
	/* new pages: untouched, no copies, neighbours untouched by the copies of page 7 */
	assert_int_equal(state_of(10 + (1 << 20) - 1), PG_UNTOUCHED);
	assert_no_copies(10 + (1 << 20) - 1);
	assert_no_copies(6);
	assert_no_copies(8);
}

static void test_installed(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];

	/* first touch */
	assert_true(pagemap_installed(&pm, 1, freed));
	assert_no_copies(1);
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		assert_int_equal(freed[c], LOC_NONE);
	assert_int_equal(pagemap_resident(&pm), 1);
	/* a stored page comes back: its copies are handed out to be freed */
	make_stored(2, (locs_of(locs, 20, 21, 22), locs), 1);
	assert_int_equal(pagemap_stored(&pm), 1);
	assert_true(pagemap_installed(&pm, 2, freed));
	assert_int_equal(freed[0], 20);
	assert_int_equal(freed[1], 21);
	assert_int_equal(freed[2], 22);
	assert_no_copies(2);
	assert_int_equal(pagemap_stored(&pm), 0);
	assert_int_equal(pagemap_resident(&pm), 2);
	/* a zero page */
	assert_int_equal(pagemap_discarded(&pm, 2, freed), DISCARD_ZERO);
	assert_int_equal(pagemap_zero(&pm), 1);
	assert_true(pagemap_installed(&pm, 2, freed));
	assert_int_equal(pagemap_zero(&pm), 0);
	/* already resident, or being evicted: nothing changes */
	assert_false(pagemap_installed(&pm, 2, freed));
	assert_true(pagemap_evict_begin(&pm, 2));
	assert_false(pagemap_installed(&pm, 2, freed));
	assert_int_equal(state_of(2), PG_EVICTING);
	pagemap_evict_give_back(&pm, 2);
}

static void test_evict_commit_punch(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];
	bool wake;

	make_resident(3);
	make_resident(4);
	assert_true(pagemap_evict_begin(&pm, 3));
	assert_true(pagemap_evict_begin(&pm, 4));
	/* only a resident page can be picked (the selector may hand back stale ones) */
	assert_false(pagemap_evict_begin(&pm, 3));
	assert_false(pagemap_evict_begin(&pm, 5));
	assert_int_equal(pagemap_resident(&pm), 2);
	pagemap_evict_commit(&pm, 3, (locs_of(locs, 30, 31, 32), locs), 0x33);
	assert_int_equal(state_of(3), PG_EVICT_COMMITTED);
	assert_int_equal(pagemap_entry(&pm, 3)->crc, 0x33);
	assert_int_equal(pagemap_resident(&pm), 2); /* still in the memfd until punched */
	assert_true(pagemap_punched(&pm, 3, false, &wake, freed));
	assert_false(wake);
	assert_int_equal(freed[0], LOC_NONE); /* the copies stay: they are the page now */
	assert_int_equal(state_of(3), PG_STORED);
	assert_true(pagemap_has_copy(&pm, 3));
	/* an all-zero page is committed without copies and recorded zero */
	pagemap_evict_commit(&pm, 4, (locs_of(locs, LOC_NONE, LOC_NONE, LOC_NONE), locs), 0);
	assert_true(pagemap_punched(&pm, 4, true, &wake, freed));
	assert_int_equal(state_of(4), PG_ZERO);
	assert_int_equal(pagemap_resident(&pm), 0);
	assert_int_equal(pagemap_stored(&pm), 1);
	assert_int_equal(pagemap_zero(&pm), 1);
	/* punched twice (or after a refault): nothing */
	assert_false(pagemap_punched(&pm, 3, false, &wake, freed));
	assert_false(wake);
}

/* A write between write-protect and commit: the page goes back, the write is kept. */
static void test_write_during_eviction_gives_back(void **state)
{
	make_resident(5);
	assert_true(pagemap_evict_begin(&pm, 5));
	assert_true(pagemap_wp_fault(&pm, 5, NULL)); /* the writer waits for the evictor */
	assert_true(flags_of(5) & PGF_WRITE_PENDING);
	assert_int_equal(pagemap_evict_verdict(&pm, 5, true), EVICT_GIVE_BACK);
	pagemap_evict_give_back(&pm, 5);
	assert_int_equal(state_of(5), PG_RESIDENT);
	assert_int_equal(flags_of(5), 0);
	assert_no_copies(5);
	assert_int_equal(pagemap_resident(&pm), 1);
	/* a write-protect fault on a page nobody evicts: un-protect, nothing recorded */
	assert_false(pagemap_wp_fault(&pm, 5, NULL));
	assert_int_equal(flags_of(5), 0);
}

/* The store refused the page: it stays resident. */
static void test_store_refused_gives_back(void **state)
{
	make_resident(6);
	assert_true(pagemap_evict_begin(&pm, 6));
	assert_int_equal(pagemap_evict_verdict(&pm, 6, false), EVICT_GIVE_BACK);
	pagemap_evict_give_back(&pm, 6);
	assert_int_equal(state_of(6), PG_RESIDENT);
}

/* Discarded while being evicted and nothing could be stored: a hole, recorded zero. */
static void test_discard_during_eviction_forgets(void **state)
{
	uint32_t freed[STORE_MAX_COPIES];

	make_resident(7);
	assert_true(pagemap_evict_begin(&pm, 7));
	assert_int_equal(pagemap_discarded(&pm, 7, freed), DISCARD_DEFER);
	assert_int_equal(state_of(7), PG_EVICTING); /* the evictor finishes it */
	assert_true(flags_of(7) & PGF_DISCARDED);
	assert_int_equal(pagemap_evict_verdict(&pm, 7, false), EVICT_FORGET);
	pagemap_evict_forget(&pm, 7);
	assert_int_equal(state_of(7), PG_ZERO);
	assert_int_equal(flags_of(7), 0);
	assert_int_equal(pagemap_resident(&pm), 0);
	assert_int_equal(pagemap_zero(&pm), 1);
}

/* Discarded after the commit: the punch records it zero and drops the copies. */
static void test_discard_after_commit_punched_zero(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];
	bool wake;

	make_resident(8);
	assert_true(pagemap_evict_begin(&pm, 8));
	pagemap_evict_commit(&pm, 8, (locs_of(locs, 80, 81, 82), locs), 8);
	assert_int_equal(pagemap_discarded(&pm, 8, freed), DISCARD_DEFER);
	assert_int_equal(freed[0], LOC_NONE); /* not yet: the copies are the page until the punch */
	assert_true(pagemap_punched(&pm, 8, false, &wake, freed));
	assert_false(wake);
	assert_int_equal(state_of(8), PG_ZERO);
	assert_int_equal(freed[0], 80);
	assert_int_equal(freed[1], 81);
	assert_int_equal(freed[2], 82);
	assert_no_copies(8);
}

/* Discarded, then written again before the verdict: the write wins. */
static void test_discard_then_write_gives_back(void **state)
{
	uint32_t freed[STORE_MAX_COPIES];

	make_resident(9);
	assert_true(pagemap_evict_begin(&pm, 9));
	assert_int_equal(pagemap_discarded(&pm, 9, freed), DISCARD_DEFER);
	assert_true(pagemap_refilled(&pm, 9, NULL)); /* zeros placed after the discard: the evictor read stale data */
	assert_int_equal(pagemap_evict_verdict(&pm, 9, true), EVICT_GIVE_BACK);
	pagemap_evict_give_back(&pm, 9);
	assert_int_equal(state_of(9), PG_RESIDENT);
	/* refilled on a page nobody evicts, or already committed: nothing */
	assert_false(pagemap_refilled(&pm, 9, NULL));
	assert_int_equal(flags_of(9), 0);
}

/* A write after the commit waits for the punch; woken then, its retry refaults the copy. */
static void test_write_after_commit_waits_for_punch(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];
	bool wake;

	make_resident(10);
	assert_true(pagemap_evict_begin(&pm, 10));
	pagemap_evict_commit(&pm, 10, (locs_of(locs, 100, LOC_NONE, LOC_NONE), locs), 10);
	assert_false(pagemap_refilled(&pm, 10, NULL));
	assert_true(pagemap_wp_fault(&pm, 10, NULL));
	assert_true(pagemap_punched(&pm, 10, false, &wake, freed));
	assert_true(wake);
	assert_int_equal(state_of(10), PG_STORED);
	assert_int_equal(flags_of(10), 0);
	assert_int_equal(page_on_missing(state_of(10), flags_of(10), pagemap_has_copy(&pm, 10)), FAULT_FETCH);
}

/* A fault between commit and punch reads the copy; the punch then finds the page taken over. */
static void test_refault_before_punch(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];
	bool wake;

	make_resident(11);
	assert_true(pagemap_evict_begin(&pm, 11));
	pagemap_evict_commit(&pm, 11, (locs_of(locs, 110, LOC_NONE, LOC_NONE), locs), 11);
	/* not STORED: the fault thread reads it without FETCHING */
	assert_false(pagemap_fetch_begin(&pm, 11, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 11, true, false, freed));
	assert_int_equal(freed[0], 110);
	assert_int_equal(state_of(11), PG_RESIDENT);
	assert_int_equal(pagemap_resident(&pm), 1); /* counted once: it never left */
	assert_false(pagemap_punched(&pm, 11, false, &wake, freed));
	assert_int_equal(state_of(11), PG_RESIDENT);
}

static void test_fetch(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], got[STORE_MAX_COPIES], freed[STORE_MAX_COPIES], crc = 0;

	make_stored(12, (locs_of(locs, 120, 121, LOC_NONE), locs), 0x1212);
	assert_true(pagemap_fetch_begin(&pm, 12, got, &crc));
	assert_int_equal(got[0], 120);
	assert_int_equal(got[1], 121);
	assert_int_equal(crc, 0x1212);
	assert_true(flags_of(12) & PGF_FETCHING);
	assert_true(pagemap_has_copy(&pm, 12)); /* copies stay while read */
	assert_true(pagemap_fetch_done(&pm, 12, true, false, freed));
	assert_int_equal(freed[0], 120);
	assert_int_equal(freed[1], 121);
	assert_int_equal(state_of(12), PG_RESIDENT);
	assert_int_equal(flags_of(12), 0);
	/* a fetch that placed nothing (EEXIST, shutdown): the page stays stored, FETCHING cleared */
	make_stored(13, (locs_of(locs, 130, LOC_NONE, LOC_NONE), locs), 13);
	assert_true(pagemap_fetch_begin(&pm, 13, got, &crc));
	assert_false(pagemap_fetch_done(&pm, 13, false, false, NULL));
	assert_int_equal(state_of(13), PG_STORED);
	assert_int_equal(flags_of(13), 0);
	assert_true(pagemap_has_copy(&pm, 13));
	/* not stored: nothing to fetch */
	assert_false(pagemap_fetch_begin(&pm, 12, got, &crc));
	assert_false(pagemap_fetch_begin(&pm, 14, got, &crc));
}

/* A second vCPU faults on a page being fetched: no second fetch, the first copy wakes it. */
static void test_duplicate_fault(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES], crc;

	make_stored(15, (locs_of(locs, 150, LOC_NONE, LOC_NONE), locs), 15);
	assert_true(pagemap_fetch_begin(&pm, 15, locs, &crc));
	assert_false(pagemap_fetch_begin(&pm, 15, locs, &crc));
	assert_true(pagemap_fetch_done(&pm, 15, true, false, freed));
	/* a duplicate message for the page once placed: already resident, nothing recorded */
	assert_int_equal(page_on_missing(state_of(15), flags_of(15), false), FAULT_RECHECK_ZERO);
	assert_false(pagemap_installed(&pm, 15, freed));
	assert_false(pagemap_fetch_done(&pm, 15, true, false, freed));
	assert_int_equal(pagemap_resident(&pm), 1);
}

/* The guest discards a page being fetched: the copies stay until the fetch places zeros. */
static void test_discard_during_fetch_deferred(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES], crc;

	make_stored(16, (locs_of(locs, 160, 161, 162), locs), 16);
	assert_true(pagemap_fetch_begin(&pm, 16, locs, &crc));
	assert_int_equal(pagemap_discarded(&pm, 16, freed), DISCARD_DEFER);
	assert_int_equal(freed[0], LOC_NONE);
	assert_int_equal(state_of(16), PG_STORED);
	assert_true(flags_of(16) & PGF_DISCARDED);
	assert_true(pagemap_has_copy(&pm, 16)); /* freeing them mid-read could hand the slot to another page */
	assert_true(pagemap_fetch_done(&pm, 16, true, false, freed)); /* zeros went in */
	assert_int_equal(freed[0], 160);
	assert_int_equal(freed[2], 162);
	assert_int_equal(state_of(16), PG_RESIDENT);
	assert_int_equal(flags_of(16), 0);
}

static void test_discard(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];

	/* untouched and zero pages: nothing to do */
	assert_int_equal(pagemap_discarded(&pm, 17, freed), DISCARD_NOTHING);
	assert_int_equal(state_of(17), PG_UNTOUCHED);
	/* resident: the memfd holds a hole now */
	make_resident(17);
	assert_int_equal(pagemap_discarded(&pm, 17, freed), DISCARD_ZERO);
	assert_int_equal(state_of(17), PG_ZERO);
	assert_int_equal(pagemap_discarded(&pm, 17, freed), DISCARD_NOTHING);
	/* stored, not being read: the copies go at once, even of a lost page */
	make_stored(18, (locs_of(locs, 180, 181, LOC_NONE), locs), 18);
	assert_true(pagemap_copies_lost(&pm, 18));
	assert_int_equal(pagemap_discarded(&pm, 18, freed), DISCARD_ZERO);
	assert_int_equal(freed[0], 180);
	assert_int_equal(freed[1], 181);
	assert_int_equal(state_of(18), PG_ZERO);
	assert_int_equal(flags_of(18), 0);
	assert_int_equal(pagemap_stored(&pm), 0);
	assert_int_equal(pagemap_zero(&pm), 2);
}

/* No copy of a fetched page reads back right: lost, never installed. */
static void test_lost_never_installed(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], crc;

	make_stored(19, (locs_of(locs, 190, LOC_NONE, LOC_NONE), locs), 19);
	assert_true(pagemap_fetch_begin(&pm, 19, locs, &crc));
	pagemap_fetch_failed(&pm, 19);
	assert_int_equal(flags_of(19), PGF_LOST);
	assert_int_equal(page_on_missing(state_of(19), flags_of(19), true), FAULT_NOTHING);
	assert_false(pagemap_fetch_begin(&pm, 19, locs, &crc));
	/* repair does not report it a second time */
	assert_false(pagemap_copies_lost(&pm, 19));
	/* repair: every copy on dead donors */
	make_stored(20, (locs_of(locs, 200, LOC_NONE, LOC_NONE), locs), 20);
	assert_true(pagemap_copies_lost(&pm, 20));
	assert_false(pagemap_copies_lost(&pm, 20));
	assert_false(pagemap_fetch_begin(&pm, 20, locs, &crc));
	assert_int_equal(page_on_missing(state_of(20), flags_of(20), true), FAULT_NOTHING);
	/* a page that was refaulted meanwhile is not lost */
	make_resident(21);
	assert_false(pagemap_copies_lost(&pm, 21));
	assert_int_equal(flags_of(21), 0);
}

/* Repair swaps one copy; a refault in between wins and the new copy is not recorded. */
static void test_replace_copy(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];

	make_stored(22, (locs_of(locs, 220, 221, 222), locs), 22);
	assert_true(pagemap_replace_copy(&pm, 22, 1, 221, 229));
	pagemap_get_locs(&pm, 22, locs);
	assert_int_equal(locs[0], 220);
	assert_int_equal(locs[1], 229);
	assert_int_equal(locs[2], 222);
	/* stale: copy 1 is no longer 221 */
	assert_false(pagemap_replace_copy(&pm, 22, 1, 221, 300));
	/* a dead copy with nowhere to go: forgotten */
	assert_true(pagemap_replace_copy(&pm, 22, 2, 222, LOC_NONE));
	pagemap_get_locs(&pm, 22, locs);
	assert_int_equal(locs[2], LOC_NONE);
	/* beyond the copies this map holds */
	assert_false(pagemap_replace_copy(&pm, 22, 3, LOC_NONE, 5));
	/* refaulted: the page is no longer stored */
	assert_true(pagemap_installed(&pm, 22, freed));
	assert_false(pagemap_replace_copy(&pm, 22, 0, LOC_NONE, 5));
	assert_no_copies(22);
}

/* Fetched by a read: installed clean, copies kept and evicted again without a store write. */
static void test_clean_fetch_and_evict(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];
	bool wake;

	make_stored(30, (locs_of(locs, 300, 301, LOC_NONE), locs), 7);
	assert_true(pagemap_fetch_begin(&pm, 30, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 30, true, true, freed));
	assert_int_equal(freed[0], LOC_NONE); /* nothing freed: the copies stay */
	assert_int_equal(state_of(30), PG_RESIDENT);
	assert_true(flags_of(30) & PGF_CLEAN);
	pagemap_get_locs(&pm, 30, locs);
	assert_int_equal(locs[0], 300);
	assert_int_equal(locs[1], 301);
	assert_int_equal(pagemap_resident(&pm), 1);
	assert_int_equal(pagemap_stored(&pm), 0);
	/* evicted: still clean, the same copies and check word committed, then punched to STORED */
	assert_true(pagemap_evict_begin(&pm, 30));
	assert_true(flags_of(30) & PGF_CLEAN);
	assert_int_equal(pagemap_entry(&pm, 30)->crc, 7);
	assert_int_equal(pagemap_evict_verdict(&pm, 30, true), EVICT_COMMIT);
	pagemap_evict_commit(&pm, 30, locs, 7);
	assert_true(pagemap_punched(&pm, 30, false, &wake, freed));
	assert_int_equal(state_of(30), PG_STORED);
	pagemap_get_locs(&pm, 30, locs);
	assert_int_equal(locs[0], 300);
	assert_int_equal(flags_of(30), 0);
}

/* The first write to a clean page hands its copies back (they are stale) and the page is un-protected. */
static void test_clean_write_drops_copies(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];

	make_stored(31, (locs_of(locs, 310, LOC_NONE, LOC_NONE), locs), 1);
	assert_true(pagemap_fetch_begin(&pm, 31, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 31, true, true, NULL));
	assert_false(pagemap_wp_fault(&pm, 31, freed)); /* nobody evicts it: the caller un-protects */
	assert_int_equal(freed[0], 310);
	assert_false(flags_of(31) & PGF_CLEAN);
	assert_no_copies(31);
	/* a second write-protect fault (a stale marker) frees nothing */
	assert_false(pagemap_wp_fault(&pm, 31, freed));
	assert_int_equal(freed[0], LOC_NONE);
	/* zeros refilled into a clean page make its copies stale too */
	make_stored(32, (locs_of(locs, 320, LOC_NONE, LOC_NONE), locs), 1);
	assert_true(pagemap_fetch_begin(&pm, 32, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 32, true, true, NULL));
	assert_false(pagemap_refilled(&pm, 32, freed));
	assert_int_equal(freed[0], 320);
	assert_no_copies(32);
	/* repair drops a clean page's copies; a dirty page has none to drop */
	make_stored(33, (locs_of(locs, 330, LOC_NONE, LOC_NONE), locs), 1);
	assert_true(pagemap_fetch_begin(&pm, 33, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 33, true, true, NULL));
	assert_true(pagemap_clean_dropped(&pm, 33, freed));
	assert_int_equal(freed[0], 330);
	assert_false(pagemap_clean_dropped(&pm, 33, freed));
	/* discarding a clean page frees its copies */
	make_stored(34, (locs_of(locs, 340, LOC_NONE, LOC_NONE), locs), 1);
	assert_true(pagemap_fetch_begin(&pm, 34, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 34, true, true, NULL));
	assert_int_equal(pagemap_discarded(&pm, 34, freed), DISCARD_ZERO);
	assert_int_equal(freed[0], 340);
}

/* A write to a clean page under eviction: the evictor gives it back and frees the copies it held. */
static void test_clean_write_during_eviction(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];

	make_stored(35, (locs_of(locs, 350, LOC_NONE, LOC_NONE), locs), 1);
	assert_true(pagemap_fetch_begin(&pm, 35, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 35, true, true, NULL));
	assert_true(pagemap_evict_begin(&pm, 35));
	assert_true(pagemap_wp_fault(&pm, 35, freed)); /* the evictor owns it: it wakes the writer */
	assert_int_equal(freed[0], LOC_NONE);       /* ...and holds the copies */
	assert_int_equal(pagemap_evict_verdict(&pm, 35, true), EVICT_GIVE_BACK);
	pagemap_evict_give_back(&pm, 35);
	assert_int_equal(state_of(35), PG_RESIDENT);
	assert_int_equal(flags_of(35), 0);
	assert_no_copies(35);
	/* a clean page whose copies cannot be trusted is written anew under a new version */
	make_stored(36, (locs_of(locs, 360, LOC_NONE, LOC_NONE), locs), 1);
	assert_true(pagemap_fetch_begin(&pm, 36, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 36, true, true, NULL));
	assert_true(pagemap_evict_begin(&pm, 36));
	assert_true(pagemap_evict_unclean(&pm, 36, freed));
	assert_int_equal(freed[0], 360);
	assert_false(flags_of(36) & PGF_CLEAN);
	assert_no_copies(36);
}

/* Sealed map: a clean page keeps its version through eviction (its copies are sealed under it). */
static void test_clean_keeps_version(void **state)
{
	uint32_t locs[STORE_MAX_COPIES], freed[STORE_MAX_COPIES], v;
	bool wake;

	pagemap_use_versions(&pm);
	make_resident(37);
	assert_true(pagemap_evict_begin(&pm, 37));
	v = pagemap_entry(&pm, 37)->version;
	pagemap_evict_commit(&pm, 37, (locs_of(locs, 370, LOC_NONE, LOC_NONE), locs), 0);
	assert_true(pagemap_punched(&pm, 37, false, &wake, freed));
	assert_true(pagemap_fetch_begin(&pm, 37, locs, &(uint32_t){ 0 }));
	assert_true(pagemap_fetch_done(&pm, 37, true, true, NULL));
	assert_true(pagemap_evict_begin(&pm, 37));
	assert_int_equal(pagemap_entry(&pm, 37)->version, v); /* clean: not bumped */
	assert_true(pagemap_evict_unclean(&pm, 37, freed));
	assert_int_equal(pagemap_entry(&pm, 37)->version, v + 1); /* written anew: a new version */
	pagemap_evict_give_back(&pm, 37);
	assert_true(pagemap_evict_begin(&pm, 37));
	assert_int_equal(pagemap_entry(&pm, 37)->version, v + 2); /* dirty: bumped */
	pagemap_evict_give_back(&pm, 37);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_layout, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_installed, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_evict_commit_punch, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_write_during_eviction_gives_back, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_store_refused_gives_back, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_discard_during_eviction_forgets, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_discard_after_commit_punched_zero, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_discard_then_write_gives_back, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_write_after_commit_waits_for_punch, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_refault_before_punch, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_fetch, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_fault, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_discard_during_fetch_deferred, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_discard, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_lost_never_installed, setup1, teardown),
		cmocka_unit_test_setup_teardown(test_replace_copy, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_clean_fetch_and_evict, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_clean_write_drops_copies, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_clean_write_during_eviction, setup3, teardown),
		cmocka_unit_test_setup_teardown(test_clean_keeps_version, setup3, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
