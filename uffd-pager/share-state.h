/* SPDX-License-Identifier: MIT */
/*
 * A sharing group's state file, STATE_DIR/groups/NAME.state
 * (docs/sharing.md, "Pager restart"): what a pager that took over after
 * a crash needs to find the group's copies again. Mapped shared and
 * written in place, like a VM's state file (vmstate.h): what the pager
 * wrote survives its death in the page cache, nothing is fsync'ed.
 *
 *   0        header: format, the group's name and random id (its key
 *            file's), offsets, and a CRC32C over them
 *   4 KiB    member table: name, pid and start time of every VM that
 *            joined and did not leave
 *   ...      the group store's area (store.h: donor table, slab table)
 *   ...      one record per content entry number, growing at the end
 *
 * A record holds the entry's content key, tag and copy CRC (with a
 * CRC32C over them and the entry number), its copies' locations and its
 * state word, written last when an entry becomes ready and first when it
 * goes, so a pager dying at any point leaves every record either whole
 * and ready or free. Reference counts are not kept: they are derived
 * from the members' page maps on adoption (share.c). Locations lie
 * outside the record's CRC because repair swaps one word at a time;
 * a wrong location can only fail the copy's CRC or tag, never serve a
 * wrong byte. Not thread-safe: share.c holds the group's lock.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "share-index.h"

#define SHARE_STATE_MAX_MEMBERS 128

struct share_state;

/* Who a member is: a VM process, told apart from a recycled pid by its start time. */
struct share_member {
	char name[64];
	int32_t pid;
	uint64_t start_ns;
	uint32_t slot; /* in the member table: set by share_state_member_add */
};

/*
 * Creates DIR/NAME.state (mode 0600; a stale file of that name is
 * replaced) for a new group with this id, store area of store_bytes.
 * Returns 0 or -errno with err naming the file.
 */
int share_state_create(const char *dir, const char *name, const uint8_t id[DSEAL_ID_LEN], size_t store_bytes,
		       struct share_state **ret, char *err, size_t errlen);
/*
 * Opens and checks the file a dead pager left: this format, this group's
 * name and id, its header CRC, sizes that fit the file, and every record
 * (state word, CRC, locations). Returns 0, -ENOENT, or -EBADMSG with err
 * naming the file and what is wrong with it.
 */
int share_state_open(const char *dir, const char *name, const uint8_t id[DSEAL_ID_LEN], size_t store_bytes,
		     struct share_state **ret, char *err, size_t errlen);
/* Unmaps and closes; deletes the file unless keep_file. NULL-safe. */
void share_state_close(struct share_state *s, bool keep_file);
const char *share_state_path(const struct share_state *s);
/* The group store's area in the file (store_new's area). */
void *share_state_store_area(struct share_state *s);

/* Records the file has room for (entry numbers below this may be ready). */
uint32_t share_state_nrecs(const struct share_state *s);
/* Record id as an index entry (refs 0, SE_READY or SE_FREE); checked by share_state_open. */
void share_state_get(const struct share_state *s, uint32_t id, struct share_entry *ret);
/* Entry id is ready with e's key, tag, CRC and copies (the file grows as needed). Returns 0 or -errno. */
int share_state_set_ready(struct share_state *s, uint32_t id, const struct share_entry *e);
/* Entry id is gone (before its number may be reused). */
void share_state_set_free(struct share_state *s, uint32_t id);
/* Copy c of ready entry id is now loc (repair). */
void share_state_set_loc(struct share_state *s, uint32_t id, unsigned c, uint32_t loc);

/* Records a member in a free slot (m->slot set). Returns 0 or -ENOSPC (table full). */
int share_state_member_add(struct share_state *s, struct share_member *m);
/* The member in slot, if any: true and *ret filled. */
bool share_state_member(const struct share_state *s, uint32_t slot, struct share_member *ret);
void share_state_member_clear(struct share_state *s, uint32_t slot);
