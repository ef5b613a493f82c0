/* SPDX-License-Identifier: MIT */
/*
 * Page sealing (seal.c) with real OpenSSL: a page round-trips, and a copy
 * of another page, another VM, an older version or with one flipped bit
 * (ciphertext or tag) fails to open. The key file is 0600 and goes with
 * the seal. A sealed store writes ciphertext (never the page) to the
 * spill file, reads it back in clear, and falls back past a tampered
 * copy, counting it. The page map bumps a page's version per eviction.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "test-pages.h"

#include "donors.h"
#include "pagemap.h"
#include "seal.h"
#include "spill.h"
#include "vmstate.h"
#include "store.h"

/* OpenSSL's allocations, counted (installed before its first one, in main). */
static _Atomic unsigned long ossl_allocs;

static void *count_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	ossl_allocs++;
	return malloc(n);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	ossl_allocs++;
	return realloc(p, n);
}

static void count_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	free(p);
}

static const uint8_t key_a[SEAL_KEY_LEN] = { 1, 2, 3 }, id_a[SEAL_ID_LEN] = { 9 };

static struct seal_ctx *ctx_for(const uint8_t *key, const uint8_t *id, struct seal **ret_seal)
{
	struct seal_ctx *c;

	assert_int_equal(seal_new_from_key(key, id, ret_seal), 0);
	assert_int_equal(seal_ctx_new(*ret_seal, &c), 0);
	return c;
}

static void test_round_trip_and_forgeries(void **state)
{
	uint8_t key_b[SEAL_KEY_LEN] = { 1, 2, 4 }, id_b[SEAL_ID_LEN] = { 10 };
	struct seal *sa, *sb, *sc;
	struct seal_ctx *a = ctx_for(key_a, id_a, &sa), *b = ctx_for(key_b, id_a, &sb), *c = ctx_for(key_a, id_b, &sc);
	uint8_t *plain = page_filled(0x5eed), *buf = page_filled(0), *sealed = page_filled(0);
	uint8_t tag[SEAL_TAG_LEN], t2[SEAL_TAG_LEN];

	(void)state;
	memcpy(buf, plain, PAGE_SIZE_4K);
	assert_int_equal(seal_page(a, 77, 3, buf, tag), 0);
	assert_memory_not_equal(buf, plain, PAGE_SIZE_4K);
	memcpy(sealed, buf, PAGE_SIZE_4K);
	assert_int_equal(seal_open(a, 77, 3, buf, tag), 0);
	assert_memory_equal(buf, plain, PAGE_SIZE_4K);

	/* the same page and version seal to the same bytes (repair re-seals what it opened) */
	assert_int_equal(seal_page(a, 77, 3, buf, t2), 0);
	assert_memory_equal(buf, sealed, PAGE_SIZE_4K);
	assert_memory_equal(t2, tag, SEAL_TAG_LEN);

#define REOPEN(ctx, pg, ver, tg) (memcpy(buf, sealed, PAGE_SIZE_4K), seal_open(ctx, pg, ver, buf, tg))
	assert_int_equal(REOPEN(a, 77, 3, tag), 0);
	assert_int_equal(REOPEN(a, 78, 3, tag), -EBADMSG); /* another page's slot */
	assert_int_equal(REOPEN(a, 77, 2, tag), -EBADMSG); /* an older version: rollback */
	assert_int_equal(REOPEN(a, 77, 4, tag), -EBADMSG);
	assert_int_equal(REOPEN(b, 77, 3, tag), -EBADMSG); /* another VM's key */
	assert_int_equal(REOPEN(c, 77, 3, tag), -EBADMSG); /* same key, another VM id */
	sealed[1234] ^= 0x10;                              /* one flipped bit in the ciphertext */
	assert_int_equal(REOPEN(a, 77, 3, tag), -EBADMSG);
	sealed[1234] ^= 0x10;
	tag[15] ^= 1; /* one flipped bit in the tag */
	assert_int_equal(REOPEN(a, 77, 3, tag), -EBADMSG);
	tag[15] ^= 1;
	assert_int_equal(REOPEN(a, 77, 3, tag), 0);
	assert_memory_equal(buf, plain, PAGE_SIZE_4K);
#undef REOPEN

	/* another version of the same page gets other ciphertext: no keystream is shared */
	memcpy(buf, plain, PAGE_SIZE_4K);
	assert_int_equal(seal_page(a, 77, 4, buf, t2), 0);
	assert_memory_not_equal(buf, sealed, PAGE_SIZE_4K);

	seal_ctx_free(a);
	seal_ctx_free(b);
	seal_ctx_free(c);
	seal_free(sa, false);
	seal_free(sb, false);
	seal_free(sc, false);
	free(plain);
	free(buf);
	free(sealed);
}

/* The fault path's promise (CONVENTIONS rule 4): once a context exists, sealing and opening allocate nothing. */
static void test_no_allocation_per_page(void **state)
{
	struct seal *s;
	struct seal_ctx *c = ctx_for(key_a, id_a, &s);
	uint8_t *buf = page_filled(0x11), tag[SEAL_TAG_LEN];

	(void)state;
	assert_int_equal(seal_page(c, 0, 1, buf, tag), 0); /* a first call may set things up */
	assert_int_equal(seal_open(c, 0, 1, buf, tag), 0);
	unsigned long before = ossl_allocs;
	for (uint32_t v = 2; v < 200; v++) {
		assert_int_equal(seal_page(c, v, v, buf, tag), 0);
		assert_int_equal(seal_open(c, v, v, buf, tag), 0);
		tag[0] ^= 1;
		assert_int_equal(seal_open(c, v, v, buf, tag), -EBADMSG);
	}
	assert_int_equal(ossl_allocs, before);
	seal_ctx_free(c);
	seal_free(s, false);
	free(buf);
}

static void test_key_file(void **state)
{
	char dir[] = "/var/tmp/uffdvm-seal-XXXXXX", path[600];
	struct seal *s, *s2;
	struct stat st;
	uint8_t blob[64];
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(seal_new(dir, "vm-123", &s), 0);
	snprintf(path, sizeof(path), "%s/vm-123.key", dir);
	assert_string_equal(seal_path(s), path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(st.st_size, SEAL_KEY_LEN + SEAL_ID_LEN);
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(blob, 1, sizeof(blob), f), SEAL_KEY_LEN + SEAL_ID_LEN);
	fclose(f);
	/* a second VM draws another key */
	assert_int_equal(seal_new(dir, "vm-124", &s2), 0);
	f = fopen(seal_path(s2), "rb");
	assert_non_null(f);
	uint8_t blob2[64];
	assert_int_equal(fread(blob2, 1, sizeof(blob2), f), SEAL_KEY_LEN + SEAL_ID_LEN);
	fclose(f);
	assert_memory_not_equal(blob, blob2, SEAL_KEY_LEN);
	seal_free(s2, false);
	seal_free(s, false);
	assert_int_equal(access(path, F_OK), -1);
	/* the start-up clean-up takes a key whose pid is gone, like a spill file */
	snprintf(path, sizeof(path), "%s/old-4194303.key", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(vmstate_remove_stale(dir, NULL, NULL), 1);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(rmdir(dir), 0);
}

static void test_pagemap_versions(void **state)
{
	struct pagemap pm = { 0 };
	uint32_t locs[STORE_MAX_COPIES];

	(void)state;
	assert_int_equal(pagemap_init(&pm, 1, -1, 0), 0);
	pagemap_use_versions(&pm);
	assert_int_equal(pagemap_grow(&pm, 4), 0);
	assert_true(pagemap_installed(&pm, 2, NULL));
	for (uint32_t v = 1; v <= 3; v++) {
		assert_true(pagemap_evict_begin(&pm, 2));
		assert_int_equal(pagemap_entry(&pm, 2)->version, v);
		if (v == 2) {
			/* a write meanwhile: the next eviction must not reuse this version */
			pagemap_evict_give_back(&pm, 2);
			continue;
		}
		for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
			locs[c] = LOC_NONE;
		locs[0] = 40 + v;
		pagemap_evict_commit(&pm, 2, locs, 0xdead); /* the CRC argument leaves the version alone */
		assert_int_equal(pagemap_entry(&pm, 2)->version, v);
		bool wake;
		assert_true(pagemap_punched(&pm, 2, false, &wake, NULL));
		assert_true(pagemap_installed(&pm, 2, locs));
		assert_int_equal(pagemap_entry(&pm, 2)->version, v); /* kept while resident */
	}
	/* a spent version is never wrapped to 0: the page stays resident */
	((struct page_entry *)pagemap_entry(&pm, 2))->version = UINT32_MAX;
	assert_false(pagemap_evict_begin(&pm, 2));
	assert_int_equal(pagemap_entry(&pm, 2)->state, PG_RESIDENT);
	pagemap_destroy(&pm);
}

static void test_sealed_store_spill(void **state)
{
	char dir[] = "/var/tmp/uffdvm-sealstore-XXXXXX";
	struct policy_pager_config cfg;
	struct donor_pool *pool;
	struct spill *spill;
	struct store *st;
	struct seal *seal;
	struct policy_vm pol;
	uint8_t *plain = page_filled(0xc0ffee), *buf = page_filled(0), *in = page_filled(0), *raw = page_filled(0);
	uint32_t two[STORE_MAX_COPIES], one[STORE_MAX_COPIES];
	enum store_source src;

	(void)state;
	assert_non_null(mkdtemp(dir));
	policy_config_init(&cfg);
	assert_int_equal(donor_pool_new(&cfg, &pool), 0);
	assert_int_equal(spill_new(dir, "vm", 0, false, &spill), 0);
	policy_vm_init(&pol);
	assert_true(pol.encryption); /* on by default */
	snprintf(pol.name, sizeof(pol.name), "vm");
	pol.backup_spill = true;
	assert_int_equal(seal_new(dir, "vm", &seal), 0);
	assert_int_equal(store_new("vm", pool, spill, seal, &pol, NULL, false, &st), 0);
	assert_true(store_sealed(st));
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		two[c] = one[c] = LOC_NONE;
	two[0] = 3;
	two[1] = 5;

	memcpy(buf, plain, PAGE_SIZE_4K);
	assert_int_equal(store_write_page(st, buf, two, 12, 7), 0);
	/* the file holds ciphertext: no trace of the page's bytes */
	assert_int_equal(spill_pread(spill, 3, raw), 0);
	assert_memory_not_equal(raw, plain, PAGE_SIZE_4K);
	assert_null(memmem(raw, PAGE_SIZE_4K, "\xee\xee\xee\xee\xee\xee\xee\xee", 8));
	assert_int_equal(store_read(st, 12, two, 7, in, &src, true), 0);
	assert_memory_equal(in, plain, PAGE_SIZE_4K);

	/*
	 * An older version and another page's index fail on both copies. Only the fault thread's
	 * reads count as rejected: repair reads copies its page may have given up meanwhile.
	 */
	assert_int_equal(store_read(st, 12, two, 6, in, &src, false), -EBADMSG);
	assert_int_equal(atomic_load(&store_stats(st)->rejected), 0);
	assert_int_equal(store_read(st, 13, two, 7, in, &src, true), -EBADMSG);
	assert_int_equal(atomic_load(&store_stats(st)->rejected), 2);

	/* one flipped bit in the first copy: the second serves, the first is counted */
	raw[100] ^= 4;
	assert_int_equal(spill_pwrite(spill, 3, raw), 0);
	memset(in, 0, PAGE_SIZE_4K);
	assert_int_equal(store_read(st, 12, two, 7, in, &src, true), 0);
	assert_memory_equal(in, plain, PAGE_SIZE_4K);
	assert_int_equal(atomic_load(&store_stats(st)->rejected), 3);

	/* another page's sealed copy moved into slot 5 (a swap) is refused too */
	one[0] = 5;
	memcpy(buf, plain, PAGE_SIZE_4K);
	assert_int_equal(store_write_page(st, buf, one, 99, 7), 0);
	assert_int_equal(store_read(st, 12, two, 7, in, &src, true), -EBADMSG);

	store_free(st); /* deletes the key file with it */
	spill_free(spill, false);
	donor_pool_free(pool);
	assert_int_equal(rmdir(dir), 0);
	free(plain);
	free(buf);
	free(in);
	free(raw);
}

int main(void)
{
	if (!CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free))
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_allocation_per_page),
		cmocka_unit_test(test_round_trip_and_forgeries),
		cmocka_unit_test(test_key_file),
		cmocka_unit_test(test_pagemap_versions),
		cmocka_unit_test(test_sealed_store_spill),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
