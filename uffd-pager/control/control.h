/* SPDX-License-Identifier: MIT */
/*
 * The pager's control server: a Unix socket speaking the line-delimited JSON
 * protocol of common/ctl-proto.h, served by its own thread so that a slow or
 * hostile client can never stall fault service. Read-only commands are open
 * to anyone who can connect (the socket mode decides who can); commands that
 * change state are allowed only to root and to uids added with
 * ctl_server_allow_uid(), judged by SO_PEERCRED.
 */
#pragma once

#include <sys/types.h>

struct pager;
struct ctl_server;

#define CTL_SERVER_IDLE_TIMEOUT_MS 30000 /* a client that makes no progress is dropped */
#define CTL_SERVER_MAX_CLIENTS 128

/*
 * Creates the socket at path with the given mode (a stale socket nobody
 * listens on is replaced; a live one or a non-socket file is not) and starts
 * the server thread. Returns 0, -EADDRINUSE (another server listens there),
 * -EEXIST (path is not a socket), -ENAMETOOLONG or another -errno.
 */
int ctl_server_start(struct pager *p, const char *path, mode_t mode, struct ctl_server **ret);
/* Stops the thread, closes every client and unlinks the socket. NULL-safe. */
void ctl_server_stop(struct ctl_server *s);

/* Also lets uid run state-changing commands. Returns 0 or -ENOSPC (set full). */
int ctl_server_allow_uid(struct ctl_server *s, uid_t uid);
/* Changes the idle timeout (default CTL_SERVER_IDLE_TIMEOUT_MS); 0 restores the default. */
void ctl_server_set_idle_timeout(struct ctl_server *s, unsigned timeout_ms);
