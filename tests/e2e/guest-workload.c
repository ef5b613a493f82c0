/* SPDX-License-Identifier: MIT */
/*
 * Guest-side memory workload for the e2e tests: a static program started by
 * the initramfs /init. It fills N MiB with a pattern that lets each 4 KiB
 * page prove where it came from (page index, generation, pseudo-random body
 * derived from both), then reads everything back several times in different
 * orders, rewrites a subset and verifies again. The allocation is larger
 * than the local memory the pager is allowed to keep, so under the pager
 * every pass forces evictions and refaults; a page served from the wrong
 * slot, a stale copy or a zero page shows up as a FAIL line with its page
 * and offset. The result is one line on the console:
 *   PASS pages=N passes=P mib=M seconds=S
 *   FAIL page=I offset=O pass=NAME expected=0x.. got=0x..
 * Usage: guest-workload [MIB [PASSES [SEED]]]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "guest-pattern.h"

#define PAGE 4096u
#define WORDS (PAGE / sizeof(uint64_t))
#define MAGIC UINT64_C(0x7566666477726b00) /* "uffdwrk\0" */

static uint64_t seed;

/* Word w of page idx at generation gen. Words 0 and 1 are readable headers. */
static uint64_t expected_word(uint64_t idx, uint64_t gen, unsigned w)
{
	if (w == 0)
		return MAGIC ^ idx;
	if (w == 1)
		return gen;
	return pattern_word(seed, idx, gen, w);
}

static void fill_page(uint64_t *p, uint64_t idx, uint64_t gen)
{
	for (unsigned w = 0; w < WORDS; w++)
		p[w] = expected_word(idx, gen, w);
}

static int check_page(const uint64_t *p, uint64_t idx, uint64_t gen, const char *pass)
{
	for (unsigned w = 0; w < WORDS; w++) {
		uint64_t want = expected_word(idx, gen, w);

		if (p[w] != want) {
			printf("FAIL page=%" PRIu64 " offset=%u pass=%s expected=0x%016" PRIx64
			       " got=0x%016" PRIx64 " header=0x%016" PRIx64 "/%" PRIu64 "\n",
			       idx, w * 8u, pass, want, p[w], (uint64_t)(p[0] ^ MAGIC), p[1]);
			fflush(stdout);
			return -1;
		}
	}
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A stride coprime with n visits every index once in a scattered order. */
static uint64_t coprime_stride(uint64_t n, uint64_t hint)
{
	uint64_t s = hint % n;

	if (n == 1)
		return 1;
	for (;; s++) {
		uint64_t a = s ? s : 1, b = n, t;

		while (b) {
			t = a % b;
			a = b;
			b = t;
		}
		if (a == 1 && s > 1)
			return s;
	}
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 400;
	unsigned passes = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 3;
	uint64_t npages, *gens, verified = 0;
	unsigned done = 0;
	double t0 = now_s();
	char *mem;

	seed = argc > 3 ? strtoull(argv[3], NULL, 0) : 0x5eedULL;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (mib == 0 || passes == 0) {
		printf("FAIL usage: guest-workload [MIB>0 [PASSES>0 [SEED]]]\n");
		return 2;
	}
	npages = mib * (1024 * 1024 / PAGE);
	mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gens = calloc(npages, sizeof(*gens));
	if (mem == MAP_FAILED || !gens) {
		printf("FAIL alloc mib=%" PRIu64 ": %s\n", mib, strerror(errno));
		return 1;
	}
	printf("workload: mib=%" PRIu64 " pages=%" PRIu64 " passes=%u seed=0x%" PRIx64 "\n", mib,
	       npages, passes, seed);

	for (uint64_t i = 0; i < npages; i++)
		fill_page((uint64_t *)(mem + i * PAGE), i, 0);
	printf("workload: filled in %.1fs\n", now_s() - t0);

	for (unsigned p = 0; p < passes; p++) {
		double ts = now_s();
		uint64_t stride = coprime_stride(npages, pattern_mix(seed + p) % npages);
		uint64_t rewritten = 0;

		/* Sequential forward: what a streaming guest does. */
		for (uint64_t i = 0; i < npages; i++)
			if (check_page((uint64_t *)(mem + i * PAGE), i, gens[i], "sequential"))
				return 1;
		/* Scattered: defeats any readahead a pager might do. */
		for (uint64_t k = 0, i = 0; k < npages; k++, i = (i + stride) % npages)
			if (check_page((uint64_t *)(mem + i * PAGE), i, gens[i], "random"))
				return 1;
		/* Rewrite about one page in five so dirty pages must be written back. */
		for (uint64_t i = 0; i < npages; i++) {
			if (pattern_mix(seed ^ i ^ ((uint64_t)p << 40)) % 5 == 0) {
				gens[i]++;
				fill_page((uint64_t *)(mem + i * PAGE), i, gens[i]);
				rewritten++;
			}
		}
		/* Reverse after the rewrite: fresh and old generations interleaved. */
		for (uint64_t i = npages; i-- > 0;)
			if (check_page((uint64_t *)(mem + i * PAGE), i, gens[i], "reverse"))
				return 1;
		verified += 3 * npages;
		done++;
		printf("workload: pass %u rewrote %" PRIu64 " pages in %.1fs\n", p + 1, rewritten,
		       now_s() - ts);
	}
	printf("PASS pages=%" PRIu64 " passes=%u mib=%" PRIu64 " verified=%" PRIu64 " seconds=%.1f\n",
	       npages, done, mib, verified, now_s() - t0);
	return 0;
}
