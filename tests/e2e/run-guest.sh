#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Boots the e2e guest (TCG, serial console, the workload initramfs) through
# a wrapper command and judges the console. The wrapper is whatever comes
# after "--" and is put in front of the QEMU binary, so the same script boots
# plain QEMU (nothing after "--") or uffd-qemu ("-- uffd-qemu --policy P --").
#
# Usage: run-guest.sh [--kernel K] [--initrd I] [--ram MIB] [--mib MIB]
#                     [--passes N] [--timeout SEC] [--log FILE]
#                     [--backend memfd|none] [-- WRAPPER...]
#   --backend memfd (default) puts guest RAM in a shared memfd itself;
#   none leaves the choice to the wrapper (uffd-qemu adds the backend).
# Environment: UFFDVM_QEMU (default qemu-system-x86_64), UFFDVM_QEMU_ARGS
# (extra arguments, split on spaces), UFFDVM_FETCH_KERNEL (fetch script).
# Exit: 0 the workload printed PASS; 1 FAIL, no verdict or timeout; 2 usage.
set -u

kernel=""
initrd="${UFFDVM_E2E_INITRD:-}"
ram=512
mib=400
passes=3
timeout_s=240
log=""
backend=memfd

usage() { echo "usage: run-guest.sh [--kernel K] [--initrd I] [--ram MIB] [--mib MIB] [--passes N] [--timeout SEC] [--log FILE] [--backend memfd|none] [-- WRAPPER...]" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernel="$2"; shift 2 ;;
	--initrd) initrd="$2"; shift 2 ;;
	--ram) ram="$2"; shift 2 ;;
	--mib) mib="$2"; shift 2 ;;
	--passes) passes="$2"; shift 2 ;;
	--timeout) timeout_s="$2"; shift 2 ;;
	--log) log="$2"; shift 2 ;;
	--backend) backend="$2"; shift 2 ;;
	--) shift; break ;;
	*) echo "run-guest.sh: unknown option '$1'" >&2; usage ;;
	esac
done
case "$backend" in memfd | none) ;; *) echo "run-guest.sh: --backend must be memfd or none, not '$backend'" >&2; usage ;; esac

if [ -z "$kernel" ]; then
	fetch="${UFFDVM_FETCH_KERNEL:-$(dirname "$0")/../../scripts/fetch-guest-kernel}"
	kernel=$("$fetch") || { echo "run-guest.sh: no guest kernel (fetch failed)" >&2; exit 1; }
fi
[ -r "$kernel" ] || { echo "run-guest.sh: kernel '$kernel' not readable" >&2; exit 1; }
[ -n "$initrd" ] && [ -r "$initrd" ] || { echo "run-guest.sh: initrd '$initrd' not readable" >&2; exit 1; }
[ -n "$log" ] || log=$(mktemp /tmp/uffdvm-guest.XXXXXX.log)

qemu="${UFFDVM_QEMU:-qemu-system-x86_64}"
set -- "$@" "$qemu" -accel tcg -m "$ram" -smp 1 -nographic -no-reboot -net none \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 quiet uffdvm.mib=$mib uffdvm.passes=$passes"
if [ "$backend" = memfd ]; then
	set -- "$@" -object "memory-backend-memfd,id=e2e-ram,size=${ram}M,share=on" \
		-machine memory-backend=e2e-ram
fi
# shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
set -- "$@" ${UFFDVM_QEMU_ARGS:-}

echo "run-guest.sh: $*" >&2
start=$(date +%s.%N)
timeout -k 10 "$timeout_s" "$@" </dev/null >"$log" 2>&1
rc=$?
end=$(date +%s.%N)
elapsed=$(echo "$start $end" | awk '{ printf "%.1f", $2 - $1 }')

# The serial console interleaves terminal escapes with the guest's lines.
clean() { tr -d '\r' <"$log" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g'; }
verdict=$(clean | grep -E '^(PASS|FAIL)' | head -n 1)
guest=$(clean | grep -oE 'UFFDVM-GUEST-(START|END) .*' | tr '\n' ' ')
echo "run-guest.sh: qemu exit $rc after ${elapsed}s; $guest" >&2
case "$verdict" in
PASS*)
	echo "run-guest.sh: $verdict (wall ${elapsed}s, log $log)"
	exit 0
	;;
FAIL*)
	echo "run-guest.sh: guest workload failed: $verdict (log $log)" >&2
	;;
*)
	[ "$rc" = 124 ] && echo "run-guest.sh: timed out after ${timeout_s}s" >&2
	echo "run-guest.sh: no verdict on the console; last lines of $log:" >&2
	clean | tail -n 20 >&2
	;;
esac
exit 1
