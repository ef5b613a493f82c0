/* SPDX-License-Identifier: MIT */
/*
 * Starting and stopping the disk cache's nbdkit for uffd-qemu
 * (cache-launch.h). The process tree: uffd-qemu forks a child that forks
 * the keeper and exits at once, so the keeper is nobody's child once QEMU
 * is exec'ed (QEMU reaps no strangers); the keeper forks nbdkit, reports
 * over a pipe when nbdkit's pid file appears (it writes it once it
 * listens), and then waits on two pidfds: QEMU's (opened by uffd-qemu
 * before the fork; exec keeps the pid) and nbdkit's.
 */
#include "cache-launch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "drives.h"
#include "log.h"
#include "util.h"

#define FILTER_NAME "nbdkit-uffdvm-cache-filter.so"
#define ENV_FILTER "UFFD_CACHE_FILTER"
#define ENV_NBDKIT "UFFD_NBDKIT"
#define ENV_RUNTIME "UFFD_QEMU_RUNTIME_DIR"
#define READY_TIMEOUT_NS (60ULL * 1000000000ULL)
#define STOP_TIMEOUT_MS 30000

#ifndef UFFD_GLUE_LIBDIR
#define UFFD_GLUE_LIBDIR "/usr/local/lib"
#endif

struct rundir {
	char dir[PATH_MAX - 64];
	size_t n;
	char names[POLICY_DC_MAX_DRIVES][POLICY_NAME_MAX];
};

static void path_in(const struct rundir *rd, const char *leaf, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", rd->dir, leaf);
}

/* Removes what this file put in the runtime directory, then the directory. */
static void rundir_remove(const struct rundir *rd)
{
	static const char *const leaves[] = { "nbd.sock", "nbdkit.pid", "cache-stats.json", "cache-stats.json.tmp" };
	char p[PATH_MAX];

	for (size_t k = 0; k < rd->n; k++) {
		snprintf(p, sizeof(p), "%s/exports/%s", rd->dir, rd->names[k]);
		unlink(p);
	}
	path_in(rd, "exports", p, sizeof(p));
	rmdir(p);
	for (size_t i = 0; i < ARRAY_SIZE(leaves); i++) {
		path_in(rd, leaves[i], p, sizeof(p));
		unlink(p);
	}
	if (rmdir(rd->dir) < 0 && errno != ENOENT)
		log_warn("disk cache: cannot remove %s: %s", rd->dir, strerror(errno));
}

/* $UFFD_CACHE_FILTER, the build tree next to this program, or the install dir. */
static int find_filter(char *buf, size_t len)
{
	int r = find_beside_self(ENV_FILTER, "../disk-cache/" FILTER_NAME, UFFD_GLUE_LIBDIR "/uffdvm/" FILTER_NAME, buf,
				 len);

	if (r == -ENOENT)
		log_err("disk cache: cannot find %s in %s/uffdvm; set %s", FILTER_NAME, UFFD_GLUE_LIBDIR, ENV_FILTER);
	else if (r < 0)
		log_err_errno(r, "%s=%s", ENV_FILTER, buf);
	return r;
}

/* Links each drive's image into exports/ under the drive's name: the file plugin's dir= mode serves them. */
static int link_images(const struct rundir *rd, const struct glue_drives *d)
{
	char p[PATH_MAX], real[PATH_MAX];
	struct stat st;

	path_in(rd, "exports", p, sizeof(p));
	if (mkdir(p, 0700) < 0)
		return log_err_errno(-errno, "disk cache: cannot create %s", p);
	for (size_t k = 0; k < rd->n; k++) {
		const char *img = glue_drives_image(d, k);

		if (!realpath(img, real) || stat(real, &st) < 0)
			return log_err_errno(-errno, "disk cache: drive '%s': image %s", rd->names[k], img);
		if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
			log_err("disk cache: drive '%s': image %s is not a regular file or block device", rd->names[k],
				img);
			return -EINVAL;
		}
		snprintf(p, sizeof(p), "%s/exports/%s", rd->dir, rd->names[k]);
		if (symlink(real, p) < 0)
			return log_err_errno(-errno, "disk cache: cannot link %s", p);
	}
	return 0;
}

static int pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* nbdkit's command line; strings in store (a few KiB). Returns argc. */
static int nbdkit_args(const struct policy_vm *p, const char *vm, const struct rundir *rd, const char *filter,
		       char *store, size_t cap, char **args)
{
	size_t off = 0;
	int n = 0;
	const char *nbdkit = getenv(ENV_NBDKIT);

#define ARG(...) \
	do { \
		args[n++] = store + off; \
		off += (size_t)snprintf(store + off, off < cap ? cap - off : 0, __VA_ARGS__) + 1; \
	} while (0)
	ARG("%s", nbdkit && *nbdkit ? nbdkit : "nbdkit");
	ARG("-f");
	ARG("-U");
	ARG("%s/nbd.sock", rd->dir);
	ARG("-P");
	ARG("%s/nbdkit.pid", rd->dir);
	ARG("--filter=%s", filter);
	ARG("file");
	ARG("dir=%s/exports", rd->dir);
	ARG("cache-size=%llu", (unsigned long long)p->dc_size);
	ARG("cache-block-size=%llu", (unsigned long long)p->dc_block_size);
	for (unsigned i = 0; i < p->dc_n_donors; i++)
		ARG("cache-donor=%s", p->dc_donors[i]);
	if (p->dc_key_file[0])
		ARG("cache-key=%s", p->dc_key_file);
	if (p->dc_client_id[0])
		ARG("cache-client-id=%s", p->dc_client_id);
	else
		ARG("cache-client-id=disk-%.59s", vm);
	ARG("cache-stats=%s/cache-stats.json", rd->dir);
	if (p->dc_write_fill)
		ARG("cache-write-fill=true");
#undef ARG
	args[n] = NULL;
	return off <= cap ? n : -ENAMETOOLONG;
}

/* The keeper: runs nbdkit, says when it listens, stops it after QEMU. Never returns. */
static void __attribute__((noreturn)) keeper(const struct rundir *rd, char **args, int qemu_pidfd, int ready_fd,
					     const char *vm)
{
	uint64_t deadline = now_ns() + READY_TIMEOUT_NS;
	char pidfile[PATH_MAX];
	struct pollfd pf[2];
	struct stat st;
	int status = 0, nfd;
	uint8_t ok = 1;
	pid_t n;

	/* A ^C for QEMU's process group must not reach nbdkit before QEMU has flushed. */
	setsid();
	n = fork();
	if (n == 0) {
		execvp(args[0], args);
		log_err("disk cache: cannot execute %s: %s", args[0], strerror(errno));
		_exit(127);
	}
	if (n < 0) {
		log_err("disk cache: fork: %s", strerror(errno));
		(void)!write(ready_fd, &ok, 1);
		rundir_remove(rd);
		_exit(1);
	}
	nfd = pidfd_open(n);
	path_in(rd, "nbdkit.pid", pidfile, sizeof(pidfile));
	for (;;) {
		if (stat(pidfile, &st) == 0 && st.st_size > 0) {
			ok = 0;
			break;
		}
		if (waitpid(n, &status, WNOHANG) == n) {
			log_err("disk cache of VM '%s': nbdkit exited at start (status %d)", vm, status);
			n = -1;
			break;
		}
		if (now_ns() > deadline) {
			log_err("disk cache of VM '%s': nbdkit did not listen within %llu s", vm,
				(unsigned long long)(READY_TIMEOUT_NS / 1000000000ULL));
			break;
		}
		usleep(20000);
	}
	(void)!write(ready_fd, &ok, 1);
	close(ready_fd);
	pf[0] = (struct pollfd){ .fd = qemu_pidfd, .events = POLLIN };
	pf[1] = (struct pollfd){ .fd = nfd, .events = POLLIN };
	while (!ok && n > 0) {
		if (poll(pf, nfd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
			break;
		if (pf[0].revents)
			break;
		if (nfd >= 0 && pf[1].revents) {
			waitpid(n, &status, 0);
			log_err("disk cache of VM '%s': nbdkit exited (status %d) while QEMU runs: its cached drives "
				"fail from now on", vm, status);
			n = -1;
			/* The directory goes once QEMU is gone. */
			poll(pf, 1, -1);
		}
	}
	if (n > 0) {
		kill(n, SIGTERM);
		if (nfd < 0 || poll(&pf[1], 1, STOP_TIMEOUT_MS) == 0) {
			log_warn("disk cache of VM '%s': nbdkit did not stop within %d s; killing it", vm,
				 STOP_TIMEOUT_MS / 1000);
			kill(n, SIGKILL);
		}
		waitpid(n, &status, 0);
	}
	rundir_remove(rd);
	_exit(0);
}

int glue_cache_start(struct policy_vm *p, const char *vm, int argc, char *const *argv, int *ret_argc,
		     char *const **ret_argv)
{
	const char *base = getenv(ENV_RUNTIME), *names[POLICY_DC_MAX_DRIVES];
	struct glue_drives *d = NULL;
	static struct rundir rd; /* the keeper's copy survives the fork either way */
	char sock[PATH_MAX], filter[PATH_MAX], store[8192], *args[64];
	int r, ready[2] = { -1, -1 }, qfd = -1, status;
	uint8_t ok = 1;
	pid_t a;

	if (!base || !*base)
		base = getenv("XDG_RUNTIME_DIR");
	if (!base || !*base)
		base = "/tmp";
	if ((size_t)snprintf(rd.dir, sizeof(rd.dir), "%s/uffd-qemu-%s-XXXXXX", base, vm) >= sizeof(rd.dir) - 16)
		return log_err_errno(-ENAMETOOLONG, "disk cache: runtime directory under %s", base);
	if (!mkdtemp(rd.dir))
		return log_err_errno(-errno, "disk cache: cannot create a runtime directory under %s (set %s)", base,
				     ENV_RUNTIME);
	rd.n = p->dc_n_drives;
	for (size_t k = 0; k < rd.n; k++) {
		snprintf(rd.names[k], sizeof(rd.names[k]), "%s", p->dc_drives[k]);
		names[k] = rd.names[k];
	}
	path_in(&rd, "cache-stats.json", sock, sizeof(sock));
	if (strlen(sock) >= sizeof(p->dc_stats_file)) {
		r = log_err_errno(-ENAMETOOLONG, "disk cache: %s is longer than %zu characters (set %s)", sock,
				  sizeof(p->dc_stats_file) - 1, ENV_RUNTIME);
		goto fail;
	}
	memcpy(p->dc_stats_file, sock, strlen(sock) + 1);
	path_in(&rd, "nbd.sock", sock, sizeof(sock));
	if (strlen(sock) >= 108) {
		r = log_err_errno(-ENAMETOOLONG, "disk cache: socket path %s is longer than a Unix socket allows (set %s)",
				  sock, ENV_RUNTIME);
		goto fail;
	}
	r = glue_drives_rewrite(argc, argv, names, rd.n, sock, &d);
	if (r == -EINVAL) {
		log_err("disk cache: runtime directory %s has characters an NBD URI cannot carry (set %s)", rd.dir,
			ENV_RUNTIME);
		goto fail;
	}
	if (r < 0) {
		log_err_errno(r, "disk cache: cannot rewrite the drives");
		goto fail;
	}
	if (glue_drives_error(d)) {
		_cleanup_free_ char *e = strdup(glue_drives_error(d));
		char *save = NULL;

		log_err("refusing to start VM '%s' with its disk cache (policy disk_cache.drives):", vm);
		for (char *line = e ? strtok_r(e, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save))
			log_err("  %s", line);
		r = -EINVAL;
		goto fail;
	}
	if ((r = link_images(&rd, d)) < 0 || (r = find_filter(filter, sizeof(filter))) < 0)
		goto fail;
	r = nbdkit_args(p, vm, &rd, filter, store, sizeof(store), args);
	if (r < 0) {
		log_err_errno(r, "disk cache: nbdkit command line");
		goto fail;
	}
	qfd = pidfd_open(getpid());
	if (qfd < 0) {
		r = log_err_errno(-errno, "disk cache: pidfd_open");
		goto fail;
	}
	if (pipe2(ready, O_CLOEXEC) < 0) {
		r = log_err_errno(-errno, "disk cache: pipe");
		goto fail;
	}
	fflush(NULL);
	a = fork();
	if (a == 0) {
		close(ready[0]);
		if (fork() == 0)
			keeper(&rd, args, qfd, ready[1], vm);
		_exit(0);
	}
	close(ready[1]);
	ready[1] = -1;
	if (a < 0) {
		r = log_err_errno(-errno, "disk cache: fork");
		goto fail;
	}
	waitpid(a, &status, 0);
	close(qfd);
	qfd = -1;
	/* The keeper writes once nbdkit listens or failed; EOF means it died. */
	while ((r = (int)read(ready[0], &ok, 1)) < 0 && errno == EINTR)
		;
	close(ready[0]);
	if (r != 1 || ok != 0) {
		log_err("disk cache of VM '%s': nbdkit did not start (its messages are above)", vm);
		/* The keeper removes the directory. */
		glue_drives_free(d);
		return -EIO;
	}
	log_info("VM '%s': %zu drive%s cached in %llu MiB of donor memory, served by nbdkit on %s", vm, rd.n,
		 rd.n > 1 ? "s" : "", (unsigned long long)(p->dc_size >> 20), sock);
	*ret_argc = glue_drives_argc(d);
	*ret_argv = glue_drives_argv(d); /* d lives on until exec */
	return 0;
fail:
	if (qfd >= 0)
		close(qfd);
	if (ready[0] >= 0)
		close(ready[0]);
	glue_drives_free(d);
	rundir_remove(&rd);
	return r < 0 ? r : -EINVAL;
}
