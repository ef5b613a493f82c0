#!/bin/bash
# SPDX-License-Identifier: MIT
#
# rdma-pager.sh BUILD_DIR [LOG] — PREPARED, NOT YET REGISTERED in meson (see
# guest-pager.sh for what it waits for): boots the soft-RoCE VM with
# uffd-donor, uffd-pager, uffd-ctl, guestsim and libuffd-glue.so from
# BUILD_DIR and runs guestsim under the pager with an rdma:// and a tcp://
# donor (durability.replicas 2). Exit 0 on PAGER-RDMA-OK.
set -u
here=$(cd "$(dirname "$0")" && pwd)
b=${1:?usage: $0 BUILD_DIR [LOG]}
log=${2:-$b/tests/rdma/rdma-pager-console.log}
"$here/run-in-rxe-vm.sh" --timeout 300 --log "$log" \
	--file "$b/donor/uffd-donor" --file "$b/uffd-pager/uffd-pager" \
	--file "$b/uffd-pager/control/uffd-ctl" --file "$b/tests/guestsim/guestsim" \
	--file "$b/qemu-glue/libuffd-glue.so:/usr/local/lib/libuffd-glue.so" \
	--file "$here/guest-pager.sh:/usr/local/bin/guest-pager" -- guest-pager
rc=$?
grep -aE '^(PAGER-RDMA|DONOR-CPU)' "$log" | tr -d '\r'
((rc == 0)) && grep -aq PAGER-RDMA-OK "$log" && { echo PASS; exit 0; }
echo "FAIL: exit $rc (console: $log)"
exit 1
