/* SPDX-License-Identifier: MIT */
/*
 * Fixed-size latency histogram: four buckets per power of two from 1 ns to
 * ~2^63 ns, so percentiles are within 19% without any allocation. One
 * writer per histogram (the fault thread); readers may see a torn snapshot
 * of individual counters, which only blurs a statistic.
 */
#pragma once

#include <stdint.h>

#define HIST_SUB 4
#define HIST_BUCKETS (64 * HIST_SUB)

struct histogram {
	uint64_t count;
	uint64_t max;
	uint64_t sum;
	uint64_t buckets[HIST_BUCKETS];
};

void hist_record(struct histogram *h, uint64_t value);
/* Upper bound of the bucket holding quantile q (0..1); 0 for an empty histogram. */
uint64_t hist_quantile(const struct histogram *h, double q);
/* Upper bound (inclusive) of bucket i. */
uint64_t hist_bucket_limit(unsigned i);
void hist_merge(struct histogram *into, const struct histogram *from);
