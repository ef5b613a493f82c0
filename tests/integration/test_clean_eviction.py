#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Clean-page eviction with real uffd-donor daemons on TCP loopback. A page
fetched by a read keeps its stored copy and is installed write-protected;
evicting it again writes nothing to the store. Scenarios (argv[1]):
  reads      1 donor, replicas 1, sealed copies: a 90%-read uniform run
             (half of the writes by read(2), so the kernel takes the
             write-protect fault as KVM would) verifies every byte and
             evicts a good share of its pages clean; the same run with
             "clean_eviction": false evicts none clean and writes more to
             the store per eviction. That VM's fault thread also spins
             ("fault_spin_us") before it sleeps.
  donor_loss 3 donors, replicas 2: a donor holding clean pages' copies is
             SIGKILLed mid-run; every byte still verifies, no page is lost
             and clean pages never commit a copy on the dead donor. The
             fault thread spins: reads that fail while it polls for them
             go to the other copy as reads it slept on do.
  sampling   1 donor, "victims": "clock": the shim unmaps the pages the
             policy samples, the guest's accesses to them come back as minor
             faults (half of the writes by read(2): the kernel's accesses
             too), and every byte verifies: an unmap is never taken for a
             discard.
Prints the counters each run ends with."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUDGET_X, Donor, Pager, check, guestsim, policy, require_root_and_uffd, wait_for  # noqa: E402

SIZE_MB = 64
LOCAL_MB = SIZE_MB // 4
# A donor that does not answer within this is marked down. Sanitizer builds run several times
# slower (UFFDVM_BUDGET_X): a donor busy with revoked slabs must not look dead there.
DONOR_TIMEOUT_MS = 1000 * BUDGET_X


def run(pager, name, pol, ops, mid_run=None, pattern="uniform", finish_when=None):
    out = os.path.join(pager.tmp, f"{name}.json")
    g = guestsim(pager, name, pol,
                 ["--size", f"{SIZE_MB}M", "--threads", "2", "--pattern", pattern, "--writes", "10",
                  "--kernel-io", "50", "--ops", str(ops), "--seed", "7", "--json", out,
                  "--pause-after-fill", "0.2", "--hold", "1"])
    try:
        pager.wait_vm(name)
        filled = wait_for(lambda: (lambda s: s if s and s["evictions"] > 0 else None)(pager.vm_stats(name)),
                          120, f"{name}: evictions during the fill")
        if mid_run:
            mid_run(name)
        last = pager.watch(name, g, 300, finish_when=finish_when) or filled
        rc = g.wait(timeout=10)
    finally:
        if g.poll() is None:
            g.kill()
            g.wait()
    check(rc == 0, f"{name}: guestsim verified every byte (exit {rc})")
    check(last["integrity_errors"] == 0, f"{name}: no integrity errors")
    check(last["remote"]["pages_lost"] == 0, f"{name}: no page lost")
    written = last["evictions"] - last["evictions_clean"] - last["zero_pages_skipped"]
    last["store_writes_per_eviction"] = written / last["evictions"] if last["evictions"] else 0
    print(f"{name}: evictions {last['evictions']}, clean {last['evictions_clean']}, store writes per eviction "
          f"{last['store_writes_per_eviction']:.2f}, faults {json.dumps(last['faults'])}")
    return last


def reads():
    donor = Donor(capacity="256M")
    pager = None
    try:
        pager = Pager(config={"donors": [donor.url], "donor_key_file": donor.key_file,
                              "client_id": "test-pager", "donor_timeout_ms": 2000})
        ops = 4 * SIZE_MB * 256
        on = run(pager, "clean", policy("clean", f"{LOCAL_MB}M", durability={"replicas": 1}), ops)
        # Pages fetched by a read and not written while resident go back without a store write.
        check(on["evictions_clean"] >= on["evictions"] // 4,
              f"clean: at least a quarter of the evictions clean ({on['evictions_clean']} of {on['evictions']})")
        check(on["faults"]["wp"] > 0, f"clean: writes to clean pages took write-protect faults ({on['faults']['wp']})")
        off = run(pager, "dirty", policy("dirty", f"{LOCAL_MB}M", durability={"replicas": 1}, clean_eviction=False,
                                       fault_spin_us=200),
                  ops)
        check(off["evictions_clean"] == 0, f"dirty: no clean eviction with clean_eviction off ({off['evictions_clean']})")
        check(on["store_writes_per_eviction"] < off["store_writes_per_eviction"],
              f"fewer store writes per eviction with clean eviction ({on['store_writes_per_eviction']:.2f} < "
              f"{off['store_writes_per_eviction']:.2f})")
    finally:
        if pager:
            pager.stop()
        donor.stop()


def donor_loss():
    donors = [Donor(capacity="256M") for _ in range(3)]
    pager = None
    try:
        pager = Pager(config={"donors": [d.url for d in donors], "donor_key_file": donors[0].key_file,
                              "client_id": "test-pager", "donor_timeout_ms": DONOR_TIMEOUT_MS})

        def kill_after_clean(name):
            wait_for(lambda: (lambda s: s if s and s["evictions_clean"] > 200 else None)(pager.vm_stats(name)),
                     120, "clean evictions before the donor dies")
            donors[0].kill()

        last = run(pager, "loss", policy("loss", f"{LOCAL_MB}M", durability={"replicas": 2}, on_data_loss="stop",
                                fault_spin_us=200),
                   8 * SIZE_MB * 256, mid_run=kill_after_clean,
                   finish_when=lambda s: s["remote"]["rereplications"] > 0)
        check(last["evictions_clean"] > 200, f"loss: clean evictions ({last['evictions_clean']})")
        check(last["remote"]["rereplications"] > 0,
              f"loss: copies on the dead donor re-created ({last['remote']['rereplications']})")
    finally:
        if pager:
            pager.stop()
        for d in donors:
            d.stop()


def sampling():
    donor = Donor(capacity="256M")
    pager = None
    try:
        pager = Pager(config={"donors": [donor.url], "donor_key_file": donor.key_file,
                              "client_id": "test-pager", "donor_timeout_ms": 2000})
        last = run(pager, "clock", policy("clock", f"{LOCAL_MB}M", durability={"replicas": 1}, victims="clock"),
                   4 * SIZE_MB * 256, pattern="zipf")
        check(last["sampled_pages"] > 0, f"clock: pages sampled ({last['sampled_pages']})")
        check(last["faults"]["minor"] > 0, f"clock: sampled pages touched again as minor faults ({last['faults']['minor']})")
        check(last["faults"]["discard"] == 0, f"clock: no unmap taken for a discard ({last['faults']['discard']})")
    finally:
        if pager:
            pager.stop()
        donor.stop()


def main():
    require_root_and_uffd()
    {"reads": reads, "donor_loss": donor_loss, "sampling": sampling}[sys.argv[1] if len(sys.argv) > 1 else "reads"]()


if __name__ == "__main__":
    main()
