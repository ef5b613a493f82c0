/* SPDX-License-Identifier: MIT */
/* Donor slab table (capacity, ownership, generations, revocation) and the pager slot map. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "donor-slab.h"

static void test_capacity_and_ownership(void **state)
{
	struct donor_slabs *s = donor_slabs_new(3ULL * DONOR_SLAB_SIZE + 100);
	uint32_t a, b, c, d;
	uint8_t *mem;

	assert_non_null(s);
	assert_int_equal(donor_slabs_alloc(s, 1, &a), 0);
	assert_int_equal(donor_slabs_alloc(s, 1, &b), 0);
	assert_int_equal(donor_slabs_alloc(s, 2, &c), 0);
	assert_int_equal(donor_slabs_alloc(s, 2, &d), -ENOSPC);
	assert_int_not_equal(a, b);
	assert_int_equal(donor_slabs_used(s), 3ULL * DONOR_SLAB_SIZE);
	assert_int_equal(donor_slabs_count(s, 1), 2);
	assert_int_equal(donor_slabs_count(s, 0), 3);

	/* Another owner's slab looks exactly like a missing one. */
	assert_int_equal(donor_slabs_lookup(s, 2, a, false, &mem), -ENOENT);
	assert_int_equal(donor_slabs_release(s, 2, a), -ENOENT);
	assert_int_equal(donor_slabs_lookup(s, 1, a, true, &mem), 0);
	mem[DONOR_SLAB_SIZE - 1] = 0x5a;
	assert_int_equal(donor_slabs_lookup(s, 1, 0, false, &mem), -ENOENT);
	assert_int_equal(donor_slabs_lookup(s, 1, 0xffffffffu, false, &mem), -ENOENT);

	assert_int_equal(donor_slabs_release(s, 1, a), 0);
	assert_int_equal(donor_slabs_release(s, 1, a), -ENOENT);
	/* The reused table entry gets a new id: the stale one stays dead. */
	assert_int_equal(donor_slabs_alloc(s, 2, &d), 0);
	assert_int_not_equal(d, a);
	assert_int_equal(donor_slabs_lookup(s, 1, a, false, &mem), -ENOENT);
	assert_int_equal(donor_slabs_lookup(s, 2, d, false, &mem), 0);
	assert_int_equal(mem[DONOR_SLAB_SIZE - 1], 0); /* fresh memory, nothing leaked across */
	assert_int_equal(donor_slabs_owner(s, d), 2);

	assert_int_equal(donor_slabs_release_owner(s, 2), 2);
	assert_int_equal(donor_slabs_count(s, 0), 1);
	donor_slabs_free(s);
	donor_slabs_free(NULL);
}

static void test_revoke_and_list(void **state)
{
	struct donor_slabs *s = donor_slabs_new(8ULL * DONOR_SLAB_SIZE);
	uint32_t ids[4], got[8], flags[8];
	uint8_t *mem;

	for (int i = 0; i < 4; i++)
		assert_int_equal(donor_slabs_alloc(s, 7, &ids[i]), 0);
	assert_int_equal(donor_slabs_revoke(s, ids[1], 1000), 0);
	assert_int_equal(donor_slabs_revoke(s, 12345, 1000), -ENOENT);
	assert_true(donor_slabs_is_revoked(s, ids[1]));
	assert_int_equal(donor_slabs_lookup(s, 7, ids[1], true, &mem), -EROFS);
	assert_int_equal(donor_slabs_lookup(s, 7, ids[1], false, &mem), 0);
	assert_int_equal(donor_slabs_revoked_bytes(s), DONOR_SLAB_SIZE);

	assert_int_equal(donor_slabs_list(s, 7, got, flags, 2), 4); /* total even when truncated */
	assert_int_equal(donor_slabs_list(s, 7, got, flags, 8), 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(got[i], ids[i]);
		assert_int_equal(flags[i], i == 1 ? DONOR_SLAB_F_REVOKED : 0);
	}
	assert_int_equal(donor_slabs_expire(s, 999), 0);
	assert_int_equal(donor_slabs_expire(s, 1000), 1);
	assert_int_equal(donor_slabs_count(s, 7), 3);
	assert_int_equal(donor_slabs_lookup(s, 7, ids[1], false, &mem), -ENOENT);
	donor_slabs_set_capacity(s, DONOR_SLAB_SIZE);
	assert_int_equal(donor_slabs_alloc(s, 7, &ids[0]), -ENOSPC);
	donor_slabs_free(s);
}

static bool all_resident(const uint8_t *mem)
{
	static unsigned char vec[DONOR_SLAB_BYTES / 4096 + 1];

	assert_int_equal(mincore((void *)mem, DONOR_SLAB_BYTES, vec), 0);
	for (size_t i = 0; i < (DONOR_SLAB_BYTES + 4095) / 4096; i++)
		if (!(vec[i] & 1))
			return false;
	return true;
}

static bool all_zero(const uint8_t *mem)
{
	for (size_t i = 0; i < DONOR_SLAB_BYTES; i++)
		if (mem[i])
			return false;
	return true;
}

/* Real memory: the pool is faulted in, reused after a zeroing, and trimmed with the capacity. */
static void test_preallocate(void **state)
{
	struct donor_slabs *s = donor_slabs_new(3ULL * DONOR_SLAB_SIZE + 100);
	uint32_t ids[4];
	uint8_t *mem[3], *again;
	unsigned done = 0;

	assert_int_equal(donor_slabs_preallocate(s, &done), 0);
	assert_int_equal(done, 3);
	assert_int_equal(donor_slabs_used(s), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(donor_slabs_alloc(s, 1, &ids[i]), 0);
		assert_int_equal(donor_slabs_lookup(s, 1, ids[i], true, &mem[i]), 0);
		assert_true(all_resident(mem[i]));
		assert_true(all_zero(mem[i]));
	}
	assert_int_equal(donor_slabs_alloc(s, 1, &ids[3]), -ENOSPC);

	/* A released slab's memory comes back zeroed, under a new id. */
	memset(mem[1], 0xab, DONOR_SLAB_BYTES);
	assert_int_equal(donor_slabs_release(s, 1, ids[1]), 0);
	assert_int_equal(donor_slabs_alloc(s, 2, &ids[3]), 0);
	assert_int_not_equal(ids[3], ids[1]);
	assert_int_equal(donor_slabs_lookup(s, 2, ids[3], false, &again), 0);
	assert_ptr_equal(again, mem[1]);
	assert_true(all_zero(again));

	/* Capacity down to one slab: of the three released, only the last is kept. */
	donor_slabs_set_capacity(s, DONOR_SLAB_SIZE);
	assert_int_equal(donor_slabs_release(s, 1, ids[0]), 0);
	assert_int_equal(donor_slabs_release(s, 1, ids[2]), 0);
	memset(mem[1], 0xcd, 4096);
	assert_int_equal(donor_slabs_release_owner(s, 2), 1);
	assert_int_equal(donor_slabs_alloc(s, 3, &ids[0]), 0);
	assert_int_equal(donor_slabs_lookup(s, 3, ids[0], false, &again), 0);
	assert_ptr_equal(again, mem[1]);
	assert_true(all_zero(again));
	assert_int_equal(donor_slabs_alloc(s, 3, &ids[1]), -ENOSPC);
	donor_slabs_free(s);
}

static void test_slot_map(void **state)
{
	static struct donor_slot_map m;
	static uint8_t seen[DONOR_SLAB_SLOTS];
	uint32_t slot;

	donor_slot_map_init(&m);
	for (unsigned i = 0; i < DONOR_SLAB_SLOTS; i++) {
		assert_int_equal(donor_slot_alloc(&m, &slot), 0);
		assert_true(slot < DONOR_SLAB_SLOTS);
		assert_int_equal(seen[slot], 0);
		seen[slot] = 1;
	}
	assert_int_equal(donor_slot_alloc(&m, &slot), -ENOSPC);
	assert_int_equal(donor_slot_free(&m, 100), 0);
	assert_int_equal(donor_slot_free(&m, 100), -ENOENT);
	assert_false(donor_slot_is_used(&m, 100));
	assert_true(donor_slot_is_used(&m, 101));
	assert_int_equal(donor_slot_free(&m, DONOR_SLAB_SLOTS), -ERANGE);
	assert_int_equal(donor_slot_alloc(&m, &slot), 0);
	assert_int_equal(slot, 100);
	assert_int_equal(m.used, DONOR_SLAB_SLOTS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_capacity_and_ownership),
		cmocka_unit_test(test_revoke_and_list),
		cmocka_unit_test(test_preallocate),
		cmocka_unit_test(test_slot_map),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
