/* SPDX-License-Identifier: MIT */
/*
 * Feeds arbitrary bytes to the donor's frame decoder and request handler.
 * The first byte picks the session kind (bit 0: already authenticated, so
 * the data-path handlers are reached; bit 1: also split the input in two
 * receives) and the rest is the byte stream a client would send. Replies
 * are decoded back to check the donor only ever emits well-formed frames.
 * Each input gets a fresh server, so slab ids are the same every run (the
 * first ALLOC_SLAB answers 0x00010001) and a seed that writes to that slab
 * reaches the write path; the suite raises -max_len so that a full batch
 * (DONOR_MAX_BATCH pages) fits.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "donor-server.h"
#include "log.h"

static void check_output(struct donor_session *s)
{
	struct donor_buf *out = donor_session_out(s);
	size_t off = 0;

	while (off < out->len) {
		struct donor_hdr h;
		if (donor_hdr_decode(out->data + off, out->len - off, &h) != 0 ||
		    out->len - off < DONOR_HDR_LEN + (size_t)h.len || !(h.flags & (DONOR_F_REPLY | DONOR_F_NOTIFY)))
			__builtin_trap();
		off += DONOR_HDR_LEN + h.len;
	}
	donor_buf_consume(out, out->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct donor_key key = { .bytes = "fuzz-key-0123456789", .len = 19 };
	struct donor_server_config cfg = { .capacity = 4ULL * DONOR_SLAB_SIZE, .key = &key,
					   .lease_s = 0, .revoke_grace_s = 0 };
	struct donor_server *srv;
	struct donor_session *s;
	size_t used = 0, cut;
	uint8_t mode;

	if (size < 1)
		return 0;
	log_set_level(LOG_LVL_ERR);
	srv = donor_server_new(&cfg);
	if (!srv)
		return 0;
	mode = data[0];
	data++;
	size--;
	s = donor_session_new(srv, "fuzz");
	if (!s) {
		donor_server_free(srv);
		return 0;
	}
	if (mode & 1)
		donor_session_force_auth(s, "fuzzer");
	cut = (mode & 2) ? size / 2 : size;
	/* Like the daemon: unconsumed bytes are offered again with more data after them. */
	if (donor_session_input(s, data, cut, &used) == 0 && !donor_session_closing(s)) {
		size_t more = 0;
		check_output(s);
		donor_session_input(s, data + used, size - used, &more);
	}
	check_output(s);
	donor_session_free(s);
	/* Leases and revocation deadlines run too, then everything goes with the server. */
	donor_server_tick(srv, UINT64_MAX / 2);
	donor_server_free(srv);
	return 0;
}
