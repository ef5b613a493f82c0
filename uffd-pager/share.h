/* SPDX-License-Identifier: MIT */
/*
 * Sharing groups (docs/sharing.md): the VMs whose policies name the same
 * sharing_group store each distinct page once. A group has its own store
 * (slab table on the pager's donors, spill file STATE_DIR/groups/NAME.spill),
 * deterministic sealing keys (dseal.h) and a content index
 * (share-index.h). Its members' stores reach it through
 * share_store_ops (store.h's hooks); the pager keeps one process-wide
 * registry of groups, each living while it has members.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "donors.h"
#include "policy.h"
#include "store.h"

struct share_group;

/* The hooks a member's store calls for shared locations; arg is the group. */
extern const struct store_shared_ops share_store_ops;

/*
 * Joins the group pol->sharing_group, creating it (keys, spill file,
 * store with pol's durability) for its first member. A member whose
 * durability differs from the group's is refused. Returns 0, or -errno
 * with err naming what failed.
 */
int share_group_join(const struct policy_vm *pol, struct donor_pool *pool, const char *state_dir,
		     struct share_group **ret, char *err, size_t errlen);
/* A member leaves (its references dropped first); the last one frees the group and its copies. NULL-safe. */
void share_group_leave(struct share_group *g);
/*
 * Re-creates or moves group copies on dead or departing donors, once for
 * the group whichever member's repair thread calls (the others return at
 * once). Returns false when something must be retried.
 */
bool share_repair(struct share_group *g);
/* Every group: name, members, copies, references, bytes saved, hits. */
json_t *share_stats_json(void);
/* Pages this group stores (distinct contents) and the references to them. */
void share_group_counts(struct share_group *g, uint64_t *ret_copies, uint64_t *ret_refs);
