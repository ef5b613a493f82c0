/* SPDX-License-Identifier: MIT */
/* Merging and quantiles of guestsim's per-thread latency histograms. */
#include "gs-hist.h"

void gs_hist_merge(struct gs_hist *into, const struct gs_hist *from)
{
	if (!from->count)
		return;
	if (!into->count || from->min < into->min)
		into->min = from->min;
	if (from->max > into->max)
		into->max = from->max;
	into->count += from->count;
	into->sum += from->sum;
	for (unsigned i = 0; i < GS_HIST_BUCKETS; i++)
		into->buckets[i] += from->buckets[i];
}

uint64_t gs_hist_bucket_low(unsigned b)
{
	unsigned octave = b / GS_HIST_SUB, sub = b % GS_HIST_SUB;
	unsigned e;

	if (octave == 0)
		return b;
	e = octave + GS_HIST_SUB_BITS - 1;
	return (1ULL << e) + ((uint64_t)sub << (e - GS_HIST_SUB_BITS));
}

uint64_t gs_hist_quantile(const struct gs_hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (!h->count)
		return 0;
	if (q >= 1.0)
		return h->max;
	rank = (uint64_t)(q * (double)h->count);
	if (rank >= h->count)
		rank = h->count - 1;
	for (unsigned b = 0; b < GS_HIST_BUCKETS; b++) {
		seen += h->buckets[b];
		if (seen > rank) {
			uint64_t lo = gs_hist_bucket_low(b);
			uint64_t hi = b + 1 < GS_HIST_BUCKETS ? gs_hist_bucket_low(b + 1) : UINT64_MAX;
			uint64_t mid = lo + (hi - lo) / 2;

			if (mid < h->min)
				mid = h->min;
			return mid < h->max ? mid : h->max;
		}
	}
	return h->max;
}
