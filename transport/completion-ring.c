/* SPDX-License-Identifier: MIT */
/* The shared, preallocated completion ring of the transport backends (see completion-ring.h). */
#include "completion-ring.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "log.h"

int donor_cq_init(struct donor_cq *q, unsigned cap)
{
	*q = (struct donor_cq){ 0 };
	if (cap == 0)
		return -EINVAL;
	q->ring = calloc(cap, sizeof(*q->ring));
	if (!q->ring)
		return -ENOMEM;
	q->cap = cap;
	return 0;
}

void donor_cq_destroy(struct donor_cq *q)
{
	if (!q)
		return;
	free(q->ring);
	*q = (struct donor_cq){ 0 };
}

int donor_cq_reserve(struct donor_cq *q, unsigned n)
{
	if (n > donor_cq_room(q))
		return -EAGAIN;
	q->reserved += n;
	return 0;
}

void donor_cq_unreserve(struct donor_cq *q, unsigned n)
{
	assert(n <= q->reserved);
	q->reserved -= n;
}

void donor_cq_push(struct donor_cq *q, uint64_t cookie, int status, uint8_t op)
{
	/* A push without a reservation is a backend bug; the ring's bound is what keeps completions. */
	if (q->reserved == 0 || q->len == q->cap) {
		log_err("donor transport: completion pushed without a reservation (cookie %llu); "
			"this is a bug",
			(unsigned long long)cookie);
		assert(!"completion without a reservation");
		if (q->len == q->cap)
			return;
	} else {
		q->reserved--;
	}
	q->ring[(q->head + q->len) % q->cap] =
		(struct donor_completion){ .cookie = cookie, .status = status, .op = op };
	q->len++;
}

unsigned donor_cq_pop(struct donor_cq *q, struct donor_completion *out, unsigned max)
{
	unsigned n = 0;

	while (n < max && q->len > 0) {
		out[n++] = q->ring[q->head];
		q->head = (q->head + 1) % q->cap;
		q->len--;
	}
	return n;
}
