/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for what a restarted pager reads from a VM's state file
 * (uffd-pager/vmstate.h): vmstate_open's checks, the page map's
 * (pagemap_attach, then every entry it admits read and settled as an
 * adoption does) and the policy saved at run time (vmstate_load_policy,
 * then the policy parser). The file may be anything a disk, an older or a
 * newer build left: every refusal must say why, and nothing the checks
 * admit may be read past the end of the file (a read there would SIGBUS).
 *
 * Input: one flag byte, then the file's first bytes. Flag bit 0 stamps
 * the identity the open expects (magic, version, name, pid, start time,
 * offsets), so that the fuzzer reaches the checks behind it; bit 1 extends
 * the file to cover the store area; bits 2-3 are the copies per page the
 * policy asks (1..4); bit 4 the sealing the policy asks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pagemap.h"
#include "policy.h"
#include "vmstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STORE_BYTES (16 * 4096)
#define START 42ULL

static char dir[] = "/tmp/uffdvm-fuzz-vmstate-XXXXXX";
static char path[96];

static void check(int cond)
{
	if (!cond)
		abort();
}

/* A header that passes the identity checks, so the rest of the input meets the deeper ones. */
static void stamp(uint8_t *file, size_t len)
{
	struct vmstate_header h;

	if (len < sizeof(h))
		return;
	memcpy(&h, file, sizeof(h));
	h.magic = VMSTATE_MAGIC;
	h.version = VMSTATE_VERSION;
	h.header_bytes = sizeof(h);
	h.pid = (uint32_t)getpid();
	h.start_boot_ns = START;
	memset(h.name, 0, sizeof(h.name));
	strcpy(h.name, "f");
	h.policy_offset = 4096;
	h.store_offset = 4096 + ((2 * (8 + GLUE_POLICY_MAX) + 4095) & ~4095u);
	h.store_bytes = STORE_BYTES;
	h.pagemap_offset = h.store_offset + h.store_bytes;
	memcpy(file, &h, sizeof(h));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char policy[GLUE_POLICY_MAX + 1];
	struct vmstate *vs;
	struct pagemap pm = { 0 };
	char err[512];
	uint8_t *file;
	int fd, r;

	if (size < 1)
		return 0;
	log_set_level(LOG_LVL_ERR);
	if (!path[0]) {
		check(mkdtemp(dir) != NULL);
		snprintf(path, sizeof(path), "%s/f-%d.state", dir, (int)getpid());
	}
	file = malloc(size - 1 + 1);
	check(file != NULL);
	memcpy(file, data + 1, size - 1);
	if (data[0] & 1)
		stamp(file, size - 1);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	check(fd >= 0);
	check(write(fd, file, size - 1) == (ssize_t)(size - 1));
	free(file);
	if (data[0] & 2) /* room for the store area and a page map header: a sparse tail */
		check(ftruncate(fd, (off_t)(size - 1) + 4096 + 73728 + STORE_BYTES + 128) == 0);
	close(fd);

	err[0] = '\0';
	r = vmstate_open(dir, "f", getpid(), START, STORE_BYTES, &vs, err, sizeof(err));
	if (r < 0) {
		check(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	unsigned ncopies = 1 + ((data[0] >> 2) & 3);
	err[0] = '\0';
	r = pagemap_attach(&pm, vs->fd, vs->hdr->pagemap_offset, ncopies, data[0] & 16, err, sizeof(err));
	if (r < 0) {
		check(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
	} else {
		/* Every entry the checks admit is inside the file: read them all, settle them as adoption does. */
		pagemap_adopt_begin(&pm);
		for (uint64_t p = 0; p < pagemap_npages(&pm) && p < (1u << 16); p++) {
			uint32_t locs[STORE_MAX_COPIES];
			pagemap_get_locs(&pm, p, locs);
			pagemap_adopt(&pm, p, p & 1);
		}
		pagemap_destroy(&pm);
	}
	int n = vmstate_load_policy(vs, policy, sizeof(policy));
	if (n >= 0) {
		struct policy_vm pol;
		struct policy_error perr;
		check((size_t)n < sizeof(policy) && policy[n] == '\0');
		if (policy_vm_parse(policy, (size_t)n, "fuzz", &pol, &perr) < 0)
			check(perr.msg[0] != '\0');
	} else {
		check(n == -ENOENT || n == -EBADMSG);
	}
	vmstate_close(vs, true);
	return 0;
}
