/* SPDX-License-Identifier: MIT */
/*
 * Registration messages: building headers and checking what arrives. The
 * pager runs every message from a shim through glue_msg_check() first, so
 * the handlers only ever see well-formed input; the checks are pure and
 * unit-tested with malformed messages.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "glue-proto.h"

void glue_header_init(struct glue_msg_header *h, enum glue_msg_type type, uint32_t length)
{
	*h = (struct glue_msg_header){ .magic = GLUE_PROTO_MAGIC, .version = GLUE_PROTO_VERSION,
				       .type = (uint16_t)type, .length = length };
}

int glue_msg_check(const void *buf, size_t len, unsigned nfds, char *why, size_t whylen)
{
	const struct glue_msg_header *h = buf;

	if (len < sizeof(*h) || h->magic != GLUE_PROTO_MAGIC || h->length != len) {
		snprintf(why, whylen, "malformed message (%zu bytes)", len);
		return -EINVAL;
	}
	if (h->version != GLUE_PROTO_VERSION) {
		snprintf(why, whylen, "protocol version %u, this side speaks %u", h->version, GLUE_PROTO_VERSION);
		return -EPROTO;
	}
	switch (h->type) {
	case GLUE_MSG_HELLO: {
		const struct glue_msg_hello *m = buf;
		if (len < sizeof(*m) || m->policy_len > GLUE_POLICY_MAX || len != sizeof(*m) + m->policy_len) {
			snprintf(why, whylen, "HELLO of %zu bytes does not match its policy length", len);
			return -EINVAL;
		}
		if (!memchr(m->name, '\0', sizeof(m->name))) {
			snprintf(why, whylen, "VM name must be 1-%d characters (HELLO name not terminated within %d bytes)",
				 GLUE_NAME_MAX - 1, GLUE_NAME_MAX);
			return -EINVAL;
		}
		if (!memchr(m->uuid, '\0', sizeof(m->uuid))) {
			snprintf(why, whylen, "VM UUID must be at most %d characters (HELLO uuid not terminated within %d bytes)",
				 GLUE_UUID_MAX - 1, GLUE_UUID_MAX);
			return -EINVAL;
		}
		if (nfds != 1) {
			snprintf(why, whylen, "HELLO must carry exactly one userfaultfd, not %u fds", nfds);
			return -EINVAL;
		}
		return GLUE_MSG_HELLO;
	}
	case GLUE_MSG_REGION: {
		const struct glue_msg_region *m = buf;
		if (len != sizeof(*m)) {
			snprintf(why, whylen, "REGION of %zu bytes, expected %zu", len, sizeof(*m));
			return -EINVAL;
		}
		if (!m->length || ((m->host_addr | m->length | m->memfd_offset) & 4095)) {
			snprintf(why, whylen, "REGION not 4 KiB aligned (addr 0x%llx, length %llu, offset %llu)",
				 (unsigned long long)m->host_addr, (unsigned long long)m->length,
				 (unsigned long long)m->memfd_offset);
			return -EINVAL;
		}
		if (nfds != 1) {
			snprintf(why, whylen, "REGION must carry exactly one memfd, not %u fds", nfds);
			return -EINVAL;
		}
		return GLUE_MSG_REGION;
	}
	case GLUE_MSG_SAMPLER:
		if (len != sizeof(struct glue_msg_header) || nfds != 1) {
			snprintf(why, whylen, "SAMPLER of %zu bytes with %u fds: a bare header and one socket", len, nfds);
			return -EINVAL;
		}
		return GLUE_MSG_SAMPLER;
	case GLUE_MSG_SAMPLE: {
		const struct glue_msg_sample *m = buf;
		if (len != sizeof(*m) || nfds || !m->count || m->count > GLUE_SAMPLE_RANGES) {
			snprintf(why, whylen, "SAMPLE of %zu bytes with %u fds", len, nfds);
			return -EINVAL;
		}
		for (unsigned i = 0; i < m->count; i++) {
			if (!m->ranges[i].length || ((m->ranges[i].addr | m->ranges[i].length) & 4095)) {
				snprintf(why, whylen, "SAMPLE range %u not 4 KiB aligned", i);
				return -EINVAL;
			}
		}
		return GLUE_MSG_SAMPLE;
	}
	case GLUE_MSG_REPLY:
		if (len != sizeof(struct glue_msg_reply) || nfds) {
			snprintf(why, whylen, "REPLY of %zu bytes with %u fds", len, nfds);
			return -EINVAL;
		}
		return GLUE_MSG_REPLY;
	default:
		snprintf(why, whylen, "unknown message type %u", h->type);
		return -EINVAL;
	}
}
