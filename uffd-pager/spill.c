/* SPDX-License-Identifier: MIT */
/*
 * Spill file: slot allocator and io_uring I/O for one VM's evicted pages,
 * and the start-up removal of files that pagers killed before they could
 * delete them (guest data must not outlive its VM on disk).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spill.h"
#include "util.h"

#define SPILL_RING_DEPTH 256
/*
 * Layout: groups of 256 page slots followed by one tag page holding the
 * 16-byte tags of those 256 slots (sealed pages; a hole otherwise). A
 * slot's page and its tag are thus in the file together, the file stays
 * as small as the slots used (+1/256), and page I/O stays 4 KiB-aligned
 * for O_DIRECT. Tags go through a second, buffered descriptor, since
 * O_DIRECT cannot write 16 bytes; no page I/O ever touches a tag page.
 */
#define SPILL_GROUP 256u
#define SPILL_TAG_LEN 16u

static uint64_t slot_off(uint32_t slot)
{
	return ((uint64_t)(slot / SPILL_GROUP) * (SPILL_GROUP + 1) + slot % SPILL_GROUP) * PAGE_SIZE_4K;
}

static uint64_t tag_off(uint32_t slot)
{
	return ((uint64_t)(slot / SPILL_GROUP) * (SPILL_GROUP + 1) + SPILL_GROUP) * PAGE_SIZE_4K +
	       (uint64_t)(slot % SPILL_GROUP) * SPILL_TAG_LEN;
}

struct spill {
	int fd;
	int tag_fd; /* the same file, buffered: tags of sealed pages */
	bool direct;
	char path[512];
	struct io_uring write_ring; /* evictor */
	struct io_uring read_ring;  /* fault thread */
	pthread_mutex_t lock;       /* guards the allocator */
	uint64_t *bitmap;           /* 1 = slot in use */
	uint64_t bitmap_words;      /* allocated words */
	uint64_t max_slots;
	uint64_t used;
	uint64_t hint;              /* first word that may have a free bit */
};

int spill_new(const char *dir, const char *name, uint64_t max_slots, bool adopt, struct spill **ret)
{
	struct spill *s;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fd = s->tag_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	if (!max_slots || max_slots > UINT32_MAX - 1)
		max_slots = UINT32_MAX - 1;
	s->max_slots = max_slots;
	if ((size_t)snprintf(s->path, sizeof(s->path), "%s/%s.spill", dir, name) >= sizeof(s->path)) {
		r = -ENAMETOOLONG;
		goto fail;
	}
	/* A new VM's file of the same name is stale; an adopted VM's holds its pages. */
	int mode = adopt ? O_RDWR : O_RDWR | O_CREAT | O_EXCL;
	if (!adopt)
		unlink(s->path);
	s->fd = open(s->path, mode | O_CLOEXEC | O_NOFOLLOW | O_DIRECT, 0600);
	if (s->fd >= 0) {
		s->direct = true;
	} else if (errno == EINVAL) {
		/* Filesystem without O_DIRECT: buffered I/O is still correct. */
		s->fd = open(s->path, mode | O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	if (s->fd < 0) {
		r = -errno;
		goto fail;
	}
	s->tag_fd = open(s->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (s->tag_fd < 0) {
		r = -errno;
		goto fail_unlink;
	}
	r = io_uring_queue_init(SPILL_RING_DEPTH, &s->write_ring, 0);
	if (r < 0)
		goto fail_unlink;
	r = io_uring_queue_init(8, &s->read_ring, 0);
	if (r < 0) {
		io_uring_queue_exit(&s->write_ring);
		goto fail_unlink;
	}
	*ret = s;
	return 0;

fail_unlink:
	if (!adopt)
		unlink(s->path);
fail:
	if (s->fd >= 0)
		close(s->fd);
	if (s->tag_fd >= 0)
		close(s->tag_fd);
	pthread_mutex_destroy(&s->lock);
	free(s);
	return r;
}

void spill_free(struct spill *s, bool keep_file)
{
	if (!s)
		return;
	io_uring_queue_exit(&s->write_ring);
	io_uring_queue_exit(&s->read_ring);
	close(s->fd);
	close(s->tag_fd);
	if (!keep_file && unlink(s->path) < 0)
		log_warn("cannot delete spill file %s: %s", s->path, strerror(errno));
	pthread_mutex_destroy(&s->lock);
	free(s->bitmap);
	free(s);
}

const char *spill_path(const struct spill *s) { return s->path; }
bool spill_is_direct(const struct spill *s) { return s->direct; }

uint32_t spill_alloc_slot(struct spill *s)
{
	uint32_t slot = SPILL_NO_SLOT;

	pthread_mutex_lock(&s->lock);
	if (s->used >= s->max_slots)
		goto out;
	for (uint64_t w = s->hint; w < s->bitmap_words; w++) {
		if (s->bitmap[w] != UINT64_MAX) {
			unsigned bit = (unsigned)__builtin_ctzll(~s->bitmap[w]);
			uint64_t cand = w * 64 + bit;
			if (cand >= s->max_slots)
				goto out;
			s->bitmap[w] |= 1ULL << bit;
			s->hint = w;
			slot = (uint32_t)cand;
			s->used++;
			goto out;
		}
	}
	/* Grow the bitmap geometrically; the file grows by itself on write. */
	{
		uint64_t words = s->bitmap_words ? s->bitmap_words * 2 : 64;
		uint64_t *nb = realloc(s->bitmap, words * sizeof(uint64_t));
		if (!nb)
			goto out;
		memset(nb + s->bitmap_words, 0, (words - s->bitmap_words) * sizeof(uint64_t));
		slot = (uint32_t)(s->bitmap_words * 64);
		if (slot >= s->max_slots) {
			s->bitmap = nb;
			s->bitmap_words = words;
			slot = SPILL_NO_SLOT;
			goto out;
		}
		nb[s->bitmap_words] |= 1;
		s->hint = s->bitmap_words;
		s->bitmap = nb;
		s->bitmap_words = words;
		s->used++;
	}
out:
	pthread_mutex_unlock(&s->lock);
	return slot;
}

int spill_mark_used(struct spill *s, uint32_t slot)
{
	uint64_t w = slot / 64;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (w >= s->bitmap_words) {
		uint64_t words = s->bitmap_words ? s->bitmap_words : 64;
		while (words <= w)
			words *= 2;
		uint64_t *nb = realloc(s->bitmap, words * sizeof(uint64_t));
		if (!nb) {
			r = -ENOMEM;
			goto out;
		}
		memset(nb + s->bitmap_words, 0, (words - s->bitmap_words) * sizeof(uint64_t));
		s->bitmap = nb;
		s->bitmap_words = words;
	}
	if (!(s->bitmap[w] & (1ULL << (slot % 64)))) {
		s->bitmap[w] |= 1ULL << (slot % 64);
		s->used++;
	}
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

void spill_free_slot(struct spill *s, uint32_t slot)
{
	uint64_t w = slot / 64;

	pthread_mutex_lock(&s->lock);
	if (w < s->bitmap_words && (s->bitmap[w] & (1ULL << (slot % 64)))) {
		s->bitmap[w] &= ~(1ULL << (slot % 64));
		s->used--;
		if (w < s->hint)
			s->hint = w;
	} else {
		log_err("spill %s: double free of slot %u", s->path, slot);
	}
	pthread_mutex_unlock(&s->lock);
}

uint64_t spill_used_slots(struct spill *s)
{
	uint64_t u;

	pthread_mutex_lock(&s->lock);
	u = s->used;
	pthread_mutex_unlock(&s->lock);
	return u;
}

void spill_set_max_slots(struct spill *s, uint64_t max_slots)
{
	pthread_mutex_lock(&s->lock);
	s->max_slots = max_slots && max_slots < UINT32_MAX - 1 ? max_slots : UINT32_MAX - 1;
	pthread_mutex_unlock(&s->lock);
}

int spill_write_batch(struct spill *s, const uint32_t *slots, void *const *bufs, int *results, unsigned n)
{
	unsigned submitted = 0, done = 0;
	int first_err = 0;

	while (done < n) {
		while (submitted < n) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&s->write_ring);
			if (!sqe)
				break;
			io_uring_prep_write(sqe, s->fd, bufs[submitted], PAGE_SIZE_4K,
					    slot_off(slots[submitted]));
			io_uring_sqe_set_data64(sqe, submitted);
			submitted++;
		}
		int r = io_uring_submit_and_wait(&s->write_ring, 1);
		if (r < 0 && r != -EINTR) {
			/* Could not even submit: fail what is not yet complete. */
			for (unsigned i = done; i < n; i++)
				results[i] = r;
			return r;
		}
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&s->write_ring, head, cqe) {
			uint64_t i = io_uring_cqe_get_data64(cqe);
			int res = cqe->res == (int)PAGE_SIZE_4K ? 0 : (cqe->res < 0 ? cqe->res : -EIO);
			results[i] = res;
			if (res && !first_err)
				first_err = res;
			seen++;
		}
		io_uring_cq_advance(&s->write_ring, seen);
		done += seen;
	}
	return first_err;
}

int spill_read_submit(struct spill *s, uint32_t slot, void *buf)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->read_ring);
	int r;

	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, s->fd, buf, PAGE_SIZE_4K, slot_off(slot));
	r = io_uring_submit(&s->read_ring);
	return r < 0 ? r : 0;
}

int spill_read_wait(struct spill *s)
{
	struct io_uring_cqe *cqe;
	int r;

	do
		r = io_uring_wait_cqe(&s->read_ring, &cqe);
	while (r == -EINTR);
	if (r < 0)
		return r;
	r = cqe->res == (int)PAGE_SIZE_4K ? 0 : (cqe->res < 0 ? cqe->res : -EIO);
	io_uring_cqe_seen(&s->read_ring, cqe);
	return r;
}

int spill_read(struct spill *s, uint32_t slot, void *buf)
{
	int r = spill_read_submit(s, slot, buf);

	return r < 0 ? r : spill_read_wait(s);
}

int spill_pwrite(struct spill *s, uint32_t slot, const void *buf)
{
	ssize_t n = pwrite(s->fd, buf, PAGE_SIZE_4K, (off_t)slot_off(slot));

	return n == (ssize_t)PAGE_SIZE_4K ? 0 : n < 0 ? -errno : -EIO;
}

int spill_pread(struct spill *s, uint32_t slot, void *buf)
{
	ssize_t n = pread(s->fd, buf, PAGE_SIZE_4K, (off_t)slot_off(slot));

	return n == (ssize_t)PAGE_SIZE_4K ? 0 : n < 0 ? -errno : -EIO;
}

int spill_write_tag(struct spill *s, uint32_t slot, const void *tag)
{
	ssize_t n;

	n = pwrite(s->tag_fd, tag, SPILL_TAG_LEN, (off_t)tag_off(slot));
	return n == (ssize_t)SPILL_TAG_LEN ? 0 : n < 0 ? -errno : -EIO;
}

int spill_read_tag(struct spill *s, uint32_t slot, void *tag)
{
	ssize_t n;

	n = pread(s->tag_fd, tag, SPILL_TAG_LEN, (off_t)tag_off(slot));
	return n == (ssize_t)SPILL_TAG_LEN ? 0 : n < 0 ? -errno : -EIO;
}
