/* SPDX-License-Identifier: MIT */
/*
 * Registration server and VM registry. Everything a shim sends is hostile
 * until checked: the peer's uid (SO_PEERCRED), each message's size, type
 * and version, the kind of every passed fd (a userfaultfd, a memfd), and
 * the region against the memfd's real size. Extra fds are closed, never
 * kept. A client that misbehaves gets an error reply and is dropped; the
 * daemon goes on serving everyone else.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "donors.h"
#include "glue-proto.h"
#include "log.h"
#include "pager.h"
#include "registry.h"
#include "util.h"
#include "vm.h"

#define MAX_CLIENTS 256
#define HELLO_TIMEOUT_NS (10ULL * 1000000000ULL)
#define MAX_FDS_PER_MSG 4

enum tag_kind { TAG_LISTEN, TAG_SIGNAL, TAG_CLIENT, TAG_PIDFD };

struct client {
	int fd;
	pid_t pid;
	uid_t uid;
	struct vm *vm;
	struct epoll_tag { enum tag_kind kind; struct client *c; } tag, pid_tag;
	struct client *next;
	uint64_t accepted_ns; /* a stranger that never says HELLO is dropped after HELLO_TIMEOUT_NS */
	bool attached_event; /* vm.attached sent (first region): vm.detached pairs with it */
	struct balloon {
		uint64_t target_kib;  /* last target asked for; 0 = the domain's maximum */
		uint64_t applied_kib; /* what libvirt last confirmed; 0 = nothing yet */
		bool asked;           /* a target was asked for since the VM attached */
		bool inflated;        /* the last target was below the guest's size */
		bool warned;          /* a failure was logged (once per VM) */
		const char *state;    /* "idle", "pending", "settling", "done", "failed" */
		char result[160];     /* the last answer, for vm.stats */
		uint64_t settle_until_ns; /* 0 = no settle window running */
		uint64_t requests, failures;
	} balloon;
};

struct pager {
	struct policy_pager_config cfg;
	int listen_fd, epfd, sigfd;
	struct epoll_tag listen_tag, signal_tag;
	pthread_mutex_t lock; /* the client list and every VM pointer in it */
	struct client *clients;
	unsigned nclients;
	uint64_t committed; /* sum of local_memory of registered VMs */
	uint64_t vms_registered, vms_refused, vms_exited;
	struct ctl_server *ctl;
	struct donor_pool *pool; /* shared by every VM */
	_Atomic bool stopping;   /* set first by pager_free: control waits give up */
	pager_balloon_fn balloon_fn; /* virt.c when --libvirt; under lock */
	void *balloon_opaque;
};

/* A memfd by name and by filesystem: a regular file at a path like "/memfd:x" is not one. */
static bool fd_is_memfd(int fd)
{
	struct statfs sf;

	return fd_link_has_prefix(fd, "/memfd:") && fstatfs(fd, &sf) == 0 &&
	       (sf.f_type == TMPFS_MAGIC || sf.f_type == HUGETLBFS_MAGIC);
}

static void reply(struct client *c, enum glue_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply(struct client *c, enum glue_status st, const char *fmt, ...)
{
	struct glue_msg_reply r = { .status = st };
	va_list ap;

	glue_header_init(&r.hdr, GLUE_MSG_REPLY, sizeof(r));
	va_start(ap, fmt);
	vsnprintf(r.text, sizeof(r.text), fmt, ap);
	va_end(ap);
	/* MSG_DONTWAIT: a client that does not read must not stall the daemon. */
	if (send(c->fd, &r, sizeof(r), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("reply to pid %d lost: %s", (int)c->pid, strerror(errno));
}

/*
 * ---- Events ----
 * Subscribers live in one process-wide list: the emitters (VMs, the donor
 * pool) do not know the pager, and a process runs one pager. Callbacks run
 * under events_lock so that unsubscribe, which takes it too, cannot return
 * while one runs; they only queue (pager.h), so holding it is brief.
 */
struct event_sub {
	uint64_t id;
	pager_event_fn fn;
	void *opaque;
	struct event_sub *next;
};

static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static struct event_sub *event_subs;
static _Atomic unsigned event_nsubs;
static uint64_t event_next_id = 1;

int pager_events_subscribe(struct pager *p, pager_event_fn fn, void *opaque, uint64_t *ret_id)
{
	struct event_sub *e = calloc(1, sizeof(*e));

	(void)p;
	if (!e)
		return -ENOMEM;
	e->fn = fn;
	e->opaque = opaque;
	pthread_mutex_lock(&events_lock);
	e->id = event_next_id++;
	e->next = event_subs;
	event_subs = e;
	atomic_fetch_add(&event_nsubs, 1);
	pthread_mutex_unlock(&events_lock);
	*ret_id = e->id;
	return 0;
}

void pager_events_unsubscribe(struct pager *p, uint64_t id)
{
	struct event_sub **pp, *e = NULL;

	(void)p;
	pthread_mutex_lock(&events_lock);
	for (pp = &event_subs; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			e = *pp;
			*pp = e->next;
			atomic_fetch_sub(&event_nsubs, 1);
			break;
		}
	}
	pthread_mutex_unlock(&events_lock);
	free(e);
}

void pager_event_emit(const char *type, json_t *fields)
{
	struct timespec ts;
	json_t *ev;

	if (atomic_load(&event_nsubs) == 0) {
		json_decref(fields);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ev = json_pack("{s:s, s:f}", "event", type, "time", (double)ts.tv_sec + ts.tv_nsec / 1e9);
	if (ev && fields)
		json_object_update(ev, fields);
	json_decref(fields);
	if (!ev)
		return;
	pthread_mutex_lock(&events_lock);
	for (struct event_sub *e = event_subs; e; e = e->next)
		e->fn(e->opaque, ev);
	pthread_mutex_unlock(&events_lock);
	json_decref(ev);
}

static struct vm *find_vm_locked(struct pager *p, const char *name)
{
	for (struct client *c = p->clients; c; c = c->next)
		if (c->vm && strcmp(vm_name(c->vm), name) == 0)
			return c->vm;
	return NULL;
}

static struct client *find_client_locked(struct pager *p, const char *name)
{
	for (struct client *c = p->clients; c; c = c->next)
		if (c->vm && strcmp(vm_name(c->vm), name) == 0)
			return c;
	return NULL;
}

/*
 * ---- Guest balloon (docs/policy.md "balloon") ----
 * The registry decides the target, virt.c talks to libvirt on its own
 * thread. Nothing here waits for libvirt: a request is queued, the VM's
 * eviction is held for the policy's settle_ms (vm_set_balloon_settle) and
 * balloon_tick() ends the hold when that time is up, answered or not.
 */
enum balloon_why {
	BALLOON_LIMIT = POLICY_BALLOON_LIMIT,
	BALLOON_PARK = POLICY_BALLOON_PARK,
	BALLOON_DRAIN = POLICY_BALLOON_DRAIN,
	BALLOON_ATTACH = POLICY_BALLOON_LIMIT, /* the first region: the limit meets the guest's size */
};

static void balloon_fail_locked(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void balloon_fail_locked(struct client *c, const char *fmt, ...)
{
	struct balloon *b = &c->balloon;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b->result, sizeof(b->result), fmt, ap);
	va_end(ap);
	b->state = "failed";
	b->failures++;
	/* Once per VM: a domain without a balloon would otherwise log at every limit change. */
	if (!b->warned)
		vm_log_warn(vm_name(c->vm), "balloon: %s; paging without it", b->result);
	else
		vm_log_debug(vm_name(c->vm), "balloon: %s", b->result);
	b->warned = true;
	if (b->settle_until_ns) {
		b->settle_until_ns = 0;
		vm_set_balloon_settle(c->vm, false);
	}
}

/*
 * The balloon target for the VM's limit (why says what changed; the rule is
 * policy_balloon_target()), asked for when it differs from the last one.
 * Under p->lock. A new limit is passed before it takes effect, so the
 * settle hold is in place before the evictor is woken for it.
 */
static void balloon_target_locked(struct pager *p, struct client *c, enum balloon_why why, uint64_t limit)
{
	struct balloon *b = &c->balloon;
	const struct policy_vm *pol = vm_policy(c->vm);
	uint64_t guest = vm_guest_bytes(c->vm), want = 0;

	if (!guest)
		return; /* no RAM registered yet: attach will ask */
	/* Turned off while inflated: the target is 0, the guest gets its memory back. */
	if (!pol->balloon_enabled && (!b->asked || !b->inflated))
		return;
	want = policy_balloon_target(pol, guest, limit, (enum policy_balloon_why)why);
	want >>= 10;
	/* A fresh guest already has all its memory; the same target twice changes nothing. */
	if ((!b->asked && want == 0) || (b->asked && want == b->target_kib && strcmp(b->state, "failed") != 0))
		return;
	b->asked = true;
	b->target_kib = want;
	b->inflated = want != 0;
	b->requests++;
	if (!p->balloon_fn) {
		balloon_fail_locked(c, "no libvirt connection (uffd-pager runs without --libvirt)");
		return;
	}
	b->state = "pending";
	snprintf(b->result, sizeof(b->result), "asked libvirt for %s", want ? "a smaller guest" : "the full guest");
	if (want)
		vm_log_info(vm_name(c->vm), "balloon: asking libvirt to set the guest's memory to %llu MiB before paging it out", (unsigned long long)(want >> 10));
	else
		vm_log_info(vm_name(c->vm), "balloon: asking libvirt to give the guest its full memory back");
	/* Inflating: hold eviction for settle_ms so the guest gives back what it can first. */
	if (want && pol->balloon_settle_ms) {
		b->settle_until_ns = now_ns() + (uint64_t)pol->balloon_settle_ms * 1000000ULL;
		vm_set_balloon_settle(c->vm, true);
	} else if (b->settle_until_ns) {
		b->settle_until_ns = 0;
		vm_set_balloon_settle(c->vm, false);
	}
	p->balloon_fn(p->balloon_opaque, vm_name(c->vm), vm_uuid(c->vm), want);
}

static void balloon_update_locked(struct pager *p, struct client *c, enum balloon_why why)
{
	balloon_target_locked(p, c, why, vm_local_memory(c->vm));
}

/* Ends settle windows whose time is up. Main loop, about once a second. */
static void balloon_tick(struct pager *p)
{
	uint64_t now = now_ns();

	pthread_mutex_lock(&p->lock);
	for (struct client *c = p->clients; c; c = c->next) {
		struct balloon *b = &c->balloon;

		if (!c->vm || !b->settle_until_ns || now < b->settle_until_ns)
			continue;
		b->settle_until_ns = 0;
		if (!strcmp(b->state, "settling") || !strcmp(b->state, "pending"))
			b->state = !strcmp(b->state, "settling") ? "done" : "pending";
		vm_set_balloon_settle(c->vm, false);
		vm_log_info(vm_name(c->vm), "balloon: settle time over; paging out what is still above the limit");
	}
	pthread_mutex_unlock(&p->lock);
}

void pager_set_balloon_handler(struct pager *p, pager_balloon_fn fn, void *opaque)
{
	pthread_mutex_lock(&p->lock);
	p->balloon_fn = fn;
	p->balloon_opaque = opaque;
	pthread_mutex_unlock(&p->lock);
}

void pager_balloon_result(struct pager *p, const char *vm, const char *uuid, uint64_t target_kib,
			  uint64_t applied_kib, int err, const char *msg)
{
	struct client *c;

	pthread_mutex_lock(&p->lock);
	c = find_client_locked(p, vm);
	if (!c || strcmp(vm_uuid(c->vm), uuid) != 0 || !c->balloon.asked || c->balloon.target_kib != target_kib) {
		pthread_mutex_unlock(&p->lock);
		return; /* gone, or superseded by a newer target */
	}
	struct balloon *b = &c->balloon;

	if (err < 0) {
		balloon_fail_locked(c, "%s", msg);
	} else {
		const struct policy_vm *pol = vm_policy(c->vm);

		b->applied_kib = applied_kib;
		snprintf(b->result, sizeof(b->result), "%s", msg);
		vm_log_info(vm, "balloon: %s", msg);
		/* The guest starts giving memory back now: the settle time counts from here. */
		if (target_kib && pol->balloon_settle_ms) {
			b->state = "settling";
			b->settle_until_ns = now_ns() + (uint64_t)pol->balloon_settle_ms * 1000000ULL;
			vm_set_balloon_settle(c->vm, true);
		} else {
			b->state = "done";
		}
	}
	pthread_mutex_unlock(&p->lock);
}

static json_t *balloon_json_locked(struct client *c)
{
	struct balloon *b = &c->balloon;

	return json_pack("{s:b, s:s, s:I, s:I, s:s, s:I, s:I}", "enabled", vm_policy(c->vm)->balloon_enabled, "state",
			 b->state ? b->state : "idle", "target_kib", (json_int_t)b->target_kib, "applied_kib",
			 (json_int_t)b->applied_kib, "last_result", b->result, "requests", (json_int_t)b->requests,
			 "failures", (json_int_t)b->failures);
}

static void client_drop(struct pager *p, struct client *c, const char *why)
{
	struct client **pp;
	struct vm *vm;

	pthread_mutex_lock(&p->lock);
	for (pp = &p->clients; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = c->next;
	p->nclients--;
	vm = c->vm;
	if (vm) {
		p->committed -= vm_local_memory(vm);
		p->vms_exited++;
	}
	c->vm = NULL;
	pthread_mutex_unlock(&p->lock);

	if (vm) {
		vm_log_info(vm_name(vm), "%s; freeing its pages and spill file", why);
		if (c->attached_event)
			pager_event_emit("vm.detached", json_pack("{s:s, s:i, s:s}", "vm", vm_name(vm), "pid",
								  (int)c->pid, "reason", why));
		vm_free(vm);
	}
	epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c);
}

/* "" (QEMU had no -uuid) or the textual layout 8-4-4-4-12 of hex digits. */
static bool uuid_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0)
		return true;
	if (n != 36)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

static void handle_hello(struct pager *p, struct client *c, const struct glue_msg_hello *h, int fd)
{
	struct policy_vm pol;
	struct policy_error perr;
	struct vm *vm;
	char err[256], src[96];
	int pidfd, r;

	if (c->vm) {
		reply(c, GLUE_INVALID, "HELLO sent twice");
		goto drop_fd;
	}
	if (!fd_link_has_prefix(fd, "anon_inode:[userfaultfd]")) {
		reply(c, GLUE_INVALID, "HELLO must carry exactly one userfaultfd, not another kind of fd");
		goto drop_fd;
	}
	const char *name = h->name; /* NUL-terminated: glue_msg_check */
	if (!policy_name_valid(name)) {
		reply(c, GLUE_INVALID, "VM name must be 1-63 characters of [A-Za-z0-9._-], not . or ..");
		goto drop_fd;
	}
	if (!uuid_valid(h->uuid)) { /* NUL-terminated: glue_msg_check */
		reply(c, GLUE_INVALID, "VM UUID must be empty or 36 characters like "
				       "12345678-9abc-def0-1234-56789abcdef0");
		goto drop_fd;
	}
	if (!h->policy_len) {
		reply(c, GLUE_REFUSED, "no policy: start the VM with uffd-qemu --policy FILE");
		goto drop_fd;
	}
	snprintf(src, sizeof(src), "policy of vm %s", name);
	if (policy_vm_parse((const char *)(h + 1), h->policy_len, src, &pol, &perr) < 0) {
		reply(c, GLUE_REFUSED, "%s", perr.msg);
		goto drop_fd;
	}
	/* The name the launcher chose (--name) wins over the policy's. */
	snprintf(pol.name, sizeof(pol.name), "%s", name);

	pthread_mutex_lock(&p->lock);
	if (find_vm_locked(p, name)) {
		pthread_mutex_unlock(&p->lock);
		p->vms_refused++;
		reply(c, GLUE_REFUSED, "a VM named '%s' is already registered", name);
		goto drop_fd;
	}
	if (p->cfg.budget && p->committed + pol.local_memory > p->cfg.budget) {
		char a[32], b[32], d[32];
		pthread_mutex_unlock(&p->lock);
		p->vms_refused++;
		reply(c, GLUE_REFUSED, "local_memory %s does not fit the host budget: %s of %s already committed",
		      format_size(pol.local_memory, a, sizeof(a)), format_size(p->committed, b, sizeof(b)),
		      format_size(p->cfg.budget, d, sizeof(d)));
		log_warn("vm %s refused: local_memory %s over the budget", name, a);
		goto drop_fd;
	}
	p->committed += pol.local_memory; /* reserved now so two HELLOs cannot both fit */
	pthread_mutex_unlock(&p->lock);

	pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
	if (pidfd < 0) {
		reply(c, GLUE_REFUSED, "pidfd_open(%d): %s", (int)c->pid, strerror(errno));
		goto unreserve;
	}
	r = vm_new(&pol, c->pid, pidfd, fd, p->cfg.state_dir, p->cfg.max_guest_memory, p->pool, &vm, err,
		   sizeof(err));
	fd = -1; /* vm_new owns it now, also on failure */
	if (r < 0) {
		reply(c, GLUE_REFUSED, "%s", err);
		goto unreserve;
	}
	vm_set_uuid(vm, h->uuid);
	pthread_mutex_lock(&p->lock);
	c->vm = vm;
	p->vms_registered++;
	pthread_mutex_unlock(&p->lock);

	c->pid_tag = (struct epoll_tag){ .kind = TAG_PIDFD, .c = c };
	/* The pidfd turns readable when the process exits, even if its socket lingers in a child. */
	epoll_ctl(p->epfd, EPOLL_CTL_ADD, pidfd,
		  &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &c->pid_tag });
	reply(c, GLUE_OK, "registered as %s", name);
	return;

unreserve:
	pthread_mutex_lock(&p->lock);
	p->committed -= pol.local_memory;
	p->vms_refused++;
	pthread_mutex_unlock(&p->lock);
drop_fd:
	if (fd >= 0)
		close(fd);
}

static void handle_region(struct pager *p, struct client *c, const struct glue_msg_region *m, int fd)
{
	char err[256];

	if (!c->vm) {
		reply(c, GLUE_INVALID, "REGION before HELLO");
		goto drop_fd;
	}
	if (!fd_is_memfd(fd)) {
		reply(c, GLUE_INVALID, "REGION must carry exactly one memfd, not another kind of fd");
		goto drop_fd;
	}
	/* vm_add_region runs without the registry lock: only this thread adds regions or frees VMs. */
	if (vm_add_region(c->vm, fd, m->host_addr, m->length, m->memfd_offset, err, sizeof(err)) < 0) {
		reply(c, GLUE_INVALID, "%s", err);
		return;
	}
	reply(c, GLUE_OK, "region registered");
	/* Attached = paging began: the first region gives the guest's size. */
	if (!c->attached_event) {
		c->attached_event = true;
		pthread_mutex_lock(&p->lock);
		balloon_update_locked(p, c, BALLOON_ATTACH);
		pthread_mutex_unlock(&p->lock);
		pager_event_emit("vm.attached", json_pack("{s:s, s:s, s:i, s:I, s:I}", "vm", vm_name(c->vm), "uuid",
							  vm_uuid(c->vm), "pid", (int)c->pid, "guest_memory", (json_int_t)vm_guest_bytes(c->vm),
							  "local_memory", (json_int_t)vm_local_memory(c->vm)));
	}
	return;
drop_fd:
	if (fd >= 0)
		close(fd);
}

/* Returns false when the client must be dropped. */
static bool client_read(struct pager *p, struct client *c)
{
	static _Alignas(8) char buf[sizeof(struct glue_msg_hello) + GLUE_POLICY_MAX + 64];
	char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	int fds[MAX_FDS_PER_MSG * 2], nfds = 0, fd = -1;
	char why[GLUE_REPLY_TEXT_MAX];
	ssize_t n;

	n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k && nfds < (int)ARRAY_SIZE(fds); i++)
			memcpy(&fds[nfds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
	}
	if (nfds == 1)
		fd = fds[0];
	else
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
	if (n == 0)
		return false; /* EOF: the process is gone or gave up */
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		reply(c, GLUE_INVALID, "malformed message: longer than %zu bytes, or too many fds", sizeof(buf));
		goto bad;
	}
	switch (glue_msg_check(buf, (size_t)n, (unsigned)nfds, why, sizeof(why))) {
	case GLUE_MSG_HELLO:
		handle_hello(p, c, (const void *)buf, fd);
		return c->vm != NULL;
	case GLUE_MSG_REGION:
		handle_region(p, c, (const void *)buf, fd);
		return true;
	case GLUE_MSG_REPLY:
		reply(c, GLUE_INVALID, "REPLY is the pager's to send");
		goto bad;
	default:
		reply(c, GLUE_INVALID, "%s", why);
		goto bad;
	}
bad:
	if (fd >= 0)
		close(fd);
	/* A registered VM keeps running on a garbled follow-up; a stranger is dropped. */
	return c->vm != NULL;
}

static void accept_client(struct pager *p)
{
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	struct client *c;
	int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		close(fd);
		return;
	}
	bool allowed = cred.uid == 0;
	for (unsigned i = 0; i < p->cfg.n_allowed_uids; i++)
		allowed |= cred.uid == p->cfg.allowed_uids[i];
	if (!allowed || p->nclients >= MAX_CLIENTS) {
		log_warn("registration from pid %d uid %u refused: %s", (int)cred.pid, (unsigned)cred.uid,
			 allowed ? "too many clients" : "uid not allowed (pager config 'allowed_uids')");
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->accepted_ns = now_ns();
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->tag = (struct epoll_tag){ .kind = TAG_CLIENT, .c = c };
	pthread_mutex_lock(&p->lock);
	c->next = p->clients;
	p->clients = c;
	p->nclients++;
	pthread_mutex_unlock(&p->lock);
	epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &c->tag });
}

static int make_dir(const char *path, mode_t mode)
{
	char tmp[256];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *s = tmp + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		mkdir(tmp, 0755);
		*s = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int dirname_of(const char *path, char *out, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (!slash || slash == path)
		return -EINVAL;
	snprintf(out, len, "%.*s", (int)(slash - path), path);
	return 0;
}

int pager_new(const struct policy_pager_config *cfg, struct pager **ret)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct pager *p;
	sigset_t mask;
	char dir[256], err[256];
	int r;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	p->listen_fd = p->epfd = p->sigfd = -1;
	pthread_mutex_init(&p->lock, NULL);

	if ((r = make_dir(cfg->state_dir, 0700)) < 0) {
		log_err("cannot create state directory %s: %s", cfg->state_dir, strerror(-r));
		goto fail;
	}
	if ((r = policy_check_state_dir_fstype(cfg->state_dir, err, sizeof(err))) < 0) {
		log_err("%s", err);
		goto fail;
	}
	if (dirname_of(cfg->socket_path, dir, sizeof(dir)) == 0)
		make_dir(dir, 0755);
	if (strlen(cfg->socket_path) >= sizeof(sa.sun_path)) {
		log_err("socket path %s is too long", cfg->socket_path);
		r = -ENAMETOOLONG;
		goto fail;
	}
	strcpy(sa.sun_path, cfg->socket_path);
	p->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	unlink(cfg->socket_path);
	if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(p->listen_fd, 64) < 0) {
		r = log_err_errno(-errno, "cannot listen on %s", cfg->socket_path);
		goto fail;
	}
	/* Who may connect is checked with SO_PEERCRED; the mode only keeps strangers from trying. */
	chmod(cfg->socket_path, cfg->n_allowed_uids ? 0666 : 0600);

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	p->sigfd = signalfd(-1, &mask, SFD_CLOEXEC);
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (p->sigfd < 0 || p->epfd < 0) {
		r = log_err_errno(-errno, "signalfd/epoll");
		goto fail;
	}
	p->listen_tag.kind = TAG_LISTEN;
	p->signal_tag.kind = TAG_SIGNAL;
	epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->listen_fd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &p->listen_tag });
	epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->sigfd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &p->signal_tag });

	/* After signals are blocked: the donor threads must not take SIGTERM. */
	r = donor_pool_new(cfg, &p->pool);
	if (r < 0) {
		log_err_errno(r, "cannot set up donors");
		goto fail;
	}
	if (dirname_of(cfg->control_path, dir, sizeof(dir)) == 0)
		make_dir(dir, 0755);
	r = ctl_server_start(p, cfg->control_path, 0660, &p->ctl);
	if (r < 0) {
		log_err_errno(r, "cannot start the control server on %s", cfg->control_path);
		goto fail;
	}
	*ret = p;
	return 0;
fail:
	pager_free(p);
	return r;
}

static void drop_silent_clients(struct pager *p)
{
	uint64_t now = now_ns();
	struct client *c, *next;

	/* Only this thread adds or drops clients, so walking without the lock is safe. */
	for (c = p->clients; c; c = next) {
		next = c->next;
		if (!c->vm && now - c->accepted_ns > HELLO_TIMEOUT_NS) {
			log_warn("registration from pid %d: no HELLO within %llu s, dropped", (int)c->pid,
				 HELLO_TIMEOUT_NS / 1000000000ULL);
			client_drop(p, c, "never registered");
		}
	}
}

int pager_run(struct pager *p)
{
	char sz[32];

	log_info("uffd-pager %s: registration %s, control %s, state %s, budget %s", UFFDVM_VERSION, p->cfg.socket_path,
		 p->cfg.control_path, p->cfg.state_dir, p->cfg.budget ? format_size(p->cfg.budget, sz, sizeof(sz)) : "unlimited");
	for (;;) {
		struct epoll_event ev[16];
		/* Wake once a second to drop connections that never registered: they hold client slots. */
		int n = epoll_wait(p->epfd, ev, 16, 1000);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return log_err_errno(-errno, "epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct epoll_tag *t = ev[i].data.ptr;
			switch (t->kind) {
			case TAG_LISTEN:
				accept_client(p);
				break;
			case TAG_SIGNAL:
				log_info("shutting down");
				return 0;
			case TAG_CLIENT:
				if ((ev[i].events & EPOLLIN) && client_read(p, t->c))
					break;
				if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
					client_drop(p, t->c, "process exited or closed its registration");
					/* later events of this round may name the freed client */
					goto next_round;
				}
				break;
			case TAG_PIDFD:
				client_drop(p, t->c, "process exited");
				goto next_round;
			}
		}
next_round:
		drop_silent_clients(p);
		balloon_tick(p);
	}
}

void pager_free(struct pager *p)
{
	if (!p)
		return;
	atomic_store(&p->stopping, true);
	ctl_server_stop(p->ctl);
	while (p->clients)
		client_drop(p, p->clients, "pager shutting down");
	if (p->listen_fd >= 0) {
		close(p->listen_fd);
		unlink(p->cfg.socket_path);
	}
	if (p->epfd >= 0)
		close(p->epfd);
	if (p->sigfd >= 0)
		close(p->sigfd);
	donor_pool_free(p->pool); /* after every VM: they hold slabs and in-flight I/O */
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* ---- pager.h: what the control server may ask ---- */

static int set_limit_locked(struct pager *p, struct vm *vm, uint64_t bytes, char *err, size_t errlen);

/* Under p->lock: the VM, or NULL with the reason in err. */
static struct vm *find_vm_or_err_locked(struct pager *p, const char *name, char *err, size_t errlen)
{
	struct vm *vm = find_vm_locked(p, name);

	if (!vm)
		snprintf(err, errlen, "no VM named '%s'", name);
	return vm;
}

json_t *pager_vm_list(struct pager *p)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&p->lock);
	for (struct client *c = p->clients; c; c = c->next)
		if (c->vm)
			json_array_append_new(arr, vm_stats_json(c->vm, true));
	pthread_mutex_unlock(&p->lock);
	return json_pack("{s:o}", "vms", arr);
}

int pager_vm_stats(struct pager *p, const char *name, json_t **ret_stats)
{
	struct vm *vm;

	struct client *c;

	pthread_mutex_lock(&p->lock);
	c = find_client_locked(p, name);
	vm = c ? c->vm : NULL;
	if (vm) {
		*ret_stats = vm_stats_json(vm, false);
		json_object_set_new(*ret_stats, "balloon", balloon_json_locked(c));
	}
	pthread_mutex_unlock(&p->lock);
	return vm ? 0 : -ENOENT;
}

int pager_vm_set_limit(struct pager *p, const char *name, uint64_t bytes, char *err, size_t errlen)
{
	struct vm *vm;
	int r;

	if (bytes < (1ULL << 20)) {
		snprintf(err, errlen, "local_memory must be at least 1M");
		return -EINVAL;
	}
	pthread_mutex_lock(&p->lock);
	vm = find_vm_or_err_locked(p, name, err, errlen);
	if (!vm) {
		r = -ENOENT;
	} else {
		r = set_limit_locked(p, vm, bytes, err, errlen);
		if (r == 0)
			vm_log_info(name, "local memory set to %llu MiB", (unsigned long long)(bytes >> 20));
	}
	pthread_mutex_unlock(&p->lock);
	return r;
}

json_t *pager_stats(struct pager *p)
{
	json_t *o;
	unsigned vms = 0;
	json_t *d;

	pthread_mutex_lock(&p->lock);
	for (struct client *c = p->clients; c; c = c->next)
		vms += c->vm != NULL;
	o = json_pack("{s:s, s:I, s:I, s:i, s:I, s:I, s:I, s:s}", "version", UFFDVM_VERSION, "budget",
		      (json_int_t)p->cfg.budget, "committed", (json_int_t)p->committed, "vms", (int)vms,
		      "vms_registered", (json_int_t)p->vms_registered, "vms_refused", (json_int_t)p->vms_refused,
		      "vms_exited", (json_int_t)p->vms_exited, "state_dir", p->cfg.state_dir);
	pthread_mutex_unlock(&p->lock);
	d = donor_pool_json(p->pool);
	json_object_set(o, "donors", json_object_get(d, "donors"));
	json_decref(d);
	return o;
}

json_t *pager_donor_list(struct pager *p)
{
	return donor_pool_json(p->pool);
}

int pager_donor_add(struct pager *p, const char *url, char *err, size_t errlen)
{
	int r = donor_pool_add(p->pool, url, err, errlen);

	return r < 0 ? r : 0;
}

int pager_donor_drain(struct pager *p, const char *url, bool remove)
{
	return donor_pool_drain(p->pool, url, remove);
}

/*
 * Waits, with the registry unlocked between looks, until busy() says the
 * VM is done. The VM is looked up by name on every look: it may exit
 * meanwhile. Returns 0, -ENOENT (gone) or -ETIMEDOUT.
 */
static int wait_vm(struct pager *p, const char *name, bool (*busy)(struct vm *, uint64_t *), uint64_t *ret_left,
		   unsigned timeout_s)
{
	for (unsigned ms = 0; ms < timeout_s * 1000; ms += 50) {
		struct vm *vm;
		bool b;

		pthread_mutex_lock(&p->lock);
		vm = find_vm_locked(p, name);
		b = vm && busy(vm, ret_left);
		pthread_mutex_unlock(&p->lock);
		if (!vm)
			return -ENOENT;
		if (!b)
			return 0;
		if (atomic_load(&p->stopping))
			return -ECANCELED;
		usleep(50000);
	}
	return -ETIMEDOUT;
}

/* Sets a VM's limit within the host budget. Under p->lock. */
static int set_limit_locked(struct pager *p, struct vm *vm, uint64_t bytes, char *err, size_t errlen)
{
	char a[32], b[32];

	bytes &= ~4095ULL;
	if (p->cfg.budget && p->committed - vm_local_memory(vm) + bytes > p->cfg.budget) {
		snprintf(err, errlen, "%s does not fit the host budget of %s (%s committed)",
			 format_size(bytes, a, sizeof(a)), format_size(p->cfg.budget, b, sizeof(b)),
			 format_size(p->committed, b + 16, sizeof(b) - 16));
		return -ENOSPC;
	}
	p->committed = p->committed - vm_local_memory(vm) + bytes;
	balloon_target_locked(p, find_client_locked(p, vm_name(vm)), BALLOON_LIMIT, bytes);
	vm_set_local_memory(vm, bytes);
	return 0;
}

int pager_vm_drain(struct pager *p, const char *name, char *err, size_t errlen)
{
	uint64_t left = 0;
	struct vm *vm;
	int r = 0;

	for (int round = 0; round < 3; round++) {
		pthread_mutex_lock(&p->lock);
		vm = find_vm_or_err_locked(p, name, err, errlen);
		if (!vm) {
			pthread_mutex_unlock(&p->lock);
			return -ENOENT;
		}
		/* The whole guest must fit locally: raise the limit to its size, within the budget. */
		if (vm_local_memory(vm) < vm_guest_bytes(vm))
			r = set_limit_locked(p, vm, vm_guest_bytes(vm), err, errlen);
		if (r == 0) {
			if (round == 0)
				balloon_update_locked(p, find_client_locked(p, name), BALLOON_DRAIN);
			vm_request_drain(vm);
		}
		pthread_mutex_unlock(&p->lock);
		if (r < 0)
			return r;
		r = wait_vm(p, name, vm_drain_busy, &left, 600);
		if (r == -ENOENT) {
			snprintf(err, errlen, "VM '%s' exited during the drain", name);
			return r;
		}
		if (r < 0) {
			snprintf(err, errlen, "drain of '%s' not finished after 600 s (%llu pages still stored)", name,
				 (unsigned long long)left);
			return -EIO;
		}
		/* An eviction in flight when the drain began may have stored pages behind the cursor. */
		if (left == 0) {
			vm_log_info(name, "drained: every page is local");
			return 0;
		}
	}
	snprintf(err, errlen, "%llu pages of '%s' could not be brought back (see the pager log)",
		 (unsigned long long)left, name);
	return -EIO;
}

int pager_vm_park(struct pager *p, const char *name, char *err, size_t errlen)
{
	uint64_t resident = 0;
	struct vm *vm;
	int r;

	pthread_mutex_lock(&p->lock);
	vm = find_vm_or_err_locked(p, name, err, errlen);
	if (vm) {
		balloon_update_locked(p, find_client_locked(p, name), BALLOON_PARK);
		vm_request_park(vm);
	}
	pthread_mutex_unlock(&p->lock);
	if (!vm)
		return -ENOENT;
	r = wait_vm(p, name, vm_park_busy, &resident, 600);
	if (r < 0) {
		snprintf(err, errlen, r == -ENOENT ? "VM '%s' exited while parking" : "parking '%s' did not finish", name);
		return r == -ENOENT ? r : -EIO;
	}
	vm_log_info(name, "parked: %llu pages left resident", (unsigned long long)resident);
	return 0;
}

int pager_vm_policy_get(struct pager *p, const char *name, json_t **ret_policy)
{
	struct vm *vm;
	char *text = NULL;

	pthread_mutex_lock(&p->lock);
	vm = find_vm_locked(p, name);
	if (vm)
		text = policy_vm_to_json(vm_policy(vm));
	pthread_mutex_unlock(&p->lock);
	if (!vm)
		return -ENOENT;
	*ret_policy = text ? json_loads(text, 0, NULL) : NULL;
	free(text);
	return *ret_policy ? 0 : -ENOMEM;
}

int pager_vm_policy_set(struct pager *p, const char *name, const json_t *policy, char *err, size_t errlen)
{
	struct policy_error perr;
	struct policy_vm pol;
	json_t *merged = NULL, *nm;
	char *text = NULL, *cur = NULL;
	struct vm *vm;
	int r;

	nm = json_object_get(policy, "name");
	if (nm && (!json_is_string(nm) || strcmp(json_string_value(nm), name) != 0)) {
		snprintf(err, errlen, "field 'name': the policy names another VM (allowed: \"%s\" or no name)", name);
		return -EINVAL;
	}
	pthread_mutex_lock(&p->lock);
	vm = find_vm_or_err_locked(p, name, err, errlen);
	if (!vm) {
		pthread_mutex_unlock(&p->lock);
		return -ENOENT;
	}
	/* Keys not given keep their current values: the new policy is the old one updated. */
	cur = policy_vm_to_json(vm_policy(vm));
	merged = cur ? json_loads(cur, 0, NULL) : NULL;
	if (!merged || json_object_update_recursive(merged, (json_t *)policy) < 0 ||
	    !(text = json_dumps(merged, JSON_INDENT(1)))) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	r = policy_vm_parse(text, strlen(text), "vm.policy.set", &pol, &perr);
	if (r < 0) {
		snprintf(err, errlen, "%s", perr.msg);
		goto out;
	}
	if (pol.local_memory != vm_local_memory(vm)) {
		r = set_limit_locked(p, vm, pol.local_memory, err, errlen);
		if (r < 0)
			goto out;
	}
	r = vm_set_policy(vm, &pol, err, errlen);
	if (r == 0) {
		vm_log_info(name, "policy replaced at run time");
		balloon_update_locked(p, find_client_locked(p, name), BALLOON_LIMIT);
	}
out:
	pthread_mutex_unlock(&p->lock);
	json_decref(merged);
	free(text);
	free(cur);
	return r;
}
