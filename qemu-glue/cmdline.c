/* SPDX-License-Identifier: MIT */
/*
 * qemu-system command-line analysis for uffd-qemu (see cmdline.h). Options
 * are walked as QEMU 7.2 does: matched by name ("-opt" or "--opt") in a copy
 * of its option table, the next argument being the value exactly when the
 * table says so; an option not in the table, -readconfig and -set are
 * refused (what follows them, or what they define, cannot be analysed).
 * Values are split into key=value pairs the way QemuOpts/keyval do,
 * including the implied first key ("-m 512", "-machine q35", "-device
 * virtio-net-pci") and ",," for a literal comma.
 * The JSON form ("-object {...}", as libvirt writes it) is flattened into the
 * same pairs ("cache.direct=on"). The rules err on the side of refusing:
 * a wrongly refused VM is an error message, a wrongly paged one is silent
 * guest memory corruption.
 */
#include "cmdline.h"

#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct kv {
	char *key;
	char *val;
};

struct opts {
	struct kv *v;
	size_t n, cap;
};

struct strbuf {
	char *s;
	size_t len;
};

struct backend {
	char *id;
	char *type; /* "memory-backend-memfd" ... */
	char *share, *hugetlb;
	const char *arg; /* the -object value as written, for messages */
};

struct glue_cmdline {
	enum glue_cmdline_action action;
	uint64_t ram_size;
	char **argv;
	size_t argv_cap; /* entries allocated, some NULL after a failed strdup */
	int argc;
	char **backends;
	size_t n_backends;
	char *guest_name;
	char *uuid;
	bool no_user_config;
	char *error;
	char *warnings;
};

/* Analysis state that does not outlive glue_cmdline_analyze(). */
struct scan {
	bool probe;
	bool machine_none;  /* the last -machine type is "none": no guest RAM */
	bool unanalysable;  /* refused even in a probe: what follows could start a guest */
	bool mem_path, numa_legacy_mem;
	const char *mem_path_arg, *numa_legacy_arg;
	const char *m_arg;
	char *m_size;       /* last "size" of -m */
	char *machine_backend;
	const char *machine_backend_arg;
	char **ram_refs;    /* backend ids guest RAM lives in, with where they came from */
	const char **ram_ref_args;
	size_t n_ram_refs;
	bool numa_memdev;
	struct backend *backends;
	size_t n_backends;
	struct strbuf hard;   /* problems no flag overrides */
	struct strbuf unsafe; /* devices touching RAM behind QEMU's page tables */
	char *guest_name;
	const char *uuid;     /* in argv */
	bool no_user_config;
	int err;              /* first -ENOMEM */
};

static __attribute__((format(printf, 3, 4))) void sb_addf(struct scan *s, struct strbuf *sb,
							  const char *fmt, ...)
{
	char *line = NULL, *n;
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (len < 0) {
		s->err = -ENOMEM;
		return;
	}
	n = realloc(sb->s, sb->len + (size_t)len + 2);
	if (!n) {
		free(line);
		s->err = -ENOMEM;
		return;
	}
	sb->s = n;
	if (sb->len)
		sb->s[sb->len++] = '\n';
	memcpy(sb->s + sb->len, line, (size_t)len + 1);
	sb->len += (size_t)len;
	free(line);
}

static void opts_clear(struct opts *o)
{
	for (size_t i = 0; i < o->n; i++) {
		free(o->v[i].key);
		free(o->v[i].val);
	}
	free(o->v);
	*o = (struct opts){ 0 };
}

/* Takes ownership of key and val (even on failure). */
static int opts_add(struct opts *o, char *key, char *val)
{
	if (!key || !val)
		goto fail;
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 8;
		struct kv *v = realloc(o->v, cap * sizeof(*v));

		if (!v)
			goto fail;
		o->v = v;
		o->cap = cap;
	}
	o->v[o->n++] = (struct kv){ key, val };
	return 0;
fail:
	free(key);
	free(val);
	return -ENOMEM;
}

/* Last value of key (QemuOpts: the last occurrence wins), or NULL. */
static const char *opts_get(const struct opts *o, const char *key)
{
	for (size_t i = o->n; i-- > 0;)
		if (strcmp(o->v[i].key, key) == 0)
			return o->v[i].val;
	return NULL;
}

static int json_flatten(struct opts *o, const char *prefix, json_t *j);

/* Flattens one member of an object or array under the key built from fmt. */
static int __attribute__((format(printf, 3, 4))) json_flatten_child(struct opts *o, json_t *v, const char *fmt, ...)
{
	char *key = NULL;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&key, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -ENOMEM;
	r = json_flatten(o, key, v);
	free(key);
	return r;
}

static int json_flatten(struct opts *o, const char *prefix, json_t *j)
{
	const char *k;
	json_t *v;
	size_t idx;
	char num[64];
	int r;

	switch (json_typeof(j)) {
	case JSON_OBJECT:
		json_object_foreach(j, k, v)
			if ((r = json_flatten_child(o, v, "%s%s%s", prefix, *prefix ? "." : "", k)) < 0)
				return r;
		return 0;
	case JSON_ARRAY:
		json_array_foreach(j, idx, v)
			if ((r = json_flatten_child(o, v, "%s.%zu", prefix, idx)) < 0)
				return r;
		return 0;
	case JSON_STRING:
		return opts_add(o, strdup(prefix), strdup(json_string_value(j)));
	case JSON_INTEGER:
		snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(j));
		return opts_add(o, strdup(prefix), strdup(num));
	case JSON_REAL:
		snprintf(num, sizeof(num), "%.17g", json_real_value(j));
		return opts_add(o, strdup(prefix), strdup(num));
	case JSON_TRUE:
		return opts_add(o, strdup(prefix), strdup("on"));
	case JSON_FALSE:
		return opts_add(o, strdup(prefix), strdup("off"));
	case JSON_NULL:
		return opts_add(o, strdup(prefix), strdup(""));
	}
	return 0;
}

/*
 * Splits "a,k=v,,w,flag" into pairs. A first item without '=' is the value
 * of implied_key; a later bare item is a boolean "on" (QemuOpts' shorthand).
 * JSON text (starting with '{') is flattened instead. Malformed JSON yields
 * no pairs: QEMU rejects it before starting any guest.
 */
static int opts_parse(const char *text, const char *implied_key, struct opts *ret)
{
	struct opts o = { 0 };
	const char *p = text;
	bool first = true;
	char *item;
	size_t cap = strlen(text) + 1;
	int r = 0;

	while (isspace((unsigned char)*p))
		p++;
	if (*p == '{') {
		json_t *j = json_loads(p, JSON_REJECT_DUPLICATES, NULL);

		if (j) {
			r = json_flatten(&o, "", j);
			json_decref(j);
		}
		if (r < 0)
			opts_clear(&o);
		else
			*ret = o;
		return r;
	}

	item = malloc(cap);
	if (!item)
		return -ENOMEM;
	p = text;
	while (r == 0) {
		size_t n = 0;
		char *eq;

		for (; *p; p++) {
			if (*p == ',') {
				if (p[1] != ',')
					break;
				p++; /* ",," is a literal comma */
			}
			item[n++] = *p;
		}
		item[n] = '\0';
		eq = strchr(item, '=');
		if (n == 0) {
			/* empty item ("a,,", trailing comma): nothing */
		} else if (eq) {
			*eq = '\0';
			r = opts_add(&o, strdup(item), strdup(eq + 1));
		} else if (first && implied_key) {
			r = opts_add(&o, strdup(implied_key), strdup(item));
		} else {
			r = opts_add(&o, strdup(item), strdup("on"));
		}
		first = false;
		if (*p != ',')
			break;
		p++;
	}
	free(item);
	if (r < 0) {
		opts_clear(&o);
		return r;
	}
	*ret = o;
	return 0;
}

static bool is_on(const char *v)
{
	static const char *const yes[] = { "on", "yes", "true", "y" };

	if (!v)
		return false;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		if (strcasecmp(v, yes[i]) == 0)
			return true;
	return false;
}

static bool is_help(const char *v)
{
	size_t n;

	if (!v)
		return false;
	if (strcmp(v, "help") == 0 || strcmp(v, "?") == 0)
		return true;
	n = strlen(v);
	return (n >= 5 && strcmp(v + n - 5, ",help") == 0) || (n >= 2 && strcmp(v + n - 2, ",?") == 0);
}

static bool in_list(const char *name, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(name, *list) == 0)
			return true;
	return false;
}

/*
 * QEMU 7.2's option table (qemu-options.hx as Debian 12 builds it), in its
 * order: the name and whether the option takes the next argument as its
 * value. It must be exact: an option read with the wrong arity shifts every
 * later argument, so "-async-teardown -device vhost-user-..." once hid the
 * device as a value. Options missing here (removed ones like -realtime, or
 * newer QEMU's) are refused by name instead of guessed at.
 */
static const struct qemu_opt {
	const char *name;
	bool has_arg;
} qemu_opts[] = {
	{ "h", false },		     { "help", false },		   { "version", false },
	{ "machine", true },	     { "M", true },		   { "cpu", true },
	{ "accel", true },	     { "smp", true },		   { "numa", true },
	{ "add-fd", true },	     { "set", true },		   { "global", true },
	{ "boot", true },	     { "m", true },		   { "mem-path", true },
	{ "mem-prealloc", false },   { "k", true },		   { "audio-help", false },
	{ "audio", true },	     { "audiodev", true },	   { "device", true },
	{ "name", true },	     { "uuid", true },		   { "fda", true },
	{ "fdb", true },	     { "hda", true },		   { "hdb", true },
	{ "hdc", true },	     { "hdd", true },		   { "cdrom", true },
	{ "blockdev", true },	     { "drive", true },		   { "mtdblock", true },
	{ "sd", true },		     { "snapshot", false },	   { "fsdev", true },
	{ "virtfs", true },	     { "iscsi", true },		   { "usb", false },
	{ "usbdevice", true },	     { "display", true },	   { "nographic", false },
	{ "spice", true },	     { "portrait", false },	   { "rotate", true },
	{ "vga", true },	     { "full-screen", false },	   { "g", true },
	{ "vnc", true },	     { "win2k-hack", false },	   { "no-fd-bootchk", false },
	{ "no-acpi", false },	     { "no-hpet", false },	   { "acpitable", true },
	{ "smbios", true },	     { "netdev", true },	   { "nic", true },
	{ "net", true },	     { "chardev", true },	   { "tpmdev", true },
	{ "bios", true },	     { "pflash", true },	   { "kernel", true },
	{ "append", true },	     { "initrd", true },	   { "dtb", true },
	{ "compat", true },	     { "fw_cfg", true },	   { "serial", true },
	{ "parallel", true },	     { "monitor", true },	   { "qmp", true },
	{ "qmp-pretty", true },	     { "mon", true },		   { "debugcon", true },
	{ "pidfile", true },	     { "singlestep", false },	   { "preconfig", false },
	{ "S", false },		     { "overcommit", true },	   { "gdb", true },
	{ "s", false },		     { "d", true },		   { "D", true },
	{ "dfilter", true },	     { "seed", true },		   { "L", true },
	{ "enable-kvm", false },     { "xen-domid", true },	   { "xen-attach", false },
	{ "xen-domid-restrict", false }, { "no-reboot", false },   { "no-shutdown", false },
	{ "action", true },	     { "loadvm", true },	   { "daemonize", false },
	{ "option-rom", true },	     { "rtc", true },		   { "icount", true },
	{ "watchdog-action", true }, { "echr", true },		   { "incoming", true },
	{ "only-migratable", false }, { "nodefaults", false },	   { "chroot", true },
	{ "runas", true },	     { "prom-env", true },	   { "semihosting", false },
	{ "semihosting-config", true }, { "old-param", false },	   { "sandbox", true },
	{ "readconfig", true },	     { "no-user-config", false },  { "trace", true },
	{ "plugin", true },	     { "qtest", true },		   { "qtest-log", true },
	{ "async-teardown", false }, { "msg", true },		   { "dump-vmstate", true },
	{ "enable-sync-profile", false }, { "object", true },
};

/* Options whose value names a disk image (as does a positional argument). */
static const char *const image_opts[] = {
	"hda", "hdb", "hdc", "hdd", "fda", "fdb", "cdrom", "sd", "pflash", "mtdblock", NULL,
};

/* Options whose value "help" / "?" / "...,help" lists something and exits. */
static const char *const help_opts[] = {
	"machine", "M", "cpu", "device", "accel", "object", "netdev", "nic", "net",
	"chardev", "audiodev", "display", "vga", "d", "trace", "global", "watchdog-action",
	"blockdev", "drive", NULL,
};

static void add_ram_ref(struct scan *s, const char *id, const char *arg)
{
	char **refs;
	const char **args;

	for (size_t i = 0; i < s->n_ram_refs; i++)
		if (strcmp(s->ram_refs[i], id) == 0)
			return;
	refs = realloc(s->ram_refs, (s->n_ram_refs + 1) * sizeof(*refs));
	if (refs)
		s->ram_refs = refs;
	args = realloc(s->ram_ref_args, (s->n_ram_refs + 1) * sizeof(*args));
	if (args)
		s->ram_ref_args = args;
	if (!refs || !args || !(s->ram_refs[s->n_ram_refs] = strdup(id))) {
		s->err = -ENOMEM;
		return;
	}
	s->ram_ref_args[s->n_ram_refs++] = arg;
}

static void scan_object(struct scan *s, const char *value, const struct opts *o)
{
	const char *type = opts_get(o, "qom-type"), *id = opts_get(o, "id");
	struct backend *b;

	if (type && strstr(type, "vhost-user"))
		sb_addf(s, &s->unsafe,
			"-object %s: a vhost-user backend (cryptodev-vhost-user) maps guest RAM into "
			"another process whose accesses bypass uffd-pager; use a backend QEMU runs "
			"itself (cryptodev-backend-builtin)",
			value);
	if (!type || strncmp(type, "memory-backend-", 15) != 0)
		return;
	if (is_on(opts_get(o, "prealloc")))
		sb_addf(s, &s->unsafe,
			"-object %s: prealloc=on touches all of guest RAM at start-up, defeating "
			"the pager's residency limit; remove prealloc=on",
			value);
	if (!id)
		return; /* QEMU refuses an object without id */
	b = realloc(s->backends, (s->n_backends + 1) * sizeof(*b));
	if (!b) {
		s->err = -ENOMEM;
		return;
	}
	s->backends = b;
	b = &s->backends[s->n_backends++];
	*b = (struct backend){ .id = strdup(id), .type = strdup(type), .arg = value };
	if (opts_get(o, "share"))
		b->share = strdup(opts_get(o, "share"));
	if (opts_get(o, "hugetlb"))
		b->hugetlb = strdup(opts_get(o, "hugetlb"));
	if (!b->id || !b->type)
		s->err = -ENOMEM;
}

static void scan_device(struct scan *s, const char *value, const struct opts *o)
{
	const char *driver = opts_get(o, "driver"), *memdev = opts_get(o, "memdev");

	if (!driver)
		return;
	if (strstr(driver, "vhost-user"))
		sb_addf(s, &s->unsafe,
			"-device %s: vhost-user devices (virtiofsd, vhost-user-blk/-net/-fs) map guest "
			"RAM into another process whose accesses bypass uffd-pager; use a device QEMU "
			"emulates itself (virtio-blk, virtio-net with vhost-net, virtio-9p)",
			value);
	else if (strncmp(driver, "vfio", 4) == 0)
		sb_addf(s, &s->unsafe,
			"-device %s: vfio pins all of guest RAM for device DMA, which the pager can "
			"neither evict nor track; pass through no device to a paged guest",
			value);
	else if (strncmp(driver, "vhost-vdpa", 10) == 0)
		sb_addf(s, &s->unsafe,
			"-device %s: vDPA devices DMA into pinned guest RAM behind the pager's back; "
			"use an emulated virtio device",
			value);
	/* Hot-pluggable RAM lives in a backend too; it must be shareable like boot RAM. */
	if (memdev && (strcmp(driver, "pc-dimm") == 0 || strcmp(driver, "nvdimm") == 0 ||
		       strncmp(driver, "virtio-mem", 10) == 0))
		add_ram_ref(s, memdev, value);
}

static void scan_netdev(struct scan *s, const char *opt, const char *value, const struct opts *o)
{
	const char *type = opts_get(o, "type");

	if (!type)
		return;
	if (strcmp(type, "vhost-user") == 0)
		sb_addf(s, &s->unsafe,
			"-%s %s: a vhost-user backend maps guest RAM into another process whose "
			"accesses bypass uffd-pager; use -netdev tap (vhost=on is fine) or user",
			opt, value);
	else if (strcmp(type, "vhost-vdpa") == 0)
		sb_addf(s, &s->unsafe,
			"-%s %s: vhost-vdpa DMAs into pinned guest RAM behind the pager's back; use "
			"-netdev tap (vhost=on is fine) or user",
			opt, value);
}

/* Whether a flattened block option key is leaf or ends in ".leaf" (a child node's). */
static bool block_key_is(const char *key, const char *leaf)
{
	size_t k = strlen(key), l = strlen(leaf);

	return k >= l && strcmp(key + k - l, leaf) == 0 && (k == l || key[k - l - 1] == '.');
}

/* How a message names the option: "-drive VALUE", or a positional image as "VALUE". */
#define OPT_FMT "%s%s%s%s"
#define OPT_ARGS(opt, value) (opt) ? "-" : "", (opt) ? (opt) : "", (opt) ? " " : "", (value)

static void scan_image(struct scan *s, const char *opt, const char *value, const char *filename);

/*
 * O_DIRECT and native AIO let the host kernel pin guest RAM pages and DMA
 * into them, bypassing the page tables where the pager's faults and
 * write-protection happen; a page evicted meanwhile loses the data. The
 * settings count at any depth ("file.cache.direct", "file.aio", the JSON
 * {"file":{"cache":{"direct":true}}}): the block layer opens each child
 * node with its own flags, and the protocol node is the one doing the I/O.
 * The userspace NVMe driver is VFIO underneath: the device DMAs into guest
 * RAM directly.
 */
static void scan_disk(struct scan *s, const char *opt, const char *value, const struct opts *o,
		      bool top)
{
	const char *why_key = NULL, *why_val = NULL;
	bool nvme = false;

	for (size_t i = 0; i < o->n; i++) {
		const char *key = o->v[i].key, *val = o->v[i].val;
		bool unsafe = false;

		if (opts_get(o, key) != val)
			continue; /* a later occurrence of the key wins, as in QEMU */
		if (block_key_is(key, "cache"))
			/* bdrv_parse_cache_mode: "off" is a synonym of "none" */
			unsafe = !strcmp(val, "none") || !strcmp(val, "off") || !strcmp(val, "directsync");
		else if (block_key_is(key, "cache.direct"))
			unsafe = is_on(val);
		else if (block_key_is(key, "aio"))
			unsafe = !strcmp(val, "native");
		else if (block_key_is(key, "driver") && !strcmp(val, "nvme"))
			nvme = true;
		else if (top && opt && strcmp(opt, "drive") == 0 && strcmp(key, "file") == 0)
			scan_image(s, opt, value, val);
		if (unsafe && !why_key) {
			why_key = key;
			why_val = val;
		}
	}
	if (why_key)
		sb_addf(s, &s->unsafe,
			OPT_FMT ": %s=%s means O_DIRECT: the host DMAs straight into guest RAM pages "
			"it pinned, and a page evicted meanwhile loses the data; use cache=writeback "
			"(the default) and aio=threads or io_uring, in child nodes too",
			OPT_ARGS(opt, value), why_key, why_val);
	if (nvme)
		sb_addf(s, &s->unsafe,
			OPT_FMT ": the nvme block driver hands the NVMe device guest RAM for DMA "
			"through VFIO, behind the pager's back; use the file or host_device driver",
			OPT_ARGS(opt, value));
}

/*
 * A disk image named by a filename: "json:{...}" is QEMU's pseudo-protocol
 * for a whole block node tree in the filename, so it is checked like a
 * -blockdev; "nvme://" selects the nvme driver.
 */
static void scan_image(struct scan *s, const char *opt, const char *value, const char *filename)
{
	struct opts o = { 0 };
	const char *p = filename + 5;

	if (strncmp(filename, "nvme://", 7) == 0) {
		sb_addf(s, &s->unsafe,
			OPT_FMT ": the nvme block driver hands the NVMe device guest RAM for DMA "
			"through VFIO, behind the pager's back; use the file or host_device driver",
			OPT_ARGS(opt, value));
		return;
	}
	if (strncmp(filename, "json:", 5) != 0)
		return;
	while (isspace((unsigned char)*p))
		p++;
	if (*p != '{')
		return; /* QEMU accepts only a JSON object */
	if (opts_parse(p, NULL, &o) < 0) {
		s->err = -ENOMEM;
		return;
	}
	/* QEMU reads "json:" in the top filename only: nested "file" strings are node names. */
	scan_disk(s, opt, value, &o, false);
	opts_clear(&o);
}

static void scan_option(struct scan *s, const char *name, const char *value)
{
	static const struct {
		const char *opt, *implied;
	} implied[] = {
		{ "m", "size" },        { "machine", "type" }, { "M", "type" },
		{ "object", "qom-type" }, { "device", "driver" }, { "netdev", "type" },
		{ "net", "type" },      { "nic", "type" },     { "numa", "type" },
		{ "name", "guest" },    { "drive", NULL },     { "blockdev", "driver" },
		{ "overcommit", NULL },
	};
	const char *key = NULL, *v;
	struct opts o = { 0 };
	size_t i;

	if (in_list(name, help_opts) && is_help(value)) {
		s->probe = true;
		return;
	}
	if (strcmp(name, "mem-path") == 0) {
		s->mem_path = true;
		s->mem_path_arg = value;
		return;
	}
	if (strcmp(name, "dump-vmstate") == 0) {
		s->probe = true;
		return;
	}
	if (strcmp(name, "uuid") == 0) {
		s->uuid = value;
		return;
	}
	if (in_list(name, image_opts)) {
		scan_image(s, name, value, value);
		return;
	}
	if (strcmp(name, "readconfig") == 0 || strcmp(name, "set") == 0) {
		/* Refused, not parsed: a config file or a -set can add devices, disks and
		 * memory backends, or change ones already checked. */
		s->unanalysable = true;
		sb_addf(s, &s->hard,
			"-%s %s: uffd-qemu cannot check what %s defines (devices, disks, memory "
			"backends) and refuses it; write those settings as command-line options "
			"(-device, -drive, -object ...)",
			name, value, strcmp(name, "set") == 0 ? "-set" : "a -readconfig file");
		return;
	}
	for (i = 0; i < sizeof(implied) / sizeof(implied[0]); i++)
		if (strcmp(name, implied[i].opt) == 0)
			break;
	if (i == sizeof(implied) / sizeof(implied[0]))
		return;
	key = implied[i].implied;
	if (opts_parse(value, key, &o) < 0) {
		s->err = -ENOMEM;
		return;
	}

	if (strcmp(name, "m") == 0) {
		if ((v = opts_get(&o, "size"))) {
			free(s->m_size);
			s->m_size = strdup(v);
			s->m_arg = value;
			if (!s->m_size)
				s->err = -ENOMEM;
		}
	} else if (strcmp(name, "machine") == 0 || strcmp(name, "M") == 0) {
		/* -machine options merge: the last type= wins ("-M none -M pc" starts a pc). */
		if ((v = opts_get(&o, "type")))
			s->machine_none = strcmp(v, "none") == 0;
		if ((v = opts_get(&o, "memory-backend"))) {
			free(s->machine_backend);
			s->machine_backend = strdup(v);
			s->machine_backend_arg = value;
			if (!s->machine_backend)
				s->err = -ENOMEM;
		}
	} else if (strcmp(name, "object") == 0) {
		scan_object(s, value, &o);
	} else if (strcmp(name, "numa") == 0) {
		v = opts_get(&o, "type");
		if (v && strcmp(v, "node") == 0) {
			if (opts_get(&o, "memdev")) {
				s->numa_memdev = true;
				add_ram_ref(s, opts_get(&o, "memdev"), value);
			} else if (opts_get(&o, "mem")) {
				s->numa_legacy_mem = true;
				s->numa_legacy_arg = value;
			}
		}
	} else if (strcmp(name, "device") == 0) {
		scan_device(s, value, &o);
	} else if (strcmp(name, "netdev") == 0 || strcmp(name, "net") == 0 ||
		   strcmp(name, "nic") == 0) {
		scan_netdev(s, name, value, &o);
	} else if (strcmp(name, "drive") == 0 || strcmp(name, "blockdev") == 0) {
		scan_disk(s, name, value, &o, true);
	} else if (strcmp(name, "overcommit") == 0) {
		v = opts_get(&o, "mem-lock");
		/* "on" and (newer QEMU) "on-fault" both lock guest RAM. */
		if (v && !(strcasecmp(v, "off") == 0 || strcasecmp(v, "no") == 0 ||
			   strcasecmp(v, "false") == 0))
			sb_addf(s, &s->unsafe,
				"-overcommit %s: mlock'ed guest RAM cannot be evicted and is fully "
				"faulted in at start-up; use mem-lock=off",
				value);
	} else if (strcmp(name, "name") == 0) {
		if ((v = opts_get(&o, "guest"))) {
			free(s->guest_name);
			s->guest_name = strdup(v);
			if (!s->guest_name)
				s->err = -ENOMEM;
		}
	}
	opts_clear(&o);
}

static const struct qemu_opt *find_qemu_opt(const char *name)
{
	for (size_t i = 0; i < sizeof(qemu_opts) / sizeof(qemu_opts[0]); i++)
		if (strcmp(qemu_opts[i].name, name) == 0)
			return &qemu_opts[i];
	return NULL;
}

/* Walks argv as QEMU 7.2's lookup_opt() does: "-opt" or "--opt", then its value if it has one. */
static void scan_argv(struct scan *s, int argc, char *const *argv)
{
	for (int i = 1; i < argc && s->err == 0; i++) {
		const char *a = argv[i], *name;
		const struct qemu_opt *q;

		if (a[0] != '-') {
			scan_image(s, NULL, a, a); /* a disk image given positionally */
			continue;
		}
		name = a + 1;
		if (name[0] == '-')
			name++;
		q = find_qemu_opt(name);
		if (!q) {
			/* Its arity unknown, no later argument can be told option from value. */
			s->unanalysable = true;
			sb_addf(s, &s->hard,
				"'%s': not an option of QEMU 7.2, so uffd-qemu cannot tell whether it takes "
				"a value or what it does to guest RAM, and refuses the command line",
				a);
			return;
		}
		if (!q->has_arg) {
			if (strcmp(name, "version") == 0 || strcmp(name, "help") == 0 ||
			    strcmp(name, "h") == 0 || strcmp(name, "audio-help") == 0)
				s->probe = true;
			else if (strcmp(name, "no-user-config") == 0)
				s->no_user_config = true;
			else if (strcmp(name, "mem-prealloc") == 0)
				sb_addf(s, &s->unsafe,
					"-mem-prealloc touches all of guest RAM at start-up, defeating "
					"the pager's residency limit; remove it");
			continue;
		}
		if (i + 1 >= argc)
			break; /* QEMU reports the missing value itself */
		scan_option(s, name, argv[++i]);
	}
	if (s->machine_none)
		s->probe = true;
}

static const struct backend *find_backend(const struct scan *s, const char *id)
{
	for (size_t i = s->n_backends; i-- > 0;)
		if (strcmp(s->backends[i].id, id) == 0)
			return &s->backends[i];
	return NULL;
}

static void check_backend(struct scan *s, const char *id, const char *ref_arg)
{
	const struct backend *b = find_backend(s, id);

	if (!b) {
		sb_addf(s, &s->hard,
			"'%s' (in %s) names memory backend '%s', which no -object defines; define it "
			"as -object memory-backend-memfd,id=%s,size=...,share=on",
			id, ref_arg, id, id);
		return;
	}
	if (strcmp(b->type, "memory-backend-memfd") != 0) {
		sb_addf(s, &s->hard,
			"-object %s: guest RAM in a %s cannot be paged (the pager needs the RAM in a "
			"shared memfd it can read and punch); use -object "
			"memory-backend-memfd,id=%s,size=...,share=on",
			b->arg, b->type, b->id);
		return;
	}
	if (!is_on(b->share))
		sb_addf(s, &s->hard,
			"-object %s: share=%s makes guest RAM private copy-on-write memory the pager "
			"cannot reach through the memfd; add share=on",
			b->arg, b->share ? b->share : "off (the default)");
	if (is_on(b->hugetlb))
		sb_addf(s, &s->hard,
			"-object %s: hugetlb=on is not supported (the pager works in 4 KiB pages); "
			"remove hugetlb=on",
			b->arg);
}

static void check_ram(struct scan *s, struct glue_cmdline *c)
{
	size_t i;

	if (s->mem_path)
		sb_addf(s, &s->hard,
			"-mem-path %s: guest RAM in a file mapping cannot be paged; remove -mem-path "
			"(uffd-qemu then puts guest RAM in a shared memfd)",
			s->mem_path_arg);
	if (s->machine_backend)
		add_ram_ref(s, s->machine_backend, s->machine_backend_arg);
	for (i = 0; i < s->n_ram_refs; i++)
		check_backend(s, s->ram_refs[i], s->ram_ref_args[i]);

	if (!s->machine_backend && !s->numa_memdev) {
		if (s->numa_legacy_mem)
			sb_addf(s, &s->hard,
				"-numa %s: mem= gives a node anonymous RAM that cannot be paged; use "
				"memdev= with -object memory-backend-memfd,...,share=on per node",
				s->numa_legacy_arg);
		c->action = GLUE_CMDLINE_ADD_BACKEND;
	} else {
		c->action = GLUE_CMDLINE_KEEP;
	}
}

static int build_result(struct scan *s, struct glue_cmdline *c, int argc, char *const *argv,
			unsigned flags)
{
	size_t extra = c->action == GLUE_CMDLINE_ADD_BACKEND ? 4 : 0;
	int n = 0;

	c->argv_cap = (size_t)argc + extra;
	c->argv = calloc(c->argv_cap + 1, sizeof(char *));
	if (!c->argv)
		return -ENOMEM;
	for (int i = 0; i < argc; i++)
		if (!(c->argv[n++] = strdup(argv[i])))
			return -ENOMEM;
	if (extra) {
		/* A later -machine merges with earlier ones: the machine type stays. */
		c->argv[n++] = strdup("-object");
		if (asprintf(&c->argv[n++],
			     "memory-backend-memfd,id=" GLUE_CMDLINE_BACKEND_ID ",size=%llu,share=on",
			     (unsigned long long)c->ram_size) < 0)
			c->argv[n - 1] = NULL;
		c->argv[n++] = strdup("-machine");
		c->argv[n++] = strdup("memory-backend=" GLUE_CMDLINE_BACKEND_ID);
		for (int i = argc; i < n; i++)
			if (!c->argv[i])
				return -ENOMEM;
		if (!(c->backends = calloc(1, sizeof(char *))) ||
		    !(c->backends[0] = strdup(GLUE_CMDLINE_BACKEND_ID)))
			return -ENOMEM;
		c->n_backends = 1;
	} else if (c->action == GLUE_CMDLINE_KEEP) {
		c->backends = TAKE_PTR(s->ram_refs);
		c->n_backends = s->n_ram_refs;
		s->n_ram_refs = 0;
	}
	c->argc = n;

	if (c->action != GLUE_CMDLINE_PROBE || s->unanalysable) {
		bool refuse_unsafe = s->unsafe.len && !(flags & GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES);

		if (s->hard.len || refuse_unsafe) {
			struct strbuf all = { 0 };

			if (s->hard.len)
				sb_addf(s, &all, "%s", s->hard.s);
			if (refuse_unsafe)
				sb_addf(s, &all,
					"%s\n(devices that touch guest RAM outside QEMU's page tables are "
					"refused; --allow-unsafe-devices overrides this at the risk of "
					"silent guest memory corruption)",
					s->unsafe.s);
			c->error = all.s;
			c->action = GLUE_CMDLINE_REFUSE;
		} else if (s->unsafe.len) {
			c->warnings = s->unsafe.s;
			s->unsafe.s = NULL;
		}
	}
	return s->err;
}

int glue_cmdline_parse_size(const char *s, uint64_t default_unit, uint64_t *ret_bytes)
{
	uint64_t whole = 0, frac_num = 0, frac_den = 1, mult = default_unit;
	const char *p = s;

	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (whole > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		for (; isdigit((unsigned char)*p); p++) {
			if (frac_den < 1000000000ULL) {
				frac_num = frac_num * 10 + (uint64_t)(*p - '0');
				frac_den *= 10;
			}
		}
	}
	if (*p) {
		static const char units[] = "BKMGTPE";
		const char *u = strchr(units, toupper((unsigned char)*p));

		if (!u || p[1] != '\0')
			return -EINVAL;
		mult = 1ULL << (10 * (u - units));
	}
	if (whole && mult > UINT64_MAX / whole)
		return -ERANGE;
	if (frac_num && mult / frac_den > UINT64_MAX / frac_num - 1)
		return -ERANGE;
	*ret_bytes = whole * mult + (uint64_t)((double)frac_num / (double)frac_den * (double)mult);
	return 0;
}

static void scan_clear(struct scan *s)
{
	for (size_t i = 0; i < s->n_backends; i++) {
		free(s->backends[i].id);
		free(s->backends[i].type);
		free(s->backends[i].share);
		free(s->backends[i].hugetlb);
	}
	free(s->backends);
	for (size_t i = 0; i < s->n_ram_refs; i++)
		free(s->ram_refs[i]);
	free(s->ram_refs);
	free(s->ram_ref_args);
	free(s->m_size);
	free(s->machine_backend);
	free(s->hard.s);
	free(s->unsafe.s);
	free(s->guest_name);
}

int glue_cmdline_analyze(int argc, char *const *argv, unsigned flags, struct glue_cmdline **ret)
{
	struct scan s = { 0 };
	struct glue_cmdline *c;
	int r;

	if (argc < 1 || !argv || !argv[0])
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->ram_size = GLUE_CMDLINE_DEFAULT_RAM;

	scan_argv(&s, argc, argv);
	if (s.m_size) {
		uint64_t sz;

		r = glue_cmdline_parse_size(s.m_size, 1ULL << 20, &sz);
		if (r < 0 || sz == 0)
			sb_addf(&s, &s.hard,
				"-m %s: cannot read the guest RAM size '%s' (expected e.g. 512, 512M, 2G "
				"or size=2G,slots=2,maxmem=8G)",
				s.m_arg, s.m_size);
		else
			c->ram_size = (sz + 8191) & ~8191ULL; /* QEMU aligns -m to 8 KiB */
	}
	c->action = GLUE_CMDLINE_PROBE;
	if (!s.probe && s.err == 0)
		check_ram(&s, c);
	c->guest_name = TAKE_PTR(s.guest_name);
	c->no_user_config = s.no_user_config;
	if (s.uuid && !(c->uuid = strdup(s.uuid)))
		s.err = -ENOMEM;
	r = build_result(&s, c, argc, argv, flags);
	scan_clear(&s);
	if (r < 0) {
		glue_cmdline_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

void glue_cmdline_free(struct glue_cmdline *c)
{
	if (!c)
		return;
	for (size_t i = 0; c->argv && i < c->argv_cap; i++)
		free(c->argv[i]);
	free(c->argv);
	for (size_t i = 0; i < c->n_backends; i++)
		free(c->backends[i]);
	free(c->backends);
	free(c->guest_name);
	free(c->uuid);
	free(c->error);
	free(c->warnings);
	free(c);
}

enum glue_cmdline_action glue_cmdline_action(const struct glue_cmdline *c) { return c->action; }
uint64_t glue_cmdline_ram_size(const struct glue_cmdline *c) { return c->ram_size; }
char *const *glue_cmdline_argv(const struct glue_cmdline *c) { return c->argv; }
int glue_cmdline_argc(const struct glue_cmdline *c) { return c->argc; }
size_t glue_cmdline_n_backends(const struct glue_cmdline *c) { return c->n_backends; }
const char *glue_cmdline_backend(const struct glue_cmdline *c, size_t i)
{
	return i < c->n_backends ? c->backends[i] : NULL;
}
const char *glue_cmdline_guest_name(const struct glue_cmdline *c) { return c->guest_name; }
const char *glue_cmdline_uuid(const struct glue_cmdline *c) { return c->uuid; }
bool glue_cmdline_reads_user_config(const struct glue_cmdline *c) { return !c->no_user_config; }
const char *glue_cmdline_error(const struct glue_cmdline *c) { return c->error; }
const char *glue_cmdline_warnings(const struct glue_cmdline *c) { return c->warnings; }
