/* SPDX-License-Identifier: MIT */
/*
 * Stream detection for prefetching (pure logic, no I/O): a majority vote
 * over the deltas between the last PREFETCH_HISTORY fetch faults, as in
 * Leap (Al Maruf & Chowdhury, ATC '20). The prefetcher only sees faults,
 * and pages it installed fault no more, so a fault that lands where the
 * last prediction's window ends (or inside it) counts as the stream going
 * on with its stride, not as one long jump. The window doubles while the
 * stream goes on and halves when a fault breaks it. Several vCPUs scanning
 * at once interleave their faults, so a small stream table (like a CPU's
 * stream prefetcher) gives each fault to the detector whose stream it
 * continues, else to the detector not yet predicting whose last fault is
 * nearest (within PREFETCH_NEAR, in the direction of its last step), else
 * to the least recently used one, started afresh. A predicting detector
 * takes no other faults, so a second vCPU nearby cannot break its majority.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define PREFETCH_HISTORY 8
#define PREFETCH_MIN_WINDOW 4u
#define PREFETCH_STREAMS 4
#define PREFETCH_NEAR 256 /* pages: a fault this close to a stream's last one belongs to it */
/*
 * Strides past a prediction's end that still continue it: vCPUs scanning
 * interleaved pages (vCPU t of n owns t, t + n, ...) share one stride-1
 * stream, and the leading vCPU's next own page lies up to n past the window.
 */
#define PREFETCH_SLACK 8

struct prefetch_detector {
	uint64_t last_page;
	bool have_last;
	int64_t deltas[PREFETCH_HISTORY];
	unsigned ndeltas, pos;
	int64_t pred_stride;  /* last prediction: last_page + pred_stride * 1..pred_count */
	unsigned pred_count;
	unsigned window, max_window;
};

/* max_window: pages per prediction at most (0 turns prediction off). */
void prefetch_detector_init(struct prefetch_detector *d, unsigned max_window);
/*
 * Records a fault on page that needed a fetch. Returns how many pages to
 * prefetch (0..max_window), at page + *ret_stride * 1..n; 0 when the last
 * faults show no majority stride.
 */
unsigned prefetch_on_fault(struct prefetch_detector *d, uint64_t page, int64_t *ret_stride);

struct prefetch_streams {
	struct prefetch_detector d[PREFETCH_STREAMS];
	uint64_t used[PREFETCH_STREAMS];
	uint64_t clock;
};

void prefetch_streams_init(struct prefetch_streams *s, unsigned max_window);
/* prefetch_on_fault on the stream the fault belongs to. */
unsigned prefetch_streams_on_fault(struct prefetch_streams *s, uint64_t page, int64_t *ret_stride);
