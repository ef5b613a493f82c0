/* SPDX-License-Identifier: MIT */
/*
 * The fault thread's prefetcher: on a fault that needs a fetch it asks the
 * stream detector (policy/prefetch.h) which pages come next, queues reads
 * of their donor copies right behind the fault's own read (one pipelined
 * batch), and once the fault's page is in, installs each prefetched page
 * that is still stored with the same checksum, exactly as its fault would
 * (same state rules; the fault thread is the only one that installs
 * stored pages, so nothing can slip in between check and install).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct vm;
struct prefetcher;

/*
 * max_window 0: never prefetch. reserved: pages the fault thread will
 * install anyway (fetches in flight); guesses never take their room.
 */
int prefetcher_new(struct vm *vm, unsigned max_window, const unsigned *reserved, struct prefetcher **ret);
void prefetcher_free(struct prefetcher *pf);
/* A fault on page needs a fetch: plans the window (nothing sent yet). */
void prefetch_plan(struct prefetcher *pf, uint64_t page);
/* True when the last plan predicted pages (not yet queued). */
bool prefetch_planned(const struct prefetcher *pf);
/* Called once the fault's own read was submitted: queues and sends the planned reads behind it. */
void prefetch_issue(struct prefetcher *pf);
/* After the fault was served: waits for the queued reads; installs them if install. */
void prefetch_finish(struct prefetcher *pf, bool install);
