/* SPDX-License-Identifier: MIT */
/* Majority-vote stream detector for the pager's prefetcher (see prefetch.h). */
#include "prefetch.h"

#include <string.h>

void prefetch_detector_init(struct prefetch_detector *d, unsigned max_window)
{
	memset(d, 0, sizeof(*d));
	d->max_window = max_window;
	d->window = max_window < PREFETCH_MIN_WINDOW ? max_window : PREFETCH_MIN_WINDOW;
}

/* Did the fault at delta from the last one land in or right after the last prediction's window? */
static bool continues_stream(const struct prefetch_detector *d, int64_t delta)
{
	int64_t k;

	if (!d->pred_count || !d->pred_stride || delta % d->pred_stride != 0)
		return false;
	k = delta / d->pred_stride;
	return k >= 1 && k <= (int64_t)d->pred_count + PREFETCH_SLACK;
}

/* Boyer-Moore majority: the delta held by more than half of the history, or 0. */
static int64_t majority(const struct prefetch_detector *d)
{
	int64_t cand = 0;
	unsigned votes = 0, count = 0;

	for (unsigned i = 0; i < d->ndeltas; i++) {
		if (votes == 0) {
			cand = d->deltas[i];
			votes = 1;
		} else {
			votes += d->deltas[i] == cand ? 1 : -1u;
		}
	}
	for (unsigned i = 0; i < d->ndeltas; i++)
		count += d->deltas[i] == cand;
	return count * 2 > d->ndeltas ? cand : 0;
}

unsigned prefetch_on_fault(struct prefetch_detector *d, uint64_t page, int64_t *ret_stride)
{
	bool streaming = false;
	int64_t stride;

	*ret_stride = 0;
	if (!d->have_last) {
		d->have_last = true;
		d->last_page = page;
		return 0;
	}
	int64_t delta = (int64_t)(page - d->last_page);
	if (continues_stream(d, delta)) {
		delta = d->pred_stride;
		streaming = true;
	}
	d->last_page = page;
	d->deltas[d->pos] = delta;
	d->pos = (d->pos + 1) % PREFETCH_HISTORY;
	if (d->ndeltas < PREFETCH_HISTORY)
		d->ndeltas++;
	stride = d->ndeltas >= 2 ? majority(d) : 0;
	if (!stride || !d->max_window) {
		/* No trend: predict nothing and start small when one shows up. */
		d->window = d->window / 2 < PREFETCH_MIN_WINDOW ? PREFETCH_MIN_WINDOW : d->window / 2;
		if (d->window > d->max_window)
			d->window = d->max_window;
		d->pred_count = 0;
		d->pred_stride = 0;
		return 0;
	}
	if (streaming)
		d->window = d->window * 2 > d->max_window ? d->max_window : d->window * 2;
	d->pred_stride = stride;
	d->pred_count = d->window;
	*ret_stride = stride;
	return d->window;
}

void prefetch_streams_init(struct prefetch_streams *s, unsigned max_window)
{
	memset(s, 0, sizeof(*s));
	for (unsigned i = 0; i < PREFETCH_STREAMS; i++)
		prefetch_detector_init(&s->d[i], max_window);
}

unsigned prefetch_streams_on_fault(struct prefetch_streams *s, uint64_t page, int64_t *ret_stride)
{
	unsigned pick = PREFETCH_STREAMS, lru = 0;
	uint64_t best = PREFETCH_NEAR + 1;

	/* A fault that continues a stream is its own; that stream wins outright. */
	for (unsigned i = 0; i < PREFETCH_STREAMS; i++) {
		struct prefetch_detector *d = &s->d[i];
		if (d->have_last && continues_stream(d, (int64_t)(page - d->last_page))) {
			pick = i;
			goto found;
		}
	}
	for (unsigned i = 0; i < PREFETCH_STREAMS; i++) {
		struct prefetch_detector *d = &s->d[i];
		if (s->used[i] < s->used[lru])
			lru = i;
		/*
		 * A stream being predicted only takes faults that continue it: the
		 * faults of a second vCPU a few pages away would break its majority
		 * (and its own would break the other's), so they start their own.
		 */
		if (!d->have_last || d->pred_count)
			continue;
		int64_t delta = (int64_t)(page - d->last_page);
		uint64_t dist = delta < 0 ? -(uint64_t)delta : (uint64_t)delta;
		/*
		 * Nor does a stream take a fault going the other way than its last
		 * step: two vCPUs a few pages apart, faulting in turn, would give
		 * one stream steps of +d and -(d - 2) with no majority; this way
		 * the one behind starts a stream of its own, and each then takes
		 * the faults nearest ahead of its last.
		 */
		if (d->ndeltas) {
			int64_t last = d->deltas[(d->pos + PREFETCH_HISTORY - 1) % PREFETCH_HISTORY];
			if ((last < 0) != (delta < 0))
				continue;
		}
		if (dist < best) {
			best = dist;
			pick = i;
		}
	}
	if (pick == PREFETCH_STREAMS) {
		unsigned max_window = s->d[lru].max_window;
		pick = lru;
		prefetch_detector_init(&s->d[pick], max_window);
	}
found:
	s->used[pick] = ++s->clock;
	return prefetch_on_fault(&s->d[pick], page, ret_stride);
}
