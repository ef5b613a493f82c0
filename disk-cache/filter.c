/* SPDX-License-Identifier: MIT */
/*
 * nbdkit-uffdvm-cache-filter: an nbdkit filter that keeps the image's
 * blocks in donor memory (dcache.h) over whatever plugin serves the image.
 * Reads: a hit comes from a donor; a miss is read from the plugin (runs of
 * missing blocks in one request), answered, and queued for the cache's
 * writer thread (a full queue skips the block). Writes are write-through: the
 * plugin has every byte before the client hears back, and a block's cached
 * copy is replaced when the write covers it whole and dropped otherwise, so
 * losing the cache loses nothing. Trim and zero pass through and drop the
 * blocks they touch; flush and FUA pass through (the cache holds nothing
 * the image lacks). Requests run in parallel (the plugin below permitting):
 * the cache takes its lock only to find or queue a block. Counters go to a
 * JSON file (cache-stats=) that is rewritten while they change and at exit.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "dcache.h"
#include "disk-cache.h"
#include "log.h"
#include "util.h"

#define MAX_EXPORTS 4096	     /* export index: 12 bits of the block key */
#define MAX_BLOCKS (1ULL << 40) /* block number: the other 40 bits (4 PiB in 4 KiB blocks) */
#define STATS_PERIOD_MS 250

static struct dcache_config cfg = { .block_size = 65536 };
static char default_id[65];
static char *stats_path; /* config values are copied: nbdkit does not promise to keep them */
static struct dcache *dc;

static pthread_mutex_t exports_lock = PTHREAD_MUTEX_INITIALIZER;
static char *exports[MAX_EXPORTS];
static unsigned n_exports;

static pthread_t stats_thread;
static bool stats_running, stats_stop;
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stats_cond = PTHREAD_COND_INITIALIZER;

/*
 * Per-thread scratch of two blocks (a hit's pages, a one-block fill), kept
 * for the thread's life: allocating 64 KiB per request had glibc's thread
 * arenas return and fault in the memory on every miss.
 */
static pthread_key_t scratch_key;
static bool scratch_key_made;

static uint8_t *scratch(void)
{
	uint8_t *p = pthread_getspecific(scratch_key);

	if (!p) {
		p = aligned_alloc(4096, 2 * (size_t)dcache_block_size(dc));
		if (p && pthread_setspecific(scratch_key, p) != 0) {
			free(p);
			p = NULL;
		}
	}
	return p;
}

struct handle {
	uint64_t key_base; /* export index << 40 */
	uint64_t size;
};

static void cache_load(void)
{
	scratch_key_made = pthread_key_create(&scratch_key, free) == 0;
	log_set_prefix("uffdvm-cache");
	snprintf(default_id, sizeof(default_id), "uffd-disk-%ld", (long)getpid());
	cfg.client_id = default_id;
}

static int cache_config(nbdkit_next_config *next, nbdkit_backend *nxdata, const char *key, const char *value)
{
	int64_t v;

	if (strcmp(key, "cache-queue") == 0) {
		v = nbdkit_parse_size(value);
		if (v < 0)
			return -1;
		if (v == 0) {
			nbdkit_error("cache-queue=%s: must be at least one block", value);
			return -1;
		}
		cfg.queue_bytes = (uint64_t)v;
		return 0;
	}
	if (strcmp(key, "cache-size") == 0 || strcmp(key, "cache-block-size") == 0) {
		v = nbdkit_parse_size(value);
		if (v < 0)
			return -1;
		if (key[6] == 's')
			cfg.size = (uint64_t)v;
		else if ((uint64_t)v > DCACHE_BLOCK_MAX) {
			nbdkit_error("cache-block-size=%s: too large (allowed: a power of two from 4K to 1M)", value);
			return -1;
		} else
			cfg.block_size = (uint32_t)v;
		return 0;
	}
	if (strcmp(key, "cache-donor") == 0) {
		if (cfg.n_donors == DCACHE_MAX_DONORS) {
			nbdkit_error("cache-donor=%s: at most %d donors", value, DCACHE_MAX_DONORS);
			return -1;
		}
		if (!(cfg.donors[cfg.n_donors] = strdup(value)))
			return -1;
		cfg.n_donors++;
		return 0;
	}
	if (strcmp(key, "cache-key") == 0) {
		free((char *)cfg.key_file);
		if (!(cfg.key_file = strdup(value)))
			return -1;
		return 0;
	}
	if (strcmp(key, "cache-client-id") == 0) {
		if (cfg.client_id != default_id)
			free((char *)cfg.client_id);
		if (!(cfg.client_id = strdup(value)))
			return -1;
		return 0;
	}
	if (strcmp(key, "cache-stats") == 0) {
		free(stats_path);
		if (!(stats_path = strdup(value)))
			return -1;
		return 0;
	}
	if (strcmp(key, "cache-write-fill") == 0) {
		int v2 = nbdkit_parse_bool(value);

		if (v2 < 0)
			return -1;
		cfg.write_fill = v2;
		return 0;
	}
	if (strcmp(key, "cache-timeout-ms") == 0)
		return nbdkit_parse_unsigned(key, value, &cfg.timeout_ms);
	return next(nxdata, key, value);
}

static int cache_config_complete(nbdkit_next_config_complete *next, nbdkit_backend *nxdata)
{
	int r;

	if (!scratch_key_made) {
		nbdkit_error("cannot make the per-thread scratch key");
		return -1;
	}
	if (cfg.size == 0) {
		nbdkit_error("cache-size is required (a size like 512M or 4G)");
		return -1;
	}
	if (cfg.n_donors == 0) {
		nbdkit_error("at least one cache-donor=tcp://HOST:PORT (or rdma://HOST:PORT) is required");
		return -1;
	}
	/*
	 * Named here, and with strerrordesc_np(): a translated strerror() at this
	 * stage leaves glibc's locale lock to deadlock nbdkit's exit under a
	 * preloaded sanitizer runtime.
	 */
	if (cfg.key_file && access(cfg.key_file, R_OK) < 0) {
		nbdkit_error("cache-key=%s: %s", cfg.key_file, strerrordesc_np(errno));
		return -1;
	}
	r = dcache_new(&cfg, &dc);
	if (r < 0) {
		nbdkit_error("cannot set up the disk cache: %s (see the messages above)", strerrordesc_np(-r));
		return -1;
	}
	return next(nxdata);
}

static void publish_stats(void)
{
	int r;

	if (!stats_path)
		return;
	r = dcache_write_stats(dc, stats_path);
	if (r < 0)
		nbdkit_debug("cannot write %s: %s", stats_path, strerrordesc_np(-r));
}

/* Rewrites the stats file while the counters move; idle, it costs nothing but a wakeup and a poll. */
static void *stats_main(void *arg)
{
	struct dcache_stats last = { 0 }, now;
	struct timespec ts;

	pthread_mutex_lock(&stats_lock);
	while (!stats_stop) {
		pthread_mutex_unlock(&stats_lock);
		dcache_get_stats(dc, &now);
		if (memcmp(&now, &last, sizeof(now)) != 0) {
			publish_stats();
			last = now;
		}
		pthread_mutex_lock(&stats_lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += STATS_PERIOD_MS * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		if (!stats_stop)
			pthread_cond_timedwait(&stats_cond, &stats_lock, &ts);
	}
	pthread_mutex_unlock(&stats_lock);
	return NULL;
}

/* Threads start after nbdkit's fork to the background, never before. */
static int cache_after_fork(nbdkit_backend *nxdata)
{
	int r0 = dcache_start(dc);

	if (r0 < 0) {
		nbdkit_error("cannot start the disk cache's writer thread: %s", strerrordesc_np(-r0));
		return -1;
	}
	publish_stats();
	if (stats_path) {
		int r = pthread_create(&stats_thread, NULL, stats_main, NULL);

		if (r) {
			nbdkit_error("cannot start the stats thread: %s", strerrordesc_np(r));
			return -1;
		}
		stats_running = true;
	}
	return 0;
}

static void cache_unload(void)
{
	if (stats_running) {
		pthread_mutex_lock(&stats_lock);
		stats_stop = true;
		pthread_cond_signal(&stats_cond);
		pthread_mutex_unlock(&stats_lock);
		pthread_join(stats_thread, NULL);
	}
	if (dc) {
		struct dcache_stats s;

		publish_stats();
		dcache_get_stats(dc, &s);
		log_info("disk cache: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " MiB from memory, %" PRIu64
			 " MiB from the image",
			 s.hits, s.misses, s.bytes_from_memory >> 20, s.bytes_from_disk >> 20);
	}
	dcache_free(dc);
	for (unsigned i = 0; i < n_exports; i++)
		free(exports[i]);
	for (unsigned i = 0; i < cfg.n_donors; i++)
		free((char *)cfg.donors[i]);
	free((char *)cfg.key_file);
	if (cfg.client_id != default_id)
		free((char *)cfg.client_id);
	free(stats_path);
	if (scratch_key_made)
		pthread_key_delete(scratch_key);
}

static int cache_thread_model(void) { return NBDKIT_THREAD_MODEL_PARALLEL; }

/* Exports (the file plugin's dir= mode serves one per drive) share the cache, keyed apart. */
static int export_index(const char *name)
{
	int r = -1;

	pthread_mutex_lock(&exports_lock);
	for (unsigned i = 0; i < n_exports && r < 0; i++)
		if (strcmp(exports[i], name) == 0)
			r = (int)i;
	if (r < 0 && n_exports < MAX_EXPORTS && (exports[n_exports] = strdup(name)))
		r = (int)n_exports++;
	pthread_mutex_unlock(&exports_lock);
	return r;
}

static void *cache_open(nbdkit_next_open *next, nbdkit_context *nxdata, int readonly, const char *exportname,
			int is_tls)
{
	struct handle *h;
	int idx;

	if (next(nxdata, readonly, exportname) == -1)
		return NULL;
	idx = export_index(exportname);
	if (idx < 0) {
		nbdkit_error("export '%s': too many exports (at most %d)", exportname, MAX_EXPORTS);
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		nbdkit_error("calloc: %m");
		return NULL;
	}
	h->key_base = (uint64_t)idx << 40;
	return h;
}

static void cache_close(void *handle) { free(handle); }

static int cache_prepare(nbdkit_next *next, void *handle, int readonly)
{
	struct handle *h = handle;
	int64_t size = next->get_size(next);

	if (size < 0)
		return -1;
	if ((uint64_t)size / dcache_block_size(dc) >= MAX_BLOCKS) {
		nbdkit_error("image of %" PRId64 " bytes: too large for blocks of %u", size, dcache_block_size(dc));
		return -1;
	}
	h->size = (uint64_t)size;
	return 0;
}

static void drop_span(struct handle *h, uint32_t count, uint64_t offset)
{
	struct policy_dc_span s;

	policy_dc_span(offset, count, dcache_block_size(dc), &s);
	for (uint64_t b = s.first; b < s.first + s.n; b++)
		dcache_drop(dc, h->key_base | b);
}

/* Copies the part of block b (at blk) inside [offset, offset+count) to the request's buffer. Returns the bytes. */
static uint64_t copy_out(uint8_t *buf, uint32_t count, uint64_t offset, uint64_t b, const uint8_t *blk)
{
	uint64_t bs = dcache_block_size(dc), start = b * bs, end = start + bs;
	uint64_t lo = start > offset ? start : offset, hi = end < offset + count ? end : offset + count;

	memcpy(buf + (lo - offset), blk + (lo - start), hi - lo);
	return hi - lo;
}

/* Reads blocks [first, first+n) from the plugin, serves their part of the request and stores them. */
static int fill_run(nbdkit_next *next, struct handle *h, uint8_t *buf, uint32_t count, uint64_t offset,
		    uint64_t first, uint64_t n, int *err)
{
	uint64_t bs = dcache_block_size(dc), start = first * bs, len = n * bs;
	_cleanup_free_ uint8_t *big = NULL;
	_cleanup_free_ uint32_t *snap = NULL;
	uint32_t snap1 = 0;
	uint8_t *run;
	int r;
	uint64_t served = 0;

	if (start + len > h->size)
		len = h->size - start;
	if (n == 1) {
		run = scratch() + bs; /* the caller made sure it exists */
		snap = NULL;
	} else {
		run = big = malloc(n * bs);
		snap = malloc(n * sizeof(*snap));
	}
	if (!run || (n > 1 && !snap)) {
		*err = ENOMEM;
		return -1;
	}
	/* Before the image is read: a write of these blocks meanwhile makes the copies void. */
	if (n == 1)
		snap1 = dcache_snapshot(dc, h->key_base | first);
	for (uint64_t i = 0; n > 1 && i < n; i++)
		snap[i] = dcache_snapshot(dc, h->key_base | (first + i));
	if (len < n * bs)
		memset(run + len, 0, n * bs - len); /* the tail past the end of the image is stored as zeros */
	dcache_image_busy(dc, true);
	r = next->pread(next, run, (uint32_t)len, start, 0, err);
	dcache_image_busy(dc, false);
	if (r == -1)
		return -1;
	for (uint64_t i = 0; i < n; i++) {
		served += copy_out(buf, count, offset, first + i, run + i * bs);
		dcache_store(dc, h->key_base | (first + i), run + i * bs, n == 1 ? snap1 : snap[i]);
	}
	dcache_count_bytes(dc, 0, served);
	return 0;
}

static int cache_pread(nbdkit_next *next, void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags,
		       int *err)
{
	struct handle *h = handle;
	uint32_t bs = dcache_block_size(dc);
	struct policy_dc_span s;
	uint8_t *blk = scratch();
	uint64_t run_first = 0, run_n = 0, mem = 0;

	policy_dc_span(offset, count, bs, &s);
	if (!blk) {
		*err = ENOMEM;
		return -1;
	}
	for (uint64_t b = s.first; b < s.first + s.n; b++) {
		uint64_t start = b * bs, lo = start > offset ? start : offset;
		uint64_t hi = start + bs < offset + count ? start + bs : offset + count;
		uint32_t fp = (uint32_t)((lo - start) / 4096), np = (uint32_t)((hi - 1 - start) / 4096) - fp + 1;

		/* Only the pages the request covers come from the donor. */
		if (dcache_lookup(dc, h->key_base | b, fp, np, blk) == 0) {
			if (run_n && fill_run(next, h, buf, count, offset, run_first, run_n, err) == -1)
				return -1;
			run_n = 0;
			memcpy((uint8_t *)buf + (lo - offset), blk + (lo - start - (uint64_t)fp * 4096), hi - lo);
			mem += hi - lo;
			continue;
		}
		if (!run_n)
			run_first = b;
		run_n++;
	}
	if (run_n && fill_run(next, h, buf, count, offset, run_first, run_n, err) == -1)
		return -1;
	dcache_count_bytes(dc, mem, 0);
	return 0;
}

static int cache_pwrite(nbdkit_next *next, void *handle, const void *buf, uint32_t count, uint64_t offset,
			uint32_t flags, int *err)
{
	struct handle *h = handle;
	uint32_t bs = dcache_block_size(dc);
	struct policy_dc_span s;
	_cleanup_free_ uint32_t *snap = NULL;
	int r;

	policy_dc_span(offset, count, bs, &s);
	snap = malloc(s.n * sizeof(*snap));
	if (!snap) {
		*err = ENOMEM;
		return -1;
	}
	/* Before the image write: a concurrent write of the same block makes this one drop, not replace, the copy. */
	for (uint64_t b = s.first; b < s.first + s.n; b++)
		snap[b - s.first] = dcache_snapshot(dc, h->key_base | b);
	/* The image first: the cache never holds what the image does not. */
	dcache_image_busy(dc, true);
	r = next->pwrite(next, buf, count, offset, flags, err);
	dcache_image_busy(dc, false);
	for (uint64_t b = s.first; b < s.first + s.n; b++) {
		bool whole = !(b == s.first && s.head_partial) && !(b == s.first + s.n - 1 && s.tail_partial);

		if (r == 0 && whole)
			dcache_update(dc, h->key_base | b, (const uint8_t *)buf + (b * bs - offset), snap[b - s.first]);
		else
			dcache_drop(dc, h->key_base | b); /* a failed write leaves the image unknown there */
	}
	return r;
}

static int cache_trim(nbdkit_next *next, void *handle, uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
	int r = next->trim(next, count, offset, flags, err);

	drop_span(handle, count, offset);
	return r;
}

static int cache_zero(nbdkit_next *next, void *handle, uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
	int r = next->zero(next, count, offset, flags, err);

	drop_span(handle, count, offset);
	return r;
}

static struct nbdkit_filter filter = {
	.name = "uffdvm-cache",
	.longname = "uffdvm disk cache in donor memory",
	.config_help = "cache-size=SIZE             (required) donor memory to use\n"
		       "cache-block-size=SIZE       cache block, 4K..1M, power of two (default 64K)\n"
		       "cache-donor=URL             (required, repeatable) tcp://HOST:PORT or rdma://HOST:PORT\n"
		       "cache-key=FILE              donors' pre-shared key file\n"
		       "cache-client-id=ID          who the cache is to the donors (default uffd-disk-PID)\n"
		       "cache-stats=FILE            JSON counters, rewritten while they change\n"
		       "cache-timeout-ms=MS         per donor request (default 2000)\n"
		       "cache-queue=SIZE            blocks waiting to be stored, at most (default 32M;\n"
		       "                            past it, misses are not cached)\n"
		       "cache-write-fill=BOOL       whole-block writes fill the cache too (default false)",
	.load = cache_load,
	.unload = cache_unload,
	.config = cache_config,
	.config_complete = cache_config_complete,
	.thread_model = cache_thread_model,
	.after_fork = cache_after_fork,
	.open = cache_open,
	.close = cache_close,
	.prepare = cache_prepare,
	.pread = cache_pread,
	.pwrite = cache_pwrite,
	.trim = cache_trim,
	.zero = cache_zero,
};

/* Defined by the macro below: the one symbol nbdkit looks up. */
struct nbdkit_filter *filter_init(void);
NBDKIT_REGISTER_FILTER(filter)
