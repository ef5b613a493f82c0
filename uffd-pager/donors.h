/* SPDX-License-Identifier: MIT */
/*
 * The pager's donors: one connection per donor URL through transport/transport.h
 * (nothing here knows TCP from RDMA), shared by every VM. Each donor has a
 * completion thread that hands finished page I/O back to whoever waits on
 * it, and one health thread pings every donor, refreshes free capacity and
 * finishes removals. A donor whose requests fail at the connection level
 * (timeout, reset) is marked down for good; a donor that announces shutdown
 * or is drained is "draining": readable, never written. Revoked slabs are
 * remembered per donor until the VMs holding them moved their pages.
 *
 * Donor indexes are never reused within the pager's life, so a location
 * naming a dead donor can never come to mean a live one.
 */
#pragma once

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "placement.h"
#include "policy.h"

#define POOL_MAX_DONORS 64

enum pool_donor_state {
	PD_UP = 0,
	PD_DRAINING, /* readable, no new copies; pages are moved away */
	PD_REMOVING, /* draining, then closed and forgotten */
	PD_DOWN,     /* unreachable: its copies are lost */
	PD_GONE,     /* removed; the slot stays so indexes are not reused */
};

/* Many I/Os finish into one wait. */
struct pool_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned pending; /* changed under lock with __atomic ops: pool_wait_spin reads it without the lock */
	int efd; /* -1, or an eventfd poked when pending drops to 0 (for poll loops) */
};

struct pool_op {
	struct pool_wait *w;
	int status;
	uint8_t donor;
	uint8_t tag[16]; /* a read's slot tag (DONOR_TAG_SIZE), for store_check_copy */
};

struct donor_pool;

int donor_pool_new(const struct policy_pager_config *cfg, struct donor_pool **ret);
/* Closes every connection. Callers must have freed every VM first. NULL-safe. */
void donor_pool_free(struct donor_pool *p);

/* Connects a donor (also used for the configured ones). Returns the index or -errno with err. */
int donor_pool_add(struct donor_pool *p, const char *url, char *err, size_t errlen);
/* Marks a donor draining (remove: and forget it once empty). Returns 0, -ENOENT. */
int donor_pool_drain(struct donor_pool *p, const char *url, bool remove);
/* {"donors":[{"url","state","pages","capacity","used","failures"}]} */
json_t *donor_pool_json(struct donor_pool *p);
/* Donors ever added (indexes are < this). */
unsigned donor_pool_count(struct donor_pool *p);
/* The URL of entry idx ("" past the end). */
const char *donor_pool_url(struct donor_pool *p, unsigned idx);
/*
 * A VM adopted from a dead pager names this donor: the index of its
 * entry in use (up first), else of a new entry (down if it cannot be
 * reached; its slabs are not freed: they are the VM's). Returns the index
 * or -errno (the pool is full).
 */
int donor_pool_adopt(struct donor_pool *p, const char *url);
/* The index of the entry for url that is up, or -ENOENT. */
int donor_pool_find_up(struct donor_pool *p, const char *url);
/* True once any donor was configured or added: VMs then prefer donors to the spill file. */
bool donor_pool_has_donors(struct donor_pool *p);
/* Bumped on every event that may leave copies to re-create or move. */
unsigned donor_pool_generation(struct donor_pool *p);

enum pool_donor_state donor_pool_state(struct donor_pool *p, unsigned idx);
/* True if the donor's slab id was revoked (it must be emptied). */
bool donor_pool_slab_revoked(struct donor_pool *p, unsigned idx, uint32_t slab);
/* Fills views for placement: up = writable and not known full. Returns the count. */
unsigned donor_pool_views(struct donor_pool *p, struct policy_donor_view *views);

/* Synchronous slab management (evictor/repair threads). Returns 0 or -errno; -ENOSPC marks the donor full for a while. */
int donor_pool_alloc_slab(struct donor_pool *p, unsigned idx, uint32_t *ret_slab);
void donor_pool_free_slab(struct donor_pool *p, unsigned idx, uint32_t slab);
/* Per-donor page accounting across VMs. */
void donor_pool_count_pages(struct donor_pool *p, unsigned idx, int64_t delta);

/*
 * Queues one page I/O; it completes into op->w (pending is incremented
 * here). A write stores wtag (16 bytes, NULL: zeros) beside the page; a
 * read brings the slot's tag back into op->tag. Returns 0 or -errno (not
 * queued, nothing to wait for).
 */
int donor_pool_submit(struct donor_pool *p, unsigned idx, bool write, uint32_t slab, uint32_t slot, void *page,
		      const void *wtag, struct pool_op *op);
void donor_pool_flush(struct donor_pool *p, unsigned idx);
void pool_wait_init(struct pool_wait *w);
void pool_wait_destroy(struct pool_wait *w);
/* Blocks until every op queued on w has completed. Transport timeouts bound it. */
void pool_wait_all(struct pool_wait *w);
/*
 * pool_wait_all, polling for up to spin_us first: a round trip that ends
 * within it costs the waiter no sleep and the completing thread no wake-up.
 */
void pool_wait_spin(struct pool_wait *w, unsigned spin_us);
/* True when nothing queued on w is outstanding. */
bool pool_wait_done(struct pool_wait *w);

/* Pager-wide counters. */
void donor_pool_note_failure(struct donor_pool *p, unsigned idx, int err, const char *what);
