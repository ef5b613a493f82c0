#!/bin/sh
# SPDX-License-Identifier: MIT
# Behavioural checks of guestsim without the pager: exact exit codes, that a
# flipped byte is reported at the right page and phase, that usage errors
# name the bad input, that --json is valid and consistent, that runs are
# deterministic given --seed, and --no-fill / --duration / --hold.
# Usage: check-guestsim.sh /path/to/guestsim
set -u
GS=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILS=0

fail() {
	echo "FAIL: $*" >&2
	FAILS=$((FAILS + 1))
}

# run EXPECTED_CODE args...: runs guestsim, keeps stdout/stderr in $TMP.
run() {
	want=$1
	shift
	"$GS" "$@" >"$TMP/out" 2>"$TMP/err"
	got=$?
	if [ "$got" != "$want" ]; then
		fail "guestsim $* exited $got, expected $want"
		sed 's/^/  stderr: /' "$TMP/err" >&2
		return 1
	fi
	return 0
}

# 1. A flipped byte is caught by the access phase (seq reads every page).
if run 1 --size 16M --threads 2 --pattern seq --writes 0 --ops 4096 --self-test-corrupt; then
	page=$(sed -n 's/.*self-test: flipped byte at page \([0-9]*\) offset \([0-9]*\).*/\1/p' "$TMP/err")
	off=$(sed -n 's/.*self-test: flipped byte at page \([0-9]*\) offset \([0-9]*\).*/\2/p' "$TMP/err")
	[ -n "$page" ] || fail "self-test did not say which page it corrupted"
	grep -q "MISMATCH in access phase: page $page .*first bad byte at offset $off, 1 of 4096 bytes differ" "$TMP/err" ||
		fail "mismatch report does not name page $page offset $off: $(cat "$TMP/err")"
	grep -q "MISMATCH" "$TMP/out" || fail "summary line does not say MISMATCH"
fi

# 2. Without an access phase the final verification catches it.
if run 1 --size 16M --ops 0 --seed 7 --content realistic --self-test-corrupt; then
	grep -q "MISMATCH in final verify phase" "$TMP/err" || fail "final verify did not report the mismatch"
fi

# 3. Usage errors: exit 2, and the message names the input.
run 2 --threads 2 && { grep -q -- "--size is required" "$TMP/err" || fail "missing --size not named"; }
run 2 --size 1000 && { grep -q -- "--size: 1000" "$TMP/err" || fail "bad --size not named"; }
run 2 --size 16M --pattern bogus &&
	{ grep -q "allowed: seq, uniform, zipf" "$TMP/err" || fail "--pattern error lacks the allowed values"; }
run 2 --size 16M --zipf-theta 1 && { grep -q -- "--zipf-theta" "$TMP/err" || fail "--zipf-theta not named"; }
run 2 --size 16M --writes 101 && { grep -q -- "--writes: '101'" "$TMP/err" || fail "--writes not named"; }
run 2 --size 16M --ops 10 --duration 1
run 2 --size 16M --frobnicate && { grep -q -- "--frobnicate" "$TMP/err" || fail "unknown option not named"; }
run 2 --size 16M --threads 0
run 2 --size 16M --threads && { grep -q -- "--threads needs an argument" "$TMP/err" || fail "missing argument not named"; }

# 4. System error: an unwritable --json path, exit 3 with the path named.
run 3 --size 16M --ops 10 --json "$TMP/no/such/dir/out.json" &&
	{ grep -q "$TMP/no/such/dir/out.json" "$TMP/err" || fail "--json failure does not name the file"; }

# 5. --json is valid and its counts add up.
if run 0 --size 32M --threads 3 --pattern uniform --writes 40 --kernel-io 50 --ops 30000 \
	--json "$TMP/a.json"; then
	python3 - "$TMP/a.json" <<'EOF' || fail "JSON check failed"
import json, sys
j = json.load(open(sys.argv[1]))
a, f, v = j["access"], j["fill"], j["verify"]
assert j["status"] == "ok" and j["mismatches"] == 0, j
assert j["pages"] == 32 * 256 and f["accesses"] == j["pages"] and v["accesses"] == j["pages"], j
assert a["accesses"] == 30000 and a["reads"] + a["writes"] == 30000, a
assert 0.3 < a["writes"] / 30000 < 0.5, a
assert 0.4 < a["kernel_io_writes"] / a["writes"] < 0.6, a
assert a["kernel_io_latency_ns"]["count"] == a["kernel_io_writes"], a
assert 0.4 < f["kernel_io_writes"] / f["writes"] < 0.6, f
lat = a["latency_ns"]
assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"], lat
assert lat["count"] == 30000 and f["bytes_per_s"] > 0, a
for ph in (f, a, v):
    cs = ph["ctx_switches"]
    assert all(isinstance(cs[k], int) and 0 <= cs[k] < 10 * 30000 for k in ("voluntary", "involuntary")), cs
EOF
fi

# 6. Deterministic given --seed: the same choices, hence the same counts.
counts() { sed 's/.*| access: \([0-9]* (r [0-9]* w [0-9]* kio [0-9]*)\).*/\1/' "$TMP/out"; }
run 0 --size 16M --threads 2 --pattern zipf --writes 30 --kernel-io 20 --ops 20000 --seed 42 && c1=$(counts)
run 0 --size 16M --threads 2 --pattern zipf --writes 30 --kernel-io 20 --ops 20000 --seed 42 && c2=$(counts)
run 0 --size 16M --threads 2 --pattern zipf --writes 30 --kernel-io 20 --ops 20000 --seed 43 && c3=$(counts)
[ "${c1:-x}" = "${c2:-y}" ] || fail "same seed gave different counts: '$c1' vs '$c2'"
[ "${c1:-x}" != "${c3:-x}" ] || fail "different seeds gave identical counts: '$c1'"

# 7. --no-fill: never-written pages must read as zeros; writes still verify.
run 0 --size 16M --no-fill --pattern uniform --writes 50 --kernel-io 50 --ops 20000 --content realistic

# 8. --duration runs for about that long; --hold keeps the process alive.
start=$(date +%s%N)
if run 0 --size 16M --duration 0.5 --hold 1 --json "$TMP/d.json"; then
	ms=$((($(date +%s%N) - start) / 1000000))
	[ "$ms" -ge 1400 ] || fail "--duration 0.5 --hold 1 took only ${ms} ms"
	python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))["access"]; assert a["accesses"] > 1000 and 0.45 < a["wall_s"] < 5, a' \
		"$TMP/d.json" || fail "--duration run did no accesses or wrong wall time"
fi

[ "$FAILS" -eq 0 ] || { echo "$FAILS check(s) failed" >&2; exit 1; }
echo "all guestsim checks passed"
