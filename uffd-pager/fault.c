/* SPDX-License-Identifier: MIT */
/*
 * The fault thread: one per VM, the only reader of the VM's uffd. It turns
 * every MISSING fault into exactly one UFFDIO_ZEROPAGE or UFFDIO_COPY (the
 * kernel wakes every thread waiting on that page when the page lands), every
 * write-protect fault into either "wait for the evictor" or an un-protect,
 * and every EVENT_REMOVE into forgotten pages. Nothing here allocates or
 * logs per page: counters and the latency histogram say what happened.
 *
 * Fetches overlap: a fault on a stored page with a healthy donor copy is
 * sent off (up to FETCH_SLOTS at once) and finished when its completion
 * pokes the slots' eventfd, so the faults of several vCPUs wait on the
 * network together; the page is marked PGF_FETCHING meanwhile (its copies
 * stay, a duplicate fault waits for the same copy, a discard is applied
 * when the fetch ends). Faults the prefetcher follows, spill reads and
 * retries are served synchronously. Page-state changes go through
 * pagemap.h's verbs; the common fault takes vm->lock once to look at the
 * page, check for room and start its fetch, and once to record it.
 */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "crc32c.h"
#include "events.h"
#include "log.h"
#include "prefetcher.h"
#include "util.h"
#include "vm-private.h"

#define FAULT_BATCH 64
#define BACKLOG_MAX 4096
#define PREFETCH_WINDOW 64 /* pages per prediction at most */
#define FETCH_SLOTS 8      /* donor fetches in flight at once */
#define NO_PAGE UINT64_MAX
#define THROTTLE_POLL_NS (5 * 1000 * 1000) /* a throttled fault thread reads pending events this often */
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1) /* Linux 6.4; the build headers may be older */
#endif

/* Messages read while a copy had to be retried (EAGAIN): served after the current batch. */
struct backlog {
	struct uffd_msg msgs[BACKLOG_MAX];
	unsigned head, count;
};

/* One asynchronous fetch of a stored page (PGF_FETCHING while busy). */
struct fetch_slot {
	bool busy;
	bool write; /* the fault was a write: the page goes in writable */
	uint64_t page, t0;
	uint32_t crc;
	void *buf;
	struct pool_wait w; /* pokes fault_ctx.efd */
	struct pool_op op;
};

struct fault_ctx {
	struct vm *vm;
	int efd; /* fetch completions */
	uint64_t t0; /* when the message being dispatched was read */
	unsigned nbusy;
	struct fetch_slot slots[FETCH_SLOTS];
	void *page_buf; /* one aligned page for spill reads */
	void *slot_bufs; /* FETCH_SLOTS pages */
	struct prefetcher *pf; /* NULL: prefetching off */
	bool install_prefetch;  /* the last fault was served: its prefetched pages may go in */
	struct backlog backlog;
};

static void handle_remove(struct vm *vm, uint64_t start, uint64_t end);

static int uffd_wake(struct vm *vm, uint64_t addr, uint64_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };

	return ioctl(vm->uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

/* Reads every pending message so non-cooperative events stop blocking copies. */
static void drain_events(struct fault_ctx *fc)
{
	struct vm *vm = fc->vm;
	struct uffd_msg msg;

	while (read(vm->uffd, &msg, sizeof(msg)) == (ssize_t)sizeof(msg)) {
		if (msg.event == UFFD_EVENT_REMOVE) {
			handle_remove(vm, msg.arg.remove.start, msg.arg.remove.end);
			continue;
		}
		if (fc->backlog.count < BACKLOG_MAX) {
			unsigned tail = (fc->backlog.head + fc->backlog.count) % BACKLOG_MAX;
			fc->backlog.msgs[tail] = msg;
			fc->backlog.count++;
		} else {
			/* Cannot happen with fewer faulting threads than BACKLOG_MAX;
			 * a dropped fault would leave its thread asleep, so say so loudly. */
			vm_log_err(vm->policy.name, "fault backlog overflow");
		}
	}
}

/*
 * An ioctl failed with EAGAIN: a REMOVE event is pending. Reading it is
 * not enough, the process's thread that caused it must also run again
 * before the uffd takes ioctls, which on a busy host takes a while: read
 * what is pending, then after a few quick tries yield briefly. False once
 * the VM is being stopped (nothing will be served any more).
 */
static bool wait_events_settled(struct fault_ctx *fc, unsigned attempt)
{
	drain_events(fc);
	if (attempt >= 8)
		usleep(attempt < 1000 ? 20 : 1000);
	if (attempt % 256 != 255)
		return true;
	pthread_mutex_lock(&fc->vm->lock);
	bool stopping = fc->vm->stopping;
	pthread_mutex_unlock(&fc->vm->lock);
	return !stopping;
}

/*
 * Places a page: zeros when src is NULL, else a copy. For a fetched page
 * (page != NO_PAGE) also zeros when the guest discarded it while it was
 * fetched; discarded is PGF_DISCARDED as the caller last saw it under the
 * lock. REMOVE events (which set the flag) are read only by this thread,
 * and a pending one fails the copy with EAGAIN, so the flag needs a fresh
 * look only after this thread read events itself. *ret_zero then says
 * whether zeros were placed. wp: a copy goes in write-protected (a clean
 * page). Returns 0 (placed), 1 (already present: waiters woken), or -errno.
 */
static int place_page_as(struct fault_ctx *fc, uint64_t addr, const void *src, uint64_t page, bool discarded,
			 bool wp, bool *ret_zero)
{
	struct vm *vm = fc->vm;

	for (unsigned attempt = 0;; attempt++) {
		const void *from = src;
		int r;

		if (page != NO_PAGE) {
			if (discarded)
				from = NULL;
			*ret_zero = !from;
		}
		if (from) {
			struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)from, .len = PAGE_SIZE_4K,
						 .mode = wp ? UFFDIO_COPY_MODE_WP : 0 };
			r = ioctl(vm->uffd, UFFDIO_COPY, &c);
		} else {
			struct uffdio_zeropage z = { .range = { .start = addr, .len = PAGE_SIZE_4K } };
			r = ioctl(vm->uffd, UFFDIO_ZEROPAGE, &z);
		}
		if (r == 0)
			return 0;
		switch (errno) {
		case EEXIST:
			/* The kernel does not wake the faulting thread on EEXIST. */
			uffd_wake(vm, addr, PAGE_SIZE_4K);
			return 1;
		case EAGAIN:
			/* A REMOVE event is pending; it must be read before copies go through. */
			if (!wait_events_settled(fc, attempt))
				return -EAGAIN;
			if (page != NO_PAGE) {
				pthread_mutex_lock(&vm->lock);
				discarded = pagemap_entry(&vm->map, page)->flags & PGF_DISCARDED;
				pthread_mutex_unlock(&vm->lock);
			}
			continue;
		case EINTR:
			continue;
		default:
			return -errno;
		}
	}
}

static int place_page(struct fault_ctx *fc, uint64_t addr, const void *src)
{
	return place_page_as(fc, addr, src, NO_PAGE, false, false, NULL);
}

/*
 * The end of every fetch: r < 0 (no copy read back right) loses the page;
 * else buf (or zeros, if discarded) goes in and the page becomes resident,
 * clean unless the fault was a write (page_installs_clean). Clears
 * PGF_FETCHING.
 */
static int finish_fetch(struct fault_ctx *fc, uint64_t page, int r, enum store_source src, const void *buf,
			uint32_t first_loc, bool discarded, bool write)
{
	struct vm *vm = fc->vm;
	uint64_t paddr = vm_page_addr(vm, page);
	uint32_t freed[STORE_MAX_COPIES];
	const bool clean = page_installs_clean(atomic_load_explicit(&vm->clean_eviction, memory_order_relaxed), write, discarded);
	bool zero = false;

	if (r < 0) {
		char why[160];
		/* Only a copy that came back wrong is an integrity error; stores that failed are a loss, not an attack. */
		if (r == -EBADMSG) {
			snprintf(why, sizeof(why), "no copy of its %u could be read back with the right checksum (first at location 0x%x)",
				 vm->ncopies, first_loc);
			atomic_fetch_add_explicit(&vm->stats.integrity_errors, 1, memory_order_relaxed);
		} else {
			snprintf(why, sizeof(why), "none of its %u copies could be read: their stores failed (first at location 0x%x)",
				 vm->ncopies, first_loc);
		}
		atomic_fetch_add_explicit(&store_stats(vm->store)->pages_lost, 1, memory_order_relaxed);
		pthread_mutex_lock(&vm->lock);
		pagemap_fetch_failed(&vm->map, page);
		pthread_mutex_unlock(&vm->lock);
		vm_data_loss(vm, page, why);
		return r;
	}
	r = place_page_as(fc, paddr, buf, page, discarded, clean, &zero);
	pthread_mutex_lock(&vm->lock);
	if (pagemap_fetch_done(&vm->map, page, r == 0, clean && !zero, freed)) {
		store_free_locs(vm->store, freed);
		vm_note_resident(vm, page);
		/* the copy woke every waiter; a discard is done (zeros went in) */
		if (zero)
			atomic_fetch_add_explicit(&vm->stats.faults_zero, 1, memory_order_relaxed);
		else if (src == SRC_DONOR)
			atomic_fetch_add_explicit(&vm->stats.faults_donor, 1, memory_order_relaxed);
		else
			atomic_fetch_add_explicit(&vm->stats.faults_spill, 1, memory_order_relaxed);
	} else if (r == 0 || r == 1) {
		/* EEXIST means something filled a stored page behind our back. */
		if (r == 1 && pagemap_entry(&vm->map, page)->state == PG_STORED) {
			atomic_fetch_add_explicit(&vm->stats.integrity_errors, 1, memory_order_relaxed);
			vm_log_err(vm->policy.name, "page %llu was filled while its contents were stored (integrity alarm)", (unsigned long long)page);
		} else {
			atomic_fetch_add_explicit(&vm->stats.faults_duplicate, 1, memory_order_relaxed);
		}
	}
	pthread_mutex_unlock(&vm->lock);
	if (r < 0 && r != -ENOENT && r != -ESRCH)
		vm_log_err(vm->policy.name, "UFFDIO_COPY at 0x%llx: %s", (unsigned long long)paddr, strerror(-r));
	return r;
}

/* Sends a fetch off. Returns false when it must be done synchronously (no slot, no healthy donor copy). */
static bool fetch_async(struct fault_ctx *fc, uint64_t page, const uint32_t *locs, uint32_t crc, bool write)
{
	struct vm *vm = fc->vm;
	struct fetch_slot *s = NULL;
	uint64_t donors = 0;

	if (fc->efd < 0 || fc->nbusy == FETCH_SLOTS)
		return false;
	for (unsigned i = 0; i < FETCH_SLOTS && !s; i++)
		if (!fc->slots[i].busy)
			s = &fc->slots[i];
	s->op.w = &s->w;
	if (store_read_async(vm->store, locs, s->buf, &s->op, &donors) < 0)
		return false;
	store_flush(vm->store, donors);
	s->busy = true;
	s->write = write;
	s->page = page;
	s->crc = crc;
	s->t0 = fc->t0;
	fc->nbusy++;
	return true;
}

/* Finishes the fetches whose reads completed; wait: all of them, however long the transport takes. */
static void complete_fetches(struct fault_ctx *fc, bool wait, bool install)
{
	struct vm *vm = fc->vm;

	for (unsigned i = 0; i < FETCH_SLOTS && fc->nbusy; i++) {
		struct fetch_slot *s = &fc->slots[i];
		uint32_t locs[STORE_MAX_COPIES], crc;
		enum store_source src = SRC_DONOR;
		bool discarded;
		int r;

		if (!s->busy)
			continue;
		if (wait)
			pool_wait_all(&s->w);
		else if (!pool_wait_done(&s->w))
			continue;
		s->busy = false;
		fc->nbusy--;
		if (!install) {
			pthread_mutex_lock(&vm->lock);
			pagemap_fetch_done(&vm->map, s->page, false, false, NULL);
			pthread_mutex_unlock(&vm->lock);
			continue;
		}
		r = s->op.status;
		bool rejected = r == 0 && store_check_copy(vm->store, s->page, s->crc, s->buf, s->op.tag) < 0;
		if (rejected)
			r = -EBADMSG;
		pthread_mutex_lock(&vm->lock);
		pagemap_get_locs(&vm->map, s->page, locs);
		crc = pagemap_entry(&vm->map, s->page)->crc;
		discarded = pagemap_entry(&vm->map, s->page)->flags & PGF_DISCARDED;
		pthread_mutex_unlock(&vm->lock);
		if (discarded)
			r = 0; /* zeros go in: what was read does not matter */
		else if (rejected)
			/* The page stays STORED at this version while FETCHING: only a copy repair moved meanwhile could be another's. */
			store_count_rejected(vm->store);
		if (r < 0) {
			/* That copy failed (or moved meanwhile): every copy, the way a synchronous fault reads them. */
			atomic_fetch_add_explicit(&store_stats(vm->store)->bad_copies, 1, memory_order_relaxed);
			r = store_read(vm->store, s->page, locs, crc, s->buf, &src, true);
			if (r == -EIO && rejected)
				r = -EBADMSG; /* the copy that did come back was wrong */
		}
		finish_fetch(fc, s->page, r, src, s->buf, locs[0], discarded, s->write);
		hist_record(&vm->fault_latency, now_ns() - s->t0);
	}
}

/* Waits until the VM may hold one more page. Under lock. */
/* The stores refuse pages (spill at its cap, no donor room, a memfd that cannot be punched) and the policy lets the VM run on. */
static bool store_full_degrades(struct vm *vm)
{
	return vm->degraded && vm->policy.on_store_full == POLICY_STORE_FULL_DEGRADE;
}

/*
 * Waits at the limit until the evictor makes room, or, when no store takes
 * pages and on_store_full is "degrade", lets the fault go over the limit.
 * Returns true the first time a degraded episode goes over (the caller
 * emits vm.over_limit outside the lock).
 */
static bool throttle_locked(struct fault_ctx *fc)
{
	struct vm *vm = fc->vm;

	if (pagemap_resident(&vm->map) >= vm->high_pages) {
		if (!store_full_degrades(vm)) {
			atomic_fetch_add_explicit(&vm->stats.throttle_waits, 1, memory_order_relaxed);
			vm->throttled = true;
		}
		while (pagemap_resident(&vm->map) >= vm->high_pages && !vm->stopping && !store_full_degrades(vm)) {
			struct timespec ts;
			pthread_cond_signal(&vm->evict_cond);
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += THROTTLE_POLL_NS;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&vm->space_cond, &vm->lock, &ts);
			/*
			 * While a REMOVE event waits to be read, every uffd ioctl fails
			 * with EAGAIN, the evictor's write-protect too: only this thread
			 * reads events, so it reads them here, or the evictor could never
			 * make the room this wait is for (the shim's sampling unmaps and
			 * the guest's discards both cause them).
			 */
			pthread_mutex_unlock(&vm->lock);
			drain_events(fc);
			pthread_mutex_lock(&vm->lock);
		}
		vm->throttled = false;
	}
	if (pagemap_resident(&vm->map) < vm->high_pages || !store_full_degrades(vm))
		return false;
	atomic_fetch_add_explicit(&vm->stats.over_limit_faults, 1, memory_order_relaxed);
	if (vm->over_limit)
		return false;
	vm->over_limit = true;
	return true;
}

/* True when make_room() has nothing to do: one more page fits beside the fetches in flight. Under lock. */
static bool has_room_locked(struct fault_ctx *fc)
{
	return pagemap_resident(&fc->vm->map) + fc->nbusy < fc->vm->high_pages;
}

/*
 * Before a fault takes a new page: the fetches in flight hold a reservation
 * each (they will land), so when the VM has no room beside them they land
 * first; then the usual wait for the evictor. Keeps residency <= high.
 * Called without the lock held.
 */
static void make_room(struct fault_ctx *fc)
{
	struct vm *vm = fc->vm;

	pthread_mutex_lock(&vm->lock);
	if (fc->nbusy && !has_room_locked(fc)) {
		pthread_mutex_unlock(&vm->lock);
		complete_fetches(fc, true, true);
		pthread_mutex_lock(&vm->lock);
	}
	const bool over = throttle_locked(fc);
	const uint64_t resident = pagemap_resident(&vm->map), high = vm->high_pages;
	pthread_mutex_unlock(&vm->lock);
	if (over) {
		vm_log_warn(vm->policy.name, "no store takes pages: running over the limit (%llu pages resident, limit %llu) "
			    "per policy 'on_store_full'", (unsigned long long)resident, (unsigned long long)high);
		events_emit("vm.over_limit", json_pack("{s:s, s:I, s:I, s:s}", "vm", vm->policy.name, "resident_pages",
						       (json_int_t)resident, "high_watermark_pages", (json_int_t)high,
						       "on_store_full", "degrade"));
	}
}

/*
 * prefetch: a guest fault (not vm.drain), whose stream the prefetcher
 * follows and which may be fetched asynchronously. write: the fault was a
 * write (vm.drain passes true: a drained page keeps no copy). Returns
 * true when the fault was sent off (complete_fetches finishes and times it).
 */
static bool handle_missing(struct fault_ctx *fc, uint64_t addr, bool prefetch, bool write)
{
	struct vm *vm = fc->vm;
	const struct page_entry *pe;
	uint64_t page, paddr;
	uint32_t locs[STORE_MAX_COPIES], crc, freed[STORE_MAX_COPIES];
	enum store_source src = SRC_SPILL;
	struct store_read rd;
	enum fault_action action;
	bool room, began = false, discarded, served;
	uint8_t state, flags;
	int r;

	if (vm_addr_to_page(vm, addr, &page) < 0) {
		/* Not guest RAM we know: the faulting thread would sleep forever. */
		vm_log_err(vm->policy.name, "fault at 0x%llx outside registered RAM", (unsigned long long)addr);
		return false;
	}
	paddr = vm_page_addr(vm, page);

	/* One lock for the look, the room check and, in the common case, the fetch's start. */
	pthread_mutex_lock(&vm->lock);
	pe = pagemap_entry(&vm->map, page);
	state = pe->state;
	flags = pe->flags;
	action = page_on_missing(state, flags, pagemap_has_copy(&vm->map, page));
	room = has_room_locked(fc);
	if (!(flags & PGF_FETCHING) && action == FAULT_FETCH && state == PG_STORED && room) {
		began = pagemap_fetch_begin(&vm->map, page, locs, &crc);
	} else {
		pagemap_get_locs(&vm->map, page, locs);
		crc = pe->crc;
	}
	discarded = flags & PGF_DISCARDED;
	pthread_mutex_unlock(&vm->lock);
	if (flags & PGF_FETCHING) {
		/* Another vCPU's fault is being fetched: that copy wakes this one too. */
		atomic_fetch_add_explicit(&vm->stats.faults_duplicate, 1, memory_order_relaxed);
		return false;
	}

	switch (action) {
	case FAULT_NOTHING:
		return false; /* the VM is being stopped; never serve a page we cannot vouch for */
	case FAULT_RECHECK_ZERO:
		/* Either a duplicate message for a page already placed (EEXIST), or
		 * the guest discarded it behind our back (balloon): then zeros. */
		r = place_page(fc, paddr, NULL);
		if (r == 0) {
			atomic_fetch_add_explicit(&vm->stats.faults_discard, 1, memory_order_relaxed);
			pthread_mutex_lock(&vm->lock);
			/* An eviction read stale data: it gives the page back. A clean page's copies are stale. */
			pagemap_refilled(&vm->map, page, freed);
			store_free_locs(vm->store, freed);
			pthread_mutex_unlock(&vm->lock);
		} else if (r == 1) {
			atomic_fetch_add_explicit(&vm->stats.faults_duplicate, 1, memory_order_relaxed);
		}
		break;

	case FAULT_ZERO:
		if (state != PG_EVICT_COMMITTED && !room)
			make_room(fc);
		r = place_page(fc, paddr, NULL);
		if (r == 0) {
			pthread_mutex_lock(&vm->lock);
			/* Same state as looked at: else the evictor recorded the page meanwhile and it stays as recorded. */
			served = pagemap_entry(&vm->map, page)->state == state && pagemap_installed(&vm->map, page, freed);
			if (served) {
				store_free_locs(vm->store, freed);
				vm_note_resident(vm, page);
			}
			pthread_mutex_unlock(&vm->lock);
			if (served)
				atomic_fetch_add_explicit(&vm->stats.faults_zero, 1, memory_order_relaxed);
		} else if (r == 1) {
			atomic_fetch_add_explicit(&vm->stats.faults_duplicate, 1, memory_order_relaxed);
		}
		if (r < 0 && r != -ENOENT && r != -ESRCH)
			vm_log_err(vm->policy.name, "UFFDIO_ZEROPAGE at 0x%llx: %s", (unsigned long long)paddr,
				strerror(-r));
		break;

	case FAULT_FETCH:
		if (state == PG_STORED && !began) {
			make_room(fc);
			/* Only this thread moves a stored page; repair may have moved its copies meanwhile. */
			pthread_mutex_lock(&vm->lock);
			began = pagemap_fetch_begin(&vm->map, page, locs, &crc);
			discarded = began && (pagemap_entry(&vm->map, page)->flags & PGF_DISCARDED);
			pthread_mutex_unlock(&vm->lock);
			/* Making room finished fetches, which may have read a discard of this page. */
			if (!began)
				return handle_missing(fc, addr, prefetch, write);
		}
		if (prefetch && fc->pf && state == PG_STORED)
			prefetch_plan(fc->pf, page);
		if (prefetch && state == PG_STORED && !(fc->pf && prefetch_planned(fc->pf)) &&
		    fetch_async(fc, page, locs, crc, write))
			return true;
		/*
		 * Healthy donor copies first; a copy that fails its CRC32C is
		 * skipped. The prefetch reads are sent once the fault's own read
		 * is on its way, so they never go in front of it.
		 */
		r = store_read_submit(vm->store, &rd, page, locs, crc, fc->page_buf, true);
		if (r == 0 && fc->pf && prefetch_planned(fc->pf))
			prefetch_issue(fc->pf);
		r = store_read_wait(vm->store, &rd, &src, atomic_load_explicit(&vm->fault_spin_us, memory_order_relaxed));
		r = finish_fetch(fc, page, r, src, fc->page_buf, locs[0], discarded, write);
		fc->install_prefetch = r >= 0; /* dispatch() installs them (or not) once the fault is timed */
		break;
	}
	return false;
}

static void handle_wp(struct fault_ctx *fc, uint64_t addr)
{
	struct vm *vm = fc->vm;
	struct uffdio_writeprotect wp;
	uint32_t freed[STORE_MAX_COPIES];
	uint64_t page;

	atomic_fetch_add_explicit(&vm->stats.faults_wp, 1, memory_order_relaxed);
	if (vm_addr_to_page(vm, addr, &page) < 0)
		return;
	for (unsigned attempt = 0;; attempt++) {
		int r, err;

		pthread_mutex_lock(&vm->lock);
		if (pagemap_wp_fault(&vm->map, page, freed)) {
			pthread_mutex_unlock(&vm->lock);
			return; /* the evictor owns the page and wakes the writer */
		}
		store_free_locs(vm->store, freed);
		/*
		 * A clean page's first write, or a marker left by an earlier punch:
		 * un-protect, which wakes the writer. Under the lock: an evictor that
		 * picked the page between the look and the un-protect would have
		 * protected it first, and the write would go past that eviction.
		 */
		wp = (struct uffdio_writeprotect){ .range = { .start = vm_page_addr(vm, page), .len = PAGE_SIZE_4K },
						   .mode = 0 };
		r = ioctl(vm->uffd, UFFDIO_WRITEPROTECT, &wp);
		err = errno;
		pthread_mutex_unlock(&vm->lock);
		if (r == 0)
			return;
		/* EAGAIN: a REMOVE is pending and goes first; a wake would only bring the same fault back. */
		if (err == EAGAIN && wait_events_settled(fc, attempt))
			continue;
		uffd_wake(vm, vm_page_addr(vm, page), PAGE_SIZE_4K);
		return;
	}
}

/*
 * A minor fault: the guest touched a page the shim unmapped for sampling
 * (or any page the memfd holds but the process has not mapped). The page
 * is in use: the victim policy hears so, and UFFDIO_CONTINUE maps it again
 * from the memfd. It goes back write-protected when a write must still be
 * caught (a clean page, an eviction in progress). Under the lock, so the
 * evictor cannot pick the page between the look and the mapping. A page
 * the map does not call resident holds data the memfd keeps: it is
 * recorded resident first.
 */
static void handle_minor(struct fault_ctx *fc, uint64_t addr)
{
	struct vm *vm = fc->vm;
	uint32_t freed[STORE_MAX_COPIES];
	uint64_t page;

	atomic_fetch_add_explicit(&vm->stats.faults_minor, 1, memory_order_relaxed);
	if (vm_addr_to_page(vm, addr, &page) < 0) {
		vm_log_err(vm->policy.name, "minor fault at 0x%llx outside registered RAM", (unsigned long long)addr);
		return;
	}
	for (unsigned attempt = 0;; attempt++) {
		struct uffdio_continue c = { .range = { .start = vm_page_addr(vm, page), .len = PAGE_SIZE_4K } };
		int r, err;

		pthread_mutex_lock(&vm->lock);
		const struct page_entry *pe = pagemap_entry(&vm->map, page);
		if (pe->state == PG_RESIDENT) {
			if (vm->victim->on_referenced)
				vm->victim->on_referenced(vm->victim_state, page);
		} else if ((pe->state == PG_UNTOUCHED || pe->state == PG_ZERO) && pagemap_installed(&vm->map, page, freed)) {
			store_free_locs(vm->store, freed);
			vm_note_resident(vm, page);
		}
		pe = pagemap_entry(&vm->map, page);
		if (pe->state != PG_RESIDENT || (pe->flags & PGF_CLEAN))
			c.mode = UFFDIO_CONTINUE_MODE_WP;
		r = ioctl(vm->uffd, UFFDIO_CONTINUE, &c);
		err = errno;
		pthread_mutex_unlock(&vm->lock);
		if (r == 0)
			return;
		if (err == EINTR || (err == EAGAIN && wait_events_settled(fc, attempt)))
			continue; /* EAGAIN: a REMOVE is pending, it goes first */
		/* EEXIST: mapped meanwhile; EFAULT: no longer in the memfd (punched): the retry faults as MISSING. */
		uffd_wake(vm, vm_page_addr(vm, page), PAGE_SIZE_4K);
		return;
	}
}

/*
 * EVENT_REMOVE covers whatever the process asked madvise() for, which may
 * be terabytes of address space around a small guest. Only the part inside
 * registered regions is walked, REMOVE_STEP pages per hold of vm->lock:
 * vm.list and vm.stats take vm->lock under the registry lock, so one long
 * hold here would freeze the control and registration threads too.
 */
#define REMOVE_STEP 4096u

static void handle_remove(struct vm *vm, uint64_t start, uint64_t end)
{
	atomic_fetch_add_explicit(&vm->stats.remove_events, 1, memory_order_relaxed);
	start &= ~(PAGE_SIZE_4K - 1);
	for (unsigned i = 0;; i++) {
		uint64_t first, last; /* pages [first, last) of region i inside [start, end) */

		pthread_mutex_lock(&vm->lock);
		if (i >= vm->nregions) {
			pthread_mutex_unlock(&vm->lock);
			break;
		}
		const struct vm_region *r = &vm->regions[i];
		uint64_t lo = start > r->host_addr ? start : r->host_addr;
		uint64_t hi = end < r->host_addr + r->length ? end : r->host_addr + r->length;
		pthread_mutex_unlock(&vm->lock);
		if (lo >= hi)
			continue;
		first = r->first_page + ((lo - r->host_addr) >> PAGE_SHIFT_4K);
		last = r->first_page + ((hi - r->host_addr + PAGE_SIZE_4K - 1) >> PAGE_SHIFT_4K);
		for (uint64_t page = first; page < last;) {
			uint64_t stop = last - page > REMOVE_STEP ? page + REMOVE_STEP : last;

			pthread_mutex_lock(&vm->lock);
			for (; page < stop; page++) {
				uint32_t freed[STORE_MAX_COPIES];
				/*
				 * The shim's unmap for sampling, not a discard. (A discard of the
				 * very page in that window is taken for it: the page keeps what it
				 * held, which the guest had given up.)
				 */
				if (pagemap_sample_end(&vm->map, page)) {
					vm->sampling_pages -= vm->sampling_pages > 0;
					continue;
				}
				/* A page being fetched or evicted is only flagged: that thread finishes the discard. */
				if (pagemap_discarded(&vm->map, page, freed) == DISCARD_ZERO)
					store_free_locs(vm->store, freed);
			}
			pthread_mutex_unlock(&vm->lock);
		}
	}
	pthread_cond_broadcast(&vm->space_cond);
}

static void dispatch(struct fault_ctx *fc, const struct uffd_msg *msg)
{
	struct vm *vm = fc->vm;
	uint64_t t0;

	switch (msg->event) {
	case UFFD_EVENT_PAGEFAULT:
		t0 = fc->t0 = now_ns();
		if (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
			handle_wp(fc, msg->arg.pagefault.address);
		else if (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)
			handle_minor(fc, msg->arg.pagefault.address);
		else if (handle_missing(fc, msg->arg.pagefault.address, true,
					msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE))
			break; /* sent off: complete_fetches() times it */
		hist_record(&vm->fault_latency, now_ns() - t0);
		/* The guest runs again; the predicted pages arrived meanwhile. */
		if (fc->pf) {
			prefetch_finish(fc->pf, fc->install_prefetch);
			fc->install_prefetch = false;
		}
		break;
	case UFFD_EVENT_REMOVE:
		handle_remove(vm, msg->arg.remove.start, msg->arg.remove.end);
		break;
	default:
		vm_log_err(vm->policy.name, "unexpected userfaultfd event %u", msg->event);
		break;
	}
}

/*
 * vm.drain: installs stored pages exactly as their faults would, a bounded
 * slice at a time so real faults are never kept waiting long. Returns true
 * while there is more to do.
 */
static bool drain_step(struct fault_ctx *fc)
{
	struct vm *vm = fc->vm;
	uint64_t batch[64], p, scanned = 0;
	unsigned n = 0;
	bool finished;

	pthread_mutex_lock(&vm->lock);
	if (!vm->draining) {
		pthread_mutex_unlock(&vm->lock);
		return false;
	}
	for (p = vm->drain_cursor; p < vm->npages && n < ARRAY_SIZE(batch) && scanned < 65536; p++, scanned++)
		if (pagemap_entry(&vm->map, p)->state == PG_STORED)
			batch[n++] = p;
	vm->drain_cursor = p;
	finished = p >= vm->npages;
	pthread_mutex_unlock(&vm->lock);

	for (unsigned i = 0; i < n; i++)
		handle_missing(fc, vm_page_addr(vm, batch[i]), false, true);
	if (finished) {
		pthread_mutex_lock(&vm->lock);
		vm->draining = false;
		pthread_mutex_unlock(&vm->lock);
	}
	return !finished;
}

/*
 * The fault thread cannot go on (its uffd reports an error): without it the
 * guest's next fault waits forever, so the VM is marked failed (vm.stats
 * state), the event bus and the log say so, and the VM is stopped or
 * killed as its policy's on_data_loss says, the way a lost page is. Not
 * while the VM is being freed: then the error is just the end.
 */
static void fault_thread_failed(struct vm *vm, const char *what, int err)
{
	char name[sizeof(vm->policy.name)];
	bool kill_it;

	pthread_mutex_lock(&vm->lock);
	if (vm->stopping) {
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	vm->failed = true;
	kill_it = vm->policy.on_data_loss == POLICY_LOSS_KILL;
	memcpy(name, vm->policy.name, sizeof(name));
	pthread_mutex_unlock(&vm->lock);
	vm_log_err(name, "fault thread stops: %s%s%s; no fault can be served any more: %s the VM (pid %d) per policy 'on_data_loss'",
		   what, err ? ": " : "", err ? strerror(err) : "", kill_it ? "killing" : "stopping", (int)vm->pid);
	events_emit("vm.failed", json_pack("{s:s, s:i, s:s, s:s}", "vm", name, "pid", (int)vm->pid, "reason", what,
					   "action", kill_it ? "killed" : "stopped"));
	/* pidfd: the signal cannot reach a recycled pid. */
	if (syscall(SYS_pidfd_send_signal, vm->pidfd, kill_it ? SIGKILL : SIGSTOP, NULL, 0) < 0)
		vm_log_err(name, "cannot signal pid %d: %s", (int)vm->pid, strerror(errno));
}

/*
 * poll(), but with a timeout it first polls without sleeping for up to
 * spin_us: a guest that faults again soon after its last fault was served
 * (random access) finds this thread awake, which saves a wake-up on each
 * side. An idle guest costs at most spin_us per wake-up of this thread.
 */
static int poll_spinning(struct pollfd *pfd, nfds_t n, int timeout, unsigned spin_us)
{
	if (timeout != 0 && spin_us) {
		uint64_t until = now_ns() + (uint64_t)spin_us * 1000;

		do {
			int r = poll(pfd, n, 0);
			if (r != 0)
				return r;
			cpu_relax();
		} while (now_ns() < until);
	}
	return poll(pfd, n, timeout);
}

void *vm_fault_thread(void *arg)
{
	struct vm *vm = arg;
	struct fault_ctx *fc;
	struct uffd_msg msgs[FAULT_BATCH];

	pthread_setname_np(pthread_self(), "pager-fault");

	fc = calloc(1, sizeof(*fc));
	if (!fc || posix_memalign(&fc->page_buf, PAGE_SIZE_4K, PAGE_SIZE_4K)) {
		free(fc);
		fault_thread_failed(vm, "no memory for the fault thread", ENOMEM);
		return NULL;
	}
	fc->vm = vm;
	if (vm->store && prefetcher_new(vm, PREFETCH_WINDOW, &fc->nbusy, &fc->pf) < 0)
		vm_log_warn(vm->policy.name, "no memory for the prefetcher: prefetching off");
	fc->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fc->efd >= 0 && posix_memalign(&fc->slot_bufs, PAGE_SIZE_4K, FETCH_SLOTS * PAGE_SIZE_4K)) {
		close(fc->efd);
		fc->efd = -1; /* every fetch synchronous */
	}
	for (unsigned i = 0; i < FETCH_SLOTS; i++) {
		pool_wait_init(&fc->slots[i].w);
		fc->slots[i].w.efd = fc->efd;
		fc->slots[i].buf = fc->efd >= 0 ? (uint8_t *)fc->slot_bufs + i * PAGE_SIZE_4K : NULL;
	}
	for (;;) {
		struct pollfd pfd[4] = { { .fd = vm->uffd, .events = POLLIN }, { .fd = vm->stop_efd, .events = POLLIN },
					 { .fd = vm->drain_efd, .events = POLLIN }, { .fd = fc->efd, .events = POLLIN } };
		uint64_t ticks;
		bool more_drain;
		ssize_t n;

		while (fc->backlog.count) {
			struct uffd_msg m = fc->backlog.msgs[fc->backlog.head];
			fc->backlog.head = (fc->backlog.head + 1) % BACKLOG_MAX;
			fc->backlog.count--;
			dispatch(fc, &m);
		}
		more_drain = drain_step(fc);
		if (poll_spinning(pfd, fc->efd >= 0 ? 4 : 3, more_drain ? 0 : -1,
				  atomic_load_explicit(&vm->fault_spin_us, memory_order_relaxed)) < 0) {
			if (errno == EINTR)
				continue;
			fault_thread_failed(vm, "poll failed", errno);
			break;
		}
		if (pfd[1].revents)
			break;
		if (pfd[3].revents & POLLIN) {
			if (read(fc->efd, &ticks, sizeof(ticks)) < 0)
				ticks = 0; /* nothing to clear */
			complete_fetches(fc, false, true);
		}
		if (pfd[2].revents && read(vm->drain_efd, &ticks, sizeof(ticks)) < 0)
			ticks = 0; /* drained by an earlier read: nothing to clear */
		if (!(pfd[0].revents & POLLIN) && !(pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)))
			continue;
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			fault_thread_failed(vm, pfd[0].revents & POLLERR ? "the userfaultfd reports POLLERR"
					    : pfd[0].revents & POLLHUP ? "the userfaultfd reports POLLHUP"
					    : "the userfaultfd is not open (POLLNVAL)", 0);
			break;
		}
		n = read(vm->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			fault_thread_failed(vm, "reading the userfaultfd failed", errno);
			break;
		}
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++)
			dispatch(fc, &msgs[i]);
	}
	complete_fetches(fc, true, false); /* their buffers must outlive the reads */
	for (unsigned i = 0; i < FETCH_SLOTS; i++)
		pool_wait_destroy(&fc->slots[i].w);
	if (fc->efd >= 0)
		close(fc->efd);
	free(fc->slot_bufs);
	prefetcher_free(fc->pf);
	free(fc->page_buf);
	free(fc);
	return NULL;
}
