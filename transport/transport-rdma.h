/* SPDX-License-Identifier: MIT */
/*
 * Extras of the rdma:// backend beyond transport/transport.h: what a slab's
 * region looks like from the wire (address and rkey) and one raw RDMA READ
 * at any address and key. They exist for the isolation test, which proves
 * that one client's keys are useless on another client's connection.
 */
#pragma once

#include <stdint.h>

#include "transport.h"

/* The remote address and rkey of one of this connection's slabs. Returns 0, -ENOENT or -EINVAL (not rdma://). */
int donor_rdma_slab_key(struct donor_conn *c, uint32_t slab, uint64_t *ret_addr, uint32_t *ret_rkey);

/*
 * Reads 4 KiB from (addr, rkey) with one RDMA READ and waits for it, with no
 * other request outstanding. Returns 0 or -errno: -EACCES for a remote
 * access error (the connection is dead afterwards, as for any QP error).
 */
int donor_rdma_raw_read(struct donor_conn *c, uint64_t addr, uint32_t rkey, void *page);
