/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of qemu-glue/cmdline.c: what uffd-qemu does to a QEMU command
 * line. The cases are the command lines operators and libvirt actually
 * write: sizes in every spelling, backends in key=value and JSON form,
 * several NUMA backends, each device family that touches guest RAM behind
 * QEMU's page tables, and the capability probes that must pass untouched.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cmdline.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

#define ANALYZE(flags, ...) analyze((flags), (const char *[]){ "qemu-system-x86_64", __VA_ARGS__, NULL })

static struct glue_cmdline *analyze(unsigned flags, const char **argv)
{
	struct glue_cmdline *c = NULL;
	int argc = 0;

	while (argv[argc])
		argc++;
	assert_int_equal(glue_cmdline_analyze(argc, (char *const *)argv, flags, &c), 0);
	assert_non_null(c);
	/* Whatever the verdict, the original arguments come first and in order. */
	assert_true(glue_cmdline_argc(c) >= argc);
	for (int i = 0; i < argc; i++)
		assert_string_equal(glue_cmdline_argv(c)[i], argv[i]);
	assert_null(glue_cmdline_argv(c)[glue_cmdline_argc(c)]);
	return c;
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!haystack || !strstr(haystack, needle))
		fail_msg("expected \"%s\" in \"%s\"", needle, haystack ? haystack : "(null)");
}

static void assert_added_backend(struct glue_cmdline *c, uint64_t size)
{
	char want[128];
	int n = glue_cmdline_argc(c);
	char *const *argv = glue_cmdline_argv(c);

	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_ADD_BACKEND);
	assert_int_equal(glue_cmdline_ram_size(c), size);
	snprintf(want, sizeof(want), "memory-backend-memfd,id=uffdvm-ram0,size=%llu,share=on",
		 (unsigned long long)size);
	assert_string_equal(argv[n - 4], "-object");
	assert_string_equal(argv[n - 3], want);
	assert_string_equal(argv[n - 2], "-machine");
	assert_string_equal(argv[n - 1], "memory-backend=uffdvm-ram0");
	assert_int_equal(glue_cmdline_n_backends(c), 1);
	assert_string_equal(glue_cmdline_backend(c, 0), "uffdvm-ram0");
	assert_null(glue_cmdline_error(c));
}

static void test_ram_size_spellings(void **state)
{
	static const struct {
		const char *m;
		uint64_t bytes;
	} cases[] = {
		{ "512", 512 * MiB },
		{ "512M", 512 * MiB },
		{ "512m", 512 * MiB },
		{ "2G", 2 * GiB },
		{ "1.5G", 3 * GiB / 2 },
		{ "size=1G,slots=2,maxmem=4G", GiB },
		{ "1G,slots=2,maxmem=4G", GiB },
		{ "maxmem=4G,size=768M,slots=4", 768 * MiB },
		{ "1001K", 1032192 }, /* QEMU rounds up to 8 KiB */
		{ "size=2048", 2 * GiB },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct glue_cmdline *c = ANALYZE(0, "-nographic", "-m", cases[i].m);

		if (glue_cmdline_ram_size(c) != cases[i].bytes)
			fail_msg("-m %s: got %llu, want %llu", cases[i].m,
				 (unsigned long long)glue_cmdline_ram_size(c),
				 (unsigned long long)cases[i].bytes);
		assert_added_backend(c, cases[i].bytes);
		glue_cmdline_free(c);
	}
}

static void test_ram_default_and_last_wins(void **state)
{
	struct glue_cmdline *c = ANALYZE(0, "-nographic");

	assert_added_backend(c, 128 * MiB);
	assert_int_equal(glue_cmdline_argc(c), 2 + 4);
	glue_cmdline_free(c);

	c = ANALYZE(0, "-m", "256", "-m", "1G");
	assert_added_backend(c, GiB);
	glue_cmdline_free(c);

	/* A -m that only sets hotplug limits keeps the default boot RAM. */
	c = ANALYZE(0, "-m", "slots=2,maxmem=2G");
	assert_added_backend(c, 128 * MiB);
	glue_cmdline_free(c);
}

static void test_ram_size_invalid(void **state)
{
	const char *bad[] = { "lots", "12X", "0", "1.G", "99999999999999999999G" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct glue_cmdline *c = ANALYZE(0, "-m", bad[i]);

		assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
		assert_contains(glue_cmdline_error(c), "-m ");
		assert_contains(glue_cmdline_error(c), bad[i]);
		glue_cmdline_free(c);
	}
}

static void test_parse_size(void **state)
{
	uint64_t v = 0;

	assert_int_equal(glue_cmdline_parse_size("4096", 1, &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(glue_cmdline_parse_size("4", MiB, &v), 0);
	assert_int_equal(v, 4 * MiB);
	assert_int_equal(glue_cmdline_parse_size("1T", 1, &v), 0);
	assert_int_equal(v, 1ULL << 40);
	assert_int_equal(glue_cmdline_parse_size("0.5k", 1, &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(glue_cmdline_parse_size("8B", MiB, &v), 0);
	assert_int_equal(v, 8);
	v = 7;
	assert_int_equal(glue_cmdline_parse_size("", 1, &v), -EINVAL);
	assert_int_equal(glue_cmdline_parse_size("-1", 1, &v), -EINVAL);
	assert_int_equal(glue_cmdline_parse_size("1GiB", 1, &v), -EINVAL);
	assert_int_equal(glue_cmdline_parse_size("17E", 1, &v), -ERANGE);
	assert_int_equal(v, 7); /* untouched on failure */
}

static void test_keep_shared_memfd(void **state)
{
	struct glue_cmdline *c = ANALYZE(0, "-m", "1G", "-object",
					 "memory-backend-memfd,id=ram0,size=1G,share=on", "-machine",
					 "q35,accel=tcg,memory-backend=ram0");

	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_KEEP);
	assert_int_equal(glue_cmdline_argc(c), 7);
	assert_int_equal(glue_cmdline_n_backends(c), 1);
	assert_string_equal(glue_cmdline_backend(c, 0), "ram0");
	assert_int_equal(glue_cmdline_ram_size(c), GiB);
	glue_cmdline_free(c);

	/* -M, share=yes, and the backend defined after its user. */
	c = ANALYZE(0, "-M", "pc,memory-backend=m", "-object",
		    "memory-backend-memfd,share=yes,id=m,size=128M");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_KEEP);
	assert_string_equal(glue_cmdline_backend(c, 0), "m");
	glue_cmdline_free(c);

	/* Several -machine options merge, as in QEMU. */
	c = ANALYZE(0, "-machine", "type=q35", "--object",
		    "memory-backend-memfd,id=r,size=128M,share=on", "-machine", "memory-backend=r");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_KEEP);
	glue_cmdline_free(c);
}

static void test_keep_numa_backends(void **state)
{
	struct glue_cmdline *c = ANALYZE(
		0, "-m", "2G", "-object", "memory-backend-memfd,id=n0,size=1G,share=on", "-object",
		"memory-backend-memfd,id=n1,size=1G,share=on", "-numa", "node,nodeid=0,memdev=n0",
		"-numa", "node,nodeid=1,memdev=n1", "-smp", "2");

	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_KEEP);
	assert_int_equal(glue_cmdline_argc(c), 13);
	assert_int_equal(glue_cmdline_n_backends(c), 2);
	assert_string_equal(glue_cmdline_backend(c, 0), "n0");
	assert_string_equal(glue_cmdline_backend(c, 1), "n1");
	glue_cmdline_free(c);

	/* One node in private memory spoils it, and the message names that node's object. */
	c = ANALYZE(0, "-m", "2G", "-object", "memory-backend-memfd,id=n0,size=1G,share=on",
		    "-object", "memory-backend-memfd,id=n1,size=1G", "-numa", "node,memdev=n0",
		    "-numa", "node,memdev=n1");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), "-object memory-backend-memfd,id=n1,size=1G");
	assert_contains(glue_cmdline_error(c), "share=on");
	assert_null(strstr(glue_cmdline_error(c), "id=n0"));
	glue_cmdline_free(c);
}

static void test_refuse_unshareable_backends(void **state)
{
	static const struct {
		const char *object;
		const char *expect[3];
	} cases[] = {
		{ "memory-backend-ram,id=r,size=512M",
		  { "memory-backend-ram", "memory-backend-memfd,id=r", "share=on" } },
		{ "memory-backend-memfd,id=r,size=512M",
		  { "share=off (the default)", "add share=on", NULL } },
		{ "memory-backend-memfd,id=r,size=512M,share=off", { "share=off", "add share=on", NULL } },
		{ "memory-backend-file,id=r,size=512M,mem-path=/dev/shm/x,share=on",
		  { "memory-backend-file", "use -object memory-backend-memfd", NULL } },
		{ "memory-backend-memfd,id=r,size=512M,share=on,hugetlb=on",
		  { "hugetlb=on is not supported", NULL, NULL } },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct glue_cmdline *c = ANALYZE(0, "-m", "512", "-object", cases[i].object,
						 "-machine", "memory-backend=r");

		assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
		assert_contains(glue_cmdline_error(c), cases[i].object);
		for (int k = 0; k < 3 && cases[i].expect[k]; k++)
			assert_contains(glue_cmdline_error(c), cases[i].expect[k]);
		/* A refused line is never rewritten. */
		assert_int_equal(glue_cmdline_argc(c), 7);
		glue_cmdline_free(c);
	}
}

static void test_refuse_other_ram_sources(void **state)
{
	struct glue_cmdline *c = ANALYZE(0, "-m", "512", "-mem-path", "/dev/hugepages");

	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), "-mem-path /dev/hugepages");
	glue_cmdline_free(c);

	c = ANALYZE(0, "-machine", "memory-backend=nowhere");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), "'nowhere'");
	assert_contains(glue_cmdline_error(c), "no -object defines");
	glue_cmdline_free(c);

	c = ANALYZE(0, "-m", "1G", "-numa", "node,mem=512M", "-numa", "node,mem=512M");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), "-numa node,mem=512M");
	assert_contains(glue_cmdline_error(c), "memdev=");
	glue_cmdline_free(c);

	/* Hot-pluggable RAM must be shareable too. */
	c = ANALYZE(0, "-m", "1G,slots=2,maxmem=4G", "-object", "memory-backend-ram,id=d1,size=1G",
		    "-device", "pc-dimm,id=dimm1,memdev=d1");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), "memory-backend-ram,id=d1");
	glue_cmdline_free(c);

	c = ANALYZE(0, "-m", "1G,slots=2,maxmem=4G", "-object",
		    "memory-backend-memfd,id=d1,size=1G,share=on", "-device",
		    "virtio-mem-pci,id=vm0,memdev=d1");
	assert_added_backend(c, GiB);
	glue_cmdline_free(c);
}

struct unsafe_case {
	const char *opt, *value; /* value NULL: a flag */
	const char *expect;
};

static const struct unsafe_case unsafe_cases[] = {
	{ "-device", "vhost-user-fs-pci,chardev=char0,tag=myfs", "vhost-user" },
	{ "-device", "vhost-user-blk-pci,chardev=spdk0", "vhost-user" },
	{ "-netdev", "vhost-user,id=net0,chardev=chr0", "vhost-user" },
	{ "-netdev", "vhost-vdpa,id=net0,vhostdev=/dev/vhost-vdpa-0", "vhost-vdpa" },
	{ "-device", "vfio-pci,host=0000:01:00.0", "vfio" },
	{ "-mem-prealloc", NULL, "-mem-prealloc" },
	{ "-object", "memory-backend-memfd,id=p,size=64M,share=on,prealloc=on", "prealloc=on" },
	{ "-overcommit", "mem-lock=on", "mem-lock=off" },
	{ "-drive", "file=disk.qcow2,if=virtio,cache=none", "cache=none" },
	{ "-drive", "file=disk.img,cache=directsync", "cache=directsync" },
	{ "-drive", "file=disk.img,cache=none,aio=native", "O_DIRECT" },
	{ "-drive", "file=disk.img,cache.direct=on", "cache.direct=on" },
	{ "-blockdev", "driver=file,node-name=f0,filename=disk.img,aio=native", "aio=native" },
	{ "-blockdev", "{\"driver\":\"file\",\"filename\":\"d.img\",\"node-name\":\"f\",\"cache\":{\"direct\":true}}",
	  "cache.direct=on" },
	{ "-device", "{\"driver\":\"vhost-user-fs-pci\",\"chardev\":\"c\",\"tag\":\"t\"}", "vhost-user" },
	/* O_DIRECT asked for in a child node, dotted and JSON (issue 12, 3.5). */
	{ "-drive", "file=disk.img,file.cache.direct=on", "file.cache.direct=on" },
	{ "-drive", "file.driver=file,file.filename=disk.img,file.aio=native", "file.aio=native" },
	{ "-drive", "file=disk.img,cache=off", "cache=off" },
	{ "-blockdev", "driver=qcow2,node-name=q,file.driver=file,file.filename=d.qcow2,file.cache.direct=yes",
	  "file.cache.direct=yes" },
	{ "-blockdev",
	  "{\"driver\":\"qcow2\",\"node-name\":\"q\",\"file\":{\"driver\":\"file\",\"filename\":\"d.qcow2\",\"cache\":{\"direct\":true}}}",
	  "file.cache.direct=on" },
	{ "-blockdev",
	  "{\"driver\":\"raw\",\"node-name\":\"r\",\"file\":{\"driver\":\"file\",\"filename\":\"d.img\",\"aio\":\"native\"}}",
	  "file.aio=native" },
	/* ... and in a json: filename, which QEMU reads as a block node tree (",," is a comma). */
	{ "-drive", "if=virtio,file=json:{\"driver\":\"raw\",,\"file\":{\"driver\":\"file\",,\"filename\":\"d\",,\"aio\":\"native\"}}",
	  "file.aio=native" },
	{ "-hda", "json:{\"file\":{\"driver\":\"file\",\"filename\":\"d\",\"cache\":{\"direct\":true}}}",
	  "file.cache.direct=on" },
	{ "-blockdev", "driver=nvme,node-name=n,device=0000:01:00.0,namespace=1", "VFIO" },
	{ "-drive", "file=nvme://0000:01:00.0/1,if=virtio", "VFIO" },
	{ "-object", "cryptodev-vhost-user,id=c0,chardev=chr0", "vhost-user" },
};

static void test_unsafe_refused(void **state)
{
	for (size_t i = 0; i < sizeof(unsafe_cases) / sizeof(unsafe_cases[0]); i++) {
		const struct unsafe_case *u = &unsafe_cases[i];
		struct glue_cmdline *c = u->value ? ANALYZE(0, "-m", "256", u->opt, u->value)
						  : ANALYZE(0, "-m", "256", u->opt);

		if (glue_cmdline_action(c) != GLUE_CMDLINE_REFUSE)
			fail_msg("%s %s: not refused", u->opt, u->value ? u->value : "");
		assert_contains(glue_cmdline_error(c), u->value ? u->value : u->opt);
		assert_contains(glue_cmdline_error(c), u->expect);
		assert_contains(glue_cmdline_error(c), "--allow-unsafe-devices");
		glue_cmdline_free(c);
	}
}

static void test_unsafe_allowed_warns(void **state)
{
	for (size_t i = 0; i < sizeof(unsafe_cases) / sizeof(unsafe_cases[0]); i++) {
		const struct unsafe_case *u = &unsafe_cases[i];
		struct glue_cmdline *c =
			u->value ? ANALYZE(GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES, "-m", "256", u->opt, u->value)
				 : ANALYZE(GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES, "-m", "256", u->opt);

		assert_null(glue_cmdline_error(c));
		assert_contains(glue_cmdline_warnings(c), u->expect);
		/* The prealloc backend is not guest RAM here: ours is still added. */
		assert_added_backend(c, 256 * MiB);
		glue_cmdline_free(c);
	}
	/* The override does not cover RAM that cannot be paged at all. */
	struct glue_cmdline *c = ANALYZE(GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES, "-object",
					 "memory-backend-ram,id=r,size=128M", "-M", "memory-backend=r");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	glue_cmdline_free(c);
}

static void test_safe_lookalikes(void **state)
{
	/* Each resembles an unsafe option but is fine; ",," hides a key inside a file name. */
	struct glue_cmdline *c = ANALYZE(
		0, "-m", "256", "-drive", "file=a,,cache=none.img,if=virtio", "-drive",
		"file=b.img,cache=writeback,aio=threads", "-drive", "file=c.img,cache.direct=off",
		"-netdev", "tap,id=n0,vhost=on", "-device", "virtio-net-pci,netdev=n0",
		"-overcommit", "mem-lock=off", "-drive", "file=d.img,file.cache.direct=off,file.aio=threads",
		"-blockdev", "{\"driver\":\"file\",\"filename\":\"e.img\",\"node-name\":\"e\",\"cache\":{\"direct\":false}}",
		"-hda", "json-not.img", "-cdrom", "json:{\"driver\":\"file\",\"filename\":\"x.iso\"}",
		"-cpu", "host,aio=native", "-append",
		"console=ttyS0 -mem-prealloc -device vfio-pci", "-device", "virtio-blk-pci,drive=d0");

	assert_added_backend(c, 256 * MiB);
	assert_null(glue_cmdline_warnings(c));
	glue_cmdline_free(c);
}

static void test_probes_pass_untouched(void **state)
{
	const char *probes[][8] = {
		{ "-machine", "none", NULL },
		{ "-M", "none", NULL },
		{ "-machine", "none,accel=kvm:tcg", "-qmp", "unix:/tmp/q.sock,server=on,wait=off",
		  "-nodefaults", "-nographic", "-daemonize", NULL },
		{ "-machine", "type=none", NULL },
		{ "-version", NULL },
		{ "--version", NULL },
		{ "-help", NULL },
		{ "-h", NULL },
		{ "-device", "help", NULL },
		{ "-cpu", "help", NULL },
		{ "-cpu", "?", NULL },
		{ "-machine", "help", NULL },
		{ "-device", "virtio-net-pci,help", NULL },
		{ "-object", "memory-backend-memfd,help", NULL },
		/* Even an otherwise refused line: a probe never starts a guest. */
		{ "-machine", "none", "-device", "vfio-pci,host=01:00.0", "-mem-prealloc", NULL },
	};

	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		const char *argv[10] = { "qemu-system-x86_64" };
		struct glue_cmdline *c;
		int n = 1;

		for (int k = 0; probes[i][k]; k++)
			argv[n++] = probes[i][k];
		c = analyze(0, argv);
		if (glue_cmdline_action(c) != GLUE_CMDLINE_PROBE)
			fail_msg("probe %zu (%s %s) not recognized", i, argv[1], argv[2] ? argv[2] : "");
		assert_int_equal(glue_cmdline_argc(c), n);
		assert_null(glue_cmdline_error(c));
		assert_null(glue_cmdline_warnings(c));
		glue_cmdline_free(c);
	}
}

static void test_libvirt_json(void **state)
{
	/* As libvirt 9 writes a memfd-backed domain. */
	struct glue_cmdline *c = ANALYZE(
		0, "-name", "guest=web1,debug-threads=on", "-machine",
		"pc-q35-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram", "-accel", "tcg", "-m",
		"1024", "-object",
		"{\"qom-type\":\"memory-backend-memfd\",\"id\":\"pc.ram\",\"share\":true,\"x-use-canonical-path-for-ramblock-id\":false,\"size\":1073741824}",
		"-blockdev",
		"{\"driver\":\"file\",\"filename\":\"/var/lib/libvirt/images/web1.qcow2\",\"node-name\":\"libvirt-1-storage\",\"auto-read-only\":true,\"discard\":\"unmap\"}");

	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_KEEP);
	assert_string_equal(glue_cmdline_backend(c, 0), "pc.ram");
	assert_string_equal(glue_cmdline_guest_name(c), "web1");
	assert_int_equal(glue_cmdline_ram_size(c), GiB);
	glue_cmdline_free(c);

	c = ANALYZE(0, "-machine", "memory-backend=pc.ram", "-object",
		    "{\"qom-type\":\"memory-backend-memfd\",\"id\":\"pc.ram\",\"share\":false,\"size\":134217728}");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), "share=off");
	glue_cmdline_free(c);
}

static void test_guest_name(void **state)
{
	struct glue_cmdline *c = ANALYZE(0, "-name", "plainname");

	assert_string_equal(glue_cmdline_guest_name(c), "plainname");
	glue_cmdline_free(c);
	c = ANALYZE(0, "-name", "guest=a,,b,process=qemu-ab");
	assert_string_equal(glue_cmdline_guest_name(c), "a,b");
	glue_cmdline_free(c);
	c = ANALYZE(0, "-nographic");
	assert_null(glue_cmdline_guest_name(c));
	assert_null(glue_cmdline_uuid(c));
	assert_true(glue_cmdline_reads_user_config(c));
	glue_cmdline_free(c);
	c = ANALYZE(0, "-append", "-no-user-config");
	assert_true(glue_cmdline_reads_user_config(c));
	glue_cmdline_free(c);
	c = ANALYZE(0, "--no-user-config");
	assert_false(glue_cmdline_reads_user_config(c));
	glue_cmdline_free(c);
	/* -uuid: the last one, never another option's value. */
	c = ANALYZE(0, "-name", "-uuid", "--uuid", "u1", "-append", "-uuid", "-uuid", "u2");
	assert_string_equal(glue_cmdline_uuid(c), "u2");
	glue_cmdline_free(c);
}

static void test_option_values_are_not_options(void **state)
{
	/* "-m" inside -append's value, and a positional image after a flag. */
	struct glue_cmdline *c = ANALYZE(0, "-append", "-m 64", "-snapshot", "disk.img", "-m", "300M");

	assert_added_backend(c, 300 * MiB);
	glue_cmdline_free(c);
}

/* Issue 12, 3.5: an option read with the wrong arity hid the next one from the checks. */
static void test_option_arity(void **state)
{
	/* QEMU 7.2's options without a value, each followed by a device that must be seen. */
	static const char *const flags[] = {
		"-async-teardown", "--async-teardown", "-nographic", "-no-user-config", "-nodefaults",
		"-S", "-s", "-snapshot", "-no-reboot", "-no-shutdown", "-daemonize", "-enable-kvm",
		"-only-migratable", "-preconfig", "--preconfig", "-usb", "-no-hpet", "-no-acpi",
		"-full-screen", "-portrait", "-win2k-hack", "-no-fd-bootchk", "-singlestep",
		"-xen-attach", "-xen-domid-restrict", "-enable-sync-profile", "-semihosting",
		"-old-param",
	};
	/* Options with a value that starts like an option: the value is not checked as one. */
	static const char *const valued[] = {
		"-append", "-name", "-k", "-rotate", "-g", "-echr", "-qtest", "-qtest-log", "-dfilter",
		"-prom-env", "-audio", "-uuid", "-chroot", "-runas", "-seed", "-option-rom",
	};

	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		struct glue_cmdline *c = ANALYZE(0, "-m", "256", flags[i], "-device",
						 "vhost-user-blk-pci,chardev=spdk0");

		if (glue_cmdline_action(c) != GLUE_CMDLINE_REFUSE)
			fail_msg("%s swallowed the -device after it", flags[i]);
		assert_contains(glue_cmdline_error(c), "-device vhost-user-blk-pci,chardev=spdk0");
		glue_cmdline_free(c);
	}
	for (size_t i = 0; i < sizeof(valued) / sizeof(valued[0]); i++) {
		struct glue_cmdline *c = ANALYZE(0, "-m", "256", valued[i], "-mem-prealloc");

		if (glue_cmdline_action(c) != GLUE_CMDLINE_ADD_BACKEND)
			fail_msg("%s's value was read as an option: %s", valued[i],
				 glue_cmdline_error(c) ? glue_cmdline_error(c) : "");
		glue_cmdline_free(c);
	}
}

/* Issue 12, 3.5: an option QEMU 7.2 does not have is refused by name, never guessed at. */
static void test_unknown_option_refused(void **state)
{
	static const char *const unknown[] = {
		"-bogus", "--bogus", "-realtime", "-run-with", "-no-kvm", "-enable-fips", "-sdl",
		"-", "--", "---nographic", "-uuid=1234",
	};

	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		char want[64];
		/* The old guess took an unknown option before an option for a flag. */
		struct glue_cmdline *c = ANALYZE(GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES, "-m", "256",
						 unknown[i], "mlock=on", "-nographic");

		if (glue_cmdline_action(c) != GLUE_CMDLINE_REFUSE)
			fail_msg("%s not refused", unknown[i]);
		snprintf(want, sizeof(want), "'%s': not an option of QEMU 7.2", unknown[i]);
		assert_contains(glue_cmdline_error(c), want);
		glue_cmdline_free(c);
	}
	/* Not even in a capability probe: what follows it might start a guest. */
	struct glue_cmdline *c = ANALYZE(0, "-machine", "none", "-bogus", "-machine", "pc");

	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), "'-bogus'");
	glue_cmdline_free(c);
}

/* Issue 12, 3.5: -readconfig and -set can define what the launcher never sees. */
static void test_readconfig_set_refused(void **state)
{
	static const char *const cases[][2] = {
		{ "-readconfig", "/tmp/vm.cfg" },
		{ "--readconfig", "/tmp/vm.cfg" },
		{ "-set", "device.d0.driver=vhost-user-blk-pci" },
		{ "-set", "drive.d0.cache=none" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* Refused even with the override, and in what looks like a probe. */
		struct glue_cmdline *c = ANALYZE(GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES, "-m", "256",
						 cases[i][0], cases[i][1]);

		if (glue_cmdline_action(c) != GLUE_CMDLINE_REFUSE)
			fail_msg("%s %s not refused", cases[i][0], cases[i][1]);
		assert_contains(glue_cmdline_error(c), cases[i][1]);
		assert_contains(glue_cmdline_error(c), "cannot check");
		glue_cmdline_free(c);
		c = ANALYZE(0, "-machine", "none", cases[i][0], cases[i][1]);
		assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
		glue_cmdline_free(c);
	}
}

/* A disk image named positionally is a -drive too; json: makes it a block node tree. */
static void test_positional_json_image(void **state)
{
	const char *img = "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"d\",\"aio\":\"native\"}}";
	struct glue_cmdline *c = ANALYZE(0, "-m", "256", img);

	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), img);
	assert_contains(glue_cmdline_error(c), "file.aio=native");
	glue_cmdline_free(c);
}

/* -machine options merge and the last type wins: "-M none" early is no probe. */
static void test_machine_none_overridden(void **state)
{
	struct glue_cmdline *c = ANALYZE(0, "-machine", "none", "-m", "256", "-machine", "pc",
					 "-device", "vfio-pci,host=01:00.0");

	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_REFUSE);
	assert_contains(glue_cmdline_error(c), "vfio");
	glue_cmdline_free(c);
	c = ANALYZE(0, "-machine", "pc", "-machine", "none,accel=tcg");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_PROBE);
	glue_cmdline_free(c);
}

static void test_bad_input(void **state)
{
	struct glue_cmdline *c = (struct glue_cmdline *)0x1;
	char *argv[] = { NULL };

	assert_int_equal(glue_cmdline_analyze(0, argv, 0, &c), -EINVAL);
	assert_ptr_equal(c, (struct glue_cmdline *)0x1);
	glue_cmdline_free(NULL);
	/* A trailing option without its value is QEMU's to report. */
	c = ANALYZE(0, "-m");
	assert_added_backend(c, 128 * MiB);
	glue_cmdline_free(c);
	/* Malformed JSON is not mistaken for something else. */
	c = ANALYZE(0, "-object", "{\"qom-type\":");
	assert_int_equal(glue_cmdline_action(c), GLUE_CMDLINE_ADD_BACKEND);
	glue_cmdline_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ram_size_spellings),
		cmocka_unit_test(test_ram_default_and_last_wins),
		cmocka_unit_test(test_ram_size_invalid),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_keep_shared_memfd),
		cmocka_unit_test(test_keep_numa_backends),
		cmocka_unit_test(test_refuse_unshareable_backends),
		cmocka_unit_test(test_refuse_other_ram_sources),
		cmocka_unit_test(test_unsafe_refused),
		cmocka_unit_test(test_unsafe_allowed_warns),
		cmocka_unit_test(test_safe_lookalikes),
		cmocka_unit_test(test_probes_pass_untouched),
		cmocka_unit_test(test_libvirt_json),
		cmocka_unit_test(test_guest_name),
		cmocka_unit_test(test_option_values_are_not_options),
		cmocka_unit_test(test_option_arity),
		cmocka_unit_test(test_unknown_option_refused),
		cmocka_unit_test(test_readconfig_set_refused),
		cmocka_unit_test(test_positional_json_image),
		cmocka_unit_test(test_machine_none_overridden),
		cmocka_unit_test(test_bad_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
