/* SPDX-License-Identifier: MIT */
/* Registration messages: well-formed ones pass, every kind of malformed one is refused with a reason. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "glue-proto.h"

static char why[GLUE_REPLY_TEXT_MAX];

static struct glue_msg_hello *hello_with_policy(const char *policy, size_t *ret_len)
{
	size_t plen = strlen(policy), len = sizeof(struct glue_msg_hello) + plen;
	struct glue_msg_hello *h = calloc(1, len);

	glue_header_init(&h->hdr, GLUE_MSG_HELLO, (uint32_t)len);
	h->policy_len = (uint32_t)plen;
	strcpy(h->name, "vm1");
	memcpy(h + 1, policy, plen);
	*ret_len = len;
	return h;
}

static void test_hello_ok(void **state)
{
	size_t len;
	struct glue_msg_hello *h = hello_with_policy("{\"name\":\"vm1\"}", &len);

	assert_int_equal(glue_msg_check(h, len, 1, why, sizeof(why)), GLUE_MSG_HELLO);
	free(h);
}

static void test_hello_bad(void **state)
{
	size_t len;
	struct glue_msg_hello *h = hello_with_policy("{}", &len);

	/* no fd, two fds */
	assert_int_equal(glue_msg_check(h, len, 0, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "exactly one userfaultfd"));
	assert_int_equal(glue_msg_check(h, len, 2, why, sizeof(why)), -EINVAL);
	/* policy_len disagrees with the length */
	h->policy_len = 3;
	assert_int_equal(glue_msg_check(h, len, 1, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "policy length"));
	h->policy_len = GLUE_POLICY_MAX + 1;
	assert_int_equal(glue_msg_check(h, len, 1, why, sizeof(why)), -EINVAL);
	h->policy_len = 2;
	/* unterminated name */
	memset(h->name, 'a', sizeof(h->name));
	assert_int_equal(glue_msg_check(h, len, 1, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "not terminated"));
	assert_non_null(strstr(why, "1-63 characters"));
	strcpy(h->name, "vm1");
	/* unterminated UUID (the registry checks its layout; this only bounds it) */
	memset(h->uuid, '1', sizeof(h->uuid));
	assert_int_equal(glue_msg_check(h, len, 1, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "uuid not terminated"));
	strcpy(h->uuid, "6f1d4e1a-8c1b-4f0e-9a57-2f3c4b5d6e7f");
	assert_int_equal(glue_msg_check(h, len, 1, why, sizeof(why)), GLUE_MSG_HELLO);
	/* a version-1 HELLO (no uuid field) is refused by version, not misread */
	h->hdr.version = 1;
	assert_int_equal(glue_msg_check(h, len, 1, why, sizeof(why)), -EPROTO);
	free(h);
}

static void test_header_bad(void **state)
{
	struct glue_msg_region r = { .host_addr = 0x10000, .length = 1 << 20, .memfd_offset = 0 };

	glue_header_init(&r.hdr, GLUE_MSG_REGION, sizeof(r));
	assert_int_equal(glue_msg_check(&r, sizeof(r), 1, why, sizeof(why)), GLUE_MSG_REGION);
	/* shorter than a header, length field disagrees, wrong magic, wrong version, unknown type */
	assert_int_equal(glue_msg_check(&r, 3, 1, why, sizeof(why)), -EINVAL);
	assert_int_equal(glue_msg_check(&r, sizeof(r) - 8, 1, why, sizeof(why)), -EINVAL);
	r.hdr.magic ^= 1;
	assert_int_equal(glue_msg_check(&r, sizeof(r), 1, why, sizeof(why)), -EINVAL);
	r.hdr.magic ^= 1;
	r.hdr.version = 99;
	assert_int_equal(glue_msg_check(&r, sizeof(r), 1, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "version 99"));
	r.hdr.version = GLUE_PROTO_VERSION;
	r.hdr.type = 77;
	assert_int_equal(glue_msg_check(&r, sizeof(r), 1, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "unknown message type 77"));
}

static void test_region_bad(void **state)
{
	struct glue_msg_region r = { .host_addr = 0x10000, .length = 1 << 20, .memfd_offset = 0 };

	glue_header_init(&r.hdr, GLUE_MSG_REGION, sizeof(r));
	r.length = 0;
	assert_int_equal(glue_msg_check(&r, sizeof(r), 1, why, sizeof(why)), -EINVAL);
	r.length = 4097;
	assert_int_equal(glue_msg_check(&r, sizeof(r), 1, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "aligned"));
	r.length = 8192;
	r.memfd_offset = 12;
	assert_int_equal(glue_msg_check(&r, sizeof(r), 1, why, sizeof(why)), -EINVAL);
	r.memfd_offset = 0;
	assert_int_equal(glue_msg_check(&r, sizeof(r), 0, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "exactly one memfd"));
}

static void test_reply(void **state)
{
	struct glue_msg_reply r = { .status = GLUE_OK };

	glue_header_init(&r.hdr, GLUE_MSG_REPLY, sizeof(r));
	assert_int_equal(glue_msg_check(&r, sizeof(r), 0, why, sizeof(why)), GLUE_MSG_REPLY);
	/* a reply never carries fds */
	assert_int_equal(glue_msg_check(&r, sizeof(r), 1, why, sizeof(why)), -EINVAL);
}

/* Sampling: SAMPLER is a bare header with one socket; SAMPLE carries 1..64 aligned, non-empty ranges and no fd. */
static void test_sampling(void **state)
{
	struct glue_msg_header h;
	struct glue_msg_sample m = { .count = 1 };

	glue_header_init(&h, GLUE_MSG_SAMPLER, sizeof(h));
	assert_int_equal(glue_msg_check(&h, sizeof(h), 1, why, sizeof(why)), GLUE_MSG_SAMPLER);
	assert_int_equal(glue_msg_check(&h, sizeof(h), 0, why, sizeof(why)), -EINVAL);
	glue_header_init(&m.hdr, GLUE_MSG_SAMPLE, sizeof(m));
	m.ranges[0] = (struct glue_sample_range){ .addr = 0x10000, .length = 4096 };
	assert_int_equal(glue_msg_check(&m, sizeof(m), 0, why, sizeof(why)), GLUE_MSG_SAMPLE);
	assert_int_equal(glue_msg_check(&m, sizeof(m), 1, why, sizeof(why)), -EINVAL);
	m.count = 0;
	assert_int_equal(glue_msg_check(&m, sizeof(m), 0, why, sizeof(why)), -EINVAL);
	m.count = GLUE_SAMPLE_RANGES + 1;
	assert_int_equal(glue_msg_check(&m, sizeof(m), 0, why, sizeof(why)), -EINVAL);
	m.count = 2; /* the second range is empty */
	assert_int_equal(glue_msg_check(&m, sizeof(m), 0, why, sizeof(why)), -EINVAL);
	m.ranges[1] = (struct glue_sample_range){ .addr = 0x20800, .length = 4096 };
	assert_int_equal(glue_msg_check(&m, sizeof(m), 0, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "aligned"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_ok),   cmocka_unit_test(test_hello_bad), cmocka_unit_test(test_header_bad),
		cmocka_unit_test(test_region_bad), cmocka_unit_test(test_reply),      cmocka_unit_test(test_sampling),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
