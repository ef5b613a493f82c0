/* SPDX-License-Identifier: MIT */
/*
 * Wire protocol between pagers and uffd-donor over byte streams (TCP):
 * a 24-byte little-endian header (magic, version, opcode, flags, request id,
 * status, payload length) followed by an opcode-specific payload. All
 * encoders append to a growable buffer; all decoders are pure, check every
 * field against the buffer they were given, and return 0 or -errno. The
 * format is described in docs/donor-protocol.md.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DONOR_PROTO_MAGIC 0x524e4455u /* "UDNR" as bytes on the wire */
/* 2: a slot holds a page and its 16-byte tag (4112 bytes on the wire and in slab memory). */
#define DONOR_PROTO_VERSION 2
#define DONOR_HDR_LEN 24
/* 16 MiB: small enough that revocation and leases move little at a time,
 * large enough that a 1 TiB donor needs only 65536 slabs. */
#define DONOR_SLAB_SIZE (16u << 20)
#define DONOR_SLAB_SLOTS ((unsigned)(DONOR_SLAB_SIZE / PAGE_SIZE_4K))
/* A slot: the page (ciphertext when the pager seals it) then its AEAD tag, opaque to the donor. */
#define DONOR_TAG_SIZE 16u
#define DONOR_SLOT_SIZE (PAGE_SIZE_4K + DONOR_TAG_SIZE)
/* Slab memory: capacity is still counted in DONOR_SLAB_SIZE units; the tags cost 64 KiB more per slab. */
#define DONOR_SLAB_BYTES ((size_t)DONOR_SLAB_SLOTS * DONOR_SLOT_SIZE)
#define DONOR_MAX_BATCH 64u
#define DONOR_CLIENT_ID_MAX 64u
#define DONOR_NONCE_LEN 32u
#define DONOR_MAC_LEN 32u
#define DONOR_PING_MAX 64u
/* The largest payload is a full WRITE_PAGES batch. */
#define DONOR_MAX_PAYLOAD ((unsigned)(8u + DONOR_MAX_BATCH * (4u + DONOR_SLOT_SIZE)))
#define DONOR_MAX_NOTIFY_SLABS ((DONOR_MAX_PAYLOAD - 12u) / 4u)
#define DONOR_MAX_LIST_SLABS ((DONOR_MAX_PAYLOAD - 4u) / 8u)

enum donor_op {
	DONOR_OP_HELLO = 1,
	DONOR_OP_AUTH = 2,
	DONOR_OP_ALLOC_SLAB = 3,
	DONOR_OP_FREE_SLAB = 4,
	DONOR_OP_WRITE_PAGES = 5,
	DONOR_OP_READ_PAGES = 6,
	DONOR_OP_PING = 7,
	DONOR_OP_STATS = 8,
	DONOR_OP_LIST_SLABS = 9,
	DONOR_OP_NOTIFY = 10,
	DONOR_OP_MAX_ = DONOR_OP_NOTIFY,
	/* RDMA control, served by donor-rdma.c through the server's extension hook. */
	DONOR_OP_RDMA_ATTACH = 11,   /* -> 32-byte token for rdma_connect's private data */
	DONOR_OP_RDMA_SLAB_KEY = 12, /* u32 slab -> u64 addr, u32 rkey, u32 flags */
};

enum {
	DONOR_F_REPLY = 1u << 0,  /* answer to the request with the same id */
	DONOR_F_NOTIFY = 1u << 1, /* donor-initiated, request id 0 */
	DONOR_F_KNOWN_ = DONOR_F_REPLY | DONOR_F_NOTIFY,
};

enum donor_notify_kind {
	DONOR_NOTIFY_REVOKED = 1,  /* move the listed slabs before the deadline */
	DONOR_NOTIFY_SHUTDOWN = 2, /* the donor is going away; nothing survives */
};

enum { DONOR_SLAB_F_REVOKED = 1u << 0 };

struct donor_hdr {
	uint8_t opcode;
	uint16_t flags;
	uint64_t req_id;
	uint32_t status; /* 0 or a positive errno value, replies only */
	uint32_t len;    /* payload bytes after the header */
};

struct donor_buf {
	uint8_t *data;
	size_t len, cap;
};

void donor_buf_init(struct donor_buf *b);
void donor_buf_release(struct donor_buf *b);
/* Makes room for extra more bytes. Returns 0 or -ENOMEM. */
int donor_buf_reserve(struct donor_buf *b, size_t extra);
/* Drops the first n bytes (what was sent or parsed). */
void donor_buf_consume(struct donor_buf *b, size_t n);
int donor_buf_put(struct donor_buf *b, const void *p, size_t n);
int donor_buf_put_u16(struct donor_buf *b, uint16_t v);
int donor_buf_put_u32(struct donor_buf *b, uint32_t v);
int donor_buf_put_u64(struct donor_buf *b, uint64_t v);

/* Appends a header with length 0; ret_off marks it for donor_frame_end(). Returns 0 or -ENOMEM. */
int donor_frame_begin(struct donor_buf *b, uint8_t opcode, uint16_t flags, uint64_t req_id,
		      uint32_t status, size_t *ret_off);
/* Patches the payload length of the frame at off. Returns 0 or -EMSGSIZE. */
int donor_frame_end(struct donor_buf *b, size_t off);
/* A whole frame in one call. Returns 0, -ENOMEM or -EMSGSIZE. */
int donor_frame_put(struct donor_buf *b, uint8_t opcode, uint16_t flags, uint64_t req_id,
		    uint32_t status, const void *payload, size_t len);

void donor_hdr_encode(const struct donor_hdr *h, uint8_t out[DONOR_HDR_LEN]);
/*
 * Decodes a header from the first len bytes of buf. Returns 0, -EAGAIN (fewer
 * than DONOR_HDR_LEN bytes), -EBADMSG (wrong magic or unknown flags),
 * -EPROTONOSUPPORT (other version) or -EMSGSIZE (payload over the maximum).
 */
int donor_hdr_decode(const uint8_t *buf, size_t len, struct donor_hdr *ret_hdr);
const char *donor_op_name(uint8_t opcode);

/* Decoded payloads point into the frame they came from. */
struct donor_hello_req {
	char client_id[DONOR_CLIENT_ID_MAX + 1];
};
struct donor_auth_req {
	uint8_t client_nonce[DONOR_NONCE_LEN];
	uint8_t mac[DONOR_MAC_LEN];
};
struct donor_auth_reply {
	uint8_t donor_mac[DONOR_MAC_LEN];
	uint32_t slab_size, page_size, lease_s, nslabs;
};
struct donor_write_req {
	uint32_t slab, count;
	const uint8_t *entries; /* count x (u32 slot, page) */
};
struct donor_read_req {
	uint32_t count;
	const uint8_t *entries; /* count x (u32 slab, u32 slot) */
};
struct donor_stats_reply {
	uint64_t capacity, used, own_bytes;
	uint32_t slab_size, clients;
};
struct donor_notify {
	uint16_t kind;
	uint32_t deadline_ms, count;
	const uint8_t *slabs; /* count x u32 */
};
struct donor_list_reply {
	uint32_t count;
	const uint8_t *entries; /* count x (u32 slab, u32 flags) */
};

/* Client ids are 1..64 chars of [A-Za-z0-9._:@-] so they are safe in logs and JSON. */
bool donor_client_id_valid(const char *id, size_t len);

int donor_enc_hello(struct donor_buf *b, uint64_t req_id, const char *client_id);
int donor_dec_hello(const uint8_t *p, size_t len, struct donor_hello_req *ret);
int donor_enc_auth(struct donor_buf *b, uint64_t req_id, const struct donor_auth_req *a);
int donor_dec_auth(const uint8_t *p, size_t len, struct donor_auth_req *ret);
int donor_enc_auth_reply(struct donor_buf *b, uint64_t req_id, const struct donor_auth_reply *r);
int donor_dec_auth_reply(const uint8_t *p, size_t len, struct donor_auth_reply *ret);
int donor_dec_hello_reply(const uint8_t *p, size_t len, uint8_t ret_nonce[DONOR_NONCE_LEN]);
int donor_dec_u32(const uint8_t *p, size_t len, uint32_t *ret);

/* WRITE_PAGES / READ_PAGES are built a page at a time so a client can batch. */
int donor_enc_write_begin(struct donor_buf *b, uint64_t req_id, uint32_t slab, size_t *ret_off);
int donor_enc_write_add(struct donor_buf *b, size_t off, uint32_t slot, const void *page);
int donor_dec_write(const uint8_t *p, size_t len, struct donor_write_req *ret);
void donor_write_entry(const struct donor_write_req *w, uint32_t i, uint32_t *ret_slot,
		       const uint8_t **ret_page);
int donor_enc_read_begin(struct donor_buf *b, uint64_t req_id, size_t *ret_off);
int donor_enc_read_add(struct donor_buf *b, size_t off, uint32_t slab, uint32_t slot);
int donor_dec_read(const uint8_t *p, size_t len, struct donor_read_req *ret);
void donor_read_entry(const struct donor_read_req *r, uint32_t i, uint32_t *ret_slab,
		      uint32_t *ret_slot);
/* Number of (slab, slot) or (slot, page) entries in the open frame at off. */
uint32_t donor_frame_count(const struct donor_buf *b, size_t off);

int donor_enc_stats_reply(struct donor_buf *b, uint64_t req_id, const struct donor_stats_reply *s);
int donor_dec_stats_reply(const uint8_t *p, size_t len, struct donor_stats_reply *ret);
int donor_enc_notify(struct donor_buf *b, uint16_t kind, uint32_t deadline_ms,
		     const uint32_t *slabs, uint32_t count);
int donor_dec_notify(const uint8_t *p, size_t len, struct donor_notify *ret);
int donor_dec_list_reply(const uint8_t *p, size_t len, struct donor_list_reply *ret);

uint32_t donor_get_u32(const uint8_t *p);
uint64_t donor_get_u64(const uint8_t *p);
void donor_set_u32(uint8_t *p, uint32_t v);
