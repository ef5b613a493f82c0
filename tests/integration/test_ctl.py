#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""uffd-ctl against a running pager with a guestsim VM: the tables and the
JSON of vm list / vm stats / pager stats, and vm set-limit lowering a
running VM's limit (the memfd's resident pages, read by this test from
/proc, fall under the new high watermark while guestsim keeps running and
finally verifies every byte) and raising it again. Exit codes: 1 for a
daemon error (unknown VM), 2 for bad usage, 3 for an unreachable socket."""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Pager, check, exe, fail, finish, guestsim, memfd_blocks, policy,  # noqa: E402
                     require_root_and_uffd)

MB = 1 << 20
NAME = "ctlvm"


def ctl(pager, *args, control=None):
    p = subprocess.run([exe("uffd-ctl"), "-c", control or pager.control] + list(args),
                       capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def ctl_ok(pager, *args):
    rc, out, err = ctl(pager, *args)
    if rc != 0:
        fail(f"uffd-ctl {' '.join(args)}: exit {rc}: {err.strip()}")
    return out


def ctl_json(pager, *args):
    out = ctl_ok(pager, "--json", *args)
    try:
        return json.loads(out)
    except ValueError as e:
        fail(f"uffd-ctl --json {' '.join(args)}: not JSON ({e}): {out!r}")


def main():
    require_root_and_uffd()
    pager = Pager()
    g = None
    try:
        g = guestsim(pager, NAME, policy(NAME, "64M"),
                     ["--size", "128M", "--threads", "2", "--pattern", "uniform", "--writes", "50",
                      "--duration", "60", "--seed", "5"])
        # 60 s: guestsim must outlast every wait below (both limit changes) on a loaded machine.
        pager.wait_for("VM registered with its RAM",
                       lambda: (pager.vm_stats(NAME) or {}).get("guest_pages", 0) > 0, timeout=20)

        out = ctl_ok(pager, "vm", "list")
        rows = [line.split() for line in out.splitlines() if line.split()[:1] == [NAME]]
        check(len(rows) == 1, f"vm list table shows {NAME}:\n{out.rstrip()}")
        lst = ctl_json(pager, "vm", "list")
        vms = lst["vms"] if isinstance(lst, dict) else lst
        check([v["name"] for v in vms] == [NAME], "vm list --json lists exactly the VM")
        check(vms[0]["pid"] == g.pid and vms[0]["local_memory"] == 64 * MB,
              f"vm list --json: pid {vms[0]['pid']} and local_memory {vms[0]['local_memory']}")

        out = ctl_ok(pager, "vm", "stats", NAME)
        check(NAME in out and len(out.splitlines()) > 5, f"vm stats table ({len(out.splitlines())} lines)")
        st = ctl_json(pager, "vm", "stats", NAME)
        check(st["name"] == NAME and st["guest_pages"] == 128 * MB // 4096, "vm stats --json: name, guest_pages")
        check(st["high_watermark_pages"] <= 64 * MB // 4096, f"high watermark within 64M ({st['high_watermark_pages']})")
        out = ctl_ok(pager, "pager", "stats")
        check(len(out.strip()) > 0, "pager stats prints a table")
        ps = ctl_json(pager, "pager", "stats")
        check(ps["vms"] == 1 and ps["committed"] == 64 * MB, f"pager stats --json: 1 VM, 64M committed ({ps})")
        ctl_ok(pager, "version")

        # Let residency grow well above what 16M allows, so lowering has to evict.
        pager.wait_for("residency above 24 MiB", lambda: (memfd_blocks(g.pid) or 0) > 24 * MB // 4096, timeout=30)
        t0 = time.time()
        ctl_ok(pager, "vm", "set-limit", NAME, "16M")
        st = ctl_json(pager, "vm", "stats", NAME)
        high = st["high_watermark_pages"]
        check(st["local_memory"] == 16 * MB and high <= 16 * MB // 4096,
              f"new limit in effect: local_memory 16M, high watermark {high} pages")
        pager.wait_for(f"memfd residency under the new high watermark ({high} pages)",
                       lambda: (memfd_blocks(g.pid) or 1 << 40) <= high, timeout=30, interval=0.02)
        print(f"residency fell to {memfd_blocks(g.pid)} <= {high} pages {time.time() - t0:.2f} s after set-limit")
        samples = over = worst = 0
        end = time.time() + 3
        while time.time() < end:
            b = memfd_blocks(g.pid)
            if b is None:
                fail(f"guestsim's memfd vanished (guestsim exit {g.poll()})")
            samples += 1
            worst = max(worst, b)
            over += b > high
            time.sleep(0.02)
        check(over == 0, f"residency stayed under {high} pages for 3 s ({samples} samples, max {worst})")
        check(g.poll() is None, "guestsim keeps running under the lower limit")

        ctl_ok(pager, "vm", "set-limit", NAME, "64M")
        st = ctl_json(pager, "vm", "stats", NAME)
        check(st["local_memory"] == 64 * MB and st["high_watermark_pages"] > high,
              f"limit raised back: high watermark {st['high_watermark_pages']} pages")
        pager.wait_for("residency grows past the old limit",
                       lambda: (memfd_blocks(g.pid) or 0) > high + 1024, timeout=30)
        check(ctl_json(pager, "pager", "stats")["committed"] == 64 * MB, "pager committed follows the limit")

        # Exit codes.
        rc, _, err = ctl(pager, "vm", "stats", "nosuchvm")
        check(rc == 5 and "nosuchvm" in err, f"unknown VM: exit 5 (no such VM) naming it ({rc}, {err.strip()!r})")
        rc, _, err = ctl(pager, "vm", "set-limit", "nosuchvm", "16M")
        check(rc == 5, f"set-limit of an unknown VM: exit 5 ({rc}, {err.strip()!r})")
        for args in (["vm"], ["bogus"], ["vm", "stats"], ["vm", "set-limit", NAME, "lots"],
                     ["vm", "set-limit", NAME], ["--no-such-option", "vm", "list"]):
            rc, _, err = ctl(pager, *args)
            check(rc == 2 and err.strip(), f"bad usage {' '.join(args)!r}: exit 2 ({err.strip().splitlines()[0]!r})")
        rc, _, err = ctl(pager, "vm", "list", control=os.path.join(pager.tmp, "missing.sock"))
        check(rc == 3, f"missing socket: exit 3 ({err.strip()!r})")
        dead = os.path.join(pager.tmp, "dead.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(dead)
        s.close()  # bound, never listening: connect is refused
        rc, _, err = ctl(pager, "pager", "stats", control=dead)
        check(rc == 3, f"socket without a listener: exit 3 ({err.strip()!r})")

        rc = finish(g)
        check(rc == 0, f"guestsim verified every byte through both limit changes (exit {rc})")
        pager.wait_for("VM gone after exit", lambda: pager.vm_names() == [])
        out = ctl_ok(pager, "vm", "list")
        check(NAME not in out, "vm list no longer shows it")
        check(pager.alive(), "pager still running")
    finally:
        if g is not None and g.poll() is None:
            g.kill()
            g.wait()
        pager.stop()


if __name__ == "__main__":
    main()
