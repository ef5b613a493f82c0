#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The policy-enabled guest balloon (docs/policy.md "balloon") and the
libvirt reconnect, with real parts.

1. Without --libvirt: a guestsim VM whose policy enables the balloon is
   paged as usual; the missing connection is logged once per VM and shown
   in vm.stats (balloon.state "failed").
2. Under a real libvirtd (set up as in test_libvirt.py): a TCG domain with a
   virtio memballoon whose guest loads virtio_balloon (tests/e2e/balloon-guest.sh)
   touches and frees memory, then keeps verifying a working set. Lowering its
   limit below the guest's size makes the pager ask libvirt for a smaller
   guest: virsh sees the current memory go down, the guest gives pages back
   (UFFD_EVENT_REMOVE: remove_events rise, residency drops, nothing stored
   elsewhere for them), its workload still verifies every byte, and
   `uffd-ctl vm drain` deflates the balloon to the full memory again.
3. libvirtd restarted under the running pager: it logs the lost connection,
   reconnects, and both the balloon and the lifecycle events work again.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, exe, fail, guestsim, policy, require_root_and_uffd, skip  # noqa: E402
from test_libvirt import QEMU_NS, SRC, HostSetup, define_and_start, emulator_conf, libvirtd_up, read_pid, require_libvirt, teardown, virsh  # noqa: E402

RAM_MB = 384
CHURN_MB = 200   # touched then freed by the guest: resident on the host, free in the guest
WORK_MB = 32     # the guest's verified working set, kept while it runs
LIMIT_MB = 160   # below the guest's size: the balloon target is max(floor, limit)
FLOOR_MB = 128
# Eviction is held this long after libvirt applies a smaller target: long enough that a guest
# slowed by a busy host still gives its memory back inside it (the checks wait for that, not
# for the window). The attach phase only waits for the window to end: a short one there.
SETTLE_MS = 300000
ATTACH_SETTLE_MS = 4000
PAGES_PER_MB = 256


def ctl(pager, *args, timeout=120):
    return subprocess.run([exe("uffd-ctl"), "--control", pager.control] + list(args), capture_output=True,
                          text=True, timeout=timeout)


def wait_until(what, cond, timeout, interval=0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    return cond()


def phase_without_libvirt():
    pager = Pager()
    g = None
    try:
        name = "balloon-nolv"
        pol = policy(name, "24M", balloon={"enabled": True, "floor": "16M", "settle_ms": 1000})
        g = guestsim(pager, name, pol, ["--size", "64M", "--threads", "1", "--pattern", "uniform", "--writes", "50",
                                        "--ops", "60000", "--seed", "5"])
        pager.wait_vm(name)
        # Two more targets: the failure is counted each time but logged once.
        for lim in ("20M", "28M"):
            p = ctl(pager, "vm", "set-limit", name, lim)
            check(p.returncode == 0, f"uffd-ctl vm set-limit {name} {lim}: {p.stdout} {p.stderr}")
        st = wait_until("evictions", lambda: (lambda s: s if s and s["evictions"] > 0 else None)(pager.vm_stats(name)),
                        60, 0.1) or pager.vm_stats(name) or {"evictions": 0}
        b = st.get("balloon", {})
        rc = g.wait(timeout=120)
        g = None
        check(rc == 0, f"guestsim verified every byte with the balloon unavailable (exit {rc})")
        check(st["evictions"] > 0, f"paging went on without the balloon ({st['evictions']} evictions)")
        check(b.get("enabled") is True and b.get("state") == "failed" and "without --libvirt" in b.get("last_result", ""),
              f"vm.stats shows the balloon as failed for lack of libvirt: {b}")
        check(b.get("requests") == 3 and b.get("failures") == 3, f"three targets asked, three failed: {b}")
        log = pager.read_log()
        n = log.count(f"vm {name}: balloon: no libvirt connection")
        check(n == 1, f"the missing libvirt connection is logged once per VM ({n} times)")
    finally:
        if g:
            g.kill()
            g.wait()
        pager.stop()


def domain_xml(name, work, kernel, initrd, conf, churn_mb=CHURN_MB, console="console.log", uuid=None):
    ET.register_namespace("qemu", QEMU_NS)
    root = ET.parse(os.path.join(SRC, "examples", "libvirt-domain.xml")).getroot()
    root.find("name").text = name
    if uuid:  # redefining the same domain
        ET.SubElement(root, "uuid").text = uuid
    root.find("memory").text = str(RAM_MB)
    root.find("os/kernel").text = kernel
    root.find("os/initrd").text = initrd
    root.find("os/cmdline").text = (f"console=ttyS0 panic=-1 quiet uffdvm.churn={churn_mb} uffdvm.mib={WORK_MB} "
                                    "uffdvm.passes=100000")
    root.find("devices/emulator").text = exe("uffd-qemu")
    root.find("devices/serial/source").set("path", os.path.join(work, console))
    root.find("devices/memballoon").set("model", "virtio")
    cl = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    ET.SubElement(cl, f"{{{QEMU_NS}}}env", name="UFFD_QEMU_CONF", value=conf)
    return ET.tostring(root, encoding="unicode")


def current_kib(name):
    """The balloon's actual size as libvirt reports it (dommemstat 'actual', else dominfo 'Used memory')."""
    p = virsh("dommemstat", name, check_rc=False)
    m = re.search(r"^actual (\d+)", p.stdout, re.M)
    if m:
        return int(m.group(1))
    m = re.search(r"^Used memory:\s+(\d+) KiB", virsh("dominfo", name).stdout, re.M)
    return int(m.group(1)) if m else None


def restart_libvirtd(host):
    for i, (name, pid) in enumerate(host.started):
        if name != "libvirtd":
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 20
        while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.1)
        check(not os.path.exists(f"/proc/{pid}"), f"libvirtd (pid {pid}) stopped")
        if read_pid("/run/libvirtd.pid") == pid:
            os.unlink("/run/libvirtd.pid")  # a stale pid file would look like the new daemon's
        subprocess.run(["libvirtd", "-d"], check=True, timeout=30)
        new = wait_until("pidfile", lambda: read_pid("/run/libvirtd.pid"), 10, 0.1)
        check(new and new != pid, f"libvirtd restarted (pid {pid} -> {new})")
        host.started[i] = (name, new)
        check(wait_until("libvirtd", libvirtd_up, 30, 0.2), "the restarted libvirtd answers")
        return True
    return False


def phase_libvirt():
    uid, base = require_libvirt()

    name = f"uffdvm-bal{os.getpid()}"
    work = tempfile.mkdtemp(prefix="uffdvm-balloon-", dir="/var/tmp")
    host = HostSetup()
    pager = events = None
    defined = False
    try:
        os.chmod(work, 0o755)
        kernel, initrd = os.path.join(work, "vmlinuz"), os.path.join(work, "initrd.gz")
        p = subprocess.run([os.path.join(SRC, "tests", "e2e", "balloon-guest.sh"), base, kernel, initrd],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            skip(f"cannot build the balloon guest: {p.stderr.strip()}")
        os.chmod(kernel, 0o644)
        os.chmod(initrd, 0o644)
        policies = os.path.join(work, "policies")
        os.mkdir(policies, 0o755)
        # The limit starts at the guest's size: no paging and no balloon until it is lowered.
        with open(os.path.join(policies, name + ".json"), "w") as f:
            json.dump({"name": name, "local_memory": f"{RAM_MB}M",
                       "balloon": {"enabled": True, "floor": f"{FLOOR_MB}M", "settle_ms": SETTLE_MS}}, f)

        host.apply()
        pager = Pager(extra_args=["--libvirt", "qemu:///system"], config={"allowed_uids": [uid]})
        check(wait_until("connect", lambda: "libvirt: connected to qemu:///system" in pager.read_log(), 20),
              f"uffd-pager --libvirt connected read-write: {pager.read_log()[-500:]!r}")
        check("read-only" not in pager.read_log(), "the connection is read-write (the balloon needs it)")
        conf = emulator_conf(work, pager, policies)
        defined = True  # teardown tolerates a domain that never got defined
        define_and_start(name, domain_xml(name, work, kernel, initrd, conf), work, pager)
        st = pager.wait_vm(name, timeout=60)
        check(st["balloon"]["enabled"] and st["balloon"]["requests"] == 0,
              f"limit = guest size: the balloon is left alone at attach: {st['balloon']}")
        console_path = os.path.join(work, "console.log")

        def console():
            return open(console_path, errors="replace").read() if os.path.exists(console_path) else ""

        t0 = time.time()
        check(wait_until("churn", lambda: "UFFDVM-GUEST-CHURNED" in console() and "workload: pass 2 " in console(),
                         240), f"the guest loaded virtio_balloon, churned {CHURN_MB} MiB and runs its workload: "
                               f"{console()[-1500:]!r}")
        check("virtio_balloon" in console() and "MODULE-FAILED" not in console(),
              "the guest's virtio_balloon module is loaded")
        full = current_kib(name)
        check(full == RAM_MB * 1024, f"libvirt reports the full {RAM_MB} MiB before ({full} KiB)")
        before = pager.vm_stats(name)
        check(before["resident_pages"] > (CHURN_MB - 20) * PAGES_PER_MB,
              f"the freed churn is still resident on the host ({before['resident_pages'] // PAGES_PER_MB} MiB)")
        print(f"guest ready after {time.time() - t0:.1f} s: resident {before['resident_pages'] // PAGES_PER_MB} MiB",
              flush=True)

        # Below the guest's size: the pager asks libvirt for max(floor, limit) first. The settle
        # window (SETTLE_MS, from libvirt's answer) holds eviction while the guest gives memory back;
        # it is long on purpose, so that the checks below wait for what the guest did, not for a
        # timer: on a busy machine the guest's balloon driver can take seconds to inflate.
        t1 = time.time()
        p = ctl(pager, "vm", "set-limit", name, f"{LIMIT_MB}M")
        check(p.returncode == 0, f"uffd-ctl vm set-limit {name} {LIMIT_MB}M: {p.stdout} {p.stderr}")
        target = LIMIT_MB * 1024
        # The guest's driver inflates page by page: minutes under TCG on a loaded host.
        got = wait_until("balloon", lambda: current_kib(name) == target, 180, 0.5)
        check(got, f"libvirt shows the guest's current memory lowered to {LIMIT_MB} MiB "
                   f"({current_kib(name)} KiB after {time.time() - t1:.1f} s)")
        during = pager.vm_stats(name)
        inflated = (RAM_MB - LIMIT_MB) * PAGES_PER_MB

        def gave_back():
            s = pager.vm_stats(name)
            return s if (s["remove_events"] - before["remove_events"] >= inflated // 2 and
                         before["resident_pages"] - s["resident_pages"] >= (CHURN_MB // 2) * PAGES_PER_MB and
                         s["memfd_resident_pages"] <= LIMIT_MB * PAGES_PER_MB) else None
        # The guest gave its ballooned memory back; well inside the settle window, which the pager
        # only ends on its own clock (state "settling" until then, "done" after).
        after = wait_until("gave back", gave_back, 120, 0.5) or pager.vm_stats(name)
        b = after["balloon"]
        removed = after["remove_events"] - before["remove_events"]
        print(f"balloon: {time.time() - t1:.1f} s; remove_events +{removed}; resident "
              f"{before['resident_pages'] // PAGES_PER_MB} -> {after['resident_pages'] // PAGES_PER_MB} MiB; "
              f"evictions {before['evictions']} -> {after['evictions']}; stats during settle: "
              f"high watermark {during['high_watermark_pages']} pages, state {during['balloon']['state']}",
              flush=True)
        check(b["state"] in ("settling", "done") and b["target_kib"] == target and b["applied_kib"] == target,
              f"vm.stats shows the balloon request and libvirt's answer: {b}")
        check(f"vm {name}: balloon: asking libvirt to set the guest's memory to {LIMIT_MB} MiB" in pager.read_log(),
              "the pager logged its balloon request")
        check(removed >= inflated // 2, f"the guest discarded ballooned pages: {removed} REMOVE events "
                                        f"(>= {inflated // 2}, half of the {inflated} pages inflated)")
        drop = before["resident_pages"] - after["resident_pages"]
        check(drop >= (CHURN_MB // 2) * PAGES_PER_MB,
              f"residency dropped by {drop // PAGES_PER_MB} MiB through the balloon")
        check(after["evictions"] == before["evictions"],
              f"nothing was paged out: the balloon brought the guest under its limit first "
              f"({after['evictions'] - before['evictions']} evictions)")
        check(after["memfd_resident_pages"] <= LIMIT_MB * PAGES_PER_MB,
              f"the memfd holds no more than the limit ({after['memfd_resident_pages'] // PAGES_PER_MB} MiB)")
        passes = len(re.findall(r"workload: pass \d+ ", console()))
        check(wait_until("passes", lambda: len(re.findall(r"workload: pass \d+ ", console())) >= passes + 2, 60),
              "the guest's workload goes on verifying after the balloon")
        check("FAIL" not in console(), f"the guest workload reports no corruption: {console()[-800:]!r}")
        check(after["integrity_errors"] == 0, "no integrity errors")

        # vm drain brings everything back and deflates the balloon.
        p = ctl(pager, "vm", "drain", name, timeout=300)
        check(p.returncode == 0, f"uffd-ctl vm drain {name}: {p.stdout} {p.stderr}")
        check(wait_until("deflate", lambda: current_kib(name) == RAM_MB * 1024, 180, 0.5),
              f"vm drain deflated the balloon: current memory back to {RAM_MB} MiB ({current_kib(name)} KiB)")
        b = pager.vm_stats(name)["balloon"]
        check(b["target_kib"] == 0 and b["applied_kib"] == RAM_MB * 1024 and b["state"] == "done",
              f"vm.stats shows the deflate (target 0 = the domain's maximum): {b}")
        p = ctl(pager, "vm", "stats", name)
        check(p.returncode == 0 and "balloon" in p.stdout and "applied_kib" in p.stdout,
              f"uffd-ctl vm stats shows the balloon: {p.stdout[-600:]!r}")

        # Reconnect: libvirtd restarts under the pager.
        if not restart_libvirtd(host):
            if os.environ.get("UFFDVM_REQUIRE_ALL") == "1":
                fail("libvirtd was not started by this test: cannot restart it to test the reconnect")
            print("SKIP reconnect: libvirtd was already running (not this test's to restart)", flush=True)
        else:
            check(wait_until("lost", lambda: "libvirt: connection to qemu:///system lost" in pager.read_log(), 30),
                  "the pager logged the lost libvirt connection")
            check(wait_until("reconnect", lambda: "libvirt: reconnected to qemu:///system" in pager.read_log(), 60),
                  f"the pager reconnected to the restarted libvirtd: {pager.read_log()[-800:]!r}")
            p = ctl(pager, "vm", "set-limit", name, "192M")
            check(p.returncode == 0, f"uffd-ctl vm set-limit {name} 192M: {p.stderr}")
            check(wait_until("balloon2", lambda: current_kib(name) == 192 * 1024, 180, 0.5),
                  f"after the reconnect the balloon works again ({current_kib(name)} KiB)")
            virsh("destroy", name)
            check(wait_until("stopped", lambda: f"libvirt: domain {name} (" in pager.read_log() and
                             ") destroyed" in pager.read_log(), 30),
                  "after the reconnect lifecycle events arrive again (domain destroyed logged)")

        # At attach: a limit below the guest's size from the start. QEMU registers while libvirt is
        # still starting the domain, so the request waits (retried) until the domain runs.
        virsh("destroy", name, check_rc=False)
        wait_until("gone", lambda: name not in pager.vm_names(), 30)
        with open(os.path.join(policies, name + ".json"), "w") as f:
            json.dump({"name": name, "local_memory": "192M",
                       "balloon": {"enabled": True, "floor": f"{FLOOR_MB}M", "settle_ms": ATTACH_SETTLE_MS}}, f)
        console_path = os.path.join(work, "console2.log")
        define_and_start(name, domain_xml(name, work, kernel, initrd, conf, churn_mb=0, console="console2.log",
                                          uuid=virsh("domuuid", name).stdout.strip()), work, pager)
        pager.wait_vm(name, timeout=60)
        check(wait_until("attach", lambda: current_kib(name) == 192 * 1024, 180, 0.5),
              f"a limit below the guest's size at attach: libvirt set 192 MiB once the domain ran "
              f"({current_kib(name)} KiB)")
        b = wait_until("done", lambda: (lambda b: b if b["state"] == "done" else None)(pager.vm_stats(name)["balloon"]),
                       ATTACH_SETTLE_MS / 1000 + 60)
        check(b and b["requests"] == 1 and b["applied_kib"] == 192 * 1024,
              f"vm.stats: one request at attach, applied: {pager.vm_stats(name)['balloon']}")
        check(wait_until("runs", lambda: "workload: pass 2 " in console(), 60) and "FAIL" not in console(),
              f"the ballooned guest runs and verifies its workload: {console()[-600:]!r}")
        check(pager.alive(), "the pager survived")
    finally:
        teardown(name if defined else None, pager, host, work)


def main():
    require_root_and_uffd()
    phase_without_libvirt()
    phase_libvirt()


if __name__ == "__main__":
    main()
