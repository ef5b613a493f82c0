/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the field-table parser (policy/fields.h) on a table of its
 * own that has one row of every kind: for each kind a good value, a value
 * of the wrong JSON type and one out of range (or not among the allowed
 * values), plus required keys, unknown keys in nested objects, arrays,
 * check hooks and the way back to JSON. The real tables are covered by
 * test-policy.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fields.h"

enum colour { RED, GREEN, BLUE };

struct thing {
	char id[8];
	uint64_t size;
	uint64_t ranged;
	unsigned count;
	uint16_t small;
	unsigned pct;
	enum colour colour;
	bool flag;
	char path[16];
	unsigned inner_a, inner_b;
	uint32_t nums[3];
	unsigned n_nums;
	char tags[2][8];
	unsigned n_tags;
};

static bool id_valid(const char *s)
{
	return strspn(s, "abcdefghijklmnopqrstuvwxyz") == strlen(s);
}

static int inner_check(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
		       const struct policy_field_path *p, void *base)
{
	const struct thing *t = base;
	struct policy_field_path bp = policy_field_path_key(p, "b");

	(void)f;
	(void)v;
	if (t->inner_a + t->inner_b > 10)
		return policy_field_fail(x, &bp, "a + b <= 10", "a + b is %u", t->inner_a + t->inner_b);
	return 0;
}

static const char *const colours[] = { "red", "green", "blue", NULL };

#define T(m) POLICY_FIELD_AT(struct thing, m)

static const struct policy_field inner_fields[] = {
	{ .name = "a", .kind = POLICY_FIELD_INT, T(inner_a), .lo = 0, .hi = 10, .allowed = "0..10" },
	{ .name = "b", .kind = POLICY_FIELD_INT, T(inner_b), .lo = 0, .hi = 10, .allowed = "0..10" },
	{ 0 },
};

static const struct policy_field num_field = {
	.name = "num", .kind = POLICY_FIELD_INT, .size = sizeof(uint32_t), .lo = 1, .hi = 9,
	.noun = "digit", .allowed = "up to 3 digits 1..9",
};

static const struct policy_field tag_field = {
	.name = "tag", .kind = POLICY_FIELD_STRING, .size = 8, .valid = id_valid, .noun = "tag",
	.allowed = "up to 2 distinct tags",
};

static const struct policy_field thing_fields[] = {
	{ .name = "id", .kind = POLICY_FIELD_STRING, T(id), .flags = POLICY_FIELD_REQUIRED, .lo = 1,
	  .hi = 7, .valid = id_valid, .noun = "id", .allowed = "1..7 of a-z" },
	{ .name = "size", .kind = POLICY_FIELD_SIZE, T(size), .flags = POLICY_FIELD_PAGE_ROUND,
	  .lo = 1 << 20, .allowed = "a size >= 1M" },
	{ .name = "ranged", .kind = POLICY_FIELD_SIZE, T(ranged), .lo = 1 << 10, .hi = 1 << 20,
	  .allowed = "1K..1M" },
	{ .name = "count", .kind = POLICY_FIELD_INT, T(count), .lo = 2, .hi = 5, .allowed = "2..5" },
	{ .name = "small", .kind = POLICY_FIELD_INT, T(small), .lo = 0, .hi = 65535, .allowed = "0..65535" },
	{ .name = "pct", .kind = POLICY_FIELD_PERCENT, T(pct) },
	{ .name = "colour", .kind = POLICY_FIELD_ENUM, T(colour), .names = colours },
	{ .name = "flag", .kind = POLICY_FIELD_BOOL, T(flag) },
	{ .name = "path", .kind = POLICY_FIELD_PATH, T(path) },
	{ .name = "inner", .kind = POLICY_FIELD_OBJECT, .sub = inner_fields, .check = inner_check,
	  .allowed = "{\"a\": N, \"b\": N}" },
	{ .name = "nums", .kind = POLICY_FIELD_ARRAY, T(nums), .sub = &num_field,
	  .count_off = offsetof(struct thing, n_nums), .noun = "digits", .allowed = "up to 3 digits 1..9" },
	{ .name = "tags", .kind = POLICY_FIELD_ARRAY, T(tags), .sub = &tag_field, .flags = POLICY_FIELD_UNIQUE,
	  .count_off = offsetof(struct thing, n_tags), .noun = "tags", .allowed = "up to 2 distinct tags" },
	{ 0 },
};

static int parse(const char *text, struct thing *t, struct policy_error *err)
{
	memset(t, 0, sizeof(*t));
	t->colour = GREEN;
	return policy_fields_parse(text, strlen(text), "t.json", thing_fields, t, err);
}

/* Parses {"id": "x", KEY: VALUE} and returns the thing; fails the test on an error. */
static struct thing good(const char *key, const char *value)
{
	char text[256];
	struct thing t;
	struct policy_error err;

	snprintf(text, sizeof(text), "{\"id\": \"x\", \"%s\": %s}", key, value);
	if (parse(text, &t, &err) < 0)
		fail_msg("%s: %s", text, err.msg);
	return t;
}

/*
 * Parses {"id": "x", KEY: VALUE}, expects -EINVAL, the value's position
 * (column 17 + strlen(KEY) on line 1), the field path and both needles.
 */
static void bad(const char *key, const char *value, const char *field, const char *needle1,
		const char *needle2)
{
	char text[256], prefix[128];
	struct thing t;
	struct policy_error err;

	snprintf(text, sizeof(text), "{\"id\": \"x\", \"%s\": %s}", key, value);
	assert_int_equal(parse(text, &t, &err), -EINVAL);
	snprintf(prefix, sizeof(prefix), "t.json:1:%d: field '%s': ", (int)(17 + strlen(key)), field);
	if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
		fail_msg("expected prefix \"%s\" in \"%s\"", prefix, err.msg);
	assert_int_equal(err.line, 1);
	if (needle1 && !strstr(err.msg, needle1))
		fail_msg("expected \"%s\" in \"%s\"", needle1, err.msg);
	if (needle2 && !strstr(err.msg, needle2))
		fail_msg("expected \"%s\" in \"%s\"", needle2, err.msg);
}

static void test_size(void **state)
{
	(void)state;
	assert_int_equal(good("size", "\"2M\"").size, 2ULL << 20);
	assert_int_equal(good("size", "1052671").size, 1ULL << 20); /* rounded down to pages */
	bad("size", "true", "size", "got a boolean", "(allowed: a size >= 1M)");
	bad("size", "-5", "size", "-5 is negative", NULL);
	bad("size", "\"3Q\"", "size", "\"3Q\" is not a size", "suffix K, M, G or T");
	bad("size", "1048575", "size", "1044480 bytes (rounded down to 4 KiB pages) is below 1M", NULL);
	assert_int_equal(good("ranged", "\"1K\"").ranged, 1024);
	assert_int_equal(good("ranged", "\"1M\"").ranged, 1ULL << 20);
	bad("ranged", "1023", "ranged", "1023 bytes (1023) is out of range", "1K..1M");
	bad("ranged", "\"2M\"", "ranged", "2097152 bytes (2M) is out of range", NULL);
}

static void test_int(void **state)
{
	(void)state;
	assert_int_equal(good("count", "2").count, 2);
	assert_int_equal(good("count", "5").count, 5);
	assert_int_equal(good("small", "65535").small, 65535);
	bad("count", "\"3\"", "count", "expected an integer, got a string", "(allowed: 2..5)");
	bad("count", "3.0", "count", "got a real number", NULL);
	bad("count", "6", "count", "6 is out of range", "2..5");
	bad("count", "1", "count", "1 is out of range", NULL);
	bad("small", "65536", "small", "65536 is out of range", NULL);
}

static void test_percent(void **state)
{
	(void)state;
	assert_int_equal(good("pct", "\"1%\"").pct, 1);
	assert_int_equal(good("pct", "100").pct, 100);
	bad("pct", "null", "pct", "expected a percentage, got null", "1..100");
	bad("pct", "\"50\"", "pct", "\"50\" is not a percentage", NULL);
	bad("pct", "\"101%\"", "pct", "101% is out of range", NULL);
	bad("pct", "0", "pct", "0% is out of range", NULL);
}

static void test_enum(void **state)
{
	(void)state;
	assert_int_equal(good("colour", "\"red\"").colour, RED);
	assert_int_equal(good("colour", "\"blue\"").colour, BLUE);
	bad("colour", "2", "colour", "expected a string, got an integer",
	    "(allowed: \"red\", \"green\", \"blue\")");
	bad("colour", "\"Red\"", "colour", "unknown value \"Red\"", "\"red\", \"green\", \"blue\"");
}

static void test_bool(void **state)
{
	(void)state;
	assert_true(good("flag", "true").flag);
	assert_false(good("flag", "false").flag);
	bad("flag", "1", "flag", "expected a boolean, got an integer", "(allowed: true or false)");
	bad("flag", "\"true\"", "flag", "expected a boolean, got a string", NULL);
}

static void test_string(void **state)
{
	struct thing t;
	struct policy_error err;

	(void)state;
	assert_string_equal(good("path", "\"/a\"").path, "/a");
	assert_int_equal(parse("{\"id\": \"abcdefg\"}", &t, &err), 0);
	assert_string_equal(t.id, "abcdefg");
	assert_int_equal(parse("{\"id\": \"abcdefgh\"}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "t.json:1:8: field 'id': id is 8 characters long (allowed: 1..7 of a-z)"));
	assert_int_equal(parse("{\"id\": \"\"}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "id is 0 characters long"));
	assert_int_equal(parse("{\"id\": \"a1\"}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "invalid id \"a1\""));
	assert_int_equal(parse("{\"id\": []}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "expected a string, got an array"));
	/* Required: the error points at the enclosing object. */
	assert_int_equal(parse("  {\"flag\": true}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "t.json:1:3: field 'id': missing (required)"));
	/* Paths: absolute and shorter than the member. */
	bad("path", "\"a\"", "path", "\"a\" is not an absolute path", "at most 15 bytes");
	bad("path", "\"/0123456789abcde\"", "path", "path is 16 bytes long", NULL);
	bad("path", "{}", "path", "expected a string, got an object", NULL);
}

static void test_object(void **state)
{
	struct thing t;
	struct policy_error err;

	(void)state;
	t = good("inner", "{\"a\": 3, \"_note\": [1], \"b\": 7}");
	assert_int_equal(t.inner_a, 3);
	assert_int_equal(t.inner_b, 7);
	bad("inner", "[]", "inner", "expected an object, got an array", "{\"a\": N, \"b\": N}");
	assert_int_equal(parse("{\"id\": \"x\", \"inner\": {\"a\": 11}}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "t.json:1:28: field 'inner.a': 11 is out of range (allowed: 0..10)"));
	/* The check hook runs after both members are stored. */
	assert_int_equal(parse("{\"id\": \"x\", \"inner\": {\"a\": 6, \"b\": 5}}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "t.json:1:36: field 'inner.b': a + b is 11 (allowed: a + b <= 10)"));
	/* Unknown keys, nested and at the top, with a suggestion for a typo. */
	assert_int_equal(parse("{\"id\": \"x\", \"inner\": {\"zzz\": 1}}", &t, &err), -EINVAL);
	if (!strstr(err.msg, "t.json:1:23: field 'inner.zzz': unknown key (allowed: a, b, or comments"))
		fail_msg("%s", err.msg);
	assert_int_equal(parse("{\"id\": \"x\", \"colur\": \"red\"}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "field 'colur': unknown key; did you mean 'colour'?"));
	assert_non_null(strstr(err.msg, "allowed: id, size, ranged, count, small, pct, colour, flag, path, inner, nums, tags, or comments"));
}

static void test_array(void **state)
{
	struct thing t;
	struct policy_error err;

	(void)state;
	t = good("nums", "[1, 9, 5]");
	assert_int_equal(t.n_nums, 3);
	assert_int_equal(t.nums[0], 1);
	assert_int_equal(t.nums[1], 9);
	assert_int_equal(t.nums[2], 5);
	assert_int_equal(good("nums", "[]").n_nums, 0);
	bad("nums", "7", "nums", "expected an array, got an integer", "up to 3 digits");
	assert_int_equal(parse("{\"id\": \"x\", \"nums\": [1, \"2\"]}", &t, &err), -EINVAL);
	if (!strstr(err.msg, "t.json:1:25: field 'nums[1]': expected an integer digit, got a string"))
		fail_msg("%s", err.msg);
	assert_int_equal(parse("{\"id\": \"x\", \"nums\": [0]}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "field 'nums[0]': 0 is not a digit (allowed: up to 3 digits 1..9)"));
	assert_int_equal(parse("{\"id\": \"x\", \"nums\": [1, 2, 3, 4]}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "field 'nums[3]': too many digits (4)"));
	t = good("tags", "[\"ab\", \"cd\"]");
	assert_int_equal(t.n_tags, 2);
	assert_string_equal(t.tags[1], "cd");
	assert_int_equal(parse("{\"id\": \"x\", \"tags\": [\"ab\", \"ab\"]}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "field 'tags[1]': \"ab\" is listed twice"));
	assert_int_equal(parse("{\"id\": \"x\", \"tags\": [\"A\"]}", &t, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "field 'tags[0]': invalid tag \"A\""));
}

static void test_to_json(void **state)
{
	const char *text = "{\"id\": \"abc\", \"size\": \"3M\", \"ranged\": 1025, \"count\": 4, \"small\": 7, "
			   "\"pct\": \"42%\", \"colour\": \"blue\", \"flag\": true, \"path\": \"/p\", "
			   "\"inner\": {\"a\": 1, \"b\": 2}, \"nums\": [3, 4], \"tags\": [\"z\"]}";
	struct thing t, back;
	struct policy_error err;
	json_t *j;
	char *s;

	(void)state;
	assert_int_equal(parse(text, &t, &err), 0);
	j = policy_fields_to_json(thing_fields, &t);
	assert_non_null(j);
	s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	assert_string_equal(s, "{\"id\":\"abc\",\"size\":\"3M\",\"ranged\":1025,\"count\":4,\"small\":7,"
			       "\"pct\":42,\"colour\":\"blue\",\"flag\":true,\"path\":\"/p\","
			       "\"inner\":{\"a\":1,\"b\":2},\"nums\":[3,4],\"tags\":[\"z\"]}");
	assert_int_equal(parse(s, &back, &err), 0);
	assert_memory_equal(&back, &t, sizeof(t));
	free(s);
	/* An enum index outside names[] cannot be written. */
	t.colour = (enum colour)3;
	assert_null(policy_fields_to_json(thing_fields, &t));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size),   cmocka_unit_test(test_int),    cmocka_unit_test(test_percent),
		cmocka_unit_test(test_enum),   cmocka_unit_test(test_bool),   cmocka_unit_test(test_string),
		cmocka_unit_test(test_object), cmocka_unit_test(test_array),  cmocka_unit_test(test_to_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
