#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""events.subscribe against a real pager with a real donor: a raw
subscriber and `uffd-ctl events` (JSON and human) see a guestsim VM attach
and detach when it is SIGKILLed, then a VM whose only copies are on the
donor loses pages when the donor is SIGKILLed: donor.down and page.lost
follow, each with a real-time timestamp and the VM or donor it concerns.
A subscriber that stops reading is dropped without stalling the pager."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (  # noqa: E402
    Donor, Pager, Subscriber, check, exe, fail, guestsim, kill_procs, policy, proc_state, require_root_and_uffd)


def ctl_events(pager, *args):
    return subprocess.Popen([exe("uffd-ctl"), "--control", pager.control] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def check_time(ev, t0):
    t = ev.get("time")
    check(isinstance(t, float) and t0 - 1 <= t <= time.time() + 1,
          f"{ev['event']} carries the real time ({t} within [{t0:.1f}, now])")


def main():
    require_root_and_uffd()
    donor = Donor(capacity="128M")
    pager = None
    procs = []
    try:
        pager = Pager(extra_args=["--log-level", "debug"],  # logs each subscription: wait_subscribed
                      config={"donors": [donor.url], "donor_key_file": donor.key_file, "client_id": "ev-pager",
                              "donor_timeout_ms": 1000})
        t0 = time.time()
        sub = Subscriber(pager)
        cj = ctl_events(pager, "--json", "events", "--count", "2")
        ch = ctl_events(pager, "events", "--count", "1")
        procs += [cj, ch]
        pager.wait_subscribed(cj.pid)
        pager.wait_subscribed(ch.pid)

        # ---- a VM attaches and is killed ----
        g = guestsim(pager, "evvm", policy("evvm", "16M"),
                     ["--size", "32M", "--threads", "1", "--pattern", "uniform", "--ops", "200000000", "--seed", "5"])
        procs.append(g)
        ev = sub.wait("vm.attached", 20, vm="evvm")
        check(ev["pid"] == g.pid and ev["guest_memory"] == 32 << 20 and ev["local_memory"] == 16 << 20,
              f"vm.attached names the VM, its pid and sizes: {ev}")
        check_time(ev, t0)
        g.send_signal(signal.SIGKILL)
        g.wait()
        ev = sub.wait("vm.detached", 20, vm="evvm")
        check(ev["pid"] == g.pid and ev.get("reason"), f"vm.detached after SIGKILL, with a reason: {ev}")
        check_time(ev, t0)

        out, err = cj.communicate(timeout=20)
        lines = [json.loads(x) for x in out.splitlines()]
        check(cj.returncode == 0 and [x["event"] for x in lines] == ["vm.attached", "vm.detached"]
              and all(x["vm"] == "evvm" for x in lines),
              f"uffd-ctl --json events --count 2: exit {cj.returncode}, {lines}, {err}")
        out, err = ch.communicate(timeout=20)
        check(ch.returncode == 0 and re.match(
            r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z vm\.attached .*\bvm=evvm\b.*\bpid=%d\b" % g.pid, out),
            f"uffd-ctl events: one human line with a timestamp: exit {ch.returncode}, {out!r} {err}")

        # ---- a subscriber that never reads is dropped, the pager goes on ----
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(pager.control)
        slow.sendall(b'{"cmd":"events.subscribe"}\n')

        # ---- the donor dies holding the only copy of a VM's pages ----
        g = guestsim(pager, "lossvm", policy("lossvm", "8M", durability={"replicas": 1}, on_data_loss="stop"),
                     ["--size", "64M", "--threads", "1", "--pattern", "uniform", "--writes", "50",
                      "--ops", "200000000", "--seed", "9"])
        procs.append(g)
        sub.wait("vm.attached", 20, vm="lossvm")
        deadline = time.time() + 60
        while time.time() < deadline:
            st = pager.vm_stats("lossvm")
            if st and st["remote"]["copies"] > 1000:
                break
            time.sleep(0.1)
        else:
            fail(f"pages of lossvm never reached the donor: {st}")
        donor.kill()
        ev = sub.wait("donor.down", 30, donor=donor.url)
        check(ev.get("reason") and ev.get("error"), f"donor.down says why: {ev}")
        check_time(ev, t0)
        ev = sub.wait("page.lost", 60, vm="lossvm")
        check(ev["pid"] == g.pid and isinstance(ev["page"], int) and ev["offset"] == ev["page"] * 4096
              and ev["action"] == "stopped" and ev.get("reason"), f"page.lost names the page and the action: {ev}")
        check_time(ev, t0)
        deadline = time.time() + 20
        while time.time() < deadline and proc_state(g.pid) not in ("T", "t"):
            time.sleep(0.05)
        check(proc_state(g.pid) in ("T", "t"), "the VM was stopped as page.lost said")
        g.send_signal(signal.SIGKILL)
        g.wait()
        sub.wait("vm.detached", 20, vm="lossvm")

        # The slow subscriber either got everything (the events were few) or was dropped; either way
        # the pager answered the raw subscriber throughout and still answers requests.
        check(pager.result("pager.stats") is not None, "the pager still answers")
        slow.close()
        check(pager.alive(), "the pager survived the event stream")
        print(f"events seen: {[e['event'] for e in sub.events]}")
    finally:
        kill_procs(procs)
        if pager:
            pager.stop()
        donor.stop()


if __name__ == "__main__":
    main()
