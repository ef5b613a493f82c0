/* SPDX-License-Identifier: MIT */
/*
 * The evictor's pacing (evict.c): how far it brings a VM down (target),
 * when a fault wakes it (trigger) and what a page that went resident
 * tells it (vm_note_resident). Plain arithmetic on the VM's watermarks
 * and modes, checked without threads or a uffd.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vm-private.h"

static void make_vm(struct vm *vm, uint64_t low, uint64_t high)
{
	memset(vm, 0, sizeof(*vm));
	vm->low_pages = low;
	vm->high_pages = high;
}

static void test_target(void **state)
{
	struct vm vm;

	make_vm(&vm, 100, 200);
	assert_int_equal(vm_evict_target(&vm), 100);
	/* vm.park: everything that can go */
	vm.parking = true;
	assert_int_equal(vm_evict_target(&vm), 0);
	/* after vm.drain, or while the balloon settles: nothing at all, even while parking */
	vm.hold_resident = true;
	assert_int_equal(vm_evict_target(&vm), UINT64_MAX);
	vm.hold_resident = false;
	vm.balloon_settling = true;
	assert_int_equal(vm_evict_target(&vm), UINT64_MAX);
}

static void test_trigger(void **state)
{
	struct vm vm;

	/* half the headroom above the target: the evictor works in batches */
	make_vm(&vm, 100, 200);
	assert_int_equal(vm_evict_trigger(&vm), 150);
	/* but never more than one batch (128) */
	make_vm(&vm, 100, 1000);
	assert_int_equal(vm_evict_trigger(&vm), 228);
	/* no headroom to halve: right above the target */
	make_vm(&vm, 100, 101);
	assert_int_equal(vm_evict_trigger(&vm), 101);
	make_vm(&vm, 200, 200);
	assert_int_equal(vm_evict_trigger(&vm), 201);
	/* urgent: a fault waits for room, or a park is under way */
	make_vm(&vm, 100, 1000);
	vm.throttled = true;
	assert_int_equal(vm_evict_trigger(&vm), 101);
	vm.throttled = false;
	vm.parking = true;
	assert_int_equal(vm_evict_trigger(&vm), 1);
	/* nothing may be evicted: never */
	vm.hold_resident = true;
	assert_int_equal(vm_evict_trigger(&vm), UINT64_MAX);
}

/* A resident page is queued for the selector; the evictor is poked only at the trigger. */
static void test_note_resident(void **state)
{
	struct vm vm;
	uint32_t freed[STORE_MAX_COPIES];
	uint64_t picked[4];

	make_vm(&vm, 1, 4);
	pthread_mutex_init(&vm.lock, NULL);
	pthread_cond_init(&vm.evict_cond, NULL);
	vm.victim = &policy_victim_fifo;
	vm.victim_state = vm.victim->create(16);
	assert_non_null(vm.victim_state);
	assert_int_equal(pagemap_init(&vm.map, 1, -1, 0), 0);
	assert_int_equal(pagemap_grow(&vm.map, 16), 0);

	pthread_mutex_lock(&vm.lock);
	for (uint64_t p = 3; p < 6; p++) {
		assert_true(pagemap_installed(&vm.map, p, freed));
		vm_note_resident(&vm, p);
	}
	assert_int_equal(pagemap_resident(&vm.map), 3);
	assert_true(pagemap_resident(&vm.map) >= vm_evict_trigger(&vm));
	/* fault order: the coldest first */
	assert_int_equal(vm.victim->pick(vm.victim_state, picked, 4), 3);
	assert_int_equal(picked[0], 3);
	assert_int_equal(picked[1], 4);
	assert_int_equal(picked[2], 5);
	pthread_mutex_unlock(&vm.lock);

	pagemap_destroy(&vm.map);
	vm.victim->destroy(vm.victim_state);
	pthread_cond_destroy(&vm.evict_cond);
	pthread_mutex_destroy(&vm.lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_target),
		cmocka_unit_test(test_trigger),
		cmocka_unit_test(test_note_resident),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
