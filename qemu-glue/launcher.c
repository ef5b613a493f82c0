/* SPDX-License-Identifier: MIT */
/*
 * uffd-qemu: starts qemu-system with guest RAM handed to uffd-pager. It
 * rewrites the command line so guest RAM is a shared memfd (or refuses one
 * that cannot be paged safely), checks that the pager answers, and execs
 * QEMU with libuffd-glue.so preloaded and the VM's identity and policy in
 * the environment (common/glue-proto.h); the shim inside QEMU does the rest.
 * It can stand in for QEMU in libvirt's <emulator>: without "--" every
 * argument is QEMU's, and capability probes (-machine none, -version, ...)
 * are exec'ed untouched, without the shim.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cmdline.h"
#include "config.h"
#include "glue-proto.h"
#include "log.h"
#include "policy.h"
#include "util.h"

#define DEFAULT_QEMU "/usr/bin/qemu-system-x86_64"
#define GLUE_LIB_NAME "libuffd-glue.so"
#define ENV_QEMU_BINARY "UFFD_QEMU_BINARY"
#define ENV_GLUE_LIB "UFFD_GLUE_LIB"

#ifndef UFFD_GLUE_LIBDIR
#define UFFD_GLUE_LIBDIR "/usr/local/lib"
#endif

struct launcher_args {
	const char *pager_socket;
	const char *policy_file;
	const char *name;
	bool allow_unsafe;
	int qemu_argc;
	char **qemu_argv; /* argv[0] is the QEMU binary */
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
		"Environment: " ENV_GLUE_LIB " (path of " GLUE_LIB_NAME "), " ENV_QEMU_BINARY ".\n");
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

static void parse_args(int argc, char **argv, struct launcher_args *a)
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
		emulator_argv0 = getenv(ENV_QEMU_BINARY);
		if (!emulator_argv0 || !*emulator_argv0)
			emulator_argv0 = (char *)DEFAULT_QEMU;
		argv[0] = emulator_argv0;
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

/* Where libuffd-glue.so is: $UFFD_GLUE_LIB, next to this program, or the libdir. */
static int find_glue_lib(char *buf, size_t len)
{
	const char *env = getenv(ENV_GLUE_LIB);
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		if (access(env, R_OK) < 0)
			return log_err_errno(-errno, "%s=%s", ENV_GLUE_LIB, env);
		snprintf(buf, len, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		snprintf(buf, len, "%s/%s", dirname(self), GLUE_LIB_NAME);
		if (access(buf, R_OK) == 0)
			return 0;
	}
	snprintf(buf, len, "%s/%s", UFFD_GLUE_LIBDIR, GLUE_LIB_NAME);
	if (access(buf, R_OK) == 0)
		return 0;
	log_err("cannot find %s next to uffd-qemu or in %s; set %s", GLUE_LIB_NAME, UFFD_GLUE_LIBDIR,
		ENV_GLUE_LIB);
	return -ENOENT;
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
	struct policy_vm policy;
	struct policy_error perr = { 0 };
	struct glue_cmdline *cl = NULL;
	_cleanup_free_ char *policy_json = NULL;
	char name[GLUE_NAME_MAX], lib[PATH_MAX];
	unsigned flags;
	int r;

	log_set_prefix("uffd-qemu");
	parse_args(argc, argv, &a);
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

	r = probe_pager(a.pager_socket);
	if (r < 0) {
		bool unpaged = policy.on_pager_unavailable == POLICY_UNAVAILABLE_RUN_UNPAGED;

		if (!unpaged) {
			log_err("cannot reach uffd-pager at %s: %s (policy 'on_pager_unavailable' is "
				"'refuse')",
				a.pager_socket, strerror(-r));
			return 1;
		}
		log_warn("cannot reach uffd-pager at %s: %s; starting VM '%s' without paging "
			 "(policy 'on_pager_unavailable' is 'run-unpaged')",
			 a.pager_socket, strerror(-r), name);
		exec_qemu(a.qemu_argv);
	}

	if (find_glue_lib(lib, sizeof(lib)) < 0)
		return 1;
	if (a.policy_file) {
		/* The pager must see one name, whichever source it came from. */
		snprintf(policy.name, sizeof(policy.name), "%s", name);
		policy_json = policy_vm_to_json(&policy);
		if (!policy_json) {
			log_err("cannot serialize the policy of %s", a.policy_file);
			return 1;
		}
		if (strlen(policy_json) >= GLUE_POLICY_MAX) {
			log_err("policy %s is too large for the pager (%zu bytes, at most %d)",
				a.policy_file, strlen(policy_json), GLUE_POLICY_MAX - 1);
			return 1;
		}
	}
	if (set_preload(lib) < 0 || setenv(GLUE_ENV_SOCKET, a.pager_socket, 1) < 0 ||
	    setenv(GLUE_ENV_NAME, name, 1) < 0 ||
	    setenv(GLUE_ENV_UNAVAILABLE,
		   policy.on_pager_unavailable == POLICY_UNAVAILABLE_RUN_UNPAGED ? "run-unpaged"
										  : "refuse",
		   1) < 0 ||
	    (policy_json ? setenv(GLUE_ENV_POLICY, policy_json, 1) : unsetenv(GLUE_ENV_POLICY)) < 0) {
		log_err("cannot set up the environment: %s", strerror(errno));
		return 1;
	}
	log_info("starting VM '%s' (%llu MiB of guest RAM in memfd backend%s %s) paged by %s", name,
		 (unsigned long long)(glue_cmdline_ram_size(cl) >> 20),
		 glue_cmdline_n_backends(cl) > 1 ? "s" : "", glue_cmdline_backend(cl, 0),
		 a.pager_socket);
	exec_qemu(glue_cmdline_argv(cl));
}
