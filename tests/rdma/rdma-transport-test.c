/* SPDX-License-Identifier: MIT */
/*
 * Transport-level checks and micro-benchmark of donor URLs (rdma:// and
 * tcp://) against a running uffd-donor, through transport/transport.h only.
 * Run inside the soft-RoCE VM by tests/rdma/rdma-transport.sh; every mode
 * prints what it measured and exits 0 on success, 1 on a failed check.
 *
 *   verify  URL KEY PAGES [PID]  write PAGES distinct pages pipelined, read all back, overwrite
 *                                every third, read all again; every byte compared; with the
 *                                donor's PID, its CPU time during the data path; then reconnect
 *                                as the same client and read everything back once more
 *   isolate URL KEY [CTL]        a second client using the first one's address+rkey gets a
 *                                remote access error; the donor and the first client go on;
 *                                a freed slab's key stops working; with the donor's control
 *                                socket CTL, a revoked slab refuses writes and its key dies at
 *                                the deadline
 *   kill    URL KEY PID          SIGKILL the donor PID with reads outstanding: every request
 *                                completes (with an error) within the timeout, none hangs
 *   bench   URL KEY ITERS PAGES  4 KiB write/read latency p50/p99 over ITERS round trips,
 *                                pipelined pages/s over PAGES pages
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "donor-auth.h"
#include "transport.h"
#if HAVE_RDMA
#include "transport-rdma.h"
#endif
#include "util.h"

#define DEPTH 512
/*
 * The transport's request timeout. kill checks that a dead donor's requests fail within it, so
 * it stays short there. verify and bench move pages through a donor in a TCG VM on a shared host,
 * whose TLS (no AES-NI under TCG) has taken ~1 ms of CPU per page: a pipeline of DEPTH pages can
 * take longer than 3 s, and slowness is not what they check.
 */
#define TIMEOUT_MS 3000
#define SLOW_TIMEOUT_MS 30000
static unsigned request_timeout_ms = TIMEOUT_MS;

static int failures;
static volatile int shutdowns, revoked;

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "CHECK FAILED %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                      \
			fputc('\n', stderr);                               \
			failures++;                                        \
		}                                                          \
	} while (0)

static void on_notify(struct donor_conn *c, const struct donor_notification *n, void *opaque)
{
	if (n->kind == DONOR_NOTIFY_SHUTDOWN)
		shutdowns++;
	if (n->kind == DONOR_NOTIFY_REVOKED)
		revoked += (int)n->nslabs;
}

static struct donor_conn *connect_as(const char *url, const char *keyfile, const char *id)
{
	struct donor_connect_opts o = { .timeout_ms = request_timeout_ms, .notify_cb = on_notify };
	struct donor_key key;
	struct donor_conn *c = NULL;
	int r;

	if (donor_key_load(keyfile, &key) < 0)
		exit(2);
	r = donor_connect(url, &key, id, &o, &c);
	if (r < 0) {
		fprintf(stderr, "connect %s as %s: %s\n", url, id, strerror(-r));
		exit(1);
	}
	return c;
}

static void fill(uint8_t *p, uint32_t page, uint32_t salt)
{
	uint64_t x = ((uint64_t)page << 32 | salt) * 0x9e3779b97f4a7c15ULL + 1;

	for (size_t i = 0; i < PAGE_SIZE_4K; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + i, &x, 8);
	}
}

struct pipe {
	struct donor_conn *c;
	uint8_t *bufs;
	uint32_t free_idx[DEPTH];
	unsigned nfree;
	uint32_t *slabs;
	uint32_t *salt; /* per page: expected content */
	uint64_t errors, mismatches, done;
};

static void pipe_complete(struct pipe *p, int timeout_ms)
{
	struct donor_completion comp[64];
	int n = donor_poll_completions(p->c, comp, 64, timeout_ms);

	if (n < 0) {
		fprintf(stderr, "poll_completions: %s\n", strerror(-n));
		exit(1);
	}
	for (int i = 0; i < n; i++) {
		uint32_t b = (uint32_t)(comp[i].cookie & 0xffff), page = (uint32_t)(comp[i].cookie >> 16);
		uint8_t *buf = p->bufs + (size_t)b * PAGE_SIZE_4K, want[PAGE_SIZE_4K];

		if (comp[i].status != 0) {
			if (p->errors++ < 5)
				fprintf(stderr, "page %u: %s\n", page, strerror(-comp[i].status));
		} else if (comp[i].op == DONOR_COMP_READ) {
			fill(want, page, p->salt[page]);
			if (memcmp(buf, want, PAGE_SIZE_4K) != 0 && p->mismatches++ < 5)
				fprintf(stderr, "page %u: content differs (salt %u)\n", page, p->salt[page]);
		}
		p->free_idx[p->nfree++] = b;
		p->done++;
	}
}

/* Writes (or reads back) pages [0,n) whose index % step == 0, DEPTH in flight. Returns pages/s. */
static double pipe_run(struct pipe *p, bool write, uint32_t n, uint32_t step, uint32_t salt)
{
	uint64_t t0 = now_ns(), want = 0;

	p->done = 0;
	for (uint32_t pg = 0; pg < n; pg += step) {
		uint32_t b;
		int r;

		while (p->nfree == 0) {
			donor_flush(p->c);
			pipe_complete(p, (int)request_timeout_ms * 2);
		}
		b = p->free_idx[--p->nfree];
		if (write) {
			p->salt[pg] = salt;
			fill(p->bufs + (size_t)b * PAGE_SIZE_4K, pg, salt);
			r = donor_submit_write(p->c, p->slabs[pg / DONOR_SLAB_SLOTS], pg % DONOR_SLAB_SLOTS,
					       p->bufs + (size_t)b * PAGE_SIZE_4K, (uint64_t)pg << 16 | b);
		} else {
			memset(p->bufs + (size_t)b * PAGE_SIZE_4K, 0xee, PAGE_SIZE_4K);
			r = donor_submit_read(p->c, p->slabs[pg / DONOR_SLAB_SLOTS], pg % DONOR_SLAB_SLOTS,
					      p->bufs + (size_t)b * PAGE_SIZE_4K, (uint64_t)pg << 16 | b);
		}
		if (r < 0) {
			fprintf(stderr, "submit page %u: %s\n", pg, strerror(-r));
			exit(1);
		}
		want++;
	}
	donor_flush(p->c);
	while (p->done < want) {
		uint64_t before = p->done;
		pipe_complete(p, (int)request_timeout_ms * 2);
		if (p->done == before) {
			fprintf(stderr, "no completion for %u ms (%" PRIu64 " of %" PRIu64 " done)\n",
				request_timeout_ms * 2, p->done, want);
			exit(1);
		}
	}
	return (double)want / ((double)(now_ns() - t0) / 1e9);
}

static void pipe_init(struct pipe *p, struct donor_conn *c, uint32_t npages)
{
	uint32_t nslabs = (npages + DONOR_SLAB_SLOTS - 1) / DONOR_SLAB_SLOTS;

	memset(p, 0, sizeof(*p));
	p->c = c;
	p->bufs = aligned_alloc(PAGE_SIZE_4K, (size_t)DEPTH * PAGE_SIZE_4K);
	p->slabs = calloc(nslabs, sizeof(*p->slabs));
	p->salt = calloc(npages, sizeof(*p->salt));
	if (!p->bufs || !p->slabs || !p->salt)
		exit(2);
	for (uint32_t i = 0; i < DEPTH; i++)
		p->free_idx[p->nfree++] = i;
	for (uint32_t i = 0; i < nslabs; i++) {
		int r = donor_alloc_slab(c, &p->slabs[i]);
		if (r < 0) {
			fprintf(stderr, "alloc_slab: %s\n", strerror(-r));
			exit(1);
		}
	}
}

/* utime+stime of a process in clock ticks, or -1. */
static long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields after the command name, which may contain spaces: skip to its closing paren. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (long)(ut + st);
}

/* Context switches (voluntary + not) of a process: how often it ran at all. -1 if unknown. */
static long ctx_switches(pid_t pid)
{
	char path[64], line[256];
	long total = 0, v;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1 ||
		    sscanf(line, "nonvoluntary_ctxt_switches: %ld", &v) == 1) {
			total += v;
			found++;
		}
	fclose(f);
	return found == 2 ? total : -1;
}

static void pipe_release(struct pipe *p)
{
	free(p->bufs);
	free(p->slabs);
	free(p->salt);
}

static int mode_verify(const char *url, const char *keyfile, uint32_t n, pid_t donor)
{
	struct donor_conn *c = connect_as(url, keyfile, "verify");
	struct pipe p;
	double w, r1, ow, r2;
	long c0, c1, x0, x1, hz = sysconf(_SC_CLK_TCK);
	uint64_t t0;

	pipe_init(&p, c, n);
	/* Only the data path is measured: connecting and slab registration are setup. */
	c0 = donor ? cpu_ticks(donor) : -1;
	x0 = donor ? ctx_switches(donor) : -1;
	t0 = now_ns();
	w = pipe_run(&p, true, n, 1, 1);
	r1 = pipe_run(&p, false, n, 1, 0);
	ow = pipe_run(&p, true, n, 3, 2);
	r2 = pipe_run(&p, false, n, 1, 0);
	c1 = donor ? cpu_ticks(donor) : -1;
	x1 = donor ? ctx_switches(donor) : -1;
	if (c0 >= 0 && c1 >= 0 && x0 >= 0 && x1 >= 0) {
		uint64_t pages = 3ULL * n + (n + 2) / 3, wall_ms = (now_ns() - t0) / 1000000ULL;
		long cpu_ms = (c1 - c0) * 1000 / hz;
		printf("DONOR-CPU %s: %ld ms utime+stime, %ld context switches during the data path "
		       "(%" PRIu64 " pages in %.1f s of wall time)\n",
		       c->ops->name, cpu_ms, x1 - x0, pages, (double)wall_ms / 1e3);
		/*
		 * One-sided verbs: the donor must not work per page. It runs for
		 * its timers only (one wakeup per 100-200 ms): allow 20 a second
		 * where per-page work would need thousands. Its CPU time, sampled
		 * per 10 ms tick, also collects rxe softirq work that happens to
		 * interrupt it under TCG: allow 3% of the wall time.
		 */
		if (strcmp(c->ops->name, "rdma") == 0) {
			CHECK(x1 - x0 <= 20 + (long)(wall_ms / 50),
			      "the rdma:// donor ran %ld times during the data path", x1 - x0);
			CHECK(cpu_ms <= 20 + (long)(wall_ms * 3 / 100),
			      "the rdma:// donor used %ld ms of CPU on the data path", cpu_ms);
		}
	}
	printf("VERIFY %s: %u pages on %u slabs: write %.0f pages/s, read %.0f pages/s, "
	       "overwrite 1/3 %.0f pages/s, re-read %.0f pages/s; errors %" PRIu64 ", mismatches %" PRIu64 "\n",
	       url, n, (n + DONOR_SLAB_SLOTS - 1) / DONOR_SLAB_SLOTS, w, r1, ow, r2, p.errors, p.mismatches);
	CHECK(p.errors == 0, "%" PRIu64 " requests failed", p.errors);
	CHECK(p.mismatches == 0, "%" PRIu64 " pages read back wrong", p.mismatches);
	CHECK(donor_ping(c) == 0, "ping after the run");
	/* A restarted pager (same id, within the lease) finds its slabs, keys and pages again. */
	donor_close(c);
	c = connect_as(url, keyfile, "verify");
	{
		uint32_t nslabs = (n + DONOR_SLAB_SLOTS - 1) / DONOR_SLAB_SLOTS, ids[64];
		int got = donor_list_slabs(c, ids, NULL, 64);
		double rr;

		CHECK(c->info.nslabs == nslabs, "reconnect: AUTH says %u slabs held, want %u", c->info.nslabs,
		      nslabs);
		CHECK(got == (int)nslabs, "reconnect: LIST_SLABS gives %d slabs, want %u", got, nslabs);
		p.c = c;
		rr = pipe_run(&p, false, n, 1, 0);
		printf("VERIFY %s: after reconnecting as the same client: read %.0f pages/s; errors %" PRIu64
		       ", mismatches %" PRIu64 "\n",
		       url, rr, p.errors, p.mismatches);
		CHECK(p.errors == 0 && p.mismatches == 0, "pages wrong after reconnecting");
	}
	donor_close(c);
	pipe_release(&p);
	return failures ? 1 : 0;
}

/* One page round trip; returns 0 or -errno. */
static int one(struct donor_conn *c, bool write, uint32_t slab, uint32_t slot, uint8_t *buf)
{
	struct donor_completion comp;
	int r = write ? donor_submit_write(c, slab, slot, buf, 1) : donor_submit_read(c, slab, slot, buf, 2);

	if (r == 0)
		r = donor_flush(c);
	if (r == 0) {
		r = donor_poll_completions(c, &comp, 1, (int)request_timeout_ms * 2);
		r = r == 1 ? comp.status : r == 0 ? -ETIMEDOUT : r;
	}
	return r;
}

/* One JSON request on the donor's control socket; the reply line lands in buf. Returns 0 or -errno. */
static int control(const char *path, const char *req, char *buf, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), r = 0;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		r = -errno;
	while (r == 0 && got + 1 < len && (got == 0 || buf[got - 1] != '\n')) {
		ssize_t n = read(fd, buf + got, len - got - 1);
		if (n <= 0)
			r = n < 0 ? -errno : -ECONNRESET;
		else
			got += (size_t)n;
	}
	buf[got] = '\0';
	if (fd >= 0)
		close(fd);
	return r;
}

#if HAVE_RDMA
static int mode_isolate(const char *url, const char *keyfile, const char *ctl)
{
	struct donor_conn *a = connect_as(url, keyfile, "tenant-a");
	struct donor_conn *b = connect_as(url, keyfile, "tenant-b");
	struct donor_conn *cc;
	uint8_t page[PAGE_SIZE_4K], got[PAGE_SIZE_4K];
	uint64_t a_addr, b_addr;
	uint32_t a_rkey, b_rkey, sa, sb, sa2;
	int r;

	CHECK(donor_alloc_slab(a, &sa) == 0, "A alloc");
	CHECK(donor_alloc_slab(b, &sb) == 0, "B alloc");
	fill(page, 7, 77);
	CHECK(one(a, true, sa, 7, page) == 0, "A writes its page");
	CHECK(donor_rdma_slab_key(a, sa, &a_addr, &a_rkey) == 0, "A's key");
	CHECK(donor_rdma_slab_key(b, sb, &b_addr, &b_rkey) == 0, "B's key");
	printf("ISOLATE: A slab %#x at %#" PRIx64 " rkey %#x; B slab %#x at %#" PRIx64 " rkey %#x\n", sa,
	       a_addr, a_rkey, sb, b_addr, b_rkey);
	/* The raw path works with B's own key: what fails next is the key, not the path. */
	r = donor_rdma_raw_read(b, b_addr, b_rkey, got);
	CHECK(r == 0, "B raw-reads its own slab: %s", strerror(-r));
	r = donor_rdma_raw_read(b, a_addr + 7 * DONOR_SLOT_SIZE, a_rkey, got);
	printf("ISOLATE: B reading A's page with A's address and rkey: %s\n", r ? strerror(-r) : "success");
	CHECK(r == -EACCES, "B using A's rkey must get a remote access error (EACCES), got %s",
	      r ? strerror(-r) : "success");
	CHECK(r != 0 || memcmp(got, page, sizeof(page)) != 0, "B obtained A's data");
	r = one(b, false, sb, 0, got);
	CHECK(r == -ENOTCONN, "B's connection is dead after the QP error, got %s", strerror(-r));
	/* The donor and A are unaffected. */
	memset(got, 0, sizeof(got));
	CHECK(one(a, false, sa, 7, got) == 0 && memcmp(got, page, sizeof(page)) == 0,
	      "A reads its page back after B's attempt");
	CHECK(donor_ping(a) == 0, "A ping");
	cc = connect_as(url, keyfile, "tenant-c");
	CHECK(donor_alloc_slab(cc, &sa2) == 0, "C alloc");
	fill(page, 1, 11);
	CHECK(one(cc, true, sa2, 1, page) == 0 && one(cc, false, sa2, 1, got) == 0 &&
		      memcmp(got, page, sizeof(page)) == 0,
	      "a new client C works after B's attempt");
	donor_close(cc);
	/* A freed slab's key must stop working even for its former owner. */
	CHECK(donor_free_slab(a, sa) == 0, "A frees its slab");
	r = donor_rdma_raw_read(a, a_addr + 7 * DONOR_SLOT_SIZE, a_rkey, got);
	printf("ISOLATE: A reading its freed slab with the old key: %s\n", r ? strerror(-r) : "success");
	CHECK(r == -EACCES, "the key of a freed slab still works (%s)", r ? strerror(-r) : "success");
	donor_close(b);
	donor_close(a);
	if (ctl) {
		/*
		 * Revocation: shrinking the capacity revokes the newest slab of the
		 * client holding most. Its owner gets NOTIFY REVOKED, its writes
		 * there are refused (-EROFS) while reads go on; at the deadline the
		 * donor frees it and the key stops working.
		 */
		struct donor_conn *rv = connect_as(url, keyfile, "tenant-r");
		uint32_t s1, s2;
		uint64_t r2_addr;
		uint32_t r2_rkey;
		char reply[1024];

		CHECK(donor_alloc_slab(rv, &s1) == 0 && donor_alloc_slab(rv, &s2) == 0 &&
			      donor_alloc_slab(rv, &sa2) == 0,
		      "R allocates three slabs");
		fill(page, 3, 33);
		CHECK(one(rv, true, s2, 3, page) == 0, "R writes to its second slab");
		CHECK(donor_rdma_slab_key(rv, sa2, &r2_addr, &r2_rkey) == 0, "R's key");
		/* B's and C's slabs are kept for their lease: 5 slabs, 80 MiB; 64M revokes one, R's newest. */
		r = control(ctl, "{\"cmd\":\"donor.set-capacity\",\"args\":{\"capacity\":\"64M\",\"grace\":2}}\n",
			    reply, sizeof(reply));
		printf("ISOLATE: set-capacity 64M: %s", r ? strerror(-r) : reply);
		CHECK(r == 0 && strstr(reply, "\"ok\":true"), "set-capacity failed");
		for (int i = 0; i < 300 && !revoked; i++)
			usleep(10000);
		CHECK(revoked == 1, "R was told of %d revoked slabs, want 1", revoked);
		r = one(rv, true, sa2, 0, page);
		CHECK(r == -EROFS, "write to a revoked slab: %s, want EROFS", r ? strerror(-r) : "success");
		CHECK(one(rv, true, s2, 4, page) == 0, "writes to R's other slabs go on");
		CHECK(one(rv, false, sa2, 0, got) == 0, "a revoked slab stays readable");
		usleep(3500000);
		r = donor_rdma_raw_read(rv, r2_addr, r2_rkey, got);
		printf("ISOLATE: R reading its revoked slab after the deadline with the old key: %s\n",
		       r ? strerror(-r) : "success");
		CHECK(r == -EACCES, "the key of a slab freed at its revocation deadline still works (%s)",
		      r ? strerror(-r) : "success");
		donor_close(rv);
	}
	printf("ISOLATE %s: %s\n", url, failures ? "FAILED" : "passed");
	return failures ? 1 : 0;
}
#endif

static int mode_kill(const char *url, const char *keyfile, pid_t pid)
{
	struct donor_conn *c = connect_as(url, keyfile, "killed");
	uint64_t t0, first_err = 0, ok = 0, bad = 0, submitted = 0, end_submit = 0;
	int r = 0, last_err = 0;
	struct pipe p;

	pipe_init(&p, c, DONOR_SLAB_SLOTS);
	pipe_run(&p, true, 1024, 1, 5);
	CHECK(p.errors == 0, "writes before the kill failed");
	/*
	 * SIGKILL, then keep the pipeline full: the donor's queue pair and
	 * regions live until its exit closes them, so requests succeed for a
	 * moment, then must all fail; none may be left hanging.
	 */
	t0 = now_ns();
	kill(pid, SIGKILL);
	while (now_ns() - t0 < 4ULL * TIMEOUT_MS * 1000000ULL) {
		struct donor_completion comp[64];
		int n;

		while (!end_submit && submitted - ok - bad < DEPTH) {
			uint32_t b = (uint32_t)(submitted % DEPTH);
			r = donor_submit_read(c, p.slabs[0], b % 1024, p.bufs + (size_t)b * PAGE_SIZE_4K, b);
			if (r < 0) {
				end_submit = now_ns();
				break;
			}
			submitted++;
			if (submitted % 32 == 0)
				donor_flush(c);
		}
		donor_flush(c);
		n = donor_poll_completions(c, comp, 64, 100);
		for (int i = 0; i < n; i++) {
			if (comp[i].status == 0) {
				ok++;
			} else {
				bad++;
				last_err = comp[i].status;
				if (!first_err)
					first_err = now_ns();
			}
		}
		if (end_submit && ok + bad == submitted)
			break;
	}
	/* The notification comes from the transport's own thread, shortly after the failure. */
	for (int i = 0; i < 100 && shutdowns == 0; i++)
		usleep(10000);
	printf("KILL %s: after SIGKILL %" PRIu64 " reads submitted (%d outstanding at most): %" PRIu64
	       " succeeded, %" PRIu64 " failed (last: %s); first failure %.0f ms after the kill, "
	       "submits refused (%s) after %.0f ms, all accounted for after %.0f ms; shutdown notifications %d\n",
	       url, submitted, DEPTH, ok, bad, last_err ? strerror(-last_err) : "-",
	       first_err ? (double)(first_err - t0) / 1e6 : -1.0, r ? strerror(-r) : "never",
	       end_submit ? (double)(end_submit - t0) / 1e6 : -1.0, (double)(now_ns() - t0) / 1e6, shutdowns);
	CHECK(end_submit != 0, "the connection never failed after the donor was killed");
	CHECK(r == -ENOTCONN, "submits on the dead connection return %s, want ENOTCONN", strerror(-r));
	CHECK(ok + bad == submitted, "%" PRIu64 " requests never completed (hang)", submitted - ok - bad);
	CHECK(bad > 0, "no outstanding request failed: none was outstanding when the donor died");
	CHECK(end_submit == 0 || end_submit - t0 < (uint64_t)(TIMEOUT_MS + 2000) * 1000000ULL,
	      "the failure surfaced later than the timeout");
	CHECK(shutdowns >= 1, "no SHUTDOWN notification after the donor died");
	r = donor_ping(c);
	CHECK(r < 0, "ping on a killed donor succeeded");
	donor_close(c);
	pipe_release(&p);
	return failures ? 1 : 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int mode_bench(const char *url, const char *keyfile, uint32_t iters, uint32_t n)
{
	struct donor_conn *c = connect_as(url, keyfile, "bench");
	uint64_t *lat = calloc(iters, sizeof(*lat));
	double p50[2], p99[2], w, r;
	uint8_t *page = aligned_alloc(PAGE_SIZE_4K, PAGE_SIZE_4K);
	struct pipe p;

	pipe_init(&p, c, n < DONOR_SLAB_SLOTS ? DONOR_SLAB_SLOTS : n);
	for (int op = 0; op < 2; op++) {
		for (uint32_t i = 0; i < iters; i++) {
			uint64_t t0 = now_ns();
			if (op == 0)
				fill(page, i, 9);
			int e = one(c, op == 0, p.slabs[0], i % DONOR_SLAB_SLOTS, page);
			lat[i] = now_ns() - t0;
			CHECK(e == 0, "latency round trip: %s", strerror(-e));
			if (e)
				return 1;
		}
		qsort(lat, iters, sizeof(*lat), cmp_u64);
		p50[op] = (double)lat[iters / 2] / 1e3;
		p99[op] = (double)lat[(size_t)iters * 99 / 100] / 1e3;
	}
	w = pipe_run(&p, true, n, 1, 3);
	r = pipe_run(&p, false, n, 1, 0);
	CHECK(p.errors == 0 && p.mismatches == 0, "bench data path errors");
	printf("BENCH %-6s write p50 %7.0f us p99 %7.0f us | read p50 %7.0f us p99 %7.0f us | "
	       "pipelined write %6.0f pages/s read %6.0f pages/s (%u round trips, %u pages)\n",
	       c->ops->name, p50[0], p99[0], p50[1], p99[1], w, r, iters, n);
	donor_close(c);
	pipe_release(&p);
	free(lat);
	free(page);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && (strcmp(argv[1], "verify") == 0 || strcmp(argv[1], "bench") == 0))
		request_timeout_ms = SLOW_TIMEOUT_MS;
	if (argc >= 5 && strcmp(argv[1], "verify") == 0)
		return mode_verify(argv[2], argv[3], (uint32_t)strtoul(argv[4], NULL, 10),
				   argc >= 6 ? (pid_t)atoi(argv[5]) : 0);
#if HAVE_RDMA
	if (argc >= 4 && strcmp(argv[1], "isolate") == 0)
		return mode_isolate(argv[2], argv[3], argc >= 5 ? argv[4] : NULL);
#endif
	if (argc >= 5 && strcmp(argv[1], "kill") == 0)
		return mode_kill(argv[2], argv[3], (pid_t)atoi(argv[4]));
	if (argc >= 6 && strcmp(argv[1], "bench") == 0)
		return mode_bench(argv[2], argv[3], (uint32_t)strtoul(argv[4], NULL, 10),
				  (uint32_t)strtoul(argv[5], NULL, 10));
	fprintf(stderr, "usage: %s verify URL KEYFILE PAGES | isolate URL KEYFILE [CTL] | kill URL KEYFILE PID |"
			" bench URL KEYFILE ITERS PAGES\n",
		argv[0]);
	return 2;
}
