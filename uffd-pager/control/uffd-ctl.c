/* SPDX-License-Identifier: MIT */
/*
 * uffd-ctl: the operator's command line for a running uffd-pager. It sends
 * one request over the control socket and renders the result either for
 * people (aligned tables, humanised sizes, latencies in microseconds) or as
 * raw JSON for scripts. Exit codes separate "the daemon said no" (1) from
 * "you typed it wrong" (2) and "no daemon to talk to" (3) so scripts can
 * react to each.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "ctl-proto.h"
#include "util.h"

enum {
	EXIT_OK = 0,
	EXIT_REFUSED = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
};

#define DEFAULT_SOCKET UFFDVM_RUN_DIR "/control.sock"
#define DEFAULT_TIMEOUT_MS 10000
#define KEY_WIDTH 24

static const char *socket_path = DEFAULT_SOCKET;
static bool opt_json;
static int opt_timeout_ms = DEFAULT_TIMEOUT_MS;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: uffd-ctl [OPTIONS] COMMAND\n"
		"\n"
		"Query and steer a running uffd-pager through its control socket.\n"
		"\n"
		"Commands:\n"
		"  vm list                  every VM with its limit, residency and counters\n"
		"  vm stats NAME            all statistics of one VM\n"
		"  vm set-limit NAME SIZE   change a VM's local-memory limit (e.g. 512M, 2G; root only)\n"
		"  pager stats              host-wide budget and totals\n"
		"  version                  versions of uffd-ctl, the daemon and its protocol\n"
		"\n"
		"Options:\n"
		"  -c, --control PATH       control socket (default %s)\n"
		"  -j, --json               print the daemon's raw JSON result\n"
		"  -t, --timeout MS         give up after MS milliseconds (default %d)\n"
		"  -h, --help               show this help\n"
		"\n"
		"Exit status: 0 success, 1 the daemon returned an error, 2 usage error,\n"
		"3 the daemon could not be reached.\n",
		DEFAULT_SOCKET, DEFAULT_TIMEOUT_MS);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("uffd-ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'uffd-ctl --help'.\n", stderr);
	return EXIT_USAGE;
}

/* ---- rendering ---- */

static bool get_u64(const json_t *v, uint64_t *ret)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*ret = (uint64_t)json_integer_value(v);
		return true;
	}
	if (json_is_real(v) && json_real_value(v) >= 0) {
		*ret = (uint64_t)json_real_value(v);
		return true;
	}
	return false;
}

static const char *str_bytes(const json_t *v, char *buf, size_t len)
{
	uint64_t n;

	if (!get_u64(v, &n))
		return "-";
	return format_size(n, buf, len);
}

static const char *str_pages(const json_t *v, char *buf, size_t len)
{
	uint64_t n;
	char sz[32];

	if (!get_u64(v, &n))
		return "-";
	if (n > UINT64_MAX / PAGE_SIZE_4K)
		snprintf(buf, len, "%" PRIu64 " pages", n);
	else
		snprintf(buf, len, "%s (%" PRIu64 " pages)", format_size(n * PAGE_SIZE_4K, sz, sizeof(sz)), n);
	return buf;
}

static const char *str_us(uint64_t ns, char *buf, size_t len)
{
	snprintf(buf, len, "%.1f µs", (double)ns / 1000.0);
	return buf;
}

/* Any JSON value as short text: strings unquoted, the rest compact JSON. */
static const char *str_value(const json_t *v, char *buf, size_t len)
{
	char *s;

	if (!v)
		return "-";
	if (json_is_string(v))
		return json_string_value(v);
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	snprintf(buf, len, "%s", s ? s : "?");
	free(s);
	return buf;
}

/* Characters, not bytes: labels such as "<= 16.4 µs" hold UTF-8. */
static int display_width(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

static void kv(int indent, const char *key, const char *value)
{
	char label[128];
	int pad;

	snprintf(label, sizeof(label), "%s:", key);
	pad = KEY_WIDTH - indent - display_width(label);
	if (!*value)
		printf("%*s%s\n", indent, "", label);
	else
		printf("%*s%s%*s %s\n", indent, "", label, pad > 0 ? pad : 0, "", value);
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static bool is_bytes_key(const char *key)
{
	static const char *const names[] = { "local_memory", "budget", "committed", "capacity", "limit" };

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (strcmp(key, names[i]) == 0)
			return true;
	return has_suffix(key, "_bytes") || has_suffix(key, "_memory");
}

static void render_latency(int indent, const char *key, const json_t *lat)
{
	static const char *const pcts[] = { "p50", "p90", "p99", "p999", "max" };
	const json_t *buckets = json_object_get(lat, "buckets"), *b;
	char buf[64];
	uint64_t n;
	size_t i;

	if (!get_u64(json_object_get(lat, "count"), &n))
		n = 0;
	snprintf(buf, sizeof(buf), "%" PRIu64 " samples", n);
	kv(indent, key, buf);
	for (i = 0; i < ARRAY_SIZE(pcts); i++) {
		if (get_u64(json_object_get(lat, pcts[i]), &n))
			kv(indent + 2, pcts[i], str_us(n, buf, sizeof(buf)));
	}
	if (json_is_array(buckets) && json_array_size(buckets)) {
		kv(indent + 2, "histogram", "");
		json_array_foreach(buckets, i, b) {
			const json_t *le = json_object_get(b, "le");
			char label[80], count[32];
			uint64_t c = 0;

			if (get_u64(le, &n))
				snprintf(label, sizeof(label), "<= %s", str_us(n, buf, sizeof(buf)));
			else
				snprintf(label, sizeof(label), "<= %s", str_value(le, buf, sizeof(buf)));
			get_u64(json_object_get(b, "count"), &c);
			snprintf(count, sizeof(count), "%" PRIu64, c);
			kv(indent + 4, label, count);
		}
	}
}

static void render_value(int indent, const char *key, const json_t *v);

static void render_object(int indent, const json_t *obj, const char *const *order, size_t norder)
{
	const char *key;
	json_t *v;

	for (size_t i = 0; i < norder; i++) {
		v = json_object_get(obj, order[i]);
		if (v)
			render_value(indent, order[i], v);
	}
	/* Fields this uffd-ctl does not know yet are shown, not hidden. */
	json_object_foreach((json_t *)obj, key, v) {
		bool known = false;

		for (size_t i = 0; i < norder && !known; i++)
			known = strcmp(order[i], key) == 0;
		if (!known)
			render_value(indent, key, v);
	}
}

static void render_value(int indent, const char *key, const json_t *v)
{
	char buf[256];
	const char *k;
	json_t *sub;

	if (json_is_object(v)) {
		uint64_t total = 0, n;

		if (has_suffix(key, "_ns") || json_object_get(v, "p50")) {
			render_latency(indent, key, v);
			return;
		}
		/* A block of counters gets its total on the heading line. */
		bool counters = json_object_size(v) > 0;
		json_object_foreach((json_t *)v, k, sub) {
			if (get_u64(sub, &n))
				total += n;
			else
				counters = false;
		}
		if (counters) {
			snprintf(buf, sizeof(buf), "%" PRIu64, total);
			kv(indent, key, buf);
		} else {
			kv(indent, key, "");
		}
		render_object(indent + 2, v, NULL, 0);
		return;
	}
	if (has_suffix(key, "_pages"))
		kv(indent, key, str_pages(v, buf, sizeof(buf)));
	else if (is_bytes_key(key) && get_u64(v, &(uint64_t){ 0 }))
		kv(indent, key, str_bytes(v, buf, sizeof(buf)));
	else if (has_suffix(key, "_ns") && get_u64(v, &(uint64_t){ 0 })) {
		uint64_t n;

		get_u64(v, &n);
		kv(indent, key, str_us(n, buf, sizeof(buf)));
	} else
		kv(indent, key, str_value(v, buf, sizeof(buf)));
}

static const char *const vm_stats_order[] = {
	"name", "pid", "state", "local_memory", "guest_pages", "resident_pages", "memfd_resident_pages",
	"high_watermark_pages", "low_watermark_pages", "stored_pages", "spill_pages", "zero_pages", "faults",
	"evictions", "evictions_aborted", "refaults", "zero_pages_skipped", "integrity_errors", "store_errors",
	"throttle_waits", "fault_latency_ns",
};

static const char *str_count(const json_t *v, char *buf, size_t len)
{
	uint64_t n, total = 0;
	const char *k;
	json_t *sub;

	if (get_u64(v, &n)) {
		snprintf(buf, len, "%" PRIu64, n);
		return buf;
	}
	if (!json_is_object(v))
		return "-";
	json_object_foreach((json_t *)v, k, sub) {
		if (get_u64(sub, &n))
			total += n;
	}
	snprintf(buf, len, "%" PRIu64, total);
	return buf;
}

static const char *str_pages_size(const json_t *v, char *buf, size_t len)
{
	uint64_t n;

	if (!get_u64(v, &n) || n > UINT64_MAX / PAGE_SIZE_4K)
		return "-";
	return format_size(n * PAGE_SIZE_4K, buf, len);
}

#define NCOLS 8

static int render_vm_list(const json_t *result)
{
	static const char *const heads[NCOLS] = { "NAME",     "PID",	"STATE",  "LIMIT",
						  "RESIDENT", "STORED", "FAULTS", "EVICTIONS" };
	const json_t *vms = json_object_get(result, "vms"), *vm;
	size_t nvms = json_array_size(vms), i, col;
	int width[NCOLS];
	char *(*cells)[NCOLS];

	if (!json_is_array(vms)) {
		fprintf(stderr, "uffd-ctl: %s: vm.list result lacks a \"vms\" array\n", socket_path);
		return EXIT_REFUSED;
	}
	cells = calloc(nvms ? nvms : 1, sizeof(*cells));
	if (!cells) {
		fprintf(stderr, "uffd-ctl: out of memory\n");
		return EXIT_REFUSED;
	}
	for (col = 0; col < NCOLS; col++)
		width[col] = (int)strlen(heads[col]);
	json_array_foreach(vms, i, vm) {
		char buf[NCOLS][128];
		const char *v[NCOLS];

		v[0] = str_value(json_object_get(vm, "name"), buf[0], sizeof(buf[0]));
		v[1] = str_value(json_object_get(vm, "pid"), buf[1], sizeof(buf[1]));
		v[2] = str_value(json_object_get(vm, "state"), buf[2], sizeof(buf[2]));
		v[3] = str_bytes(json_object_get(vm, "local_memory"), buf[3], sizeof(buf[3]));
		v[4] = str_pages_size(json_object_get(vm, "resident_pages"), buf[4], sizeof(buf[4]));
		v[5] = str_pages_size(json_object_get(vm, "stored_pages"), buf[5], sizeof(buf[5]));
		v[6] = str_count(json_object_get(vm, "faults"), buf[6], sizeof(buf[6]));
		v[7] = str_count(json_object_get(vm, "evictions"), buf[7], sizeof(buf[7]));
		for (col = 0; col < NCOLS; col++) {
			cells[i][col] = strdup(v[col]);
			if (cells[i][col] && (int)strlen(cells[i][col]) > width[col])
				width[col] = (int)strlen(cells[i][col]);
		}
	}
	/* Names and states left-aligned, numbers right-aligned. */
	for (col = 0; col < NCOLS; col++)
		printf(col < 3 ? "%-*s%s" : "%*s%s", width[col], heads[col], col + 1 < NCOLS ? "  " : "\n");
	for (i = 0; i < nvms; i++) {
		for (col = 0; col < NCOLS; col++) {
			printf(col < 3 ? "%-*s%s" : "%*s%s", width[col], cells[i][col] ? cells[i][col] : "?",
			       col + 1 < NCOLS ? "  " : "\n");
			free(cells[i][col]);
		}
	}
	free(cells);
	return EXIT_OK;
}

/* ---- commands ---- */

static int call(const char *cmd, json_t *args, json_t **ret_result)
{
	json_t *req = ctl_request_new(cmd, args), *resp = NULL;
	const char *code, *msg;
	int r;

	if (!req) {
		fprintf(stderr, "uffd-ctl: out of memory\n");
		return EXIT_UNREACHABLE;
	}
	r = ctl_client_call(socket_path, req, &resp, opt_timeout_ms);
	json_decref(req);
	if (r < 0) {
		if (r == -ETIMEDOUT)
			fprintf(stderr, "uffd-ctl: %s: no reply to %s within %d ms\n", socket_path, cmd, opt_timeout_ms);
		else if (r == -EPROTO)
			fprintf(stderr, "uffd-ctl: %s: the daemon sent a malformed reply to %s\n", socket_path, cmd);
		else if (r == -ENOENT || r == -ECONNREFUSED)
			fprintf(stderr, "uffd-ctl: cannot connect to %s: %s (is uffd-pager running? see --control)\n",
				socket_path, strerror(-r));
		else
			fprintf(stderr, "uffd-ctl: %s: %s failed: %s\n", socket_path, cmd, strerror(-r));
		return EXIT_UNREACHABLE;
	}
	if (!ctl_response_is_ok(resp, &code, &msg)) {
		fprintf(stderr, "uffd-ctl: %s: %s: %s\n", socket_path, code, msg);
		if (opt_json) {
			char *s = json_dumps(json_object_get(resp, "error"), JSON_INDENT(2));

			if (s)
				printf("%s\n", s);
			free(s);
		}
		json_decref(resp);
		return EXIT_REFUSED;
	}
	*ret_result = json_incref(json_object_get(resp, "result"));
	json_decref(resp);
	return EXIT_OK;
}

static int print_json(const json_t *result)
{
	char *s = json_dumps(result, JSON_INDENT(2) | JSON_ENCODE_ANY);

	if (!s) {
		fprintf(stderr, "uffd-ctl: out of memory\n");
		return EXIT_REFUSED;
	}
	printf("%s\n", s);
	free(s);
	return EXIT_OK;
}

static int cmd_simple(const char *cmd, json_t *args, int (*render)(const json_t *))
{
	json_t *result = NULL;
	int r = call(cmd, args, &result);

	if (r != EXIT_OK)
		return r;
	r = opt_json ? print_json(result) : render(result);
	json_decref(result);
	return r;
}

static int render_vm_stats(const json_t *result)
{
	if (!json_is_object(result))
		return print_json(result);
	render_object(0, result, vm_stats_order, ARRAY_SIZE(vm_stats_order));
	return EXIT_OK;
}

static int render_pager_stats(const json_t *result)
{
	static const char *const order[] = { "budget", "committed", "vms" };

	if (!json_is_object(result))
		return print_json(result);
	render_object(0, result, order, ARRAY_SIZE(order));
	return EXIT_OK;
}

static int render_set_limit(const json_t *result)
{
	char buf[32];

	printf("%s: local memory limit set to %s\n", json_string_value(json_object_get(result, "vm")) ?: "?",
	       str_bytes(json_object_get(result, "local_memory"), buf, sizeof(buf)));
	return EXIT_OK;
}

static int cmd_version(void)
{
	json_t *result = NULL, *cmds, *c;
	int r;
	size_t i;

	if (!opt_json)
		printf("uffd-ctl %s\n", UFFDVM_VERSION);
	r = call("protocol.version", NULL, &result);
	if (r != EXIT_OK)
		return r;
	if (opt_json) {
		json_object_set_new(result, "client_version", json_string(UFFDVM_VERSION));
		r = print_json(result);
		json_decref(result);
		return r;
	}
	printf("uffd-pager %s, control protocol %lld (uffd-ctl speaks %d)\n",
	       json_string_value(json_object_get(result, "daemon_version")) ?: "(unknown version)",
	       (long long)json_integer_value(json_object_get(result, "version")), CTL_PROTO_VERSION);
	cmds = json_object_get(result, "commands");
	printf("commands:");
	json_array_foreach(cmds, i, c)
		printf(" %s", json_string_value(c) ?: "?");
	printf("\n");
	json_decref(result);
	return EXIT_OK;
}

static int check_vm_name(const char *name)
{
	if (ctl_vm_name_valid(name))
		return 0;
	usage_error("invalid VM name \"%s\" (allowed: 1-%d characters of A-Z a-z 0-9 . _ -)", name, CTL_VM_NAME_MAX);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int o, nargs;
	char **args;

	while ((o = getopt_long(argc, argv, "+c:jt:h", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			socket_path = optarg;
			break;
		case 'j':
			opt_json = true;
			break;
		case 't': {
			char *end;
			long v;

			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || v <= 0 || v > 3600 * 1000)
				return usage_error("--timeout: \"%s\" is not a number of milliseconds in 1..3600000",
						   optarg);
			opt_timeout_ms = (int)v;
			break;
		}
		case 'h':
			usage(stdout);
			return EXIT_OK;
		default:
			fputs("Try 'uffd-ctl --help'.\n", stderr);
			return EXIT_USAGE;
		}
	}
	args = argv + optind;
	nargs = argc - optind;
	if (nargs == 0)
		return usage_error("missing command (vm list, vm stats, vm set-limit, pager stats, version)");

	if (strcmp(args[0], "version") == 0) {
		if (nargs != 1)
			return usage_error("version takes no arguments");
		return cmd_version();
	}
	if (strcmp(args[0], "pager") == 0) {
		if (nargs != 2 || strcmp(args[1], "stats") != 0)
			return usage_error("usage: uffd-ctl pager stats");
		return cmd_simple("pager.stats", NULL, render_pager_stats);
	}
	if (strcmp(args[0], "vm") == 0) {
		if (nargs < 2)
			return usage_error("missing vm subcommand (list, stats NAME, set-limit NAME SIZE)");
		if (strcmp(args[1], "list") == 0) {
			if (nargs != 2)
				return usage_error("vm list takes no arguments");
			return cmd_simple("vm.list", NULL, render_vm_list);
		}
		if (strcmp(args[1], "stats") == 0) {
			if (nargs != 3)
				return usage_error("usage: uffd-ctl vm stats NAME");
			if (check_vm_name(args[2]) < 0)
				return EXIT_USAGE;
			return cmd_simple("vm.stats", json_pack("{s:s}", "vm", args[2]), render_vm_stats);
		}
		if (strcmp(args[1], "set-limit") == 0) {
			uint64_t bytes = 0;
			int r;

			if (nargs != 4)
				return usage_error("usage: uffd-ctl vm set-limit NAME SIZE");
			if (check_vm_name(args[2]) < 0)
				return EXIT_USAGE;
			r = parse_size(args[3], &bytes);
			if (r < 0 || bytes == 0 || bytes > INT64_MAX)
				return usage_error("SIZE \"%s\": %s (expected bytes or a number with suffix K, M, G or T, "
						   "e.g. 512M)",
						   args[3],
						   r == -ERANGE || bytes > INT64_MAX ? "too large"
						   : r < 0			     ? "invalid size"
										     : "must be positive");
			return cmd_simple("vm.set-limit",
					  json_pack("{s:s, s:I}", "vm", args[2], "local_memory", (json_int_t)bytes),
					  render_set_limit);
		}
		return usage_error("unknown vm subcommand \"%s\" (allowed: list, stats, set-limit)", args[1]);
	}
	return usage_error("unknown command \"%s\" (allowed: vm, pager, version)", args[0]);
}
