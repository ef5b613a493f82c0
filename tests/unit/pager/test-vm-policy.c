/* SPDX-License-Identifier: MIT */
/*
 * A VM's policy changes (vm_set_policy, under vm->lock) while a lost page
 * is reported (vm_data_loss, from the fault or repair thread): the report
 * must take the loss action and the name under the lock. Run in a
 * ThreadSanitizer build this is the regression test of that data race;
 * in any build it checks the VM ends up failed. No uffd: the VM has no
 * regions and no pidfd, so no signal is ever sent.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vm-private.h"
#include "vm.h"
#include "vmstate.h"
#include "store.h"

#define ROUNDS 50

static void *flip_policy(void *arg)
{
	struct vm *vm = arg;
	struct policy_vm pol;
	char err[256];

	pthread_mutex_lock(&vm->lock);
	pol = vm->policy;
	pthread_mutex_unlock(&vm->lock);
	for (int i = 0; i < ROUNDS; i++) {
		pol.on_data_loss = i % 2 ? POLICY_LOSS_KILL : POLICY_LOSS_STOP;
		if (vm_set_policy(vm, &pol, err, sizeof(err)) < 0)
			return (void *)1;
	}
	return NULL;
}

static void test_data_loss_during_policy_change(void **state)
{
	struct policy_vm pol;
	struct vm *vm = NULL;
	pthread_t t;
	void *res;
	char err[256], dir[] = "/var/tmp/uffdvm-vmpol-XXXXXX";
	struct vmstate *vs = NULL;
	bool failed;

	policy_vm_init(&pol);
	snprintf(pol.name, sizeof(pol.name), "race");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(vmstate_create(dir, "race", getpid(), 0, "", store_state_bytes(), &vs), 0);
	/* pidfd -1: pidfd_send_signal fails with EBADF, nothing is signalled */
	assert_int_equal(vm_new(&pol, getpid(), -1, -1, dir, 1ULL << 30, NULL, vs, false, &vm, err, sizeof(err)), 0);
	assert_int_equal(pthread_create(&t, NULL, flip_policy, vm), 0);
	for (int i = 0; i < ROUNDS; i++)
		vm_data_loss(vm, (uint64_t)i, "unit test");
	assert_int_equal(pthread_join(t, &res), 0);
	assert_null(res);
	pthread_mutex_lock(&vm->lock);
	failed = vm->failed;
	pthread_mutex_unlock(&vm->lock);
	assert_true(failed);
	vm_free(vm); /* deletes the state file */
	assert_int_equal(rmdir(dir), 0);
}

/* sharing_group is fixed for the VM's life: joining, leaving or changing a group at run time is refused, naming the field. */
static void test_sharing_group_fixed(void **state)
{
	struct policy_vm pol, next;
	struct vm *vm = NULL;
	char err[256], dir[] = "/var/tmp/uffdvm-vmpol-XXXXXX";
	struct vmstate *vs = NULL;

	(void)state;
	policy_vm_init(&pol);
	snprintf(pol.name, sizeof(pol.name), "sg");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(vmstate_create(dir, "sg", getpid(), 0, "", store_state_bytes(), &vs), 0);
	assert_int_equal(vm_new(&pol, getpid(), -1, -1, dir, 1ULL << 30, NULL, vs, false, &vm, err, sizeof(err)), 0);
	next = pol;
	snprintf(next.sharing_group, sizeof(next.sharing_group), "tenant");
	assert_int_equal(vm_set_policy(vm, &next, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "field 'sharing_group' cannot change"));
	next = pol;
	next.on_data_loss = POLICY_LOSS_KILL; /* anything else still changes */
	assert_int_equal(vm_set_policy(vm, &next, err, sizeof(err)), 0);
	vm_free(vm);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_data_loss_during_policy_change),
		cmocka_unit_test(test_sharing_group_fixed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
