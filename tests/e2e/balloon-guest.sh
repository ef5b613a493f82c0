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

fetch() {
	local meta=linux-image-cloud-amd64 pkg tmp deb kver mroot m f deps
	pkg=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -n1)
	if [[ -z $pkg ]]; then
		dir=$(ls -d "$cache"/kernel-*/ 2>/dev/null | sort -V | tail -n1 || true)
		[[ -n $dir && -e $dir/ready ]] && { echo "${dir%/}"; return 0; }
		die "cannot resolve the package $meta depends on (run apt-get update) and nothing is cached in $cache"
	fi
	dir=$cache/kernel-$pkg
	[[ -e $dir/ready ]] && { echo "$dir"; return 0; }
	say "fetching $pkg into $dir"
	tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
	trap 'rm -rf "$tmp"' RETURN
	chmod 0777 "$tmp" # apt drops privileges to _apt for the download
	(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>"$tmp/apt.err") ||
		die "apt-get download $pkg failed: $(tail -n2 "$tmp/apt.err")"
	deb=$(ls "$tmp"/*.deb)
	mkdir "$tmp/x" "$tmp/keep" "$tmp/keep/modules"
	dpkg-deb -x "$deb" "$tmp/x" || die "dpkg-deb -x $deb failed"
	f=$(ls "$tmp"/x/boot/vmlinuz-* 2>/dev/null | head -n1)
	[[ -n $f ]] || die "$pkg has no /boot/vmlinuz-*"
	kver=${f##*/vmlinuz-}
	cp "$f" "$tmp/keep/vmlinuz"
	mroot=$tmp/x/lib/modules/$kver
	# The closure of WANT_MODULES over each .ko's declared dependencies.
	local -A seen=()
	local queue=($WANT_MODULES)
	: >"$tmp/keep/deps"
	while ((${#queue[@]})); do
		m=${queue[0]//-/_}; queue=("${queue[@]:1}")
		[[ -n ${seen[$m]:-} ]] && continue
		seen[$m]=1
		f=$(find "$mroot/kernel" -name "$m.ko*" | head -n1)
		if [[ -z $f ]]; then
			grep -q "/$m.ko" "$mroot/modules.builtin" 2>/dev/null ||
				die "module $m neither built into $pkg nor shipped by it"
			continue # built in: nothing to load
		fi
		case "$f" in
		*.ko) cp "$f" "$tmp/keep/modules/$m.ko" ;;
		*.ko.xz) xz -dc "$f" >"$tmp/keep/modules/$m.ko" ;;
		*.ko.zst) zstd -qdc "$f" >"$tmp/keep/modules/$m.ko" ;;
		*.ko.gz) gzip -dc "$f" >"$tmp/keep/modules/$m.ko" ;;
		*) die "unknown module format $f" ;;
		esac
		deps=$(tr '\0' '\n' <"$tmp/keep/modules/$m.ko" | sed -n 's/^depends=//p' | head -n1)
		echo "$m ${deps//,/ }" >>"$tmp/keep/deps"
		queue+=(${deps//,/ })
	done
	touch "$tmp/keep/ready"
	rm -rf "$dir"
	mv "$tmp/keep" "$dir"
	echo "$dir"
}

# Load order: dependencies first (depth-first), WANT_MODULES order otherwise.
order() {
	local -A deps=() done_=()
	local name rest
	while read -r name rest; do deps[$name]=$rest; done <"$1/deps"
	visit() {
		local m=$1 d
		[[ -n ${done_[$m]:-} || -z ${deps[$m]+x} ]] && return 0
		done_[$m]=1
		for d in ${deps[$m]}; do visit "$d"; done
		echo "$m"
	}
	for name in virtio_pci $WANT_MODULES; do visit "$name"; done
}

kdir=$(fetch)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lib/modules/uffdvm" "$work/etc"
cp "$kdir"/modules/*.ko "$work/lib/modules/uffdvm/" 2>/dev/null || true
order "$kdir" | tr '\n' ' ' >"$work/etc/uffdvm-modules"
cp "$kdir/vmlinuz" "$out_kernel.tmp"
{ cat "$base"; (cd "$work" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -1; } >"$out_initrd.tmp"
mv "$out_kernel.tmp" "$out_kernel"
mv "$out_initrd.tmp" "$out_initrd"
