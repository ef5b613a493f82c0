/* SPDX-License-Identifier: MIT */
/*
 * The pager's control server: a Unix socket speaking the line-delimited JSON
 * protocol of proto/ctl-proto.h, served by its own thread so that a slow or
 * hostile client can never stall fault service. Read-only commands are open
 * to anyone who can connect (the socket mode decides who can); commands that
 * change state (admin commands) are allowed only to root, to uids added with
 * ctl_server_allow_uid() and to members of the admin group, judged by
 * SO_PEERCRED and SO_PEERGROUPS. Optionally the same thread serves
 * GET /metrics over HTTP on a loopback address.
 *
 * It reaches the pager only through the operations API (ops.h); the
 * daemon's main() starts it after the registry, with its options passed in.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

struct pager;
struct ctl_server;

#define CTL_SERVER_IDLE_TIMEOUT_MS 30000 /* a client that makes no progress is dropped */
#define CTL_SERVER_MAX_CLIENTS 128

struct ctl_server_options {
	gid_t group;             /* socket group; (gid_t)-1: the daemon's */
	gid_t admin_gid;         /* its members may run admin commands; (gid_t)-1: none */
	char metrics_listen[64]; /* "127.0.0.1:PORT": serve GET /metrics there; "": off */
};

/* Fills o with the defaults: daemon's group, no admin group, no metrics endpoint. */
void ctl_server_options_init(struct ctl_server_options *o);
/*
 * Creates the socket at path with the given mode and opts (NULL: the
 * defaults of ctl_server_options_init) — a stale socket nobody listens on
 * is replaced; a live one or a non-socket file is not — and starts the
 * server thread. Returns 0, -EADDRINUSE (another server listens there),
 * -EEXIST (path is not a socket), -ENAMETOOLONG, -EINVAL (metrics_listen
 * not a loopback IPv4 "ADDRESS:PORT") or another -errno.
 */
int ctl_server_start(struct pager *p, const char *path, mode_t mode, const struct ctl_server_options *opts,
		     struct ctl_server **ret);
/* Stops the thread, closes every client and unlinks the socket. NULL-safe. */
void ctl_server_stop(struct ctl_server *s);

/* Also lets uid run state-changing commands. Returns 0 or -ENOSPC (set full). */
int ctl_server_allow_uid(struct ctl_server *s, uid_t uid);
/* Changes the idle timeout (default CTL_SERVER_IDLE_TIMEOUT_MS); 0 restores the default. */
void ctl_server_set_idle_timeout(struct ctl_server *s, unsigned timeout_ms);

/* Parses "127.x.y.z:PORT" (loopback only: the endpoint has no authentication). */
int ctl_metrics_parse_listen(const char *s, unsigned char ret_addr[4], unsigned short *ret_port);
/* The pager's statistics as Prometheus text (metrics.h). Returns 0 or -ENOMEM. */
int ctl_metrics_collect(struct pager *p, char **ret_text, size_t *ret_len);
