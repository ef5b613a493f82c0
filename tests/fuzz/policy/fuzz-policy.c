/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the policy parsers: arbitrary bytes go through the
 * per-VM policy and pager configuration parsers (and so through the error
 * position locator). Besides "no crash, no sanitizer report", it checks
 * invariants: every error message carries FILE:LINE:COLUMN, and a policy
 * that parses serializes to JSON that parses back to the same policy.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(const struct policy_error *err, const char *source)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "%s:%d:%d: ", source, err->line, err->column);
	if (err->line < 1 || err->column < 1 || strncmp(err->msg, prefix, strlen(prefix)) != 0) {
		fprintf(stderr, "malformed error: %s\n", err->msg);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy_vm vm, back;
	struct policy_pager_config cfg;
	struct policy_error err;
	char *json, *again;

	if (policy_vm_parse((const char *)data, size, "fuzz.json", &vm, &err) < 0) {
		check_error(&err, "fuzz.json");
	} else {
		json = policy_vm_to_json(&vm);
		if (!json)
			abort();
		if (policy_vm_parse(json, strlen(json), "roundtrip", &back, &err) < 0) {
			fprintf(stderr, "round trip failed: %s\n%s\n", err.msg, json);
			abort();
		}
		if (strcmp(vm.name, back.name) != 0 || vm.local_memory != back.local_memory ||
		    vm.high_pct != back.high_pct || vm.low_pct != back.low_pct ||
		    vm.spill_max != back.spill_max ||
		    vm.on_pager_unavailable != back.on_pager_unavailable ||
		    vm.on_data_loss != back.on_data_loss)
			abort();
		/* Every field, including those added later: both write the same text. */
		again = policy_vm_to_json(&back);
		if (!again || strcmp(json, again) != 0) {
			fprintf(stderr, "round trip changed the policy:\n%s\n%s\n", json, again ? again : "(null)");
			abort();
		}
		free(again);
		if (policy_vm_low_pages(&vm, 4096) > policy_vm_high_pages(&vm, 4096))
			abort();
		free(json);
	}
	if (policy_config_parse((const char *)data, size, "fuzz.json", &cfg, &err) < 0)
		check_error(&err, "fuzz.json");
	return 0;
}
