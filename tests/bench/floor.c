// SPDX-License-Identifier: MIT
/*
 * bench-floor: the physical floors a remote page fault cannot beat on this
 * host, measured with nothing of uffdvm in the way. (1) The userfaultfd round
 * trip: a child maps a shared memfd registered MISSING with a uffd it created
 * (a uffd only traps the mm that created it, as in QEMU), hands the uffd to
 * the parent over SCM_RIGHTS, and times each first touch of a page; the
 * parent reads the fault and answers with UFFDIO_COPY of 4 KiB. (2) A TCP
 * loopback round trip of a 16 B request and a 4 KiB reply between two
 * processes, the transfer a donor fetch needs. Their medians add up to the
 * floor for a donor-backed fault. Prints one JSON object on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define PAGE 4096u
#define REQ_BYTES 16u

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts the samples and prints them as a JSON member named name. */
static void print_stats(const char *name, uint64_t *s, size_t n, bool last)
{
	double sum = 0;

	qsort(s, n, sizeof(*s), cmp_u64);
	for (size_t i = 0; i < n; i++)
		sum += (double)s[i];
	printf("  \"%s\": {\"count\": %zu, \"min\": %" PRIu64 ", \"p50\": %" PRIu64 ", \"p90\": %" PRIu64
	       ", \"p99\": %" PRIu64 ", \"p999\": %" PRIu64 ", \"max\": %" PRIu64 ", \"mean\": %.0f}%s\n",
	       name, n, s[0], s[n / 2], s[n * 90 / 100], s[n * 99 / 100], s[n * 999 / 1000], s[n - 1],
	       sum / (double)n, last ? "" : ",");
}

static int full_io(int fd, void *buf, size_t len, bool rd)
{
	size_t done = 0;

	while (done < len) {
		ssize_t k = rd ? read(fd, (char *)buf + done, len - done) : write(fd, (char *)buf + done, len - done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EPIPE;
		done += (size_t)k;
	}
	return 0;
}

static int new_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);

	if (fd >= 0)
		return fd;
	/* Kernels with vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE. */
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

	if (dev < 0)
		return -errno;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	close(dev);
	return fd < 0 ? -errno : fd;
}

static int send_fd(int sock, int fd)
{
	char c = 'U';
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u = { 0 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) < 0 ? -errno : 0;
}

static int recv_fd(int sock)
{
	char c;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm;
	int fd;

	if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) <= 0)
		return -EPROTO;
	cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -EPROTO;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/*
 * The faulting side: creates and registers the uffd on its own mapping of the
 * memfd, passes it on, then touches every page once and sends the latencies
 * back over sock. Runs in the child; returns an exit code.
 */
static int uffd_child(int sock, int memfd, size_t npages)
{
	size_t len = npages * PAGE;
	uint64_t *lat = calloc(npages, sizeof(*lat));
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	struct uffdio_register reg = { 0 };
	volatile char *base;
	int uffd;

	if (!lat)
		return 3;
	base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (base == MAP_FAILED)
		return log_err_errno(-errno, "child: mmap of the memfd"), 3;
	madvise((void *)base, len, MADV_NOHUGEPAGE);
	uffd = new_uffd();
	if (uffd == -EPERM || uffd == -EACCES || uffd == -ENOENT || uffd == -ENOSYS) {
		log_err_errno(uffd, "child: userfaultfd unavailable");
		return getenv("UFFDVM_REQUIRE_ALL") && !strcmp(getenv("UFFDVM_REQUIRE_ALL"), "1") ? 3 : 77;
	}
	if (uffd < 0)
		return log_err_errno(uffd, "child: userfaultfd"), 3;
	if (ioctl(uffd, UFFDIO_API, &api) < 0)
		return log_err_errno(-errno, "child: UFFDIO_API"), 3;
	reg.range.start = (uintptr_t)base;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return log_err_errno(-errno, "child: UFFDIO_REGISTER of the memfd mapping"), 3;
	if (send_fd(sock, uffd) < 0)
		return 3;
	close(uffd);
	for (size_t i = 0; i < npages; i++) {
		uint64_t t0 = now_ns();
		char c = base[i * PAGE];

		lat[i] = now_ns() - t0;
		(void)c;
	}
	if (full_io(sock, lat, npages * sizeof(*lat), false) < 0)
		return 3;
	return 0;
}

/* The handler side: serves npages MISSING faults with UFFDIO_COPY. */
static int uffd_floor(size_t npages, size_t warmup)
{
	size_t total = npages + warmup;
	int sv[2], memfd, uffd, status;
	char *src = aligned_alloc(PAGE, PAGE);
	uint64_t *lat = calloc(total, sizeof(*lat));
	pid_t pid;

	if (!src || !lat)
		return -ENOMEM;
	for (size_t i = 0; i < PAGE; i++)
		src[i] = (char)(rand() & 0xff);
	memfd = memfd_create("bench-floor", MFD_CLOEXEC);
	if (memfd < 0)
		return log_err_errno(-errno, "memfd_create");
	if (ftruncate(memfd, (off_t)(total * PAGE)) < 0)
		return log_err_errno(-errno, "ftruncate of the memfd");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return log_err_errno(-errno, "socketpair");
	pid = fork();
	if (pid < 0)
		return log_err_errno(-errno, "fork");
	if (pid == 0) {
		close(sv[0]);
		_exit(uffd_child(sv[1], memfd, total));
	}
	close(sv[1]);
	uffd = recv_fd(sv[0]);
	if (uffd < 0) {
		waitpid(pid, &status, 0);
		if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
			return -EOPNOTSUPP;
		return log_err_errno(uffd, "no uffd from the faulting process (exit status %d)", WEXITSTATUS(status));
	}
	for (size_t served = 0; served < total;) {
		struct uffd_msg msg;
		struct uffdio_copy copy = { 0 };
		ssize_t k = read(uffd, &msg, sizeof(msg));

		if (k < 0 && errno == EINTR)
			continue;
		if (k != sizeof(msg))
			return log_err_errno(k < 0 ? -errno : -EIO, "read from the uffd");
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		copy.dst = msg.arg.pagefault.address & ~(uint64_t)(PAGE - 1);
		copy.src = (uintptr_t)src;
		copy.len = PAGE;
		if (ioctl(uffd, UFFDIO_COPY, &copy) < 0 && errno != EEXIST)
			return log_err_errno(-errno, "UFFDIO_COPY");
		served++;
	}
	if (full_io(sv[0], lat, total * sizeof(*lat), true) < 0)
		return log_err(("no latencies from the faulting process")), -EIO;
	waitpid(pid, &status, 0);
	print_stats("uffd_fault_ns", lat + warmup, npages, false);
	close(uffd);
	close(memfd);
	close(sv[0]);
	free(lat);
	free(src);
	return 0;
}

/* The 4 KiB server of the TCP floor: answers each 16 B request with a page. */
static int tcp_server(int lfd)
{
	char req[REQ_BYTES], page[PAGE];
	int one = 1, c = accept(lfd, NULL, NULL);

	if (c < 0)
		return 3;
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(page, 0x5a, sizeof(page));
	while (full_io(c, req, sizeof(req), true) == 0)
		if (full_io(c, page, sizeof(page), false) < 0)
			break;
	return 0;
}

static int tcp_floor(size_t n, size_t warmup)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	char req[REQ_BYTES] = { 0 }, page[PAGE];
	uint64_t *lat = calloc(n, sizeof(*lat));
	int lfd, fd, one = 1, status;
	pid_t pid;

	if (!lat)
		return -ENOMEM;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return log_err_errno(-errno, "socket");
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
		return log_err_errno(-errno, "listening on 127.0.0.1");
	pid = fork();
	if (pid < 0)
		return log_err_errno(-errno, "fork");
	if (pid == 0)
		_exit(tcp_server(lfd));
	close(lfd);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return log_err_errno(-errno, "connecting to 127.0.0.1:%u", ntohs(a.sin_port));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (size_t i = 0; i < n + warmup; i++) {
		uint64_t t0 = now_ns();

		if (full_io(fd, req, sizeof(req), false) < 0 || full_io(fd, page, sizeof(page), true) < 0)
			return log_err("TCP floor: the server went away"), -EPIPE;
		if (i >= warmup)
			lat[i - warmup] = now_ns() - t0;
	}
	close(fd);
	waitpid(pid, &status, 0);
	print_stats("tcp_4k_rtt_ns", lat, n, true);
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "samples", required_argument, NULL, 'n' },
					      { "help", no_argument, NULL, 'h' },
					      { 0 } };
	unsigned long n = 20000;
	char *end;
	int c, r;

	log_set_prefix("bench-floor");
	while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (errno || *end || n < 100 || n > 10000000) {
				log_err("--samples: '%s' is not a count in 100..10000000", optarg);
				return 2;
			}
			break;
		case 'h':
			printf("Usage: bench-floor [--samples N]\n"
			       "Measures the uffd MISSING+UFFDIO_COPY round trip between two processes and\n"
			       "a TCP loopback 16 B request / 4 KiB reply round trip; prints JSON (ns).\n");
			return 0;
		default:
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	printf("{\n");
	r = uffd_floor(n, n / 10);
	if (r == -EOPNOTSUPP)
		return 77; /* skip: no userfaultfd for this user */
	if (r < 0)
		return 3;
	r = tcp_floor(n, n / 10);
	if (r < 0)
		return 3;
	printf("}\n");
	return 0;
}
