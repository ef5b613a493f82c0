#!/bin/sh
# SPDX-License-Identifier: MIT
#
# e2e-plain-guest: boots the workload guest with plain QEMU (guest RAM in a
# shared memfd, no pager) and requires PASS. It is the control for the paged
# variants: if this fails, the guest infrastructure is broken, not the pager.
# Lacking QEMU, the kernel or the initramfs is a skip (77), or a failure when
# UFFDVM_REQUIRE_ALL=1.
set -u

lack() {
	echo "e2e-plain-guest: $*" >&2
	if [ "${UFFDVM_REQUIRE_ALL:-0}" = 1 ]; then
		echo "e2e-plain-guest: UFFDVM_REQUIRE_ALL=1: failing instead of skipping" >&2
		exit 1
	fi
	exit 77
}

command -v "${UFFDVM_QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 ||
	lack "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
[ -n "${UFFDVM_E2E_INITRD:-}" ] && [ -r "$UFFDVM_E2E_INITRD" ] ||
	lack "no e2e initramfs (needs busybox-static and static glibc at configure time)"
kernel=$("$UFFDVM_FETCH_KERNEL") || lack "cannot fetch the guest kernel"

log="${UFFDVM_E2E_LOGDIR:-/tmp}/e2e-plain-guest.log"
exec "$UFFDVM_RUN_GUEST" --kernel "$kernel" --initrd "$UFFDVM_E2E_INITRD" \
	--ram "${UFFDVM_E2E_RAM:-512}" --mib "${UFFDVM_E2E_MIB:-400}" \
	--passes "${UFFDVM_E2E_PASSES:-2}" --timeout "${UFFDVM_E2E_TIMEOUT:-270}" \
	--log "$log" --backend memfd --
