/* SPDX-License-Identifier: MIT */
/*
 * libuffd-glue.so: preloaded into an unmodified qemu-system (or guestsim) by
 * uffd-qemu. It watches the process map guest RAM, and for every shared
 * memfd mapping of RAM size it registers the range with a userfaultfd
 * created here - a uffd only traps faults of the mm that created it - and
 * hands uffd and memfd to uffd-pager over its registration socket. From
 * then on the pager serves every first touch and every refault of that RAM.
 *
 * The shim keeps its own uffd descriptor, a duplicate of every memfd it
 * registered and the registration connection for the life of the
 * process: when the last reference to a uffd goes, the kernel fills
 * faults on punched pages with zeros, so the shim never closes it. A
 * thread watches the connection; when the pager goes away it connects
 * again and re-registers the same uffd and regions as a resumed VM (with
 * the secret the first pager gave it), and the new pager adopts the VM.
 * Meanwhile faulting vCPUs wait in the kernel; the others run.
 *
 * Without UFFD_GLUE_SOCKET in the environment the shim does nothing, so a
 * preload leaking into a child process is harmless.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "glue-proto.h"
#include "util.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define GLUE_FEATURES (UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_EVENT_REMOVE)

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

#define GLUE_MAX_REGIONS 16 /* the pager's VM_MAX_REGIONS */

/* What a resume sends again; all under glue_lock. */
struct glue_region {
	void *addr;
	size_t len;
	int memfd; /* our own duplicate: QEMU may close its descriptor, a resume needs one */
	off_t off;
};

static pthread_mutex_t glue_lock = PTHREAD_MUTEX_INITIALIZER;
static int glue_sock = -1;
static int glue_uffd = -1; /* never closed once registered: see the top of this file */
static bool glue_disabled; /* run-unpaged after the pager was unreachable */
static uint8_t glue_secret[GLUE_SECRET_LEN];
static struct glue_region glue_regions[GLUE_MAX_REGIONS];
static unsigned glue_nregions;
static bool glue_watching;
static bool glue_minor;        /* guest RAM registered for minor faults too: access sampling works */
static bool glue_sampler_sent; /* this connection has its sampler socket */

static void glue_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void glue_msg(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	n = snprintf(line, sizeof(line), "uffd-glue[%d]: ", (int)getpid());
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	/* write(2), not stdio: this runs inside mmap, possibly before stdio is usable */
	if (write(STDERR_FILENO, line, strlen(line)) < 0)
		return;
}

static bool run_unpaged_allowed(void)
{
	const char *v = getenv(GLUE_ENV_UNAVAILABLE);

	return v && strcmp(v, "run-unpaged") == 0;
}

/* The pager cannot serve this process: obey the policy. Never returns when refusing. */
static void glue_unavailable(const char *why)
{
	if (run_unpaged_allowed()) {
		glue_msg("%s; running unpaged (policy 'on_pager_unavailable' is 'run-unpaged')", why);
		glue_disabled = true;
		return;
	}
	glue_msg("%s; refusing to start (policy 'on_pager_unavailable' is 'refuse')", why);
	_exit(1);
}

static uint64_t min_ram_size(void)
{
	const char *v = getenv(GLUE_ENV_MIN_SIZE);
	char *end;
	unsigned long long n;

	if (!v)
		return GLUE_DEFAULT_MIN_SIZE;
	n = strtoull(v, &end, 0);
	return *end ? GLUE_DEFAULT_MIN_SIZE : n;
}

static int uffd_create(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int dev;

	if (fd >= 0)
		return fd;
	/* Without CAP_SYS_PTRACE and with vm.unprivileged_userfaultfd=0 the
	 * syscall refuses kernel-mode faults; /dev/userfaultfd has no such limit. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -errno;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		fd = -errno;
	close(dev);
	return fd;
}

/* Creates the uffd and negotiates the features the pager relies on. Returns fd or -errno. */
static int uffd_open_negotiated(uint64_t *ret_features, char *why, size_t whylen)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int probe, fd;

	/* Ask a scratch uffd what the kernel offers: UFFDIO_API can be done once per fd. */
	probe = uffd_create();
	if (probe < 0) {
		snprintf(why, whylen, "cannot create a userfaultfd (%s; is /dev/userfaultfd accessible?)",
			 strerror(-probe));
		return probe;
	}
	if (ioctl(probe, UFFDIO_API, &api) < 0) {
		snprintf(why, whylen, "UFFDIO_API failed: %s", strerror(errno));
		close(probe);
		return -errno;
	}
	close(probe);
	if ((api.features & GLUE_FEATURES) != GLUE_FEATURES) {
		snprintf(why, whylen, "kernel lacks userfaultfd features 0x%llx (has 0x%llx)",
			 (unsigned long long)(GLUE_FEATURES & ~api.features), (unsigned long long)api.features);
		return -EOPNOTSUPP;
	}
	/* Minor faults on shmem let the pager see which pages are in use; without them it still pages. */
	const uint64_t optional = api.features & UFFD_FEATURE_MINOR_SHMEM;
	fd = uffd_create();
	if (fd < 0) {
		snprintf(why, whylen, "cannot create a userfaultfd: %s", strerror(-fd));
		return fd;
	}
	api = (struct uffdio_api){ .api = UFFD_API, .features = GLUE_FEATURES | optional };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		snprintf(why, whylen, "UFFDIO_API with features failed: %s", strerror(errno));
		close(fd);
		return -EOPNOTSUPP;
	}
	*ret_features = api.features;
	glue_minor = api.features & UFFD_FEATURE_MINOR_SHMEM;
	return fd;
}

static int send_with_fd(int sock, const void *msg, size_t len, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)len)
		return -errno ? -errno : -EIO;
	return 0;
}

/* What went wrong talking to the pager: it said no (or garbage), or it went away mid-exchange. */
enum { GLUE_REFUSED_BY_PAGER = -1, GLUE_PAGER_GONE = -2 };

/*
 * Waits for the pager's verdict on the last message (ret_secret: keep the
 * one it carries). Returns 0, GLUE_REFUSED_BY_PAGER or GLUE_PAGER_GONE
 * with why filled.
 */
static int recv_reply(int sock, uint8_t *ret_secret, char *why, size_t whylen)
{
	struct glue_msg_reply r;
	ssize_t n;

	do
		n = recv(sock, &r, sizeof(r), 0);
	while (n < 0 && errno == EINTR);
	if (n == 0 || (n < 0 && errno == ECONNRESET)) {
		snprintf(why, whylen, "uffd-pager closed the registration");
		return GLUE_PAGER_GONE;
	}
	if (n < 0 || glue_msg_check(&r, (size_t)n, 0, why, whylen) != GLUE_MSG_REPLY) {
		snprintf(why, whylen, "uffd-pager closed the registration or answered garbage");
		return -1;
	}
	if (r.status != GLUE_OK) {
		r.text[sizeof(r.text) - 1] = '\0';
		snprintf(why, whylen, "uffd-pager refused this VM: %s", r.text);
		return GLUE_REFUSED_BY_PAGER;
	}
	if (ret_secret)
		memcpy(ret_secret, r.secret, GLUE_SECRET_LEN);
	return 0;
}

static int pager_connect(char *why, size_t whylen)
{
	const char *path = getenv(GLUE_ENV_SOCKET);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sock;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(why, whylen, "socket path %s is too long", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(why, whylen, "cannot reach uffd-pager at %s: %s", path, strerror(errno));
		if (sock >= 0)
			close(sock);
		return -1;
	}
	return sock;
}

/* HELLO with the uffd; a resume says so and proves who it is with the secret. Returns 0 or -1 with why. */
static int send_hello(int sock, int uffd, uint64_t features, bool resume, uint32_t waited_ms, char *why,
		      size_t whylen)
{
	const char *name = getenv(GLUE_ENV_NAME);
	const char *policy = getenv(GLUE_ENV_POLICY);
	const char *uuid = getenv(GLUE_ENV_UUID);
	size_t policy_len = policy ? strlen(policy) : 0, len;
	struct glue_msg_hello *hello;
	int r;

	if (policy_len > GLUE_POLICY_MAX) {
		snprintf(why, whylen, "policy text is %zu bytes, more than %d", policy_len, GLUE_POLICY_MAX);
		return -1;
	}
	if (uuid && strlen(uuid) >= GLUE_UUID_MAX) {
		snprintf(why, whylen, "%s is %zu characters, a UUID has 36", GLUE_ENV_UUID, strlen(uuid));
		return -1;
	}
	len = sizeof(*hello) + policy_len;
	hello = calloc(1, len);
	if (!hello) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	*hello = (struct glue_msg_hello){
		.uffd_features = features,
		.pid = (uint32_t)getpid(),
		.policy_len = (uint32_t)policy_len,
		.flags = (resume ? GLUE_HELLO_RESUME : 0) | (glue_minor ? GLUE_HELLO_MINOR : 0),
		.waited_ms = waited_ms,
	};
	glue_header_init(&hello->hdr, GLUE_MSG_HELLO, (uint32_t)len);
	if (name)
		snprintf(hello->name, sizeof(hello->name), "%s", name);
	else
		snprintf(hello->name, sizeof(hello->name), "pid-%d", (int)getpid());
	if (uuid)
		snprintf(hello->uuid, sizeof(hello->uuid), "%s", uuid);
	if (resume)
		memcpy(hello->secret, glue_secret, GLUE_SECRET_LEN);
	if (policy_len)
		memcpy(hello + 1, policy, policy_len);
	r = send_with_fd(sock, hello, len, uffd);
	explicit_bzero(hello->secret, GLUE_SECRET_LEN);
	free(hello);
	if (r < 0) {
		snprintf(why, whylen, "sending registration failed: %s", strerror(-r));
		return -1;
	}
	return 0;
}

static int glue_connect(char *why, size_t whylen)
{
	uint64_t features = 0;
	int sock, uffd;

	sock = pager_connect(why, whylen);
	if (sock < 0)
		return -1;
	uffd = uffd_open_negotiated(&features, why, whylen);
	if (uffd < 0) {
		close(sock);
		return -1;
	}
	if (send_hello(sock, uffd, features, false, 0, why, whylen) < 0 ||
	    recv_reply(sock, glue_secret, why, whylen) < 0) {
		close(sock);
		close(uffd);
		return -1;
	}
	glue_sock = sock;
	glue_uffd = uffd;
	return 0;
}

static int send_region(int sock, const struct glue_region *g, char *why, size_t whylen)
{
	struct glue_msg_region msg = {
		.host_addr = (uint64_t)(uintptr_t)g->addr,
		.length = g->len,
		.memfd_offset = (uint64_t)g->off,
	};
	int r;

	glue_header_init(&msg.hdr, GLUE_MSG_REGION, sizeof(msg));
	r = send_with_fd(sock, &msg, sizeof(msg), g->memfd);
	if (r < 0) {
		snprintf(why, whylen, "sending region to uffd-pager failed: %s", strerror(-r));
		return r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN ? GLUE_PAGER_GONE : GLUE_REFUSED_BY_PAGER;
	}
	return recv_reply(sock, NULL, why, whylen);
}

static int glue_register_region(void *addr, size_t len, int memfd, off_t off, char *why, size_t whylen)
{
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP |
			(glue_minor ? UFFDIO_REGISTER_MODE_MINOR : 0),
	};
	const uint64_t needed = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) |
				(1ULL << _UFFDIO_WRITEPROTECT) | (1ULL << _UFFDIO_WAKE) |
				(glue_minor ? 1ULL << _UFFDIO_CONTINUE : 0);
	struct glue_region *g = &glue_regions[glue_nregions];

	if (glue_nregions >= GLUE_MAX_REGIONS) {
		snprintf(why, whylen, "more than %d guest RAM regions", GLUE_MAX_REGIONS);
		return -1;
	}
	*g = (struct glue_region){ .addr = addr, .len = len, .off = off,
				   .memfd = fcntl(memfd, F_DUPFD_CLOEXEC, 3) };
	if (g->memfd < 0) {
		snprintf(why, whylen, "cannot keep the memfd: %s", strerror(errno));
		return -1;
	}
	/* Punching 4 KiB out of a huge page that cannot be split leaves no hole. */
	madvise(addr, len, MADV_NOHUGEPAGE);
	if (ioctl(glue_uffd, UFFDIO_REGISTER, &reg) < 0) {
		snprintf(why, whylen, "UFFDIO_REGISTER of %zu bytes at %p failed: %s", len, addr, strerror(errno));
		return -1;
	}
	if ((reg.ioctls & needed) != needed) {
		snprintf(why, whylen, "the kernel does not offer copy/zeropage/writeprotect on guest RAM");
		return -1;
	}
	/* Recorded first: if the pager dies before it answers, the resume sends this region too. */
	glue_nregions++;
	return send_region(glue_sock, g, why, whylen);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* on_pager_lost from the launcher: "wait", or "stop:SECONDS" / "kill:SECONDS". */
static void pager_lost_policy(int *ret_signal, uint64_t *ret_max_wait_ms)
{
	const char *v = getenv(GLUE_ENV_PAGER_LOST);
	unsigned long secs;
	char *end;

	*ret_signal = 0;
	*ret_max_wait_ms = 0;
	if (!v || strcmp(v, "wait") == 0)
		return;
	if (strncmp(v, "stop:", 5) == 0 || strncmp(v, "kill:", 5) == 0) {
		secs = strtoul(v + 5, &end, 10);
		if (!*end && end != v + 5) {
			*ret_signal = v[0] == 's' ? SIGSTOP : SIGKILL;
			*ret_max_wait_ms = (uint64_t)secs * 1000;
			return;
		}
	}
	glue_msg("%s=%s is not wait, stop:SECONDS or kill:SECONDS; waiting for the pager", GLUE_ENV_PAGER_LOST, v);
}

/* True when [addr, addr + len) lies inside one registered region. Under glue_lock. */
static bool inside_regions(uint64_t addr, uint64_t len)
{
	for (unsigned i = 0; i < glue_nregions; i++) {
		uint64_t start = (uint64_t)(uintptr_t)glue_regions[i].addr;

		if (addr >= start && len <= glue_regions[i].len && addr - start <= glue_regions[i].len - len)
			return true;
	}
	return false;
}

/* Signals blocked: QEMU's signals are for its own threads. */
static int start_thread(void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	pthread_t t;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&t, NULL, fn, arg);
	if (r == 0)
		pthread_detach(t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -r;
}

/*
 * The sampler: drops the mappings of the ranges the pager names, so that
 * the guest's next access to them is a minor fault. madvise() waits until
 * the pager has read the REMOVE event it causes, which is why this is a
 * thread of its own and not the watcher's work: the watcher must stay free
 * to notice a dead pager. It ends with its connection.
 */
static void *glue_sample(void *arg)
{
	int sock = (int)(intptr_t)arg;
	struct glue_msg_sample m;
	char why[128];

	for (;;) {
		ssize_t n = recv(sock, &m, sizeof(m), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (glue_msg_check(&m, (size_t)n, 0, why, sizeof(why)) != GLUE_MSG_SAMPLE)
			continue; /* only the pager holds the other end; a malformed message is dropped */
		for (unsigned i = 0; i < m.count; i++) {
			pthread_mutex_lock(&glue_lock);
			bool ok = inside_regions(m.ranges[i].addr, m.ranges[i].length);
			pthread_mutex_unlock(&glue_lock);
			/* Regions are never unmapped while registered (the VM's RAM), so the range stays valid. */
			if (ok)
				madvise((void *)(uintptr_t)m.ranges[i].addr, m.ranges[i].length, MADV_DONTNEED);
		}
	}
	close(sock);
	return NULL;
}

/* Gives this connection's pager a sampler socket, once, when minor faults are registered. Under glue_lock. */
static void sampler_start(void)
{
	struct glue_msg_header h;
	int pair[2];

	if (!glue_minor || glue_sampler_sent || glue_sock < 0 || glue_nregions == 0)
		return;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return; /* no sampling: the pager evicts without access information */
	glue_header_init(&h, GLUE_MSG_SAMPLER, sizeof(h));
	if (send_with_fd(glue_sock, &h, sizeof(h), pair[1]) < 0 ||
	    start_thread(glue_sample, (void *)(intptr_t)pair[0]) < 0) {
		close(pair[0]);
		close(pair[1]);
		return;
	}
	close(pair[1]);
	glue_sampler_sent = true;
}

/* One resume attempt: HELLO with the secret, then every region again. Under glue_lock. */
static int glue_resume(uint32_t waited_ms, char *why, size_t whylen)
{
	int sock = pager_connect(why, whylen);

	if (sock < 0)
		return -1;
	/* The same secret for an adopted VM; a new one when the pager registers it afresh. */
	if (send_hello(sock, glue_uffd, 0, true, waited_ms, why, whylen) < 0 ||
	    recv_reply(sock, glue_secret, why, whylen) < 0)
		goto fail;
	for (unsigned i = 0; i < glue_nregions; i++)
		if (send_region(sock, &glue_regions[i], why, whylen) < 0)
			goto fail;
	glue_sock = sock;
	return 0;
fail:
	close(sock);
	return -1;
}

/*
 * The pager went away: try again with backoff (50 ms doubling to 1 s)
 * until a pager adopts the VM, or until on_pager_lost's max_wait has
 * passed and the VM is stopped or killed.
 */
static void pager_lost(void)
{
	uint64_t start = mono_ms(), last_log = 0, max_wait_ms;
	unsigned delay_ms = 50;
	char why[512], last_why[512] = "";
	int sig;

	pager_lost_policy(&sig, &max_wait_ms);
	glue_msg("uffd-pager went away; faulting vCPUs wait until a pager adopts this VM");
	for (;;) {
		uint64_t waited = mono_ms() - start;
		int r;

		if (sig && waited >= max_wait_ms) {
			glue_msg("no pager for %llu ms; %s the VM per policy 'on_pager_lost'",
				 (unsigned long long)waited, sig == SIGSTOP ? "stopping" : "killing");
			kill(getpid(), sig);
			start = mono_ms(); /* continued after a stop: wait again */
			continue;
		}
		pthread_mutex_lock(&glue_lock);
		r = glue_resume((uint32_t)(waited > UINT32_MAX ? UINT32_MAX : waited), why, sizeof(why));
		if (r == 0)
			sampler_start();
		pthread_mutex_unlock(&glue_lock);
		if (r == 0) {
			glue_msg("adopted by uffd-pager after %llu ms", (unsigned long long)(mono_ms() - start));
			return;
		}
		/* Say why once, and again every 30 s or when the reason changes. */
		if (strcmp(why, last_why) != 0 || mono_ms() - last_log >= 30000) {
			glue_msg("resume: %s; trying again", why);
			snprintf(last_why, sizeof(last_why), "%s", why);
			last_log = mono_ms();
		}
		usleep(delay_ms * 1000);
		delay_ms = delay_ms >= 500 ? 1000 : delay_ms * 2;
	}
}

/*
 * The watcher: waits for the pager's end of the registration to close
 * (replies are the registering thread's). Only this thread closes or
 * replaces glue_sock once it runs.
 */
static void *glue_watch(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd pfd = { .fd = glue_sock, .events = POLLRDHUP };

		if (poll(&pfd, 1, -1) < 0 || !(pfd.revents & (POLLHUP | POLLRDHUP | POLLERR)))
			continue;
		pthread_mutex_lock(&glue_lock);
		close(glue_sock);
		glue_sock = -1;
		glue_sampler_sent = false; /* the old sampler thread sees EOF and ends */
		pthread_mutex_unlock(&glue_lock);
		pager_lost();
	}
	return NULL;
}

/* Starts the watcher once. */
static void glue_start_watcher(void)
{
	if (glue_watching)
		return;
	if (start_thread(glue_watch, NULL) == 0)
		glue_watching = true;
	else
		glue_msg("cannot start the thread that watches the pager: a pager restart would stall this VM");
}

static void glue_take(void *addr, size_t len, int fd, off_t off)
{
	char why[512];

	pthread_mutex_lock(&glue_lock);
	if (glue_disabled)
		goto out;
	if (glue_uffd < 0 && glue_connect(why, sizeof(why)) < 0) {
		glue_unavailable(why);
		goto out;
	}
	/* The pager is away: the watcher brings one back first, then this region goes to it. */
	while (glue_sock < 0) {
		pthread_mutex_unlock(&glue_lock);
		usleep(50 * 1000);
		pthread_mutex_lock(&glue_lock);
	}
	int r = glue_register_region(addr, len, fd, off, why, sizeof(why));
	if (r == GLUE_PAGER_GONE) {
		/* The region is recorded: the watcher sees the hang-up and hands it to the next pager. */
		glue_msg("%s while registering a region; it goes to the next pager", why);
	} else if (r < 0) {
		/* RAM that is registered but unserved would hang the guest: never run so. */
		glue_msg("%s; refusing to run with guest RAM the pager does not serve", why);
		_exit(1);
	}
	sampler_start();
	glue_start_watcher();
out:
	pthread_mutex_unlock(&glue_lock);
}

static void *glue_mmap_common(mmap_fn real, void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	int saved_errno;
	void *p = real(addr, len, prot, flags, fd, off);

	if (p == MAP_FAILED || fd < 0 || !(flags & MAP_SHARED) || !(prot & PROT_WRITE))
		return p;
	if (!getenv(GLUE_ENV_SOCKET) || len < min_ram_size() || (len & 4095) || (off & 4095))
		return p;
	saved_errno = errno;
	if (fd_link_has_prefix(fd, "/memfd:"))
		glue_take(p, len, fd, off);
	errno = saved_errno;
	return p;
}

static mmap_fn resolve(const char *sym)
{
	mmap_fn f = (mmap_fn)dlsym(RTLD_NEXT, sym);

	if (!f) {
		glue_msg("cannot resolve %s: %s", sym, dlerror());
		_exit(1);
	}
	return f;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	static mmap_fn real;

	if (!real)
		real = resolve("mmap");
	return glue_mmap_common(real, addr, len, prot, flags, fd, off);
}

/* QEMU 7.2 maps RAM through mmap64, a separate symbol in glibc. */
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	static mmap_fn real;

	if (!real)
		real = resolve("mmap64");
	return glue_mmap_common(real, addr, len, prot, flags, fd, off);
}
