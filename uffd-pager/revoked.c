/* SPDX-License-Identifier: MIT */
/*
 * Revoked slab ids of one donor (see revoked.h): a sorted, duplicate-free
 * array with expiry, so the pager's memory for them stays bounded and
 * lookups stay cheap however many slabs a donor revokes.
 */
#include "revoked.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void revoked_set_clear(struct revoked_set *rs)
{
	free(rs->v);
	*rs = (struct revoked_set){ 0 };
}

static int cmp_entry(const void *a, const void *b)
{
	const struct revoked_entry *x = a, *y = b;

	return x->slab < y->slab ? -1 : x->slab > y->slab;
}

void revoked_set_prune(struct revoked_set *rs, uint64_t now)
{
	unsigned k = 0;

	for (unsigned i = 0; i < rs->n; i++)
		if (rs->v[i].expires_ns >= now)
			rs->v[k++] = rs->v[i];
	rs->n = k;
}

/* Drops repeated slabs from a sorted run, keeping the first (latest expiry); returns the new length. */
static unsigned dedup(struct revoked_entry *v, unsigned n)
{
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++)
		if (k == 0 || v[k - 1].slab != v[i].slab)
			v[k++] = v[i];
	return k;
}

int revoked_set_add(struct revoked_set *rs, const uint32_t *ids, unsigned n, uint32_t deadline_ms, uint64_t now)
{
	uint64_t expires = now + (uint64_t)deadline_ms * 1000000ULL + REVOKED_MARGIN_NS;
	struct revoked_entry *add;
	unsigned m, i, j, k;

	revoked_set_prune(rs, now);
	if (n == 0)
		return 0;
	if (rs->n + n > rs->cap) {
		unsigned cap = rs->n + n;
		struct revoked_entry *v = realloc(rs->v, (size_t)cap * 2 * sizeof(*v));
		if (!v)
			return -ENOMEM;
		rs->v = v;
		rs->cap = cap;
	}
	/* The new ids, sorted, go after the room for the merge; then one merge pass from the back. */
	add = rs->v + rs->cap;
	for (i = 0; i < n; i++)
		add[i] = (struct revoked_entry){ ids[i], expires };
	qsort(add, n, sizeof(*add), cmp_entry);
	m = dedup(add, n);
	i = rs->n;
	j = m;
	k = rs->n + m;
	while (j > 0) {
		/* Equal slabs: the old entry goes behind, so the new one (the donor's latest word) is kept. */
		if (i > 0 && rs->v[i - 1].slab >= add[j - 1].slab)
			rs->v[--k] = rs->v[--i];
		else
			rs->v[--k] = add[--j];
	}
	k = dedup(rs->v, rs->n + m);
	/* Only a donor sending ids it cannot have gets here; it only loses track of its own slabs. */
	rs->n = k > REVOKED_SET_MAX ? REVOKED_SET_MAX : k;
	return k > REVOKED_SET_MAX ? -E2BIG : 0;
}

static struct revoked_entry *find(const struct revoked_set *rs, uint32_t slab)
{
	unsigned lo = 0, hi = rs->n;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (rs->v[mid].slab < slab)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < rs->n && rs->v[lo].slab == slab ? &rs->v[lo] : NULL;
}

bool revoked_set_has(const struct revoked_set *rs, uint32_t slab)
{
	return find(rs, slab) != NULL;
}

void revoked_set_remove(struct revoked_set *rs, uint32_t slab)
{
	struct revoked_entry *e = find(rs, slab);

	if (!e)
		return;
	memmove(e, e + 1, (size_t)(rs->v + rs->n - (e + 1)) * sizeof(*e));
	rs->n--;
}
