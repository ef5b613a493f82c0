/* SPDX-License-Identifier: MIT */
/* Small helpers shared by every component: cleanup attributes, sizes, clocks. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* The one page size: guest RAM, stored copies, slots and the donor wire format. */
#define PAGE_SHIFT_4K 12
#define PAGE_SIZE_4K (1UL << PAGE_SHIFT_4K)

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

/* Hands ownership out of a cleanup variable. */
#define TAKE_PTR(p) \
	({ \
		__typeof__(p) _p = (p); \
		(p) = NULL; \
		_p; \
	})
#define TAKE_FD(fd) \
	({ \
		int _fd = (fd); \
		(fd) = -1; \
		_fd; \
	})

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* One step of a busy wait: tells the CPU to back off (and a hyperthread sibling to run). */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/*
 * Parses a size: plain bytes ("4096") or a number with a binary suffix
 * K, M, G, T (optionally followed by "iB" or "B"): "512M", "2G", "1GiB".
 * Returns 0 or -EINVAL (malformed) / -ERANGE (overflows 64 bits).
 */
int parse_size(const char *s, uint64_t *ret_bytes);
/* Formats bytes as "512M", "1.5G" etc. into buf; returns buf. */
const char *format_size(uint64_t bytes, char *buf, size_t len);

/*
 * Splits "HOST:PORT" or "[IPV6]:PORT" (the part of a tcp:// or rdma:// URL
 * after the scheme) at its last colon. Returns 0 with a malloc'ed host and
 * *ret_port pointing into hp, -EINVAL when the host or port is missing, or
 * -ENOMEM.
 */
int split_host_port(const char *hp, char **ret_host, const char **ret_port);
/* True when /proc/self/fd/FD links to a name starting with prefix ("/memfd:", "anon_inode:[userfaultfd]"). */
bool fd_link_has_prefix(int fd, const char *prefix);

/* Waits until fd is ready for ev (POLLIN, POLLOUT) or the deadline (now_ns() clock) passes. Returns 0 or -errno (-ETIMEDOUT). */
int poll_until(int fd, short ev, uint64_t deadline);

/* mkdir -p: missing parents get mode 0755, path itself mode. Returns 0 (also if it exists) or -errno. */
int mkdir_p(const char *path, mode_t mode);
/* Creates the directory that holds path (a socket's, say) like mkdir_p with mode 0755. Returns 0 or -errno. */
int mkdir_parent(const char *path);
/*
 * A file a program needs beside it: the path in $env_name when set (which
 * must be readable), else beside_exe relative to the running executable's
 * directory (a build tree), else installed. Returns 0 with the path in
 * buf, -ENOENT when none is readable, or -errno for an unreadable
 * $env_name (the caller says which in its message).
 */
int find_beside_self(const char *env_name, const char *beside_exe, const char *installed, char *buf, size_t len);
