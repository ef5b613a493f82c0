#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""e2e-disk-cache: a TCG guest (256 MiB RAM, under a real uffd-pager) runs a
verifying disk workload (tests/e2e/guest-disk-workload.c: write every block,
re-read it sequentially and at random with O_DIRECT, overwrite single
blocks and whole 64 KiB chunks, fsync, reboot the guest, re-read) on a
32 MiB raw drive that uffd-qemu serves through nbdkit and the uffdvm cache
filter, with a 64 MiB cache on a real uffd-donor over TCP/TLS. Once the
cache serves hits, the donor is SIGKILLed: the workload goes on reading
from the image (misses) and must still verify every block. After QEMU
exits, the keeper has stopped nbdkit and removed the runtime directory,
and qemu-img compare finds the image identical to the one the workload's
own generator builds on the host. Lacking QEMU, the kernel, nbdkit,
qemu-img or the filter is a skip (77), or a failure when
UFFDVM_REQUIRE_ALL=1."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import BUILD, Donor, Pager, check, exe, fail, require_root_and_uffd, skip, wait_for  # noqa: E402

NAME = "e2e-disk"
RAM_MB, DISK_MB, CACHE_MB = 256, 32, 64
SEED = "0x5eed"
KILL_AFTER_HITS = 256  # blocks of 64 KiB served from donor memory


def prerequisites():
    require_root_and_uffd()
    qemu = os.environ.get("UFFDVM_QEMU", "qemu-system-x86_64")
    for t in (qemu, "nbdkit", "qemu-img"):
        if not shutil.which(t):
            skip(f"{t} not found (scripts/install-deps)")
    filt = os.path.join(BUILD, "disk-cache", "nbdkit-uffdvm-cache-filter.so")
    if not os.path.exists(filt):
        skip(f"{filt} not built (nbdkit-plugin-dev missing at build time)")
    initrd = os.environ.get("UFFDVM_E2E_INITRD", "")
    workload = os.environ.get("UFFDVM_DISK_WORKLOAD", "")
    if not initrd or not os.access(initrd, os.R_OK) or not workload:
        skip("no e2e initramfs or disk workload (needs busybox-static and static glibc at configure time)")
    return qemu, initrd, workload


def main():
    qemu, base_initrd, workload = prerequisites()
    tmp = tempfile.mkdtemp(prefix="uffdvm-e2e-disk-", dir="/var/tmp")
    kernel, initrd = os.path.join(tmp, "vmlinuz"), os.path.join(tmp, "initrd")
    p = subprocess.run([os.path.join(os.environ["UFFDVM_SOURCE_DIR"], "tests", "e2e", "disk-guest.sh"),
                        base_initrd, workload, kernel, initrd], capture_output=True, text=True)
    if p.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        skip(f"cannot build the disk guest: {p.stderr.strip()[-500:]}")

    image, expect = os.path.join(tmp, "disk.img"), os.path.join(tmp, "expect.img")
    with open(image, "wb") as f:
        f.truncate(DISK_MB << 20)
    donor = Donor(capacity="256M")
    pager = Pager()
    guest = None
    try:
        pol = os.path.join(tmp, "vm.json")
        with open(pol, "w") as f:
            json.dump({"name": NAME, "local_memory": f"{RAM_MB}M",
                       "disk_cache": {"size": f"{CACHE_MB}M", "donors": [donor.url], "drives": ["disk0"],
                                      "key_file": donor.key_file, "client_id": "e2e-disk-cache"}}, f)
        rundir_base = os.path.join(tmp, "run")
        os.mkdir(rundir_base, 0o700)
        env = dict(os.environ, UFFD_GLUE_LIB=exe("libuffd-glue.so"), UFFD_QEMU_RUNTIME_DIR=rundir_base)
        # The shim in QEMU and a sanitized filter in nbdkit bring the ASan runtime in late.
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
        # No -no-reboot: the guest's reboot between its two phases keeps QEMU, nbdkit and the cache.
        cmd = [exe("uffd-qemu"), "--pager", pager.sock, "--policy", pol, "--name", NAME, "--",
               qemu, "-accel", "tcg", "-m", str(RAM_MB), "-smp", "1", "-nographic", "-net", "none",
               "-kernel", kernel, "-initrd", initrd,
               "-append", f"console=ttyS0 panic=-1 quiet uffdvm.seed={SEED}",
               "-drive", f"file={image},format=raw,if=virtio,id=disk0"]
        log_path = os.path.join(os.environ.get("UFFDVM_E2E_LOGDIR", tmp), "e2e-disk-cache.log")
        log = open(log_path, "w")
        t0 = time.time()
        guest = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)

        def stats():
            """The cache's counters as the pager's vm.stats shows them (disk_cache_*)."""
            st = pager.vm_stats(NAME) or {}
            dc = {k[len("disk_cache_"):]: v for k, v in st.items() if k.startswith("disk_cache_")}
            return dc if "hits" in dc else None

        last, killed, metrics = None, None, None
        deadline = t0 + 270
        while guest.poll() is None and time.time() < deadline:
            st = stats()
            if st:
                last = st
                if metrics is None and st["hits"] > 0:
                    metrics = pager.result("pager.metrics")["text"]
                if killed is None and st["hits"] >= KILL_AFTER_HITS:
                    donor.kill()
                    killed = st
                    print(f"donor SIGKILLed after {st['hits']} hits, {st['misses']} misses "
                          f"({time.time() - t0:.0f} s into the run)", flush=True)
            time.sleep(0.05)
        if guest.poll() is None:
            fail(f"QEMU still running after {deadline - t0:.0f} s")
        rc = guest.wait()
        log.close()
        with open(log_path) as f:
            out = f.read()
        elapsed = time.time() - t0
        if rc != 0 or "PASS disk workload" not in out:
            fail(f"guest did not PASS (uffd-qemu exit {rc}):\n{out[-4000:]}")
        check(True, f"guest PASSed its disk workload in {elapsed:.0f} s")
        check("UFFDVM-DISK-REBOOT" in out and "phase 2 (after the reboot)" in out,
              "the guest rebooted between its phases under the same QEMU and nbdkit")
        check(out.count("UFFDVM-DISK verified") == 8, "8 verify passes, each over every block")
        check(killed is not None, f"the donor was SIGKILLed once the cache served hits ({killed})")
        check(last["donor_failures"] >= 1 and last["donors_up"] == 0, f"the cache saw its donor go ({last})")
        check(last["misses"] > killed["misses"], "reads after the donor loss came from the image "
              f"({last['misses'] - killed['misses']} more misses)")
        check(last["integrity_failures"] == 0, "no copy failed to open")
        check("lost" in out, "the donor loss is in nbdkit's log")
        wait_for(lambda: not os.listdir(rundir_base), 30, "the keeper stopped nbdkit and removed its runtime dir")
        check(True, "nbdkit stopped with QEMU; runtime directory removed")
        p = subprocess.run([workload, "expect", expect, str(DISK_MB << 20), SEED], capture_output=True, text=True)
        check(p.returncode == 0, "reference image built on the host")
        p = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", image, expect],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"qemu-img compare: the image equals the reference ({p.stdout.strip()})")
        check(pager.alive(), "pager still running")
        check(metrics is not None and "uffdvm_vm_disk_cache_hits_total{" in metrics,
              "Prometheus metrics carry the cache's counters (uffdvm_vm_disk_cache_*)")
        check(last["size"] > 0 and last["hit_ratio"] > 0 and last["bytes_from_memory"] > 0,
              f"vm.stats shows the cache: size, hit ratio, bytes from memory vs disk ({last})")
        check("queued_bytes" in last and "store_skips" in last, "vm.stats shows the filter's store queue")
        check("uffdvm_vm_disk_cache_queued_bytes{" in metrics, "and so do the metrics")
    finally:
        if guest is not None and guest.poll() is None:
            guest.kill()
            guest.wait()
        pager.stop()
        donor.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
