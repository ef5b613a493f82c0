/* SPDX-License-Identifier: MIT */
/*
 * Control protocol: the pager's command table, strict request validation
 * against any daemon's table, response encoding and a blocking one-shot
 * client. Validation is table-driven so a
 * new command only declares its arguments; the parser never trusts the
 * peer, because the control socket may be reachable by other local users.
 */
#include "ctl-proto.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "json-util.h"
#include "util.h"

static const struct ctl_arg_spec args_none[] = { { .name = NULL } };
static const struct ctl_arg_spec args_vm[] = {
	{ "vm", CTL_ARG_VM_NAME, true, 0 },
	{ .name = NULL },
};
static const struct ctl_arg_spec args_vm_size[] = {
	{ "vm", CTL_ARG_VM_NAME, true, 0 },
	{ "local_memory", CTL_ARG_SIZE, true, 0 },
	{ .name = NULL },
};

static const struct ctl_arg_spec args_vm_policy[] = {
	{ "vm", CTL_ARG_VM_NAME, true, 0 },
	{ "policy", CTL_ARG_OBJECT, true, 0 },
	{ .name = NULL },
};

static const struct ctl_arg_spec args_url[] = {
	{ "url", CTL_ARG_URL, true, 0 },
	{ .name = NULL },
};

static const struct ctl_command command_table[] = {
	{ CTL_CMD_PROTOCOL_VERSION, "protocol.version", 0, args_none,
	  "protocol version and the commands this daemon understands" },
	{ CTL_CMD_VM_LIST, "vm.list", 0, args_none, "every registered VM with its main figures" },
	{ CTL_CMD_VM_STATS, "vm.stats", 0, args_vm, "all counters and the fault latency histogram of one VM" },
	{ CTL_CMD_VM_SET_LIMIT, "vm.set-limit", CTL_CMD_MUTATES, args_vm_size,
	  "change the local-memory limit of one VM" },
	{ CTL_CMD_PAGER_STATS, "pager.stats", 0, args_none, "host-wide budget and totals" },
	{ CTL_CMD_PAGER_METRICS, "pager.metrics", 0, args_none,
	  "every statistic as Prometheus text exposition (format 0.0.4)" },
	{ CTL_CMD_VM_DRAIN, "vm.drain", CTL_CMD_MUTATES, args_vm,
	  "bring every stored page of one VM back into host RAM (before migration or shutdown)" },
	{ CTL_CMD_VM_PARK, "vm.park", CTL_CMD_MUTATES, args_vm,
	  "evict as much of one idle VM as its stores take" },
	{ CTL_CMD_VM_POLICY_GET, "vm.policy.get", 0, args_vm, "the policy one VM runs with" },
	{ CTL_CMD_VM_POLICY_SET, "vm.policy.set", CTL_CMD_MUTATES, args_vm_policy,
	  "replace the run-time settings of one VM's policy" },
	{ CTL_CMD_DONOR_LIST, "donor.list", 0, args_none, "every donor with its state, pages and capacity" },
	{ CTL_CMD_DONOR_ADD, "donor.add", CTL_CMD_MUTATES, args_url, "connect a donor at run time" },
	{ CTL_CMD_DONOR_REMOVE, "donor.remove", CTL_CMD_MUTATES, args_url,
	  "move every page off a donor, then disconnect it" },
	{ CTL_CMD_DONOR_DRAIN, "donor.drain", CTL_CMD_MUTATES, args_url,
	  "move every page off a donor, keeping it connected" },
	{ CTL_CMD_EVENTS_SUBSCRIBE, "events.subscribe", 0, args_none,
	  "turn the connection into a stream of events, one JSON line each (VMs, donors, lost pages)" },
};

_Static_assert(ARRAY_SIZE(command_table) == _CTL_CMD_MAX, "one table entry per enum ctl_cmd");

static const struct ctl_table pager_table = { command_table, ARRAY_SIZE(command_table) };

static const struct ctl_command *table_find(const struct ctl_table *t, const char *name)
{
	for (size_t i = 0; i < t->count; i++)
		if (strcmp(t->commands[i].name, name) == 0)
			return &t->commands[i];
	return NULL;
}

const struct ctl_command *ctl_commands(size_t *ret_count)
{
	if (ret_count)
		*ret_count = ARRAY_SIZE(command_table);
	return command_table;
}

const struct ctl_command *ctl_command_find(const char *name)
{
	return table_find(&pager_table, name);
}

json_t *ctl_commands_json(void)
{
	json_t *a = json_array();

	if (!a)
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(command_table); i++) {
		if (json_array_append_new(a, json_string(command_table[i].name)) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

bool ctl_vm_name_valid(const char *name)
{
	size_t n = 0;

	if (!name)
		return false;
	for (const char *c = name; *c; c++, n++) {
		bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
			  *c == '.' || *c == '_' || *c == '-';
		if (!ok || n >= CTL_VM_NAME_MAX)
			return false;
	}
	/* "." and ".." would be dangerous if a name ever becomes a path component. */
	return n > 0 && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void list_commands(const struct ctl_table *t, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < t->count && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", t->commands[i].name);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

static void list_args(const struct ctl_arg_spec *specs, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	if (!specs[0].name) {
		snprintf(buf, len, "none");
		return;
	}
	for (size_t i = 0; specs[i].name && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "", specs[i].name);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

static int parse_arg(const struct ctl_command *cmd, const struct ctl_arg_spec *spec, json_t *v,
		     struct ctl_request *r, char *err, size_t errlen)
{
	const char *s;
	uint64_t bytes;
	int ret;

	switch (spec->type) {
	case CTL_ARG_VM_NAME:
		if (!json_is_string(v)) {
			seterr(err, errlen, "%s: field \"args.%s\" must be a string (VM name), not %s", cmd->name,
			       spec->name, json_type_name(v));
			return -EINVAL;
		}
		s = json_string_value(v);
		if (strlen(s) != json_string_length(v) || !ctl_vm_name_valid(s)) {
			seterr(err, errlen,
			       "%s: field \"args.%s\": invalid VM name (allowed: 1-%d characters of A-Z a-z 0-9 . _ -, "
			       "not \".\" or \"..\")",
			       cmd->name, spec->name, CTL_VM_NAME_MAX);
			return -EINVAL;
		}
		snprintf(r->vm, sizeof(r->vm), "%s", s);
		return 0;
	case CTL_ARG_SIZE:
	case CTL_ARG_BYTES:
		if (json_is_integer(v)) {
			if (json_integer_value(v) < 0 || (spec->type == CTL_ARG_SIZE && json_integer_value(v) == 0)) {
				seterr(err, errlen, "%s: field \"args.%s\" must be a positive number of bytes, not %lld",
				       cmd->name, spec->name, (long long)json_integer_value(v));
				return -EINVAL;
			}
			bytes = (uint64_t)json_integer_value(v);
		} else if (json_is_string(v)) {
			s = json_string_value(v);
			ret = strlen(s) == json_string_length(v) ? parse_size(s, &bytes) : -EINVAL;
			if (ret < 0) {
				seterr(err, errlen,
				       "%s: field \"args.%s\": %s size \"%.64s\" (expected bytes or a number with "
				       "suffix K, M, G or T, e.g. \"512M\")",
				       cmd->name, spec->name, ret == -ERANGE ? "out-of-range" : "invalid", s);
				return -EINVAL;
			}
			if (bytes == 0 && spec->type == CTL_ARG_SIZE) {
				seterr(err, errlen, "%s: field \"args.%s\" must be positive, not \"%.64s\"", cmd->name,
				       spec->name, s);
				return -EINVAL;
			}
		} else {
			seterr(err, errlen, "%s: field \"args.%s\" must be a size string such as \"512M\" or an integer "
			       "number of bytes, not %s", cmd->name, spec->name, json_type_name(v));
			return -EINVAL;
		}
		if (spec->type == CTL_ARG_SIZE)
			r->local_memory = bytes;
		else
			r->bytes = bytes;
		return 0;
	case CTL_ARG_UINT:
		if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > spec->max) {
			seterr(err, errlen, "%s: field \"args.%s\" must be an integer 0..%llu, not %s", cmd->name,
			       spec->name, (unsigned long long)spec->max, json_type_name(v));
			return -EINVAL;
		}
		r->number = (uint64_t)json_integer_value(v);
		return 0;
	case CTL_ARG_URL:
		s = json_is_string(v) ? json_string_value(v) : NULL;
		if (!s || strlen(s) != json_string_length(v) || strlen(s) >= sizeof(r->url) ||
		    (strncmp(s, "tcp://", 6) != 0 && strncmp(s, "rdma://", 7) != 0) || strpbrk(s, " \t\r\n")) {
			seterr(err, errlen, "%s: field \"args.%s\": not a donor URL (allowed: tcp://HOST:PORT or "
			       "rdma://HOST:PORT, at most %zu bytes)", cmd->name, spec->name, sizeof(r->url) - 1);
			return -EINVAL;
		}
		snprintf(r->url, sizeof(r->url), "%s", s);
		return 0;
	case CTL_ARG_OBJECT:
		if (!json_is_object(v)) {
			seterr(err, errlen, "%s: field \"args.%s\" must be an object, not %s", cmd->name, spec->name,
			       json_type_name(v));
			return -EINVAL;
		}
		return 0;
	}
	seterr(err, errlen, "%s: internal error: unknown type of argument \"%s\"", cmd->name, spec->name);
	return -EINVAL;
}

static int parse_args(const struct ctl_command *cmd, json_t *args, struct ctl_request *r, char *err,
		      size_t errlen)
{
	char allowed[256];
	const char *key;
	json_t *v;
	int ret;

	list_args(cmd->args, allowed, sizeof(allowed));
	if (args && !json_is_object(args)) {
		seterr(err, errlen, "%s: field \"args\" must be an object, not %s", cmd->name, json_type_name(args));
		return -EINVAL;
	}
	if (args) {
		json_object_foreach(args, key, v) {
			bool known = false;

			for (const struct ctl_arg_spec *s = cmd->args; s->name; s++)
				known |= strcmp(s->name, key) == 0;
			if (!known) {
				seterr(err, errlen, "%s: unknown field \"args.%.64s\" (allowed: %s)", cmd->name, key,
				       allowed);
				return -EINVAL;
			}
		}
	}
	for (const struct ctl_arg_spec *s = cmd->args; s->name; s++) {
		v = args ? json_object_get(args, s->name) : NULL;
		if (!v) {
			if (s->required) {
				seterr(err, errlen, "%s: missing field \"args.%s\" (required: %s)", cmd->name, s->name,
				       allowed);
				return -EINVAL;
			}
			continue;
		}
		ret = parse_arg(cmd, s, v, r, err, errlen);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int ctl_request_parse(const char *line, size_t len, struct ctl_request *ret, char *err, size_t errlen)
{
	return ctl_request_parse_table(&pager_table, line, len, ret, err, errlen);
}

int ctl_request_parse_table(const struct ctl_table *table, const char *line, size_t len, struct ctl_request *ret,
			    char *err, size_t errlen)
{
	struct ctl_request r = { 0 };
	json_error_t jerr;
	json_t *root = NULL, *cmdv, *args;
	const struct ctl_command *cmd;
	const char *key, *nul;
	json_t *v;
	int rc = -EINVAL;

	seterr(err, errlen, "no error");
	if (len > CTL_REQUEST_MAX) {
		seterr(err, errlen, "request of %zu bytes exceeds the limit of %d bytes", len, CTL_REQUEST_MAX);
		rc = -EMSGSIZE;
		goto out;
	}
	if (len && line[len - 1] == '\n')
		len--;
	if (len && line[len - 1] == '\r')
		len--;
	nul = len ? memchr(line, '\0', len) : NULL;
	if (nul) {
		seterr(err, errlen, "request contains a NUL byte at column %zu", (size_t)(nul - line) + 1);
		goto out;
	}
	if (memchr(line, '\n', len)) {
		seterr(err, errlen, "request contains a newline inside the line; send one JSON object per line");
		goto out;
	}
	root = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root) {
		seterr(err, errlen, "invalid JSON at column %d: %s", jerr.column, jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		seterr(err, errlen, "request must be a JSON object, not %s", json_type_name(root));
		goto out;
	}
	/* Take the id first, so even a rejected request's error reply carries it. */
	r.id = json_incref(json_object_get(root, "id"));
	json_object_foreach(root, key, v) {
		if (strcmp(key, "cmd") && strcmp(key, "args") && strcmp(key, "id")) {
			seterr(err, errlen, "unknown field \"%.64s\" (allowed: cmd, args, id)", key);
			goto out;
		}
	}
	cmdv = json_object_get(root, "cmd");
	if (!cmdv) {
		seterr(err, errlen, "missing field \"cmd\" (a string naming the command)");
		goto out;
	}
	if (!json_is_string(cmdv)) {
		seterr(err, errlen, "field \"cmd\" must be a string, not %s", json_type_name(cmdv));
		goto out;
	}
	cmd = strlen(json_string_value(cmdv)) == json_string_length(cmdv)
		      ? table_find(table, json_string_value(cmdv))
		      : NULL;
	if (!cmd) {
		char allowed[512];

		list_commands(table, allowed, sizeof(allowed));
		seterr(err, errlen, "unknown command \"%.64s\" (allowed: %s)", json_string_value(cmdv), allowed);
		rc = -ENOSYS;
		goto out;
	}
	args = json_object_get(root, "args");
	rc = parse_args(cmd, args, &r, err, errlen);
	if (rc < 0)
		goto out;
	r.command = cmd;
	r.args = json_incref(args);
	rc = 0;
out:
	json_decref(root);
	if (rc < 0) {
		r.vm[0] = '\0';
		r.local_memory = r.bytes = r.number = 0;
	}
	*ret = r;
	return rc;
}

void ctl_request_clear(struct ctl_request *r)
{
	if (!r)
		return;
	json_decref(r->id);
	json_decref(r->args);
	memset(r, 0, sizeof(*r));
}

json_t *ctl_request_new(const char *cmd, json_t *args)
{
	json_t *req = json_object();

	if (!req || json_object_set_new(req, "cmd", json_string(cmd)) < 0 ||
	    (args && json_object_set_new(req, "args", args) < 0)) {
		/* On failure json_object_set_new has already released args. */
		json_decref(req);
		return NULL;
	}
	return req;
}

static json_t *response_new(json_t *id, bool ok)
{
	json_t *resp = json_object();

	if (!resp)
		return NULL;
	if (json_object_set_new(resp, "ok", json_boolean(ok)) < 0 || (id && json_object_set(resp, "id", id) < 0)) {
		json_decref(resp);
		return NULL;
	}
	return resp;
}

json_t *ctl_response_ok(json_t *id, json_t *result)
{
	json_t *resp = response_new(id, true);

	if (!resp || !result || json_object_set_new(resp, "result", result) < 0) {
		if (!resp)
			json_decref(result);
		json_decref(resp);
		return NULL;
	}
	return resp;
}

json_t *ctl_response_error(json_t *id, int err, const char *fmt, ...)
{
	json_t *resp = response_new(id, false), *e;
	char msg[1024];
	va_list ap;

	if (!resp)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Messages may quote peer input; keep the reply valid UTF-8 whatever it holds. */
	e = json_pack("{s:s, s:s}", "code", ctl_errno_name(err), "message", msg);
	if (!e)
		e = json_pack("{s:s, s:s}", "code", ctl_errno_name(err), "message", "(message not valid UTF-8)");
	if (!e || json_object_set_new(resp, "error", e) < 0) {
		json_decref(resp);
		return NULL;
	}
	return resp;
}

int ctl_line_dump(const json_t *msg, char **ret_line, size_t *ret_len)
{
	char *s, *line;
	size_t n;

	s = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!s)
		return -ENOMEM;
	n = strlen(s);
	line = realloc(s, n + 2);
	if (!line) {
		free(s);
		return -ENOMEM;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	*ret_line = line;
	*ret_len = n + 1;
	return 0;
}

int ctl_response_parse(const char *line, size_t len, json_t **ret_response, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *ok, *e, *code, *msg;

	if (len && line[len - 1] == '\n')
		len--;
	root = json_loadb(line, len, 0, &jerr);
	if (!root) {
		seterr(err, errlen, "invalid JSON in response at column %d: %s", jerr.column, jerr.text);
		return -EPROTO;
	}
	if (!json_is_object(root)) {
		seterr(err, errlen, "response is %s, not an object", json_type_name(root));
		goto bad;
	}
	ok = json_object_get(root, "ok");
	if (!json_is_boolean(ok)) {
		seterr(err, errlen, "response lacks a boolean \"ok\"");
		goto bad;
	}
	if (json_is_true(ok)) {
		if (!json_object_get(root, "result")) {
			seterr(err, errlen, "successful response lacks \"result\"");
			goto bad;
		}
	} else {
		e = json_object_get(root, "error");
		code = json_object_get(e, "code");
		msg = json_object_get(e, "message");
		if (!json_is_object(e) || !json_is_string(code) || !json_is_string(msg)) {
			seterr(err, errlen, "error response lacks \"error\" {\"code\": string, \"message\": string}");
			goto bad;
		}
	}
	*ret_response = root;
	return 0;
bad:
	json_decref(root);
	return -EPROTO;
}

bool ctl_response_is_ok(const json_t *response, const char **ret_code, const char **ret_message)
{
	json_t *e;

	if (json_is_true(json_object_get(response, "ok")))
		return true;
	e = json_object_get(response, "error");
	if (ret_code)
		*ret_code = json_string_value(json_object_get(e, "code")) ?: "EIO";
	if (ret_message)
		*ret_message = json_string_value(json_object_get(e, "message")) ?: "";
	return false;
}

static const struct {
	int err;
	const char *name;
} errno_names[] = {
	{ EPERM, "EPERM" },	    { ENOENT, "ENOENT" },	{ EIO, "EIO" },
	{ ENOMEM, "ENOMEM" },	    { EACCES, "EACCES" },	{ EBUSY, "EBUSY" },
	{ EEXIST, "EEXIST" },	    { EINVAL, "EINVAL" },	{ ENOSPC, "ENOSPC" },
	{ ERANGE, "ERANGE" },	    { EAGAIN, "EAGAIN" },	{ ENOSYS, "ENOSYS" },
	{ EMSGSIZE, "EMSGSIZE" },   { EPROTO, "EPROTO" },	{ EOPNOTSUPP, "EOPNOTSUPP" },
	{ ETIMEDOUT, "ETIMEDOUT" }, { ECANCELED, "ECANCELED" }, { ENODEV, "ENODEV" },
};

const char *ctl_errno_name(int err)
{
	for (size_t i = 0; i < ARRAY_SIZE(errno_names); i++)
		if (errno_names[i].err == -err)
			return errno_names[i].name;
	return "EIO";
}

int ctl_errno_from_name(const char *name)
{
	for (size_t i = 0; name && i < ARRAY_SIZE(errno_names); i++)
		if (strcmp(errno_names[i].name, name) == 0)
			return -errno_names[i].err;
	return -EIO;
}

static int remaining_ms(uint64_t deadline)
{
	uint64_t now = now_ns();

	if (now >= deadline)
		return 0;
	return (int)((deadline - now + 999999) / 1000000);
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int n;

	for (;;) {
		int ms = remaining_ms(deadline);

		if (ms == 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, ms);
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int client_connect(const char *path, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/*
	 * A Unix connect() blocks while the listener's backlog is full and
	 * honours SO_SNDTIMEO; a non-blocking one would fail with EAGAIN
	 * instead, which cannot be waited for with poll().
	 */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		goto fail;
	while ((r = connect(fd, (struct sockaddr *)&sa, sizeof(sa))) < 0 && errno == EINTR)
		;
	if (r < 0) {
		if (errno == EAGAIN || errno == EINPROGRESS)
			errno = ETIMEDOUT;
		goto fail;
	}
	return fd;
fail:
	r = -errno;
	close(fd);
	return r;
}

int ctl_client_call(const char *socket_path, json_t *request, json_t **ret_response, int timeout_ms)
{
	_cleanup_free_ char *out = NULL, *in = NULL;
	_cleanup_close_ int fd = -1;
	size_t outlen, off = 0, inlen = 0, incap = 0;
	uint64_t deadline;
	char perr[256];
	char *nl = NULL;
	int r;

	if (timeout_ms <= 0)
		timeout_ms = 30000;
	deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	r = ctl_line_dump(request, &out, &outlen);
	if (r < 0)
		return r;
	fd = client_connect(socket_path, timeout_ms);
	if (fd < 0)
		return fd;
	while (off < outlen) {
		ssize_t n = send(fd, out + off, outlen - off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* A server that turns us away (EBUSY) says why before hanging up: read it. */
			if (errno == EPIPE || errno == ECONNRESET)
				break;
			if (errno != EAGAIN)
				return -errno;
			r = wait_fd(fd, POLLOUT, deadline);
			if (r < 0)
				return r;
			continue;
		}
		off += (size_t)n;
	}
	while (!nl) {
		ssize_t n;

		if (incap - inlen < 4096) {
			size_t ncap = incap ? incap * 2 : 8192;
			char *p;

			if (ncap > CTL_RESPONSE_MAX + 4096)
				return -EPROTO;
			p = realloc(in, ncap);
			if (!p)
				return -ENOMEM;
			in = p;
			incap = ncap;
		}
		n = recv(fd, in + inlen, incap - inlen, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			r = wait_fd(fd, POLLIN, deadline);
			if (r < 0)
				return r;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		nl = memchr(in + inlen, '\n', (size_t)n);
		inlen += (size_t)n;
		if (!nl && inlen > CTL_RESPONSE_MAX)
			return -EPROTO;
	}
	return ctl_response_parse(in, (size_t)(nl - in) + 1, ret_response, perr, sizeof(perr));
}
