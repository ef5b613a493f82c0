#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs inside the soft-RoCE VM (run-in-rxe-vm.sh): starts uffd-donor on
# rdma://$RXE_ADDR (and tcp:// where compared) and drives
# rdma-transport-test against it. Modes: verify, isolate, kill, bench.
# Prints TRANSPORT-OK <mode> when every check passed.
set -u
mode=$1
port=7471
key=/tmp/donor.key
head -c 48 /dev/urandom | base64 -w0 >$key
chmod 600 $key
pids=

cleanup() { for p in $pids; do kill -9 "$p" 2>/dev/null; done; }
trap cleanup EXIT

# start_donor URL LOG: starts a donor, waits until it listens; sets donor_pid.
start_donor() {
	uffd-donor --listen "$1" --capacity 512M --key-file $key --log-level warn \
		--control "$2.ctl" 2>"$2" &
	donor_pid=$!
	pids="$pids $donor_pid"
	n=0
	while ! grep -q ":$(printf %04X "${1##*:}") " /proc/net/tcp 2>/dev/null; do
		n=$((n + 1))
		if [ $n -gt 100 ] || ! kill -0 $donor_pid 2>/dev/null; then
			echo "donor $1 did not start:"; cat "$2"; exit 1
		fi
		sleep 0.1
	done
}

# CPU time (utime+stime, clock ticks) of a process.
cpu_ticks() { awk '{ print $14 + $15 }' /proc/$1/stat; }

fail() { echo "TRANSPORT-FAIL $mode: $*"; exit 1; }

case "$mode" in
verify)
	start_donor rdma://$RXE_ADDR:$port /tmp/donor-rdma.log
	c0=$(cpu_ticks $donor_pid)
	rdma-transport-test verify rdma://$RXE_ADDR:$port $key 8192 $donor_pid || fail "rdma:// verify"
	c1=$(cpu_ticks $donor_pid)
	start_donor tcp://$RXE_ADDR:$((port + 1)) /tmp/donor-tcp.log
	t0=$(cpu_ticks $donor_pid)
	rdma-transport-test verify tcp://$RXE_ADDR:$((port + 1)) $key 8192 $donor_pid || fail "tcp:// verify"
	t1=$(cpu_ticks $donor_pid)
	# Whole runs, setup included (slab registration pins and zero-fills 16 MiB per slab).
	echo "DONOR-CPU whole run, setup included: rdma:// $(((c1 - c0) * 10)) ms, tcp:// $(((t1 - t0) * 10)) ms"
	[ $((c1 - c0)) -lt $((t1 - t0)) ] || fail "rdma:// donor CPU not below tcp://"
	;;
isolate)
	start_donor rdma://$RXE_ADDR:$port /tmp/donor-rdma.log
	rdma-transport-test isolate rdma://$RXE_ADDR:$port $key /tmp/donor-rdma.log.ctl || fail "isolation checks"
	kill -0 $donor_pid 2>/dev/null || fail "the donor died"
	cat /tmp/donor-rdma.log
	# rdma:// against a donor serving tcp:// only: refused, and said so.
	kill $donor_pid
	start_donor tcp://$RXE_ADDR:$((port + 3)) /tmp/donor-tcp.log
	rdma-transport-test verify rdma://$RXE_ADDR:$((port + 3)) $key 1 2>/tmp/tcponly.log &&
		fail "rdma:// connected to a tcp:// donor"
	cat /tmp/tcponly.log
	grep -q 'does not serve RDMA' /tmp/tcponly.log || fail "no 'does not serve RDMA' message"
	# Without an RDMA device both ends refuse rdma:// with a clear message.
	rdma link delete rxe0 || fail "rdma link delete rxe0"
	uffd-donor --listen rdma://$RXE_ADDR:$((port + 2)) --capacity 64M --key-file $key 2>/tmp/nodev.log &
	nd=$!
	pids="$pids $nd"
	n=0
	while kill -0 $nd 2>/dev/null && [ $n -lt 50 ]; do n=$((n + 1)); sleep 0.1; done
	kill -0 $nd 2>/dev/null && fail "uffd-donor --listen rdma:// without a device did not exit"
	wait $nd && fail "uffd-donor --listen rdma:// without a device exited 0"
	cat /tmp/nodev.log
	grep -q 'no RDMA device: ' /tmp/nodev.log || fail "donor: no 'no RDMA device' message"
	rdma-transport-test verify rdma://$RXE_ADDR:$((port + 3)) $key 1 2>/tmp/nodev-client.log &&
		fail "client connected to rdma:// without a device"
	cat /tmp/nodev-client.log
	grep -q 'no RDMA device: ' /tmp/nodev-client.log || fail "client: no 'no RDMA device' message"
	echo "NODEV: donor and client refuse rdma:// without an RDMA device"
	;;
kill)
	start_donor rdma://$RXE_ADDR:$port /tmp/donor-rdma.log
	rdma-transport-test kill rdma://$RXE_ADDR:$port $key $donor_pid || fail "rdma:// donor killed"
	;;
bench)
	start_donor rdma://$RXE_ADDR:$port /tmp/donor-rdma.log
	start_donor tcp://$RXE_ADDR:$((port + 1)) /tmp/donor-tcp.log
	rdma-transport-test bench rdma://$RXE_ADDR:$port $key 300 8192 || fail "rdma:// bench"
	rdma-transport-test bench tcp://$RXE_ADDR:$((port + 1)) $key 300 8192 || fail "tcp:// bench"
	;;
*)
	echo "usage: $0 verify|isolate|kill|bench"; exit 2 ;;
esac
echo "TRANSPORT-OK $mode"
