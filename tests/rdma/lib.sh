# SPDX-License-Identifier: MIT
#
# Shared by the meson entry points of the 'rdma' suite (rdma-test.sh,
# rdma-transport.sh, rdma-pager.sh), sourced with bash: how a test that
# cannot run here is reported, and the VM preparation every test starts
# with, so that "cannot run here" is told apart from a failure of the test.

here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
harness=$here/run-in-rxe-vm.sh

# cannot_run REASON: skips (77), or fails under UFFDVM_REQUIRE_ALL=1 (CI).
cannot_run() {
	if [[ ${UFFDVM_REQUIRE_ALL:-} == 1 ]]; then
		echo "FAIL (UFFDVM_REQUIRE_ALL=1): $1"
		exit 1
	fi
	echo "SKIP: $1"
	exit 77
}

# prepare_vm: fetches the kernel and builds the image before the test runs.
prepare_vm() {
	local out rc
	out=$("$harness" --prepare 2>&1)
	rc=$?
	echo "$out"
	if ((rc == 69)); then
		cannot_run "$(grep 'cannot run' <<<"$out" | tail -n1)"
	elif ((rc != 0)); then
		echo "FAIL: run-in-rxe-vm.sh --prepare exited with $rc"
		exit 1
	fi
}

# check_vm_run RC LOG WHAT VERDICT: turns the harness's exit status and the
# console log into PASS or FAIL. A zero status alone could come from a guest
# script that never ran its checks, so the console must show VERDICT too.
check_vm_run() {
	local rc=$1 log=$2 what=$3 verdict=$4
	((rc == 69)) && cannot_run "run-in-rxe-vm.sh reported a missing prerequisite"
	if ((rc != 0)); then
		echo "FAIL: $what in the rxe VM exited with $rc (console: $log)"
		exit 1
	fi
	if ! grep -aq "$verdict" "$log"; then
		echo "FAIL: exit status 0 but no '$verdict' verdict in $log"
		exit 1
	fi
	echo "PASS"
}
