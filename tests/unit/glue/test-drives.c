/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the disk cache's drive rewriting (qemu-glue/drives.c):
 * -drive id= and -blockdev node-name= (key=value and JSON) of local images
 * become NBD exports on the cache's socket with their other options kept;
 * drives not named are untouched; protocols, file.* and driver= options,
 * JSON sub-objects, file names with commas, a missing or doubled drive
 * are refused with a message naming the drive; options about how QEMU
 * opens a local file (aio, locking) are dropped.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drives.h"

#define SOCK "/run/user/0/uffd-qemu-vm-x/nbd.sock"

static struct glue_drives *rewrite(int argc, char **argv, const char **names, size_t n)
{
	struct glue_drives *d = NULL;

	assert_int_equal(glue_drives_rewrite(argc, argv, names, n, SOCK, &d), 0);
	return d;
}

static void refused(char **argv, int argc, const char *name, const char *needle)
{
	const char *names[] = { name };
	struct glue_drives *d = rewrite(argc, argv, names, 1);

	assert_non_null(glue_drives_error(d));
	if (!strstr(glue_drives_error(d), needle) || !strstr(glue_drives_error(d), name))
		fail_msg("expected '%s' and '%s' in: %s", needle, name, glue_drives_error(d));
	glue_drives_free(d);
}

static void test_drive(void **state)
{
	char *argv[] = { "qemu", "-m", "256", "-drive", "file=/img/a.raw,format=raw,if=virtio,id=d0,cache=writeback",
			 "-drive", "file=b.qcow2,id=other", NULL };
	const char *names[] = { "d0" };
	struct glue_drives *d = rewrite(7, argv, names, 1);

	assert_null(glue_drives_error(d));
	assert_int_equal(glue_drives_argc(d), 7);
	assert_string_equal(glue_drives_argv(d)[4], "file=nbd+unix:///d0?socket=" SOCK
						    ",format=raw,if=virtio,id=d0,cache=writeback");
	assert_string_equal(glue_drives_argv(d)[6], "file=b.qcow2,id=other");
	assert_string_equal(glue_drives_argv(d)[2], "256");
	assert_null(glue_drives_argv(d)[7]);
	assert_string_equal(glue_drives_image(d, 0), "/img/a.raw");
	glue_drives_free(d);
}

static void test_blockdev(void **state)
{
	char *argv[] = { "qemu", "-blockdev",
			 "driver=file,filename=/img/a.raw,node-name=s0,aio=threads,discard=unmap",
			 "--blockdev",
			 "{\"driver\":\"file\",\"filename\":\"/img/b.raw\",\"node-name\":\"libvirt-1-storage\","
			 "\"auto-read-only\":true,\"discard\":\"unmap\",\"cache\":{\"direct\":false}}",
			 "-blockdev", "{\"node-name\":\"libvirt-1-format\",\"driver\":\"raw\",\"file\":\"libvirt-1-storage\"}",
			 NULL };
	const char *names[] = { "libvirt-1-storage", "s0" };
	struct glue_drives *d = rewrite(7, argv, names, 2);

	assert_null(glue_drives_error(d));
	assert_string_equal(glue_drives_argv(d)[2], "driver=nbd,server.type=unix,server.path=" SOCK
						    ",export=s0,node-name=s0,discard=unmap");
	assert_string_equal(glue_drives_argv(d)[4],
			    "{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"" SOCK "\"},"
			    "\"export\":\"libvirt-1-storage\",\"node-name\":\"libvirt-1-storage\",\"auto-read-only\":true,"
			    "\"discard\":\"unmap\",\"cache\":{\"direct\":false}}");
	assert_string_equal(glue_drives_argv(d)[6], argv[6]); /* the format node stays */
	assert_string_equal(glue_drives_image(d, 0), "/img/b.raw");
	assert_string_equal(glue_drives_image(d, 1), "/img/a.raw");
	glue_drives_free(d);
}

static void test_refusals(void **state)
{
	char *a1[] = { "qemu", "-drive", "file=nbd:localhost:10809,id=d0" };
	char *a2[] = { "qemu", "-drive", "file=/a,,b.raw,id=d0" };
	char *a3[] = { "qemu", "-drive", "file=/a.raw,file.locking=off,id=d0" };
	char *a4[] = { "qemu", "-drive", "driver=raw,file=/a.raw,id=d0" };
	char *a5[] = { "qemu", "-drive", "if=none,id=d0" };
	char *a6[] = { "qemu", "-drive", "file=/a.raw,id=d1" };
	char *a7[] = { "qemu", "-blockdev", "driver=nbd,server.type=inet,node-name=d0" };
	char *a8[] = { "qemu", "-blockdev", "{\"driver\":\"file\",\"filename\":\"/a\",\"node-name\":\"d0\",\"x\":{}}" };
	char *a9[] = { "qemu", "-drive", "file=/a.raw,id=d0", "-drive", "file=/b.raw,id=d0" };
	char *a10[] = { "qemu", "-blockdev", "driver=file,filename=/a,node-name=d0,pr-manager=x,weird=1" };

	refused(a1, 3, "d0", "not a plain image file");
	refused(a2, 3, "d0", "not a plain image file");
	refused(a3, 3, "d0", "file.locking=");
	refused(a4, 3, "d0", "driver=");
	refused(a5, 3, "d0", "no file=");
	refused(a6, 3, "d0", "not on the command line");
	refused(a7, 3, "d0", "driver=nbd");
	refused(a8, 3, "d0", "x cannot be cached");
	refused(a9, 5, "d0", "defined twice");
	refused(a10, 3, "d0", "weird cannot be cached");
}

/* How QEMU opens a local file no longer applies: nbdkit opens it. */
static void test_file_only_dropped(void **state)
{
	char *argv[] = { "qemu", "-drive", "file=/a.raw,id=d0,aio=native,cache=none,locking=off" };
	const char *names[] = { "d0" };
	struct glue_drives *d = rewrite(3, argv, names, 1);

	assert_null(glue_drives_error(d));
	assert_string_equal(glue_drives_argv(d)[2], "file=nbd+unix:///d0?socket=" SOCK ",id=d0,cache=none");
	glue_drives_free(d);
}

static void test_bad_socket(void **state)
{
	char *argv[] = { "qemu", NULL };
	const char *names[] = { "d0" };
	struct glue_drives *d = NULL;

	assert_int_equal(glue_drives_rewrite(1, argv, names, 1, "/tmp/a b&c.sock", &d), -EINVAL);
	assert_null(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drive),
		cmocka_unit_test(test_blockdev),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_bad_socket),
		cmocka_unit_test(test_file_only_dropped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
