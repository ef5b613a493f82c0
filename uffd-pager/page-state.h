/* SPDX-License-Identifier: MIT */
/*
 * The page state machine's decisions, apart from the syscalls that carry
 * them out: what a MISSING fault, a write-protect fault, a discard and
 * each step of an eviction do to a page (pagemap.h draws the diagram and
 * names the one function that makes each change). Pure functions, so
 * every race the fault thread and the evictor can run into is a unit test
 * (tests/unit/pager/test-page-state.c); pagemap.c applies what they decide.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

enum page_state {
	PG_UNTOUCHED = 0,
	PG_RESIDENT,
	PG_ZERO,
	PG_STORED,
	PG_EVICTING,
	PG_EVICT_COMMITTED,
};

enum page_flags {
	PGF_WRITE_PENDING = 1 << 0, /* a write (or refill) hit the page during eviction */
	PGF_DISCARDED = 1 << 1,     /* the guest discarded it (EVENT_REMOVE) during eviction */
	PGF_LOST = 1 << 2,          /* no copy passed verification: never install */
	PGF_FETCHING = 1 << 3,      /* STORED page being fetched by the fault thread: copies stay, a discard is deferred */
	/*
	 * RESIDENT (or EVICTING) page installed write-protected from a stored
	 * copy that is still current: the map keeps its copies, and evicting it
	 * needs no store write. The guest's first write drops the copies.
	 */
	PGF_CLEAN = 1 << 4,
	/*
	 * The shim was asked to unmap the page (access sampling): the REMOVE
	 * event that unmapping causes is not a discard. Kept through eviction
	 * and refault until that event comes (pagemap_sample_end).
	 */
	PGF_SAMPLING = 1 << 5,
};

enum fault_action {
	FAULT_NOTHING,      /* lost page: the VM is being stopped, never install */
	FAULT_ZERO,         /* install the zero page */
	FAULT_FETCH,        /* read a stored copy, verify, install */
	FAULT_RECHECK_ZERO, /* the map calls it resident: a duplicate message (EEXIST) or a discard (zeros) */
};

/* A MISSING fault on a page in this state. has_copy: some stored location exists. */
enum fault_action page_on_missing(uint8_t state, uint8_t flags, bool has_copy);
/* A write-protect fault: true when the evictor owns the page and will wake the writer. */
bool page_wp_waits_for_evictor(uint8_t state);
/*
 * A fetched copy goes in: true when it is installed clean (write-protected,
 * copies kept). Not for a write fault (the write would drop them at once),
 * not when zeros go in (a discard), not when the policy turned it off.
 */
bool page_installs_clean(bool clean_eviction, bool write_fault, bool zeros);
/*
 * Zeros went into a page the map calls resident (the guest discarded it
 * behind our back and touched it again): true when the evictor must give
 * it back, because what it read before the discard is stale.
 */
bool page_refill_gives_back(uint8_t state);

enum discard_action {
	DISCARD_NOTHING, /* nothing held: untouched or already zero */
	DISCARD_ZERO,    /* forget it now: a hole, recorded as zero, its copies dropped */
	DISCARD_DEFER,   /* a thread works on it (eviction, fetch): PGF_DISCARDED, that thread finishes it */
};

/* The guest discarded a page (EVENT_REMOVE). */
enum discard_action page_on_discard(uint8_t state, uint8_t flags);
/* A fetch placed its copy (or zeros): true when the map records the page resident. */
bool page_fetch_installs(uint8_t state);

enum evict_verdict {
	EVICT_COMMIT,    /* copies durable, no write got through: punch it */
	EVICT_GIVE_BACK, /* keep it resident: un-protect, drop its copies */
	EVICT_FORGET,    /* the guest discarded it meanwhile: it is a hole, record it as zero */
};

/* Before the punch: stored = every required copy is durable (or the page is all zero). */
enum evict_verdict page_evict_verdict(bool stored, uint8_t flags);
/* After the punch: the recorded state (PG_STORED or PG_ZERO); *ret_wake if a writer waits. */
enum page_state page_after_punch(bool zero, uint8_t flags, bool *ret_wake);

/*
 * Adoption by a new pager after the old one died at any point: what a
 * page recorded in this state becomes, given whether the memfd holds it
 * (has_data). The memfd is the truth for what is in guest memory; a
 * hole is a stored page only where a committed copy exists, because the
 * evictor punches after the commit and never before.
 */
enum page_state page_on_adopt(uint8_t state, uint8_t flags, bool has_data);
