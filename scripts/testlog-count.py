#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Counts meson test results per suite and prints the closing line.

Usage: testlog-count.py TESTLOG.json SUITE EXIT_CODE   -> one tab-separated line
       testlog-count.py --total SUMMARY_FILE            -> per-suite table + 'N passed, N failed'
With UFFDVM_REQUIRE_ALL=1 a skipped test counts as failed: CI provides every capability.
"""
import json
import os
import sys


def count(log, suite, rc):
    passed = failed = skipped = 0
    try:
        with open(log) as f:
            for line in f:
                t = json.loads(line)
                r = t.get("result")
                if r in ("OK", "EXPECTEDFAIL"):
                    passed += 1
                elif r == "SKIP":
                    skipped += 1
                else:
                    failed += 1
    except FileNotFoundError:
        pass
    if rc not in (0,) and failed == 0:
        failed = 1  # the runner itself failed (budget exceeded, build error)
    if passed + failed + skipped == 0:
        failed = 1  # a suite that ran nothing is a failure, not a pass
    print(f"{suite}\t{passed}\t{failed}\t{skipped}")


def total(path):
    require_all = os.environ.get("UFFDVM_REQUIRE_ALL") == "1"
    tp = tf = ts = 0
    print("suite         passed  failed  skipped")
    with open(path) as f:
        for line in f:
            suite, p, fl, s = line.split("\t")
            p, fl, s = int(p), int(fl), int(s)
            print(f"{suite:<13} {p:>6}  {fl:>6}  {s:>7}")
            tp, tf, ts = tp + p, tf + fl, ts + s
    if require_all and ts:
        print(f"{ts} skipped tests count as failures (UFFDVM_REQUIRE_ALL=1)")
        tf += ts
        ts = 0
    print(f"{tp} passed, {tf} failed" + (f", {ts} skipped" if ts else ""))
    sys.exit(1 if tf else 0)


if __name__ == "__main__":
    if sys.argv[1] == "--total":
        total(sys.argv[2])
    else:
        count(sys.argv[1], sys.argv[2], int(sys.argv[3]))
