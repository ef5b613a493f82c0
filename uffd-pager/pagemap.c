/* SPDX-License-Identifier: MIT */
/*
 * The page map and its verbs (pagemap.h): every write to a page entry and
 * to the page counters is here. The mapping is a shared mapping of the
 * VM's state file (or anonymous, for tests) grown with ftruncate and
 * mremap, so the untouched tail of a large guest is a hole that costs
 * nothing until it is written.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pagemap.h"
#include "util.h"

/* Entries start on a cache line of their own. */
#define PAGEMAP_ENTRIES_OFFSET 64u

_Static_assert(sizeof(struct page_entry) == 12, "12 bytes per page entry");
_Static_assert(sizeof(struct pagemap_header) <= PAGEMAP_ENTRIES_OFFSET, "header fits before the entries");

static struct page_entry *entry(struct pagemap *pm, uint64_t page)
{
	uint8_t *base = (uint8_t *)pm->hdr;

	return (struct page_entry *)(base + pm->hdr->entries_offset + page * pm->hdr->entry_size);
}

/* The further locations follow the entry. */
static uint32_t *extra_locs(struct page_entry *pe)
{
	return (uint32_t *)(pe + 1);
}

/*
 * Locations are stored inverted, so that LOC_NONE is 0 in the map and an
 * all-zero entry is an UNTOUCHED page with no copy: growing the map then
 * writes nothing, and the entries of pages never touched stay unbacked
 * anonymous memory (a sparse 256 GiB guest costs no page-map RAM).
 */
static uint32_t loc_decode(uint32_t stored)
{
	return ~stored;
}

static uint32_t loc_encode(uint32_t loc)
{
	return ~loc;
}

static size_t map_bytes(unsigned entry_size, uint64_t npages)
{
	size_t b = PAGEMAP_ENTRIES_OFFSET + (size_t)npages * entry_size;

	return (b + PAGE_SIZE_4K - 1) & ~(size_t)(PAGE_SIZE_4K - 1);
}

/* Maps len bytes of the map: anonymous, or the state file's at pm->file_off. */
static void *map_area(struct pagemap *pm, size_t len)
{
	if (pm->fd < 0)
		return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, pm->fd, (off_t)pm->file_off);
}

/* A file-backed map's file covers len bytes from its offset (holes read as zeros: UNTOUCHED). */
static int file_cover(struct pagemap *pm, size_t len)
{
	struct stat st;

	if (pm->fd < 0)
		return 0;
	if (fstat(pm->fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size < pm->file_off + len && ftruncate(pm->fd, (off_t)(pm->file_off + len)) < 0)
		return -errno;
	return 0;
}

int pagemap_init(struct pagemap *pm, unsigned ncopies, int fd, uint64_t file_off)
{
	size_t len = map_bytes(0, 0);
	void *m;
	int r;

	if (!ncopies || ncopies > STORE_MAX_COPIES)
		return -EINVAL;
	pm->fd = fd;
	pm->file_off = file_off;
	if ((r = file_cover(pm, len)) < 0)
		return r;
	m = map_area(pm, len);
	if (m == MAP_FAILED)
		return -errno;
	pm->hdr = m;
	pm->mapped = len;
	*pm->hdr = (struct pagemap_header){ .magic = PAGEMAP_MAGIC,
					    .version = PAGEMAP_VERSION,
					    .ncopies = (uint16_t)ncopies,
					    .entry_size = (uint32_t)(sizeof(struct page_entry) + (ncopies - 1) * sizeof(uint32_t)),
					    .entries_offset = PAGEMAP_ENTRIES_OFFSET };
	return 0;
}

int pagemap_attach(struct pagemap *pm, int fd, uint64_t file_off, unsigned ncopies, bool versioned, char *err,
		   size_t errlen)
{
	struct pagemap_header h;
	struct stat st;
	size_t len;
	void *m;

	pm->fd = fd;
	pm->file_off = file_off;
	if (fstat(fd, &st) < 0 || pread(fd, &h, sizeof(h), (off_t)file_off) != (ssize_t)sizeof(h)) {
		snprintf(err, errlen, "page map: cannot read its header (file of %lld bytes)", (long long)st.st_size);
		return -EBADMSG;
	}
	if (h.magic != PAGEMAP_MAGIC || h.entries_offset != PAGEMAP_ENTRIES_OFFSET) {
		snprintf(err, errlen, "page map: not a page map (magic 0x%08x)", h.magic);
		return -EBADMSG;
	}
	if (h.version != PAGEMAP_VERSION) {
		snprintf(err, errlen, "page map format version %u, this build reads %u", h.version, PAGEMAP_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (h.ncopies != ncopies || h.entry_size != sizeof(struct page_entry) + (ncopies - 1) * sizeof(uint32_t) ||
	    !!(h.flags & PAGEMAP_F_VERSIONS) != versioned) {
		snprintf(err, errlen, "page map: %u copies per page%s, the policy asks %u%s", h.ncopies,
			 h.flags & PAGEMAP_F_VERSIONS ? " (sealed)" : "", ncopies, versioned ? " (sealed)" : "");
		return -EINVAL;
	}
	if (h.npages > (UINT64_MAX - PAGEMAP_ENTRIES_OFFSET) / h.entry_size ||
	    (uint64_t)st.st_size < file_off + PAGEMAP_ENTRIES_OFFSET + h.npages * h.entry_size) {
		snprintf(err, errlen, "page map: %llu pages do not fit a file of %lld bytes (truncated?)",
			 (unsigned long long)h.npages, (long long)st.st_size);
		return -EBADMSG;
	}
	len = map_bytes(h.entry_size, h.npages);
	m = map_area(pm, len);
	if (m == MAP_FAILED) {
		snprintf(err, errlen, "page map: mmap: %s", strerror(errno));
		return -errno;
	}
	pm->hdr = m;
	pm->mapped = len;
	return 0;
}

void pagemap_use_versions(struct pagemap *pm)
{
	pm->hdr->flags |= PAGEMAP_F_VERSIONS;
}

void pagemap_destroy(struct pagemap *pm)
{
	if (!pm || !pm->hdr)
		return;
	munmap(pm->hdr, pm->mapped);
	pm->hdr = NULL;
	pm->mapped = 0;
}

int pagemap_grow(struct pagemap *pm, uint64_t npages)
{
	uint64_t first = pm->hdr->npages;
	size_t len = map_bytes(pm->hdr->entry_size, first + npages);
	int r;

	if (len > pm->mapped) {
		if ((r = file_cover(pm, len)) < 0)
			return r;
		void *m = mremap(pm->hdr, pm->mapped, len, MREMAP_MAYMOVE);
		if (m == MAP_FAILED)
			return -errno;
		pm->hdr = m;
		pm->mapped = len;
	}
	/* Fresh memory (or a file's hole) reads as zeros: UNTOUCHED, no copies (loc_encode). Nothing to write. */
	pm->hdr->npages = first + npages;
	return 0;
}

void pagemap_get_locs(const struct pagemap *pm, uint64_t page, uint32_t *locs)
{
	const struct page_entry *pe = pagemap_entry(pm, page);
	const uint32_t *extra = (const uint32_t *)(pe + 1);

	locs[0] = loc_decode(pe->loc);
	for (unsigned c = 1; c < STORE_MAX_COPIES; c++)
		locs[c] = c < pm->hdr->ncopies ? loc_decode(extra[c - 1]) : LOC_NONE;
}

bool pagemap_has_copy(const struct pagemap *pm, uint64_t page)
{
	uint32_t locs[STORE_MAX_COPIES];

	pagemap_get_locs(pm, page, locs);
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		if (locs[c] != LOC_NONE)
			return true;
	return false;
}

static void set_locs(struct pagemap *pm, struct page_entry *pe, const uint32_t *locs)
{
	pe->loc = loc_encode(locs[0]);
	for (unsigned c = 1; c < pm->hdr->ncopies; c++)
		extra_locs(pe)[c - 1] = loc_encode(locs[c]);
}

static void no_copies_freed(uint32_t *ret_freed)
{
	for (unsigned c = 0; ret_freed && c < STORE_MAX_COPIES; c++)
		ret_freed[c] = LOC_NONE;
}

/* Clears every location, handing the old ones to the caller (NULL: the caller holds them elsewhere). */
static void drop_copies(struct pagemap *pm, uint64_t page, uint32_t *ret_freed)
{
	uint32_t none[STORE_MAX_COPIES];

	if (ret_freed)
		pagemap_get_locs(pm, page, ret_freed);
	no_copies_freed(none);
	set_locs(pm, entry(pm, page), none);
}

/* Records a page placed in guest memory; keep_copies: installed clean (PGF_CLEAN), its copies stay current. */
static bool install(struct pagemap *pm, uint64_t page, bool keep_copies, uint32_t *ret_freed)
{
	struct page_entry *pe = entry(pm, page);
	struct pagemap_header *h = pm->hdr;

	no_copies_freed(ret_freed);
	switch (pe->state) {
	case PG_UNTOUCHED:
		h->resident_pages++;
		break;
	case PG_ZERO:
		h->zero_pages--;
		h->resident_pages++;
		break;
	case PG_STORED:
		h->stored_pages--;
		h->resident_pages++;
		break;
	case PG_EVICT_COMMITTED:
		break; /* punched but not yet recorded: still counted resident */
	default:
		return false;
	}
	keep_copies = keep_copies && pagemap_has_copy(pm, page);
	if (!keep_copies)
		drop_copies(pm, page, ret_freed);
	pe->state = PG_RESIDENT;
	pe->flags &= (uint8_t)~(PGF_WRITE_PENDING | PGF_DISCARDED | PGF_FETCHING | PGF_CLEAN);
	if (keep_copies)
		pe->flags |= PGF_CLEAN;
	return true;
}

bool pagemap_installed(struct pagemap *pm, uint64_t page, uint32_t *ret_freed)
{
	return install(pm, page, false, ret_freed);
}

/* A clean page is about to change (written, refilled with zeros): its copies are stale. */
static void clean_copies_stale(struct pagemap *pm, struct page_entry *pe, uint64_t page, uint32_t *ret_freed)
{
	no_copies_freed(ret_freed);
	if (pe->state != PG_RESIDENT || !(pe->flags & PGF_CLEAN))
		return;
	drop_copies(pm, page, ret_freed);
	pe->flags &= (uint8_t)~PGF_CLEAN;
}

bool pagemap_wp_fault(struct pagemap *pm, uint64_t page, uint32_t *ret_freed)
{
	struct page_entry *pe = entry(pm, page);

	clean_copies_stale(pm, pe, page, ret_freed);
	if (!page_wp_waits_for_evictor(pe->state))
		return false;
	pe->flags |= PGF_WRITE_PENDING;
	return true;
}

bool pagemap_refilled(struct pagemap *pm, uint64_t page, uint32_t *ret_freed)
{
	struct page_entry *pe = entry(pm, page);

	clean_copies_stale(pm, pe, page, ret_freed);
	if (!page_refill_gives_back(pe->state))
		return false;
	pe->flags |= PGF_WRITE_PENDING;
	return true;
}

bool pagemap_clean_dropped(struct pagemap *pm, uint64_t page, uint32_t *ret_freed)
{
	struct page_entry *pe = entry(pm, page);
	bool was_clean = pe->state == PG_RESIDENT && (pe->flags & PGF_CLEAN);

	clean_copies_stale(pm, pe, page, ret_freed);
	return was_clean;
}

enum discard_action pagemap_discarded(struct pagemap *pm, uint64_t page, uint32_t *ret_freed)
{
	struct page_entry *pe = entry(pm, page);
	enum discard_action a = page_on_discard(pe->state, pe->flags);

	no_copies_freed(ret_freed);
	switch (a) {
	case DISCARD_ZERO:
		if (pe->state == PG_RESIDENT)
			pm->hdr->resident_pages--;
		else
			pm->hdr->stored_pages--;
		pm->hdr->zero_pages++;
		drop_copies(pm, page, ret_freed);
		pe->state = PG_ZERO;
		pe->flags &= (uint8_t)~PGF_LOST;
		break;
	case DISCARD_DEFER:
		pe->flags |= PGF_DISCARDED;
		break;
	case DISCARD_NOTHING:
		break;
	}
	return a;
}

bool pagemap_fetch_begin(struct pagemap *pm, uint64_t page, uint32_t *ret_locs, uint32_t *ret_crc)
{
	struct page_entry *pe = entry(pm, page);

	if (pe->state != PG_STORED || (pe->flags & (PGF_LOST | PGF_FETCHING)))
		return false;
	pe->flags |= PGF_FETCHING;
	pagemap_get_locs(pm, page, ret_locs);
	*ret_crc = pe->crc;
	return true;
}

bool pagemap_fetch_done(struct pagemap *pm, uint64_t page, bool placed, bool clean, uint32_t *ret_freed)
{
	struct page_entry *pe = entry(pm, page);

	pe->flags &= (uint8_t)~PGF_FETCHING;
	if (!placed || !page_fetch_installs(pe->state)) {
		no_copies_freed(ret_freed);
		return false;
	}
	return install(pm, page, clean, ret_freed);
}

void pagemap_fetch_failed(struct pagemap *pm, uint64_t page)
{
	struct page_entry *pe = entry(pm, page);

	pe->flags |= PGF_LOST;
	pe->flags &= (uint8_t)~PGF_FETCHING;
}

bool pagemap_copies_lost(struct pagemap *pm, uint64_t page)
{
	struct page_entry *pe = entry(pm, page);

	if (pe->state != PG_STORED || (pe->flags & PGF_LOST))
		return false;
	pe->flags |= PGF_LOST;
	return true;
}

bool pagemap_replace_copy(struct pagemap *pm, uint64_t page, unsigned c, uint32_t old_loc, uint32_t new_loc)
{
	struct page_entry *pe = entry(pm, page);
	uint32_t locs[STORE_MAX_COPIES];

	if (c >= pm->hdr->ncopies || pe->state != PG_STORED)
		return false;
	pagemap_get_locs(pm, page, locs);
	if (locs[c] != old_loc)
		return false;
	locs[c] = new_loc;
	set_locs(pm, pe, locs);
	return true;
}

bool pagemap_sample_begin(struct pagemap *pm, uint64_t page)
{
	struct page_entry *pe = entry(pm, page);

	if (pe->state != PG_RESIDENT || (pe->flags & PGF_SAMPLING))
		return false;
	pe->flags |= PGF_SAMPLING;
	return true;
}

bool pagemap_sample_end(struct pagemap *pm, uint64_t page)
{
	struct page_entry *pe = entry(pm, page);

	if (!(pe->flags & PGF_SAMPLING))
		return false;
	pe->flags &= (uint8_t)~PGF_SAMPLING;
	return true;
}

bool pagemap_evict_begin(struct pagemap *pm, uint64_t page)
{
	struct page_entry *pe = entry(pm, page);

	if (pe->state != PG_RESIDENT)
		return false;
	/* A clean page's copies stay as they are, sealed under the version they have. */
	if ((pm->hdr->flags & PAGEMAP_F_VERSIONS) && !(pe->flags & PGF_CLEAN)) {
		if (pe->version == UINT32_MAX)
			return false;
		pe->version++;
	}
	pe->state = PG_EVICTING;
	pe->flags &= PGF_CLEAN | PGF_SAMPLING;
	return true;
}

bool pagemap_evict_unclean(struct pagemap *pm, uint64_t page, uint32_t *ret_freed)
{
	struct page_entry *pe = entry(pm, page);

	drop_copies(pm, page, ret_freed);
	pe->flags &= (uint8_t)~PGF_CLEAN;
	if (!(pm->hdr->flags & PAGEMAP_F_VERSIONS))
		return true;
	if (pe->version == UINT32_MAX)
		return false;
	pe->version++;
	return true;
}

enum evict_verdict pagemap_evict_verdict(const struct pagemap *pm, uint64_t page, bool stored)
{
	return page_evict_verdict(stored, pagemap_entry(pm, page)->flags);
}

void pagemap_evict_commit(struct pagemap *pm, uint64_t page, const uint32_t *locs, uint32_t crc)
{
	struct page_entry *pe = entry(pm, page);

	pe->state = PG_EVICT_COMMITTED;
	set_locs(pm, pe, locs);
	if (!(pm->hdr->flags & PAGEMAP_F_VERSIONS))
		pe->crc = crc;
}

void pagemap_evict_give_back(struct pagemap *pm, uint64_t page)
{
	struct page_entry *pe = entry(pm, page);

	drop_copies(pm, page, NULL); /* the evictor holds them (a clean page's too: it read them at the pick) */
	pe->state = PG_RESIDENT;
	pe->flags &= PGF_SAMPLING; /* its REMOVE is still to come */
}

void pagemap_evict_forget(struct pagemap *pm, uint64_t page)
{
	struct page_entry *pe = entry(pm, page);

	drop_copies(pm, page, NULL);
	pe->state = PG_ZERO;
	pe->flags &= PGF_SAMPLING; /* its REMOVE is still to come */
	pm->hdr->resident_pages--;
	pm->hdr->zero_pages++;
}

bool pagemap_punched(struct pagemap *pm, uint64_t page, bool zero, bool *ret_wake, uint32_t *ret_freed)
{
	struct page_entry *pe = entry(pm, page);

	no_copies_freed(ret_freed);
	*ret_wake = false;
	if (pe->state != PG_EVICT_COMMITTED)
		return false;
	pe->state = page_after_punch(zero, pe->flags, ret_wake);
	pm->hdr->resident_pages--;
	if (pe->state == PG_ZERO) {
		drop_copies(pm, page, ret_freed);
		pm->hdr->zero_pages++;
	} else {
		pm->hdr->stored_pages++;
	}
	pe->flags &= PGF_SAMPLING; /* its REMOVE is still to come */
	return true;
}

void pagemap_adopt_begin(struct pagemap *pm)
{
	pm->hdr->resident_pages = pm->hdr->stored_pages = pm->hdr->zero_pages = 0;
}

enum page_state pagemap_adopt(struct pagemap *pm, uint64_t page, bool has_data)
{
	struct page_entry *pe = entry(pm, page);
	enum page_state st = page_on_adopt(pe->state, pe->flags, has_data);

	if (st == PG_UNTOUCHED && pe->state == PG_UNTOUCHED)
		return st; /* nothing to write: the entry may be a hole of the file */
	if (st != PG_STORED)
		drop_copies(pm, page, NULL);
	/* An unmap the shim was asked for still causes its REMOVE event, which is no discard. */
	pe->flags = (uint8_t)((st == PG_STORED ? pe->flags & PGF_LOST : 0) | (pe->flags & PGF_SAMPLING));
	pe->state = (uint8_t)st;
	pm->hdr->resident_pages += st == PG_RESIDENT;
	pm->hdr->stored_pages += st == PG_STORED;
	pm->hdr->zero_pages += st == PG_ZERO;
	return st;
}
