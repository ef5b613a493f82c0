#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Builds the guest of the disk cache's e2e test (tests/e2e/e2e-disk-cache.py):
# Debian's cloud kernel with its virtio_blk module (a module there, like
# virtio_balloon for tests/e2e/balloon-guest.sh, which this follows), plus
# the e2e initramfs with the modules and the disk workload appended as a
# second cpio archive; the e2e /init loads the modules and, finding
# /bin/guest-disk-workload, runs it on /dev/vda. The kernel package is
# cached, reduced to vmlinuz and the modules needed, in
# ${UFFDVM_CACHE:-$HOME/.cache/uffdvm}/disk.
# Usage: disk-guest.sh BASE_INITRAMFS DISK_WORKLOAD OUT_VMLINUZ OUT_INITRAMFS
# Exit status: 0 = built, 1 = cannot (reason on stderr).
set -euo pipefail

readonly WANT_MODULES="virtio_blk virtio_pci"
say() { echo "disk-guest: $*" >&2; }
die() { say "$*"; exit 1; }

(($# == 4)) || die "usage: disk-guest.sh BASE_INITRAMFS DISK_WORKLOAD OUT_VMLINUZ OUT_INITRAMFS"
base=$1 workload=$2 out_kernel=$3 out_initrd=$4
[[ -x $workload ]] || die "no disk workload $workload"
[[ -s $base ]] || die "no base initramfs $base"
busybox=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
cache=${UFFDVM_CACHE:-${HOME:-/root}/.cache/uffdvm}/disk
mkdir -p "$cache"

source "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-kernel.sh"

kdir=$(kernel_fetch "$cache" $WANT_MODULES)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lib/modules/uffdvm" "$work/etc" "$work/bin"
cp "$workload" "$work/bin/guest-disk-workload"
cp "$kdir"/modules/*.ko "$work/lib/modules/uffdvm/" 2>/dev/null || true
kernel_module_order "$kdir" virtio_pci $WANT_MODULES | tr '\n' ' ' >"$work/etc/uffdvm-modules"
cp "$kdir/vmlinuz" "$out_kernel.tmp"
{ cat "$base"; (cd "$work" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -1; } >"$out_initrd.tmp"
mv "$out_kernel.tmp" "$out_kernel"
mv "$out_initrd.tmp" "$out_initrd"
