/* SPDX-License-Identifier: MIT */
/*
 * Adopting a VM whose pager died (vm-private.h, docs/architecture.md
 * "Pager restart"). The page map in the state file says what the dead
 * pager last recorded; the memfd says what guest memory holds. Only pages
 * either of them knows are visited: holes of both (untouched pages of a
 * sparse guest) are skipped a chunk at a time with SEEK_DATA.
 */
#include <errno.h>
#include <stdlib.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "log.h"
#include "vm-private.h"
#include "vmstate.h"

#define ADOPT_CHUNK 512u /* pages: 2 MiB of guest, 6 KiB of map */

/* First data offset in [off, end) of fd, or end; on error every byte counts as data (slow, never wrong). */
static off_t next_data(int fd, off_t off, off_t end)
{
	off_t r = lseek(fd, off, SEEK_DATA);

	if (r < 0)
		return errno == ENXIO ? end : off;
	return r < end ? r : end;
}

static off_t next_hole(int fd, off_t off, off_t end)
{
	off_t r = lseek(fd, off, SEEK_HOLE);

	return r < 0 || r > end ? end : r;
}

/* Pages [first, last) of region r; map_fd/map_base: where page 0's entry lies in the state file. */
static int adopt_range(struct vm *vm, struct vm_region *r, uint64_t first, uint64_t last, char *err, size_t errlen)
{
	const uint64_t es = vm->map.hdr->entry_size;
	const off_t map_base = (off_t)(vm->map.file_off + vm->map.hdr->entries_offset);
	const off_t mem_end = region_memfd_off(r, last);
	off_t data = -1, data_end = -1; /* the memfd's current data run */

	for (uint64_t c = first; c < last; c += ADOPT_CHUNK) {
		uint64_t cend = c + ADOPT_CHUNK < last ? c + ADOPT_CHUNK : last;
		off_t m0 = region_memfd_off(r, c);
		off_t m1 = region_memfd_off(r, cend);
		bool map_any = next_data(vm->vs->fd, map_base + (off_t)(c * es) / PAGE_SIZE_4K * PAGE_SIZE_4K,
					 map_base + (off_t)(cend * es)) < map_base + (off_t)(cend * es);
		bool mem_any = next_data(r->memfd, m0, m1) < m1;

		if (!map_any && !mem_any)
			continue;
		pthread_mutex_lock(&vm->lock);
		for (uint64_t p = c; p < cend; p++) {
			off_t o = region_memfd_off(r, p);
			uint32_t locs[STORE_MAX_COPIES];

			while (mem_any && o >= data_end && data_end < mem_end) {
				data = next_data(r->memfd, data_end < o ? o : data_end, mem_end);
				data_end = data < mem_end ? next_hole(r->memfd, data, mem_end) : mem_end;
			}
			bool has_data = mem_any && o >= data && o < data_end;
			if (!has_data && !map_any)
				continue;
			if (pagemap_adopt(&vm->map, p, has_data) != PG_STORED)
				continue;
			pagemap_get_locs(&vm->map, p, locs);
			for (unsigned i = 0; i < STORE_MAX_COPIES; i++) {
				int ar = store_adopt_loc(vm->store, locs[i]);

				if (ar == -EXDEV) {
					pthread_mutex_unlock(&vm->lock);
					snprintf(err, errlen, "page %llu is stored in a sharing group, but the VM's policy "
						 "names none (field 'sharing_group')", (unsigned long long)p);
					return -EBADMSG;
				}
				if (ar < 0) {
					pthread_mutex_unlock(&vm->lock);
					snprintf(err, errlen, "page %llu names copy 0x%x that the slab table never had: "
						 "the state file is corrupted", (unsigned long long)p, locs[i]);
					return -EBADMSG;
				}
			}
		}
		pthread_mutex_unlock(&vm->lock);
	}
	return 0;
}

/*
 * The group entries the adopted page map names, one reference each
 * (docs/sharing.md, "Pager restart"): the map wins over anything the
 * group's state file could have counted. All or nothing.
 */
static int adopt_shared(struct vm *vm, char *err, size_t errlen)
{
	uint32_t locs[STORE_MAX_COPIES], *ids = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	if (!vm->share)
		return 0;
	pthread_mutex_lock(&vm->lock);
	for (uint64_t p = 0; p < pagemap_npages(&vm->map) && r == 0; p++) {
		pagemap_get_locs(&vm->map, p, locs);
		for (unsigned c = 0; c < STORE_MAX_COPIES && r == 0; c++) {
			if (!loc_is_shared(locs[c]))
				continue;
			if (n == cap) {
				uint32_t *g = realloc(ids, (cap = cap ? cap * 2 : 4096) * sizeof(*ids));
				if (!g) {
					r = -ENOMEM;
					snprintf(err, errlen, "out of memory");
					break;
				}
				ids = g;
			}
			ids[n++] = locs[c] & (LOC_SHARED - 1);
		}
	}
	pthread_mutex_unlock(&vm->lock);
	if (r == 0)
		r = share_group_adopt(vm->share, &vm->share_member, ids, n, err, errlen);
	if (r == 0) {
		atomic_store(&store_stats(vm->store)->shared_refs, n);
		vm->share_held = true;
	}
	free(ids);
	return r;
}

int vm_adopt_recover(struct vm *vm, char *err, size_t errlen)
{
	uint64_t t0 = now_ns();
	int r;

	pthread_mutex_lock(&vm->lock);
	pagemap_adopt_begin(&vm->map);
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < vm->nregions; i++) {
		struct vm_region *reg = &vm->regions[i];
		if ((r = adopt_range(vm, reg, reg->first_page, reg->first_page + (reg->length >> PAGE_SHIFT_4K), err,
				     errlen)) < 0)
			return r;
	}
	store_adopt_done(vm->store);
	if ((r = adopt_shared(vm, err, errlen)) < 0)
		return r;
	pthread_mutex_lock(&vm->lock);
	/* Every resident page queued for eviction again, in page order (the dead pager's order is gone). */
	r = vm_resize_victims(vm, vm->npages);
	vm->adopt_ns = now_ns() - t0; /* vm.stats reads it under the lock */
	pthread_mutex_unlock(&vm->lock);
	if (r < 0) {
		snprintf(err, errlen, "victim selector: out of memory");
		return r;
	}
	vm_log_info(vm->policy.name, "state recovered in %llu ms: %llu resident, %llu stored, %llu zero pages",
		    (unsigned long long)(vm->adopt_ns / 1000000), (unsigned long long)pagemap_resident(&vm->map),
		    (unsigned long long)pagemap_stored(&vm->map), (unsigned long long)pagemap_zero(&vm->map));
	return 0;
}

void vm_adopt_wake(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nregions; i++) {
		struct vm_region *r = &vm->regions[i];
		struct uffdio_writeprotect wp = { .range = { .start = r->host_addr, .len = r->length }, .mode = 0 };
		struct uffdio_range range = { .start = r->host_addr, .len = r->length };

		/* Pages the dead evictor protected are resident or stored now: no protection is owed. */
		if (ioctl(vm->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
			vm_log_warn(vm->policy.name, "clearing write-protection of region %u: %s", i, strerror(errno));
		/* Faults the dead pager read but never answered: woken, they fault again and queue for the fault thread. */
		if (ioctl(vm->uffd, UFFDIO_WAKE, &range) < 0)
			vm_log_warn(vm->policy.name, "waking region %u: %s", i, strerror(errno));
	}
}
