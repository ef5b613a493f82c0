/* SPDX-License-Identifier: MIT */
/*
 * Page map addressing across several RAM regions: guest addresses to page
 * indexes and back (the spill allocator and I/O: test-spill.c).
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


int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_to_page),
		cmocka_unit_test(test_page_to_addr_and_entry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
