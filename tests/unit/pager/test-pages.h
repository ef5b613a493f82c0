/* SPDX-License-Identifier: MIT */
/* Page contents for the pager's unit tests: each page tells which one it is. */
#pragma once

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util.h"

/* An aligned page filled with tag's low byte, tag at the start and ~tag at the end (caller frees). */
static inline void *page_filled(uint32_t tag)
{
	void *p = NULL;

	assert_int_equal(posix_memalign(&p, PAGE_SIZE_4K, PAGE_SIZE_4K), 0);
	memset(p, (int)(tag & 0xff), PAGE_SIZE_4K);
	((uint32_t *)p)[0] = tag;
	((uint32_t *)p)[PAGE_SIZE_4K / 4 - 1] = ~tag;
	return p;
}
