/* SPDX-License-Identifier: MIT */
/*
 * libvirt lifecycle watcher (see virt.h). One thread owns the connection
 * and libvirt's default event loop. A stopping domain is matched by name
 * against the VMs the pager serves now or detached in the last minute:
 * QEMU's exit usually reaches the registry (socket EOF, pidfd) before
 * libvirt has reaped it and sent its event, so "registered right now"
 * alone would miss most stops.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "log.h"
#include "pager.h"
#include "virt.h"

#define RECENT_MAX 64
#define RECENT_SECONDS 60

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
	pthread_mutex_t lock; /* recent[] */
	struct recent recent[RECENT_MAX];
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
	log_info("libvirt: domain %s (%s) %s%s", name, uuid, reason,
		 registered ? "; the pager still serves it until QEMU exits" : "");
	json_t *ev = json_pack("{s:s, s:s, s:s, s:b}", "vm", name, "uuid", uuid, "reason", reason, "registered",
			       registered);

	if (ev && registered)
		json_object_set_new(ev, "pid", json_integer(pid));
	pager_event_emit("domain.stopped", ev);
	return 0;
}

static void on_close(virConnectPtr conn, int reason, void *opaque)
{
	struct virt *v = opaque;

	(void)conn;
	if (!atomic_load(&v->stop))
		log_warn("libvirt: connection to %s closed (reason %d); domain events stop (no reconnect)", v->uri,
			 reason);
}

static void wake_noop(int timer, void *opaque)
{
	(void)opaque;
	virEventRemoveTimeout(timer);
}

/* libvirt prints errors to stderr by default: they go through our log once, where they happen. */
static void quiet_errors(void *opaque, virErrorPtr err)
{
	(void)opaque;
	(void)err;
}

static void *virt_thread(void *arg)
{
	struct virt *v = arg;
	virConnectPtr conn;
	int cb;

	conn = virConnectOpenReadOnly(v->uri);
	if (!conn) {
		log_err("libvirt: cannot connect to %s: %s; running without domain events", v->uri,
			virGetLastErrorMessage());
		return NULL;
	}
	cb = virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
					      VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), v, NULL);
	if (cb < 0) {
		log_err("libvirt: cannot watch domain events on %s: %s", v->uri, virGetLastErrorMessage());
		virConnectClose(conn);
		return NULL;
	}
	virConnectRegisterCloseCallback(conn, on_close, v, NULL);
	log_info("libvirt: connected to %s, watching domain lifecycle events", v->uri);
	while (!atomic_load(&v->stop))
		if (virEventRunDefaultImpl() < 0) {
			log_err("libvirt: event loop failed: %s", virGetLastErrorMessage());
			break;
		}
	virConnectDomainEventDeregisterAny(conn, cb);
	virConnectUnregisterCloseCallback(conn, on_close);
	virConnectClose(conn);
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
	pthread_mutex_init(&v->lock, NULL);
	virSetErrorFunc(NULL, quiet_errors);
	if (virInitialize() < 0 || virEventRegisterDefaultImpl() < 0) {
		log_err("libvirt: cannot initialize: %s", virGetLastErrorMessage());
		r = -EIO;
		goto fail;
	}
	r = pager_events_subscribe(p, on_pager_event, v, &v->sub_id);
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
		pager_events_unsubscribe(p, v->sub_id);
		goto fail;
	}
	*ret = v;
	return 0;
fail:
	pthread_mutex_destroy(&v->lock);
	free(v->uri);
	free(v);
	return r;
}

void virt_stop(struct virt *v)
{
	if (!v)
		return;
	atomic_store(&v->stop, true);
	/* A zero timeout makes virEventRunDefaultImpl return; it removes itself. */
	virEventAddTimeout(0, wake_noop, NULL, NULL);
	pthread_join(v->thread, NULL);
	if (v->subscribed)
		pager_events_unsubscribe(v->p, v->sub_id);
	pthread_mutex_destroy(&v->lock);
	free(v->uri);
	free(v);
}
