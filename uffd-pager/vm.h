/* SPDX-License-Identifier: MIT */
/*
 * One paged VM: its uffd, guest-RAM regions, page map, fault thread and
 * evictor thread. The registry (registry.c) creates a VM when a shim says
 * HELLO, adds regions as the shim maps RAM, and frees it when the shim's
 * connection ends.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "policy.h"

struct vm;
struct donor_pool;
struct vmstate;

/*
 * Takes ownership of uffd, pidfd and the state file vs (vmstate.h), also
 * on failure. adopt: vs is a dead pager's, opened and checked; the page
 * map in it is taken as it is, and the VM pages once every recorded
 * region is back (on failure the files are kept). Else the map starts empty.
 */
int vm_new(const struct policy_vm *policy, pid_t pid, int pidfd, int uffd, const char *state_dir,
	   uint64_t max_guest_memory, struct donor_pool *pool, struct vmstate *vs, bool adopt, struct vm **ret,
	   char *err, size_t errlen);
/*
 * Adds a guest-RAM mapping backed by memfd (ownership taken). The first
 * region starts the fault and evictor threads; for an adopted VM each
 * region must be the one its state file records, and the last one
 * recovers the pages' states and starts the threads. Returns 0 or -errno
 * with a reason in err.
 */
int vm_add_region(struct vm *vm, int memfd, uint64_t host_addr, uint64_t length, uint64_t memfd_offset,
		  char *err, size_t errlen);
/* Stops the threads, gives the slabs back, deletes the state, spill and key files, closes every fd. NULL-safe. */
void vm_free(struct vm *vm);
/* The VM lives on without this pager: stops the threads and closes every fd, keeping files and slabs. NULL-safe. */
void vm_detach(struct vm *vm);
/*
 * The shim's sampler socket (GLUE_MSG_SAMPLER; ownership taken): from now
 * on the evictor asks it to unmap the pages its victim policy wants to
 * watch (access sampling). Replaces an earlier one.
 */
void vm_set_sampler(struct vm *vm, int fd);
/* Adopted from a dead pager: true once it pages again (ret_waited_ms: how long it had no pager). */
bool vm_adopted(struct vm *vm, uint32_t *ret_waited_ms, uint64_t *ret_recover_ns);
/* An adopted VM whose adoption has not finished: its files must outlive a failed attempt. */
bool vm_adoption_pending(struct vm *vm);
void vm_set_waited(struct vm *vm, uint32_t waited_ms);
/* The VM's secret, for the shim to resume with (GLUE_SECRET_LEN bytes). */
const uint8_t *vm_secret(const struct vm *vm);

const char *vm_name(const struct vm *vm);
/* Domain UUID from HELLO ("" if none); set once, before the VM is published. */
const char *vm_uuid(const struct vm *vm);
void vm_set_uuid(struct vm *vm, const char *uuid);
pid_t vm_pid(const struct vm *vm);
uint64_t vm_local_memory(const struct vm *vm);
/* Changes the local-memory limit; lowering it wakes the evictor. */
void vm_set_local_memory(struct vm *vm, uint64_t bytes);
uint64_t vm_guest_bytes(const struct vm *vm);
const struct policy_vm *vm_policy(const struct vm *vm);
/*
 * Replaces the run-time policy (limits, watermarks, spill cap, loss action).
 * Durability cannot change while the VM runs. Returns 0 or -EINVAL with err.
 */
int vm_set_policy(struct vm *vm, const struct policy_vm *pol, char *err, size_t errlen);
/*
 * vm.drain: the fault thread installs every stored page between faults,
 * and nothing is evicted until the limit changes. The caller raises the
 * limit to the guest's size first. vm_drain_busy() tells whether it is
 * still working and how many pages are still stored elsewhere.
 */
void vm_request_drain(struct vm *vm);
bool vm_drain_busy(struct vm *vm, uint64_t *ret_stored);
/* vm.park: evict as much as the stores take, once; refaults bring pages back. */
void vm_request_park(struct vm *vm);
bool vm_park_busy(struct vm *vm, uint64_t *ret_resident);
/*
 * While the guest's balloon settles (settling true), nothing is paged out
 * and faults are not throttled, so the guest can give memory back before
 * the pager takes it; false restores the policy's watermarks and wakes
 * the evictor.
 */
void vm_set_balloon_settle(struct vm *vm, bool settling);
/* Full statistics (docs/control-api.md); brief = the vm.list subset. */
json_t *vm_stats_json(struct vm *vm, bool brief);
