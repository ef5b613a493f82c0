/* SPDX-License-Identifier: MIT */
/* Encode/decode round trips of the donor wire protocol and rejection of malformed frames. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "donor-proto.h"

static void test_header_roundtrip(void **state)
{
	struct donor_hdr h = { .opcode = DONOR_OP_READ_PAGES, .flags = DONOR_F_REPLY,
			       .req_id = 0x0102030405060708ULL, .status = EIO, .len = 4096 }, g;
	uint8_t b[DONOR_HDR_LEN];

	donor_hdr_encode(&h, b);
	/* Little-endian on the wire whatever the host is. */
	assert_int_equal(b[0], 'U');
	assert_int_equal(b[3], 'R');
	assert_int_equal(b[8], 0x08);
	assert_int_equal(b[15], 0x01);
	assert_int_equal(donor_hdr_decode(b, sizeof(b), &g), 0);
	assert_int_equal(g.opcode, h.opcode);
	assert_int_equal(g.flags, h.flags);
	assert_true(g.req_id == h.req_id);
	assert_int_equal(g.status, EIO);
	assert_int_equal(g.len, 4096);
}

static void test_header_rejects(void **state)
{
	struct donor_hdr h = { .opcode = 1, .len = 0 }, g;
	uint8_t b[DONOR_HDR_LEN], c[DONOR_HDR_LEN];

	donor_hdr_encode(&h, b);
	assert_int_equal(donor_hdr_decode(b, DONOR_HDR_LEN - 1, &g), -EAGAIN);
	memcpy(c, b, sizeof(c));
	c[0] ^= 1;
	assert_int_equal(donor_hdr_decode(c, sizeof(c), &g), -EBADMSG);
	memcpy(c, b, sizeof(c));
	c[4] = DONOR_PROTO_VERSION + 1;
	assert_int_equal(donor_hdr_decode(c, sizeof(c), &g), -EPROTONOSUPPORT);
	c[4] = 1; /* version 1 carried pages without their tags */
	assert_int_equal(donor_hdr_decode(c, sizeof(c), &g), -EPROTONOSUPPORT);
	memcpy(c, b, sizeof(c));
	c[6] = 0x80;
	assert_int_equal(donor_hdr_decode(c, sizeof(c), &g), -EBADMSG);
	h.len = DONOR_MAX_PAYLOAD + 1;
	donor_hdr_encode(&h, c);
	assert_int_equal(donor_hdr_decode(c, sizeof(c), &g), -EMSGSIZE);
	h.len = DONOR_MAX_PAYLOAD;
	donor_hdr_encode(&h, c);
	assert_int_equal(donor_hdr_decode(c, sizeof(c), &g), 0);
}

static void test_hello(void **state)
{
	struct donor_buf b;
	struct donor_hello_req req;
	struct donor_hdr h;
	char long_id[DONOR_CLIENT_ID_MAX + 2];

	donor_buf_init(&b);
	assert_int_equal(donor_enc_hello(&b, 9, "pager-1@host.a"), 0);
	assert_int_equal(donor_hdr_decode(b.data, b.len, &h), 0);
	assert_int_equal(h.opcode, DONOR_OP_HELLO);
	assert_int_equal(b.len, DONOR_HDR_LEN + h.len);
	assert_int_equal(donor_dec_hello(b.data + DONOR_HDR_LEN, h.len, &req), 0);
	assert_string_equal(req.client_id, "pager-1@host.a");
	/* Length field disagreeing with the payload, and bad characters, are refused. */
	assert_int_equal(donor_dec_hello(b.data + DONOR_HDR_LEN, h.len - 1, &req), -EBADMSG);
	b.data[DONOR_HDR_LEN + 2] = '\n';
	assert_int_equal(donor_dec_hello(b.data + DONOR_HDR_LEN, h.len, &req), -EBADMSG);
	assert_int_equal(donor_enc_hello(&b, 1, "bad id"), -EINVAL);
	assert_int_equal(donor_enc_hello(&b, 1, ""), -EINVAL);
	memset(long_id, 'x', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	assert_int_equal(donor_enc_hello(&b, 1, long_id), -EINVAL);
	long_id[DONOR_CLIENT_ID_MAX] = '\0';
	assert_int_equal(donor_enc_hello(&b, 1, long_id), 0);
	donor_buf_release(&b);
}

static void test_write_batch(void **state)
{
	static uint8_t page[PAGE_SIZE_4K];
	struct donor_write_req w;
	struct donor_buf b;
	struct donor_hdr h;
	const uint8_t *p;
	uint32_t slot;
	size_t off;

	donor_buf_init(&b);
	assert_int_equal(donor_enc_write_begin(&b, 5, 77, &off), 0);
	for (uint32_t i = 0; i < DONOR_MAX_BATCH; i++) {
		memset(page, (int)i, sizeof(page));
		assert_int_equal(donor_enc_write_add(&b, off, i * 3, page), 0);
	}
	assert_int_equal(donor_enc_write_add(&b, off, 1, page), -E2BIG);
	assert_int_equal(donor_frame_count(&b, off), DONOR_MAX_BATCH);
	assert_int_equal(donor_hdr_decode(b.data, b.len, &h), 0);
	assert_int_equal(h.len, DONOR_MAX_PAYLOAD);
	assert_int_equal(donor_dec_write(b.data + DONOR_HDR_LEN, h.len, &w), 0);
	assert_int_equal(w.slab, 77);
	assert_int_equal(w.count, DONOR_MAX_BATCH);
	for (uint32_t i = 0; i < w.count; i++) {
		donor_write_entry(&w, i, &slot, &p);
		assert_int_equal(slot, i * 3);
		assert_int_equal(p[0], (uint8_t)i);
		assert_int_equal(p[PAGE_SIZE_4K - 1], (uint8_t)i);
	}
	/* Truncated, padded, zero-count and over-count batches. */
	assert_int_equal(donor_dec_write(b.data + DONOR_HDR_LEN, h.len - 1, &w), -EBADMSG);
	assert_int_equal(donor_dec_write(b.data + DONOR_HDR_LEN, 7, &w), -EBADMSG);
	donor_set_u32(b.data + DONOR_HDR_LEN + 4, 0);
	assert_int_equal(donor_dec_write(b.data + DONOR_HDR_LEN, 8, &w), -EBADMSG);
	donor_set_u32(b.data + DONOR_HDR_LEN + 4, DONOR_MAX_BATCH + 1);
	assert_int_equal(donor_dec_write(b.data + DONOR_HDR_LEN, h.len, &w), -EBADMSG);
	donor_set_u32(b.data + DONOR_HDR_LEN + 4, 0xffffffffu);
	assert_int_equal(donor_dec_write(b.data + DONOR_HDR_LEN, h.len, &w), -EBADMSG);
	donor_buf_release(&b);
}

static void test_read_batch(void **state)
{
	struct donor_read_req r;
	struct donor_buf b;
	struct donor_hdr h;
	uint32_t slab, slot;
	size_t off, off2;

	donor_buf_init(&b);
	assert_int_equal(donor_frame_put(&b, DONOR_OP_PING, 0, 1, 0, "x", 1), 0);
	assert_int_equal(donor_enc_read_begin(&b, 6, &off), 0);
	assert_int_equal(donor_enc_read_add(&b, off, 10, 20), 0);
	assert_int_equal(donor_enc_read_add(&b, off, 11, 4095), 0);
	assert_int_equal(donor_enc_read_begin(&b, 7, &off2), 0);
	assert_int_equal(donor_enc_read_add(&b, off2, 12, 0), 0);
	/* Several frames back to back decode independently. */
	assert_int_equal(donor_hdr_decode(b.data + off, b.len - off, &h), 0);
	assert_int_equal(h.req_id, 6);
	assert_int_equal(donor_dec_read(b.data + off + DONOR_HDR_LEN, h.len, &r), 0);
	assert_int_equal(r.count, 2);
	donor_read_entry(&r, 1, &slab, &slot);
	assert_int_equal(slab, 11);
	assert_int_equal(slot, 4095);
	assert_int_equal(donor_dec_read(b.data + off + DONOR_HDR_LEN, h.len + 1, &r), -EBADMSG);
	assert_int_equal(donor_dec_read(b.data + off + DONOR_HDR_LEN, 3, &r), -EBADMSG);
	assert_int_equal(donor_hdr_decode(b.data + off2, b.len - off2, &h), 0);
	assert_int_equal(h.req_id, 7);
	assert_int_equal(h.len, 12);
	donor_buf_release(&b);
}

static void test_notify_auth_stats(void **state)
{
	uint32_t slabs[3] = { 5, 0x10006, 7 };
	struct donor_auth_reply ar = { .slab_size = DONOR_SLAB_SIZE, .page_size = 4096, .lease_s = 60,
				       .nslabs = 3 }, ag;
	struct donor_stats_reply st = { .capacity = 1ULL << 40, .used = 3, .own_bytes = 2,
					.slab_size = 9, .clients = 4 }, sg;
	struct donor_notify n;
	struct donor_buf b;
	struct donor_hdr h;

	donor_buf_init(&b);
	assert_int_equal(donor_enc_notify(&b, DONOR_NOTIFY_REVOKED, 30000, slabs, 3), 0);
	assert_int_equal(donor_hdr_decode(b.data, b.len, &h), 0);
	assert_int_equal(h.flags, DONOR_F_NOTIFY);
	assert_int_equal(h.req_id, 0);
	assert_int_equal(donor_dec_notify(b.data + DONOR_HDR_LEN, h.len, &n), 0);
	assert_int_equal(n.kind, DONOR_NOTIFY_REVOKED);
	assert_int_equal(n.deadline_ms, 30000);
	assert_int_equal(n.count, 3);
	assert_int_equal(donor_get_u32(n.slabs + 4), 0x10006);
	assert_int_equal(donor_dec_notify(b.data + DONOR_HDR_LEN, h.len - 4, &n), -EBADMSG);
	b.data[DONOR_HDR_LEN] = 9; /* unknown kind */
	assert_int_equal(donor_dec_notify(b.data + DONOR_HDR_LEN, h.len, &n), -EBADMSG);

	b.len = 0;
	memset(ar.donor_mac, 0xcd, sizeof(ar.donor_mac));
	assert_int_equal(donor_enc_auth_reply(&b, 2, &ar), 0);
	assert_int_equal(donor_hdr_decode(b.data, b.len, &h), 0);
	assert_int_equal(donor_dec_auth_reply(b.data + DONOR_HDR_LEN, h.len, &ag), 0);
	assert_memory_equal(&ar, &ag, sizeof(ar));
	assert_int_equal(donor_dec_auth_reply(b.data + DONOR_HDR_LEN, h.len - 1, &ag), -EBADMSG);

	b.len = 0;
	assert_int_equal(donor_enc_stats_reply(&b, 3, &st), 0);
	assert_int_equal(donor_hdr_decode(b.data, b.len, &h), 0);
	assert_int_equal(donor_dec_stats_reply(b.data + DONOR_HDR_LEN, h.len, &sg), 0);
	assert_true(sg.capacity == st.capacity && sg.used == 3 && sg.own_bytes == 2);
	assert_int_equal(sg.clients, 4);
	donor_buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_roundtrip), cmocka_unit_test(test_header_rejects),
		cmocka_unit_test(test_hello),		cmocka_unit_test(test_write_batch),
		cmocka_unit_test(test_read_batch),	cmocka_unit_test(test_notify_auth_stats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
