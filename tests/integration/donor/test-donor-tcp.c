/* SPDX-License-Identifier: MIT */
/*
 * uffd-donor end to end on loopback: a real daemon process, real TCP, the
 * transport-tcp client. Checks data integrity under pipelining, isolation
 * against a hostile client, leases, capacity revocation, and that a killed
 * or frozen donor turns into errors within the timeout rather than a hang.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "../../lib/test-budget.h"
#include "donor-auth.h"
#include "donor-tls.h"
#include "transport.h"
#include "util.h"

static const char *donor_bin;
static char dir[64], key_path[128], ctl_path[128], url[64];
static struct donor_key key;
static pid_t donor_pid;

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &l), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static int tcp_connect_raw(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_port = htons((uint16_t)atoi(strrchr(url, ':') + 1));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void start_donor(unsigned lease)
{
	char cap[] = "96M", lease_s[16];

	snprintf(lease_s, sizeof(lease_s), "%u", lease);
	for (int attempt = 0; attempt < 5; attempt++) {
		snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", free_port());
		donor_pid = fork();
		assert_true(donor_pid >= 0);
		if (donor_pid == 0) {
			execl(donor_bin, donor_bin, "--listen", url, "--capacity", cap, "--key-file", key_path,
			      "--control", ctl_path, "--lease", lease_s, "--revoke-grace", "2", NULL);
			_exit(127);
		}
		for (int i = 0; i < 100; i++) {
			int fd = tcp_connect_raw(), st;
			if (fd >= 0) {
				close(fd);
				return;
			}
			if (waitpid(donor_pid, &st, WNOHANG) == donor_pid)
				break; /* port raced away; try another */
			usleep(20000);
		}
	}
	fail_msg("uffd-donor did not start");
}

static int stop_donor(int sig)
{
	int st = 0;

	if (donor_pid <= 0)
		return -1;
	kill(donor_pid, sig);
	waitpid(donor_pid, &st, 0);
	donor_pid = 0;
	return st;
}

static char *control(const char *req)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static char buf[65536];
	size_t len = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sa.sun_path, ctl_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	assert_int_equal(write(fd, "\n", 1), 1);
	while (len < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		assert_true(n > 0);
		len += (size_t)n;
		if (buf[len - 1] == '\n')
			break;
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

static struct donor_conn *conn(const char *id, unsigned timeout_ms, donor_notify_fn cb, void *opaque)
{
	struct donor_connect_opts o = { .timeout_ms = timeout_ms, .notify_cb = cb, .notify_opaque = opaque };
	struct donor_conn *c = NULL;

	assert_int_equal(donor_connect(url, &key, id, &o, &c), 0);
	assert_non_null(c);
	return c;
}

static void fill(uint8_t *p, uint64_t seed)
{
	for (unsigned i = 0; i < PAGE_SIZE_4K / 8; i++)
		((uint64_t *)p)[i] = seed * 0x9e3779b97f4a7c15ULL + i;
}

/* Waits for n completions, all with want_status. */
static void drain(struct donor_conn *c, unsigned n, int want_status, uint8_t *seen)
{
	struct donor_completion comp[128];

	while (n > 0) {
		int k = donor_poll_completions(c, comp, n < 128 ? n : 128, 5000);
		assert_true(k > 0);
		for (int i = 0; i < k; i++) {
			assert_int_equal(comp[i].status, want_status);
			if (seen) {
				assert_int_equal(seen[comp[i].cookie], 0);
				seen[comp[i].cookie] = 1;
			}
		}
		n -= (unsigned)k;
	}
}

#define NPAGES 6000

static void test_write_read_verify(void **state)
{
	struct donor_conn *c = conn("verify", 5000, NULL, NULL);
	uint8_t *src = malloc((size_t)NPAGES * PAGE_SIZE_4K), *dst = calloc(NPAGES, PAGE_SIZE_4K);
	uint8_t *seen = calloc(NPAGES, 1);
	uint32_t slabs[2];

	assert_non_null(src);
	assert_non_null(dst);
	assert_int_equal(donor_alloc_slab(c, &slabs[0]), 0);
	assert_int_equal(donor_alloc_slab(c, &slabs[1]), 0);
	assert_int_not_equal(slabs[0], slabs[1]);
	for (unsigned i = 0; i < NPAGES; i++)
		fill(src + (size_t)i * PAGE_SIZE_4K, i + 1);
	/* Pipelined: everything submitted before waiting, flushes every 500 pages. */
	for (unsigned i = 0; i < NPAGES; i++) {
		assert_int_equal(donor_submit_write(c, slabs[i % 2], i / 2, src + (size_t)i * PAGE_SIZE_4K, i), 0);
		if (i % 500 == 499)
			assert_int_equal(donor_flush(c), 0);
	}
	assert_int_equal(donor_flush(c), 0);
	drain(c, NPAGES, 0, seen);
	memset(seen, 0, NPAGES);
	/* Read back in a different order than written. */
	for (unsigned k = 0; k < NPAGES; k++) {
		unsigned i = NPAGES - 1 - k;
		assert_int_equal(donor_submit_read(c, slabs[i % 2], i / 2, dst + (size_t)i * PAGE_SIZE_4K, i), 0);
	}
	assert_int_equal(donor_flush(c), 0);
	drain(c, NPAGES, 0, seen);
	assert_memory_equal(src, dst, (size_t)NPAGES * PAGE_SIZE_4K);
	assert_int_equal(donor_ping(c), 0);
	assert_int_equal(donor_free_slab(c, slabs[0]), 0);
	assert_int_equal(donor_free_slab(c, slabs[0]), -ENOENT);
	assert_int_equal(donor_free_slab(c, slabs[1]), 0);
	donor_close(c);
	free(src);
	free(dst);
	free(seen);
}

/*
 * Written pages are sent from the caller's memory, gathered around the
 * batch's headers: runs of one slab (full 64-page frames) interleaved with
 * reads of pages written earlier, so read frames sit between page
 * references in one send. Every byte read back must be the one written.
 */
#define MIX_PAGES 1500
static void test_mixed_gather(void **state)
{
	struct donor_conn *c = conn("mixed", 5000, NULL, NULL);
	uint8_t *src = malloc((size_t)MIX_PAGES * PAGE_SIZE_4K), *dst = calloc(MIX_PAGES, PAGE_SIZE_4K);
	uint8_t *seen = calloc(2 * MIX_PAGES, 1);
	unsigned nreads = 0;
	uint32_t slab;

	(void)state;
	assert_non_null(src);
	assert_non_null(dst);
	assert_non_null(seen);
	assert_int_equal(donor_alloc_slab(c, &slab), 0);
	for (unsigned i = 0; i < MIX_PAGES; i++)
		fill(src + (size_t)i * PAGE_SIZE_4K, 7 * i + 3);
	/* The first half, then the second half with reads of the first half mixed in. */
	for (unsigned i = 0; i < MIX_PAGES / 2; i++)
		assert_int_equal(donor_submit_write(c, slab, i, src + (size_t)i * PAGE_SIZE_4K, i), 0);
	assert_int_equal(donor_flush(c), 0);
	drain(c, MIX_PAGES / 2, 0, seen);
	for (unsigned i = MIX_PAGES / 2; i < MIX_PAGES; i++) {
		assert_int_equal(donor_submit_write(c, slab, i, src + (size_t)i * PAGE_SIZE_4K, i), 0);
		if (i % 7 == 0) {
			unsigned j = i - MIX_PAGES / 2;
			assert_int_equal(donor_submit_read(c, slab, j, dst + (size_t)j * PAGE_SIZE_4K, MIX_PAGES + j), 0);
			nreads++;
		}
		if (i % 300 == 0)
			assert_int_equal(donor_flush(c), 0);
	}
	assert_int_equal(donor_flush(c), 0);
	drain(c, MIX_PAGES - MIX_PAGES / 2 + nreads, 0, seen);
	for (unsigned i = MIX_PAGES / 2; i < MIX_PAGES; i++)
		if (i % 7 == 0) {
			unsigned j = i - MIX_PAGES / 2;
			assert_memory_equal(src + (size_t)j * PAGE_SIZE_4K, dst + (size_t)j * PAGE_SIZE_4K, PAGE_SIZE_4K);
		}
	/* Everything reads back, in one pass. */
	memset(seen, 0, 2 * MIX_PAGES);
	memset(dst, 0, (size_t)MIX_PAGES * PAGE_SIZE_4K);
	for (unsigned i = 0; i < MIX_PAGES; i++)
		assert_int_equal(donor_submit_read(c, slab, i, dst + (size_t)i * PAGE_SIZE_4K, i), 0);
	assert_int_equal(donor_flush(c), 0);
	drain(c, MIX_PAGES, 0, seen);
	assert_memory_equal(src, dst, (size_t)MIX_PAGES * PAGE_SIZE_4K);
	assert_int_equal(donor_free_slab(c, slab), 0);
	donor_close(c);
	free(src);
	free(dst);
	free(seen);
}

/* TLS sessions of raw connections, by fd; NULL for plain ones. */
static struct donor_tls *raw_tls[1024];

/* A raw connection inside TLS, authenticated as id, before any frame. */
static int tls_connect_raw(const char *id)
{
	int fd = tcp_connect_raw();

	assert_true(fd >= 0 && fd < 1024);
	assert_int_equal(donor_tls_new_client(&key, id, &raw_tls[fd]), 0);
	assert_int_equal(donor_tls_sock_handshake(raw_tls[fd], fd, now_ns() + 10000000000ULL), 0);
	return fd;
}

static void raw_close(int fd)
{
	donor_tls_free(raw_tls[fd]);
	raw_tls[fd] = NULL;
	close(fd);
}

/* Sends one raw frame and reads one reply header; returns status (-errno) or -EPIPE on EOF. */
static int raw_call(int fd, struct donor_buf *b, struct donor_hdr *h, uint8_t *payload, size_t max)
{
	uint8_t hdr[DONOR_HDR_LEN];
	size_t got = 0;

	if (raw_tls[fd]) {
		uint64_t dl = now_ns() + 10000000000ULL;
		if (b->len)
			assert_int_equal(donor_tls_sock_send(raw_tls[fd], fd, b->data, b->len, dl), 0);
		b->len = 0;
		if (donor_tls_sock_recv(raw_tls[fd], fd, hdr, sizeof(hdr), dl) < 0)
			return -EPIPE;
		assert_int_equal(donor_hdr_decode(hdr, sizeof(hdr), h), 0);
		assert_true(h->len <= max);
		assert_int_equal(donor_tls_sock_recv(raw_tls[fd], fd, payload, h->len, dl), 0);
		return -(int)h->status;
	}
	if (b->len)
		assert_int_equal(send(fd, b->data, b->len, MSG_NOSIGNAL), (ssize_t)b->len);
	b->len = 0;
	while (got < sizeof(hdr)) {
		ssize_t n = recv(fd, hdr + got, sizeof(hdr) - got, 0);
		if (n <= 0)
			return -EPIPE;
		got += (size_t)n;
	}
	assert_int_equal(donor_hdr_decode(hdr, sizeof(hdr), h), 0);
	assert_true(h->len <= max);
	for (got = 0; got < h->len;) {
		ssize_t n = recv(fd, payload + got, h->len - got, 0);
		assert_true(n > 0);
		got += (size_t)n;
	}
	return -(int)h->status;
}

static bool peer_closed(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	return poll(&p, 1, 3000) == 1 && recv(fd, &c, 1, 0) == 0;
}

static int raw_auth(const char *id)
{
	static uint8_t p[512];
	uint8_t nonce[DONOR_NONCE_LEN];
	struct donor_auth_req a;
	struct donor_buf b;
	struct donor_hdr h;
	int fd = tls_connect_raw(id);

	donor_buf_init(&b);
	assert_int_equal(donor_enc_hello(&b, 1, id), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), 0);
	assert_int_equal(donor_dec_hello_reply(p, h.len, nonce), 0);
	memset(a.client_nonce, 3, sizeof(a.client_nonce));
	donor_auth_client_mac(&key, nonce, a.client_nonce, id, a.mac);
	assert_int_equal(donor_enc_auth(&b, 2, &a), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), 0);
	donor_buf_release(&b);
	return fd;
}

/*
 * The in-flight limit: a caller that never collects can have exactly
 * DONOR_MAX_INFLIGHT requests accepted; the next submit waits the
 * connection's timeout and fails with -EBUSY without harming the
 * connection, and every accepted request completes exactly once (before the
 * shared completion ring, a failed allocation lost completions for good).
 */
static void test_inflight_limit(void **state)
{
	/* Long enough for the donor to answer all of them, on a loaded machine under a sanitizer too. */
	unsigned timeout_ms = 3000 * test_budget_x();
	struct donor_conn *c = conn("limit", timeout_ms, NULL, NULL);
	static uint8_t page[PAGE_SIZE_4K];
	uint8_t *seen = calloc(DONOR_MAX_INFLIGHT, 1);
	uint64_t t0;
	uint32_t slab;

	assert_non_null(seen);
	assert_int_equal(donor_alloc_slab(c, &slab), 0);
	for (unsigned i = 0; i < DONOR_MAX_INFLIGHT; i++)
		assert_int_equal(donor_submit_read(c, slab, i % DONOR_SLAB_SLOTS, page, i), 0);
	t0 = now_ns();
	assert_int_equal(donor_submit_read(c, slab, 0, page, DONOR_MAX_INFLIGHT), -EBUSY);
	assert_true(now_ns() - t0 >= (timeout_ms - 100) * 1000000ULL);
	assert_int_equal(donor_ping(c), 0);
	drain(c, DONOR_MAX_INFLIGHT, 0, seen);
	for (unsigned i = 0; i < DONOR_MAX_INFLIGHT; i++)
		assert_int_equal(seen[i], 1);
	/* Collected: room again. */
	assert_int_equal(donor_submit_read(c, slab, 1, page, 0), 0);
	assert_int_equal(donor_flush(c), 0);
	drain(c, 1, 0, NULL);
	assert_int_equal(donor_free_slab(c, slab), 0);
	donor_close(c);
	free(seen);
}

struct collector {
	struct donor_conn *c;
	uint8_t *seen;
	unsigned want, got, dup;
};

static void *collect(void *arg)
{
	struct collector *k = arg;
	struct donor_completion comp[64];

	while (k->got < k->want) {
		int n = donor_poll_completions(k->c, comp, 64, 5000);
		if (n <= 0)
			break;
		for (int i = 0; i < n; i++) {
			if (comp[i].status != 0 || k->seen[comp[i].cookie]++)
				k->dup++;
			k->got++;
		}
	}
	return NULL;
}

/* Past the limit with a collector thread: submit waits for room, never fails, nothing is lost. */
static void test_inflight_past_limit_with_collector(void **state)
{
	struct collector k = { .c = conn("collected", 5000, NULL, NULL), .want = 3 * DONOR_MAX_INFLIGHT };
	static uint8_t page[PAGE_SIZE_4K];
	pthread_t thr;
	uint32_t slab;

	k.seen = calloc(k.want, 1);
	assert_non_null(k.seen);
	assert_int_equal(donor_alloc_slab(k.c, &slab), 0);
	assert_int_equal(pthread_create(&thr, NULL, collect, &k), 0);
	for (unsigned i = 0; i < k.want; i++)
		assert_int_equal(donor_submit_write(k.c, slab, i % DONOR_SLAB_SLOTS, page, i), 0);
	assert_int_equal(donor_flush(k.c), 0);
	pthread_join(thr, NULL);
	assert_int_equal(k.got, k.want);
	assert_int_equal(k.dup, 0);
	assert_int_equal(donor_free_slab(k.c, slab), 0);
	donor_close(k.c);
	free(k.seen);
}

static void test_hostile_client(void **state)
{
	static uint8_t page[PAGE_SIZE_4K], p[PAGE_SIZE_4K * 2];
	struct donor_conn *good = conn("good", 5000, NULL, NULL), *bad;
	struct donor_key wrong = key;
	struct donor_buf b;
	struct donor_hdr h;
	uint32_t slab, le;
	size_t off;
	int fd;

	donor_buf_init(&b);
	assert_int_equal(donor_alloc_slab(good, &slab), 0);
	fill(page, 42);
	assert_int_equal(donor_submit_write(good, slab, 17, page, 1), 0);
	assert_int_equal(donor_flush(good), 0);
	drain(good, 1, 0, NULL);

	/* Wrong key: refused at connect. */
	wrong.bytes[3] ^= 0x20;
	{
		struct donor_conn *c = NULL;
		assert_int_equal(donor_connect(url, &wrong, "intruder", NULL, &c), -EACCES);
		assert_null(c);
	}
	/* No authentication: one error, then the door closes. */
	fd = tls_connect_raw("noauth");
	assert_int_equal(donor_frame_put(&b, DONOR_OP_ALLOC_SLAB, 0, 1, 0, NULL, 0), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -EACCES);
	assert_true(peer_closed(fd));
	raw_close(fd);
	/* A key holder authenticated in TLS as one id cannot name another: refused, closed. */
	fd = tls_connect_raw("thief");
	assert_int_equal(donor_enc_hello(&b, 1, "good"), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -EACCES);
	assert_true(peer_closed(fd));
	raw_close(fd);
	/* Frames in clear, without TLS: the donor never parses them, it just hangs up. */
	fd = tcp_connect_raw();
	assert_int_equal(donor_frame_put(&b, DONOR_OP_PING, 0, 1, 0, "x", 1), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -EPIPE);
	close(fd);

	/* An authenticated client poking at someone else's slab. */
	bad = conn("bad", 2000, NULL, NULL);
	assert_int_equal(donor_submit_read(bad, slab, 17, p, 7), 0);
	assert_int_equal(donor_submit_write(bad, slab, 17, p, 8), 0);
	assert_int_equal(donor_flush(bad), 0);
	drain(bad, 2, -ENOENT, NULL);
	assert_int_equal(donor_free_slab(bad, slab), -ENOENT);
	assert_int_equal(donor_submit_read(bad, slab, DONOR_SLAB_SLOTS, p, 9), -ERANGE);
	donor_close(bad);

	/* Raw frames the transport would never send. */
	fd = raw_auth("raw");
	assert_int_equal(donor_frame_put(&b, DONOR_OP_ALLOC_SLAB, 0, 3, 0, NULL, 0), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), 0);
	le = donor_get_u32(p);
	assert_int_equal(donor_enc_write_begin(&b, 4, le, &off), 0);
	assert_int_equal(donor_enc_write_add(&b, off, DONOR_SLAB_SLOTS + 5, page), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -ERANGE);
	assert_int_equal(donor_enc_read_begin(&b, 5, &off), 0);
	assert_int_equal(donor_enc_read_add(&b, off, slab, 17), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -ENOENT);
	assert_int_equal(donor_frame_put(&b, DONOR_OP_WRITE_PAGES, 0, 6, 0, "\1\0\0\0\xff\xff\xff\xff", 8), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -EBADMSG);
	assert_int_equal(donor_frame_put(&b, 200, 0, 7, 0, NULL, 0), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -EOPNOTSUPP);
	/* A header announcing a payload over the maximum: error and disconnect. */
	{
		struct donor_hdr big = { .opcode = DONOR_OP_WRITE_PAGES, .req_id = 8, .len = 0x7fffffff };
		uint8_t hb[DONOR_HDR_LEN];
		donor_hdr_encode(&big, hb);
		assert_int_equal(donor_buf_put(&b, hb, sizeof(hb)), 0);
		assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -EMSGSIZE);
		assert_true(peer_closed(fd));
	}
	raw_close(fd);
	/* Pure garbage inside TLS. */
	fd = tls_connect_raw("garbage");
	assert_int_equal(donor_buf_put(&b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27), 0);
	assert_int_equal(raw_call(fd, &b, &h, p, sizeof(p)), -EBADMSG);
	assert_true(peer_closed(fd));
	raw_close(fd);

	/* The good client is still served, its page intact. */
	memset(p, 0, PAGE_SIZE_4K);
	assert_int_equal(donor_submit_read(good, slab, 17, p, 2), 0);
	assert_int_equal(donor_flush(good), 0);
	drain(good, 1, 0, NULL);
	assert_memory_equal(p, page, PAGE_SIZE_4K);
	assert_int_equal(donor_free_slab(good, slab), 0);
	donor_close(good);
	donor_buf_release(&b);
	assert_int_equal(kill(donor_pid, 0), 0);
}

static void test_lease(void **state)
{
	static uint8_t page[PAGE_SIZE_4K], got[PAGE_SIZE_4K];
	struct donor_conn *c = conn("leaser", 5000, NULL, NULL);
	uint32_t slab, ids[8], flags[8];

	assert_int_equal(c->info.nslabs, 0);
	assert_int_equal(c->info.lease_s, 2);
	assert_int_equal(donor_alloc_slab(c, &slab), 0);
	fill(page, 777);
	assert_int_equal(donor_submit_write(c, slab, 4000, page, 1), 0);
	assert_int_equal(donor_flush(c), 0);
	drain(c, 1, 0, NULL);
	donor_close(c);

	c = conn("leaser", 5000, NULL, NULL);
	assert_int_equal(c->info.nslabs, 1);
	assert_int_equal(donor_list_slabs(c, ids, flags, 8), 1);
	assert_int_equal(ids[0], slab);
	assert_int_equal(flags[0], 0);
	assert_int_equal(donor_submit_read(c, slab, 4000, got, 2), 0);
	assert_int_equal(donor_flush(c), 0);
	drain(c, 1, 0, NULL);
	assert_memory_equal(page, got, sizeof(page));
	assert_non_null(strstr(control("{\"cmd\":\"donor.stats\"}"), "\"id\":\"leaser\",\"connected\":true"));
	donor_close(c);

	usleep(3200000); /* lease is 2 s; the donor checks every 100 ms */
	assert_non_null(strstr(control("{\"cmd\":\"donor.stats\"}"), "\"used\":0"));
	c = conn("leaser", 5000, NULL, NULL);
	assert_int_equal(c->info.nslabs, 0);
	assert_int_equal(donor_list_slabs(c, ids, flags, 8), 0);
	donor_close(c);
}

struct notes {
	pthread_mutex_t lock;
	int revoked, shutdown;
	uint32_t slabs[8], nslabs, deadline_ms;
};

static void on_notify(struct donor_conn *c, const struct donor_notification *n, void *opaque)
{
	struct notes *no = opaque;

	pthread_mutex_lock(&no->lock);
	if (n->kind == DONOR_NOTIFY_REVOKED) {
		no->revoked++;
		no->nslabs = n->nslabs;
		no->deadline_ms = n->deadline_ms;
		for (uint32_t i = 0; i < n->nslabs && i < 8; i++)
			no->slabs[i] = n->slabs[i];
	} else if (n->kind == DONOR_NOTIFY_SHUTDOWN) {
		no->shutdown++;
	}
	pthread_mutex_unlock(&no->lock);
}

static int wait_count(struct notes *no, int *field, int ms)
{
	int v = 0;

	for (int i = 0; i < ms / 10; i++) {
		pthread_mutex_lock(&no->lock);
		v = *field;
		pthread_mutex_unlock(&no->lock);
		if (v)
			break;
		usleep(10000);
	}
	return v;
}

static void test_set_capacity(void **state)
{
	struct notes no = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct donor_conn *c = conn("shrinkme", 5000, on_notify, &no);
	static uint8_t page[PAGE_SIZE_4K];
	uint32_t a, b, ids[8], flags[8];
	char *rep;

	assert_int_equal(donor_alloc_slab(c, &a), 0);
	assert_int_equal(donor_alloc_slab(c, &b), 0);
	rep = control("{\"cmd\":\"donor.set-capacity\",\"args\":{\"capacity\":\"16M\"}}");
	assert_non_null(strstr(rep, "\"ok\":true"));
	assert_int_equal(wait_count(&no, &no.revoked, 3000 * test_budget_x()), 1);
	assert_int_equal(no.nslabs, 1);
	assert_int_equal(no.slabs[0], b);
	assert_int_equal(no.deadline_ms, 2000);
	/* The revoked slab is flagged, refuses writes, and can be given back at once. */
	assert_int_equal(donor_list_slabs(c, ids, flags, 8), 2);
	assert_int_equal(flags[ids[0] == b ? 0 : 1], DONOR_SLAB_F_REVOKED);
	assert_int_equal(donor_submit_write(c, b, 0, page, 5), 0);
	assert_int_equal(donor_flush(c), 0);
	drain(c, 1, -EROFS, NULL);
	assert_int_equal(donor_free_slab(c, b), 0);
	assert_non_null(strstr(control("{\"cmd\":\"donor.stats\"}"), "\"used\":16777216"));
	assert_int_equal(donor_alloc_slab(c, &b), -ENOSPC);
	rep = control("{\"cmd\":\"donor.set-capacity\",\"args\":{\"capacity\":\"96M\"}}");
	assert_non_null(strstr(rep, "\"ok\":true"));
	/* The control protocol's error shape, as on the pager's socket. */
	rep = control("{\"cmd\":\"donor.set-capacity\",\"args\":{}}");
	assert_non_null(strstr(rep, "args.capacity"));
	assert_non_null(strstr(rep, "\"ok\":false,\"error\":{\"code\":\"EINVAL\""));
	assert_int_equal(donor_free_slab(c, a), 0);
	donor_close(c);
}

/* Outstanding requests on a frozen, then a killed donor all fail in time. */
static void test_dead_donor(void **state)
{
	struct notes no = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct donor_conn *c = conn("victim", 800, on_notify, &no);
	static uint8_t pages[64][PAGE_SIZE_4K];
	uint64_t t0;
	uint32_t slab;

	assert_int_equal(donor_alloc_slab(c, &slab), 0);
	kill(donor_pid, SIGSTOP);
	t0 = now_ns();
	for (unsigned i = 0; i < 64; i++)
		assert_int_equal(donor_submit_read(c, slab, i, pages[i], i), 0);
	assert_int_equal(donor_flush(c), 0);
	drain(c, 64, -ETIMEDOUT, NULL);
	assert_true(now_ns() - t0 < 3000000000ULL * test_budget_x());
	assert_int_equal(donor_ping(c), -ETIMEDOUT);

	kill(donor_pid, SIGCONT);
	for (unsigned i = 0; i < 64; i++)
		assert_int_equal(donor_submit_write(c, slab, i, pages[i], i), 0);
	stop_donor(SIGKILL);
	t0 = now_ns();
	/* The batch may or may not leave before the kill is noticed; either way all 64 fail. */
	{
		int r = donor_flush(c), failed = 0;
		struct donor_completion comp[64];
		while (failed < 64) {
			int k = donor_poll_completions(c, comp, 64, 2000);
			if (k <= 0)
				break;
			for (int i = 0; i < k; i++) {
				/* Writes that reached the donor before the kill may have succeeded. */
				assert_true(comp[i].status == 0 || comp[i].status == -ECONNRESET ||
					    comp[i].status == -EPIPE || comp[i].status == -ETIMEDOUT);
				failed++;
			}
		}
		assert_int_equal(failed, 64);
		assert_true(r == 0 || r < 0);
	}
	assert_true(now_ns() - t0 < 3000000000ULL * test_budget_x());
	assert_true(wait_count(&no, &no.shutdown, 3000 * test_budget_x()) >= 1);
	assert_int_equal(donor_submit_read(c, slab, 0, pages[0], 1), -ENOTCONN);
	assert_int_equal(donor_alloc_slab(c, &slab), -ENOTCONN);
	donor_close(c);
	start_donor(2);
}

static void test_sigterm(void **state)
{
	struct notes no = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct donor_conn *c = conn("bye", 2000, on_notify, &no);
	int st;

	st = stop_donor(SIGTERM);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_true(wait_count(&no, &no.shutdown, 3000 * test_budget_x()) >= 1);
	assert_int_equal(access(ctl_path, F_OK), -1);
	donor_close(c);
}

static int setup(void **state)
{
	char k[48];
	int fd;

	snprintf(dir, sizeof(dir), "/tmp/donor-it-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(key_path, sizeof(key_path), "%s/key", dir);
	snprintf(ctl_path, sizeof(ctl_path), "%s/ctl.sock", dir);
	for (unsigned i = 0; i < 40; i++)
		k[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[(unsigned)rand() % 36];
	fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, k, 40) != 40)
		return -1;
	close(fd);
	if (donor_key_load(key_path, &key) < 0)
		return -1;
	start_donor(2);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	stop_donor(SIGKILL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_read_verify), cmocka_unit_test(test_mixed_gather),
		cmocka_unit_test(test_inflight_limit), cmocka_unit_test(test_inflight_past_limit_with_collector),
		cmocka_unit_test(test_hostile_client),
		cmocka_unit_test(test_lease),		  cmocka_unit_test(test_set_capacity),
		cmocka_unit_test(test_dead_donor),	  cmocka_unit_test(test_sigterm),
	};

	if (argc < 2) {
		fprintf(stderr, "usage: %s PATH-TO-uffd-donor\n", argv[0]);
		return 2;
	}
	donor_bin = argv[1];
	srand((unsigned)getpid());
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
