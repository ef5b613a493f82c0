/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of policy parsing: every rule of the per-VM policy and pager
 * configuration schemas, the exact position and wording of the errors an
 * operator sees, size parsing edge cases and the JSON round trip.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"
#include "policy.h"
#include "victim.h"

/* ---- helpers ----------------------------------------------------------------- */

static int vm_parse(const char *text, struct policy_vm *ret, struct policy_error *err)
{
	return policy_vm_parse(text, strlen(text), "vm.json", ret, err);
}

static int cfg_parse(const char *text, struct policy_pager_config *ret, struct policy_error *err)
{
	return policy_config_parse(text, strlen(text), "pager.json", ret, err);
}

/*
 * Checks an error: the FILE:LINE:COLUMN prefix, the field name and that
 * each of the NULL-terminated needles (allowed values, problem words)
 * appears in the message.
 */
static void check_err(const struct policy_error *err, const char *source, const char *field,
		      int line, int col, ...)
{
	char prefix[256];
	va_list ap;
	const char *needle;

	snprintf(prefix, sizeof(prefix), "%s:%d:%d: ", source, line, col);
	if (strncmp(err->msg, prefix, strlen(prefix)) != 0)
		fail_msg("expected prefix \"%s\" in \"%s\"", prefix, err->msg);
	assert_int_equal(err->line, line);
	assert_int_equal(err->column, col);
	if (field) {
		char f[128];

		snprintf(f, sizeof(f), "field '%s': ", field);
		if (strncmp(err->msg + strlen(prefix), f, strlen(f)) != 0)
			fail_msg("expected \"%s\" after the position in \"%s\"", f, err->msg);
	}
	va_start(ap, col);
	while ((needle = va_arg(ap, const char *)))
		if (!strstr(err->msg, needle))
			fail_msg("expected \"%s\" in \"%s\"", needle, err->msg);
	va_end(ap);
}

static void vm_bad(const char *text, const char *field, int line, int col, const char *needle1,
		   const char *needle2)
{
	struct policy_vm p;
	struct policy_error err;

	memset(&p, 0x5a, sizeof(p));
	assert_int_equal(vm_parse(text, &p, &err), -EINVAL);
	check_err(&err, "vm.json", field, line, col, needle1, needle2, NULL);
	/* ret untouched on failure */
	for (size_t i = 0; i < sizeof(p); i++)
		assert_int_equal(((unsigned char *)&p)[i], 0x5a);
}

static void cfg_bad(const char *text, const char *field, int line, int col, const char *needle1,
		    const char *needle2)
{
	struct policy_pager_config c;
	struct policy_error err;

	assert_int_equal(cfg_parse(text, &c, &err), -EINVAL);
	check_err(&err, "pager.json", field, line, col, needle1, needle2, NULL);
}

#define VM_ALLOWED_KEYS \
	"allowed: name, local_memory, watermarks, spill, on_pager_unavailable, on_data_loss"

/* ---- per-VM policy: valid input ---------------------------------------------- */

static void test_vm_minimal_defaults(void **state)
{
	struct policy_vm p;
	struct policy_error err;

	assert_int_equal(vm_parse("{\"name\": \"web-1\", \"local_memory\": \"512M\"}", &p, &err), 0);
	assert_string_equal(p.name, "web-1");
	assert_int_equal(p.local_memory, 512ULL << 20);
	assert_int_equal(p.high_pct, 100);
	assert_int_equal(p.low_pct, 90);
	assert_int_equal(p.spill_max, 0);
	assert_int_equal(p.on_pager_unavailable, POLICY_UNAVAILABLE_REFUSE);
	assert_int_equal(p.on_data_loss, POLICY_LOSS_STOP);
	assert_int_equal(p.on_store_full, POLICY_STORE_FULL_DEGRADE);
	assert_string_equal(err.msg, "");
}

static void test_vm_full(void **state)
{
	const char *text = "{\n"
			   "  \"_comment\": \"a comment is ignored\",\n"
			   "  \"name\": \"db_2.prod\",\n"
			   "  \"local_memory\": 4294967296,\n"
			   "  \"watermarks\": {\"_why\": [1, {\"x\": 2}], \"high\": \"95%\", \"low\": 80},\n"
			   "  \"spill\": {\"max_size\": \"16GiB\", \"_note\": null},\n"
			   "  \"on_pager_unavailable\": \"run-unpaged\",\n"
			   "  \"on_data_loss\": \"kill\"\n"
			   "}\n";
	struct policy_vm p;
	struct policy_error err;

	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_string_equal(p.name, "db_2.prod");
	assert_int_equal(p.local_memory, 4ULL << 30);
	assert_int_equal(p.high_pct, 95);
	assert_int_equal(p.low_pct, 80);
	assert_int_equal(p.spill_max, 16ULL << 30);
	assert_int_equal(p.on_pager_unavailable, POLICY_UNAVAILABLE_RUN_UNPAGED);
	assert_int_equal(p.on_data_loss, POLICY_LOSS_KILL);
}

static void test_vm_name_limits(void **state)
{
	char text[256], name[80];
	struct policy_vm p;
	struct policy_error err;

	memset(name, 'a', 63);
	name[63] = '\0';
	snprintf(text, sizeof(text), "{\"name\": \"%s\", \"local_memory\": \"1M\"}", name);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_string_equal(p.name, name);

	name[63] = 'a';
	name[64] = '\0';
	snprintf(text, sizeof(text), "{\"name\": \"%s\", \"local_memory\": \"1M\"}", name);
	vm_bad(text, "name", 1, 10, "64 characters", "1..63 characters");

	vm_bad("{\"name\": \"\", \"local_memory\": \"1M\"}", "name", 1, 10, "0 characters",
	       "1..63");
	vm_bad("{\"name\": \"a b\", \"local_memory\": \"1M\"}", "name", 1, 10, "invalid name \"a b\"",
	       "A-Z a-z 0-9 . _ -");
	vm_bad("{\"name\": \"a/b\", \"local_memory\": \"1M\"}", "name", 1, 10, "invalid name",
	       "A-Z a-z 0-9 . _ -");
	vm_bad("{\"name\": \"..\", \"local_memory\": \"1M\"}", "name", 1, 10, "invalid name",
	       "not \".\" or \"..\"");
	vm_bad("{\"name\": \"caf\\u00e9\", \"local_memory\": \"1M\"}", "name", 1, 10, "invalid name",
	       "A-Z");
	vm_bad("{\"name\": 7, \"local_memory\": \"1M\"}", "name", 1, 10, "expected a string, got an integer",
	       "1..63");
	assert_true(policy_name_valid("A.b_c-9"));
	assert_false(policy_name_valid("."));
	assert_false(policy_name_valid(NULL));
}

/* ---- sizes ----------------------------------------------------------------------- */

static uint64_t vm_local(const char *value)
{
	char text[256];
	struct policy_vm p;
	struct policy_error err;
	int r;

	snprintf(text, sizeof(text), "{\"name\": \"a\", \"local_memory\": %s}", value);
	r = vm_parse(text, &p, &err);
	if (r < 0)
		fail_msg("%s: %s", value, err.msg);
	return p.local_memory;
}

static void test_sizes(void **state)
{
	assert_int_equal(vm_local("\"1M\""), 1ULL << 20);
	assert_int_equal(vm_local("\"1m\""), 1ULL << 20);
	assert_int_equal(vm_local("\"1MiB\""), 1ULL << 20);
	assert_int_equal(vm_local("\"1MB\""), 1ULL << 20);
	assert_int_equal(vm_local("\"1024K\""), 1ULL << 20);
	assert_int_equal(vm_local("\"2G\""), 2ULL << 30);
	assert_int_equal(vm_local("\"1GiB\""), 1ULL << 30);
	assert_int_equal(vm_local("\"3T\""), 3ULL << 40);
	assert_int_equal(vm_local("1048576"), 1ULL << 20);
	assert_int_equal(vm_local("\"1048576\""), 1ULL << 20);
	/* Rounded down to whole 4 KiB pages. */
	assert_int_equal(vm_local("1052671"), 1ULL << 20);
	assert_int_equal(vm_local("1052672"), (1ULL << 20) + 4096);
	assert_int_equal(vm_local("\"1025K\""), 1ULL << 20);
	assert_int_equal(vm_local("\"16383T\""), 16383ULL << 40);
}

static void test_sizes_bad(void **state)
{
	/* local_memory starts at column 31 in every case. */
	vm_bad("{\"name\": \"a\", \"local_memory\": \"1.5G\"}", "local_memory", 1, 31,
	       "\"1.5G\" is not a size", "suffix K, M, G or T");
	vm_bad("{\"name\": \"a\", \"local_memory\": \"\"}", "local_memory", 1, 31, "is not a size",
	       "\"512M\"");
	vm_bad("{\"name\": \"a\", \"local_memory\": \"G\"}", "local_memory", 1, 31, "is not a size",
	       NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": \"12X\"}", "local_memory", 1, 31, "is not a size",
	       NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": \"1Gb x\"}", "local_memory", 1, 31,
	       "is not a size", NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": \" 1G\"}", "local_memory", 1, 31, "is not a size",
	       NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": \"-1G\"}", "local_memory", 1, 31, "is not a size",
	       NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": \"99999999999T\"}", "local_memory", 1, 31,
	       "does not fit in 64 bits", ">= 1M");
	vm_bad("{\"name\": \"a\", \"local_memory\": \"99999999999999999999\"}", "local_memory", 1,
	       31, "does not fit in 64 bits", NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": -4096}", "local_memory", 1, 31, "-4096 is negative",
	       ">= 1M");
	vm_bad("{\"name\": \"a\", \"local_memory\": 1.5}", "local_memory", 1, 31,
	       "expected a string like \"512M\" or an integer number of bytes, got a real number",
	       ">= 1M");
	vm_bad("{\"name\": \"a\", \"local_memory\": [1]}", "local_memory", 1, 31,
	       "expected a string like \"512M\" or an integer number of bytes, got an array", NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": null}", "local_memory", 1, 31, "got null", NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": \"1023K\"}", "local_memory", 1, 31,
	       "below 1M", ">= 1M");
	vm_bad("{\"name\": \"a\", \"local_memory\": 1048575}", "local_memory", 1, 31,
	       "1044480 bytes (rounded down to 4 KiB pages) is below 1M", NULL);
	vm_bad("{\"name\": \"a\", \"local_memory\": 0}", "local_memory", 1, 31, "below 1M", NULL);
	vm_bad("{\"name\": \"a\"}", "local_memory", 1, 1, "missing (required)", ">= 1M");
}

/* ---- positions ------------------------------------------------------------------- */

static void test_positions(void **state)
{
	/* Tabs, CRLF and multi-byte characters: columns count code points. */
	vm_bad("{\r\n\t\"name\": \"x\",\r\n\t\"_c\": \"\xc3\xa9\xc3\xa9\", \"local_memory\": \"1X\"}",
	       "local_memory", 3, 30, "is not a size", NULL);
	/* Escaped key names still match. */
	vm_bad("{\"n\\u0061me\": \"x\",\n \"local_\\u006demory\":\n\n      false}", "local_memory", 4,
	       7, "got a boolean", NULL);
	/* A nested value whose key also appears, earlier, inside a comment object. */
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\",\n"
	       " \"_c\": {\"watermarks\": {\"low\": 1}},\n"
	       " \"watermarks\": {\"_x\": {\"low\": [\"}\"]}, \"high\": 50,\n"
	       "     \"low\": 60}}",
	       "watermarks.low", 4, 13, "low watermark 60% is not below the high watermark 50%",
	       "1 <= low < high <= 100");
	/* Whitespace before the top-level object. */
	vm_bad("\n\n   {\"name\": \"x\"}", "local_memory", 3, 4, "missing (required)", NULL);
}

/* ---- unknown keys, enums, structure ------------------------------------------------- */

static void test_vm_unknown_keys(void **state)
{
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\",\n  \"locla_memory\": 5}", "locla_memory", 2,
	       3, "unknown key", VM_ALLOWED_KEYS);
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\",\n  \"locla_memory\": 5}", "locla_memory", 2,
	       3, "did you mean 'local_memory'?", NULL);
	vm_bad("{\"colour\": 1}", "colour", 1, 2, "unknown key (allowed:", NULL);
	vm_bad("{\"on-data-loss\": 1}", "on-data-loss", 1, 2, "did you mean 'on_data_loss'?", NULL);
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"watermarks\": {\"hihg\": 5}}",
	       "watermarks.hihg", 1, 52, "unknown key", "allowed: high, low, or comments");
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"spill\": {\"max\": 5}}", "spill.max", 1,
	       47, "unknown key", "allowed: max_size, or comments");
	/* Unknown keys win over other errors, so a typo is named, not its consequence. */
	vm_bad("{\"Name\": \"x\"}", "Name", 1, 2, "unknown key", VM_ALLOWED_KEYS);
	/* A key with a quote and a control character is shown escaped. */
	vm_bad("{\"a'\\n\": 1}", "a\\x27\\x0a", 1, 2, "unknown key", NULL);
}

static void test_vm_enums(void **state)
{
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"on_pager_unavailable\": \"ignore\"}",
	       "on_pager_unavailable", 1, 61, "unknown value \"ignore\"",
	       "allowed: \"refuse\", \"run-unpaged\"");
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"on_pager_unavailable\": 1}",
	       "on_pager_unavailable", 1, 61, "expected a string, got an integer",
	       "allowed: \"refuse\", \"run-unpaged\"");
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"on_data_loss\": \"STOP\"}",
	       "on_data_loss", 1, 53, "unknown value \"STOP\"", "allowed: \"stop\", \"kill\"");
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"on_data_loss\": {}}", "on_data_loss", 1,
	       53, "got an object", "allowed: \"stop\", \"kill\"");
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"on_store_full\": \"wait\"}",
	       "on_store_full", 1, 54, "unknown value \"wait\"", "allowed: \"degrade\", \"pause\"");
	{
		struct policy_vm p;

		assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\", \"on_store_full\": \"pause\"}",
					  &p, NULL), 0);
		assert_int_equal(p.on_store_full, POLICY_STORE_FULL_PAUSE);
	}
}

static void test_vm_watermarks(void **state)
{
	struct policy_vm p;
	struct policy_error err;
	const char *pre = "{\"name\": \"x\", \"local_memory\": \"1G\", \"watermarks\": ";
	char text[256];

	snprintf(text, sizeof(text), "%s{\"low\": 1, \"high\": 2}}", pre);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_int_equal(p.low_pct, 1);
	assert_int_equal(p.high_pct, 2);
	snprintf(text, sizeof(text), "%s{\"low\": \"99%%\"}}", pre);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_int_equal(p.low_pct, 99);
	assert_int_equal(p.high_pct, 100);
	snprintf(text, sizeof(text), "%s{\"high\": 95}}", pre);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_int_equal(p.low_pct, 90);
	assert_int_equal(p.high_pct, 95);

	/* The values start at column 60 (high) and 59 (low) below. */
	snprintf(text, sizeof(text), "%s{\"high\": 101}}", pre);
	vm_bad(text, "watermarks.high", 1, 60, "101% is out of range", "an integer 1..100");
	snprintf(text, sizeof(text), "%s{\"low\": 0}}", pre);
	vm_bad(text, "watermarks.low", 1, 59, "0% is out of range", "\"95%\"");
	snprintf(text, sizeof(text), "%s{\"low\": -5}}", pre);
	vm_bad(text, "watermarks.low", 1, 59, "-5% is out of range", NULL);
	snprintf(text, sizeof(text), "%s{\"low\": \"95\"}}", pre);
	vm_bad(text, "watermarks.low", 1, 59, "\"95\" is not a percentage", "1..100");
	snprintf(text, sizeof(text), "%s{\"low\": \"9 5%%\"}}", pre);
	vm_bad(text, "watermarks.low", 1, 59, "is not a percentage", NULL);
	snprintf(text, sizeof(text), "%s{\"low\": \"%%\"}}", pre);
	vm_bad(text, "watermarks.low", 1, 59, "is not a percentage", NULL);
	snprintf(text, sizeof(text), "%s{\"low\": \"99999999999999999999%%\"}}", pre);
	vm_bad(text, "watermarks.low", 1, 59, "out of range", NULL);
	snprintf(text, sizeof(text), "%s{\"low\": 50.5}}", pre);
	vm_bad(text, "watermarks.low", 1, 59, "expected a percentage, got a real number", NULL);
	snprintf(text, sizeof(text), "%s{\"low\": 50, \"high\": 50}}", pre);
	vm_bad(text, "watermarks.low", 1, 59, "50% is not below the high watermark 50%",
	       "1 <= low < high <= 100");
	/* high below the default low: the error says low must be set as well. */
	snprintf(text, sizeof(text), "%s{\"high\": 90}}", pre);
	vm_bad(text, "watermarks.high", 1, 60, "default low watermark 90%",
	       "set watermarks.low too");
	snprintf(text, sizeof(text), "%s[95, 90]}", pre);
	vm_bad(text, "watermarks", 1, 51, "expected an object, got an array", "\"high\"");
}

static void test_vm_spill(void **state)
{
	struct policy_vm p;
	struct policy_error err;

	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\", \"spill\": {}}", &p, &err),
			 0);
	assert_int_equal(p.spill_max, 0);
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\", \"spill\": {\"max_size\": 0}}",
				  &p, &err),
			 0);
	assert_int_equal(p.spill_max, 0);
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\", \"spill\": {\"max_size\": 12345}}",
				  &p, &err),
			 0);
	assert_int_equal(p.spill_max, 12345);
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"spill\": \"10G\"}", "spill", 1, 46,
	       "expected an object, got a string", "max_size");
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"spill\": {\"max_size\": \"lots\"}}",
	       "spill.max_size", 1, 59, "\"lots\" is not a size", "\"1GiB\"");
}

static void test_vm_encryption(void **state)
{
	struct policy_vm p;
	struct policy_error err;

	(void)state;
	/* Sealed unless the policy says otherwise. */
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\"}", &p, &err), 0);
	assert_true(p.encryption);
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\", \"encryption\": false}", &p, &err), 0);
	assert_false(p.encryption);
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"encryption\": \"aes\"}", "encryption", 1, 51,
	       "expected a boolean, got a string", "true or false");
}

static void test_vm_fault_spin(void **state)
{
	struct policy_vm p;
	struct policy_error err;

	(void)state;
	/* The fault thread sleeps unless the policy asks it to spin. */
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\"}", &p, &err), 0);
	assert_int_equal(p.fault_spin_us, 0);
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\", \"fault_spin_us\": 1000}", &p, &err), 0);
	assert_int_equal(p.fault_spin_us, 1000);
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"fault_spin_us\": 1001}", "fault_spin_us", 1, 54,
	       "1001 is out of range", "0..1000");
	vm_bad("{\"name\": \"x\", \"local_memory\": \"1G\", \"fault_spin_us\": -1}", "fault_spin_us", 1, 54,
	       "out of range", "0..1000");
}

static void test_vm_balloon(void **state)
{
	static const char pre[] = "{\"name\": \"x\", \"local_memory\": \"1G\", \"balloon\": ";
	struct policy_vm p;
	struct policy_error err;
	char text[256];

	(void)state;
	/* Off by default, with a floor and settle time ready for when it is turned on. */
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\"}", &p, &err), 0);
	assert_false(p.balloon_enabled);
	assert_int_equal(p.balloon_floor, 256ULL << 20);
	assert_int_equal(p.balloon_settle_ms, 5000);
	snprintf(text, sizeof(text), "%s{\"enabled\": true, \"floor\": \"512M\", \"settle_ms\": 0}}", pre);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_true(p.balloon_enabled);
	assert_int_equal(p.balloon_floor, 512ULL << 20);
	assert_int_equal(p.balloon_settle_ms, 0);
	snprintf(text, sizeof(text), "%s{\"floor\": 16777216}}", pre);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_false(p.balloon_enabled);
	assert_int_equal(p.balloon_floor, 16ULL << 20);
	/* Each error points at the value (column of the value, 1-based) and names what is allowed. */
	snprintf(text, sizeof(text), "%s\"on\"}", pre);
	vm_bad(text, "balloon", 1, 48, "expected an object, got a string", "\"enabled\"");
	snprintf(text, sizeof(text), "%s{\"enabled\": \"yes\"}}", pre);
	vm_bad(text, "balloon.enabled", 1, 60, "expected a boolean, got a string", "true or false");
	snprintf(text, sizeof(text), "%s{\"floor\": \"8M\"}}", pre);
	vm_bad(text, "balloon.floor", 1, 58, "below 16M", "a size >= 16M");
	snprintf(text, sizeof(text), "%s{\"floor\": \"lots\"}}", pre);
	vm_bad(text, "balloon.floor", 1, 58, "\"lots\" is not a size", "\"1GiB\"");
	snprintf(text, sizeof(text), "%s{\"settle_ms\": 600001}}", pre);
	vm_bad(text, "balloon.settle_ms", 1, 62, "600001 is out of range", "0..600000");
	snprintf(text, sizeof(text), "%s{\"settle_ms\": 1.5}}", pre);
	vm_bad(text, "balloon.settle_ms", 1, 62, "expected an integer", "0..600000");
	snprintf(text, sizeof(text), "%s{\"enable\": true}}", pre);
	vm_bad(text, "balloon.enable", 1, 49, "unknown key", "did you mean 'enabled'?");
}

static void test_balloon_target(void **state)
{
	const uint64_t M = 1ULL << 20, guest = 1024 * M;
	struct policy_vm p;

	(void)state;
	policy_vm_init(&p);
	p.balloon_floor = 256 * M;
	/* Disabled: never a smaller guest. */
	assert_int_equal(policy_balloon_target(&p, guest, 512 * M, POLICY_BALLOON_LIMIT), 0);
	assert_int_equal(policy_balloon_target(&p, guest, 512 * M, POLICY_BALLOON_PARK), 0);
	p.balloon_enabled = true;
	/* Below the guest's size: max(floor, limit). */
	assert_int_equal(policy_balloon_target(&p, guest, 512 * M, POLICY_BALLOON_LIMIT), 512 * M);
	assert_int_equal(policy_balloon_target(&p, guest, 100 * M, POLICY_BALLOON_LIMIT), 256 * M);
	assert_int_equal(policy_balloon_target(&p, guest, 512 * M + 123, POLICY_BALLOON_LIMIT), 512 * M);
	/* The whole guest fits: deflated (0 = the domain's maximum). */
	assert_int_equal(policy_balloon_target(&p, guest, guest, POLICY_BALLOON_LIMIT), 0);
	assert_int_equal(policy_balloon_target(&p, guest, 2 * guest, POLICY_BALLOON_LIMIT), 0);
	/* A floor at or above the guest's size leaves nothing to inflate. */
	p.balloon_floor = guest;
	assert_int_equal(policy_balloon_target(&p, guest, 100 * M, POLICY_BALLOON_LIMIT), 0);
	p.balloon_floor = 256 * M;
	/* Parking: the floor; draining: the full guest. */
	assert_int_equal(policy_balloon_target(&p, guest, 512 * M, POLICY_BALLOON_PARK), 256 * M);
	assert_int_equal(policy_balloon_target(&p, 128 * M, 64 * M, POLICY_BALLOON_PARK), 0);
	assert_int_equal(policy_balloon_target(&p, guest, 100 * M, POLICY_BALLOON_DRAIN), 0);
}

static void test_vm_syntax(void **state)
{
	struct policy_vm p;
	struct policy_error err;

	assert_int_equal(vm_parse("{\"name\": \"x\",\n \"name\": \"y\"}", &p, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "vm.json:2:"));
	assert_non_null(strstr(err.msg, "duplicate"));
	assert_int_equal(err.line, 2);

	assert_int_equal(vm_parse("{\"name\": \"x\",\n\n \"local_memory\" 5}", &p, &err), -EINVAL);
	assert_int_equal(err.line, 3);
	assert_non_null(strstr(err.msg, "vm.json:3:"));
	assert_non_null(strstr(err.msg, "invalid JSON"));

	assert_int_equal(vm_parse("", &p, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "vm.json:1:"));
	assert_int_equal(vm_parse("{\"name\": \"x\"} {}", &p, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "invalid JSON"));
	assert_int_equal(vm_parse("{\"name\": \"\\u0000\"}", &p, &err), -EINVAL);
	assert_int_equal(policy_vm_parse("{\"name\"", 3, NULL, &p, NULL), -EINVAL);

	/* Not an object at the top level. */
	assert_int_equal(vm_parse("  [\"name\"]", &p, &err), -EINVAL);
	check_err(&err, "vm.json", NULL, 1, 3, "expected a JSON object", "got an array", NULL);
	/* Buffer not NUL-terminated: only len bytes are read. */
	assert_int_equal(policy_vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\"}garbage", 35,
					 "mem", &p, &err),
			 0);
}

/* ---- round trip, derived values ---------------------------------------------------- */

static void roundtrip(const struct policy_vm *in)
{
	struct policy_vm out;
	struct policy_error err;
	char *s = policy_vm_to_json(in);

	assert_non_null(s);
	if (policy_vm_parse(s, strlen(s), "roundtrip", &out, &err) < 0)
		fail_msg("%s\n%s", err.msg, s);
	assert_string_equal(out.name, in->name);
	assert_int_equal(out.local_memory, in->local_memory);
	assert_int_equal(out.high_pct, in->high_pct);
	assert_int_equal(out.low_pct, in->low_pct);
	assert_int_equal(out.spill_max, in->spill_max);
	assert_int_equal(out.on_pager_unavailable, in->on_pager_unavailable);
	assert_int_equal(out.on_data_loss, in->on_data_loss);
	assert_int_equal(out.on_store_full, in->on_store_full);
	assert_int_equal(out.balloon_enabled, in->balloon_enabled);
	assert_int_equal(out.encryption, in->encryption);
	assert_int_equal(out.fault_spin_us, in->fault_spin_us);
	assert_string_equal(out.victims, in->victims);
	assert_string_equal(out.sharing_group, in->sharing_group);
	assert_int_equal(out.balloon_floor, in->balloon_floor);
	assert_int_equal(out.balloon_settle_ms, in->balloon_settle_ms);
	assert_int_equal(out.dc_size, in->dc_size);
	if (in->dc_size) {
		assert_int_equal(out.dc_block_size, in->dc_block_size);
		assert_int_equal(out.dc_n_donors, in->dc_n_donors);
		assert_int_equal(out.dc_n_drives, in->dc_n_drives);
		for (unsigned i = 0; i < in->dc_n_donors; i++)
			assert_string_equal(out.dc_donors[i], in->dc_donors[i]);
		for (unsigned i = 0; i < in->dc_n_drives; i++)
			assert_string_equal(out.dc_drives[i], in->dc_drives[i]);
		assert_string_equal(out.dc_key_file, in->dc_key_file);
		assert_string_equal(out.dc_client_id, in->dc_client_id);
		assert_int_equal(out.dc_write_fill, in->dc_write_fill);
	}
	free(s);
}

/* disk_cache: absent by default; every field parsed; each rule's error names its field. */
static void test_vm_disk_cache(void **state)
{
	static const char pre[] = "{\"name\": \"x\", \"local_memory\": \"1G\", \"disk_cache\": ";
	struct policy_vm p;
	struct policy_error err;
	char text[512];
	char *s;

	(void)state;
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\"}", &p, &err), 0);
	assert_int_equal(p.dc_size, 0);
	s = policy_vm_to_json(&p);
	assert_null(strstr(s, "disk_cache"));
	free(s);

	snprintf(text, sizeof(text), "%s{\"size\": \"2G\", \"donors\": [\"tcp://10.0.0.1:7000\", \"rdma://[fe80::1]:7001\"], "
		 "\"drives\": [\"disk0\", \"data\"]}}", pre);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_int_equal(p.dc_size, 2ULL << 30);
	assert_int_equal(p.dc_block_size, 65536);
	assert_int_equal(p.dc_n_donors, 2);
	assert_string_equal(p.dc_donors[1], "rdma://[fe80::1]:7001");
	assert_int_equal(p.dc_n_drives, 2);
	assert_string_equal(p.dc_drives[0], "disk0");
	assert_string_equal(p.dc_key_file, "");
	assert_string_equal(p.dc_client_id, "");
	assert_false(p.dc_write_fill);
	roundtrip(&p);

	snprintf(text, sizeof(text), "%s{\"size\": \"4G\", \"block_size\": \"4K\", \"donors\": [\"tcp://h:1\"], "
		 "\"drives\": [\"d\"], \"key_file\": \"/etc/uffdvm/donor.key\", \"client_id\": \"web1-disk\", "
		 "\"write_fill\": true}}", pre);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_true(p.dc_write_fill);
	assert_int_equal(p.dc_block_size, 4096);
	assert_string_equal(p.dc_key_file, "/etc/uffdvm/donor.key");
	assert_string_equal(p.dc_client_id, "web1-disk");
	roundtrip(&p);

	/* pre is 50 characters: the object starts at column 51. */
	snprintf(text, sizeof(text), "%s{\"donors\": [\"tcp://h:1\"], \"drives\": [\"d\"]}}", pre);
	vm_bad(text, "disk_cache.size", 1, 51, "missing (required)", "a size >= 1M");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"drives\": [\"d\"]}}", pre);
	vm_bad(text, "disk_cache.donors", 1, 51, "missing (required)", "tcp://HOST:PORT");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"donors\": [], \"drives\": [\"d\"]}}", pre);
	vm_bad(text, "disk_cache.donors", 1, 76, "no donors", "an array of 1..16 URLs");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"donors\": [\"udp://h:1\"], \"drives\": [\"d\"]}}", pre);
	vm_bad(text, "disk_cache.donors[0]", 1, 77, "udp://h:1", "tcp://HOST:PORT");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"donors\": [\"tcp://h:1\"], \"drives\": []}}", pre);
	vm_bad(text, "disk_cache.drives", 1, 101, "no drives", "drive ids");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"donors\": [\"tcp://h:1\"], \"drives\": [\"a b\"]}}", pre);
	vm_bad(text, "disk_cache.drives[0]", 1, 102, "a b", "node names");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"block_size\": \"48K\", \"donors\": [\"tcp://h:1\"], "
		 "\"drives\": [\"d\"]}}", pre);
	vm_bad(text, "disk_cache.block_size", 1, 80, "not a power of two", "from 4K to 1M");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"block_size\": \"2M\", \"donors\": [\"tcp://h:1\"], "
		 "\"drives\": [\"d\"]}}", pre);
	vm_bad(text, "disk_cache.block_size", 1, 80, "2097152", "from 4K to 1M");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"donor\": [\"tcp://h:1\"], \"drives\": [\"d\"]}}", pre);
	vm_bad(text, "disk_cache.donor", 1, 66, "unknown key", "did you mean 'donors'?");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"donors\": [\"tcp://h:1\"], \"drives\": [\"d\"], "
		 "\"client_id\": \"a b\"}}", pre);
	vm_bad(text, "disk_cache.client_id", 1, 121, "a b", "1..64 characters");
	snprintf(text, sizeof(text), "%s{\"size\": \"1G\", \"donors\": [\"tcp://h:1\"], \"drives\": [\"d\"], "
		 "\"write_fill\": \"yes\"}}", pre);
	vm_bad(text, "disk_cache.write_fill", 1, 122, "expected a boolean, got a string", "true or false");
}

/* victims: "fifo" by default, any name of policy/victim.h, anything else named in the error. */
static void test_vm_victims(void **state)
{
	static const char pre[] = "{\"name\": \"x\", \"local_memory\": \"1G\", \"victims\": ";
	char text[256];
	struct policy_vm p;
	struct policy_error err;

	(void)state;
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\"}", &p, &err), 0);
	assert_string_equal(p.victims, "fifo");
	assert_non_null(policy_victim_find(p.victims));
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\", \"victims\": \"fifo\"}", &p, &err),
			 0);
	assert_string_equal(p.victims, "fifo");
	assert_ptr_equal(policy_victim_find(p.victims), &policy_victim_fifo);
	roundtrip(&p);
	/* Every error lists what policy/victim.h offers. */
	assert_string_equal(policy_victim_names(), "\"fifo\", \"clock\"");
	snprintf(text, sizeof(text), "%s\"lru\"}", pre);
	vm_bad(text, "victims", 1, 48, "invalid victim selector \"lru\"", "(allowed: \"fifo\", \"clock\")");
	snprintf(text, sizeof(text), "%s\"CLOCK\"}", pre);
	vm_bad(text, "victims", 1, 48, "invalid victim selector \"CLOCK\"", policy_victim_names());
	snprintf(text, sizeof(text), "%s\"\"}", pre);
	vm_bad(text, "victims", 1, 48, "invalid victim selector \"\"", policy_victim_names());
	snprintf(text, sizeof(text), "%s\"clock-with-a-long-name\"}", pre);
	vm_bad(text, "victims", 1, 48, "victim selector is 22 characters long", policy_victim_names());
	snprintf(text, sizeof(text), "%s1}", pre);
	vm_bad(text, "victims", 1, 48, "expected a string, got an integer", policy_victim_names());
}

/* sharing_group: absent (no sharing) by default and then left out of the JSON; a name like a VM's; errors name the field. */
static void test_vm_sharing_group(void **state)
{
	static const char pre[] = "{\"name\": \"x\", \"local_memory\": \"1G\", \"sharing_group\": ";
	char text[256];
	struct policy_vm p;
	struct policy_error err;
	char *s;

	(void)state;
	assert_int_equal(vm_parse("{\"name\": \"x\", \"local_memory\": \"1G\"}", &p, &err), 0);
	assert_string_equal(p.sharing_group, "");
	s = policy_vm_to_json(&p);
	assert_null(strstr(s, "sharing_group"));
	free(s);
	snprintf(text, sizeof(text), "%s\"tenant-a.web_1\"}", pre);
	assert_int_equal(vm_parse(text, &p, &err), 0);
	assert_string_equal(p.sharing_group, "tenant-a.web_1");
	roundtrip(&p);
	/* pre is 53 characters: the value starts at column 54. */
	snprintf(text, sizeof(text), "%s\"a b\"}", pre);
	vm_bad(text, "sharing_group", 1, 54, "\"a b\"", "1..63 characters from A-Z a-z 0-9 . _ -");
	snprintf(text, sizeof(text), "%s\"..\"}", pre);
	vm_bad(text, "sharing_group", 1, 54, "\"..\"", "not \".\" or \"..\"");
	snprintf(text, sizeof(text), "%s\"\"}", pre);
	vm_bad(text, "sharing_group", 1, 54, "sharing group name", "1..63 characters");
	snprintf(text, sizeof(text), "%s\"%064d\"}", pre, 0);
	vm_bad(text, "sharing_group", 1, 54, "64 characters long", "1..63 characters");
	snprintf(text, sizeof(text), "%strue}", pre);
	vm_bad(text, "sharing_group", 1, 54, "expected a string", "1..63 characters");
}

static void test_roundtrip(void **state)
{
	static const uint64_t sizes[] = { 1ULL << 20, (1ULL << 20) + 4096, 3ULL << 30,
					  (5ULL << 40) + (1ULL << 30), 1ULL << 62,
					  0xfffffffffffff000ULL };
	struct policy_vm p;

	policy_vm_init(&p);
	strcpy(p.name, "rt");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		p.local_memory = sizes[i];
		p.spill_max = i ? sizes[i] - 1 : 0;
		p.high_pct = 100 - (unsigned)i;
		p.low_pct = 1 + (unsigned)i;
		p.on_pager_unavailable = i % 2 ? POLICY_UNAVAILABLE_RUN_UNPAGED : POLICY_UNAVAILABLE_REFUSE;
		p.on_data_loss = i % 3 ? POLICY_LOSS_KILL : POLICY_LOSS_STOP;
		p.on_store_full = i % 2 ? POLICY_STORE_FULL_PAUSE : POLICY_STORE_FULL_DEGRADE;
		p.balloon_enabled = i % 2;
		p.encryption = i % 3 != 1;
		snprintf(p.victims, sizeof(p.victims), "%s", i % 2 ? "fifo" : "clock");
		p.balloon_floor = (16ULL << 20) + i * 4096;
		p.balloon_settle_ms = (unsigned)i * 1000;
		p.fault_spin_us = (unsigned)i * 200;
		roundtrip(&p);
	}
	/* What the parser produced serializes back to the same policy. */
	assert_int_equal(vm_parse("{\"name\": \"a-b.c_d\", \"local_memory\": \"1536M\", \"watermarks\": "
				  "{\"high\": \"75%\", \"low\": 74}, \"spill\": {\"max_size\": 4097}}",
				  &p, NULL),
			 0);
	roundtrip(&p);
	/* 1536M is written as the largest exact unit. */
	{
		char *s = policy_vm_to_json(&p);

		assert_non_null(strstr(s, "\"1536M\""));
		free(s);
	}
}

static void test_pages(void **state)
{
	struct policy_vm p;

	policy_vm_init(&p);
	p.local_memory = 1ULL << 30;
	assert_int_equal(policy_vm_high_pages(&p, 4096), 262144);
	assert_int_equal(policy_vm_low_pages(&p, 4096), 235929); /* 90% rounded down */
	p.high_pct = 50;
	p.low_pct = 1;
	assert_int_equal(policy_vm_high_pages(&p, 4096), 131072);
	assert_int_equal(policy_vm_low_pages(&p, 2ULL << 20), 5); /* 10.24 huge pages */
	p.local_memory = 1ULL << 20;
	assert_int_equal(policy_vm_low_pages(&p, 2ULL << 20), 1); /* at least 1 */
	/* No overflow for huge values. */
	p.local_memory = 0xfffffffffffff000ULL;
	p.high_pct = 100;
	assert_int_equal(policy_vm_high_pages(&p, 4096), 0xfffffffffffffULL);
}

/* ---- files ---------------------------------------------------------------------------- */

static char *write_tmp(const char *content, size_t len)
{
	char *path = strdup("/tmp/test-policy-XXXXXX");
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	close(fd);
	return path;
}

static void test_load(void **state)
{
	const char *text = "{\"name\": \"f\",\n \"local_memory\": \"0.5G\"}";
	struct policy_vm p;
	struct policy_pager_config c;
	struct policy_error err;
	char *path = write_tmp(text, strlen(text)), *big;
	char prefix[128];

	assert_int_equal(policy_vm_load(path, &p, &err), -EINVAL);
	snprintf(prefix, sizeof(prefix), "%s:2:18: field 'local_memory': ", path);
	assert_non_null(strstr(err.msg, prefix));
	unlink(path);
	free(path);

	path = write_tmp("{\"budget\": \"8G\"}", 16);
	assert_int_equal(policy_config_load(path, &c, &err), 0);
	assert_int_equal(c.budget, 8ULL << 30);
	unlink(path);

	assert_int_equal(policy_vm_load(path, &p, &err), -ENOENT);
	assert_non_null(strstr(err.msg, path));
	assert_int_equal(policy_config_load(path, &c, &err), -ENOENT);
	free(path);

	/* Larger than 1 MiB. */
	big = malloc((1 << 20) + 10);
	memset(big, ' ', (1 << 20) + 10);
	big[0] = '{';
	big[(1 << 20) + 9] = '}';
	path = write_tmp(big, (1 << 20) + 10);
	assert_int_equal(policy_vm_load(path, &p, &err), -EFBIG);
	assert_non_null(strstr(err.msg, path));
	unlink(path);
	free(path);
	free(big);

	assert_int_equal(policy_vm_load("/", &p, &err), -EISDIR);
}

/* ---- pager configuration --------------------------------------------------------------- */

static void test_config_defaults(void **state)
{
	struct policy_pager_config c;
	struct policy_error err;

	assert_int_equal(cfg_parse("{}", &c, &err), 0);
	assert_int_equal(c.budget, 0);
	assert_int_equal(c.max_guest_memory, 1ULL << 40);
	assert_int_equal(c.max_guest_memory_per_uid, 4ULL << 40);
	assert_string_equal(c.state_dir, UFFDVM_STATE_DIR);
	assert_string_equal(c.socket_path, UFFDVM_RUN_DIR "/register.sock");
	assert_string_equal(c.control_path, UFFDVM_RUN_DIR "/control.sock");
	assert_int_equal(c.n_allowed_uids, 0);
	assert_int_equal(c.log_level, LOG_LVL_INFO);
}

static void test_config_full(void **state)
{
	const char *text = "{\"_comment\": \"x\", \"budget\": \"64G\", \"max_guest_memory\": \"2T\",\n"
			   " \"state_dir\": \"/srv/uffd\", \"socket\": \"/tmp/r.sock\",\n"
			   " \"control\": \"/tmp/c.sock\", \"allowed_uids\": [1000, 0, 4294967294],\n"
			   " \"log_level\": \"debug\"}";
	struct policy_pager_config c;
	struct policy_error err;

	assert_int_equal(cfg_parse(text, &c, &err), 0);
	assert_int_equal(c.budget, 64ULL << 30);
	assert_int_equal(c.max_guest_memory, 2ULL << 40);
	assert_string_equal(c.state_dir, "/srv/uffd");
	assert_string_equal(c.socket_path, "/tmp/r.sock");
	assert_string_equal(c.control_path, "/tmp/c.sock");
	assert_int_equal(c.n_allowed_uids, 3);
	assert_int_equal(c.allowed_uids[0], 1000);
	assert_int_equal(c.allowed_uids[1], 0);
	assert_int_equal(c.allowed_uids[2], 4294967294U);
	assert_int_equal(c.log_level, LOG_LVL_DEBUG);
	assert_int_equal(cfg_parse("{\"log_level\": \"error\"}", &c, &err), 0);
	assert_int_equal(c.log_level, LOG_LVL_ERR);
	assert_int_equal(cfg_parse("{\"log_level\": \"warn\"}", &c, &err), 0);
	assert_int_equal(c.log_level, LOG_LVL_WARN);
	assert_int_equal(cfg_parse("{\"budget\": 0, \"max_guest_memory\": \"16T\"}", &c, &err), -EINVAL);
	/* 2^32 - 2 pages of 4 KiB is the largest guest. */
	assert_int_equal(cfg_parse("{\"max_guest_memory\": 17592186036224}", &c, &err), 0);
	assert_int_equal(c.max_guest_memory, 17592186036224ULL);
	assert_int_equal(cfg_parse("{\"max_guest_memory_per_uid\": \"300G\"}", &c, &err), 0);
	assert_int_equal(c.max_guest_memory_per_uid, 300ULL << 30);
}

static void test_config_bad(void **state)
{
	cfg_bad("{\"budgte\": 1}", "budgte", 1, 2, "unknown key",
		"allowed: budget, max_guest_memory, state_dir, socket, control, allowed_uids, log_level");
	cfg_bad("{\"budget\": \"1.5G\"}", "budget", 1, 12, "not a size", "\"512M\"");
	cfg_bad("{\"budget\": false}", "budget", 1, 12,
		"expected a string like \"512M\" or an integer number of bytes", NULL);
	cfg_bad("{\"max_guest_memory\": \"16T\"}", "max_guest_memory", 1, 22, "out of range",
		"1M to 16T - 8K");
	cfg_bad("{\"max_guest_memory\": \"1K\"}", "max_guest_memory", 1, 22, "out of range", NULL);
	cfg_bad("{\"max_guest_memory_per_uid\": \"1K\"}", "max_guest_memory_per_uid", 1, 30, "below 1M", NULL);
	cfg_bad("{\"state_dir\": \"var/lib\"}", "state_dir", 1, 15, "not an absolute path",
		"an absolute path of at most 255 bytes");
	cfg_bad("{\"state_dir\": 5}", "state_dir", 1, 15, "expected a string, got an integer", NULL);
	cfg_bad("{\n  \"state_dir\": \"/run/uffd\"}", "state_dir", 2, 16, "under /run, which is tmpfs",
		"on a disk file system");
	cfg_bad("{\"state_dir\": \"/run\"}", "state_dir", 1, 15, "under /run", NULL);
	cfg_bad("{\"state_dir\": \"//run/./x\"}", "state_dir", 1, 15, "under /run", NULL);
	cfg_bad("{\"state_dir\": \"/srv/../run/x\"}", "state_dir", 1, 15, "under /run", NULL);
	cfg_bad("{\"state_dir\": \"/var/run/p\"}", "state_dir", 1, 15, "under /var/run", NULL);
	cfg_bad("{\"state_dir\": \"/dev/shm/\"}", "state_dir", 1, 15, "under /dev/shm", NULL);
	cfg_bad("{\"socket\": \"/a/very/long/path/that/does/not/fit/into/sun_path/because/it/is/longer/than/one/hundred/and/seven/bytes.sock\"}",
		"socket", 1, 12, "path is 108 bytes long", "at most 107 bytes");
	cfg_bad("{\"control\": \"c.sock\"}", "control", 1, 13, "not an absolute path", NULL);
	cfg_bad("{\"allowed_uids\": 1000}", "allowed_uids", 1, 18, "expected an array, got an integer",
		"at most 16");
	cfg_bad("{\"allowed_uids\": [1, 2,\n   \"3\"]}", "allowed_uids[2]", 2, 4,
		"expected an integer uid, got a string", "at most 16");
	cfg_bad("{\"allowed_uids\": [-1]}", "allowed_uids[0]", 1, 19, "-1 is not a uid", NULL);
	cfg_bad("{\"allowed_uids\": [4294967295]}", "allowed_uids[0]", 1, 19, "not a uid",
		"0..4294967294");
	cfg_bad("{\"allowed_uids\": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}", "allowed_uids[16]",
		1, 57, "too many uids (17)", "at most 16");
	cfg_bad("{\"log_level\": \"verbose\"}", "log_level", 1, 15, "unknown value \"verbose\"",
		"allowed: \"error\", \"warn\", \"info\", \"debug\"");
	cfg_bad("{\"log_level\": 3}", "log_level", 1, 15, "expected a string", "\"debug\"");
}

static void test_state_dir_fstype(void **state)
{
	char msg[256];

	/* /dev/shm is tmpfs wherever it exists; a missing one is an error, not a pass. */
	if (access("/dev/shm", F_OK) == 0) {
		assert_int_equal(policy_check_state_dir_fstype("/dev/shm", msg, sizeof(msg)), -EINVAL);
		assert_non_null(strstr(msg, "tmpfs"));
		assert_non_null(strstr(msg, "/dev/shm"));
	}
	assert_int_equal(policy_check_state_dir_fstype("/nonexistent/x", msg, sizeof(msg)), -ENOENT);
	assert_non_null(strstr(msg, "/nonexistent/x"));
	/* /proc is procfs, certainly not tmpfs. */
	assert_int_equal(policy_check_state_dir_fstype("/proc", msg, sizeof(msg)), 0);
}

/* The shipped examples must stay valid and mean what docs/policy.md says. */
static void test_examples(void **state)
{
	struct policy_vm p;
	struct policy_pager_config c;
	struct policy_error err;

	if (policy_vm_load(EXAMPLES_DIR "/vm-policy.json", &p, &err) < 0)
		fail_msg("%s", err.msg);
	assert_string_equal(p.name, "web-1");
	assert_int_equal(p.local_memory, 2ULL << 30);
	assert_int_equal(p.high_pct, 100);
	assert_int_equal(p.low_pct, 90);
	assert_int_equal(p.spill_max, 16ULL << 30);
	assert_int_equal(p.on_pager_unavailable, POLICY_UNAVAILABLE_REFUSE);
	assert_int_equal(p.on_data_loss, POLICY_LOSS_STOP);
	if (policy_config_load(EXAMPLES_DIR "/pager.json", &c, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(c.budget, 64ULL << 30);
	assert_int_equal(c.max_guest_memory, 1ULL << 40);
	assert_string_equal(c.state_dir, "/var/lib/uffd-pager");
	assert_int_equal(c.n_allowed_uids, 1);
	assert_int_equal(c.log_level, LOG_LVL_INFO);
	if (policy_vm_load(EXAMPLES_DIR "/vm-policy-balloon.json", &p, &err) < 0)
		fail_msg("%s", err.msg);
	assert_true(p.balloon_enabled);
	assert_int_equal(p.balloon_floor, 512ULL << 20);
	assert_int_equal(p.balloon_settle_ms, 5000);
	if (policy_vm_load(EXAMPLES_DIR "/vm-policy-balloon.json", &p, &err) < 0)
		fail_msg("%s", err.msg);
	assert_true(p.balloon_enabled);
	assert_int_equal(p.balloon_floor, 512ULL << 20);
	assert_int_equal(p.balloon_settle_ms, 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vm_minimal_defaults),
		cmocka_unit_test(test_vm_full),
		cmocka_unit_test(test_vm_name_limits),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_sizes_bad),
		cmocka_unit_test(test_positions),
		cmocka_unit_test(test_vm_unknown_keys),
		cmocka_unit_test(test_vm_enums),
		cmocka_unit_test(test_vm_watermarks),
		cmocka_unit_test(test_vm_spill),
		cmocka_unit_test(test_vm_syntax),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_vm_disk_cache),
		cmocka_unit_test(test_pages),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_config_defaults),
		cmocka_unit_test(test_config_full),
		cmocka_unit_test(test_config_bad),
		cmocka_unit_test(test_state_dir_fstype),
		cmocka_unit_test(test_examples),
		cmocka_unit_test(test_vm_balloon),
		cmocka_unit_test(test_vm_encryption),
		cmocka_unit_test(test_vm_fault_spin),
		cmocka_unit_test(test_vm_victims),
		cmocka_unit_test(test_vm_sharing_group),
		cmocka_unit_test(test_balloon_target),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
