/* SPDX-License-Identifier: MIT */
/*
 * Control protocol of the daemons' control sockets: uffd-pager's control
 * server with its clients (uffd-ctl, tests, orchestration), and uffd-donor's
 * --control socket. A Unix SOCK_STREAM socket carries one JSON object per
 * line in each direction; every request line gets exactly one response
 * line, in order, so a client may pipeline. A command table is the single
 * place that knows which commands exist, what arguments each takes and
 * whether it changes state: the pager's is in ctl-proto.c, the donor's in
 * donor/donor-server.c; adding a command is one table entry plus one
 * handler. docs/control-api.md and docs/donor-protocol.md are the
 * references for users.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTL_PROTO_VERSION 1
/* Longest request line, the terminating newline included. */
#define CTL_REQUEST_MAX (64 * 1024)
/* Longest response line a client accepts (vm.list of many VMs is large). */
#define CTL_RESPONSE_MAX (16 * 1024 * 1024)
#define CTL_VM_NAME_MAX 63 /* characters, without the NUL */

enum ctl_cmd {
	CTL_CMD_PROTOCOL_VERSION,
	CTL_CMD_VM_LIST,
	CTL_CMD_VM_STATS,
	CTL_CMD_VM_SET_LIMIT,
	CTL_CMD_PAGER_STATS,
	/* operators' interface (docs/control-api.md) */
	CTL_CMD_PAGER_METRICS,
	CTL_CMD_VM_DRAIN,
	CTL_CMD_VM_PARK,
	CTL_CMD_VM_POLICY_GET,
	CTL_CMD_VM_POLICY_SET,
	CTL_CMD_DONOR_LIST,
	CTL_CMD_DONOR_ADD,
	CTL_CMD_DONOR_REMOVE,
	CTL_CMD_DONOR_DRAIN,
	CTL_CMD_EVENTS_SUBSCRIBE,
	_CTL_CMD_MAX,
};

enum ctl_arg_type {
	CTL_ARG_VM_NAME, /* string matching [A-Za-z0-9._-]{1,63}, not "." or ".." */
	CTL_ARG_SIZE,    /* bytes > 0: integer, or string such as "512M" (parse_size) */
	CTL_ARG_OBJECT,  /* a JSON object, validated by the handler (e.g. a policy) */
	CTL_ARG_URL,     /* a donor URL: tcp://HOST:PORT or rdma://HOST:PORT, at most 127 bytes */
	CTL_ARG_BYTES,   /* bytes >= 0: integer, or string such as "512M" (parse_size) */
	CTL_ARG_UINT,    /* integer 0..max of the spec */
};

struct ctl_arg_spec {
	const char *name;
	enum ctl_arg_type type;
	bool required;
	uint64_t max; /* CTL_ARG_UINT: the largest value allowed */
};

/* Flags of a command. */
#define CTL_CMD_MUTATES (1u << 0) /* changes pager state: only privileged peers */

struct ctl_command {
	unsigned cmd;     /* the table owner's enum: enum ctl_cmd for the pager's */
	const char *name; /* on the wire, e.g. "vm.stats" */
	unsigned flags;
	const struct ctl_arg_spec *args; /* terminated by an entry with name NULL */
	const char *summary;             /* one line, for help and docs */
};

/* A validated request. Owns references to id and args. */
struct ctl_request {
	const struct ctl_command *command; /* NULL if the request was rejected */
	json_t *id;                        /* the request's "id", any JSON value, or NULL */
	json_t *args;                      /* the validated "args" object, or NULL */
	char vm[CTL_VM_NAME_MAX + 1];      /* args.vm when the command takes it */
	uint64_t local_memory;             /* args.local_memory in bytes */
	char url[128];                     /* args.url when the command takes it */
	uint64_t bytes;                    /* the CTL_ARG_BYTES argument */
	uint64_t number;                   /* the CTL_ARG_UINT argument */
};

/* A daemon's command table. */
struct ctl_table {
	const struct ctl_command *commands;
	size_t count;
};

/* The pager's table of known commands, in the order the protocol lists them. */
const struct ctl_command *ctl_commands(size_t *ret_count);
const struct ctl_command *ctl_command_find(const char *name);
/* JSON array of the command names, for protocol.version. */
json_t *ctl_commands_json(void);

/* True if name matches [A-Za-z0-9._-]{1,63} and is not "." or "..". */
bool ctl_vm_name_valid(const char *name);

/*
 * Parses and validates one request line (a trailing "\n" or "\r\n" is
 * allowed; len counts it). Rejects what is not exactly a request: invalid
 * JSON, unknown top-level fields, an unknown command (the message lists the
 * allowed ones), missing, unknown or wrong-typed args (naming the field).
 * Returns 0, -EMSGSIZE (over CTL_REQUEST_MAX), -EINVAL (malformed) or
 * -ENOSYS (unknown command), with a message in err. *ret is always
 * initialised: on failure it holds only the id, if one could be read, so
 * the error reply can carry it. Release it with ctl_request_clear().
 */
int ctl_request_parse(const char *line, size_t len, struct ctl_request *ret, char *err, size_t errlen);
/* The same against another daemon's command table (uffd-donor's). Returns as ctl_request_parse(). */
int ctl_request_parse_table(const struct ctl_table *table, const char *line, size_t len, struct ctl_request *ret,
			    char *err, size_t errlen);
void ctl_request_clear(struct ctl_request *r);

/* Builds {"cmd": cmd, "args": args}; steals args (may be NULL). NULL on ENOMEM. */
json_t *ctl_request_new(const char *cmd, json_t *args);

/* {"ok": true, "result": result, "id": id}; steals result, borrows id (may be NULL). */
json_t *ctl_response_ok(json_t *id, json_t *result);
/* {"ok": false, "error": {"code": "ENOENT", "message": ...}, "id": id}; err is a -errno. */
json_t *ctl_response_error(json_t *id, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Serialises a request or response as one compact line ending in "\n".
 * Returns 0 or -ENOMEM; *ret_line is malloc'ed.
 */
int ctl_line_dump(const json_t *msg, char **ret_line, size_t *ret_len);

/*
 * Parses one response line and checks its shape: an object with boolean
 * "ok", and "result" (ok) or "error" {"code": string, "message": string}.
 * Returns 0 or -EPROTO with a message in err.
 */
int ctl_response_parse(const char *line, size_t len, json_t **ret_response, char *err, size_t errlen);

/* For a parsed response: true if ok; else sets *ret_code / *ret_message (borrowed). */
bool ctl_response_is_ok(const json_t *response, const char **ret_code, const char **ret_message);

/* "ENOENT" for -ENOENT; "EIO" for codes the protocol does not name. */
const char *ctl_errno_name(int err);
/* -ENOENT for "ENOENT"; -EIO for unknown names. */
int ctl_errno_from_name(const char *name);

/*
 * Connects to socket_path, sends request as one line and waits at most
 * timeout_ms (<= 0: 30 s) for one response line. The response may report
 * a daemon-side error (check ctl_response_is_ok). Returns 0 or a -errno:
 * connect errors (-ENOENT, -ECONNREFUSED, -EACCES, -ENAMETOOLONG),
 * -ETIMEDOUT, -ECONNRESET (closed before replying), -EPROTO (bad reply).
 */
int ctl_client_call(const char *socket_path, json_t *request, json_t **ret_response, int timeout_ms);
