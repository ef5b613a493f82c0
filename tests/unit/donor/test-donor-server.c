/* SPDX-License-Identifier: MIT */
/*
 * The donor state machine without sockets: authentication (right key, wrong
 * key, replayed answer, requests before authentication), ownership checks,
 * bounds, leases, capacity revocation and the control commands.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "donor-server.h"
#include "donor-slab.h"
#include "util.h"

static struct donor_key key = { .bytes = "0123456789abcdef-test-key", .len = 25 };

static struct donor_server *server(uint64_t cap, unsigned lease)
{
	struct donor_server_config cfg = { .capacity = cap, .key = &key, .lease_s = lease,
					   .revoke_grace_s = 5 };
	struct donor_server *s = donor_server_new(&cfg);

	assert_non_null(s);
	return s;
}

/* Feeds a buffer and returns the session's result; the replies stay queued. */
static int feed(struct donor_session *s, struct donor_buf *in)
{
	size_t used;
	int r = donor_session_input(s, in->data, in->len, &used);

	if (r == 0)
		assert_int_equal(used, in->len);
	in->len = 0;
	return r;
}

/* Pops the next reply; returns its status (0 or -errno) and copies the payload. */
static int pop(struct donor_session *s, struct donor_hdr *h, uint8_t *payload, size_t max)
{
	struct donor_buf *out = donor_session_out(s);

	assert_int_equal(donor_hdr_decode(out->data, out->len, h), 0);
	assert_true(out->len >= DONOR_HDR_LEN + h->len);
	assert_true(h->len <= max);
	memcpy(payload, out->data + DONOR_HDR_LEN, h->len);
	donor_buf_consume(out, DONOR_HDR_LEN + h->len);
	return -(int)h->status;
}

static int handshake(struct donor_session *s, const struct donor_key *k, const char *id,
		     struct donor_auth_req *ret_answer)
{
	static uint8_t p[512];
	uint8_t nonce[DONOR_NONCE_LEN];
	struct donor_auth_req a;
	struct donor_buf b;
	struct donor_hdr h;
	int r;

	donor_buf_init(&b);
	assert_int_equal(donor_enc_hello(&b, 1, id), 0);
	assert_int_equal(feed(s, &b), 0);
	assert_int_equal(pop(s, &h, p, sizeof(p)), 0);
	assert_int_equal(donor_dec_hello_reply(p, h.len, nonce), 0);
	memset(a.client_nonce, 0x42, sizeof(a.client_nonce));
	donor_auth_client_mac(k, nonce, a.client_nonce, id, a.mac);
	if (ret_answer)
		*ret_answer = a;
	assert_int_equal(donor_enc_auth(&b, 2, &a), 0);
	r = feed(s, &b);
	if (r == 0) {
		struct donor_auth_reply rep;
		uint8_t want[DONOR_MAC_LEN];
		assert_int_equal(pop(s, &h, p, sizeof(p)), 0);
		assert_int_equal(donor_dec_auth_reply(p, h.len, &rep), 0);
		donor_auth_donor_mac(k, nonce, a.client_nonce, id, want);
		assert_memory_equal(want, rep.donor_mac, DONOR_MAC_LEN);
		assert_int_equal(rep.slab_size, DONOR_SLAB_SIZE);
	} else {
		assert_int_equal(pop(s, &h, p, sizeof(p)), r);
	}
	donor_buf_release(&b);
	return r;
}

/*
 * The handshake's MACs are the same bytes as before libcrypto computed them
 * (values from the former hand-written HMAC-SHA256, and Python's hmac), so
 * pagers and donors of either build still authenticate each other.
 */
/* One control request; the response has the control protocol's shape (proto/ctl-proto.h). */
static json_t *control(struct donor_server *srv, const char *line)
{
	json_t *r = donor_server_control(srv, line, strlen(line));

	assert_non_null(r);
	assert_true(json_is_boolean(json_object_get(r, "ok")));
	if (json_is_true(json_object_get(r, "ok"))) {
		assert_true(json_is_object(json_object_get(r, "result")));
	} else {
		json_t *e = json_object_get(r, "error");
		assert_true(json_is_string(json_object_get(e, "code")));
		assert_true(json_is_string(json_object_get(e, "message")));
	}
	return r;
}

/* A field of an ok response's result. */
static json_t *result(json_t *r, const char *field)
{
	assert_true(json_is_true(json_object_get(r, "ok")));
	return json_object_get(json_object_get(r, "result"), field);
}

/* The message of an error response, whose code is want_code. */
static const char *error_message(json_t *r, const char *want_code)
{
	json_t *e = json_object_get(r, "error");

	assert_false(json_is_true(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(e, "code")), want_code);
	return json_string_value(json_object_get(e, "message"));
}

static void test_auth_mac_bytes(void **state)
{
	static const uint8_t client_want[DONOR_MAC_LEN] = {
		0x58, 0xad, 0x56, 0x14, 0xd9, 0x5f, 0x93, 0x55, 0x3c, 0x4d, 0xfc, 0x78, 0xc5, 0xa4, 0xb6, 0xee,
		0xdc, 0x5a, 0xa7, 0xb4, 0x36, 0xbb, 0xaa, 0xe9, 0x04, 0xc1, 0x83, 0x53, 0x5c, 0x91, 0xf2, 0x30,
	};
	static const uint8_t donor_want[DONOR_MAC_LEN] = {
		0xff, 0x1b, 0x70, 0xc5, 0x31, 0x1c, 0x75, 0x43, 0x4f, 0xfd, 0xa1, 0x22, 0x9d, 0x22, 0xf4, 0x0c,
		0x05, 0xa0, 0xca, 0x9d, 0x53, 0x89, 0xd1, 0xb1, 0x4e, 0xaf, 0x3e, 0x46, 0xec, 0xa0, 0x6a, 0x83,
	};
	struct donor_key k = { .len = 32 };
	uint8_t dn[DONOR_NONCE_LEN], cn[DONOR_NONCE_LEN], out[DONOR_MAC_LEN];
	char long_id[DONOR_CLIENT_ID_MAX + 2];

	memcpy(k.bytes, "uffdvm-test-key-0123456789abcdef", 32);
	memset(dn, 0x11, sizeof(dn));
	memset(cn, 0x42, sizeof(cn));
	assert_int_equal(donor_auth_client_mac(&k, dn, cn, "pager-1", out), 0);
	assert_memory_equal(out, client_want, DONOR_MAC_LEN);
	assert_int_equal(donor_auth_donor_mac(&k, dn, cn, "pager-1", out), 0);
	assert_memory_equal(out, donor_want, DONOR_MAC_LEN);
	assert_true(donor_ct_equal(client_want, client_want, DONOR_MAC_LEN));
	assert_false(donor_ct_equal(client_want, donor_want, DONOR_MAC_LEN));
	memset(long_id, 'a', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	assert_int_equal(donor_auth_client_mac(&k, dn, cn, long_id, out), -EINVAL);
}

static void test_auth(void **state)
{
	struct donor_server *srv = server(64 << 20, 60);
	struct donor_key wrong = key;
	struct donor_auth_req recorded;
	struct donor_session *s;
	struct donor_buf b;
	struct donor_hdr h;
	uint8_t p[64];

	wrong.bytes[0] ^= 1;
	donor_buf_init(&b);

	s = donor_session_new(srv, "good");
	assert_int_equal(handshake(s, &key, "pager-a", &recorded), 0);
	assert_false(donor_session_closing(s));
	/* A second handshake on an authenticated session is refused but harmless. */
	assert_int_equal(donor_enc_auth(&b, 3, &recorded), 0);
	assert_int_equal(feed(s, &b), 0);
	assert_int_equal(pop(s, &h, p, sizeof(p)), -EISCONN);
	donor_session_free(s);

	s = donor_session_new(srv, "wrong-key");
	assert_int_equal(handshake(s, &wrong, "pager-b", NULL), -EACCES);
	assert_true(donor_session_closing(s));
	donor_session_free(s);

	/* The answer recorded from the first session is useless against a fresh nonce. */
	s = donor_session_new(srv, "replay");
	assert_int_equal(donor_enc_hello(&b, 1, "pager-a"), 0);
	assert_int_equal(feed(s, &b), 0);
	assert_int_equal(pop(s, &h, p, sizeof(p)), 0);
	assert_int_equal(donor_enc_auth(&b, 2, &recorded), 0);
	assert_int_equal(feed(s, &b), -EACCES);
	assert_int_equal(pop(s, &h, p, sizeof(p)), -EACCES);
	assert_true(donor_session_closing(s));
	donor_session_free(s);

	/* A challenge admits one answer: even the right one is refused the second time. */
	{
		struct donor_challenge c;
		struct donor_auth_req a;
		memset(a.client_nonce, 7, sizeof(a.client_nonce));
		assert_int_equal(donor_challenge_arm(&c), 0);
		donor_auth_client_mac(&key, c.nonce, a.client_nonce, "x", a.mac);
		assert_int_equal(donor_challenge_check(&c, &key, "x", &a), 0);
		assert_int_equal(donor_challenge_check(&c, &key, "x", &a), -EALREADY);
		assert_int_equal(donor_challenge_arm(&c), 0);
		/* Same answer, other id: the id is bound into the MAC. */
		donor_auth_client_mac(&key, c.nonce, a.client_nonce, "x", a.mac);
		assert_int_equal(donor_challenge_check(&c, &key, "y", &a), -EACCES);
	}

	/* Anything but HELLO before authentication: error and disconnect. */
	s = donor_session_new(srv, "noauth");
	assert_int_equal(donor_frame_put(&b, DONOR_OP_ALLOC_SLAB, 0, 1, 0, NULL, 0), 0);
	assert_int_equal(feed(s, &b), -EACCES);
	assert_int_equal(pop(s, &h, p, sizeof(p)), -EACCES);
	assert_int_equal(donor_session_out(s)->len, 0);
	assert_true(donor_session_closing(s));
	donor_session_free(s);

	/* AUTH without HELLO. */
	s = donor_session_new(srv, "nohello");
	assert_int_equal(donor_enc_auth(&b, 2, &recorded), 0);
	assert_int_equal(feed(s, &b), -EACCES);
	donor_session_free(s);
	donor_buf_release(&b);
	donor_server_free(srv);
}

/*
 * Before authentication a frame longer than the handshake's is refused on
 * its header: the session closes without waiting for (or buffering) the
 * payload. It used to wait for up to a full 256 KiB frame per connection.
 */
static void test_preauth_frame_size(void **state)
{
	struct donor_server *srv = server(64 << 20, 60);
	struct donor_session *s;
	struct donor_buf b;
	struct donor_hdr h;
	uint8_t p[64];
	size_t used = 0;

	(void)state;
	donor_buf_init(&b);
	/* The longest legitimate HELLO still gets its challenge. */
	s = donor_session_new(srv, "long-id");
	{
		char id[DONOR_CLIENT_ID_MAX + 1];
		memset(id, 'a', DONOR_CLIENT_ID_MAX);
		id[DONOR_CLIENT_ID_MAX] = '\0';
		assert_int_equal(donor_enc_hello(&b, 1, id), 0);
	}
	assert_int_equal(b.len, DONOR_HDR_LEN + DONOR_PREAUTH_MAX_PAYLOAD);
	assert_int_equal(feed(s, &b), 0);
	assert_int_equal(pop(s, &h, p, sizeof(p)), 0);
	assert_int_equal(h.len, DONOR_NONCE_LEN);
	donor_session_free(s);

	/* One byte more, header only: refused now, not when the payload has come. */
	s = donor_session_new(srv, "oversized");
	assert_int_equal(donor_frame_put(&b, DONOR_OP_HELLO, 0, 2, 0, NULL, 0), 0);
	b.data[20] = DONOR_PREAUTH_MAX_PAYLOAD + 1;
	assert_int_equal(donor_session_input(s, b.data, b.len, &used), -EMSGSIZE);
	assert_true(donor_session_closing(s));
	assert_int_equal(pop(s, &h, p, sizeof(p)), -EMSGSIZE);
	donor_session_free(s);

	/* After authentication the full frame size applies again. */
	s = donor_session_new(srv, "authed");
	assert_int_equal(donor_session_force_auth(s, "pager-a"), 0);
	b.len = 0;
	assert_int_equal(donor_frame_put(&b, DONOR_OP_PING, 0, 3, 0, NULL, 0), 0);
	b.data[20] = DONOR_PREAUTH_MAX_PAYLOAD + 1;
	assert_int_equal(donor_session_input(s, b.data, b.len, &used), 0);
	assert_int_equal(used, 0); /* waits for its payload */
	assert_false(donor_session_closing(s));
	donor_session_free(s);
	donor_buf_release(&b);
	donor_server_free(srv);
}

static void test_key_file(void **state)
{
	char path[] = "/tmp/donor-key-XXXXXX";
	struct donor_key k;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "short\n", 6), 6);
	assert_int_equal(donor_key_load(path, &k), -EINVAL);
	/* 31 bytes once the newline is dropped: one short of the minimum. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, "0123456789abcdef0123456789abcde\n", 32, 0), 32);
	assert_int_equal(donor_key_load(path, &k), -EINVAL);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, "0123456789abcdef0123456789abcdefXYZ\n", 36, 0), 36);
	assert_int_equal(donor_key_load(path, &k), 0);
	assert_int_equal(k.len, 35); /* trailing newline dropped */
	assert_memory_equal(k.bytes, "0123456789abcdef0123456789abcdefXYZ", 35);
	assert_int_equal(fchmod(fd, 0644), 0);
	assert_int_equal(donor_key_load(path, &k), -EPERM);
	close(fd);
	unlink(path);
	assert_int_equal(donor_key_load(path, &k), -ENOENT);
}

/* Writes a key file of mode 0600 into path (a mkstemp template). */
static void key_file(char *path, const char *bytes, mode_t mode)
{
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

/* Sends HELLO for id; returns the reply's status. */
static int hello(struct donor_session *s, const char *id)
{
	uint8_t p[64];
	struct donor_buf b;
	struct donor_hdr h;
	int r;

	donor_buf_init(&b);
	assert_int_equal(donor_enc_hello(&b, 1, id), 0);
	r = feed(s, &b);
	assert_int_equal(pop(s, &h, p, sizeof(p)), r);
	donor_buf_release(&b);
	return r;
}

static void test_client_keys(void **state)
{
	char pa[] = "/tmp/donor-ckey-XXXXXX", pb[] = "/tmp/donor-ckey-XXXXXX", loose[] = "/tmp/donor-ckey-XXXXXX";
	struct donor_keyring keys = { .shared = key };
	struct donor_server_config cfg = { .capacity = 4 * DONOR_SLAB_SIZE, .keys = &keys, .lease_s = 60 };
	struct donor_server *srv;
	struct donor_session *s;

	key_file(pa, "hostA-own-key-0123456789abcdef-xyz\n", 0600);
	key_file(pb, "hostB-own-key-0123456789abcdef-xyz", 0400);
	key_file(loose, "loose-key-0123456789abcdef-0123456", 0640);
	assert_int_equal(donor_keyring_add(&keys, "hostA", pa), 0);
	assert_int_equal(donor_keyring_add(&keys, "hostB", pb), 0);
	assert_int_equal(donor_keyring_add(&keys, "hostA", pb), -EEXIST);
	assert_int_equal(donor_keyring_add(&keys, "bad id", pa), -EINVAL);
	assert_int_equal(donor_keyring_add(&keys, "hostC", loose), -EPERM);
	assert_int_equal(donor_keyring_add(&keys, "hostC", "/nonexistent/key"), -ENOENT);
	assert_int_equal(keys.n, 2);
	assert_int_equal(donor_keyring_find(&keys, "hostA")->len, 34);
	assert_memory_equal(donor_keyring_find(&keys, "hostB")->bytes, "hostB-own", 9);
	assert_ptr_equal(donor_keyring_find(&keys, "hostC"), &keys.shared);

	srv = donor_server_new(&cfg);
	assert_non_null(srv);
	/* hostA proves its own key; the shared key under its id is refused. */
	s = donor_session_new(srv, "t");
	assert_int_equal(handshake(s, donor_keyring_find(&keys, "hostA"), "hostA", NULL), 0);
	donor_session_free(s);
	s = donor_session_new(srv, "t");
	assert_int_equal(handshake(s, &key, "hostA", NULL), -EACCES);
	donor_session_free(s);
	/* Another id with the shared key still gets in. */
	s = donor_session_new(srv, "t");
	assert_int_equal(handshake(s, &key, "hostC", NULL), 0);
	donor_session_free(s);
	/* --client-keys-only: an unlisted id is refused at HELLO, a listed one still works. */
	keys.shared_refused = true;
	s = donor_session_new(srv, "t");
	assert_int_equal(hello(s, "hostC"), -EACCES);
	donor_session_free(s);
	s = donor_session_new(srv, "t");
	assert_int_equal(handshake(s, donor_keyring_find(&keys, "hostB"), "hostB", NULL), 0);
	donor_session_free(s);
	donor_server_free(srv);
	donor_keyring_clear(&keys);
	assert_int_equal(keys.n, 0);
	assert_int_equal(keys.shared.len, 0);
	unlink(pa);
	unlink(pb);
	unlink(loose);
}

static uint32_t alloc(struct donor_session *s)
{
	struct donor_buf b;
	struct donor_hdr h;
	uint8_t p[8];
	uint32_t id;

	donor_buf_init(&b);
	assert_int_equal(donor_frame_put(&b, DONOR_OP_ALLOC_SLAB, 0, 10, 0, NULL, 0), 0);
	assert_int_equal(feed(s, &b), 0);
	assert_int_equal(pop(s, &h, p, sizeof(p)), 0);
	assert_int_equal(donor_dec_u32(p, h.len, &id), 0);
	donor_buf_release(&b);
	return id;
}

static int write_page(struct donor_session *s, uint32_t slab, uint32_t slot, uint8_t fill)
{
	static uint8_t page[PAGE_SIZE_4K], p[16];
	struct donor_buf b;
	struct donor_hdr h;
	size_t off;

	memset(page, fill, sizeof(page));
	donor_buf_init(&b);
	assert_int_equal(donor_enc_write_begin(&b, 20, slab, &off), 0);
	assert_int_equal(donor_enc_write_add(&b, off, slot, page), 0);
	assert_int_equal(feed(s, &b), 0);
	donor_buf_release(&b);
	return pop(s, &h, p, sizeof(p));
}

static int read_page(struct donor_session *s, uint32_t slab, uint32_t slot, uint8_t *page)
{
	struct donor_buf b;
	struct donor_hdr h;
	size_t off;
	int r;

	donor_buf_init(&b);
	assert_int_equal(donor_enc_read_begin(&b, 30, &off), 0);
	assert_int_equal(donor_enc_read_add(&b, off, slab, slot), 0);
	assert_int_equal(feed(s, &b), 0);
	r = pop(s, &h, page, DONOR_SLOT_SIZE);
	if (r == 0)
		assert_int_equal(h.len, DONOR_SLOT_SIZE); /* the page and its tag */
	donor_buf_release(&b);
	return r;
}

static void test_isolation_and_bounds(void **state)
{
	struct donor_server *srv = server(4ULL * DONOR_SLAB_SIZE, 60);
	struct donor_session *a = donor_session_new(srv, "a"), *b = donor_session_new(srv, "b");
	static uint8_t page[DONOR_SLOT_SIZE];
	struct donor_buf in;
	struct donor_hdr h;
	uint32_t sa, le;

	assert_int_equal(donor_session_force_auth(a, "client-a"), 0);
	assert_int_equal(donor_session_force_auth(b, "client-b"), 0);
	sa = alloc(a);
	assert_int_equal(write_page(a, sa, 4095, 0x11), 0);
	assert_int_equal(read_page(a, sa, 4095, page), 0);
	assert_int_equal(page[0], 0x11);
	assert_int_equal(page[PAGE_SIZE_4K - 1], 0x11);

	assert_int_equal(write_page(b, sa, 0, 0x22), -ENOENT);
	assert_int_equal(read_page(b, sa, 4095, page), -ENOENT);
	assert_int_equal(write_page(a, sa, DONOR_SLAB_SLOTS, 0x33), -ERANGE);
	assert_int_equal(read_page(a, sa, 0xffffffffu, page), -ERANGE);
	donor_buf_init(&in);
	le = htole32(sa);
	assert_int_equal(donor_frame_put(&in, DONOR_OP_FREE_SLAB, 0, 40, 0, &le, 4), 0);
	assert_int_equal(feed(b, &in), 0);
	assert_int_equal(pop(b, &h, page, 16), -ENOENT);
	/* a's page survived b's attempts. */
	assert_int_equal(read_page(a, sa, 4095, page), 0);
	assert_int_equal(page[100], 0x11);

	/* Malformed payloads and unknown ops get error replies; the session goes on. */
	assert_int_equal(donor_frame_put(&in, DONOR_OP_READ_PAGES, 0, 41, 0, "abc", 3), 0);
	assert_int_equal(donor_frame_put(&in, 99, 0, 42, 0, NULL, 0), 0);
	assert_int_equal(donor_frame_put(&in, DONOR_OP_PING, 0, 43, 0, page, DONOR_PING_MAX + 1), 0);
	assert_int_equal(donor_frame_put(&in, DONOR_OP_PING, DONOR_F_REPLY, 44, 0, NULL, 0), 0);
	assert_int_equal(feed(a, &in), 0);
	assert_int_equal(pop(a, &h, page, PAGE_SIZE_4K), -EBADMSG);
	assert_int_equal(h.req_id, 41);
	assert_int_equal(pop(a, &h, page, PAGE_SIZE_4K), -EOPNOTSUPP);
	assert_int_equal(pop(a, &h, page, PAGE_SIZE_4K), -EMSGSIZE);
	assert_int_equal(pop(a, &h, page, PAGE_SIZE_4K), -EBADMSG);
	assert_false(donor_session_closing(a));
	assert_int_equal(write_page(a, sa, 1, 0x44), 0);

	/* Broken framing closes the session after one error reply. */
	assert_int_equal(donor_buf_put(&in, "GARBAGE GARBAGE GARBAGE!", 24), 0);
	assert_int_equal(feed(a, &in), -EBADMSG);
	assert_true(donor_session_closing(a));

	/* Capacity: 4 slabs in all. */
	alloc(b);
	alloc(b);
	alloc(b);
	assert_int_equal(donor_frame_put(&in, DONOR_OP_ALLOC_SLAB, 0, 50, 0, NULL, 0), 0);
	assert_int_equal(feed(b, &in), 0);
	assert_int_equal(pop(b, &h, page, 16), -ENOSPC);
	donor_buf_release(&in);
	donor_session_free(a);
	donor_session_free(b);
	donor_server_free(srv);
}

static void test_lease(void **state)
{
	struct donor_server *srv = server(8ULL * DONOR_SLAB_SIZE, 2);
	struct donor_session *s = donor_session_new(srv, "x");
	static uint8_t page[DONOR_SLOT_SIZE];
	json_t *st;
	uint32_t id;

	assert_int_equal(donor_session_force_auth(s, "lease-me"), 0);
	id = alloc(s);
	assert_int_equal(write_page(s, id, 7, 0x77), 0);
	donor_session_free(s);
	/* Within the lease the slab and its contents wait for the same id. */
	donor_server_tick(srv, now_ns());
	s = donor_session_new(srv, "x2");
	assert_int_equal(donor_session_force_auth(s, "lease-me"), 0);
	assert_int_equal(read_page(s, id, 7, page), 0);
	assert_int_equal(page[9], 0x77);
	donor_session_free(s);
	/* After it, they are gone. */
	donor_server_tick(srv, now_ns() + 3000000000ULL);
	st = control(srv, "{\"cmd\":\"donor.stats\"}");
	assert_int_equal(json_integer_value(result(st, "used")), 0);
	assert_int_equal(json_array_size(result(st, "clients")), 0);
	json_decref(st);
	s = donor_session_new(srv, "x3");
	assert_int_equal(donor_session_force_auth(s, "lease-me"), 0);
	assert_int_equal(read_page(s, id, 7, page), -ENOENT);
	donor_session_free(s);
	donor_server_free(srv);
}

static void test_revoke_and_control(void **state)
{
	struct donor_server *srv = server(4ULL * DONOR_SLAB_SIZE, 60);
	struct donor_session *a = donor_session_new(srv, "a"), *b = donor_session_new(srv, "b");
	static uint8_t p[1024];
	struct donor_notify n;
	struct donor_hdr h;
	uint32_t a1, a2, a3, b1;
	json_t *r;

	assert_int_equal(donor_session_force_auth(a, "big"), 0);
	assert_int_equal(donor_session_force_auth(b, "small"), 0);
	a1 = alloc(a);
	a2 = alloc(a);
	a3 = alloc(a);
	b1 = alloc(b);
	(void)a1;

	r = control(srv, "{\"cmd\":\"donor.set-capacity\",\"args\":{\"capacity\":\"32M\",\"grace\":1},\"id\":7}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 7);
	assert_int_equal(json_integer_value(result(r, "grace_s")), 1);
	json_decref(r);
	/* 64M used, 32M allowed: two slabs from the biggest holder, newest first. */
	assert_int_equal(pop(a, &h, p, sizeof(p)), 0);
	assert_int_equal(h.flags, DONOR_F_NOTIFY);
	assert_int_equal(donor_dec_notify(p, h.len, &n), 0);
	assert_int_equal(n.kind, DONOR_NOTIFY_REVOKED);
	assert_int_equal(n.deadline_ms, 1000);
	assert_int_equal(n.count, 2);
	assert_int_equal(donor_get_u32(n.slabs), a3);
	assert_int_equal(donor_get_u32(n.slabs + 4), a2);
	assert_int_equal(donor_session_out(b)->len, 0);
	/* Revoked slabs are read-only; new allocations wait for room. */
	assert_int_equal(write_page(a, a3, 0, 1), -EROFS);
	assert_int_equal(write_page(b, b1, 0, 1), 0);
	donor_server_tick(srv, now_ns() + 2000000000ULL);
	r = control(srv, "{\"cmd\":\"donor.stats\"}");
	assert_int_equal(json_integer_value(result(r, "used")), 2ULL * DONOR_SLAB_SIZE);
	assert_int_equal(json_integer_value(result(r, "capacity")), 32 << 20);
	json_decref(r);
	assert_int_equal(read_page(a, a3, 0, p), -ENOENT);

	/* Control errors name the field and the allowed values. */
	r = control(srv, "{\"cmd\":\"donor.set-capacity\",\"args\":{\"capacity\":\"lots\"}}");
	assert_non_null(strstr(error_message(r, "EINVAL"), "args.capacity"));
	json_decref(r);
	r = control(srv, "{\"cmd\":\"donor.set-capacity\",\"args\":{\"capacity\":0,\"grace\":86401}}");
	assert_non_null(strstr(error_message(r, "EINVAL"), "args.grace"));
	json_decref(r);
	r = control(srv, "{\"cmd\":");
	assert_non_null(strstr(error_message(r, "EINVAL"), "column"));
	json_decref(r);
	/* An unknown command: the message lists the two the donor has. */
	r = control(srv, "{\"cmd\":\"donor.nope\"}");
	assert_non_null(strstr(error_message(r, "ENOSYS"), "donor.stats, donor.set-capacity"));
	json_decref(r);

	donor_server_notify_shutdown(srv);
	assert_int_equal(pop(b, &h, p, sizeof(p)), 0);
	assert_int_equal(donor_dec_notify(p, h.len, &n), 0);
	assert_int_equal(n.kind, DONOR_NOTIFY_SHUTDOWN);
	donor_session_free(a);
	donor_session_free(b);
	donor_server_free(srv);
}

/*
 * 20,000 slabs over 16 clients revoked by one set-capacity: every slab
 * revoked, each client told once, and in well under the pager's 2 s ping
 * timeout (the donor answers nothing meanwhile). It took 15 s when each
 * revoked slab rescanned every client's slab list.
 */
static void test_revoke_many(void **state)
{
	enum { CLIENTS = 16, PER = 1250 };
	struct donor_server *srv = server((uint64_t)CLIENTS * PER * DONOR_SLAB_SIZE, 60);
	struct donor_session *s[CLIENTS];
	static uint8_t p[DONOR_MAX_PAYLOAD];
	struct donor_notify n;
	struct donor_hdr h;
	uint64_t t0, el;
	json_t *r;

	(void)state;
	for (unsigned c = 0; c < CLIENTS; c++) {
		char id[16];
		snprintf(id, sizeof(id), "c%u", c);
		s[c] = donor_session_new(srv, id);
		assert_int_equal(donor_session_force_auth(s[c], id), 0);
		for (unsigned i = 0; i < PER; i++) {
			uint32_t slab;
			assert_int_equal(donor_slabs_alloc(donor_server_slabs(srv), donor_session_owner(s[c]), &slab), 0);
		}
	}
	t0 = now_ns();
	r = control(srv, "{\"cmd\":\"donor.set-capacity\",\"args\":{\"capacity\":0,\"grace\":30}}");
	el = now_ns() - t0;
	print_message("revoked %u slabs in %.3f s\n", CLIENTS * PER, (double)el / 1e9);
	assert_int_equal(json_array_size(result(r, "revoked")), CLIENTS);
	json_decref(r);
	assert_true(el < 2000000000ULL);
	for (unsigned c = 0; c < CLIENTS; c++) {
		assert_int_equal(pop(s[c], &h, p, sizeof(p)), 0);
		assert_int_equal(donor_dec_notify(p, h.len, &n), 0);
		assert_int_equal(n.kind, DONOR_NOTIFY_REVOKED);
		assert_int_equal(n.count, PER);
		assert_int_equal(donor_session_out(s[c])->len, 0);
	}
	r = control(srv, "{\"cmd\":\"donor.stats\"}");
	assert_int_equal(json_integer_value(result(r, "revoked")), (uint64_t)CLIENTS * PER * DONOR_SLAB_SIZE);
	json_decref(r);
	/* Nothing more to revoke: a second call is a no-op. */
	r = control(srv, "{\"cmd\":\"donor.set-capacity\",\"args\":{\"capacity\":0}}");
	assert_int_equal(json_array_size(result(r, "revoked")), 0);
	json_decref(r);
	for (unsigned c = 0; c < CLIENTS; c++)
		donor_session_free(s[c]);
	donor_server_free(srv);
}

static void test_takeover(void **state)
{
	struct donor_server *srv = server(4ULL * DONOR_SLAB_SIZE, 60);
	struct donor_session *old = donor_session_new(srv, "old"), *new_ = donor_session_new(srv, "new");
	uint32_t id;

	assert_int_equal(donor_session_force_auth(old, "same"), 0);
	id = alloc(old);
	assert_int_equal(donor_session_force_auth(new_, "same"), 0);
	assert_true(donor_session_closing(old));
	assert_int_equal(write_page(new_, id, 3, 9), 0);
	/* Closing the replaced session does not start a lease on the live client. */
	donor_session_free(old);
	donor_server_tick(srv, now_ns() + 100000000000ULL);
	assert_int_equal(write_page(new_, id, 3, 9), 0);
	donor_session_free(new_);
	donor_server_free(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth_mac_bytes), cmocka_unit_test(test_auth),
		cmocka_unit_test(test_preauth_frame_size), cmocka_unit_test(test_key_file),
		cmocka_unit_test(test_isolation_and_bounds), cmocka_unit_test(test_lease),
		cmocka_unit_test(test_revoke_and_control), cmocka_unit_test(test_revoke_many),
		cmocka_unit_test(test_takeover), cmocka_unit_test(test_client_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
