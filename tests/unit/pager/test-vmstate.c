/* SPDX-License-Identifier: MIT */
/*
 * The VM state file (uffd-pager/vmstate.h) and the page map inside it: what
 * one pager writes, the next reads back as it was; every damaged, foreign
 * or outdated file is refused with the reason, never guessed at.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pagemap.h"
#include "vmstate.h"

#define STORE_BYTES (64 * 1024)
#define START 123456789ULL

static char dir[64];
static char path[128];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/var/tmp/uffdvm-vmstate-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/vm-%d.state", dir, (int)getpid());
	return 0;
}

static int teardown(void **state)
{
	unlink(path);
	return rmdir(dir);
}

/* A VM's file with two regions and a page map of 100 pages, page 7 stored at location 42. */
static void write_vm(void)
{
	struct vmstate *vs;
	struct pagemap pm;
	struct stat st;

	assert_int_equal(vmstate_create(dir, "vm", getpid(), START, "", STORE_BYTES, &vs), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(vmstate_add_region(vs, 0x10000, 256 << 12, 0), 0);
	assert_int_equal(vmstate_add_region(vs, 0x900000, 144 << 12, 256 << 12), 0);
	assert_int_equal(pagemap_init(&pm, 2, vs->fd, vs->hdr->pagemap_offset), 0);
	pagemap_use_versions(&pm);
	assert_int_equal(pagemap_grow(&pm, 100), 0);
	assert_true(pagemap_installed(&pm, 7, NULL));
	assert_true(pagemap_evict_begin(&pm, 7));
	pagemap_evict_commit(&pm, 7, (uint32_t[STORE_MAX_COPIES]){ 42, LOC_NONE, LOC_NONE, LOC_NONE }, 0);
	pagemap_destroy(&pm);
	vmstate_close(vs, true); /* as a pager that dies: the file stays */
}

static void test_roundtrip(void **state)
{
	struct vmstate *vs;
	struct pagemap pm;
	uint32_t locs[STORE_MAX_COPIES];
	char err[512];
	uint8_t secret[GLUE_SECRET_LEN];

	write_vm();
	assert_int_equal(vmstate_open(dir, "vm", getpid(), START, STORE_BYTES, &vs, err, sizeof(err)), 0);
	assert_int_equal(vs->hdr->nregions, 2);
	assert_int_equal(vs->hdr->regions[1].memfd_offset, 256 << 12);
	memcpy(secret, vs->hdr->secret, sizeof(secret));
	assert_true(vmstate_secret_matches(vs, secret));
	secret[31] ^= 1;
	assert_false(vmstate_secret_matches(vs, secret));
	assert_int_equal(pagemap_attach(&pm, vs->fd, vs->hdr->pagemap_offset, 2, true, err, sizeof(err)), 0);
	assert_int_equal(pagemap_npages(&pm), 100);
	assert_int_equal(pagemap_entry(&pm, 7)->state, PG_EVICT_COMMITTED);
	assert_int_equal(pagemap_entry(&pm, 7)->version, 1);
	pagemap_get_locs(&pm, 7, locs);
	assert_int_equal(locs[0], 42);
	assert_int_equal(locs[1], LOC_NONE);
	/* another policy, another map: refused */
	assert_int_equal(pagemap_attach(&(struct pagemap){ 0 }, vs->fd, vs->hdr->pagemap_offset, 1, true, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "copies per page"));
	assert_int_equal(pagemap_attach(&(struct pagemap){ 0 }, vs->fd, vs->hdr->pagemap_offset, 2, false, err, sizeof(err)),
			 -EINVAL);
	/* adoption: the punch happened (a hole), so the committed page is stored; counters recounted */
	pagemap_adopt_begin(&pm);
	assert_int_equal(pagemap_adopt(&pm, 7, false), PG_STORED);
	assert_int_equal(pagemap_adopt(&pm, 8, false), PG_UNTOUCHED);
	assert_int_equal(pagemap_stored(&pm), 1);
	assert_int_equal(pagemap_resident(&pm), 0);
	pagemap_destroy(&pm);
	vmstate_close(vs, false);
	assert_int_equal(access(path, F_OK), -1); /* deleted with the VM */
}

static void patch(off_t off, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
	close(fd);
}

static void test_refusals(void **state)
{
	struct vmstate *vs;
	char err[512];
	uint16_t v = 99;

	write_vm();
	/* a process that only holds the pid now */
	assert_int_equal(vmstate_open(dir, "vm", getpid(), START + 1, STORE_BYTES, &vs, err, sizeof(err)), -ESRCH);
	assert_non_null(strstr(err, "earlier process"));
	/* a build whose store needs another layout */
	assert_int_equal(vmstate_open(dir, "vm", getpid(), START, STORE_BYTES * 2, &vs, err, sizeof(err)), -EBADMSG);
	/* no file for that VM */
	assert_int_equal(vmstate_open(dir, "other", getpid(), START, STORE_BYTES, &vs, err, sizeof(err)), -ENOENT);
	/* another format version: named, never guessed at */
	patch(offsetof(struct vmstate_header, version), &v, sizeof(v));
	assert_int_equal(vmstate_open(dir, "vm", getpid(), START, STORE_BYTES, &vs, err, sizeof(err)), -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "format version 99"));
	assert_non_null(strstr(err, path));
	/* cut short */
	assert_int_equal(truncate(path, 100), 0);
	assert_int_equal(vmstate_open(dir, "vm", getpid(), START, STORE_BYTES, &vs, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "not a uffdvm state file"));
	/* a map cut short inside a file whose header is intact */
	unlink(path);
	write_vm();
	assert_int_equal(vmstate_open(dir, "vm", getpid(), START, STORE_BYTES, &vs, err, sizeof(err)), 0);
	assert_int_equal(ftruncate(vs->fd, (off_t)vs->hdr->pagemap_offset + 128), 0);
	assert_int_equal(pagemap_attach(&(struct pagemap){ 0 }, vs->fd, vs->hdr->pagemap_offset, 2, true, err, sizeof(err)),
			 -EBADMSG);
	assert_non_null(strstr(err, "truncated"));
	vmstate_close(vs, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
