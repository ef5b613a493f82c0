/* SPDX-License-Identifier: MIT */
/*
 * The pager's operations (ops.h): what the control server asks, carried out
 * on the VM registry, the VMs and the donor pool. Every VM is looked up by
 * name under the registry lock at each step, because a VM may exit (and be
 * freed by the registration thread) between two steps of a long operation
 * such as vm.drain. Nothing here is called by the modules below it, so the
 * control server can be left out (the control unit tests link a fake
 * instead).
 */
#include "ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "donors.h"
#include "events.h"
#include "json-util.h"
#include "log.h"
#include "policy.h"
#include "registry.h"
#include "share.h"
#include "util.h"
#include "vm.h"

/* How long vm.drain and vm.park wait for the VM, and how often they look. */
#define WAIT_TIMEOUT_S 600
#define WAIT_POLL_US 50000

/* Under the registry lock: the VM, or NULL with the reason in err. */
static struct vm *find_vm_or_err_locked(struct pager *p, const char *name, char *err, size_t errlen)
{
	struct vm *vm = registry_find_vm_locked(p, name);

	if (!vm)
		snprintf(err, errlen, "no VM named '%s'", name);
	return vm;
}

static void append_summary(struct vm *vm, void *arr)
{
	json_array_append_new(arr, vm_stats_json(vm, true));
}

json_t *pager_vm_list(struct pager *p)
{
	json_t *arr = json_array();

	if (!arr)
		return NULL;
	registry_lock(p);
	registry_foreach_vm_locked(p, append_summary, arr);
	registry_unlock(p);
	return json_pack("{s:o}", "vms", arr);
}

int pager_vm_stats(struct pager *p, const char *name, json_t **ret_stats)
{
	struct vm *vm;

	registry_lock(p);
	vm = registry_find_vm_locked(p, name);
	if (vm) {
		*ret_stats = vm_stats_json(vm, false);
		json_object_set_new(*ret_stats, "balloon", registry_balloon_json_locked(p, vm));
	}
	registry_unlock(p);
	return vm ? 0 : -ENOENT;
}

int pager_vm_set_limit(struct pager *p, const char *name, uint64_t bytes, char *err, size_t errlen)
{
	struct vm *vm;
	int r = -ENOENT;

	if (bytes < (1ULL << 20)) {
		snprintf(err, errlen, "local_memory must be at least 1M");
		return -EINVAL;
	}
	registry_lock(p);
	vm = find_vm_or_err_locked(p, name, err, errlen);
	if (vm)
		r = registry_set_limit_locked(p, vm, bytes, err, errlen);
	registry_unlock(p);
	if (r == 0)
		vm_log_info(name, "local memory set to %llu MiB", (unsigned long long)(bytes >> 20));
	return r;
}

json_t *pager_stats(struct pager *p)
{
	json_t *o = registry_stats_json(p);
	_cleanup_json_ json_t *d = donor_pool_json(registry_donor_pool(p));

	json_object_set(o, "donors", json_object_get(d, "donors"));
	json_object_set_new(o, "sharing_groups", share_stats_json());
	return o;
}

json_t *pager_donor_list(struct pager *p)
{
	return donor_pool_json(registry_donor_pool(p));
}

int pager_donor_add(struct pager *p, const char *url, char *err, size_t errlen)
{
	int r = donor_pool_add(registry_donor_pool(p), url, err, errlen);

	return r < 0 ? r : 0;
}

int pager_donor_drain(struct pager *p, const char *url, bool remove)
{
	return donor_pool_drain(registry_donor_pool(p), url, remove);
}

/*
 * Waits, with the registry unlocked between looks, until busy() says the
 * VM is done. Returns 0, -ENOENT (the VM exited), -ECANCELED (the pager
 * shuts down) or -ETIMEDOUT.
 */
static int wait_vm(struct pager *p, const char *name, bool (*busy)(struct vm *, uint64_t *), uint64_t *ret_left)
{
	for (unsigned long us = 0; us < WAIT_TIMEOUT_S * 1000000UL; us += WAIT_POLL_US) {
		struct vm *vm;
		bool b;

		registry_lock(p);
		vm = registry_find_vm_locked(p, name);
		b = vm && busy(vm, ret_left);
		registry_unlock(p);
		if (!vm)
			return -ENOENT;
		if (!b)
			return 0;
		if (registry_stopping(p))
			return -ECANCELED;
		usleep(WAIT_POLL_US);
	}
	return -ETIMEDOUT;
}

/* One drain request: raise the limit to the guest's size (within the budget) and start. Under the lock. */
static int start_drain_locked(struct pager *p, struct vm *vm, bool first, char *err, size_t errlen)
{
	int r = 0;

	if (vm_local_memory(vm) < vm_guest_bytes(vm))
		r = registry_set_limit_locked(p, vm, vm_guest_bytes(vm), err, errlen);
	if (r < 0)
		return r;
	if (first)
		registry_balloon_update_locked(p, vm, POLICY_BALLOON_DRAIN);
	vm_request_drain(vm);
	return 0;
}

int pager_vm_drain(struct pager *p, const char *name, char *err, size_t errlen)
{
	uint64_t left = 0;
	struct vm *vm;
	int r;

	for (int round = 0; round < 3; round++) {
		registry_lock(p);
		vm = find_vm_or_err_locked(p, name, err, errlen);
		r = vm ? start_drain_locked(p, vm, round == 0, err, errlen) : -ENOENT;
		registry_unlock(p);
		if (r < 0)
			return r;
		r = wait_vm(p, name, vm_drain_busy, &left);
		if (r == -ENOENT) {
			snprintf(err, errlen, "VM '%s' exited during the drain", name);
			return r;
		}
		if (r < 0) {
			snprintf(err, errlen, "drain of '%s' not finished after %d s (%llu pages still stored)", name,
				 WAIT_TIMEOUT_S, (unsigned long long)left);
			return -EIO;
		}
		/* An eviction in flight when the drain began may have stored pages behind the cursor. */
		if (left == 0) {
			vm_log_info(name, "drained: every page is local");
			return 0;
		}
	}
	snprintf(err, errlen, "%llu pages of '%s' could not be brought back (see the pager log)",
		 (unsigned long long)left, name);
	return -EIO;
}

int pager_vm_park(struct pager *p, const char *name, char *err, size_t errlen)
{
	uint64_t resident = 0;
	struct vm *vm;
	int r;

	registry_lock(p);
	vm = find_vm_or_err_locked(p, name, err, errlen);
	if (vm) {
		registry_balloon_update_locked(p, vm, POLICY_BALLOON_PARK);
		vm_request_park(vm);
	}
	registry_unlock(p);
	if (!vm)
		return -ENOENT;
	r = wait_vm(p, name, vm_park_busy, &resident);
	if (r < 0) {
		snprintf(err, errlen, r == -ENOENT ? "VM '%s' exited while parking" : "parking '%s' did not finish", name);
		return r == -ENOENT ? r : -EIO;
	}
	vm_log_info(name, "parked: %llu pages left resident", (unsigned long long)resident);
	return 0;
}

int pager_vm_policy_get(struct pager *p, const char *name, json_t **ret_policy)
{
	_cleanup_free_ char *text = NULL;
	struct vm *vm;

	registry_lock(p);
	vm = registry_find_vm_locked(p, name);
	if (vm)
		text = policy_vm_to_json(vm_policy(vm));
	registry_unlock(p);
	if (!vm)
		return -ENOENT;
	*ret_policy = text ? json_loads(text, 0, NULL) : NULL;
	return *ret_policy ? 0 : -ENOMEM;
}

/* vm.policy.set on a VM found under the registry lock. */
static int policy_set_locked(struct pager *p, struct vm *vm, const json_t *policy, char *err, size_t errlen)
{
	_cleanup_free_ char *cur = policy_vm_to_json(vm_policy(vm)), *text = NULL;
	_cleanup_json_ json_t *merged = cur ? json_loads(cur, 0, NULL) : NULL;
	struct policy_error perr;
	struct policy_vm pol;
	int r;

	/* Keys not given keep their current values: the new policy is the old one updated. */
	if (!merged || json_object_update_recursive(merged, (json_t *)policy) < 0 ||
	    !(text = json_dumps(merged, JSON_INDENT(1)))) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = policy_vm_parse(text, strlen(text), "vm.policy.set", &pol, &perr);
	if (r < 0) {
		snprintf(err, errlen, "%s", perr.msg);
		return r;
	}
	if (pol.local_memory != vm_local_memory(vm)) {
		r = registry_set_limit_locked(p, vm, pol.local_memory, err, errlen);
		if (r < 0)
			return r;
	}
	r = vm_set_policy(vm, &pol, err, errlen);
	if (r < 0)
		return r;
	vm_log_info(vm_name(vm), "policy replaced at run time");
	registry_balloon_update_locked(p, vm, POLICY_BALLOON_LIMIT);
	return 0;
}

int pager_vm_policy_set(struct pager *p, const char *name, const json_t *policy, char *err, size_t errlen)
{
	json_t *nm = json_object_get(policy, "name");
	struct vm *vm;
	int r = -ENOENT;

	if (nm && (!json_is_string(nm) || strcmp(json_string_value(nm), name) != 0)) {
		snprintf(err, errlen, "field 'name': the policy names another VM (allowed: \"%s\" or no name)", name);
		return -EINVAL;
	}
	registry_lock(p);
	vm = find_vm_or_err_locked(p, name, err, errlen);
	if (vm)
		r = policy_set_locked(p, vm, policy, err, errlen);
	registry_unlock(p);
	return r;
}

int pager_events_subscribe(struct pager *p, pager_event_fn fn, void *opaque, uint64_t *ret_id)
{
	(void)p;
	return events_subscribe(fn, opaque, ret_id);
}

void pager_events_unsubscribe(struct pager *p, uint64_t id)
{
	(void)p;
	events_unsubscribe(id);
}
