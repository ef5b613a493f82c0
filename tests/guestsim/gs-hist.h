/* SPDX-License-Identifier: MIT */
/*
 * Latency histogram for guestsim: log2 octaves split into 32 linear
 * sub-buckets (about 3% resolution), fixed size so each thread records
 * without allocation or locks and the main thread merges afterwards.
 */
#pragma once

#include <stdint.h>

#define GS_HIST_SUB_BITS 5
#define GS_HIST_SUB (1U << GS_HIST_SUB_BITS)
#define GS_HIST_BUCKETS ((64 - GS_HIST_SUB_BITS + 1) * GS_HIST_SUB)

struct gs_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t min;
	uint64_t max;
	uint64_t buckets[GS_HIST_BUCKETS];
};

static inline unsigned gs_hist_bucket(uint64_t v)
{
	unsigned e;

	if (v < GS_HIST_SUB)
		return (unsigned)v;
	e = 63U - (unsigned)__builtin_clzll(v); /* >= GS_HIST_SUB_BITS */
	return (e - GS_HIST_SUB_BITS + 1) * GS_HIST_SUB +
	       (unsigned)((v >> (e - GS_HIST_SUB_BITS)) & (GS_HIST_SUB - 1));
}

static inline void gs_hist_add(struct gs_hist *h, uint64_t v)
{
	if (!h->count || v < h->min)
		h->min = v;
	if (v > h->max)
		h->max = v;
	h->count++;
	h->sum += v;
	h->buckets[gs_hist_bucket(v)]++;
}

void gs_hist_merge(struct gs_hist *into, const struct gs_hist *from);
/* Value at quantile q in [0, 1] (midpoint of its bucket, capped at max); 0 if empty. */
uint64_t gs_hist_quantile(const struct gs_hist *h, double q);
/* Lowest value that falls in bucket b (exported for the unit checks). */
uint64_t gs_hist_bucket_low(unsigned b);
