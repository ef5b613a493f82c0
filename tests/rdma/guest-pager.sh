#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs inside the soft-RoCE VM (run-in-rxe-vm.sh --disk, state dir on the
# ext4 disk at RXE_DISK): an rdma:// donor and a tcp:// donor, the pager with
# both, and guestsim under the pager at 4x oversubscription with two
# replicas, so every evicted page lives on both donors and comes back from
# one of them. Once the VM's faults served by donors pass MIN_DONOR_FAULTS,
# the rdma:// donor is SIGKILLed: guestsim must still verify every page and
# exit 0, the pager must report that donor down and have re-replicated pages
# onto what is left. Prints PAGER-RDMA-OK on success.
set -u
state=${RXE_DISK:?run with run-in-rxe-vm.sh --disk}/state
size=${GS_SIZE:-64M}
local_mem=${GS_LOCAL:-16M}
duration=${GS_DURATION:-12}
min_donor_faults=${MIN_DONOR_FAULTS:-500}
vm=rdmavm
key=/tmp/donor.key
ctl=/tmp/pager.ctl
head -c 48 /dev/urandom | base64 -w0 >$key
chmod 600 $key
pids=
cleanup() { for p in $pids; do kill -9 "$p" 2>/dev/null; done; }
trap cleanup EXIT
logs() { for f in /tmp/pager.log /tmp/d1.log /tmp/d2.log /tmp/gs.log; do echo "--- $f"; tail -n 30 $f; done; }
fail() { echo "PAGER-RDMA-FAIL: $*"; logs; exit 1; }

wait_port() { # port pid
	n=0
	while ! grep -q ":$(printf %04X "$1") " /proc/net/tcp; do
		n=$((n + 1)); [ $n -gt 100 ] && fail "port $1 never listened"
		kill -0 "$2" 2>/dev/null || fail "process $2 died before listening on $1"
		sleep 0.1
	done
}
# num FILE KEY: the first integer value of "KEY" in uffd-ctl's JSON (indented
# one key per line; the keys used here are unique in their output).
num() { sed -n "s/^ *\"$2\": \([0-9][0-9]*\).*/\1/p" "$1" | head -n1; }
vm_stats() { uffd-ctl -c $ctl --json vm stats $vm >/tmp/vm.json 2>/dev/null; }
# State of the donor whose url starts with $1, from pager stats.
donor_state() {
	uffd-ctl -c $ctl --json pager stats >/tmp/pager.json 2>/dev/null || return 1
	awk -v u="\"$1" '$1 == "\"url\":" && index($2, u) == 1 { f = 1 }
		f && $1 == "\"state\":" { gsub(/[",]/, "", $2); print $2; exit }' /tmp/pager.json
}

mkdir -p "$state" || fail "state dir $state"
uffd-donor --listen rdma://$RXE_ADDR:7471 --capacity 256M --key-file $key --log-level warn 2>/tmp/d1.log &
d1=$!; pids="$pids $d1"
uffd-donor --listen tcp://$RXE_ADDR:7472 --capacity 256M --key-file $key --log-level warn 2>/tmp/d2.log &
d2=$!; pids="$pids $d2"
wait_port 7471 $d1
wait_port 7472 $d2
# The whole VM runs under TCG on a shared host: once the rdma:// donor dies,
# repair re-sends thousands of pages to the tcp:// donor, and a fault's read
# queued behind them has taken over the default 2 s there. A tcp:// donor
# marked down for being slow would take the second copy of every page with
# it; this test is about the rdma:// donor's death, so slowness is allowed.
echo '{"donor_timeout_ms": 30000}' > /tmp/pager.json
uffd-pager --config /tmp/pager.json --socket /tmp/pager.sock --control $ctl --state-dir "$state" \
	--donor rdma://$RXE_ADDR:7471 --donor tcp://$RXE_ADDR:7472 --donor-key-file $key 2>/tmp/pager.log &
pg=$!; pids="$pids $pg"
n=0
while [ ! -S /tmp/pager.sock ] || [ ! -S $ctl ]; do
	n=$((n + 1)); [ $n -gt 100 ] && fail "pager sockets never appeared"
	kill -0 $pg 2>/dev/null || fail "the pager exited at start"
	sleep 0.1
done
[ "$(donor_state rdma://)" = up ] || fail "rdma:// donor not up in pager stats: $(cat /tmp/pager.json)"
[ "$(donor_state tcp://)" = up ] || fail "tcp:// donor not up in pager stats: $(cat /tmp/pager.json)"

# --hold keeps the VM registered after the final verify, so that its
# statistics can still be read when the workload is done.
LD_PRELOAD=/usr/local/lib/libuffd-glue.so UFFD_GLUE_SOCKET=/tmp/pager.sock UFFD_GLUE_NAME=$vm \
	UFFD_GLUE_POLICY="{\"name\":\"$vm\",\"local_memory\":\"$local_mem\",\"durability\":{\"replicas\":2},\"on_data_loss\":\"kill\"}" \
	guestsim --size "$size" --threads 2 --pattern uniform --writes 50 --seed 7 \
	--duration "$duration" --hold 6 >/tmp/gs.log 2>&1 &
gs=$!; pids="$pids $gs"
t0=$(date +%s)

# Until enough faults were served by donors: then kill the rdma:// one.
while :; do
	kill -0 $gs 2>/dev/null || fail "guestsim ended before $min_donor_faults donor faults"
	[ $(($(date +%s) - t0)) -gt 120 ] && fail "fewer than $min_donor_faults donor faults after 120 s"
	if vm_stats; then
		df=$(num /tmp/vm.json donor)
		[ -n "$df" ] && [ "$df" -ge "$min_donor_faults" ] && break
	fi
	sleep 0.5
done
echo "BEFORE-KILL after $(($(date +%s) - t0)) s: faults zero $(num /tmp/vm.json zero) donor $df spill $(num /tmp/vm.json spill) wp $(num /tmp/vm.json wp); remote copies $(num /tmp/vm.json copies)"
# The latency histogram covers every fault the VM took; take the difference
# of two snapshots one second apart, so that it is the access phase only,
# where misses are refaults served by the donors.
cp /tmp/vm.json /tmp/vm0.json
sleep 1
vm_stats || fail "vm stats"
cp /tmp/vm.json /tmp/vm1.json
hist() { # FILE: "le count" pairs of fault_latency_ns buckets
	awk '/"le":/ { gsub(/,/, "", $2); le = $2 } /"count":/ && le != "" { gsub(/,/, "", $2); print le, $2; le = "" }' "$1"
}
hist /tmp/vm0.json >/tmp/h0
hist /tmp/vm1.json >/tmp/h1
lat=$(awk 'NR == FNR { c0[$1] = $2; next } { d = $2 - c0[$1]; if (d > 0) { le[++k] = $1; n[k] = d; tot += d } }
	END {
		if (!tot) { print "none"; exit }
		for (i = 1; i <= k; i++) { s += n[i]
			if (!p50 && s >= tot * 0.5) p50 = le[i]
			if (!p99 && s >= tot * 0.99) p99 = le[i] }
		printf "%d faults in 1 s, p50 <= %d us, p99 <= %d us", tot, p50 / 1000, p99 / 1000 }' /tmp/h0 /tmp/h1)
df1=$(num /tmp/vm1.json donor)
echo "REMOTE-LATENCY rdma:// + tcp:// donors, access phase ($((df1 - df)) donor faults in that second): $lat"
echo "FAULT-LATENCY whole run so far (all faults): p50 $(num /tmp/vm1.json p50) ns p99 $(num /tmp/vm1.json p99) ns"

kill -9 $d1
echo "KILLED rdma:// donor (pid $d1) at $(($(date +%s) - t0)) s"
n=0
while [ "$(donor_state rdma://)" != down ]; do
	n=$((n + 1)); [ $n -gt 150 ] && fail "rdma:// donor not down in pager stats 15 s after SIGKILL: $(cat /tmp/pager.json)"
	sleep 0.1
done
echo "DONOR-DOWN rdma:// after $((n / 10)).$((n % 10)) s (pager stats)"
# Re-replication happens in the background; read it while the VM is still
# registered (guestsim holds it for a few seconds after its final verify).
rr=0
while kill -0 $gs 2>/dev/null; do
	if vm_stats; then
		cp /tmp/vm.json /tmp/vm-last.json
		rr=$(num /tmp/vm.json rereplications)
	fi
	sleep 0.5
done
wait $gs
rc=$?
cat /tmp/gs.log
[ $rc -eq 0 ] || fail "guestsim exited with $rc after the rdma:// donor was killed"
echo "AFTER: $(grep -E '"(donor|spill|zero|rereplications|copies_lost|pages_lost|bad_copies|integrity_errors)":' /tmp/vm-last.json | tr -d ' \n')"
[ "${rr:-0}" -gt 0 ] || fail "no re-replications after the rdma:// donor died"
[ "$(num /tmp/vm-last.json pages_lost)" = 0 ] || fail "pages lost"
[ "$(num /tmp/vm-last.json integrity_errors)" = 0 ] || fail "integrity errors"
[ "$(donor_state rdma://)" = down ] || fail "rdma:// donor no longer down"
[ "$(donor_state tcp://)" = up ] || fail "tcp:// donor not up at the end"
kill -0 $pg 2>/dev/null || fail "the pager died"
echo "REREPLICATED $rr pages"
grep -E 'repair pass|donor' /tmp/pager.log | tail -n 5
echo "PAGER-RDMA-OK"
