/* SPDX-License-Identifier: MIT */
/* A VM's state file: layout, checks on adoption, start-up clean-up (see vmstate.h). */
#include "vmstate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "log.h"
#include "util.h"

#define VMSTATE_STORE_OFFSET 4096u

_Static_assert(sizeof(struct vmstate_header) <= VMSTATE_STORE_OFFSET, "the header fits its page");

static size_t round_page(size_t n)
{
	return (n + PAGE_SIZE_4K - 1) & ~(size_t)(PAGE_SIZE_4K - 1);
}

int vmstate_pid_start(pid_t pid, uint64_t *ret)
{
	char path[32], buf[1024];
	unsigned long long ticks;
	const char *q;
	ssize_t n;
	long hz = sysconf(_SC_CLK_TCK);
	_cleanup_close_ int fd = -1;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return n < 0 ? -errno : -EIO;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields count from the last ')'. */
	q = strrchr(buf, ')');
	if (!q || hz <= 0)
		return -EIO;
	for (int field = 2; field < 22 && q; field++)
		q = strchr(q + 1, ' ');
	if (!q || sscanf(q + 1, "%llu", &ticks) != 1)
		return -EIO;
	*ret = (uint64_t)ticks * (1000000000ULL / (uint64_t)hz);
	return 0;
}

static int map_areas(struct vmstate *vs)
{
	vs->hdr = mmap(NULL, VMSTATE_STORE_OFFSET, PROT_READ | PROT_WRITE, MAP_SHARED, vs->fd, 0);
	if (vs->hdr == MAP_FAILED) {
		vs->hdr = NULL;
		return -errno;
	}
	vs->store_area = mmap(NULL, vs->hdr->store_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, vs->fd,
			      (off_t)vs->hdr->store_offset);
	if (vs->store_area == MAP_FAILED) {
		vs->store_area = NULL;
		return -errno;
	}
	return 0;
}

static int state_path(char *out, size_t len, const char *dir, const char *name, pid_t pid)
{
	return (size_t)snprintf(out, len, "%s/%s-%d.state", dir, name, (int)pid) >= len ? -ENAMETOOLONG : 0;
}

int vmstate_create(const char *dir, const char *name, pid_t pid, uint64_t start_boot_ns, const char *uuid,
		   size_t store_bytes, struct vmstate **ret)
{
	struct vmstate *vs = calloc(1, sizeof(*vs));
	struct vmstate_header h = { .magic = VMSTATE_MAGIC, .version = VMSTATE_VERSION,
				    .header_bytes = sizeof(struct vmstate_header), .pid = (uint32_t)pid,
				    .start_boot_ns = start_boot_ns, .store_offset = VMSTATE_STORE_OFFSET,
				    .store_bytes = round_page(store_bytes) };
	int r;

	if (!vs)
		return -ENOMEM;
	vs->fd = -1;
	if ((r = state_path(vs->path, sizeof(vs->path), dir, name, pid)) < 0)
		goto fail;
	h.pagemap_offset = h.store_offset + h.store_bytes;
	snprintf(h.name, sizeof(h.name), "%s", name);
	snprintf(h.uuid, sizeof(h.uuid), "%s", uuid ? uuid : "");
	if (RAND_bytes(h.secret, sizeof(h.secret)) != 1) {
		r = -EIO;
		goto fail;
	}
	/* A file of a VM of the same name and pid is stale: that process is this one, registering anew. */
	unlink(vs->path);
	vs->fd = open(vs->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (vs->fd < 0 || fchmod(vs->fd, 0600) < 0 || ftruncate(vs->fd, (off_t)h.pagemap_offset) < 0 ||
	    pwrite(vs->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
		r = -errno;
		goto fail_unlink;
	}
	if ((r = map_areas(vs)) < 0)
		goto fail_unlink;
	OPENSSL_cleanse(&h, sizeof(h));
	*ret = vs;
	return 0;
fail_unlink:
	unlink(vs->path);
fail:
	OPENSSL_cleanse(&h, sizeof(h));
	vmstate_close(vs, true);
	return r;
}

int vmstate_open(const char *dir, const char *name, pid_t pid, uint64_t start_boot_ns, size_t store_bytes,
		 struct vmstate **ret, char *err, size_t errlen)
{
	struct vmstate *vs = calloc(1, sizeof(*vs));
	struct vmstate_header h;
	struct stat st;
	int r;

	if (!vs)
		return -ENOMEM;
	vs->fd = -1;
	if ((r = state_path(vs->path, sizeof(vs->path), dir, name, pid)) < 0) {
		snprintf(err, errlen, "state file name too long");
		goto fail;
	}
	vs->fd = open(vs->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (vs->fd < 0) {
		r = -errno;
		snprintf(err, errlen, "no state file %s: %s", vs->path, strerror(errno));
		goto fail;
	}
	if (fstat(vs->fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
		r = -EBADMSG;
		snprintf(err, errlen, "state file %s is not a regular file of uid %u with mode 0600", vs->path,
			 (unsigned)geteuid());
		goto fail;
	}
	if (pread(vs->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != VMSTATE_MAGIC) {
		r = -EBADMSG;
		snprintf(err, errlen, "state file %s (%lld bytes) is not a uffdvm state file (bad magic or truncated)",
			 vs->path, (long long)st.st_size);
		goto fail;
	}
	if (h.version != VMSTATE_VERSION || h.header_bytes != sizeof(h)) {
		r = -EPROTONOSUPPORT;
		snprintf(err, errlen, "state file %s has format version %u (header %u bytes); this build reads "
			 "version %u only: run the uffd-pager that wrote it, or stop the VM", vs->path, h.version,
			 h.header_bytes, VMSTATE_VERSION);
		goto fail;
	}
	h.name[sizeof(h.name) - 1] = '\0';
	if (h.pid != (uint32_t)pid || strcmp(h.name, name) != 0) {
		r = -EBADMSG;
		snprintf(err, errlen, "state file %s names vm %s pid %u", vs->path, h.name, h.pid);
		goto fail;
	}
	if (h.start_boot_ns != start_boot_ns) {
		r = -ESRCH;
		snprintf(err, errlen, "state file %s belongs to an earlier process with pid %d (started at %llu ns, "
			 "this one at %llu ns)", vs->path, (int)pid, (unsigned long long)h.start_boot_ns,
			 (unsigned long long)start_boot_ns);
		goto fail;
	}
	if (h.store_offset != VMSTATE_STORE_OFFSET || h.store_bytes != round_page(store_bytes) ||
	    h.pagemap_offset != h.store_offset + h.store_bytes || h.nregions > VMSTATE_MAX_REGIONS ||
	    (uint64_t)st.st_size < h.pagemap_offset) {
		r = -EBADMSG;
		snprintf(err, errlen, "state file %s is corrupted or truncated (%lld bytes; store %llu+%llu, page map "
			 "at %llu, %u regions)", vs->path, (long long)st.st_size, (unsigned long long)h.store_offset,
			 (unsigned long long)h.store_bytes, (unsigned long long)h.pagemap_offset, h.nregions);
		goto fail;
	}
	if ((r = map_areas(vs)) < 0) {
		snprintf(err, errlen, "state file %s: mmap: %s", vs->path, strerror(-r));
		goto fail;
	}
	OPENSSL_cleanse(&h, sizeof(h));
	*ret = vs;
	return 0;
fail:
	OPENSSL_cleanse(&h, sizeof(h));
	vmstate_close(vs, true);
	return r;
}

bool vmstate_secret_matches(const struct vmstate *vs, const uint8_t *secret)
{
	return CRYPTO_memcmp(vs->hdr->secret, secret, GLUE_SECRET_LEN) == 0;
}

int vmstate_add_region(struct vmstate *vs, uint64_t host_addr, uint64_t length, uint64_t memfd_offset)
{
	struct vmstate_header *h = vs->hdr;

	if (h->nregions >= VMSTATE_MAX_REGIONS)
		return -E2BIG;
	h->regions[h->nregions] = (struct vmstate_region){ host_addr, length, memfd_offset };
	h->nregions++; /* after the region: a pager that dies in between never sees half of one */
	return 0;
}

void vmstate_close(struct vmstate *vs, bool keep_file)
{
	if (!vs)
		return;
	if (vs->store_area)
		munmap(vs->store_area, vs->hdr->store_bytes);
	if (vs->hdr)
		munmap(vs->hdr, VMSTATE_STORE_OFFSET);
	if (vs->fd >= 0)
		close(vs->fd);
	if (!keep_file && vs->path[0] && unlink(vs->path) < 0)
		log_warn("cannot delete state file %s: %s", vs->path, strerror(errno));
	free(vs);
}

/* The NAME-PID stem of a VM file name (.spill, .key, .state), or pid 0 for any other form. */
static pid_t vm_file_pid(const char *fname, char *stem, size_t stemlen)
{
	static const char *const sfxs[] = { ".spill", ".key", ".state" };
	const char *dash = strrchr(fname, '-'), *p;
	size_t n = strlen(fname), sfx = 0;
	long pid = 0;

	for (size_t i = 0; i < ARRAY_SIZE(sfxs) && !sfx; i++) {
		size_t k = strlen(sfxs[i]);
		if (n > k && strcmp(fname + n - k, sfxs[i]) == 0)
			sfx = k;
	}
	if (!sfx || !dash || dash == fname || n - sfx >= stemlen)
		return 0;
	for (p = dash + 1; p < fname + n - sfx; p++) {
		if (*p < '0' || *p > '9' || pid > 4194304) /* PID_MAX_LIMIT */
			return 0;
		pid = pid * 10 + (*p - '0');
	}
	if (p == dash + 1)
		return 0;
	memcpy(stem, fname, n - sfx);
	stem[n - sfx] = '\0';
	return (pid_t)pid;
}

/* A pid whose files are stale: gone, or its state file records another process's start time. */
static bool vm_files_stale(int dirfd, const char *stem, pid_t pid, const char **ret_why)
{
	struct vmstate_header h;
	char name[300];
	uint64_t started;
	_cleanup_close_ int fd = -1;

	if (kill(pid, 0) < 0 && errno == ESRCH) {
		*ret_why = "is gone";
		return true;
	}
	snprintf(name, sizeof(name), "%s.state", stem);
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != VMSTATE_MAGIC)
		return false; /* nothing says otherwise: keep them for a pager that adopts the VM */
	if (vmstate_pid_start(pid, &started) == 0 && started != h.start_boot_ns) {
		*ret_why = "now names another process";
		return true;
	}
	return false;
}

/* Deletes the three files of a stale VM at once: the state file is what tells a recycled pid apart. */
static int remove_vm_files(int dirfd, const char *dir, const char *stem, pid_t pid, const char *why)
{
	static const struct { const char *sfx, *kind; } kinds[] = {
		{ ".spill", "spill file of guest pages" }, { ".key", "sealing key" }, { ".state", "state file" },
	};
	int removed = 0;

	for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
		char name[300];
		struct stat st;

		snprintf(name, sizeof(name), "%s%s", stem, kinds[i].sfx);
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (unlinkat(dirfd, name, 0) < 0) {
			log_warn("cannot delete stale %s %s/%s: %s", kinds[i].kind, dir, name, strerror(errno));
			continue;
		}
		log_info("deleted stale %s %s/%s (%llu bytes; pid %d %s)", kinds[i].kind, dir, name,
			 (unsigned long long)st.st_size, (int)pid, why);
		removed++;
	}
	return removed;
}

int vmstate_remove_stale(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int removed = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char stem[256];
		const char *why = NULL;
		pid_t pid = vm_file_pid(e->d_name, stem, sizeof(stem));

		/* Only files of processes that are gone: a live process may be a VM a pager adopts. */
		if (pid > 0 && vm_files_stale(dirfd(d), stem, pid, &why))
			removed += remove_vm_files(dirfd(d), dir, stem, pid, why);
		else if (pid > 0 && strlen(e->d_name) == strlen(stem) + 6 && strcmp(e->d_name + strlen(stem), ".state") == 0)
			log_info("%s/%s: a running VM (pid %d); adopted when its shim registers again", dir, e->d_name,
				 (int)pid);
	}
	closedir(d);
	return removed;
}
