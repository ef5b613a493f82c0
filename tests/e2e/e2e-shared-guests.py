#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""e2e-shared-guests: 4 QEMU TCG guests boot the same kernel and initramfs
(to an idle /bin/sleep as init) through uffd-qemu, all in one sharing group
(docs/sharing.md), and are parked. Prints the bytes their stored pages
would take without sharing (the sum of their stored pages) and the bytes
the group stores: a figure, not a hard-coded expectation. Checks that the
group stores fewer copies than the guests stored pages, and goes away
with the guests. Lacking QEMU, the kernel or the initramfs
is a skip (77), or a failure when UFFDVM_REQUIRE_ALL=1."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Pager, check, exe, guest_boot_files, require_root_and_uffd, wait_for  # noqa: E402

GUESTS, RAM_MB = 4, 256


def group(pager):
    return next((g for g in pager.result("pager.stats").get("sharing_groups", []) if g["name"] == "boot"), None)


def main():
    require_root_and_uffd()
    qemu, kernel, initrd = guest_boot_files()
    pager = Pager()
    guests = []
    try:
        logs = []
        for i in range(GUESTS):
            name = f"boot{i}"
            pol = os.path.join(pager.tmp, f"{name}.json")
            with open(pol, "w") as f:
                json.dump({"name": name, "local_memory": f"{RAM_MB}M", "sharing_group": "boot"}, f)
            logs.append(os.path.join(pager.tmp, f"{name}.log"))
            cmd = [exe("uffd-qemu"), "--pager", pager.sock, "--policy", pol, "--name", name, "--",
                   qemu, "-accel", "tcg", "-m", str(RAM_MB), "-smp", "1", "-nographic", "-no-reboot", "-net", "none",
                   "-kernel", kernel, "-initrd", initrd,
                   "-append", "console=ttyS0 panic=-1 rdinit=/bin/sleep -- 100000"]
            with open(logs[-1], "w") as log:
                guests.append(subprocess.Popen(cmd, env=dict(os.environ, UFFD_GLUE_LIB=exe("libuffd-glue.so")),
                                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
        for i, log in enumerate(logs):
            # The kernel hands over to init once it freed its init memory: the guest idles from there.
            wait_for(lambda: "Freeing unused kernel" in open(log).read(), 300, f"boot{i} booted",
                     alive=guests[i])
        time.sleep(2)  # init started; nothing else runs in the guests
        stored = 0
        for i in range(GUESTS):
            r = pager.call("vm.park", timeout=300, vm=f"boot{i}")
            check(r.get("ok"), f"boot{i} parked")
            stored += pager.vm_stats(f"boot{i}")["stored_pages"]
        g = group(pager)
        print(f"{GUESTS} guests of {RAM_MB} MiB booted to idle, parked: {stored * 4 / 1024:.1f} MiB stored "
              f"without sharing, {g['copies'] * 4 / 1024:.1f} MiB with ({g['copies'] / stored:.2f}x, "
              f"{g['bytes_saved'] / 2**20:.1f} MiB saved)")
        # The guests run on (timer ticks refault a few pages): counts move a little between looks.
        check(0 < g["copies"] < stored, f"the guests share pages ({g['copies']} copies for {stored} pages)")
        for q in guests:
            q.kill()
            q.wait()
        wait_for(lambda: group(pager) is None, 60, "the group went with its guests")
    finally:
        for q in guests:
            if q.poll() is None:
                q.kill()
                q.wait()
        pager.stop()


if __name__ == "__main__":
    main()
