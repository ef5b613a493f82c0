/* SPDX-License-Identifier: MIT */
/*
 * One VM's stores behind one interface: the spill file and the pager's
 * donors. A page copy is named by a 32-bit location:
 *
 *   0xFFFFFFFF                 no copy
 *   bits 31..30 = 00           spill slot (bits 29..0)
 *   bits 31..30 = 01           shared: bits 29..0 = content entry of the
 *                              VM's sharing group (docs/sharing.md)
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
#include "seal.h"
#include "spill.h"

#define LOC_NONE UINT32_MAX
#define LOC_REMOTE (1u << 31)
#define LOC_SHARED (1u << 30)
#define STORE_MAX_COPIES (POLICY_MAX_REPLICAS + 1)
#define STORE_SLAB_SLOTS 4096u
#define STORE_MAX_SLABS ((1u << 19) - 1)
#define STORE_SPILL_MAX_SLOTS ((uint64_t)LOC_SHARED - 1)

static inline bool loc_is_remote(uint32_t loc) { return loc != LOC_NONE && (loc & LOC_REMOTE); }
static inline bool loc_is_shared(uint32_t loc) { return (loc & (LOC_REMOTE | LOC_SHARED)) == LOC_SHARED; }

enum loc_health { LOC_OK, LOC_MOVE /* readable, must move */, LOC_DEAD };
enum store_source { SRC_SPILL, SRC_DONOR };

struct store_stats {
	_Atomic uint64_t remote_copies;   /* copies on donors right now */
	_Atomic uint64_t faults_donor;    /* faults served from a donor */
	_Atomic uint64_t bad_copies;      /* fetched copies that failed the CRC, the tag or the read */
	_Atomic uint64_t rejected;        /* of those, copies read back whole that failed the CRC or the tag */
	_Atomic uint64_t rereplications;  /* copies re-created after a donor failed */
	_Atomic uint64_t moved;           /* copies moved off draining/revoked donors */
	_Atomic uint64_t copies_lost;     /* copies on a donor that died */
	_Atomic uint64_t pages_lost;      /* pages with no copy left */
	_Atomic uint64_t spill_fallbacks; /* pages sent to the spill file because no donor could take them */
	_Atomic uint64_t shared_refs;     /* locations of this VM naming a copy of its sharing group */
};

/*
 * Shared locations are the sharing group's (share.h): the store hands
 * them to these hooks, so that store.c needs nothing of share.c.
 */
struct store_shared_ops {
	/* A reference to each page's copy in the group (pages unchanged); results[i]: 0 or -errno, ret_locs[i] set on 0. */
	void (*put_batch)(void *arg, const void *const *pages, unsigned n, uint32_t *ret_locs, int *results);
	void (*unref)(void *arg, uint32_t loc);
	/* Reads and opens the copy into buf. Returns 0 or -EIO. */
	int (*read)(void *arg, uint32_t loc, void *buf, enum store_source *ret_source);
	/* LOC_OK while some group copy is readable (the group repairs its own), else LOC_DEAD. */
	enum loc_health (*health)(void *arg, uint32_t loc);
};

struct store;

/* Copies each page of this VM may have (the page map's side table is sized from it). */
unsigned store_copies_for(const struct policy_vm *pol);

/*
 * seal: NULL keeps copies in clear with a CRC32C in the page map; else
 * every copy is sealed under it (the store takes it over and frees it,
 * deleting its key file, with itself; on failure the caller keeps it).
 */
int store_new(const char *vm_name, struct donor_pool *pool, struct spill *spill, struct seal *seal,
	      const struct policy_vm *pol, void *area, bool adopt, struct store **ret);
/*
 * Bytes of the store's area in the VM's state file (vmstate.h): its slab
 * table and the URL of each donor it names. store_new keeps the table in
 * area (NULL: an anonymous mapping of its own). With adopt, the area is
 * the one a dead pager left: donors are found again by URL (added to the
 * pool if missing) and every slot counts free until store_adopt_loc
 * marks the ones the page map names; store_adopt_done then counts.
 * -EBADMSG when the area holds no slab table.
 */
size_t store_state_bytes(void);
/*
 * Adoption: the page map names this copy. Returns 0, -EBADMSG for a
 * location the table never had, or -EXDEV for a shared one with no
 * sharing group set (store_set_shared, before adoption).
 */
int store_adopt_loc(struct store *st, uint32_t loc);
/* Adoption: every copy is marked; count them (and repair what lies on dead donors). */
void store_adopt_done(struct store *st);
/*
 * Start-up: a VM ended while no pager ran. Gives back to their donors the
 * slabs its slab table (area, from its state file) still holds, on donors
 * of the pool that are up, so that they do not stay with this pager's
 * client id for good. Returns how many.
 */
unsigned store_release_orphan(struct donor_pool *pool, const void *area, size_t bytes);
/* Gives every slab back to its donor and deletes the key file. NULL-safe. */
void store_free(struct store *st);
/* The pager stops but the VM lives on: slabs, table and key file stay for the next pager. NULL-safe. */
void store_detach(struct store *st);
/* True when copies are sealed: the page map's check word is then the page's version. */
bool store_sealed(const struct store *st);
struct store_stats *store_stats(struct store *st);
/* Every eviction of this VM goes through its sharing group from now on. Set before the threads start. */
void store_set_shared(struct store *st, const struct store_shared_ops *ops, void *arg);
bool store_shares(const struct store *st);
/*
 * Evictor: each page's copy in the group (stored there if new, the new
 * contents written in one batch), as one shared location holding a
 * reference. results[i]: 0, or -ENOSPC/-EIO (the page stays).
 */
void store_put_shared_batch(struct store *st, const void *const *pages, unsigned n, uint32_t *ret_locs, int *results);
unsigned store_max_copies(const struct store *st);
/*
 * A sharing group's store: copies placed from now on follow this
 * durability (replicas capped so that replicas + backup fit max copies).
 * Copies already placed keep theirs.
 */
void store_set_durability(struct store *st, unsigned replicas, bool backup);

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
 * Store I/O is submit/complete: the caller owns the request (a write batch,
 * a page read), hands it to the store part by part, and waits for it. The
 * store keeps no I/O state of its own between calls, holds no lock across
 * them and never calls back into its caller; requests on different objects
 * run concurrently.
 */

/* Pages per write batch: the evictor's batch is exactly one. */
#define STORE_BATCH_MAX 128u

/*
 * A write batch. The caller fills it with store_batch_add(); the store
 * keeps its bookkeeping in the rest. Buffers must stay valid until
 * store_write_wait() returns.
 */
struct store_batch {
	unsigned n;                                       /* pages added */
	void *bufs[STORE_BATCH_MAX];                      /* 4 KiB-aligned page contents (sealed in place) */
	uint64_t pages[STORE_BATCH_MAX];                  /* guest page index of each */
	uint32_t checks[STORE_BATCH_MAX];                 /* its version when sealed (else unused) */
	uint8_t tags[STORE_BATCH_MAX][SEAL_TAG_LEN];      /* the store's: each sealed page's tag */
	uint32_t locs[STORE_BATCH_MAX][STORE_MAX_COPIES]; /* every copy of page i, unused = LOC_NONE */
	int results[STORE_BATCH_MAX];                     /* after the wait: 0 or page i's first error */
	/* The store's: */
	unsigned submitted;                               /* pages 0..submitted-1 are on their way */
	unsigned nops;                                    /* donor writes in flight */
	struct pool_wait w;
	struct pool_op ops[STORE_BATCH_MAX * STORE_MAX_COPIES];
	uint16_t owner[STORE_BATCH_MAX * STORE_MAX_COPIES]; /* page index of ops[k] */
};

/* Prepares an empty batch (its wait object included). */
void store_batch_init(struct store_batch *b);
/* Releases what init set up; nothing may be in flight. */
void store_batch_destroy(struct store_batch *b);
/* Empties a batch that was waited for, for the next round. */
void store_batch_reset(struct store_batch *b);
/*
 * Appends page (its contents in buf), its copies' locations
 * (STORE_MAX_COPIES entries) and its version (sealed stores; the page
 * map's check word after pagemap_evict_begin). Returns its index or -ENOSPC.
 */
int store_batch_add(struct store_batch *b, void *buf, const uint32_t *locs, uint64_t page, uint32_t version);
/* Pages added but not yet submitted. */
static inline unsigned store_batch_unsent(const struct store_batch *b) { return b->n - b->submitted; }

/*
 * Sends every page added since the last submit, sealed first in its
 * buffer when the store seals (the buffer then holds ciphertext, which
 * the evictor no longer needs): donor writes leave at once
 * (the donors work on them while the caller prepares the next part), spill
 * copies are written meanwhile. use_uring: spill copies go through the
 * evictor's ring (evictor thread only); otherwise plain pwrite.
 */
void store_write_submit(struct store *st, struct store_batch *b, bool use_uring);
/*
 * Waits until every copy submitted in b is acknowledged and fills
 * b->results. Returns 0 or the first page's error.
 */
int store_write_wait(struct store *st, struct store_batch *b);
/*
 * Writes one page (sealed in buf under (page, version) first when the
 * store seals) to every location in locs (STORE_MAX_COPIES entries) with
 * plain pwrite for spill. Repair thread only. Returns 0 or -errno.
 */
int store_write_page(struct store *st, void *buf, const uint32_t *locs, uint64_t page, uint32_t version);

/* One page read in flight; owned by the caller, whose thread both submits and waits. */
struct store_read {
	uint32_t locs[STORE_MAX_COPIES];
	uint8_t order[STORE_MAX_COPIES]; /* copies to try, best first */
	uint8_t ncopies, next;
	uint8_t inflight;                /* enum in store.c */
	bool fault_thread;
	bool copy_refused;               /* a copy arrived but failed its check */
	uint32_t crc;                    /* the page map's check word: CRC32C or version */
	uint64_t page;
	uint32_t cur_loc;                /* the copy in flight */
	uint8_t tag[SEAL_TAG_LEN];       /* a spill copy's tag */
	void *buf;
	int status;                      /* of a read done synchronously */
	enum store_source src;           /* where the copy in flight is */
	struct pool_wait w;
	struct pool_op op;
};

/*
 * Starts fetching a page (4 KiB-aligned buf) from its best copy: healthy
 * donor copies first, then copies being moved, then the spill file. When
 * this returns 0 the read is on its way, so reads submitted afterwards
 * (the prefetcher's) queue behind it. fault_thread: spill reads use the
 * fault thread's ring, which takes one read at a time: wait before the
 * next fault-thread read; copies that fail their check count as rejected
 * (off the fault thread the page may have moved on meanwhile: the caller
 * decides). Returns 0, or -EIO when no copy could even be started. Either
 * way store_read_wait() must follow.
 */
int store_read_submit(struct store *st, struct store_read *rd, uint64_t page, const uint32_t *locs, uint32_t crc,
		      void *buf, bool fault_thread);
/*
 * Waits for the read; if that copy fails its read, the CRC32C or (sealed)
 * opening it (buf then holds the page in clear), tries
 * the others in the same order. A donor read is polled for up to spin_us
 * before the wait sleeps (pool_wait_spin). Returns 0 (ret_source says
 * from where), -EBADMSG when a copy arrived but none passed its check,
 * or -EIO when no copy could be read at all (their stores failed).
 */
int store_read_wait(struct store *st, struct store_read *rd, enum store_source *ret_source, unsigned spin_us);
/* store_read_submit + store_read_wait. */
int store_read(struct store *st, uint64_t page, const uint32_t *locs, uint32_t crc, void *buf,
	       enum store_source *ret_source, bool fault_thread);
/*
 * Queues an asynchronous read of a page's first healthy donor copy into buf,
 * completing into op->w (set by the caller); ORs the donor's bit into
 * *donors for store_flush; the slot's tag lands in op->tag. No check: the
 * caller runs store_check_copy. Returns 0, -ENOENT (no healthy donor copy)
 * or the submit's -errno.
 */
int store_read_async(struct store *st, const uint32_t *locs, void *buf, struct pool_op *op, uint64_t *donors);
/*
 * Verifies a copy read asynchronously: its CRC32C, or (sealed) opens it in
 * place with its tag (buf then holds the page in clear). Fault thread only.
 * Returns 0 or -EBADMSG (not counted: the caller knows whether the copy
 * could have been replaced meanwhile, see store_count_rejected).
 */
int store_check_copy(struct store *st, uint64_t page, uint32_t crc, void *buf, const uint8_t *tag);
/* Counts a copy that failed store_check_copy although it was still the page's copy. */
void store_count_rejected(struct store *st);
/* Sends what store_read_async queued on the donors in the mask. */
void store_flush(struct store *st, uint64_t donors);

enum loc_health store_loc_health(struct store *st, uint32_t loc);
/* True if every copy in locs (LOC_NONE entries skipped) is LOC_OK: a clean page's copies may stand for it. */
bool store_locs_healthy(struct store *st, const uint32_t locs[STORE_MAX_COPIES]);
/* Re-reads donor states and revocations after the pool's generation changed. Returns true if anything needs moving. */
bool store_refresh(struct store *st);
/* True when the pool changed since the last store_refresh(). */
bool store_generation_changed(struct store *st);
/* Gives back slabs that are no longer live and empty (network I/O: repair thread only). */
void store_release_empty(struct store *st);
/* Per-donor remote copies of this VM, as {"url": pages}-free array of counts indexed by donor. */
uint64_t store_donor_pages(struct store *st, unsigned donor);
