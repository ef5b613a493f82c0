/* SPDX-License-Identifier: MIT */
/*
 * Control commands whose work belongs to the pager core: vm.drain, vm.park,
 * vm.policy.get and vm.policy.set call these pager.h functions. Until the
 * core defines them, these weak stand-ins answer -ENOSYS, so the commands
 * exist in the protocol (and the CLI, tests and fuzzer exercise their
 * validation and access control) without the server knowing how the core
 * does the work. A strong definition in the core replaces each one; delete
 * this file once all four exist.
 */
#include <errno.h>

#include "pager.h"

__attribute__((weak)) int pager_vm_drain(struct pager *p, const char *name, char *err, size_t errlen)
{
	return -ENOSYS;
}

__attribute__((weak)) int pager_vm_park(struct pager *p, const char *name, char *err, size_t errlen)
{
	return -ENOSYS;
}

__attribute__((weak)) int pager_vm_policy_get(struct pager *p, const char *name, json_t **ret_policy)
{
	return -ENOSYS;
}

__attribute__((weak)) int pager_vm_policy_set(struct pager *p, const char *name, const json_t *policy, char *err,
					      size_t errlen)
{
	return -ENOSYS;
}
