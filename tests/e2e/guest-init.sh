#!/bin/sh
# SPDX-License-Identifier: MIT
#
# /init of the e2e initramfs (busybox sh as PID 1). Mounts the pseudo
# filesystems, runs the memory workload as a child with the parameters given
# on the kernel command line (uffdvm.mib=, uffdvm.passes=, uffdvm.seed=),
# prints its verdict between markers the host greps for, and powers off:
# the test's QEMU runs with -no-reboot, so a poweroff ends it.
# Optional: kernel modules appended to the archive (tests/e2e/balloon-guest.sh
# adds virtio_balloon and its dependencies) are loaded first, in the order
# /etc/uffdvm-modules lists them; uffdvm.churn=MIB first runs a workload of
# that size to completion, so the guest has touched and then freed that much
# memory (a balloon can give it back).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
# The archive holds no /dev/console node (building it needs no root that
# way), so the kernel started us without stdio: attach it now.
exec </dev/console >/dev/console 2>&1

if [ -f /etc/uffdvm-modules ]; then
	for m in $(cat /etc/uffdvm-modules); do
		/bin/busybox insmod "/lib/modules/uffdvm/$m.ko" || echo "UFFDVM-GUEST-MODULE-FAILED $m"
	done
	echo "UFFDVM-GUEST-MODULES $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
fi

mib=400
passes=3
seed=0x5eed
churn=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	uffdvm.mib=*) mib="${arg#uffdvm.mib=}" ;;
	uffdvm.passes=*) passes="${arg#uffdvm.passes=}" ;;
	uffdvm.seed=*) seed="${arg#uffdvm.seed=}" ;;
	uffdvm.churn=*) churn="${arg#uffdvm.churn=}" ;;
	esac
done

# The disk cache's e2e guest (tests/e2e/disk-guest.sh adds this program and
# virtio_blk): its disk workload instead of the memory one; exit 10 asks for
# a reboot (the test's QEMU runs without -no-reboot, so the guest comes back).
if [ -x /bin/guest-disk-workload ]; then
	i=0
	while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do /bin/busybox usleep 100000; i=$((i + 1)); done
	diskmode=run
	grep -q uffdvm.bench_mib= /proc/cmdline && diskmode=bench
	/bin/guest-disk-workload $diskmode /dev/vda "$seed"
	rc=$?
	echo "UFFDVM-GUEST-END rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
	[ "$rc" = 10 ] && /bin/busybox reboot -f
	/bin/busybox poweroff -f
fi

echo "UFFDVM-GUEST-START uptime=$(cut -d' ' -f1 /proc/uptime) mib=$mib passes=$passes"
grep -E '^(MemTotal|MemFree)' /proc/meminfo
if [ "$churn" != 0 ]; then
	/bin/guest-workload "$churn" 1 0xc4 || echo "UFFDVM-GUEST-CHURN-FAILED"
	echo "UFFDVM-GUEST-CHURNED mib=$churn"
	grep -E '^(MemTotal|MemFree)' /proc/meminfo
fi
/bin/guest-workload "$mib" "$passes" "$seed"
rc=$?
echo "UFFDVM-GUEST-END rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
/bin/busybox poweroff -f
