#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Builds the e2e guest initramfs: busybox-static, our /init script and the
# static workload, packed as a gzip'ed newc cpio (what the kernel unpacks
# into its rootfs). Called by meson as a custom_target.
# Usage: build-initramfs.sh OUTPUT.cpio.gz WORKLOAD_BINARY INIT_SCRIPT
set -eu

out="$1"
workload="$2"
init="$3"
busybox="${BUSYBOX:-$(command -v busybox || true)}"

[ -n "$busybox" ] || { echo "build-initramfs: busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
	# A dynamic busybox would need its libraries in the initramfs too.
	command -v file >/dev/null 2>&1 &&
		{ echo "build-initramfs: $busybox is not static (apt-get install busybox-static)" >&2; exit 1; }
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
mkdir -p "$tmp/bin" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/tmp"
cp "$busybox" "$tmp/bin/busybox"
for app in sh mount cat cut grep echo poweroff sleep ls dmesg tr; do
	ln -s busybox "$tmp/bin/$app"
done
cp "$workload" "$tmp/bin/guest-workload"
cp "$init" "$tmp/init"
chmod 755 "$tmp/init" "$tmp/bin/guest-workload"
(cd "$tmp" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -1 > "$out.tmp"
mv "$out.tmp" "$out"
