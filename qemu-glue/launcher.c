/* SPDX-License-Identifier: MIT */
/*
 * uffd-qemu: starts qemu-system with guest RAM handed to uffd-pager. It
 * rewrites the command line so guest RAM is a shared memfd (or refuses one
 * that cannot be paged safely), checks that the pager answers, and execs
 * QEMU with libuffd-glue.so preloaded and the VM's identity and policy in
 * the environment (proto/glue-proto.h); the shim inside QEMU does the rest.
 * It can stand in for QEMU in libvirt's <emulator>: without "--" every
 * argument is QEMU's, and capability probes (-machine none, -version, ...)
 * are exec'ed untouched, without the shim. In that mode nothing the
 * unprivileged side controls names a file: the QEMU binary, the pager
 * socket and the policy directory come from a root-owned configuration
 * file, and the policy is looked up by the domain's name (-name guest=)
 * in a root-owned directory, so a domain cannot pick another's policy or
 * a file it wrote itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "cache-launch.h"
#include "cmdline.h"
#include "config.h"
#include "glue-proto.h"
#include "log.h"
#include "policy.h"
#include "util.h"

#define DEFAULT_QEMU "/usr/bin/qemu-system-x86_64"
#define QEMU_USER_CONFIG "/etc/qemu/qemu.conf" /* read by QEMU 7.2 without -no-user-config */
#define GLUE_LIB_NAME "libuffd-glue.so"
#define ENV_QEMU_BINARY "UFFD_QEMU_BINARY"
#define ENV_GLUE_LIB "UFFD_GLUE_LIB"
#define ENV_CONF "UFFD_QEMU_CONF"
#define DEFAULT_CONF "/etc/uffdvm/uffd-qemu.conf"
#define DEFAULT_POLICY_DIR "/etc/uffdvm/policies"
#define CONF_MAX_SIZE (64 * 1024)

#ifndef UFFD_GLUE_LIBDIR
#define UFFD_GLUE_LIBDIR "/usr/local/lib"
#endif

struct launcher_args {
	const char *pager_socket;
	const char *policy_file;
	const char *name;
	bool allow_unsafe;
	bool emulator_mode; /* no "--": started as libvirt's <emulator> */
	int qemu_argc;
	char **qemu_argv; /* argv[0] is the QEMU binary */
};

/* uffd-qemu.conf: what libvirt mode may not take from its caller. */
struct launcher_conf {
	char path[PATH_MAX];
	bool found;
	char qemu[PATH_MAX];
	char pager_socket[108];
	char policy_dir[PATH_MAX];
	bool require_policy; /* refuse a domain without a policy file */
	bool allow_unsafe;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: uffd-qemu [--pager SOCKET] [--policy FILE] [--name NAME]\n"
		"                 [--allow-unsafe-devices] -- qemu-system-x86_64 ARGS...\n"
		"       uffd-qemu QEMU-ARGS...   (as libvirt's <emulator>; QEMU is $" ENV_QEMU_BINARY
		" or " DEFAULT_QEMU ")\n"
		"\n"
		"Starts QEMU with its guest RAM paged by uffd-pager.\n"
		"  --pager SOCKET          registration socket (default " UFFDVM_RUN_DIR "/register.sock)\n"
		"  --policy FILE           per-VM policy (JSON): name, local_memory, on_pager_unavailable...\n"
		"  --name NAME             VM name (default: the policy's, else QEMU's -name, else qemu-PID)\n"
		"  --allow-unsafe-devices  start even with devices that touch guest RAM outside QEMU's\n"
		"                          page tables (vhost-user, vfio, O_DIRECT disks...): may corrupt\n"
		"                          the guest silently\n"
		"  --help                  this text\n"
		"\n"
		"As libvirt's <emulator> (no \"--\"), every argument is QEMU's; the settings come from\n"
		"the root-owned " DEFAULT_CONF " (or $" ENV_CONF "), lines of KEY = VALUE:\n"
		"  qemu = PATH               the real QEMU (default " DEFAULT_QEMU ")\n"
		"  pager_socket = PATH       registration socket (default " UFFDVM_RUN_DIR "/register.sock)\n"
		"  policy_dir = DIR          root-owned directory of NAME.json policies, NAME from\n"
		"                            -name guest=NAME (default " DEFAULT_POLICY_DIR ")\n"
		"  require_policy = yes|no   refuse a domain without a policy file (default no)\n"
		"  allow_unsafe_devices = yes|no  as --allow-unsafe-devices (default no)\n"
		"See docs/libvirt.md and uffd-qemu(1).\n"
		"Environment: " ENV_GLUE_LIB " (path of " GLUE_LIB_NAME "), " ENV_QEMU_BINARY
		" (overrides 'qemu'), " ENV_CONF ".\n");
}

/* Usage errors exit 2 so that a wrapper can tell them from a refusal (1). */
static __attribute__((noreturn, format(printf, 1, 2))) void usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("uffd-qemu: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'uffd-qemu --help'.\n", stderr);
	exit(2);
}

static bool has_double_dash(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--") == 0)
			return true;
	return false;
}

/*
 * A file that decides what an unprivileged QEMU may do must be writable by
 * root alone: owned by root, not group- or world-writable. Returns 0, or
 * -EPERM with the reason in why.
 */
static int check_trusted(const struct stat *st, const char *what, const char *path, char *why, size_t whylen)
{
	if (st->st_uid != 0) {
		snprintf(why, whylen, "%s %s is owned by uid %u, not root; refusing to trust it", what, path,
			 (unsigned)st->st_uid);
		return -EPERM;
	}
	if (st->st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(why, whylen, "%s %s is %s-writable (mode %04o); refusing to trust it (chmod go-w)", what,
			 path, (st->st_mode & S_IWOTH) ? "world" : "group", (unsigned)(st->st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

/* Reads a whole small regular file from an open fd into a NUL-terminated buffer. */
static int read_small_file(int fd, size_t max, char **ret_text, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;

	buf = malloc(max + 1);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = read(fd, buf + len, max + 1 - len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max)
			return -EFBIG;
	}
	buf[len] = '\0';
	*ret_len = len;
	*ret_text = TAKE_PTR(buf);
	return 0;
}

static bool parse_bool(const char *v, bool *ret)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1"))
		*ret = true;
	else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0"))
		*ret = false;
	else
		return false;
	return true;
}

/*
 * Loads uffd-qemu.conf ($UFFD_QEMU_CONF or DEFAULT_CONF). A missing default
 * file means defaults; a missing file named by the environment, an
 * untrusted file or a syntax error is fatal (exit 1), naming file, line,
 * column and the allowed keys or values.
 */
static void load_conf(struct launcher_conf *c)
{
	const char *env = getenv(ENV_CONF);
	_cleanup_free_ char *text = NULL;
	_cleanup_close_ int fd = -1;
	char why[PATH_MAX + 128];
	struct stat st;
	size_t len;
	char *line;
	int r, lineno = 1;

	snprintf(c->path, sizeof(c->path), "%s", env && *env ? env : DEFAULT_CONF);
	snprintf(c->qemu, sizeof(c->qemu), "%s", DEFAULT_QEMU);
	snprintf(c->pager_socket, sizeof(c->pager_socket), "%s", UFFDVM_RUN_DIR "/register.sock");
	snprintf(c->policy_dir, sizeof(c->policy_dir), "%s", DEFAULT_POLICY_DIR);

	fd = open(c->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT && !(env && *env))
			return;
		log_err("cannot open configuration %s: %s", c->path, strerror(errno));
		exit(1);
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		log_err("configuration %s is not a regular file", c->path);
		exit(1);
	}
	if (check_trusted(&st, "configuration", c->path, why, sizeof(why)) < 0) {
		log_err("%s", why);
		exit(1);
	}
	r = read_small_file(fd, CONF_MAX_SIZE, &text, &len);
	if (r < 0) {
		log_err("cannot read configuration %s: %s", c->path, r == -EFBIG ? "larger than 64 KiB" : strerror(-r));
		exit(1);
	}
	c->found = true;
	for (char *next = text; next; lineno++) {
		char *key, *val, *eq, *end;
		size_t vlen;

		line = next;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		key = line + strspn(line, " \t");
		if (*key == '#' || *key == '\0' || *key == '\r')
			continue;
		eq = strchr(key, '=');
		if (!eq) {
			log_err("%s:%d:%d: expected KEY = VALUE", c->path, lineno, (int)(key - line) + 1);
			exit(1);
		}
		val = eq + 1 + strspn(eq + 1, " \t");
		for (end = eq; end > key && (end[-1] == ' ' || end[-1] == '\t'); end--)
			;
		*end = '\0';
		vlen = strlen(val);
		while (vlen && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t' || val[vlen - 1] == '\r'))
			val[--vlen] = '\0';
		if (!strcmp(key, "qemu") || !strcmp(key, "pager_socket") || !strcmp(key, "policy_dir")) {
			char *dst = !strcmp(key, "qemu") ? c->qemu
				    : !strcmp(key, "pager_socket") ? c->pager_socket : c->policy_dir;
			size_t cap = !strcmp(key, "pager_socket") ? sizeof(c->pager_socket) : PATH_MAX;

			if (val[0] != '/' || vlen >= cap) {
				log_err("%s:%d:%d: '%s' must be an absolute path of at most %zu bytes", c->path,
					lineno, (int)(val - line) + 1, key, cap - 1);
				exit(1);
			}
			memcpy(dst, val, vlen + 1);
		} else if (!strcmp(key, "require_policy") || !strcmp(key, "allow_unsafe_devices")) {
			if (!parse_bool(val, !strcmp(key, "require_policy") ? &c->require_policy : &c->allow_unsafe)) {
				log_err("%s:%d:%d: '%s' is '%s' (allowed: yes, no)", c->path, lineno,
					(int)(val - line) + 1, key, val);
				exit(1);
			}
		} else {
			log_err("%s:%d:%d: unknown key '%s' (allowed: qemu, pager_socket, policy_dir, "
				"require_policy, allow_unsafe_devices)", c->path, lineno, (int)(key - line) + 1, key);
			exit(1);
		}
	}
}

/*
 * libvirt mode: the policy of domain `name` is policy_dir/NAME.json. The
 * directory and the file must be root's alone, and the file is opened
 * relative to the checked directory without following a symlink, so what
 * was checked is what is read. Returns 0 (policy loaded), -ENOENT (no
 * policy for this domain) or another -errno with the reason logged.
 */
static int load_domain_policy(const struct launcher_conf *c, const char *name, struct policy_vm *ret)
{
	_cleanup_close_ int dfd = -1, fd = -1;
	_cleanup_free_ char *text = NULL;
	char why[2 * PATH_MAX], file[PATH_MAX + 80];
	struct policy_error perr = { 0 };
	struct stat st;
	size_t len;
	int r;

	dfd = open(c->policy_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		r = -errno;
		if (r == -ENOENT)
			return r;
		return log_err_errno(r, "policy directory %s (from %s)", c->policy_dir,
				     c->found ? c->path : "the defaults");
	}
	if (fstat(dfd, &st) < 0)
		return log_err_errno(-errno, "policy directory %s", c->policy_dir);
	if (check_trusted(&st, "policy directory", c->policy_dir, why, sizeof(why)) < 0) {
		log_err("%s", why);
		return -EPERM;
	}
	snprintf(file, sizeof(file), "%s/%s.json", c->policy_dir, name);
	fd = openat(dfd, file + strlen(c->policy_dir) + 1, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		if (r == -ENOENT)
			return r;
		if (r == -ELOOP) {
			log_err("policy %s is a symbolic link; refusing to follow it", file);
			return -EPERM;
		}
		return log_err_errno(r, "cannot open policy %s", file);
	}
	if (fstat(fd, &st) < 0)
		return log_err_errno(-errno, "policy %s", file);
	if (!S_ISREG(st.st_mode)) {
		log_err("policy %s is not a regular file", file);
		return -EINVAL;
	}
	if (check_trusted(&st, "policy", file, why, sizeof(why)) < 0) {
		log_err("%s", why);
		return -EPERM;
	}
	r = read_small_file(fd, 1024 * 1024, &text, &len);
	if (r < 0)
		return log_err_errno(r, "cannot read policy %s", file);
	r = policy_vm_parse(text, len, file, ret, &perr);
	if (r < 0) {
		log_err("%s", perr.msg);
		return r;
	}
	return 0;
}

static void parse_args(int argc, char **argv, struct launcher_args *a, struct launcher_conf *conf)
{
	static const struct option longopts[] = {
		{ "pager", required_argument, NULL, 'p' },
		{ "policy", required_argument, NULL, 'P' },
		{ "name", required_argument, NULL, 'n' },
		{ "allow-unsafe-devices", no_argument, NULL, 'u' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static char *emulator_argv0;
	int c;

	/* QEMU spells its own help "-help"/"-h"; a lone --help is for us. */
	if (argc == 2 && strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		exit(0);
	}
	if (!has_double_dash(argc, argv)) {
		/* libvirt <emulator> style: everything is QEMU's, even --help. */
		load_conf(conf);
		emulator_argv0 = getenv(ENV_QEMU_BINARY);
		if (!emulator_argv0 || !*emulator_argv0)
			emulator_argv0 = conf->qemu;
		argv[0] = emulator_argv0;
		a->emulator_mode = true;
		a->pager_socket = conf->pager_socket;
		a->allow_unsafe = conf->allow_unsafe;
		a->qemu_argc = argc;
		a->qemu_argv = argv;
		return;
	}
	opterr = 0;
	/* "+": stop at "--" and never permute QEMU's arguments. */
	while ((c = getopt_long(argc, argv, "+:", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			a->pager_socket = optarg;
			break;
		case 'P':
			a->policy_file = optarg;
			break;
		case 'n':
			a->name = optarg;
			break;
		case 'u':
			a->allow_unsafe = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind == 0 || strcmp(argv[optind - 1], "--") != 0)
		usage_error("unexpected argument '%s' before '--'",
			    optind < argc ? argv[optind] : "");
	if (optind >= argc)
		usage_error("no QEMU command after '--'");
	a->qemu_argc = argc - optind;
	a->qemu_argv = argv + optind;
}

/* Is the pager there? A connect-and-close costs it one accept and one EOF. */
static int probe_pager(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	return 0;
}

static __attribute__((noreturn)) void exec_qemu(char *const *argv);

/*
 * Can this process create the userfaultfd the shim will need? The same two
 * ways as the shim: the syscall (kernel-mode faults need privilege or
 * vm.unprivileged_userfaultfd=1), else /dev/userfaultfd. Asking here, before
 * QEMU starts, turns a missing permission into one clear message instead of
 * a QEMU that dies while allocating RAM. Returns 0 or the -errno of the
 * device (the syscall's EPERM says nothing an operator can act on).
 */
static int check_uffd_access(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

/*
 * The VM cannot be paged: with on_pager_unavailable "run-unpaged" QEMU
 * starts with plain RAM, else uffd-qemu exits 1. Does not return.
 */
static __attribute__((noreturn, format(printf, 4, 5))) void
why_unpaged(const struct launcher_args *a, const struct policy_vm *policy, const char *name, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (policy->on_pager_unavailable != POLICY_UNAVAILABLE_RUN_UNPAGED) {
		/* The VM name is in msg's context already; keep the message greppable as before. */
		log_err("%s (policy 'on_pager_unavailable' is 'refuse')", msg);
		exit(1);
	}
	log_warn("%s; starting VM '%s' without paging (policy 'on_pager_unavailable' is 'run-unpaged')", msg,
		 name);
	exec_qemu(a->qemu_argv);
}

/* Where libuffd-glue.so is: $UFFD_GLUE_LIB, next to this program, or the libdir. */
static int find_glue_lib(char *buf, size_t len)
{
	int r = find_beside_self(ENV_GLUE_LIB, GLUE_LIB_NAME, UFFD_GLUE_LIBDIR "/" GLUE_LIB_NAME, buf, len);

	if (r == -ENOENT)
		log_err("cannot find %s next to uffd-qemu or in %s; set %s", GLUE_LIB_NAME, UFFD_GLUE_LIBDIR,
			ENV_GLUE_LIB);
	else if (r < 0)
		log_err_errno(r, "%s=%s", ENV_GLUE_LIB, buf);
	return r;
}

/* The dynamic loader takes a colon- or space-separated list; ours goes first. */
static int set_preload(const char *lib)
{
	const char *old = getenv("LD_PRELOAD");
	_cleanup_free_ char *val = NULL;

	if (old && *old) {
		if (asprintf(&val, "%s:%s", lib, old) < 0)
			return -ENOMEM;
	} else if (!(val = strdup(lib))) {
		return -ENOMEM;
	}
	return setenv("LD_PRELOAD", val, 1) < 0 ? -errno : 0;
}

static void print_lines(enum log_level level, const char *text)
{
	const char *p = text;

	while (p && *p) {
		const char *nl = strchr(p, '\n');
		int n = nl ? (int)(nl - p) : (int)strlen(p);

		log_msg(level, "%.*s", n, p);
		p = nl ? nl + 1 : NULL;
	}
}

/* execvp: "-- qemu-system-x86_64 ..." names QEMU as a shell would, by PATH. */
static __attribute__((noreturn)) void exec_qemu(char *const *argv)
{
	execvp(argv[0], argv);
	log_err("cannot execute %s: %s", argv[0], strerror(errno));
	exit(errno == ENOENT ? 127 : 126);
}

/* A name must fit the HELLO message and read well in logs: as the policy's rule. */
static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= GLUE_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!(('a' <= *s && *s <= 'z') || ('A' <= *s && *s <= 'Z') ||
		      ('0' <= *s && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return false;
	return true;
}

int main(int argc, char **argv)
{
	struct launcher_args a = { .pager_socket = UFFDVM_RUN_DIR "/register.sock" };
	struct launcher_conf conf = { 0 };
	bool have_policy = false;
	struct policy_vm policy;
	struct policy_error perr = { 0 };
	struct glue_cmdline *cl = NULL;
	_cleanup_free_ char *policy_json = NULL;
	char name[GLUE_NAME_MAX], lib[PATH_MAX];
	const char *uuid;
	unsigned flags;
	int r;

	log_set_prefix("uffd-qemu");
	parse_args(argc, argv, &a, &conf);
	flags = a.allow_unsafe ? GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES : 0;

	r = glue_cmdline_analyze(a.qemu_argc, a.qemu_argv, flags, &cl);
	if (r < 0) {
		log_err_errno(r, "cannot analyze the QEMU command line");
		return 1;
	}
	switch (glue_cmdline_action(cl)) {
	case GLUE_CMDLINE_PROBE:
		/* Probes read capabilities; a preloaded shim would only get in the way. */
		exec_qemu(a.qemu_argv);
	case GLUE_CMDLINE_REFUSE:
		log_err("refusing to start %s with paged guest RAM:", a.qemu_argv[0]);
		print_lines(LOG_LVL_ERR, glue_cmdline_error(cl));
		return 1;
	case GLUE_CMDLINE_KEEP:
	case GLUE_CMDLINE_ADD_BACKEND:
		break;
	default:
		log_err("internal error: unknown command-line verdict %d", (int)glue_cmdline_action(cl));
		return 1;
	}
	if (glue_cmdline_warnings(cl)) {
		log_warn("--allow-unsafe-devices: starting although these may corrupt guest memory:");
		print_lines(LOG_LVL_WARN, glue_cmdline_warnings(cl));
	}

	policy_vm_init(&policy);
	if (a.policy_file) {
		r = policy_vm_load(a.policy_file, &policy, &perr);
		if (r == -EINVAL) {
			log_err("%s", perr.msg);
			return 1;
		}
		if (r < 0) {
			log_err_errno(r, "cannot read policy file %s", a.policy_file);
			return 1;
		}
		have_policy = true;
	}

	if (a.name)
		snprintf(name, sizeof(name), "%s", a.name);
	else if (policy.name[0])
		snprintf(name, sizeof(name), "%s", policy.name);
	else if (glue_cmdline_guest_name(cl) && valid_name(glue_cmdline_guest_name(cl)))
		snprintf(name, sizeof(name), "%s", glue_cmdline_guest_name(cl));
	else
		/* exec keeps the pid: this is QEMU's pid too. */
		snprintf(name, sizeof(name), "qemu-%d", (int)getpid());
	if (!valid_name(name)) {
		log_err("--name '%s': a VM name is 1..%d characters of A-Z a-z 0-9 . _ -", name,
			GLUE_NAME_MAX - 1);
		return 2;
	}

	if (a.emulator_mode) {
		/* Only a name QEMU was given can pick a policy: qemu-PID has none. */
		bool named = glue_cmdline_guest_name(cl) && !strcmp(glue_cmdline_guest_name(cl), name);

		r = named ? load_domain_policy(&conf, name, &policy) : -ENOENT;
		if (r == 0) {
			have_policy = true;
			log_info("VM '%s': policy %s/%s.json", name, conf.policy_dir, name);
		} else if (r != -ENOENT) {
			return 1;
		} else if (conf.require_policy) {
			log_err("VM '%s': no policy %s/%s.json and 'require_policy' is set in %s", name,
				conf.policy_dir, name, conf.path);
			return 1;
		} else {
			/* The pager pages only VMs with a policy: a domain without one runs as plain QEMU. */
			log_info("VM '%s': no policy %s/%s.json; starting it unpaged (add a policy to page it)", name,
				 conf.policy_dir, name);
			exec_qemu(a.qemu_argv);
		}
	}

	/* Before the pager checks: a run-unpaged fallback execs a.qemu_argv, which must be cached too. */
	if (have_policy && policy.dc_size) {
		char *const *cargv;
		int cargc;

		if (glue_cache_start(&policy, name, a.qemu_argc, a.qemu_argv, &cargc, &cargv) < 0)
			return 1;
		a.qemu_argc = cargc;
		a.qemu_argv = (char **)cargv;
		glue_cmdline_free(cl);
		cl = NULL;
		r = glue_cmdline_analyze(a.qemu_argc, a.qemu_argv, flags, &cl);
		if (r < 0 || glue_cmdline_action(cl) == GLUE_CMDLINE_REFUSE) {
			log_err("refusing to start %s with its cached drives:", a.qemu_argv[0]);
			if (r == 0)
				print_lines(LOG_LVL_ERR, glue_cmdline_error(cl));
			return 1;
		}
	}

	r = probe_pager(a.pager_socket);
	if (r < 0)
		why_unpaged(&a, &policy, name, "cannot reach uffd-pager at %s: %s%s", a.pager_socket, strerror(-r),
			    r == -EACCES ? " (the socket's directory or file is closed to this uid; see "
					   "docs/libvirt.md)" : "");
	r = check_uffd_access();
	if (r < 0)
		why_unpaged(&a, &policy, name,
			    "uid %u cannot create a userfaultfd for kernel-mode faults: %s "
			    "(vm.unprivileged_userfaultfd is 0 and /dev/userfaultfd is %s; grant this uid "
			    "read-write access to /dev/userfaultfd, and under libvirt add it to cgroup_device_acl "
			    "in qemu.conf; see docs/libvirt.md)",
			    (unsigned)geteuid(), strerror(-r), r == -ENOENT ? "missing in this mount namespace"
								  : "not accessible");

	if (find_glue_lib(lib, sizeof(lib)) < 0)
		return 1;
	/* libvirt passes the domain's UUID as -uuid: the pager shows it next to the name,
	 * which libvirt lets an operator reuse for another domain. */
	uuid = glue_cmdline_uuid(cl);
	if (uuid && strlen(uuid) >= GLUE_UUID_MAX) {
		log_err("-uuid '%s': a UUID is 36 characters", uuid);
		return 2;
	}
	if (have_policy) {
		/* The pager must see one name, whichever source it came from. */
		snprintf(policy.name, sizeof(policy.name), "%s", name);
		policy_json = policy_vm_to_json(&policy);
		if (!policy_json) {
			log_err("cannot serialize the policy of VM '%s'", name);
			return 1;
		}
		if (strlen(policy_json) >= GLUE_POLICY_MAX) {
			log_err("the policy of VM '%s' is too large for the pager (%zu bytes, at most %d)",
				name, strlen(policy_json), GLUE_POLICY_MAX - 1);
			return 1;
		}
	}
	char pager_lost[32] = "wait";
	if (policy.on_pager_lost != POLICY_PAGER_LOST_WAIT)
		snprintf(pager_lost, sizeof(pager_lost), "%s:%u",
			 policy.on_pager_lost == POLICY_PAGER_LOST_STOP ? "stop" : "kill", policy.pager_lost_max_wait_s);
	if (set_preload(lib) < 0 || setenv(GLUE_ENV_SOCKET, a.pager_socket, 1) < 0 ||
	    setenv(GLUE_ENV_PAGER_LOST, pager_lost, 1) < 0 ||
	    setenv(GLUE_ENV_NAME, name, 1) < 0 ||
	    setenv(GLUE_ENV_UNAVAILABLE,
		   policy.on_pager_unavailable == POLICY_UNAVAILABLE_RUN_UNPAGED ? "run-unpaged"
										  : "refuse",
		   1) < 0 ||
	    (policy_json ? setenv(GLUE_ENV_POLICY, policy_json, 1) : unsetenv(GLUE_ENV_POLICY)) < 0 ||
	    (uuid ? setenv(GLUE_ENV_UUID, uuid, 1) : unsetenv(GLUE_ENV_UUID)) < 0) {
		log_err("cannot set up the environment: %s", strerror(errno));
		return 1;
	}
	/* That file is a -readconfig on every command line: as unanalysable as one. */
	if (glue_cmdline_reads_user_config(cl) && access(QEMU_USER_CONFIG, F_OK) == 0) {
		log_err("refusing to start %s with paged guest RAM: QEMU reads %s, which can define "
			"devices and memory backends uffd-qemu cannot check; add -no-user-config",
			a.qemu_argv[0], QEMU_USER_CONFIG);
		return 1;
	}
	log_info("starting VM '%s' (%llu MiB of guest RAM in memfd backend%s %s) paged by %s", name,
		 (unsigned long long)(glue_cmdline_ram_size(cl) >> 20),
		 glue_cmdline_n_backends(cl) > 1 ? "s" : "", glue_cmdline_backend(cl, 0),
		 a.pager_socket);
	exec_qemu(glue_cmdline_argv(cl));
}
