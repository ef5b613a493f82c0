/* SPDX-License-Identifier: MIT */
/*
 * Event bus (events.h). Subscribers live in one process-wide list because
 * the emitters (VMs, the donor pool) hold no pager handle. Callbacks run
 * under the bus lock so that unsubscribe, which takes it too, cannot return
 * while one of them runs; they only queue, so holding it is brief. The
 * subscriber count is read without the lock so that emitting with nobody
 * listening costs one atomic load.
 */
#include "events.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/queue.h>
#include <time.h>

struct event_sub {
	uint64_t id;
	events_fn fn;
	void *opaque;
	LIST_ENTRY(event_sub) link;
};

static pthread_mutex_t bus_lock = PTHREAD_MUTEX_INITIALIZER;
static LIST_HEAD(, event_sub) subs = LIST_HEAD_INITIALIZER(subs);
static _Atomic unsigned nsubs;
static uint64_t next_id = 1;

int events_subscribe(events_fn fn, void *opaque, uint64_t *ret_id)
{
	struct event_sub *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	e->fn = fn;
	e->opaque = opaque;
	pthread_mutex_lock(&bus_lock);
	e->id = next_id++;
	LIST_INSERT_HEAD(&subs, e, link);
	atomic_fetch_add(&nsubs, 1);
	pthread_mutex_unlock(&bus_lock);
	*ret_id = e->id;
	return 0;
}

void events_unsubscribe(uint64_t id)
{
	struct event_sub *e;

	pthread_mutex_lock(&bus_lock);
	LIST_FOREACH(e, &subs, link)
		if (e->id == id)
			break;
	if (e) {
		LIST_REMOVE(e, link);
		atomic_fetch_sub(&nsubs, 1);
	}
	pthread_mutex_unlock(&bus_lock);
	free(e);
}

void events_emit(const char *type, json_t *fields)
{
	struct event_sub *e;
	struct timespec ts;
	json_t *ev;

	if (atomic_load(&nsubs) == 0) {
		json_decref(fields);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ev = json_pack("{s:s, s:f}", "event", type, "time", (double)ts.tv_sec + ts.tv_nsec / 1e9);
	if (ev && fields)
		json_object_update(ev, fields);
	json_decref(fields);
	if (!ev)
		return;
	pthread_mutex_lock(&bus_lock);
	LIST_FOREACH(e, &subs, link)
		e->fn(e->opaque, ev);
	pthread_mutex_unlock(&bus_lock);
	json_decref(ev);
}
