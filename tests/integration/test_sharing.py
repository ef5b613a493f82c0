#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Page sharing (docs/sharing.md) with real guestsim VMs. Scenarios (argv[1]):
  group       spill only: 4 VMs in group "tenant-a" filled from the same
              seed, each with private pages of its own, parked: the group
              stores at most 0.35x the pages the 4 VMs have stored. Then
              each rewrites pages of its own choosing and verifies every
              byte (no write of one VM shows in another). A fifth VM with
              the same contents in group "tenant-b" shares nothing with
              them. Every reference goes when the VMs exit: no group left.
              Prints eviction rate and refault latency of a member and of a
              VM without sharing (same contents) side by side.
  donor_loss  3 donors, replicas 2: 2 VMs of one group, parked; a donor
              holding group copies is SIGKILLed; both VMs verify every
              byte, none is lost, and the group re-creates each lost copy
              once (not once per VM).
  restart     1 donor: 2 VMs of one group, parked; the pager is
              SIGKILLed and started again: both are adopted with every page
              still stored in the group, whose copies (on the donor, its
              slabs re-attached), and references are what they were before. Then the pager is stopped (SIGTERM)
              and started again: the group's pages went back into the
              VMs' memory, both are adopted and verify every byte. Last,
              a third VM's group state file is corrupted while no pager
              runs: its adoption is refused, naming the file.
  durability  3 donors: a VM with replicas 1 parked in a group, then one
              with replicas 2 joins: every group copy gets 2 replicas (the
              first VM's too); a donor SIGKILLed: no page lost, every byte
              verified in both.
  prefetch    1 donor: a sharing VM scans sequentially (pages 4x its
              local memory); its group copies are prefetched: at least 4
              prefetch hits per donor fault, every byte verified.
Prints the stored bytes with and without sharing."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUDGET_X, Donor, Pager, check, exe, guestsim, policy, require_root_and_uffd, wait_for  # noqa: E402

SIZE_MB = 32
PAGES = SIZE_MB * 256
PRIVATE = 512
# A donor that does not answer within this is marked down (slower under sanitizers).
DONOR_TIMEOUT_MS = 1000 * BUDGET_X


def start(pager, name, group, access_seed, extra=None, ops=PAGES, stderr=None):
    extra = extra or {}
    if group:
        extra["sharing_group"] = group
    out = os.path.join(pager.tmp, f"{name}.json")
    g = guestsim(pager, name, policy(name, "8M", **extra),
                 ["--size", f"{SIZE_MB}M", "--threads", "2", "--pattern", "uniform", "--writes", "50",
                  "--ops", str(ops), "--seed", "7", "--access-seed", str(access_seed),
                  "--private-pages", str(PRIVATE), "--json", out, "--pause-after-fill", "600"],
                 stdout=subprocess.PIPE, stderr=stderr)
    return g


def wait_filled(g, name):
    line = g.stdout.readline().decode()
    check("FILLED" in line, f"{name}: filled ({line.strip()!r})")


def park(pager, name):
    r = pager.call("vm.park", timeout=120, vm=name)
    check(r.get("ok"), f"{name}: parked ({r})")
    return pager.vm_stats(name)


def group_stats(pager, name):
    for gr in pager.result("pager.stats").get("sharing_groups", []):
        if gr["name"] == name:
            return gr
    return None


def finish(gs):
    for name, g in gs.items():
        g.send_signal(signal.SIGUSR2)  # the pause ends: rewrites, then the final verification
    for name, g in gs.items():
        rc = g.wait(timeout=300)
        check(rc == 0, f"{name}: guestsim verified every byte (exit {rc})")


def scenario_group():
    pager = Pager()
    gs = {}
    try:
        for i in range(4):
            gs[f"sh{i}"] = start(pager, f"sh{i}", "tenant-a", i + 1)
        gs["other"] = start(pager, "other", "tenant-b", 1)
        gs["plain"] = start(pager, "plain", None, 5)  # no sharing: the cost figures' baseline
        for name, g in gs.items():
            wait_filled(g, name)
        st = {name: park(pager, name) for name in gs}
        stored = sum(st[f"sh{i}"]["stored_pages"] for i in range(4))
        a = group_stats(pager, "tenant-a")
        b = group_stats(pager, "tenant-b")
        check(a is not None and b is not None, "both groups listed in pager.stats")
        print(f"tenant-a: {stored} pages stored by 4 VMs ({stored * 4 // 1024} MiB without sharing), "
              f"{a['copies']} copies ({a['copies'] * 4 // 1024} MiB with), {a['bytes_saved'] >> 20} MiB saved")
        check(stored >= 4 * (PAGES - 256), f"the 4 VMs stored nearly all their pages ({stored})")
        check(a["copies"] <= 0.35 * stored, f"the group stores at most 0.35x: {a['copies']} <= 0.35 * {stored}")
        # Every VM's private pages are its own: at least shared + 4 x private copies.
        check(a["copies"] >= PAGES - PRIVATE + 4 * PRIVATE - 256,
              f"private pages were not shared ({a['copies']} copies)")
        check(a["references"] == sum(st[f"sh{i}"]["shared_pages"] for i in range(4)),
              f"the group's references are the VMs' shared pages ({a['references']})")
        check(all(st[f"sh{i}"]["sharing_group"] == "tenant-a" for i in range(4)), "vm.stats names the group")
        # The same figures through uffd-ctl and the Prometheus exposition.
        out = subprocess.run([exe("uffd-ctl"), "--control", pager.control, "pager", "stats"], capture_output=True,
                             text=True, timeout=30).stdout
        check(f"sharing group tenant-a: 4 members, {a['copies']} copies" in out, f"uffd-ctl pager stats: {out!r}")
        out = subprocess.run([exe("uffd-ctl"), "--control", pager.control, "vm", "stats", "sh0"], capture_output=True,
                             text=True, timeout=30).stdout
        check("shared_pages" in out and "tenant-a" in out, "uffd-ctl vm stats shows the VM's group and shared pages")
        text = pager.result("pager.metrics")["text"]
        check(f'uffdvm_sharing_group_copies{{group="tenant-a"}} {a["copies"]}' in text and
              'uffdvm_vm_shared_pages{vm="sh0"}' in text, "Prometheus: group copies and a VM's shared pages")
        # Same contents, another group: nothing shared with tenant-a, every page its own copy.
        check(b["copies"] == st["other"]["stored_pages"] and b["members"] == 1,
              f"tenant-b shares nothing: {b['copies']} copies for {st['other']['stored_pages']} stored pages")
        finish(gs)
        # Figures, not assertions: the same run with and without sharing.
        for name in ("sh0", "plain"):
            with open(os.path.join(pager.tmp, f"{name}.json")) as f:
                verify = json.load(f)["verify"]["read_latency_ns"]
            print(f"{name}: eviction {st[name]['eviction_mbps']:.0f} MB/s, refault (final verification) "
                  f"p50 {verify['p50'] / 1000:.1f} us, p99 {verify['p99'] / 1000:.1f} us")
        wait_for(lambda: group_stats(pager, "tenant-a") is None and group_stats(pager, "tenant-b") is None, 60,
                 "the groups went with their last members")
        gdir = os.path.join(pager.state, "groups")
        wait_for(lambda: not os.listdir(gdir), 30, f"the groups' key and spill files gone ({os.listdir(gdir)})")
    finally:
        for g in gs.values():
            if g.poll() is None:
                g.kill()
                g.wait()
        pager.stop()


def scenario_donor_loss():
    donors = [Donor(capacity="256M") for _ in range(3)]
    pager = None
    gs = {}
    try:
        pager = Pager(config={"donors": [d.url for d in donors], "donor_key_file": donors[0].key_file,
                              "client_id": "test-pager", "donor_timeout_ms": DONOR_TIMEOUT_MS})
        for i in range(2):
            gs[f"dl{i}"] = start(pager, f"dl{i}", "tenant-r", i + 1, {"durability": {"replicas": 2}})
        for name, g in gs.items():
            wait_filled(g, name)
        for name in gs:
            park(pager, name)
        before = group_stats(pager, "tenant-r")
        check(before["copies"] > 0, f"group copies stored ({before['copies']})")
        victim = donors[0]
        victim.kill()
        # The VMs are paused: nothing else changes the group while it repairs.
        after = wait_for(lambda: (lambda s: s if s and s["copies_lost"] > 0 and
                                  s["rereplications"] >= s["copies_lost"] else None)(
            group_stats(pager, "tenant-r")), 60, "the group re-creates every lost copy")
        time.sleep(1)  # a second pass, per VM or not, would show here
        after = group_stats(pager, "tenant-r")
        print(f"tenant-r: {before['copies']} entries, {after['copies_lost']} copies lost with the donor, "
              f"{after['rereplications']} re-created")
        check(after["rereplications"] == after["copies_lost"],
              f"each lost copy re-created once: {after['rereplications']} == {after['copies_lost']}")
        for name in gs:
            st = pager.vm_stats(name)
            check(st["remote"]["pages_lost"] == 0 and st["remote"]["rereplications"] == 0,
                  f"{name}: nothing lost, nothing re-created per VM ({st['remote']})")
        finish(gs)
    finally:
        for g in gs.values():
            if g.poll() is None:
                g.kill()
                g.wait()
        if pager:
            pager.stop()
        for d in donors:
            d.stop()


def wait_adopted(pager, gs):
    for name in gs:
        # "adopted" is set once the VM registers again; the pages are counted while it is adopted.
        # The new pager evicts again at once (the VMs are over their limits): resident or stored anew.
        wait_for(lambda: (lambda s: s and s["adopted"] and s["resident_pages"] + s["stored_pages"] == PAGES)(
            pager.vm_stats(name)), 60, f"{name}: adopted with every page resident or stored")


def scenario_restart():
    donor = Donor(capacity="256M")
    # The same client id after the restart: the donor's lease keeps the group's slabs for the next pager.
    pager = Pager(config={"donors": [donor.url], "donor_key_file": donor.key_file, "client_id": "test-pager",
                          "donor_timeout_ms": DONOR_TIMEOUT_MS})
    gs = {}
    try:
        for i in range(2):
            gs[f"rs{i}"] = start(pager, f"rs{i}", "tenant-s", i + 1, {"durability": {"replicas": 1}})
        for name, g in gs.items():
            wait_filled(g, name)
        for name in gs:
            park(pager, name)
        before = group_stats(pager, "tenant-s")
        check(before["copies"] > 0 and before["remote_copies"] == before["copies"],
              f"group copies stored, each on the donor ({before})")
        state = os.path.join(pager.state, "groups", "tenant-s.state")
        check(os.path.exists(state) and os.stat(state).st_mode & 0o777 == 0o600,
              f"the group's state file {state} exists, mode 0600")

        # A crash: the next pager finds the group's copies again through its state file.
        pager.kill()
        pager.restart()
        wait_adopted(pager, gs)
        after = wait_for(lambda: (lambda s: s if s and s["members"] == 2 and s["members_pending"] == 0 else None)(
            group_stats(pager, "tenant-s")), 60, "both members back in the recovered group")
        print(f"tenant-s before the crash: {before['copies']} copies, {before['references']} references; "
              f"after: {after['copies']} copies, {after['references']} references")
        check(after["copies"] == before["copies"] and after["references"] == before["references"],
              f"the group's copies and references are what they were before the crash ({after})")
        check(after["remote_copies"] == before["remote_copies"],
              f"the group's slabs on the donor re-attached: {after['remote_copies']} remote copies")
        check(all(pager.vm_stats(n)["stored_pages"] == PAGES for n in gs),
              "every page still stored in the group (none brought back, none lost)")
        check("recovered from" in pager.read_log(), "the new pager says it recovered the group")

        # A stop (SIGTERM) leaves the group as a crash does: stored, named by its state file.
        pager.stop_only()
        check(os.path.exists(state), "the group's state file stays for the next pager")
        pager.restart()
        wait_adopted(pager, gs)
        again = wait_for(lambda: (lambda s: s if s and s["members"] == 2 and s["members_pending"] == 0 else None)(
            group_stats(pager, "tenant-s")), 60, "both members back in the group after the stop")
        check(again["copies"] == before["copies"] and again["references"] == before["references"],
              f"the group's copies and references are what they were before the stop ({again})")
        check(all(pager.vm_stats(n)["stored_pages"] == PAGES for n in gs),
              "every page still stored in the group after the stop (none brought back, none lost)")
        # guestsim's final pass: every byte of both VMs, through a crash and a stop.
        finish(gs)

        # A state file that fails its checks: the VM is refused, the file named, no page served wrong.
        err_path = os.path.join(pager.tmp, "rs2.stderr")
        err = open(err_path, "w")
        lone = gs["rs2"] = start(pager, "rs2", "tenant-s", 3, {"durability": {"replicas": 1}}, stderr=err)
        wait_filled(lone, "rs2")
        park(pager, "rs2")
        pager.kill()
        with open(state, "r+b") as f:
            f.seek(8)  # inside the group's name: the header's checksum fails
            b = f.read(1)
            f.seek(8)
            f.write(bytes([b[0] ^ 0xff]))
        pager.restart()
        wait_for(lambda: f"group state file {state}: header fails its checksum" in open(err_path).read(), 60,
                 "the adoption of a VM of a group whose state file is corrupted is refused, naming the file")
        check(lone.poll() is None, "rs2 waits for a pager, alive")
        err.close()
        check(pager.vm_stats("rs2") is None, "rs2 is not served with a corrupted group")
        lone.kill()
        lone.wait()
    finally:
        for g in list(gs.values()):
            if g.poll() is None:
                g.kill()
                g.wait()
        pager.stop()
        donor.stop()


def scenario_durability():
    """Members of one group with replicas 1 and 2: every group copy gets 2, a donor's loss costs no page."""
    donors = [Donor(capacity="256M") for _ in range(3)]
    pager = None
    gs = {}
    try:
        pager = Pager(config={"donors": [d.url for d in donors], "donor_key_file": donors[0].key_file,
                              "client_id": "test-pager", "donor_timeout_ms": DONOR_TIMEOUT_MS})
        gs["du0"] = start(pager, "du0", "tenant-d", 1, {"durability": {"replicas": 1}})
        wait_filled(gs["du0"], "du0")
        park(pager, "du0")
        one = group_stats(pager, "tenant-d")
        check(one["remote_copies"] == one["copies"], f"replicas 1 alone: one copy per entry ({one})")
        # A member asking for 2 replicas: the group's copies, those stored before included, get 2.
        gs["du1"] = start(pager, "du1", "tenant-d", 2, {"durability": {"replicas": 2}})
        wait_filled(gs["du1"], "du1")
        park(pager, "du1")
        two = wait_for(lambda: (lambda s: s if s and s["remote_copies"] == 2 * s["copies"] else None)(
            group_stats(pager, "tenant-d")), 60, "every group copy has 2 replicas")
        print(f"tenant-d: {one['copies']} entries with 1 replica, then {two['copies']} entries, "
              f"{two['remote_copies']} remote copies")
        donors[0].kill()
        wait_for(lambda: (lambda s: s and s["copies_lost"] > 0 and s["rereplications"] >= s["copies_lost"])(
            group_stats(pager, "tenant-d")), 60, "the group re-creates every copy lost with the donor")
        for name in gs:
            st = pager.vm_stats(name)
            check(st["remote"]["pages_lost"] == 0, f"{name}: no page lost ({st['remote']})")
        finish(gs)
    finally:
        for g in gs.values():
            if g.poll() is None:
                g.kill()
                g.wait()
        if pager:
            pager.stop()
        for d in donors:
            d.stop()


def scenario_prefetch():
    """A sharing VM scanning sequentially, its pages group copies on a donor: served largely by prefetch."""
    donor = Donor(capacity="256M")
    pager = None
    g = None
    try:
        pager = Pager(config={"donors": [donor.url], "donor_key_file": donor.key_file,
                              "client_id": "test-pager", "donor_timeout_ms": DONOR_TIMEOUT_MS})
        out = os.path.join(pager.tmp, "pf.json")
        g = guestsim(pager, "pf", policy("pf", "8M", durability={"replicas": 1}, sharing_group="tenant-p"),
                     ["--size", f"{SIZE_MB}M", "--threads", "1", "--pattern", "seq", "--writes", "50",
                      "--ops", str(4 * PAGES), "--seed", "5", "--json", out, "--hold", "1"])
        pager.wait_vm("pf")
        last = pager.watch("pf", g, 240, 0.05)
        rc = g.wait(timeout=30)
        check(rc == 0, f"pf: guestsim verified every byte (exit {rc})")
        check(last is not None and last["shared_pages"] > 0, "pf: its stored pages are group copies")
        pf, f = last["prefetch"], last["faults"]
        print(f"pf: prefetch {json.dumps(pf)}, faults {json.dumps(f)}")
        check(f["donor"] > 0, f"pf: faults served from the donor ({f['donor']})")
        check(pf["hits"] >= 4 * f["donor"],
              f"pf: >= 4x more group pages prefetched ({pf['hits']}) than fetched on faults ({f['donor']})")
        check(last["integrity_errors"] == 0 and last["remote"]["pages_lost"] == 0, "pf: no integrity error, no loss")
    finally:
        if g and g.poll() is None:
            g.kill()
            g.wait()
        if pager:
            pager.stop()
        donor.stop()


def main():
    require_root_and_uffd()
    scen = sys.argv[1] if len(sys.argv) > 1 else "group"
    t0 = time.time()
    {"group": scenario_group, "donor_loss": scenario_donor_loss, "restart": scenario_restart,
     "prefetch": scenario_prefetch, "durability": scenario_durability}[scen]()
    print(f"{scen}: passed in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
