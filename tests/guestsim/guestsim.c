/* SPDX-License-Identifier: MIT */
/*
 * guestsim: a host process that uses a shared memfd the way a guest uses its
 * RAM, for tests and benchmarks of the pager without booting a VM. Run under
 * LD_PRELOAD=libuffd-glue.so, its RAM mapping is registered with uffd-pager
 * exactly like QEMU's. Every page carries contents derived from (seed, page,
 * generation), each thread owns the pages congruent to its id so it knows
 * every page's generation without locks, and every read checks every byte:
 * a page the pager loses, mixes up or returns stale is caught and reported.
 * Some writes go through read(2) so the kernel, not user code, takes the
 * fault, as KVM's accesses to guest memory do.
 */
#include "gs-hist.h"
#include "gs-pattern.h"
#include "gs-rand.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_MISMATCH 1
#define EXIT_USAGE 2
#define EXIT_SYSTEM 3

/* The shim's default threshold; scratch files stay far below it. */
#define GLUE_MIN_SIZE_DEFAULT (16ULL << 20)
#define MAX_THREADS 1024U

enum pattern { PAT_SEQ, PAT_UNIFORM, PAT_ZIPF };
static const char *const pattern_names[] = { "seq", "uniform", "zipf" };

struct options {
	uint64_t size;
	unsigned threads;
	enum pattern pattern;
	double zipf_theta;
	double writes_pct;
	double kio_pct;
	uint64_t ops;
	bool ops_set;
	double duration;
	enum gs_content content;
	uint64_t seed;
	uint64_t access_seed; /* of access choices; default: seed */
	bool access_seed_set;
	uint64_t private_pages;
	bool fill;
	bool final_verify;
	const char *json;
	bool progress;
	double hold;
	double pause_after_fill;
	bool self_test_corrupt;
};

enum phase { PH_FILL, PH_ACCESS, PH_VERIFY, PH_COUNT };

/* SIGUSR1 ends the access phase early (a test decides when it has seen enough); verification follows. */
static atomic_bool end_access;

static void on_sigusr1(int sig)
{
	(void)sig;
	atomic_store(&end_access, true);
}

/* SIGUSR2 ends the pause after the fill early (a test is done with the stored pages). */
static atomic_bool end_pause;

static void on_sigusr2(int sig)
{
	(void)sig;
	atomic_store(&end_pause, true);
}
static const char *const phase_names[] = { "fill", "access", "verify" };

struct phase_stats {
	struct gs_hist all, read, write, kio;
	uint64_t reads, writes, kio_writes;
	uint64_t wall_ns;
	uint64_t nvcsw, nivcsw; /* the workers' context switches (a blocked fault is a voluntary one) */
};

struct run;

struct worker {
	struct run *run;
	pthread_t thread;
	unsigned id;
	uint64_t npages;     /* pages owned: id, id + threads, ... */
	uint32_t *gen;       /* generation of each owned page, by local index */
	uint64_t ops;        /* access-phase share when --ops is used */
	int scratch_fd;      /* small memfd staging kernel-io writes */
	uint64_t *buf;       /* one page: expected contents / kio staging */
	struct gs_rng rng;
	struct gs_zipf zipf;
	struct gs_perm perm;
	struct phase_stats st[PH_COUNT];
	_Atomic uint64_t done; /* progress of the current phase */
	bool joined;
	int err;             /* -errno of a system error, reported by main */
	const char *err_what;
};

struct run {
	struct options opt;
	unsigned char *base;
	uint64_t npages;
	struct worker *workers;
	atomic_bool stop;
	atomic_uint mismatches;
	enum phase phase;
	uint64_t phase_start_ns;
	uint64_t deadline_ns;
	uint64_t corrupt_page;
	uint32_t corrupt_offset;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: guestsim --size SIZE [options]\n"
		"\n"
		"Uses a shared memfd (\"guestsim-ram\") like guest RAM: fills every page with\n"
		"verifiable contents, then reads (checking every byte) and rewrites pages,\n"
		"and reports latencies. Run it with LD_PRELOAD=libuffd-glue.so so that\n"
		"uffd-pager manages the memory, exactly as it does for QEMU. The shim only\n"
		"takes memfds of at least its minimum size (16M by default).\n"
		"\n"
		"  --size SIZE          guest RAM size, multiple of 4096 (e.g. 256M, 2G)\n"
		"  --threads N          worker threads, 1..%u (default 1); thread t owns the\n"
		"                       pages p with p %% N == t\n"
		"  --pattern P          seq | uniform | zipf (default uniform): sequential\n"
		"                       wrapping scan, uniform random, or Zipf with the hot\n"
		"                       set scattered by a fixed permutation\n"
		"  --zipf-theta T       Zipf exponent, 0 < T < 1 (default 0.99)\n"
		"  --writes PCT         share of accesses that rewrite the page (default 25)\n"
		"  --kernel-io PCT      share of writes (fill and access) done by read(2) from a\n"
		"                       scratch memfd into the page, so the kernel takes the\n"
		"                       fault as KVM would (default 0)\n"
		"  --ops N              accesses in total, split over the threads\n"
		"                       (default: one per page)\n"
		"  --duration SEC       run the access phase for SEC seconds instead of --ops\n"
		"                       (SIGUSR1 ends it early; the final verification follows)\n"
		"  --content C          random (incompressible) | realistic (~2.5x compressible)\n"
		"                       (default random)\n"
		"  --seed N             seed of contents and access choices (default 1)\n"
		"  --access-seed N      seed of access choices only (default: --seed)\n"
		"  --private-pages N    fill the first N pages at a generation derived from the\n"
		"                       access seed: guests that share --seed but not\n"
		"                       --access-seed hold those pages alone (default 0)\n"
		"  --no-fill            skip the fill phase: pages start as zeros\n"
		"  --no-final-verify    skip the last pass that checks every page once more\n"
		"  --json FILE          write the results as a JSON object to FILE\n"
		"  --progress           print a progress line on stderr every second\n"
		"  --hold SEC           sleep SEC seconds after the run, RAM still mapped\n"
		"  --pause-after-fill SEC  print FILLED after the fill phase and sleep SEC seconds\n"
		"                       (tests act on the stored pages meanwhile; SIGUSR2 ends it)\n"
		"  -h, --help           show this help\n"
		"\n"
		"Prints a one-line summary on stdout.\n"
		"Exit status: 0 all data verified, 1 data mismatch (details on stderr),\n"
		"2 usage error, 3 system error.\n",
		MAX_THREADS);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_err("%s (see --help)", msg);
	return -EINVAL;
}

static int parse_u64(const char *opt, const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	if (!*s || *s == '-')
		return usage_error("%s: '%s' is not a non-negative integer", opt, s);
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return usage_error("%s: '%s' is not a non-negative integer", opt, s);
	*ret = v;
	return 0;
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *ret)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return usage_error("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
	*ret = v;
	return 0;
}

enum {
	OPT_SIZE = 256, OPT_THREADS, OPT_PATTERN, OPT_THETA, OPT_WRITES, OPT_KIO, OPT_OPS,
	OPT_DURATION, OPT_CONTENT, OPT_SEED, OPT_NO_FILL, OPT_NO_VERIFY, OPT_JSON,
	OPT_PROGRESS, OPT_HOLD, OPT_PAUSE, OPT_CORRUPT, OPT_ACCESS_SEED, OPT_PRIVATE,
};

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "pattern", required_argument, NULL, OPT_PATTERN },
		{ "zipf-theta", required_argument, NULL, OPT_THETA },
		{ "writes", required_argument, NULL, OPT_WRITES },
		{ "kernel-io", required_argument, NULL, OPT_KIO },
		{ "ops", required_argument, NULL, OPT_OPS },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "content", required_argument, NULL, OPT_CONTENT },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "access-seed", required_argument, NULL, OPT_ACCESS_SEED },
		{ "private-pages", required_argument, NULL, OPT_PRIVATE },
		{ "no-fill", no_argument, NULL, OPT_NO_FILL },
		{ "no-final-verify", no_argument, NULL, OPT_NO_VERIFY },
		{ "json", required_argument, NULL, OPT_JSON },
		{ "progress", no_argument, NULL, OPT_PROGRESS },
		{ "hold", required_argument, NULL, OPT_HOLD },
		{ "pause-after-fill", required_argument, NULL, OPT_PAUSE },
		/* Hidden: flips a byte behind the verifier's back to prove it notices. */
		{ "self-test-corrupt", no_argument, NULL, OPT_CORRUPT },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool size_set = false, duration_set = false;
	uint64_t v;
	int c, r;

	*o = (struct options){
		.threads = 1, .pattern = PAT_UNIFORM, .zipf_theta = 0.99, .writes_pct = 25,
		.content = GS_CONTENT_RANDOM, .seed = 1, .fill = true, .final_verify = true,
	};
	opterr = 0;
	/* A leading ':' makes a missing argument return ':' instead of '?'. */
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		r = 0;
		switch (c) {
		case OPT_SIZE:
			r = parse_size(optarg, &o->size);
			if (r < 0)
				return usage_error("--size: '%s' is not a size (bytes or with K/M/G/T suffix)",
						   optarg);
			size_set = true;
			break;
		case OPT_THREADS:
			r = parse_u64("--threads", optarg, &v);
			if (r == 0 && (v < 1 || v > MAX_THREADS))
				r = usage_error("--threads: %s is outside 1..%u", optarg, MAX_THREADS);
			o->threads = (unsigned)v;
			break;
		case OPT_PATTERN:
			for (v = 0; v < ARRAY_SIZE(pattern_names); v++)
				if (strcmp(optarg, pattern_names[v]) == 0)
					break;
			if (v == ARRAY_SIZE(pattern_names))
				return usage_error("--pattern: unknown '%s' (allowed: seq, uniform, zipf)",
						   optarg);
			o->pattern = (enum pattern)v;
			break;
		case OPT_THETA:
			r = parse_double("--zipf-theta", optarg, 0, 1, &o->zipf_theta);
			if (r == 0 && (o->zipf_theta <= 0 || o->zipf_theta >= 1))
				r = usage_error("--zipf-theta: %s must be strictly between 0 and 1", optarg);
			break;
		case OPT_WRITES:
			r = parse_double("--writes", optarg, 0, 100, &o->writes_pct);
			break;
		case OPT_KIO:
			r = parse_double("--kernel-io", optarg, 0, 100, &o->kio_pct);
			break;
		case OPT_OPS:
			r = parse_u64("--ops", optarg, &o->ops);
			o->ops_set = true;
			break;
		case OPT_DURATION:
			r = parse_double("--duration", optarg, 0, 1e7, &o->duration);
			duration_set = true;
			break;
		case OPT_CONTENT:
			if (gs_content_parse(optarg, &o->content) < 0)
				return usage_error("--content: unknown '%s' (allowed: random, realistic)",
						   optarg);
			break;
		case OPT_SEED:
			r = parse_u64("--seed", optarg, &o->seed);
			break;
		case OPT_ACCESS_SEED:
			r = parse_u64("--access-seed", optarg, &o->access_seed);
			o->access_seed_set = true;
			break;
		case OPT_PRIVATE:
			r = parse_u64("--private-pages", optarg, &o->private_pages);
			break;
		case OPT_NO_FILL:
			o->fill = false;
			break;
		case OPT_NO_VERIFY:
			o->final_verify = false;
			break;
		case OPT_JSON:
			o->json = optarg;
			break;
		case OPT_PROGRESS:
			o->progress = true;
			break;
		case OPT_HOLD:
			r = parse_double("--hold", optarg, 0, 1e7, &o->hold);
			break;
		case OPT_PAUSE:
			r = parse_double("--pause-after-fill", optarg, 0, 1e7, &o->pause_after_fill);
			break;
		case OPT_CORRUPT:
			o->self_test_corrupt = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			return usage_error("%s needs an argument", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
		if (r < 0)
			return r;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!size_set)
		return usage_error("--size is required");
	if (o->size == 0 || o->size % PAGE_SIZE_4K)
		return usage_error("--size: %" PRIu64 " is not a positive multiple of %lu",
				   o->size, PAGE_SIZE_4K);
	if (o->size / PAGE_SIZE_4K < o->threads)
		return usage_error("--threads: %u threads need at least %u pages, --size has %" PRIu64,
				   o->threads, o->threads, o->size / PAGE_SIZE_4K);
	if (o->size / PAGE_SIZE_4K / o->threads > UINT32_MAX)
		return usage_error("--size: too many pages per thread; use more --threads");
	if (o->ops_set && duration_set)
		return usage_error("--ops and --duration are mutually exclusive");
	if (!o->access_seed_set)
		o->access_seed = o->seed;
	if (!o->ops_set && !duration_set)
		o->ops = o->size / PAGE_SIZE_4K;
	if (duration_set)
		o->ops = UINT64_MAX;
	return 0;
}

/* ---- the data path ------------------------------------------------------ */

static inline unsigned char *page_addr(struct run *run, uint64_t page)
{
	return run->base + page * PAGE_SIZE_4K;
}

static void report_mismatch(struct run *run, const char *phase, uint64_t page, uint32_t gen,
			    const struct gs_mismatch *m, const void *expected)
{
	const unsigned char *act = page_addr(run, page), *exp = expected;
	unsigned start = m->offset & ~15U, len = 16;
	char es[3 * 16 + 1], as[3 * 16 + 1];

	/* Only the first few reports: the stop flag halts the other threads. */
	if (atomic_fetch_add(&run->mismatches, 1) >= 4)
		return;
	for (unsigned i = 0; i < len; i++) {
		snprintf(es + 3 * i, 4, "%02x ", exp[start + i]);
		snprintf(as + 3 * i, 4, "%02x ", act[start + i]);
	}
	es[3 * len - 1] = as[3 * len - 1] = '\0';
	log_err("MISMATCH in %s phase: page %" PRIu64 " (address offset 0x%" PRIx64
		") generation %u: first bad byte at offset %u, %u of %lu bytes differ",
		phase, page, page * PAGE_SIZE_4K, gen, m->offset, m->bad_bytes, PAGE_SIZE_4K);
	log_err("  expected @%u: %s", start, es);
	log_err("  actual   @%u: %s", start, as);
	if (m->found_zero)
		log_err("  the page reads as all zeros (lost contents or a wrong zero-fill)");
	else if (m->found_magic != GS_MAGIC)
		log_err("  the page has no guestsim header (magic 0x%016" PRIx64 ")", m->found_magic);
	else if (m->found_index != page)
		log_err("  the page holds page %" PRIu64 " generation %" PRIu64 " (misplaced page)",
			m->found_index, m->found_gen);
	else if (m->found_gen != gen)
		log_err("  the page holds generation %" PRIu64 ", expected %u (%s)", m->found_gen, gen,
			m->found_gen < gen ? "stale copy: a write was lost" : "newer than written");
	else
		log_err("  header is right, body corrupt");
}

static bool verify_page(struct worker *w, uint64_t local, const char *phase)
{
	struct run *run = w->run;
	uint64_t page = local * run->opt.threads + w->id;
	struct gs_mismatch m;

	if (gs_page_verify(page_addr(run, page), run->opt.seed, page, w->gen[local],
			   run->opt.content, w->buf, &m))
		return true;
	report_mismatch(run, phase, page, w->gen[local], &m, w->buf);
	atomic_store(&run->stop, true);
	return false;
}

/* Writes the next generation through read(2) so the kernel's copy faults. */
static int write_page_kernel(struct worker *w, uint64_t page, uint32_t gen, bool *ret_ok)
{
	struct run *run = w->run;
	unsigned char *dst = page_addr(run, page);
	ssize_t n;

	gs_page_fill(w->buf, run->opt.seed, page, gen, run->opt.content);
	n = pwrite(w->scratch_fd, w->buf, PAGE_SIZE_4K, 0);
	if (n != PAGE_SIZE_4K) {
		w->err_what = "pwrite to the scratch memfd";
		return n < 0 ? -errno : -EIO;
	}
	n = pread(w->scratch_fd, dst, PAGE_SIZE_4K, 0);
	if (n != PAGE_SIZE_4K) {
		/*
		 * EFAULT here typically means a uffd registered for user-mode faults
		 * only: the kernel's own copy into guest RAM then cannot wait for the pager.
		 */
		w->err_what = "pread from the scratch memfd into guest RAM";
		return n < 0 ? -errno : -EIO;
	}
	*ret_ok = memcmp(dst, w->buf, PAGE_SIZE_4K) == 0;
	return 0;
}

static uint64_t next_local(struct worker *w, uint64_t i)
{
	switch (w->run->opt.pattern) {
	case PAT_SEQ:
		return i % w->npages;
	case PAT_UNIFORM:
		return gs_rng_below(&w->rng, w->npages);
	case PAT_ZIPF:
	default:
		return gs_perm_apply(&w->perm, gs_zipf_next(&w->zipf, &w->rng));
	}
}

/*
 * Fill writes are first touches, so --kernel-io here makes the kernel take
 * MISSING faults on never-present pages, as KVM does on a guest's first use.
 */
static void run_fill(struct worker *w)
{
	struct run *run = w->run;
	struct phase_stats *st = &w->st[PH_FILL];
	double kfrac = run->opt.kio_pct / 100.0;

	for (uint64_t local = 0; local < w->npages; local++) {
		uint64_t page = local * run->opt.threads + w->id, t0, t1;
		bool kio = kfrac > 0 && gs_rng_unit(&w->rng) < kfrac, ok = true;
		/* Private pages: a generation no guest with another access seed writes (2^20 rewrites apart). */
		uint32_t gen = page < run->opt.private_pages ? 1 + (uint32_t)((run->opt.access_seed & 0x3ff) << 20) : 1;

		if (atomic_load_explicit(&run->stop, memory_order_relaxed))
			break;
		t0 = now_ns();
		if (kio) {
			int r = write_page_kernel(w, page, gen, &ok);

			if (r < 0) {
				w->err = r;
				atomic_store(&run->stop, true);
				break;
			}
		} else {
			gs_page_fill(page_addr(run, page), run->opt.seed, page, gen, run->opt.content);
		}
		w->gen[local] = gen;
		t1 = now_ns();
		gs_hist_add(&st->all, t1 - t0);
		gs_hist_add(&st->write, t1 - t0);
		st->writes++;
		if (kio) {
			gs_hist_add(&st->kio, t1 - t0);
			st->kio_writes++;
		}
		if (!ok && !verify_page(w, local, "fill (kernel-io write)"))
			break;
		atomic_store_explicit(&w->done, local + 1, memory_order_relaxed);
	}
}

static void run_access(struct worker *w)
{
	struct run *run = w->run;
	struct phase_stats *st = &w->st[PH_ACCESS];
	double wfrac = run->opt.writes_pct / 100.0, kfrac = run->opt.kio_pct / 100.0;

	for (uint64_t i = 0; i < w->ops; i++) {
		uint64_t local = next_local(w, i);
		uint64_t page = local * run->opt.threads + w->id, t0, t1;
		bool write = gs_rng_unit(&w->rng) < wfrac;
		bool kio = write && gs_rng_unit(&w->rng) < kfrac;
		bool ok = true;

		if (atomic_load_explicit(&run->stop, memory_order_relaxed))
			break;
		t0 = now_ns();
		if (write) {
			uint32_t gen = w->gen[local] + 1;

			if (gen == 0) /* 0 means never written */
				gen = 1;
			if (kio) {
				int r = write_page_kernel(w, page, gen, &ok);

				if (r < 0) {
					w->err = r;
					atomic_store(&run->stop, true);
					break;
				}
			} else {
				gs_page_fill(page_addr(run, page), run->opt.seed, page, gen,
					     run->opt.content);
			}
			w->gen[local] = gen;
		} else {
			ok = verify_page(w, local, "access");
		}
		t1 = now_ns();
		gs_hist_add(&st->all, t1 - t0);
		if (kio) {
			gs_hist_add(&st->kio, t1 - t0);
			st->kio_writes++;
		}
		if (write) {
			gs_hist_add(&st->write, t1 - t0);
			st->writes++;
		} else {
			gs_hist_add(&st->read, t1 - t0);
			st->reads++;
		}
		/* A kernel copy that did not land is reported as a reader would. */
		if (!ok && (!kio || !verify_page(w, local, "access (kernel-io write)")))
			break;
		atomic_store_explicit(&w->done, i + 1, memory_order_relaxed);
		if ((run->deadline_ns && t1 >= run->deadline_ns) || atomic_load_explicit(&end_access, memory_order_relaxed))
			break;
	}
}

static void run_verify(struct worker *w)
{
	struct run *run = w->run;
	struct phase_stats *st = &w->st[PH_VERIFY];

	for (uint64_t local = 0; local < w->npages; local++) {
		uint64_t t0, t1;
		bool ok;

		if (atomic_load_explicit(&run->stop, memory_order_relaxed))
			break;
		t0 = now_ns();
		ok = verify_page(w, local, "final verify");
		t1 = now_ns();
		gs_hist_add(&st->all, t1 - t0);
		gs_hist_add(&st->read, t1 - t0);
		st->reads++;
		if (!ok)
			break;
		atomic_store_explicit(&w->done, local + 1, memory_order_relaxed);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct rusage ru;

	switch (w->run->phase) {
	case PH_FILL:
		run_fill(w);
		break;
	case PH_ACCESS:
		run_access(w);
		break;
	case PH_VERIFY:
	default:
		run_verify(w);
		break;
	}
	/* Timed here, not after join, so progress polling does not inflate it. */
	w->st[w->run->phase].wall_ns = now_ns() - w->run->phase_start_ns;
	/* Workers live for one phase, so the thread's own counts are this phase's. */
	if (getrusage(RUSAGE_THREAD, &ru) == 0) {
		w->st[w->run->phase].nvcsw = (uint64_t)ru.ru_nvcsw;
		w->st[w->run->phase].nivcsw = (uint64_t)ru.ru_nivcsw;
	}
	return NULL;
}

/* ---- orchestration ------------------------------------------------------ */

static uint64_t total_done(struct run *run)
{
	uint64_t sum = 0;

	for (unsigned t = 0; t < run->opt.threads; t++)
		sum += atomic_load_explicit(&run->workers[t].done, memory_order_relaxed);
	return sum;
}

/* Runs one phase on all threads; returns 0 or -errno of a system error. */
static int run_phase(struct run *run, enum phase ph)
{
	uint64_t start, last_print, last_done = 0;
	unsigned t, started = 0;
	int r = 0;

	run->phase = ph;
	for (t = 0; t < run->opt.threads; t++) {
		atomic_store(&run->workers[t].done, 0);
		run->workers[t].joined = false;
	}
	start = last_print = run->phase_start_ns = now_ns();
	if (ph == PH_ACCESS && run->opt.duration > 0)
		run->deadline_ns = start + (uint64_t)(run->opt.duration * 1e9);
	for (t = 0; t < run->opt.threads; t++) {
		r = -pthread_create(&run->workers[t].thread, NULL, worker_main, &run->workers[t]);
		if (r < 0) {
			log_err_errno(r, "Failed to start worker thread %u", t);
			atomic_store(&run->stop, true);
			break;
		}
		started++;
	}
	if (run->opt.progress) {
		uint64_t total = ph == PH_ACCESS ? run->opt.ops : run->npages;

		for (;;) {
			bool all_done = true;
			uint64_t now, done;

			for (t = 0; t < started; t++) {
				struct worker *w = &run->workers[t];

				if (!w->joined && pthread_tryjoin_np(w->thread, NULL) == EBUSY)
					all_done = false;
				else
					w->joined = true;
			}
			if (all_done)
				break;
			usleep(50000);
			now = now_ns();
			if (now - last_print < 1000000000ULL)
				continue;
			done = total_done(run);
			if (ph == PH_ACCESS && run->deadline_ns)
				fprintf(stderr, "guestsim: %s %.0fs: %" PRIu64 " accesses, %.0f/s\n",
					phase_names[ph], (double)(now - start) / 1e9, done,
					(double)(done - last_done) * 1e9 / (double)(now - last_print));
			else
				fprintf(stderr, "guestsim: %s %.0fs: %" PRIu64 "/%" PRIu64 " (%.0f%%), %.0f/s\n",
					phase_names[ph], (double)(now - start) / 1e9, done, total,
					total ? 100.0 * (double)done / (double)total : 100.0,
					(double)(done - last_done) * 1e9 / (double)(now - last_print));
			last_print = now;
			last_done = done;
		}
		/* tryjoin already reaped every thread. */
	} else {
		for (t = 0; t < started; t++)
			pthread_join(run->workers[t].thread, NULL);
	}
	for (t = 0; t < run->opt.threads; t++) {
		struct worker *w = &run->workers[t];

		if (w->err && r == 0)
			r = log_err_errno(w->err, "Worker %u: %s failed", t, w->err_what);
	}
	return r;
}

static void merge_phase(struct run *run, enum phase ph, struct phase_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned t = 0; t < run->opt.threads; t++) {
		const struct phase_stats *s = &run->workers[t].st[ph];

		gs_hist_merge(&out->all, &s->all);
		gs_hist_merge(&out->read, &s->read);
		gs_hist_merge(&out->write, &s->write);
		gs_hist_merge(&out->kio, &s->kio);
		out->reads += s->reads;
		out->writes += s->writes;
		out->kio_writes += s->kio_writes;
		out->nvcsw += s->nvcsw;
		out->nivcsw += s->nivcsw;
		if (s->wall_ns > out->wall_ns)
			out->wall_ns = s->wall_ns;
	}
}

static void json_latency(FILE *f, const char *name, const struct gs_hist *h)
{
	fprintf(f,
		"\"%s\": {\"count\": %" PRIu64 ", \"mean\": %.0f, \"min\": %" PRIu64
		", \"p50\": %" PRIu64 ", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64
		", \"p99_9\": %" PRIu64 ", \"max\": %" PRIu64 "}",
		name, h->count, h->count ? (double)h->sum / (double)h->count : 0.0,
		h->count ? h->min : 0, gs_hist_quantile(h, 0.5), gs_hist_quantile(h, 0.9),
		gs_hist_quantile(h, 0.99), gs_hist_quantile(h, 0.999), h->max);
}

static void json_phase(FILE *f, const char *name, bool ran, const struct phase_stats *s)
{
	double secs = (double)s->wall_ns / 1e9;
	uint64_t n = s->all.count;

	if (!ran) {
		fprintf(f, "  \"%s\": null", name);
		return;
	}
	fprintf(f,
		"  \"%s\": {\"accesses\": %" PRIu64 ", \"reads\": %" PRIu64 ", \"writes\": %" PRIu64
		", \"kernel_io_writes\": %" PRIu64 ", \"wall_s\": %.6f, \"accesses_per_s\": %.1f"
		", \"bytes_per_s\": %.1f,\n    ",
		name, n, s->reads, s->writes, s->kio_writes, secs, secs > 0 ? (double)n / secs : 0.0,
		secs > 0 ? (double)n * PAGE_SIZE_4K / secs : 0.0);
	json_latency(f, "latency_ns", &s->all);
	fprintf(f, ",\n    ");
	json_latency(f, "read_latency_ns", &s->read);
	fprintf(f, ",\n    ");
	json_latency(f, "write_latency_ns", &s->write);
	fprintf(f, ",\n    ");
	json_latency(f, "kernel_io_latency_ns", &s->kio);
	fprintf(f, ",\n    \"ctx_switches\": {\"voluntary\": %" PRIu64 ", \"involuntary\": %" PRIu64 "}}",
		s->nvcsw, s->nivcsw);
}

static int write_json(struct run *run, const struct phase_stats *st, const bool *ran,
		      const char *status)
{
	const struct options *o = &run->opt;
	FILE *f = fopen(o->json, "we");

	if (!f)
		return log_err_errno(-errno, "Failed to create --json file %s", o->json);
	fprintf(f,
		"{\n  \"status\": \"%s\", \"mismatches\": %u,\n"
		"  \"size_bytes\": %" PRIu64 ", \"page_size\": %lu, \"pages\": %" PRIu64
		", \"threads\": %u,\n"
		"  \"pattern\": \"%s\", \"zipf_theta\": %g, \"writes_pct\": %g, \"kernel_io_pct\": %g,\n"
		"  \"content\": \"%s\", \"seed\": %" PRIu64 ", \"duration_s\": %g, \"ops\": %" PRIu64 ",\n",
		status, atomic_load(&run->mismatches), o->size, PAGE_SIZE_4K, run->npages, o->threads,
		pattern_names[o->pattern], o->zipf_theta, o->writes_pct, o->kio_pct,
		gs_content_name(o->content), o->seed, o->duration,
		o->duration > 0 ? 0 : o->ops);
	for (int ph = 0; ph < PH_COUNT; ph++) {
		json_phase(f, phase_names[ph], ran[ph], &st[ph]);
		fprintf(f, ph + 1 < PH_COUNT ? ",\n" : "\n}\n");
	}
	if (fflush(f) != 0 || ferror(f)) {
		int r = -errno;

		fclose(f);
		return log_err_errno(r ? r : -EIO, "Failed to write --json file %s", o->json);
	}
	if (fclose(f) != 0)
		return log_err_errno(-errno, "Failed to write --json file %s", o->json);
	return 0;
}

static void print_summary(struct run *run, const struct phase_stats *st, const bool *ran,
			  const char *status)
{
	char sz[32], line[1024];
	int n;

	n = snprintf(line, sizeof(line), "guestsim: %s size=%s threads=%u pattern=%s writes=%g%% kio=%g%%",
		     status, format_size(run->opt.size, sz, sizeof(sz)), run->opt.threads,
		     pattern_names[run->opt.pattern], run->opt.writes_pct, run->opt.kio_pct);
	for (int ph = 0; ph < PH_COUNT && n < (int)sizeof(line); ph++) {
		const struct phase_stats *s = &st[ph];
		double secs = (double)s->wall_ns / 1e9;

		if (!ran[ph])
			continue;
		n += snprintf(line + n, sizeof(line) - (size_t)n,
			      " | %s: %" PRIu64 " (r %" PRIu64 " w %" PRIu64 " kio %" PRIu64
			      ") %.3fs %.0f/s %.2f GB/s p50=%" PRIu64 " p99=%" PRIu64 " p99.9=%" PRIu64
			      " max=%" PRIu64 "ns",
			      phase_names[ph], s->all.count, s->reads, s->writes, s->kio_writes, secs,
			      secs > 0 ? (double)s->all.count / secs : 0.0,
			      secs > 0 ? (double)s->all.count * PAGE_SIZE_4K / secs / 1e9 : 0.0,
			      gs_hist_quantile(&s->all, 0.5), gs_hist_quantile(&s->all, 0.99),
			      gs_hist_quantile(&s->all, 0.999), s->all.max);
	}
	puts(line);
	fflush(stdout);
}

static int setup_workers(struct run *run)
{
	const struct options *o = &run->opt;

	run->workers = calloc(o->threads, sizeof(*run->workers));
	if (!run->workers)
		return log_err_errno(-ENOMEM, "Failed to allocate worker state");
	for (unsigned t = 0; t < o->threads; t++) {
		struct worker *w = &run->workers[t];
		uint64_t share = o->ops / o->threads + (t < o->ops % o->threads ? 1 : 0);

		w->run = run;
		w->id = t;
		w->scratch_fd = -1;
		w->npages = run->npages / o->threads + (t < run->npages % o->threads ? 1 : 0);
		w->ops = o->duration > 0 ? UINT64_MAX : share;
		w->gen = calloc(w->npages, sizeof(*w->gen));
		if (!w->gen)
			return log_err_errno(-ENOMEM, "Failed to allocate %" PRIu64 " generations",
					     w->npages);
		if (posix_memalign((void **)&w->buf, PAGE_SIZE_4K, PAGE_SIZE_4K) != 0)
			return log_err_errno(-ENOMEM, "Failed to allocate a page buffer");
		gs_rng_seed(&w->rng, o->access_seed, t);
		if (o->pattern == PAT_ZIPF) {
			int r = gs_zipf_init(&w->zipf, w->npages, o->zipf_theta);

			if (r < 0)
				return log_err_errno(r, "Failed to set up the Zipf generator");
			gs_perm_init(&w->perm, w->npages, gs_mix64(o->access_seed ^ 0x7065726dULL) + t);
		}
		if (o->kio_pct > 0) {
			/* One page: far below the shim's threshold, so never registered. */
			w->scratch_fd = memfd_create("guestsim-scratch", MFD_CLOEXEC);
			if (w->scratch_fd < 0)
				return log_err_errno(-errno, "Failed to create a scratch memfd");
			if (ftruncate(w->scratch_fd, PAGE_SIZE_4K) < 0)
				return log_err_errno(-errno, "Failed to size the scratch memfd");
		}
	}
	return 0;
}

static void free_workers(struct run *run)
{
	if (!run->workers)
		return;
	for (unsigned t = 0; t < run->opt.threads; t++) {
		free(run->workers[t].gen);
		free(run->workers[t].buf);
		if (run->workers[t].scratch_fd >= 0)
			close(run->workers[t].scratch_fd);
	}
	free(run->workers);
	run->workers = NULL;
}

/* Flips one byte of one page through the mapping, unknown to the verifier. */
static void self_test_corrupt(struct run *run)
{
	uint64_t h = gs_mix64(run->opt.seed ^ 0x636f7272757074ULL);

	run->corrupt_page = h % run->npages;
	run->corrupt_offset = (uint32_t)((h >> 32) % PAGE_SIZE_4K);
	page_addr(run, run->corrupt_page)[run->corrupt_offset] ^= 0x5a;
	log_warn("self-test: flipped byte at page %" PRIu64 " offset %u; expecting a mismatch",
		 run->corrupt_page, run->corrupt_offset);
}

static int run_all(struct run *run, int *ret_exit)
{
	struct options *o = &run->opt;
	struct phase_stats st[PH_COUNT];
	bool ran[PH_COUNT] = { false };
	const char *status;
	int r;

	memset(st, 0, sizeof(st));
	r = setup_workers(run);
	if (r < 0)
		return r;
	if (o->fill) {
		r = run_phase(run, PH_FILL);
		ran[PH_FILL] = true;
		if (r < 0)
			return r;
	}
	if (o->pause_after_fill > 0) {
		const uint64_t until = now_ns() + (uint64_t)(o->pause_after_fill * 1e9);

		printf("FILLED\n");
		fflush(stdout);
		/* In slices: a SIGUSR2 that lands between the check and the sleep is seen at the next one. */
		while (!atomic_load(&end_pause) && now_ns() < until) {
			uint64_t left = until - now_ns();
			struct timespec ts = { .tv_nsec = (long)(left < 50000000 ? left : 50000000) };

			nanosleep(&ts, NULL);
		}
	}
	if (o->self_test_corrupt)
		self_test_corrupt(run);
	if (o->ops > 0 && !atomic_load(&run->stop)) {
		r = run_phase(run, PH_ACCESS);
		ran[PH_ACCESS] = true;
		if (r < 0)
			return r;
	}
	if (o->final_verify && !atomic_load(&run->stop)) {
		r = run_phase(run, PH_VERIFY);
		ran[PH_VERIFY] = true;
		if (r < 0)
			return r;
	}
	for (int ph = 0; ph < PH_COUNT; ph++)
		if (ran[ph])
			merge_phase(run, (enum phase)ph, &st[ph]);
	status = atomic_load(&run->mismatches) ? "MISMATCH" : "ok";
	print_summary(run, st, ran, status);
	if (o->json) {
		r = write_json(run, st, ran, atomic_load(&run->mismatches) ? "mismatch" : "ok");
		if (r < 0)
			return r;
	}
	*ret_exit = atomic_load(&run->mismatches) ? EXIT_MISMATCH : 0;
	return 0;
}

int main(int argc, char **argv)
{
	struct run run = { 0 };
	_cleanup_close_ int fd = -1;
	int r, code = EXIT_SYSTEM;

	log_set_prefix("guestsim");
	if (parse_options(argc, argv, &run.opt) < 0)
		return EXIT_USAGE;
	sigaction(SIGUSR1, &(struct sigaction){ .sa_handler = on_sigusr1, .sa_flags = SA_RESTART }, NULL);
	/* No SA_RESTART: the signal must interrupt the pause's nanosleep. */
	sigaction(SIGUSR2, &(struct sigaction){ .sa_handler = on_sigusr2 }, NULL);
	if (sysconf(_SC_PAGESIZE) != PAGE_SIZE_4K) {
		log_err("the system page size is %ld, guestsim needs %lu", sysconf(_SC_PAGESIZE),
			PAGE_SIZE_4K);
		return EXIT_SYSTEM;
	}
	run.npages = run.opt.size / PAGE_SIZE_4K;
	if (run.opt.size < GLUE_MIN_SIZE_DEFAULT && getenv("LD_PRELOAD"))
		log_warn("--size is below the shim's default minimum (16M): the pager may not take this memory");

	/*
	 * Guest RAM exactly as QEMU's memory-backend-memfd creates it. The plain
	 * mmap() call is what the LD_PRELOAD shim intercepts; after it nothing but
	 * this mapping may touch the memfd (a write through another mapping or
	 * write(2) would fill a hole behind the pager's back).
	 */
	fd = memfd_create("guestsim-ram", MFD_CLOEXEC);
	if (fd < 0) {
		log_err_errno(-errno, "Failed to create the guest RAM memfd");
		return EXIT_SYSTEM;
	}
	if (ftruncate(fd, (off_t)run.opt.size) < 0) {
		log_err_errno(-errno, "Failed to size the guest RAM memfd to %" PRIu64 " bytes",
			      run.opt.size);
		return EXIT_SYSTEM;
	}
	run.base = mmap(NULL, run.opt.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (run.base == MAP_FAILED) {
		log_err_errno(-errno, "Failed to map %" PRIu64 " bytes of guest RAM", run.opt.size);
		return EXIT_SYSTEM;
	}

	r = run_all(&run, &code);
	if (r < 0)
		code = EXIT_SYSTEM;
	if (run.opt.hold > 0) {
		struct timespec ts = {
			.tv_sec = (time_t)run.opt.hold,
			.tv_nsec = (long)((run.opt.hold - floor(run.opt.hold)) * 1e9),
		};

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	free_workers(&run);
	munmap(run.base, run.opt.size);
	return code;
}
