/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the Prometheus renderer (uffd-pager/control/metrics.c):
 * cumulative histogram buckets from the pager's per-bucket counts, one
 * HELP/TYPE per family even with several VMs, label escaping, counters
 * named _total, unknown numeric fields as gauges, and no output for what
 * is absent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static char *render(const char *pager, const char *vms)
{
	json_t *p = pager ? json_loads(pager, 0, NULL) : NULL, *v = json_loads(vms, 0, NULL);
	char *text = NULL;
	size_t len = 0;

	assert_non_null(v);
	assert_int_equal(ctl_metrics_render(p, v, &text, &len), 0);
	assert_int_equal(strlen(text), len);
	json_decref(p);
	json_decref(v);
	return text;
}

static int count_of(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static void test_histogram(void **state)
{
	char *t = render(NULL, "[{\"name\": \"a\", \"fault_latency_ns\": {\"count\": 7, \"mean\": 2000, \"max\": 9000,"
			       " \"buckets\": [{\"le\": 1000, \"count\": 2}, {\"le\": 4000, \"count\": 3},"
			       " {\"le\": 16000, \"count\": 2}]}}]");

	assert_non_null(strstr(t, "# TYPE uffdvm_vm_fault_latency_seconds histogram\n"));
	assert_non_null(strstr(t, "uffdvm_vm_fault_latency_seconds_bucket{vm=\"a\",le=\"1e-06\"} 2\n"));
	assert_non_null(strstr(t, "uffdvm_vm_fault_latency_seconds_bucket{vm=\"a\",le=\"4e-06\"} 5\n"));
	assert_non_null(strstr(t, "uffdvm_vm_fault_latency_seconds_bucket{vm=\"a\",le=\"1.6e-05\"} 7\n"));
	assert_non_null(strstr(t, "uffdvm_vm_fault_latency_seconds_bucket{vm=\"a\",le=\"+Inf\"} 7\n"));
	/* Without an exact sum the mean times the count stands in. */
	assert_non_null(strstr(t, "uffdvm_vm_fault_latency_seconds_sum{vm=\"a\"} 1.4e-05\n"));
	assert_non_null(strstr(t, "uffdvm_vm_fault_latency_seconds_count{vm=\"a\"} 7\n"));
	assert_non_null(strstr(t, "uffdvm_vm_fault_latency_max_seconds{vm=\"a\"} 9e-06\n"));
	free(t);

	/* A count that raced ahead of the buckets: +Inf never below the last bucket, never below count. */
	t = render(NULL, "[{\"name\": \"a\", \"fault_latency_ns\": {\"count\": 1, \"sum\": 5000,"
			 " \"buckets\": [{\"le\": 1000, \"count\": 3}]}}]");
	assert_non_null(strstr(t, "le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(t, "uffdvm_vm_fault_latency_seconds_sum{vm=\"a\"} 5e-06\n"));
	free(t);
}

static void test_families_once(void **state)
{
	char *t = render("{\"version\": \"9.9\", \"budget\": 100, \"vms_registered\": 4, \"extra\": 1.5, \"state_dir\": \"/x\"}",
			 "[{\"name\": \"a\", \"pid\": 10, \"state\": \"running\", \"evictions\": 5,"
			 " \"faults\": {\"zero\": 1, \"spill\": 2}, \"new_thing\": 3},"
			 " {\"name\": \"b\", \"pid\": 11, \"state\": \"failed\", \"evictions\": 6, \"new_thing\": 4}]");

	assert_int_equal(count_of(t, "# HELP uffdvm_vm_evictions_total "), 1);
	assert_int_equal(count_of(t, "# TYPE uffdvm_vm_evictions_total counter\n"), 1);
	assert_non_null(strstr(t, "uffdvm_vm_evictions_total{vm=\"a\"} 5\nuffdvm_vm_evictions_total{vm=\"b\"} 6\n"));
	assert_non_null(strstr(t, "uffdvm_vm_faults_total{vm=\"a\",kind=\"spill\"} 2\n"));
	assert_non_null(strstr(t, "uffdvm_vm_info{vm=\"b\",pid=\"11\"} 1\n"));
	assert_non_null(strstr(t, "uffdvm_vm_state{vm=\"b\",state=\"failed\"} 1\n"));
	assert_non_null(strstr(t, "uffdvm_vm_state{vm=\"b\",state=\"running\"} 0\n"));
	assert_non_null(strstr(t, "# TYPE uffdvm_vm_new_thing gauge\n"));
	assert_non_null(strstr(t, "uffdvm_vm_new_thing{vm=\"b\"} 4\n"));
	assert_non_null(strstr(t, "uffdvm_pager_info{version=\"9.9\"} 1\n"));
	assert_non_null(strstr(t, "# TYPE uffdvm_pager_vms_registered_total counter\nuffdvm_pager_vms_registered_total 4\n"));
	assert_non_null(strstr(t, "uffdvm_pager_extra 1.5\n"));
	assert_null(strstr(t, "state_dir"));
	/* Absent fields make no family at all. */
	assert_null(strstr(t, "refaults"));
	assert_null(strstr(t, "fault_latency"));
	free(t);
}

static void test_escaping(void **state)
{
	char *t = render(NULL, "[{\"name\": \"a\\\"b\\\\c\\nd\", \"pid\": 1, \"state\": \"odd\\\"\", \"Weird-Key\": 2}]");

	assert_non_null(strstr(t, "uffdvm_vm_info{vm=\"a\\\"b\\\\c\\nd\",pid=\"1\"} 1\n"));
	assert_non_null(strstr(t, "state=\"odd\\\"\"} 1\n"));
	assert_non_null(strstr(t, "uffdvm_vm_weird_key{vm="));
	free(t);
	t = render(NULL, "[]");
	assert_string_equal(t, "");
	free(t);
}

/* Sharing groups: one series per group and family, labelled with the group's name; a VM's shared pages. */
static void test_sharing_groups(void **state)
{
	char *t = render("{\"version\": \"1\", \"sharing_groups\": [{\"name\": \"a\", \"members\": 4, \"copies\": 10, "
			 "\"references\": 40, \"bytes_saved\": 122880, \"hits\": 30}, {\"name\": \"b\", \"members\": 1, "
			 "\"copies\": 5, \"references\": 5, \"bytes_saved\": 0, \"hits\": 0}]}",
			 "[{\"name\": \"v\", \"shared_pages\": 10}]");

	(void)state;
	assert_int_equal(count_of(t, "# TYPE uffdvm_sharing_group_copies gauge\n"), 1);
	assert_non_null(strstr(t, "uffdvm_sharing_group_copies{group=\"a\"} 10\n"));
	assert_non_null(strstr(t, "uffdvm_sharing_group_copies{group=\"b\"} 5\n"));
	assert_non_null(strstr(t, "uffdvm_sharing_group_saved_bytes{group=\"a\"} 122880\n"));
	assert_non_null(strstr(t, "# TYPE uffdvm_sharing_group_hits_total counter\n"));
	assert_non_null(strstr(t, "uffdvm_vm_shared_pages{vm=\"v\"} 10\n"));
	/* The array is not a number: no stray pager gauge for it. */
	assert_null(strstr(t, "uffdvm_pager_sharing_groups"));
	free(t);
	t = render("{\"version\": \"1\"}", "[]");
	assert_null(strstr(t, "sharing_group"));
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sharing_groups),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_families_once),
		cmocka_unit_test(test_escaping),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
