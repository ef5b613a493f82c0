/* SPDX-License-Identifier: MIT */
/*
 * Donor side of rdma://: an rdma_cm listener next to the TCP control
 * listener on the same address and port. An authenticated control session
 * asks for a one-time token (RDMA_ATTACH), connects an RC queue pair with
 * that token as private data, and gets a protection domain of its own; each
 * slab it asks a key for (RDMA_SLAB_KEY) is registered as a memory region
 * in that domain only. The client then reads and writes pages with
 * one-sided verbs: the donor's CPU does nothing per page. Regions are
 * deregistered when their slab is freed or changes hands, and everything of
 * a session when its control connection or queue pair goes away.
 */
#pragma once

#include <stdint.h>

#include "donor-server.h"

struct donor_rdma;

/*
 * Listens for RDMA connections on host:port (numeric or resolvable).
 * Returns 0, -ENODEV (no RDMA device; logged with "no RDMA device: ...") or
 * -errno (logged).
 */
int donor_rdma_new(const char *host, const char *port, struct donor_rdma **ret_rd);
void donor_rdma_free(struct donor_rdma *rd);
/* The server whose slabs are exported; set before the first request. */
void donor_rdma_set_server(struct donor_rdma *rd, struct donor_server *srv);
/* Readable when connection events wait; call donor_rdma_handle_events then. */
int donor_rdma_fd(const struct donor_rdma *rd);
/* Handles every waiting connection event without blocking. */
void donor_rdma_handle_events(struct donor_rdma *rd);
/* The server's extension hook (donor_ext_fn); opaque is the struct donor_rdma. */
int donor_rdma_ext(void *opaque, struct donor_session *s, const struct donor_hdr *h,
		   const uint8_t *payload);
/* A control session ends: tear down its queue pair and regions. NULL-safe for rd. */
void donor_rdma_session_gone(struct donor_rdma *rd, struct donor_session *s);
/*
 * Deregisters regions whose slab was freed or no longer belongs to the
 * session's client. Call after every request batch and timer tick, before
 * any other session's input, so a freed slab's region never outlives the
 * free long enough to reach memory handed to someone else.
 */
void donor_rdma_reconcile(struct donor_rdma *rd);
