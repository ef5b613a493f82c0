/* SPDX-License-Identifier: MIT */
/* Log-linear latency histogram used for fault-service and access latencies. */
#include "histogram.h"

static unsigned bucket_of(uint64_t v)
{
	unsigned msb, sub;

	if (v < HIST_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	/* the two bits below the leading one pick the quarter of the octave */
	sub = (unsigned)(v >> (msb - 2)) & (HIST_SUB - 1);
	return msb * HIST_SUB + sub;
}

uint64_t hist_bucket_limit(unsigned i)
{
	unsigned msb = i / HIST_SUB, sub = i % HIST_SUB;

	if (i < HIST_SUB)
		return i;
	if (msb >= 63)
		return UINT64_MAX;
	/* values in bucket: [ (4+sub) << (msb-2), (5+sub) << (msb-2) ) */
	return (((uint64_t)(HIST_SUB + sub + 1)) << (msb - 2)) - 1;
}

void hist_record(struct histogram *h, uint64_t value)
{
	unsigned b = bucket_of(value);

	if (b >= HIST_BUCKETS)
		b = HIST_BUCKETS - 1;
	h->buckets[b]++;
	h->count++;
	h->sum += value;
	if (value > h->max)
		h->max = value;
}

uint64_t hist_quantile(const struct histogram *h, double q)
{
	uint64_t total = 0, target, seen = 0;

	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		total += h->buckets[i];
	if (!total)
		return 0;
	target = (uint64_t)(q * (double)total);
	if (target >= total)
		target = total - 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen > target) {
			uint64_t lim = hist_bucket_limit(i);
			return lim < h->max ? lim : h->max;
		}
	}
	return h->max;
}

void hist_merge(struct histogram *into, const struct histogram *from)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->buckets[i] += from->buckets[i];
	into->count += from->count;
	into->sum += from->sum;
	if (from->max > into->max)
		into->max = from->max;
}
