#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Builds the guest of the balloon test (tests/integration/test_libvirt_balloon.py):
# Debian's cloud kernel with its virtio_balloon module, which the e2e
# guest's vmlinuz alone lacks (the driver is a module there), plus the e2e
# initramfs with the modules appended as a second cpio archive (the kernel
# unpacks concatenated archives in order); the e2e /init loads them.
# The kernel package (the one linux-image-cloud-amd64 depends on, fetched
# with apt-get download, no install) is cached, reduced to vmlinuz and the
# modules needed, in ${UFFDVM_CACHE:-$HOME/.cache/uffdvm}/balloon, the way
# tests/rdma/run-in-rxe-vm.sh caches its kernel.
# Usage: balloon-guest.sh BASE_INITRAMFS OUT_VMLINUZ OUT_INITRAMFS
# Exit status: 0 = built, 1 = cannot (reason on stderr).
set -euo pipefail

readonly WANT_MODULES="virtio_balloon virtio_pci"
say() { echo "balloon-guest: $*" >&2; }
die() { say "$*"; exit 1; }

(($# == 3)) || die "usage: balloon-guest.sh BASE_INITRAMFS OUT_VMLINUZ OUT_INITRAMFS"
base=$1 out_kernel=$2 out_initrd=$3
[[ -s $base ]] || die "no base initramfs $base"
busybox=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
cache=${UFFDVM_CACHE:-${HOME:-/root}/.cache/uffdvm}/balloon
mkdir -p "$cache"

source "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-kernel.sh"

kdir=$(kernel_fetch "$cache" $WANT_MODULES)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lib/modules/uffdvm" "$work/etc"
cp "$kdir"/modules/*.ko "$work/lib/modules/uffdvm/" 2>/dev/null || true
kernel_module_order "$kdir" virtio_pci $WANT_MODULES | tr '\n' ' ' >"$work/etc/uffdvm-modules"
cp "$kdir/vmlinuz" "$out_kernel.tmp"
{ cat "$base"; (cd "$work" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -1; } >"$out_initrd.tmp"
mv "$out_kernel.tmp" "$out_kernel"
mv "$out_initrd.tmp" "$out_initrd"
