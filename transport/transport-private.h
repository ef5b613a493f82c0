/* SPDX-License-Identifier: MIT */
/*
 * Between transport backends only: the RDMA backend runs its control
 * channel (authentication, slabs, notifications, its own attach and key
 * requests) over a TCP donor connection and needs a synchronous request of
 * any opcode on it.
 */
#pragma once

#include "transport.h"

/*
 * Sends one request on a tcp:// connection and waits for its reply; the
 * reply payload lands in ret_reply (may be NULL; release it). Returns 0 or
 * -errno (the donor's error status, or the connection's).
 */
int donor_tcp_call(struct donor_conn *c, uint8_t op, const void *payload, size_t len,
		   struct donor_buf *ret_reply);
