/* SPDX-License-Identifier: MIT */
/*
 * A stand-in for the pager's operations API (ops.h), so the control server and
 * uffd-ctl can be tested end to end without userfaultfd or guests. It keeps
 * a few VMs with figures derived from their names and limits, enforces a
 * host budget in pager_vm_set_limit, and counts calls.
 */
#pragma once

#include <stdint.h>

#include "ops.h"

#define FAKE_BUDGET (4ULL << 30)

struct pager *fake_pager_new(void);
void fake_pager_free(struct pager *p);
/* Adds a VM; "full" VMs report every stats field, others only a few. Returns 0 or -errno. */
int fake_pager_add_vm(struct pager *p, const char *name, int pid, uint64_t limit, int full);
unsigned fake_pager_set_limit_calls(struct pager *p);
/* How many events.subscribe subscriptions are live. */
unsigned fake_pager_subscribers(void);
/* Sends an event to the subscribers, as the pager's event bus (events_emit) would; fields are stolen. */
void fake_pager_emit(const char *type, json_t *fields);
