#!/bin/sh
# SPDX-License-Identifier: MIT
#
# /init of the e2e initramfs (busybox sh as PID 1). Mounts the pseudo
# filesystems, runs the memory workload as a child with the parameters given
# on the kernel command line (uffdvm.mib=, uffdvm.passes=, uffdvm.seed=),
# prints its verdict between markers the host greps for, and powers off:
# the test's QEMU runs with -no-reboot, so a poweroff ends it.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
# The archive holds no /dev/console node (building it needs no root that
# way), so the kernel started us without stdio: attach it now.
exec </dev/console >/dev/console 2>&1

mib=400
passes=3
seed=0x5eed
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	uffdvm.mib=*) mib="${arg#uffdvm.mib=}" ;;
	uffdvm.passes=*) passes="${arg#uffdvm.passes=}" ;;
	uffdvm.seed=*) seed="${arg#uffdvm.seed=}" ;;
	esac
done

echo "UFFDVM-GUEST-START uptime=$(cut -d' ' -f1 /proc/uptime) mib=$mib passes=$passes"
grep -E '^(MemTotal|MemFree)' /proc/meminfo
/bin/guest-workload "$mib" "$passes" "$seed"
rc=$?
echo "UFFDVM-GUEST-END rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
/bin/busybox poweroff -f
