/* SPDX-License-Identifier: MIT */
/*
 * Internals shared by vm.c (lifecycle, stats), fault.c (fault thread),
 * evict.c (evictor thread), prefetcher.c and repair.c.
 *
 * Page states, their transitions and the one function that makes each
 * (all under vm->lock) are drawn in pagemap.h; the decisions live in
 * page-state.h. Nothing here writes a page entry or the page counters:
 * every change goes through a pagemap_* verb on vm->map.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#include "histogram.h"
#include "page-state.h"
#include "pagemap.h"
#include "policy.h"
#include "share.h"
#include "spill.h"
#include "store.h"
#include "victim.h"

#define VM_MAX_REGIONS 16


/*
 * 12 bytes per guest page in the page map (pagemap.h); with the FIFO's 4
 * bytes the pager spends 16 bytes per page at one copy per page (replicas
 * 1, no backup), plus one bit per spill slot and ~528 bytes per 16 MiB
 * donor slab (store.h). Each further copy (replicas 2..3, spill backup)
 * adds 4 bytes to every entry, only for policies that need it. A page is
 * punched only once every copy is durable.
 *
 * A region names its pages by index (first_page) into the VM's one page
 * map: no pointer into the map, which may move when it grows.
 */
struct vm_region {
	uint64_t host_addr;
	uint64_t length;
	uint64_t memfd_offset;
	uint64_t first_page; /* index of the region's first page in the VM's page space */
	int memfd;
};

/* Where page (of rg) lies in rg's memfd. */
static inline off_t region_memfd_off(const struct vm_region *rg, uint64_t page)
{
	return (off_t)(rg->memfd_offset + ((page - rg->first_page) << PAGE_SHIFT_4K));
}

struct vm_stats {
	_Atomic uint64_t faults_zero;      /* first touch or known-zero page */
	_Atomic uint64_t faults_spill;     /* refaults served from the spill file */
	_Atomic uint64_t faults_discard;   /* MISSING on a page the map called resident */
	_Atomic uint64_t faults_wp;        /* write-protect faults */
	_Atomic uint64_t faults_duplicate; /* page already there: woken only */
	_Atomic uint64_t evictions;        /* pages punched out */
	_Atomic uint64_t evictions_aborted;
	_Atomic uint64_t zero_pages_skipped; /* evicted without storing */
	_Atomic uint64_t evictions_clean;    /* evicted without storing: the copy the page came from was current */
	_Atomic uint64_t faults_minor;       /* sampled pages touched again (minor faults) */
	_Atomic uint64_t pages_sampled;      /* mappings dropped to see whether pages are in use */
	_Atomic uint64_t integrity_errors;
	_Atomic uint64_t store_errors;
	_Atomic uint64_t throttle_waits;
	_Atomic uint64_t over_limit_faults; /* let past the limit: stores full, on_store_full "degrade" */
	_Atomic uint64_t punch_failures;    /* pages whose hole punch failed: eviction aborted, kept resident */
	_Atomic uint64_t remove_events;
	_Atomic uint64_t eviction_batches;
	_Atomic uint64_t eviction_ns; /* time spent evicting, for the eviction rate */
	_Atomic uint64_t eviction_cpu_ns; /* the evictor's CPU time in those batches (no waits, no preemption) */
	_Atomic uint64_t faults_donor; /* refaults served from a donor */
	_Atomic uint64_t prefetch_issued; /* predicted pages read from donors */
	_Atomic uint64_t prefetch_hits;   /* of those, installed before their fault */
	_Atomic uint64_t prefetch_wasted; /* read but not installed (changed, no room, bad copy) */
	_Atomic uint64_t prefetch_no_room; /* predicted pages not read: the VM had no room beside its fetches */
};

struct vm {
	struct policy_vm policy;
	struct vmstate *vs; /* the state file: page map, slab table, identity */
	bool adopting;      /* adopted from a dead pager: regions must match the state file's */
	bool adopted;       /* adoption finished (the threads run) */
	uint32_t waited_ms; /* adopted: how long the shim had no pager */
	uint64_t adopt_ns;  /* adopted: recovery time */
	char uuid[37]; /* GLUE_UUID_MAX; immutable once registered */
	pid_t pid;
	int pidfd;
	int uffd;
	int stop_efd; /* wakes the fault thread for shutdown */
	int drain_efd; /* wakes the fault thread to bring stored pages back (vm.drain) */
	int sampler_fd; /* the shim's sampler socket (GLUE_MSG_SAMPLER), -1: no access sampling; under lock */
	uint64_t sampling_pages; /* pages asked to be unmapped whose REMOVE has not come; under lock */
	_Atomic bool clean_eviction; /* policy.clean_eviction, for the fault path without the lock */
	_Atomic unsigned fault_spin_us; /* policy.fault_spin_us, for the fault thread without the lock */
	char state_dir[256];
	uint64_t max_guest_memory;

	struct vm_region regions[VM_MAX_REGIONS];
	unsigned nregions;
	uint64_t npages;

	pthread_mutex_t lock; /* the page map, victim state, watermarks and flags below */
	pthread_cond_t evict_cond;   /* evictor waits for work */
	pthread_cond_t space_cond;   /* throttled faults wait for room */
	struct pagemap map;          /* page entries and the resident/stored/zero counters */
	uint64_t high_pages, low_pages;
	const struct policy_victim_ops *victim;
	void *victim_state;
	bool stopping;
	bool degraded;  /* the store refuses pages, or the memfd refuses punches */
	bool over_limit; /* residency went past high_pages while degraded (on_store_full "degrade") */
	bool throttled; /* a fault waits for room right now */
	bool failed;
	bool threads_started;
	bool draining;       /* vm.drain: the fault thread installs stored pages between faults */
	bool hold_resident;  /* after vm.drain: nothing is evicted until the limit changes */
	bool parking;        /* vm.park: the evictor's target is zero until nothing more can go */
	bool balloon_settling; /* the guest's balloon inflates: no eviction, no throttle (registry.c ends it) */
	uint64_t drain_cursor;

	struct spill *spill;
	struct donor_pool *pool; /* the pager's donors (may have none) */
	struct store *store;     /* spill + donors behind one interface */
	struct share_group *share; /* policy.sharing_group's, NULL: no sharing (share.h) */
	struct share_member share_member; /* this VM in its group's state file */
	bool share_held;                  /* the page map's shared locations hold their references */
	unsigned ncopies;        /* locations per page (the page map's entries hold as many) */
	pthread_cond_t repair_cond;
	pthread_t fault_thread, evict_thread, repair_thread;
	struct histogram fault_latency; /* written by the fault thread only */
	struct vm_stats stats;
};

/* Page addressing (regions are only ever appended, under vm->lock). */
struct vm_region *vm_region_of_page(struct vm *vm, uint64_t page);
/* Maps a faulting address to a page index; returns -EFAULT outside guest RAM. */
int vm_addr_to_page(struct vm *vm, uint64_t addr, uint64_t *ret_page);
uint64_t vm_page_addr(struct vm *vm, uint64_t page);
/* Re-creates the victim selector for npages, queueing every resident page. Under lock. Returns 0 or -ENOMEM. */
int vm_resize_victims(struct vm *vm, uint64_t npages);
/* Recomputes high/low pages from the policy. Under lock. */
void vm_update_watermarks(struct vm *vm);
/* A stored copy is gone for good: apply the policy's on_data_loss. Called without vm->lock. */
void vm_data_loss(struct vm *vm, uint64_t page, const char *why);

/*
 * Eviction pacing (evict.c), in one place:
 * residency the evictor brings the VM down to: low watermark, 0 while
 * parking, none (UINT64_MAX) after a drain or while the balloon settles.
 * Under lock.
 */
uint64_t vm_evict_target(struct vm *vm);
/*
 * Residency at which a fault wakes the evictor: a batch above the target
 * (hysteresis, so the evictor works in full batches instead of one wake-up
 * per fault), right above it while parking or while a fault is throttled.
 * UINT64_MAX when nothing may be evicted. Under lock.
 */
uint64_t vm_evict_trigger(struct vm *vm);
/*
 * A page went resident through pagemap_installed/pagemap_fetch_done: queue
 * it for eviction and poke the evictor at the trigger. Under lock.
 */
void vm_note_resident(struct vm *vm, uint64_t page);

/*
 * Adoption (adopt.c), once every region is back and the store is set up:
 * settles every page the map or the memfd knows (page_on_adopt), marks
 * the stored copies in the store and counts them. Returns 0 or -errno
 * with err.
 */
int vm_adopt_recover(struct vm *vm, char *err, size_t errlen);
/*
 * Then, before the threads start (the evictor must not protect a page
 * before this clears it): clears the write-protection a dead evictor left
 * and wakes every fault it had read, so that they fault again and queue
 * for the fault thread.
 */
void vm_adopt_wake(struct vm *vm);

void *vm_fault_thread(void *arg);
void *vm_repair_thread(void *arg);
void *vm_evict_thread(void *arg);
