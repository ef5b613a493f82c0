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
source "$(dirname "$0")/lib.sh"
mode=${1:-}
log=${2:-/dev/null}
donor=${3:-}
prog=${4:-}

case "$mode" in verify|isolate|kill|bench) ;; *) echo "usage: $0 verify|isolate|kill|bench LOG DONOR TESTPROG" >&2; exit 2 ;; esac
[[ -n $prog && $prog != none ]] || cannot_run "built without RDMA (libibverbs-dev/librdmacm-dev missing at meson setup)"
[[ -x $donor && -x $prog ]] || { echo "FAIL: $donor or $prog not built"; exit 1; }

prepare_vm

"$harness" --timeout 300 --log "$log" --file "$donor" --file "$prog" \
	--file "$here/guest-transport.sh:/usr/local/bin/guest-transport" -- guest-transport "$mode"
rc=$?
grep -aE '^(VERIFY|ISOLATE|KILL|BENCH|DONOR-CPU|NODEV|CHECK FAILED|TRANSPORT-)|no RDMA device|does not serve RDMA' "$log" | tr -d '\r'
check_vm_run $rc "$log" "guest-transport $mode" "TRANSPORT-OK $mode"
