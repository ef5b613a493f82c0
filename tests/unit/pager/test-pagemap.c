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
#include <sys/mman.h>
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

/* Pages of [addr, addr + len) backed by RAM. */
static size_t resident_pages(const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr & ~(uintptr_t)4095;
	size_t n = (len + ((uintptr_t)addr - a) + 4095) / 4096, count = 0;
	unsigned char *vec = calloc(n, 1);

	assert_non_null(vec);
	assert_int_equal(mincore((void *)a, n * 4096, vec), 0);
	for (size_t i = 0; i < n; i++)
		count += vec[i] & 1;
	free(vec);
	return count;
}

/*
 * A huge sparse guest: growing the map writes no entry, so its pages stay
 * unbacked, and an entry never written reads as UNTOUCHED with no copy.
 */
static void test_grow_is_lazy(void **state)
{
	const uint64_t np = 16ULL << 20; /* 64 GiB of guest: 192 MiB of map at 12 bytes per page */
	uint32_t locs[STORE_MAX_COPIES], got[STORE_MAX_COPIES], freed[STORE_MAX_COPIES];
	struct pagemap pm;

	for (unsigned ncopies = 1; ncopies <= 2; ncopies++) {
		assert_int_equal(pagemap_init(&pm, ncopies, -1, 0), 0);
		assert_int_equal(pagemap_grow(&pm, np), 0);
		assert_int_equal(pagemap_npages(&pm), np);
		assert_true(resident_pages(pm.hdr, pm.mapped) <= 2);
		const uint64_t probe[] = { 0, np / 2, np - 1 };
		for (size_t i = 0; i < 3; i++) {
			assert_int_equal(pagemap_entry(&pm, probe[i])->state, PG_UNTOUCHED);
			assert_false(pagemap_has_copy(&pm, probe[i]));
			pagemap_get_locs(&pm, probe[i], got);
			for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
				assert_int_equal(got[c], LOC_NONE);
		}

		/* Location 0 is a real location (spill slot 0), distinct from "none". */
		assert_true(pagemap_installed(&pm, np - 1, freed));
		assert_true(pagemap_evict_begin(&pm, np - 1));
		for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
			locs[c] = c < ncopies ? c : LOC_NONE;
		pagemap_evict_commit(&pm, np - 1, locs, 0);
		pagemap_get_locs(&pm, np - 1, got);
		assert_memory_equal(got, locs, sizeof(locs));
		assert_true(pagemap_has_copy(&pm, np - 1));
		assert_false(pagemap_has_copy(&pm, np - 2));
		/* Reading maps the shared zero page (no RAM); mincore counts it, so allow the probes. */
		assert_true(resident_pages(pm.hdr, pm.mapped) <= 8);
		pagemap_destroy(&pm);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_to_page),
		cmocka_unit_test(test_page_to_addr_and_entry),
		cmocka_unit_test(test_grow_is_lazy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
