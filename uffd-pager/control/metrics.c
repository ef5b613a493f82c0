/* SPDX-License-Identifier: MIT */
/*
 * Prometheus exposition of pager.stats and vm.stats JSON. Output is grouped
 * by family (the format requires every sample of a family to follow its
 * HELP and TYPE lines), so the renderer walks the field table and, inside
 * each field, the VMs. Label values are escaped even though VM names are
 * restricted today: the pager core decides what names it accepts, not this
 * file.
 */
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

enum mtype { GAUGE, COUNTER };

struct field {
	const char *key;    /* in the JSON object */
	const char *metric; /* family name, counters with their _total */
	enum mtype type;
	const char *help;
};

static const struct field vm_fields[] = {
	{ "local_memory", "uffdvm_vm_local_memory_bytes", GAUGE, "Limit of host-resident guest memory." },
	{ "guest_pages", "uffdvm_vm_guest_pages", GAUGE, "Size of guest RAM in 4 KiB pages." },
	{ "high_watermark_pages", "uffdvm_vm_high_watermark_pages", GAUGE,
	  "Residency in pages above which eviction starts." },
	{ "low_watermark_pages", "uffdvm_vm_low_watermark_pages", GAUGE, "Residency in pages at which eviction stops." },
	{ "resident_pages", "uffdvm_vm_resident_pages", GAUGE, "Pages the pager accounts as present in the guest memfd." },
	{ "memfd_resident_pages", "uffdvm_vm_memfd_resident_pages", GAUGE,
	  "Pages the guest memfd really holds (st_blocks)." },
	{ "stored_pages", "uffdvm_vm_stored_pages", GAUGE, "Pages whose contents live in a store, not in host RAM." },
	{ "spill_pages", "uffdvm_vm_spill_pages", GAUGE, "Pages held in the VM's spill file." },
	{ "zero_pages", "uffdvm_vm_zero_pages", GAUGE, "Pages known to be all zeros (not stored)." },
	{ "evictions", "uffdvm_vm_evictions_total", COUNTER, "Pages evicted (stored, then punched out of the memfd)." },
	{ "evictions_aborted", "uffdvm_vm_evictions_aborted_total", COUNTER,
	  "Pages dropped from an eviction, e.g. written during it." },
	{ "refaults", "uffdvm_vm_refaults_total", COUNTER, "Faults on pages that had been evicted." },
	{ "zero_pages_skipped", "uffdvm_vm_zero_pages_skipped_total", COUNTER,
	  "Eviction candidates found all-zero and dropped without storing." },
	{ "shared_pages", "uffdvm_vm_shared_pages", GAUGE,
	  "References the VM holds to its sharing group's copies (docs/sharing.md)." },
	{ "evictions_clean", "uffdvm_vm_evictions_clean_total", COUNTER,
	  "Pages evicted without a store write: the copy they were fetched from was still current." },
	{ "sampled_pages", "uffdvm_vm_sampled_pages_total", COUNTER,
	  "Mappings dropped to learn whether pages are in use (access sampling)." },
	{ "integrity_errors", "uffdvm_vm_integrity_errors_total", COUNTER,
	  "Pages failing their checksum or filled behind the pager's back; each is an alarm." },
	{ "store_errors", "uffdvm_vm_store_errors_total", COUNTER, "Failed reads or writes to donors or the spill file." },
	{ "throttle_waits", "uffdvm_vm_throttle_waits_total", COUNTER,
	  "Times a fault waited for eviction to make room." },
	{ "remove_events", "uffdvm_vm_remove_events_total", COUNTER,
	  "Ranges the guest discarded (balloon, virtio-mem) reported to the pager." },
	{ "eviction_batches", "uffdvm_vm_eviction_batches_total", COUNTER, "Eviction batches run." },
	{ "eviction_mbps", "uffdvm_vm_eviction_mbps", GAUGE, "Eviction throughput in MB/s while the evictor works." },
	{ "eviction_cpu_us_per_page", "uffdvm_vm_eviction_cpu_us_per_page", GAUGE,
	  "The evictor's own CPU time per evicted page, in microseconds." },
	{ "disk_cache_size", "uffdvm_vm_disk_cache_size_bytes", GAUGE, "Size of the VM's disk cache in donor memory." },
	{ "disk_cache_used_bytes", "uffdvm_vm_disk_cache_used_bytes", GAUGE, "Bytes of disk blocks in the cache now." },
	{ "disk_cache_hits", "uffdvm_vm_disk_cache_hits_total", COUNTER, "Disk reads served from the cache." },
	{ "disk_cache_misses", "uffdvm_vm_disk_cache_misses_total", COUNTER, "Disk reads that went to the image." },
	{ "disk_cache_bytes_from_memory", "uffdvm_vm_disk_cache_read_memory_bytes_total", COUNTER,
	  "Bytes of disk reads served from donor memory." },
	{ "disk_cache_bytes_from_disk", "uffdvm_vm_disk_cache_read_disk_bytes_total", COUNTER,
	  "Bytes of disk reads served from the image." },
	{ "disk_cache_queued_bytes", "uffdvm_vm_disk_cache_queued_bytes", GAUGE,
	  "Bytes of missed blocks waiting for the filter's writer to store them." },
	{ "disk_cache_store_skips", "uffdvm_vm_disk_cache_store_skips_total", COUNTER,
	  "Missed blocks not cached because the writer's queue was full." },
};

static const struct field pager_fields[] = {
	{ "budget", "uffdvm_pager_budget_bytes", GAUGE, "Host-wide budget of local memory over all VMs (0 = unlimited)." },
	{ "committed", "uffdvm_pager_committed_bytes", GAUGE, "Sum of the local-memory limits of registered VMs." },
	{ "vms", "uffdvm_pager_vms", GAUGE, "VMs registered now." },
	{ "vms_registered", "uffdvm_pager_vms_registered_total", COUNTER, "VM registrations accepted." },
	{ "vms_refused", "uffdvm_pager_vms_refused_total", COUNTER, "VM registrations refused." },
	{ "vms_exited", "uffdvm_pager_vms_exited_total", COUNTER, "VMs whose QEMU exited and that were freed." },
};

/* Fields rendered specially or not numbers: never taken as unknown gauges. */
static const char *const vm_skip[] = { "name", "pid", "state", "faults", "fault_latency_ns", NULL };
static const char *const vm_states[] = { "running", "degraded", "throttled", "failed", NULL };

static bool in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (!strcmp(*list, s))
			return true;
	return false;
}

static const struct field *find_field(const struct field *t, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(t[i].key, key))
			return &t[i];
	return NULL;
}

static void put_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void put_help(FILE *f, const char *metric, const char *type, const char *help)
{
	fprintf(f, "# HELP %s ", metric);
	/* HELP text escapes only backslash and newline. */
	for (const char *s = help; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", f);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
	fprintf(f, "\n# TYPE %s %s\n", metric, type);
}

static void put_number(FILE *f, const json_t *v)
{
	double d;

	if (json_is_integer(v)) {
		fprintf(f, "%lld\n", (long long)json_integer_value(v));
		return;
	}
	d = json_is_real(v) ? json_real_value(v) : json_is_true(v) ? 1.0 : 0.0;
	if (isnan(d))
		fputs("NaN\n", f);
	else if (isinf(d))
		fputs(d > 0 ? "+Inf\n" : "-Inf\n", f);
	else
		fprintf(f, "%.17g\n", d);
}

static bool is_number(const json_t *v)
{
	return json_is_integer(v) || json_is_real(v) || json_is_boolean(v);
}

static const char *vm_name(const json_t *vm)
{
	const char *n = json_string_value(json_object_get(vm, "name"));

	return n ? n : "";
}

static void put_series_start(FILE *f, const char *metric, const json_t *vm)
{
	fprintf(f, "%s{vm=\"", metric);
	put_label_value(f, vm_name(vm));
	fputc('"', f);
}

/* Family of one numeric VM field over all VMs; nothing if no VM has it. */
static void put_vm_field(FILE *f, const json_t *vms, const char *key, const char *metric, enum mtype type,
			 const char *help)
{
	bool any = false;
	size_t i;
	json_t *vm;

	json_array_foreach(vms, i, vm) {
		json_t *v = json_object_get(vm, key);

		if (!is_number(v))
			continue;
		if (!any)
			put_help(f, metric, type == COUNTER ? "counter" : "gauge", help);
		any = true;
		put_series_start(f, metric, vm);
		fputs("} ", f);
		put_number(f, v);
	}
}

/* A JSON key as a metric name component: [a-z0-9_], anything else becomes '_'. */
static void sanitize(const char *key, char *buf, size_t len)
{
	size_t i;

	for (i = 0; key[i] && i + 1 < len; i++) {
		char c = key[i];

		buf[i] = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ? c
			 : (c >= 'A' && c <= 'Z')				       ? (char)(c - 'A' + 'a')
											       : '_';
	}
	buf[i] = '\0';
}

static void put_vm_info_state(FILE *f, const json_t *vms)
{
	size_t i;
	json_t *vm;

	if (!json_array_size(vms))
		return;
	put_help(f, "uffdvm_vm_info", "gauge", "Always 1; labels: the VM's name and QEMU's pid.");
	json_array_foreach(vms, i, vm) {
		put_series_start(f, "uffdvm_vm_info", vm);
		fprintf(f, ",pid=\"%lld\"} 1\n", (long long)json_integer_value(json_object_get(vm, "pid")));
	}
	put_help(f, "uffdvm_vm_state", "gauge",
		 "1 for the VM's current state (running, degraded, throttled, failed), 0 for the others.");
	json_array_foreach(vms, i, vm) {
		const char *st = json_string_value(json_object_get(vm, "state"));

		for (const char *const *s = vm_states; *s; s++) {
			put_series_start(f, "uffdvm_vm_state", vm);
			fprintf(f, ",state=\"%s\"} %d\n", *s, st && !strcmp(st, *s));
		}
		if (st && !in_list(vm_states, st)) {
			put_series_start(f, "uffdvm_vm_state", vm);
			fputs(",state=\"", f);
			put_label_value(f, st);
			fputs("\"} 1\n", f);
		}
	}
}

static void put_vm_faults(FILE *f, const json_t *vms)
{
	bool any = false;
	const char *kind;
	size_t i;
	json_t *vm, *v;

	json_array_foreach(vms, i, vm) {
		json_object_foreach(json_object_get(vm, "faults"), kind, v) {
			if (!is_number(v))
				continue;
			if (!any)
				put_help(f, "uffdvm_vm_faults_total", "counter",
					 "Faults served, by how: zero, spill, discard, wp, duplicate, ...");
			any = true;
			put_series_start(f, "uffdvm_vm_faults_total", vm);
			fputs(",kind=\"", f);
			put_label_value(f, kind);
			fputs("\"} ", f);
			put_number(f, v);
		}
	}
}

static void put_vm_latency(FILE *f, const json_t *vms)
{
	bool any = false;
	size_t i, j;
	json_t *vm, *b;

	json_array_foreach(vms, i, vm) {
		json_t *h = json_object_get(vm, "fault_latency_ns");
		json_int_t count = json_integer_value(json_object_get(h, "count")), cum = 0;
		double sum_ns;

		if (!json_is_object(h))
			continue;
		if (!any)
			put_help(f, "uffdvm_vm_fault_latency_seconds", "histogram",
				 "Fault service latency, from the fault message to the wake-up.");
		any = true;
		/* Buckets arrive in ascending order with per-bucket counts; Prometheus wants them cumulative. */
		json_array_foreach(json_object_get(h, "buckets"), j, b) {
			cum += json_integer_value(json_object_get(b, "count"));
			put_series_start(f, "uffdvm_vm_fault_latency_seconds_bucket", vm);
			fprintf(f, ",le=\"%.9g\"} %lld\n", (double)json_integer_value(json_object_get(b, "le")) / 1e9,
				(long long)cum);
		}
		put_series_start(f, "uffdvm_vm_fault_latency_seconds_bucket", vm);
		/* +Inf is the total: a count raced ahead of the buckets must not make it smaller. */
		fprintf(f, ",le=\"+Inf\"} %lld\n", (long long)(count > cum ? count : cum));
		if (json_object_get(h, "sum"))
			sum_ns = (double)json_integer_value(json_object_get(h, "sum"));
		else
			sum_ns = (double)json_integer_value(json_object_get(h, "mean")) * (double)count;
		put_series_start(f, "uffdvm_vm_fault_latency_seconds_sum", vm);
		fprintf(f, "} %.9g\n", sum_ns / 1e9);
		put_series_start(f, "uffdvm_vm_fault_latency_seconds_count", vm);
		fprintf(f, "} %lld\n", (long long)(count > cum ? count : cum));
	}
	if (!any)
		return;
	put_help(f, "uffdvm_vm_fault_latency_max_seconds", "gauge", "Longest fault service time seen.");
	json_array_foreach(vms, i, vm) {
		json_t *h = json_object_get(vm, "fault_latency_ns");

		if (!json_is_object(h))
			continue;
		put_series_start(f, "uffdvm_vm_fault_latency_max_seconds", vm);
		fprintf(f, "} %.9g\n", (double)json_integer_value(json_object_get(h, "max")) / 1e9);
	}
}

/* Numeric fields not in the table, in first-seen order, as gauges. */
static int put_vm_unknown(FILE *f, const json_t *vms)
{
	json_t *seen = json_object();
	const char *key;
	size_t i;
	json_t *vm, *v;

	if (!seen)
		return -ENOMEM;
	json_array_foreach(vms, i, vm) {
		json_object_foreach(vm, key, v) {
			if (is_number(v) && !in_list(vm_skip, key) && !find_field(vm_fields, ARRAY_SIZE(vm_fields), key))
				json_object_set_new(seen, key, json_true());
		}
	}
	json_object_foreach(seen, key, v) {
		char name[160], help[160], metric[200];

		sanitize(key, name, sizeof(name));
		snprintf(metric, sizeof(metric), "uffdvm_vm_%s", name);
		/* A field whose name would collide with a rendered family is left to the JSON API. */
		if (!strcmp(name, "info") || !strcmp(name, "state") || !strncmp(name, "faults", 6) ||
		    !strncmp(name, "fault_latency", 13))
			continue;
		snprintf(help, sizeof(help), "vm.stats field \"%s\" (docs/control-api.md).", key);
		put_vm_field(f, vms, key, metric, GAUGE, help);
	}
	json_decref(seen);
	return 0;
}

static void put_pager(FILE *f, const json_t *pager)
{
	const char *key, *ver;
	json_t *v;

	if (!json_is_object(pager))
		return;
	ver = json_string_value(json_object_get(pager, "version"));
	put_help(f, "uffdvm_pager_info", "gauge", "Always 1; label: the pager's version.");
	fputs("uffdvm_pager_info{version=\"", f);
	put_label_value(f, ver ? ver : "unknown");
	fputs("\"} 1\n", f);
	json_object_foreach((json_t *)pager, key, v) {
		const struct field *fd = find_field(pager_fields, ARRAY_SIZE(pager_fields), key);
		char name[160], metric[200], help[160];

		if (!is_number(v))
			continue;
		if (fd) {
			put_help(f, fd->metric, fd->type == COUNTER ? "counter" : "gauge", fd->help);
			fprintf(f, "%s ", fd->metric);
		} else {
			sanitize(key, name, sizeof(name));
			if (!strcmp(name, "info"))
				continue;
			snprintf(metric, sizeof(metric), "uffdvm_pager_%s", name);
			snprintf(help, sizeof(help), "pager.stats field \"%s\" (docs/control-api.md).", key);
			put_help(f, metric, "gauge", help);
			fprintf(f, "%s ", metric);
		}
		put_number(f, v);
	}
}

static const struct field group_fields[] = {
	{ "members", "uffdvm_sharing_group_members", GAUGE, "VMs in the sharing group." },
	{ "copies", "uffdvm_sharing_group_copies", GAUGE, "Distinct pages the group stores." },
	{ "references", "uffdvm_sharing_group_references", GAUGE, "Stored pages of its VMs naming those copies." },
	{ "bytes_saved", "uffdvm_sharing_group_saved_bytes", GAUGE,
	  "Bytes not stored thanks to sharing: 4 KiB per reference beyond the first of each copy." },
	{ "hits", "uffdvm_sharing_group_hits_total", COUNTER, "Evicted pages whose content the group already held." },
	{ "rereplications", "uffdvm_sharing_group_rereplications_total", COUNTER,
	  "Group copies re-created after a donor failed." },
};

/* pager.stats "sharing_groups": one series per group, labelled with its name. */
static void put_groups(FILE *f, const json_t *pager)
{
	json_t *groups = json_object_get(pager, "sharing_groups"), *g;
	size_t i;

	if (!json_array_size(groups))
		return;
	for (size_t k = 0; k < ARRAY_SIZE(group_fields); k++) {
		const struct field *fd = &group_fields[k];

		put_help(f, fd->metric, fd->type == COUNTER ? "counter" : "gauge", fd->help);
		json_array_foreach(groups, i, g) {
			const char *name = json_string_value(json_object_get(g, "name"));
			json_t *v = json_object_get(g, fd->key);

			if (!is_number(v))
				continue;
			fprintf(f, "%s{group=\"", fd->metric);
			put_label_value(f, name ? name : "");
			fputs("\"} ", f);
			put_number(f, v);
		}
	}
}

int ctl_metrics_render(const json_t *pager, const json_t *vms, char **ret_text, size_t *ret_len)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	int r = 0;

	f = open_memstream(&text, &len);
	if (!f)
		return -ENOMEM;
	put_pager(f, pager);
	put_groups(f, pager);
	if (json_is_array(vms)) {
		put_vm_info_state(f, vms);
		for (size_t i = 0; i < ARRAY_SIZE(vm_fields); i++)
			put_vm_field(f, vms, vm_fields[i].key, vm_fields[i].metric, vm_fields[i].type, vm_fields[i].help);
		put_vm_faults(f, vms);
		put_vm_latency(f, vms);
		r = put_vm_unknown(f, vms);
	}
	if (fclose(f) != 0 || r < 0 || !text) {
		free(text);
		return r < 0 ? r : -ENOMEM;
	}
	*ret_text = text;
	*ret_len = len;
	return 0;
}
