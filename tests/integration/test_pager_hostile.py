#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A hostile local process registered with the pager (real userfaultfd,
real memfds, the layouts of proto/glue-proto.h) tries to stall or fool it,
and a real guestsim whose stores fill up must keep running:

- remove:  madvise(MADV_DONTNEED) over 64 TiB of uffd-registered address
           space around a 1 MiB region: vm.list still answers at once.
- sparse:  a 256 GiB sparse memfd registers fast and costs the pager almost
           no RAM; max_guest_memory_per_uid refuses the next one.
- seals:   memfds sealed against writes and hugetlbfs memfds are refused.
- punch:   a seal added after registration makes evictions abort, and the
           pages are counted resident (the memfd really holds them).
- full:    spill file at its cap, no donors: with on_store_full "degrade"
           the guest runs over its limit and verifies every byte.
- pidfd:   the process that connected exits and its pid is given to another
           process before HELLO: the pager does not take that process for
           the VM.

Run one scenario with its name as argument, or all without."""
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, fail, guestsim, kill_procs, policy, proc_state, require_root_and_uffd  # noqa: E402
from test_registration_hostile import Client, hello_msg, region_msg  # noqa: E402

USERFAULTFD_IOC_NEW = 0xAA00
UFFDIO_API = 0xC018AA3F
UFFDIO_REGISTER = 0xC020AA00
UFFD_API = 0xAA
FEAT_EVENT_REMOVE = 1 << 3
FEAT_MISSING_SHMEM = 1 << 5
FEAT_WP_SHMEM = 1 << 12
MODE_MISSING, MODE_WP = 1, 2

PROT_RW = 3
MAP_SHARED, MAP_PRIVATE, MAP_ANON, MAP_NORESERVE = 0x01, 0x02, 0x20, 0x4000
MADV_DONTNEED = 4
F_ADD_SEALS, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE = 1033, 0x0008, 0x0010
MFD_ALLOW_SEALING, MFD_HUGETLB = 0x0002, 0x0004

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def mmap(length, prot, flags, fd=-1):
    a = libc.mmap(None, length, prot, flags, fd, 0)
    if a is None or a == ctypes.c_void_p(-1).value:
        fail(f"mmap of {length} bytes: {os.strerror(ctypes.get_errno())}")
    return a


def new_uffd(features):
    """A userfaultfd with the API handshake done for features, as the shim makes it."""
    dev = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)
    try:
        fd = fcntl.ioctl(dev, USERFAULTFD_IOC_NEW, os.O_CLOEXEC | os.O_NONBLOCK)
    finally:
        os.close(dev)
    fcntl.ioctl(fd, UFFDIO_API, bytearray(ctypes.c_uint64(UFFD_API)) + bytearray(ctypes.c_uint64(features))
                + bytearray(8))
    return fd


def uffd_register(fd, addr, length, mode):
    buf = bytearray(ctypes.c_uint64(addr)) + bytearray(ctypes.c_uint64(length)) + \
        bytearray(ctypes.c_uint64(mode)) + bytearray(8)
    fcntl.ioctl(fd, UFFDIO_REGISTER, buf)


def hello(c, name, pol, uffd, features):
    """HELLO with a uffd_features field; returns (status, text)."""
    msg = bytearray(hello_msg(name, pol))
    msg[16:24] = ctypes.c_uint64(features)  # uffd_features after the 12-byte header and 4 bytes of padding
    c.send(bytes(msg), [uffd])
    return c.reply()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    fail(f"no VmRSS for pid {pid}")


def scenario_remove():
    """REMOVE over a huge range: the walk is clipped to the regions and done in steps."""
    pager = Pager()
    huge = 64 << 40
    feats = FEAT_EVENT_REMOVE | FEAT_MISSING_SHMEM
    try:
        base = mmap(huge, PROT_RW, MAP_PRIVATE | MAP_ANON | MAP_NORESERVE)
        uffd = new_uffd(feats)
        uffd_register(uffd, base, huge, MODE_MISSING)
        mfd = os.memfd_create("remove-ram", os.MFD_CLOEXEC)
        os.ftruncate(mfd, 1 << 20)
        c = Client(pager)
        st = hello(c, "remove", policy("remove", "8M"), uffd, feats)
        check(st is not None and st[0] == 0, f"HELLO accepted: {st}")
        c.send(region_msg(base, 1 << 20), [mfd])
        st = c.reply()
        check(st is not None and st[0] == 0, f"a 1 MiB region at the start of 64 TiB of registered space: {st}")
        # The madvise returns once the pager has read the event; the walk runs after it.
        t0 = time.time()
        check(libc.madvise(base, huge, MADV_DONTNEED) == 0, "MADV_DONTNEED over 64 TiB")
        try:
            r = pager.call("vm.list", timeout=10)
            names = [v["name"] for v in r["result"]["vms"]]
        except OSError as e:
            fail(f"vm.list did not answer within 10 s of a REMOVE over 64 TiB ({e})")
        took = time.time() - t0
        check("remove" in names and took < 10, f"vm.list answers {took:.2f} s after the REMOVE")
        pager.wait_for("the REMOVE counted", lambda: pager.vm_stats("remove")["remove_events"] >= 1, 30)
        c.close()
        pager.wait_for("VM freed", lambda: pager.vm_names() == [], 30)
        check(pager.alive(), "pager alive")
        os.close(mfd)
        os.close(uffd)
        libc.munmap(base, huge)
    finally:
        pager.stop()


def scenario_sparse():
    """A huge sparse memfd: lazy page map and victim list; the per-uid quota."""
    pager = Pager(config={"max_guest_memory_per_uid": "300G"})
    feats = FEAT_EVENT_REMOVE | FEAT_MISSING_SHMEM
    size = 256 << 30
    try:
        rss0 = rss_kib(pager.proc.pid)
        mfd = os.memfd_create("sparse-ram", os.MFD_CLOEXEC)
        os.ftruncate(mfd, size)
        uffd = new_uffd(feats)
        c = Client(pager)
        st = hello(c, "sparse", policy("sparse", "8M"), uffd, feats)
        check(st is not None and st[0] == 0, f"HELLO accepted: {st}")
        c.s.settimeout(60)
        t0 = time.time()
        c.send(region_msg(0x100000000000, size), [mfd])
        st = c.reply()
        took = time.time() - t0
        check(st is not None and st[0] == 0, f"a 256 GiB sparse region registered: {st}")
        print(f"note: registered in {took:.2f} s (the RSS check below is the property)")
        grew = rss_kib(pager.proc.pid) - rss0
        check(grew < 32 << 10, f"the pager's RSS grew by {grew} KiB for 256 GiB of guest (< 32 MiB)")
        stats = pager.vm_stats("sparse")
        check(stats and stats["guest_pages"] == size >> 12, f"vm.stats answers: {stats and stats['guest_pages']} pages")

        # The same uid registers another 256 GiB: over max_guest_memory_per_uid (300G).
        uffd2 = new_uffd(feats)
        c2 = Client(pager)
        st = hello(c2, "sparse2", policy("sparse2", "8M"), uffd2, feats)
        check(st is not None and st[0] == 0, f"second HELLO accepted: {st}")
        c2.send(region_msg(0x200000000000, size), [mfd])
        st = c2.reply()
        check(st is not None and st[0] != 0 and "max_guest_memory_per_uid" in st[1],
              f"a second 256 GiB region for the same uid is refused, naming the field: {st}")
        c2.send(region_msg(0x200000000000, 32 << 30), [mfd])
        st = c2.reply()
        check(st is not None and st[0] == 0, f"32 GiB more still fits the quota: {st}")
        c2.close()
        c.close()
        pager.wait_for("VMs freed", lambda: pager.vm_names() == [], 30)
        check(pager.alive(), "pager alive")
        for fd in (mfd, uffd, uffd2):
            os.close(fd)
    finally:
        pager.stop()


def touch(addr, length, byte):
    """Writes byte over [addr, addr + length) on a thread: a fault blocks only it."""
    err = []

    def run():
        try:
            ctypes.memset(addr, byte, length)
        except Exception as e:  # noqa: BLE001
            err.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, err


def scenario_seals():
    """Unpunchable memfds (write-sealed, hugetlbfs) are refused at REGION."""
    pager = Pager()
    feats = FEAT_EVENT_REMOVE | FEAT_MISSING_SHMEM | FEAT_WP_SHMEM
    try:
        uffd = new_uffd(feats)
        c = Client(pager)
        st = hello(c, "sealed", policy("sealed", "1M"), uffd, feats)
        check(st is not None and st[0] == 0, f"HELLO accepted: {st}")
        for seal, name in ((F_SEAL_FUTURE_WRITE, "FUTURE_WRITE"), (F_SEAL_WRITE, "WRITE")):
            mfd = os.memfd_create("sealed-ram", os.MFD_CLOEXEC | MFD_ALLOW_SEALING)
            os.ftruncate(mfd, 1 << 20)
            fcntl.fcntl(mfd, F_ADD_SEALS, seal)
            c.send(region_msg(0x100000000000, 1 << 20), [mfd])
            st = c.reply()
            check(st is not None and st[0] != 0 and f"F_SEAL_{name}" in st[1],
                  f"a memfd sealed with F_SEAL_{name} is refused: {st}")
            os.close(mfd)
        hfd = os.memfd_create("huge-ram", os.MFD_CLOEXEC | MFD_HUGETLB)
        os.ftruncate(hfd, 2 << 20)
        c.send(region_msg(0x100000000000, 2 << 20), [hfd])
        st = c.reply()
        check(st is not None and st[0] != 0 and "hugetlbfs" in st[1], f"a hugetlbfs memfd is refused: {st}")
        os.close(hfd)
        c.close()
        os.close(uffd)
        pager.wait_for("VM freed", lambda: pager.vm_names() == [], 30)
        check(pager.alive(), "pager alive")
    finally:
        pager.stop()


def scenario_punch():
    """A memfd sealed after its REGION was accepted: punches fail, evictions abort, pages stay resident."""
    pager = Pager()
    feats = FEAT_EVENT_REMOVE | FEAT_MISSING_SHMEM | FEAT_WP_SHMEM
    try:
        uffd = new_uffd(feats)
        c = Client(pager)
        st = hello(c, "sealed", policy("sealed", "1M"), uffd, feats)
        check(st is not None and st[0] == 0, f"HELLO accepted: {st}")
        size = 8 << 20
        mfd = os.memfd_create("late-seal-ram", os.MFD_CLOEXEC | MFD_ALLOW_SEALING)
        os.ftruncate(mfd, size)
        addr = mmap(size, PROT_RW, MAP_SHARED, mfd)
        uffd_register(uffd, addr, size, MODE_MISSING | MODE_WP)
        c.send(region_msg(addr, size), [mfd])
        st = c.reply()
        check(st is not None and st[0] == 0, f"an unsealed 8 MiB memfd registered: {st}")
        fcntl.fcntl(mfd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)  # allowed with a writable mapping
        t, err = touch(addr, size, 0x5a)
        t.join(60)
        check(not t.is_alive() and not err, "8 MiB written through a 1 MiB limit whose punches fail")
        data = ctypes.string_at(addr, size)
        check(data == b"\x5a" * size, "every byte reads back")
        # An eviction was tried: committed and punched (as before the fix) or aborted at the punch.
        st = pager.wait_for("an eviction tried",
                            lambda: (s := pager.vm_stats("sealed")) and
                            s["evictions"] + s.get("punch_failures", 0) > 0 and s, 30)
        # The map must call resident what the memfd holds: no page is counted stored while present.
        check(st["stored_pages"] == 0 and st["resident_pages"] >= st["memfd_resident_pages"] - 16,
              f"pages count as resident, not stored: resident {st['resident_pages']}, stored "
              f"{st['stored_pages']}, memfd holds {st['memfd_resident_pages']}")
        st = pager.wait_for("punch failures counted", lambda: (s := pager.vm_stats("sealed")) and
                            s["punch_failures"] > 0 and s, 30)
        check(st["evictions_aborted"] >= st["punch_failures"] > 0 and st["state"] == "degraded",
              f"aborted evictions {st['evictions_aborted']}, punch failures {st['punch_failures']}, "
              f"state {st['state']}")
        check("punching" in pager.read_log() and pager.read_log().count("punching") < 5,
              "the failure is logged once, not per batch")
        c.close()
        pager.wait_for("VM freed", lambda: pager.vm_names() == [], 30)
        check(pager.alive(), "pager alive")
        libc.munmap(addr, size)
        os.close(mfd)
        os.close(uffd)
    finally:
        pager.stop()


def scenario_full():
    """Spill file at its cap, no donors: on_store_full "degrade" keeps the guest running."""
    pager = Pager()
    procs = []
    try:
        pol = policy("full", "8M", spill={"max_size": "4M"})
        # 48 MiB of random pages, 8 MiB resident, 4 MiB of spill and no donor: 36 MiB have nowhere to go.
        g = guestsim(pager, "full", pol, ["--size", "48M", "--threads", "2", "--writes", "30",
                                          "--ops", "20000", "--hold", "60"], stdout=subprocess.PIPE, text=True)
        procs.append(g)
        out = []
        threading.Thread(target=lambda: out.extend(g.stdout), daemon=True).start()
        # guestsim prints its summary once every byte is verified, then holds its RAM.
        pager.wait_for("guestsim finished and verified every byte (a full store must not freeze it)",
                       lambda: any("guestsim: ok" in line for line in out) or g.poll() is not None, 120)
        check(any("guestsim: ok" in line for line in out), f"guestsim verified its data: {''.join(out)!r}")
        st = pager.vm_stats("full")
        check(st is not None and st.get("over_limit_faults", 0) > 0 and st["state"] == "degraded",
              f"it ran over its limit: over_limit_faults {st and st.get('over_limit_faults')}, "
              f"state {st and st['state']}, resident {st and st['resident_pages']} pages (limit 2048)")
        check(st["on_store_full"] == "degrade" and st["spill_pages"] <= 1024,
              f"policy {st['on_store_full']}, spill pages {st['spill_pages']} (cap 1024)")
        g.kill()  # verified already; the hold only kept the VM registered for vm.stats
        g.wait()

        # "pause": the old behaviour, on request: held at the limit, never over it.
        g = guestsim(pager, "paused", policy("paused", "8M", spill={"max_size": "4M"}, on_store_full="pause"),
                     ["--size", "48M", "--threads", "2", "--ops", "1000"])
        procs.append(g)
        pager.wait_for("the 'pause' VM waits at its limit with its spill file full",
                       lambda: (s := pager.vm_stats("paused")) and s["throttle_waits"] > 0 and
                       s["spill_pages"] >= 1024 and s["state"] == "degraded", 60)
        time.sleep(1)
        st = pager.vm_stats("paused")
        check(st["on_store_full"] == "pause" and st["over_limit_faults"] == 0 and st["resident_pages"] <= 2048
              and g.poll() is None,
              f"'pause' holds the VM at its limit: state {st['state']}, resident {st['resident_pages']}, "
              f"over_limit_faults {st['over_limit_faults']}")
        g.kill()
        g.wait()
        log = pager.read_log()
        check("running over the limit" in log, "the pager says the VM runs over its limit")
        check(pager.alive(), "pager alive")
    finally:
        kill_procs(procs)
        pager.stop()


def scenario_pidfd():
    """The pid from SO_PEERCRED is recycled before HELLO: the VM must not be another process."""
    pager = Pager()
    stranger = None
    feats = FEAT_EVENT_REMOVE | FEAT_MISSING_SHMEM
    try:
        # Positive: the registered VM's pid is the connecting process.
        uffd = new_uffd(feats)
        c = Client(pager)
        st = hello(c, "self", policy("self", "8M"), uffd, feats)
        check(st is not None and st[0] == 0, f"HELLO from this process accepted: {st}")
        pids = {v["name"]: v["pid"] for v in pager.result("vm.list")["vms"]}
        check(pids.get("self") == os.getpid(), f"vm.list names this process: {pids}")
        c.close()
        os.close(uffd)
        pager.wait_for("VM freed", lambda: pager.vm_names() == [], 30)

        base_fds = pager.settled_fds()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        go_r, go_w = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.close(go_w)
                s.connect(pager.sock)
                os.read(go_r, 1)
            finally:
                os._exit(0)
        os.close(go_r)
        pager.wait_for("the pager accepted the child's connection", lambda: pager.fds() > base_fds, 30)
        os.write(go_w, b"x")
        os.close(go_w)
        os.waitpid(child, 0)
        # Give the child's pid to a long-running stranger.
        # Other processes on a busy host may fork between the write and ours: try until ours gets it.
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            for _ in range(500):
                f.seek(0)
                f.write(str(child - 1))
                f.flush()
                pid = os.fork()
                if pid == 0:
                    try:
                        os.execvp("sleep", ["sleep", "60"])
                    finally:
                        os._exit(127)
                if pid == child:
                    stranger = pid
                    break
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        # The property under test is the refusal below; a host whose other processes win the
        # race for the pid every time only loses the check on the stranger.
        print(f"note: pid {child} " + ("recycled for a 'sleep' process" if stranger else
                                      "not recycled (the host forks too fast); refusal checked alone"))
        uffd = new_uffd(feats)
        c = Client.__new__(Client)
        c.s = s
        s.settimeout(10)
        st = hello(c, "recycled", policy("recycled", "8M"), uffd, feats)
        os.close(uffd)
        # Refused at HELLO, or dropped at once as exited; never registered as the stranger.
        pager.wait_for("the VM of an exited process is not registered",
                       lambda: "recycled" not in pager.vm_names(), 20)
        check(st is None or st[0] != 0, f"HELLO on behalf of an exited process refused: {st}")
        check(st is None or "exited" in st[1], f"the refusal says the process exited: {st}")
        if stranger:
            check(os.waitpid(stranger, os.WNOHANG) == (0, 0) and proc_state(stranger) in ("S", "R"),
                  f"the stranger runs on, untouched (state {proc_state(stranger)})")
            os.kill(stranger, signal.SIGKILL)
            os.waitpid(stranger, 0)
            stranger = None
        s.close()
        check(pager.alive(), "pager alive")
    finally:
        if stranger:
            os.kill(stranger, signal.SIGKILL)
            os.waitpid(stranger, 0)
        pager.stop()


SCENARIOS = {"remove": scenario_remove, "sparse": scenario_sparse, "seals": scenario_seals, "punch": scenario_punch,
             "full": scenario_full, "pidfd": scenario_pidfd}


def main():
    require_root_and_uffd()
    names = sys.argv[1:] or list(SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            fail(f"unknown scenario {n!r} (allowed: {', '.join(SCENARIOS)})")
        t0 = time.time()
        SCENARIOS[n]()
        print(f"ok: scenario {n} ({time.time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
