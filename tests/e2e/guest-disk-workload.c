/* SPDX-License-Identifier: MIT */
/*
 * The e2e disk workload (tests/e2e/e2e-disk-cache.py), static, run as
 * "run DEV SEED" by the guest's /init and as "expect FILE SIZE SEED" on the
 * host. Every 4 KiB block's contents are a function of (seed, block,
 * generation), so any block read back can be checked exactly.
 *
 * First boot (no marker in the disk's last block): write every block
 * (generation 1), fsync, verify (sequential 64 KiB and random 4 KiB reads,
 * O_DIRECT so the guest's page cache serves nothing), overwrite a
 * scattering of single blocks (generation 2) and of whole 64 KiB chunks
 * (generation 3), fsync, verify again, write the marker "phase 1" and exit
 * 10: /init reboots the guest. Second boot (marker "phase 1"): verify
 * twice, write marker "phase 2", print PASS. "expect" writes the image the
 * disk must hold after both boots, for qemu-img compare on the host.
 * "bench DEV SEED" is scripts/bench's disk cache guest (uffdvm.bench_mib=,
 * uffdvm.bench_ops= on the kernel command line): O_DIRECT reads of the
 * device, sequential 64 KiB over the first region and random 4 KiB over
 * the second, each pass twice (cold, then warm), one line of JSON per pass.
 * With uffdvm.swap_mib= as well, "bench" is the swap bench instead: the
 * device becomes the guest's swap (a swap header written here, swapon(2)),
 * and the guest writes, then touches at random, that many MiB of anonymous
 * memory (more than its RAM), verifying every page it reads back.
 * Exit: 0 PASS, 10 reboot me, 1 a block was wrong or I/O failed, 2 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_DIRECT */
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/swap.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "guest-pattern.h"

#define BLK 4096u
#define CHUNK 16u /* blocks per 64 KiB chunk */

static uint64_t seed;

static unsigned final_gen(uint64_t b)
{
	if (pattern_mix(seed ^ 0xc0ffee ^ (b / CHUNK)) % 7 == 0)
		return 3;
	return pattern_mix(seed ^ 0xb10c ^ b) % 5 == 0 ? 2 : 1;
}

static void fill(uint8_t *p, uint64_t b, unsigned gen)
{
	uint64_t *w = (uint64_t *)p;

	for (unsigned i = 0; i < BLK / 8; i++)
		w[i] = pattern_word(seed, b, gen, i);
}

static void marker(uint8_t *p, const char *text)
{
	memset(p, 0, BLK);
	snprintf((char *)p, BLK, "UFFDVM-DISK %s", text);
}

static int xpwrite(int fd, const void *p, size_t n, uint64_t off)
{
	if (pwrite(fd, p, n, (off_t)off) != (ssize_t)n) {
		printf("FAIL write at %llu: %s\n", (unsigned long long)off, strerror(errno));
		return -1;
	}
	return 0;
}

static int xpread(int fd, void *p, size_t n, uint64_t off)
{
	if (pread(fd, p, n, (off_t)off) != (ssize_t)n) {
		printf("FAIL read at %llu: %s\n", (unsigned long long)off, strerror(errno));
		return -1;
	}
	return 0;
}

/* gen_of(b) is what block b must hold now. */
static int verify(int fd, uint64_t nblocks, unsigned (*gen_of)(uint64_t), uint8_t *buf, uint8_t *want, int random)
{
	uint64_t step = 0, n = random ? nblocks : (nblocks + CHUNK - 1) / CHUNK;

	/* A stride coprime with nblocks visits every block once, in a scattered order. */
	step = pattern_mix(seed) % nblocks | 1;
	while (random && nblocks % 2 == 0 && step % 2 == 0)
		step++;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t first = random ? (i * step) % nblocks : i * CHUNK;
		uint64_t cnt = random ? 1 : (first + CHUNK > nblocks ? nblocks - first : CHUNK);

		if (xpread(fd, buf, cnt * BLK, first * BLK) < 0)
			return -1;
		for (uint64_t k = 0; k < cnt; k++) {
			fill(want, first + k, gen_of(first + k));
			if (memcmp(buf + k * BLK, want, BLK) != 0) {
				printf("FAIL block %llu does not hold generation %u\n", (unsigned long long)(first + k),
				       gen_of(first + k));
				return -1;
			}
		}
	}
	printf("UFFDVM-DISK verified %llu blocks (%s)\n", (unsigned long long)nblocks, random ? "random 4K" : "64K");
	fflush(stdout);
	return 0;
}

static unsigned g1(uint64_t b) { (void)b; return 1; }

static unsigned after_singles(uint64_t b) { return pattern_mix(seed ^ 0xb10c ^ b) % 5 == 0 ? 2 : 1; }

static int phase1(int fd, uint64_t nblocks, uint8_t *buf, uint8_t *want)
{
	for (uint64_t b = 0; b < nblocks; b += CHUNK) {
		uint64_t cnt = b + CHUNK > nblocks ? nblocks - b : CHUNK;

		for (uint64_t k = 0; k < cnt; k++)
			fill(buf + k * BLK, b + k, 1);
		if (xpwrite(fd, buf, cnt * BLK, b * BLK) < 0)
			return -1;
	}
	if (fsync(fd) < 0 || verify(fd, nblocks, g1, buf, want, 0) || verify(fd, nblocks, g1, buf, want, 1) ||
	    verify(fd, nblocks, g1, buf, want, 0))
		return -1;
	/* Single blocks: each only part of a cache block. */
	for (uint64_t b = 0; b < nblocks; b++)
		if (after_singles(b) == 2) {
			fill(buf, b, 2);
			if (xpwrite(fd, buf, BLK, b * BLK) < 0)
				return -1;
		}
	if (fsync(fd) < 0 || verify(fd, nblocks, after_singles, buf, want, 1))
		return -1;
	/* Whole chunks: each exactly one cache block (64 KiB). */
	for (uint64_t b = 0; b + CHUNK <= nblocks; b += CHUNK)
		if (final_gen(b) == 3) {
			for (uint64_t k = 0; k < CHUNK; k++)
				fill(buf + k * BLK, b + k, 3);
			if (xpwrite(fd, buf, CHUNK * BLK, b * BLK) < 0)
				return -1;
		}
	if (fsync(fd) < 0 || verify(fd, nblocks, final_gen, buf, want, 0) ||
	    verify(fd, nblocks, final_gen, buf, want, 1))
		return -1;
	marker(buf, "phase 1");
	if (xpwrite(fd, buf, BLK, nblocks * BLK) < 0 || fsync(fd) < 0)
		return -1;
	return 0;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t cmdline_u64(const char *key, uint64_t def)
{
	char line[4096], *p;
	FILE *f = fopen("/proc/cmdline", "r");
	size_t n = f ? fread(line, 1, sizeof(line) - 1, f) : 0;

	if (f)
		fclose(f);
	line[n] = '\0';
	p = strstr(line, key);
	return p ? strtoull(p + strlen(key), NULL, 0) : def;
}

/* One pass: ops reads of len bytes, sequential from base or random within [base, base + region). */
static int bench_pass(int fd, const char *name, uint64_t base, uint64_t region, uint32_t len, uint64_t ops,
		      int random, uint8_t *buf)
{
	uint64_t *lat = malloc(ops * sizeof(*lat)), t0 = mono_ns(), x = seed ^ (uint64_t)random;

	if (!lat)
		return -1;
	for (uint64_t i = 0; i < ops; i++) {
		uint64_t off = random ? base + (pattern_mix(x + i) % (region / len)) * len : base + (i * len) % region;
		uint64_t t = mono_ns();

		if (xpread(fd, buf, len, off) < 0) {
			free(lat);
			return -1;
		}
		lat[i] = mono_ns() - t;
	}
	t0 = mono_ns() - t0;
	qsort(lat, ops, sizeof(*lat), cmp_u64);
	printf("UFFDVM-BENCH {\"pass\": \"%s\", \"ops\": %llu, \"bytes\": %llu, \"seconds\": %.3f, "
	       "\"p50_us\": %.1f, \"p99_us\": %.1f}\n",
	       name, (unsigned long long)ops, (unsigned long long)(ops * len), t0 / 1e9, lat[ops / 2] / 1e3,
	       lat[ops * 99 / 100] / 1e3);
	fflush(stdout);
	free(lat);
	return 0;
}

static void report(const char *name, uint64_t ops, uint64_t bytes, uint64_t ns, uint64_t *lat)
{
	qsort(lat, ops, sizeof(*lat), cmp_u64);
	printf("UFFDVM-BENCH {\"pass\": \"%s\", \"ops\": %llu, \"bytes\": %llu, \"seconds\": %.3f, "
	       "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f}\n",
	       name, (unsigned long long)ops, (unsigned long long)bytes, ns / 1e9, lat[ops / 2] / 1e3,
	       lat[ops * 9 / 10] / 1e3, lat[ops * 99 / 100] / 1e3, lat[ops * 999 / 1000] / 1e3);
	fflush(stdout);
}

/* The word a swap bench page starts with: its index, its pass. */
static uint64_t page_word(uint64_t i, unsigned gen) { return pattern_mix(seed ^ (i << 8) ^ gen); }

/*
 * The seed's case: the guest swaps to its own (cached) disk. fd (O_DIRECT)
 * becomes swap: a version-1 swap header, then swapon(2) on dev. "swap-fill"
 * writes every page of mib MiB (more than RAM: the kernel swaps out as it
 * goes); "swap-rand-1" and "swap-rand-2" each read ops random pages (other
 * ones each pass: a page read back stays in RAM) and check their first
 * word, timing each touch (a page in RAM costs ~1 us, one swapped in costs
 * a disk read).
 */
static int swap_bench(int fd, const char *dev, uint64_t size, uint64_t mib, uint64_t ops)
{
	uint64_t npages = (mib << 20) / BLK, dev_pages = size / BLK, t0, *lat;
	uint8_t *hdr, *mem;

	if (posix_memalign((void **)&hdr, BLK, BLK) || !(lat = malloc((npages > ops ? npages : ops) * sizeof(*lat))))
		return -1;
	memset(hdr, 0, BLK);
	((uint32_t *)(hdr + 1024))[0] = 1;			 /* version */
	((uint32_t *)(hdr + 1024))[1] = (uint32_t)(dev_pages - 1); /* last page */
	memcpy(hdr + BLK - 10, "SWAPSPACE2", 10);
	if (xpwrite(fd, hdr, BLK, 0) < 0 || fsync(fd) < 0 || close(fd) < 0)
		return -1;
	if (swapon(dev, 0) < 0) {
		printf("FAIL swapon %s: %s\n", dev, strerror(errno));
		return -1;
	}
	mem = mmap(NULL, npages * BLK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -1;
	t0 = mono_ns();
	for (uint64_t i = 0; i < npages; i++) {
		uint64_t t = mono_ns();

		memset(mem + i * BLK, (int)(i & 0xff) | 1, BLK); /* no zero pages */
		*(uint64_t *)(mem + i * BLK) = page_word(i, 1);
		lat[i] = mono_ns() - t;
	}
	report("swap-fill", npages, npages * BLK, mono_ns() - t0, lat);
	sleep(1);
	for (unsigned pass = 1; pass <= 2; pass++) {
		t0 = mono_ns();
		for (uint64_t k = 0; k < ops; k++) {
			uint64_t i = pattern_mix(seed ^ 0x5a1f ^ ((uint64_t)pass << 40) ^ k) % npages, t = mono_ns();

			if (*(volatile uint64_t *)(mem + i * BLK) != page_word(i, 1)) {
				printf("FAIL swap page %llu read back wrong\n", (unsigned long long)i);
				return -1;
			}
			lat[k] = mono_ns() - t;
		}
		report(pass == 1 ? "swap-rand-1" : "swap-rand-2", ops, ops * BLK, mono_ns() - t0, lat);
		sleep(1);
	}
	printf("PASS swap bench\n");
	return 0;
}

static int bench(int fd, uint64_t size)
{
	uint64_t region = cmdline_u64("uffdvm.bench_mib=", 128) << 20, ops = cmdline_u64("uffdvm.bench_ops=", 8192);
	uint8_t *buf;

	if (2 * region > size || posix_memalign((void **)&buf, BLK, 65536))
		return -1;
	/* A second between passes: the host reads the cache's counters (rewritten every 250 ms) per pass. */
	if (bench_pass(fd, "seq-64k-cold", 0, region, 65536, region / 65536, 0, buf) || sleep(1) ||
	    bench_pass(fd, "seq-64k-warm", 0, region, 65536, region / 65536, 0, buf) || sleep(1) ||
	    bench_pass(fd, "rand-4k-cold", region, region, 4096, ops, 1, buf) || sleep(1) ||
	    bench_pass(fd, "rand-4k-warm", region, region, 4096, ops, 1, buf) || sleep(1))
		return -1;
	printf("PASS disk bench\n");
	return 0;
}

int main(int argc, char **argv)
{
	uint8_t *buf, *want;
	uint64_t size = 0, nblocks;
	int fd;

	if (argc != 4 && argc != 5)
		return 2;
	if (posix_memalign((void **)&buf, BLK, CHUNK * BLK) || posix_memalign((void **)&want, BLK, BLK))
		return 1;
	if (strcmp(argv[1], "expect") == 0 && argc == 5) {
		size = strtoull(argv[3], NULL, 0);
		seed = strtoull(argv[4], NULL, 0);
		fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || size < 2 * BLK)
			return 1;
		nblocks = size / BLK - 1;
		for (uint64_t b = 0; b < nblocks; b++) {
			fill(buf, b, final_gen(b));
			if (xpwrite(fd, buf, BLK, b * BLK) < 0)
				return 1;
		}
		marker(buf, "phase 2");
		if (xpwrite(fd, buf, BLK, nblocks * BLK) < 0 || ftruncate(fd, (off_t)size) < 0 || close(fd) < 0)
			return 1;
		return 0;
	}
	if ((strcmp(argv[1], "run") != 0 && strcmp(argv[1], "bench") != 0) || argc != 4)
		return 2;
	seed = strtoull(argv[3], NULL, 0);
	fd = open(argv[2], O_RDWR | O_DIRECT);
	if (fd >= 0 && ioctl(fd, BLKGETSIZE64, &size) < 0) {
		struct stat st; /* a plain file: how the host tries the workload out */

		size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	}
	if (fd < 0 || size < 2 * BLK) {
		printf("FAIL cannot open %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	if (strcmp(argv[1], "bench") == 0 && cmdline_u64("uffdvm.swap_mib=", 0))
		return swap_bench(fd, argv[2], size, cmdline_u64("uffdvm.swap_mib=", 0),
				  cmdline_u64("uffdvm.bench_ops=", 8192)) < 0 ? 1 : 0;
	if (strcmp(argv[1], "bench") == 0)
		return bench(fd, size) < 0 ? 1 : 0;
	nblocks = size / BLK - 1;
	if (xpread(fd, buf, BLK, nblocks * BLK) < 0)
		return 1;
	if (strcmp((char *)buf, "UFFDVM-DISK phase 1") != 0) {
		printf("UFFDVM-DISK phase 1: %llu blocks, seed 0x%llx\n", (unsigned long long)nblocks,
		       (unsigned long long)seed);
		if (phase1(fd, nblocks, buf, want) < 0)
			return 1;
		printf("UFFDVM-DISK-REBOOT\n");
		return 10;
	}
	printf("UFFDVM-DISK phase 2 (after the reboot)\n");
	if (verify(fd, nblocks, final_gen, buf, want, 1) || verify(fd, nblocks, final_gen, buf, want, 0))
		return 1;
	marker(buf, "phase 2");
	if (xpwrite(fd, buf, BLK, nblocks * BLK) < 0 || fsync(fd) < 0)
		return 1;
	printf("PASS disk workload: every block verified before and after the reboot\n");
	return 0;
}
