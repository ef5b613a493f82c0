/* SPDX-License-Identifier: MIT */
/*
 * The disk cache's store: fixed-size disk blocks kept in donor memory
 * through the pager's transports (transport/), sealed with AES-256-GCM like
 * guest pages (uffd-pager/seal.h) under a key drawn at start and never
 * written anywhere, so nothing survives the process and a donor sees only
 * ciphertext. Every block is bound to its disk position and to the
 * generation it was stored at: a donor that returns another block, an
 * older copy or flipped bits produces a miss, never data. A lost donor
 * loses only its blocks (misses). The directory lives in this process;
 * replacement is CLOCK (policy/disk-cache.h).
 *
 * Every call is safe from any number of threads (the nbdkit filter runs
 * requests in parallel). A lookup holds the directory lock only to find
 * its block, never across a donor round trip. A store only queues a copy
 * of the block (bounded: a full queue skips the block) for the cache's
 * writer thread, which seals and submits it (preferably while a request
 * waits for the image); until the donor acknowledged it, lookups are
 * served from the queued copy.
 *
 * Stale fills: a read of the image races with a write of the same block.
 * dcache_snapshot() taken before touching the image, handed to
 * dcache_store()/dcache_update() after, tells whether an invalidation of the
 * block (dcache_update, dcache_drop) came in between; then the copy is not
 * kept.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DCACHE_MAX_DONORS 16
#define DCACHE_BLOCK_MIN 4096u
#define DCACHE_BLOCK_MAX (1u << 20)
#define DCACHE_QUEUE_DEFAULT (32ULL << 20)

struct dcache;

struct dcache_config {
	uint64_t size;	     /* bytes of donor memory to use (whole blocks) */
	uint32_t block_size; /* power of two, DCACHE_BLOCK_MIN..DCACHE_BLOCK_MAX */
	const char *donors[DCACHE_MAX_DONORS];
	unsigned n_donors;
	const char *key_file;  /* donor pre-shared key; NULL: none (loopback donors without a key) */
	const char *client_id; /* who the cache is to the donors */
	unsigned timeout_ms;   /* per donor request; 0 = 2000 */
	uint64_t queue_bytes;  /* blocks waiting for their store, at most; 0 = DCACHE_QUEUE_DEFAULT */
	bool write_fill;       /* whole-block writes fill the cache too (else they only replace copies) */
};

struct dcache_stats {
	uint64_t size, block_size, used_bytes;
	uint64_t hits, misses;		    /* block lookups */
	uint64_t bytes_from_memory, bytes_from_disk; /* request bytes served by donors / by the image */
	uint64_t stores, store_failures, drops;
	uint64_t store_skips; /* blocks not cached: the store queue was full */
	uint64_t integrity_failures, donor_failures;
	unsigned donors, donors_up;
	uint64_t donor_capacity; /* free bytes the donors reported at start */
	uint64_t queued_bytes;	 /* blocks waiting for their store now */
};

/* Checks cfg and loads the key; connects nothing. Errors name the parameter on the log. Returns 0 or -errno. */
int dcache_new(const struct dcache_config *cfg, struct dcache **ret);
/*
 * Connects the donors and starts the writer thread (threads start here: call
 * after any fork). A donor that cannot be reached is retried later. Returns 0 or -errno.
 */
int dcache_start(struct dcache *dc);
/* Stops the writer, gives the donors their memory back. No other call may run. NULL-safe. */
void dcache_free(struct dcache *dc);

uint32_t dcache_block_size(const struct dcache *dc);
/*
 * Reads the 4 KiB pages [first, first+n) of block key into buf (a small read
 * fetches only the pages it needs). Returns 0 on a hit, -ENOENT on a miss
 * (including a copy that failed to open or a donor that failed; the block
 * is forgotten then), -EINVAL for pages outside the block.
 */
int dcache_lookup(struct dcache *dc, uint64_t key, uint32_t first, uint32_t n, void *buf);
/*
 * The filter brackets each wait for the image with busy true, then false:
 * the writer stores queued blocks while a request waits, when the CPU is
 * free (the guest is waiting too), rather than while the guest runs.
 */
void dcache_image_busy(struct dcache *dc, bool busy);
/* The invalidation count of block key, to take before reading or writing its bytes in the image. */
uint32_t dcache_snapshot(struct dcache *dc, uint64_t key);
/*
 * Queues block key (read from the image after snap was taken) to be cached,
 * evicting by CLOCK, unless it is cached already, an invalidation came
 * since snap, or the queue is full. Never waits for a donor.
 */
void dcache_store(struct dcache *dc, uint64_t key, const void *buf, uint32_t snap);
/*
 * After the image took buf as block key's new bytes: replaces the block's
 * copy, if it has one and no other invalidation came since snap (taken
 * before the image write), else drops it. With write_fill, a block without
 * a copy is queued as dcache_store() would.
 */
void dcache_update(struct dcache *dc, uint64_t key, const void *buf, uint32_t snap);
/* Forgets block key (its bytes in the image changed or may have). */
void dcache_drop(struct dcache *dc, uint64_t key);
/* Counts bytes served to clients: from memory (hits) or from the image (misses, pass-through). */
void dcache_count_bytes(struct dcache *dc, uint64_t from_memory, uint64_t from_disk);
void dcache_get_stats(struct dcache *dc, struct dcache_stats *ret);
/* Writes the counters as one JSON object to path (atomically: temporary file and rename). Returns 0 or -errno. */
int dcache_write_stats(struct dcache *dc, const char *path);
