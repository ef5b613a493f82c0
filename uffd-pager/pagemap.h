/* SPDX-License-Identifier: MIT */
/*
 * The page map: one fixed-size entry per guest page (state, flags, CRC32C
 * and the locations of its stored copies) and the VM's page counters. This
 * module is the only code that writes them, through one verb per
 * transition; page-state.c decides, the verbs apply. The fault thread,
 * the evictor, the prefetcher and repair call the verbs with the VM's lock
 * held (vm->lock), one lock for a whole step where they batch pages.
 *
 *   UNTOUCHED/ZERO --fault: zero page placed----------> RESIDENT   pagemap_installed
 *   RESIDENT --picked by the evictor------------------> EVICTING   pagemap_evict_begin
 *   EVICTING --copies durable, no write or discard----> EVICT_COMMITTED  pagemap_evict_commit
 *   EVICTING --written meanwhile, or store refused----> RESIDENT   pagemap_evict_give_back
 *   EVICTING --discarded meanwhile, not written-------> ZERO       pagemap_evict_forget
 *   EVICT_COMMITTED --punched-------------------------> STORED/ZERO  pagemap_punched
 *   STORED --fault thread starts reading it-----------> +FETCHING  pagemap_fetch_begin
 *   STORED/EVICT_COMMITTED --copy placed--------------> RESIDENT   pagemap_fetch_done
 *                          (placed write-protected, copies kept: +CLEAN)
 *   RESIDENT+CLEAN --write-protect fault, refill-----> RESIDENT   pagemap_wp_fault, pagemap_refilled
 *   RESIDENT+CLEAN --a copy on a dead donor----------> RESIDENT   pagemap_clean_dropped
 *   RESIDENT --shim asked to unmap it (sampling)----> +SAMPLING  pagemap_sample_begin
 *   any+SAMPLING --its REMOVE event read-------------> any        pagemap_sample_end
 *                          (prefetcher, zero-page fault: pagemap_installed)
 *   STORED --no copy reads back right-----------------> +LOST      pagemap_fetch_failed
 *   STORED --every copy on dead donors----------------> +LOST      pagemap_copies_lost
 *   STORED --repair re-created or moved one copy------> STORED     pagemap_replace_copy
 *   EVICTING/EVICT_COMMITTED --write-protect fault----> +WRITE_PENDING  pagemap_wp_fault
 *   EVICTING --zeros placed after a discard-----------> +WRITE_PENDING  pagemap_refilled
 *   any --guest discarded it (EVENT_REMOVE)-----------> ZERO or +DISCARDED  pagemap_discarded
 *
 * A write to an EVICTING page sets PGF_WRITE_PENDING and the evictor gives
 * the page back (un-protect, wake, keep resident). A write to an
 * EVICT_COMMITTED page waits for the punch and is then woken: its retry
 * faults in the stored copy, which is current because no write got
 * through. A discard of a page a thread is working on (EVICTING,
 * EVICT_COMMITTED, STORED+FETCHING) sets PGF_DISCARDED; that thread
 * finishes it (forget, punch as zero, place zeros). A LOST page is never
 * installed. A clean page (PGF_CLEAN) is resident, write-protected and
 * keeps the copies it was fetched from: evicting it is write-protect and
 * punch with no store write. Its first write drops the copies, and the
 * fault thread un-protects it under the lock, so the evictor cannot pick
 * the page between the drop and the un-protect.
 *
 * Counters: resident = RESIDENT + EVICTING + EVICT_COMMITTED (pages the
 * memfd may hold, clean ones too), stored = STORED, zero = ZERO.
 *
 * Layout: one mapping, a header then npages entries of entry_size bytes
 * each (12 + 4 per further copy; locations stored inverted so that an
 * all-zero entry is UNTOUCHED with no copy and growing writes nothing), no pointers inside, so the same bytes
 * can later live in a shared file mapping that outlives the pager. Growing
 * may move the mapping: no entry pointer outlives the lock it was read
 * under. Verbs that drop a page's copies hand them back in ret_freed
 * (STORE_MAX_COPIES locations, LOC_NONE where none) for the caller to
 * free in the store, still under the lock.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "page-state.h"
#include "store.h"

#define PAGEMAP_MAGIC 0x4d504755u /* "UGPM" little-endian */
#define PAGEMAP_VERSION 1

struct page_entry {
	/*
	 * The stored copy's check: its CRC32C, or in a sealed map
	 * (pagemap_use_versions) the page's version, the nonce half that
	 * changes: bumped by every eviction, never reset, so (page, version)
	 * names one content for the VM's life.
	 */
	union {
		uint32_t crc;
		uint32_t version;
	};
	uint32_t loc;  /* first copy's location (store.h), stored inverted (~loc: 0 = LOC_NONE); read it with pagemap_get_locs */
	uint8_t state; /* enum page_state */
	uint8_t flags; /* enum page_flags */
	uint16_t reserved;
	/* followed by ncopies - 1 further locations (uint32_t), LOC_NONE when absent */
};

struct pagemap_header {
	uint32_t magic;
	uint16_t version;
	uint16_t ncopies;        /* locations per page: loc + ncopies - 1 after the entry */
	uint32_t entry_size;     /* bytes per page */
	uint32_t entries_offset; /* from the start of the mapping */
	uint64_t npages;
	uint64_t resident_pages;
	uint64_t stored_pages;
	uint64_t zero_pages;
	uint32_t flags; /* PAGEMAP_F_* */
};

enum { PAGEMAP_F_VERSIONS = 1 /* the check word is a version (sealed copies) */ };

/* The handle: outside the mapped data, which holds no pointers. */
struct pagemap {
	struct pagemap_header *hdr;
	size_t mapped;     /* bytes */
	int fd;            /* the state file (vmstate.h; not ours to close), -1: anonymous */
	uint64_t file_off; /* where the map starts in it */
};

/*
 * An empty map for pages with ncopies locations each, in the file fd from
 * file_off on (shared: what the pager writes survives its death), or
 * anonymous with fd -1. Returns 0 or -errno.
 */
int pagemap_init(struct pagemap *pm, unsigned ncopies, int fd, uint64_t file_off);
/*
 * The map an earlier pager left in fd at file_off, for a VM it adopts.
 * Checks magic, format version, copies per page, sealing and size against
 * the file before mapping it. Returns 0, or -EBADMSG (not a map,
 * truncated), -EPROTONOSUPPORT (other format version) or -EINVAL (another
 * policy), with *err saying which.
 */
int pagemap_attach(struct pagemap *pm, int fd, uint64_t file_off, unsigned ncopies, bool versioned, char *err,
		   size_t errlen);
/*
 * Sealed copies: from now on each page's check word is its version,
 * bumped by pagemap_evict_begin; pagemap_evict_commit keeps it. Call
 * before any page exists.
 */
void pagemap_use_versions(struct pagemap *pm);
static inline bool pagemap_versioned(const struct pagemap *pm) { return pm->hdr->flags & PAGEMAP_F_VERSIONS; }
/* Unmaps it; safe on a zeroed or already destroyed map. */
void pagemap_destroy(struct pagemap *pm);
/* Appends npages UNTOUCHED pages with no copies (may move the mapping). Returns 0 or -errno. */
int pagemap_grow(struct pagemap *pm, uint64_t npages);

/* Read access, under the lock. The entry pointer is valid until the lock is dropped. */
static inline const struct page_entry *pagemap_entry(const struct pagemap *pm, uint64_t page)
{
	const uint8_t *base = (const uint8_t *)pm->hdr;

	return (const struct page_entry *)(base + pm->hdr->entries_offset + page * pm->hdr->entry_size);
}
static inline uint64_t pagemap_npages(const struct pagemap *pm) { return pm->hdr->npages; }
static inline uint64_t pagemap_resident(const struct pagemap *pm) { return pm->hdr->resident_pages; }
static inline uint64_t pagemap_stored(const struct pagemap *pm) { return pm->hdr->stored_pages; }
static inline uint64_t pagemap_zero(const struct pagemap *pm) { return pm->hdr->zero_pages; }
/* Copies of a page: locs[0..STORE_MAX_COPIES), LOC_NONE past ncopies and where there is none. */
void pagemap_get_locs(const struct pagemap *pm, uint64_t page, uint32_t *locs);
/* True when some copy location is set. */
bool pagemap_has_copy(const struct pagemap *pm, uint64_t page);

/*
 * A page went into guest memory (a fault's zero page or copy, a prefetched
 * copy, a drain): UNTOUCHED/ZERO/STORED/EVICT_COMMITTED -> RESIDENT, its
 * copies dropped, WRITE_PENDING/DISCARDED/FETCHING cleared (the placement
 * woke every waiter). Returns false, changing nothing, from any other state.
 */
bool pagemap_installed(struct pagemap *pm, uint64_t page, uint32_t *ret_freed);
/*
 * A write-protect fault: WRITE_PENDING if the evictor owns the page.
 * Returns true then (the evictor wakes the writer). A clean resident
 * page's copies are handed back in ret_freed: the write makes them stale.
 */
bool pagemap_wp_fault(struct pagemap *pm, uint64_t page, uint32_t *ret_freed);
/* Zeros went into a page the map calls resident: WRITE_PENDING if an eviction read it (page_refill_gives_back); a clean page's copies freed. */
bool pagemap_refilled(struct pagemap *pm, uint64_t page, uint32_t *ret_freed);
/* Repair: a clean resident page's copies go (one is on a dead or departing donor); it is written anew when evicted. */
bool pagemap_clean_dropped(struct pagemap *pm, uint64_t page, uint32_t *ret_freed);
/* EVENT_REMOVE covered the page (page_on_discard). Returns what was done. */
enum discard_action pagemap_discarded(struct pagemap *pm, uint64_t page, uint32_t *ret_freed);

/*
 * The fault thread reads a STORED page: FETCHING set, its copies and CRC
 * returned (they stay in the map; repair may still move them). False when
 * the page is not STORED, is LOST or is already being fetched.
 */
bool pagemap_fetch_begin(struct pagemap *pm, uint64_t page, uint32_t *ret_locs, uint32_t *ret_crc);
/*
 * A fetch ended (placed: its copy or zeros went in): FETCHING cleared, and
 * the page recorded RESIDENT as pagemap_installed does if it was still
 * STORED or EVICT_COMMITTED (page_fetch_installs). Returns true then.
 * clean: the copy went in write-protected (page_installs_clean); the page
 * keeps its copies and PGF_CLEAN.
 */
bool pagemap_fetch_done(struct pagemap *pm, uint64_t page, bool placed, bool clean, uint32_t *ret_freed);
/* No copy of a fetched page read back right: LOST (never installed), FETCHING cleared. */
void pagemap_fetch_failed(struct pagemap *pm, uint64_t page);
/* Repair found no readable copy of a STORED page: LOST. Returns false if it was not STORED or already lost. */
bool pagemap_copies_lost(struct pagemap *pm, uint64_t page);
/*
 * Repair swaps copy c of a STORED page from old_loc to new_loc (LOC_NONE:
 * just forget it). Returns false, changing nothing, when the page left
 * STORED or copy c is no longer old_loc (a refault won).
 */
bool pagemap_replace_copy(struct pagemap *pm, uint64_t page, unsigned c, uint32_t old_loc, uint32_t new_loc);

/*
 * Adoption: the counters start again from zero, then every page that is
 * not UNTOUCHED-and-a-hole goes through pagemap_adopt (page_on_adopt):
 * its state settled, transient flags cleared (LOST stays), the copies of
 * a page that is no longer stored dropped (the store, rebuilt from the
 * stored pages' copies only, counts them free), and counted. Returns the
 * page's state.
 */
void pagemap_adopt_begin(struct pagemap *pm);
enum page_state pagemap_adopt(struct pagemap *pm, uint64_t page, bool has_data);

/*
 * Access sampling: the evictor asks the shim to unmap a RESIDENT page
 * (PGF_SAMPLING set; false if not RESIDENT or already asked), and the
 * fault thread sees the REMOVE event that causes (PGF_SAMPLING cleared;
 * false if it was not set: then the event is the guest's discard).
 */
bool pagemap_sample_begin(struct pagemap *pm, uint64_t page);
bool pagemap_sample_end(struct pagemap *pm, uint64_t page);

/*
 * The evictor picks a page: RESIDENT -> EVICTING, flags cleared but
 * PGF_CLEAN, and in a versioned map the version of a page that is not
 * clean bumped (this eviction's copies are sealed with the new one; a
 * clean page's copies are already sealed under its version). False if it
 * is not RESIDENT, or if its version is spent
 * (2^32 - 1 evictions: it then stays resident rather than reuse a nonce).
 */
bool pagemap_evict_begin(struct pagemap *pm, uint64_t page);
/*
 * A clean EVICTING page whose copies cannot be trusted (a dead donor, a
 * hole in the memfd): they go (ret_freed), PGF_CLEAN is cleared and, when
 * versioned, the version bumped, so the page is written anew. False when
 * the version is spent: the evictor gives the page back.
 */
bool pagemap_evict_unclean(struct pagemap *pm, uint64_t page, uint32_t *ret_freed);
/* What to do with an EVICTING page once its copies are written (stored) or refused (page_evict_verdict). */
enum evict_verdict pagemap_evict_verdict(const struct pagemap *pm, uint64_t page, bool stored);
/* EVICTING -> EVICT_COMMITTED with its copies (all LOC_NONE for an all-zero page) and CRC (ignored when versioned). */
void pagemap_evict_commit(struct pagemap *pm, uint64_t page, const uint32_t *locs, uint32_t crc);
/* EVICTING -> RESIDENT (written meanwhile or refused by the store); the caller frees what it wrote. */
void pagemap_evict_give_back(struct pagemap *pm, uint64_t page);
/* EVICTING -> ZERO (discarded meanwhile): the memfd holds a hole; the caller frees what it wrote. */
void pagemap_evict_forget(struct pagemap *pm, uint64_t page);
/*
 * The memfd range was punched: EVICT_COMMITTED -> STORED, or ZERO (all
 * zero, or discarded after the commit: copies dropped). *ret_wake: a
 * writer waits for the punch. Returns false, changing nothing, when the
 * page is no longer EVICT_COMMITTED (refaulted: the fault thread took over).
 */
bool pagemap_punched(struct pagemap *pm, uint64_t page, bool zero, bool *ret_wake, uint32_t *ret_freed);
