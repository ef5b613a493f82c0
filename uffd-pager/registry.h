/* SPDX-License-Identifier: MIT */
/*
 * The pager's VM registry and registration server: accepts shims on the
 * registration socket, validates what they send, creates and frees VMs,
 * and enforces the host-wide budget. It runs the daemon's main loop.
 */
#pragma once

#include "pager.h"
#include "policy.h"

/* Binds the registration socket. Returns 0 or -errno (logged). */
int pager_new(const struct policy_pager_config *cfg, struct pager **ret);
/* Serves until SIGTERM/SIGINT. Returns 0 or -errno. */
int pager_run(struct pager *p);
/* Frees every VM (their spill files go too) and closes sockets. NULL-safe. */
void pager_free(struct pager *p);
