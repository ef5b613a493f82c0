/* SPDX-License-Identifier: MIT */
/*
 * Internals shared by vm.c (lifecycle, stats), fault.c (fault thread) and
 * evict.c (evictor thread).
 *
 * Page states and who moves them (all under vm->lock):
 *
 *   UNTOUCHED --fault--> RESIDENT --evictor picks--> EVICTING (write-protected,
 *   copy being written) --copy durable--> EVICT_COMMITTED --punched--> STORED / ZERO
 *   STORED / ZERO --fault--> RESIDENT
 *
 * A write to an EVICTING page sets PGF_WRITE_PENDING and the evictor gives
 * the page back (un-protect, wake, keep resident). A write to an
 * EVICT_COMMITTED page waits for the punch and is then woken: its retry
 * faults in the stored copy, which is current because no write got through.
 * resident_pages counts RESIDENT + EVICTING + EVICT_COMMITTED: pages the
 * memfd may hold.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "util.h"

#include "histogram.h"
#include "page-state.h"
#include "policy.h"
#include "spill.h"
#include "store.h"
#include "victim.h"

#define VM_MAX_REGIONS 16


/*
 * 12 bytes per guest page; with the FIFO's 4 bytes the pager spends 16
 * bytes per page at one copy per page (replicas 1, no backup), plus one bit
 * per spill slot and ~528 bytes per 16 MiB donor slab (store.h). Each
 * further copy (replicas 2..3, spill backup) costs 4 bytes per page in the
 * region's side table `extra`, allocated only for policies that need it.
 * A page is punched only once every copy in loc + extra is durable.
 */
struct page_entry {
	uint32_t crc;  /* CRC32C of the stored copy */
	uint32_t loc;  /* first copy's location (store.h) while STORED/EVICT_COMMITTED */
	uint8_t state;
	uint8_t flags;
	uint16_t reserved;
};

struct vm_region {
	uint64_t host_addr;
	uint64_t length;
	uint64_t memfd_offset;
	uint64_t first_page; /* index of the region's first page in the VM's page space */
	int memfd;
	struct page_entry *pages;
	uint32_t *extra; /* (ncopies - 1) locations per page, or NULL */
};

struct vm_stats {
	_Atomic uint64_t faults_zero;      /* first touch or known-zero page */
	_Atomic uint64_t faults_spill;     /* refaults served from the spill file */
	_Atomic uint64_t faults_discard;   /* MISSING on a page the map called resident */
	_Atomic uint64_t faults_wp;        /* write-protect faults */
	_Atomic uint64_t faults_duplicate; /* page already there: woken only */
	_Atomic uint64_t evictions;        /* pages punched out */
	_Atomic uint64_t evictions_aborted;
	_Atomic uint64_t zero_pages_skipped; /* evicted without storing */
	_Atomic uint64_t integrity_errors;
	_Atomic uint64_t store_errors;
	_Atomic uint64_t throttle_waits;
	_Atomic uint64_t remove_events;
	_Atomic uint64_t eviction_batches;
	_Atomic uint64_t eviction_ns; /* time spent evicting, for the eviction rate */
	_Atomic uint64_t faults_donor; /* refaults served from a donor */
	_Atomic uint64_t prefetch_issued; /* predicted pages read from donors */
	_Atomic uint64_t prefetch_hits;   /* of those, installed before their fault */
	_Atomic uint64_t prefetch_wasted; /* read but not installed (changed, no room, bad copy) */
	_Atomic uint64_t prefetch_no_room; /* predicted pages not read: the VM had no room beside its fetches */
};

struct vm {
	struct policy_vm policy;
	char uuid[37]; /* GLUE_UUID_MAX; immutable once registered */
	pid_t pid;
	int pidfd;
	int uffd;
	int stop_efd; /* wakes the fault thread for shutdown */
	int drain_efd; /* wakes the fault thread to bring stored pages back (vm.drain) */
	char state_dir[256];
	uint64_t max_guest_memory;

	struct vm_region regions[VM_MAX_REGIONS];
	unsigned nregions;
	uint64_t npages;

	pthread_mutex_t lock; /* page map, victim state, counters below */
	pthread_cond_t evict_cond;   /* evictor waits for work */
	pthread_cond_t space_cond;   /* throttled faults wait for room */
	uint64_t resident_pages;
	uint64_t stored_pages;
	uint64_t zero_pages;
	uint64_t high_pages, low_pages;
	const struct policy_victim_ops *victim;
	void *victim_state;
	bool stopping;
	bool degraded;  /* the store refuses pages */
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
	unsigned ncopies;        /* locations per page: 1 + side-table entries */
	pthread_cond_t repair_cond;
	pthread_t fault_thread, evict_thread, repair_thread;
	struct histogram fault_latency; /* written by the fault thread only */
	struct vm_stats stats;
};

/* Page helpers; callers hold vm->lock where they touch entries. */
struct page_entry *vm_page(struct vm *vm, uint64_t page);
struct vm_region *vm_region_of_page(struct vm *vm, uint64_t page);
/* Maps a faulting address to a page index; returns -EFAULT outside guest RAM. */
int vm_addr_to_page(struct vm *vm, uint64_t addr, uint64_t *ret_page);
uint64_t vm_page_addr(struct vm *vm, uint64_t page);
/* Residency the evictor brings the VM down to: low watermark, 0 while parking, none after a drain. Under lock. */
uint64_t vm_evict_target(struct vm *vm);
/*
 * Residency at which a fault wakes the evictor: a batch above the target
 * (hysteresis, so the evictor works in full batches instead of one wake-up
 * per fault), right above it while parking or while a fault is throttled.
 * UINT64_MAX when nothing may be evicted. Under lock (evict.c).
 */
uint64_t vm_evict_trigger(struct vm *vm);
/* Recomputes high/low pages from the policy. Under lock. */
void vm_update_watermarks(struct vm *vm);
/* The page became resident (fault path): count, queue for eviction, poke the evictor. Under lock. */
void vm_note_resident(struct vm *vm, uint64_t page);
/* A stored copy is gone for good: apply the policy's on_data_loss. */
void vm_data_loss(struct vm *vm, uint64_t page, const char *why);

/* Copies of a page: locs[0..ncopies) (LOC_NONE = none). Under lock. */
void vm_page_get_locs(struct vm *vm, uint64_t page, uint32_t *locs);
void vm_page_set_locs(struct vm *vm, uint64_t page, const uint32_t *locs);
/* Frees every copy of a page and clears its locations. Under lock. */
void vm_page_drop_copies(struct vm *vm, uint64_t page);

void *vm_fault_thread(void *arg);
void *vm_repair_thread(void *arg);
void *vm_evict_thread(void *arg);
