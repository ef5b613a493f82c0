/* SPDX-License-Identifier: MIT */
/* Page state machine decisions; see page-state.h. */
#include "page-state.h"

enum fault_action page_on_missing(uint8_t state, uint8_t flags, bool has_copy)
{
	if (flags & PGF_LOST)
		return FAULT_NOTHING;
	switch (state) {
	case PG_RESIDENT:
	case PG_EVICTING:
		return FAULT_RECHECK_ZERO;
	case PG_STORED:
	case PG_EVICT_COMMITTED:
		/* EVICT_COMMITTED: punched but not yet recorded; its copy is current
		 * because the page was write-protected while it was taken. An
		 * all-zero page has no copy. */
		return has_copy ? FAULT_FETCH : FAULT_ZERO;
	case PG_UNTOUCHED:
	case PG_ZERO:
	default:
		return FAULT_ZERO;
	}
}

bool page_wp_waits_for_evictor(uint8_t state)
{
	return state == PG_EVICTING || state == PG_EVICT_COMMITTED;
}

bool page_installs_clean(bool clean_eviction, bool write_fault, bool zeros)
{
	return clean_eviction && !write_fault && !zeros;
}

bool page_refill_gives_back(uint8_t state)
{
	/* Only while the evictor still reads it; a committed page is settled by the punch (page_after_punch). */
	return state == PG_EVICTING;
}

enum discard_action page_on_discard(uint8_t state, uint8_t flags)
{
	switch (state) {
	case PG_RESIDENT:
		return DISCARD_ZERO;
	case PG_STORED:
		/* Copies being read must not be freed: the slot could go to another page mid-read. */
		return flags & PGF_FETCHING ? DISCARD_DEFER : DISCARD_ZERO;
	case PG_EVICTING:
	case PG_EVICT_COMMITTED:
		return DISCARD_DEFER;
	default:
		return DISCARD_NOTHING;
	}
}

bool page_fetch_installs(uint8_t state)
{
	/* Anything else changed under the fetch: nothing to record (a duplicate or a filled page). */
	return state == PG_STORED || state == PG_EVICT_COMMITTED;
}

enum evict_verdict page_evict_verdict(bool stored, uint8_t flags)
{
	/* A write (or a refill after a discard) wins over everything: the guest's data is in the page. */
	if (!stored || (flags & PGF_WRITE_PENDING))
		return (flags & PGF_DISCARDED) && !(flags & PGF_WRITE_PENDING) ? EVICT_FORGET : EVICT_GIVE_BACK;
	return EVICT_COMMIT;
}

enum page_state page_after_punch(bool zero, uint8_t flags, bool *ret_wake)
{
	/* A writer that hit the page after the commit waited for the punch; its retry refaults the copy. */
	*ret_wake = flags & PGF_WRITE_PENDING;
	return zero || (flags & PGF_DISCARDED) ? PG_ZERO : PG_STORED;
}

enum page_state page_on_adopt(uint8_t state, uint8_t flags, bool has_data)
{
	/* In guest memory: whatever the map said (a zero page or copy placed, not yet recorded; an
	 * eviction not yet punched), the page is resident and its memfd content is current. */
	if (has_data)
		return PG_RESIDENT;
	switch (state) {
	case PG_EVICT_COMMITTED:
		/* Punched after its commit: stored, unless the guest discarded it after the commit. */
		return flags & PGF_DISCARDED ? PG_ZERO : PG_STORED;
	case PG_STORED:
		return PG_STORED; /* a fetch that never placed its copy: still stored */
	case PG_RESIDENT:
	case PG_EVICTING:
		/* Never punched before a commit, so only the guest's discard made this hole. */
		return PG_ZERO;
	case PG_ZERO:
		return PG_ZERO;
	case PG_UNTOUCHED:
	default:
		return PG_UNTOUCHED;
	}
}
