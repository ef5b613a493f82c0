#!/bin/bash
# SPDX-License-Identifier: MIT
#
# rdma-pager.sh LOG BUILD_DIR — meson entry point of rdma-pager: boots the
# soft-RoCE VM with a 256 MiB ext4 disk for the pager's state dir, with
# uffd-donor, uffd-pager, uffd-ctl, guestsim and libuffd-glue.so from
# BUILD_DIR, and runs guest-pager.sh: guestsim under the pager with an
# rdma:// and a tcp:// donor (two replicas), the rdma:// donor SIGKILLed
# mid-run. Requires its PAGER-RDMA-OK verdict. Skips (77) when the VM cannot
# run here or the build has no RDMA, fails instead under UFFDVM_REQUIRE_ALL=1.

set -u
source "$(dirname "$0")/lib.sh"
log=${1:?usage: $0 LOG BUILD_DIR [rdma|nordma]}
b=${2:?usage: $0 LOG BUILD_DIR [rdma|nordma]}
rdma=${3:-rdma}

[[ $rdma == rdma ]] || cannot_run "built without RDMA (libibverbs-dev/librdmacm-dev missing at meson setup)"
bins=("$b/donor/uffd-donor" "$b/uffd-pager/uffd-pager" "$b/uffd-pager/control/uffd-ctl"
	"$b/tests/guestsim/guestsim" "$b/qemu-glue/libuffd-glue.so")
for f in "${bins[@]}"; do [[ -x $f || -f $f ]] || { echo "FAIL: $f not built"; exit 1; }; done
PATH=$PATH:/usr/sbin:/sbin command -v mkfs.ext4 >/dev/null ||
	cannot_run "mkfs.ext4 not found (install e2fsprogs): the pager's state dir needs a disk in the VM"

prepare_vm

"$harness" --timeout 400 --disk 256 --log "$log" \
	--file "${bins[0]}" --file "${bins[1]}" --file "${bins[2]}" --file "${bins[3]}" \
	--file "${bins[4]}:/usr/local/lib/libuffd-glue.so" \
	--file "$here/guest-pager.sh:/usr/local/bin/guest-pager" -- guest-pager
rc=$?
grep -aE '^(PAGER-RDMA|BEFORE-KILL|REMOTE-LATENCY|FAULT-LATENCY|KILLED|DONOR-DOWN|AFTER|REREPLICATED)' "$log" | tr -d '\r'
check_vm_run $rc "$log" guest-pager PAGER-RDMA-OK
