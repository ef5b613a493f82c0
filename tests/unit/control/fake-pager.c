/* SPDX-License-Identifier: MIT */
/*
 * Fake pager for the control tests: implements the operations API (ops.h)
 * over an in-memory VM table guarded by a mutex, because the
 * control thread calls them while the test thread inspects the state.
 */
#include "fake-pager.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct fake_vm {
	char name[64];
	int pid;
	uint64_t limit;
	int full;
};

struct pager {
	pthread_mutex_t lock;
	struct fake_vm *vms;
	size_t nvms;
	unsigned set_limit_calls;
};

struct pager *fake_pager_new(void)
{
	struct pager *p = calloc(1, sizeof(*p));

	if (p)
		pthread_mutex_init(&p->lock, NULL);
	return p;
}

void fake_pager_free(struct pager *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p->vms);
	free(p);
}

int fake_pager_add_vm(struct pager *p, const char *name, int pid, uint64_t limit, int full)
{
	struct fake_vm *v;

	pthread_mutex_lock(&p->lock);
	v = realloc(p->vms, (p->nvms + 1) * sizeof(*v));
	if (!v) {
		pthread_mutex_unlock(&p->lock);
		return -ENOMEM;
	}
	p->vms = v;
	v = &p->vms[p->nvms++];
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->pid = pid;
	v->limit = limit;
	v->full = full;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

unsigned fake_pager_set_limit_calls(struct pager *p)
{
	unsigned n;

	pthread_mutex_lock(&p->lock);
	n = p->set_limit_calls;
	pthread_mutex_unlock(&p->lock);
	return n;
}

static struct fake_vm *find(struct pager *p, const char *name)
{
	for (size_t i = 0; i < p->nvms; i++)
		if (strcmp(p->vms[i].name, name) == 0)
			return &p->vms[i];
	return NULL;
}

/* Figures follow from the limit so tests can predict them. */
static uint64_t resident_pages(const struct fake_vm *v) { return v->limit / PAGE_SIZE_4K / 2; }
static uint64_t stored_pages(const struct fake_vm *v) { return (uint64_t)v->pid * 10; }

static json_t *vm_summary(const struct fake_vm *v)
{
	return json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:{s:I, s:I}, s:I}", "name", v->name, "pid", v->pid, "state",
			 v->full ? "running" : "degraded", "local_memory", (json_int_t)v->limit, "resident_pages",
			 (json_int_t)resident_pages(v), "stored_pages", (json_int_t)stored_pages(v), "faults", "zero",
			 (json_int_t)v->pid, "spill", (json_int_t)3, "evictions", (json_int_t)v->pid * 2);
}

json_t *pager_vm_list(struct pager *p)
{
	json_t *vms = json_array();

	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; vms && i < p->nvms; i++)
		json_array_append_new(vms, vm_summary(&p->vms[i]));
	pthread_mutex_unlock(&p->lock);
	return vms ? json_pack("{s:o}", "vms", vms) : NULL;
}

int pager_vm_stats(struct pager *p, const char *name, json_t **ret_stats)
{
	struct fake_vm *v;
	json_t *s;

	pthread_mutex_lock(&p->lock);
	v = find(p, name);
	if (!v) {
		pthread_mutex_unlock(&p->lock);
		return -ENOENT;
	}
	if (!v->full) {
		s = json_pack("{s:s, s:s, s:I}", "name", v->name, "state", "degraded", "local_memory",
			      (json_int_t)v->limit);
	} else {
		s = json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "name", v->name, "pid",
			      v->pid, "state", "running", "local_memory", (json_int_t)v->limit, "high_watermark_pages",
			      (json_int_t)(v->limit / PAGE_SIZE_4K), "low_watermark_pages",
			      (json_int_t)(v->limit / PAGE_SIZE_4K * 9 / 10), "guest_pages", (json_int_t)262144,
			      "resident_pages", (json_int_t)resident_pages(v), "memfd_resident_pages",
			      (json_int_t)resident_pages(v), "stored_pages", (json_int_t)stored_pages(v), "spill_pages",
			      (json_int_t)7, "zero_pages", (json_int_t)11);
		json_object_set_new(s, "faults", json_pack("{s:I, s:I, s:I, s:I, s:I}", "zero", (json_int_t)100,
							   "spill", (json_int_t)20, "discard", (json_int_t)3, "wp",
							   (json_int_t)4, "duplicate", (json_int_t)5));
		json_object_set_new(s, "evictions", json_integer(1000));
		json_object_set_new(s, "evictions_aborted", json_integer(2));
		json_object_set_new(s, "refaults", json_integer(30));
		json_object_set_new(s, "integrity_errors", json_integer(0));
		json_object_set_new(s, "fault_latency_ns",
				    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:[{s:I, s:I}, {s:I, s:I}]}", "count",
					      (json_int_t)133, "p50", (json_int_t)9500, "p90", (json_int_t)15000,
					      "p99", (json_int_t)41000, "p999", (json_int_t)120000, "max",
					      (json_int_t)250000, "buckets", "le", (json_int_t)16384, "count",
					      (json_int_t)120, "le", (json_int_t)262144, "count", (json_int_t)12));
		/* A field uffd-ctl does not know about yet. */
		json_object_set_new(s, "prefetch_hits", json_integer(77));
	}
	pthread_mutex_unlock(&p->lock);
	if (!s)
		return -ENOMEM;
	*ret_stats = s;
	return 0;
}

int pager_vm_set_limit(struct pager *p, const char *name, uint64_t bytes, char *err, size_t errlen)
{
	struct fake_vm *v;
	uint64_t others = 0;
	int r = 0;

	pthread_mutex_lock(&p->lock);
	p->set_limit_calls++;
	v = find(p, name);
	if (!v) {
		r = -ENOENT;
		goto out;
	}
	for (size_t i = 0; i < p->nvms; i++)
		if (&p->vms[i] != v)
			others += p->vms[i].limit;
	if (bytes < 16 * PAGE_SIZE_4K) {
		snprintf(err, errlen, "limit below the minimum of 64K");
		r = -EINVAL;
	} else if (others + bytes > FAKE_BUDGET) {
		snprintf(err, errlen, "host budget of 4G exceeded (other VMs hold %llu bytes)",
			 (unsigned long long)others);
		r = -ENOSPC;
	} else {
		v->limit = bytes;
	}
out:
	pthread_mutex_unlock(&p->lock);
	return r;
}

json_t *pager_stats(struct pager *p)
{
	uint64_t committed = 0, resident = 0;
	json_t *s;

	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < p->nvms; i++) {
		committed += p->vms[i].limit;
		resident += resident_pages(&p->vms[i]);
	}
	s = json_pack("{s:I, s:I, s:I, s:I}", "budget", (json_int_t)FAKE_BUDGET, "committed", (json_int_t)committed,
		      "vms", (json_int_t)p->nvms, "resident_pages", (json_int_t)resident);
	pthread_mutex_unlock(&p->lock);
	return s;
}

/* The commands below only need the VM to exist here: their work is the core's. */
static int fake_exists(struct pager *p, const char *name, char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&p->lock);
	r = find(p, name) ? 0 : -ENOENT;
	pthread_mutex_unlock(&p->lock);
	if (r && err)
		snprintf(err, errlen, "no VM named '%s'", name);
	return r;
}

int pager_vm_drain(struct pager *p, const char *name, char *err, size_t errlen)
{
	return fake_exists(p, name, err, errlen);
}

int pager_vm_park(struct pager *p, const char *name, char *err, size_t errlen)
{
	return fake_exists(p, name, err, errlen);
}

int pager_vm_policy_get(struct pager *p, const char *name, json_t **ret_policy)
{
	int r = fake_exists(p, name, NULL, 0);

	if (r == 0)
		*ret_policy = json_pack("{s:s, s:s}", "name", name, "local_memory", "64M");
	return r;
}

int pager_vm_policy_set(struct pager *p, const char *name, const json_t *policy, char *err, size_t errlen)
{
	return fake_exists(p, name, err, errlen);
}

json_t *pager_donor_list(struct pager *p)
{
	return json_pack("{s:[]}", "donors");
}

int pager_donor_add(struct pager *p, const char *url, char *err, size_t errlen)
{
	snprintf(err, errlen, "this fake pager has no donors");
	return -ECONNREFUSED;
}

int pager_donor_drain(struct pager *p, const char *url, bool remove)
{
	return -ENOENT;
}

/* Events: one list of subscribers, callbacks under a lock as the real core does. */
struct fake_sub {
	uint64_t id;
	pager_event_fn fn;
	void *opaque;
};

static pthread_mutex_t fake_events_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fake_sub fake_subs[64];
static unsigned fake_nsubs;
static uint64_t fake_next_id = 1;

int pager_events_subscribe(struct pager *p, pager_event_fn fn, void *opaque, uint64_t *ret_id)
{
	int r = 0;

	(void)p;
	pthread_mutex_lock(&fake_events_lock);
	if (fake_nsubs == ARRAY_SIZE(fake_subs)) {
		r = -ENOMEM;
	} else {
		fake_subs[fake_nsubs] = (struct fake_sub){ .id = fake_next_id++, .fn = fn, .opaque = opaque };
		*ret_id = fake_subs[fake_nsubs++].id;
	}
	pthread_mutex_unlock(&fake_events_lock);
	return r;
}

void pager_events_unsubscribe(struct pager *p, uint64_t id)
{
	(void)p;
	pthread_mutex_lock(&fake_events_lock);
	for (unsigned i = 0; i < fake_nsubs; i++) {
		if (fake_subs[i].id == id) {
			fake_subs[i] = fake_subs[--fake_nsubs];
			break;
		}
	}
	pthread_mutex_unlock(&fake_events_lock);
}

void fake_pager_emit(const char *type, json_t *fields)
{
	json_t *ev = json_pack("{s:s, s:f}", "event", type, "time", 1.0);

	if (ev && fields)
		json_object_update(ev, fields);
	json_decref(fields);
	if (!ev)
		return;
	pthread_mutex_lock(&fake_events_lock);
	for (unsigned i = 0; i < fake_nsubs; i++)
		fake_subs[i].fn(fake_subs[i].opaque, ev);
	pthread_mutex_unlock(&fake_events_lock);
	json_decref(ev);
}

unsigned fake_pager_subscribers(void)
{
	unsigned n;

	pthread_mutex_lock(&fake_events_lock);
	n = fake_nsubs;
	pthread_mutex_unlock(&fake_events_lock);
	return n;
}
