/* SPDX-License-Identifier: MIT */
/*
 * VM lifecycle, page addressing, limits and statistics. The page map
 * itself (entries and counters) is pagemap.c's; this file only grows it
 * as regions arrive and reads it for the statistics.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "events.h"
#include "util.h"
#include "vm-private.h"
#include "vm.h"
#include "vmstate.h"

struct vm_region *vm_region_of_page(struct vm *vm, uint64_t page)
{
	for (unsigned i = 1; i < vm->nregions; i++)
		if (page < vm->regions[i].first_page)
			return &vm->regions[i - 1];
	return &vm->regions[vm->nregions - 1];
}

int vm_addr_to_page(struct vm *vm, uint64_t addr, uint64_t *ret_page)
{
	for (unsigned i = 0; i < vm->nregions; i++) {
		struct vm_region *r = &vm->regions[i];
		if (addr >= r->host_addr && addr - r->host_addr < r->length) {
			*ret_page = r->first_page + ((addr - r->host_addr) >> PAGE_SHIFT_4K);
			return 0;
		}
	}
	return -EFAULT;
}

uint64_t vm_page_addr(struct vm *vm, uint64_t page)
{
	struct vm_region *r = vm_region_of_page(vm, page);

	return r->host_addr + ((page - r->first_page) << PAGE_SHIFT_4K);
}

void vm_update_watermarks(struct vm *vm)
{
	vm->high_pages = policy_vm_high_pages(&vm->policy, PAGE_SIZE_4K);
	vm->low_pages = policy_vm_low_pages(&vm->policy, PAGE_SIZE_4K);
	if (vm->low_pages >= vm->high_pages)
		vm->low_pages = vm->high_pages > 1 ? vm->high_pages - 1 : 0;
	/* The fault thread throttles at high_pages: above the guest's size it never does. */
	if (vm->balloon_settling)
		vm->high_pages = vm->npages + 1;
}

void vm_set_balloon_settle(struct vm *vm, bool settling)
{
	pthread_mutex_lock(&vm->lock);
	vm->balloon_settling = settling;
	vm_update_watermarks(vm);
	pthread_cond_signal(&vm->evict_cond);
	pthread_cond_broadcast(&vm->space_cond);
	pthread_mutex_unlock(&vm->lock);
}

static int pidfd_signal(int pidfd, int sig)
{
	return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

void vm_data_loss(struct vm *vm, uint64_t page, const char *why)
{
	char name[sizeof(vm->policy.name)];
	bool kill_it;

	/* vm_set_policy rewrites the policy under the lock: take what is needed under it too. */
	pthread_mutex_lock(&vm->lock);
	vm->failed = true;
	kill_it = vm->policy.on_data_loss == POLICY_LOSS_KILL;
	memcpy(name, vm->policy.name, sizeof(name));
	pthread_mutex_unlock(&vm->lock);
	vm_log_err(name, "page %llu (guest RAM offset 0x%llx) cannot be restored: %s; never installing it; %s the VM (pid %d) per policy 'on_data_loss'", (unsigned long long)page, (unsigned long long)(page << PAGE_SHIFT_4K), why,
		kill_it ? "killing" : "stopping", (int)vm->pid);
	events_emit("page.lost", json_pack("{s:s, s:i, s:I, s:I, s:s, s:s}", "vm", name, "pid",
						(int)vm->pid, "page", (json_int_t)page, "offset",
						(json_int_t)(page << PAGE_SHIFT_4K), "reason", why, "action",
						kill_it ? "killed" : "stopped"));
	/* pidfd: the signal cannot reach a recycled pid. */
	pidfd_signal(vm->pidfd, kill_it ? SIGKILL : SIGSTOP);
}

static void vm_release(struct vm *vm, bool keep);

int vm_new(const struct policy_vm *policy, pid_t pid, int pidfd, int uffd, const char *state_dir,
	   uint64_t max_guest_memory, struct donor_pool *pool, struct vmstate *vs, bool adopt, struct vm **ret,
	   char *err, size_t errlen)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	int r;

	if (!vm) {
		close(uffd);
		close(pidfd);
		vmstate_close(vs, adopt);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	vm->policy = *policy;
	vm->pid = pid;
	vm->pidfd = pidfd;
	vm->uffd = uffd;
	vm->vs = vs;
	vm->adopting = adopt;
	vm->max_guest_memory = max_guest_memory;
	vm->pool = pool;
	vm->ncopies = store_copies_for(policy);
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->evict_cond, NULL);
	pthread_cond_init(&vm->space_cond, NULL);
	pthread_cond_init(&vm->repair_cond, NULL);
	snprintf(vm->state_dir, sizeof(vm->state_dir), "%s", state_dir);
	vm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vm->drain_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vm->sampler_fd = -1;
	atomic_init(&vm->clean_eviction, policy->clean_eviction);
	atomic_init(&vm->fault_spin_us, policy->fault_spin_us);
	vm->victim = policy_victim_find(policy->victims); /* checked by the policy parser */
	if (!vm->victim)
		vm->victim = &policy_victim_fifo;
	vm_update_watermarks(vm);
	if (vm->stop_efd < 0 || vm->drain_efd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		vm_release(vm, adopt);
		return -EMFILE;
	}
	/* The page map lives in the state file, where the next pager finds it. */
	if (adopt)
		r = pagemap_attach(&vm->map, vs->fd, vs->hdr->pagemap_offset, vm->ncopies, policy->encryption, err,
				   errlen);
	else if ((r = pagemap_init(&vm->map, vm->ncopies, vs->fd, vs->hdr->pagemap_offset)) < 0)
		snprintf(err, errlen, "page map: %s", strerror(-r));
	if (r < 0) {
		vm_release(vm, adopt);
		return r;
	}
	if (policy->encryption && !adopt)
		pagemap_use_versions(&vm->map);
	*ret = vm;
	return 0;
}

/* Re-creates the victim selector for the grown page space, keeping every resident page queued. */
int vm_resize_victims(struct vm *vm, uint64_t npages)
{
	void *st = vm->victim->create(npages);

	if (!st)
		return -ENOMEM;
	/* Regions come before the guest runs: usually nothing is resident and nothing is read. */
	uint64_t left = pagemap_resident(&vm->map);
	for (uint64_t p = 0; left && p < pagemap_npages(&vm->map); p++) {
		uint8_t state = pagemap_entry(&vm->map, p)->state;

		if (state == PG_RESIDENT)
			vm->victim->on_resident(st, p);
		left -= state == PG_RESIDENT || state == PG_EVICTING || state == PG_EVICT_COMMITTED;
	}
	if (vm->victim_state)
		vm->victim->destroy(vm->victim_state);
	vm->victim_state = st;
	return 0;
}

int vm_add_region(struct vm *vm, int memfd, uint64_t host_addr, uint64_t length, uint64_t memfd_offset,
		  char *err, size_t errlen)
{
	struct vm_region *r;
	struct stat st;
	uint64_t npages = length >> PAGE_SHIFT_4K;
	int ret;

	if (vm->nregions >= VM_MAX_REGIONS) {
		snprintf(err, errlen, "more than %d RAM regions", VM_MAX_REGIONS);
		ret = -E2BIG;
		goto fail;
	}
	if (!length || (length | host_addr | memfd_offset) & (PAGE_SIZE_4K - 1) || host_addr + length < host_addr) {
		snprintf(err, errlen, "region not 4 KiB aligned (addr 0x%llx, length %llu, offset %llu)",
			 (unsigned long long)host_addr, (unsigned long long)length, (unsigned long long)memfd_offset);
		ret = -EINVAL;
		goto fail;
	}
	if (fstat(memfd, &st) < 0 || !S_ISREG(st.st_mode) || memfd_offset > (uint64_t)st.st_size ||
	    length > (uint64_t)st.st_size - memfd_offset) {
		snprintf(err, errlen, "region of %llu bytes at offset %llu does not fit the memfd (%lld bytes)",
			 (unsigned long long)length, (unsigned long long)memfd_offset, (long long)st.st_size);
		ret = -EINVAL;
		goto fail;
	}
	if (((vm->npages + npages) << PAGE_SHIFT_4K) > vm->max_guest_memory ||
	    vm->npages + npages >= UINT32_MAX - 2) {
		snprintf(err, errlen, "guest RAM would exceed the pager's max_guest_memory");
		ret = -E2BIG;
		goto fail;
	}
	for (unsigned i = 0; i < vm->nregions; i++) {
		struct vm_region *o = &vm->regions[i];
		if (host_addr < o->host_addr + o->length && o->host_addr < host_addr + length) {
			snprintf(err, errlen, "region at 0x%llx overlaps an existing one", (unsigned long long)host_addr);
			ret = -EINVAL;
			goto fail;
		}
	}

	/* An adopted VM sends the regions its state file records again; one the dead pager never took is new. */
	const bool recorded = vm->adopting && vm->nregions < vm->vs->hdr->nregions;
	if (recorded) {
		const struct vmstate_region *rec = &vm->vs->hdr->regions[vm->nregions];
		if (rec->host_addr != host_addr || rec->length != length || rec->memfd_offset != memfd_offset) {
			snprintf(err, errlen, "region %u (0x%llx, %llu bytes at offset %llu) is not the one the state file "
				 "records", vm->nregions, (unsigned long long)host_addr, (unsigned long long)length,
				 (unsigned long long)memfd_offset);
			ret = -EINVAL;
			goto fail;
		}
	} else if (vm->nregions >= VMSTATE_MAX_REGIONS) {
		snprintf(err, errlen, "more than %d RAM regions", VMSTATE_MAX_REGIONS);
		ret = -E2BIG;
		goto fail;
	} else if (vm->threads_started) {
		/* Recorded before any page of it is served. (The first one: once its stores exist, below.) */
		vmstate_add_region(vm->vs, host_addr, length, memfd_offset);
	}

	pthread_mutex_lock(&vm->lock);
	/* Victims first: a selector sized for more pages than a failed grow left is harmless. */
	ret = vm_resize_victims(vm, vm->npages + npages);
	if (ret < 0) {
		pthread_mutex_unlock(&vm->lock);
		snprintf(err, errlen, "victim selector: out of memory");
		goto fail;
	}
	/*
	 * The map is a sparse file: the untouched part of a huge guest costs
	 * nothing. An adopted VM's map already covers its recorded regions,
	 * unless the dead pager recorded one and died before growing the map.
	 */
	const uint64_t have = pagemap_npages(&vm->map);
	ret = vm->npages + npages > have ? pagemap_grow(&vm->map, vm->npages + npages - have) : 0;
	if (ret < 0) {
		pthread_mutex_unlock(&vm->lock);
		snprintf(err, errlen, "page map: %s", strerror(-ret));
		goto fail;
	}
	r = &vm->regions[vm->nregions];
	*r = (struct vm_region){ .host_addr = host_addr, .length = length, .memfd_offset = memfd_offset,
				 .first_page = vm->npages, .memfd = memfd };
	/* Regions stay sorted by first_page because each is appended at the end. */
	vm->nregions++;
	vm->npages += npages;
	pthread_mutex_unlock(&vm->lock);

	/* A new VM starts paging at its first region; an adopted one once it has every region back. */
	if (!vm->threads_started && (!vm->adopting || vm->nregions >= vm->vs->hdr->nregions)) {
		uint64_t max_slots = vm->policy.spill_max / PAGE_SIZE_4K;
		/* Spill slots share the 32-bit location with remote copies: 31 bits. */
		if (!max_slots || max_slots > STORE_SPILL_MAX_SLOTS)
			max_slots = STORE_SPILL_MAX_SLOTS;
		struct spill *spill = NULL;
		struct store *store = NULL;
		char fname[128];

		snprintf(fname, sizeof(fname), "%s-%d", vm->policy.name, (int)vm->pid);
		ret = spill_new(vm->state_dir, fname, max_slots, vm->adopting, &spill);
		if (ret < 0) {
			snprintf(err, errlen, "cannot %s spill file in %s: %s", vm->adopting ? "open the" : "create a",
				 vm->state_dir, strerror(-ret));
			return ret; /* the region stays owned by the VM and is freed with it */
		}
		struct seal *seal = NULL;
		/* The key sits beside the spill file, as NAME-PID.key, and goes with the VM. */
		if (vm->policy.encryption &&
		    (ret = vm->adopting ? seal_load(vm->state_dir, fname, &seal) : seal_new(vm->state_dir, fname, &seal)) < 0) {
			spill_free(spill, vm->adopting);
			snprintf(err, errlen, "cannot %s the sealing key in %s: %s", vm->adopting ? "read" : "create",
				 vm->state_dir, strerror(-ret));
			return ret;
		}
		ret = store_new(vm->policy.name, vm->pool, spill, seal, &vm->policy, vm->vs->store_area, vm->adopting,
				&store);
		if (ret < 0)
			seal_free(seal, vm->adopting);
		/* vm.stats on the control thread may look at a VM still attaching: publish under the lock. */
		pthread_mutex_lock(&vm->lock);
		vm->spill = spill;
		vm->store = store;
		pthread_mutex_unlock(&vm->lock);
		if (ret < 0) {
			snprintf(err, errlen, "cannot set up stores: %s", ret == -EBADMSG ? "the state file holds no slab table" : strerror(-ret));
			return ret;
		}
		/* Before adoption: the group (a dead pager's, from its files) counts the map's references. */
		if (vm->policy.sharing_group[0]) {
			struct share_group *g;

			snprintf(vm->share_member.name, sizeof(vm->share_member.name), "%s", vm->policy.name);
			vm->share_member.pid = (int32_t)vm->pid;
			vm->share_member.start_ns = vm->vs->hdr->start_boot_ns;
			ret = share_group_join(&vm->policy, vm->pool, vm->state_dir, &vm->share_member, &g, err, errlen);
			if (ret < 0)
				return ret;
			store_set_shared(store, &share_store_ops, g);
			pthread_mutex_lock(&vm->lock);
			vm->share = g;
			pthread_mutex_unlock(&vm->lock);
			if (!vm->adopting && (ret = share_group_adopt(g, &vm->share_member, NULL, 0, err, errlen)) < 0)
				return ret;
			vm->share_held = !vm->adopting;
		}
		if (vm->adopting && (ret = vm_adopt_recover(vm, err, errlen)) < 0)
			return ret;
		/*
		 * A recorded region promises the next pager a spill file, a key and a
		 * slab table: so the first one is recorded only now, before any page
		 * of it is served. A pager that dies before leaves no region, and the
		 * VM registers afresh with the next one.
		 */
		if (!recorded)
			vmstate_add_region(vm->vs, host_addr, length, memfd_offset);
		/* Before the evictor runs: clearing protection after it protects a victim would let a write past it. */
		if (vm->adopting)
			vm_adopt_wake(vm);
		if ((ret = -pthread_create(&vm->fault_thread, NULL, vm_fault_thread, vm)) < 0 ||
		    (ret = -pthread_create(&vm->evict_thread, NULL, vm_evict_thread, vm)) < 0 ||
		    (ret = -pthread_create(&vm->repair_thread, NULL, vm_repair_thread, vm)) < 0) {
			snprintf(err, errlen, "cannot start threads: %s", strerror(-ret));
			/* a started fault thread is stopped by vm_free through stop_efd */
			return ret;
		}
		pthread_mutex_lock(&vm->lock);
		vm->threads_started = true;
		vm->adopted = vm->adopting; /* paging again */
		pthread_mutex_unlock(&vm->lock);
		vm_log_info(vm->policy.name, "%s pid %d, local memory %llu MiB, spill %s%s, %u donors, replicas %u%s",
			 vm->adopting ? "adopted" : "paging", (int)vm->pid, (unsigned long long)(vm->policy.local_memory >> 20),
			 spill_path(vm->spill), spill_is_direct(vm->spill) ? " (O_DIRECT)" : "",
			 donor_pool_count(vm->pool), vm->policy.replicas, vm->policy.backup_spill ? ", spill backup" : "");
	}
	vm_log_info(vm->policy.name, "region %u: %llu MiB at 0x%llx", vm->nregions - 1,
		 (unsigned long long)(length >> 20), (unsigned long long)host_addr);
	return 0;

fail:
	close(memfd);
	return ret;
}

/*
 * The references the page map holds in the VM's sharing group, dropped
 * (threads stopped): the VM exits, or every page it had in the group is
 * back in its memory (docs/sharing.md, "Pager restart").
 */
static void drop_shared_refs(struct vm *vm)
{
	uint32_t locs[STORE_MAX_COPIES];

	if (!vm->share)
		return;
	for (uint64_t p = 0; p < pagemap_npages(&vm->map); p++) {
		pagemap_get_locs(&vm->map, p, locs);
		for (unsigned c = 0; c < STORE_MAX_COPIES; c++)
			if (loc_is_shared(locs[c]))
				store_free_loc(vm->store, locs[c]);
	}
}

/* Stops the threads and frees the VM; keep: the files (state, spill, key) and donor slabs stay for the next pager. */
static void vm_release(struct vm *vm, bool keep)
{
	pthread_mutex_lock(&vm->lock);
	vm->stopping = true;
	pthread_cond_broadcast(&vm->evict_cond);
	pthread_cond_broadcast(&vm->space_cond);
	pthread_cond_broadcast(&vm->repair_cond);
	pthread_mutex_unlock(&vm->lock);
	if (vm->threads_started) {
		uint64_t one = 1;
		if (write(vm->stop_efd, &one, sizeof(one)) < 0)
			vm_log_warn(vm->policy.name, "cannot signal the fault thread: %s", strerror(errno));
		pthread_join(vm->fault_thread, NULL);
		pthread_join(vm->evict_thread, NULL);
		pthread_join(vm->repair_thread, NULL);
	}
	if (vm->threads_started)
		vm_log_info(vm->policy.name, "final: %llu zero faults, %llu refaults, %llu wp faults, %llu evictions (%llu aborted), %llu integrity errors, fault p50 %llu ns p99 %llu ns", (unsigned long long)vm->stats.faults_zero,
			 (unsigned long long)(vm->stats.faults_spill + vm->stats.faults_donor),
			 (unsigned long long)vm->stats.faults_wp, (unsigned long long)vm->stats.evictions,
			 (unsigned long long)vm->stats.evictions_aborted, (unsigned long long)vm->stats.integrity_errors,
			 (unsigned long long)hist_quantile(&vm->fault_latency, 0.5),
			 (unsigned long long)hist_quantile(&vm->fault_latency, 0.99));
	/*
	 * The pager stops and the VM lives on: its group pages stay stored, named by the group's
	 * state file, and the next pager adopts them as after a crash (docs/sharing.md).
	 */
	const bool named = vm->share && keep;
	if (vm->share_held && !named)
		drop_shared_refs(vm);
	if (keep)
		store_detach(vm->store);
	else
		store_free(vm->store);
	share_group_leave(vm->share, &vm->share_member, named);
	spill_free(vm->spill, keep);
	for (unsigned i = 0; i < vm->nregions; i++)
		close(vm->regions[i].memfd);
	pagemap_destroy(&vm->map);
	vmstate_close(vm->vs, keep);
	if (vm->victim_state)
		vm->victim->destroy(vm->victim_state);
	if (vm->uffd >= 0)
		close(vm->uffd);
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	if (vm->stop_efd >= 0)
		close(vm->stop_efd);
	if (vm->drain_efd >= 0)
		close(vm->drain_efd);
	if (vm->sampler_fd >= 0)
		close(vm->sampler_fd);
	pthread_cond_destroy(&vm->evict_cond);
	pthread_cond_destroy(&vm->space_cond);
	pthread_cond_destroy(&vm->repair_cond);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
}

void vm_set_sampler(struct vm *vm, int fd)
{
	int old;

	pthread_mutex_lock(&vm->lock);
	old = vm->sampler_fd;
	vm->sampler_fd = fd;
	pthread_mutex_unlock(&vm->lock);
	if (old >= 0)
		close(old);
}

void vm_free(struct vm *vm)
{
	if (vm)
		vm_release(vm, false);
}

void vm_detach(struct vm *vm)
{
	if (vm)
		vm_release(vm, true);
}

const char *vm_name(const struct vm *vm) { return vm->policy.name; }
const uint8_t *vm_secret(const struct vm *vm) { return vm->vs->hdr->secret; }
void vm_set_waited(struct vm *vm, uint32_t waited_ms) { vm->waited_ms = waited_ms; }

bool vm_adopted(struct vm *vm, uint32_t *ret_waited_ms, uint64_t *ret_recover_ns)
{
	bool adopted;

	pthread_mutex_lock(&vm->lock);
	adopted = vm->adopted;
	*ret_waited_ms = vm->waited_ms;
	*ret_recover_ns = vm->adopt_ns;
	pthread_mutex_unlock(&vm->lock);
	return adopted;
}

bool vm_adoption_pending(struct vm *vm)
{
	bool pending;

	pthread_mutex_lock(&vm->lock);
	pending = vm->adopting && !vm->adopted;
	pthread_mutex_unlock(&vm->lock);
	return pending;
}
const char *vm_uuid(const struct vm *vm) { return vm->uuid; }
void vm_set_uuid(struct vm *vm, const char *uuid) { snprintf(vm->uuid, sizeof(vm->uuid), "%s", uuid); }
pid_t vm_pid(const struct vm *vm) { return vm->pid; }
uint64_t vm_local_memory(const struct vm *vm) { return vm->policy.local_memory; }

uint64_t vm_guest_bytes(const struct vm *vm) { return vm->npages << PAGE_SHIFT_4K; }

void vm_request_drain(struct vm *vm)
{
	uint64_t one = 1;

	pthread_mutex_lock(&vm->lock);
	vm->hold_resident = true; /* a drained VM stays drained until its limit changes */
	vm->parking = false;
	vm->draining = true;
	vm->drain_cursor = 0;
	pthread_cond_broadcast(&vm->space_cond);
	pthread_mutex_unlock(&vm->lock);
	if (write(vm->drain_efd, &one, sizeof(one)) < 0)
		vm_log_warn(vm->policy.name, "cannot wake the fault thread for a drain: %s", strerror(errno));
}

bool vm_drain_busy(struct vm *vm, uint64_t *ret_stored)
{
	bool busy;

	pthread_mutex_lock(&vm->lock);
	busy = vm->draining;
	*ret_stored = pagemap_stored(&vm->map);
	pthread_mutex_unlock(&vm->lock);
	return busy;
}

void vm_request_park(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->hold_resident = false;
	vm->parking = true;
	pthread_cond_signal(&vm->evict_cond);
	pthread_mutex_unlock(&vm->lock);
}

bool vm_park_busy(struct vm *vm, uint64_t *ret_resident)
{
	bool busy;

	pthread_mutex_lock(&vm->lock);
	busy = vm->parking;
	*ret_resident = pagemap_resident(&vm->map);
	pthread_mutex_unlock(&vm->lock);
	return busy;
}

const struct policy_vm *vm_policy(const struct vm *vm) { return &vm->policy; }

/* A run-time change outlives this pager: the next one adopts the VM with it. Under lock. */
static void save_policy_locked(struct vm *vm)
{
	char *json = policy_vm_to_json(&vm->policy);
	int r = json ? vmstate_save_policy(vm->vs, json) : -ENOMEM;

	if (r < 0)
		vm_log_warn(vm->policy.name, "cannot save the changed policy in the state file (%s): a restarted "
			    "pager would use the policy the VM was launched with", strerror(-r));
	free(json);
}

int vm_set_policy(struct vm *vm, const struct policy_vm *pol, char *err, size_t errlen)
{
	if (pol->replicas != vm->policy.replicas || pol->backup_spill != vm->policy.backup_spill) {
		snprintf(err, errlen, "field 'durability' cannot change while the VM runs (it sizes the page map)");
		return -EINVAL;
	}
	if (strcmp(pol->victims, vm->policy.victims) != 0) {
		snprintf(err, errlen, "field 'victims' cannot change while the VM runs (the selector's queue is built as pages fault in)");
		return -EINVAL;
	}
	if (strcmp(pol->sharing_group, vm->policy.sharing_group) != 0) {
		snprintf(err, errlen, "field 'sharing_group' cannot change while the VM runs (its stored pages are %s)",
			 vm->policy.sharing_group[0] ? "the group's" : "its own");
		return -EINVAL;
	}
	if (pol->encryption != vm->policy.encryption) {
		snprintf(err, errlen, "field 'encryption' cannot change while the VM runs (its stored copies are %s)",
			 vm->policy.encryption ? "sealed" : "in clear");
		return -EINVAL;
	}
	pthread_mutex_lock(&vm->lock);
	vm->policy = *pol;
	atomic_store(&vm->clean_eviction, pol->clean_eviction);
	atomic_store(&vm->fault_spin_us, pol->fault_spin_us);
	vm->hold_resident = false;
	vm_update_watermarks(vm);
	save_policy_locked(vm);
	pthread_cond_signal(&vm->evict_cond);
	pthread_cond_broadcast(&vm->space_cond);
	pthread_mutex_unlock(&vm->lock);
	if (vm->spill)
		spill_set_max_slots(vm->spill, pol->spill_max / PAGE_SIZE_4K);
	return 0;
}

void vm_set_local_memory(struct vm *vm, uint64_t bytes)
{
	pthread_mutex_lock(&vm->lock);
	vm->policy.local_memory = bytes;
	vm->hold_resident = false;
	vm_update_watermarks(vm);
	save_policy_locked(vm);
	pthread_cond_signal(&vm->evict_cond);
	pthread_cond_broadcast(&vm->space_cond);
	pthread_mutex_unlock(&vm->lock);
}

/* Pages the memfds really hold: the ground truth, not our counter. Under lock (regions may be added). */
static uint64_t memfd_resident_pages(struct vm *vm)
{
	uint64_t pages = 0;

	for (unsigned i = 0; i < vm->nregions; i++) {
		struct stat st;
		if (fstat(vm->regions[i].memfd, &st) == 0)
			pages += (uint64_t)st.st_blocks * 512 / PAGE_SIZE_4K;
	}
	return pages;
}

static const char *vm_state_name(struct vm *vm)
{
	if (vm->failed)
		return "failed";
	if (vm->degraded)
		return "degraded";
	if (vm->throttled)
		return "throttled";
	return "running";
}

#define STAT(field) ((json_int_t)atomic_load_explicit(&vm->stats.field, memory_order_relaxed))

/*
 * The disk cache's counters (docs/disk-cache.md): its nbdkit filter keeps
 * them in a small JSON file that uffd-qemu names in the policy
 * (disk_cache.stats_file). The name comes from the VM's side, so the file
 * must be a regular file of the uid the VM's process runs as, at most
 * 4 KiB; it is opened without following a symlink or blocking, and only
 * known numeric fields are taken. Anything else: no disk_cache fields.
 */
static void add_disk_cache_stats(json_t *o, pid_t pid, const char *path)
{
	static const char *const keys[] = { "size", "block_size", "used_bytes", "hits", "misses", "bytes_from_memory",
					    "bytes_from_disk", "stores", "store_failures", "store_skips", "queued_bytes",
					    "drops", "integrity_failures", "donor_failures", "donors", "donors_up" };
	char proc[32], buf[4097];
	struct stat pst, st;
	json_t *root;
	ssize_t n;
	_cleanup_close_ int fd = -1;

	snprintf(proc, sizeof(proc), "/proc/%d", (int)pid);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 || stat(proc, &pst) < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != pst.st_uid ||
	    st.st_size > 4096 || (n = read(fd, buf, sizeof(buf) - 1)) <= 0)
		return;
	buf[n] = '\0';
	root = json_loadb(buf, (size_t)n, 0, NULL);
	for (size_t i = 0; json_is_object(root) && i < ARRAY_SIZE(keys); i++) {
		json_t *v = json_object_get(root, keys[i]);
		char name[64];
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			continue;
		snprintf(name, sizeof(name), "disk_cache_%s", keys[i]);
		json_object_set_new(o, name, json_integer(json_integer_value(v)));
	}
	json_t *h = json_object_get(root, "hits"), *m = json_object_get(root, "misses");
	if (json_is_integer(h) && json_is_integer(m) && json_integer_value(h) >= 0 && json_integer_value(m) >= 0 &&
	    json_integer_value(h) + json_integer_value(m) > 0)
		json_object_set_new(o, "disk_cache_hit_ratio",
				    json_real((double)json_integer_value(h) /
					      (double)(json_integer_value(h) + json_integer_value(m))));
	json_decref(root);
}

json_t *vm_stats_json(struct vm *vm, bool brief)
{
	struct histogram h;
	json_t *o, *buckets;
	uint64_t evict_ns;

	pthread_mutex_lock(&vm->lock);
	o = json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "name", vm->policy.name, "pid",
		      (int)vm->pid, "state", vm_state_name(vm), "local_memory", (json_int_t)vm->policy.local_memory,
		      "guest_pages", (json_int_t)vm->npages, "resident_pages", (json_int_t)pagemap_resident(&vm->map),
		      "stored_pages", (json_int_t)pagemap_stored(&vm->map), "zero_pages", (json_int_t)pagemap_zero(&vm->map),
		      "high_watermark_pages", (json_int_t)vm->high_pages);
	json_object_set_new(o, "low_watermark_pages", json_integer((json_int_t)vm->low_pages));
	/* What a VM still attaching (first REGION) or a policy change may rewrite: read under the lock. */
	const uint64_t memfd_pages = brief ? 0 : memfd_resident_pages(vm);
	struct spill *spill = vm->spill;
	struct store *store = vm->store;
	struct share_group *share = vm->share;
	const unsigned replicas = vm->policy.replicas;
	const bool encryption = vm->policy.encryption;
	const bool backup_spill = vm->policy.backup_spill;
	const enum policy_store_full on_store_full = vm->policy.on_store_full;
	const bool adopted = vm->adopting;
	char dc_stats[sizeof(vm->policy.dc_stats_file)] = "";
	if (vm->policy.dc_size)
		memcpy(dc_stats, vm->policy.dc_stats_file, sizeof(dc_stats));
	const uint32_t waited_ms = vm->waited_ms;
	const uint64_t adopt_ns = vm->adopt_ns;
	pthread_mutex_unlock(&vm->lock);
	json_object_set_new(o, "uuid", json_string(vm->uuid));
	/* Adopted from a pager that died or restarted: how long the VM had none, and the recovery. */
	json_object_set_new(o, "adopted", json_boolean(adopted));
	json_object_set_new(o, "pager_lost_ms", json_integer(waited_ms));
	json_object_set_new(o, "adopt_ms", json_real((double)adopt_ns / 1e6));
	json_object_set_new(o, "faults",
			    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "zero", STAT(faults_zero), "spill",
				      STAT(faults_spill), "donor", STAT(faults_donor), "discard", STAT(faults_discard),
				      "wp", STAT(faults_wp), "duplicate", STAT(faults_duplicate), "minor",
				      STAT(faults_minor)));
	json_object_set_new(o, "evictions", json_integer(STAT(evictions)));
	json_object_set_new(o, "encryption", json_boolean(encryption));
	if (brief)
		return o;

	json_object_set_new(o, "memfd_resident_pages", json_integer((json_int_t)memfd_pages));
	if (dc_stats[0])
		add_disk_cache_stats(o, vm->pid, dc_stats);
	json_object_set_new(o, "spill_pages", json_integer(spill ? (json_int_t)spill_used_slots(spill) : 0));
	json_object_set_new(o, "spill_file", json_string(spill ? spill_path(spill) : ""));
	json_object_set_new(o, "evictions_aborted", json_integer(STAT(evictions_aborted)));
	json_object_set_new(o, "prefetch", json_pack("{s:I, s:I, s:I, s:I}", "issued", STAT(prefetch_issued), "hits",
						     STAT(prefetch_hits), "wasted", STAT(prefetch_wasted), "no_room",
						     STAT(prefetch_no_room)));
	json_object_set_new(o, "refaults", json_integer(STAT(faults_spill) + STAT(faults_donor)));
	if (store) {
		struct store_stats *ss = store_stats(store);
		json_t *per = json_array();
		for (unsigned d = 0; d < donor_pool_count(vm->pool); d++)
			json_array_append_new(per, json_integer((json_int_t)store_donor_pages(store, d)));
		json_object_set_new(o, "remote",
				    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "copies",
					      (json_int_t)atomic_load(&ss->remote_copies), "faults_donor",
					      STAT(faults_donor), "faults_spill", STAT(faults_spill), "bad_copies",
					      (json_int_t)atomic_load(&ss->bad_copies), "rereplications",
					      (json_int_t)atomic_load(&ss->rereplications), "moved",
					      (json_int_t)atomic_load(&ss->moved), "copies_lost",
					      (json_int_t)atomic_load(&ss->copies_lost), "pages_lost",
					      (json_int_t)atomic_load(&ss->pages_lost), "spill_fallbacks",
					      (json_int_t)atomic_load(&ss->spill_fallbacks), "per_donor_copies", per));
		json_object_set_new(o, "durability", json_pack("{s:i, s:s, s:i}", "replicas", (int)replicas,
							     "backup", backup_spill ? "spill" : "none",
							     "copies_per_page", (int)vm->ncopies));
	}
	if (store && share) {
		/* Its references in the group: stored pages, and clean resident pages that keep theirs. */
		json_object_set_new(o, "sharing_group", json_string(vm->policy.sharing_group));
		json_object_set_new(o, "shared_pages",
				    json_integer((json_int_t)atomic_load(&store_stats(store)->shared_refs)));
	}
	json_object_set_new(o, "zero_pages_skipped", json_integer(STAT(zero_pages_skipped)));
	json_object_set_new(o, "evictions_clean", json_integer(STAT(evictions_clean)));
	json_object_set_new(o, "sampled_pages", json_integer(STAT(pages_sampled)));
	/* Copies that failed their CRC or tag count as integrity errors even when another copy served the page. */
	json_object_set_new(o, "integrity_errors",
			    json_integer(STAT(integrity_errors) +
					 (store ? (json_int_t)atomic_load(&store_stats(store)->rejected) : 0)));
	json_object_set_new(o, "store_errors", json_integer(STAT(store_errors)));
	json_object_set_new(o, "throttle_waits", json_integer(STAT(throttle_waits)));
	json_object_set_new(o, "over_limit_faults", json_integer(STAT(over_limit_faults)));
	json_object_set_new(o, "on_store_full", json_string(on_store_full == POLICY_STORE_FULL_PAUSE ? "pause" : "degrade"));
	json_object_set_new(o, "punch_failures", json_integer(STAT(punch_failures)));
	json_object_set_new(o, "remove_events", json_integer(STAT(remove_events)));
	json_object_set_new(o, "eviction_batches", json_integer(STAT(eviction_batches)));
	evict_ns = (uint64_t)STAT(eviction_ns);
	/* MB/s while the evictor works: the rate it can sustain, not the average over idle time. */
	json_object_set_new(o, "eviction_mbps",
			    json_real(evict_ns ? (double)STAT(evictions) * PAGE_SIZE_4K / 1e6 / ((double)evict_ns / 1e9) : 0.0));
	/* The same per page in the evictor's own CPU time: what a page costs, apart from waits and a busy host. */
	json_object_set_new(o, "eviction_cpu_us_per_page",
			    json_real(STAT(evictions) ? (double)STAT(eviction_cpu_ns) / 1e3 / (double)STAT(evictions) : 0.0));

	/* The fault thread writes the histogram unlocked; a copy is a good-enough snapshot. */
	memcpy(&h, &vm->fault_latency, sizeof(h));
	buckets = json_array();
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		if (h.buckets[i])
			json_array_append_new(buckets, json_pack("{s:I, s:I}", "le", (json_int_t)hist_bucket_limit(i),
								 "count", (json_int_t)h.buckets[i]));
	json_object_set_new(o, "fault_latency_ns",
			    json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "count", (json_int_t)h.count, "p50",
				      (json_int_t)hist_quantile(&h, 0.50), "p90", (json_int_t)hist_quantile(&h, 0.90),
				      "p99", (json_int_t)hist_quantile(&h, 0.99), "p999",
				      (json_int_t)hist_quantile(&h, 0.999), "max", (json_int_t)h.max, "mean",
				      (json_int_t)(h.count ? h.sum / h.count : 0), "buckets", buckets));
	return o;
}
