#!/bin/bash
# SPDX-License-Identifier: MIT
#
# rdma-transport.sh MODE LOG DONOR TESTPROG — meson entry point of the
# transport tests of the 'rdma' suite: boots the soft-RoCE VM with uffd-donor
# and rdma-transport-test, runs guest-transport.sh MODE (verify, isolate,
# kill, bench) and requires its TRANSPORT-OK verdict. Skips (77) when the VM
# cannot run here or the build has no RDMA, fails instead under
# UFFDVM_REQUIRE_ALL=1.

set -u
here=$(cd "$(dirname "$0")" && pwd)
harness=$here/run-in-rxe-vm.sh
mode=${1:-}
log=${2:-/dev/null}
donor=${3:-}
prog=${4:-}

cannot_run() {
	if [[ ${UFFDVM_REQUIRE_ALL:-} == 1 ]]; then
		echo "FAIL (UFFDVM_REQUIRE_ALL=1): $1"
		exit 1
	fi
	echo "SKIP: $1"
	exit 77
}

case "$mode" in verify|isolate|kill|bench) ;; *) echo "usage: $0 verify|isolate|kill|bench LOG DONOR TESTPROG" >&2; exit 2 ;; esac
[[ -n $prog && $prog != none ]] || cannot_run "built without RDMA (libibverbs-dev/librdmacm-dev missing at meson setup)"
[[ -x $donor && -x $prog ]] || { echo "FAIL: $donor or $prog not built"; exit 1; }

out=$("$harness" --prepare 2>&1)
rc=$?
echo "$out"
if ((rc == 69)); then
	cannot_run "$(grep 'cannot run' <<<"$out" | tail -n1)"
elif ((rc != 0)); then
	echo "FAIL: run-in-rxe-vm.sh --prepare exited with $rc"
	exit 1
fi

"$harness" --timeout 150 --log "$log" --file "$donor" --file "$prog" \
	--file "$here/guest-transport.sh:/usr/local/bin/guest-transport" -- guest-transport "$mode"
rc=$?
((rc == 69)) && cannot_run "run-in-rxe-vm.sh reported a missing prerequisite"
grep -aE '^(VERIFY|ISOLATE|KILL|BENCH|DONOR-CPU|NODEV|CHECK FAILED|TRANSPORT-)|no RDMA device|does not serve RDMA' "$log" | tr -d '\r'
if ((rc != 0)); then
	echo "FAIL: guest-transport $mode in the rxe VM exited with $rc (console: $log)"
	exit 1
fi
if ! grep -aq "TRANSPORT-OK $mode" "$log"; then
	echo "FAIL: exit status 0 but no TRANSPORT-OK $mode verdict in $log"
	exit 1
fi
echo "PASS"
