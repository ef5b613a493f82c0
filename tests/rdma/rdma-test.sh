#!/bin/bash
# SPDX-License-Identifier: MIT
#
# rdma-test.sh — meson entry point of the 'rdma' suite. Boots the soft-RoCE
# VM through run-in-rxe-vm.sh and checks one thing per mode:
#   smoke LOG      rping and ibv_rc_pingpong both pass inside the VM
#   exit-code LOG  a command failing with 3 in the VM makes the harness
#                  return 3 (failures inside the VM propagate)
# LOG is where the VM console is kept. When the VM cannot be run here (no
# qemu, kernel package not downloadable, tools missing) the test is skipped
# (77) with the reason, or fails when UFFDVM_REQUIRE_ALL=1.

set -u
here=$(cd "$(dirname "$0")" && pwd)
harness=$here/run-in-rxe-vm.sh
mode=${1:-}
log=${2:-/dev/null}

cannot_run() {
	if [[ ${UFFDVM_REQUIRE_ALL:-} == 1 ]]; then
		echo "FAIL (UFFDVM_REQUIRE_ALL=1): $1"
		exit 1
	fi
	echo "SKIP: $1"
	exit 77
}

# Fetch the kernel and build the image first, so that "cannot run here" is
# told apart from a failure of the test itself.
out=$("$harness" --prepare 2>&1)
rc=$?
echo "$out"
if ((rc == 69)); then
	cannot_run "$(grep 'cannot run' <<<"$out" | tail -n1)"
elif ((rc != 0)); then
	echo "FAIL: run-in-rxe-vm.sh --prepare exited with $rc"
	exit 1
fi

case "$mode" in
smoke)
	"$harness" --timeout 200 --log "$log" \
		--file "$here/guest-smoke.sh:/usr/local/bin/rxe-smoke" -- rxe-smoke
	rc=$?
	((rc == 69)) && cannot_run "run-in-rxe-vm.sh reported a missing prerequisite"
	if ((rc != 0)); then
		echo "FAIL: smoke test in the rxe VM exited with $rc"
		exit 1
	fi
	# The exit status alone could come from a guest script that never ran
	# the checks; the console must show the verdict too.
	if ! grep -aq 'SMOKE: rping and ibv_rc_pingpong passed' "$log"; then
		echo "FAIL: exit status 0 but no smoke verdict in $log"
		exit 1
	fi
	echo "PASS"
	;;
exit-code)
	"$harness" --timeout 120 --log "$log" -- 'echo about to fail; exit 3'
	rc=$?
	((rc == 69)) && cannot_run "run-in-rxe-vm.sh reported a missing prerequisite"
	if ((rc != 3)); then
		echo "FAIL: 'exit 3' in the VM made the harness return $rc, expected 3"
		exit 1
	fi
	grep -aq 'about to fail' "$log" || { echo "FAIL: command output missing from $log"; exit 1; }
	echo "PASS: harness returned the command's exit status 3"
	;;
*)
	echo "usage: $0 smoke|exit-code CONSOLE_LOG" >&2
	exit 2
	;;
esac
