#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Negative control for the spill file's checks: guestsim fills 96 MiB
under a 24 MiB limit (so most pages go to the spill file), pauses, and this
test flips bytes in exactly one stored 4 KiB slot of the spill file. The
page must never reach guestsim: the pager detects the mismatch (the AES-GCM
tag by default; with `encryption` off, as run a second time, the CRC32C), logs an
integrity error naming the page and, per the policy's on_data_loss = kill,
SIGKILLs guestsim (which would exit 1 had it read the wrong bytes). The pager
stays up and frees the VM and its spill file."""
import os
import re
import select
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, fail, guestsim, policy, require_root_and_uffd  # noqa: E402

PAGE = 4096
SPILL_GROUP = 256  # slots per group, each group followed by a page of their tags


def wait_line(proc, want, timeout):
    """Reads proc's stdout until a line equal to `want`; returns the lines seen."""
    seen = []
    deadline = time.time() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            seen.append(line.decode(errors="replace"))
            if seen[-1] == want:
                return seen
    fail(f"guestsim never printed {want} (exit {proc.poll()}); stdout: {seen}")


def wait_evictor_idle(pager, name, timeout=20):
    """Waits until stored_pages > 1000 and has not moved for a while."""
    deadline = time.time() + timeout
    last, since = None, time.time()
    while time.time() < deadline:
        st = pager.vm_stats(name)
        if st is None:
            fail(f"VM {name} vanished before the corruption; log:\n{pager.read_log()}")
        cur = st["stored_pages"]
        if cur != last:
            last, since = cur, time.time()
        elif cur > 1000 and time.time() - since >= 0.5:
            return st
        time.sleep(0.05)
    fail(f"stored_pages never settled above 1000 (last {last})")


def corrupt_one_slot(path, used_slots):
    """Flips bytes in the first slot holding data; returns its index."""
    fd = os.open(path, os.O_RDWR)
    try:
        nslots = os.fstat(fd).st_size // PAGE
        # Start mid-file, so the page named by the pager is not trivially page 0.
        for slot in list(range(nslots // 2, nslots)) + list(range(nslots // 2)):
            if slot % (SPILL_GROUP + 1) == SPILL_GROUP:
                continue  # a page of tags (docs/stores.md): one page's slot is wanted
            data = os.pread(fd, PAGE, slot * PAGE)
            if len(data) == PAGE and any(data):
                # Inverting every 8th byte of the page: no CRC32C collision is plausible.
                bad = bytearray(data)
                for i in range(0, PAGE, 8):
                    bad[i] ^= 0xFF
                os.pwrite(fd, bytes(bad), slot * PAGE)
                # The pager reads with O_DIRECT; make the change visible to it.
                os.fsync(fd)
                check(os.pread(fd, PAGE, slot * PAGE) == bytes(bad), f"slot {slot} of the spill file rewritten")
                return slot
    finally:
        os.close(fd)
    fail(f"no slot holding data among {nslots} slots of {path} ({used_slots} in use)")


def main():
    require_root_and_uffd()
    encryption = "--no-encryption" not in sys.argv[1:]
    pager = Pager()
    g = None
    try:
        name = "integrity"
        g = guestsim(pager, name, policy(name, "24M", on_data_loss="kill", encryption=encryption),
                     ["--size", "96M", "--threads", "2", "--pattern", "uniform", "--writes", "50",
                      "--ops", "100000", "--seed", "11", "--pause-after-fill", "5"],
                     stdout=subprocess.PIPE)
        pager.wait_vm(name)
        wait_line(g, "FILLED", 60)
        st = wait_evictor_idle(pager, name)
        spill = st["spill_file"]
        print(f"after fill: stored {st['stored_pages']}, spill slots {st['spill_pages']}, "
              f"aborted {st['evictions_aborted']}, refaults {st['refaults']}, file {spill}")
        check(os.path.exists(spill), "spill file exists")
        # No slot may have been freed yet, or the flipped slot might hold no page: during the fill
        # no page is read back and no eviction given up, so every written slot is in use.
        check(st["refaults"] == 0 and st["evictions_aborted"] == 0 and st["faults"]["discard"] == 0,
              "no slot freed before the corruption (no refault, abort or discard)")
        check(st["spill_pages"] == st["stored_pages"], "every stored page holds one spill slot")
        check(st["integrity_errors"] == 0, "no integrity error before the corruption")
        check(st["encryption"] is encryption, f"vm.stats shows encryption {encryption}")
        slot = corrupt_one_slot(spill, st["spill_pages"])

        # guestsim's access phase and final verify read every page, the corrupted one included.
        last = pager.watch(name, g, 120, 0.02) or st
        if g.poll() is None:
            g.kill()
            g.wait()
            fail("guestsim neither finished nor was killed within 120 s")
        rc = g.returncode
        log = pager.read_log()
        check(rc != 1, f"guestsim never read wrong data (exit {rc}, 1 would be a mismatch)")
        check(rc != 0, "the corruption did not go unnoticed (guestsim did not complete)")
        check(rc == -9, f"guestsim was killed by SIGKILL per on_data_loss=kill (returncode {rc})")

        m = re.search(r"vm integrity: page (\d+) \(guest RAM offset 0x[0-9a-f]+\) cannot be restored", log)
        check(m is not None, "the pager log names the page that cannot be restored")
        print(f"pager: {m.group(0)} (spill slot {slot})")
        # The pager writes its final line when it frees the VM, a moment after the kill.
        deadline = time.time() + 10
        while not re.search(r"vm integrity: final: ", log) and time.time() < deadline:
            time.sleep(0.1)
            log = pager.read_log()
        fin = re.search(r"vm integrity: final: .* (\d+) integrity errors", log)
        errors = max(int(fin.group(1)) if fin else 0, last["integrity_errors"])
        check(errors >= 1, f"integrity_errors >= 1 ({errors}; last vm.stats showed {last['integrity_errors']})")

        deadline = time.time() + 10
        while time.time() < deadline and (pager.result("vm.list")["vms"] or os.path.exists(spill)):
            time.sleep(0.05)
        check(pager.result("vm.list")["vms"] == [], "the pager freed the VM (vm.list empty)")
        check(not os.path.exists(spill), "its spill file was deleted")
        check(pager.alive(), "pager still running")
        pst = pager.result("pager.stats")
        check(pst["vms_exited"] == 1 and pst["committed"] == 0, f"pager accounts the VM as gone ({pst})")
    finally:
        if g is not None and g.poll() is None:
            g.kill()
            g.wait()
        pager.stop()


if __name__ == "__main__":
    main()
