/* SPDX-License-Identifier: MIT */
/*
 * libvirt side of the pager (see virt.h). One thread owns the connection
 * and libvirt's default event loop; nothing else calls libvirt, so a slow
 * or dead libvirtd can never stall the registry, a fault or the control
 * server. A stopping domain is matched by name against the VMs the pager
 * serves now or detached in the last minute: QEMU's exit usually reaches
 * the registry (socket EOF, pidfd) before libvirt has reaped it and sent
 * its event, so "registered right now" alone would miss most stops.
 * Balloon targets arrive through a small queue (the registry's lock is
 * held while it queues) and an eventfd that wakes the event loop; the
 * thread applies them with virDomainSetMemoryFlags and answers with
 * pager_balloon_result(). A lost connection (libvirtd restarted) is
 * re-opened with backoff and the callbacks registered again.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "events.h"
#include "log.h"
#include "ops.h"
#include "registry.h"
#include "util.h"
#include "virt.h"

#define RECENT_MAX 64
#define RECENT_SECONDS 60
#define BREQ_MAX 64
/* A domain that is not running yet (QEMU registers before libvirt finishes starting it) is retried this long. */
#define BREQ_RETRY_NS (60ULL * 1000000000ULL)
#define BREQ_RETRY_EVERY_NS (1000000000ULL)
#define RECONNECT_MAX_S 30

/* A balloon target waiting to be applied; one per VM, the latest wins. */
struct breq {
	bool used;
	char vm[64];
	char uuid[VIR_UUID_STRING_BUFLEN];
	uint64_t kib; /* 0 = the domain's maximum */
	uint64_t deadline_ns, next_ns;
	uint64_t gen; /* changes when the request is replaced while being applied */
};

struct recent {
	char name[64];
	time_t detached; /* 0 = attached now */
};

struct virt {
	struct pager *p;
	char *uri;
	pthread_t thread;
	atomic_bool stop;
	uint64_t sub_id;
	bool subscribed;
	pthread_mutex_t lock; /* recent[], reqs[] */
	struct recent recent[RECENT_MAX];
	struct breq reqs[BREQ_MAX];
	uint64_t next_gen;
	int wake_fd; /* eventfd: new requests, stop */
	/* Owned by the thread: */
	virConnectPtr conn;
	bool readonly;   /* write access refused: lifecycle events only */
	bool lost;       /* the close callback fired: reconnect */
	int lifecycle_cb;
	bool ever_connected;
	unsigned failures_in_row;
	uint64_t next_connect_ns;
};

/* Pager event callback (under the pager's event lock): remember names only. */
static void on_pager_event(void *opaque, const json_t *ev)
{
	struct virt *v = opaque;
	const char *type = json_string_value(json_object_get(ev, "event"));
	const char *name = json_string_value(json_object_get(ev, "vm"));
	bool attached;
	struct recent *slot = NULL, *empty = NULL, *oldest = NULL;

	if (!type || !name || strlen(name) >= sizeof(v->recent[0].name))
		return;
	attached = !strcmp(type, "vm.attached");
	if (!attached && strcmp(type, "vm.detached"))
		return;
	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < RECENT_MAX && !slot; i++) {
		struct recent *r = &v->recent[i];

		if (!r->name[0])
			empty = empty ? empty : r;
		else if (!strcmp(r->name, name))
			slot = r;
		else if (r->detached && (!oldest || r->detached < oldest->detached))
			oldest = r; /* attached VMs are never forgotten */
	}
	if (!slot)
		slot = empty ? empty : oldest;
	if (slot) {
		snprintf(slot->name, sizeof(slot->name), "%s", name);
		slot->detached = attached ? 0 : time(NULL);
	}
	pthread_mutex_unlock(&v->lock);
}

static bool known_vm(struct virt *v, const char *name)
{
	time_t now = time(NULL);
	bool known = false;

	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < RECENT_MAX && !known; i++) {
		struct recent *r = &v->recent[i];

		known = r->name[0] && !strcmp(r->name, name) && (!r->detached || now - r->detached <= RECENT_SECONDS);
	}
	pthread_mutex_unlock(&v->lock);
	return known;
}

static const char *stopped_detail(int detail)
{
	switch (detail) {
	case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: return "shutdown";
	case VIR_DOMAIN_EVENT_STOPPED_DESTROYED: return "destroyed";
	case VIR_DOMAIN_EVENT_STOPPED_CRASHED: return "crashed";
	case VIR_DOMAIN_EVENT_STOPPED_MIGRATED: return "migrated";
	case VIR_DOMAIN_EVENT_STOPPED_SAVED: return "saved";
	case VIR_DOMAIN_EVENT_STOPPED_FAILED: return "failed";
	case VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: return "from-snapshot";
	default: return "unknown";
	}
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
	struct virt *v = opaque;
	const char *name = virDomainGetName(dom), *reason;
	char uuid[VIR_UUID_STRING_BUFLEN] = "";
	json_t *stats = NULL;
	int pid = 0;

	(void)conn;
	log_debug("libvirt: domain %s: lifecycle event %d detail %d", name ? name : "?", event, detail);
	switch (event) {
	case VIR_DOMAIN_EVENT_STOPPED: reason = stopped_detail(detail); break;
	case VIR_DOMAIN_EVENT_CRASHED: reason = "crashed"; break;
	case VIR_DOMAIN_EVENT_SHUTDOWN: reason = "shutting-down"; break;
	default: return 0;
	}
	if (!name)
		return 0;
	bool registered = pager_vm_stats(v->p, name, &stats) == 0;

	if (registered) {
		pid = (int)json_integer_value(json_object_get(stats, "pid"));
		json_decref(stats);
	}
	if (!registered && !known_vm(v, name))
		return 0; /* a domain the pager never paged */
	virDomainGetUUIDString(dom, uuid);
	if (event == VIR_DOMAIN_EVENT_STOPPED) {
		pthread_mutex_lock(&v->lock);
		for (unsigned i = 0; i < BREQ_MAX; i++)
			if (v->reqs[i].used && !strcmp(v->reqs[i].uuid, uuid))
				v->reqs[i].used = false; /* a stopped domain has no balloon to set */
		pthread_mutex_unlock(&v->lock);
	}
	log_info("libvirt: domain %s (%s) %s%s", name, uuid, reason,
		 registered ? "; the pager still serves it until QEMU exits" : "");
	json_t *ev = json_pack("{s:s, s:s, s:s, s:b}", "vm", name, "uuid", uuid, "reason", reason, "registered",
			       registered);

	if (ev && registered)
		json_object_set_new(ev, "pid", json_integer(pid));
	events_emit("domain.stopped", ev);
	return 0;
}

static void on_close(virConnectPtr conn, int reason, void *opaque)
{
	struct virt *v = opaque;
	static const char *const why[] = { "error", "end of file", "keepalive timeout", "client closed" };

	(void)conn;
	if (atomic_load(&v->stop))
		return;
	log_warn("libvirt: connection to %s lost (%s); reconnecting", v->uri,
		 reason >= 0 && reason < 4 ? why[reason] : "unknown reason");
	v->lost = true;
}

static void wake_noop(int timer, void *opaque)
{
	(void)opaque;
	virEventRemoveTimeout(timer);
}

/* Periodic: makes the loop come round for retries and reconnects. */
static void tick(int timer, void *opaque)
{
	(void)timer;
	(void)opaque;
}

static void on_wake(int watch, int fd, int events, void *opaque)
{
	uint64_t n;

	(void)watch;
	(void)events;
	(void)opaque;
	if (read(fd, &n, sizeof(n)) < 0)
		return;
}

/* libvirt prints errors to stderr by default: they go through our log once, where they happen. */
static void quiet_errors(void *opaque, virErrorPtr err)
{
	(void)opaque;
	(void)err;
}

static void disconnect(struct virt *v)
{
	if (!v->conn)
		return;
	if (v->lifecycle_cb >= 0)
		virConnectDomainEventDeregisterAny(v->conn, v->lifecycle_cb);
	virConnectUnregisterCloseCallback(v->conn, on_close);
	virConnectClose(v->conn);
	v->conn = NULL;
	v->lifecycle_cb = -1;
}

/*
 * Opens the connection read-write (the balloon needs it), falling back to
 * read-only when write access is refused, and registers the callbacks.
 * Returns 0 or -EIO; the caller retries with backoff.
 */
static int connect_libvirt(struct virt *v)
{
	const bool again = v->ever_connected;
	char rw_err[256] = "";

	v->readonly = false;
	v->conn = virConnectOpen(v->uri);
	if (!v->conn) {
		snprintf(rw_err, sizeof(rw_err), "%s", virGetLastErrorMessage());
		v->conn = virConnectOpenReadOnly(v->uri);
		v->readonly = v->conn != NULL;
	}
	if (!v->conn) {
		if (!v->failures_in_row)
			log_err("libvirt: cannot connect to %s: %s; %s", v->uri, virGetLastErrorMessage(),
				again ? "retrying" : "retrying in the background (no domain events until then)");
		return -EIO;
	}
	v->lifecycle_cb = virConnectDomainEventRegisterAny(v->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
							   VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), v, NULL);
	if (v->lifecycle_cb < 0) {
		log_err("libvirt: cannot watch domain events on %s: %s", v->uri, virGetLastErrorMessage());
		disconnect(v);
		return -EIO;
	}
	virConnectRegisterCloseCallback(v->conn, on_close, v, NULL);
	/* A libvirtd that hangs (rather than closing the socket) is noticed within ~20 s. */
	virConnectSetKeepAlive(v->conn, 5, 3);
	v->lost = false;
	if (v->readonly)
		log_warn("libvirt: %s is read-only for this pager (%s): balloon requests will fail; "
			 "see docs/libvirt.md for the access they need", v->uri, rw_err);
	log_info("libvirt: %s %s%s, watching domain lifecycle events", again ? "reconnected to" : "connected to",
		 v->uri, v->readonly ? " (read-only)" : "");
	v->ever_connected = true;
	return 0;
}

/*
 * Sets the domain's current memory. Returns 0 (applied_kib set), -EAGAIN
 * (not connected, domain not running yet: try again) or another -errno;
 * msg says what happened either way.
 */
static int balloon_apply(struct virt *v, const struct breq *rq, uint64_t *ret_kib, char *msg, size_t len)
{
	virDomainPtr dom;
	unsigned long max;
	uint64_t kib;
	int r;

	if (!v->conn) {
		snprintf(msg, len, "not connected to libvirt at %s", v->uri);
		return -EAGAIN;
	}
	if (v->readonly) {
		snprintf(msg, len, "the libvirt connection to %s is read-only (setting memory needs write access)",
			 v->uri);
		return -EACCES;
	}
	if (!rq->uuid[0]) {
		snprintf(msg, len, "the VM has no UUID (QEMU ran without -uuid), so libvirt cannot name its domain");
		return -ENOENT;
	}
	dom = virDomainLookupByUUIDString(v->conn, rq->uuid);
	if (!dom) {
		snprintf(msg, len, "libvirt at %s knows no domain with UUID %s", v->uri, rq->uuid);
		return -ENOENT;
	}
	if (virDomainIsActive(dom) == 0) {
		snprintf(msg, len, "domain %s is not running", rq->uuid);
		virDomainFree(dom);
		return -EAGAIN;
	}
	max = virDomainGetMaxMemory(dom);
	if (!max) {
		snprintf(msg, len, "cannot read the domain's maximum memory: %s", virGetLastErrorMessage());
		virDomainFree(dom);
		return -EIO;
	}
	kib = rq->kib && rq->kib < max ? rq->kib : max;
	if (virDomainSetMemoryFlags(dom, (unsigned long)kib, VIR_DOMAIN_AFFECT_LIVE) < 0) {
		virErrorPtr e = virGetLastError();
		const bool timeout = e && e->code == VIR_ERR_OPERATION_TIMEOUT;

		snprintf(msg, len, "virDomainSetMemoryFlags(%llu KiB): %s", (unsigned long long)kib,
			 virGetLastErrorMessage());
		/* Busy with another job (e.g. still starting) or stopped meanwhile: later. */
		r = timeout || virDomainIsActive(dom) == 0 ? -EAGAIN : -EIO;
	} else {
		snprintf(msg, len, "libvirt set the domain's current memory to %llu MiB of %lu MiB",
			 (unsigned long long)(kib >> 10), max >> 10);
		*ret_kib = kib;
		r = 0;
	}
	virDomainFree(dom);
	return r;
}

/* Applies every request that is due; answers the pager outside our lock. */
static void process_requests(struct virt *v)
{
	for (unsigned i = 0; i < BREQ_MAX; i++) {
		struct breq rq;
		uint64_t now = now_ns(), applied = 0;
		char msg[200];
		int r;

		pthread_mutex_lock(&v->lock);
		rq = v->reqs[i];
		pthread_mutex_unlock(&v->lock);
		if (!rq.used || now < rq.next_ns)
			continue;
		r = balloon_apply(v, &rq, &applied, msg, sizeof(msg));
		if (r == -EAGAIN && now_ns() < rq.deadline_ns) {
			log_debug("libvirt: balloon of vm %s: %s; retrying", rq.vm, msg);
			pthread_mutex_lock(&v->lock);
			if (v->reqs[i].used && v->reqs[i].gen == rq.gen)
				v->reqs[i].next_ns = now_ns() + BREQ_RETRY_EVERY_NS;
			pthread_mutex_unlock(&v->lock);
			continue;
		}
		pthread_mutex_lock(&v->lock);
		if (v->reqs[i].used && v->reqs[i].gen == rq.gen)
			v->reqs[i].used = false;
		pthread_mutex_unlock(&v->lock);
		pager_balloon_result(v->p, rq.vm, rq.uuid, rq.kib, applied, r, msg);
	}
}

/* pager_balloon_fn: runs with the registry locked; only queues and wakes the thread. */
static void balloon_request(void *opaque, const char *vm, const char *uuid, uint64_t target_kib)
{
	struct virt *v = opaque;
	struct breq *slot = NULL, *empty = NULL;
	uint64_t one = 1, now = now_ns();

	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < BREQ_MAX && !slot; i++) {
		if (v->reqs[i].used && !strcmp(v->reqs[i].vm, vm))
			slot = &v->reqs[i];
		else if (!v->reqs[i].used && !empty)
			empty = &v->reqs[i];
	}
	if (!slot)
		slot = empty;
	if (slot) {
		snprintf(slot->vm, sizeof(slot->vm), "%s", vm);
		snprintf(slot->uuid, sizeof(slot->uuid), "%s", uuid);
		slot->kib = target_kib;
		slot->deadline_ns = now + BREQ_RETRY_NS;
		slot->next_ns = now;
		slot->gen = ++v->next_gen;
		slot->used = true;
	}
	pthread_mutex_unlock(&v->lock);
	if (!slot)
		log_warn("libvirt: more than %d balloon requests queued; vm %s's is dropped", BREQ_MAX, vm);
	else if (write(v->wake_fd, &one, sizeof(one)) < 0)
		log_debug("libvirt: cannot wake the libvirt thread: %s", strerror(errno));
}

static void *virt_thread(void *arg)
{
	struct virt *v = arg;
	unsigned backoff_s = 1;
	int watch, timer;

	pthread_setname_np(pthread_self(), "pager-libvirt");

	watch = virEventAddHandle(v->wake_fd, VIR_EVENT_HANDLE_READABLE, on_wake, v, NULL);
	timer = virEventAddTimeout(1000, tick, v, NULL);
	if (watch < 0 || timer < 0)
		log_err("libvirt: cannot set up the event loop; balloon requests wait for other events");
	while (!atomic_load(&v->stop)) {
		if (v->conn && v->lost) {
			disconnect(v);
			backoff_s = 1;
			v->next_connect_ns = now_ns() + 1000000000ULL;
		}
		if (!v->conn && now_ns() >= v->next_connect_ns) {
			if (connect_libvirt(v) == 0) {
				v->failures_in_row = 0;
				backoff_s = 1;
			} else {
				v->failures_in_row++;
				v->next_connect_ns = now_ns() + (uint64_t)backoff_s * 1000000000ULL;
				backoff_s = backoff_s * 2 > RECONNECT_MAX_S ? RECONNECT_MAX_S : backoff_s * 2;
			}
		}
		process_requests(v);
		if (virEventRunDefaultImpl() < 0) {
			log_err("libvirt: event loop failed: %s", virGetLastErrorMessage());
			break;
		}
	}
	disconnect(v);
	if (timer >= 0)
		virEventRemoveTimeout(timer);
	if (watch >= 0)
		virEventRemoveHandle(watch);
	return NULL;
}

int virt_start(struct pager *p, const char *uri, struct virt **ret)
{
	struct virt *v = calloc(1, sizeof(*v));
	int r;

	if (!v || !(v->uri = strdup(uri))) {
		free(v);
		return -ENOMEM;
	}
	v->p = p;
	v->lifecycle_cb = -1;
	pthread_mutex_init(&v->lock, NULL);
	v->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->wake_fd < 0) {
		r = -errno;
		goto fail;
	}
	virSetErrorFunc(NULL, quiet_errors);
	if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) {
		log_err("libvirt: cannot initialize: %s", virGetLastErrorMessage());
		r = -EIO;
		goto fail;
	}
	r = events_subscribe(on_pager_event, v, &v->sub_id);
	if (r < 0)
		goto fail;
	v->subscribed = true;
	/* Process signals belong to the daemon's main loop, never to this thread. */
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&v->thread, NULL, virt_thread, v);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		events_unsubscribe(v->sub_id);
		goto fail;
	}
	pager_set_balloon_handler(p, balloon_request, v);
	*ret = v;
	return 0;
fail:
	if (v->wake_fd > 0)
		close(v->wake_fd);
	pthread_mutex_destroy(&v->lock);
	free(v->uri);
	free(v);
	return r;
}

void virt_stop(struct virt *v)
{
	uint64_t one = 1;

	if (!v)
		return;
	/* First: no registry thread may queue into us any more. */
	pager_set_balloon_handler(v->p, NULL, NULL);
	atomic_store(&v->stop, true);
	if (write(v->wake_fd, &one, sizeof(one)) < 0)
		virEventAddTimeout(0, wake_noop, NULL, NULL); /* a zero timeout also ends the loop's wait */
	pthread_join(v->thread, NULL);
	if (v->subscribed)
		events_unsubscribe(v->sub_id);
	close(v->wake_fd);
	pthread_mutex_destroy(&v->lock);
	free(v->uri);
	free(v);
}
