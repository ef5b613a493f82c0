/* SPDX-License-Identifier: MIT */
/*
 * Verifiable page contents for guestsim. A page's bytes are a pure function
 * of (seed, page index, generation): a header naming the page and its
 * generation, then either incompressible pseudo-random data or a mix that
 * compresses about like real guest memory. Generation 0 means "never
 * written": the page must read as zeros. Because contents are recomputable,
 * a reader can tell a lost write (older generation), a misplaced page (other
 * index) and plain corruption apart.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define GS_PAGE_WORDS (PAGE_SIZE_4K / 8U)
#define GS_MAGIC 0x4d49535453455547ULL /* "GUESTSIM" little-endian */
#define GS_HEADER_BYTES 24U           /* magic, index, generation */

enum gs_content {
	GS_CONTENT_RANDOM,
	GS_CONTENT_REALISTIC,
};

/* Parses "random" / "realistic". Returns 0 or -EINVAL. */
int gs_content_parse(const char *s, enum gs_content *ret);
const char *gs_content_name(enum gs_content c);

/* Writes the contents of (index, gen) into page (8-byte aligned, PAGE_SIZE_4K). */
void gs_page_fill(void *page, uint64_t seed, uint64_t index, uint32_t gen, enum gs_content c);

struct gs_mismatch {
	uint32_t offset;     /* first differing byte */
	uint32_t bad_bytes;  /* how many bytes differ */
	uint64_t found_magic, found_index, found_gen; /* header actually present */
	bool found_zero;     /* the whole page reads as zeros */
};

/*
 * Compares page against the expected contents of (index, gen), using
 * scratch (PAGE_SIZE_4K bytes, 8-byte aligned) for the expected copy.
 * Returns true when they match; otherwise fills ret (may be NULL).
 */
bool gs_page_verify(const void *page, uint64_t seed, uint64_t index, uint32_t gen,
		    enum gs_content c, void *scratch, struct gs_mismatch *ret);
