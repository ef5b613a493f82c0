/* SPDX-License-Identifier: MIT */
/*
 * Page content generation and checking for guestsim. Contents are produced
 * 8 bytes at a time from a counter-based mixer so that filling or checking
 * a 4 KiB page costs well under a microsecond, far below a pager fault.
 *
 * "realistic" splits the page into eight 512-byte chunks, each one of:
 * zeros, log-like text lines, arrays of small structs with pointer-like
 * fields, or random bytes, in equal shares; a whole guest then compresses
 * roughly 2.5x with a general-purpose compressor, about like real memory,
 * while per-page ratios vary from ~1x to very high as they do in a guest.
 */
#include "gs-pattern.h"
#include "gs-rand.h"

#include <errno.h>
#include <string.h>

#define CHUNK_WORDS 64U
#define CHUNKS (GS_PAGE_WORDS / CHUNK_WORDS)

int gs_content_parse(const char *s, enum gs_content *ret)
{
	if (strcmp(s, "random") == 0)
		*ret = GS_CONTENT_RANDOM;
	else if (strcmp(s, "realistic") == 0)
		*ret = GS_CONTENT_REALISTIC;
	else
		return -EINVAL;
	return 0;
}

const char *gs_content_name(enum gs_content c)
{
	return c == GS_CONTENT_REALISTIC ? "realistic" : "random";
}

static uint64_t page_key(uint64_t seed, uint64_t index, uint32_t gen)
{
	uint64_t k = gs_mix64(seed ^ 0x6a09e667f3bcc909ULL);

	k = gs_mix64(k ^ index);
	return gs_mix64(k ^ ((uint64_t)gen << 1 | 1));
}

static void fill_random(uint64_t *w, unsigned nwords, uint64_t z)
{
	for (unsigned i = 0; i < nwords; i++) {
		z += GS_GOLDEN;
		w[i] = gs_mix64(z);
	}
}

/* Eight 64-byte lines; the last 8 bytes of each are replaced by a number. */
static const char text_lines[8][65] = {
	"Mar 14 09:26:53 node7 kernel: virtio_net virtio0 eth0: link up \n",
	"GET /api/v1/objects?limit=100&offset=0 HTTP/1.1 200 4096 bytes \n",
	"INSERT INTO events (id, kind, payload) VALUES (?, 'tick', NULL)\n",
	"{\"name\": \"worker\", \"state\": \"running\", \"retries\": 0, \"id\":     \n",
	"static inline int page_is_resident(const struct page_map *m, u6\n",
	"systemd[1]: Started Session of user debian; unit session.scope \n",
	"the quick brown fox jumps over the lazy dog while memory pages \n",
	"0000000000000000000000000000000000000000000000000000000000000000",
};

static void fill_text(uint64_t *w, uint64_t h)
{
	for (unsigned line = 0; line < CHUNK_WORDS / 8; line++) {
		uint64_t r = gs_mix64(h + (line + 1) * GS_GOLDEN);
		uint64_t n = (r >> 8) & 0xfffff, digits = 0;

		memcpy(&w[line * 8], text_lines[r & 7], 64);
		/* Seven decimal digits and a newline, as in a counter field. */
		for (int d = 0; d < 7; d++) {
			digits = (digits << 8) | (uint64_t)('0' + n % 10);
			n /= 10;
		}
		w[line * 8 + 7] = digits | ((uint64_t)'\n' << 56);
	}
}

static void fill_structs(uint64_t *w, uint64_t h)
{
	uint64_t base = 0x00007f0000000000ULL | (((h >> 20) & 0xffffffULL) << 12);

	for (unsigned i = 0; i < CHUNK_WORDS / 4; i++) {
		uint64_t r = gs_mix64(h ^ (i + 1) * GS_GOLDEN);

		w[i * 4 + 0] = base + ((r & 0xff) << 6);               /* next pointer */
		w[i * 4 + 1] = ((h & 0xffff) + i) | ((r >> 8) & 7) << 32; /* id, flags */
		w[i * 4 + 2] = (r >> 16) & 0xffff;                      /* small value */
		w[i * 4 + 3] = (r >> 32) & 1 ? base : 0;                /* back pointer */
	}
}

static void fill_realistic(uint64_t *w, uint64_t key)
{
	for (unsigned c = 0; c < CHUNKS; c++) {
		uint64_t h = gs_mix64(key ^ (c + 1) * 0xd1342543de82ef95ULL);
		uint64_t *cw = w + c * CHUNK_WORDS;

		switch (h >> 62) {
		case 0:
			memset(cw, 0, CHUNK_WORDS * 8);
			break;
		case 1:
			fill_text(cw, h);
			break;
		case 2:
			fill_structs(cw, h);
			break;
		default:
			fill_random(cw, CHUNK_WORDS, h);
			break;
		}
	}
}

void gs_page_fill(void *page, uint64_t seed, uint64_t index, uint32_t gen, enum gs_content c)
{
	uint64_t *w = page;
	uint64_t key;

	if (gen == 0) {
		memset(page, 0, PAGE_SIZE_4K);
		return;
	}
	key = page_key(seed, index, gen);
	if (c == GS_CONTENT_REALISTIC)
		fill_realistic(w, key);
	else
		fill_random(w + 3, GS_PAGE_WORDS - 3, key);
	w[0] = GS_MAGIC;
	w[1] = index;
	w[2] = gen;
}

bool gs_page_verify(const void *page, uint64_t seed, uint64_t index, uint32_t gen,
		    enum gs_content c, void *scratch, struct gs_mismatch *ret)
{
	const unsigned char *a = page, *e = scratch;
	const uint64_t *w = page;
	struct gs_mismatch m = { 0 };
	bool first = true, zero = true;

	gs_page_fill(scratch, seed, index, gen, c);
	if (memcmp(page, scratch, PAGE_SIZE_4K) == 0)
		return true;
	if (!ret)
		return false;
	for (unsigned i = 0; i < PAGE_SIZE_4K; i++) {
		if (a[i])
			zero = false;
		if (a[i] == e[i])
			continue;
		if (first)
			m.offset = i;
		first = false;
		m.bad_bytes++;
	}
	m.found_magic = w[0];
	m.found_index = w[1];
	m.found_gen = w[2];
	m.found_zero = zero;
	*ret = m;
	return false;
}
