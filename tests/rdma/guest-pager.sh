#!/bin/sh
# SPDX-License-Identifier: MIT
# PREPARED, NOT YET REGISTERED: needs the pager's donor integration
# (uffd-pager --donor URL --donor-key-file F) and a state directory on a
# real filesystem inside the VM (the pager refuses tmpfs; the rxe VM has
# only tmpfs until run-in-rxe-vm.sh gains a disk: virtio_blk + ext4 modules
# and a -drive). Runs inside the soft-RoCE VM: an rdma:// donor and a
# tcp:// donor, the pager with both, and guestsim under the pager with
# local memory well below its size and two replicas, so that pages go to
# both donors and come back from them. Prints PAGER-RDMA-OK on success.
set -u
state=${UFFDVM_VM_STATE_DIR:-/mnt/state}
size=${GS_SIZE:-64M}
local_mem=${GS_LOCAL:-16M}
key=/tmp/donor.key
head -c 32 /dev/urandom >$key
chmod 600 $key
pids=
cleanup() { for p in $pids; do kill -9 "$p" 2>/dev/null; done; }
trap cleanup EXIT
fail() { echo "PAGER-RDMA-FAIL: $*"; exit 1; }

wait_port() { # port pid
	n=0
	while ! grep -q ":$(printf %04X "$1") " /proc/net/tcp; do
		n=$((n + 1)); [ $n -gt 100 ] && fail "port $1 never listened"
		kill -0 "$2" 2>/dev/null || fail "process $2 died before listening on $1"
		sleep 0.1
	done
}
cpu_ticks() { awk '{ print $14 + $15 }' /proc/$1/stat; }

mkdir -p "$state" || fail "state dir $state"
uffd-donor --listen rdma://$RXE_ADDR:7471 --capacity 256M --key-file $key --control /tmp/d1.ctl 2>/tmp/d1.log &
d1=$!; pids="$pids $d1"
uffd-donor --listen tcp://$RXE_ADDR:7472 --capacity 256M --key-file $key --control /tmp/d2.ctl 2>/tmp/d2.log &
d2=$!; pids="$pids $d2"
wait_port 7471 $d1
wait_port 7472 $d2
uffd-pager --socket /tmp/pager.sock --control /tmp/pager.ctl --state-dir "$state" \
	--donor rdma://$RXE_ADDR:7471 --donor tcp://$RXE_ADDR:7472 --donor-key-file $key 2>/tmp/pager.log &
pg=$!; pids="$pids $pg"
n=0
while [ ! -S /tmp/pager.sock ]; do
	n=$((n + 1)); [ $n -gt 100 ] && { cat /tmp/pager.log; fail "pager socket never appeared"; }
	sleep 0.1
done
c0=$(cpu_ticks $d1)
LD_PRELOAD=/usr/local/lib/libuffd-glue.so UFFD_GLUE_SOCKET=/tmp/pager.sock UFFD_GLUE_NAME=gs-rdma \
	UFFD_GLUE_POLICY="{\"name\":\"gs-rdma\",\"local_memory\":\"$local_mem\",\"durability\":{\"replicas\":2}}" \
	guestsim --size "$size" --pattern uniform --writes 25 --seed 7 || { cat /tmp/pager.log; fail "guestsim under the pager"; }
c1=$(cpu_ticks $d1)
echo "DONOR-CPU rdma:// donor during guestsim: $(((c1 - c0) * 10)) ms"
uffd-ctl --socket /tmp/pager.ctl vm.stats gs-rdma 2>/dev/null || true
# Both donors must have been used: each holds slabs of the pager's client id.
for ctl in /tmp/d1.ctl /tmp/d2.ctl; do
	printf '{"cmd":"donor.stats"}\n' | nc -U -w 2 $ctl >/tmp/st.json 2>/dev/null ||
		fail "donor.stats on $ctl (nc -U missing in busybox?)"
	cat /tmp/st.json
	grep -q '"pages_written":[1-9]' /tmp/st.json || fail "donor behind $ctl received no pages"
done
grep -q '"pages_read":[1-9]' /tmp/st.json || true # reads may all be served by the first replica
echo "PAGER-RDMA-OK"
