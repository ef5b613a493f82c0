/* SPDX-License-Identifier: MIT */
/*
 * The TLS layer of the donor link (proto/donor-tls.c) with both ends in
 * one process, ciphertext moved by hand between their buffers: the PSK
 * handshake and the identity it proves, a wrong key, per-id keys, a
 * non-TLS peer, and a record changed on the way, which must be refused
 * rather than delivered.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "donor-tls.h"

static const struct donor_key key = { .bytes = "unit-test-key-0123456789abcdef-0123", .len = 35 };

/* Moves all pending ciphertext from a to b, flipping byte flip_at (if >= 0). Returns bytes moved. */
static size_t move(struct donor_tls *a, struct donor_tls *b, long flip_at)
{
	uint8_t buf[65536];
	size_t n, total = 0;

	while ((n = donor_tls_net_out(a, buf, sizeof(buf))) > 0) {
		if (flip_at >= 0 && (size_t)flip_at >= total && (size_t)flip_at < total + n)
			buf[flip_at - (long)total] ^= 0x40;
		assert_int_equal(donor_tls_net_in(b, buf, n), n);
		total += n;
	}
	return total;
}

/* Runs the handshake; returns the client's and donor's results via ret_c/ret_s. */
static void handshake(struct donor_tls *c, struct donor_tls *s, int *ret_c, int *ret_s)
{
	int rc = -EAGAIN, rs = -EAGAIN;

	for (int i = 0; i < 10 && (rc == -EAGAIN || rs == -EAGAIN); i++) {
		if (rc == -EAGAIN)
			rc = donor_tls_handshake(c);
		move(c, s, -1);
		if (rs == -EAGAIN)
			rs = donor_tls_handshake(s);
		move(s, c, -1);
	}
	*ret_c = rc;
	*ret_s = rs;
}

static void test_roundtrip_and_identity(void **state)
{
	struct donor_tls *c, *s;
	uint8_t msg[10000], got[10000];
	int rc, rs, n;

	assert_int_equal(donor_tls_new_client(&key, "pager@host-1", &c), 0);
	assert_int_equal(donor_tls_new_server(&key, &s), 0);
	handshake(c, s, &rc, &rs);
	assert_int_equal(rc, 0);
	assert_int_equal(rs, 0);
	assert_string_equal(donor_tls_peer_id(s), "pager@host-1");
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7);
	assert_int_equal(donor_tls_write(c, msg, sizeof(msg)), sizeof(msg));
	/* The wire never carries the plaintext. */
	{
		uint8_t wire[65536];
		size_t w = donor_tls_net_out(c, wire, sizeof(wire));
		assert_true(w > sizeof(msg));
		assert_null(memmem(wire, w, msg + 100, 64));
		assert_int_equal(donor_tls_net_in(s, wire, w), w);
	}
	n = 0;
	while (n < (int)sizeof(got)) {
		int r = donor_tls_read(s, got + n, sizeof(got) - (size_t)n);
		assert_true(r > 0);
		n += r;
	}
	assert_memory_equal(msg, got, sizeof(msg));
	assert_int_equal(donor_tls_read(s, got, sizeof(got)), -EAGAIN);
	donor_tls_free(c);
	donor_tls_free(s);
}

static void test_wrong_key(void **state)
{
	struct donor_key other = key;
	struct donor_tls *c, *s;
	int rc, rs;

	other.bytes[0] ^= 1;
	assert_int_equal(donor_tls_new_client(&other, "intruder", &c), 0);
	assert_int_equal(donor_tls_new_server(&key, &s), 0);
	handshake(c, s, &rc, &rs);
	assert_int_equal(rs, -EACCES);
	assert_int_equal(rc, -EACCES);
	assert_string_equal(donor_tls_peer_id(s), "");
	donor_tls_free(c);
	donor_tls_free(s);
}

/* Runs one handshake of a client (id, k) against a donor with keys; returns the donor's result. */
static int keyed_handshake(const struct donor_keyring *keys, const struct donor_key *k, const char *id)
{
	struct donor_tls *c, *s;
	int rc, rs;

	assert_int_equal(donor_tls_new_client(k, id, &c), 0);
	assert_int_equal(donor_tls_new_server_keys(keys, &s), 0);
	handshake(c, s, &rc, &rs);
	assert_int_equal(rc, rs);
	if (rs == 0)
		assert_string_equal(donor_tls_peer_id(s), id);
	else
		assert_string_equal(donor_tls_peer_id(s), "");
	donor_tls_free(c);
	donor_tls_free(s);
	return rs;
}

static void test_client_keys(void **state)
{
	struct donor_client_key own[2] = {
		{ .id = "hostA", .key = { .bytes = "hostA-own-key-0123456789abcdef-xyz", .len = 34 } },
		{ .id = "hostB", .key = { .bytes = "hostB-own-key-0123456789abcdef-xyz", .len = 34 } },
	};
	struct donor_keyring keys = { .shared = key, .ids = own, .n = 2 };

	/* An id with its own key: that key works, the shared one does not, nor another id's. */
	assert_int_equal(keyed_handshake(&keys, &own[0].key, "hostA"), 0);
	assert_int_equal(keyed_handshake(&keys, &key, "hostA"), -EACCES);
	assert_int_equal(keyed_handshake(&keys, &own[1].key, "hostA"), -EACCES);
	assert_int_equal(keyed_handshake(&keys, &own[1].key, "hostB"), 0);
	/* Ids without a key of their own still use the shared key, and only it. */
	assert_int_equal(keyed_handshake(&keys, &key, "hostC"), 0);
	assert_int_equal(keyed_handshake(&keys, &own[0].key, "hostC"), -EACCES);
	/* --client-keys-only: the shared key opens nothing, listed ids still get in. */
	keys.shared_refused = true;
	assert_int_equal(keyed_handshake(&keys, &key, "hostC"), -EACCES);
	assert_int_equal(keyed_handshake(&keys, &key, "hostA"), -EACCES);
	assert_int_equal(keyed_handshake(&keys, &own[0].key, "hostA"), 0);
}

static void test_invalid_identity_refused(void **state)
{
	struct donor_tls *c;

	assert_int_equal(donor_tls_new_client(&key, "no spaces allowed", &c), -EINVAL);
	assert_int_equal(donor_tls_new_client(&key, "", &c), -EINVAL);
}

static void test_not_tls(void **state)
{
	static const char hello[] = "GET / HTTP/1.1\r\n\r\n";
	struct donor_tls *s;

	assert_int_equal(donor_tls_new_server(&key, &s), 0);
	assert_int_equal(donor_tls_net_in(s, hello, sizeof(hello) - 1), sizeof(hello) - 1);
	assert_int_equal(donor_tls_handshake(s), -EACCES);
	donor_tls_free(s);
}

static void test_tampered_record(void **state)
{
	struct donor_tls *c, *s;
	uint8_t msg[4096], got[4096];
	int rc, rs;

	memset(msg, 'G', sizeof(msg));
	assert_int_equal(donor_tls_new_client(&key, "pager", &c), 0);
	assert_int_equal(donor_tls_new_server(&key, &s), 0);
	handshake(c, s, &rc, &rs);
	assert_int_equal(rc, 0);
	assert_int_equal(rs, 0);
	assert_int_equal(donor_tls_write(s, msg, sizeof(msg)), sizeof(msg));
	/* One bit in the middle of the record's ciphertext. */
	move(s, c, 2000);
	assert_int_equal(donor_tls_read(c, got, sizeof(got)), -EBADMSG);
	donor_tls_free(c);
	donor_tls_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_and_identity),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_client_keys),
		cmocka_unit_test(test_invalid_identity_refused),
		cmocka_unit_test(test_not_tls),
		cmocka_unit_test(test_tampered_record),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
