# SPDX-License-Identifier: MIT
"""scripts/bench --restart: what a pager restart costs a running guest.
For guestsim guests of 1, 4 and 16 GiB that touched 256 MiB at 128 MiB of
local memory, the rest never touched, the pager is SIGKILLed and started
again 3 times. The 256 MiB are either one run (`seq`: the untouched rest is
a hole in the memfd and in the page map, skipped) or spread at random
(`uniform`: nearly every 4 KiB of the page map has an entry). Reported per
case: the guest's pause (the new pager's start to the first fault it
serves, p50 and max), the recovery of the page states (adopt_ms) and the
state file's size on disk. Real processes through the integration harness
(tests/integration/harness.py)."""
import os
import statistics
import sys
import time

TOUCH_PAGES = 65536  # 256 MiB


def measure(build_dir, sizes_gib=(1, 4, 16), restarts=3, log=print):
    os.environ["UFFDVM_BUILD_DIR"] = build_dir
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
    import harness  # noqa: E402

    rows = []
    for pattern, gib in [(p, g) for p in ("seq", "uniform") for g in sizes_gib]:
        pager = harness.Pager()
        g = harness.guestsim(pager, "adopt", harness.policy("adopt", "128M"),
                             ["--size", f"{gib}G", "--no-fill", "--threads", "1", "--pattern", pattern,
                              "--writes", "100", "--duration", "100000", "--seed", "1"])
        try:
            pager.wait_vm("adopt")

            def touched():
                st = pager.vm_stats("adopt") or {}
                return st.get("resident_pages", 0) + st.get("stored_pages", 0) >= TOUCH_PAGES
            harness.wait_for(touched, 600, f"{gib} GiB guest touched 256 MiB", alive=g)
            pauses, recovers = [], []
            for _ in range(restarts):
                pager.kill()
                t0 = time.time()
                pager.restart()

                def served():
                    st = pager.vm_stats("adopt")
                    return st if st and st.get("adopted") and sum(st["faults"].values()) > 0 else None
                st = harness.wait_for(served, 120, "adopted and served", alive=g, interval=0.005)
                pauses.append(time.time() - t0)
                recovers.append(st["adopt_ms"])
            row = {"guest_gib": gib, "pattern": pattern, "pause_p50_s": statistics.median(pauses), "pause_max_s": max(pauses),
                   "recover_p50_ms": statistics.median(recovers), "recover_max_ms": max(recovers),
                   "state_file_bytes_on_disk": _disk_bytes(pager.state, "adopt", g.pid)}
            log(f"RESTART {gib} GiB guest (256 MiB touched, {pattern}): pause p50 {row['pause_p50_s']:.2f} s, "
                f"max {row['pause_max_s']:.2f} s; recovery p50 {row['recover_p50_ms']:.1f} ms, "
                f"max {row['recover_max_ms']:.1f} ms; state file {row['state_file_bytes_on_disk'] >> 10} KiB on disk")
            rows.append(row)
        finally:
            harness.kill_procs([g])
            pager.stop()
    return rows


def _disk_bytes(state_dir, name, pid):
    st = os.stat(os.path.join(state_dir, f"{name}-{pid}.state"))
    return st.st_blocks * 512
