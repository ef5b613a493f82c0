/* SPDX-License-Identifier: MIT */
/*
 * One VM's stores behind one interface: the spill file and the pager's
 * donors. A page copy is named by a 32-bit location:
 *
 *   0xFFFFFFFF                 no copy
 *   bit 31 = 0                 spill slot (bits 30..0)
 *   bit 31 = 1                 remote: bits 30..12 = index into this VM's slab
 *                              table, bits 11..0 = slot in the 16 MiB slab
 *
 * The slab table (one entry per slab this VM holds, ~528 bytes with its
 * slot bitmap) maps an index to (donor index, remote slab id). Table
 * indexes of slabs that died or were given back are never reused, and
 * donors are never re-indexed, so a stale location never names a live
 * copy. Writing and placing copies is for the evictor and repair threads;
 * reading is for the fault thread (and repair, through its own path).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "donors.h"
#include "policy.h"
#include "spill.h"

#define LOC_NONE UINT32_MAX
#define LOC_REMOTE (1u << 31)
#define STORE_MAX_COPIES (POLICY_MAX_REPLICAS + 1)
#define STORE_SLAB_SLOTS 4096u
#define STORE_MAX_SLABS ((1u << 19) - 1)
#define STORE_SPILL_MAX_SLOTS ((uint64_t)LOC_REMOTE - 1)

static inline bool loc_is_remote(uint32_t loc) { return loc != LOC_NONE && (loc & LOC_REMOTE); }

enum loc_health { LOC_OK, LOC_MOVE /* readable, must move */, LOC_DEAD };
enum store_source { SRC_SPILL, SRC_DONOR };

struct store_stats {
	_Atomic uint64_t remote_copies;   /* copies on donors right now */
	_Atomic uint64_t faults_donor;    /* faults served from a donor */
	_Atomic uint64_t bad_copies;      /* fetched copies that failed the CRC or the read */
	_Atomic uint64_t rereplications;  /* copies re-created after a donor failed */
	_Atomic uint64_t moved;           /* copies moved off draining/revoked donors */
	_Atomic uint64_t copies_lost;     /* copies on a donor that died */
	_Atomic uint64_t pages_lost;      /* pages with no copy left */
	_Atomic uint64_t spill_fallbacks; /* pages sent to the spill file because no donor could take them */
};

struct store;

/* Copies each page of this VM may have (the page map's side table is sized from it). */
unsigned store_copies_for(const struct policy_vm *pol);

int store_new(const char *vm_name, struct donor_pool *pool, struct spill *spill, const struct policy_vm *pol,
	      struct store **ret);
/* Gives every slab back to its donor. NULL-safe. */
void store_free(struct store *st);
struct store_stats *store_stats(struct store *st);
unsigned store_max_copies(const struct store *st);

/*
 * Chooses and reserves locations for every copy the policy requires of one
 * page (locs[0..store_max_copies) filled, unused = LOC_NONE). Returns the
 * number of copies, or -ENOSPC when the required copies cannot be had (the
 * page must stay resident). May block on a slab allocation (never called
 * on the fault path).
 */
int store_place(struct store *st, uint32_t *locs);
/* Places one extra copy avoiding the donors (and spill) already in have[0..nhave). Returns 0 or -ENOSPC. */
int store_place_one(struct store *st, const uint32_t *have, unsigned nhave, uint32_t *ret_loc);
/* Frees one location (bookkeeping only for dead donors). Never blocks on the network. */
void store_free_loc(struct store *st, uint32_t loc);
void store_free_locs(struct store *st, const uint32_t *locs);

/*
 * Writes n pages, each to every location in locs[i*max_copies ..], and
 * waits until every copy is acknowledged. results[i]: 0 or the first error
 * of page i. use_uring: spill copies go through the evictor's ring
 * (evictor thread only); otherwise plain pwrite.
 */
void store_write(struct store *st, unsigned n, void *const *bufs, const uint32_t *locs, int *results, bool use_uring);
/*
 * The same in parts, so the first pages are on the wire while the caller
 * still reads the rest: begin takes the store's write slot (results has
 * room for 128 pages), add writes pages first..first+n-1 (bufs and locs
 * start at page first), end waits for every copy of every part.
 */
void store_write_begin(struct store *st, int *results);
void store_write_add(struct store *st, unsigned first, unsigned n, void *const *bufs, const uint32_t *locs,
		     bool use_uring);
void store_write_end(struct store *st);
/*
 * Fetches a page from the first copy that reads back with the right
 * CRC32C, healthy copies first. Returns 0 (ret_source says from where) or
 * -EIO when no copy could be read. fault_thread: spill reads use the fault
 * thread's ring.
 */
int store_read(struct store *st, const uint32_t *locs, uint32_t crc, void *buf, enum store_source *ret_source,
	       bool fault_thread);
/*
 * store_read that calls sent(arg) once, when the first read is on its way
 * (a donor read sent, or just before a spill read): the prefetcher queues
 * its reads behind the fault's own, never in front of it.
 */
int store_read_ex(struct store *st, const uint32_t *locs, uint32_t crc, void *buf, enum store_source *ret_source,
		  bool fault_thread, void (*sent)(void *arg), void *arg);
/*
 * Queues an asynchronous read of a page's first healthy donor copy into buf,
 * completing into op->w (set by the caller); ORs the donor's bit into
 * *donors for store_flush. No CRC check: the caller verifies. Returns 0,
 * -ENOENT (no healthy donor copy) or the submit's -errno.
 */
int store_read_async(struct store *st, const uint32_t *locs, void *buf, struct pool_op *op, uint64_t *donors);
/* Sends what store_read_async queued on the donors in the mask. */
void store_flush(struct store *st, uint64_t donors);

enum loc_health store_loc_health(struct store *st, uint32_t loc);
/* Re-reads donor states and revocations after the pool's generation changed. Returns true if anything needs moving. */
bool store_refresh(struct store *st);
/* True when the pool changed since the last store_refresh(). */
bool store_generation_changed(struct store *st);
/* Gives back slabs that are no longer live and empty (network I/O: repair thread only). */
void store_release_empty(struct store *st);
/* Per-donor remote copies of this VM, as {"url": pages}-free array of counts indexed by donor. */
uint64_t store_donor_pages(struct store *st, unsigned donor);
