/* SPDX-License-Identifier: MIT */
/*
 * Encoders and decoders of the donor wire protocol. Decoders never trust a
 * length field: every count is checked against the bytes actually present,
 * and a payload must be consumed exactly (trailing bytes are an error), so a
 * frame has one meaning only.
 */
#include "donor-proto.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

uint32_t donor_get_u32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

uint64_t donor_get_u64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

void donor_set_u32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static uint16_t get_u16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return le16toh(v);
}

void donor_buf_init(struct donor_buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void donor_buf_release(struct donor_buf *b)
{
	free(b->data);
	donor_buf_init(b);
}

int donor_buf_reserve(struct donor_buf *b, size_t extra)
{
	size_t need = b->len + extra, cap;
	uint8_t *d;

	if (need < b->len)
		return -ENOMEM;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap *= 2;
	d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

void donor_buf_consume(struct donor_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

int donor_buf_put(struct donor_buf *b, const void *p, size_t n)
{
	int r = donor_buf_reserve(b, n);

	if (r < 0)
		return r;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int donor_buf_put_u16(struct donor_buf *b, uint16_t v)
{
	v = htole16(v);
	return donor_buf_put(b, &v, 2);
}

int donor_buf_put_u32(struct donor_buf *b, uint32_t v)
{
	v = htole32(v);
	return donor_buf_put(b, &v, 4);
}

int donor_buf_put_u64(struct donor_buf *b, uint64_t v)
{
	v = htole64(v);
	return donor_buf_put(b, &v, 8);
}

void donor_hdr_encode(const struct donor_hdr *h, uint8_t out[DONOR_HDR_LEN])
{
	uint16_t flags = htole16(h->flags);
	uint64_t id = htole64(h->req_id);

	donor_set_u32(out, DONOR_PROTO_MAGIC);
	out[4] = DONOR_PROTO_VERSION;
	out[5] = h->opcode;
	memcpy(out + 6, &flags, 2);
	memcpy(out + 8, &id, 8);
	donor_set_u32(out + 16, h->status);
	donor_set_u32(out + 20, h->len);
}

int donor_hdr_decode(const uint8_t *buf, size_t len, struct donor_hdr *ret_hdr)
{
	struct donor_hdr h;

	if (len < DONOR_HDR_LEN)
		return -EAGAIN;
	if (donor_get_u32(buf) != DONOR_PROTO_MAGIC)
		return -EBADMSG;
	if (buf[4] != DONOR_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	h.opcode = buf[5];
	h.flags = get_u16(buf + 6);
	h.req_id = donor_get_u64(buf + 8);
	h.status = donor_get_u32(buf + 16);
	h.len = donor_get_u32(buf + 20);
	if (h.flags & ~(uint16_t)DONOR_F_KNOWN_)
		return -EBADMSG;
	if (h.len > DONOR_MAX_PAYLOAD)
		return -EMSGSIZE;
	*ret_hdr = h;
	return 0;
}

const char *donor_op_name(uint8_t opcode)
{
	static const char *const names[] = {
		[DONOR_OP_HELLO] = "HELLO",	    [DONOR_OP_AUTH] = "AUTH",
		[DONOR_OP_ALLOC_SLAB] = "ALLOC_SLAB", [DONOR_OP_FREE_SLAB] = "FREE_SLAB",
		[DONOR_OP_WRITE_PAGES] = "WRITE_PAGES", [DONOR_OP_READ_PAGES] = "READ_PAGES",
		[DONOR_OP_PING] = "PING",	    [DONOR_OP_STATS] = "STATS",
		[DONOR_OP_LIST_SLABS] = "LIST_SLABS", [DONOR_OP_NOTIFY] = "NOTIFY",
	};

	if (opcode == 0 || opcode > DONOR_OP_MAX_)
		return "unknown";
	return names[opcode];
}

int donor_frame_begin(struct donor_buf *b, uint8_t opcode, uint16_t flags, uint64_t req_id,
		      uint32_t status, size_t *ret_off)
{
	struct donor_hdr h = { .opcode = opcode, .flags = flags, .req_id = req_id, .status = status };
	int r = donor_buf_reserve(b, DONOR_HDR_LEN);

	if (r < 0)
		return r;
	*ret_off = b->len;
	donor_hdr_encode(&h, b->data + b->len);
	b->len += DONOR_HDR_LEN;
	return 0;
}

int donor_frame_end(struct donor_buf *b, size_t off)
{
	size_t plen = b->len - off - DONOR_HDR_LEN;

	if (plen > DONOR_MAX_PAYLOAD)
		return -EMSGSIZE;
	donor_set_u32(b->data + off + 20, (uint32_t)plen);
	return 0;
}

int donor_frame_put(struct donor_buf *b, uint8_t opcode, uint16_t flags, uint64_t req_id,
		    uint32_t status, const void *payload, size_t len)
{
	size_t off;
	int r;

	if (len > DONOR_MAX_PAYLOAD)
		return -EMSGSIZE;
	r = donor_frame_begin(b, opcode, flags, req_id, status, &off);
	if (r < 0)
		return r;
	r = donor_buf_put(b, payload, len);
	if (r < 0) {
		b->len = off;
		return r;
	}
	return donor_frame_end(b, off);
}

bool donor_client_id_valid(const char *id, size_t len)
{
	if (len == 0 || len > DONOR_CLIENT_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '@' || c == '-'))
			return false;
	}
	return true;
}

int donor_enc_hello(struct donor_buf *b, uint64_t req_id, const char *client_id)
{
	size_t n = strlen(client_id), off;
	int r;

	if (!donor_client_id_valid(client_id, n))
		return -EINVAL;
	r = donor_frame_begin(b, DONOR_OP_HELLO, 0, req_id, 0, &off);
	if (r == 0)
		r = donor_buf_put_u16(b, (uint16_t)n);
	if (r == 0)
		r = donor_buf_put(b, client_id, n);
	return r < 0 ? r : donor_frame_end(b, off);
}

int donor_dec_hello(const uint8_t *p, size_t len, struct donor_hello_req *ret)
{
	size_t n;

	if (len < 2)
		return -EBADMSG;
	n = get_u16(p);
	if (len != 2 + n || !donor_client_id_valid((const char *)p + 2, n))
		return -EBADMSG;
	memcpy(ret->client_id, p + 2, n);
	ret->client_id[n] = '\0';
	return 0;
}

int donor_dec_hello_reply(const uint8_t *p, size_t len, uint8_t ret_nonce[DONOR_NONCE_LEN])
{
	if (len != DONOR_NONCE_LEN)
		return -EBADMSG;
	memcpy(ret_nonce, p, DONOR_NONCE_LEN);
	return 0;
}

int donor_enc_auth(struct donor_buf *b, uint64_t req_id, const struct donor_auth_req *a)
{
	uint8_t p[DONOR_NONCE_LEN + DONOR_MAC_LEN];

	memcpy(p, a->client_nonce, DONOR_NONCE_LEN);
	memcpy(p + DONOR_NONCE_LEN, a->mac, DONOR_MAC_LEN);
	return donor_frame_put(b, DONOR_OP_AUTH, 0, req_id, 0, p, sizeof(p));
}

int donor_dec_auth(const uint8_t *p, size_t len, struct donor_auth_req *ret)
{
	if (len != DONOR_NONCE_LEN + DONOR_MAC_LEN)
		return -EBADMSG;
	memcpy(ret->client_nonce, p, DONOR_NONCE_LEN);
	memcpy(ret->mac, p + DONOR_NONCE_LEN, DONOR_MAC_LEN);
	return 0;
}

int donor_enc_auth_reply(struct donor_buf *b, uint64_t req_id, const struct donor_auth_reply *a)
{
	size_t off;
	int r;

	r = donor_frame_begin(b, DONOR_OP_AUTH, DONOR_F_REPLY, req_id, 0, &off);
	if (r == 0)
		r = donor_buf_put(b, a->donor_mac, DONOR_MAC_LEN);
	if (r == 0)
		r = donor_buf_put_u32(b, a->slab_size);
	if (r == 0)
		r = donor_buf_put_u32(b, a->page_size);
	if (r == 0)
		r = donor_buf_put_u32(b, a->lease_s);
	if (r == 0)
		r = donor_buf_put_u32(b, a->nslabs);
	return r < 0 ? r : donor_frame_end(b, off);
}

int donor_dec_auth_reply(const uint8_t *p, size_t len, struct donor_auth_reply *ret)
{
	if (len != DONOR_MAC_LEN + 16)
		return -EBADMSG;
	memcpy(ret->donor_mac, p, DONOR_MAC_LEN);
	ret->slab_size = donor_get_u32(p + DONOR_MAC_LEN);
	ret->page_size = donor_get_u32(p + DONOR_MAC_LEN + 4);
	ret->lease_s = donor_get_u32(p + DONOR_MAC_LEN + 8);
	ret->nslabs = donor_get_u32(p + DONOR_MAC_LEN + 12);
	return 0;
}

int donor_dec_u32(const uint8_t *p, size_t len, uint32_t *ret)
{
	if (len != 4)
		return -EBADMSG;
	*ret = donor_get_u32(p);
	return 0;
}

uint32_t donor_frame_count(const struct donor_buf *b, size_t off)
{
	/* WRITE: slab, count; READ: count. The count sits right before the entries. */
	const uint8_t *h = b->data + off;

	return donor_get_u32(h + DONOR_HDR_LEN + (h[5] == DONOR_OP_WRITE_PAGES ? 4 : 0));
}

static void frame_count_set(struct donor_buf *b, size_t off, uint32_t n)
{
	uint8_t *h = b->data + off;

	donor_set_u32(h + DONOR_HDR_LEN + (h[5] == DONOR_OP_WRITE_PAGES ? 4 : 0), n);
}

int donor_enc_write_begin(struct donor_buf *b, uint64_t req_id, uint32_t slab, size_t *ret_off)
{
	size_t off;
	int r;

	r = donor_frame_begin(b, DONOR_OP_WRITE_PAGES, 0, req_id, 0, &off);
	if (r == 0)
		r = donor_buf_put_u32(b, slab);
	if (r == 0)
		r = donor_buf_put_u32(b, 0);
	if (r < 0)
		return r;
	*ret_off = off;
	return donor_frame_end(b, off);
}

int donor_enc_write_add(struct donor_buf *b, size_t off, uint32_t slot, const void *page)
{
	uint32_t n = donor_frame_count(b, off);
	int r;

	if (n >= DONOR_MAX_BATCH)
		return -E2BIG;
	static const uint8_t zero_tag[DONOR_TAG_SIZE];

	r = donor_buf_reserve(b, 4 + DONOR_SLOT_SIZE);
	if (r < 0)
		return r;
	donor_buf_put_u32(b, slot);
	donor_buf_put(b, page, PAGE_SIZE_4K);
	donor_buf_put(b, zero_tag, DONOR_TAG_SIZE);
	frame_count_set(b, off, n + 1);
	return donor_frame_end(b, off);
}

int donor_dec_write(const uint8_t *p, size_t len, struct donor_write_req *ret)
{
	uint32_t n;

	if (len < 8)
		return -EBADMSG;
	n = donor_get_u32(p + 4);
	if (n == 0 || n > DONOR_MAX_BATCH || len != 8 + (size_t)n * (4 + DONOR_SLOT_SIZE))
		return -EBADMSG;
	ret->slab = donor_get_u32(p);
	ret->count = n;
	ret->entries = p + 8;
	return 0;
}

void donor_write_entry(const struct donor_write_req *w, uint32_t i, uint32_t *ret_slot,
		       const uint8_t **ret_page)
{
	const uint8_t *e = w->entries + (size_t)i * (4 + DONOR_SLOT_SIZE);

	*ret_slot = donor_get_u32(e);
	*ret_page = e + 4;
}

int donor_enc_read_begin(struct donor_buf *b, uint64_t req_id, size_t *ret_off)
{
	size_t off;
	int r;

	r = donor_frame_begin(b, DONOR_OP_READ_PAGES, 0, req_id, 0, &off);
	if (r == 0)
		r = donor_buf_put_u32(b, 0);
	if (r < 0)
		return r;
	*ret_off = off;
	return donor_frame_end(b, off);
}

int donor_enc_read_add(struct donor_buf *b, size_t off, uint32_t slab, uint32_t slot)
{
	uint32_t n = donor_frame_count(b, off);
	int r;

	if (n >= DONOR_MAX_BATCH)
		return -E2BIG;
	r = donor_buf_reserve(b, 8);
	if (r < 0)
		return r;
	donor_buf_put_u32(b, slab);
	donor_buf_put_u32(b, slot);
	frame_count_set(b, off, n + 1);
	return donor_frame_end(b, off);
}

int donor_dec_read(const uint8_t *p, size_t len, struct donor_read_req *ret)
{
	uint32_t n;

	if (len < 4)
		return -EBADMSG;
	n = donor_get_u32(p);
	if (n == 0 || n > DONOR_MAX_BATCH || len != 4 + (size_t)n * 8)
		return -EBADMSG;
	ret->count = n;
	ret->entries = p + 4;
	return 0;
}

void donor_read_entry(const struct donor_read_req *r, uint32_t i, uint32_t *ret_slab,
		      uint32_t *ret_slot)
{
	*ret_slab = donor_get_u32(r->entries + (size_t)i * 8);
	*ret_slot = donor_get_u32(r->entries + (size_t)i * 8 + 4);
}

int donor_enc_stats_reply(struct donor_buf *b, uint64_t req_id, const struct donor_stats_reply *s)
{
	size_t off;
	int r;

	r = donor_frame_begin(b, DONOR_OP_STATS, DONOR_F_REPLY, req_id, 0, &off);
	if (r == 0)
		r = donor_buf_put_u64(b, s->capacity);
	if (r == 0)
		r = donor_buf_put_u64(b, s->used);
	if (r == 0)
		r = donor_buf_put_u64(b, s->own_bytes);
	if (r == 0)
		r = donor_buf_put_u32(b, s->slab_size);
	if (r == 0)
		r = donor_buf_put_u32(b, s->clients);
	return r < 0 ? r : donor_frame_end(b, off);
}

int donor_dec_stats_reply(const uint8_t *p, size_t len, struct donor_stats_reply *ret)
{
	if (len != 32)
		return -EBADMSG;
	ret->capacity = donor_get_u64(p);
	ret->used = donor_get_u64(p + 8);
	ret->own_bytes = donor_get_u64(p + 16);
	ret->slab_size = donor_get_u32(p + 24);
	ret->clients = donor_get_u32(p + 28);
	return 0;
}

int donor_enc_notify(struct donor_buf *b, uint16_t kind, uint32_t deadline_ms,
		     const uint32_t *slabs, uint32_t count)
{
	size_t off;
	int r;

	if (count > DONOR_MAX_NOTIFY_SLABS)
		return -E2BIG;
	r = donor_frame_begin(b, DONOR_OP_NOTIFY, DONOR_F_NOTIFY, 0, 0, &off);
	if (r == 0)
		r = donor_buf_put_u16(b, kind);
	if (r == 0)
		r = donor_buf_put_u16(b, 0);
	if (r == 0)
		r = donor_buf_put_u32(b, deadline_ms);
	if (r == 0)
		r = donor_buf_put_u32(b, count);
	for (uint32_t i = 0; r == 0 && i < count; i++)
		r = donor_buf_put_u32(b, slabs[i]);
	if (r < 0) {
		b->len = off;
		return r;
	}
	return donor_frame_end(b, off);
}

int donor_dec_notify(const uint8_t *p, size_t len, struct donor_notify *ret)
{
	uint32_t n;

	if (len < 12)
		return -EBADMSG;
	n = donor_get_u32(p + 8);
	if (n > DONOR_MAX_NOTIFY_SLABS || len != 12 + (size_t)n * 4)
		return -EBADMSG;
	ret->kind = get_u16(p);
	if (ret->kind != DONOR_NOTIFY_REVOKED && ret->kind != DONOR_NOTIFY_SHUTDOWN)
		return -EBADMSG;
	if (get_u16(p + 2) != 0)
		return -EBADMSG;
	ret->deadline_ms = donor_get_u32(p + 4);
	ret->count = n;
	ret->slabs = p + 12;
	return 0;
}

int donor_dec_list_reply(const uint8_t *p, size_t len, struct donor_list_reply *ret)
{
	uint32_t n;

	if (len < 4)
		return -EBADMSG;
	n = donor_get_u32(p);
	if (n > DONOR_MAX_LIST_SLABS || len != 4 + (size_t)n * 8)
		return -EBADMSG;
	ret->count = n;
	ret->entries = p + 4;
	return 0;
}
