#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run-in-rxe-vm.sh — run a command inside a throw-away QEMU (TCG) VM whose
# kernel has a working soft-RoCE device (rdma_rxe on eth0), so that uffdvm's
# RDMA transport can be exercised with real kernel verbs on machines without
# RDMA hardware. The VM boots Debian's standard kernel (the cloud kernel has
# no rdma_rxe) from an initramfs built here: busybox, the RDMA modules, the
# verbs/rdmacm libraries with the rxe provider, the rdma/rping/ibv_* tools,
# and every --file given. Nothing of the VM's network leaves it: the NIC is
# `-netdev user,restrict=on` without forwarding; both ends of a test run in
# the guest and talk to its own eth0 address (10.0.2.15; 127.0.0.1 serves
# plain TCP only, rdma_cm cannot resolve it over rxe).
#
# Usage:
#   run-in-rxe-vm.sh [options] -- COMMAND...
#   run-in-rxe-vm.sh --prepare          # fetch kernel, build cached initramfs
#
# Options:
#   --timeout S     kill the VM after S seconds (default 180)
#   --mem M         guest memory in MiB (default 1024)
#   --file H[:G]    copy host file H to guest path G (default
#                   /usr/local/bin/<basename of H>, which is on PATH); the
#                   shared libraries ldd lists for H are copied too
#   --log PATH      keep the console log at PATH (default: a temporary file,
#                   kept and named only when the run fails)
#   --quiet         do not stream the console to stdout
#   --disk MB       attach an ext4 disk of MB MiB (a sparse raw image made
#                   on the host with mkfs.ext4, thrown away afterwards) as
#                   virtio /dev/vda, mounted at /var/lib/uffd-pager; the
#                   command gets that path as RXE_DISK (the root is an
#                   initramfs, and the pager refuses tmpfs for spill files)
#   --prepare       only fetch the kernel and build the cached base initramfs
#
# COMMAND's words are joined with spaces (as ssh does) and run by the guest's
# /bin/sh -c (busybox ash) as root, in /tmp, after RXE-READY. Guest PATH:
# /usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin. Its environment names the
# RDMA setup: RXE_DEV=rxe0, RXE_NETDEV=eth0, RXE_ADDR=10.0.2.15 (the address
# to listen on and connect to: both ends run in this VM; rdma_cm cannot
# resolve 127.0.0.1 with rxe, so use RXE_ADDR), RXE_GID_INDEX (the IPv4 GID
# of rxe0, for `ibv_rc_pingpong -g`). Plain TCP side channels may use
# 127.0.0.1.
#
# Exit status: COMMAND's exit status, or
#   124  timeout while COMMAND ran
#   125  the VM never reached RXE-READY (boot or RDMA setup failed, or timed
#        out before it); the reason is printed
#   126  the VM stopped after RXE-READY without reporting COMMAND's status
#        (kernel panic, crash)
#   69   a prerequisite is missing on the host (qemu, busybox-static, the
#        kernel package cannot be downloaded, rdma-core tools); --prepare
#        returns 69 the same way, so callers can tell "cannot run" apart
#   64   usage error
#
# Environment:
#   UFFDVM_CACHE      cache directory (default $HOME/.cache/uffdvm); the
#                     kernel goes to $UFFDVM_CACHE/rdma/kernel-<version>/,
#                     base initramfs images to $UFFDVM_CACHE/rdma/
#   UFFDVM_RXE_KPKG   kernel package to boot (default: what linux-image-amd64
#                     depends on)
#
# Host packages: qemu-system-x86, busybox-static, rdma-core, ibverbs-providers,
# ibverbs-utils, rdmacm-utils, iproute2, apt/dpkg (to fetch the kernel).

set -euo pipefail

readonly EX_USAGE=64 EX_UNAVAIL=69 EX_TIMEOUT=124 EX_NOTREADY=125 EX_CRASH=126
readonly GUEST_ADDR=10.0.2.15/24
readonly PROG=run-in-rxe-vm
# Modules the guest loads, in this order after their dependencies (computed
# from each .ko's modinfo). crc32_generic is not a hard dependency of
# rdma_rxe (it looks the crc32 algorithm up at link creation), but without it
# `rdma link add` fails with ENOENT.
readonly WANT_MODULES="crc32_generic failover net_failover virtio_ring virtio
	virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_net
	ib_core ib_uverbs udp_tunnel ip6_udp_tunnel rdma_rxe iw_cm ib_cm
	configfs rdma_cm rdma_ucm"
# Loaded only with --disk: the virtio disk and ext4 on it. crc32c_generic is
# no declared dependency of ext4 either (it looks "crc32c" up at mount time
# for its metadata checksums).
readonly DISK_MODULES="crc32c_generic crc16 mbcache jbd2 ext4 virtio_blk"
# Where --disk is mounted in the guest; the command gets it as RXE_DISK.
readonly DISK_MOUNT=/var/lib/uffd-pager
# Tools in the base image; the optional ones are taken when installed.
readonly BASE_TOOLS="rdma rping ibv_devices ibv_devinfo ibv_rc_pingpong"
readonly OPT_TOOLS="ibv_ud_pingpong ibv_uc_pingpong ibv_srq_pingpong ucmatose
	rdma_server rdma_client udaddy"

die() { echo "$PROG: $*" >&2; exit "$EX_USAGE"; }
unavailable() { echo "$PROG: cannot run: $*" >&2; exit "$EX_UNAVAIL"; }
note() { echo "$PROG: $*" >&2; }
source "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-kernel.sh"

timeout_s=180
mem_mb=1024
log_path=
quiet=0
prepare_only=0
disk_mb=
files=()
while (($#)); do
	case "$1" in
	--timeout) (($# >= 2)) || die "--timeout needs seconds"; timeout_s=$2; shift 2 ;;
	--mem) (($# >= 2)) || die "--mem needs MiB"; mem_mb=$2; shift 2 ;;
	--file) (($# >= 2)) || die "--file needs HOST_PATH[:GUEST_PATH]"; files+=("$2"); shift 2 ;;
	--log) (($# >= 2)) || die "--log needs a path"; log_path=$2; shift 2 ;;
	--quiet) quiet=1; shift ;;
	--disk) (($# >= 2)) || die "--disk needs MiB"; disk_mb=$2; shift 2 ;;
	--prepare) prepare_only=1; shift ;;
	--) shift; break ;;
	-h|--help) sed -n '3,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option '$1' (see --help)" ;;
	esac
done
[[ $timeout_s =~ ^[0-9]+$ && $timeout_s -gt 0 ]] || die "--timeout '$timeout_s': expected a positive integer (seconds)"
[[ -z $disk_mb || ($disk_mb =~ ^[0-9]+$ && $disk_mb -ge 16) ]] || die "--disk '$disk_mb': expected an integer >= 16 (MiB)"
[[ $mem_mb =~ ^[0-9]+$ && $mem_mb -ge 256 ]] || die "--mem '$mem_mb': expected an integer >= 256 (MiB)"
if ((!prepare_only)); then
	(($# > 0)) || die "no COMMAND given (usage: $PROG [options] -- COMMAND...)"
fi
command_text="$*"

cache=${UFFDVM_CACHE:-$HOME/.cache/uffdvm}/rdma
mkdir -p "$cache" || unavailable "cannot create cache directory $cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/rxe-vm.XXXXXX")
qemu_pid=
cleanup() {
	[[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null || true
	rm -rf "$work"
	[[ -n ${disk_dir:-} ]] && rm -rf "$disk_dir"
	return 0
}
trap cleanup EXIT
# Turn signals into an exit so the EXIT trap stops QEMU and removes $work.
trap 'exit 143' TERM
trap 'exit 130' INT

# ---- host prerequisites ---------------------------------------------------
need_cmd() { command -v "$1" >/dev/null 2>&1 || unavailable "'$1' not found (install $2)"; }
need_cmd qemu-system-x86_64 qemu-system-x86
need_cmd ldd libc-bin
need_cmd flock util-linux
if [[ -n $disk_mb ]]; then
	PATH=$PATH:/usr/sbin:/sbin need_cmd mkfs.ext4 e2fsprogs
fi
busybox=$(command -v busybox || true)
[[ -n $busybox ]] || unavailable "busybox not found (install busybox-static)"
ldd "$busybox" >/dev/null 2>&1 && unavailable "$busybox is dynamically linked (install busybox-static)"
for t in $BASE_TOOLS; do
	command -v "$t" >/dev/null 2>&1 ||
		unavailable "'$t' not found (install iproute2 ibverbs-utils rdmacm-utils)"
done
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
rxe_provider=
for d in /usr/lib/$multiarch/libibverbs /usr/lib64/libibverbs /usr/lib/libibverbs; do
	for f in "$d"/librxe-rdmav*.so; do [[ -e $f ]] && rxe_provider=$f && break 2; done
done
[[ -n $rxe_provider ]] || unavailable "rxe verbs provider librxe-rdmav*.so not found (install ibverbs-providers)"
[[ -e /etc/libibverbs.d/rxe.driver ]] || unavailable "/etc/libibverbs.d/rxe.driver not found (install ibverbs-providers)"

# ---- kernel (cached) ------------------------------------------------------
# True when kernel directory $1 was extracted with every module this
# script may load (a cache made by an older version of it lacks the disk
# modules: it is fetched again, and the superset serves the old one too).
kernel_complete() {
	local m
	[[ -e $1/ready && -e $1/wanted ]] || return 1
	for m in $WANT_MODULES $DISK_MODULES; do
		grep -qw -- "$m" "$1/wanted" || return 1
	done
}

# Prints the directory holding vmlinuz and the modules this harness loads.
fetch_kernel() {
	local pkg=${UFFDVM_RXE_KPKG:-} ver dir resolved=$cache/kernel-resolved
	# Asking apt costs ~1.5 s per run; its answer only changes when the
	# package lists do, so it is remembered until the next apt-get update.
	if [[ -z $pkg && -s $resolved && $resolved -nt /var/lib/apt/lists ]]; then
		dir=$cache/$(cat "$resolved")
		kernel_complete "$dir" && { echo "$dir"; return 0; }
	fi
	if [[ -z $pkg ]]; then
		pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
			awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
		[[ -n $pkg ]] && rm -f "$resolved"
	fi
	if [[ -z $pkg ]]; then
		# Offline or no apt lists: any kernel already cached will do.
		dir=$(ls -d "$cache"/kernel-*/ 2>/dev/null | sort -V | tail -n1 || true)
		[[ -n $dir ]] && kernel_complete "${dir%/}" && { echo "${dir%/}"; return 0; }
		unavailable "cannot resolve the kernel package linux-image-amd64 depends on (apt-cache depends failed; run apt-get update) and no kernel is cached in $cache"
	fi
	ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2; exit }') || true
	dir=$cache/kernel-$pkg${ver:+_$ver}
	[[ -z ${UFFDVM_RXE_KPKG:-} ]] && echo "${dir##*/}" >"$resolved"
	kernel_complete "$dir" && { echo "$dir"; return 0; }
	note "fetching $pkg ${ver:-} into $dir"
	local err m
	err=$(kernel_extract "$pkg" "$dir" $WANT_MODULES $DISK_MODULES 2>&1) || unavailable "$err"
	for m in $WANT_MODULES $DISK_MODULES; do
		kernel_has_module "$dir" "$m" || note "module $m neither built in nor shipped by $pkg; continuing without it"
	done
	echo "$dir"
}

libgcc_s() {
	local f
	for f in /usr/lib/$multiarch/libgcc_s.so.1 /lib/$multiarch/libgcc_s.so.1 /usr/lib64/libgcc_s.so.1; do
		[[ -e $f ]] && { echo "$f"; return 0; }
	done
	unavailable "libgcc_s.so.1 not found (install libgcc-s1)"
}

# ---- initramfs pieces -----------------------------------------------------
# Copies host file $1 to $2 under root $3, plus the libraries ldd lists for
# it, at their host paths (the image uses merged /usr like Debian 12).
add_with_libs() {
	local src=$1 dst=$2 root=$3 out lib
	mkdir -p "$root$(dirname "$dst")"
	cp -L "$src" "$root$dst"
	out=$(ldd "$src" 2>/dev/null) || return 0 # not dynamic: nothing to add
	if grep -q 'not found' <<<"$out"; then
		die "$src: missing libraries on the host: $(grep 'not found' <<<"$out" | awk '{print $1}' | xargs)"
	fi
	for lib in $(awk '/=> \// { print $3 } /^[ \t]*\// { print $1 }' <<<"$out"); do
		[[ -e $root$lib ]] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

# Merged /usr, as on Debian 12, so ldd's /lib and /lib64 paths resolve. The
# per-run archive needs the same links: a real /lib directory in it would
# replace the base image's link and hide everything under /usr/lib.
make_skeleton() {
	mkdir -p "$1/usr/lib" "$1/usr/lib64"
	ln -s usr/lib "$1/lib"
	ln -s usr/lib64 "$1/lib64"
}

make_cpio() { # root out
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) >"$2"
}

write_init() {
	cat >"$1" <<'EOF'
#!/bin/sh
# uffdvm rxe test VM init: load RDMA modules, create rxe0, run /rxe/cmd.
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
fail() {
	echo "RXE-SETUP-FAILED: $*"
	sync
	poweroff -f
	sleep 5
}
while read -r m; do
	insmod "/lib/modules/rxe/$m.ko" 2>/tmp/insmod.err ||
		fail "insmod $m: $(cat /tmp/insmod.err)"
done </etc/rxe/modules
ip link set lo up || fail "lo up"
n=0
while [ ! -e /sys/class/net/eth0 ]; do
	n=$((n + 1)); [ $n -gt 100 ] && fail "no eth0 after 10 s (virtio-net)"
	sleep 0.1
done
ip link set eth0 up || fail "eth0 up"
ip addr add @GUEST_ADDR@ dev eth0 || fail "eth0 address"
rdma link add rxe0 type rxe netdev eth0 2>/tmp/rdma.err ||
	fail "rdma link add rxe0: $(cat /tmp/rdma.err)"
n=0
while ! grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null; do
	n=$((n + 1)); [ $n -gt 100 ] && fail "rxe0 port not ACTIVE after 10 s: $(cat /sys/class/infiniband/rxe0/ports/1/state)"
	sleep 0.1
done
# The IPv4-mapped GID appears once eth0 has its address; commands get its
# index (for ibv_*_pingpong -g) in RXE_GID_INDEX.
n=0
while :; do
	g=$(grep -ls ffff:0a00:020f /sys/class/infiniband/rxe0/ports/1/gids/* | head -n1)
	[ -n "$g" ] && break
	n=$((n + 1)); [ $n -gt 100 ] && fail "no IPv4 GID on rxe0 after 10 s"
	sleep 0.1
done
export RXE_DEV=rxe0 RXE_NETDEV=eth0 RXE_ADDR=@GUEST_IP@ RXE_GID_INDEX=${g##*/}
# --disk: an ext4 image on virtio /dev/vda, for what must not live on tmpfs.
if [ -e /rxe/disk ]; then
	while read -r m; do
		insmod "/lib/modules/rxe/$m.ko" 2>/tmp/insmod.err ||
			fail "insmod $m: $(cat /tmp/insmod.err)"
	done </etc/rxe/modules-disk
	n=0
	while [ ! -b /dev/vda ]; do
		n=$((n + 1)); [ $n -gt 100 ] && fail "no /dev/vda after 10 s (virtio_blk)"
		sleep 0.1
	done
	mkdir -p @DISK_MOUNT@
	mount -t ext4 /dev/vda @DISK_MOUNT@ 2>/tmp/mount.err || fail "mount /dev/vda: $(cat /tmp/mount.err)"
	export RXE_DISK=@DISK_MOUNT@
fi
[ -e /rxe/cmd ] || fail "/rxe/cmd missing: the per-run initramfs archive was not unpacked"
echo "RXE-READY"
ibv_devices
rdma link show
cd /tmp
/bin/sh -c "$(cat /rxe/cmd)"
rc=$?
echo
echo "RXE-EXIT $rc"
sync
poweroff -f
sleep 5
EOF
	sed -i -e "s|@GUEST_ADDR@|$GUEST_ADDR|" -e "s|@DISK_MOUNT@|$DISK_MOUNT|g" -e "s|@GUEST_IP@|${GUEST_ADDR%/*}|" "$1"
	chmod 0755 "$1"
}

# Base image: everything but the per-run files. Cached under a hash of its
# inputs so that a changed tool, library, kernel or this script rebuilds it.
build_base() {
	local kdir=$1 hash_in t files_list out
	files_list=$work/base-files
	{
		echo "$busybox"; echo "$rxe_provider"; echo /etc/libibverbs.d/rxe.driver
		for t in $BASE_TOOLS $OPT_TOOLS; do command -v "$t" || true; done
		libgcc_s
	} >"$files_list"
	hash_in=$({
		sha256sum <"$0"
		echo "$kdir"
		while read -r t; do
			stat -L -c '%n %s %Y' "$t"
			ldd "$t" 2>/dev/null | awk '/=> \// { print $3 }' | xargs -r stat -L -c '%n %s %Y'
		done <"$files_list"
	} | sha256sum | cut -c1-16)
	out=$cache/initramfs-base-$hash_in.cpio.gz
	if [[ -e $out ]]; then echo "$out"; return 0; fi
	note "building base initramfs $out"
	local root=$work/base
	make_skeleton "$root"
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc/rxe,lib/modules/rxe,proc,sys,dev,tmp,root,rxe}
	cp "$busybox" "$root/bin/busybox"
	for t in $("$busybox" --list); do
		[[ -e $root/bin/$t ]] || ln -s busybox "$root/bin/$t"
	done
	add_with_libs "$rxe_provider" "$rxe_provider" "$root"
	mkdir -p "$root/etc/libibverbs.d"
	cp /etc/libibverbs.d/rxe.driver "$root/etc/libibverbs.d/"
	for t in $BASE_TOOLS $OPT_TOOLS; do
		t=$(command -v "$t") || continue
		add_with_libs "$t" "$t" "$root"
	done
	# glibc dlopens libgcc_s for pthread_exit and cancellation (rping's
	# threads end that way); ldd cannot see it.
	t=$(libgcc_s)
	add_with_libs "$t" "$t" "$root"
	local m
	kernel_module_order "$kdir" $WANT_MODULES >"$root/etc/rxe/modules"
	# Disk modules not already loaded for RDMA (crc16 ... ext4 virtio_blk).
	kernel_module_order "$kdir" $WANT_MODULES $DISK_MODULES | grep -vxF -f "$root/etc/rxe/modules" >"$root/etc/rxe/modules-disk" || true
	cat "$root/etc/rxe/modules" "$root/etc/rxe/modules-disk" | while read -r m; do
		cp "$kdir/modules/$m.ko" "$root/lib/modules/rxe/"
	done
	write_init "$root/init"
	make_cpio "$root" "$work/base.cpio"
	gzip -6 <"$work/base.cpio" >"$out.tmp.$$"
	mv "$out.tmp.$$" "$out"
	# Keep the three newest images: enough for a few checkouts of this
	# script sharing one cache, without growing forever.
	ls -t "$cache"/initramfs-base-*.cpio.gz 2>/dev/null | tail -n +4 | xargs -r rm -f
	rm -rf "$root" "$work/base.cpio"
	echo "$out"
}

exec 9>"$cache/.lock"
flock 9
kdir=$(fetch_kernel)
base=$(build_base "$kdir")
exec 9>&- # unlocks; QEMU must not inherit the lock
if ((prepare_only)); then
	echo "kernel: $kdir"
	echo "initramfs: $base"
	exit 0
fi

# Per-run archive, appended to the base one (the kernel unpacks concatenated
# cpio archives in order, later files win).
run_root=$work/run
make_skeleton "$run_root"
mkdir -p "$run_root/rxe"
for spec in "${files[@]}"; do
	host=${spec%%:*}
	if [[ $spec == *:* ]]; then guest=${spec#*:}; else guest=/usr/local/bin/${host##*/}; fi
	[[ -f $host ]] || die "--file '$spec': host file '$host' does not exist or is not a regular file"
	[[ $guest == /* ]] || die "--file '$spec': guest path '$guest' must be absolute"
	add_with_libs "$host" "$guest" "$run_root"
done
printf '%s\n' "$command_text" >"$run_root/rxe/cmd"
drive=()
if [[ -n $disk_mb ]]; then
	# On disk rather than under $work: /tmp may be a tmpfs, and the guest
	# may write most of the image.
	disk_dir=$(mktemp -d /var/tmp/rxe-disk.XXXXXX)
	truncate -s "${disk_mb}M" "$disk_dir/disk.img"
	PATH=$PATH:/usr/sbin:/sbin mkfs.ext4 -q -F "$disk_dir/disk.img" ||
		unavailable "mkfs.ext4 -q -F $disk_dir/disk.img failed"
	# cache=unsafe: a throw-away image, no flushes needed.
	drive=(-drive "file=$disk_dir/disk.img,format=raw,if=virtio,cache=unsafe")
	touch "$run_root/rxe/disk"
fi
make_cpio "$run_root" "$work/run.cpio"
# An uncompressed archive that follows a compressed one must start on a
# 4-byte boundary, or the kernel mistakes it for another compressed stream
# ("invalid magic") and drops it: zero-pad the gzip part to 512 bytes.
{
	cat "$base"
	pad=$(( (512 - $(stat -c %s "$base") % 512) % 512 ))
	head -c "$pad" /dev/zero
	cat "$work/run.cpio"
} >"$work/initrd"

# ---- boot -----------------------------------------------------------------
keep_log=1
if [[ -z $log_path ]]; then
	log_path=$(mktemp "${TMPDIR:-/tmp}/rxe-vm-console.XXXXXX")
	keep_log=0
fi
: >"$log_path"
start_ns=$(date +%s%N)
# -no-reboot + panic=-1: a kernel panic ends QEMU instead of looping.
qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m "$mem_mb" \
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd" \
	-append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4" \
	-display none -monitor none -serial "file:$log_path" -no-reboot \
	-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0 "${drive[@]}" \
	</dev/null >"$work/qemu.out" 2>&1 &
qemu_pid=$!
if ((!quiet)); then
	tail -n +1 -F --pid="$qemu_pid" "$log_path" 2>/dev/null | tr -d '\r' &
	tail_pid=$!
fi
ready_ns=
timed_out=0
deadline=$((start_ns + timeout_s * 1000000000))
while kill -0 "$qemu_pid" 2>/dev/null; do
	now=$(date +%s%N)
	if [[ -z $ready_ns ]] && grep -aq 'RXE-READY' "$log_path"; then ready_ns=$now; fi
	if ((now > deadline)); then
		timed_out=1
		kill "$qemu_pid" 2>/dev/null || true
		break
	fi
	sleep 0.2
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
end_ns=$(date +%s%N)
((!quiet)) && wait "$tail_pid" 2>/dev/null || true
[[ -z $ready_ns ]] && grep -aq 'RXE-READY' "$log_path" && ready_ns=$end_ns

secs() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e9 }'; }
total=$(secs $((end_ns - start_ns)))
rc_line=$(tr -d '\r' <"$log_path" | sed -n 's/.*RXE-EXIT \([0-9][0-9]*\).*/\1/p' | tail -n1)
finish() { # code message
	if (($1 != 0)) || ((keep_log)); then note "console log: $log_path"; else rm -f "$log_path"; fi
	[[ -n $2 ]] && note "$2"
	exit "$1"
}
if [[ -z $ready_ns ]]; then
	reason=$(tr -d '\r' <"$log_path" | sed -n 's/.*RXE-SETUP-FAILED: //p' | tail -n1)
	if [[ -n $reason ]]; then reason="guest setup failed: $reason"
	elif ((timed_out)); then reason="timed out after ${timeout_s}s before RXE-READY"
	else reason="VM stopped before RXE-READY: $(tail -n3 "$work/qemu.out" | tr '\n' ' ')"
	fi
	finish "$EX_NOTREADY" "VM never reached RXE-READY ($reason)"
fi
note "RXE-READY after $(secs $((ready_ns - start_ns)))s, total ${total}s"
if [[ -n $rc_line ]]; then
	finish "$rc_line" "command exited with $rc_line"
elif ((timed_out)); then
	finish "$EX_TIMEOUT" "timed out after ${timeout_s}s while the command ran"
else
	finish "$EX_CRASH" "VM stopped without reporting the command's exit status (crash or panic?)"
fi
