#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The disk cache under libvirt: a TCG domain (examples/libvirt-domain.xml,
uffd-qemu as its <emulator>) with a <disk type='file'> whose -blockdev
protocol node (libvirt-1-storage) its policy's disk_cache.drives names. A
real libvirtd starts it; QEMU runs as libvirt-qemu, and so does the nbdkit
uffd-qemu starts, with the cache filter over a real uffd-donor (TCP/TLS).
The guest runs the e2e disk workload (tests/e2e/guest-disk-workload.c:
every block written, verified, overwritten, fsynced, the guest rebooted by
libvirt's on_reboot=restart under the same QEMU and nbdkit, verified
again) and powers off. Checked: nbdkit runs with the filter as QEMU's user,
the workload PASSes, the pager's vm.stats shows cache hits, nbdkit and its
runtime directory are gone once the domain stopped, and qemu-img compare
finds the image equal to the workload's reference. Host changes as
test_libvirt (restored at the end).
"""
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, Donor, Pager, check, exe, fail, require_root_and_uffd, skip, wait_for  # noqa: E402
from test_libvirt import (QEMU_NS, QEMU_USER, SRC, HostSetup, define_and_start, emulator_conf,  # noqa: E402
                          require_libvirt, teardown, virsh)

RAM_MB, DISK_MB, CACHE_MB = 256, 8, 16
SEED = "0x5eed"
NODE = "libvirt-1-storage"  # libvirt 9: the protocol node of the domain's first (only) -blockdev disk
FILTER = os.path.join(BUILD, "disk-cache", "nbdkit-uffdvm-cache-filter.so")


def domain_xml(name, work, kernel, initrd, image):
    """The documented example with a cached file disk; the guest's reboot is libvirt's restart (same QEMU)."""
    ET.register_namespace("qemu", QEMU_NS)
    root = ET.parse(os.path.join(SRC, "examples", "libvirt-domain.xml")).getroot()
    root.find("name").text = name
    root.find("memory").text = str(RAM_MB)
    root.find("os/kernel").text = kernel
    root.find("os/initrd").text = initrd
    root.find("os/cmdline").text = f"console=ttyS0 panic=-1 quiet uffdvm.seed={SEED}"
    root.find("on_reboot").text = "restart"
    # ACPI, or libvirt passes -no-acpi and the guest's poweroff at the end only halts it.
    features = ET.Element("features")
    ET.SubElement(features, "acpi")
    root.insert(list(root).index(root.find("os")) + 1, features)
    devices = root.find("devices")
    devices.find("emulator").text = exe("uffd-qemu")
    devices.find("serial/source").set("path", os.path.join(work, "console.log"))
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="raw")
    ET.SubElement(disk, "source", file=image)
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    cl = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    ET.SubElement(cl, f"{{{QEMU_NS}}}env", name="UFFD_QEMU_CONF", value=os.path.join(work, "uffd-qemu.conf"))
    return ET.tostring(root, encoding="unicode")


def nbdkit_pids(uid):
    """Pids of the nbdkit processes running the cache filter as uid."""
    pids = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(d + "/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
            if os.stat(d).st_uid == uid and os.path.basename(argv[0]) == "nbdkit" and \
                    any(a.startswith("--filter=") and a.endswith(os.path.basename(FILTER)) for a in argv):
                pids.append(int(os.path.basename(d)))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def main():
    require_root_and_uffd()
    uid, base_initrd = require_libvirt()
    for t in ("nbdkit", "qemu-img"):
        if not shutil.which(t):
            skip(f"{t} not found (scripts/install-deps)")
    if not os.path.exists(FILTER):
        skip(f"{FILTER} not built (nbdkit-plugin-dev missing at build time)")
    workload = os.path.join(BUILD, "tests", "e2e", "guest-disk-workload")
    if not os.access(workload, os.X_OK):
        skip("no guest disk workload (needs static glibc at configure time)")

    name = f"uffdvm-lvdisk{os.getpid()}"
    work = tempfile.mkdtemp(prefix="uffdvm-libvirt-disk-", dir="/var/tmp")
    os.chmod(work, 0o755)  # QEMU's user reads the kernel, initrd and configuration here
    kernel, initrd = os.path.join(work, "vmlinuz"), os.path.join(work, "initrd.gz")
    p = subprocess.run([os.path.join(SRC, "tests", "e2e", "disk-guest.sh"), base_initrd, workload, kernel, initrd],
                       capture_output=True, text=True)
    if p.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        skip(f"cannot build the disk guest: {p.stderr.strip()[-500:]}")
    image, expect = os.path.join(work, "disk.img"), os.path.join(work, "expect.img")
    with open(image, "wb") as f:
        f.truncate(DISK_MB << 20)

    host = HostSetup()
    donor = Donor(capacity="128M")
    pager = None
    defined = False
    try:
        # nbdkit runs as QEMU's user: the donors' key must be readable by it (docs/libvirt.md).
        key = os.path.join(work, "donor.key")
        shutil.copy(donor.key_file, key)
        os.chown(key, uid, pwd.getpwnam(QEMU_USER).pw_gid)
        os.chmod(key, 0o600)
        policies = os.path.join(work, "policies")
        os.mkdir(policies, 0o755)
        with open(os.path.join(policies, name + ".json"), "w") as f:
            json.dump({"name": name, "local_memory": f"{RAM_MB}M",
                       "disk_cache": {"size": f"{CACHE_MB}M", "donors": [donor.url], "drives": [NODE],
                                      "key_file": key}}, f)
        host.apply()
        pager = Pager(config={"allowed_uids": [uid]})
        emulator_conf(work, pager, policies)
        defined = True
        t0 = time.time()
        define_and_start(name, domain_xml(name, work, kernel, initrd, image), work, pager)

        pids = wait_for(lambda: nbdkit_pids(uid), 30, "nbdkit runs")
        check(len(pids) == 1, f"one nbdkit with the cache filter runs as {QEMU_USER} (pids {pids})")
        nbdkit_pid = pids[0]
        with open(f"/proc/{nbdkit_pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        check(f"cache-donor={donor.url}" in argv and f"cache-client-id=disk-{name}" in argv,
              f"nbdkit caches on the policy's donor ({' '.join(argv)})")
        qemu_pid = int(open(f"/run/libvirt/qemu/{name}.pid").read().strip())
        with open(f"/proc/{qemu_pid}/cmdline", "rb") as f:
            qargv = f.read().split(b"\0")
        bd = [json.loads(qargv[i + 1]) for i, a in enumerate(qargv[:-1])
              if a == b"-blockdev" and qargv[i + 1].startswith(b"{")]
        storage = [b for b in bd if b.get("node-name") == NODE]
        check(storage and storage[0].get("driver") == "nbd" and storage[0].get("export") == NODE,
              f"QEMU reads {NODE} over NBD from nbdkit ({storage})")
        rundir = os.path.dirname(storage[0]["server"]["path"])

        def dc_stats():
            st = pager.vm_stats(name) or {}
            return {k[len("disk_cache_"):]: v for k, v in st.items() if k.startswith("disk_cache_")}

        console_path = os.path.join(work, "console.log")
        last = {}
        # ~30 s idle: two boots and the workload under TCG, which a busy host slows down several times.
        deadline = time.time() + 480
        while time.time() < deadline and virsh("domstate", name, check_rc=False).stdout.strip() == "running":
            last = dc_stats() or last
            time.sleep(0.2)
        console = open(console_path, errors="replace").read()
        state = virsh("domstate", name, check_rc=False).stdout.strip()
        if "PASS disk workload" not in console:
            fail(f"the guest did not PASS (domain {state}):\n{console[-3000:]}\n--- QEMU log:\n"
                 f"{open(f'/var/log/libvirt/qemu/{name}.log').read()[-3000:]}")
        check(state != "running", f"the guest PASSed its disk workload and powered off, {time.time() - t0:.0f} s "
              f"after virsh start (domain {state})")
        check("UFFDVM-DISK-REBOOT" in console and "phase 2 (after the reboot)" in console,
              "the guest rebooted (on_reboot=restart) between its phases")
        check(console.count("UFFDVM-DISK verified") == 8, "8 verify passes, each over every block")
        check(last.get("hits", 0) > 0 and last.get("integrity_failures") == 0 and last.get("donors_up") == 1,
              f"the pager's vm.stats shows the cache serving hits ({last})")
        wait_for(lambda: not os.path.exists(f"/proc/{nbdkit_pid}"), 60, "nbdkit stopped")
        check(True, "nbdkit stopped with the domain")
        wait_for(lambda: not os.path.exists(rundir), 30, "the keeper removed its runtime directory")
        check(True, f"the runtime directory {rundir} is gone")
        p = subprocess.run([workload, "expect", expect, str(DISK_MB << 20), SEED], capture_output=True, text=True)
        check(p.returncode == 0, "reference image built on the host")
        p = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", image, expect],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"qemu-img compare: the image equals the reference ({p.stdout.strip()})")
        check(pager.alive(), "the pager is still running")
    finally:
        teardown(name if defined else None, pager, host, work)
        donor.stop()


if __name__ == "__main__":
    main()
