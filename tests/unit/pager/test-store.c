/* SPDX-License-Identifier: MIT */
/*
 * The store's placement and its submit/complete I/O over a real spill file,
 * with a donor pool that has no donors (so every copy goes to the spill
 * file, as on a pager configured without donors): write batches sent in
 * parts and read back, per-page errors, batches of the largest size,
 * reads that fall back to another copy or fail every one. Needs no root.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

#include "test-pages.h"

#include "crc32c.h"
#include "donors.h"
#include "policy.h"
#include "spill.h"
#include "store.h"
#include "util.h"

struct fixture {
	char dir[64];
	struct donor_pool *pool;
	struct spill *spill;
	struct store *st;
};

/* A store over a fresh spill file of at most max_slots; backup: the policy's spill backup (two copies per page). */
static struct fixture *fixture_new(uint64_t max_slots, bool backup)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct policy_pager_config cfg;
	struct policy_vm pol;

	assert_non_null(f);
	policy_config_init(&cfg);
	assert_int_equal(donor_pool_new(&cfg, &f->pool), 0);
	snprintf(f->dir, sizeof(f->dir), "/var/tmp/uffdvm-store-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(spill_new(f->dir, "vm", max_slots, false, &f->spill), 0);
	policy_vm_init(&pol);
	snprintf(pol.name, sizeof(pol.name), "vm");
	pol.replicas = 1;
	pol.backup_spill = backup;
	assert_int_equal(store_new("vm", f->pool, f->spill, NULL, &pol, NULL, false, &f->st), 0);
	return f;
}

static void fixture_free(struct fixture *f)
{
	store_free(f->st);
	spill_free(f->spill, false);
	donor_pool_free(f->pool);
	assert_int_equal(rmdir(f->dir), 0);
	free(f);
}

static uint32_t page_crc(const void *p) { return crc32c(0, p, PAGE_SIZE_4K); }

static void locs_none(uint32_t *locs)
{
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		locs[c] = LOC_NONE;
}

static uint64_t bad_copies(struct fixture *f) { return atomic_load(&store_stats(f->st)->bad_copies); }

static void test_place_without_donors(void **state)
{
	struct fixture *f = fixture_new(0, false);
	uint32_t locs[STORE_MAX_COPIES], extra;

	(void)state;
	assert_int_equal(store_max_copies(f->st), 1);
	/* no donors: the one copy is a spill slot, and that is no fallback */
	assert_int_equal(store_place(f->st, locs), 1);
	assert_false(loc_is_remote(locs[0]));
	assert_int_equal(locs[0], 0);
	assert_int_equal(spill_used_slots(f->spill), 1);
	assert_int_equal(atomic_load(&store_stats(f->st)->spill_fallbacks), 0);
	assert_int_equal(store_loc_health(f->st, locs[0]), LOC_OK);
	assert_int_equal(store_loc_health(f->st, LOC_NONE), LOC_DEAD);
	/* an extra copy never goes to the spill file twice */
	assert_int_equal(store_place_one(f->st, locs, 1, &extra), -ENOSPC);
	uint32_t none = LOC_NONE;
	assert_int_equal(store_place_one(f->st, &none, 1, &extra), 0);
	assert_int_equal(extra, 1);
	store_free_loc(f->st, extra);
	store_free_locs(f->st, locs);
	assert_int_equal(spill_used_slots(f->spill), 0);
	fixture_free(f);
}

static void test_place_exhausted(void **state)
{
	struct fixture *f = fixture_new(3, true);
	uint32_t locs[4][STORE_MAX_COPIES];

	(void)state;
	assert_int_equal(store_max_copies(f->st), 2);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(store_place(f->st, locs[i]), 1);
		assert_int_equal(locs[i][1], LOC_NONE);
	}
	/* the required copy cannot be had: the page stays resident, nothing is left reserved */
	assert_int_equal(store_place(f->st, locs[3]), -ENOSPC);
	for (unsigned c = 0; c < store_max_copies(f->st); c++)
		assert_int_equal(locs[3][c], LOC_NONE);
	assert_int_equal(spill_used_slots(f->spill), 3);
	store_free_locs(f->st, locs[1]);
	assert_int_equal(store_place(f->st, locs[3]), 1);
	assert_int_equal(locs[3][0], locs[1][0]); /* the freed slot is reused */
	store_free_locs(f->st, locs[0]);
	store_free_locs(f->st, locs[2]);
	store_free_locs(f->st, locs[3]);
	assert_int_equal(spill_used_slots(f->spill), 0);
	fixture_free(f);
}

/* Writes a full batch in parts of part pages, through the ring or plain pwrite, and reads every page back. */
static void write_full_batch(struct fixture *f, struct store_batch *b, unsigned part, bool use_uring, uint32_t tag)
{
	void *bufs[STORE_BATCH_MAX], *in = page_filled(0);
	uint32_t locs[STORE_BATCH_MAX][STORE_MAX_COPIES];
	enum store_source src;

	for (unsigned i = 0; i < STORE_BATCH_MAX; i++) {
		bufs[i] = page_filled(tag + i);
		assert_int_equal(store_place(f->st, locs[i]), 1);
		assert_int_equal(store_batch_add(b, bufs[i], locs[i], 0, 0), (int)i);
		if (store_batch_unsent(b) == part) {
			store_write_submit(f->st, b, use_uring);
			assert_int_equal(store_batch_unsent(b), 0);
		}
	}
	/* the batch is full: one page more is refused, not written past the arrays */
	assert_int_equal(store_batch_add(b, bufs[0], locs[0], 0, 0), -ENOSPC);
	assert_int_equal(b->n, STORE_BATCH_MAX);
	store_write_submit(f->st, b, use_uring); /* the rest, or nothing */
	store_write_submit(f->st, b, use_uring); /* nothing left: a no-op */
	assert_int_equal(store_write_wait(f->st, b), 0);
	for (unsigned i = 0; i < STORE_BATCH_MAX; i++) {
		assert_int_equal(b->results[i], 0);
		memset(in, 0, PAGE_SIZE_4K);
		/* the fault thread's ring and the repair thread's pread read the same bytes */
		assert_int_equal(store_read(f->st, 0, locs[i], page_crc(bufs[i]), in, &src, i % 2 == 0), 0);
		assert_int_equal(src, SRC_SPILL);
		assert_memory_equal(in, bufs[i], PAGE_SIZE_4K);
		store_free_locs(f->st, locs[i]);
		free(bufs[i]);
	}
	free(in);
}

static void test_write_batch_in_parts(void **state)
{
	struct fixture *f = fixture_new(0, false);
	struct store_batch *b = malloc(sizeof(*b));

	(void)state;
	assert_non_null(b);
	store_batch_init(b);
	assert_int_equal(store_batch_unsent(b), 0);
	/* the evictor's shape: parts of 32 through the ring */
	write_full_batch(f, b, 32, true, 0x10000);
	/* the same batch object, reset, for the next round: one part larger than any ring round */
	store_batch_reset(b);
	assert_int_equal(b->n, 0);
	write_full_batch(f, b, STORE_BATCH_MAX, true, 0x20000);
	/* parts that do not divide the batch, plain pwrite */
	store_batch_reset(b);
	write_full_batch(f, b, 5, false, 0x30000);
	assert_int_equal(bad_copies(f), 0);
	assert_int_equal(spill_used_slots(f->spill), 0);
	store_batch_destroy(b);
	free(b);
	fixture_free(f);
}

/* Pages whose slot lies past RLIMIT_FSIZE fail with EFBIG, as on a full disk; the others are written. */
static void write_with_errors(struct fixture *f, bool use_uring)
{
	static const uint32_t slots[] = { 0, 40, 1, 2, 41, 3, 4, 42 };
	enum { N = sizeof(slots) / sizeof(slots[0]) };
	struct store_batch *b = malloc(sizeof(*b));
	void *bufs[N], *in = page_filled(0);
	uint32_t locs[N][STORE_MAX_COPIES];
	struct rlimit old, lim;
	void (*old_xfsz)(int);
	enum store_source src;
	uint64_t bad0;

	assert_non_null(b);
	store_batch_init(b);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 16 * PAGE_SIZE_4K;
	old_xfsz = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	/* two parts: the errors of the first must survive the second */
	for (unsigned i = 0; i < N; i++) {
		bufs[i] = page_filled(0x40000u + i);
		locs_none(locs[i]);
		locs[i][0] = slots[i];
		assert_int_equal(store_batch_add(b, bufs[i], locs[i], 0, 0), (int)i);
		if (i == N / 2 - 1)
			store_write_submit(f->st, b, use_uring);
	}
	store_write_submit(f->st, b, use_uring);
	int r = store_write_wait(f->st, b);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_xfsz);

	assert_int_equal(r, -EFBIG); /* the first failed page's error */
	bad0 = bad_copies(f);
	for (unsigned i = 0; i < N; i++) {
		if (slots[i] >= 16) {
			assert_int_equal(b->results[i], -EFBIG);
			/* nothing was written there: the read fails rather than return anything */
			assert_int_equal(store_read(f->st, 0, locs[i], page_crc(bufs[i]), in, &src, true), -EIO);
			continue;
		}
		assert_int_equal(b->results[i], 0);
		assert_int_equal(store_read(f->st, 0, locs[i], page_crc(bufs[i]), in, &src, false), 0);
		assert_memory_equal(in, bufs[i], PAGE_SIZE_4K);
	}
	assert_int_equal(bad_copies(f), bad0 + 3);
	for (unsigned i = 0; i < N; i++)
		free(bufs[i]);
	free(in);
	store_batch_destroy(b);
	free(b);
}

static void test_write_errors_per_page(void **state)
{
	struct fixture *f = fixture_new(0, false);

	(void)state;
	write_with_errors(f, true);
	write_with_errors(f, false);
	fixture_free(f);
}

static void test_read_falls_back(void **state)
{
	struct fixture *f = fixture_new(0, true);
	void *a = page_filled(0xa), *bb = page_filled(0xb), *in = page_filled(0);
	uint32_t locs[STORE_MAX_COPIES], two[STORE_MAX_COPIES];
	enum store_source src = SRC_DONOR;
	struct store_read rd;

	(void)state;
	/* one write, two copies (slots 7 and 9): both hold the page */
	locs_none(two);
	two[0] = 7;
	two[1] = 9;
	assert_int_equal(store_write_page(f->st, a, two, 0, 0), 0);
	assert_int_equal(spill_pread(f->spill, 7, in), 0);
	assert_memory_equal(in, a, PAGE_SIZE_4K);
	assert_int_equal(spill_pread(f->spill, 9, in), 0);
	assert_memory_equal(in, a, PAGE_SIZE_4K);

	/* slot 7 now holds another page: its CRC fails, the second copy serves */
	locs_none(locs);
	locs[0] = 7;
	assert_int_equal(store_write_page(f->st, bb, locs, 0, 0), 0);
	memset(in, 0, PAGE_SIZE_4K);
	assert_int_equal(store_read(f->st, 0, two, page_crc(a), in, &src, true), 0);
	assert_memory_equal(in, a, PAGE_SIZE_4K);
	assert_int_equal(src, SRC_SPILL);
	assert_int_equal(bad_copies(f), 1);

	/* split: submitted, other I/O meanwhile, then waited for */
	memset(in, 0, PAGE_SIZE_4K);
	assert_int_equal(store_read_submit(f->st, &rd, 0, two, page_crc(bb), in, true), 0);
	assert_int_equal(spill_pwrite(f->spill, 20, a), 0);
	assert_int_equal(store_read_wait(f->st, &rd, &src, 0), 0);
	assert_memory_equal(in, bb, PAGE_SIZE_4K);
	assert_int_equal(bad_copies(f), 1);

	/* no copy has these bytes: refused (not "unreadable"), each copy counted */
	assert_int_equal(store_read(f->st, 0, two, page_crc(a) ^ 1, in, &src, true), -EBADMSG);
	assert_int_equal(store_read(f->st, 0, two, page_crc(a) ^ 1, in, &src, false), -EBADMSG);
	assert_int_equal(bad_copies(f), 5);

	/* no copy at all: nothing to start, nothing to wait for */
	locs_none(locs);
	assert_int_equal(store_read_submit(f->st, &rd, 0, locs, 0, in, true), -EIO);
	assert_int_equal(store_read_wait(f->st, &rd, &src, 0), -EIO);
	assert_int_equal(bad_copies(f), 5);
	free(a);
	free(bb);
	free(in);
	fixture_free(f);
}

static void test_write_page_error(void **state)
{
	struct fixture *f = fixture_new(0, true);
	void *a = page_filled(0xc), *in = page_filled(0);
	uint32_t two[STORE_MAX_COPIES];
	struct rlimit old, lim;
	void (*old_xfsz)(int);
	int r;

	(void)state;
	locs_none(two);
	two[0] = 1;
	two[1] = 50; /* past the limit below */
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 16 * PAGE_SIZE_4K;
	old_xfsz = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	r = store_write_page(f->st, a, two, 0, 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_xfsz);
	/* one copy failed: the page is not durable as required, though the other copy is written */
	assert_int_equal(r, -EFBIG);
	assert_int_equal(spill_pread(f->spill, 1, in), 0);
	assert_memory_equal(in, a, PAGE_SIZE_4K);
	free(a);
	free(in);
	fixture_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_place_without_donors),
		cmocka_unit_test(test_place_exhausted),
		cmocka_unit_test(test_write_batch_in_parts),
		cmocka_unit_test(test_write_errors_per_page),
		cmocka_unit_test(test_read_falls_back),
		cmocka_unit_test(test_write_page_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
