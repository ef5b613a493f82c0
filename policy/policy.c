/* SPDX-License-Identifier: MIT */
/*
 * Per-VM policies and the pager configuration: their defaults, their field
 * tables (one row per JSON key, parsed by fields.c) and the rules that are
 * more than a row can say (a name's syntax, low below high, a state_dir
 * not on tmpfs), plus the derived values the pager asks for.
 */
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "config.h"
#include "fields.h"
#include "log.h"
#include "util.h"
#include "victim.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef RAMFS_MAGIC
#define RAMFS_MAGIC 0x858458f6
#endif

#define POLICY_FILE_MAX (1024 * 1024)
#define MIN_LOCAL_MEMORY (1ULL << 20)

/* ---- per-VM policy ---------------------------------------------------------------- */

void policy_vm_init(struct policy_vm *p)
{
	memset(p, 0, sizeof(*p));
	p->high_pct = 100;
	p->low_pct = 90;
	snprintf(p->victims, sizeof(p->victims), "%s", POLICY_VICTIM_DEFAULT);
	p->spill_max = 0;
	p->on_pager_unavailable = POLICY_UNAVAILABLE_REFUSE;
	p->on_data_loss = POLICY_LOSS_STOP;
	p->on_store_full = POLICY_STORE_FULL_DEGRADE;
	p->on_pager_lost = POLICY_PAGER_LOST_WAIT;
	p->pager_lost_max_wait_s = 60;
	p->replicas = 1;
	p->backup_spill = false;
	p->encryption = true;
	p->clean_eviction = true;
	p->balloon_enabled = false;
	p->balloon_floor = 256ULL << 20;
	p->balloon_settle_ms = 5000;
	p->dc_block_size = 64 * 1024;
}

bool policy_name_valid(const char *name)
{
	size_t n = 0;

	if (!name)
		return false;
	for (; name[n]; n++) {
		char c = name[n];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	/* The name becomes a file name in state_dir: "." and ".." would escape it. */
	return n >= 1 && n < POLICY_NAME_MAX && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* Rules between the two watermarks: which one the error points at depends on which was given. */
static int vm_watermarks_check(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			       const struct policy_field_path *p, void *base)
{
	const struct policy_vm *pol = base;
	struct policy_field_path hp = policy_field_path_key(p, "high"), lp = policy_field_path_key(p, "low");

	(void)f;
	if (pol->low_pct < pol->high_pct)
		return 0;
	if (json_object_get(v, "low"))
		return policy_field_fail(x, &lp, "1 <= low < high <= 100",
					 "low watermark %u%% is not below the high watermark %u%%",
					 pol->low_pct, pol->high_pct);
	return policy_field_fail(x, &hp, "1 <= low < high <= 100",
				 "high watermark %u%% is not above the default low watermark %u%%; "
				 "set watermarks.low too",
				 pol->high_pct, pol->low_pct);
}

static bool victims_valid(const char *name)
{
	return policy_victim_find(name) != NULL;
}

#define VM(m) POLICY_FIELD_AT(struct policy_vm, m)

static const char *const unavailable_names[] = { "refuse", "run-unpaged", NULL };
static const char *const loss_names[] = { "stop", "kill", NULL };
static const char *const store_full_names[] = { "degrade", "pause", NULL };
static const char *const pager_lost_names[] = { "wait", "stop", "kill", NULL };
static const char *const backup_names[] = { "none", "spill", NULL };

static const struct policy_field vm_watermark_fields[] = {
	{ .name = "high", .kind = POLICY_FIELD_PERCENT, VM(high_pct) },
	{ .name = "low", .kind = POLICY_FIELD_PERCENT, VM(low_pct) },
	{ 0 },
};

static const struct policy_field vm_spill_fields[] = {
	{ .name = "max_size", .kind = POLICY_FIELD_SIZE, VM(spill_max) },
	{ 0 },
};

static const struct policy_field vm_durability_fields[] = {
	{ .name = "replicas", .kind = POLICY_FIELD_INT, VM(replicas), .lo = 1, .hi = POLICY_MAX_REPLICAS,
	  .allowed = "an integer 1..3" },
	/* backup_spill is index 1 of backup_names. */
	{ .name = "backup", .kind = POLICY_FIELD_ENUM, VM(backup_spill), .names = backup_names },
	{ 0 },
};

static const struct policy_field vm_balloon_fields[] = {
	{ .name = "enabled", .kind = POLICY_FIELD_BOOL, VM(balloon_enabled) },
	/* libvirt sets memory in KiB; the guest's balloon works in 4 KiB pages. Below 16M a guest cannot run. */
	{ .name = "floor", .kind = POLICY_FIELD_SIZE, VM(balloon_floor), .flags = POLICY_FIELD_PAGE_ROUND,
	  .lo = POLICY_BALLOON_MIN_FLOOR,
	  .allowed = "a size >= 16M: an integer number of bytes or a string like \"256M\", \"1G\"" },
	{ .name = "settle_ms", .kind = POLICY_FIELD_INT, VM(balloon_settle_ms), .lo = 0,
	  .hi = POLICY_BALLOON_MAX_SETTLE_MS, .allowed = "an integer 0..600000 (milliseconds)" },
	{ 0 },
};

static const char DC_DONORS_ALLOWED[] =
	"an array of 1..16 URLs \"tcp://HOST:PORT\" or \"rdma://HOST:PORT\"";
static const char DC_DRIVES_ALLOWED[] =
	"an array of 1..8 drive ids (-drive id=) or node names (-blockdev node-name=), "
	"1..63 characters from A-Z a-z 0-9 . _ -";

static const struct policy_field dc_donor_field = {
	.name = "donor", .kind = POLICY_FIELD_STRING, .size = POLICY_URL_MAX,
	.valid = policy_donor_url_valid, .noun = "donor URL", .allowed = DC_DONORS_ALLOWED,
};

static const struct policy_field dc_drive_field = {
	.name = "drive", .kind = POLICY_FIELD_STRING, .size = POLICY_NAME_MAX, .lo = 1, .hi = POLICY_NAME_MAX - 1,
	.valid = policy_name_valid, .noun = "drive name", .allowed = DC_DRIVES_ALLOWED,
};

/* Rules the rows cannot say: non-empty lists, a power-of-two block that fits the cache. */
static int vm_disk_cache_check(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			       const struct policy_field_path *p, void *base)
{
	const struct policy_vm *pol = base;
	struct policy_field_path bp = policy_field_path_key(p, "block_size");
	struct policy_field_path dp = policy_field_path_key(p, "donors"), rp = policy_field_path_key(p, "drives");

	(void)f;
	if (pol->dc_n_donors == 0)
		return policy_field_fail(x, &dp, DC_DONORS_ALLOWED, "%s", "no donors");
	if (pol->dc_n_drives == 0)
		return policy_field_fail(x, &rp, DC_DRIVES_ALLOWED, "%s", "no drives");
	if (pol->dc_block_size & (pol->dc_block_size - 1))
		return policy_field_fail(x, &bp, "a power of two from 4K to 1M", "%" PRIu64 " is not a power of two",
					 pol->dc_block_size);
	if (pol->dc_size < pol->dc_block_size)
		return policy_field_fail(x, &bp, "at most disk_cache.size",
					 "block of %" PRIu64 " bytes is larger than the cache (%" PRIu64 " bytes)",
					 pol->dc_block_size, pol->dc_size);
	return 0;
}

static const struct policy_field vm_disk_cache_fields[] = {
	{ .name = "size", .kind = POLICY_FIELD_SIZE, VM(dc_size), .flags = POLICY_FIELD_REQUIRED,
	  .lo = MIN_LOCAL_MEMORY, .allowed = "a size >= 1M: an integer number of bytes or a string like \"512M\", \"4G\"" },
	{ .name = "block_size", .kind = POLICY_FIELD_SIZE, VM(dc_block_size), .lo = 4096, .hi = 1 << 20,
	  .allowed = "a power of two from 4K to 1M, e.g. \"64K\"" },
	{ .name = "donors", .kind = POLICY_FIELD_ARRAY, VM(dc_donors), .sub = &dc_donor_field,
	  .flags = POLICY_FIELD_REQUIRED | POLICY_FIELD_UNIQUE, .count_off = offsetof(struct policy_vm, dc_n_donors),
	  .noun = "donors", .allowed = DC_DONORS_ALLOWED },
	{ .name = "drives", .kind = POLICY_FIELD_ARRAY, VM(dc_drives), .sub = &dc_drive_field,
	  .flags = POLICY_FIELD_REQUIRED | POLICY_FIELD_UNIQUE, .count_off = offsetof(struct policy_vm, dc_n_drives),
	  .noun = "drives", .allowed = DC_DRIVES_ALLOWED },
	{ .name = "key_file", .kind = POLICY_FIELD_PATH, VM(dc_key_file) },
	/* uffd-qemu names it: where the filter writes its counters, which vm.stats shows. */
	{ .name = "stats_file", .kind = POLICY_FIELD_PATH, VM(dc_stats_file) },
	{ .name = "client_id", .kind = POLICY_FIELD_STRING, VM(dc_client_id), .lo = 1, .hi = 64,
	  .valid = policy_client_id_valid, .noun = "client id",
	  .allowed = "1..64 characters from A-Z a-z 0-9 . _ : @ -" },
	/* A swap device's pages are written, then read back: writing them fills the cache. */
	{ .name = "write_fill", .kind = POLICY_FIELD_BOOL, VM(dc_write_fill), .allowed = "true or false" },
	{ 0 },
};

/* Row order is the order of "allowed:" in unknown-key errors and of policy_vm_to_json(). */
static const struct policy_field vm_fields[] = {
	{ .name = "name", .kind = POLICY_FIELD_STRING, VM(name), .flags = POLICY_FIELD_REQUIRED,
	  .lo = 1, .hi = POLICY_NAME_MAX - 1, .valid = policy_name_valid, .noun = "name",
	  .allowed = "1..63 characters from A-Z a-z 0-9 . _ -, not \".\" or \"..\"" },
	/* Residency is counted in pages; a partial page could never be used. */
	{ .name = "local_memory", .kind = POLICY_FIELD_SIZE, VM(local_memory),
	  .flags = POLICY_FIELD_REQUIRED | POLICY_FIELD_PAGE_ROUND, .lo = MIN_LOCAL_MEMORY,
	  .allowed = "a size >= 1M: an integer number of bytes or a string like \"512M\", \"2G\", \"1GiB\"" },
	{ .name = "watermarks", .kind = POLICY_FIELD_OBJECT, .sub = vm_watermark_fields,
	  .check = vm_watermarks_check, .allowed = "an object {\"high\": PERCENT, \"low\": PERCENT}" },
	{ .name = "spill", .kind = POLICY_FIELD_OBJECT, .sub = vm_spill_fields,
	  .allowed = "an object {\"max_size\": SIZE}" },
	{ .name = "on_pager_unavailable", .kind = POLICY_FIELD_ENUM, VM(on_pager_unavailable),
	  .names = unavailable_names },
	{ .name = "on_data_loss", .kind = POLICY_FIELD_ENUM, VM(on_data_loss), .names = loss_names },
	{ .name = "on_store_full", .kind = POLICY_FIELD_ENUM, VM(on_store_full), .names = store_full_names },
	/* Carried out by the shim inside QEMU: no pager is there to do it. */
	{ .name = "on_pager_lost", .kind = POLICY_FIELD_ENUM, VM(on_pager_lost), .names = pager_lost_names },
	{ .name = "pager_lost_max_wait_s", .kind = POLICY_FIELD_INT, VM(pager_lost_max_wait_s), .lo = 1, .hi = 86400,
	  .allowed = "an integer 1..86400 (seconds)" },
	{ .name = "durability", .kind = POLICY_FIELD_OBJECT, .sub = vm_durability_fields,
	  .allowed = "an object {\"replicas\": 1..3, \"backup\": \"spill\"|\"none\"}" },
	/* Stored copies sealed with AES-256-GCM under a per-VM key (docs/stores.md); false: CRC32C only. */
	{ .name = "encryption", .kind = POLICY_FIELD_BOOL, VM(encryption) },
	{ .name = "clean_eviction", .kind = POLICY_FIELD_BOOL, VM(clean_eviction) },
	{ .name = "balloon", .kind = POLICY_FIELD_OBJECT, .sub = vm_balloon_fields,
	  .allowed = "an object {\"enabled\": true|false, \"floor\": SIZE, \"settle_ms\": 0..600000}" },
	{ .name = "disk_cache", .kind = POLICY_FIELD_OBJECT, .sub = vm_disk_cache_fields, .check = vm_disk_cache_check,
	  .allowed = "an object {\"size\": SIZE, \"block_size\": SIZE, \"donors\": [URL, ...], "
		     "\"drives\": [NAME, ...], \"key_file\": PATH, \"client_id\": ID, \"write_fill\": BOOL}" },
	/* A string rather than an enum: it names an ops table of policy/victim.h, looked up by name. */
	{ .name = "victims", .kind = POLICY_FIELD_STRING, VM(victims), .valid = victims_valid,
	  .noun = "victim selector", .allowed = POLICY_VICTIM_NAMES },
	/* Opt-in: members learn that a page exists in another member by timing (docs/sharing.md). */
	{ .name = "sharing_group", .kind = POLICY_FIELD_STRING, VM(sharing_group), .lo = 1, .hi = POLICY_NAME_MAX - 1,
	  .valid = policy_name_valid, .noun = "sharing group name",
	  .allowed = "1..63 characters from A-Z a-z 0-9 . _ -, not \".\" or \"..\"" },
	{ .name = "fault_spin_us", .kind = POLICY_FIELD_INT, VM(fault_spin_us), .lo = 0, .hi = 1000,
	  .allowed = "an integer 0..1000 (microseconds)" },
	{ 0 },
};

int policy_vm_parse(const char *text, size_t len, const char *source, struct policy_vm *ret,
		    struct policy_error *err)
{
	struct policy_vm p;
	int r;

	policy_vm_init(&p);
	r = policy_fields_parse(text, len, source ? source : "<policy>", vm_fields, &p, err);
	if (r < 0)
		return r;
	*ret = p;
	return 0;
}

/*
 * Reads at most POLICY_FILE_MAX bytes of path into a malloc'ed buffer. err
 * may be NULL; otherwise it is cleared first.
 */
static int read_file(const char *path, char **ret_buf, size_t *ret_len, struct policy_error *err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	struct policy_error dummy;
	size_t n = 0;

	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int r = -errno;

		snprintf(err->msg, sizeof(err->msg), "%s: cannot open: %s", path, strerror(-r));
		return r;
	}
	buf = malloc(POLICY_FILE_MAX + 1);
	if (!buf) {
		snprintf(err->msg, sizeof(err->msg), "%s: %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	for (;;) {
		ssize_t k = read(fd, buf + n, POLICY_FILE_MAX + 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int r = -errno;

			snprintf(err->msg, sizeof(err->msg), "%s: cannot read: %s", path, strerror(-r));
			return r;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > POLICY_FILE_MAX) {
			snprintf(err->msg, sizeof(err->msg), "%s: larger than %d bytes", path,
				 POLICY_FILE_MAX);
			return -EFBIG;
		}
	}
	*ret_buf = TAKE_PTR(buf);
	*ret_len = n;
	return 0;
}

int policy_vm_load(const char *path, struct policy_vm *ret, struct policy_error *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = read_file(path, &buf, &len, err);

	return r < 0 ? r : policy_vm_parse(buf, len, path, ret, err);
}

char *policy_vm_to_json(const struct policy_vm *p)
{
	json_t *root = policy_fields_to_json(vm_fields, p);
	char *s = NULL;

	/* No cache: no object (an empty one would not parse back: its size is required). */
	if (root && p->dc_size == 0)
		json_object_del(root, "disk_cache");
	/* No sharing: no key ("" is not a valid group name). */
	if (root && !p->sharing_group[0])
		json_object_del(root, "sharing_group");
	/* Optional strings left empty are left out: "" is not a valid path or id. */
	if (root && p->dc_size) {
		json_t *dc = json_object_get(root, "disk_cache");

		if (!p->dc_key_file[0])
			json_object_del(dc, "key_file");
		if (!p->dc_client_id[0])
			json_object_del(dc, "client_id");
		if (!p->dc_stats_file[0])
			json_object_del(dc, "stats_file");
	}
	if (root)
		s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return s;
}

uint64_t policy_balloon_target(const struct policy_vm *p, uint64_t guest_bytes, uint64_t limit,
			       enum policy_balloon_why why)
{
	uint64_t want;

	if (!p->balloon_enabled || why == POLICY_BALLOON_DRAIN)
		return 0;
	if (why == POLICY_BALLOON_PARK)
		want = p->balloon_floor;
	else if (limit < guest_bytes)
		want = limit > p->balloon_floor ? limit : p->balloon_floor;
	else
		return 0;
	return want < guest_bytes ? want & ~(PAGE_SIZE_4K - 1) : 0;
}

static uint64_t pct_pages(const struct policy_vm *p, unsigned pct, uint64_t page_size)
{
	unsigned __int128 bytes = (unsigned __int128)p->local_memory * pct / 100;
	uint64_t pages;

	if (!page_size)
		page_size = PAGE_SIZE_4K;
	pages = (uint64_t)(bytes / page_size);
	return pages ? pages : 1;
}

uint64_t policy_vm_high_pages(const struct policy_vm *p, uint64_t page_size)
{
	return pct_pages(p, p->high_pct, page_size);
}

uint64_t policy_vm_low_pages(const struct policy_vm *p, uint64_t page_size)
{
	return pct_pages(p, p->low_pct, page_size);
}

/* ---- pager configuration ------------------------------------------------------------ */

void policy_config_init(struct policy_pager_config *c)
{
	memset(c, 0, sizeof(*c));
	c->budget = 0;
	c->max_guest_memory = 1ULL << 40;
	c->max_guest_memory_per_uid = 4ULL << 40;
	snprintf(c->state_dir, sizeof(c->state_dir), "%s", UFFDVM_STATE_DIR);
	snprintf(c->socket_path, sizeof(c->socket_path), "%s", UFFDVM_RUN_DIR "/register.sock");
	snprintf(c->control_path, sizeof(c->control_path), "%s", UFFDVM_RUN_DIR "/control.sock");
	c->n_allowed_uids = 0;
	c->log_level = LOG_LVL_INFO;
	c->n_donors = 0;
	c->donor_key_file[0] = '\0';
	/* Empty: the pager derives its id from the host's machine-id (donors.c), unique per host. */
	c->client_id[0] = '\0';
	c->donor_timeout_ms = 2000;
}

bool policy_donor_url_valid(const char *url)
{
	const char *h, *colon, *end;
	char *pe;
	unsigned long port;

	if (!url || strlen(url) >= POLICY_URL_MAX)
		return false;
	if (strncmp(url, "tcp://", 6) == 0)
		h = url + 6;
	else if (strncmp(url, "rdma://", 7) == 0)
		h = url + 7;
	else
		return false;
	if (*h == '[') {
		end = strchr(h, ']');
		if (!end || end == h + 1 || end[1] != ':')
			return false;
		colon = end + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon || colon == h)
			return false;
		for (const char *c = h; c < colon; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
			      *c == '.' || *c == '-'))
				return false;
	}
	if (colon[1] < '0' || colon[1] > '9')
		return false;
	errno = 0;
	port = strtoul(colon + 1, &pe, 10);
	return !errno && *pe == '\0' && port >= 1 && port <= 65535;
}

bool policy_client_id_valid(const char *id)
{
	size_t n;

	if (!id)
		return false;
	for (n = 0; id[n]; n++) {
		char c = id[n];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == ':' || c == '@' || c == '-'))
			return false;
	}
	return n >= 1 && n <= 64;
}

/*
 * True if dir (absolute) lies under a directory that is tmpfs on every
 * mainstream distribution. Compared lexically after dropping empty and "."
 * components and resolving "..", so "//run/./x" cannot slip through.
 */
static bool path_on_tmpfs_dir(const char *dir, const char **ret_which)
{
	static const char *const bad[] = { "/run", "/var/run", "/dev/shm" };
	char norm[256];
	size_t n = 0;
	const char *s = dir;

	norm[0] = '\0';
	while (*s) {
		const char *e;
		size_t clen;

		while (*s == '/')
			s++;
		e = strchrnul(s, '/');
		clen = (size_t)(e - s);
		if (clen == 0 || (clen == 1 && s[0] == '.')) {
			/* nothing */
		} else if (clen == 2 && s[0] == '.' && s[1] == '.') {
			while (n > 0 && norm[n - 1] != '/')
				n--;
			if (n > 0)
				n--;
		} else if (n + clen + 2 < sizeof(norm)) {
			norm[n++] = '/';
			memcpy(norm + n, s, clen);
			n += clen;
		}
		norm[n] = '\0';
		s = e;
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		size_t bl = strlen(bad[i]);

		if (strncmp(norm, bad[i], bl) == 0 && (norm[bl] == '\0' || norm[bl] == '/')) {
			*ret_which = bad[i];
			return true;
		}
	}
	return false;
}

int policy_check_state_dir_fstype(const char *dir, char *err, size_t len)
{
	struct statfs st;

	if (statfs(dir, &st) < 0) {
		int r = -errno;

		if (err && len)
			snprintf(err, len, "state_dir %s: %s", dir, strerror(-r));
		return r;
	}
	if ((unsigned long)st.f_type == (unsigned long)TMPFS_MAGIC ||
	    (unsigned long)st.f_type == (unsigned long)RAMFS_MAGIC) {
		if (err && len)
			snprintf(err, len,
				 "state_dir %s is on %s: spill files there would use RAM, "
				 "choose a directory on disk",
				 dir, (unsigned long)st.f_type == (unsigned long)TMPFS_MAGIC ? "tmpfs"
											      : "ramfs");
		return -EINVAL;
	}
	return 0;
}

static int cfg_state_dir_check(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			       const struct policy_field_path *p, void *base)
{
	const struct policy_pager_config *c = base;
	const char *which;

	(void)f;
	(void)v;
	if (!path_on_tmpfs_dir(c->state_dir, &which))
		return 0;
	return policy_field_fail(x, p, "an absolute path on a disk file system",
				 "\"%.64s\" is under %s, which is tmpfs (RAM): spill files must be on disk",
				 c->state_dir, which);
}

#define CFG(m) POLICY_FIELD_AT(struct policy_pager_config, m)

static const char *const log_level_names[] = { "error", "warn", "info", "debug", NULL };
_Static_assert(LOG_LVL_ERR == 0 && LOG_LVL_DEBUG == 3, "log_level_names[] order");

static const char UIDS_ALLOWED[] = "an array of at most 16 integer uids 0..4294967294";
static const char DONORS_ALLOWED[] =
	"an array of at most 16 URLs \"tcp://HOST:PORT\" or \"rdma://HOST:PORT\"";

/* (uid_t)-1 means "no change" to chown() and friends: never a real user. */
static const struct policy_field cfg_uid_field = {
	.name = "uid", .kind = POLICY_FIELD_INT, .size = sizeof(uid_t), .lo = 0, .hi = UINT32_MAX - 1,
	.noun = "uid", .allowed = UIDS_ALLOWED,
};

static const struct policy_field cfg_donor_field = {
	.name = "donor", .kind = POLICY_FIELD_STRING, .size = POLICY_URL_MAX,
	.valid = policy_donor_url_valid, .noun = "donor URL", .allowed = DONORS_ALLOWED,
};

static const struct policy_field cfg_fields[] = {
	{ .name = "budget", .kind = POLICY_FIELD_SIZE, CFG(budget) },
	/* Victim selection indexes pages with 32 bits, two values reserved. */
	{ .name = "max_guest_memory", .kind = POLICY_FIELD_SIZE, CFG(max_guest_memory),
	  .lo = MIN_LOCAL_MEMORY, .hi = POLICY_MAX_GUEST_PAGES * PAGE_SIZE_4K,
	  .allowed = "a size from 1M to 16T - 8K (2^32 - 2 pages of 4 KiB)" },
	{ .name = "state_dir", .kind = POLICY_FIELD_PATH, CFG(state_dir), .check = cfg_state_dir_check },
	{ .name = "socket", .kind = POLICY_FIELD_PATH, CFG(socket_path) },
	{ .name = "control", .kind = POLICY_FIELD_PATH, CFG(control_path) },
	{ .name = "allowed_uids", .kind = POLICY_FIELD_ARRAY, CFG(allowed_uids), .sub = &cfg_uid_field,
	  .count_off = offsetof(struct policy_pager_config, n_allowed_uids), .noun = "uids",
	  .allowed = UIDS_ALLOWED },
	{ .name = "log_level", .kind = POLICY_FIELD_ENUM, CFG(log_level), .names = log_level_names },
	{ .name = "donors", .kind = POLICY_FIELD_ARRAY, CFG(donors), .sub = &cfg_donor_field,
	  .flags = POLICY_FIELD_UNIQUE, .count_off = offsetof(struct policy_pager_config, n_donors),
	  .noun = "donors", .allowed = DONORS_ALLOWED },
	{ .name = "donor_key_file", .kind = POLICY_FIELD_PATH, CFG(donor_key_file) },
	{ .name = "client_id", .kind = POLICY_FIELD_STRING, CFG(client_id), .lo = 1, .hi = 64,
	  .valid = policy_client_id_valid, .noun = "client id",
	  .allowed = "1..64 characters from A-Z a-z 0-9 . _ : @ -" },
	{ .name = "donor_timeout_ms", .kind = POLICY_FIELD_INT, CFG(donor_timeout_ms), .lo = 100,
	  .hi = 60000, .allowed = "an integer 100..60000 (milliseconds)" },
	/* The registered guest RAM of all of one uid's VMs: bounds what one local user makes the pager track. */
	{ .name = "max_guest_memory_per_uid", .kind = POLICY_FIELD_SIZE, CFG(max_guest_memory_per_uid),
	  .lo = MIN_LOCAL_MEMORY, .allowed = "a size >= 1M: an integer number of bytes or a string like \"2T\"" },
	{ 0 },
};

int policy_config_parse(const char *text, size_t len, const char *source,
			struct policy_pager_config *ret, struct policy_error *err)
{
	struct policy_pager_config c;
	int r;

	policy_config_init(&c);
	r = policy_fields_parse(text, len, source ? source : "<config>", cfg_fields, &c, err);
	if (r < 0)
		return r;
	*ret = c;
	return 0;
}

int policy_config_load(const char *path, struct policy_pager_config *ret, struct policy_error *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = read_file(path, &buf, &len, err);

	return r < 0 ? r : policy_config_parse(buf, len, path, ret, err);
}
