/* SPDX-License-Identifier: MIT */
/* SHA-256 against FIPS 180-2 examples and HMAC-SHA256 against RFC 4231 test cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "sha256.h"

static void hex(const uint8_t *d, char *out)
{
	for (int i = 0; i < DONOR_SHA256_LEN; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void check_sha(const char *msg, const char *want)
{
	uint8_t d[DONOR_SHA256_LEN];
	char h[65];

	donor_sha256(msg, strlen(msg), d);
	hex(d, h);
	assert_string_equal(h, want);
}

static void test_sha256_fips(void **state)
{
	check_sha("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	check_sha("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	check_sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_sha256_million_a(void **state)
{
	struct donor_sha256 c;
	uint8_t block[1000], d[DONOR_SHA256_LEN];
	char h[65];

	memset(block, 'a', sizeof(block));
	donor_sha256_init(&c);
	for (int i = 0; i < 1000; i++)
		donor_sha256_update(&c, block, sizeof(block));
	donor_sha256_final(&c, d);
	hex(d, h);
	assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_sha256_split_updates(void **state)
{
	uint8_t msg[200], one[DONOR_SHA256_LEN], two[DONOR_SHA256_LEN];

	for (unsigned i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7 + 3);
	donor_sha256(msg, sizeof(msg), one);
	/* Every split point, including block and padding boundaries, gives the same digest. */
	for (size_t cut = 0; cut <= sizeof(msg); cut++) {
		struct donor_sha256 c;
		donor_sha256_init(&c);
		donor_sha256_update(&c, msg, cut);
		donor_sha256_update(&c, msg + cut, sizeof(msg) - cut);
		donor_sha256_final(&c, two);
		assert_memory_equal(one, two, sizeof(one));
	}
}

static void check_hmac(const void *key, size_t klen, const char *msg, const char *want)
{
	uint8_t d[DONOR_SHA256_LEN];
	char h[65];

	donor_hmac_sha256(key, klen, msg, strlen(msg), d);
	hex(d, h);
	assert_string_equal(h, want);
}

static void test_hmac_rfc4231(void **state)
{
	uint8_t k1[20], k6[131];

	memset(k1, 0x0b, sizeof(k1));
	memset(k6, 0xaa, sizeof(k6));
	check_hmac(k1, sizeof(k1), "Hi There",
		   "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	check_hmac("Jefe", 4, "what do ya want for nothing?",
		   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	check_hmac(k6, sizeof(k6), "Test Using Larger Than Block-Size Key - Hash Key First",
		   "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
	check_hmac(k6, sizeof(k6),
		   "This is a test using a larger than block-size key and a larger than block-size "
		   "data. The key needs to be hashed before being used by the HMAC algorithm.",
		   "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

static void test_ct_equal(void **state)
{
	uint8_t a[32] = { 1 }, b[32] = { 1 };

	assert_int_equal(donor_ct_equal(a, b, 32), 1);
	b[31] ^= 0x80;
	assert_int_equal(donor_ct_equal(a, b, 32), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_fips),	 cmocka_unit_test(test_sha256_million_a),
		cmocka_unit_test(test_sha256_split_updates), cmocka_unit_test(test_hmac_rfc4231),
		cmocka_unit_test(test_ct_equal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
