/* SPDX-License-Identifier: MIT */
/*
 * The repair thread: one per VM, off the fault path. When the donor pool
 * changes (a donor died, drains, announced shutdown, revoked slabs) it
 * walks the page map, lets clean resident pages forget copies on a dead or
 * departing donor and, for every stored page with such a copy, reads the page from a good copy (CRC32C-checked),
 * writes a new copy where placement says, and swaps the location in — only
 * if the page is still stored with that very copy (a refault in between
 * wins, and the new copy is freed). A page with no readable copy left is
 * never served: it is marked lost and the policy's on_data_loss applied.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"
#include "vm-private.h"

/*
 * The copies repair saw (locs, check word crc) could not be read. Repair
 * does not hold the page while it reads: if it was refaulted (and perhaps
 * stored anew) meanwhile, those copies were not its last ones.
 */
static void page_lost(struct vm *vm, uint64_t page, const uint32_t *locs, uint32_t crc, bool *reported)
{
	uint32_t now[STORE_MAX_COPIES];
	bool first = false;

	pthread_mutex_lock(&vm->lock);
	pagemap_get_locs(&vm->map, page, now);
	if (!memcmp(now, locs, sizeof(now)) && pagemap_entry(&vm->map, page)->crc == crc)
		first = pagemap_copies_lost(&vm->map, page);
	pthread_mutex_unlock(&vm->lock);
	if (!first)
		return;
	atomic_fetch_add_explicit(&store_stats(vm->store)->pages_lost, 1, memory_order_relaxed);
	if (!*reported) {
		*reported = true;
		vm_data_loss(vm, page, "every copy was on donors that died (replicas and backup in the policy's 'durability' were not enough)");
	}
}

/*
 * A clean resident page keeps its copies only while every one is good:
 * nothing is re-created for it (the guest memory holds the page), it is
 * written anew at its next eviction. Under lock.
 */
static void drop_bad_clean_copies(struct vm *vm, uint64_t page)
{
	uint32_t locs[STORE_MAX_COPIES];

	pagemap_get_locs(&vm->map, page, locs);
	if (store_locs_healthy(vm->store, locs))
		return;
	pagemap_clean_dropped(&vm->map, page, locs);
	store_free_locs(vm->store, locs);
}

/* Re-creates or moves the copies of one page. Returns false if something must be retried later. */
static bool repair_page(struct vm *vm, uint64_t page, void *buf, bool *reported)
{
	struct store *st = vm->store;
	uint32_t locs[STORE_MAX_COPIES], crc;
	enum loc_health h[STORE_MAX_COPIES];
	unsigned bad = 0, good = 0;
	enum store_source src;
	bool done = true;

	pthread_mutex_lock(&vm->lock);
	const struct page_entry *pe = pagemap_entry(&vm->map, page);
	if (pe->state == PG_RESIDENT && (pe->flags & PGF_CLEAN)) {
		drop_bad_clean_copies(vm, page);
		pthread_mutex_unlock(&vm->lock);
		return true;
	}
	if (pe->state != PG_STORED || (pe->flags & PGF_LOST)) {
		pthread_mutex_unlock(&vm->lock);
		return true;
	}
	pagemap_get_locs(&vm->map, page, locs);
	crc = pe->crc;
	pthread_mutex_unlock(&vm->lock);
	for (unsigned c = 0; c < vm->ncopies; c++) {
		if (locs[c] == LOC_NONE)
			continue;
		h[c] = store_loc_health(st, locs[c]);
		if (h[c] == LOC_OK)
			good++;
		else
			bad++;
		if (h[c] == LOC_MOVE)
			good++; /* still readable */
	}
	if (!bad)
		return true;
	if (!good) {
		page_lost(vm, page, locs, crc, reported);
		return true;
	}
	if (store_read(st, page, locs, crc, buf, &src, false) < 0) {
		page_lost(vm, page, locs, crc, reported);
		return true;
	}
	for (unsigned c = 0; c < vm->ncopies; c++) {
		uint32_t nl, one[STORE_MAX_COPIES];
		int res;

		if (locs[c] == LOC_NONE || h[c] == LOC_OK)
			continue;
		if (store_place_one(st, locs, vm->ncopies, &nl) < 0) {
			if (h[c] == LOC_MOVE) {
				done = false; /* nowhere to go yet: keep the readable copy, try again */
				continue;
			}
			nl = LOC_NONE; /* nowhere to re-create it: at least forget the dead copy */
		} else {
			for (unsigned k = 0; k < STORE_MAX_COPIES; k++)
				one[k] = LOC_NONE;
			one[0] = nl;
			res = store_write_page(st, buf, one, page, crc);
			if (res < 0) {
				store_free_loc(st, nl);
				done = false;
				continue;
			}
		}
		pthread_mutex_lock(&vm->lock);
		if (pagemap_replace_copy(&vm->map, page, c, locs[c], nl)) {
			store_free_loc(st, locs[c]);
			locs[c] = nl;
			if (nl != LOC_NONE)
				atomic_fetch_add_explicit(h[c] == LOC_DEAD ? &store_stats(st)->rereplications
									   : &store_stats(st)->moved,
							  1, memory_order_relaxed);
		} else if (nl != LOC_NONE) {
			store_free_loc(st, nl); /* refaulted meanwhile: the new copy is not needed */
		}
		pthread_mutex_unlock(&vm->lock);
	}
	return done;
}

static bool repair_scan(struct vm *vm, void *buf)
{
	bool done = true, reported = false;
	uint64_t n;

	pthread_mutex_lock(&vm->lock);
	n = vm->npages;
	pthread_mutex_unlock(&vm->lock);
	for (uint64_t p = 0; p < n; p++) {
		bool stopping;
		pthread_mutex_lock(&vm->lock);
		stopping = vm->stopping;
		pthread_mutex_unlock(&vm->lock);
		if (stopping)
			return true;
		done &= repair_page(vm, p, buf, &reported);
	}
	return done;
}

void *vm_repair_thread(void *arg)
{
	struct vm *vm = arg;
	bool retry = false;
	void *buf;

	pthread_setname_np(pthread_self(), "pager-repair");

	if (posix_memalign(&buf, PAGE_SIZE_4K, PAGE_SIZE_4K)) {
		vm_log_err(vm->policy.name, "repair thread out of memory");
		return NULL;
	}
	for (;;) {
		struct timespec ts;
		bool stop;

		pthread_mutex_lock(&vm->lock);
		if (!vm->stopping) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 200 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&vm->repair_cond, &vm->lock, &ts);
		}
		stop = vm->stopping;
		pthread_mutex_unlock(&vm->lock);
		if (stop)
			break;
		/* The group's copies once for all its members: whichever repair thread comes first. */
		share_repair(vm->share);
		if (!store_generation_changed(vm->store) && !retry)
			continue;
		if (store_refresh(vm->store)) {
			uint64_t t0 = now_ns();
			retry = !repair_scan(vm, buf);
			vm_log_info(vm->policy.name, "repair pass over %llu pages in %llu ms: %llu re-replicated, %llu moved, %llu lost so far%s", (unsigned long long)vm->npages,
				 (unsigned long long)((now_ns() - t0) / 1000000),
				 (unsigned long long)atomic_load(&store_stats(vm->store)->rereplications),
				 (unsigned long long)atomic_load(&store_stats(vm->store)->moved),
				 (unsigned long long)atomic_load(&store_stats(vm->store)->pages_lost),
				 retry ? "; retrying" : "");
		} else {
			retry = false;
		}
		store_release_empty(vm->store);
	}
	free(buf);
	return NULL;
}
