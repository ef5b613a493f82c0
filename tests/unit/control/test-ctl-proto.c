/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the control protocol: request validation against a table of
 * good and hostile lines (each error must name what is wrong), the command
 * table, VM name rules, response encoding and decoding, errno names.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ctl-proto.h"
#include "util.h"

static int parse(const char *line, struct ctl_request *r, char *err, size_t errlen)
{
	return ctl_request_parse(line, strlen(line), r, err, errlen);
}

static void test_parse_valid(void **state)
{
	struct ctl_request r;
	char err[512];

	assert_int_equal(parse("{\"cmd\":\"vm.list\"}\n", &r, err, sizeof(err)), 0);
	assert_non_null(r.command);
	assert_int_equal(r.command->cmd, CTL_CMD_VM_LIST);
	assert_null(r.id);
	ctl_request_clear(&r);

	assert_int_equal(parse("{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"web-1.prod_a\"},\"id\":42}", &r, err,
			       sizeof(err)), 0);
	assert_int_equal(r.command->cmd, CTL_CMD_VM_STATS);
	assert_string_equal(r.vm, "web-1.prod_a");
	assert_true(json_is_integer(r.id));
	assert_int_equal(json_integer_value(r.id), 42);
	ctl_request_clear(&r);
	assert_null(r.id);

	/* Sizes as strings with suffixes, and as integers. */
	assert_int_equal(parse("{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":\"512M\"},"
			       "\"id\":{\"k\":[1,2]}}\r\n", &r, err, sizeof(err)), 0);
	assert_int_equal(r.command->cmd, CTL_CMD_VM_SET_LIMIT);
	assert_true(r.command->flags & CTL_CMD_MUTATES);
	assert_int_equal(r.local_memory, 512ULL << 20);
	assert_true(json_is_object(r.id));
	ctl_request_clear(&r);

	assert_int_equal(parse("{\"args\":{\"local_memory\":1073741824,\"vm\":\"b\"},\"cmd\":\"vm.set-limit\"}", &r,
			       err, sizeof(err)), 0);
	assert_int_equal(r.local_memory, 1ULL << 30);
	assert_string_equal(r.vm, "b");
	ctl_request_clear(&r);

	assert_int_equal(parse("{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"b\",\"local_memory\":\"2GiB\"}}", &r, err,
			       sizeof(err)), 0);
	assert_int_equal(r.local_memory, 2ULL << 30);
	ctl_request_clear(&r);

	/* An empty args object is the same as none; whitespace is fine. */
	assert_int_equal(parse("  { \"cmd\" : \"pager.stats\" , \"args\" : { } , \"id\" : \"x\" }  \n", &r, err,
			       sizeof(err)), 0);
	assert_int_equal(r.command->cmd, CTL_CMD_PAGER_STATS);
	assert_string_equal(json_string_value(r.id), "x");
	ctl_request_clear(&r);

	assert_int_equal(parse("{\"cmd\":\"protocol.version\",\"id\":null}", &r, err, sizeof(err)), 0);
	assert_int_equal(r.command->cmd, CTL_CMD_PROTOCOL_VERSION);
	assert_true(json_is_null(r.id));
	ctl_request_clear(&r);

	/* The longest valid VM name. */
	char line[256], name[CTL_VM_NAME_MAX + 1];
	memset(name, 'n', CTL_VM_NAME_MAX);
	name[CTL_VM_NAME_MAX] = '\0';
	snprintf(line, sizeof(line), "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"%s\"}}", name);
	assert_int_equal(parse(line, &r, err, sizeof(err)), 0);
	assert_string_equal(r.vm, name);
	ctl_request_clear(&r);
}

struct bad_case {
	const char *line;
	int rc;
	const char *needle; /* must appear in the error message */
};

static const struct bad_case bad_cases[] = {
	{ "", -EINVAL, "invalid JSON" },
	{ "\n", -EINVAL, "invalid JSON" },
	{ "{", -EINVAL, "invalid JSON" },
	{ "not json", -EINVAL, "invalid JSON" },
	{ "[]", -EINVAL, "must be a JSON object, not an array" },
	{ "\"vm.list\"", -EINVAL, "not a string" },
	{ "42", -EINVAL, "not an integer" },
	{ "null", -EINVAL, "not null" },
	{ "{}", -EINVAL, "missing field \"cmd\"" },
	{ "{\"id\":1}", -EINVAL, "missing field \"cmd\"" },
	{ "{\"cmd\":7}", -EINVAL, "field \"cmd\" must be a string, not an integer" },
	{ "{\"cmd\":null}", -EINVAL, "field \"cmd\" must be a string, not null" },
	{ "{\"cmd\":[\"vm.list\"]}", -EINVAL, "not an array" },
	{ "{\"cmd\":\"vm.lst\"}", -ENOSYS, "unknown command \"vm.lst\" (allowed: protocol.version, vm.list" },
	{ "{\"cmd\":\"\"}", -ENOSYS, "pager.stats" },
	{ "{\"cmd\":\"VM.LIST\"}", -ENOSYS, "unknown command" },
	{ "{\"cmd\":\"vm.list\\u0000x\"}", -EINVAL, "invalid JSON" },
	{ "{\"cmd\":\"vm.list\",\"extra\":1}", -EINVAL, "unknown field \"extra\" (allowed: cmd, args, id)" },
	{ "{\"cmd\":\"vm.list\",\"cmd\":\"vm.list\"}", -EINVAL, "duplicate" },
	{ "{\"cmd\":\"vm.list\"} {\"cmd\":\"vm.list\"}", -EINVAL, "invalid JSON" },
	{ "{\"cmd\":\"vm.list\",\"args\":[]}", -EINVAL, "field \"args\" must be an object, not an array" },
	{ "{\"cmd\":\"vm.list\",\"args\":\"x\"}", -EINVAL, "field \"args\" must be an object" },
	{ "{\"cmd\":\"vm.list\",\"args\":{\"vm\":\"a\"}}", -EINVAL, "unknown field \"args.vm\" (allowed: none)" },
	{ "{\"cmd\":\"vm.stats\"}", -EINVAL, "missing field \"args.vm\"" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{}}", -EINVAL, "missing field \"args.vm\"" },
	{ "{\"cmd\":\"vm.stats\",\"args\":null}", -EINVAL, "field \"args\" must be an object, not null" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":5}}", -EINVAL, "\"args.vm\" must be a string (VM name), not an integer" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"\"}}", -EINVAL, "invalid VM name" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"a b\"}}", -EINVAL, "args.vm\": invalid VM name" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"../etc\"}}", -EINVAL, "invalid VM name" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"..\"}}", -EINVAL, "invalid VM name" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\".\"}}", -EINVAL, "invalid VM name" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"a/b\"}}", -EINVAL, "invalid VM name" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"\\u00e9t\\u00e9\"}}", -EINVAL, "invalid VM name" },
	{ "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"a\",\"verbose\":true}}", -EINVAL, "unknown field \"args.verbose\" (allowed: vm)" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\"}}", -EINVAL, "missing field \"args.local_memory\" (required: vm, local_memory)" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"local_memory\":\"1G\"}}", -EINVAL, "missing field \"args.vm\"" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":\"lots\"}}", -EINVAL, "args.local_memory\": invalid size \"lots\"" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":\"12Q\"}}", -EINVAL, "invalid size" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":\"-1G\"}}", -EINVAL, "invalid size" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":\"99999999999T\"}}", -EINVAL, "out-of-range size" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":\"0\"}}", -EINVAL, "must be positive" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":0}}", -EINVAL, "positive number of bytes, not 0" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":-5}}", -EINVAL, "not -5" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":1.5}}", -EINVAL, "not a real number" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":true}}", -EINVAL, "not a boolean" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":{}}}", -EINVAL, "not an object" },
	{ "{\"cmd\":\"vm.set-limit\",\"args\":{\"vm\":\"a\",\"local_memory\":99999999999999999999}}", -EINVAL, "invalid JSON" },
};

static void test_parse_invalid(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++) {
		struct ctl_request r;
		char err[512] = "";
		int rc = parse(bad_cases[i].line, &r, err, sizeof(err));

		if (rc != bad_cases[i].rc || !strstr(err, bad_cases[i].needle))
			fail_msg("case %zu %s: rc %d (want %d), message \"%s\" (want \"%s\")", i, bad_cases[i].line, rc,
				 bad_cases[i].rc, err, bad_cases[i].needle);
		assert_null(r.command);
		assert_null(r.args);
		assert_string_equal(r.vm, "");
		ctl_request_clear(&r);
	}
}

static void test_parse_keeps_id_on_error(void **state)
{
	struct ctl_request r;
	char err[256];

	assert_int_equal(parse("{\"cmd\":\"nope\",\"id\":\"abc\"}", &r, err, sizeof(err)), -ENOSYS);
	assert_string_equal(json_string_value(r.id), "abc");
	ctl_request_clear(&r);
	assert_int_equal(parse("{\"cmd\":\"vm.stats\",\"id\":[7]}", &r, err, sizeof(err)), -EINVAL);
	assert_int_equal(json_integer_value(json_array_get(r.id, 0)), 7);
	ctl_request_clear(&r);
	assert_int_equal(parse("{\"id\":3,", &r, err, sizeof(err)), -EINVAL);
	assert_null(r.id);
	ctl_request_clear(&r);
}

static void test_parse_binary_and_size(void **state)
{
	struct ctl_request r;
	char err[256];
	char *big;
	size_t n;

	/* A NUL byte inside the line is reported with its column. */
	static const char nul[] = "{\"cmd\":\0\"vm.list\"}";
	assert_int_equal(ctl_request_parse(nul, sizeof(nul) - 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "NUL byte at column 8"));
	ctl_request_clear(&r);

	static const char two[] = "{\"cmd\":\"vm.list\"}\n{\"cmd\":\"vm.list\"}\n";
	assert_int_equal(ctl_request_parse(two, sizeof(two) - 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "newline"));
	ctl_request_clear(&r);

	static const char bad_utf8[] = "{\"cmd\":\"vm.\xff\xfe\"}";
	assert_int_equal(ctl_request_parse(bad_utf8, sizeof(bad_utf8) - 1, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "invalid JSON"));
	ctl_request_clear(&r);

	/* Exactly at the limit is parsed (padding is whitespace); one more byte is refused. */
	n = CTL_REQUEST_MAX;
	big = malloc(n + 1);
	assert_non_null(big);
	memset(big, ' ', n);
	memcpy(big, "{\"cmd\":\"vm.list\"}", 17);
	big[n - 1] = '\n';
	assert_int_equal(ctl_request_parse(big, n, &r, err, sizeof(err)), 0);
	ctl_request_clear(&r);
	big[n - 1] = ' ';
	big[n] = '\n';
	assert_int_equal(ctl_request_parse(big, n + 1, &r, err, sizeof(err)), -EMSGSIZE);
	assert_non_null(strstr(err, "exceeds the limit of 65536 bytes"));
	ctl_request_clear(&r);
	free(big);

	/* Deep nesting in the id is bounded by the parser, not the stack. */
	n = 60000;
	big = malloc(2 * n + 64);
	assert_non_null(big);
	strcpy(big, "{\"cmd\":\"vm.list\",\"id\":");
	size_t off = strlen(big);
	memset(big + off, '[', n / 2 - 20);
	off += n / 2 - 20;
	memset(big + off, ']', n / 2 - 20);
	off += n / 2 - 20;
	strcpy(big + off, "}");
	assert_int_equal(ctl_request_parse(big, strlen(big), &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "invalid JSON"));
	ctl_request_clear(&r);
	free(big);
}

static void test_vm_names(void **state)
{
	char name[80];

	assert_true(ctl_vm_name_valid("a"));
	assert_true(ctl_vm_name_valid("Web_01.prod-x"));
	assert_true(ctl_vm_name_valid("..a"));
	assert_false(ctl_vm_name_valid(NULL));
	assert_false(ctl_vm_name_valid(""));
	assert_false(ctl_vm_name_valid("."));
	assert_false(ctl_vm_name_valid(".."));
	assert_false(ctl_vm_name_valid("a b"));
	assert_false(ctl_vm_name_valid("a/b"));
	assert_false(ctl_vm_name_valid("a\n"));
	assert_false(ctl_vm_name_valid("\xc3\xa9"));
	memset(name, 'x', sizeof(name));
	name[CTL_VM_NAME_MAX] = '\0';
	assert_true(ctl_vm_name_valid(name));
	name[CTL_VM_NAME_MAX] = 'x';
	name[CTL_VM_NAME_MAX + 1] = '\0';
	assert_false(ctl_vm_name_valid(name));
}

static void test_command_table(void **state)
{
	size_t n, i;
	const struct ctl_command *cmds = ctl_commands(&n);
	json_t *names = ctl_commands_json();

	assert_int_equal(n, _CTL_CMD_MAX);
	assert_int_equal(json_array_size(names), n);
	for (i = 0; i < n; i++) {
		/* The enum indexes the table: handlers rely on it. */
		assert_int_equal(cmds[i].cmd, (int)i);
		assert_ptr_equal(ctl_command_find(cmds[i].name), &cmds[i]);
		assert_string_equal(json_string_value(json_array_get(names, i)), cmds[i].name);
		assert_non_null(cmds[i].summary);
		/* Admin commands: exactly those that change state. */
		assert_int_equal(!!(cmds[i].flags & CTL_CMD_MUTATES),
				 cmds[i].cmd == CTL_CMD_VM_SET_LIMIT || cmds[i].cmd == CTL_CMD_VM_DRAIN ||
					 cmds[i].cmd == CTL_CMD_VM_PARK || cmds[i].cmd == CTL_CMD_VM_POLICY_SET ||
					 cmds[i].cmd == CTL_CMD_DONOR_ADD || cmds[i].cmd == CTL_CMD_DONOR_REMOVE ||
					 cmds[i].cmd == CTL_CMD_DONOR_DRAIN);
	}
	assert_non_null(ctl_command_find("vm.drain"));
	assert_null(ctl_command_find("vm.nosuch"));
	json_decref(names);
}

static void test_responses(void **state)
{
	json_t *id = json_string("req-1"), *resp, *back;
	const char *code, *msg;
	char *line, err[256];
	size_t len;

	resp = ctl_response_ok(id, json_pack("{s:i}", "answer", 42));
	assert_non_null(resp);
	assert_int_equal(ctl_line_dump(resp, &line, &len), 0);
	assert_int_equal(len, strlen(line));
	assert_int_equal(line[len - 1], '\n');
	assert_null(memchr(line, '\n', len - 1));
	assert_int_equal(ctl_response_parse(line, len, &back, err, sizeof(err)), 0);
	assert_true(ctl_response_is_ok(back, NULL, NULL));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(back, "result"), "answer")), 42);
	assert_string_equal(json_string_value(json_object_get(back, "id")), "req-1");
	json_decref(back);
	json_decref(resp);
	free(line);

	resp = ctl_response_error(id, -ENOSPC, "over the host budget by %d pages", 12);
	assert_int_equal(ctl_line_dump(resp, &line, &len), 0);
	assert_int_equal(ctl_response_parse(line, len, &back, err, sizeof(err)), 0);
	assert_false(ctl_response_is_ok(back, &code, &msg));
	assert_string_equal(code, "ENOSPC");
	assert_string_equal(msg, "over the host budget by 12 pages");
	assert_true(json_equal(json_object_get(back, "id"), id));
	json_decref(back);
	json_decref(resp);
	free(line);

	/* Without an id there is no "id" member. */
	resp = ctl_response_error(NULL, -ENOENT, "x");
	assert_null(json_object_get(resp, "id"));
	json_decref(resp);

	/* A message that is not UTF-8 still yields a valid reply. */
	resp = ctl_response_error(NULL, -EINVAL, "bad \xff byte");
	assert_non_null(resp);
	assert_int_equal(ctl_line_dump(resp, &line, &len), 0);
	assert_int_equal(ctl_response_parse(line, len, &back, err, sizeof(err)), 0);
	json_decref(back);
	json_decref(resp);
	free(line);
	json_decref(id);

	/* Requests built for clients are accepted by the parser. */
	json_t *req = ctl_request_new("vm.set-limit", json_pack("{s:s,s:s}", "vm", "v", "local_memory", "1G"));
	struct ctl_request r;
	assert_int_equal(ctl_line_dump(req, &line, &len), 0);
	assert_int_equal(ctl_request_parse(line, len, &r, err, sizeof(err)), 0);
	assert_int_equal(r.local_memory, 1ULL << 30);
	ctl_request_clear(&r);
	json_decref(req);
	free(line);
}

static void test_response_parse_invalid(void **state)
{
	static const char *const bad[] = {
		"", "x", "[]", "{}", "{\"ok\":1}", "{\"ok\":true}", "{\"ok\":false}",
		"{\"ok\":false,\"error\":\"ENOENT\"}", "{\"ok\":false,\"error\":{\"code\":\"ENOENT\"}}",
		"{\"ok\":false,\"error\":{\"code\":2,\"message\":\"m\"}}",
	};
	char err[256];
	json_t *r = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (ctl_response_parse(bad[i], strlen(bad[i]), &r, err, sizeof(err)) != -EPROTO)
			fail_msg("response \"%s\" was accepted", bad[i]);
	}
	assert_null(r);
}

static void test_errno_names(void **state)
{
	static const int errs[] = { ENOENT, EINVAL, EPERM, ENOSPC, ENOSYS, EMSGSIZE, EBUSY, ENOMEM };

	for (size_t i = 0; i < ARRAY_SIZE(errs); i++)
		assert_int_equal(ctl_errno_from_name(ctl_errno_name(-errs[i])), -errs[i]);
	assert_string_equal(ctl_errno_name(-ENOENT), "ENOENT");
	assert_string_equal(ctl_errno_name(-EPERM), "EPERM");
	assert_string_equal(ctl_errno_name(-EXDEV), "EIO");
	assert_int_equal(ctl_errno_from_name("EWHATEVER"), -EIO);
	assert_int_equal(ctl_errno_from_name(NULL), -EIO);
}

static void test_client_unreachable(void **state)
{
	json_t *req = ctl_request_new("vm.list", NULL), *resp = NULL;
	char path[200];

	assert_int_equal(ctl_client_call("/nonexistent-dir/control.sock", req, &resp, 1000), -ENOENT);
	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(ctl_client_call(path, req, &resp, 1000), -ENAMETOOLONG);
	assert_null(resp);
	json_decref(req);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_invalid),
		cmocka_unit_test(test_parse_keeps_id_on_error),
		cmocka_unit_test(test_parse_binary_and_size),
		cmocka_unit_test(test_vm_names),
		cmocka_unit_test(test_command_table),
		cmocka_unit_test(test_responses),
		cmocka_unit_test(test_response_parse_invalid),
		cmocka_unit_test(test_errno_names),
		cmocka_unit_test(test_client_unreachable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
