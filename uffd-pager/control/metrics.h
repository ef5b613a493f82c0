/* SPDX-License-Identifier: MIT */
/*
 * Prometheus text exposition (format 0.0.4) of the pager's statistics, built
 * from the same JSON the control API returns (pager.stats, vm.stats), so
 * metrics and `uffd-ctl` can never disagree. Pure functions: JSON in, text
 * out, unit-testable without a pager.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>

#define CTL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * Renders pager (a pager.stats result, may be NULL) and vms (an array of
 * vm.stats results) as one exposition: every family once, with HELP and
 * TYPE, per-VM series labelled vm="NAME"; counters end in _total; the fault
 * latency histogram becomes uffdvm_vm_fault_latency_seconds with cumulative
 * le buckets. Numeric fields it does not know become gauges, so new pager
 * statistics appear without a change here. Returns 0 or -ENOMEM;
 * *ret_text is malloc'ed and NUL-terminated.
 */
int ctl_metrics_render(const json_t *pager, const json_t *vms, char **ret_text, size_t *ret_len);
