#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The pager dies or restarts under a running guestsim; a new pager adopts it
and nothing is lost. Scenarios (argv[1]):
  kills  4x overcommit, replicas 2 on two TCP donors, sealed pages: the pager
         is SIGKILLed 5 times at random points of the run, then once by the
         test hook right after an eviction's commit (before the punch) and
         once right after the punch (before it is recorded), then stopped
         with SIGTERM as `systemctl restart` does. It is started again each
         time. guestsim verifies every byte it reads (a zero where data was
         is a mismatch) and exits 0; no page is lost; a limit set at run
         time (vm.set-limit) holds under every later pager.
         Prints the guest's pause per restart (pager start to the first
         fault served) and the recovery time.
  bad    with the pager down, the VM's state file is given a future format
         version, a wrong secret, then cut short: each time the new pager
         refuses the resume with a message naming the file and the reason,
         the guest waits (alive, never served), and once the file is
         restored the VM is adopted. A state file whose pid now names another
         process is deleted at start-up with its spill file. guestsim then
         verifies every byte."""
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (  # noqa: E402
    BUDGET_X, Donor, Pager, Subscriber, check, exe, fail, finish, guestsim, kill_procs, policy, require_root_and_uffd,
    wait_for)

SIZE_MB = 128
LOCAL_MB = SIZE_MB // 4
# struct vmstate_header: magic u32, version u16, header_bytes u16, pid u32, nregions u32, start u64,
# name[64], uuid[37], reserved[3], secret[32], ...
VERSION_OFF, START_OFF, SECRET_OFF = 4, 16, 24 + 64 + 37 + 3


def faults(st):
    f = st["faults"]
    return f["zero"] + f["spill"] + f["donor"] + f["wp"] + f["duplicate"] + f["discard"]


def adopted(pager, name):
    """The VM's stats once the restarted pager adopted it and serves its faults again."""
    try:
        st = pager.vm_stats(name)
    except (OSError, ValueError):
        return None  # a pager the test hook killed
    return st if st and st.get("adopted") and faults(st) > 0 else None


def restart_and_wait(pager, name, g, env=None):
    """Starts the pager again; returns seconds from its start to the first fault it served and the
    VM's stats then (None when an armed test hook killed that pager first)."""
    t0 = time.time()
    pager.restart(env)
    st = wait_for(lambda: adopted(pager, name) or (env and not pager.alive() and "dead"), 120,
                  f"VM {name} adopted and served again", alive=g)
    return time.time() - t0, (st if st != "dead" else None)


def state_file(pager, name, pid):
    return os.path.join(pager.state, f"{name}-{pid}.state")


def run_kills():
    donors = [Donor(capacity="256M") for _ in range(2)]
    pager = g = None
    try:
        # Under a sanitizer or a loaded machine a TLS handshake or slab call can take seconds: a donor
        # that looked dead at a restart would keep the orphan's slabs (see below) until its lease ends.
        pager = Pager(config={"donors": [d.url for d in donors], "donor_key_file": donors[0].key_file,
                              "donor_timeout_ms": 5000 * BUDGET_X})
        out = os.path.join(pager.tmp, "guestsim.json")
        g = guestsim(pager, "rs", policy("rs", f"{LOCAL_MB}M", durability={"replicas": 2}, on_data_loss="kill"),
                     ["--size", f"{SIZE_MB}M", "--threads", "2", "--pattern", "uniform", "--writes", "50",
                      "--duration", "1000000", "--seed", "5", "--json", out])
        pager.wait_vm("rs")
        wait_for(lambda: (pager.vm_stats("rs") or {}).get("evictions", 0) > 5000, 120, "evictions under way",
                 alive=g)
        # A limit changed at run time outlives the pager: every later one carries on with it.
        new_limit = (LOCAL_MB + 8) << 20
        pager.result("vm.set-limit", vm="rs", local_memory=new_limit)
        rnd = random.Random(os.getpid())
        pauses, recovers = [], []
        kills = [("kill", None)] * 5 + [("hook", "commit:3"), ("hook", "punch:3"), ("term", None)]
        for i, (how, hook) in enumerate(kills):
            if how == "kill":
                time.sleep(rnd.uniform(0.2, 2.0))
                pager.kill()
            elif how == "term":
                pager.stop_only()
            else:
                # The previous restart armed the hook: the pager kills itself inside the window.
                wait_for(lambda: not pager.alive(), 120, f"the test hook ({hook}) killed the pager",
                         alive=g)
                pager.kill()
                window = "after the commit, before the punch" if hook.startswith("commit") else "after the punch, before"
                check(f"test hook: killing the pager {window}" in pager.read_log(), f"the {hook} window was hit")
            check(g.poll() is None, f"guestsim still running after the pager's end #{i + 1} ({how})")
            nxt = kills[i + 1][1] if i + 1 < len(kills) and kills[i + 1][0] == "hook" else None
            pause, st = restart_and_wait(pager, "rs", g, {"UFFD_PAGER_TEST_CRASH": nxt} if nxt else None)
            if st is None:
                continue  # the hook struck before the first fault: the next round sees the pager gone
            pauses.append(pause)
            recovers.append(st["adopt_ms"])
            check(st["remote"]["pages_lost"] == 0, f"restart #{i + 1} ({how}): no page lost")
            check(st["local_memory"] == new_limit, f"restart #{i + 1}: the limit set at run time holds "
                                                   f"({st['local_memory'] >> 20} MiB)")
            if not nxt:  # (an armed hook kills this pager at its third batch)
                wait_for(lambda: (pager.vm_stats("rs") or {}).get("evictions", 0) > 2000, 120,
                         "paging again after the restart", alive=g)
        st = pager.vm_stats("rs")
        listing = subprocess.run([exe("uffd-ctl"), "--control", pager.control, "vm", "list"], capture_output=True,
                                 text=True, timeout=30).stdout
        check("ADOPTED" in listing and "after " in listing, f"uffd-ctl vm list shows the adoption:\n{listing}")
        check(st["remote"]["pages_lost"] == 0 and st["integrity_errors"] == 0,
              f"no page lost, no copy rejected ({st['remote']['pages_lost']}, {st['integrity_errors']})")
        rc = finish(g)
        check(rc == 0, f"guestsim verified every byte across {len(kills)} pager deaths (exit {rc})")
        print(f"pause per restart (pager start to first fault served): p50 {statistics.median(pauses):.2f} s, "
              f"max {max(pauses):.2f} s over {len(pauses)} restarts; recovery p50 "
              f"{statistics.median(recovers):.1f} ms, max {max(recovers):.1f} ms ({SIZE_MB} MiB guest)")
        log = pager.read_log()
        check(log.count("adopted after") >= len(kills) - 2, f"at least {len(kills) - 2} adoptions logged")

        # A VM that ends while no pager runs: the next pager gives its slabs back to the donors.
        orphan = guestsim(pager, "orphan", policy("orphan", "16M", durability={"replicas": 2}),
                          ["--size", "64M", "--threads", "1", "--pattern", "uniform", "--writes", "50",
                           "--duration", "1000000", "--seed", "6"])
        wait_for(lambda: (pager.vm_stats("orphan") or {}).get("evictions", 0) > 2000, 120, "orphan paging",
                 alive=orphan)

        def held():
            return sum(c["slabs"] for d in donors for c in d.call("donor.stats")["result"]["clients"])
        check(held() > 0, f"the orphan-to-be holds slabs on the donors ({held()})")
        pager.kill()
        kill_procs([orphan])
        pager.restart()
        wait_for(lambda: held() == 0, 60, "the dead VM's slabs given back to both donors")
        check("gave its" in pager.read_log(), "the release is logged")
    finally:
        kill_procs([g] if g else [])
        if pager:
            pager.stop()
        for d in donors:
            d.stop()


def expect_refused(pager, g, path, damage, reason):
    """Damages the state file with the pager down and checks the refusal; then repairs the file under
    the running pager and sees the VM adopted at the shim's next try (the vm.adopted event)."""
    pager.kill()
    with open(path, "rb") as f:
        good = f.read()
    damage(path)
    before = pager.read_log().count(reason)
    pager.restart()
    wait_for(lambda: pager.read_log().count(reason) > before, 60, f"resume refused: {reason!r}", alive=g)
    check(pager.vm_stats("rs") is None, f"{reason}: the VM is not adopted")
    time.sleep(1.0)  # the shim keeps asking; nothing is served meanwhile
    check(g.poll() is None and pager.alive(), f"{reason}: the guest waits and the pager runs")
    events = Subscriber(pager)
    with open(path, "wb") as f:
        f.write(good)
    ev = events.wait("vm.adopted", 60, vm="rs")
    check(ev["pid"] == g.pid and ev["waited_ms"] > 0, f"{reason}: adopted once the file was restored: {ev}")
    st = wait_for(lambda: adopted(pager, "rs"), 60, "the adopted VM served again", alive=g)
    check(st["remote"]["pages_lost"] == 0 if "remote" in st else True, f"{reason}: nothing lost")


def run_bad():
    pager = g = sleeper = None
    try:
        pager = Pager()
        g = guestsim(pager, "rs", policy("rs", "24M", on_data_loss="kill"),
                     ["--size", "96M", "--threads", "2", "--pattern", "uniform", "--writes", "50",
                      "--duration", "1000000", "--seed", "9"])
        pager.wait_vm("rs")
        wait_for(lambda: (pager.vm_stats("rs") or {}).get("evictions", 0) > 3000, 120, "evictions under way",
                 alive=g)
        path = state_file(pager, "rs", g.pid)
        check(os.path.exists(path), f"state file {path} exists")

        # on_pager_lost "kill" after 2 s (uffd-qemu passes the policy's choice to the shim so):
        # with no pager for longer, the shim kills its VM; "rs" (the default, "wait") waits.
        lost = guestsim(pager, "lost", policy("lost", "8M"), ["--size", "32M", "--threads", "1", "--pattern",
                        "uniform", "--writes", "50", "--duration", "1000000", "--seed", "3"],
                        extra_env={"UFFD_GLUE_ON_PAGER_LOST": "kill:2"}, stderr=subprocess.PIPE, text=True)
        pager.wait_vm("lost")
        pager.kill()
        rc = lost.wait(timeout=120)
        said = lost.stderr.read()
        check(rc == -signal.SIGKILL, f"the VM with on_pager_lost kill:2 was killed (exit {rc}): {said}")
        check("per policy 'on_pager_lost'" in said, "the shim said why")
        check(g.poll() is None, "the VM with on_pager_lost wait still waits")
        pager.restart()
        wait_for(lambda: adopted(pager, "rs"), 120, "VM rs adopted", alive=g)

        def patch(off, data):
            def apply(p):
                with open(p, "r+b") as f:
                    f.seek(off)
                    f.write(data)
            return apply

        expect_refused(pager, g, path, patch(VERSION_OFF, struct.pack("=H", 99)), "has format version 99")
        expect_refused(pager, g, path, patch(SECRET_OFF, os.urandom(32)), "the secret does not match")
        expect_refused(pager, g, path, lambda p: os.truncate(p, 100), "not a uffdvm state file")

        # A state file left for a pid that a new process holds now: stale, deleted with its spill file.
        sleeper = subprocess.Popen(["sleep", "600"])
        ghost = state_file(pager, "ghost", sleeper.pid)
        shutil.copyfile(path, ghost)
        patch(START_OFF, struct.pack("=Q", 12345))(ghost)
        ghost_spill = ghost[:-len(".state")] + ".spill"
        with open(ghost_spill, "wb") as f:
            f.write(b"\0" * 4096)
        pager.kill()
        pager.restart()
        check(not os.path.exists(ghost) and not os.path.exists(ghost_spill),
              "a state file whose pid names another process is deleted with its spill file")
        check("now names another process" in pager.read_log(), "its deletion is logged with the reason")
        wait_for(lambda: adopted(pager, "rs"), 120, "VM rs adopted", alive=g)
        rc = finish(g)
        check(rc == 0, f"guestsim verified every byte after refused resumes (exit {rc})")
    finally:
        kill_procs([p for p in (g, sleeper) if p])
        if pager:
            pager.stop()


def main():
    require_root_and_uffd()
    scen = sys.argv[1] if len(sys.argv) > 1 else "kills"
    {"kills": run_kills, "bad": run_bad}.get(scen, lambda: fail(f"unknown scenario {scen}"))()


if __name__ == "__main__":
    main()
