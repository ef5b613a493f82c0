/* SPDX-License-Identifier: MIT */
/*
 * The completion ring both transport backends queue page completions in.
 * It is allocated once, at its full capacity (the in-flight limit), and a
 * request takes its entry when it is submitted (donor_cq_reserve), not
 * when it completes: so pushing a completion can never fail, and every
 * accepted request is delivered exactly once (transport.h's promise). An
 * entry is given back when the caller collects the completion.
 *
 * Not thread-safe: the backend calls it under its own lock.
 */
#pragma once

#include <stdint.h>

#include "transport.h"

struct donor_cq {
	struct donor_completion *ring;
	unsigned cap;	   /* entries, fixed at init */
	unsigned head;	   /* oldest queued completion */
	unsigned len;	   /* queued completions */
	unsigned reserved; /* accepted requests whose completion is not queued yet */
};

/* Allocates cap entries up front. Returns 0, -EINVAL (cap 0) or -ENOMEM. */
int donor_cq_init(struct donor_cq *q, unsigned cap);
/* Releases the entries; NULL-safe, and safe on a ring never initialised (zeroed). */
void donor_cq_destroy(struct donor_cq *q);

/* Takes n entries for requests about to be accepted. Returns 0 or -EAGAIN (limit reached; nothing taken). */
int donor_cq_reserve(struct donor_cq *q, unsigned n);
/* Gives back n entries of requests that were not accepted after all. */
void donor_cq_unreserve(struct donor_cq *q, unsigned n);
/* Queues the completion of a request that holds a reservation; cannot fail. */
void donor_cq_push(struct donor_cq *q, uint64_t cookie, int status, uint8_t op);
/* Moves up to max queued completions, oldest first, into out. Returns how many. */
unsigned donor_cq_pop(struct donor_cq *q, struct donor_completion *out, unsigned max);

static inline unsigned donor_cq_queued(const struct donor_cq *q) { return q->len; }
/* Entries neither queued nor reserved: how many more requests fit. */
static inline unsigned donor_cq_room(const struct donor_cq *q) { return q->cap - q->len - q->reserved; }
