#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""uffd-qemu as libvirt's <emulator>: a TCG domain defined from
examples/libvirt-domain.xml is started by a real libvirtd, with QEMU as the
unprivileged libvirt-qemu user, in libvirt's private /dev and under its
seccomp sandbox. The pager must see the domain register under its libvirt
name with the policy found by that name in a root-owned policy directory,
page it (evictions with local memory below the guest's working set), and
drain it on `uffd-ctl vm drain` (with progress) so no page is stored
elsewhere, and free it when `virsh destroy` kills QEMU, which
`uffd-ctl events` reports as vm.detached.

The test changes host state and restores it in every case: it appends
cgroup_device_acl (with /dev/userfaultfd) to /etc/libvirt/qemu.conf, gives
the kvm group read-write access to /dev/userfaultfd, and starts virtlogd and
libvirtd if none is running (and stops what it started).
"""
import grp
import json
import os
import pwd
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, Pager, check, exe, fail, require_root_and_uffd, skip  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
QEMU_CONF = "/etc/libvirt/qemu.conf"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
QEMU_USER = "libvirt-qemu"
RAM_MB = 256
LOCAL_MB = 96
# libvirt's default ACL plus the device the shim needs.
DEVICE_ACL = ["/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/ptmx",
              "/dev/kvm", "/dev/userfaultfd"]
MARK = "# uffdvm test_libvirt: appended, removed when the test ends"


def virsh(*args, timeout=60, check_rc=True):
    p = subprocess.run(["virsh", "-c", "qemu:///system"] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    if check_rc and p.returncode != 0:
        fail(f"virsh {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def libvirtd_up():
    try:
        return subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class HostSetup:
    """Every change to the host, each undone by restore()."""

    def __init__(self):
        self.qemu_conf = None
        self.uffd_stat = None
        self.started = []  # (name, pid) of daemons this test started

    def apply(self):
        with open(QEMU_CONF) as f:
            self.qemu_conf = f.read()
        acl = ", ".join(f'"{d}"' for d in DEVICE_ACL)
        with open(QEMU_CONF, "a") as f:
            f.write(f"\n{MARK}\ncgroup_device_acl = [ {acl} ]\n")
        st = os.stat("/dev/userfaultfd")
        self.uffd_stat = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        # What docs/libvirt.md asks of an operator: QEMU's group may open the device.
        os.chown("/dev/userfaultfd", 0, grp.getgrnam("kvm").gr_gid)
        os.chmod("/dev/userfaultfd", 0o660)
        # A running libvirtd read qemu.conf at start: restart only one we own.
        if libvirtd_up():
            print("using the running libvirtd (it must already allow /dev/userfaultfd)", flush=True)
            return
        for name, cmd, pidfile in (("virtlogd", ["virtlogd", "-d"], "/run/virtlogd.pid"),
                                   ("libvirtd", ["libvirtd", "-d"], "/run/libvirtd.pid")):
            if name == "virtlogd" and read_pid(pidfile) and os.path.exists(f"/proc/{read_pid(pidfile)}"):
                continue
            subprocess.run(cmd, check=True, timeout=30)
            deadline = time.time() + 10
            while time.time() < deadline and not read_pid(pidfile):
                time.sleep(0.1)
            pid = read_pid(pidfile)
            if not pid:
                fail(f"{name} -d did not write {pidfile}")
            self.started.append((name, pid))
        deadline = time.time() + 30
        while time.time() < deadline and not libvirtd_up():
            time.sleep(0.2)
        check(libvirtd_up(), "libvirtd answers on qemu:///system")

    def restore(self):
        for name, pid in reversed(self.started):
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.qemu_conf is not None:
            with open(QEMU_CONF, "w") as f:
                f.write(self.qemu_conf)
        if self.uffd_stat:
            os.chown("/dev/userfaultfd", self.uffd_stat[0], self.uffd_stat[1])
            os.chmod("/dev/userfaultfd", self.uffd_stat[2])


def domain_xml(name, work, kernel, initrd, conf):
    """The documented example, pointed at this build and the test guest."""
    ET.register_namespace("qemu", QEMU_NS)
    root = ET.parse(os.path.join(SRC, "examples", "libvirt-domain.xml")).getroot()
    root.find("name").text = name
    root.find("memory").text = str(RAM_MB)
    root.find("os/kernel").text = kernel
    root.find("os/initrd").text = initrd
    root.find("os/cmdline").text = "console=ttyS0 panic=-1 quiet uffdvm.mib=160 uffdvm.passes=1000"
    root.find("devices/emulator").text = exe("uffd-qemu")
    root.find("devices/serial/source").set("path", os.path.join(work, "console.log"))
    # libvirt gives QEMU a fresh environment: the test's uffd-qemu.conf has to come this way.
    cl = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    ET.SubElement(cl, f"{{{QEMU_NS}}}env", name="UFFD_QEMU_CONF", value=conf)
    return ET.tostring(root, encoding="unicode")


def require_libvirt():
    """Skips unless libvirt's programs, its QEMU user and the e2e initramfs are here.
    Returns (QEMU user's uid, path of the e2e initramfs)."""
    for prog in ("virsh", "libvirtd", "virtlogd"):
        if not shutil.which(prog):
            skip(f"{prog} not installed (apt-get install libvirt-daemon-system libvirt-clients)")
    try:
        uid = pwd.getpwnam(QEMU_USER).pw_uid
    except KeyError:
        skip(f"no user {QEMU_USER} (libvirt-daemon-system creates it)")
    initrd = os.path.join(BUILD, "tests", "e2e", "e2e-initramfs.cpio.gz")
    if not os.path.exists(initrd):
        skip("no e2e initramfs (needs busybox-static at configure time)")
    return uid, initrd


def emulator_conf(work, pager, policies):
    """Writes the uffd-qemu.conf a domain's emulator reads and lets QEMU's user reach the pager."""
    os.chmod(pager.tmp, 0o755)
    conf = os.path.join(work, "uffd-qemu.conf")
    with open(conf, "w") as f:
        f.write(f"# test configuration\nqemu = {shutil.which('qemu-system-x86_64')}\n"
                f"pager_socket = {pager.sock}\npolicy_dir = {policies}\nrequire_policy = yes\n")
    os.chmod(conf, 0o644)
    return conf


def define_and_start(name, xml_text, work, pager):
    """Writes the domain XML to work, virsh define, then start_domain."""
    xml = os.path.join(work, "domain.xml")
    with open(xml, "w") as f:
        f.write(xml_text)
    virsh("define", xml)
    start_domain(name, pager)


def start_domain(name, pager):
    """virsh start; a failure ends the test with QEMU's log and the pager's."""
    t0 = time.time()
    p = virsh("start", name, timeout=120, check_rc=False)
    if p.returncode != 0:
        qlog = f"/var/log/libvirt/qemu/{name}.log"
        tail = open(qlog).read()[-3000:] if os.path.exists(qlog) else "(no QEMU log)"
        fail(f"virsh start: {p.stderr.strip()}\n--- {qlog}:\n{tail}\n--- pager:\n{pager.read_log()}")
    check(True, f"virsh start {name} ({time.time() - t0:.1f} s)")


def teardown(domain, pager, host, work):
    """Test clean-up: destroys and undefines domain (if not None), stops the pager, restores the host."""
    if domain:
        virsh("destroy", domain, check_rc=False)
        virsh("undefine", domain, check_rc=False)
    if pager:
        pager.stop()
    host.restore()
    shutil.rmtree(work, ignore_errors=True)


def vm_names(pager):
    return [v["name"] for v in pager.result("vm.list")["vms"]]


def main():
    require_root_and_uffd()
    uid, initrd_src = require_libvirt()
    fetch = subprocess.run([os.path.join(SRC, "scripts", "fetch-guest-kernel")], capture_output=True, text=True)
    if fetch.returncode != 0:
        skip(f"cannot fetch the guest kernel: {fetch.stderr.strip()}")
    kernel_src = fetch.stdout.strip()

    name = f"uffdvm-lv{os.getpid()}"
    work = tempfile.mkdtemp(prefix="uffdvm-libvirt-", dir="/var/tmp")
    host = HostSetup()
    pager = None
    defined = False
    try:
        # Everything QEMU (libvirt-qemu) reads must be reachable by it; the
        # policy directory and uffd-qemu.conf must be root's alone.
        os.chmod(work, 0o755)
        kernel, initrd = os.path.join(work, "vmlinuz"), os.path.join(work, "initrd.gz")
        shutil.copy(kernel_src, kernel)
        shutil.copy(initrd_src, initrd)
        policies = os.path.join(work, "policies")
        os.mkdir(policies, 0o755)
        with open(os.path.join(policies, name + ".json"), "w") as f:
            json.dump({"name": "ignored-the-file-name-decides", "local_memory": f"{LOCAL_MB}M"}, f)

        host.apply()  # libvirtd up first: the pager connects to it once, at start
        # The pager also watches libvirt's domain events, as an operator would run it.
        # --log-level debug: the pager logs each events subscription (wait_subscribed below).
        pager = Pager(extra_args=["--libvirt", "qemu:///system", "--log-level", "debug"],
                      config={"allowed_uids": [uid]})
        deadline = time.time() + 20
        while time.time() < deadline and "libvirt: connected to qemu:///system" not in pager.read_log():
            time.sleep(0.1)
        check("libvirt: connected to qemu:///system" in pager.read_log(),
              f"uffd-pager --libvirt connected to libvirtd: {pager.read_log()[-500:]!r}")
        conf = emulator_conf(work, pager, policies)
        defined = True  # teardown tolerates a domain that never got defined
        define_and_start(name, domain_xml(name, work, kernel, initrd, conf), work, pager)

        st = pager.wait_vm(name, timeout=60)
        check(name in vm_names(pager), f"vm.list reports the domain's name {name}")
        domuuid = virsh("domuuid", name).stdout.strip()
        listed = {v["name"]: v.get("uuid") for v in pager.result("vm.list")["vms"]}
        check(domuuid and listed.get(name) == domuuid,
              f"vm.list shows the domain's UUID ({listed.get(name)!r} == virsh domuuid {domuuid!r})")
        check(st.get("uuid") == domuuid, "vm.stats shows the domain's UUID")
        qemu_pid = read_pid(f"/run/libvirt/qemu/{name}.pid")
        check(qemu_pid and st["pid"] == qemu_pid, f"the VM's pid is libvirt's QEMU ({st['pid']} == {qemu_pid})")
        check(os.stat(f"/proc/{qemu_pid}").st_uid == uid, f"QEMU runs as {QEMU_USER} (uid {uid})")
        with open(f"/proc/{qemu_pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        check(b"-sandbox" in cmdline, "QEMU runs under libvirt's seccomp sandbox (-sandbox on)")
        check(st["local_memory"] == LOCAL_MB << 20,
              f"the policy found by domain name applies (local_memory {st['local_memory'] >> 20} MiB)")
        check(st["guest_pages"] == RAM_MB << 8, f"the pager serves all {RAM_MB} MiB of guest RAM")

        # The guest touches 160 MiB, more than the 96 MiB it may keep: it must be paged.
        console_path = os.path.join(work, "console.log")
        deadline = time.time() + 150
        while time.time() < deadline:
            st = pager.vm_stats(name)
            console = open(console_path, errors="replace").read()
            if "UFFDVM-GUEST-START" in console and st["evictions"] > 0 and st["refaults"] > 0:
                break
            time.sleep(0.5)
        check(st["evictions"] > 0 and st["refaults"] > 0,
              f"the domain is paged: {st['evictions']} evictions, {st['refaults']} refaults "
              f"(console: {console[-300:]!r})")
        check("UFFDVM-GUEST-START" in console, "the guest's workload started")
        check("FAIL" not in console, "the guest workload reports no corruption")
        check(st["integrity_errors"] == 0, "no integrity errors")

        # Before a destroy (or a migration) the operator drains the domain: every stored page comes back.
        before = pager.vm_stats(name)["stored_pages"]
        t0 = time.time()
        p = subprocess.run([exe("uffd-ctl"), "--control", pager.control, "vm", "drain", name], capture_output=True,
                           text=True, timeout=300)
        prog = [int(x) for x in re.findall(rf"^drain {name}: (\d+) pages still stored$", p.stdout, re.M)]
        check(p.returncode == 0 and p.stdout.rstrip().endswith(f"{name}: done"),
              f"uffd-ctl vm drain {name}: exit {p.returncode} in {time.time() - t0:.1f} s: {p.stdout!r} {p.stderr!r}")
        check(prog and (before == 0 or prog[0] > 0), f"the drain reported progress ({before} stored before: {prog})")
        st = pager.vm_stats(name)
        check(st["stored_pages"] == 0 and st["local_memory"] >= st["guest_pages"] * 4096,
              f"drained: {st['stored_pages']} pages stored, limit {st['local_memory'] >> 20} MiB")

        events = subprocess.Popen([exe("uffd-ctl"), "--control", pager.control, "--json", "events"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pager.wait_subscribed(events.pid)
        virsh("destroy", name)
        deadline = time.time() + 30
        while time.time() < deadline and name in vm_names(pager):
            time.sleep(0.1)
        check(name not in vm_names(pager), "virsh destroy: the pager freed the VM")
        # libvirt reports the stop after reaping QEMU, usually after the registry saw it exit.
        out, evs = "", {}
        deadline = time.time() + 20
        while time.time() < deadline and not ("vm.detached" in evs and
                                              evs.get("domain.stopped", {}).get("reason") == "destroyed"):
            # Raw reads: a buffered readline would hide lines already read from select().
            if not select.select([events.stdout], [], [], max(0, deadline - time.time()))[0]:
                break
            chunk = os.read(events.stdout.fileno(), 65536).decode()
            if not chunk:
                break
            out += chunk
            for line in out.splitlines()[: out.count("\n")]:
                e = json.loads(line)
                evs[e.get("event")] = e
        events.kill()
        err = events.communicate()[1]
        ev = evs.get("vm.detached", {})
        check(ev.get("event") == "vm.detached" and ev.get("vm") == name and ev.get("pid") == qemu_pid,
              f"uffd-ctl events saw the domain detach: {out!r} {err!r}")
        ev = evs.get("domain.stopped", {})
        check(ev.get("vm") == name and ev.get("uuid") == domuuid and ev.get("reason") == "destroyed",
              f"uffd-ctl events saw libvirt's stop of the domain (domain.stopped, reason destroyed): {out!r}\n"
              f"--- pager:\n{pager.read_log()[-2000:]}")
        deadline = time.time() + 10
        while time.time() < deadline and f"libvirt: domain {name} ({domuuid}) destroyed" not in pager.read_log():
            time.sleep(0.1)
        check(f"libvirt: domain {name} ({domuuid}) destroyed" in pager.read_log(),
              "the pager's log names the destroyed domain")
        check(pager.alive(), "the pager survived its VM's QEMU being killed")
    finally:
        teardown(name if defined else None, pager, host, work)


if __name__ == "__main__":
    main()
