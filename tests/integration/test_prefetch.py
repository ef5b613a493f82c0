#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The fault thread's prefetcher with a real uffd-donor on TCP loopback:
a sequential scan (1 guest thread, 50% writes, wrapping several times over
a working set 4x the local memory) must be served largely by prefetched
pages (at least 8 prefetch hits per donor fault) while guestsim verifies
every byte, including a final full pass; so must two threads scanning
interleaved pages (guestsim's thread t of 2 owns pages t, t + 2, ...,
the two drift apart); a uniform random run with 2 threads (overlapping
fetches; every access verified, no final pass) must trigger almost no
prefetching. In every run the memfd never holds more than the high
watermark. Prints the prefetch counters."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Donor, Pager, check, guestsim, memfd_resident_ok, policy, require_root_and_uffd  # noqa: E402

SIZE_MB = 64
LOCAL_MB = SIZE_MB // 4


def run(pager, name, pattern, ops, threads=1, extra=()):
    out = os.path.join(pager.tmp, f"{name}.json")
    g = guestsim(pager, name, policy(name, f"{LOCAL_MB}M", durability={"replicas": 1}),
                 ["--size", f"{SIZE_MB}M", "--threads", str(threads), "--pattern", pattern, "--writes", "50",
                  "--ops", str(ops), "--seed", "5", "--json", out, "--hold", "1"] + list(extra))
    try:
        pager.wait_vm(name)
        seen = []
        last = pager.watch(name, g, 240, 0.05, seen.append)
        samples = len(seen)
        over = sum(not memfd_resident_ok(s) for s in seen)
        rc = g.wait(timeout=10)
    finally:
        if g.poll() is None:
            g.kill()
            g.wait()
    check(rc == 0, f"{name}: guestsim verified every byte (exit {rc})")
    # Fetches in flight and prefetched pages never push the memfd over the limit.
    check(over == 0, f"{name}: memfd residency <= high watermark in all {samples} samples ({over} over)")
    check(last is not None, f"{name}: stats seen")
    print(f"{name}: prefetch {json.dumps(last['prefetch'])}, faults {json.dumps(last['faults'])}")
    check(last["integrity_errors"] == 0, f"{name}: no integrity errors")
    check(last["remote"]["pages_lost"] == 0, f"{name}: no page lost")
    return last


def main():
    require_root_and_uffd()
    donor = Donor(capacity="256M")
    pager = None
    try:
        pager = Pager(config={"donors": [donor.url], "donor_key_file": donor.key_file,
                              "client_id": "test-pager", "donor_timeout_ms": 2000})
        pages = SIZE_MB * 256
        seq = run(pager, "seq", "seq", 4 * pages)
        pf, f = seq["prefetch"], seq["faults"]
        check(pf["hits"] > 0, f"seq: prefetched pages installed ({pf['hits']})")
        # Sampled while guestsim holds after its last access: nothing is in flight.
        check(pf["issued"] == pf["hits"] + pf["wasted"], f"seq: issued = hits + wasted: {pf}")
        # Every page beyond the local memory was stored at least once per pass; prefetch takes most of them
        # (windows grow to 64 pages, so well over 8 pages come per fault).
        check(pf["hits"] >= 8 * f["donor"], f"seq: >= 8x more pages prefetched ({pf['hits']}) than fetched on faults ({f['donor']})")
        # Two vCPUs on interleaved pages: one stride-1 stream led by whichever is ahead, not two
        # streams close enough to break each other's majority (that gave about one hit per fault).
        seq2 = run(pager, "seq2", "seq", 4 * pages, threads=2)
        p2, f2 = seq2["prefetch"], seq2["faults"]
        check(p2["issued"] == p2["hits"] + p2["wasted"], f"seq2: issued = hits + wasted: {p2}")
        check(p2["hits"] >= 8 * f2["donor"], f"seq2: >= 8x more pages prefetched ({p2['hits']}) than fetched on faults ({f2['donor']})")
        # Without the final verification: that pass is a sequential scan the prefetcher rightly follows.
        # Two vCPUs: their fetches overlap (and may hit the same page).
        rnd = run(pager, "rnd", "uniform", 3 * pages, threads=2, extra=["--no-final-verify"])
        rp, rf = rnd["prefetch"], rnd["faults"]
        check(rf["donor"] > 1000, f"uniform: faults served from the donor ({rf['donor']})")
        check(rp["issued"] < rf["donor"] // 10, f"uniform: little prefetching ({rp['issued']} for {rf['donor']} faults)")
        check(pager.alive(), "pager still running")
    finally:
        if pager:
            print(pager.read_log()[-2000:])
            pager.stop()
        donor.stop()


if __name__ == "__main__":
    main()
