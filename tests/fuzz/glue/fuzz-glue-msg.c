/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the pager's registration checks: glue_msg_check()
 * (what any local process may send on the registration socket, and what
 * the shim accepts back) and the pure steps the pager takes next on a
 * HELLO: the VM name check and the policy parser on the HELLO's policy
 * text. The first input byte is the number of fds that came with the
 * message (0..3); the rest is the message, copied to an aligned buffer as
 * the pager's recvmsg() buffer is. Beyond not crashing, an accepted
 * message must keep every promise the handlers rely on: its exact length
 * for its type, NUL-terminated name and UUID, a policy inside the message,
 * 4 KiB-aligned non-empty regions (and sample ranges) and the right number
 * of fds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "glue-proto.h"
#include "log.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

static void after_hello(const struct glue_msg_hello *m, size_t len)
{
	struct policy_vm pol;
	struct policy_error perr;

	check(len == sizeof(*m) + m->policy_len && m->policy_len <= GLUE_POLICY_MAX);
	check(memchr(m->name, '\0', sizeof(m->name)) != NULL);
	check(memchr(m->uuid, '\0', sizeof(m->uuid)) != NULL);
	/* What handle_hello does next, in order, before anything has side effects. */
	if (!policy_name_valid(m->name) || !m->policy_len)
		return;
	/* A refused policy says why (the pager sends that back to the shim). */
	if (policy_vm_parse((const char *)(m + 1), m->policy_len, "policy of vm fuzz", &pol, &perr) < 0)
		check(perr.msg[0] != '\0' && memchr(perr.msg, '\0', sizeof(perr.msg)) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Aligned like the pager's receive buffer; as large as the largest message. */
	static _Alignas(16) uint8_t buf[sizeof(struct glue_msg_hello) + GLUE_POLICY_MAX + 64];
	char why[256];
	unsigned nfds;
	int r;

	if (size < 1 || size - 1 > sizeof(buf))
		return 0;
	log_set_level(LOG_LVL_ERR);
	nfds = data[0] & 3;
	memcpy(buf, data + 1, size - 1);
	why[0] = '\0';
	r = glue_msg_check(buf, size - 1, nfds, why, sizeof(why));
	switch (r) {
	case GLUE_MSG_HELLO:
		check(nfds == 1);
		after_hello((const struct glue_msg_hello *)buf, size - 1);
		break;
	case GLUE_MSG_REGION: {
		const struct glue_msg_region *m = (const void *)buf;
		check(nfds == 1 && size - 1 == sizeof(*m));
		check(m->length && !((m->host_addr | m->length | m->memfd_offset) & 4095));
		break;
	}
	case GLUE_MSG_REPLY:
		check(nfds == 0 && size - 1 == sizeof(struct glue_msg_reply));
		break;
	case GLUE_MSG_SAMPLER:
		check(nfds == 1 && size - 1 == sizeof(struct glue_msg_header));
		break;
	case GLUE_MSG_SAMPLE: {
		/* What the shim's sampler thread accepts before it unmaps anything. */
		const struct glue_msg_sample *m = (const void *)buf;
		check(nfds == 0 && size - 1 == sizeof(*m) && m->count >= 1 && m->count <= GLUE_SAMPLE_RANGES);
		for (unsigned i = 0; i < m->count; i++)
			check(m->ranges[i].length && !((m->ranges[i].addr | m->ranges[i].length) & 4095));
		break;
	}
	default:
		/* A refusal always says why, in a terminated string. */
		check(r == -22 /* EINVAL */ || r == -71 /* EPROTO */);
		check(why[0] != '\0' && memchr(why, '\0', sizeof(why)) != NULL);
		break;
	}
	return 0;
}
