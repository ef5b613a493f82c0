#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""guestsim under the pager with local memory at 25% of its RAM, 2 threads,
mixed reads/writes (some through the kernel): every byte verified, pages
evicted and refaulted, evictions aborted by writes, and the memfd's own
resident size (read by this test from /proc, not from the pager) never
above the high watermark."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, guestsim, policy, require_root_and_uffd  # noqa: E402

SIZE_MB = 256
LOCAL_MB = SIZE_MB // 4


def memfd_blocks(pid):
    """Resident pages of guestsim's RAM memfd, from the kernel's st_blocks."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:guestsim-ram"):
                return os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512 // 4096
        except OSError:
            pass
    return None


def main():
    require_root_and_uffd()
    pager = Pager()
    try:
        out = os.path.join(pager.tmp, "guestsim.json")
        g = guestsim(pager, "paging", policy("paging", f"{LOCAL_MB}M"),
                     ["--size", f"{SIZE_MB}M", "--threads", "2", "--pattern", "uniform", "--writes", "50",
                      "--kernel-io", "10", "--ops", "250000", "--seed", "7", "--json", out])
        st = pager.wait_vm("paging")
        high = st["high_watermark_pages"]
        samples = over = 0
        max_seen = 0
        while g.poll() is None:
            blocks = memfd_blocks(g.pid)
            if blocks is not None:
                samples += 1
                max_seen = max(max_seen, blocks)
                if blocks > high:
                    over += 1
            s = pager.vm_stats("paging")
            if s:
                last = s
            time.sleep(0.02)
        rc = g.wait()
        check(rc == 0, f"guestsim verified every byte (exit {rc})")
        check(samples > 20, f"sampled the memfd's residency {samples} times")
        check(over == 0, f"memfd residency never above the high watermark ({max_seen} <= {high} pages)")
        check(last["evictions"] > 0, f"pages were evicted ({last['evictions']})")
        check(last["refaults"] > 0, f"pages were refaulted from the spill file ({last['refaults']})")
        check(last["evictions_aborted"] > 0, f"evictions aborted by a write ({last['evictions_aborted']})")
        check(last["faults"]["zero"] > 0, "first touches served as zero pages")
        check(last["integrity_errors"] == 0, "no integrity errors")
        lat = last["fault_latency_ns"]
        with open(out) as f:
            gs = json.load(f)
        print(f"fault service latency: p50 {lat['p50']/1000:.1f} us, p90 {lat['p90']/1000:.1f} us, "
              f"p99 {lat['p99']/1000:.1f} us, p99.9 {lat['p999']/1000:.1f} us over {lat['count']} faults; "
              f"eviction {last['eviction_mbps']:.0f} MB/s while evicting, {last['evictions']} pages evicted")
        print(f"guestsim: {json.dumps(gs)}")
        check(pager.alive(), "pager still running")
    finally:
        pager.stop()


if __name__ == "__main__":
    main()
