/* SPDX-License-Identifier: MIT */
/*
 * Page sharing (docs/sharing.md) with real OpenSSL and a real spill file:
 * the deterministic seal gives equal pages equal keys and ciphertexts,
 * another group's keys other ones, and refuses a tampered copy or another
 * content's copy; the content index counts references and reuses numbers
 * only after the last one; a group stores a content once for every
 * member, serves it back, frees it with its last reference and deletes
 * its files with its last member; its state file is refused when
 * truncated, corrupted or another group's, and a group that outlived its
 * pager comes back with the references its members' maps name. Ends with the per-page cost of the MAC
 * and the seal.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test-pages.h"

#include "donors.h"
#include "dseal.h"
#include "share-index.h"
#include "share.h"
#include "share-state.h"
#include "spill.h"
#include "store.h"
#include "vmstate.h"

static const uint8_t mk_a[DSEAL_KEY_LEN] = { 1 }, ek_a[DSEAL_KEY_LEN] = { 2 }, id_a[DSEAL_ID_LEN] = { 3 };
static const uint8_t mk_b[DSEAL_KEY_LEN] = { 4 }, ek_b[DSEAL_KEY_LEN] = { 5 }, id_b[DSEAL_ID_LEN] = { 6 };

static struct dseal_ctx *ctx_for(const uint8_t *mk, const uint8_t *ek, const uint8_t *id, struct dseal **ret)
{
	struct dseal_ctx *c;

	assert_int_equal(dseal_new_from_keys(mk, ek, id, ret), 0);
	assert_int_equal(dseal_ctx_new(*ret, &c), 0);
	return c;
}

static void test_deterministic_seal(void **state)
{
	struct dseal *sa, *sa2, *sb;
	struct dseal_ctx *a = ctx_for(mk_a, ek_a, id_a, &sa), *a2 = ctx_for(mk_a, ek_a, id_a, &sa2), *b;
	uint8_t *p = page_filled(0x1234), *q = page_filled(0x1235), *c1 = page_filled(0), *c2 = page_filled(0);
	uint8_t *c3 = page_filled(0), *cb = page_filled(0);
	uint8_t n1[DSEAL_NONCE_LEN], n2[DSEAL_NONCE_LEN], nq[DSEAL_NONCE_LEN], nb[DSEAL_NONCE_LEN];
	uint8_t t1[DSEAL_TAG_LEN], t2[DSEAL_TAG_LEN], tq[DSEAL_TAG_LEN], tb[DSEAL_TAG_LEN];

	(void)state;
	b = ctx_for(mk_b, ek_b, id_b, &sb);
	/* Equal pages, two contexts of the same keys: equal key, ciphertext and tag. */
	assert_int_equal(dseal_key(a, p, n1), 0);
	assert_int_equal(dseal_key(a2, p, n2), 0);
	assert_memory_equal(n1, n2, DSEAL_NONCE_LEN);
	assert_int_equal(dseal_seal(a, n1, p, c1, t1), 0);
	assert_int_equal(dseal_seal(a2, n2, p, c2, t2), 0);
	assert_memory_equal(c1, c2, PAGE_SIZE_4K);
	assert_memory_equal(t1, t2, DSEAL_TAG_LEN);
	assert_memory_not_equal(c1, p, PAGE_SIZE_4K);
	/* A page differing in one word: another key and ciphertext. */
	assert_int_equal(dseal_key(a, q, nq), 0);
	assert_memory_not_equal(nq, n1, DSEAL_NONCE_LEN);
	assert_int_equal(dseal_seal(a, nq, q, c3, tq), 0);
	assert_memory_not_equal(c3, c1, PAGE_SIZE_4K);
	/* Another group's keys: the same page gives another key and ciphertext. */
	assert_int_equal(dseal_key(b, p, nb), 0);
	assert_memory_not_equal(nb, n1, DSEAL_NONCE_LEN);
	assert_int_equal(dseal_seal(b, nb, p, cb, tb), 0);
	assert_memory_not_equal(cb, c1, PAGE_SIZE_4K);
	/* Round trip; in place sealing gives the same bytes. */
	memcpy(c2, p, PAGE_SIZE_4K);
	assert_int_equal(dseal_seal(a, n1, c2, c2, t2), 0);
	assert_memory_equal(c2, c1, PAGE_SIZE_4K);
	assert_int_equal(dseal_open(a, n1, c2, t1), 0);
	assert_memory_equal(c2, p, PAGE_SIZE_4K);
	/* One flipped bit, another content's copy (same group), another group's copy: refused. */
	memcpy(c2, c1, PAGE_SIZE_4K);
	c2[777] ^= 1;
	assert_int_equal(dseal_open(a, n1, c2, t1), -EBADMSG);
	memcpy(c2, c3, PAGE_SIZE_4K);
	assert_int_equal(dseal_open(a, n1, c2, t1), -EBADMSG);
	memcpy(c2, cb, PAGE_SIZE_4K);
	assert_int_equal(dseal_open(a, n1, c2, t1), -EBADMSG);
	/* ... and the other group cannot open ours under our nonce and tag. */
	memcpy(c2, c1, PAGE_SIZE_4K);
	assert_int_equal(dseal_open(b, n1, c2, t1), -EBADMSG);

	dseal_ctx_free(a);
	dseal_ctx_free(a2);
	dseal_ctx_free(b);
	dseal_free(sa);
	dseal_free(sa2);
	dseal_free(sb);
	free(p);
	free(q);
	free(c1);
	free(c2);
	free(c3);
	free(cb);
}

static void key_of(uint32_t i, uint8_t *key)
{
	memset(key, 0, DSEAL_NONCE_LEN);
	/* Spread over the buckets the way MAC bytes would be, plus the number itself. */
	uint32_t h = i * 2654435761u;
	memcpy(key, &h, 4);
	memcpy(key + 4, &i, 4);
}

static void test_index_refcount(void **state)
{
	struct share_index ix;
	uint8_t k[DSEAL_NONCE_LEN];
	uint32_t id, id2, first;
	const uint32_t n = 5000; /* several rehashes */

	(void)state;
	assert_int_equal(share_index_init(&ix), 0);
	for (uint32_t i = 0; i < n; i++) {
		key_of(i, k);
		assert_int_equal(share_index_find(&ix, k), SHARE_NONE);
		assert_int_equal(share_index_insert(&ix, k, &id), 0);
		assert_int_equal(id, i);
		assert_int_equal(share_index_entry(&ix, id)->state, SE_PENDING);
		share_index_entry(&ix, id)->state = SE_READY;
	}
	assert_int_equal(ix.live, n);
	assert_int_equal(ix.refs, n);
	for (uint32_t i = 0; i < n; i++) {
		key_of(i, k);
		assert_int_equal(share_index_find(&ix, k), i);
	}
	/* Two more references to entry 7: the first two drops are not the last. */
	share_index_ref(&ix, 7);
	share_index_ref(&ix, 7);
	assert_int_equal(ix.refs, n + 2);
	assert_false(share_index_unref(&ix, 7));
	assert_false(share_index_unref(&ix, 7));
	assert_true(share_index_unref(&ix, 7));
	share_index_remove(&ix, 7);
	assert_false(share_index_valid(&ix, 7));
	key_of(7, k);
	assert_int_equal(share_index_find(&ix, k), SHARE_NONE);
	assert_int_equal(ix.live, n - 1);
	assert_int_equal(ix.refs, n - 1);
	/* Its neighbours in the chain are still found. */
	key_of(6, k);
	assert_int_equal(share_index_find(&ix, k), 6);
	/* The freed number is reused, only now, for new content. */
	key_of(n + 1, k);
	assert_int_equal(share_index_insert(&ix, k, &id2), 0);
	assert_int_equal(id2, 7);
	assert_int_equal(share_index_find(&ix, k), 7);
	/* A pending entry that failed is removed with its one reference. */
	key_of(n + 2, k);
	assert_int_equal(share_index_insert(&ix, k, &first), 0);
	share_index_remove(&ix, first);
	assert_int_equal(share_index_find(&ix, k), SHARE_NONE);
	assert_int_equal(ix.live, n);
	assert_int_equal(ix.refs, n);
	/* A drop on an entry with no reference is refused, not wrapped. */
	assert_false(share_index_unref(&ix, first));
	share_index_destroy(&ix);
	share_index_destroy(&ix); /* safe twice */
}

static unsigned dir_entries(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Member i: this process (alive, so a group that outlives a pager waits for it), under its own name. */
static struct share_member *member(unsigned i)
{
	static struct share_member m[4];

	snprintf(m[i].name, sizeof(m[i].name), "vm%u", i);
	m[i].pid = (int32_t)getpid();
	assert_int_equal(vmstate_pid_start(getpid(), &m[i].start_ns), 0);
	return &m[i];
}

static void group_counts(struct share_group *g, uint64_t copies, uint64_t refs)
{
	uint64_t c, r;

	share_group_counts(g, &c, &r);
	assert_int_equal(c, copies);
	assert_int_equal(r, refs);
}

/* One page through the group's batch hook, as a member's evictor stores it. */
static int put_one(struct share_group *g, const void *page, uint32_t *ret_loc)
{
	int r;

	share_store_ops.put_batch(g, &page, 1, ret_loc, &r);
	return r;
}

/* Group `group` joined by VM `vm`, spill only, in a fresh state dir (dir; its groups/ in gdir). */
static struct share_group *join_fresh(char *dir, char *gdir, size_t gdir_len, struct donor_pool **ret_pool,
				       struct policy_vm *pol, const char *vm, const char *group)
{
	struct policy_pager_config cfg;
	struct share_group *g;
	char err[256];

	assert_non_null(mkdtemp(dir));
	snprintf(gdir, gdir_len, "%s/groups", dir);
	policy_config_init(&cfg);
	assert_int_equal(donor_pool_new(&cfg, ret_pool), 0);
	policy_vm_init(pol);
	snprintf(pol->name, sizeof(pol->name), "%s", vm);
	snprintf(pol->sharing_group, sizeof(pol->sharing_group), "%s", group);
	assert_int_equal(share_group_join(pol, *ret_pool, dir, member(0), &g, err, sizeof(err)), 0);
	assert_int_equal(share_group_adopt(g, member(0), NULL, 0, err, sizeof(err)), 0);
	return g;
}

static void test_group_spill(void **state)
{
	char dir[] = "/var/tmp/uffdvm-share-XXXXXX", gdir[64], err[256];
	struct donor_pool *pool;
	struct share_group *g, *g2, *gx;
	struct policy_vm pol, other;
	struct spill *vspill;
	struct store *vst;
	uint8_t *a = page_filled(0xaaaa), *b = page_filled(0xbbbb), *in = page_filled(0);
	uint32_t la, la2, lb, lv, locs[STORE_MAX_COPIES];
	enum store_source src;

	(void)state;
	g = join_fresh(dir, gdir, sizeof(gdir), &pool, &pol, "vm1", "tenant");
	assert_int_equal(share_group_join(&pol, pool, dir, member(1), &g2, err, sizeof(err)), 0);
	assert_ptr_equal(g, g2);
	assert_int_equal(dir_entries(gdir), 3); /* key, state and spill file */
	/* A member of another durability joins: the group's becomes the strongest (donors: test_sharing.py). */
	other = pol;
	other.replicas = 2;
	assert_int_equal(share_group_join(&other, pool, dir, member(2), &gx, err, sizeof(err)), 0);
	assert_ptr_equal(gx, g);
	share_group_leave(gx, member(2), false);

	/* One copy for equal contents, whichever member stores them. */
	assert_int_equal(put_one(g, a, &la), 0);
	assert_true(loc_is_shared(la));
	assert_int_equal(put_one(g2, a, &la2), 0);
	assert_int_equal(la2, la);
	assert_int_equal(put_one(g, b, &lb), 0);
	assert_int_not_equal(lb, la);
	group_counts(g, 2, 3);
	assert_int_equal(share_store_ops.health(g, la), LOC_OK);
	assert_int_equal(share_store_ops.read(g, la, in, &src), 0);
	assert_memory_equal(in, a, PAGE_SIZE_4K);
	assert_int_equal(src, SRC_SPILL);
	/* The spill file holds ciphertext only. */
	char spath[128];
	snprintf(spath, sizeof(spath), "%s/tenant.spill", gdir);
	FILE *f = fopen(spath, "rb");
	assert_non_null(f);
	uint8_t *raw = page_filled(0);
	assert_int_equal(fread(raw, 1, PAGE_SIZE_4K, f), PAGE_SIZE_4K);
	fclose(f);
	assert_memory_not_equal(raw, a, PAGE_SIZE_4K);
	assert_null(memmem(raw, PAGE_SIZE_4K, "\xaa\xaa\xaa\xaa\xaa\xaa\xaa\xaa", 8));

	/* A member's store: shared locations go to the group, references are counted per VM. */
	assert_int_equal(spill_new(dir, "vm1", 0, false, &vspill), 0);
	assert_int_equal(store_new("vm1", pool, vspill, NULL, &pol, NULL, false, &vst), 0);
	store_set_shared(vst, &share_store_ops, g);
	assert_true(store_shares(vst));
	{
		const void *pages[1] = { b };
		int r;
		store_put_shared_batch(vst, pages, 1, &lv, &r);
		assert_int_equal(r, 0);
	}
	assert_int_equal(lv, lb);
	assert_int_equal(atomic_load(&store_stats(vst)->shared_refs), 1);
	group_counts(g, 2, 4);
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		locs[c] = LOC_NONE;
	locs[0] = lv;
	memset(in, 0, PAGE_SIZE_4K);
	assert_int_equal(store_read(vst, 42, locs, 0, in, &src, false), 0);
	assert_memory_equal(in, b, PAGE_SIZE_4K);
	assert_int_equal(store_loc_health(vst, lv), LOC_OK);
	store_free_loc(vst, lv);
	assert_int_equal(atomic_load(&store_stats(vst)->shared_refs), 0);
	group_counts(g, 2, 3);

	/* The last reference frees the copy; a location of a freed entry reads as nothing. */
	share_store_ops.unref(g, lb);
	group_counts(g, 1, 2);
	assert_int_equal(share_store_ops.read(g, lb, in, &src), -EIO);
	assert_int_equal(share_store_ops.health(g, lb), LOC_DEAD);
	assert_int_equal(spill_used_slots(vspill), 0);
	share_store_ops.unref(g, la);
	group_counts(g, 1, 1);
	share_store_ops.unref(g, la);
	group_counts(g, 0, 0);

	store_free(vst);
	spill_free(vspill, false);
	share_group_leave(g2, member(1), false);
	assert_int_equal(dir_entries(gdir), 3); /* one member left */
	share_group_leave(g, member(0), false);
	assert_int_equal(dir_entries(gdir), 0); /* the last one takes the key, state and spill file */
	assert_int_equal(rmdir(gdir), 0);
	assert_int_equal(rmdir(dir), 0);
	donor_pool_free(pool);
	free(a);
	free(b);
	free(in);
	free(raw);
}

struct racer {
	struct share_group *g;
	const void *pages[48];
	uint32_t locs[48];
	int res[48];
};

static void *race_put(void *arg)
{
	struct racer *r = arg;

	share_store_ops.put_batch(r->g, r->pages, 48, r->locs, r->res);
	return NULL;
}

/*
 * Batched puts: duplicates inside one batch get one copy; two threads
 * putting the same contents at once (each waiting for the other's pending
 * copies) end with one copy per content and a reference per page.
 */
static void test_group_batches(void **state)
{
	char dir[] = "/var/tmp/uffdvm-share-XXXXXX", gdir[64];
	struct donor_pool *pool;
	struct share_group *g;
	struct policy_vm pol;
	uint8_t *pg[16];
	struct racer rc[2];
	pthread_t t[2];
	uint8_t *in = page_filled(0);
	enum store_source src;

	(void)state;
	g = join_fresh(dir, gdir, sizeof(gdir), &pool, &pol, "vm", "batch");
	for (unsigned i = 0; i < 16; i++)
		pg[i] = page_filled(0x5000 + i);

	/* One batch of 48 naming 16 contents three times each, 40 pages past the batch size. */
	for (unsigned k = 0; k < 2; k++) {
		rc[k].g = g;
		for (unsigned i = 0; i < 48; i++)
			rc[k].pages[i] = pg[(i * 7 + k) % 16];
	}
	share_store_ops.put_batch(g, rc[0].pages, 48, rc[0].locs, rc[0].res);
	group_counts(g, 16, 48);
	for (unsigned i = 0; i < 48; i++) {
		assert_int_equal(rc[0].res[i], 0);
		for (unsigned j = 0; j < i; j++)
			assert_true((rc[0].pages[i] == rc[0].pages[j]) == (rc[0].locs[i] == rc[0].locs[j]));
		assert_int_equal(share_store_ops.read(g, rc[0].locs[i], in, &src), 0);
		assert_memory_equal(in, rc[0].pages[i], PAGE_SIZE_4K);
	}
	for (unsigned i = 0; i < 48; i++)
		share_store_ops.unref(g, rc[0].locs[i]);
	group_counts(g, 0, 0);

	/* Two threads, same contents in other orders, at once. */
	for (unsigned round = 0; round < 20; round++) {
		for (unsigned k = 0; k < 2; k++)
			assert_int_equal(pthread_create(&t[k], NULL, race_put, &rc[k]), 0);
		for (unsigned k = 0; k < 2; k++)
			assert_int_equal(pthread_join(t[k], NULL), 0);
		group_counts(g, 16, 96);
		for (unsigned i = 0; i < 48; i++) {
			assert_int_equal(rc[0].res[i], 0);
			assert_int_equal(rc[1].res[i], 0);
			for (unsigned j = 0; j < 48; j++)
				assert_true((rc[0].pages[i] == rc[1].pages[j]) == (rc[0].locs[i] == rc[1].locs[j]));
		}
		for (unsigned k = 0; k < 2; k++)
			for (unsigned i = 0; i < 48; i++)
				share_store_ops.unref(g, rc[k].locs[i]);
		group_counts(g, 0, 0);
	}
	share_group_leave(g, member(0), false);
	assert_int_equal(dir_entries(gdir), 0);
	assert_int_equal(rmdir(gdir), 0);
	assert_int_equal(rmdir(dir), 0);
	donor_pool_free(pool);
	for (unsigned i = 0; i < 16; i++)
		free(pg[i]);
	free(in);
}

/* share-state.c's record: key, tag, copy CRC, check, 4 locations, state word. */
#define REC_BYTES (DSEAL_NONCE_LEN + DSEAL_TAG_LEN + 8 + 4 * STORE_MAX_COPIES + 4)
#define FIRST_RECS 1024u /* the file's first growth */

static struct share_entry entry_of(uint8_t fill, uint32_t loc)
{
	struct share_entry e;

	memset(&e, 0, sizeof(e));
	memset(e.key, fill, sizeof(e.key));
	memset(e.tag, fill ^ 0x5a, sizeof(e.tag));
	e.crc = 0x1000u + fill;
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		e.locs[c] = LOC_NONE;
	e.locs[0] = loc;
	e.state = SE_READY;
	return e;
}

/* A state file with ready records 0 and 5 and one member, closed as a dead pager leaves it. */
static void state_written(const char *dir, const uint8_t *id)
{
	struct share_state *s;
	struct share_entry e0 = entry_of(0x11, 7), e5 = entry_of(0x55, LOC_REMOTE | 3), e9 = entry_of(0x99, 9);
	char err[256];

	assert_int_equal(share_state_create(dir, "g", id, 8192, &s, err, sizeof(err)), 0);
	assert_int_equal(share_state_member_add(s, member(0)), 0);
	assert_int_equal(share_state_set_ready(s, 0, &e0), 0);
	assert_int_equal(share_state_set_ready(s, 5, &e5), 0);
	assert_int_equal(share_state_set_ready(s, 9, &e9), 0);
	share_state_set_free(s, 9); /* gone: its record is ignored */
	share_state_set_loc(s, 5, 1, 12); /* repair added a copy */
	share_state_close(s, true);
}

static void flip_at(const char *path, off_t off)
{
	FILE *f = fopen(path, "r+b");
	int c;

	assert_non_null(f);
	assert_int_equal(fseeko(f, off, SEEK_SET), 0);
	c = fgetc(f);
	assert_int_equal(fseeko(f, off, SEEK_SET), 0);
	fputc(c ^ 0x40, f);
	fclose(f);
}

static off_t rec_off(const char *path, uint32_t id)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_size - (off_t)((FIRST_RECS * REC_BYTES + PAGE_SIZE_4K - 1) & ~(PAGE_SIZE_4K - 1)) +
	       (off_t)id * REC_BYTES;
}

/* Opening must fail with -EBADMSG and a message naming the file and the fault. */
static void open_refused(const char *dir, const uint8_t *id, const char *path, const char *why)
{
	struct share_state *s = NULL;
	char err[512];

	assert_int_equal(share_state_open(dir, "g", id, 8192, &s, err, sizeof(err)), -EBADMSG);
	assert_null(s);
	assert_non_null(strstr(err, path));
	if (!strstr(err, why))
		fail_msg("expected '%s' in: %s", why, err);
}

static void test_state_file(void **state)
{
	char dir[] = "/var/tmp/uffdvm-sstate-XXXXXX", path[128], path2[128], err[512];
	static const uint8_t id[DSEAL_ID_LEN] = { 9, 9 }, other_id[DSEAL_ID_LEN] = { 8 };
	struct share_state *s;
	struct share_member m;
	struct share_entry e;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/g.state", dir);
	snprintf(path2, sizeof(path2), "%s/h.state", dir);

	/* Whole: every ready record back as written, free ones free, the member recorded. */
	state_written(dir, id);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(share_state_open(dir, "g", id, 8192, &s, err, sizeof(err)), 0);
	assert_int_equal(share_state_nrecs(s), FIRST_RECS);
	share_state_get(s, 0, &e);
	assert_int_equal(e.state, SE_READY);
	assert_int_equal(e.key[0], 0x11);
	assert_int_equal(e.locs[0], 7);
	share_state_get(s, 5, &e);
	assert_int_equal(e.state, SE_READY);
	assert_int_equal(e.tag[3], 0x55 ^ 0x5a);
	assert_int_equal(e.crc, 0x1055);
	assert_int_equal(e.locs[0], LOC_REMOTE | 3);
	assert_int_equal(e.locs[1], 12);
	assert_int_equal(e.refs, 0); /* counts come from the page maps */
	share_state_get(s, 9, &e);
	assert_int_equal(e.state, SE_FREE);
	share_state_get(s, 1, &e);
	assert_int_equal(e.state, SE_FREE);
	assert_true(share_state_member(s, 0, &m));
	assert_string_equal(m.name, "vm0");
	assert_int_equal(m.pid, getpid());
	assert_false(share_state_member(s, 1, &m));
	/* Entry numbers past the first growth: the file grows. */
	e = entry_of(0x77, 1);
	assert_int_equal(share_state_set_ready(s, 5000, &e), 0);
	assert_true(share_state_nrecs(s) > 5000);
	share_state_close(s, true);
	assert_int_equal(share_state_open(dir, "g", id, 8192, &s, err, sizeof(err)), 0);
	share_state_get(s, 5000, &e);
	assert_int_equal(e.state, SE_READY);
	assert_int_equal(e.key[0], 0x77);
	share_state_close(s, false);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(share_state_open(dir, "g", id, 8192, &s, err, sizeof(err)), -ENOENT);

	/* Another group's id (its key file was replaced), or another group's name. */
	state_written(dir, id);
	open_refused(dir, other_id, path, "belongs to another group");
	{
		struct share_state *h;
		assert_int_equal(share_state_create(dir, "h", id, 8192, &h, err, sizeof(err)), 0);
		share_state_close(h, true);
	}
	assert_int_equal(rename(path2, path), 0); /* h's file under g's name */
	open_refused(dir, id, path, "belongs to another group ('h'");

	/* Truncated: the records the header counts are not all there. */
	state_written(dir, id);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 8192), 0);
	open_refused(dir, id, path, "truncated");
	assert_int_equal(truncate(path, 100), 0);
	open_refused(dir, id, path, "bad magic or truncated");

	/* A flipped bit in the header, in a ready record's key, in its state word. */
	state_written(dir, id);
	flip_at(path, 10);
	open_refused(dir, id, path, "header fails its checksum");
	state_written(dir, id);
	flip_at(path, rec_off(path, 5) + 2);
	open_refused(dir, id, path, "record 5 fails its checksum");
	state_written(dir, id);
	flip_at(path, rec_off(path, 0) + REC_BYTES - 2);
	open_refused(dir, id, path, "record 0 fails its checksum");
	/* A free record's contents are never read. */
	state_written(dir, id);
	flip_at(path, rec_off(path, 9) + 1);
	assert_int_equal(share_state_open(dir, "g", id, 8192, &s, err, sizeof(err)), 0);
	share_state_close(s, false);
	assert_int_equal(rmdir(dir), 0);
}

/*
 * A group that outlives its pager: a member leaves while its map still
 * names copies (as a crash leaves it); the next join loads the group,
 * the member's map brings the references, copies no one names go once
 * every recorded member is back, and a file that fails its checks is
 * refused naming it.
 */
static void test_group_restart(void **state)
{
	char dir[] = "/var/tmp/uffdvm-share-XXXXXX", gdir[64], spath[128], err[512];
	struct donor_pool *pool;
	struct share_group *g, *g2;
	struct policy_vm pol;
	uint8_t *a = page_filled(0xa1), *b = page_filled(0xb2), *c = page_filled(0xc3), *in = page_filled(0);
	uint32_t la, la2, lb, lc, ids[3];
	enum store_source src;
	json_t *js;

	(void)state;
	g = join_fresh(dir, gdir, sizeof(gdir), &pool, &pol, "vm0", "keep");
	assert_int_equal(share_group_join(&pol, pool, dir, member(1), &g2, err, sizeof(err)), 0);
	assert_int_equal(share_group_adopt(g2, member(1), NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(put_one(g, a, &la), 0);
	assert_int_equal(put_one(g2, a, &la2), 0);
	assert_int_equal(put_one(g, b, &lb), 0);
	assert_int_equal(put_one(g, c, &lc), 0);
	group_counts(g, 3, 4);
	/* The pager goes with both maps naming copies (c's reference count will be wrong: nobody names it). */
	share_group_leave(g2, member(1), true);
	share_group_leave(g, member(0), true);
	assert_int_equal(dir_entries(gdir), 3);

	/* The next pager: every copy loaded, no references until the members' maps bring theirs. */
	assert_int_equal(share_group_join(&pol, pool, dir, member(0), &g, err, sizeof(err)), 0);
	group_counts(g, 3, 0);
	/* A map naming an entry the file does not hold: refused, nothing taken. */
	ids[0] = la & (LOC_SHARED - 1);
	ids[1] = 777;
	assert_int_equal(share_group_adopt(g, member(0), ids, 2, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "keep.state"));
	group_counts(g, 3, 0);
	ids[1] = lb & (LOC_SHARED - 1);
	assert_int_equal(share_group_adopt(g, member(0), ids, 2, err, sizeof(err)), 0);
	group_counts(g, 3, 2);
	js = share_stats_json();
	assert_int_equal(json_integer_value(json_object_get(json_array_get(js, 0), "members_pending")), 1);
	json_decref(js);
	/* A reference dropped to zero while a member is still to come back: kept, it may be that member's. */
	share_store_ops.unref(g, lb);
	group_counts(g, 3, 1);
	assert_int_equal(share_group_join(&pol, pool, dir, member(1), &g2, err, sizeof(err)), 0);
	ids[0] = la2 & (LOC_SHARED - 1);
	assert_int_equal(share_group_adopt(g2, member(1), ids, 1, err, sizeof(err)), 0);
	/* Every member back: b and c, named by no map, are freed; a serves both. */
	group_counts(g, 1, 2);
	assert_int_equal(share_store_ops.read(g, la, in, &src), 0);
	assert_memory_equal(in, a, PAGE_SIZE_4K);
	assert_int_equal(share_store_ops.read(g, lc, in, &src), -EIO);
	/* New contents after the restart take numbers and slots the sweep freed, and survive again. */
	assert_int_equal(put_one(g, b, &lb), 0);
	group_counts(g, 2, 3);
	share_store_ops.unref(g, la);
	share_store_ops.unref(g, la2);
	share_store_ops.unref(g, lb);
	group_counts(g, 0, 0);
	share_group_leave(g2, member(1), false);
	share_group_leave(g, member(0), false);
	assert_int_equal(dir_entries(gdir), 0);

	/* A group whose state file fails its checks: join refused, the file named and kept. */
	assert_int_equal(share_group_join(&pol, pool, dir, member(0), &g, err, sizeof(err)), 0);
	assert_int_equal(share_group_adopt(g, member(0), NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(put_one(g, a, &la), 0);
	share_group_leave(g, member(0), true);
	snprintf(spath, sizeof(spath), "%s/keep.state", gdir);
	flip_at(spath, rec_off(spath, la & (LOC_SHARED - 1)) + 3);
	assert_int_equal(share_group_join(&pol, pool, dir, member(0), &g, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, spath));
	assert_non_null(strstr(err, "fails its checksum"));
	assert_int_equal(dir_entries(gdir), 3);
	assert_null(json_array_get(js = share_stats_json(), 0)); /* no group half set up */
	json_decref(js);
	/* Its key file replaced (another group's id): refused the same way. */
	flip_at(spath, rec_off(spath, la & (LOC_SHARED - 1)) + 3);
	{
		struct dseal *k;
		assert_int_equal(dseal_new(gdir, "keep", &k), 0);
		dseal_close(k);
	}
	assert_int_equal(share_group_join(&pol, pool, dir, member(0), &g, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "belongs to another group"));
	for (const char *const *f = (const char *const[]){ "keep.state", "keep.key", "keep.spill", NULL }; *f; f++) {
		snprintf(spath, sizeof(spath), "%s/%s", gdir, *f);
		assert_int_equal(unlink(spath), 0);
	}
	assert_int_equal(rmdir(gdir), 0);
	assert_int_equal(rmdir(dir), 0);
	donor_pool_free(pool);
	free(a);
	free(b);
	free(c);
	free(in);
}

/* A member whose process is gone. */
static struct share_member *dead_member(void)
{
	static struct share_member m = { .name = "gone", .start_ns = 1 };
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	m.pid = (int32_t)pid;
	return &m;
}

/*
 * Groups whose recorded members are all gone: loaded, every copy is
 * swept at once; at start-up, their files are deleted (and kept while a
 * member runs, or when they fail their checks).
 */
static void test_group_stale(void **state)
{
	char dir[] = "/var/tmp/uffdvm-share-XXXXXX", gdir[64], spath[128], err[512];
	struct donor_pool *pool;
	struct share_group *g;
	struct policy_vm pol;
	uint8_t *a = page_filled(0xd1), *b = page_filled(0xd2);
	uint32_t la, lb;
	struct share_member *gone = dead_member();

	(void)state;
	g = join_fresh(dir, gdir, sizeof(gdir), &pool, &pol, "vm0", "stale");
	assert_int_equal(put_one(g, a, &la), 0);
	share_store_ops.unref(g, la);
	/* The member's process is what it is recorded as: make the group's only member a dead one. */
	share_group_leave(g, member(0), false);
	assert_int_equal(share_group_join(&pol, pool, dir, gone, &g, err, sizeof(err)), 0);
	assert_int_equal(share_group_adopt(g, gone, NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(put_one(g, a, &la), 0);
	assert_int_equal(put_one(g, b, &lb), 0);
	share_group_leave(g, gone, true);
	assert_int_equal(dir_entries(gdir), 3);

	/* Loaded by a new member: nobody to wait for, so nothing is kept. */
	assert_int_equal(share_group_join(&pol, pool, dir, member(0), &g, err, sizeof(err)), 0);
	group_counts(g, 0, 0);
	assert_int_equal(share_group_adopt(g, member(0), NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(put_one(g, b, &lb), 0);
	group_counts(g, 1, 1);

	/* Start-up with a live member recorded: kept. */
	share_group_leave(g, member(0), true);
	assert_int_equal(share_remove_stale(dir, pool), 0);
	assert_int_equal(dir_entries(gdir), 3);
	/* A file that fails its checks: kept, whoever its members were. */
	snprintf(spath, sizeof(spath), "%s/stale.state", gdir);
	flip_at(spath, 12);
	assert_int_equal(share_remove_stale(dir, pool), 0);
	assert_int_equal(dir_entries(gdir), 3);
	flip_at(spath, 12);
	/* Every member gone: the files go. */
	assert_int_equal(share_group_join(&pol, pool, dir, member(0), &g, err, sizeof(err)), 0);
	share_group_leave(g, member(0), false); /* never adopted: the recorded member leaves for good */
	assert_int_equal(dir_entries(gdir), 0);
	assert_int_equal(share_group_join(&pol, pool, dir, gone, &g, err, sizeof(err)), 0);
	assert_int_equal(share_group_adopt(g, gone, NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(put_one(g, a, &la), 0);
	share_group_leave(g, gone, true);
	assert_int_equal(dir_entries(gdir), 3);
	assert_int_equal(share_remove_stale(dir, pool), 1);
	assert_int_equal(dir_entries(gdir), 0);
	assert_int_equal(rmdir(gdir), 0);
	assert_int_equal(rmdir(dir), 0);
	donor_pool_free(pool);
	free(a);
	free(b);
}

static double ns_per(struct timespec t0, struct timespec t1, unsigned n)
{
	return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / n;
}

/* Not a pass/fail figure: the per-page cost docs/sharing.md quotes. */
static void test_cost_per_page(void **state)
{
	const unsigned n = 20000;
	struct dseal *s;
	struct dseal_ctx *c = ctx_for(mk_a, ek_a, id_a, &s);
	uint8_t *p = page_filled(0x77), *out = page_filled(0), nonce[DSEAL_NONCE_LEN], tag[DSEAL_TAG_LEN];
	struct timespec t0, t1, t2, t3;

	(void)state;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < n; i++) {
		((uint32_t *)p)[1] = i;
		assert_int_equal(dseal_key(c, p, nonce), 0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(dseal_seal(c, nonce, p, out, tag), 0);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	for (unsigned i = 0; i < n; i++) {
		memcpy(out, p, 64); /* not a real copy: open fails, the work is the same */
		dseal_open(c, nonce, out, tag);
	}
	clock_gettime(CLOCK_MONOTONIC, &t3);
	print_message("per 4 KiB page: HMAC-SHA256 key %.0f ns, AES-256-GCM seal %.0f ns, open %.0f ns\n",
		      ns_per(t0, t1, n), ns_per(t1, t2, n), ns_per(t2, t3, n));
	dseal_ctx_free(c);
	dseal_free(s);
	free(p);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deterministic_seal),
		cmocka_unit_test(test_index_refcount),
		cmocka_unit_test(test_group_spill),
		cmocka_unit_test(test_group_batches),
		cmocka_unit_test(test_state_file),
		cmocka_unit_test(test_group_restart),
		cmocka_unit_test(test_group_stale),
		cmocka_unit_test(test_cost_per_page),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
