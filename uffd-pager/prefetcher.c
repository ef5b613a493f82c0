/* SPDX-License-Identifier: MIT */
/* Pipelined prefetch of predicted pages from donors (see prefetcher.h). */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "prefetch.h"
#include "prefetcher.h"
#include "vm-private.h"

#define PF_MAX_WINDOW 64u
/*
 * Reads complete into one wait per chunk of the window, installed chunk by
 * chunk in window order: the first pages go in (and the guest, which is on
 * them next, runs) while the donor still sends the rest.
 */
#define PF_CHUNK 8u
#define PF_CHUNKS (PF_MAX_WINDOW / PF_CHUNK)

struct pf_entry {
	uint64_t page;
	uint32_t crc;
	uint32_t locs[STORE_MAX_COPIES];
	bool shared;            /* locs[0] names a copy of the VM's sharing group */
	struct share_fetch sf;  /* then what checks it */
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
	struct pool_wait w[PF_CHUNKS]; /* reads queued as e[i] complete into w[i / PF_CHUNK] */
};

int prefetcher_new(struct vm *vm, unsigned max_window, const unsigned *reserved, struct prefetcher **ret)
{
	struct prefetcher *pf = calloc(1, sizeof(*pf));
	void *bufs = NULL;

	if (max_window > PF_MAX_WINDOW)
		max_window = PF_MAX_WINDOW;
	if (!pf || (max_window && posix_memalign(&bufs, PAGE_SIZE_4K, max_window * PAGE_SIZE_4K))) {
		free(pf);
		return -ENOMEM;
	}
	pf->vm = vm;
	pf->reserved = reserved;
	pf->bufs = bufs;
	prefetch_streams_init(&pf->det, max_window);
	for (unsigned c = 0; c < PF_CHUNKS; c++)
		pool_wait_init(&pf->w[c]);
	*ret = pf;
	return 0;
}

void prefetcher_free(struct prefetcher *pf)
{
	if (!pf)
		return;
	prefetch_finish(pf, false);
	for (unsigned c = 0; c < PF_CHUNKS; c++)
		pool_wait_destroy(&pf->w[c]);
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

void prefetch_issue(struct prefetcher *pf)
{
	struct vm *vm = pf->vm;
	uint64_t donors = 0, room, used;
	unsigned want = pf->count, n = 0, no_room = 0;

	pf->count = 0;
	if (!want)
		return;
	pthread_mutex_lock(&vm->lock);
	/* Never push the VM over its limit for a guess: the evictor would only throw other pages out. */
	/* The fault's own page and the fetches in flight come first. */
	used = pagemap_resident(&vm->map) + *pf->reserved + 1;
	room = vm->high_pages > used ? vm->high_pages - used : 0;
	for (unsigned i = 1; i <= want; i++) {
		uint64_t q = pf->page + (uint64_t)(pf->stride * (int64_t)i);
		if (q >= vm->npages)
			break;
		const struct page_entry *pe = pagemap_entry(&vm->map, q);
		if (pe->state != PG_STORED || (pe->flags & (PGF_LOST | PGF_FETCHING)))
			continue;
		if (n >= room) {
			no_room++;
			continue;
		}
		pf->e[n].page = q;
		pf->e[n].crc = pe->crc;
		pagemap_get_locs(&vm->map, q, pf->e[n].locs);
		n++;
	}
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < n; i++) {
		struct pf_entry *e = &pf->e[pf->n];
		if (i != pf->n)
			*e = pf->e[i];
		void *buf = pf->bufs + (size_t)pf->n * PAGE_SIZE_4K;

		e->op.w = &pf->w[pf->n / PF_CHUNK];
		/* A group copy: read through the group's store, checked under its entry (docs/sharing.md). */
		e->shared = vm->share && loc_is_shared(e->locs[0]);
		if ((e->shared ? share_read_async(vm->share, e->locs[0], buf, &e->op, &donors, &e->sf)
			       : store_read_async(vm->store, e->locs, buf, &e->op, &donors)) == 0)
			pf->n++;
	}
	store_flush(vm->store, donors);
	atomic_fetch_add_explicit(&vm->stats.prefetch_issued, pf->n, memory_order_relaxed);
	atomic_fetch_add_explicit(&vm->stats.prefetch_no_room, no_room, memory_order_relaxed);
}

/* A prefetched page was filled while still stored: only a bug (or a foreign writer) does that. */
static void check_filled(struct prefetcher *pf, uint64_t page)
{
	struct vm *vm = pf->vm;

	pthread_mutex_lock(&vm->lock);
	bool alarm = pagemap_entry(&vm->map, page)->state == PG_STORED;
	pthread_mutex_unlock(&vm->lock);
	if (alarm) {
		atomic_fetch_add_explicit(&vm->stats.integrity_errors, 1, memory_order_relaxed);
		vm_log_err(vm->policy.name, "page %llu was filled while its contents were stored (integrity alarm)", (unsigned long long)page);
	}
}

/*
 * Copies entries first..first+n-1 (consecutive guest pages, consecutive
 * buffers) in one UFFDIO_COPY, which wakes a vCPU waiting on any of them
 * once. Marks ok[i] false for each page not placed. Returns false when the
 * rest of the window must be given up.
 */
static bool copy_run(struct prefetcher *pf, unsigned first, unsigned n, bool *ok)
{
	struct vm *vm = pf->vm;
	unsigned done = 0;

	for (int attempt = 0; done < n && attempt < 16; attempt++) {
		struct uffdio_copy c = { .dst = vm_page_addr(vm, pf->e[first + done].page),
					 .src = (uint64_t)(uintptr_t)(pf->bufs + (size_t)(first + done) * PAGE_SIZE_4K),
					 .len = (uint64_t)(n - done) * PAGE_SIZE_4K };
		int r = ioctl(vm->uffd, UFFDIO_COPY, &c) < 0 ? -errno : 0;

		if (r == 0) {
			done = n;
			break;
		}
		if (c.copy > 0) {
			/* A partial copy stops before the page that failed: the next attempt names its error. */
			done += (unsigned)((uint64_t)c.copy / PAGE_SIZE_4K);
			continue;
		}
		if (r == -EINTR)
			continue;
		if (r == -EEXIST) {
			check_filled(pf, pf->e[first + done].page);
			ok[first + done] = false;
			done++;
			continue;
		}
		/*
		 * -EAGAIN: a non-cooperative event (REMOVE) is pending; it may
		 * discard these very pages, so give the guesses up rather than
		 * read events here. Anything else: the VM is going away.
		 */
		break;
	}
	for (unsigned i = done; i < n; i++)
		ok[first + i] = false;
	return done == n;
}

/*
 * Installs entries first..first+n-1 that are still the stored copies, as
 * their faults would: checksums first, then the states checked under one
 * lock, contiguous pages copied together, then recorded under one lock.
 * Returns how many went in.
 */
static unsigned install_chunk(struct prefetcher *pf, unsigned first, unsigned n)
{
	struct vm *vm = pf->vm;
	bool ok[PF_MAX_WINDOW], go_on = true;
	unsigned hits = 0;
	uint64_t room;

	bool rejected[PF_MAX_WINDOW];

	for (unsigned i = first; i < first + n; i++) {
		void *buf = pf->bufs + (size_t)i * PAGE_SIZE_4K;

		rejected[i] = pf->e[i].op.status >= 0 &&
			      (pf->e[i].shared ? share_fetch_open(vm->share, &pf->e[i].sf, buf)
					       : store_check_copy(vm->store, pf->e[i].page, pf->e[i].crc, buf,
								  pf->e[i].op.tag)) < 0;
		ok[i] = pf->e[i].op.status >= 0 && !rejected[i];
	}
	pthread_mutex_lock(&vm->lock);
	/* The fetches in flight keep their room; guesses never push the VM over its limit. */
	room = vm->high_pages > pagemap_resident(&vm->map) + *pf->reserved ?
		       vm->high_pages - pagemap_resident(&vm->map) - *pf->reserved : 0;
	for (unsigned i = first; i < first + n; i++) {
		const struct page_entry *pe = pagemap_entry(&vm->map, pf->e[i].page);
		uint32_t now[STORE_MAX_COPIES];
		bool same = pe->state == PG_STORED;

		if (same && pf->e[i].shared) {
			/* Same entry, same content: an entry's number is reused for other content only after it went. */
			pagemap_get_locs(&vm->map, pf->e[i].page, now);
			same = now[0] == pf->e[i].locs[0] && share_fetch_current(vm->share, &pf->e[i].sf);
		} else {
			/* Same checksum as now stored: the bytes are the page's (a refault and re-eviction may reuse a slot). */
			same = same && pe->crc == pf->e[i].crc;
		}
		if (ok[i] && room && same && !(pe->flags & (PGF_LOST | PGF_FETCHING)))
			room--;
		else
			ok[i] = false;
		/* Still the page's copy, yet it failed its check: tampered with (or a bad disk), not a stale guess. */
		if (rejected[i] && same)
			store_count_rejected(vm->store);
	}
	pthread_mutex_unlock(&vm->lock);
	/*
	 * Only this thread installs stored pages or reads REMOVE events, so
	 * the pages stay stored until copied.
	 */
	for (unsigned i = first; i < first + n && go_on;) {
		unsigned j = i + 1;
		if (!ok[i]) {
			i++;
			continue;
		}
		while (j < first + n && ok[j] && pf->e[j].page == pf->e[j - 1].page + 1)
			j++;
		go_on = copy_run(pf, i, j - i, ok);
		i = j;
		if (!go_on)
			for (; i < first + n; i++)
				ok[i] = false;
	}
	pthread_mutex_lock(&vm->lock);
	for (unsigned i = first; i < first + n; i++) {
		uint32_t freed[STORE_MAX_COPIES];
		if (!ok[i])
			continue;
		hits++;
		if (pagemap_entry(&vm->map, pf->e[i].page)->state == PG_STORED &&
		    pagemap_installed(&vm->map, pf->e[i].page, freed)) {
			store_free_locs(vm->store, freed);
			vm_note_resident(vm, pf->e[i].page);
		}
	}
	pthread_mutex_unlock(&vm->lock);
	return hits;
}

void prefetch_finish(struct prefetcher *pf, bool do_install)
{
	struct vm *vm = pf->vm;
	unsigned hits = 0;

	pf->count = 0;
	if (!pf->n)
		return;
	for (unsigned c = 0; c * PF_CHUNK < pf->n; c++) {
		unsigned first = c * PF_CHUNK, n = pf->n - first < PF_CHUNK ? pf->n - first : PF_CHUNK;
		pool_wait_all(&pf->w[c]);
		if (do_install)
			hits += install_chunk(pf, first, n);
	}
	atomic_fetch_add_explicit(&vm->stats.prefetch_hits, hits, memory_order_relaxed);
	atomic_fetch_add_explicit(&vm->stats.prefetch_wasted, pf->n - hits, memory_order_relaxed);
	pf->n = 0;
}
