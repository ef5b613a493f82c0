/* SPDX-License-Identifier: MIT */
/*
 * The pager's operations API: what the control server (control/) may ask
 * of the pager, and nothing else of it. The control server depends on this
 * header only; ops.c implements it on top of the VM registry (registry.h),
 * the VMs and the donor pool, and the control unit tests replace it with a
 * fake (tests/unit/control/fake-pager.c). Every function is safe to call
 * from the control thread, and from its job threads, while fault and
 * eviction threads run.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pager;

/* {"vms":[{"name","pid","state","local_memory","resident_pages","stored_pages",...}]} */
json_t *pager_vm_list(struct pager *p);
/*
 * Stats of one VM (see docs/control-api.md for the fields).
 * Returns 0 or -ENOENT (no such VM).
 */
int pager_vm_stats(struct pager *p, const char *name, json_t **ret_stats);
/*
 * Changes a VM's local-memory limit at run time; lowering it makes the
 * evictor bring residency down. Returns 0, -ENOENT, or -EINVAL / -ENOSPC
 * with a reason in err (e.g. over the host budget).
 */
int pager_vm_set_limit(struct pager *p, const char *name, uint64_t bytes, char *err, size_t errlen);
/* Host-wide figures: budget, committed, VM count, totals. */
json_t *pager_stats(struct pager *p);
/* {"donors":[{"url","state":"up|draining|removing|down|gone","pages","capacity","used","free","failures"}]} */
json_t *pager_donor_list(struct pager *p);
/* Connects a donor at run time. Returns 0 or -errno (-EINVAL bad URL, -EEXIST, -ECONNREFUSED...) with err. */
int pager_donor_add(struct pager *p, const char *url, char *err, size_t errlen);
/*
 * Moves every page off a donor in the background (remove: then disconnects
 * and forgets it). Returns 0 or -ENOENT. Progress shows in donor.list.
 */
int pager_donor_drain(struct pager *p, const char *url, bool remove);
/*
 * vm.drain: brings every stored page of the VM back into its memfd (e.g.
 * before live migration or save), raising its limit as needed, and returns
 * when no page is stored elsewhere. Returns 0, -ENOENT, -ENOSPC (the host
 * budget cannot hold the whole guest; reason in err), -EIO (a store failed,
 * or the pager is shutting down).
 */
int pager_vm_drain(struct pager *p, const char *name, char *err, size_t errlen);
/*
 * vm.park: evicts as much of the VM as its stores take (residency towards
 * zero) without changing its policy, for an idle VM. Returns 0, -ENOENT,
 * -ENOSPC (stores full; reason in err).
 */
int pager_vm_park(struct pager *p, const char *name, char *err, size_t errlen);
/* vm.policy.get: the VM's policy as docs/policy.md JSON. Returns 0 or -ENOENT. */
int pager_vm_policy_get(struct pager *p, const char *name, json_t **ret_policy);
/*
 * vm.policy.set: replaces the run-time settings of the VM's policy with
 * policy (docs/policy.md JSON; "name" if present must match). Returns 0,
 * -ENOENT, -EINVAL (policy invalid: field, value and allowed values in err),
 * -ENOSPC (over the host budget).
 */
int pager_vm_policy_set(struct pager *p, const char *name, const json_t *policy, char *err, size_t errlen);

/*
 * events.subscribe: fn is called once per event (see events.h for the
 * types), from whichever pager thread noticed it, with a lock held that
 * serialises callbacks against unsubscribe: it must only queue the event
 * and return quickly, never block and never call back into the pager.
 * event is borrowed: {"event": type, "time": unix seconds (real), ...}.
 */
typedef void (*pager_event_fn)(void *opaque, const json_t *event);
/* Registers fn for every event from now on. Returns 0 or -ENOMEM; *ret_id names the subscription. */
int pager_events_subscribe(struct pager *p, pager_event_fn fn, void *opaque, uint64_t *ret_id);
/* Ends a subscription; no callback for it runs once this returns. Unknown ids are ignored. */
void pager_events_unsubscribe(struct pager *p, uint64_t id);
