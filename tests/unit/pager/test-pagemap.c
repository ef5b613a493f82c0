/* SPDX-License-Identifier: MIT */
/*
 * Page map addressing across several RAM regions, and the spill store's
 * slot allocator and I/O: the pieces of the pager that need no uffd.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "spill.h"
#include "vm-private.h"

/* Two regions as two NUMA backends would give: far apart in the address space. */
static void make_vm(struct vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->regions[0] = (struct vm_region){ .host_addr = 0x7f0000000000, .length = 256 * 4096,
					     .first_page = 0 };
	vm->regions[1] = (struct vm_region){ .host_addr = 0x7e0000000000, .length = 64 * 4096,
					     .first_page = 256 };
	vm->nregions = 2;
	vm->npages = 320;
}

static void test_addr_to_page(void **state)
{
	struct vm vm;
	uint64_t page;

	make_vm(&vm);
	assert_int_equal(vm_addr_to_page(&vm, 0x7f0000000000, &page), 0);
	assert_int_equal(page, 0);
	assert_int_equal(vm_addr_to_page(&vm, 0x7f0000000000 + 255 * 4096 + 4095, &page), 0);
	assert_int_equal(page, 255);
	assert_int_equal(vm_addr_to_page(&vm, 0x7e0000000000 + 5 * 4096 + 17, &page), 0);
	assert_int_equal(page, 261);
	/* one byte past each region, and before the first */
	assert_int_equal(vm_addr_to_page(&vm, 0x7f0000000000 + 256 * 4096, &page), -EFAULT);
	assert_int_equal(vm_addr_to_page(&vm, 0x7e0000000000 + 64 * 4096, &page), -EFAULT);
	assert_int_equal(vm_addr_to_page(&vm, 0x7e0000000000 - 1, &page), -EFAULT);
}

static void test_page_to_addr_and_entry(void **state)
{
	struct vm vm;

	make_vm(&vm);
	for (uint64_t p = 0; p < vm.npages; p++) {
		uint64_t back;
		assert_int_equal(vm_addr_to_page(&vm, vm_page_addr(&vm, p), &back), 0);
		assert_int_equal(back, p);
	}
	assert_ptr_equal(vm_region_of_page(&vm, 0), &vm.regions[0]);
	assert_ptr_equal(vm_region_of_page(&vm, 255), &vm.regions[0]);
	assert_ptr_equal(vm_region_of_page(&vm, 256), &vm.regions[1]);
	assert_ptr_equal(vm_region_of_page(&vm, 300), &vm.regions[1]);
	/* the page map's promise: 12 bytes of entry per guest page */
	assert_int_equal(sizeof(struct page_entry), 12);
}

static struct spill *spill_in_tmp(uint64_t max_slots)
{
	char dir[] = "/var/tmp/uffdvm-unit-XXXXXX";
	struct spill *s;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(spill_new(dir, "t", max_slots, &s), 0);
	/* the directory goes once the file does: spill_free unlinks it */
	return s;
}

static void test_slots_reuse_and_cap(void **state)
{
	struct spill *s = spill_in_tmp(5000);
	char dir[512];

	for (uint32_t i = 0; i < 5000; i++)
		assert_int_equal(spill_alloc_slot(s), i);
	assert_int_equal(spill_alloc_slot(s), SPILL_NO_SLOT); /* cap reached */
	assert_int_equal(spill_used_slots(s), 5000);
	spill_free_slot(s, 4097);
	spill_free_slot(s, 3);
	/* first fit: the lowest free slot comes back first */
	assert_int_equal(spill_alloc_slot(s), 3);
	assert_int_equal(spill_alloc_slot(s), 4097);
	assert_int_equal(spill_alloc_slot(s), SPILL_NO_SLOT);
	spill_set_max_slots(s, 6000);
	assert_int_equal(spill_alloc_slot(s), 5000);
	snprintf(dir, sizeof(dir), "%s", spill_path(s));
	*strrchr(dir, '/') = '\0';
	spill_free(s);
	assert_int_equal(rmdir(dir), 0); /* empty: the spill file was deleted */
}

static void test_write_read_back(void **state)
{
	struct spill *s = spill_in_tmp(0);
	enum { N = 40 };
	uint32_t slots[N];
	void *bufs[N], *in = NULL;
	int results[N];
	char dir[512];

	for (int i = 0; i < N; i++) {
		assert_int_equal(posix_memalign(&bufs[i], 4096, 4096), 0);
		memset(bufs[i], 'a' + i % 26, 4096);
		((uint32_t *)bufs[i])[0] = (uint32_t)i;
		slots[i] = spill_alloc_slot(s);
	}
	assert_int_equal(spill_write_batch(s, slots, bufs, results, N), 0);
	assert_int_equal(posix_memalign(&in, 4096, 4096), 0);
	for (int i = N - 1; i >= 0; i--) {
		assert_int_equal(results[i], 0);
		assert_int_equal(spill_read(s, slots[i], in), 0);
		assert_memory_equal(in, bufs[i], 4096);
	}
	/* a slot past the end of the file is a short read: an error, not zeros */
	assert_true(spill_read(s, 100000, in) < 0);
	for (int i = 0; i < N; i++)
		free(bufs[i]);
	free(in);
	snprintf(dir, sizeof(dir), "%s", spill_path(s));
	*strrchr(dir, '/') = '\0';
	spill_free(s);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_to_page),
		cmocka_unit_test(test_page_to_addr_and_entry),
		cmocka_unit_test(test_slots_reuse_and_cap),
		cmocka_unit_test(test_write_read_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
