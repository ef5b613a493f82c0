/* SPDX-License-Identifier: MIT */
/* A sharing group's state file: layout, checks on load, crash-consistent record updates (see share-state.h). */
#include "share-state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "util.h"

#define SS_MAGIC 0x53474655u /* "UFGS" little-endian */
#define SS_VERSION 1
#define SS_HEADER_BYTES 4096u
#define SS_MEMBERS_OFFSET SS_HEADER_BYTES
#define SS_REC_FREE 0u
#define SS_REC_READY 0x59444552u /* "REDY": a torn or random word is neither */
#define SS_GROW_MIN 1024u

struct ss_header {
	uint32_t magic;
	uint16_t version;
	uint16_t header_bytes;
	char name[64];
	uint8_t id[DSEAL_ID_LEN];
	uint64_t members_offset, store_offset, store_bytes, recs_offset;
	uint32_t rec_bytes, max_members;
	uint32_t crc;            /* CRC32C of the fields above */
	_Atomic uint32_t nrecs;  /* records the file holds: raised only after it grew */
};

struct ss_member {
	char name[64];
	int32_t pid;
	_Atomic uint32_t used; /* written last on add, first on clear */
	uint64_t start_ns;
};

struct ss_record {
	uint8_t key[DSEAL_NONCE_LEN];
	uint8_t tag[DSEAL_TAG_LEN];
	uint32_t crc;   /* of the sealed copy */
	uint32_t check; /* CRC32C of the entry number, key, tag and crc */
	_Atomic uint32_t locs[STORE_MAX_COPIES];
	_Atomic uint32_t state; /* SS_REC_FREE or SS_REC_READY */
};

struct share_state {
	int fd;
	char path[512];
	struct ss_header *hdr;     /* mapped shared */
	struct ss_member *members; /* mapped shared */
	void *store_area;          /* mapped shared */
	struct ss_record *recs;    /* mapped shared, map_recs of them */
	uint32_t map_recs;
};

_Static_assert(sizeof(struct ss_header) <= SS_HEADER_BYTES, "the header fits its page");

static size_t round_page(size_t n) { return (n + PAGE_SIZE_4K - 1) & ~(size_t)(PAGE_SIZE_4K - 1); }

static uint32_t header_crc(const struct ss_header *h) { return crc32c(0, h, offsetof(struct ss_header, crc)); }

static uint32_t record_check(uint32_t id, const struct ss_record *r)
{
	uint32_t c = crc32c(0, &id, sizeof(id));

	c = crc32c(c, r->key, sizeof(r->key));
	c = crc32c(c, r->tag, sizeof(r->tag));
	return crc32c(c, &r->crc, sizeof(r->crc));
}

static size_t members_bytes(void) { return round_page(SHARE_STATE_MAX_MEMBERS * sizeof(struct ss_member)); }

/* Maps records [0, n) (n > 0), replacing an older mapping. Returns 0 or -errno. */
static int map_recs(struct share_state *s, uint32_t n)
{
	size_t len = round_page((size_t)n * sizeof(struct ss_record));
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, (off_t)s->hdr->recs_offset);

	if (p == MAP_FAILED)
		return -errno;
	if (s->recs)
		munmap(s->recs, round_page((size_t)s->map_recs * sizeof(struct ss_record)));
	s->recs = p;
	s->map_recs = n;
	return 0;
}

static int map_fixed(struct share_state *s)
{
	s->hdr = mmap(NULL, SS_HEADER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
	if (s->hdr == MAP_FAILED) {
		s->hdr = NULL;
		return -errno;
	}
	s->members = mmap(NULL, members_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, s->fd,
			  (off_t)s->hdr->members_offset);
	if (s->members == MAP_FAILED) {
		s->members = NULL;
		return -errno;
	}
	s->store_area = mmap(NULL, s->hdr->store_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd,
			     (off_t)s->hdr->store_offset);
	if (s->store_area == MAP_FAILED) {
		s->store_area = NULL;
		return -errno;
	}
	return atomic_load(&s->hdr->nrecs) ? map_recs(s, atomic_load(&s->hdr->nrecs)) : 0;
}

static struct share_state *state_alloc(const char *dir, const char *name)
{
	struct share_state *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->fd = -1;
	if ((size_t)snprintf(s->path, sizeof(s->path), "%s/%s.state", dir, name) >= sizeof(s->path)) {
		free(s);
		return NULL;
	}
	return s;
}

static void fill_header(struct ss_header *h, const char *name, const uint8_t id[DSEAL_ID_LEN], size_t store_bytes)
{
	memset(h, 0, sizeof(*h));
	h->magic = SS_MAGIC;
	h->version = SS_VERSION;
	h->header_bytes = sizeof(*h);
	snprintf(h->name, sizeof(h->name), "%s", name);
	memcpy(h->id, id, DSEAL_ID_LEN);
	h->members_offset = SS_MEMBERS_OFFSET;
	h->store_offset = SS_MEMBERS_OFFSET + members_bytes();
	h->store_bytes = round_page(store_bytes);
	h->recs_offset = h->store_offset + h->store_bytes;
	h->rec_bytes = sizeof(struct ss_record);
	h->max_members = SHARE_STATE_MAX_MEMBERS;
	h->crc = header_crc(h);
}

int share_state_create(const char *dir, const char *name, const uint8_t id[DSEAL_ID_LEN], size_t store_bytes,
		       struct share_state **ret, char *err, size_t errlen)
{
	struct share_state *s = state_alloc(dir, name);
	struct ss_header h;
	int r;

	if (!s) {
		snprintf(err, errlen, "group state file name in %s too long, or out of memory", dir);
		return -ENAMETOOLONG;
	}
	fill_header(&h, name, id, store_bytes);
	unlink(s->path); /* a stale file of a group that ended while no pager ran */
	s->fd = open(s->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->fd < 0 || fchmod(s->fd, 0600) < 0 || ftruncate(s->fd, (off_t)h.recs_offset) < 0)
		r = -errno;
	else if (pwrite(s->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		r = -EIO;
	else
		r = map_fixed(s);
	if (r < 0) {
		snprintf(err, errlen, "cannot create group state file %s: %s", s->path, strerror(-r));
		unlink(s->path);
		share_state_close(s, true);
		return r;
	}
	*ret = s;
	return 0;
}

/* Every record of a file just opened: a value no writer leaves is corruption. Returns 0 or -EBADMSG. */
static int check_records(const struct share_state *s, char *err, size_t errlen)
{
	for (uint32_t id = 0; id < s->map_recs; id++) {
		const struct ss_record *r = &s->recs[id];
		uint32_t state = atomic_load(&r->state);

		if (state == SS_REC_FREE)
			continue;
		if (state != SS_REC_READY || r->check != record_check(id, r)) {
			snprintf(err, errlen, "group state file %s: record %u fails its checksum (state 0x%x)", s->path,
				 id, state);
			return -EBADMSG;
		}
		for (unsigned c = 0; c < STORE_MAX_COPIES; c++) {
			uint32_t loc = atomic_load(&r->locs[c]);

			if (loc != LOC_NONE && loc_is_shared(loc)) {
				snprintf(err, errlen, "group state file %s: record %u names copy 0x%x, which is no "
					 "location of a group store", s->path, id, loc);
				return -EBADMSG;
			}
		}
	}
	return 0;
}

int share_state_open(const char *dir, const char *name, const uint8_t id[DSEAL_ID_LEN], size_t store_bytes,
		     struct share_state **ret, char *err, size_t errlen)
{
	struct share_state *s = state_alloc(dir, name);
	struct ss_header h, want;
	struct stat st;
	int r;

	if (!s) {
		snprintf(err, errlen, "group state file name in %s too long, or out of memory", dir);
		return -ENAMETOOLONG;
	}
	s->fd = open(s->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (s->fd < 0) {
		r = -errno;
		snprintf(err, errlen, "no group state file %s: %s", s->path, strerror(-r));
		share_state_close(s, true);
		return r;
	}
	r = -EBADMSG;
	fill_header(&want, name, id, store_bytes);
	if (fstat(s->fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
		snprintf(err, errlen, "group state file %s is not a regular file of uid %u with mode 0600", s->path,
			 (unsigned)geteuid());
	} else if (pread(s->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != SS_MAGIC) {
		snprintf(err, errlen, "group state file %s (%lld bytes) is not a uffdvm group state file (bad magic or "
			 "truncated)", s->path, (long long)st.st_size);
	} else if (h.crc != header_crc(&h)) {
		snprintf(err, errlen, "group state file %s: header fails its checksum", s->path);
	} else if (h.version != SS_VERSION || h.header_bytes != sizeof(h) || h.rec_bytes != sizeof(struct ss_record)) {
		r = -EPROTONOSUPPORT;
		snprintf(err, errlen, "group state file %s has format version %u; this build reads version %u only",
			 s->path, h.version, SS_VERSION);
	} else if (memcmp(h.name, want.name, sizeof(h.name)) || memcmp(h.id, want.id, DSEAL_ID_LEN)) {
		h.name[sizeof(h.name) - 1] = '\0';
		snprintf(err, errlen, "group state file %s belongs to another group ('%s', or another id than its key "
			 "file's)", s->path, h.name);
	} else if (memcmp(&h, &want, offsetof(struct ss_header, crc)) || h.nrecs > SHARE_MAX_ENTRIES ||
		   (uint64_t)st.st_size < h.recs_offset + (uint64_t)h.nrecs * sizeof(struct ss_record)) {
		snprintf(err, errlen, "group state file %s is truncated or corrupted (%lld bytes; %u records need %llu)",
			 s->path, (long long)st.st_size, h.nrecs,
			 (unsigned long long)(h.recs_offset + (uint64_t)h.nrecs * sizeof(struct ss_record)));
	} else if ((r = map_fixed(s)) < 0) {
		snprintf(err, errlen, "group state file %s: mmap: %s", s->path, strerror(-r));
	} else {
		r = check_records(s, err, errlen);
	}
	if (r < 0) {
		share_state_close(s, true);
		return r;
	}
	*ret = s;
	return 0;
}

void share_state_close(struct share_state *s, bool keep_file)
{
	if (!s)
		return;
	if (s->recs)
		munmap(s->recs, round_page((size_t)s->map_recs * sizeof(struct ss_record)));
	if (s->store_area)
		munmap(s->store_area, s->hdr->store_bytes);
	if (s->members)
		munmap(s->members, members_bytes());
	if (s->hdr)
		munmap(s->hdr, SS_HEADER_BYTES);
	if (s->fd >= 0)
		close(s->fd);
	if (!keep_file)
		unlink(s->path);
	free(s);
}

const char *share_state_path(const struct share_state *s) { return s->path; }

void *share_state_store_area(struct share_state *s) { return s->store_area; }

uint32_t share_state_nrecs(const struct share_state *s) { return s->map_recs; }

void share_state_get(const struct share_state *s, uint32_t id, struct share_entry *ret)
{
	const struct ss_record *r = &s->recs[id];

	memset(ret, 0, sizeof(*ret));
	ret->state = atomic_load(&r->state) == SS_REC_READY ? SE_READY : SE_FREE;
	memcpy(ret->key, r->key, sizeof(ret->key));
	memcpy(ret->tag, r->tag, sizeof(ret->tag));
	ret->crc = r->crc;
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		ret->locs[c] = atomic_load(&r->locs[c]);
}

/* Room for record id: the file grows (doubling), then the header says so. Returns 0 or -errno. */
static int grow(struct share_state *s, uint32_t id)
{
	uint32_t n = s->map_recs ? s->map_recs : SS_GROW_MIN;
	int r;

	while (n <= id)
		n = n > SHARE_MAX_ENTRIES / 2 ? SHARE_MAX_ENTRIES : n * 2;
	if (ftruncate(s->fd, (off_t)(s->hdr->recs_offset + round_page((size_t)n * sizeof(struct ss_record)))) < 0)
		return -errno;
	if ((r = map_recs(s, n)) < 0)
		return r;
	atomic_store(&s->hdr->nrecs, n); /* after the file holds them: a reader never maps past its end */
	return 0;
}

int share_state_set_ready(struct share_state *s, uint32_t id, const struct share_entry *e)
{
	struct ss_record *r;
	int rc;

	if (id >= s->map_recs && (rc = grow(s, id)) < 0)
		return rc;
	r = &s->recs[id];
	memcpy(r->key, e->key, sizeof(r->key));
	memcpy(r->tag, e->tag, sizeof(r->tag));
	r->crc = e->crc;
	r->check = record_check(id, r);
	for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
		atomic_store_explicit(&r->locs[c], e->locs[c], memory_order_relaxed);
	/* Release: the page cache has the whole record before the word that makes it count. */
	atomic_store_explicit(&r->state, SS_REC_READY, memory_order_release);
	return 0;
}

void share_state_set_free(struct share_state *s, uint32_t id)
{
	if (id < s->map_recs)
		atomic_store_explicit(&s->recs[id].state, SS_REC_FREE, memory_order_release);
}

void share_state_set_loc(struct share_state *s, uint32_t id, unsigned c, uint32_t loc)
{
	if (id < s->map_recs && c < STORE_MAX_COPIES)
		atomic_store_explicit(&s->recs[id].locs[c], loc, memory_order_release);
}

int share_state_member_add(struct share_state *s, struct share_member *m)
{
	for (uint32_t i = 0; i < SHARE_STATE_MAX_MEMBERS; i++) {
		struct ss_member *sm = &s->members[i];

		if (atomic_load(&sm->used))
			continue;
		snprintf(sm->name, sizeof(sm->name), "%s", m->name);
		sm->pid = m->pid;
		sm->start_ns = m->start_ns;
		atomic_store_explicit(&sm->used, 1, memory_order_release);
		m->slot = i;
		return 0;
	}
	return -ENOSPC;
}

bool share_state_member(const struct share_state *s, uint32_t slot, struct share_member *ret)
{
	const struct ss_member *sm;

	if (slot >= SHARE_STATE_MAX_MEMBERS || !atomic_load(&(sm = &s->members[slot])->used))
		return false;
	memcpy(ret->name, sm->name, sizeof(ret->name));
	ret->name[sizeof(ret->name) - 1] = '\0';
	ret->pid = sm->pid;
	ret->start_ns = sm->start_ns;
	ret->slot = slot;
	return true;
}

void share_state_member_clear(struct share_state *s, uint32_t slot)
{
	if (slot < SHARE_STATE_MAX_MEMBERS)
		atomic_store_explicit(&s->members[slot].used, 0, memory_order_release);
}
