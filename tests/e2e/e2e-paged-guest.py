#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""e2e-paged-guest [spill|donors|restart]: boots the e2e workload guest (512 MiB
RAM, 400 MiB workload, one pass) through uffd-qemu under a real uffd-pager
that keeps only 128 MiB (25%) of it resident. `spill` pages to the spill
file; `donors` pages to two real uffd-donor daemons over TCP with
`replicas: 2` and SIGKILLs one of them once the guest's faults are being
served from donors: the guest must still PASS. `restart` pages to a donor:
once pages are refaulting the pager is SIGKILLed and started again, then
stopped with SIGTERM and started again (`systemctl restart`): each new pager
adopts the running guest, which must still PASS. Requires the guest's PASS line, and from
vm.stats polled during the run: pages evicted and refaulted, no integrity
error, and the memfd's resident size (the pager's fstat of QEMU's memfd)
never above the high watermark. After QEMU exits the VM is gone from
vm.list. Lacking QEMU, the kernel or the initramfs is a skip (77), or a
failure when UFFDVM_REQUIRE_ALL=1."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Donor, Pager, check, exe, fail, guest_boot_files, require_root_and_uffd  # noqa: E402

NAME = "e2e-paged"
RAM_MB, WORKLOAD_MB, LOCAL_MB = 512, 400, 128


def main():
    require_root_and_uffd()
    qemu, kernel, initrd = guest_boot_files()

    mode = sys.argv[1] if len(sys.argv) > 1 else "spill"
    donors, extra, policy = [], [], {"name": NAME, "local_memory": f"{LOCAL_MB}M", "on_data_loss": "kill"}
    if mode == "restart":
        donors = [Donor(capacity="512M")]
        extra += ["--donor", donors[0].url, "--donor-key-file", donors[0].key_file]
    if mode == "donors":
        donors = [Donor(capacity="512M"), Donor(capacity="512M")]
        for d in donors:
            extra += ["--donor", d.url]
        extra += ["--donor-key-file", donors[0].key_file]
        policy["durability"] = {"replicas": 2}
    pager = Pager(extra_args=extra)
    guest = None
    killed = None
    try:
        pol = os.path.join(pager.tmp, "vm.json")
        with open(pol, "w") as f:
            json.dump(policy, f)
        log = os.path.join(os.environ.get("UFFDVM_E2E_LOGDIR", pager.tmp), "e2e-paged-guest.log")
        env = dict(os.environ, UFFD_GLUE_LIB=exe("libuffd-glue.so"))
        if "ASAN_OPTIONS" in os.environ:
            env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":verify_asan_link_order=0"
        cmd = [os.environ["UFFDVM_RUN_GUEST"], "--kernel", kernel, "--initrd", initrd,
               "--ram", str(RAM_MB), "--mib", str(WORKLOAD_MB), "--passes", "1", "--timeout", "270",
               "--log", log, "--backend", "none", "--",
               exe("uffd-qemu"), "--pager", pager.sock, "--policy", pol, "--name", NAME, "--"]
        t0 = time.time()
        guest = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last, samples, over, worst, registered = None, 0, 0, 0, None
        restarts = []  # how the pager ended, for each restart under the running guest
        while guest.poll() is None:
            st = pager.vm_stats(NAME)
            if st and mode == "restart" and len(restarts) < 2 and st["refaults"] > 500:
                if restarts:
                    pager.stop_only()  # SIGTERM, as systemctl stop does
                else:
                    pager.kill()
                restarts.append(time.time())
                pager.restart()
                pager.wait_for("the restarted pager adopted the guest",
                               lambda: (pager.vm_stats(NAME) or {}).get("adopted"), timeout=120)
                continue
            if st:
                registered = registered or time.time() - t0
                last = st
                samples += 1
                worst = max(worst, st["memfd_resident_pages"])
                over += st["memfd_resident_pages"] > st["high_watermark_pages"]
                if mode == "donors" and killed is None and st["faults"].get("donor", 0) > 1000:
                    donors[0].kill()  # mid-workload: the other replica must serve every page
                    killed = st["faults"]["donor"]
            time.sleep(0.25)
        out = guest.stdout.read()
        print(out.rstrip())
        rc = guest.wait()
        elapsed = time.time() - t0
        if rc != 0:
            donor_logs = "".join(f"\ndonor {d.url} (exit {d.proc.poll()}) log:\n{d.read_log()[-3000:]}" for d in donors)
            fail(f"guest did not PASS (run-guest.sh exit {rc}); pager log:\n{pager.read_log()[-3000:]}{donor_logs}")
        check("PASS" in out, f"guest workload printed PASS under the pager ({elapsed:.0f} s)")
        check(last is not None, f"VM {NAME} registered ({registered:.1f} s after start), polled {samples} times")
        check(last["guest_pages"] == RAM_MB * 256, f"all {RAM_MB} MiB of guest RAM paged ({last['guest_pages']} pages)")
        check(last["local_memory"] == LOCAL_MB << 20, f"local_memory {LOCAL_MB}M")
        check(last["evictions"] > 0, f"pages evicted ({last['evictions']})")
        check(last["refaults"] > 0, f"pages refaulted from the {mode} ({last['refaults']})")
        if mode == "restart":
            check(len(restarts) == 2, f"the pager was SIGKILLed and then SIGTERMed under the guest ({len(restarts)} restarts)")
            check(last["adopted"], f"the last pager adopted the guest (it waited {last['pager_lost_ms']} ms)")
        elif donors:
            check(killed is not None, f"a donor was SIGKILLed mid-run (after {killed} donor faults)")
            check(last["faults"]["donor"] > killed, f"faults still served by the surviving donor ({last['faults']['donor']})")
        check(last["integrity_errors"] == 0, "no integrity errors")
        check(over == 0, f"memfd residency never above the high watermark "
                         f"({worst} <= {last['high_watermark_pages']} pages over {samples} samples)")
        lat = last["fault_latency_ns"]
        print(f"last stats: {last['evictions']} evictions, {last['refaults']} refaults, "
              f"{last['faults']['zero']} zero faults, fault p50 {lat['p50'] / 1000:.1f} us, "
              f"p99 {lat['p99'] / 1000:.1f} us")
        pager.wait_for("VM gone from vm.list after QEMU exited", lambda: pager.vm_names() == [], timeout=30)
        # The VM leaves vm.list before its spill file is unlinked (the VM is freed off the main loop).
        pager.wait_for("spill file deleted", lambda: os.listdir(pager.state) == [], timeout=30)
        check(True, "spill file deleted")
        check(pager.alive(), "pager still running")
    finally:
        if guest is not None and guest.poll() is None:
            guest.kill()
            guest.wait()
        pager.stop()
        for d in donors:
            d.stop()


if __name__ == "__main__":
    main()
