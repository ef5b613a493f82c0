/* SPDX-License-Identifier: MIT */
/*
 * FIFO victim selection: pages are evicted in the order they faulted in.
 * It needs no access information, which the kernel does not give cheaply
 * for a uffd-managed memfd, and so is the baseline other policies are
 * measured against. The queue is intrusive: next[page] links each queued
 * page to its successor, so memory is 4 bytes per guest page (only for the
 * parts of the page space ever queued: see NEXT_NOT_QUEUED) and every
 * operation is O(1) with no allocation after create().
 */
#include "victim.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

/*
 * next[] is stored shifted so that 0 means "not queued": the array is a
 * fresh anonymous mapping that reads as zeros, so creating the selector
 * for a huge sparse guest writes nothing and costs RAM only for the pages
 * of next[] that faulted pages touch. Stored values: 0 = not queued,
 * NEXT_END = the tail, else the successor's index + 1.
 */
#define NEXT_NOT_QUEUED 0u
#define NEXT_END UINT32_MAX
#define FIFO_END (UINT32_MAX - 1) /* head/tail of an empty queue */

struct fifo {
	uint64_t npages;
	size_t mapped; /* bytes of the mapping this struct starts */
	uint32_t head, tail;
	uint32_t next[];
};

static void *fifo_create(uint64_t npages)
{
	struct fifo *f;
	size_t len;
	void *m;

	if (npages == 0 || npages > POLICY_VICTIM_MAX_PAGES ||
	    npages > (SIZE_MAX - sizeof(*f)) / sizeof(f->next[0])) {
		errno = EINVAL;
		return NULL;
	}
	len = sizeof(*f) + npages * sizeof(f->next[0]);
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	f = m;
	f->npages = npages;
	f->mapped = len;
	f->head = f->tail = FIFO_END;
	return f;
}

static void fifo_destroy(void *state)
{
	struct fifo *f = state;

	if (f)
		munmap(f, f->mapped);
}

static void fifo_on_resident(void *state, uint64_t page)
{
	struct fifo *f = state;
	uint32_t p = (uint32_t)page;

	if (page >= f->npages || f->next[p] != NEXT_NOT_QUEUED)
		return;
	f->next[p] = NEXT_END;
	if (f->tail == FIFO_END)
		f->head = p;
	else
		f->next[f->tail] = p + 1;
	f->tail = p;
}

static size_t fifo_pick(void *state, uint64_t *ret_pages, size_t max)
{
	struct fifo *f = state;
	size_t n = 0;

	while (n < max && f->head != FIFO_END) {
		uint32_t p = f->head;

		f->head = f->next[p] == NEXT_END ? FIFO_END : f->next[p] - 1;
		f->next[p] = NEXT_NOT_QUEUED;
		ret_pages[n++] = p;
	}
	if (f->head == FIFO_END)
		f->tail = FIFO_END;
	return n;
}

/* No access information: on_referenced and sample stay NULL. */
const struct policy_victim_ops policy_victim_fifo = {
	.name = "fifo",
	.create = fifo_create,
	.destroy = fifo_destroy,
	.on_resident = fifo_on_resident,
	.pick = fifo_pick,
};
