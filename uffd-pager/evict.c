/* SPDX-License-Identifier: MIT */
/*
 * The evictor thread: one per VM, off the fault path. When residency rises
 * above the low watermark it takes a batch of victims from the policy's
 * victim selector and pushes them out in the order that never loses a
 * write (README, "How it stays correct"): write-protect each contiguous
 * run (a clean page is protected already), read it through the memfd a
 * part at a time, write every non-zero page of a part to the stores while
 * the next part is read, wait until all are durable, then punch the run.
 * Pages that need no store write (clean, zero) are punched while the
 * donors take in the others. A write that lands on a page in the middle
 * of this either takes the page back out of the batch or waits for the
 * punch. Every page-state change goes through pagemap.h's verbs, one lock
 * per step for each of the batch's two parts. The pacing (target, trigger,
 * the fault path's wake-up) is here too, at the end of the file.
 */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "glue-proto.h"
#include "log.h"
#include "events.h"
#include "util.h"
#include "vm-private.h"

#define EVICT_BATCH STORE_BATCH_MAX /* one store write batch */
#define SAMPLE_BATCH 1024  /* pages the victim policy may name per evictor round */
#define SAMPLING_MAX 8192  /* unmaps pending at once: what a slow shim can hold back from eviction */
#define EVICT_PART 32 /* pages read before they go to the stores */

struct evict_ctx {
	struct vm *vm;
	uint8_t *buf; /* EVICT_BATCH aligned pages */
	uint64_t pages[EVICT_BATCH];
	uint32_t locs[EVICT_BATCH][STORE_MAX_COPIES];
	uint32_t crcs[EVICT_BATCH];
	bool zero[EVICT_BATCH];
	bool clean[EVICT_BATCH];     /* its copies (in locs) are current: nothing to write */
	bool shared[EVICT_BATCH];    /* its copy is its sharing group's (locs[0]): nothing in the batch */
	bool protected_[EVICT_BATCH];
	bool commit[EVICT_BATCH];
	bool unpunched[EVICT_BATCH]; /* committed, but the memfd refused the punch */
	bool in_wb[EVICT_BATCH];     /* in wb: finished once its copies are durable */
	unsigned n_commit, n_unpunched; /* this batch's, over both finish_pages calls */
	int punch_err;
	bool crash_counted[2];       /* this batch counted for the crash hook's windows */
	bool punch_warned;           /* logged once per VM: the memfd's seals do not go away */
	bool punch_failed;           /* the last batch's punch failed: retry slowly */
	struct store_batch wb; /* the non-zero pages, in batch order */
	unsigned n;
	/* Test hook (see crash_point): where and at which batch the pager kills itself. */
	enum crash_window { CRASH_NONE, CRASH_AFTER_COMMIT, CRASH_AFTER_PUNCH } crash_at;
	unsigned crash_batch;
};

/*
 * Test hook for the pager-restart tests: UFFD_PAGER_TEST_CRASH=commit:N
 * (or punch:N) makes the pager SIGKILL itself in its N-th eviction batch
 * right after the commit, before the punch (or after the punch, before
 * it is recorded): the windows a restart must recover from exactly. Read
 * once per evictor; unset in production.
 */
static void crash_hook_init(struct evict_ctx *ec)
{
	const char *v = getenv("UFFD_PAGER_TEST_CRASH");
	unsigned n;

	if (v && sscanf(v, "commit:%u", &n) == 1)
		ec->crash_at = CRASH_AFTER_COMMIT;
	else if (v && sscanf(v, "punch:%u", &n) == 1)
		ec->crash_at = CRASH_AFTER_PUNCH;
	else
		return;
	ec->crash_batch = n ? n : 1;
}

static void crash_point(struct evict_ctx *ec, enum crash_window where)
{
	bool *counted = &ec->crash_counted[where == CRASH_AFTER_PUNCH];

	/* A batch is finished in two parts (finish_pages): it counts once, at its first commit or punch. */
	if (ec->crash_at != where || !ec->n || *counted)
		return;
	*counted = true;
	if (--ec->crash_batch)
		return;
	vm_log_warn(ec->vm->policy.name, "test hook: killing the pager %s of %u pages",
		    where == CRASH_AFTER_COMMIT ? "after the commit, before the punch" : "after the punch, before it is recorded",
		    ec->n);
	raise(SIGKILL);
}

static bool vm_stopping(struct vm *vm);

/* This thread's CPU time: one syscall, twice per batch. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static bool page_is_zero(const void *p)
{
	const uint64_t *w = p;

	for (size_t i = 0; i < PAGE_SIZE_4K / 8; i += 4)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
			return false;
	return true;
}

/* Length of the run of pages starting at index i that are adjacent in one region and selected by want[]. */
static unsigned run_length(struct evict_ctx *ec, unsigned i, const bool *want)
{
	struct vm_region *r = vm_region_of_page(ec->vm, ec->pages[i]);
	unsigned j = i + 1;

	while (j < ec->n && want[j] && ec->pages[j] == ec->pages[j - 1] + 1 &&
	       ec->pages[j] < r->first_page + (r->length >> PAGE_SHIFT_4K))
		j++;
	return j - i;
}

/*
 * EAGAIN: a REMOVE event waits to be read (the shim's sampling unmaps, the
 * guest's discards); the fault thread reads it soon, so try again: a while
 * before giving pages up for this batch, and for as long as it takes to
 * un-protect, which a writer may be waiting for.
 */
static int uffd_wp_range(struct vm *vm, uint64_t addr, uint64_t len, bool protect)
{
	struct uffdio_writeprotect wp = { .range = { .start = addr, .len = len },
					  .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };

	for (int attempt = 0; !protect || attempt < 200; attempt++) {
		if (ioctl(vm->uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
			return 0;
		if (errno != EAGAIN || vm_stopping(vm))
			return -errno;
		usleep(50);
	}
	return -EAGAIN;
}

/*
 * Access sampling: the victim policy names resident pages it wants to
 * watch, and the shim unmaps them (their contents stay in the memfd); an
 * access before they are picked is a minor fault that tells the policy
 * the page is in use (fault.c). The requests are non-blocking sends: a
 * shim that falls behind only gets fewer. Sent under the lock, so the
 * socket cannot be replaced meanwhile (vm_set_sampler).
 */
static void sample_ahead(struct evict_ctx *ec)
{
	struct vm *vm = ec->vm;
	uint64_t cand[SAMPLE_BATCH];
	struct glue_msg_sample m;
	size_t got, n = 0, i = 0, sent = 0;

	if (!vm->victim->sample)
		return;
	pthread_mutex_lock(&vm->lock);
	if (vm->sampler_fd < 0 || vm->sampling_pages >= SAMPLING_MAX) {
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	/* The policy's window refills in full each round: a window that only keeps pace with the picks sees nothing. */
	do {
		size_t want = SAMPLE_BATCH - n;

		if (want > SAMPLING_MAX - vm->sampling_pages - n)
			want = SAMPLING_MAX - vm->sampling_pages - n;
		const size_t base = n;

		got = want ? vm->victim->sample(vm->victim_state, cand + base, want) : 0;
		for (size_t k = base; k < base + got; k++)
			if (pagemap_sample_begin(&vm->map, cand[k]))
				cand[n++] = cand[k];
	} while (got && n < SAMPLE_BATCH && vm->sampling_pages + n < SAMPLING_MAX);
	qsort(cand, n, sizeof(cand[0]), cmp_u64);
	while (i < n) {
		size_t first = i;

		memset(&m, 0, sizeof(m));
		glue_header_init(&m.hdr, GLUE_MSG_SAMPLE, sizeof(m));
		while (i < n && m.count < GLUE_SAMPLE_RANGES) {
			struct vm_region *r = vm_region_of_page(vm, cand[i]);
			size_t j = i + 1;

			while (j < n && cand[j] == cand[j - 1] + 1 && vm_region_of_page(vm, cand[j]) == r)
				j++;
			m.ranges[m.count++] = (struct glue_sample_range){ .addr = vm_page_addr(vm, cand[i]),
									  .length = (uint64_t)(j - i) << PAGE_SHIFT_4K };
			i = j;
		}
		if (send(vm->sampler_fd, &m, sizeof(m), MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(m)) {
			/* Behind or gone: these pages are not unmapped, so no REMOVE will clear them. */
			for (size_t k = first; k < n; k++)
				pagemap_sample_end(&vm->map, cand[k]);
			n = first;
			break;
		}
		sent = i;
	}
	vm->sampling_pages += sent;
	pthread_mutex_unlock(&vm->lock);
	atomic_fetch_add_explicit(&vm->stats.pages_sampled, sent, memory_order_relaxed);
}

/* Picks up to EVICT_BATCH resident pages and marks them EVICTING. Returns how many. */
static unsigned pick_victims(struct evict_ctx *ec)
{
	struct vm *vm = ec->vm;
	uint64_t cand[EVICT_BATCH];
	unsigned n = 0;

	pthread_mutex_lock(&vm->lock);
	/* Pages picked so far still count as resident: without subtracting them a second round would pick the same excess again. */
	while (n < EVICT_BATCH && pagemap_resident(&vm->map) - n > vm_evict_target(vm)) {
		size_t want = EVICT_BATCH - n, got;
		uint64_t excess = pagemap_resident(&vm->map) - n - vm_evict_target(vm);
		if (want > excess)
			want = (size_t)excess;
		got = vm->victim->pick(vm->victim_state, cand, want);
		if (!got)
			break;
		for (size_t i = 0; i < got; i++)
			/* The selector may hand back pages that left residency since they were queued. */
			if (pagemap_evict_begin(&vm->map, cand[i]))
				ec->pages[n++] = cand[i];
		/* Pages counted but not yet queued are in flight on the fault path. */
		if (got < want)
			break;
	}
	pthread_mutex_unlock(&vm->lock);
	qsort(ec->pages, n, sizeof(ec->pages[0]), cmp_u64);
	return n;
}

/* A page leaves the batch (write during eviction, store failure, discard): its copies are freed. Under lock. */
static void abort_page_locked(struct vm *vm, uint64_t page, uint32_t *locs, enum evict_verdict verdict)
{
	store_free_locs(vm->store, locs);
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		locs[c] = LOC_NONE;
	if (verdict == EVICT_FORGET) {
		pagemap_evict_forget(&vm->map, page);
	} else {
		pagemap_evict_give_back(&vm->map, page);
		vm->victim->on_resident(vm->victim_state, page);
	}
}

/*
 * A clean page is evicted on the strength of its copies, so they must be
 * good and the memfd must still hold the page: a copy on a donor that died
 * or is being left, or a hole (the guest discarded the page without the
 * event that says so), makes it an ordinary page, read and written anew
 * under a new version. One lseek per run of clean pages. ret_spent[i]:
 * page i cannot be written anew (its version is spent), so it stays.
 */
static void check_clean_pages(struct evict_ctx *ec, bool *ret_spent)
{
	struct vm *vm = ec->vm;
	bool was_clean[EVICT_BATCH];
	unsigned i, k;

	for (i = 0; i < ec->n; i++) {
		was_clean[i] = ec->clean[i];
		ret_spent[i] = false;
		if (ec->clean[i] && !store_locs_healthy(vm->store, ec->locs[i]))
			ec->clean[i] = false;
	}
	for (i = 0; i < ec->n; i += k) {
		k = ec->clean[i] ? run_length(ec, i, ec->clean) : 1;
		if (!ec->clean[i])
			continue;
		struct vm_region *rg = vm_region_of_page(vm, ec->pages[i]);
		off_t off = region_memfd_off(rg, ec->pages[i]);
		off_t hole = lseek(rg->memfd, off, SEEK_HOLE);
		for (unsigned j = i; j < i + k; j++)
			if (hole < off + ((off_t)(j - i + 1) << PAGE_SHIFT_4K))
				ec->clean[j] = false;
	}
	pthread_mutex_lock(&vm->lock);
	for (i = 0; i < ec->n; i++) {
		uint32_t freed[STORE_MAX_COPIES];

		if (!was_clean[i] || ec->clean[i])
			continue;
		ret_spent[i] = !pagemap_evict_unclean(&vm->map, ec->pages[i], freed);
		store_free_locs(vm->store, freed);
		for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
			ec->locs[i][c] = LOC_NONE;
		ec->crcs[i] = pagemap_entry(&vm->map, ec->pages[i])->crc; /* the new version, when sealed */
	}
	pthread_mutex_unlock(&vm->lock);
}

/*
 * Sharing VM: the pages of batch[first, end) marked shared get their
 * references in the group, which writes the new contents among them in
 * one batch. A page it cannot take stays resident. Returns how many.
 */
static unsigned share_part(struct evict_ctx *ec, unsigned first, unsigned end)
{
	const void *pages[EVICT_BATCH];
	uint32_t locs[EVICT_BATCH];
	unsigned idx[EVICT_BATCH], n = 0, failed = 0;
	int res[EVICT_BATCH];

	for (unsigned k = first; k < end; k++)
		if (ec->shared[k] && ec->protected_[k]) {
			idx[n] = k;
			pages[n++] = ec->buf + (size_t)k * PAGE_SIZE_4K;
		}
	if (!n)
		return 0;
	store_put_shared_batch(ec->vm->store, pages, n, locs, res);
	for (unsigned j = 0; j < n; j++) {
		unsigned k = idx[j];

		if (res[j] == 0) {
			ec->locs[k][0] = locs[j];
			continue;
		}
		ec->shared[k] = false;
		ec->protected_[k] = false;
		failed++;
	}
	return failed;
}

/*
 * Steps 4-6 of a batch for the pages sel[] names: pages written to
 * meanwhile go back and are un-protected, the rest is committed, punched
 * (one fallocate per contiguous run of them) and recorded, and writers
 * that waited for the punch are woken. Adds to ec's counts.
 */
static void finish_pages(struct evict_ctx *ec, const bool *sel)
{
	struct vm *vm = ec->vm;
	unsigned i, n_commit = 0, n_aborted = 0;
	bool punch[EVICT_BATCH];

	/* 4. decide: pages written to meanwhile go back; the rest is committed */
	pthread_mutex_lock(&vm->lock);
	for (i = 0; i < ec->n; i++) {
		if (!sel[i])
			continue;
		enum evict_verdict verdict = pagemap_evict_verdict(&vm->map, ec->pages[i], ec->protected_[i]);
		if (verdict != EVICT_COMMIT) {
			if (ec->protected_[i])
				n_aborted++;
			abort_page_locked(vm, ec->pages[i], ec->locs[i], verdict);
			continue;
		}
		/* all LOC_NONE for a zero page; its CRC is never read */
		pagemap_evict_commit(&vm->map, ec->pages[i], ec->locs[i], ec->crcs[i]);
		ec->commit[i] = true;
		n_commit++;
	}
	pthread_mutex_unlock(&vm->lock);
	if (n_aborted)
		atomic_fetch_add_explicit(&vm->stats.evictions_aborted, n_aborted, memory_order_relaxed);
	if (n_commit)
		crash_point(ec, CRASH_AFTER_COMMIT);

	/* Un-protect every page given back; this also wakes its writers. */
	for (i = 0; i < ec->n; i++)
		if (sel[i] && !ec->commit[i])
			uffd_wp_range(vm, vm_page_addr(vm, ec->pages[i]), PAGE_SIZE_4K, false);

	/* 5. punch committed runs: the next access is a MISSING fault. Only this call's: the others may be refaulted by now. */
	for (i = 0; i < ec->n; i++)
		punch[i] = sel[i] && ec->commit[i];
	for (i = 0; i < ec->n;) {
		if (!punch[i]) {
			i++;
			continue;
		}
		unsigned len = run_length(ec, i, punch);
		struct vm_region *rg = vm_region_of_page(vm, ec->pages[i]);
		off_t off = region_memfd_off(rg, ec->pages[i]);
		if (fallocate(rg->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
			      (off_t)len << PAGE_SHIFT_4K) < 0) {
			/* A seal the process added after registration: the memfd still holds the pages. */
			ec->punch_err = errno;
			for (unsigned k = i; k < i + len; k++) {
				ec->commit[k] = false;
				ec->unpunched[k] = true;
			}
			ec->n_unpunched += len;
			n_commit -= len;
		}
		i += len;
	}

	if (n_commit)
		crash_point(ec, CRASH_AFTER_PUNCH);

	/* 6. record, then wake writers that waited for the punch */
	pthread_mutex_lock(&vm->lock);
	unsigned n_wake = 0;
	uint64_t wake[EVICT_BATCH];
	for (i = 0; i < ec->n; i++) {
		uint32_t freed[STORE_MAX_COPIES];
		bool waiter;

		if (!sel[i])
			continue;
		/* Not punched: an aborted eviction. The memfd holds the page; its copies go. */
		if (ec->unpunched[i] && pagemap_entry(&vm->map, ec->pages[i])->state == PG_EVICT_COMMITTED &&
		    pagemap_installed(&vm->map, ec->pages[i], freed)) {
			store_free_locs(vm->store, freed);
			vm->victim->on_resident(vm->victim_state, ec->pages[i]);
		}
		if (!ec->commit[i])
			continue;
		/* false: refaulted in between, the fault thread took over */
		if (!pagemap_punched(&vm->map, ec->pages[i], ec->zero[i], &waiter, freed))
			continue;
		store_free_locs(vm->store, freed);
		if (waiter)
			wake[n_wake++] = ec->pages[i];
	}
	pthread_mutex_unlock(&vm->lock);
	/* The room is there now: throttled faults need not wait for the rest of the batch. */
	if (n_commit)
		pthread_cond_broadcast(&vm->space_cond);
	/* Un-protect the unpunched pages: this wakes the writers that waited for the punch. */
	for (i = 0; i < ec->n; i++)
		if (sel[i] && ec->unpunched[i])
			uffd_wp_range(vm, vm_page_addr(vm, ec->pages[i]), PAGE_SIZE_4K, false);
	for (i = 0; i < n_wake; i++) {
		struct uffdio_range rg = { .start = vm_page_addr(vm, wake[i]), .len = PAGE_SIZE_4K };
		ioctl(vm->uffd, UFFDIO_WAKE, &rg);
	}
	ec->n_commit += n_commit;
}

static void evict_batch(struct evict_ctx *ec)
{
	struct vm *vm = ec->vm;
	uint64_t t0 = now_ns(), cpu0 = thread_cpu_ns();
	unsigned i, n_store = 0, n_store_failed = 0;
	int r;

	ec->n = pick_victims(ec);
	if (!ec->n)
		return;
	ec->n_commit = ec->n_unpunched = 0;
	ec->punch_err = 0;
	ec->crash_counted[0] = ec->crash_counted[1] = false;
	/*
	 * Sealed copies: each page's version, just bumped by pagemap_evict_begin
	 * (only this thread writes it). A clean page brings its copies and their
	 * check word; the evictor holds them from here on, as it holds those it
	 * writes (abort_page_locked frees them, the commit puts them back).
	 */
	pthread_mutex_lock(&vm->lock);
	for (i = 0; i < ec->n; i++) {
		const struct page_entry *pe = pagemap_entry(&vm->map, ec->pages[i]);

		ec->protected_[i] = false;
		ec->commit[i] = false;
		ec->unpunched[i] = false;
		ec->in_wb[i] = false;
		ec->clean[i] = pe->flags & PGF_CLEAN;
		if (store_sealed(vm->store) || ec->clean[i])
			ec->crcs[i] = pe->crc; /* the version, in a sealed map */
		if (ec->clean[i])
			pagemap_get_locs(&vm->map, ec->pages[i], ec->locs[i]);
		else
			for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
				ec->locs[i][c] = LOC_NONE;
	}
	pthread_mutex_unlock(&vm->lock);
	bool spent[EVICT_BATCH];
	check_clean_pages(ec, spent);

	/*
	 * 1. write-protect, one ioctl per contiguous run. A clean page is
	 * protected already: it went in write-protected, and the only ways out
	 * (a write's fault, a give-back, adoption) clear PGF_CLEAN first, under
	 * the lock; it cannot be cleared now that the page is EVICTING. An
	 * ioctl for it would be a no-op that costs a page-table walk and a TLB
	 * flush per page.
	 */
	bool to_protect[EVICT_BATCH];
	for (i = 0; i < ec->n; i++) {
		to_protect[i] = !ec->clean[i];
		if (ec->clean[i])
			ec->protected_[i] = !spent[i];
	}
	for (i = 0; i < ec->n;) {
		if (!to_protect[i]) {
			i++;
			continue;
		}
		unsigned len = run_length(ec, i, to_protect);
		r = uffd_wp_range(vm, vm_page_addr(vm, ec->pages[i]), (uint64_t)len << PAGE_SHIFT_4K, true);
		/* EAGAIN: the pages are not protected and must not be evicted now. */
		for (unsigned k = i; k < i + len; k++)
			ec->protected_[k] = (r == 0) && !spent[k];
		i += len;
	}

	/*
	 * 2+3. read contents through the memfd (one pread per run, a hole reads
	 * as zeros without allocating) and store every non-zero page, a part of
	 * at most EVICT_PART pages at a time: the donor takes in one part while
	 * the next is read. Then wait until every copy is durable.
	 */
	bool to_write[EVICT_BATCH];
	for (i = 0; i < ec->n; i++) {
		ec->zero[i] = false;
		ec->shared[i] = false;
		to_write[i] = ec->protected_[i] && !ec->clean[i];
	}
	store_batch_reset(&ec->wb);
	unsigned sh_from = 0, sh_pending = 0;
	for (i = 0; i < ec->n;) {
		if (!to_write[i]) {
			i++;
			continue;
		}
		unsigned len = run_length(ec, i, to_write);
		if (len > EVICT_PART)
			len = EVICT_PART;
		struct vm_region *rg = vm_region_of_page(vm, ec->pages[i]);
		size_t want = (size_t)len << PAGE_SHIFT_4K;
		ssize_t got = pread(rg->memfd, ec->buf + (size_t)i * PAGE_SIZE_4K, want,
				    region_memfd_off(rg, ec->pages[i]));
		for (unsigned k = i; k < i + len; k++) {
			void *dst = ec->buf + (size_t)k * PAGE_SIZE_4K;

			if (got != (ssize_t)want) {
				ec->protected_[k] = false; /* treat like a failed store: keep it resident */
				continue;
			}
			if (page_is_zero(dst)) {
				ec->zero[k] = true;
				continue;
			}
			if (store_shares(vm->store)) {
				ec->shared[k] = true; /* a reference to the group's copy, taken by share_part below */
				sh_pending++;
				continue;
			}
			if (!store_sealed(vm->store))
				ec->crcs[k] = crc32c(0, dst, PAGE_SIZE_4K);
			/* Every copy the policy requires is reserved now. */
			if (store_place(vm->store, ec->locs[k]) < 0) {
				ec->protected_[k] = false; /* no store can take it: the page stays */
				n_store_failed++;
				continue;
			}
			store_batch_add(&ec->wb, dst, ec->locs[k], ec->pages[k], ec->crcs[k]);
			ec->in_wb[k] = true;
			n_store++;
		}
		/* Single pages (random victims) gather into one part: a send per page would cost more than it hides. */
		if (store_batch_unsent(&ec->wb) >= EVICT_PART)
			store_write_submit(vm->store, &ec->wb, true);
		/* Shared pages gather likewise: the group writes new contents a part at a time. */
		if (sh_pending >= EVICT_PART) {
			n_store_failed += share_part(ec, sh_from, i + len);
			sh_from = i + len;
			sh_pending = 0;
		}
		i += len;
	}
	if (sh_pending)
		n_store_failed += share_part(ec, sh_from, ec->n);
	store_write_submit(vm->store, &ec->wb, true);

	/*
	 * 4-6 for every page that waits for no store write (clean, zero,
	 * shared, given back) while the donors take in the others: the punches
	 * overlap the acknowledgements instead of following them.
	 */
	bool sel[EVICT_BATCH] = { false };
	for (i = 0; i < ec->n; i++)
		sel[i] = !ec->in_wb[i];
	finish_pages(ec, sel);

	store_write_wait(vm->store, &ec->wb);
	if (n_store) {
		unsigned k = 0;
		for (i = 0; i < ec->n; i++) {
			if (!ec->in_wb[i])
				continue;
			if (ec->wb.results[k++] < 0) {
				ec->protected_[i] = false;
				n_store_failed++;
				atomic_fetch_add_explicit(&vm->stats.store_errors, 1, memory_order_relaxed);
			}
		}
	}
	/* ... and for the written pages, now that every copy is durable. */
	finish_pages(ec, ec->in_wb);

	pthread_mutex_lock(&vm->lock);
	/* Degraded while the store refuses pages or the memfd punches; healthy once a batch does all it wanted. */
	const unsigned n_refused = n_store_failed + ec->n_unpunched;
	if (n_store_failed && !vm->degraded)
		vm_log_warn(vm->policy.name, "stores full or failing: pages stay resident");
	const bool degraded_changed = vm->degraded != (n_refused > 0);
	vm->degraded = n_refused > 0;
	if (!vm->degraded)
		vm->over_limit = false;
	pthread_mutex_unlock(&vm->lock);
	pthread_cond_broadcast(&vm->space_cond);
	/* Hook for events.subscribe: only transitions, emitted outside vm->lock. */
	if (degraded_changed)
		events_emit("vm.degraded", json_pack("{s:s, s:b, s:I}", "vm", vm->policy.name, "degraded",
							  n_refused > 0, "pages_refused", (json_int_t)n_refused));
	if (ec->n_unpunched && !ec->punch_warned) {
		ec->punch_warned = true;
		vm_log_err(vm->policy.name, "punching %u pages out of the memfd failed: %s; they stay resident "
			   "(was the memfd sealed against writes after registration?)", ec->n_unpunched,
			   strerror(ec->punch_err));
	}
	ec->punch_failed = ec->n_unpunched > 0;
	if (ec->n_unpunched) {
		atomic_fetch_add_explicit(&vm->stats.punch_failures, ec->n_unpunched, memory_order_relaxed);
		atomic_fetch_add_explicit(&vm->stats.evictions_aborted, ec->n_unpunched, memory_order_relaxed);
	}

	for (i = 0; i < ec->n; i++) {
		if (ec->commit[i] && ec->zero[i])
			atomic_fetch_add_explicit(&vm->stats.zero_pages_skipped, 1, memory_order_relaxed);
		if (ec->commit[i] && ec->clean[i])
			atomic_fetch_add_explicit(&vm->stats.evictions_clean, 1, memory_order_relaxed);
	}
	atomic_fetch_add_explicit(&vm->stats.evictions, ec->n_commit, memory_order_relaxed);
	atomic_fetch_add_explicit(&vm->stats.eviction_batches, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&vm->stats.eviction_ns, now_ns() - t0, memory_order_relaxed);
	atomic_fetch_add_explicit(&vm->stats.eviction_cpu_ns, thread_cpu_ns() - cpu0, memory_order_relaxed);
}

/* Pacing: when the evictor works, and how far. */

uint64_t vm_evict_target(struct vm *vm)
{
	if (vm->hold_resident || vm->balloon_settling)
		return UINT64_MAX;
	return vm->parking ? 0 : vm->low_pages;
}

uint64_t vm_evict_trigger(struct vm *vm)
{
	uint64_t target = vm_evict_target(vm), slack;

	if (target == UINT64_MAX)
		return UINT64_MAX;
	if (vm->parking || vm->throttled || target >= vm->high_pages)
		return target + 1;
	/* Half the headroom at most, so faults reach the trigger well before they would be throttled. */
	slack = (vm->high_pages - target) / 2;
	if (slack > EVICT_BATCH)
		slack = EVICT_BATCH;
	return target + (slack ? slack : 1);
}

void vm_note_resident(struct vm *vm, uint64_t page)
{
	vm->victim->on_resident(vm->victim_state, page);
	/* Only at the trigger: a signal per fault would wake the evictor per fault. */
	if (pagemap_resident(&vm->map) >= vm_evict_trigger(vm))
		pthread_cond_signal(&vm->evict_cond);
}

static bool vm_stopping(struct vm *vm)
{
	bool stopping;

	pthread_mutex_lock(&vm->lock);
	stopping = vm->stopping;
	pthread_mutex_unlock(&vm->lock);
	return stopping;
}

/* Work for the evictor: a full batch above the target (or any excess when it is urgent). Under lock. */
static bool evict_due(struct vm *vm)
{
	uint64_t resident = pagemap_resident(&vm->map);

	return resident > vm_evict_target(vm) && resident >= vm_evict_trigger(vm);
}

void *vm_evict_thread(void *arg)
{
	struct evict_ctx *ec;
	struct vm *vm = arg;

	pthread_setname_np(pthread_self(), "pager-evict");

	ec = calloc(1, sizeof(*ec));
	if (!ec || posix_memalign((void **)&ec->buf, PAGE_SIZE_4K, EVICT_BATCH * PAGE_SIZE_4K)) {
		vm_log_err(vm->policy.name, "evictor out of memory");
		free(ec);
		return NULL;
	}
	ec->vm = vm;
	crash_hook_init(ec);
	store_batch_init(&ec->wb);
	for (;;) {
		bool work;

		pthread_mutex_lock(&vm->lock);
		if (vm->parking && pagemap_resident(&vm->map) == 0)
			vm->parking = false; /* parked: everything that could go went */
		while (!vm->stopping && !evict_due(vm))
			pthread_cond_wait(&vm->evict_cond, &vm->lock);
		work = !vm->stopping;
		pthread_mutex_unlock(&vm->lock);
		if (!work)
			break;
		uint64_t before = atomic_load(&vm->stats.evictions);
		sample_ahead(ec);
		evict_batch(ec);
		if (atomic_load(&vm->stats.evictions) == before) {
			/* Nothing could go (store full, all pages busy): do not spin. */
			pthread_mutex_lock(&vm->lock);
			vm->parking = false; /* a park ends where the stores stop taking pages */
			pthread_mutex_unlock(&vm->lock);
			/* A sealed memfd stays sealed: every retry would store and free a batch for nothing. */
			for (int t = 0; t < (ec->punch_failed ? 100 : 1) && !vm_stopping(vm); t++)
				usleep(10000);
		}
	}
	store_batch_destroy(&ec->wb);
	free(ec->buf);
	free(ec);
	return NULL;
}
