/* SPDX-License-Identifier: MIT */
/*
 * Registration protocol between libuffd-glue.so (inside QEMU or guestsim)
 * and uffd-pager, over a SOCK_SEQPACKET Unix socket so that message
 * boundaries are kept and a short or oversized message is detectable.
 *
 *   shim -> pager  GLUE_MSG_HELLO   + SCM_RIGHTS [uffd]    VM identity + policy text
 *   pager -> shim  GLUE_MSG_REPLY                          status, message, the VM's secret
 *   shim -> pager  GLUE_MSG_REGION  + SCM_RIGHTS [memfd]   one guest-RAM mapping
 *   pager -> shim  GLUE_MSG_REPLY
 *
 * The connection then stays open for the life of the process: its EOF is
 * how the pager learns that the VM exited (a uffd does not tell), and the
 * shim's EOF is how it learns that the pager died. The shim then connects
 * again and sends a HELLO with GLUE_HELLO_RESUME, the secret the first
 * pager gave it and the same uffd, then the same REGIONs in the same
 * order: the new pager adopts the VM from its state file.
 *
 * Access sampling, when the shim registered guest RAM for minor faults
 * too (GLUE_HELLO_MINOR): after its regions the shim sends
 *
 *   shim -> pager  GLUE_MSG_SAMPLER + SCM_RIGHTS [socket]  no reply
 *
 * one end of a socket pair; on it the pager sends GLUE_MSG_SAMPLE, ranges
 * whose mappings a shim thread drops (MADV_DONTNEED: the memfd keeps the
 * pages), so that the guest's next access to them is a minor fault the
 * pager sees. Each connection (a resume too) gets its own pair.
 * All integers are host-endian: both ends run on the same host.
 */
#pragma once

#include <stdint.h>

#define GLUE_PROTO_MAGIC 0x75666664u /* "uffd" */
#define GLUE_PROTO_VERSION 3 /* 2: HELLO carries the domain UUID; 3: resume and the VM's secret */
#define GLUE_NAME_MAX 64          /* including the NUL */
#define GLUE_POLICY_MAX (32 * 1024) /* policy JSON text carried in HELLO */
#define GLUE_REPLY_TEXT_MAX 256
#define GLUE_UUID_MAX 37 /* 36 characters of a textual UUID + NUL */
#define GLUE_SECRET_LEN 32

enum glue_msg_type {
	GLUE_MSG_HELLO = 1,
	GLUE_MSG_REGION = 2,
	GLUE_MSG_REPLY = 3,
	GLUE_MSG_SAMPLER = 4,
	GLUE_MSG_SAMPLE = 5,
};

struct glue_msg_header {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t length; /* whole message, header included */
};

struct glue_msg_hello {
	struct glue_msg_header hdr;
	uint64_t uffd_features; /* what UFFDIO_API granted */
	uint32_t pid;           /* informational; the pager trusts SO_PEERCRED */
	uint32_t policy_len;    /* bytes of policy JSON following the struct, 0 = none */
	char name[GLUE_NAME_MAX];
	char uuid[GLUE_UUID_MAX]; /* QEMU's -uuid (libvirt's domain UUID), "" if none */
	uint32_t flags;           /* GLUE_HELLO_* */
	uint32_t waited_ms;       /* resume: how long the VM had no pager */
	uint8_t secret[GLUE_SECRET_LEN]; /* resume: what the first pager's REPLY carried */
	/* char policy[policy_len] follows */
};

struct glue_msg_region {
	struct glue_msg_header hdr;
	uint64_t host_addr;    /* start of the mapping in the sender's address space */
	uint64_t length;       /* bytes, multiple of 4 KiB */
	uint64_t memfd_offset; /* file offset the mapping starts at */
};

enum glue_hello_flags {
	GLUE_HELLO_RESUME = 1, /* this VM ran under a pager that is gone: adopt it */
	GLUE_HELLO_MINOR = 2,  /* guest RAM is registered for minor faults too: the pager must answer them */
};

#define GLUE_SAMPLE_RANGES 64

/* Pager -> shim on the sampler socket: drop the mappings of these ranges (inside registered regions). */
struct glue_msg_sample {
	struct glue_msg_header hdr;
	uint32_t count; /* ranges used, 1..GLUE_SAMPLE_RANGES */
	uint32_t reserved;
	struct glue_sample_range {
		uint64_t addr, length; /* 4 KiB aligned */
	} ranges[GLUE_SAMPLE_RANGES];
};

enum glue_status {
	GLUE_OK = 0,
	GLUE_REFUSED = 1,   /* policy or budget says no: do not run paged */
	GLUE_INVALID = 2,   /* malformed message */
};

struct glue_msg_reply {
	struct glue_msg_header hdr;
	uint32_t status;
	char text[GLUE_REPLY_TEXT_MAX];
	/* To an accepted HELLO: the VM's secret, proof of identity for a resume (zeros otherwise). */
	uint8_t secret[GLUE_SECRET_LEN];
};

/*
 * Environment set by uffd-qemu for the shim. Only UFFD_GLUE_SOCKET is
 * required; without it the shim does nothing at all.
 */
#define GLUE_ENV_SOCKET "UFFD_GLUE_SOCKET"           /* pager registration socket */
#define GLUE_ENV_NAME "UFFD_GLUE_NAME"               /* VM name */
#define GLUE_ENV_POLICY "UFFD_GLUE_POLICY"           /* policy JSON text */
#define GLUE_ENV_UUID "UFFD_GLUE_UUID"               /* QEMU's -uuid value, if it had one */
#define GLUE_ENV_UNAVAILABLE "UFFD_GLUE_ON_UNAVAILABLE" /* "refuse" (default) or "run-unpaged" */
#define GLUE_ENV_MIN_SIZE "UFFD_GLUE_MIN_SIZE"       /* smallest memfd mapping taken as RAM */
/* What to do while no pager serves the VM: "wait" (default), or "stop:SECONDS" / "kill:SECONDS". */
#define GLUE_ENV_PAGER_LOST "UFFD_GLUE_ON_PAGER_LOST"
#define GLUE_DEFAULT_MIN_SIZE (16ULL << 20)

#include <stddef.h>

/* Fills a header for a message of the given type and total length. */
void glue_header_init(struct glue_msg_header *h, enum glue_msg_type type, uint32_t length);
/*
 * Checks a received message before anything reads its fields: header,
 * version, the length each type must have, NUL-terminated name, page
 * alignment of regions, and how many fds came with it (HELLO and REGION
 * carry exactly one, REPLY none). Returns the message type (> 0), or
 * -EINVAL / -EPROTO (version) with the reason in why.
 */
int glue_msg_check(const void *buf, size_t len, unsigned nfds, char *why, size_t whylen);
