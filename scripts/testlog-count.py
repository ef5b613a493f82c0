#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Counts meson test results per suite and prints the closing line.

Usage: testlog-count.py TESTLOG.json SUITE EXIT_CODE [FAILURES_FILE]
           -> one tab-separated line; each failed test's name and the last
              lines of its output are appended to FAILURES_FILE
       testlog-count.py --total SUMMARY_FILE            -> per-suite table + 'N passed, N failed'
With UFFDVM_REQUIRE_ALL=1 a skipped test counts as failed: CI provides every capability.
"""
import json
import os
import sys


FAILURE_TAIL_LINES = 15


def failure_report(t):
    """The test's name, result and the last lines of its output: CI shows
    only the end of its log, where the plain run's failures would be long
    scrolled away by the sanitizer runs."""
    out = (t.get("stdout") or "") + (t.get("stderr") or "")
    tail = out.rstrip("\n").split("\n")[-FAILURE_TAIL_LINES:]
    return "".join(
        [f"--- {t.get('name')}: {t.get('result')} after {t.get('duration', 0):.0f} s\n"]
        + [f"    {line}\n" for line in tail])


def count(log, suite, rc, failures_path=None):
    passed = failed = skipped = 0
    reports = []
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
                    reports.append(failure_report(t))
    except FileNotFoundError:
        pass
    if failures_path and reports:
        with open(failures_path, "a") as f:
            f.writelines(reports)
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
        count(sys.argv[1], sys.argv[2], int(sys.argv[3]),
              sys.argv[4] if len(sys.argv) > 4 else None)
