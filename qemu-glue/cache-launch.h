/* SPDX-License-Identifier: MIT */
/*
 * uffd-qemu's side of the disk cache (docs/disk-cache.md): one nbdkit per
 * VM serves the drives the policy's disk_cache names, each an export of
 * the file plugin (its image linked into a private runtime directory) under
 * the uffdvm cache filter, on a Unix socket in that directory. A keeper
 * process, in a session of its own, watches QEMU through a pidfd and stops
 * nbdkit only once QEMU is gone (so QEMU's last flush reaches the image),
 * then removes the directory.
 */
#pragma once

#include "policy.h"

/*
 * Starts nbdkit for policy's disk_cache and waits until it listens; on
 * success *ret_argv is argv with the named drives rewritten to its exports
 * (lives until exec), and policy's disk_cache.stats_file names the file
 * the filter keeps its counters in (the pager shows them). Every refusal
 * and failure is logged, naming the drive or file. Returns 0 or -errno.
 */
int glue_cache_start(struct policy_vm *policy, const char *vm, int argc, char *const *argv, int *ret_argc,
		     char *const **ret_argv);
