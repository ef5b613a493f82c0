/* SPDX-License-Identifier: MIT */
/* Pipelined prefetch of predicted pages from donors (see prefetcher.h). */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "crc32c.h"
#include "log.h"
#include "prefetch.h"
#include "prefetcher.h"
#include "vm-private.h"

#define PF_MAX_WINDOW 64u

struct pf_entry {
	uint64_t page;
	uint32_t crc;
	uint32_t locs[STORE_MAX_COPIES];
	struct pool_op op;
};

struct prefetcher {
	struct vm *vm;
	const unsigned *reserved; /* the fault thread's fetches in flight */
	struct prefetch_streams det;
	uint8_t *bufs; /* max_window pages */
	struct pf_entry e[PF_MAX_WINDOW];
	unsigned n;         /* reads queued */
	uint64_t page;      /* the fault that planned */
	int64_t stride;
	unsigned count;     /* planned, not yet queued */
	struct pool_wait w;
};

int prefetcher_new(struct vm *vm, unsigned max_window, const unsigned *reserved, struct prefetcher **ret)
{
	struct prefetcher *pf = calloc(1, sizeof(*pf));
	void *bufs = NULL;

	if (max_window > PF_MAX_WINDOW)
		max_window = PF_MAX_WINDOW;
	if (!pf || (max_window && posix_memalign(&bufs, VM_PAGE_SIZE, max_window * VM_PAGE_SIZE))) {
		free(pf);
		return -ENOMEM;
	}
	pf->vm = vm;
	pf->reserved = reserved;
	pf->bufs = bufs;
	prefetch_streams_init(&pf->det, max_window);
	pool_wait_init(&pf->w);
	*ret = pf;
	return 0;
}

void prefetcher_free(struct prefetcher *pf)
{
	if (!pf)
		return;
	prefetch_finish(pf, false);
	pool_wait_destroy(&pf->w);
	free(pf->bufs);
	free(pf);
}

void prefetch_plan(struct prefetcher *pf, uint64_t page)
{
	pf->page = page;
	pf->count = prefetch_streams_on_fault(&pf->det, page, &pf->stride);
}

bool prefetch_planned(const struct prefetcher *pf)
{
	return pf->count > 0;
}

void prefetch_issue(void *arg)
{
	struct prefetcher *pf = arg;
	struct vm *vm = pf->vm;
	uint64_t donors = 0, room, used;
	unsigned want = pf->count, n = 0;

	pf->count = 0;
	if (!want)
		return;
	pthread_mutex_lock(&vm->lock);
	/* Never push the VM over its limit for a guess: the evictor would only throw other pages out. */
	/* The fault's own page and the fetches in flight come first. */
	used = vm->resident_pages + *pf->reserved + 1;
	room = vm->high_pages > used ? vm->high_pages - used : 0;
	for (unsigned i = 1; i <= want && n < room; i++) {
		uint64_t q = pf->page + (uint64_t)(pf->stride * (int64_t)i);
		if (q >= vm->npages)
			break;
		struct page_entry *pe = vm_page(vm, q);
		if (pe->state != PG_STORED || (pe->flags & (PGF_LOST | PGF_FETCHING)))
			continue;
		pf->e[n].page = q;
		pf->e[n].crc = pe->crc;
		vm_page_get_locs(vm, q, pf->e[n].locs);
		n++;
	}
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < n; i++) {
		struct pf_entry *e = &pf->e[pf->n];
		if (i != pf->n)
			*e = pf->e[i];
		e->op.w = &pf->w;
		if (store_read_async(vm->store, e->locs, pf->bufs + (size_t)pf->n * VM_PAGE_SIZE, &e->op, &donors) == 0)
			pf->n++;
	}
	store_flush(vm->store, donors);
	atomic_fetch_add_explicit(&vm->stats.prefetch_issued, pf->n, memory_order_relaxed);
}

/* Installs one prefetched page if it is still the stored copy. Returns true when installed. */
static bool install(struct prefetcher *pf, const struct pf_entry *e, const void *buf)
{
	struct vm *vm = pf->vm;
	struct page_entry *pe;
	uint64_t addr = vm_page_addr(vm, e->page);
	bool ok;
	int r;

	if (e->op.status < 0 || crc32c(0, buf, VM_PAGE_SIZE) != e->crc)
		return false;
	pthread_mutex_lock(&vm->lock);
	pe = vm_page(vm, e->page);
	/* Same checksum as now stored: the bytes are the page's (a refault and re-eviction may reuse a slot). */
	ok = pe->state == PG_STORED && !(pe->flags & (PGF_LOST | PGF_FETCHING)) && pe->crc == e->crc &&
	     vm->resident_pages + *pf->reserved < vm->high_pages;
	pthread_mutex_unlock(&vm->lock);
	if (!ok)
		return false;
	struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)buf, .len = VM_PAGE_SIZE };
	do
		r = ioctl(vm->uffd, UFFDIO_COPY, &c) < 0 ? -errno : 0;
	while (r == -EINTR);
	/*
	 * -EAGAIN: a non-cooperative event (REMOVE) is pending; it may discard
	 * this very page, so give the guess up rather than read events here.
	 */
	if (r < 0) {
		if (r == -EEXIST) {
			pthread_mutex_lock(&vm->lock);
			bool alarm = pe->state == PG_STORED;
			pthread_mutex_unlock(&vm->lock);
			if (alarm) {
				atomic_fetch_add_explicit(&vm->stats.integrity_errors, 1, memory_order_relaxed);
				log_err("vm %s: page %llu was filled while its contents were stored (integrity alarm)",
					vm->policy.name, (unsigned long long)e->page);
			}
		}
		return false;
	}
	pthread_mutex_lock(&vm->lock);
	if (pe->state == PG_STORED) {
		vm->stored_pages--;
		vm_page_drop_copies(vm, e->page);
		pe->state = PG_RESIDENT;
		pe->flags &= (uint8_t)~PGF_WRITE_PENDING;
		vm_note_resident(vm, e->page);
	}
	pthread_mutex_unlock(&vm->lock);
	return true;
}

void prefetch_finish(struct prefetcher *pf, bool do_install)
{
	struct vm *vm = pf->vm;
	unsigned hits = 0;

	pf->count = 0;
	if (!pf->n)
		return;
	pool_wait_all(&pf->w);
	for (unsigned i = 0; i < pf->n; i++)
		hits += do_install && install(pf, &pf->e[i], pf->bufs + (size_t)i * VM_PAGE_SIZE);
	atomic_fetch_add_explicit(&vm->stats.prefetch_hits, hits, memory_order_relaxed);
	atomic_fetch_add_explicit(&vm->stats.prefetch_wasted, pf->n - hits, memory_order_relaxed);
	pf->n = 0;
}
