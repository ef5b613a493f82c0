/* SPDX-License-Identifier: MIT */
/*
 * Registration server and VM registry. Everything a shim sends is hostile
 * until checked: the peer's uid (SO_PEERCRED), each message's size, type
 * and version, the kind of every passed fd (a userfaultfd, a memfd), and
 * the region against the memfd's real size. Extra fds are closed, never
 * kept. A client that misbehaves gets an error reply and is dropped; the
 * daemon goes on serving everyone else.
 *
 * Above the VMs, the donor pool and the event bus, below the operations
 * API (ops.c) and the control server: it calls neither. ops.c reaches the
 * VMs only through the registry_*_locked accessors at the end of this file.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/queue.h>
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
#include "donors.h"
#include "events.h"
#include "glue-proto.h"
#include "log.h"
#include "registry.h"
#include "share.h"
#include "spill.h"
#include "store.h"
#include "util.h"
#include "vm.h"
#include "vmstate.h"

#define MAX_CLIENTS 256
#define HELLO_TIMEOUT_NS (10ULL * 1000000000ULL)
#define MAX_FDS_PER_MSG 4

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; older libc headers lack it */
#endif

enum tag_kind { TAG_LISTEN, TAG_SIGNAL, TAG_CLIENT, TAG_PIDFD };

struct client {
	int fd;
	pid_t pid;
	uid_t uid;
	int pidfd;           /* the connecting process (SO_PEERPIDFD), -1 until HELLO on kernels without it */
	uint64_t accepted_boot_ns; /* CLOCK_BOOTTIME at accept: a process started later is not the peer */
	struct vm *vm;
	struct epoll_tag { enum tag_kind kind; struct client *c; } tag, pid_tag;
	LIST_ENTRY(client) link;
	uint64_t accepted_ns; /* a stranger that never says HELLO is dropped after HELLO_TIMEOUT_NS */
	bool attached_event; /* vm.attached sent (first region): vm.detached pairs with it */
	bool adopted_event;  /* vm.adopted sent (last region of a resumed VM) */
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
	LIST_HEAD(, client) clients;
	unsigned nclients;
	uint64_t committed; /* sum of local_memory of registered VMs */
	uint64_t vms_registered, vms_refused, vms_exited;
	struct donor_pool *pool; /* shared by every VM */
	_Atomic bool stopping;   /* set when pager_run returns: waits of the operations give up */
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

static void send_reply(struct client *c, struct glue_msg_reply *r)
{
	glue_header_init(&r->hdr, GLUE_MSG_REPLY, sizeof(*r));
	/* MSG_DONTWAIT: a client that does not read must not stall the daemon. */
	if (send(c->fd, r, sizeof(*r), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("reply to pid %d lost: %s", (int)c->pid, strerror(errno));
	explicit_bzero(r->secret, sizeof(r->secret));
}

static void reply(struct client *c, enum glue_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply(struct client *c, enum glue_status st, const char *fmt, ...)
{
	struct glue_msg_reply r = { .status = st };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r.text, sizeof(r.text), fmt, ap);
	va_end(ap);
	send_reply(c, &r);
}

/* HELLO accepted: the shim keeps the VM's secret to resume with under a later pager. */
static void reply_registered(struct client *c, const uint8_t *secret, bool resumed, const char *name)
{
	struct glue_msg_reply r = { .status = GLUE_OK };

	snprintf(r.text, sizeof(r.text), "%s as %.63s", resumed ? "resumed" : "registered", name);
	memcpy(r.secret, secret, sizeof(r.secret));
	send_reply(c, &r);
}

static struct client *find_client_locked(struct pager *p, const char *name)
{
	struct client *c;

	LIST_FOREACH(c, &p->clients, link)
		if (c->vm && strcmp(vm_name(c->vm), name) == 0)
			return c;
	return NULL;
}

static struct vm *find_vm_locked(struct pager *p, const char *name)
{
	struct client *c = find_client_locked(p, name);

	return c ? c->vm : NULL;
}

static struct client *client_of_vm_locked(struct pager *p, struct vm *vm)
{
	struct client *c;

	LIST_FOREACH(c, &p->clients, link)
		if (c->vm == vm)
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
static void balloon_target_locked(struct pager *p, struct client *c, enum policy_balloon_why why, uint64_t limit)
{
	struct balloon *b = &c->balloon;
	const struct policy_vm *pol = vm_policy(c->vm);
	uint64_t guest = vm_guest_bytes(c->vm), want = 0;

	if (!guest)
		return; /* no RAM registered yet: attach will ask */
	/* Turned off while inflated: the target is 0, the guest gets its memory back. */
	if (!pol->balloon_enabled && (!b->asked || !b->inflated))
		return;
	want = policy_balloon_target(pol, guest, limit, why);
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

static void balloon_update_locked(struct pager *p, struct client *c, enum policy_balloon_why why)
{
	balloon_target_locked(p, c, why, vm_local_memory(c->vm));
}

/* Ends settle windows whose time is up. Main loop, about once a second. */
static void balloon_tick(struct pager *p)
{
	uint64_t now = now_ns();
	struct client *c;

	pthread_mutex_lock(&p->lock);
	LIST_FOREACH(c, &p->clients, link) {
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

/*
 * The registration ended. The VM's files and slabs go with it, except when
 * the pager stops (the VM lives on: the next pager adopts it) or when an
 * adoption did not finish (a later attempt needs the dead pager's state).
 */
static void client_drop(struct pager *p, struct client *c, const char *why)
{
	struct vm *vm;
	bool keep;

	pthread_mutex_lock(&p->lock);
	LIST_REMOVE(c, link);
	p->nclients--;
	vm = c->vm;
	if (vm) {
		p->committed -= vm_local_memory(vm);
		p->vms_exited++;
	}
	c->vm = NULL;
	pthread_mutex_unlock(&p->lock);

	if (vm) {
		keep = atomic_load(&p->stopping) || vm_adoption_pending(vm);
		vm_log_info(vm_name(vm), "%s; %s", why,
			    keep ? "keeping its state, spill file and donor slabs for the next pager"
				 : "freeing its pages and spill file");
		if (c->attached_event)
			events_emit("vm.detached", json_pack("{s:s, s:i, s:s}", "vm", vm_name(vm), "pid", (int)c->pid,
							     "reason", why));
		if (keep)
			vm_detach(vm);
		else
			vm_free(vm);
	}
	epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->pidfd >= 0)
		close(c->pidfd);
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

/*
 * The fault thread polls the uffd, and the kernel answers POLLERR on a
 * blocking one (a read could block) and on one whose UFFDIO_API handshake
 * was never done. The flag lives on the open file the client shares with
 * us; the shim never reads its copy, so setting it here is harmless.
 * Returns 0 or -errno with *err saying why.
 */
static int uffd_make_nonblocking(int uffd, char *err, size_t errlen)
{
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	int fl = fcntl(uffd, F_GETFL);

	if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(uffd, F_SETFL, fl | O_NONBLOCK) < 0)) {
		int r = -errno;

		snprintf(err, errlen, "cannot make the userfaultfd non-blocking: %s", strerror(-r));
		return r;
	}
	if (!(fl & O_NONBLOCK))
		log_debug("registration from a uffd without O_NONBLOCK: set it");
	if (poll(&pfd, 1, 0) < 0 || (pfd.revents & (POLLERR | POLLNVAL))) {
		snprintf(err, errlen, "the userfaultfd is not usable (poll: %s): was its UFFDIO_API handshake done?",
			 pfd.revents & POLLERR ? "POLLERR" : strerror(errno));
		return -EINVAL;
	}
	return 0;
}

static uint64_t boottime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int pidfd_alive(int pidfd)
{
	return syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0 ? -errno : 0;
}

/*
 * A pidfd that names the process that connected, not whoever holds its pid
 * now: the pid from SO_PEERCRED may have been recycled by HELLO time, and
 * the pidfd is what the pager signals (on_data_loss) and watches for the
 * exit. SO_PEERPIDFD (taken at accept) names the peer itself. Without it,
 * pidfd_open() and then proof that the process it opened already ran when
 * the connection was accepted (its start time) and still runs (so /proc
 * named the same process); start times count in clock ticks, so a pid
 * recycled within the tick of the accept would pass, which SO_PEERPIDFD
 * rules out. Returns the pidfd or -errno, *err saying why.
 */
static int client_pidfd(struct client *c, char *err, size_t errlen)
{
	uint64_t started = 0;
	int pidfd, r;

	if (c->pidfd >= 0) {
		if (pidfd_alive(c->pidfd) < 0) {
			snprintf(err, errlen, "the process that connected (pid %d) has exited", (int)c->pid);
			return -ESRCH;
		}
		pidfd = c->pidfd;
		c->pidfd = -1;
		return pidfd;
	}
	pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
	if (pidfd < 0) {
		r = -errno;
		snprintf(err, errlen, "pidfd_open(%d): %s", (int)c->pid, strerror(-r));
		return r;
	}
	r = vmstate_pid_start(c->pid, &started);
	if (r == 0 && (r = pidfd_alive(pidfd)) == 0 && started > c->accepted_boot_ns)
		r = -ESRCH;
	if (r < 0) {
		close(pidfd);
		snprintf(err, errlen, "the process that connected (pid %d) has exited%s", (int)c->pid,
			 r == -ESRCH ? " (its pid now names another process)" : "");
		return -ESRCH;
	}
	return pidfd;
}

/*
 * Guest RAM already registered by uid's VMs, plus more: over the pager's
 * max_guest_memory_per_uid, *err says so. Main thread (the only one that
 * adds regions). Returns 0 or -EDQUOT.
 */
static int uid_quota_check(struct pager *p, uid_t uid, uint64_t more, char *err, size_t errlen)
{
	uint64_t sum = more;
	struct client *c;
	char a[32], b[32], d[32];

	pthread_mutex_lock(&p->lock);
	LIST_FOREACH(c, &p->clients, link)
		if (c->vm && c->uid == uid && __builtin_add_overflow(sum, vm_guest_bytes(c->vm), &sum))
			sum = UINT64_MAX;
	pthread_mutex_unlock(&p->lock);
	if (!p->cfg.max_guest_memory_per_uid || sum <= p->cfg.max_guest_memory_per_uid)
		return 0;
	snprintf(err, errlen, "a region of %s would bring uid %u to %s of guest memory, over the pager's "
		 "max_guest_memory_per_uid %s", format_size(more, a, sizeof(a)), (unsigned)uid,
		 format_size(sum, b, sizeof(b)), format_size(p->cfg.max_guest_memory_per_uid, d, sizeof(d)));
	return -EDQUOT;
}

/*
 * Eviction ends in a hole punch: a memfd that refuses it (write seals; a
 * hugetlbfs memfd, punched only in whole huge pages) would keep every page
 * while the map called it stored. Returns 0 or -EINVAL with *err saying why.
 */
static int memfd_punchable(int fd, char *err, size_t errlen)
{
	struct statfs sf;
	int seals;

	if (fstatfs(fd, &sf) == 0 && sf.f_type == HUGETLBFS_MAGIC) {
		snprintf(err, errlen, "the memfd is on hugetlbfs: its pages cannot be paged out 4 KiB at a time "
			 "(back guest RAM with an ordinary memfd)");
		return -EINVAL;
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (seals > 0 && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))) {
		snprintf(err, errlen, "the memfd is sealed against writes (F_SEAL_%s): the pager could not punch "
			 "out the pages it pages out", seals & F_SEAL_WRITE ? "WRITE" : "FUTURE_WRITE");
		return -EINVAL;
	}
	return 0;
}

/* Gives back what handle_hello reserved for a VM that did not come to be. */
static void unreserve(struct pager *p, uint64_t local_memory)
{
	pthread_mutex_lock(&p->lock);
	p->committed -= local_memory;
	p->vms_refused++;
	pthread_mutex_unlock(&p->lock);
}

/*
 * A resumed VM: the state file the dead pager left for this name and pid,
 * checked (format, the process's start time, then the secret), and the
 * policy as last changed at run time, which replaces the launch policy
 * in *pol. Returns 0 or -errno with err; the file is kept either way.
 */
static int resume_state(struct pager *p, struct client *c, const struct glue_msg_hello *h, struct policy_vm *pol,
			struct vmstate **ret, char *err, size_t errlen)
{
	static char text[GLUE_POLICY_MAX + 1]; /* main thread only */
	struct policy_error perr;
	struct policy_vm saved;
	struct vmstate *vs;
	uint64_t started;
	int r, n;

	if ((r = vmstate_pid_start(c->pid, &started)) < 0) {
		snprintf(err, errlen, "cannot read the start time of pid %d: %s", (int)c->pid, strerror(-r));
		return r;
	}
	r = vmstate_open(p->cfg.state_dir, h->name, c->pid, started, store_state_bytes(), &vs, err, errlen);
	if (r < 0)
		return r;
	if (!vmstate_secret_matches(vs, h->secret)) {
		snprintf(err, errlen, "the secret does not match the one in %s: not the VM that registered", vs->path);
		vmstate_close(vs, true);
		return -EPERM;
	}
	n = vmstate_load_policy(vs, text, sizeof(text));
	if (n >= 0 && policy_vm_parse(text, (size_t)n, "policy saved in the state file", &saved, &perr) == 0) {
		snprintf(saved.name, sizeof(saved.name), "%s", pol->name);
		*pol = saved;
	} else if (n != -ENOENT) {
		vm_log_warn(h->name, "the policy saved in %s cannot be read (%s): going on with the launch policy",
			    vs->path, n < 0 ? strerror(-n) : perr.msg);
	}
	*ret = vs;
	return 0;
}

/* *fd is the message's fd: taken when the VM takes it, else the caller closes it. */
static void handle_hello(struct pager *p, struct client *c, const struct glue_msg_hello *h, int *fd)
{
	const char *name = h->name; /* NUL-terminated: glue_msg_check */
	struct policy_vm pol;
	struct policy_error perr;
	struct vm *vm;
	char err[1024], src[96];
	int pidfd, r;

	if (c->vm) {
		reply(c, GLUE_INVALID, "HELLO sent twice");
		return;
	}
	if (!fd_link_has_prefix(*fd, "anon_inode:[userfaultfd]")) {
		reply(c, GLUE_INVALID, "HELLO must carry exactly one userfaultfd, not another kind of fd");
		return;
	}
	if (uffd_make_nonblocking(*fd, err, sizeof(err)) < 0) {
		reply(c, GLUE_INVALID, "%s", err);
		return;
	}
	if (!policy_name_valid(name)) {
		reply(c, GLUE_INVALID, "VM name must be 1-63 characters of [A-Za-z0-9._-], not . or ..");
		return;
	}
	if (!uuid_valid(h->uuid)) { /* NUL-terminated: glue_msg_check */
		reply(c, GLUE_INVALID, "VM UUID must be empty or 36 characters like "
				       "12345678-9abc-def0-1234-56789abcdef0");
		return;
	}
	if (!h->policy_len) {
		reply(c, GLUE_REFUSED, "no policy: start the VM with uffd-qemu --policy FILE");
		return;
	}
	snprintf(src, sizeof(src), "policy of vm %s", name);
	if (policy_vm_parse((const char *)(h + 1), h->policy_len, src, &pol, &perr) < 0) {
		reply(c, GLUE_REFUSED, "%s", perr.msg);
		return;
	}
	/* The name the launcher chose (--name) wins over the policy's. */
	snprintf(pol.name, sizeof(pol.name), "%s", name);
	bool resume = h->flags & GLUE_HELLO_RESUME;
	struct vmstate *vs = NULL;
	if (resume && resume_state(p, c, h, &pol, &vs, err, sizeof(err)) < 0) {
		log_warn("vm %s (pid %d) asks to be adopted, refused: %s", name, (int)c->pid, err);
		reply(c, GLUE_REFUSED, "%s", err);
		return;
	}
	if (resume && vs->hdr->nregions == 0) {
		/* The dead pager never took a region: nothing was served, so nothing is owed. Start afresh. */
		vm_log_info(name, "resumed before its first region was taken: registering it afresh");
		vmstate_close(vs, false);
		vs = NULL;
		resume = false;
	}

	/*
	 * The guest's size is not known before its first REGION, but no guest
	 * may exceed max_guest_memory: a larger limit could never be used, and
	 * an unbounded one made the committed sum wrap past the budget.
	 */
	if (pol.local_memory > p->cfg.max_guest_memory) {
		char a[32], b[32];

		pthread_mutex_lock(&p->lock);
		p->vms_refused++;
		pthread_mutex_unlock(&p->lock);
		reply(c, GLUE_REFUSED, "local_memory %s is more than the pager's max_guest_memory %s",
		      format_size(pol.local_memory, a, sizeof(a)), format_size(p->cfg.max_guest_memory, b, sizeof(b)));
		log_warn("vm %s refused: local_memory %s over max_guest_memory %s", name, a, b);
		vmstate_close(vs, true);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (find_vm_locked(p, name)) {
		pthread_mutex_unlock(&p->lock);
		p->vms_refused++;
		reply(c, GLUE_REFUSED, "a VM named '%s' is already registered", name);
		vmstate_close(vs, true);
		return;
	}
	uint64_t committed;
	bool overflow = __builtin_add_overflow(p->committed, pol.local_memory, &committed);
	if (overflow || (p->cfg.budget && committed > p->cfg.budget)) {
		char a[32], b[32], d[32];
		const uint64_t had = p->committed;

		p->vms_refused++;
		pthread_mutex_unlock(&p->lock);
		format_size(pol.local_memory, a, sizeof(a));
		format_size(had, b, sizeof(b));
		if (p->cfg.budget)
			reply(c, GLUE_REFUSED, "local_memory %s does not fit the host budget: %s of %s already committed",
			      a, b, format_size(p->cfg.budget, d, sizeof(d)));
		else
			reply(c, GLUE_REFUSED, "local_memory %s does not fit: %s already committed", a, b);
		log_warn("vm %s refused: local_memory %s over the budget", name, a);
		vmstate_close(vs, true);
		return;
	}
	p->committed = committed; /* reserved now so two HELLOs cannot both fit */
	pthread_mutex_unlock(&p->lock);

	pidfd = client_pidfd(c, err, sizeof(err));
	if (pidfd < 0) {
		reply(c, GLUE_REFUSED, "%s", err);
		unreserve(p, pol.local_memory);
		vmstate_close(vs, true);
		return;
	}
	if (!resume) {
		uint64_t started = 0;
		r = vmstate_pid_start(c->pid, &started);
		if (r == 0)
			r = vmstate_create(p->cfg.state_dir, name, c->pid, started, h->uuid, store_state_bytes(), &vs);
		if (r < 0) {
			reply(c, GLUE_REFUSED, "cannot create the state file in %s: %s", p->cfg.state_dir, strerror(-r));
			unreserve(p, pol.local_memory);
			close(pidfd);
			return;
		}
	}
	/* vm_new owns the fds and the state file now, also on failure. */
	r = vm_new(&pol, c->pid, pidfd, TAKE_FD(*fd), p->cfg.state_dir, p->cfg.max_guest_memory, p->pool, vs, resume,
		   &vm, err, sizeof(err));
	if (r < 0) {
		if (resume)
			log_warn("vm %s (pid %d) cannot be adopted: %s", name, (int)c->pid, err);
		reply(c, GLUE_REFUSED, "%s", err);
		unreserve(p, pol.local_memory);
		return;
	}
	vm_set_uuid(vm, h->uuid);
	if (resume)
		vm_set_waited(vm, h->waited_ms);
	pthread_mutex_lock(&p->lock);
	c->vm = vm;
	p->vms_registered++;
	pthread_mutex_unlock(&p->lock);

	c->pid_tag = (struct epoll_tag){ .kind = TAG_PIDFD, .c = c };
	/* The pidfd turns readable when the process exits, even if its socket lingers in a child. */
	epoll_ctl(p->epfd, EPOLL_CTL_ADD, pidfd,
		  &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &c->pid_tag });
	reply_registered(c, vm_secret(vm), resume, name);
}

/* *fd as for handle_hello. */
static void handle_region(struct pager *p, struct client *c, const struct glue_msg_region *m, int *fd)
{
	char err[256];

	if (!c->vm) {
		reply(c, GLUE_INVALID, "REGION before HELLO");
		return;
	}
	if (!fd_is_memfd(*fd)) {
		reply(c, GLUE_INVALID, "REGION must carry exactly one memfd, not another kind of fd");
		return;
	}
	if (memfd_punchable(*fd, err, sizeof(err)) < 0 ||
	    uid_quota_check(p, c->uid, m->length, err, sizeof(err)) < 0) {
		vm_log_warn(vm_name(c->vm), "region refused: %s", err);
		reply(c, GLUE_INVALID, "%s", err);
		return;
	}
	/* vm_add_region runs without the registry lock: only this thread adds regions or frees VMs. */
	if (vm_add_region(c->vm, TAKE_FD(*fd), m->host_addr, m->length, m->memfd_offset, err, sizeof(err)) < 0) {
		reply(c, GLUE_INVALID, "%s", err);
		return;
	}
	reply(c, GLUE_OK, "region registered");
	uint32_t waited_ms;
	uint64_t recover_ns;
	if (!c->adopted_event && vm_adopted(c->vm, &waited_ms, &recover_ns)) {
		c->adopted_event = true;
		c->attached_event = true; /* attached long ago, under the pager that died */
		pthread_mutex_lock(&p->lock);
		balloon_update_locked(p, c, POLICY_BALLOON_LIMIT);
		pthread_mutex_unlock(&p->lock);
		vm_log_info(vm_name(c->vm), "adopted after %u ms without a pager (recovery %.1f ms)", waited_ms,
			    (double)recover_ns / 1e6);
		events_emit("vm.adopted", json_pack("{s:s, s:s, s:i, s:i, s:f, s:I}", "vm", vm_name(c->vm), "uuid",
						    vm_uuid(c->vm), "pid", (int)c->pid, "waited_ms", (int)waited_ms,
						    "recover_ms", (double)recover_ns / 1e6, "guest_memory",
						    (json_int_t)vm_guest_bytes(c->vm)));
	}
	/* Attached = paging began: the first region gives the guest's size. */
	if (!c->attached_event && !vm_adoption_pending(c->vm)) {
		c->attached_event = true;
		pthread_mutex_lock(&p->lock);
		/* The limit meets the guest's size for the first time. */
		balloon_update_locked(p, c, POLICY_BALLOON_LIMIT);
		pthread_mutex_unlock(&p->lock);
		events_emit("vm.attached", json_pack("{s:s, s:s, s:i, s:I, s:I}", "vm", vm_name(c->vm), "uuid",
						     vm_uuid(c->vm), "pid", (int)c->pid, "guest_memory",
						     (json_int_t)vm_guest_bytes(c->vm), "local_memory",
						     (json_int_t)vm_local_memory(c->vm)));
	}
}

/* Returns false when the client must be dropped. */
static bool client_read(struct pager *p, struct client *c)
{
	static _Alignas(8) char buf[sizeof(struct glue_msg_hello) + GLUE_POLICY_MAX + 64];
	char cbuf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_MSG)];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	int fds[MAX_FDS_PER_MSG * 2], nfds = 0;
	_cleanup_close_ int fd = -1; /* the message's one fd, unless a handler takes it */
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
	/* Below, a registered VM keeps running on a garbled follow-up; a stranger is dropped. */
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		reply(c, GLUE_INVALID, "malformed message: longer than %zu bytes, or too many fds", sizeof(buf));
		return c->vm != NULL;
	}
	switch (glue_msg_check(buf, (size_t)n, (unsigned)nfds, why, sizeof(why))) {
	case GLUE_MSG_HELLO:
		handle_hello(p, c, (const void *)buf, &fd);
		return c->vm != NULL;
	case GLUE_MSG_REGION:
		handle_region(p, c, (const void *)buf, &fd);
		return true;
	case GLUE_MSG_SAMPLER:
		/* No reply: the shim sends it between exchanges. A stranger's is dropped with it. */
		if (!c->vm)
			return false;
		vm_set_sampler(c->vm, fd);
		fd = -1;
		return true;
	case GLUE_MSG_REPLY:
		reply(c, GLUE_INVALID, "REPLY is the pager's to send");
		return c->vm != NULL;
	default:
		reply(c, GLUE_INVALID, "%s", why);
		return c->vm != NULL;
	}
}

static void accept_client(struct pager *p)
{
	_cleanup_close_ int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	struct client *c;

	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
		return;
	bool allowed = cred.uid == 0;
	for (unsigned i = 0; i < p->cfg.n_allowed_uids; i++)
		allowed |= cred.uid == p->cfg.allowed_uids[i];
	if (!allowed || p->nclients >= MAX_CLIENTS) {
		log_warn("registration from pid %d uid %u refused: %s", (int)cred.pid, (unsigned)cred.uid,
			 allowed ? "too many clients" : "uid not allowed (pager config 'allowed_uids')");
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->fd = TAKE_FD(fd);
	c->accepted_ns = now_ns();
	c->accepted_boot_ns = boottime_ns();
	/* ENOPROTOOPT/EINVAL: a kernel before 6.5; client_pidfd() verifies a pidfd_open() instead. */
	socklen_t pl = sizeof(c->pidfd);
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERPIDFD, &c->pidfd, &pl) < 0)
		c->pidfd = -1;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->tag = (struct epoll_tag){ .kind = TAG_CLIENT, .c = c };
	pthread_mutex_lock(&p->lock);
	LIST_INSERT_HEAD(&p->clients, c, link);
	p->nclients++;
	pthread_mutex_unlock(&p->lock);
	epoll_ctl(p->epfd, EPOLL_CTL_ADD, c->fd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &c->tag });
}

/*
 * The state dir holds spill files, i.e. guest memory. One that another
 * user owns is refused (its owner could read or swap our files); one of
 * ours that group or others may enter is tightened to 0700, with a
 * warning, so that a directory made by `mkdir -p` keeps working. A symlink
 * is refused: its target could be changed under us. Returns 0 or -errno
 * (logged, naming the path and its mode).
 */
static int state_dir_secure(const char *dir)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;

	if (fd < 0 && errno == ELOOP)
		return log_err_errno(-ELOOP, "state directory %s is a symbolic link: give the real directory", dir);
	if (fd < 0 || fstat(fd, &st) < 0)
		return log_err_errno(-errno, "state directory %s", dir);
	if (st.st_uid != geteuid()) {
		log_err("state directory %s (mode %04o) is owned by uid %u, not by uid %u that runs uffd-pager: "
			"it holds guest memory; give it to uid %u with mode 0700, or choose another",
			dir, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)geteuid(), (unsigned)geteuid());
		return -EPERM;
	}
	if (st.st_mode & 077) {
		if (fchmod(fd, st.st_mode & 07700) < 0)
			return log_err_errno(-errno, "state directory %s has mode %04o (group/others have access) and cannot be tightened",
					     dir, (unsigned)(st.st_mode & 07777));
		log_warn("state directory %s had mode %04o: group and others had access to guest memory; now %04o",
			 dir, (unsigned)(st.st_mode & 07777), (unsigned)(st.st_mode & 07700));
	}
	return 0;
}

static void release_orphan_slabs(const void *store_area, size_t bytes, void *opaque)
{
	unsigned n = store_release_orphan(opaque, store_area, bytes);

	if (n)
		log_info("a VM that ended while no pager ran: gave its %u slabs back to their donors", n);
}

static void pager_freep(struct pager **p)
{
	pager_free(*p);
}

int pager_new(const struct policy_pager_config *cfg, struct pager **ret)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_(pager_freep) struct pager *p = NULL;
	sigset_t mask;
	char err[256];
	int r;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	p->listen_fd = p->epfd = p->sigfd = -1;
	LIST_INIT(&p->clients);
	pthread_mutex_init(&p->lock, NULL);

	if ((r = mkdir_p(cfg->state_dir, 0700)) < 0)
		return log_err_errno(r, "cannot create state directory %s", cfg->state_dir);
	if ((r = state_dir_secure(cfg->state_dir)) < 0)
		return r;
	if ((r = policy_check_state_dir_fstype(cfg->state_dir, err, sizeof(err))) < 0) {
		log_err("%s", err);
		return r;
	}
	mkdir_parent(cfg->socket_path);
	if (strlen(cfg->socket_path) >= sizeof(sa.sun_path))
		return log_err_errno(-ENAMETOOLONG, "socket path %s is too long", cfg->socket_path);
	strcpy(sa.sun_path, cfg->socket_path);
	p->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	unlink(cfg->socket_path);
	if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(p->listen_fd, 64) < 0)
		return log_err_errno(-errno, "cannot listen on %s", cfg->socket_path);
	/* Who may connect is checked with SO_PEERCRED; the mode only keeps strangers from trying. */
	chmod(cfg->socket_path, cfg->n_allowed_uids ? 0666 : 0600);

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	p->sigfd = signalfd(-1, &mask, SFD_CLOEXEC);
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (p->sigfd < 0 || p->epfd < 0)
		return log_err_errno(-errno, "signalfd/epoll");
	p->listen_tag.kind = TAG_LISTEN;
	p->signal_tag.kind = TAG_SIGNAL;
	epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->listen_fd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &p->listen_tag });
	epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->sigfd, &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &p->signal_tag });

	/* After signals are blocked: the donor threads must not take SIGTERM. */
	r = donor_pool_new(cfg, &p->pool);
	if (r < 0)
		return log_err_errno(r, "cannot set up donors");
	/* With the donors up: a VM that ended while no pager ran gives its slabs back. */
	r = vmstate_remove_stale(cfg->state_dir, release_orphan_slabs, p->pool);
	if (r < 0)
		return log_err_errno(r, "cannot read state directory %s", cfg->state_dir);
	/* Then groups whose members all ended (their VMs' files just went). */
	if ((r = share_remove_stale(cfg->state_dir, p->pool)) < 0)
		log_warn("cannot read %s/groups: %s", cfg->state_dir, strerror(-r));
	*ret = TAKE_PTR(p);
	return 0;
}

static void drop_silent_clients(struct pager *p)
{
	uint64_t now = now_ns();
	struct client *c, *next;

	/* Only this thread adds or drops clients, so walking without the lock is safe. */
	for (c = LIST_FIRST(&p->clients); c; c = next) {
		next = LIST_NEXT(c, link);
		if (!c->vm && now - c->accepted_ns > HELLO_TIMEOUT_NS) {
			log_warn("registration from pid %d: no HELLO within %llu s, dropped", (int)c->pid,
				 HELLO_TIMEOUT_NS / 1000000000ULL);
			client_drop(p, c, "never registered");
		}
	}
}

/* Handles one epoll_wait() round. Returns true when a signal asks the daemon to stop. */
static bool dispatch(struct pager *p, const struct epoll_event *ev, int n)
{
	for (int i = 0; i < n; i++) {
		struct epoll_tag *t = ev[i].data.ptr;

		switch (t->kind) {
		case TAG_LISTEN:
			accept_client(p);
			break;
		case TAG_SIGNAL:
			log_info("shutting down");
			return true;
		case TAG_CLIENT:
			if ((ev[i].events & EPOLLIN) && client_read(p, t->c))
				break;
			if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				client_drop(p, t->c, "process exited or closed its registration");
				return false; /* later events of this round may name the freed client */
			}
			break;
		case TAG_PIDFD:
			client_drop(p, t->c, "process exited");
			return false;
		}
	}
	return false;
}

int pager_run(struct pager *p)
{
	char sz[32];
	int r = 0;

	log_info("uffd-pager %s: registration %s, control %s, state %s, budget %s", UFFDVM_VERSION, p->cfg.socket_path,
		 p->cfg.control_path, p->cfg.state_dir, p->cfg.budget ? format_size(p->cfg.budget, sz, sizeof(sz)) : "unlimited");
	for (;;) {
		struct epoll_event ev[16];
		/* Wake once a second to drop connections that never registered: they hold client slots. */
		int n = epoll_wait(p->epfd, ev, 16, 1000);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = log_err_errno(-errno, "epoll_wait");
			break;
		}
		if (dispatch(p, ev, n))
			break;
		drop_silent_clients(p);
		balloon_tick(p);
	}
	/* The control server is stopped next: its vm.drain / vm.park jobs must stop waiting. */
	atomic_store(&p->stopping, true);
	return r;
}

void pager_free(struct pager *p)
{
	if (!p)
		return;
	atomic_store(&p->stopping, true);
	while (!LIST_EMPTY(&p->clients))
		client_drop(p, LIST_FIRST(&p->clients), "pager stopping");
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

/* ---- registry.h: the registry under its lock, for the operations (ops.c) ---- */

void registry_lock(struct pager *p)
{
	pthread_mutex_lock(&p->lock);
}

void registry_unlock(struct pager *p)
{
	pthread_mutex_unlock(&p->lock);
}

struct vm *registry_find_vm_locked(struct pager *p, const char *name)
{
	return find_vm_locked(p, name);
}

void registry_foreach_vm_locked(struct pager *p, void (*fn)(struct vm *vm, void *opaque), void *opaque)
{
	struct client *c;

	LIST_FOREACH(c, &p->clients, link)
		if (c->vm)
			fn(c->vm, opaque);
}

int registry_set_limit_locked(struct pager *p, struct vm *vm, uint64_t bytes, char *err, size_t errlen)
{
	char a[32], b[32], d[32];

	uint64_t committed;
	bool overflow;

	bytes &= ~(uint64_t)(PAGE_SIZE_4K - 1);
	/* committed holds this VM's limit, so the subtraction cannot wrap; the addition can. */
	overflow = __builtin_add_overflow(p->committed - vm_local_memory(vm), bytes, &committed);
	if (overflow || (p->cfg.budget && committed > p->cfg.budget)) {
		snprintf(err, errlen, "%s does not fit the host budget of %s (%s committed)",
			 format_size(bytes, a, sizeof(a)), p->cfg.budget ? format_size(p->cfg.budget, b, sizeof(b)) : "unlimited",
			 format_size(p->committed, d, sizeof(d)));
		return -ENOSPC;
	}
	if (bytes > p->cfg.max_guest_memory) {
		snprintf(err, errlen, "%s is more than the pager's max_guest_memory %s", format_size(bytes, a, sizeof(a)),
			 format_size(p->cfg.max_guest_memory, b, sizeof(b)));
		return -EINVAL;
	}
	p->committed = committed;
	/* Before the limit takes effect: a settle hold must be in place before the evictor wakes for it. */
	balloon_target_locked(p, client_of_vm_locked(p, vm), POLICY_BALLOON_LIMIT, bytes);
	vm_set_local_memory(vm, bytes);
	return 0;
}

void registry_balloon_update_locked(struct pager *p, struct vm *vm, enum policy_balloon_why why)
{
	balloon_update_locked(p, client_of_vm_locked(p, vm), why);
}

json_t *registry_balloon_json_locked(struct pager *p, struct vm *vm)
{
	return balloon_json_locked(client_of_vm_locked(p, vm));
}

json_t *registry_stats_json(struct pager *p)
{
	unsigned vms = 0;
	struct client *c;
	json_t *o;

	pthread_mutex_lock(&p->lock);
	LIST_FOREACH(c, &p->clients, link)
		vms += c->vm != NULL;
	o = json_pack("{s:s, s:I, s:I, s:i, s:I, s:I, s:I, s:s}", "version", UFFDVM_VERSION, "budget",
		      (json_int_t)p->cfg.budget, "committed", (json_int_t)p->committed, "vms", (int)vms,
		      "vms_registered", (json_int_t)p->vms_registered, "vms_refused", (json_int_t)p->vms_refused,
		      "vms_exited", (json_int_t)p->vms_exited, "state_dir", p->cfg.state_dir);
	pthread_mutex_unlock(&p->lock);
	return o;
}

struct donor_pool *registry_donor_pool(struct pager *p)
{
	return p->pool;
}

bool registry_stopping(struct pager *p)
{
	return atomic_load(&p->stopping);
}
