/* SPDX-License-Identifier: MIT */
/*
 * uffd-ctl: the operator's command line for a running uffd-pager. It sends
 * one request over the control socket and renders the result either for
 * people (aligned tables, humanised sizes, latencies in microseconds) or as
 * raw JSON for scripts. Exit codes separate "the daemon said no" (1) from
 * "you typed it wrong" (2), "no daemon to talk to" (3), "not allowed" (4),
 * "no such VM" (5) and "the daemon does not implement that" (6) so scripts
 * can react to each. `top` polls the daemon and shows rates between polls.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "ctl-proto.h"
#include "util.h"

enum {
	EXIT_OK = 0,
	EXIT_REFUSED = 1,
	EXIT_USAGE = 2,
	EXIT_UNREACHABLE = 3,
	EXIT_DENIED = 4,      /* EPERM from the daemon, or EACCES on its socket */
	EXIT_NOT_FOUND = 5,   /* ENOENT: no VM of that name */
	EXIT_UNSUPPORTED = 6, /* ENOSYS: the daemon does not know or implement the command */
};

#define DEFAULT_SOCKET UFFDVM_RUN_DIR "/control.sock"
#define DEFAULT_TIMEOUT_MS 10000
#define KEY_WIDTH 24

static const char *socket_path = DEFAULT_SOCKET;
static bool opt_json;
static int opt_timeout_ms = DEFAULT_TIMEOUT_MS;
static bool opt_timeout_set;
/* vm drain / vm park wait for the work itself: the pager gives each up to 10 minutes a round. */
#define WORK_TIMEOUT_MS (30 * 60 * 1000)

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
		"  vm set-limit NAME SIZE   change a VM's local-memory limit (e.g. 512M, 2G; admin)\n"
		"  vm drain NAME            bring every stored page of a VM back into RAM (admin)\n"
		"  vm park NAME             evict as much of an idle VM as its stores take (admin)\n"
		"                           (drain and park show their progress while they run)\n"
		"  vm policy get NAME       the policy a VM runs with\n"
		"  vm policy set NAME FILE  replace a VM's run-time policy from a JSON file, - for stdin (admin)\n"
		"  pager stats              host-wide budget and totals\n"
		"  donor list               donors with their state, pages held and capacity\n"
		"  donor add URL            connect a donor at run time, e.g. tcp://10.0.0.5:7001 (admin)\n"
		"  donor drain URL          move every page off a donor, keep it connected (admin)\n"
		"  donor remove URL         move every page off a donor, then disconnect it (admin)\n"
		"  metrics                  every statistic in Prometheus text format\n"
		"  top [--once] [--interval SEC] [--count N]\n"
		"                           live per-VM view: residency, fault and eviction rates, p99\n"
		"                           fault latency; --once: one screen (two samples) and exit\n"
		"  events [--count N]       follow the pager's events (VMs attached/detached/degraded,\n"
		"                           lost pages, donors down/up), one line each, until interrupted\n"
		"  version                  versions of uffd-ctl, the daemon and its protocol\n"
		"\n"
		"Options:\n"
		"  -c, --control PATH       control socket (default %s)\n"
		"  -j, --json               print the daemon's raw JSON result\n"
		"  -t, --timeout MS         give up after MS milliseconds (default %d)\n"
		"  -h, --help               show this help\n"
		"\n"
		"Admin commands are allowed to root, the pager's --admin-group and its allowed uids;\n"
		"everyone who can connect may read.\n"
		"\n"
		"Exit status: 0 success, 1 the daemon returned an error, 2 usage error,\n"
		"3 the daemon could not be reached, 4 permission denied, 5 no such VM,\n"
		"6 the daemon does not support the command.\n",
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
	"name", "pid", "state", "encryption", "local_memory", "guest_pages", "resident_pages", "memfd_resident_pages",
	"high_watermark_pages", "low_watermark_pages", "stored_pages", "spill_pages", "zero_pages", "faults",
	"evictions", "evictions_aborted", "evictions_clean", "sharing_group", "shared_pages", "refaults", "zero_pages_skipped", "integrity_errors", "store_errors",
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

#define NCOLS 9

/* "-", or how long an adopted VM waited for this pager. */
static const char *str_adopted(const json_t *vm, char *buf, size_t len)
{
	uint64_t ms;

	if (!json_is_true(json_object_get(vm, "adopted")) || !get_u64(json_object_get(vm, "pager_lost_ms"), &ms))
		return "-";
	snprintf(buf, len, "after %.1fs", (double)ms / 1000.0);
	return buf;
}

static int render_vm_list(const json_t *result)
{
	static const char *const heads[NCOLS] = { "NAME",     "PID",	"STATE",  "LIMIT",	"RESIDENT",
						  "STORED",   "FAULTS", "EVICTIONS", "ADOPTED" };
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
		v[8] = str_adopted(vm, buf[8], sizeof(buf[8]));
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
		else if (r == -EACCES)
			fprintf(stderr, "uffd-ctl: cannot connect to %s: %s (the socket's mode and group decide who "
				"may; see uffd-pager --control-mode/--control-group)\n", socket_path, strerror(-r));
		else
			fprintf(stderr, "uffd-ctl: %s: %s failed: %s\n", socket_path, cmd, strerror(-r));
		return r == -EACCES ? EXIT_DENIED : EXIT_UNREACHABLE;
	}
	if (!ctl_response_is_ok(resp, &code, &msg)) {
		int err = ctl_errno_from_name(code);

		fprintf(stderr, "uffd-ctl: %s: %s: %s\n", socket_path, code, msg);
		if (opt_json) {
			char *s = json_dumps(json_object_get(resp, "error"), JSON_INDENT(2));

			if (s)
				printf("%s\n", s);
			free(s);
		}
		json_decref(resp);
		return err == -EPERM ? EXIT_DENIED : err == -ENOENT ? EXIT_NOT_FOUND
			: err == -ENOSYS ? EXIT_UNSUPPORTED : EXIT_REFUSED;
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
	json_t *copy, *groups, *g;
	char saved[32];
	size_t i;

	if (!json_is_object(result) || !(copy = json_copy((json_t *)result)))
		return print_json(result);
	/* One line per sharing group rather than a JSON array. */
	groups = json_incref(json_object_get(copy, "sharing_groups"));
	json_object_del(copy, "sharing_groups");
	render_object(0, copy, order, ARRAY_SIZE(order));
	json_array_foreach(groups, i, g)
		printf("sharing group %s: %" JSON_INTEGER_FORMAT " members, %" JSON_INTEGER_FORMAT " copies, %"
		       JSON_INTEGER_FORMAT " references, %s saved\n",
		       json_string_value(json_object_get(g, "name")) ?: "?",
		       json_integer_value(json_object_get(g, "members")), json_integer_value(json_object_get(g, "copies")),
		       json_integer_value(json_object_get(g, "references")),
		       str_bytes(json_object_get(g, "bytes_saved"), saved, sizeof(saved)));
	json_decref(groups);
	json_decref(copy);
	return EXIT_OK;
}

static int render_set_limit(const json_t *result)
{
	char buf[32];

	printf("%s: local memory limit set to %s\n", json_string_value(json_object_get(result, "vm")) ?: "?",
	       str_bytes(json_object_get(result, "local_memory"), buf, sizeof(buf)));
	return EXIT_OK;
}

static int render_metrics(const json_t *result)
{
	const char *text = json_string_value(json_object_get(result, "text"));

	if (!text) {
		fprintf(stderr, "uffd-ctl: %s: pager.metrics result lacks \"text\"\n", socket_path);
		return EXIT_REFUSED;
	}
	fputs(text, stdout);
	return EXIT_OK;
}

static int render_vm_done(const json_t *result)
{
	printf("%s: done\n", json_string_value(json_object_get(result, "vm")) ?: "?");
	return EXIT_OK;
}

/* ---- vm drain / vm park with progress ---- */

struct bg_call {
	const char *cmd;
	json_t *args;
	json_t *result;
	int rc;
	_Atomic bool done;
};

static void *bg_call_main(void *arg)
{
	struct bg_call *b = arg;

	b->rc = call(b->cmd, b->args, &b->result);
	atomic_store(&b->done, true);
	return NULL;
}

/* One vm.stats figure, or -1 if the VM or the figure cannot be read right now. */
static int64_t poll_stat(const char *name, const char *field)
{
	json_t *req = ctl_request_new("vm.stats", json_pack("{s:s}", "vm", name)), *resp = NULL;
	int64_t v = -1;

	if (req && ctl_client_call(socket_path, req, &resp, 2000) == 0 && ctl_response_is_ok(resp, NULL, NULL)) {
		json_t *f = json_object_get(json_object_get(resp, "result"), field);

		if (json_is_integer(f))
			v = json_integer_value(f);
	}
	json_decref(req);
	json_decref(resp);
	return v;
}

static void draw_bar(const char *verb, const char *name, const char *what, int64_t pages, double frac)
{
	char bar[41];
	int fill;

	if (frac < 0)
		frac = 0;
	if (frac > 1)
		frac = 1;
	fill = (int)(frac * 40 + 0.5);
	memset(bar, '#', (size_t)fill);
	memset(bar + fill, '.', (size_t)(40 - fill));
	bar[40] = '\0';
	printf("\r%s %s [%s] %3d%%  %" PRId64 " pages %s   ", verb, name, bar, (int)(frac * 100), pages, what);
	fflush(stdout);
}

/*
 * vm.drain / vm.park: the request runs on one connection (a thread) while
 * this thread polls vm.stats on others, because the reply only comes once
 * the work is done. On a terminal: a bar redrawn every 200 ms; otherwise one
 * line per second, which scripts and tests can follow.
 */
static int cmd_vm_progress(const char *verb, const char *name)
{
	const bool drain = strcmp(verb, "drain") == 0;
	const char *field = drain ? "stored_pages" : "resident_pages", *what = drain ? "still stored" : "still resident";
	const bool tty = isatty(STDOUT_FILENO) && !opt_json;
	struct bg_call b = { .cmd = drain ? "vm.drain" : "vm.park", .args = json_pack("{s:s}", "vm", name) };
	int64_t first = -1, total = poll_stat(name, "guest_pages");
	uint64_t last_line = 0;
	bool drew = false;
	pthread_t t;
	int r;

	if (!opt_timeout_set)
		opt_timeout_ms = WORK_TIMEOUT_MS;
	/* The starting point, so even a drain shorter than one poll shows what it moved. */
	first = poll_stat(name, field);
	if (first >= 0 && !tty && !opt_json) {
		last_line = now_ns();
		printf("%s %s: %" PRId64 " pages %s\n", verb, name, first, what);
		fflush(stdout);
	}
	r = pthread_create(&t, NULL, bg_call_main, &b);
	if (r) {
		json_decref(b.args);
		return cmd_simple(b.cmd, json_pack("{s:s}", "vm", name), render_vm_done);
	}
	for (unsigned tick = 0; !atomic_load(&b.done); tick++) {
		int64_t v;

		usleep(200 * 1000);
		if (atomic_load(&b.done) || opt_json)
			continue;
		v = poll_stat(name, field);
		if (v < 0)
			continue;
		if (first < 0)
			first = v;
		if (tty) {
			/* drain: the share brought back so far; park: the share of the guest evicted. */
			double frac = drain ? (first > 0 ? (double)(first - v) / (double)first : 1.0)
					    : (total > 0 ? 1.0 - (double)v / (double)total : 0.0);
			draw_bar(verb, name, what, v, frac);
			drew = true;
		} else if (now_ns() - last_line >= 1000000000ULL) {
			last_line = now_ns();
			printf("%s %s: %" PRId64 " pages %s\n", verb, name, v, what);
			fflush(stdout);
		}
	}
	pthread_join(t, NULL); /* call() took b.args */
	if (drew)
		printf("\n");
	if (b.rc != EXIT_OK)
		return b.rc;
	r = opt_json ? print_json(b.result) : render_vm_done(b.result);
	json_decref(b.result);
	return r;
}

/* ---- events ---- */

static void render_event(const json_t *ev)
{
	double t = json_number_value(json_object_get(ev, "time"));
	time_t sec = (time_t)t;
	struct tm tm;
	char ts[32] = "?";
	const char *key;
	json_t *v;

	if (gmtime_r(&sec, &tm))
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	printf("%s.%03dZ %s", ts, (int)((t - (double)sec) * 1000), json_string_value(json_object_get(ev, "event")) ?: "?");
	json_object_foreach((json_t *)ev, key, v) {
		char *val;

		if (!strcmp(key, "event") || !strcmp(key, "time"))
			continue;
		val = json_is_string(v) ? strdup(json_string_value(v)) : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		printf(strchr(val ?: "", ' ') ? " %s=\"%s\"" : " %s=%s", key, val ?: "?");
		free(val);
	}
	printf("\n");
}

/* Connects, subscribes and prints events until interrupted (or count events, if > 0). */
static int cmd_events(int nargs, char **args)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *code, *msg;
	char err[256], *line = NULL;
	size_t cap = 0;
	long count = 0, seen = 0;
	json_t *resp = NULL;
	ssize_t n;
	FILE *f;
	int fd;

	for (int i = 1; i < nargs; i++) {
		char *end;

		if (!strcmp(args[i], "--count") && i + 1 < nargs) {
			count = strtol(args[++i], &end, 10);
			if (*end || count <= 0)
				return usage_error("events --count \"%s\": a positive number of events", args[i]);
		} else {
			return usage_error("events: unknown argument \"%s\" (allowed: --count N)", args[i]);
		}
	}
	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return usage_error("--control \"%s\": socket path too long", socket_path);
	memcpy(sa.sun_path, socket_path, strlen(socket_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		fprintf(stderr, "uffd-ctl: cannot connect to %s: %s (is uffd-pager running? see --control)\n",
			socket_path, strerror(e));
		if (fd >= 0)
			close(fd);
		return e == EACCES ? EXIT_DENIED : EXIT_UNREACHABLE;
	}
	static const char req[] = "{\"cmd\":\"events.subscribe\"}\n";
	if (write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
		fprintf(stderr, "uffd-ctl: %s: cannot send events.subscribe: %s\n", socket_path, strerror(errno));
		close(fd);
		return EXIT_UNREACHABLE;
	}
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return EXIT_UNREACHABLE;
	}
	n = getline(&line, &cap, f);
	if (n <= 0 || ctl_response_parse(line, (size_t)n, &resp, err, sizeof(err)) < 0) {
		fprintf(stderr, "uffd-ctl: %s: no valid reply to events.subscribe%s%s\n", socket_path, n > 0 ? ": " : "",
			n > 0 ? err : "");
		free(line);
		fclose(f);
		return EXIT_UNREACHABLE;
	}
	if (!ctl_response_is_ok(resp, &code, &msg)) {
		int e = ctl_errno_from_name(code);

		fprintf(stderr, "uffd-ctl: %s: %s: %s\n", socket_path, code, msg);
		json_decref(resp);
		free(line);
		fclose(f);
		return e == -ENOSYS ? EXIT_UNSUPPORTED : EXIT_REFUSED;
	}
	json_decref(resp);
	while ((count == 0 || seen < count) && (n = getline(&line, &cap, f)) > 0) {
		json_t *ev = json_loadb(line, (size_t)n, 0, NULL);

		if (!json_is_object(ev)) {
			json_decref(ev);
			continue;
		}
		seen++;
		if (opt_json)
			fputs(line, stdout);
		else
			render_event(ev);
		fflush(stdout);
		json_decref(ev);
	}
	free(line);
	fclose(f);
	if (count && seen < count) {
		fprintf(stderr, "uffd-ctl: %s: the pager closed the event stream after %ld events\n", socket_path, seen);
		return EXIT_UNREACHABLE;
	}
	return EXIT_OK;
}

static int render_donor_list(const json_t *result)
{
	const json_t *donors = json_object_get(result, "donors"), *d;
	int urlw = 3;
	size_t i;

	if (!json_is_array(donors)) {
		fprintf(stderr, "uffd-ctl: %s: donor.list result lacks a \"donors\" array\n", socket_path);
		return EXIT_REFUSED;
	}
	json_array_foreach(donors, i, d) {
		const char *u = json_string_value(json_object_get(d, "url"));
		if (u && (int)strlen(u) > urlw)
			urlw = (int)strlen(u);
	}
	printf("%-*s  %-9s  %10s  %10s  %10s  %8s\n", urlw, "URL", "STATE", "PAGES", "CAPACITY", "USED", "FAILURES");
	json_array_foreach(donors, i, d) {
		char b[4][64];
		printf("%-*s  %-9s  %10s  %10s  %10s  %8s\n", urlw, json_string_value(json_object_get(d, "url")) ?: "?",
		       json_string_value(json_object_get(d, "state")) ?: "?",
		       str_count(json_object_get(d, "pages"), b[0], sizeof(b[0])),
		       str_bytes(json_object_get(d, "capacity"), b[1], sizeof(b[1])),
		       str_bytes(json_object_get(d, "used"), b[2], sizeof(b[2])),
		       str_count(json_object_get(d, "failures"), b[3], sizeof(b[3])));
	}
	return EXIT_OK;
}

static int render_donor_done(const json_t *result)
{
	printf("%s: %s\n", json_string_value(json_object_get(result, "url")) ?: "?",
	       json_string_value(json_object_get(result, "state")) ?: "added");
	return EXIT_OK;
}

static int render_json_human(const json_t *result)
{
	if (!json_is_object(result))
		return print_json(result);
	render_object(0, result, NULL, 0);
	return EXIT_OK;
}

/* Reads a policy from FILE or stdin ("-"); errors name the file, line and column. */
static int read_policy(const char *path, json_t **ret)
{
	json_error_t e;
	json_t *j = strcmp(path, "-") ? json_load_file(path, JSON_REJECT_DUPLICATES, &e)
				     : json_loadf(stdin, JSON_REJECT_DUPLICATES, &e);

	if (!j) {
		usage_error("policy %s:%d:%d: %s", strcmp(path, "-") ? path : "(stdin)", e.line, e.column, e.text);
		return -EINVAL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		usage_error("policy %s: must be a JSON object (docs/policy.md)", path);
		return -EINVAL;
	}
	*ret = j;
	return 0;
}

/* ---- top ---- */

struct top_row {
	char name[CTL_VM_NAME_MAX + 1];
	uint64_t faults, evictions;
	json_t *stats;
};

static uint64_t u64_of(const json_t *v)
{
	uint64_t x = 0;

	get_u64(v, &x);
	return x;
}

static uint64_t faults_total(const json_t *stats)
{
	const json_t *f = json_object_get(stats, "faults"), *v;
	const char *k;
	uint64_t sum = 0;

	json_object_foreach((json_t *)f, k, v)
		sum += u64_of(v);
	return sum;
}

/* One sample: vm.list, then vm.stats of each VM (for the latency histogram). */
static int top_sample(struct top_row **ret_rows, size_t *ret_n)
{
	json_t *list = NULL, *vm;
	struct top_row *rows;
	size_t i, n = 0;
	int r = call("vm.list", NULL, &list);

	if (r != EXIT_OK)
		return r;
	rows = calloc(json_array_size(json_object_get(list, "vms")) + 1, sizeof(*rows));
	if (!rows) {
		json_decref(list);
		return EXIT_REFUSED;
	}
	json_array_foreach(json_object_get(list, "vms"), i, vm) {
		const char *name = json_string_value(json_object_get(vm, "name"));
		json_t *st = NULL;

		if (!name || !ctl_vm_name_valid(name))
			continue;
		r = call("vm.stats", json_pack("{s:s}", "vm", name), &st);
		if (r == EXIT_NOT_FOUND)
			continue; /* gone since the list */
		if (r != EXIT_OK) {
			for (size_t k = 0; k < n; k++)
				json_decref(rows[k].stats);
			free(rows);
			json_decref(list);
			return r;
		}
		snprintf(rows[n].name, sizeof(rows[n].name), "%s", name);
		rows[n].stats = st;
		rows[n].faults = faults_total(st);
		rows[n].evictions = u64_of(json_object_get(st, "evictions"));
		n++;
	}
	json_decref(list);
	*ret_rows = rows;
	*ret_n = n;
	return EXIT_OK;
}

static void top_free(struct top_row *rows, size_t n)
{
	for (size_t i = 0; rows && i < n; i++)
		json_decref(rows[i].stats);
	free(rows);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Renders cur with rates against prev (same name), dt seconds apart. */
static int top_render(const struct top_row *prev, size_t nprev, const struct top_row *cur, size_t ncur, double dt,
		      bool clear)
{
	json_t *out = opt_json ? json_array() : NULL;

	if (clear)
		fputs("\033[H\033[2J", stdout);
	if (!opt_json)
		printf("%-20s %-9s %8s %9s %9s %10s %10s %10s\n", "NAME", "STATE", "LIMIT", "RESIDENT", "STORED",
		       "FAULTS/s", "EVICT/s", "P99");
	for (size_t i = 0; i < ncur; i++) {
		const json_t *st = cur[i].stats;
		const struct top_row *p = NULL;
		double frate = 0, erate = 0;
		uint64_t p99 = u64_of(json_object_get(json_object_get(st, "fault_latency_ns"), "p99"));
		char lim[32], res[32], sto[32], lat[32];

		for (size_t k = 0; k < nprev && !p; k++)
			if (!strcmp(prev[k].name, cur[i].name))
				p = &prev[k];
		if (p && dt > 0) {
			frate = (double)(cur[i].faults - (cur[i].faults >= p->faults ? p->faults : cur[i].faults)) / dt;
			erate = (double)(cur[i].evictions -
					 (cur[i].evictions >= p->evictions ? p->evictions : cur[i].evictions)) / dt;
		}
		if (opt_json) {
			json_array_append_new(out, json_pack("{s:s, s:s?, s:I, s:I, s:I, s:f, s:f, s:I}", "name",
							     cur[i].name, "state",
							     json_string_value(json_object_get(st, "state")),
							     "local_memory", (json_int_t)u64_of(json_object_get(st, "local_memory")),
							     "resident_pages",
							     (json_int_t)u64_of(json_object_get(st, "resident_pages")),
							     "stored_pages", (json_int_t)u64_of(json_object_get(st, "stored_pages")),
							     "fault_rate", frate, "eviction_rate", erate, "p99_ns",
							     (json_int_t)p99));
			continue;
		}
		printf("%-20s %-9s %8s %9s %9s %10.0f %10.0f %10s\n", cur[i].name,
		       json_string_value(json_object_get(st, "state")) ?: "?",
		       str_bytes(json_object_get(st, "local_memory"), lim, sizeof(lim)),
		       str_pages_size(json_object_get(st, "resident_pages"), res, sizeof(res)),
		       str_pages_size(json_object_get(st, "stored_pages"), sto, sizeof(sto)), frate, erate,
		       str_us(p99, lat, sizeof(lat)));
	}
	if (opt_json) {
		int r = print_json(out);

		json_decref(out);
		return r;
	}
	if (!ncur)
		printf("(no VMs)\n");
	fflush(stdout);
	return EXIT_OK;
}

static int cmd_top(int nargs, char **args)
{
	bool once = false;
	double interval = 1.0, t_prev, t_cur;
	long count = -1;
	struct top_row *prev = NULL, *cur = NULL;
	size_t nprev = 0, ncur = 0;
	int r;

	for (int i = 1; i < nargs; i++) {
		char *end;

		if (!strcmp(args[i], "--once")) {
			once = true;
		} else if (!strcmp(args[i], "--interval") && i + 1 < nargs) {
			interval = strtod(args[++i], &end);
			if (*end || !(interval >= 0.1 && interval <= 3600))
				return usage_error("top --interval \"%s\": seconds in 0.1..3600", args[i]);
		} else if (!strcmp(args[i], "--count") && i + 1 < nargs) {
			count = strtol(args[++i], &end, 10);
			if (*end || count < 1)
				return usage_error("top --count \"%s\": a positive number of screens", args[i]);
		} else {
			return usage_error("top: unknown argument \"%s\" (allowed: --once, --interval SEC, --count N)",
					   args[i]);
		}
	}
	if (once)
		count = 1;
	r = top_sample(&prev, &nprev);
	if (r != EXIT_OK)
		return r;
	t_prev = now_s();
	for (long shown = 0; count < 0 || shown < count; shown++) {
		usleep((useconds_t)(interval * 1e6));
		r = top_sample(&cur, &ncur);
		if (r != EXIT_OK)
			break;
		t_cur = now_s();
		r = top_render(prev, nprev, cur, ncur, t_cur - t_prev, !once && isatty(STDOUT_FILENO) && !opt_json);
		top_free(prev, nprev);
		prev = cur;
		nprev = ncur;
		cur = NULL;
		t_prev = t_cur;
		if (r != EXIT_OK)
			break;
	}
	top_free(prev, nprev);
	return r;
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
			opt_timeout_set = true;
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
		return usage_error("missing command (vm list, vm stats, vm set-limit, vm drain, vm park, vm policy, "
				   "pager stats, metrics, top, events, version)");
	if (strcmp(args[0], "metrics") == 0) {
		if (nargs != 1)
			return usage_error("metrics takes no arguments");
		return cmd_simple("pager.metrics", NULL, render_metrics);
	}
	if (strcmp(args[0], "top") == 0)
		return cmd_top(nargs, args);
	if (strcmp(args[0], "events") == 0)
		return cmd_events(nargs, args);

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
	if (strcmp(args[0], "donor") == 0) {
		static const char *const verbs[][2] = { { "add", "donor.add" }, { "drain", "donor.drain" },
							{ "remove", "donor.remove" } };
		if (nargs == 2 && strcmp(args[1], "list") == 0)
			return cmd_simple("donor.list", NULL, render_donor_list);
		for (size_t v = 0; nargs == 3 && v < ARRAY_SIZE(verbs); v++)
			if (strcmp(args[1], verbs[v][0]) == 0)
				return cmd_simple(verbs[v][1], json_pack("{s:s}", "url", args[2]), render_donor_done);
		return usage_error("usage: uffd-ctl donor list | donor add URL | donor drain URL | donor remove URL");
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
		if (strcmp(args[1], "drain") == 0 || strcmp(args[1], "park") == 0) {
			if (nargs != 3)
				return usage_error("usage: uffd-ctl vm %s NAME", args[1]);
			if (check_vm_name(args[2]) < 0)
				return EXIT_USAGE;
			return cmd_vm_progress(args[1], args[2]);
		}
		if (strcmp(args[1], "policy") == 0) {
			json_t *pol = NULL;

			if (nargs == 4 && strcmp(args[2], "get") == 0) {
				if (check_vm_name(args[3]) < 0)
					return EXIT_USAGE;
				return cmd_simple("vm.policy.get", json_pack("{s:s}", "vm", args[3]), render_json_human);
			}
			if (nargs == 5 && strcmp(args[2], "set") == 0) {
				if (check_vm_name(args[3]) < 0 || read_policy(args[4], &pol) < 0)
					return EXIT_USAGE;
				return cmd_simple("vm.policy.set", json_pack("{s:s, s:o}", "vm", args[3], "policy", pol),
						  render_vm_done);
			}
			return usage_error("usage: uffd-ctl vm policy get NAME | vm policy set NAME FILE");
		}
		return usage_error("unknown vm subcommand \"%s\" (allowed: list, stats, set-limit, drain, park, policy)",
				   args[1]);
	}
	return usage_error("unknown command \"%s\" (allowed: vm, pager, donor, metrics, top, events, version)", args[0]);
}
