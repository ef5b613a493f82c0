/* SPDX-License-Identifier: MIT */
/*
 * donor-bench: latency and throughput of 4 KiB pages through the donor
 * transport against a running uffd-donor. Latency is one page per round
 * trip (submit, flush, wait); throughput keeps --depth pages in flight.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "donor-auth.h"
#include "log.h"
#include "transport.h"
#include "util.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int wait_one(struct donor_conn *c)
{
	struct donor_completion comp;
	int n = donor_poll_completions(c, &comp, 1, 10000);

	if (n < 0)
		return n;
	if (n == 0)
		return -ETIMEDOUT;
	return comp.status;
}

static int latency(struct donor_conn *c, uint32_t slab, bool rd, unsigned iters, uint8_t *page)
{
	uint64_t *lat = calloc(iters, sizeof(*lat));
	int r = 0;

	if (!lat)
		return -ENOMEM;
	for (unsigned i = 0; i < iters && r == 0; i++) {
		uint64_t t0 = now_ns();
		uint32_t slot = i % DONOR_SLAB_SLOTS;
		r = rd ? donor_submit_read(c, slab, slot, page, i) : donor_submit_write(c, slab, slot, page, i);
		if (r == 0)
			r = donor_flush(c);
		if (r == 0)
			r = wait_one(c);
		lat[i] = now_ns() - t0;
	}
	if (r == 0) {
		qsort(lat, iters, sizeof(*lat), cmp_u64);
		printf("%-5s latency: p50 %.1f us, p99 %.1f us, min %.1f us (%u round trips)\n",
		       rd ? "read" : "write", lat[iters / 2] / 1e3, lat[iters * 99 / 100] / 1e3,
		       lat[0] / 1e3, iters);
	}
	free(lat);
	return r;
}

static int throughput(struct donor_conn *c, uint32_t slab, bool rd, unsigned pages, unsigned depth,
		      uint8_t *buf)
{
	struct donor_completion comp[256];
	unsigned sent = 0, done = 0;
	uint64_t t0 = now_ns();
	int r = 0;

	while (done < pages && r == 0) {
		while (sent < pages && sent - done < depth && r == 0) {
			uint32_t slot = sent % DONOR_SLAB_SLOTS;
			uint8_t *p = buf + (size_t)(sent % depth) * PAGE_SIZE_4K;
			r = rd ? donor_submit_read(c, slab, slot, p, sent) : donor_submit_write(c, slab, slot, p, sent);
			sent++;
		}
		if (r == 0)
			r = donor_flush(c);
		if (r == 0) {
			int n = donor_poll_completions(c, comp, 256, 10000);
			if (n <= 0)
				r = n < 0 ? n : -ETIMEDOUT;
			for (int i = 0; i < n && r == 0; i++)
				r = comp[i].status;
			done += n > 0 ? (unsigned)n : 0;
		}
	}
	if (r == 0) {
		double s = (now_ns() - t0) / 1e9;
		printf("%-5s throughput: %.0f pages/s (%.0f MiB/s), depth %u, %u pages\n",
		       rd ? "read" : "write", pages / s, pages / s * 4096 / 1048576, depth, pages);
	}
	return r;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },   { "key-file", required_argument, NULL, 'k' },
		{ "iters", required_argument, NULL, 'i' }, { "pages", required_argument, NULL, 'p' },
		{ "depth", required_argument, NULL, 'd' }, { "help", no_argument, NULL, 'h' },
		{}
	};
	const char *url = NULL, *key_file = NULL;
	unsigned iters = 20000, pages = 200000, depth = 128;
	struct donor_key key = { .len = 0 };
	struct donor_conn *c = NULL;
	uint8_t *buf;
	uint32_t slab;
	int o, r;

	log_set_prefix("donor-bench");
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'u': url = optarg; break;
		case 'k': key_file = optarg; break;
		case 'i': iters = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'p': pages = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'd': depth = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'h':
			printf("Usage: donor-bench --url tcp://127.0.0.1:PORT [--key-file F] [--iters N] [--pages N] [--depth N]\n");
			return 0;
		default:
			return 2;
		}
	}
	if (!url || !iters || !pages || !depth || depth > 4096) {
		log_err("--url is required; --iters, --pages > 0; --depth 1..4096");
		return 2;
	}
	if (key_file && donor_key_load(key_file, &key) < 0)
		return 1;
	buf = calloc(depth, PAGE_SIZE_4K);
	if (!buf)
		return 1;
	memset(buf, 0xa5, (size_t)depth * PAGE_SIZE_4K);
	r = donor_connect(url, &key, "donor-bench", NULL, &c);
	if (r < 0) {
		log_err_errno(r, "connect %s", url);
		free(buf);
		return 1;
	}
	r = donor_alloc_slab(c, &slab);
	if (r == 0)
		r = latency(c, slab, false, iters, buf);
	if (r == 0)
		r = latency(c, slab, true, iters, buf);
	if (r == 0)
		r = throughput(c, slab, false, pages, depth, buf);
	if (r == 0)
		r = throughput(c, slab, true, pages, depth, buf);
	if (r < 0)
		log_err_errno(r, "benchmark failed");
	else
		donor_free_slab(c, slab);
	donor_close(c);
	free(buf);
	return r < 0;
}
