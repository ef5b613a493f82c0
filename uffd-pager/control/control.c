/* SPDX-License-Identifier: MIT */
/*
 * Control server: one thread, one epoll set over the listening socket, a
 * stop eventfd and every client. Clients are untrusted: input is bounded to
 * one request line, output is written without blocking and bounded (a
 * client that does not read stops being read from, then times out), and
 * every malformed request gets an error reply instead of taking anything
 * down. Requests are executed in the order they arrive, one at a time, by
 * calling into the pager's operations (ops.h), which are thread-safe. The
 * optional metrics endpoint is a second listener in the same epoll set: its
 * clients are the same bounded, non-blocking connections, answered once
 * with an HTTP/1.0 response and closed.
 *
 * Two kinds of work do not fit "one request, answered at once": vm.drain and
 * vm.park wait for the VM and run on a worker thread each, so the server
 * keeps answering (e.g. the vm.stats a progress bar polls) while the
 * client's further requests wait behind the reply; events.subscribe turns a
 * connection into a stream fed by pager callbacks. Both hand their output
 * to this thread through a lock-protected queue and a wake eventfd; an
 * event subscriber whose bounded queue overflows is dropped, so a slow
 * reader never blocks the pager.
 */
#include "control.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "config.h"
#include "ctl-proto.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"
#include "util.h"

/* Stop reading a client's requests while this much of its output is pending. */
#define OUT_HIGH_WATER (256 * 1024)
#define MAX_ALLOWED_UIDS 16
#define ACCEPT_PAUSE_MS 100
#define MAX_PEER_GROUPS 64
#define HTTP_REQUEST_MAX 8192
/*
 * Metrics (TCP) connections have their own slots: anyone on the host can
 * open them, and they must never use up the control socket's
 * CTL_SERVER_MAX_CLIENTS, which root needs to manage the VMs.
 */
#define MAX_HTTP_CLIENTS 32
/* Events queued for one subscriber before it counts as too slow and is dropped. */
#define EV_QUEUE_MAX 1024

enum ep_kind { EP_LISTEN, EP_STOP, EP_CLIENT, EP_HTTP_LISTEN, EP_WAKE };

struct ep_tag {
	enum ep_kind kind;
};

struct ctl_server;

/* One events.subscribe connection's queue; lines and overflow under the server's qlock. */
struct ev_sub {
	struct ctl_server *s;
	uint64_t id;
	char *lines[EV_QUEUE_MAX];
	size_t lens[EV_QUEUE_MAX];
	unsigned head, n;
	bool overflow;
};

/* A vm.drain / vm.park running on its own thread. */
struct ctl_job {
	struct ctl_server *s;
	pthread_t thread;
	uint64_t client_serial; /* the client may be gone when the job ends */
	struct ucred cred;
	struct ctl_request req;
	json_t *resp;
	bool done; /* under qlock */
	LIST_ENTRY(ctl_job) link;
};

struct ctl_client {
	struct ep_tag tag; /* first: epoll hands back &tag */
	uint64_t serial; /* unique per server life */
	struct ev_sub *sub; /* set once the client subscribed to events */
	bool busy;          /* a job runs its request: later requests wait */
	LIST_ENTRY(ctl_client) link;
	int fd;
	struct ucred cred;
	gid_t groups[MAX_PEER_GROUPS]; /* supplementary groups (SO_PEERGROUPS) */
	unsigned ngroups;
	bool http; /* a metrics client: one HTTP request, then close */
	char *in; /* CTL_REQUEST_MAX bytes */
	size_t inlen;
	char *out;
	size_t outoff, outlen, outcap;
	uint64_t last_progress_ns;
	uint64_t line_start_ns; /* when the pending partial line began, 0 if none */
	uint32_t events; /* what epoll currently watches */
	bool eof;        /* peer will send nothing more */
	bool closing;    /* no more requests: close once the output is flushed */
};

struct ctl_server {
	struct pager *pager;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t sock_dev;
	ino_t sock_ino;
	int listen_fd, epoll_fd, stop_fd, http_fd;
	struct ep_tag listen_tag, stop_tag, http_tag, wake_tag;
	int wake_fd;
	uint64_t next_serial;
	pthread_mutex_t qlock; /* event queues and job completion; taken inside pager callbacks */
	LIST_HEAD(, ctl_job) jobs; /* every job not yet joined */
	gid_t admin_gid;
	pthread_t thread;
	bool thread_started;
	LIST_HEAD(, ctl_client) clients;
	unsigned nclients;  /* control socket clients, at most CTL_SERVER_MAX_CLIENTS */
	unsigned nhttp;     /* metrics clients, at most MAX_HTTP_CLIENTS */
	uint64_t accept_paused_until_ns;

	pthread_mutex_t lock; /* protects the fields below, set from other threads */
	uid_t allowed_uids[MAX_ALLOWED_UIDS];
	unsigned nallowed;
	unsigned idle_timeout_ms;
};

static unsigned idle_timeout_ms(struct ctl_server *s)
{
	unsigned ms;

	pthread_mutex_lock(&s->lock);
	ms = s->idle_timeout_ms;
	pthread_mutex_unlock(&s->lock);
	return ms;
}

void ctl_server_options_init(struct ctl_server_options *o)
{
	*o = (struct ctl_server_options){ .group = (gid_t)-1, .admin_gid = (gid_t)-1 };
}

int ctl_metrics_parse_listen(const char *str, unsigned char ret_addr[4], unsigned short *ret_port)
{
	char host[32], *end;
	const char *colon = strrchr(str, ':');
	struct in_addr a;
	unsigned long port;

	if (!colon || (size_t)(colon - str) >= sizeof(host) || colon == str)
		return -EINVAL;
	memcpy(host, str, (size_t)(colon - str));
	host[colon - str] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (inet_pton(AF_INET, host, &a) != 1 || !colon[1] || *end || errno || port > 65535)
		return -EINVAL;
	memcpy(ret_addr, &a.s_addr, 4);
	if (ret_addr[0] != 127)
		return -EINVAL;
	*ret_port = (unsigned short)port;
	return 0;
}

static bool peer_is_privileged(struct ctl_server *s, const struct ctl_client *c)
{
	bool ok = c->cred.uid == 0;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nallowed && !ok; i++)
		ok = s->allowed_uids[i] == c->cred.uid;
	pthread_mutex_unlock(&s->lock);
	if (!ok && s->admin_gid != (gid_t)-1) {
		ok = c->cred.gid == s->admin_gid;
		for (unsigned i = 0; i < c->ngroups && !ok; i++)
			ok = c->groups[i] == s->admin_gid;
	}
	return ok;
}

/* ---- command handlers: each returns a complete response (ok or error) ---- */

typedef json_t *(*ctl_handler_fn)(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req);

static json_t *handle_protocol_version(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	json_t *cmds = ctl_commands_json();

	if (!cmds)
		return NULL;
	return ctl_response_ok(req->id, json_pack("{s:i, s:o, s:s}", "version", CTL_PROTO_VERSION, "commands", cmds,
						  "daemon_version", UFFDVM_VERSION));
}

static json_t *handle_vm_list(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	json_t *r = pager_vm_list(s->pager);

	if (!r)
		return ctl_response_error(req->id, -ENOMEM, "vm.list: the pager could not build the list");
	return ctl_response_ok(req->id, r);
}

static json_t *handle_vm_stats(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	json_t *stats = NULL;
	int r = pager_vm_stats(s->pager, req->vm, &stats);

	if (r == -ENOENT)
		return ctl_response_error(req->id, r, "vm.stats: no VM named \"%s\"", req->vm);
	if (r < 0 || !stats)
		return ctl_response_error(req->id, r < 0 ? r : -EIO, "vm.stats: VM \"%s\": %s", req->vm,
					  strerror(r < 0 ? -r : EIO));
	return ctl_response_ok(req->id, stats);
}

static json_t *handle_vm_set_limit(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	char reason[256] = "", sz[32];
	int r;

	r = pager_vm_set_limit(s->pager, req->vm, req->local_memory, reason, sizeof(reason));
	format_size(req->local_memory, sz, sizeof(sz));
	if (r < 0) {
		log_info("control: peer uid %u pid %d: vm.set-limit %s to %s refused: %s", (unsigned)c->cred.uid,
			 (int)c->cred.pid, req->vm, sz, reason[0] ? reason : strerror(-r));
		if (r == -ENOENT)
			return ctl_response_error(req->id, r, "vm.set-limit: no VM named \"%s\"", req->vm);
		return ctl_response_error(req->id, r, "vm.set-limit: VM \"%s\" to %s: %s", req->vm, sz,
					  reason[0] ? reason : strerror(-r));
	}
	log_info("control: peer uid %u pid %d: vm.set-limit %s to %s", (unsigned)c->cred.uid, (int)c->cred.pid,
		 req->vm, sz);
	return ctl_response_ok(req->id, json_pack("{s:s, s:I}", "vm", req->vm, "local_memory",
						  (json_int_t)req->local_memory));
}

static json_t *handle_pager_stats(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	json_t *r = pager_stats(s->pager);

	if (!r)
		return ctl_response_error(req->id, -ENOMEM, "pager.stats: the pager could not build its statistics");
	return ctl_response_ok(req->id, r);
}

int ctl_metrics_collect(struct pager *p, char **ret_text, size_t *ret_len)
{
	json_t *list = pager_vm_list(p), *vms = json_array(), *ps = pager_stats(p), *v;
	size_t i;
	int r = -ENOMEM;

	if (!list || !vms)
		goto out;
	json_array_foreach(json_object_get(list, "vms"), i, v) {
		const char *name = json_string_value(json_object_get(v, "name"));
		json_t *st = NULL;

		/* A VM gone between the list and its stats is simply not reported. */
		if (name && pager_vm_stats(p, name, &st) == 0 && st)
			json_array_append_new(vms, st);
	}
	r = ctl_metrics_render(ps, vms, ret_text, ret_len);
out:
	json_decref(list);
	json_decref(vms);
	json_decref(ps);
	return r;
}

static json_t *handle_pager_metrics(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = ctl_metrics_collect(s->pager, &text, &len);

	if (r < 0)
		return ctl_response_error(req->id, r, "pager.metrics: cannot build the exposition: %s", strerror(-r));
	return ctl_response_ok(req->id, json_pack("{s:s, s:s%}", "content_type", CTL_METRICS_CONTENT_TYPE, "text",
						  text, len));
}

/* Logs an admin command's outcome with the peer, like vm.set-limit does. */
static json_t *admin_result(struct ctl_client *c, const struct ctl_request *req, int r, const char *reason,
			    json_t *result)
{
	const char *name = req->command->name;

	if (r < 0) {
		json_decref(result);
		log_info("control: peer uid %u pid %d: %s %s refused: %s", (unsigned)c->cred.uid, (int)c->cred.pid,
			 name, req->vm, reason[0] ? reason : strerror(-r));
		if (r == -ENOENT)
			return ctl_response_error(req->id, r, "%s: no VM named \"%s\"", name, req->vm);
		if (r == -ENOSYS)
			return ctl_response_error(req->id, r, "%s is not implemented by this pager yet", name);
		return ctl_response_error(req->id, r, "%s: VM \"%s\": %s", name, req->vm,
					  reason[0] ? reason : strerror(-r));
	}
	log_info("control: peer uid %u pid %d: %s %s", (unsigned)c->cred.uid, (int)c->cred.pid, name, req->vm);
	return ctl_response_ok(req->id, result ? result : json_pack("{s:s}", "vm", req->vm));
}

static json_t *handle_donor_list(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	return ctl_response_ok(req->id, pager_donor_list(s->pager));
}

static json_t *handle_donor_add(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	char reason[256] = "";
	int r = pager_donor_add(s->pager, req->url, reason, sizeof(reason));

	log_info("control: peer uid %u pid %d: donor.add %s: %s", (unsigned)c->cred.uid, (int)c->cred.pid, req->url,
		 r < 0 ? (reason[0] ? reason : strerror(-r)) : "ok");
	if (r < 0)
		return ctl_response_error(req->id, r, "donor.add %s: %s", req->url, reason[0] ? reason : strerror(-r));
	return ctl_response_ok(req->id, json_pack("{s:s}", "url", req->url));
}

/* donor.drain and donor.remove: both move every page off; remove also forgets the donor. */
static json_t *handle_donor_drain(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	const bool remove = req->command->cmd == CTL_CMD_DONOR_REMOVE;
	int r = pager_donor_drain(s->pager, req->url, remove);

	log_info("control: peer uid %u pid %d: %s %s: %s", (unsigned)c->cred.uid, (int)c->cred.pid,
		 req->command->name, req->url, r < 0 ? strerror(-r) : "started");
	if (r == -ENOENT)
		return ctl_response_error(req->id, r, "%s: no donor %s", req->command->name, req->url);
	if (r < 0)
		return ctl_response_error(req->id, r, "%s %s: %s", req->command->name, req->url, strerror(-r));
	return ctl_response_ok(req->id, json_pack("{s:s, s:s}", "url", req->url, "state", remove ? "removing" : "draining"));
}

static json_t *handle_vm_drain(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	char reason[256] = "";
	int r = pager_vm_drain(s->pager, req->vm, reason, sizeof(reason));

	return admin_result(c, req, r, reason, NULL);
}

static json_t *handle_vm_park(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	char reason[256] = "";
	int r = pager_vm_park(s->pager, req->vm, reason, sizeof(reason));

	return admin_result(c, req, r, reason, NULL);
}

static json_t *handle_vm_policy_get(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	json_t *pol = NULL;
	int r = pager_vm_policy_get(s->pager, req->vm, &pol);

	if (r == -ENOENT)
		return ctl_response_error(req->id, r, "vm.policy.get: no VM named \"%s\"", req->vm);
	if (r == -ENOSYS)
		return ctl_response_error(req->id, r, "vm.policy.get is not implemented by this pager yet");
	if (r < 0 || !pol)
		return ctl_response_error(req->id, r < 0 ? r : -EIO, "vm.policy.get: VM \"%s\": %s", req->vm,
					  strerror(r < 0 ? -r : EIO));
	return ctl_response_ok(req->id, pol);
}

static json_t *handle_vm_policy_set(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	char reason[512] = "";
	int r = pager_vm_policy_set(s->pager, req->vm, json_object_get(req->args, "policy"), reason,
				    sizeof(reason));

	return admin_result(c, req, r, reason, NULL);
}

static void wake(struct ctl_server *s)
{
	uint64_t one = 1;

	/* A full counter (never in practice) still leaves the fd readable: nothing is lost. */
	if (write(s->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("control: cannot wake the server thread: %m");
}

/* Pager callback: runs on a core thread, so it only queues the line. */
static void ev_callback(void *opaque, const json_t *event)
{
	struct ev_sub *sub = opaque;
	char *line = NULL;
	size_t len;

	if (ctl_line_dump(event, &line, &len) < 0)
		line = NULL;
	pthread_mutex_lock(&sub->s->qlock);
	if (!line || sub->n == EV_QUEUE_MAX) {
		sub->overflow = true;
		free(line);
	} else {
		unsigned i = (sub->head + sub->n++) % EV_QUEUE_MAX;
		sub->lines[i] = line;
		sub->lens[i] = len;
	}
	pthread_mutex_unlock(&sub->s->qlock);
	wake(sub->s);
}

static json_t *handle_events_subscribe(struct ctl_server *s, struct ctl_client *c, const struct ctl_request *req)
{
	struct ev_sub *sub;
	int r;

	if (c->sub)
		return ctl_response_error(req->id, -EALREADY, "events.subscribe: this connection already streams events");
	sub = calloc(1, sizeof(*sub));
	if (!sub)
		return ctl_response_error(req->id, -ENOMEM, "events.subscribe: out of memory");
	sub->s = s;
	r = pager_events_subscribe(s->pager, ev_callback, sub, &sub->id);
	if (r < 0) {
		free(sub);
		return ctl_response_error(req->id, r, "events.subscribe: %s", strerror(-r));
	}
	c->sub = sub;
	log_debug("control: peer uid %u pid %d subscribed to events", (unsigned)c->cred.uid, (int)c->cred.pid);
	return ctl_response_ok(req->id, json_pack("{s:b}", "subscribed", true));
}

static const ctl_handler_fn handlers[_CTL_CMD_MAX] = {
	[CTL_CMD_PROTOCOL_VERSION] = handle_protocol_version,
	[CTL_CMD_VM_LIST] = handle_vm_list,
	[CTL_CMD_VM_STATS] = handle_vm_stats,
	[CTL_CMD_VM_SET_LIMIT] = handle_vm_set_limit,
	[CTL_CMD_PAGER_STATS] = handle_pager_stats,
	[CTL_CMD_PAGER_METRICS] = handle_pager_metrics,
	[CTL_CMD_VM_DRAIN] = handle_vm_drain,
	[CTL_CMD_VM_PARK] = handle_vm_park,
	[CTL_CMD_VM_POLICY_GET] = handle_vm_policy_get,
	[CTL_CMD_VM_POLICY_SET] = handle_vm_policy_set,
	[CTL_CMD_DONOR_LIST] = handle_donor_list,
	[CTL_CMD_DONOR_ADD] = handle_donor_add,
	[CTL_CMD_DONOR_REMOVE] = handle_donor_drain,
	[CTL_CMD_DONOR_DRAIN] = handle_donor_drain,
	[CTL_CMD_EVENTS_SUBSCRIBE] = handle_events_subscribe,
};

/* Commands that wait for the VM: run on a job thread so the server stays responsive. */
static bool runs_as_job(enum ctl_cmd cmd)
{
	return cmd == CTL_CMD_VM_DRAIN || cmd == CTL_CMD_VM_PARK;
}

static void *job_main(void *arg)
{
	struct ctl_job *j = arg;
	/* The handlers read only the peer's credentials from the client (for the log). */
	struct ctl_client peer = { .cred = j->cred };
	json_t *resp = handlers[j->req.command->cmd](j->s, &peer, &j->req);

	if (!resp)
		resp = ctl_response_error(j->req.id, -ENOMEM, "%s: out of memory", j->req.command->name);
	pthread_mutex_lock(&j->s->qlock);
	j->resp = resp;
	j->done = true;
	pthread_mutex_unlock(&j->s->qlock);
	wake(j->s);
	return NULL;
}

/* Starts req on a job thread; takes over req's references on success. Returns 0 or -errno. */
static int job_start(struct ctl_server *s, struct ctl_client *c, struct ctl_request *req)
{
	struct ctl_job *j = calloc(1, sizeof(*j));
	int r;

	if (!j)
		return -ENOMEM;
	j->s = s;
	j->client_serial = c->serial;
	j->cred = c->cred;
	j->req = *req;
	/* The server thread blocks every signal; the job inherits that. */
	r = -pthread_create(&j->thread, NULL, job_main, j);
	if (r < 0) {
		free(j);
		return r;
	}
	*req = (struct ctl_request){ 0 };
	pthread_mutex_lock(&s->qlock);
	LIST_INSERT_HEAD(&s->jobs, j, link);
	pthread_mutex_unlock(&s->qlock);
	return 0;
}

/* ---- client I/O ---- */

static int out_append(struct ctl_client *c, const char *data, size_t len)
{
	if (c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	if (c->outlen + len > c->outcap) {
		size_t ncap = c->outcap ? c->outcap : 4096;
		char *p;

		/* Compact before growing: the consumed prefix is dead weight. */
		if (c->outoff) {
			memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
			c->outlen -= c->outoff;
			c->outoff = 0;
		}
		while (ncap < c->outlen + len)
			ncap *= 2;
		if (ncap != c->outcap) {
			p = realloc(c->out, ncap);
			if (!p)
				return -ENOMEM;
			c->out = p;
			c->outcap = ncap;
		}
	}
	memcpy(c->out + c->outlen, data, len);
	c->outlen += len;
	return 0;
}

static int queue_response(struct ctl_client *c, json_t *resp)
{
	_cleanup_free_ char *line = NULL;
	size_t len;
	int r;

	if (!resp)
		return -ENOMEM;
	r = ctl_line_dump(resp, &line, &len);
	json_decref(resp);
	if (r < 0)
		return r;
	if (len > CTL_RESPONSE_MAX) {
		/* Clients refuse longer lines; tell this one why instead of sending it. */
		json_t *e = ctl_response_error(NULL, -EMSGSIZE, "response of %zu bytes exceeds the limit of %d bytes",
					       len, CTL_RESPONSE_MAX);
		free(line);
		line = NULL;
		if (!e)
			return -ENOMEM;
		r = ctl_line_dump(e, &line, &len);
		json_decref(e);
		if (r < 0)
			return r;
	}
	return out_append(c, line, len);
}

/* Runs one request line; NULL with *deferred set when a job answers later. */
static json_t *execute(struct ctl_server *s, struct ctl_client *c, const char *line, size_t len, bool *deferred)
{
	struct ctl_request req;
	char err[1024];
	json_t *resp;
	int r;

	r = ctl_request_parse(line, len, &req, err, sizeof(err));
	if (r < 0) {
		log_debug("control: peer uid %u pid %d: rejected request: %s", (unsigned)c->cred.uid,
			  (int)c->cred.pid, err);
		resp = ctl_response_error(req.id, r, "%s", err);
	} else if ((req.command->flags & CTL_CMD_MUTATES) && !peer_is_privileged(s, c)) {
		log_info("control: peer uid %u pid %d: %s refused: not privileged", (unsigned)c->cred.uid,
			 (int)c->cred.pid, req.command->name);
		resp = ctl_response_error(req.id, -EPERM,
					  "%s changes pager state and is allowed only to root, the admin group "
					  "and allowed uids (peer uid %u)",
					  req.command->name, (unsigned)c->cred.uid);
	} else if (!handlers[req.command->cmd]) {
		resp = ctl_response_error(req.id, -ENOSYS, "%s is not implemented by this daemon", req.command->name);
	} else if (runs_as_job(req.command->cmd)) {
		json_t *id = json_incref(req.id);

		r = job_start(s, c, &req);
		if (r == 0) {
			json_decref(id);
			*deferred = true;
			c->busy = true;
			return NULL;
		}
		resp = ctl_response_error(id, r, "%s: cannot start: %s", req.command->name, strerror(-r));
		json_decref(id);
	} else {
		resp = handlers[req.command->cmd](s, c, &req);
		if (!resp)
			resp = ctl_response_error(req.id, -ENOMEM, "%s: out of memory", req.command->name);
	}
	ctl_request_clear(&req);
	return resp;
}

static void client_free(struct ctl_server *s, struct ctl_client *c)
{
	LIST_REMOVE(c, link);
	if (c->http)
		s->nhttp--;
	else
		s->nclients--;
	/*
	 * Deregister explicitly: close() alone leaves the registration alive
	 * while a forked child still shares the socket, and epoll would keep
	 * reporting events for the freed client.
	 */
	epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->sub) {
		/* After this no callback touches sub: free its queue. */
		pager_events_unsubscribe(s->pager, c->sub->id);
		for (unsigned i = 0; i < c->sub->n; i++)
			free(c->sub->lines[(c->sub->head + i) % EV_QUEUE_MAX]);
		free(c->sub);
	}
	free(c->in);
	free(c->out);
	free(c);
}

static int http_reply(struct ctl_client *c, int status, const char *reason, const char *type, const char *body,
		      size_t len, const char *extra_header)
{
	char head[512];
	int n, r;

	n = snprintf(head, sizeof(head),
		     "HTTP/1.0 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
		     status, reason, type, len, extra_header ? extra_header : "");
	c->closing = true;
	r = out_append(c, head, (size_t)n);
	return r < 0 ? r : out_append(c, body, len);
}

/*
 * One HTTP request on the metrics listener: "GET /metrics" gets the
 * exposition, anything else a short error; then the connection closes.
 * Only the request line is read; headers are skipped up to the blank line.
 */
static int http_process(struct ctl_server *s, struct ctl_client *c)
{
	_cleanup_free_ char *text = NULL;
	char method[16], path[256];
	const char *end, *nl;
	size_t len;
	int r;

	if (c->closing)
		return 0;
	end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
	if (!end)
		end = memmem(c->in, c->inlen, "\n\n", 2);
	if (!end) {
		if (c->inlen >= HTTP_REQUEST_MAX)
			return http_reply(c, 431, "Request Header Fields Too Large", "text/plain", "request too large\n",
					  18, NULL);
		if (c->eof)
			c->closing = true;
		return 0;
	}
	nl = memchr(c->in, '\n', c->inlen);
	if (!nl || nl - c->in >= 300 ||
	    sscanf(c->in, "%15[A-Z] %255[^ \r\n] HTTP/1.%*[01]", method, path) != 2)
		return http_reply(c, 400, "Bad Request", "text/plain", "bad request\n", 12, NULL);
	if (strcmp(method, "GET"))
		return http_reply(c, 405, "Method Not Allowed", "text/plain", "only GET\n", 9, "Allow: GET\r\n");
	path[strcspn(path, "?")] = '\0';
	if (strcmp(path, "/metrics"))
		return http_reply(c, 404, "Not Found", "text/plain", "try /metrics\n", 13, NULL);
	r = ctl_metrics_collect(s->pager, &text, &len);
	if (r < 0)
		return http_reply(c, 500, "Internal Server Error", "text/plain", "cannot build the metrics\n", 25,
				  NULL);
	return http_reply(c, 200, "OK", CTL_METRICS_CONTENT_TYPE, text, len, NULL);
}

/* Runs every complete line in the input buffer. Returns 0 or -ENOMEM. */
static int client_process_input(struct ctl_server *s, struct ctl_client *c)
{
	size_t start = 0;
	int r = 0;

	if (c->http)
		return http_process(s, c);
	if (c->sub) {
		/* A stream only talks one way: what the subscriber sends is ignored; its hang-up ends it. */
		c->inlen = 0;
		c->line_start_ns = 0;
		if (c->eof)
			c->closing = true;
		return 0;
	}

	while (!c->closing && !c->busy && !c->sub && c->outlen - c->outoff < OUT_HIGH_WATER) {
		char *nl = memchr(c->in + start, '\n', c->inlen - start);
		bool deferred = false;
		json_t *resp;
		size_t len;

		if (!nl)
			break;
		len = (size_t)(nl - (c->in + start)) + 1;
		resp = execute(s, c, c->in + start, len, &deferred);
		start += len;
		if (deferred)
			break;
		r = queue_response(c, resp);
		if (r < 0)
			break;
	}
	if (start) {
		memmove(c->in, c->in + start, c->inlen - start);
		c->inlen -= start;
		c->line_start_ns = 0;
	}
	if (c->inlen && !c->line_start_ns)
		c->line_start_ns = now_ns();
	if (r < 0)
		return r;
	if (!c->closing && c->inlen == CTL_REQUEST_MAX && !memchr(c->in, '\n', c->inlen)) {
		/* The framing is lost: answer once, then hang up. */
		c->closing = true;
		r = queue_response(c, ctl_response_error(NULL, -EMSGSIZE,
							 "request line exceeds %d bytes; closing the connection",
							 CTL_REQUEST_MAX));
	} else if (c->busy) {
		/* The job's reply is still to come: neither EOF nor a partial line ends the connection yet. */
	} else if (!c->closing && c->eof && c->inlen == 0) {
		c->closing = true;
	} else if (!c->closing && c->eof && !memchr(c->in, '\n', c->inlen)) {
		/* The peer half-closed after a line without its newline. */
		c->closing = true;
		r = queue_response(c, ctl_response_error(NULL, -EINVAL,
							 "connection closed in the middle of a request line (%zu bytes "
							 "without a newline)", c->inlen));
	}
	return r;
}

/* Returns 0, or <0 if the client must be dropped. */
static int client_read(struct ctl_server *s, struct ctl_client *c)
{
	while (!c->eof && c->inlen < CTL_REQUEST_MAX) {
		ssize_t n = recv(c->fd, c->in + c->inlen, CTL_REQUEST_MAX - c->inlen, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			return -errno;
		}
		if (n == 0) {
			c->eof = true;
			break;
		}
		c->inlen += (size_t)n;
		c->last_progress_ns = now_ns();
	}
	return client_process_input(s, c);
}

static int client_write(struct ctl_client *c)
{
	while (c->outoff < c->outlen) {
		ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		c->outoff += (size_t)n;
		c->last_progress_ns = now_ns();
	}
	c->outoff = c->outlen = 0;
	/* Keep a big buffer only while it is in use. */
	if (c->outcap > 64 * 1024) {
		free(c->out);
		c->out = NULL;
		c->outcap = 0;
	}
	return 0;
}

/*
 * Brings the epoll interest in line with the client's state: read while it
 * may send requests and its output is not backed up, write while output is
 * pending. Returns 0, or <0 if the client must be dropped.
 */
static int client_update(struct ctl_server *s, struct ctl_client *c)
{
	bool pending = c->outoff < c->outlen;
	uint32_t ev = 0;
	struct epoll_event e;

	if (c->closing && !pending)
		return -ECONNRESET; /* done: drop it */
	if (!c->closing && !c->eof && c->outlen - c->outoff < OUT_HIGH_WATER)
		ev |= EPOLLIN;
	if (pending)
		ev |= EPOLLOUT;
	if (ev == c->events)
		return 0;
	e = (struct epoll_event){ .events = ev, .data.ptr = &c->tag };
	if (epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &e) < 0)
		return -errno;
	c->events = ev;
	return 0;
}

/*
 * After work queued output for c (r: that work's result): sends what it
 * can and re-arms c's epoll interest; frees c on any error, r included.
 */
static void client_send_or_free(struct ctl_server *s, struct ctl_client *c, int r)
{
	if (r == 0)
		r = client_write(c);
	if (r == 0)
		r = client_update(s, c);
	if (r < 0)
		client_free(s, c);
}

static void client_event(struct ctl_server *s, struct ctl_client *c, uint32_t events)
{
	int r = 0;

	if (events & EPOLLOUT)
		r = client_write(c);
	if (r == 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		r = client_read(s, c);
	/* Output produced by this round goes out now, not on the next wakeup. */
	if (r == 0 && c->outoff < c->outlen)
		r = client_write(c);
	/* Unblocked by the write: run requests that waited behind the backlog. */
	if (r == 0 && c->inlen && c->outoff == c->outlen)
		r = client_process_input(s, c);
	if (r == 0 && c->outoff < c->outlen)
		r = client_write(c);
	if (r == 0)
		r = client_update(s, c);
	/* A subscriber's backlog shrank: let queued events follow. */
	if (r == 0 && c->sub && c->outoff == c->outlen) {
		bool more;

		pthread_mutex_lock(&s->qlock);
		more = c->sub->n > 0;
		pthread_mutex_unlock(&s->qlock);
		if (more)
			wake(s);
	}
	if (r < 0) {
		if (r != -ECONNRESET && r != -EPIPE)
			log_debug("control: dropping client pid %d: %s", (int)c->cred.pid, strerror(-r));
		client_free(s, c);
	}
}

static void reject_connection(int fd, const char *why)
{
	_cleanup_free_ char *line = NULL;
	json_t *e = ctl_response_error(NULL, -EBUSY, "%s", why);
	size_t len;

	/* Best effort: the socket buffer of a fresh connection takes one short line. */
	if (e && ctl_line_dump(e, &line, &len) == 0 && send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("control: could not tell a rejected client why: %m");
	json_decref(e);
	close(fd);
}

static void server_accept(struct ctl_server *s, bool http)
{
	int lfd = http ? s->http_fd : s->listen_fd;
	struct ep_tag *ltag = http ? &s->http_tag : &s->listen_tag;

	for (;;) {
		struct ctl_client *c;
		socklen_t len = sizeof(c->cred);
		struct epoll_event e;
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Level-triggered accept would spin: pause it briefly. */
				log_warn("control: cannot accept clients: %m; pausing for %d ms", ACCEPT_PAUSE_MS);
				e = (struct epoll_event){ .events = 0, .data.ptr = ltag };
				epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, lfd, &e);
				s->accept_paused_until_ns = now_ns() + ACCEPT_PAUSE_MS * 1000000ULL;
			} else if (errno != EAGAIN) {
				log_warn("control: accept on %s failed: %m", s->path);
			}
			return;
		}
		if (http && s->nhttp >= MAX_HTTP_CLIENTS) {
			/* An HTTP client reads an HTTP answer, not a JSON line: just close. */
			log_debug("control: metrics connection refused: %d open", MAX_HTTP_CLIENTS);
			close(fd);
			continue;
		}
		if (!http && s->nclients >= CTL_SERVER_MAX_CLIENTS) {
			reject_connection(fd, "too many control clients; try again later");
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c)
			c->in = malloc(CTL_REQUEST_MAX);
		if (!c || !c->in) {
			if (c)
				free(c);
			reject_connection(fd, "control server out of memory");
			continue;
		}
		c->tag.kind = EP_CLIENT;
		c->serial = ++s->next_serial;
		c->fd = fd;
		c->http = http;
		if (http) {
			/* TCP peers have no credentials: they only ever read metrics. */
			c->cred = (struct ucred){ .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
		} else if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0) {
			/* Unknown peers are treated as the least privileged. */
			log_warn("control: SO_PEERCRED failed: %m");
			c->cred = (struct ucred){ .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
		} else {
			socklen_t glen = sizeof(c->groups);

			/* Supplementary groups make admin-group membership work for members whose primary group differs. */
			if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &glen) == 0)
				c->ngroups = glen / sizeof(gid_t);
			else if (errno != ERANGE)
				log_debug("control: SO_PEERGROUPS failed: %m");
		}
		c->last_progress_ns = now_ns();
		c->events = EPOLLIN;
		e = (struct epoll_event){ .events = EPOLLIN, .data.ptr = &c->tag };
		if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &e) < 0) {
			log_warn("control: cannot watch a new client: %m");
			free(c->in);
			free(c);
			close(fd);
			continue;
		}
		LIST_INSERT_HEAD(&s->clients, c, link);
		if (http)
			s->nhttp++;
		else
			s->nclients++;
		log_debug("control: client connected: pid %d uid %u gid %u", (int)c->cred.pid, (unsigned)c->cred.uid,
			  (unsigned)c->cred.gid);
	}
}

static void server_timers(struct ctl_server *s)
{
	uint64_t now = now_ns(), idle = (uint64_t)idle_timeout_ms(s) * 1000000ULL;
	struct ctl_client *c, *next;

	for (c = LIST_FIRST(&s->clients); c; c = next) {
		next = LIST_NEXT(c, link);
		/* Waiting for a job or for events is not idleness; a stalled reader with pending output is. */
		if ((c->busy || c->sub) && c->outoff == c->outlen) {
			c->last_progress_ns = now;
			continue;
		}
		if (now - c->last_progress_ns >= idle) {
			log_debug("control: closing client pid %d uid %u: idle for %u ms", (int)c->cred.pid,
				  (unsigned)c->cred.uid, idle_timeout_ms(s));
			client_free(s, c);
		} else if (c->line_start_ns && now - c->line_start_ns >= idle && !c->closing) {
			/*
			 * A line trickled in a byte at a time counts as progress
			 * forever; cap how long one request may take to arrive so
			 * such clients cannot hold connection slots.
			 */
			log_debug("control: closing client pid %d uid %u: request line incomplete after %u ms",
				  (int)c->cred.pid, (unsigned)c->cred.uid, idle_timeout_ms(s));
			client_free(s, c);
		}
	}
	if (s->accept_paused_until_ns && now >= s->accept_paused_until_ns) {
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = &s->listen_tag };

		s->accept_paused_until_ns = 0;
		epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, s->listen_fd, &e);
		if (s->http_fd >= 0) {
			e = (struct epoll_event){ .events = EPOLLIN, .data.ptr = &s->http_tag };
			epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, s->http_fd, &e);
		}
	}
}

static struct ctl_client *client_by_serial(struct ctl_server *s, uint64_t serial)
{
	struct ctl_client *c;

	LIST_FOREACH(c, &s->clients, link)
		if (c->serial == serial)
			return c;
	return NULL;
}

/* Joins finished jobs and hands their replies to their clients, if still connected. */
static void server_reap_jobs(struct ctl_server *s)
{
	for (;;) {
		struct ctl_job *j;
		struct ctl_client *c;
		int r;

		pthread_mutex_lock(&s->qlock);
		LIST_FOREACH(j, &s->jobs, link)
			if (j->done)
				break;
		if (j)
			LIST_REMOVE(j, link);
		pthread_mutex_unlock(&s->qlock);
		if (!j)
			return;
		pthread_join(j->thread, NULL);
		c = client_by_serial(s, j->client_serial);
		if (c) {
			c->busy = false;
			r = queue_response(c, j->resp);
			j->resp = NULL;
			/* Requests the client pipelined behind this one run now. */
			if (r == 0)
				r = client_process_input(s, c);
			client_send_or_free(s, c, r);
		}
		json_decref(j->resp);
		ctl_request_clear(&j->req);
		free(j);
	}
}

/* Moves queued events into subscribers' output; drops subscribers that fell too far behind. */
static void server_flush_events(struct ctl_server *s)
{
	struct ctl_client *c, *next;

	for (c = LIST_FIRST(&s->clients); c; c = next) {
		bool overflow;
		int r = 0;

		next = LIST_NEXT(c, link);
		if (!c->sub)
			continue;
		pthread_mutex_lock(&s->qlock);
		overflow = c->sub->overflow;
		while (!overflow && c->sub->n && c->outlen - c->outoff < OUT_HIGH_WATER && r == 0) {
			unsigned i = c->sub->head;

			if (c->outoff == c->outlen)
				c->last_progress_ns = now_ns();
			r = out_append(c, c->sub->lines[i], c->sub->lens[i]);
			free(c->sub->lines[i]);
			c->sub->lines[i] = NULL;
			c->sub->head = (i + 1) % EV_QUEUE_MAX;
			c->sub->n--;
		}
		pthread_mutex_unlock(&s->qlock);
		if (overflow) {
			log_warn("control: dropping event subscriber pid %d uid %u: it fell %d events behind",
				 (int)c->cred.pid, (unsigned)c->cred.uid, EV_QUEUE_MAX);
			client_free(s, c);
			continue;
		}
		client_send_or_free(s, c, r);
	}
}

static void server_wake(struct ctl_server *s)
{
	uint64_t v;

	if (read(s->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("control: wake eventfd: %m");
	server_reap_jobs(s);
	server_flush_events(s);
}

static void *server_thread(void *arg)
{
	struct ctl_server *s = arg;
	struct epoll_event evs[32];

	pthread_setname_np(pthread_self(), "pager-control");

	for (;;) {
		unsigned ms = idle_timeout_ms(s);
		int n = epoll_wait(s->epoll_fd, evs, ARRAY_SIZE(evs), ms < 1000 ? (int)ms / 2 + 1 : 500);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_err("control: epoll_wait failed: %m; control server stops");
			break;
		}
		for (int i = 0; i < n; i++) {
			struct ep_tag *t = evs[i].data.ptr;

			switch (t->kind) {
			case EP_STOP:
				return NULL;
			case EP_LISTEN:
				server_accept(s, false);
				break;
			case EP_HTTP_LISTEN:
				server_accept(s, true);
				break;
			case EP_CLIENT:
				client_event(s, container_of(t, struct ctl_client, tag), evs[i].events);
				break;
			case EP_WAKE:
				server_wake(s);
				break;
			default:
				log_err("control: internal error: unknown epoll source %d", (int)t->kind);
				break;
			}
		}
		server_timers(s);
	}
	return NULL;
}

/* ---- lifecycle ---- */

/* Removes path if it is a socket nobody listens on. Returns 0 or -errno. */
static int remove_stale_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	memcpy(sa.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	/* EAGAIN: someone listens but its backlog is full; still alive. */
	if (r == 0 || errno == EAGAIN) {
		close(fd);
		return -EADDRINUSE;
	}
	close(fd);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	log_info("control: removed stale socket %s", path);
	return 0;
}

static void server_free(struct ctl_server *s)
{
	struct stat st;

	/* Jobs end soon once the pager stops (its waits give up); their replies have nowhere to go. */
	while (!LIST_EMPTY(&s->jobs)) {
		struct ctl_job *j = LIST_FIRST(&s->jobs);

		LIST_REMOVE(j, link);
		pthread_join(j->thread, NULL);
		json_decref(j->resp);
		ctl_request_clear(&j->req);
		free(j);
	}
	while (!LIST_EMPTY(&s->clients))
		client_free(s, LIST_FIRST(&s->clients));
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		/* Unlink only our own socket, not one a successor has put there since. */
		if (lstat(s->path, &st) == 0 && st.st_dev == s->sock_dev && st.st_ino == s->sock_ino)
			unlink(s->path);
	}
	if (s->http_fd >= 0)
		close(s->http_fd);
	if (s->epoll_fd >= 0)
		close(s->epoll_fd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->qlock);
	free(s);
}

/* The metrics listener: TCP on a loopback address. Returns the fd or -errno (logged). */
static int http_listen(const char *spec)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	unsigned char addr[4];
	unsigned short port;
	int fd, one = 1;

	if (ctl_metrics_parse_listen(spec, addr, &port) < 0)
		return log_err_errno(-EINVAL, "control: --metrics-listen '%s': expected 127.x.y.z:PORT (loopback only)",
				     spec);
	memcpy(&sa.sin_addr.s_addr, addr, 4);
	sa.sin_port = htons(port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return log_err_errno(-errno, "control: metrics socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		int r = -errno;

		close(fd);
		return log_err_errno(r, "control: cannot listen for metrics on %s", spec);
	}
	return fd;
}

static void server_freep(struct ctl_server **s)
{
	if (*s)
		server_free(*s);
}

int ctl_server_start(struct pager *p, const char *path, mode_t mode, const struct ctl_server_options *o,
		     struct ctl_server **ret)
{
	struct ctl_server_options opts;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_(server_freep) struct ctl_server *s = NULL;
	struct epoll_event e;
	sigset_t all, old;
	struct stat st;
	int r;

	if (!path || !ret)
		return -EINVAL;
	if (strlen(path) == 0 || strlen(path) >= sizeof(sa.sun_path))
		return log_err_errno(-ENAMETOOLONG, "control: socket path \"%s\" must be 1-%zu bytes", path,
				     sizeof(sa.sun_path) - 1);
	if (o)
		opts = *o;
	else
		ctl_server_options_init(&opts);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	LIST_INIT(&s->clients);
	LIST_INIT(&s->jobs);
	s->pager = p;
	s->listen_fd = s->epoll_fd = s->stop_fd = s->http_fd = s->wake_fd = -1;
	s->wake_tag.kind = EP_WAKE;
	s->listen_tag.kind = EP_LISTEN;
	s->stop_tag.kind = EP_STOP;
	s->http_tag.kind = EP_HTTP_LISTEN;
	s->admin_gid = opts.admin_gid;
	s->idle_timeout_ms = CTL_SERVER_IDLE_TIMEOUT_MS;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->qlock, NULL);
	memcpy(s->path, path, strlen(path) + 1);
	memcpy(sa.sun_path, path, strlen(path));

	r = remove_stale_socket(path);
	if (r == -EADDRINUSE)
		return log_err_errno(r, "control: %s: another server is listening there", path);
	if (r == -EEXIST)
		return log_err_errno(r, "control: %s exists and is not a socket; refusing to replace it", path);
	if (r < 0)
		return log_err_errno(r, "control: cannot check for a stale socket at %s", path);
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->listen_fd < 0)
		return log_err_errno(-errno, "control: socket");
	if (bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = log_err_errno(-errno, "control: cannot bind %s", path);
		close(TAKE_FD(s->listen_fd)); /* not our socket file: server_free must not unlink it */
		return r;
	}
	/* Ours from here: server_free unlinks the socket this inode is, also on a failure below. */
	if (lstat(path, &st) < 0)
		return log_err_errno(-errno, "control: cannot stat %s", path);
	s->sock_dev = st.st_dev;
	s->sock_ino = st.st_ino;
	/* Set group and mode before listen(): until then nobody can connect anyway. */
	if (opts.group != (gid_t)-1 && chown(path, (uid_t)-1, opts.group) < 0)
		return log_err_errno(-errno, "control: cannot give %s to group %u", path, (unsigned)opts.group);
	if (chmod(path, mode) < 0)
		return log_err_errno(-errno, "control: cannot set mode %04o on %s", (unsigned)mode, path);
	if (listen(s->listen_fd, 64) < 0)
		return log_err_errno(-errno, "control: listen on %s", path);
	s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->epoll_fd < 0 || s->stop_fd < 0 || s->wake_fd < 0)
		return log_err_errno(-errno, "control: epoll/eventfd");
	{
		const struct { int fd; void *tag; } watch[] = {
			{ s->listen_fd, &s->listen_tag }, { s->stop_fd, &s->stop_tag }, { s->wake_fd, &s->wake_tag },
		};
		for (size_t i = 0; i < ARRAY_SIZE(watch); i++) {
			e = (struct epoll_event){ .events = EPOLLIN, .data.ptr = watch[i].tag };
			if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, watch[i].fd, &e) < 0)
				return log_err_errno(-errno, "control: epoll_ctl");
		}
	}
	if (opts.metrics_listen[0]) {
		s->http_fd = http_listen(opts.metrics_listen);
		if (s->http_fd < 0)
			return TAKE_FD(s->http_fd); /* the -errno, logged */
		e = (struct epoll_event){ .events = EPOLLIN, .data.ptr = &s->http_tag };
		if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->http_fd, &e) < 0)
			return log_err_errno(-errno, "control: epoll_ctl");
		log_info("control: serving GET /metrics on http://%s/metrics", opts.metrics_listen);
	}
	/* Process signals belong to the daemon's main loop, never to this thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&s->thread, NULL, server_thread, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0)
		return log_err_errno(r, "control: cannot start the server thread");
	s->thread_started = true;
	if (s->admin_gid != (gid_t)-1)
		log_info("control: listening on %s (mode %04o); admin group %u", path, (unsigned)mode,
			 (unsigned)s->admin_gid);
	else
		log_info("control: listening on %s (mode %04o)", path, (unsigned)mode);
	*ret = TAKE_PTR(s);
	return 0;
}

void ctl_server_stop(struct ctl_server *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (s->thread_started) {
		if (write(s->stop_fd, &one, sizeof(one)) < 0)
			log_warn("control: cannot signal the server thread: %m");
		pthread_join(s->thread, NULL);
	}
	server_free(s);
}

int ctl_server_allow_uid(struct ctl_server *s, uid_t uid)
{
	int r = 0;

	pthread_mutex_lock(&s->lock);
	if (s->nallowed >= MAX_ALLOWED_UIDS)
		r = -ENOSPC;
	else
		s->allowed_uids[s->nallowed++] = uid;
	pthread_mutex_unlock(&s->lock);
	return r;
}

void ctl_server_set_idle_timeout(struct ctl_server *s, unsigned timeout_ms)
{
	pthread_mutex_lock(&s->lock);
	s->idle_timeout_ms = timeout_ms ? timeout_ms : CTL_SERVER_IDLE_TIMEOUT_MS;
	pthread_mutex_unlock(&s->lock);
}
