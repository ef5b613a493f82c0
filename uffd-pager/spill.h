/* SPDX-License-Identifier: MIT */
/*
 * Per-VM spill file: the local-disk store for evicted pages. Pages live in
 * 4 KiB slots (each group of 256 followed by a page of their tags, used
 * for sealed pages) handed out by a bitmap allocator (freed slots are reused
 * first-fit, so the file stays as small as the peak of stored pages).
 * I/O goes through io_uring, O_DIRECT where the filesystem allows. The
 * evictor writes batches through one ring, the fault thread reads through
 * another, so neither waits for the other's I/O.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPILL_NO_SLOT UINT32_MAX

struct spill;

/*
 * Creates DIR/NAME.spill (exclusive; a stale file of the same name is
 * replaced), or with adopt opens the one an earlier pager left for a VM
 * it adopts (every slot free: spill_mark_used rebuilds the allocation
 * from the page map). max_slots bounds the file (0 = as many as fit in
 * 32 bits). Returns 0 or -errno.
 */
int spill_new(const char *dir, const char *name, uint64_t max_slots, bool adopt, struct spill **ret);
/* Closes the file and deletes it, unless keep_file (the VM lives on, for the next pager). NULL-safe. */
void spill_free(struct spill *s, bool keep_file);
/* Adoption: a slot the page map names is in use. Returns 0, or -ENOSPC past the cap / -ENOMEM. */
int spill_mark_used(struct spill *s, uint32_t slot);
const char *spill_path(const struct spill *s);
bool spill_is_direct(const struct spill *s);

/* Returns a free slot, or SPILL_NO_SLOT when the cap is reached. Thread-safe. */
uint32_t spill_alloc_slot(struct spill *s);
void spill_free_slot(struct spill *s, uint32_t slot);
uint64_t spill_used_slots(struct spill *s);
void spill_set_max_slots(struct spill *s, uint64_t max_slots);

/*
 * Writes n pages (4 KiB-aligned buffers) to their slots in one submission
 * and waits for all. results[i] is 0 or -errno per page. Returns 0 if all
 * succeeded, else the first error. Evictor thread only.
 */
int spill_write_batch(struct spill *s, const uint32_t *slots, void *const *bufs, int *results, unsigned n);
/* Reads one slot into a 4 KiB-aligned buffer. Fault thread only. Returns 0 or -errno. */
int spill_read(struct spill *s, uint32_t slot, void *buf);
/*
 * spill_read in two halves, so the fault thread can send other reads while
 * the disk works: submit queues the read on the fault thread's ring (one at
 * a time), wait reaps it. Returns 0 or -errno; after a failed submit there
 * is nothing to wait for.
 */
int spill_read_submit(struct spill *s, uint32_t slot, void *buf);
int spill_read_wait(struct spill *s);
/*
 * Plain pwrite/pread of one slot, for threads other than the evictor and
 * the fault thread (the repair thread). Returns 0 or -errno.
 */
int spill_pwrite(struct spill *s, uint32_t slot, const void *buf);
int spill_pread(struct spill *s, uint32_t slot, void *buf);
/*
 * The 16-byte tag of a sealed page in a slot, stored in the same file in
 * the tag page after each group of 256 slots (buffered I/O; any thread).
 * Returns 0 or -errno.
 */
int spill_write_tag(struct spill *s, uint32_t slot, const void *tag);
int spill_read_tag(struct spill *s, uint32_t slot, void *tag);
