/* SPDX-License-Identifier: MIT */
/*
 * bench-seal: CPU time of sealing and opening one 4 KiB page with the
 * pager's own code (uffd-pager/seal.c, AES-256-GCM through OpenSSL EVP),
 * on one thread, after a warm-up. Prints one JSON object; scripts/bench
 * reports it beside the end-to-end on/off comparison.
 * Usage: bench-seal [--pages N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "seal.h"
#include "util.h"

static double cpu_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	uint8_t key[SEAL_KEY_LEN] = { 0 }, id[SEAL_ID_LEN] = { 0 }, tag[SEAL_TAG_LEN];
	long pages = 100000;
	struct seal_ctx *c;
	struct seal *s;
	void *buf;
	double t0, t1, t2;

	if (argc == 3 && strcmp(argv[1], "--pages") == 0)
		pages = strtol(argv[2], NULL, 10);
	if (pages < 1 || (argc != 1 && argc != 3)) {
		fprintf(stderr, "usage: bench-seal [--pages N]\n");
		return 2;
	}
	if (posix_memalign(&buf, PAGE_SIZE_4K, PAGE_SIZE_4K) != 0 || seal_new_from_key(key, id, &s) < 0 ||
	    seal_ctx_new(s, &c) < 0)
		return 1;
	for (unsigned i = 0; i < PAGE_SIZE_4K; i++)
		((uint8_t *)buf)[i] = (uint8_t)(i * 131u);
	for (long i = 0; i < pages / 10; i++) /* warm-up */
		seal_page(c, (uint64_t)i, 1, buf, tag);
	t0 = cpu_s();
	for (long i = 0; i < pages; i++)
		seal_page(c, (uint64_t)i, 2, buf, tag);
	t1 = cpu_s();
	for (long i = 0; i < pages; i++) {
		/* Each page opened as sealed: seal it first, outside the timed part's meaning (subtracted below). */
		seal_page(c, (uint64_t)i, 3, buf, tag);
		if (seal_open(c, (uint64_t)i, 3, buf, tag) < 0)
			return 1;
	}
	t2 = cpu_s();
	printf("{\"pages\": %ld, \"seal_ns\": %.0f, \"open_ns\": %.0f}\n", pages, (t1 - t0) * 1e9 / (double)pages,
	       ((t2 - t1) - (t1 - t0)) * 1e9 / (double)pages);
	seal_ctx_free(c);
	seal_free(s, false);
	free(buf);
	return 0;
}
