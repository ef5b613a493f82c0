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
source "$(dirname "$0")/lib.sh"
mode=${1:-}
log=${2:-/dev/null}

# Fetch the kernel and build the image first, so that "cannot run here" is
# told apart from a failure of the test itself.
prepare_vm

case "$mode" in
smoke)
	"$harness" --timeout 200 --log "$log" \
		--file "$here/guest-smoke.sh:/usr/local/bin/rxe-smoke" -- rxe-smoke
	check_vm_run $? "$log" "smoke test" 'SMOKE: rping and ibv_rc_pingpong passed'
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
