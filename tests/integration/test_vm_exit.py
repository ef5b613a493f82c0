#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A VM that dies (SIGKILL, no goodbye) is noticed and freed completely:
two guestsim VMs under one pager, one killed mid-run. Within a few seconds
it is gone from vm.list, its spill file is deleted, and the pager's threads
and fds are back to what one VM costs (no leaked memfd, uffd, pidfd,
eventfd, io_uring or socket), while the other VM goes on and verifies every
byte. Then a lone VM is killed: the pager returns to its idle baseline."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, fail, finish, guestsim, kill_procs, policy, require_root_and_uffd  # noqa: E402

THREADS_PER_VM = 3  # fault thread, evictor, repair thread


def start_vm(pager, name, duration):
    g = guestsim(pager, name, policy(name, "16M"),
                 ["--size", "64M", "--threads", "2", "--pattern", "uniform", "--writes", "50",
                  "--duration", str(duration), "--seed", str(len(name))])
    pager.wait_for(f"VM {name} registered with its RAM",
                   lambda: (pager.vm_stats(name) or {}).get("guest_pages", 0) > 0, timeout=20)
    return g


def evicting(pager, name):
    st = pager.vm_stats(name)
    return st and st["evictions"] > 0 and st["refaults"] > 0


# Generous: a loaded host delays the pager's threads, not the property (everything is released).
def wait_gone(pager, name, spill, threads, fds, what, timeout=30):
    t0 = time.time()
    pager.wait_for(f"{name} gone from vm.list", lambda: name not in pager.vm_names(), timeout)
    pager.wait_for(f"{name}'s spill file {spill} deleted", lambda: not os.path.exists(spill), timeout)
    pager.wait_for(f"pager threads back to {threads} ({what}; now {pager.threads()})",
                   lambda: pager.threads() == threads, timeout)
    deadline = time.time() + timeout
    while pager.fds() != fds:
        if time.time() > deadline:
            fail(f"pager fds not back to {fds} ({what}): {pager.fds()}: {pager.fd_targets()}")
        time.sleep(0.05)
    check(True, f"{name}: VM, spill file, {THREADS_PER_VM} threads and its fds released "
                f"within {time.time() - t0:.2f} s ({what}: {threads} threads, {fds} fds)")


def main():
    require_root_and_uffd()
    pager = Pager()
    procs = []
    try:
        idle_threads, idle_fds = pager.threads(), pager.settled_fds()
        print(f"idle pager: {idle_threads} threads, {idle_fds} fds")

        # Phase 1: survivor + victim, victim SIGKILLed mid-run. The survivor must
        # still run when the victim dies: its run outlasts every wait before the
        # kill, even on a loaded machine under a sanitizer (a 15 s run once ended
        # while the victim was still starting).
        b = start_vm(pager, "survivor", 60)
        procs.append(b)
        pager.wait_for("one VM's threads started", lambda: pager.threads() == idle_threads + THREADS_PER_VM,
                       timeout=30)
        one_fds = pager.settled_fds()
        spill_b = pager.vm_stats("survivor")["spill_file"]
        a = start_vm(pager, "victim", 120)
        procs.append(a)
        pager.wait_for("two VMs' threads started", lambda: pager.threads() == idle_threads + 2 * THREADS_PER_VM,
                       timeout=30)
        two_fds = pager.wait_for("second VM costs as many fds as the first",
                                 lambda: pager.fds() == 2 * one_fds - idle_fds and pager.fds())
        print(f"one VM: {one_fds} fds, two VMs: {two_fds} fds")
        check(sorted(pager.vm_names()) == ["survivor", "victim"], "vm.list shows both VMs")
        spill_a = pager.vm_stats("victim")["spill_file"]
        check(os.path.exists(spill_a) and os.path.exists(spill_b), "both VMs have a spill file")
        pager.wait_for("victim pages evicted and refaulted", lambda: evicting(pager, "victim"), timeout=30)
        check(b.poll() is None, "survivor still running when the victim is killed")
        a.send_signal(signal.SIGKILL)
        check(a.wait(timeout=10) == -signal.SIGKILL, "victim died of SIGKILL")
        wait_gone(pager, "victim", spill_a, idle_threads + THREADS_PER_VM, one_fds, "one VM left")
        check(pager.vm_names() == ["survivor"], "the survivor is still registered")
        check(os.path.exists(spill_b), "the survivor's spill file is untouched")
        rc = finish(b)
        check(rc == 0, f"survivor verified every byte (exit {rc})")
        wait_gone(pager, "survivor", spill_b, idle_threads, idle_fds, "idle after a normal exit")

        # Phase 2: a lone VM SIGKILLed: back to the idle baseline.
        c = start_vm(pager, "lone", 120)
        procs.append(c)
        pager.wait_for("lone VM's threads started", lambda: pager.threads() == idle_threads + THREADS_PER_VM,
                       timeout=30)
        spill_c = pager.vm_stats("lone")["spill_file"]
        pager.wait_for("lone VM pages evicted and refaulted", lambda: evicting(pager, "lone"), timeout=30)
        c.send_signal(signal.SIGKILL)
        check(c.wait(timeout=10) == -signal.SIGKILL, "lone VM died of SIGKILL")
        wait_gone(pager, "lone", spill_c, idle_threads, idle_fds, "idle baseline")
        check(os.listdir(pager.state) == [], f"state dir empty ({os.listdir(pager.state)})")
        st = pager.result("pager.stats")
        check(st["vms"] == 0 and st["committed"] == 0 and st["vms_exited"] == 3,
              f"pager.stats: no VM, nothing committed, 3 exits ({st})")
        check(pager.alive(), "pager still running")
    finally:
        kill_procs(procs)
        pager.stop()


if __name__ == "__main__":
    main()
