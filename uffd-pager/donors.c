/* SPDX-License-Identifier: MIT */
/* The pager's donor connections, their health and page I/O completion (see donors.h). */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "donor-auth.h"
#include "donors.h"
#include "events.h"
#include "log.h"
#include "revoked.h"
#include "transport.h"
#include "util.h"

#define HEALTH_PERIOD_MS 300
#define FULL_BACKOFF_NS (1000ULL * 1000 * 1000)
/* Reconnection attempts to a donor that is down: from 1 s, doubling, at most every 30 s. */
#define RECONNECT_MIN_NS (1000ULL * 1000 * 1000)
#define RECONNECT_MAX_NS (30ULL * 1000 * 1000 * 1000)

struct pdonor {
	struct donor_pool *pool;
	unsigned idx;
	char url[POLICY_URL_MAX];
	struct donor_conn *conn;
	_Atomic int state;
	_Atomic int64_t pages;
	_Atomic uint64_t capacity, used; /* from the donor's STATS; capacity 0 = unknown */
	_Atomic uint64_t full_until;     /* ALLOC_SLAB said ENOSPC: don't ask again before this */
	_Atomic uint64_t failures, inflight;
	_Atomic bool stop;
	pthread_t completer;
	bool completer_started;
	/* Health thread only: reconnecting while down (see reconnect()). */
	bool no_retry;	      /* replaced by a newer entry, or reconnecting was given up */
	bool retry_logged;    /* the failure of the first attempt was logged */
	uint64_t retry_at, retry_ns;
	pthread_mutex_t rlock; /* revoked slab ids */
	struct revoked_set revoked;
};

struct donor_pool {
	pthread_mutex_t lock; /* adding donors */
	struct pdonor *d[POOL_MAX_DONORS];
	_Atomic unsigned n;
	struct donor_key key;
	char client_id[65];
	unsigned timeout_ms;
	_Atomic unsigned gen;
	_Atomic bool stopping;
	pthread_t health;
	bool health_started;
};

/*
 * A host without a machine-id (minimal images): a random id, kept in the
 * state dir (root-only) so that it is stable across pager restarts.
 * Returns 0 or -errno.
 */
static int state_dir_client_id(const char *state_dir, char *out, size_t len)
{
	char path[512], buf[DONOR_CLIENT_ID_MAX + 2];
	uint8_t rnd[8];
	ssize_t n;
	int fd, r;

	snprintf(path, sizeof(path), "%s/client-id", state_dir);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
			n--;
		if (n > 0 && donor_client_id_valid(buf, (size_t)n)) {
			buf[n] = '\0';
			snprintf(out, len, "%s", buf);
			return 0;
		}
		log_err("%s: not a client id (1..64 characters of A-Z a-z 0-9 . _ : @ -)", path);
		return -EINVAL;
	}
	r = donor_random(rnd, sizeof(rnd));
	if (r < 0)
		return r;
	snprintf(buf, sizeof(buf), "uffd-pager-%02x%02x%02x%02x%02x%02x%02x%02x\n", rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5], rnd[6], rnd[7]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf)) {
		r = -errno;
		if (fd >= 0)
			close(fd);
		return log_err_errno(r, "%s: cannot write the generated client id", path);
	}
	close(fd);
	buf[strlen(buf) - 1] = '\0';
	snprintf(out, len, "%s", buf);
	log_info("no /etc/machine-id: generated client id %s (kept in %s)", out, path);
	return 0;
}

/*
 * The default client id: "uffd-pager-" and 16 hex digits of
 * SHA-256("uffdvm client id\n" || machine-id). Unique per host, so two
 * hosts with default settings never share slabs on a donor, stable across
 * pager restarts (the lease finds the slabs again), and not the raw
 * machine-id, which some software treats as confidential. Without a
 * machine-id, a random id kept in the state dir. Returns 0 or -errno.
 */
static int machine_client_id(const char *state_dir, char *out, size_t len)
{
	static const char *const files[] = { "/etc/machine-id", "/var/lib/dbus/machine-id" };
	static const char label[] = "uffdvm client id\n";
	uint8_t md[EVP_MAX_MD_SIZE], in[sizeof(label) - 1 + 64];
	unsigned mdlen = 0;
	ssize_t n = -1;

	for (unsigned i = 0; i < ARRAY_SIZE(files) && n <= 0; i++) {
		int fd = open(files[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, in + sizeof(label) - 1, 64);
		close(fd);
	}
	while (n > 0 && (in[sizeof(label) - 1 + n - 1] == '\n' || in[sizeof(label) - 1 + n - 1] == ' '))
		n--;
	if (n < 16)
		return state_dir_client_id(state_dir, out, len);
	memcpy(in, label, sizeof(label) - 1);
	if (!EVP_Digest(in, sizeof(label) - 1 + (size_t)n, md, &mdlen, EVP_sha256(), NULL) || mdlen < 8)
		return -EIO;
	snprintf(out, len, "uffd-pager-%02x%02x%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4], md[5],
		 md[6], md[7]);
	return 0;
}

static const char *const state_names[] = { "up", "draining", "removing", "down", "gone" };

static bool conn_error(int err)
{
	return err == -ETIMEDOUT || err == -ECONNRESET || err == -ENOTCONN || err == -ECANCELED || err == -EPIPE ||
	       err == -EPROTO || err == -ECONNREFUSED || err == -EBADMSG;
}

static void mark_down(struct pdonor *d, int err, const char *what)
{
	int st = atomic_load(&d->state);

	while (st != PD_DOWN && st != PD_GONE) {
		if (atomic_compare_exchange_weak(&d->state, &st, PD_DOWN)) {
			atomic_fetch_add(&d->failures, 1);
			atomic_fetch_add(&d->pool->gen, 1);
			log_warn("donor %s is down (%s: %s): its %lld pages are re-created from other copies",
				 d->url, what, strerror(-err), (long long)atomic_load(&d->pages));
			events_emit("donor.down", json_pack("{s:s, s:s, s:s, s:I}", "donor", d->url, "reason", what,
							    "error", strerror(-err), "pages",
							    (json_int_t)atomic_load(&d->pages)));
			return;
		}
	}
}

void donor_pool_note_failure(struct donor_pool *p, unsigned idx, int err, const char *what)
{
	if (idx < atomic_load(&p->n) && conn_error(err))
		mark_down(p->d[idx], err, what);
}

/* Finishes one pool_op: from the transport's own thread (complete_cb) or from the completer. */
static void complete_one(struct pdonor *d, const struct donor_completion *c)
{
	struct pool_op *op = (struct pool_op *)(uintptr_t)c->cookie;
	struct pool_wait *w = op->w;

	op->status = c->status;
	if (c->status < 0 && conn_error(c->status))
		mark_down(d, c->status, c->op == DONOR_COMP_WRITE ? "write" : "read");
	atomic_fetch_sub(&d->inflight, 1);
	pthread_mutex_lock(&w->lock);
	if (__atomic_sub_fetch(&w->pending, 1, __ATOMIC_RELEASE) == 0) {
		pthread_cond_broadcast(&w->cond);
		if (w->efd >= 0) {
			uint64_t one = 1;
			if (write(w->efd, &one, sizeof(one)) < 0)
				log_debug("pool wait eventfd: %m"); /* counter full: it is readable anyway */
		}
	}
	pthread_mutex_unlock(&w->lock);
}

static void complete_cb(struct donor_conn *conn, const struct donor_completion *c, void *opaque)
{
	(void)conn;
	complete_one(opaque, c);
}

/*
 * Backends that call complete_cb leave this thread only the stragglers
 * (failed sends) and the detection of a broken idle connection.
 */
static void *completer_main(void *arg)
{
	struct pdonor *d = arg;
	struct donor_completion out[64];

	pthread_setname_np(pthread_self(), "pager-complete");

	while (!atomic_load(&d->stop)) {
		int n = donor_poll_completions(d->conn, out, 64, 100);
		if (n < 0) {
			if (conn_error(n))
				mark_down(d, n, "connection");
			usleep(20000); /* broken and idle: nothing more will come */
			continue;
		}
		for (int i = 0; i < n; i++)
			complete_one(d, &out[i]);
	}
	return NULL;
}

static void notify_cb(struct donor_conn *conn, const struct donor_notification *n, void *opaque)
{
	struct pdonor *d = opaque;
	int st;

	switch (n->kind) {
	case DONOR_NOTIFY_REVOKED:
		pthread_mutex_lock(&d->rlock);
		if (revoked_set_add(&d->revoked, n->slabs, n->nslabs, n->deadline_ms, now_ns()) < 0)
			log_warn("donor %s: cannot keep track of %u revoked slabs", d->url, n->nslabs);
		pthread_mutex_unlock(&d->rlock);
		log_warn("donor %s revoked %u slabs: moving their pages within %u ms", d->url, n->nslabs,
			 n->deadline_ms);
		atomic_fetch_add(&d->pool->gen, 1);
		break;
	case DONOR_NOTIFY_SHUTDOWN:
		st = PD_UP;
		if (atomic_compare_exchange_strong(&d->state, &st, PD_DRAINING))
			log_warn("donor %s is shutting down or disconnected: moving its pages elsewhere", d->url);
		atomic_fetch_add(&d->pool->gen, 1);
		break;
	default:
		log_warn("donor %s: unknown notification %d", d->url, (int)n->kind);
		break;
	}
}

static void refresh(struct pdonor *d)
{
	uint64_t cap, used;
	int st = atomic_load(&d->state), r;

	if (st == PD_DOWN || st == PD_GONE)
		return;
	r = donor_ping(d->conn);
	if (r < 0) {
		if (conn_error(r))
			mark_down(d, r, "health check");
		return;
	}
	if (donor_stats(d->conn, &cap, &used) == 0) {
		atomic_store(&d->capacity, cap);
		atomic_store(&d->used, used);
	}
	if (st == PD_REMOVING && atomic_load(&d->pages) == 0 && atomic_load(&d->inflight) == 0) {
		atomic_store(&d->state, PD_GONE);
		atomic_store(&d->stop, true);
		pthread_join(d->completer, NULL);
		d->completer_started = false;
		donor_close(d->conn);
		d->conn = NULL;
		log_info("donor %s removed (drained)", d->url);
	}
}

static int add_donor(struct donor_pool *p, const char *url, bool fresh, char *err, size_t errlen);
static void free_stale_slabs(struct pdonor *d);

/*
 * Brings a donor that went down back (health thread). The connection comes
 * back as a new pool entry and the old one is retired (gone): every copy
 * the store had on the old entry is already counted lost, and a slab id of
 * the old connection can never be mistaken for one of the new. Attempts
 * back off from 1 s to 30 s; the log has one line per change of state,
 * not per attempt.
 */
static void reconnect(struct donor_pool *p, struct pdonor *d)
{
	uint64_t now = now_ns();
	char err[256];
	int r;

	if (d->no_retry || atomic_load(&d->state) != PD_DOWN || now < d->retry_at)
		return;
	r = add_donor(p, d->url, false, err, sizeof(err));
	if (r >= 0) {
		d->no_retry = true;
		atomic_store(&d->state, PD_GONE);
		atomic_fetch_add(&p->gen, 1);
		log_info("donor %s is back: reconnected (as entry %d)", d->url, r);
		return;
	}
	if (r == -EEXIST || r == -ENOSPC) {
		/* An operator added it again, or no entry is left: stop trying. */
		d->no_retry = true;
		log_warn("donor %s: no longer reconnecting: %s", d->url, err);
		return;
	}
	if (!d->retry_logged) {
		log_warn("donor %s: reconnecting failed (%s); retrying in the background", d->url, err);
		d->retry_logged = true;
	}
	d->retry_ns = d->retry_ns ? d->retry_ns * 2 : RECONNECT_MIN_NS;
	if (d->retry_ns > RECONNECT_MAX_NS)
		d->retry_ns = RECONNECT_MAX_NS;
	d->retry_at = now + d->retry_ns;
}

static void *health_main(void *arg)
{
	struct donor_pool *p = arg;

	pthread_setname_np(pthread_self(), "pager-health");

	while (!atomic_load(&p->stopping)) {
		unsigned n = atomic_load(&p->n);
		for (unsigned i = 0; i < n && !atomic_load(&p->stopping); i++)
			refresh(p->d[i]);
		for (unsigned i = 0; i < n && !atomic_load(&p->stopping); i++)
			reconnect(p, p->d[i]);
		for (int t = 0; t < HEALTH_PERIOD_MS / 50 && !atomic_load(&p->stopping); t++)
			usleep(50000);
	}
	return NULL;
}

int donor_pool_new(const struct policy_pager_config *cfg, struct donor_pool **ret)
{
	struct donor_pool *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	if (cfg->client_id[0]) {
		snprintf(p->client_id, sizeof(p->client_id), "%s", cfg->client_id);
	} else {
		r = machine_client_id(cfg->state_dir, p->client_id, sizeof(p->client_id));
		/* Without donors the id is not needed yet; donor_pool_add refuses to run without one. */
		if (r < 0 && cfg->n_donors > 0) {
			donor_pool_free(p);
			return r;
		}
		if (r < 0)
			p->client_id[0] = '\0';
	}
	p->timeout_ms = cfg->donor_timeout_ms ? cfg->donor_timeout_ms : 2000;
	if (cfg->donor_key_file[0]) {
		r = donor_key_load(cfg->donor_key_file, &p->key);
		if (r < 0) {
			log_err("donor_key_file %s: %s", cfg->donor_key_file, strerror(-r));
			donor_pool_free(p);
			return r;
		}
	}
	for (unsigned i = 0; i < cfg->n_donors; i++) {
		char err[256];
		r = donor_pool_add(p, cfg->donors[i], err, sizeof(err));
		/* A donor down at start is not fatal: it is listed as down and the others serve. */
		if (r < 0)
			log_warn("donor %s: %s", cfg->donors[i], err);
	}
	r = -pthread_create(&p->health, NULL, health_main, p);
	if (r < 0) {
		donor_pool_free(p);
		return r;
	}
	p->health_started = true;
	*ret = p;
	return 0;
}

void donor_pool_free(struct donor_pool *p)
{
	if (!p)
		return;
	atomic_store(&p->stopping, true);
	if (p->health_started)
		pthread_join(p->health, NULL);
	for (unsigned i = 0; i < atomic_load(&p->n); i++) {
		struct pdonor *d = p->d[i];
		atomic_store(&d->stop, true);
		if (d->completer_started)
			pthread_join(d->completer, NULL);
		donor_close(d->conn);
		pthread_mutex_destroy(&d->rlock);
		revoked_set_clear(&d->revoked);
		free(d);
	}
	explicit_bzero(&p->key, sizeof(p->key));
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int donor_pool_add(struct donor_pool *p, const char *url, char *err, size_t errlen)
{
	return add_donor(p, url, true, err, errlen);
}

/* For all the donor_pool_add(); fresh = false: a reconnection, which adds no entry when it fails. */
static int add_donor(struct donor_pool *p, const char *url, bool fresh, char *err, size_t errlen)
{
	struct donor_connect_opts opts = { .timeout_ms = p->timeout_ms, .notify_cb = notify_cb,
					   .complete_cb = complete_cb };
	struct pdonor *d;
	unsigned n;
	int r;

	if (!p->client_id[0]) {
		snprintf(err, errlen, "no client id (no /etc/machine-id, state dir not writable): set \"client_id\"");
		return -EINVAL;
	}
	if (!policy_donor_url_valid(url)) {
		snprintf(err, errlen, "\"%s\" is not a donor URL (allowed: tcp://HOST:PORT, rdma://HOST:PORT)", url);
		return -EINVAL;
	}
	pthread_mutex_lock(&p->lock);
	n = atomic_load(&p->n);
	for (unsigned i = 0; i < n; i++) {
		int st = atomic_load(&p->d[i]->state);
		if (strcmp(p->d[i]->url, url) == 0 && st != PD_GONE && st != PD_DOWN) {
			pthread_mutex_unlock(&p->lock);
			snprintf(err, errlen, "donor %s is already in use (%s)", url, state_names[st]);
			return -EEXIST;
		}
	}
	if (n >= POOL_MAX_DONORS) {
		pthread_mutex_unlock(&p->lock);
		snprintf(err, errlen, "at most %d donors per pager life (indexes are never reused)", POOL_MAX_DONORS);
		return -ENOSPC;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		pthread_mutex_unlock(&p->lock);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	d->pool = p;
	d->idx = n;
	snprintf(d->url, sizeof(d->url), "%s", url);
	pthread_mutex_init(&d->rlock, NULL);
	opts.notify_opaque = d;
	opts.complete_opaque = d;
	r = donor_connect(url, &p->key, p->client_id, &opts, &d->conn);
	if (r < 0 && !fresh) {
		snprintf(err, errlen, "cannot connect: %s", r == -EACCES ? "key refused" : strerror(-r));
		pthread_mutex_unlock(&p->lock);
		pthread_mutex_destroy(&d->rlock);
		free(d);
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen, "cannot connect: %s", r == -EACCES ? "key refused" : strerror(-r));
		/* Listed as down so operators see it; never used. */
		atomic_store(&d->state, PD_DOWN);
		atomic_store(&d->failures, 1);
		events_emit("donor.down", json_pack("{s:s, s:s, s:s, s:i}", "donor", url, "reason", "connect",
						    "error", r == -EACCES ? "key refused" : strerror(-r), "pages", 0));
	} else {
		r = -pthread_create(&d->completer, NULL, completer_main, d);
		if (r < 0) {
			donor_close(d->conn);
			d->conn = NULL;
			atomic_store(&d->state, PD_DOWN);
			snprintf(err, errlen, "cannot start its thread: %s", strerror(-r));
		} else {
			d->completer_started = true;
			uint64_t cap, used;
			if (!fresh)
				free_stale_slabs(d);
			if (donor_stats(d->conn, &cap, &used) == 0) {
				atomic_store(&d->capacity, cap);
				atomic_store(&d->used, used);
			}
			log_info("donor %s: connected as %s (capacity %llu MiB)", url, p->client_id,
				 (unsigned long long)(atomic_load(&d->capacity) >> 20));
			events_emit("donor.up", json_pack("{s:s, s:I}", "donor", url, "capacity",
							  (json_int_t)atomic_load(&d->capacity)));
		}
	}
	p->d[n] = d;
	atomic_store(&p->n, n + 1);
	atomic_fetch_add(&p->gen, 1);
	pthread_mutex_unlock(&p->lock);
	return r < 0 ? r : (int)n;
}

/*
 * After a reconnection, slabs the donor still holds for this client id
 * belong to the lost connection (the store wrote them off): give them back.
 */
static void free_stale_slabs(struct pdonor *d)
{
	uint32_t ids[256];
	int n = donor_list_slabs(d->conn, ids, NULL, ARRAY_SIZE(ids));

	for (int i = 0; i < n && i < (int)ARRAY_SIZE(ids); i++)
		donor_free_slab(d->conn, ids[i]);
	if (n > 0)
		log_info("donor %s: freed %d slabs left from the lost connection", d->url, n);
}

int donor_pool_drain(struct donor_pool *p, const char *url, bool remove)
{
	int found = -ENOENT;

	for (unsigned i = 0; i < atomic_load(&p->n); i++) {
		struct pdonor *d = p->d[i];
		int st = atomic_load(&d->state);
		if (strcmp(d->url, url) != 0 || st == PD_GONE)
			continue;
		found = 0;
		if (st == PD_DOWN) {
			if (remove && atomic_load(&d->pages) == 0)
				atomic_store(&d->state, PD_GONE);
			continue;
		}
		atomic_store(&d->state, remove ? PD_REMOVING : PD_DRAINING);
		log_info("donor %s: %s: moving its %lld pages elsewhere", url, remove ? "removing" : "draining",
			 (long long)atomic_load(&d->pages));
	}
	atomic_fetch_add(&p->gen, 1);
	return found;
}

json_t *donor_pool_json(struct donor_pool *p)
{
	json_t *arr = json_array();

	for (unsigned i = 0; p && i < atomic_load(&p->n); i++) {
		struct pdonor *d = p->d[i];
		uint64_t cap = atomic_load(&d->capacity), used = atomic_load(&d->used);
		unsigned nrev;
		pthread_mutex_lock(&d->rlock);
		revoked_set_prune(&d->revoked, now_ns());
		nrev = d->revoked.n;
		pthread_mutex_unlock(&d->rlock);
		json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "url", d->url, "state",
						     state_names[atomic_load(&d->state)], "pages",
						     (json_int_t)atomic_load(&d->pages), "capacity", (json_int_t)cap,
						     "used", (json_int_t)used, "free",
						     (json_int_t)(cap > used ? cap - used : 0), "failures",
						     (json_int_t)atomic_load(&d->failures), "revoked_slabs",
						     (json_int_t)nrev));
	}
	return json_pack("{s:o}", "donors", arr);
}

unsigned donor_pool_count(struct donor_pool *p) { return p ? atomic_load(&p->n) : 0; }

const char *donor_pool_url(struct donor_pool *p, unsigned idx)
{
	return idx < donor_pool_count(p) ? p->d[idx]->url : "";
}

int donor_pool_find_up(struct donor_pool *p, const char *url)
{
	for (unsigned i = 0; i < donor_pool_count(p); i++)
		if (strcmp(p->d[i]->url, url) == 0 && atomic_load(&p->d[i]->state) == PD_UP)
			return (int)i;
	return -ENOENT;
}

int donor_pool_adopt(struct donor_pool *p, const char *url)
{
	char err[256];
	int found = -1, r;

	for (unsigned i = 0; i < donor_pool_count(p); i++) {
		int st = atomic_load(&p->d[i]->state);
		if (strcmp(p->d[i]->url, url) != 0 || st == PD_GONE)
			continue;
		if (found < 0 || st == PD_UP)
			found = (int)i;
	}
	if (found >= 0)
		return found;
	r = add_donor(p, url, true, err, sizeof(err));
	if (r < 0 && r != -ECONNREFUSED && r != -ETIMEDOUT && r != -EHOSTUNREACH)
		log_warn("donor %s (named by an adopted VM): %s", url, err);
	/* A fresh entry is listed even when the donor cannot be reached: find it. */
	for (unsigned i = 0; i < donor_pool_count(p); i++)
		if (strcmp(p->d[i]->url, url) == 0 && atomic_load(&p->d[i]->state) != PD_GONE)
			return (int)i;
	return r < 0 ? r : -ENOENT;
}
bool donor_pool_has_donors(struct donor_pool *p) { return donor_pool_count(p) > 0; }
unsigned donor_pool_generation(struct donor_pool *p) { return p ? atomic_load(&p->gen) : 0; }

enum pool_donor_state donor_pool_state(struct donor_pool *p, unsigned idx)
{
	return idx < atomic_load(&p->n) ? (enum pool_donor_state)atomic_load(&p->d[idx]->state) : PD_GONE;
}

bool donor_pool_slab_revoked(struct donor_pool *p, unsigned idx, uint32_t slab)
{
	struct pdonor *d;
	bool hit = false;

	if (idx >= atomic_load(&p->n))
		return false;
	d = p->d[idx];
	pthread_mutex_lock(&d->rlock);
	hit = revoked_set_has(&d->revoked, slab);
	pthread_mutex_unlock(&d->rlock);
	return hit;
}

unsigned donor_pool_views(struct donor_pool *p, struct policy_donor_view *views)
{
	unsigned n = donor_pool_count(p);
	uint64_t now = now_ns();

	for (unsigned i = 0; i < n; i++) {
		struct pdonor *d = p->d[i];
		uint64_t cap = atomic_load(&d->capacity), used = atomic_load(&d->used);
		views[i].up = atomic_load(&d->state) == PD_UP;
		if (now < atomic_load(&d->full_until))
			views[i].free_bytes = 0;
		else if (!cap)
			views[i].free_bytes = 1; /* unknown: worth a try */
		else
			views[i].free_bytes = cap > used ? cap - used : 0;
	}
	return n;
}

int donor_pool_alloc_slab(struct donor_pool *p, unsigned idx, uint32_t *ret_slab)
{
	struct pdonor *d = p->d[idx];
	int r;

	if (atomic_load(&d->state) != PD_UP)
		return -ENOTCONN;
	r = donor_alloc_slab(d->conn, ret_slab);
	if (r == -ENOSPC) {
		atomic_store(&d->full_until, now_ns() + FULL_BACKOFF_NS);
		atomic_store(&d->used, atomic_load(&d->capacity));
	} else if (r < 0) {
		donor_pool_note_failure(p, idx, r, "allocating a slab");
	} else {
		atomic_fetch_add(&d->used, 16ULL << 20);
	}
	return r;
}

void donor_pool_free_slab(struct donor_pool *p, unsigned idx, uint32_t slab)
{
	struct pdonor *d = p->d[idx];
	int st = atomic_load(&d->state);

	if (st == PD_DOWN || st == PD_GONE || !d->conn)
		return;
	if (donor_free_slab(d->conn, slab) == 0) {
		pthread_mutex_lock(&d->rlock);
		revoked_set_remove(&d->revoked, slab);
		pthread_mutex_unlock(&d->rlock);
	}
}

void donor_pool_count_pages(struct donor_pool *p, unsigned idx, int64_t delta)
{
	atomic_fetch_add(&p->d[idx]->pages, delta);
}

int donor_pool_submit(struct donor_pool *p, unsigned idx, bool write, uint32_t slab, uint32_t slot, void *page,
		      const void *wtag, struct pool_op *op)
{
	struct pdonor *d;
	int st, r;

	if (idx >= atomic_load(&p->n))
		return -ENOENT;
	d = p->d[idx];
	st = atomic_load(&d->state);
	if (st == PD_DOWN || st == PD_GONE || (write && st != PD_UP))
		return -ENOTCONN;
	op->status = 0;
	op->donor = (uint8_t)idx;
	atomic_fetch_add(&d->inflight, 1);
	pthread_mutex_lock(&op->w->lock);
	__atomic_add_fetch(&op->w->pending, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&op->w->lock);
	r = write ? donor_submit_write_tag(d->conn, slab, slot, page, wtag, (uint64_t)(uintptr_t)op)
		  : donor_submit_read_tag(d->conn, slab, slot, page, op->tag, (uint64_t)(uintptr_t)op);
	if (r < 0) {
		atomic_fetch_sub(&d->inflight, 1);
		pthread_mutex_lock(&op->w->lock);
		__atomic_sub_fetch(&op->w->pending, 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&op->w->lock);
		donor_pool_note_failure(p, idx, r, "submitting");
	}
	return r;
}

void donor_pool_flush(struct donor_pool *p, unsigned idx)
{
	struct pdonor *d = p->d[idx];
	int r;

	if (!d->conn)
		return;
	r = donor_flush(d->conn);
	if (r < 0)
		donor_pool_note_failure(p, idx, r, "sending");
}

void pool_wait_init(struct pool_wait *w)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->pending = 0;
	w->efd = -1;
}

void pool_wait_destroy(struct pool_wait *w)
{
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
}

void pool_wait_all(struct pool_wait *w)
{
	pthread_mutex_lock(&w->lock);
	while (w->pending)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
}

void pool_wait_spin(struct pool_wait *w, unsigned spin_us)
{
	uint64_t until = spin_us ? now_ns() + (uint64_t)spin_us * 1000 : 0;

	/* The clock (vDSO) is read every 64 pauses; a pause hands the core to a hyperthread sibling meanwhile. */
	while (until && __atomic_load_n(&w->pending, __ATOMIC_ACQUIRE)) {
		for (int i = 0; i < 64; i++)
			cpu_relax();
		if (now_ns() >= until)
			break;
	}
	/* Even when the spin saw zero: the completer may still hold the lock, which the caller may destroy next. */
	pool_wait_all(w);
}

bool pool_wait_done(struct pool_wait *w)
{
	bool done;

	pthread_mutex_lock(&w->lock);
	done = w->pending == 0;
	pthread_mutex_unlock(&w->lock);
	return done;
}
