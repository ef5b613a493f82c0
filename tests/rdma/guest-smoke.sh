#!/bin/sh
# SPDX-License-Identifier: MIT
#
# guest-smoke.sh — runs inside the rxe VM (run-in-rxe-vm.sh sets RXE_ADDR,
# RXE_DEV, RXE_GID_INDEX). Proves that both verbs paths uffdvm uses work over
# soft-RoCE: connection setup through rdma_cm (rping, 10 validated
# RDMA READ/WRITE round trips) and a raw-verbs RC queue pair with the GID
# chosen by index (ibv_rc_pingpong, received buffers checked). Server and
# client run in this VM; each must exit 0 and report the expected number of
# iterations, else this script exits 1.

RPING_COUNT=10
PP_ITERS=200
failures=0

bad() {
	echo "SMOKE-FAIL: $*"
	failures=$((failures + 1))
}

# Waits up to ~10 s for "$@" to succeed: servers give no readiness signal,
# and a client started too early is rejected instead of waiting.
wait_for() {
	n=0
	until "$@" >/dev/null 2>&1; do
		n=$((n + 1))
		[ $n -gt 100 ] && return 1
		sleep 0.1
	done
}

rping_listening() { rdma resource show cm_id | grep -q LISTEN; }
pp_listening() { netstat -ltn | grep -q ':18515 '; }

echo "== rping over $RXE_DEV, $RXE_ADDR <-> $RXE_ADDR, $RPING_COUNT iterations"
rping -s -a "$RXE_ADDR" -C $RPING_COUNT -v -V >/tmp/rping-server.log 2>&1 &
spid=$!
if wait_for rping_listening; then
	timeout 60 rping -c -a "$RXE_ADDR" -C $RPING_COUNT -v -V >/tmp/rping-client.log 2>&1
	crc=$?
else
	bad "rping server never listened"
	crc=255
	kill $spid 2>/dev/null
fi
wait $spid
src=$?
cat /tmp/rping-client.log
tail -n 3 /tmp/rping-server.log
[ $crc -eq 0 ] || bad "rping client exited with $crc"
[ $src -eq 0 ] || bad "rping server exited with $src"
n=$(grep -c 'ping data: rdma-ping-' /tmp/rping-client.log)
[ "$n" -eq $RPING_COUNT ] || bad "rping client completed $n of $RPING_COUNT pings"
n=$(grep -c 'ping data: rdma-ping-' /tmp/rping-server.log)
[ "$n" -eq $RPING_COUNT ] || bad "rping server saw $n of $RPING_COUNT pings"

echo "== ibv_rc_pingpong on $RXE_DEV, GID index $RXE_GID_INDEX, $PP_ITERS iterations"
pp="ibv_rc_pingpong -d $RXE_DEV -g $RXE_GID_INDEX -n $PP_ITERS -c"
$pp >/tmp/pp-server.log 2>&1 &
spid=$!
if wait_for pp_listening; then
	# The TCP side channel that swaps QP numbers uses 127.0.0.1; the RDMA
	# traffic goes over rxe0 to the GID's address.
	timeout 60 $pp 127.0.0.1 >/tmp/pp-client.log 2>&1
	crc=$?
else
	bad "ibv_rc_pingpong server never listened on TCP 18515"
	crc=255
	kill $spid 2>/dev/null
fi
wait $spid
src=$?
echo "-- client"; cat /tmp/pp-client.log
echo "-- server"; cat /tmp/pp-server.log
[ $crc -eq 0 ] || bad "ibv_rc_pingpong client exited with $crc"
[ $src -eq 0 ] || bad "ibv_rc_pingpong server exited with $src"
grep -q "^$PP_ITERS iters in" /tmp/pp-client.log || bad "ibv_rc_pingpong client did not complete $PP_ITERS iterations"
grep -q "^$PP_ITERS iters in" /tmp/pp-server.log || bad "ibv_rc_pingpong server did not complete $PP_ITERS iterations"

if [ $failures -ne 0 ]; then
	echo "SMOKE: $failures check(s) failed"
	exit 1
fi
echo "SMOKE: rping and ibv_rc_pingpong passed"
exit 0
