/* SPDX-License-Identifier: MIT */
/*
 * Policies: what an operator decides, as opposed to the mechanism in
 * uffd-pager/. Per-VM policy files and the pager's own configuration are
 * JSON; parsing and validation live here, with no syscalls beyond reading
 * the file, so every rule is unit-testable.
 *
 * Every error is reported as one line in err->msg of the form
 *   FILE:LINE:COLUMN: field 'PATH': PROBLEM (allowed: VALUES)
 * naming the source (file path, or the name the caller gave), the position
 * of the offending value, the dotted field path and what is allowed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define POLICY_NAME_MAX 64 /* including NUL; names are [A-Za-z0-9._-], 1..63 chars */
/* Largest guest in 4 KiB pages: victim selection keeps 32-bit page indices, two reserved. */
#define POLICY_MAX_GUEST_PAGES ((uint64_t)UINT32_MAX - 1)

struct policy_error {
	char msg[512];
	int line, column; /* 1-based; 0 when unknown */
};

enum policy_unavailable {
	POLICY_UNAVAILABLE_REFUSE = 0, /* "refuse": QEMU does not start (default) */
	POLICY_UNAVAILABLE_RUN_UNPAGED, /* "run-unpaged": start without the pager */
};

enum policy_loss_action {
	POLICY_LOSS_STOP = 0, /* "stop": SIGSTOP the VM, hold it for inspection (default) */
	POLICY_LOSS_KILL,     /* "kill": SIGKILL the VM */
};

enum policy_pager_lost {
	POLICY_PAGER_LOST_WAIT = 0, /* "wait": faulting vCPUs wait for a restarted pager, however long (default) */
	POLICY_PAGER_LOST_STOP,     /* "stop": after pager_lost_max_wait_s without one, SIGSTOP the VM */
	POLICY_PAGER_LOST_KILL,     /* "kill": likewise, SIGKILL */
};

enum policy_store_full {
	POLICY_STORE_FULL_DEGRADE = 0, /* "degrade": pages stay resident, the VM runs over its limit (default) */
	POLICY_STORE_FULL_PAUSE,       /* "pause": faults wait at the limit until a store takes pages again */
};

#define POLICY_MAX_DONORS 16
#define POLICY_URL_MAX 128
#define POLICY_DC_MAX_DRIVES 8

struct policy_vm {
	char name[POLICY_NAME_MAX];        /* "name", required */
	uint64_t local_memory;             /* "local_memory": bytes, required, >= 1M */
	unsigned high_pct;                 /* "watermarks.high": % of local_memory, default 100 */
	unsigned low_pct;                  /* "watermarks.low": default 90, < high */
	char victims[16];                  /* "victims": victim selector (policy/victim.h), default "fifo" */
	uint64_t spill_max;                /* "spill.max_size": bytes, 0 = unlimited (default) */
	enum policy_unavailable on_pager_unavailable; /* "on_pager_unavailable" */
	enum policy_loss_action on_data_loss;         /* "on_data_loss" */
	enum policy_store_full on_store_full;         /* "on_store_full" */
	enum policy_pager_lost on_pager_lost;         /* "on_pager_lost" */
	unsigned pager_lost_max_wait_s;               /* "pager_lost_max_wait_s": 1..86400, default 60 */
	unsigned replicas;   /* "durability.replicas": donors holding each page, 1..3, default 1 */
	bool backup_spill;   /* "durability.backup": "spill" = every remote page also in the spill file */
	bool encryption;     /* "encryption": seal every stored copy (AES-256-GCM), default true */
	bool clean_eviction; /* "clean_eviction": fetched pages keep their copy until written, default true */
	/* "balloon": ask the guest's balloon (through libvirt) to give memory back before paging it out. */
	bool balloon_enabled;        /* "balloon.enabled", default false */
	uint64_t balloon_floor;      /* "balloon.floor": the guest is never ballooned below this, >= 16M, default 256M */
	unsigned balloon_settle_ms;  /* "balloon.settle_ms": time the guest gets to give memory back, 0..600000, default 5000 */
	/* "disk_cache": the VM's disks cached in donor memory (docs/disk-cache.md); absent: dc_size 0. */
	uint64_t dc_size;            /* "disk_cache.size", required, >= 1M */
	uint64_t dc_block_size;      /* "disk_cache.block_size": power of two 4K..1M, default 64K */
	char dc_donors[POLICY_MAX_DONORS][POLICY_URL_MAX]; /* "disk_cache.donors", required, 1..16 */
	unsigned dc_n_donors;
	char dc_drives[POLICY_DC_MAX_DRIVES][POLICY_NAME_MAX]; /* "disk_cache.drives": -drive id / -blockdev node-name, 1..8 */
	unsigned dc_n_drives;
	char dc_key_file[256];       /* "disk_cache.key_file": the donors' pre-shared key; "" = none */
	char dc_client_id[65];       /* "disk_cache.client_id": "" (default) = "disk-" + the VM's name */
	char dc_stats_file[256];     /* "disk_cache.stats_file": set by uffd-qemu, the file the cache's counters go to */
	bool dc_write_fill;          /* "disk_cache.write_fill": whole-block writes fill the cache too, default false */
	/* "sharing_group": VMs naming the same group store equal pages once (docs/sharing.md); "" = no sharing. */
	char sharing_group[POLICY_NAME_MAX];
	/* "fault_spin_us": how long the fault thread polls for the next fault and for its donor read before it
	 * sleeps, 0..1000; 0 = always sleep. Trades pager CPU for fewer wake-ups (docs/policy.md). */
	unsigned fault_spin_us;
};

#define POLICY_BALLOON_MIN_FLOOR (16ULL << 20)
#define POLICY_BALLOON_MAX_SETTLE_MS 600000

enum policy_balloon_why {
	POLICY_BALLOON_LIMIT, /* the limit changed (attach, vm.set-limit, vm.policy.set) */
	POLICY_BALLOON_PARK,  /* vm.park */
	POLICY_BALLOON_DRAIN, /* vm.drain */
};
/*
 * The guest balloon's target in bytes (docs/policy.md, "Guest balloon") for
 * a guest of guest_bytes whose limit is limit; 0 = the domain's maximum
 * memory (deflated). Below the guest's size: max(floor, limit); parking:
 * the floor; otherwise, or with the balloon disabled: 0. Never >= guest_bytes.
 */
uint64_t policy_balloon_target(const struct policy_vm *p, uint64_t guest_bytes, uint64_t limit,
			       enum policy_balloon_why why);

#define POLICY_MAX_REPLICAS 3

/* True if name is 1..63 characters of [A-Za-z0-9._-] and not "." or "..". */
bool policy_name_valid(const char *name);

/* Fills defaults (no name, local_memory 0: not yet valid). */
void policy_vm_init(struct policy_vm *p);
/*
 * Parses and validates a per-VM policy from text. source names it in errors.
 * Unknown keys are errors (a typo must not silently fall back to a default).
 * Returns 0 or -EINVAL (err filled). ret is untouched on failure.
 */
int policy_vm_parse(const char *text, size_t len, const char *source, struct policy_vm *ret,
		    struct policy_error *err);
/*
 * Reads and parses a file (at most 1 MiB). Returns 0, -EINVAL, -EFBIG (too
 * large) or -errno of open/read; err->msg names the file in every case.
 */
int policy_vm_load(const char *path, struct policy_vm *ret, struct policy_error *err);
/* Serializes to JSON text (malloc'ed, caller frees), parseable by policy_vm_parse. */
char *policy_vm_to_json(const struct policy_vm *p);

/* Derived page counts, rounded down, at least 1. */
uint64_t policy_vm_high_pages(const struct policy_vm *p, uint64_t page_size);
uint64_t policy_vm_low_pages(const struct policy_vm *p, uint64_t page_size);

struct policy_pager_config {
	uint64_t budget;              /* "budget": host-wide sum of local_memory; 0 = unlimited */
	uint64_t max_guest_memory;    /* "max_guest_memory": largest VM accepted, default 1T */
	uint64_t max_guest_memory_per_uid; /* "max_guest_memory_per_uid": guest RAM one uid may register in all, default 4T */
	char state_dir[256];          /* "state_dir": default UFFDVM_STATE_DIR */
	char socket_path[108];        /* "socket": registration socket */
	char control_path[108];       /* "control": control socket */
	uid_t allowed_uids[16];       /* "allowed_uids": who may register besides root */
	unsigned n_allowed_uids;
	int log_level;                /* "log_level": "error"|"warn"|"info"|"debug" */
	char donors[POLICY_MAX_DONORS][POLICY_URL_MAX]; /* "donors": ["tcp://HOST:PORT", ...] */
	unsigned n_donors;
	char donor_key_file[256];     /* "donor_key_file": pre-shared key; "" = none (loopback donors only) */
	char client_id[65];           /* "client_id": who the pager is to donors; "" (default): derived from /etc/machine-id */
	unsigned donor_timeout_ms;    /* "donor_timeout_ms": per request, 100..60000, default 2000 */
};

/*
 * True if url is SCHEME://HOST:PORT with scheme tcp or rdma, a non-empty
 * host ([v6] allowed) and a port 1..65535, shorter than POLICY_URL_MAX.
 */
bool policy_donor_url_valid(const char *url);
/* True if id is 1..64 characters of [A-Za-z0-9._:@-] (the donor protocol's client id). */
bool policy_client_id_valid(const char *id);

void policy_config_init(struct policy_pager_config *c);
int policy_config_parse(const char *text, size_t len, const char *source,
			struct policy_pager_config *ret, struct policy_error *err);
/* Same contract as policy_vm_load(). */
int policy_config_load(const char *path, struct policy_pager_config *ret, struct policy_error *err);

/*
 * The one check that needs the file system: refuses a state_dir on tmpfs or
 * ramfs (spill files there would consume the RAM they are meant to free).
 * policy_config_parse() already refuses the usual tmpfs paths (/run,
 * /var/run, /dev/shm) lexically; the daemon calls this at startup.
 * Returns 0, -EINVAL (tmpfs/ramfs) or -errno of statfs(); err gets a message.
 */
int policy_check_state_dir_fstype(const char *dir, char *err, size_t len);
