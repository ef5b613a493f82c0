/* SPDX-License-Identifier: MIT */
/*
 * Sharing groups (docs/sharing.md): the VMs whose policies name the same
 * sharing_group store each distinct page once. A group has its own store
 * (slab table on the pager's donors, spill file STATE_DIR/groups/NAME.spill),
 * deterministic sealing keys (dseal.h), a content index (share-index.h)
 * and a state file that outlives a crashed pager (share-state.h). Its members' stores reach it through
 * share_store_ops (store.h's hooks); the pager keeps one process-wide
 * registry of groups, each living while it has members.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "donors.h"
#include "policy.h"
#include "share-state.h"
#include "store.h"

struct share_group;

/* The hooks a member's store calls for shared locations; arg is the group. */
extern const struct store_shared_ops share_store_ops;

/*
 * Joins the group pol->sharing_group as member m (recorded in the
 * group's state file; m->slot set), creating the group for its first
 * member: from the files a dead pager left in STATE_DIR/groups (keys,
 * state file, spill file; its copies kept until every member it recorded
 * is back), else new ones. The group's durability becomes the strongest
 * of its members' (copies stored before are completed by share_repair).
 * Returns 0, or -errno
 * with err naming what failed (a state file that fails its checks: the
 * file and what is wrong).
 */
int share_group_join(const struct policy_vm *pol, struct donor_pool *pool, const char *state_dir,
		     struct share_member *m, struct share_group **ret, char *err, size_t errlen);
/*
 * The member's page map names these entries (one per location, n = 0 for
 * a new VM): each takes a reference. All or nothing: -EBADMSG with err
 * set when one names no entry the group holds. Once every recorded member
 * is back (or its process gone), copies no member named are freed.
 */
int share_group_adopt(struct share_group *g, const struct share_member *m, const uint32_t *ids, size_t n, char *err,
		      size_t errlen);
/*
 * A member leaves; the last one frees the group. still_named: its page
 * map still names copies it holds no references for (the VM lives on,
 * its adoption unfinished): the member stays recorded, and the group's
 * files and slabs stay for the next pager. Otherwise its references were
 * dropped first. NULL-safe.
 */
void share_group_leave(struct share_group *g, const struct share_member *m, bool still_named);
/*
 * Re-creates or moves group copies on dead or departing donors, gives
 * copies the group's raised durability, and settles members a crash left
 * to come back whose process ended: once for the group, whichever
 * member's repair thread calls (the others return at once). Returns false
 * when something must be retried.
 */
bool share_repair(struct share_group *g);
/* A group copy being prefetched, and what checks it once read: its entry's key, tag and copy CRC. */
struct share_fetch {
	uint32_t id;
	uint8_t key[DSEAL_NONCE_LEN];
	uint8_t tag[DSEAL_TAG_LEN];
	uint32_t crc;
};
/*
 * Queues an asynchronous read of the first healthy donor copy of the
 * group entry a shared location names (store_read_async on the group's
 * store; the group shares the VM's pool, so store_flush on the VM's store
 * sends it). Returns 0, or -ENOENT (no such entry, no healthy donor copy).
 */
int share_read_async(struct share_group *g, uint32_t loc, void *buf, struct pool_op *op, uint64_t *donors,
		     struct share_fetch *ret);
/* Checks a copy read so (CRC32C, then the tag under the entry's key) and opens it in place. Returns 0 or -EBADMSG. */
int share_fetch_open(struct share_group *g, const struct share_fetch *f, void *buf);
/* True while f's entry holds the content it held when the read was queued (its number may be reused). */
bool share_fetch_current(struct share_group *g, const struct share_fetch *f);
/*
 * Start-up: deletes the files of groups in STATE_DIR/groups none of whose
 * recorded members runs any more, giving their slabs back to the donors
 * of the pool that are up. Files that fail their checks are kept (and
 * logged). Returns how many groups went, or -errno.
 */
int share_remove_stale(const char *state_dir, struct donor_pool *pool);
/* Every group: name, members, copies, references, bytes saved, hits. */
json_t *share_stats_json(void);
/* Pages this group stores (distinct contents) and the references to them. */
void share_group_counts(struct share_group *g, uint64_t *ret_copies, uint64_t *ret_refs);
