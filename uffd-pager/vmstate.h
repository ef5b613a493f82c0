/* SPDX-License-Identifier: MIT */
/*
 * A VM's state file, STATE_DIR/NAME-PID.state: everything a restarted
 * pager needs to adopt a running VM, in one file the pager maps shared,
 * so what it wrote survives its death in the page cache (a host crash
 * kills the guests too, so nothing is ever fsync'ed).
 *
 *   0        header (this file's format version, the VM's identity, its
 *            secret, its regions)
 *   4 KiB    the store's area (store.h: donor table, slab table)
 *   ...      the page map (pagemap.h), growing at the end of the file
 *
 * Beside it live NAME-PID.spill (spill.h) and NAME-PID.key (seal.h). The
 * three go together: when the VM exits, or at start-up when the process
 * is gone or its pid now names another process.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "glue-proto.h"

#define VMSTATE_MAGIC 0x53564655u /* "UFVS" little-endian */
#define VMSTATE_VERSION 1
#define VMSTATE_MAX_REGIONS 16

struct vmstate_region {
	uint64_t host_addr, length, memfd_offset;
};

struct vmstate_header {
	uint32_t magic;
	uint16_t version;
	uint16_t header_bytes;    /* sizeof(struct vmstate_header) of the writer */
	uint32_t pid;
	uint32_t nregions;
	uint64_t start_boot_ns;   /* the process's start time: a recycled pid has another */
	char name[GLUE_NAME_MAX];
	char uuid[GLUE_UUID_MAX];
	uint8_t reserved[3];
	uint8_t secret[GLUE_SECRET_LEN]; /* what a resuming shim must show */
	struct vmstate_region regions[VMSTATE_MAX_REGIONS];
	uint64_t store_offset, store_bytes;
	uint64_t pagemap_offset;
};

struct vmstate {
	int fd;
	char path[512];
	struct vmstate_header *hdr; /* mapped shared */
	void *store_area;           /* mapped shared, hdr->store_bytes */
};

/*
 * Creates the file for a new VM (exclusively, mode 0600; a stale file of
 * that name is replaced) with the VM's identity and a fresh random
 * secret. Returns 0 or -errno.
 */
int vmstate_create(const char *dir, const char *name, pid_t pid, uint64_t start_boot_ns, const char *uuid,
		   size_t store_bytes, struct vmstate **ret);
/*
 * Opens the file an earlier pager left for NAME-PID and checks it: this
 * build's format, the right name and pid, a process start time that
 * matches, sizes that fit the file (store_bytes: what this build's store
 * needs). Returns 0, or -ENOENT, -EPROTONOSUPPORT
 * (another format version), -EBADMSG (corrupted, truncated, foreign) or
 * -ESRCH (the pid now names another process), with *err saying which.
 */
int vmstate_open(const char *dir, const char *name, pid_t pid, uint64_t start_boot_ns, size_t store_bytes,
		 struct vmstate **ret, char *err, size_t errlen);
/* True when the secret a resuming shim showed is this VM's (constant time). */
bool vmstate_secret_matches(const struct vmstate *vs, const uint8_t *secret);
/* Records region i as the shim registered it (new VMs). Returns 0 or -E2BIG. */
int vmstate_add_region(struct vmstate *vs, uint64_t host_addr, uint64_t length, uint64_t memfd_offset);
/* Unmaps and closes; deletes the file unless keep_file (the VM lives on). NULL-safe. */
void vmstate_close(struct vmstate *vs, bool keep_file);

/*
 * Start-up clean-up of DIR: deletes NAME-PID.state, .spill and .key files
 * whose process is gone, or whose state file records another start time
 * than the process that has the pid now (pid reuse), logging each; files
 * of live VMs (to be adopted) and other names are kept. Returns how many
 * were deleted, or -errno when DIR cannot be read.
 */
int vmstate_remove_stale(const char *dir);
/* Start time of pid in ns since boot (/proc/PID/stat field 22). Returns 0 or -errno. */
int vmstate_pid_start(pid_t pid, uint64_t *ret);
