/* SPDX-License-Identifier: MIT */
/*
 * Victim selection: which resident pages the pager evicts when a VM is over
 * its high watermark. Eviction policies plug in through a const ops table so
 * the mechanism in uffd-pager/ stays the same whatever the policy; every
 * implementation is pure bookkeeping (no syscalls) and unit-testable alone.
 *
 * Contract between the mechanism and a policy:
 *  - The caller serializes all calls on one state (it holds a lock); the
 *    implementations do no locking of their own.
 *  - on_resident() is called whenever a page becomes resident (in fault
 *    order). It may be called again for a page that is still queued, e.g. a
 *    page the guest discarded and then refaulted without the policy having
 *    picked it: such a page keeps its old position.
 *  - pick() removes the candidates it returns from its queue. It may return
 *    pages that are no longer resident (discarded behind the policy's back):
 *    the caller skips those. A picked page re-enters the queue only through
 *    a later on_resident().
 *  - Page indices are < npages given to create(), which is at most
 *    POLICY_VICTIM_MAX_PAGES. Out-of-range indices are ignored.
 *  - on_referenced() and sample() are optional (NULL: the policy uses no
 *    access information). The mechanism learns of accesses only to pages
 *    whose mappings it dropped at sample()'s request: the guest's next
 *    access to such a page is a minor fault, reported by on_referenced().
 *    A policy without them behaves the same whether or not the mechanism
 *    can sample.
 *  - sample() returns at most max pages per call, so the mechanism calls
 *    it until it returns fewer than max, once per round of pick() calls: a
 *    window refilled only part of the way lets pick() take pages that had
 *    no time to be seen touched.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Page indices must leave two 32-bit values free for the FIFO's sentinels. */
#define POLICY_VICTIM_MAX_PAGES ((uint64_t)UINT32_MAX - 1)

struct policy_victim_ops {
	const char *name;
	/* NULL on ENOMEM (errno set), or EINVAL if npages is 0 or > POLICY_VICTIM_MAX_PAGES. */
	void *(*create)(uint64_t npages);
	void (*destroy)(void *state); /* NULL-safe */
	/* Page became resident (fault order). */
	void (*on_resident)(void *state, uint64_t page);
	/* Removes and returns up to max candidates, coldest first. */
	size_t (*pick)(void *state, uint64_t *ret_pages, size_t max);
	/* The guest touched a page whose mapping was dropped for sampling (a minor fault): it is in use. */
	void (*on_referenced)(void *state, uint64_t page);
	/* Pages whose mappings the mechanism should drop now, so that an access to them is seen before
	 * they are picked; removes nothing from the queue. Up to max; returns how many. */
	size_t (*sample)(void *state, uint64_t *ret_pages, size_t max);
};

/* First in, first out by fault order: O(1) per page, 4 bytes per guest page. No sampling. */
extern const struct policy_victim_ops policy_victim_fifo;
/*
 * CLOCK over sampled pages: a window of the oldest pages is sampled; those
 * not touched before they reach the head are evicted, touched ones go back
 * to the tail. FIFO order while nothing is sampled. O(1) per page, 9 bytes
 * per guest page.
 */
extern const struct policy_victim_ops policy_victim_clock;

/* The names of all implementations, quoted and comma-separated, as in "(allowed: ...)" of errors. */
#define POLICY_VICTIM_NAMES "\"fifo\", \"clock\""
/*
 * The default implementation's name (a per-VM policy's "victims"). FIFO:
 * measured on a 2-core host, sampled CLOCK saved ~9% of the refaults of a
 * Zipf(0.99) run at 25% local memory but ran it ~35% slower, because every
 * sampled page costs a REMOVE event that stalls the VM's uffd until the
 * shim's thread has run (docs/benchmarks.md).
 */
#define POLICY_VICTIM_DEFAULT "fifo"

/* Looks an implementation up by name ("fifo", "clock"); NULL if unknown. */
const struct policy_victim_ops *policy_victim_find(const char *name);
/* POLICY_VICTIM_NAMES, for error messages. */
const char *policy_victim_names(void);
