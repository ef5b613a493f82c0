/* SPDX-License-Identifier: MIT */
/*
 * End-to-end tests of the control server over a real Unix socket in a
 * temporary directory, with the fake pager behind it: every command through
 * ctl_client_call, socket file handling, hostile clients (oversized lines,
 * garbage, half lines, clients that never read, idle clients, too many
 * clients), privilege checks by SO_PEERCRED, and the uffd-ctl program.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "control.h"
#include "ctl-proto.h"
#include "fake-pager.h"
#include "log.h"
#include "util.h"

struct fixture {
	char dir[64];
	char path[128];
	struct pager *pager;
	struct ctl_server *server;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/uffd-ctl-test-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	/* Let an unprivileged child reach the socket in the privilege test. */
	chmod(f->dir, 0755);
	snprintf(f->path, sizeof(f->path), "%s/control.sock", f->dir);
	f->pager = fake_pager_new();
	if (!f->pager || fake_pager_add_vm(f->pager, "alpha", 100, 512ULL << 20, 1) < 0 ||
	    fake_pager_add_vm(f->pager, "beta", 200, 1ULL << 30, 0) < 0)
		return -1;
	if (ctl_server_start(f->pager, f->path, 0666, NULL, &f->server) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ctl_server_stop(f->server);
	fake_pager_free(f->pager);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Sends {"cmd": cmd, "args": args} and returns the response (never NULL). */
static json_t *call(struct fixture *f, const char *cmd, json_t *args)
{
	json_t *req = ctl_request_new(cmd, args), *resp = NULL;
	int r;

	assert_non_null(req);
	r = ctl_client_call(f->path, req, &resp, 5000);
	json_decref(req);
	if (r < 0)
		fail_msg("%s: ctl_client_call: %s", cmd, strerror(-r));
	return resp;
}

static const char *error_code(const json_t *resp)
{
	const char *code = NULL, *msg;

	if (ctl_response_is_ok(resp, &code, &msg))
		return "OK";
	return code;
}

static const char *error_message(const json_t *resp)
{
	const char *code, *msg = "";

	ctl_response_is_ok(resp, &code, &msg);
	return msg;
}

static void test_every_command(void **state)
{
	struct fixture *f = *state;
	json_t *resp, *res, *vms;
	size_t ncmds;

	resp = call(f, "protocol.version", NULL);
	res = json_object_get(resp, "result");
	assert_string_equal(error_code(resp), "OK");
	assert_int_equal(json_integer_value(json_object_get(res, "version")), CTL_PROTO_VERSION);
	ctl_commands(&ncmds);
	assert_int_equal(json_array_size(json_object_get(res, "commands")), ncmds);
	assert_string_equal(json_string_value(json_array_get(json_object_get(res, "commands"), 1)), "vm.list");
	json_decref(resp);

	resp = call(f, "vm.list", NULL);
	vms = json_object_get(json_object_get(resp, "result"), "vms");
	assert_int_equal(json_array_size(vms), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(vms, 0), "name")), "alpha");
	assert_string_equal(json_string_value(json_object_get(json_array_get(vms, 1), "state")), "degraded");
	json_decref(resp);

	resp = call(f, "vm.stats", json_pack("{s:s}", "vm", "alpha"));
	res = json_object_get(resp, "result");
	assert_string_equal(error_code(resp), "OK");
	assert_int_equal(json_integer_value(json_object_get(res, "local_memory")), 512 << 20);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(res, "fault_latency_ns"), "p99")), 41000);
	json_decref(resp);

	resp = call(f, "vm.stats", json_pack("{s:s}", "vm", "gamma"));
	assert_string_equal(error_code(resp), "ENOENT");
	assert_non_null(strstr(error_message(resp), "no VM named \"gamma\""));
	json_decref(resp);

	/* As root (or an allowed uid) the limit changes and stats show it. */
	if (geteuid() != 0)
		assert_int_equal(ctl_server_allow_uid(f->server, geteuid()), 0);
	resp = call(f, "vm.set-limit", json_pack("{s:s, s:s}", "vm", "alpha", "local_memory", "1G"));
	assert_string_equal(error_code(resp), "OK");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(resp, "result"), "local_memory")), 1 << 30);
	json_decref(resp);
	resp = call(f, "vm.stats", json_pack("{s:s}", "vm", "alpha"));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(resp, "result"), "local_memory")), 1 << 30);
	json_decref(resp);

	/* The pager's own refusals come back with its reason. */
	resp = call(f, "vm.set-limit", json_pack("{s:s, s:I}", "vm", "alpha", "local_memory", (json_int_t)(8ULL << 30)));
	assert_string_equal(error_code(resp), "ENOSPC");
	assert_non_null(strstr(error_message(resp), "host budget of 4G exceeded"));
	json_decref(resp);
	resp = call(f, "vm.set-limit", json_pack("{s:s, s:i}", "vm", "alpha", "local_memory", 4096));
	assert_string_equal(error_code(resp), "EINVAL");
	assert_non_null(strstr(error_message(resp), "below the minimum"));
	json_decref(resp);
	resp = call(f, "vm.set-limit", json_pack("{s:s, s:s}", "vm", "nosuch", "local_memory", "1G"));
	assert_string_equal(error_code(resp), "ENOENT");
	json_decref(resp);
	assert_int_equal(fake_pager_set_limit_calls(f->pager), 4);

	/* Invalid arguments never reach the pager. */
	resp = call(f, "vm.set-limit", json_pack("{s:s, s:s}", "vm", "alpha", "local_memory", "huge"));
	assert_string_equal(error_code(resp), "EINVAL");
	assert_non_null(strstr(error_message(resp), "args.local_memory"));
	json_decref(resp);
	assert_int_equal(fake_pager_set_limit_calls(f->pager), 4);

	resp = call(f, "pager.stats", NULL);
	res = json_object_get(resp, "result");
	assert_int_equal(json_integer_value(json_object_get(res, "budget")), FAKE_BUDGET);
	assert_int_equal(json_integer_value(json_object_get(res, "committed")), (1ULL << 30) + (1ULL << 30));
	assert_int_equal(json_integer_value(json_object_get(res, "vms")), 2);
	json_decref(resp);

	resp = call(f, "vm.nosuch", NULL);
	assert_string_equal(error_code(resp), "ENOSYS");
	assert_non_null(strstr(error_message(resp), "allowed: protocol.version, vm.list, vm.stats"));
	json_decref(resp);
}

/* ---- raw socket helpers ---- */

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
}

/*
 * Reads one line (without its newline) within timeout_ms. Returns the
 * malloc'ed line, or NULL at EOF / connection reset.
 */
static char *read_line(int fd, int timeout_ms)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);

	assert_non_null(buf);
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		assert_int_equal(poll(&pfd, 1, timeout_ms), 1);
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		/* One byte at a time: the next line stays in the socket. */
		n = recv(fd, buf + len, 1, 0);
		if (n <= 0) {
			free(buf);
			return NULL;
		}
		if (buf[len] == '\n') {
			buf[len] = '\0';
			return buf;
		}
		len++;
	}
}

static json_t *read_response(int fd)
{
	char *line = read_line(fd, 5000), err[256];
	json_t *resp = NULL;

	if (!line)
		fail_msg("connection closed instead of a response");
	if (ctl_response_parse(line, strlen(line), &resp, err, sizeof(err)) < 0)
		fail_msg("bad response \"%s\": %s", line, err);
	free(line);
	return resp;
}

/* True if the server closed the connection within timeout_ms. */
static bool wait_closed(int fd, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	char buf[65536];

	while (now_ns() < deadline) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, 100) == 0)
			continue;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
	}
	return false;
}

static void test_oversized_line(void **state)
{
	struct fixture *f = *state;
	size_t n = CTL_REQUEST_MAX + 4096;
	char *big = malloc(n);
	json_t *resp;
	int fd;

	assert_non_null(big);
	memset(big, 'x', n);
	fd = raw_connect(f->path);
	send_all(fd, big, n);
	resp = read_response(fd);
	assert_string_equal(error_code(resp), "EMSGSIZE");
	assert_non_null(strstr(error_message(resp), "exceeds 65536 bytes"));
	json_decref(resp);
	assert_true(wait_closed(fd, 3000));
	close(fd);
	free(big);

	/* A line of exactly the limit is still served. */
	n = CTL_REQUEST_MAX;
	big = malloc(n);
	memset(big, ' ', n);
	memcpy(big, "{\"cmd\":\"vm.list\",\"id\":9}", 24);
	big[n - 1] = '\n';
	fd = raw_connect(f->path);
	send_all(fd, big, n);
	resp = read_response(fd);
	assert_string_equal(error_code(resp), "OK");
	assert_int_equal(json_integer_value(json_object_get(resp, "id")), 9);
	json_decref(resp);
	close(fd);
	free(big);
}

static void test_garbage_and_pipelining(void **state)
{
	struct fixture *f = *state;
	static const char input[] = "\xff\xfe\x00garbage\n"
				    "{\"cmd\":\"vm.list\",\"id\":1}\n"
				    "[1,2,3]\n"
				    "\n"
				    "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"beta\"},\"id\":\"two\"}\r\n"
				    "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"../../etc/passwd\"},\"id\":3}\n";
	static const char *const want[] = { "EINVAL", "OK", "EINVAL", "EINVAL", "OK", "EINVAL" };
	json_t *resp;
	int fd = raw_connect(f->path);

	send_all(fd, input, sizeof(input) - 1);
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		resp = read_response(fd);
		if (strcmp(error_code(resp), want[i]) != 0)
			fail_msg("reply %zu: %s (want %s): %s", i, error_code(resp), want[i], error_message(resp));
		if (i == 1)
			assert_int_equal(json_integer_value(json_object_get(resp, "id")), 1);
		if (i == 4)
			assert_string_equal(json_string_value(json_object_get(resp, "id")), "two");
		if (i == 5) {
			assert_int_equal(json_integer_value(json_object_get(resp, "id")), 3);
			assert_non_null(strstr(error_message(resp), "invalid VM name"));
		}
		json_decref(resp);
	}
	/* The connection survives bad requests. */
	send_all(fd, "{\"cmd\":\"pager.stats\"}\n", 22);
	resp = read_response(fd);
	assert_string_equal(error_code(resp), "OK");
	json_decref(resp);
	close(fd);
}

static void test_half_line_then_eof(void **state)
{
	struct fixture *f = *state;
	json_t *resp;
	int fd = raw_connect(f->path);

	send_all(fd, "{\"cmd\":\"vm.list\"}\n{\"cmd\":", 26);
	shutdown(fd, SHUT_WR);
	resp = read_response(fd);
	assert_string_equal(error_code(resp), "OK");
	json_decref(resp);
	resp = read_response(fd);
	assert_string_equal(error_code(resp), "EINVAL");
	assert_non_null(strstr(error_message(resp), "middle of a request line"));
	json_decref(resp);
	assert_true(wait_closed(fd, 3000));
	close(fd);
}

static void test_idle_timeout(void **state)
{
	struct fixture *f = *state;
	uint64_t t0;
	int fd;

	ctl_server_set_idle_timeout(f->server, 300);
	fd = raw_connect(f->path);
	t0 = now_ns();
	assert_true(wait_closed(fd, 5000));
	/* Closed for idleness, not at once. */
	assert_true(now_ns() - t0 >= 250 * 1000000ULL);
	close(fd);
}

static void test_trickling_client(void **state)
{
	struct fixture *f = *state;
	static const char partial[] = "{\"cmd\":\"vm.list\"";
	uint64_t t0;
	int fd;

	ctl_server_set_idle_timeout(f->server, 400);
	fd = raw_connect(f->path);
	t0 = now_ns();
	/* One byte every 100 ms: never idle, but the line never completes in time. */
	for (size_t i = 0; i < sizeof(partial) - 1; i++) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };

		if (poll(&pfd, 1, 100) == 1)
			break; /* closed on us */
		if (send(fd, partial + i, 1, MSG_NOSIGNAL) < 0)
			break;
	}
	assert_true(wait_closed(fd, 3000));
	assert_true(now_ns() - t0 < 1500000000ULL);
	close(fd);
}

static void test_slow_reader(void **state)
{
	struct fixture *f = *state;
	static const char req[] = "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"alpha\"}}\n";
	const size_t nreq = 40000, total = nreq * (sizeof(req) - 1);
	size_t sent = 0, received = 0;
	char *flood = malloc(total), buf[65536];
	uint64_t t0;
	json_t *resp;
	int fd, fl;

	assert_non_null(flood);
	for (size_t i = 0; i < nreq; i++)
		memcpy(flood + i * (sizeof(req) - 1), req, sizeof(req) - 1);
	ctl_server_set_idle_timeout(f->server, 1000);
	/* Flood requests without reading a byte until the server stops taking them. */
	fd = raw_connect(f->path);
	fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	t0 = now_ns();
	while (sent < total && now_ns() - t0 < 2000000000ULL) {
		ssize_t n = send(fd, flood + sent, total - sent, MSG_NOSIGNAL);

		if (n < 0) {
			assert_int_equal(errno, EAGAIN);
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			if (poll(&pfd, 1, 200) == 0)
				break; /* the server stopped reading: backpressure works */
			continue;
		}
		sent += (size_t)n;
	}
	free(flood);
	assert_true(sent > CTL_REQUEST_MAX);
	assert_true(sent < total);

	/* Meanwhile the server answers others promptly. */
	t0 = now_ns();
	resp = call(f, "vm.list", NULL);
	assert_string_equal(error_code(resp), "OK");
	json_decref(resp);
	assert_true(now_ns() - t0 < 2000000000ULL);

	/* The stalled client is dropped after the idle timeout... */
	sleep(2);
	/* ...having had a bounded amount of output queued for it. */
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0 && errno == EAGAIN) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			assert_int_equal(poll(&pfd, 1, 3000), 1);
			continue;
		}
		if (n <= 0)
			break;
		received += (size_t)n;
	}
	assert_true(received > 0);
	assert_true(received < 4 * 1024 * 1024);
	close(fd);
}

struct hammer_arg {
	struct fixture *f;
	int index;
	int failures;
};

static void *hammer(void *arg)
{
	struct hammer_arg *h = arg;

	for (int i = 0; i < 40; i++) {
		json_t *req = ctl_request_new("vm.stats", json_pack("{s:s}", "vm", i % 2 ? "alpha" : "beta")), *resp = NULL;

		json_object_set_new(req, "id", json_pack("[i,i]", h->index, i));
		if (ctl_client_call(h->f->path, req, &resp, 5000) < 0 || !ctl_response_is_ok(resp, NULL, NULL) ||
		    json_integer_value(json_array_get(json_object_get(resp, "id"), 1)) != i)
			h->failures++;
		json_decref(resp);
		json_decref(req);
	}
	return NULL;
}

static void test_many_clients(void **state)
{
	struct fixture *f = *state;
	enum { NCONN = 100, NTHREADS = 8 };
	pthread_t threads[NTHREADS];
	struct hammer_arg args[NTHREADS];
	int fds[NCONN];
	char line[128];

	/* Many connections open at once, each answered with its own id. */
	for (int i = 0; i < NCONN; i++) {
		fds[i] = raw_connect(f->path);
		snprintf(line, sizeof(line), "{\"cmd\":\"vm.stats\",\"args\":{\"vm\":\"alpha\"},\"id\":%d}\n", i);
		send_all(fds[i], line, strlen(line));
	}
	for (int i = NCONN - 1; i >= 0; i--) {
		json_t *resp = read_response(fds[i]);

		assert_string_equal(error_code(resp), "OK");
		assert_int_equal(json_integer_value(json_object_get(resp, "id")), i);
		json_decref(resp);
		close(fds[i]);
	}

	/* Concurrent one-shot clients. */
	for (int i = 0; i < NTHREADS; i++) {
		args[i] = (struct hammer_arg){ .f = f, .index = i };
		assert_int_equal(pthread_create(&threads[i], NULL, hammer, &args[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(threads[i], NULL);
		assert_int_equal(args[i].failures, 0);
	}
}

static void test_client_limit(void **state)
{
	struct fixture *f = *state;
	int fds[CTL_SERVER_MAX_CLIENTS], extra;
	json_t *resp;

	for (int i = 0; i < CTL_SERVER_MAX_CLIENTS; i++) {
		fds[i] = raw_connect(f->path);
		/* A round trip proves the server has accepted this one. */
		send_all(fds[i], "{\"cmd\":\"protocol.version\"}\n", 27);
		resp = read_response(fds[i]);
		json_decref(resp);
	}
	extra = raw_connect(f->path);
	resp = read_response(extra);
	assert_string_equal(error_code(resp), "EBUSY");
	json_decref(resp);
	assert_true(wait_closed(extra, 3000));
	close(extra);
	/* The one-shot client reports the refusal as a daemon error, not a lost connection. */
	resp = call(f, "vm.list", NULL);
	assert_string_equal(error_code(resp), "EBUSY");
	assert_non_null(strstr(error_message(resp), "too many control clients"));
	json_decref(resp);
	close(fds[0]);
	/* A slot frees up once a client leaves. */
	for (int tries = 0;; tries++) {
		extra = raw_connect(f->path);
		send_all(extra, "{\"cmd\":\"protocol.version\"}\n", 27);
		resp = read_response(extra);
		close(extra);
		if (strcmp(error_code(resp), "OK") == 0) {
			json_decref(resp);
			break;
		}
		json_decref(resp);
		assert_true(tries < 50);
		usleep(20000);
	}
	for (int i = 1; i < CTL_SERVER_MAX_CLIENTS; i++)
		close(fds[i]);
}

/* Runs in a child as "nobody": reads are allowed, vm.set-limit is not. */
static int unprivileged_checks(const char *path)
{
	json_t *req, *resp = NULL;
	const char *code = NULL, *msg = NULL;
	int bad = 0;

	req = ctl_request_new("vm.list", NULL);
	if (ctl_client_call(path, req, &resp, 5000) < 0 || !ctl_response_is_ok(resp, NULL, NULL))
		bad |= 1;
	json_decref(req);
	json_decref(resp);
	resp = NULL;
	req = ctl_request_new("vm.set-limit", json_pack("{s:s,s:s}", "vm", "alpha", "local_memory", "1G"));
	if (ctl_client_call(path, req, &resp, 5000) < 0 || ctl_response_is_ok(resp, &code, &msg) ||
	    strcmp(code, "EPERM") != 0 || !strstr(msg, "allowed only to root, the admin group and allowed uids (peer uid 65534)"))
		bad |= 2;
	json_decref(req);
	json_decref(resp);
	return bad;
}

static void test_privileges(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	json_t *resp;
	int status;
	pid_t pid;

	assert_int_equal(stat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0666);

	if (geteuid() != 0) {
		/* Not root: refused until this uid is allowed. */
		resp = call(f, "vm.set-limit", json_pack("{s:s,s:s}", "vm", "alpha", "local_memory", "1G"));
		assert_string_equal(error_code(resp), "EPERM");
		json_decref(resp);
		assert_int_equal(ctl_server_allow_uid(f->server, geteuid()), 0);
		resp = call(f, "vm.set-limit", json_pack("{s:s,s:s}", "vm", "alpha", "local_memory", "1G"));
		assert_string_equal(error_code(resp), "OK");
		json_decref(resp);
		return;
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		_exit(unprivileged_checks(f->path));
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("unprivileged child failed checks (mask %d)", WEXITSTATUS(status));
	assert_int_equal(fake_pager_set_limit_calls(f->pager), 0);

	/* Once uid 65534 is allowed, the same child may change the limit. */
	assert_int_equal(ctl_server_allow_uid(f->server, 65534), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		_exit(unprivileged_checks(f->path) == 2 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(fake_pager_set_limit_calls(f->pager), 1);
}

static bool wait_subscribers(unsigned n, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	while (fake_pager_subscribers() != n && now_ns() < deadline)
		usleep(10000);
	return fake_pager_subscribers() == n;
}

/*
 * events.subscribe: the answer comes first, then one line per event in
 * order; other connections keep working; a subscriber that does not read
 * is dropped once its queue overflows, and emitting never blocks on it;
 * a subscriber that hangs up is unsubscribed.
 */
static void test_events(void **state)
{
	struct fixture *f = *state;
	static const char sub_req[] = "{\"cmd\":\"events.subscribe\",\"id\":3}\n";
	int fd = raw_connect(f->path), slow, small = 4096;
	json_t *resp, *ev;
	uint64_t t0;
	char *line;

	send_all(fd, sub_req, sizeof(sub_req) - 1);
	resp = read_response(fd);
	assert_string_equal(error_code(resp), "OK");
	assert_true(json_is_true(json_object_get(json_object_get(resp, "result"), "subscribed")));
	assert_int_equal(json_integer_value(json_object_get(resp, "id")), 3);
	json_decref(resp);
	assert_true(wait_subscribers(1, 2000));

	fake_pager_emit("vm.attached", json_pack("{s:s, s:i}", "vm", "alpha", "pid", 100));
	fake_pager_emit("donor.down", json_pack("{s:s}", "donor", "tcp://127.0.0.1:1"));
	fake_pager_emit("vm.detached", json_pack("{s:s}", "vm", "alpha"));
	static const char *const want[] = { "vm.attached", "donor.down", "vm.detached" };
	for (unsigned i = 0; i < 3; i++) {
		line = read_line(fd, 5000);
		assert_non_null(line);
		ev = json_loads(line, 0, NULL);
		assert_non_null(ev);
		assert_string_equal(json_string_value(json_object_get(ev, "event")), want[i]);
		assert_true(json_is_real(json_object_get(ev, "time")));
		json_decref(ev);
		free(line);
	}
	/* A request on the stream is ignored, and other connections are served meanwhile. */
	send_all(fd, "{\"cmd\":\"vm.list\"}\n", 18);
	resp = call(f, "vm.list", NULL);
	assert_string_equal(error_code(resp), "OK");
	json_decref(resp);
	fake_pager_emit("vm.degraded", json_pack("{s:s, s:b}", "vm", "beta", "degraded", 1));
	line = read_line(fd, 5000);
	assert_non_null(line);
	assert_non_null(strstr(line, "\"event\":\"vm.degraded\""));
	free(line);

	/* A subscriber that never reads: dropped, and emitting stays fast. */
	slow = raw_connect(f->path);
	setsockopt(slow, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	send_all(slow, sub_req, sizeof(sub_req) - 1);
	assert_true(wait_subscribers(2, 2000));
	close(fd); /* the reader hangs up: only the slow one stays subscribed */
	assert_true(wait_subscribers(1, 2000));
	t0 = now_ns();
	for (unsigned i = 0; i < 200000 && fake_pager_subscribers() > 0; i++)
		fake_pager_emit("page.lost", json_pack("{s:s, s:I, s:s}", "vm", "alpha", "page", (json_int_t)i, "reason",
							"a reason long enough to fill the socket buffers quickly"));
	assert_true(wait_subscribers(0, 5000));
	assert_true(now_ns() - t0 < 20000000000ULL);
	assert_true(wait_closed(slow, 5000));
	close(slow);
	resp = call(f, "pager.stats", NULL);
	assert_string_equal(error_code(resp), "OK");
	json_decref(resp);
}

static void test_socket_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct ctl_server *s2 = NULL;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char other[100], longpath[200];
	struct stat st;
	int fd;

	/* A live server's socket is never stolen. */
	assert_int_equal(ctl_server_start(f->pager, f->path, 0600, NULL, &s2), -EADDRINUSE);
	assert_null(s2);
	assert_int_equal(stat(f->path, &st), 0);

	/* A stale socket (bound, nobody listening) is replaced. */
	snprintf(other, sizeof(other), "%s/stale.sock", f->dir);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", other);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(ctl_server_start(f->pager, other, 0600, NULL, &s2), 0);
	assert_int_equal(stat(other, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	ctl_server_stop(s2);
	assert_int_equal(stat(other, &st), -1);
	assert_int_equal(errno, ENOENT);

	/* A regular file in the way is left alone. */
	fd = open(other, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(ctl_server_start(f->pager, other, 0600, NULL, &s2), -EEXIST);
	assert_int_equal(stat(other, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	unlink(other);

	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(ctl_server_start(f->pager, longpath, 0600, NULL, &s2), -ENAMETOOLONG);
	ctl_server_stop(NULL);

	/* Stopping unlinks; clients then see the daemon as unreachable. */
	ctl_server_stop(f->server);
	f->server = NULL;
	assert_int_equal(stat(f->path, &st), -1);
	json_t *req = ctl_request_new("vm.list", NULL), *resp = NULL;
	assert_int_equal(ctl_client_call(f->path, req, &resp, 1000), -ENOENT);
	json_decref(req);
}

/* ---- uffd-ctl ---- */

struct run {
	int status;
	char out[16384];
	char err[4096];
};

static void slurp(const char *path, char *buf, size_t len)
{
	FILE *fp = fopen(path, "r");
	size_t n = 0;

	if (fp) {
		n = fread(buf, 1, len - 1, fp);
		fclose(fp);
	}
	buf[n] = '\0';
}

static void run_ctl(struct fixture *f, struct run *r, const char *control, ...)
{
	char outp[160], errp[160];
	const char *argv[16];
	int n = 0, status;
	va_list ap;
	pid_t pid;

	argv[n++] = UFFD_CTL_BIN;
	if (control) {
		argv[n++] = "--control";
		argv[n++] = control;
	}
	va_start(ap, control);
	while (n < 15 && (argv[n] = va_arg(ap, const char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	snprintf(outp, sizeof(outp), "%s/out", f->dir);
	snprintf(errp, sizeof(errp), "%s/err", f->dir);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Only async-signal-safe calls here: the parent has a server thread. */
		int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600), e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(100);
		execv(argv[0], (char **)argv);
		_exit(101);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	r->status = WEXITSTATUS(status);
	slurp(outp, r->out, sizeof(r->out));
	slurp(errp, r->err, sizeof(r->err));
	unlink(outp);
	unlink(errp);
}

static void expect(const struct run *r, int status, const char *in_out, const char *in_err)
{
	if (r->status != status || (in_out && !strstr(r->out, in_out)) || (in_err && !strstr(r->err, in_err)))
	{
		/* cmocka truncates long messages: print the evidence in full first. */
		fprintf(stderr, "uffd-ctl exit %d (want %d)\nstdout:\n%s\nstderr:\n%s\nwanted stdout to hold \"%s\", "
			"stderr \"%s\"\n", r->status, status, r->out, r->err, in_out ?: "", in_err ?: "");
		fail();
	}
}

static void test_uffd_ctl(void **state)
{
	struct fixture *f = *state;
	static struct run r;
	char missing[160];
	json_t *j, *stats;
	json_error_t jerr;

	run_ctl(f, &r, f->path, "vm", "list", NULL);
	expect(&r, 0, "NAME   PID  STATE     LIMIT  RESIDENT", NULL);
	/* alpha: limit 512M, resident = limit / 2, stored = pid * 10 pages, faults 100 + 3, evictions 200. */
	expect(&r, 0, "alpha  100  running    512M      256M", NULL);
	assert_non_null(strstr(r.out, "3.9M"));
	assert_non_null(strstr(r.out, "103        200"));
	assert_non_null(strstr(r.out, "beta   200  degraded     1G      512M"));

	run_ctl(f, &r, f->path, "vm", "stats", "alpha", NULL);
	expect(&r, 0, "local_memory:            512M", NULL);
	expect(&r, 0, "resident_pages:          256M (65536 pages)", NULL);
	expect(&r, 0, "p99:                   41.0 µs", NULL);
	expect(&r, 0, "faults:                  132", NULL);
	expect(&r, 0, "<= 16.4 µs:          120", NULL);
	expect(&r, 0, "prefetch_hits:           77", NULL);
	/* Ordered as documented: identity first, latency after the counters. */
	assert_true(strstr(r.out, "name:") < strstr(r.out, "state:"));
	assert_true(strstr(r.out, "evictions:") < strstr(r.out, "fault_latency_ns:"));

	run_ctl(f, &r, f->path, "vm", "stats", "beta", NULL);
	expect(&r, 0, "state:                   degraded", NULL);
	assert_null(strstr(r.out, "fault_latency_ns"));

	run_ctl(f, &r, f->path, "vm", "stats", "nosuch", NULL);
	expect(&r, 5, NULL, "ENOENT: vm.stats: no VM named \"nosuch\"");
	assert_non_null(strstr(r.err, f->path));

	run_ctl(f, &r, f->path, "vm", "set-limit", "alpha", "2G", NULL);
	expect(&r, 0, "alpha: local memory limit set to 2G", NULL);
	run_ctl(f, &r, f->path, "vm", "set-limit", "alpha", "5G", NULL);
	expect(&r, 1, NULL, "ENOSPC");
	run_ctl(f, &r, f->path, "vm", "set-limit", "alpha", "12Q", NULL);
	expect(&r, 2, NULL, "SIZE \"12Q\": invalid size");
	run_ctl(f, &r, f->path, "vm", "set-limit", "a/b", "1G", NULL);
	expect(&r, 2, NULL, "invalid VM name \"a/b\"");
	assert_int_equal(fake_pager_set_limit_calls(f->pager), 2);

	run_ctl(f, &r, f->path, "--json", "pager", "stats", NULL);
	expect(&r, 0, NULL, NULL);
	j = json_loads(r.out, 0, &jerr);
	assert_non_null(j);
	stats = pager_stats(f->pager);
	assert_true(json_equal(j, stats));
	json_decref(stats);
	json_decref(j);

	run_ctl(f, &r, f->path, "pager", "stats", NULL);
	expect(&r, 0, "budget:                  4G", NULL);
	expect(&r, 0, "committed:               3G", NULL);

	run_ctl(f, &r, f->path, "version", NULL);
	expect(&r, 0, "control protocol 1", NULL);
	expect(&r, 0, "vm.set-limit", NULL);

	snprintf(missing, sizeof(missing), "%s/missing.sock", f->dir);
	run_ctl(f, &r, missing, "vm", "list", NULL);
	expect(&r, 3, NULL, missing);

	run_ctl(f, &r, f->path, "vm", "frobnicate", NULL);
	expect(&r, 2, NULL, "unknown vm subcommand \"frobnicate\"");
	run_ctl(f, &r, f->path, NULL);
	expect(&r, 2, NULL, "missing command");
	run_ctl(f, &r, f->path, "--timeout", "soon", "vm", "list", NULL);
	expect(&r, 2, NULL, "--timeout");
	run_ctl(f, &r, NULL, "--help", NULL);
	expect(&r, 0, "vm set-limit NAME SIZE", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_every_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_and_pipelining, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_line_then_eof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trickling_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_reader, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_clients, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_privileges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_socket_lifecycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uffd_ctl, setup, teardown),
	};

	log_set_level(LOG_LVL_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
