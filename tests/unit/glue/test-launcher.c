/* SPDX-License-Identifier: MIT */
/*
 * Tests of the uffd-qemu program as a whole: it runs the built launcher
 * with a stand-in QEMU (fake-qemu, which records its argv and environment)
 * and a stand-in shim, against a listening SEQPACKET socket or none, and
 * checks what QEMU would have been started with: the rewritten command
 * line, LD_PRELOAD, the glue-proto.h variables, and the exit codes and
 * messages of refusals and usage errors.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "glue-proto.h"

#define DEFAULT_SOCKET UFFDVM_RUN_DIR "/register.sock"

struct env {
	char dir[64];
	char sock[128], out[128], err[128], policy_refuse[128], policy_unpaged[128];
	int listen_fd;
	const char *launcher, *fake_qemu, *fake_glue;
	char *out_text, *err_text;
};

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = calloc(1, (size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return buf;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	/* Build-tree paths, compiled in by meson (the unit-test runner sets no environment). */
	e->launcher = UFFD_QEMU_PATH;
	e->fake_qemu = FAKE_QEMU_PATH;
	e->fake_glue = FAKE_GLUE_PATH;
	snprintf(e->dir, sizeof(e->dir), "/tmp/uffd-qemu-test.XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	snprintf(e->sock, sizeof(e->sock), "%s/register.sock", e->dir);
	snprintf(e->out, sizeof(e->out), "%s/qemu.out", e->dir);
	snprintf(e->err, sizeof(e->err), "%s/stderr", e->dir);
	snprintf(e->policy_refuse, sizeof(e->policy_refuse), "%s/refuse.json", e->dir);
	snprintf(e->policy_unpaged, sizeof(e->policy_unpaged), "%s/unpaged.json", e->dir);
	write_file(e->policy_refuse,
		   "{ \"name\": \"polvm\", \"local_memory\": \"64M\", \"on_pager_unavailable\": \"refuse\" }\n");
	write_file(e->policy_unpaged,
		   "{ \"name\": \"unpagedvm\", \"local_memory\": \"64M\", \"on_pager_unavailable\": \"run-unpaged\" }\n");
	e->listen_fd = -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	char cmd[128];

	if (e->listen_fd >= 0)
		close(e->listen_fd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", e->dir);
	free(e->out_text);
	free(e->err_text);
	free(e);
	return 0;
}

static void start_pager(struct env *e)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	e->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	assert_true(e->listen_fd >= 0);
	strcpy(sa.sun_path, e->sock);
	assert_int_equal(bind(e->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(e->listen_fd, 8), 0);
}

/* Runs uffd-qemu with args (NULL-terminated); returns its exit status. */
static int run(struct env *e, const char *emulator, const char **args)
{
	const char *argv[32] = { e->launcher };
	int n = 1, status;
	pid_t pid;

	for (; *args; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	unlink(e->out);
	free(e->out_text);
	free(e->err_text);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		FILE *err = freopen(e->err, "w", stderr);

		if (!err || !freopen("/dev/null", "w", stdout))
			_exit(120);
		setenv("FAKE_QEMU_OUT", e->out, 1);
		setenv("UFFD_GLUE_LIB", e->fake_glue, 1);
		setenv("LD_PRELOAD", "libc.so.6", 1);
		/* In a sanitized build, a preload ahead of the ASan runtime is expected here. */
		setenv("ASAN_OPTIONS", "verify_asan_link_order=0", 1);
		unsetenv(GLUE_ENV_SOCKET);
		if (emulator)
			setenv("UFFD_QEMU_BINARY", emulator, 1);
		else
			unsetenv("UFFD_QEMU_BINARY");
		execv(argv[0], (char **)argv);
		_exit(121);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	e->out_text = slurp(e->out);
	e->err_text = slurp(e->err);
	return WEXITSTATUS(status);
}

static void assert_has(const char *text, const char *line)
{
	if (!text || !strstr(text, line))
		fail_msg("expected \"%s\" in:\n%s", line, text ? text : "(nothing)");
}

static void assert_lacks(const char *text, const char *line)
{
	if (text && strstr(text, line))
		fail_msg("did not expect \"%s\" in:\n%s", line, text);
}

static void assert_args(const char *out, const char **want)
{
	char expect[2048] = "";

	for (; *want; want++) {
		strcat(expect, "arg=");
		strcat(expect, *want);
		strcat(expect, "\n");
	}
	assert_non_null(out);
	if (strncmp(out, expect, strlen(expect)) != 0 || strncmp(out + strlen(expect), "arg=", 4) == 0)
		fail_msg("argv mismatch; want:\n%sgot:\n%s", expect, out);
}

static void test_paged_start(void **state)
{
	struct env *e = *state;
	char line[256];

	start_pager(e);
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--policy", e->policy_refuse, "--",
					       e->fake_qemu, "-m", "256", "-nographic", NULL }),
			 0);
	assert_args(e->out_text,
		    (const char *[]){ e->fake_qemu, "-m", "256", "-nographic", "-object",
				      "memory-backend-memfd,id=uffdvm-ram0,size=268435456,share=on",
				      "-machine", "memory-backend=uffdvm-ram0", NULL });
	snprintf(line, sizeof(line), "env=LD_PRELOAD=%s:libc.so.6\n", e->fake_glue);
	assert_has(e->out_text, line);
	snprintf(line, sizeof(line), "env=" GLUE_ENV_SOCKET "=%s\n", e->sock);
	assert_has(e->out_text, line);
	assert_has(e->out_text, "env=" GLUE_ENV_NAME "=polvm\n");
	assert_has(e->out_text, "env=" GLUE_ENV_UNAVAILABLE "=refuse\n");
	assert_has(e->out_text, "env=" GLUE_ENV_POLICY "={");
	assert_has(e->out_text, "polvm");
}

static void test_name_sources(void **state)
{
	struct env *e = *state;
	char line[64];

	start_pager(e);
	/* --name beats the policy's name, which the shim's policy text then carries. */
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--policy", e->policy_refuse, "--name",
					       "cli-name", "--", e->fake_qemu, "-name", "guest=qemuname",
					       NULL }),
			 0);
	assert_has(e->out_text, "env=" GLUE_ENV_NAME "=cli-name\n");
	assert_lacks(e->out_text, "polvm");
	/* Without either, QEMU's -name. */
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--", e->fake_qemu, "-name",
					       "guest=qemuname,debug-threads=on", NULL }),
			 0);
	assert_has(e->out_text, "env=" GLUE_ENV_NAME "=qemuname\n");
	assert_lacks(e->out_text, "env=" GLUE_ENV_POLICY "=");
	/* Without any, qemu-PID (a number). */
	assert_int_equal(run(e, NULL, (const char *[]){ "--pager", e->sock, "--", e->fake_qemu, NULL }), 0);
	assert_has(e->out_text, "env=" GLUE_ENV_NAME "=qemu-");
	snprintf(line, sizeof(line), "env=" GLUE_ENV_NAME "=qemu-%c", strstr(e->out_text, "=qemu-")[6]);
	assert_true(line[strlen(line) - 1] >= '1' && line[strlen(line) - 1] <= '9');
	/* A name the pager would reject is a usage error. */
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--name", "bad name", "--", e->fake_qemu,
					       NULL }),
			 2);
	assert_has(e->err_text, "--name 'bad name'");
}

static void test_no_pager_refuse(void **state)
{
	struct env *e = *state;
	char msg[256];

	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--policy", e->policy_refuse, "--",
					       e->fake_qemu, "-m", "128", NULL }),
			 1);
	assert_null(e->out_text); /* QEMU never started */
	snprintf(msg, sizeof(msg), "cannot reach uffd-pager at %s: No such file or directory "
		 "(policy 'on_pager_unavailable' is 'refuse')", e->sock);
	assert_has(e->err_text, msg);
	/* No policy at all means the default, refuse. */
	assert_int_equal(run(e, NULL, (const char *[]){ "--pager", e->sock, "--", e->fake_qemu, NULL }), 1);
	assert_has(e->err_text, "'refuse'");
}

static void test_no_pager_run_unpaged(void **state)
{
	struct env *e = *state;

	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--policy", e->policy_unpaged, "--",
					       e->fake_qemu, "-m", "128", NULL }),
			 0);
	/* QEMU exactly as given: no backend added, no shim, no glue variables. */
	assert_args(e->out_text, (const char *[]){ e->fake_qemu, "-m", "128", NULL });
	assert_has(e->out_text, "env=LD_PRELOAD=libc.so.6\n");
	assert_lacks(e->out_text, "env=" GLUE_ENV_SOCKET "=");
	assert_has(e->err_text, "run-unpaged");
}

static void test_probe_untouched(void **state)
{
	struct env *e = *state;

	start_pager(e);
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--", e->fake_qemu, "-machine",
					       "none", "-qmp", "stdio", NULL }),
			 0);
	assert_args(e->out_text, (const char *[]){ e->fake_qemu, "-machine", "none", "-qmp", "stdio", NULL });
	assert_has(e->out_text, "env=LD_PRELOAD=libc.so.6\n");
	assert_lacks(e->out_text, "env=" GLUE_ENV_SOCKET "=");
}

static void test_emulator_mode(void **state)
{
	struct env *e = *state;

	/* As libvirt's <emulator>: no "--", QEMU from the environment, default socket. */
	assert_int_equal(run(e, e->fake_qemu, (const char *[]){ "-machine", "none", "-version", NULL }), 0);
	assert_args(e->out_text, (const char *[]){ e->fake_qemu, "-machine", "none", "-version", NULL });
	/* A domain without a policy file is started as plain QEMU: arguments untouched, no paging. */
	assert_int_equal(run(e, e->fake_qemu, (const char *[]){ "-m", "64", NULL }), 0);
	assert_args(e->out_text, (const char *[]){ e->fake_qemu, "-m", "64", NULL });
	assert_has(e->err_text, "starting it unpaged");
}

static void test_refused_command_line(void **state)
{
	struct env *e = *state;

	start_pager(e);
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--", e->fake_qemu, "-device",
					       "vfio-pci,host=01:00.0", NULL }),
			 1);
	assert_null(e->out_text);
	assert_has(e->err_text, "-device vfio-pci,host=01:00.0");
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--allow-unsafe-devices", "--",
					       e->fake_qemu, "-device", "vfio-pci,host=01:00.0", NULL }),
			 0);
	assert_has(e->err_text, "warning");
	assert_has(e->err_text, "vfio");
	assert_has(e->out_text, "arg=memory-backend=uffdvm-ram0\n");
}

/* Issue 12, 3.5: the launcher refuses what its analysis cannot see through. */
static void test_launcher_bypasses(void **state)
{
	struct env *e = *state;

	start_pager(e);
	/* -async-teardown takes no value: the device after it is checked. */
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--", e->fake_qemu, "-async-teardown",
					       "-device", "vhost-user-blk-pci,chardev=spdk0", NULL }),
			 1);
	assert_null(e->out_text);
	assert_has(e->err_text, "-device vhost-user-blk-pci,chardev=spdk0");
	/* -readconfig, even as libvirt's <emulator> and behind a probe's -machine none. */
	assert_int_equal(run(e, e->fake_qemu,
			     (const char *[]){ "-machine", "none", "-readconfig", "/tmp/vm.cfg", NULL }),
			 1);
	assert_null(e->out_text);
	assert_has(e->err_text, "-readconfig /tmp/vm.cfg");
	/* An option QEMU 7.2 does not have is named, not guessed at, even with the override. */
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--allow-unsafe-devices", "--",
					       e->fake_qemu, "-realtime", "mlock=on", NULL }),
			 1);
	assert_has(e->err_text, "'-realtime': not an option of QEMU 7.2");
	/* -uuid is read with QEMU's arity: "-uuid" as -append's value is no -uuid. */
	assert_int_equal(run(e, NULL,
			     (const char *[]){ "--pager", e->sock, "--", e->fake_qemu, "-append", "-uuid",
					       "-uuid", "6f1d4e1a-8c1b-4f0e-9a57-2f3c4b5d6e7f", NULL }),
			 0);
	assert_has(e->out_text, "env=" GLUE_ENV_UUID "=6f1d4e1a-8c1b-4f0e-9a57-2f3c4b5d6e7f\n");
}

static void test_usage_errors(void **state)
{
	struct env *e = *state;

	assert_int_equal(run(e, NULL, (const char *[]){ "--bogus", "--", e->fake_qemu, NULL }), 2);
	assert_has(e->err_text, "'--bogus'");
	assert_int_equal(run(e, NULL, (const char *[]){ "--pager", e->sock, "--", NULL }), 2);
	assert_has(e->err_text, "no QEMU command");
	assert_int_equal(run(e, NULL, (const char *[]){ "stray", "--", e->fake_qemu, NULL }), 2);
	assert_has(e->err_text, "'stray'");
	assert_int_equal(run(e, NULL, (const char *[]){ "--help", NULL }), 0);
	assert_null(e->out_text);
	assert_int_equal(run(e, NULL, (const char *[]){ "--policy", "/nonexistent/p.json", "--", e->fake_qemu, NULL }), 1);
	assert_has(e->err_text, "/nonexistent/p.json");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_paged_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_name_sources, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_pager_refuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_pager_run_unpaged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_probe_untouched, setup, teardown),
		cmocka_unit_test_setup_teardown(test_emulator_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_command_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_launcher_bypasses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_usage_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
