/* SPDX-License-Identifier: MIT */
/*
 * The spill file on its own: the slot allocator (first fit, the cap,
 * free and reuse, exhaustion, double frees, concurrent callers) and page
 * I/O on a real file in a temporary directory, through both io_uring
 * rings and plain pread/pwrite, including the errors a full disk or a
 * short file produce; the start-up removal of files whose process is
 * gone. Needs no root.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test-pages.h"

#include "spill.h"
#include "vmstate.h"
#include "util.h"

/* A spill file in a fresh directory; the directory is removed with it. */
static struct spill *spill_in_tmp(uint64_t max_slots, char *dir, size_t dirlen)
{
	struct spill *s;

	snprintf(dir, dirlen, "/var/tmp/uffdvm-spill-XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(spill_new(dir, "t", max_slots, false, &s), 0);
	return s;
}

static void spill_done(struct spill *s, const char *dir)
{
	spill_free(s, false);
	assert_int_equal(rmdir(dir), 0); /* empty: the spill file was deleted */
}

static void test_new_and_free(void **state)
{
	char dir[64], path[600];
	struct spill *s;
	struct stat st;
	FILE *f;

	(void)state;
	s = spill_in_tmp(0, dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/t.spill", dir);
	assert_string_equal(spill_path(s), path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	spill_free(s, false);
	assert_int_equal(stat(path, &st), -1); /* deleted with the VM */

	/* a stale file of a crashed pager is replaced, not an error */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("stale", f);
	fclose(f);
	assert_int_equal(spill_new(dir, "t", 0, false, &s), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);
	spill_done(s, dir);

	spill_free(NULL, false);
	assert_int_equal(spill_new("/nonexistent-uffdvm-dir", "t", 0, false, &s), -ENOENT);
	char longname[600];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(spill_new("/var/tmp", longname, 0, false, &s), -ENAMETOOLONG);
}

static void test_first_fit(void **state)
{
	char dir[64];
	struct spill *s = spill_in_tmp(0, dir, sizeof(dir));

	(void)state;
	for (uint32_t i = 0; i < 200; i++)
		assert_int_equal(spill_alloc_slot(s), i);
	/* freed in any order, the lowest free slot comes back first */
	spill_free_slot(s, 150);
	spill_free_slot(s, 7);
	spill_free_slot(s, 64);
	assert_int_equal(spill_used_slots(s), 197);
	assert_int_equal(spill_alloc_slot(s), 7);
	assert_int_equal(spill_alloc_slot(s), 64);
	assert_int_equal(spill_alloc_slot(s), 150);
	assert_int_equal(spill_alloc_slot(s), 200); /* no hole left: the end of the file */
	assert_int_equal(spill_used_slots(s), 201);
	spill_done(s, dir);
}

static void test_growth_keeps_slots(void **state)
{
	char dir[64];
	struct spill *s = spill_in_tmp(0, dir, sizeof(dir));

	(void)state;
	/* past the first bitmap (64 words = 4096 slots) and its first doubling */
	for (uint32_t i = 0; i < 10000; i++)
		assert_int_equal(spill_alloc_slot(s), i);
	assert_int_equal(spill_used_slots(s), 10000);
	/* the bits set before each regrowth survived it */
	spill_free_slot(s, 4095);
	spill_free_slot(s, 100);
	assert_int_equal(spill_alloc_slot(s), 100);
	assert_int_equal(spill_alloc_slot(s), 4095);
	assert_int_equal(spill_alloc_slot(s), 10000);
	spill_done(s, dir);
}

static void test_cap_and_exhaustion(void **state)
{
	char dir[64];
	struct spill *s = spill_in_tmp(100, dir, sizeof(dir));

	(void)state;
	for (uint32_t i = 0; i < 100; i++)
		assert_int_equal(spill_alloc_slot(s), i);
	/* exhausted: every further call says so, nothing is handed out twice */
	for (int i = 0; i < 3; i++)
		assert_int_equal(spill_alloc_slot(s), SPILL_NO_SLOT);
	assert_int_equal(spill_used_slots(s), 100);
	/* a free makes exactly one slot available again */
	spill_free_slot(s, 42);
	assert_int_equal(spill_alloc_slot(s), 42);
	assert_int_equal(spill_alloc_slot(s), SPILL_NO_SLOT);
	/* raising the cap (spill.max_size changed) opens the end of the file */
	spill_set_max_slots(s, 102);
	assert_int_equal(spill_alloc_slot(s), 100);
	assert_int_equal(spill_alloc_slot(s), 101);
	assert_int_equal(spill_alloc_slot(s), SPILL_NO_SLOT);
	/* lowering it below what is used: slots stay valid, nothing new until enough is freed */
	spill_set_max_slots(s, 50);
	assert_int_equal(spill_alloc_slot(s), SPILL_NO_SLOT);
	for (uint32_t i = 0; i < 53; i++)
		spill_free_slot(s, i);
	assert_int_equal(spill_used_slots(s), 49);
	assert_int_equal(spill_alloc_slot(s), 0);
	assert_int_equal(spill_alloc_slot(s), SPILL_NO_SLOT);
	/* 0 = as many as fit in 32 bits */
	spill_set_max_slots(s, 0);
	assert_int_equal(spill_alloc_slot(s), 1);
	spill_done(s, dir);
}

static void test_double_free(void **state)
{
	char dir[64];
	struct spill *s = spill_in_tmp(0, dir, sizeof(dir));

	(void)state;
	assert_int_equal(spill_alloc_slot(s), 0);
	assert_int_equal(spill_alloc_slot(s), 1);
	spill_free_slot(s, 1);
	/* logged, and the count is not corrupted */
	spill_free_slot(s, 1);
	spill_free_slot(s, 1u << 30); /* never handed out, beyond the bitmap */
	assert_int_equal(spill_used_slots(s), 1);
	assert_int_equal(spill_alloc_slot(s), 1);
	assert_int_equal(spill_alloc_slot(s), 2);
	spill_done(s, dir);
}

#define THREADS 4
#define PER_THREAD 3000

static void *alloc_many(void *arg)
{
	struct spill *s = arg;
	uint32_t *got = malloc(PER_THREAD * sizeof(*got));

	for (unsigned i = 0; got && i < PER_THREAD; i++)
		got[i] = spill_alloc_slot(s);
	return got;
}

static void test_concurrent_alloc(void **state)
{
	char dir[64];
	struct spill *s = spill_in_tmp(0, dir, sizeof(dir));
	pthread_t t[THREADS];
	uint8_t *seen = calloc(THREADS * PER_THREAD, 1);

	(void)state;
	assert_non_null(seen);
	/* the evictor and the repair thread place copies at once: never the same slot twice */
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, alloc_many, s), 0);
	for (int i = 0; i < THREADS; i++) {
		uint32_t *got;
		assert_int_equal(pthread_join(t[i], (void **)&got), 0);
		assert_non_null(got);
		for (unsigned k = 0; k < PER_THREAD; k++) {
			assert_true(got[k] < THREADS * PER_THREAD);
			assert_int_equal(seen[got[k]], 0);
			seen[got[k]] = 1;
		}
		free(got);
	}
	assert_int_equal(spill_used_slots(s), THREADS * PER_THREAD);
	free(seen);
	spill_done(s, dir);
}

static void test_batch_write_read_back(void **state)
{
	char dir[64];
	struct spill *s = spill_in_tmp(0, dir, sizeof(dir));
	/* more than the write ring holds (256): the batch is sent in several rounds */
	enum { N = 300 };
	uint32_t slots[N];
	void *bufs[N], *in = page_filled(0);
	int results[N];

	(void)state;
	for (int i = 0; i < N; i++) {
		bufs[i] = page_filled(0x1000u + (uint32_t)i);
		slots[i] = (uint32_t)(N - 1 - i); /* written back to front */
		results[i] = 1;
	}
	assert_int_equal(spill_write_batch(s, slots, bufs, results, N), 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(results[i], 0);
		/* every read path sees what the batch wrote */
		memset(in, 0, PAGE_SIZE_4K);
		assert_int_equal(spill_read(s, slots[i], in), 0);
		assert_memory_equal(in, bufs[i], PAGE_SIZE_4K);
		memset(in, 0, PAGE_SIZE_4K);
		assert_int_equal(spill_pread(s, slots[i], in), 0);
		assert_memory_equal(in, bufs[i], PAGE_SIZE_4K);
	}
	/* split read: the page is in only after the wait */
	memset(in, 0, PAGE_SIZE_4K);
	assert_int_equal(spill_read_submit(s, slots[5], in), 0);
	assert_int_equal(spill_read_wait(s), 0);
	assert_memory_equal(in, bufs[5], PAGE_SIZE_4K);
	for (int i = 0; i < N; i++)
		free(bufs[i]);
	free(in);
	spill_done(s, dir);
}

static void test_pwrite_overwrite(void **state)
{
	char dir[64];
	struct spill *s = spill_in_tmp(0, dir, sizeof(dir));
	void *a = page_filled(0xaa), *b = page_filled(0xbb), *in = page_filled(0);
	uint32_t slot = 3;
	int res;

	(void)state;
	assert_int_equal(spill_pwrite(s, slot, a), 0);
	assert_int_equal(spill_read(s, slot, in), 0);
	assert_memory_equal(in, a, PAGE_SIZE_4K);
	/* a slot reused by another page: the batch path overwrites in place */
	assert_int_equal(spill_write_batch(s, &slot, &b, &res, 1), 0);
	assert_int_equal(res, 0);
	assert_int_equal(spill_pread(s, slot, in), 0);
	assert_memory_equal(in, b, PAGE_SIZE_4K);
	/* slots below the highest written one read back as zeros (a hole), slots past the end fail */
	assert_int_equal(spill_pread(s, 0, in), 0);
	assert_int_equal(((uint32_t *)in)[0], 0);
	assert_int_equal(spill_read(s, 4, in), -EIO);
	assert_int_equal(spill_pread(s, 100000, in), -EIO);
	assert_int_equal(spill_read_submit(s, 100000, in), 0);
	assert_int_equal(spill_read_wait(s), -EIO);
	free(a);
	free(b);
	free(in);
	spill_done(s, dir);
}

/* Writes past RLIMIT_FSIZE fail with EFBIG, as on a full disk: the per-page error path without root. */
static void test_write_errors_per_page(void **state)
{
	char dir[64];
	struct spill *s = spill_in_tmp(0, dir, sizeof(dir));
	enum { N = 6 };
	uint32_t slots[N] = { 0, 40, 1, 41, 2, 3 }; /* 40, 41 lie past a 16-page file limit */
	void *bufs[N], *in = page_filled(0);
	int results[N];
	struct rlimit old, lim;
	void (*old_xfsz)(int);

	(void)state;
	for (int i = 0; i < N; i++)
		bufs[i] = page_filled(0x2000u + (uint32_t)i);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 16 * PAGE_SIZE_4K;
	old_xfsz = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

	assert_int_equal(spill_write_batch(s, slots, bufs, results, N), -EFBIG);
	int r_pw = spill_pwrite(s, 42, bufs[0]);

	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_xfsz);

	assert_int_equal(r_pw, -EFBIG);
	for (int i = 0; i < N; i++) {
		if (slots[i] >= 16) {
			assert_int_equal(results[i], -EFBIG);
			continue;
		}
		/* the pages around a failed one are written all the same */
		assert_int_equal(results[i], 0);
		assert_int_equal(spill_pread(s, slots[i], in), 0);
		assert_memory_equal(in, bufs[i], PAGE_SIZE_4K);
	}
	for (int i = 0; i < N; i++)
		free(bufs[i]);
	free(in);
	spill_done(s, dir);
}

static void touch(const char *dir, const char *name)
{
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
}

static bool exists(const char *dir, const char *name)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

/* Start-up clean-up: NAME-PID.spill of a dead PID goes; live PIDs, other names and non-files stay. */
static void test_remove_stale(void **state)
{
	char dir[64], dead[64], live[64], sub[600];
	const char *keep[] = { "notes.txt", "x.spill", "-123.spill", "vm-12a.spill", "vm-.spill", ".spill",
			       "vm-99999999999.spill" };
	pid_t pid;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	snprintf(dir, sizeof(dir), "/var/tmp/uffdvm-spill-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(dead, sizeof(dead), "web-1-%d.spill", (int)pid);
	snprintf(live, sizeof(live), "web-1-%d.spill", (int)getpid());
	touch(dir, dead);
	touch(dir, live);
	for (size_t i = 0; i < ARRAY_SIZE(keep); i++)
		touch(dir, keep[i]);
	snprintf(sub, sizeof(sub), "%s/d-%d.spill", dir, (int)pid);
	assert_int_equal(mkdir(sub, 0700), 0); /* not a regular file: kept */

	assert_int_equal(vmstate_remove_stale(dir), 1);
	assert_false(exists(dir, dead));
	assert_true(exists(dir, live));
	for (size_t i = 0; i < ARRAY_SIZE(keep); i++)
		assert_true(exists(dir, keep[i]));
	assert_int_equal(vmstate_remove_stale(dir), 0);

	assert_int_equal(rmdir(sub), 0);
	snprintf(sub, sizeof(sub), "%s/%s", dir, live);
	assert_int_equal(unlink(sub), 0);
	for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, keep[i]);
		assert_int_equal(unlink(sub), 0);
	}
	assert_int_equal(rmdir(dir), 0);
	assert_int_equal(vmstate_remove_stale(dir), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_and_free),
		cmocka_unit_test(test_first_fit),
		cmocka_unit_test(test_growth_keeps_slots),
		cmocka_unit_test(test_cap_and_exhaustion),
		cmocka_unit_test(test_double_free),
		cmocka_unit_test(test_concurrent_alloc),
		cmocka_unit_test(test_batch_write_read_back),
		cmocka_unit_test(test_pwrite_overwrite),
		cmocka_unit_test(test_write_errors_per_page),
		cmocka_unit_test(test_remove_stale),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
