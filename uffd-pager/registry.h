/* SPDX-License-Identifier: MIT */
/*
 * The pager's VM registry and registration server: accepts shims on the
 * registration socket, validates what they send, creates and frees VMs,
 * enforces the host-wide budget and decides the guest-balloon targets. It
 * runs the daemon's main loop. It knows neither the control server nor
 * the operations API (ops.h): those sit above it and reach the VMs through
 * the locked accessors at the end of this header.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "policy.h"

struct pager;
struct vm;
struct donor_pool;

/* Binds the registration socket and connects the configured donors. Returns 0 or -errno (logged). */
int pager_new(const struct policy_pager_config *cfg, struct pager **ret);
/*
 * Serves until SIGTERM/SIGINT. From its return on, waits of the operations
 * (vm.drain, vm.park) give up, so that the control server can be stopped.
 * Returns 0 or -errno.
 */
int pager_run(struct pager *p);
/* Frees every VM (their spill files go too) and closes sockets. NULL-safe. */
void pager_free(struct pager *p);

/* ---- The guest balloon through libvirt (virt.c; docs/policy.md "balloon", docs/libvirt.md) ---- */

/*
 * Asks for a balloon target of the libvirt domain with this UUID (the VM's
 * name for messages): target_kib, or 0 = the domain's maximum memory
 * (deflate). Called with the registry locked: it must only queue the
 * request and return, never block and never call back into the pager.
 */
typedef void (*pager_balloon_fn)(void *opaque, const char *vm, const char *uuid, uint64_t target_kib);
/* Installs (or with fn NULL removes) who takes balloon requests; none means "no libvirt connection". */
void pager_set_balloon_handler(struct pager *p, pager_balloon_fn fn, void *opaque);
/*
 * The answer to a request of fn (target_kib as asked): err 0 = libvirt set
 * the domain's current memory to applied_kib; otherwise -errno and why in
 * msg. Answers to a superseded request or a VM gone are ignored.
 */
void pager_balloon_result(struct pager *p, const char *vm, const char *uuid, uint64_t target_kib,
			  uint64_t applied_kib, int err, const char *msg);

/* ---- For the operations module (ops.c): the registry under its lock ---- */

/* Takes the registry lock: VMs found under it stay alive until registry_unlock(). */
void registry_lock(struct pager *p);
void registry_unlock(struct pager *p);
/* Under the lock: the registered VM named name, or NULL. */
struct vm *registry_find_vm_locked(struct pager *p, const char *name);
/* Under the lock: calls fn for every registered VM. */
void registry_foreach_vm_locked(struct pager *p, void (*fn)(struct vm *vm, void *opaque), void *opaque);
/*
 * Under the lock: sets vm's local-memory limit within the host budget
 * (asking for the balloon target that goes with it first). Returns 0 or
 * -ENOSPC with the reason in err.
 */
int registry_set_limit_locked(struct pager *p, struct vm *vm, uint64_t bytes, char *err, size_t errlen);
/* Under the lock: asks for vm's balloon target after its limit's meaning changed (why). */
void registry_balloon_update_locked(struct pager *p, struct vm *vm, enum policy_balloon_why why);
/* Under the lock: vm's balloon as vm.stats shows it ({"enabled","state","target_kib",...}). */
json_t *registry_balloon_json_locked(struct pager *p, struct vm *vm);
/* The host-wide figures of pager.stats without the donors: budget, committed, VM counts, state_dir. */
json_t *registry_stats_json(struct pager *p);
/* The donor pool every VM shares. */
struct donor_pool *registry_donor_pool(struct pager *p);
/* True once the pager shuts down: long waits must give up. */
bool registry_stopping(struct pager *p);
