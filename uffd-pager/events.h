/* SPDX-License-Identifier: MIT */
/*
 * The pager's event bus: the lowest module of the daemon. VMs, the donor
 * pool, the registry and the libvirt watcher emit events here; the control
 * server's event streams and the libvirt watcher subscribe. It knows no
 * other module, so emitting never calls upward into the registry and
 * nothing below it depends on who listens. One bus per process (a process
 * runs one pager).
 */
#pragma once

#include <jansson.h>
#include <stdint.h>

/*
 * Called once per event, from whichever thread emitted it, with a lock held
 * that serialises callbacks against events_unsubscribe(): it must only
 * queue the event and return quickly, never block and never emit. event is
 * borrowed: {"event": type, "time": unix seconds (real), details...}.
 */
typedef void (*events_fn)(void *opaque, const json_t *event);

/* Registers fn for every event from now on. Returns 0 or -ENOMEM; *ret_id names the subscription. */
int events_subscribe(events_fn fn, void *opaque, uint64_t *ret_id);
/* Ends a subscription; no callback for it runs once this returns. Unknown ids are ignored. */
void events_unsubscribe(uint64_t id);
/*
 * Sends an event to every subscriber: type is "vm.attached", "vm.detached",
 * "vm.degraded", "page.lost", "donor.down", "donor.up" or "domain.stopped";
 * fields (stolen, may be NULL) are the details. Cheap when nobody
 * subscribes; never blocks on subscribers.
 */
void events_emit(const char *type, json_t *fields);
