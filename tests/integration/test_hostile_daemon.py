#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The pager against hostile local peers and the leftovers of a crash
(issue 12, section 3, items 2, 8, 9 and 12), each with real processes:

- budget: a HELLO whose local_memory is near 2^64 made the committed sum
  wrap and got past --budget; now anything above max_guest_memory is
  refused and the sum is overflow-checked.
- uffd flags: a raw registration client (no shim) hands over a userfaultfd
  made without O_NONBLOCK, on which the kernel answers poll() with POLLERR:
  the pager sets the flag and serves the client's faults (spill and back).
  A client that clears the flag after registering makes the fault thread
  fail: the VM is marked "failed" in vm.stats, the log and a vm.failed
  event say why, and the VM is stopped per its on_data_loss, not left
  hanging unnoticed. A uffd without the UFFDIO_API handshake is refused.
- metrics: 130 idle TCP connections to --metrics-listen no longer use up
  the control socket's 128 slots: `uffd-ctl vm list` still answers.
- leftovers: the spill file of a pager killed with SIGKILL is deleted by the
  next pager on that state dir (files of live pids are kept); a state dir
  with group/other access is tightened to 0700 with a warning naming it and
  its old mode; one owned by another user is refused."""
import ctypes
import fcntl
import mmap
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Pager, check, control_call, exe, fail, free_port, guestsim, kill_procs, policy,  # noqa: E402
                     proc_state, require_root_and_uffd)
from test_registration_hostile import Client, hello_msg, new_uffd, region_msg  # noqa: E402

USERFAULTFD_IOC_NEW = 0xAA00           # _IO(0xAA, 0)
UFFDIO_API = 0xC018AA3F                # _IOWR(0xAA, 0x3F, struct uffdio_api)
UFFDIO_REGISTER = 0xC020AA00           # _IOWR(0xAA, 0x00, struct uffdio_register)
UFFD_API = 0xAA
# What the shim negotiates: MISSING_SHMEM | WP_HUGETLBFS_SHMEM | EVENT_REMOVE.
GLUE_FEATURES = (1 << 5) | (1 << 12) | (1 << 3)
REG_MISSING, REG_WP = 1, 2
RAM = 16 << 20
PAGE = 4096


def raw_uffd(nonblock, handshake=True):
    dev = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)
    try:
        fd = fcntl.ioctl(dev, USERFAULTFD_IOC_NEW, os.O_CLOEXEC | (os.O_NONBLOCK if nonblock else 0))
    finally:
        os.close(dev)
    if handshake:
        fcntl.ioctl(fd, UFFDIO_API, bytearray(struct.pack("=QQQ", UFFD_API, GLUE_FEATURES, 0)))
    return fd


def raw_vm_child(pager, name, pol, clear_nonblock_after=False):
    """Forks a process that registers like the shim, but by hand and with a
    uffd made without O_NONBLOCK: RAM is a 16 MiB memfd. The child writes a
    pattern to every page, reads it back twice and exits 0 (1 on a wrong
    byte). With clear_nonblock_after it clears O_NONBLOCK again once
    registered (a hostile client) before touching its RAM."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, r
    try:
        os.close(r)
        uffd = raw_uffd(nonblock=False)
        mfd = os.memfd_create("hostile-ram", os.MFD_CLOEXEC)
        os.ftruncate(mfd, RAM)
        m = mmap.mmap(mfd, RAM, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        m.madvise(mmap.MADV_NOHUGEPAGE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        fcntl.ioctl(uffd, UFFDIO_REGISTER, bytearray(struct.pack("=QQQQ", addr, RAM, REG_MISSING | REG_WP, 0)))
        c = Client(pager)
        c.send(hello_msg(name, pol), [uffd])
        st = c.reply()
        os.write(w, f"hello {st}\n".encode())
        if not st or st[0] != 0:
            os._exit(2)
        c.send(region_msg(addr, RAM), [mfd])
        st = c.reply()
        os.write(w, f"region {st}\n".encode())
        if not st or st[0] != 0:
            os._exit(2)
        if clear_nonblock_after:
            fcntl.fcntl(uffd, fcntl.F_SETFL, fcntl.fcntl(uffd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        os.write(w, b"touching\n")
        for i in range(RAM // PAGE):
            m[i * PAGE:i * PAGE + 8] = struct.pack("=Q", i * 2654435761 + 7)
        for _ in range(2):
            for i in range(RAM // PAGE):
                if m[i * PAGE:i * PAGE + 8] != struct.pack("=Q", i * 2654435761 + 7):
                    os.write(w, f"page {i} wrong\n".encode())
                    os._exit(1)
        os.write(w, b"verified\n")
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - the child must never return into the test
        try:
            os.write(w, f"child error: {e!r}\n".encode())
        finally:
            os._exit(3)


def wait_child(pid, timeout):
    """Exit status of child pid (as os.waitstatus_to_exitcode), or None if it runs past timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def read_pipe(fd):
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536).decode(errors="replace")
    except BlockingIOError:
        return ""


def reap(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_budget():
    pager = Pager(extra_args=["--budget", "64M"])
    uffds = []
    try:
        a = Client(pager)
        uffds.append(new_uffd())
        a.send(hello_msg("holder", policy("holder", "48M")), [uffds[-1]])
        st = a.reply()
        check(st is not None and st[0] == 0, f"a 48M VM fits the 64M budget: {st}")
        # 48M + (2^64 - 32M) wraps to 16M: the old check let it through.
        huge = (1 << 64) - (32 << 20)
        for what, lm in (("2^64 - 32M (wraps the committed sum)", str(huge)),
                         ("2T (over max_guest_memory 1T)", "2T")):
            b = Client(pager)
            uffds.append(new_uffd())
            b.send(hello_msg("wrap", policy("wrap", lm)), [uffds[-1]])
            st = b.reply()
            check(st is not None and st[0] != 0 and "max_guest_memory" in st[1],
                  f"local_memory {what} refused naming max_guest_memory: {st}")
            b.close()
        check("wrap" not in pager.vm_names(), "the oversized VM is not registered")
        ps = pager.result("pager.stats")
        check(ps["committed"] == 48 << 20, f"committed is still 48M ({ps['committed']})")
        c = Client(pager)
        uffds.append(new_uffd())
        c.send(hello_msg("fits", policy("fits", "16M")), [uffds[-1]])
        st = c.reply()
        check(st is not None and st[0] == 0, f"a later 16M VM still fits the budget: {st}")
        d = Client(pager)
        uffds.append(new_uffd())
        d.send(hello_msg("over", policy("over", "1M")), [uffds[-1]])
        st = d.reply()
        check(st is not None and st[0] != 0 and "budget" in st[1], f"but nothing more: {st}")
        r = pager.call("vm.set-limit", vm="holder", local_memory=str((1 << 64) - PAGE))
        check(not r.get("ok") and r["error"]["code"] == "ENOSPC",
              f"vm.set-limit near 2^64 refused, no wrap-around: {r}")
        check(pager.result("pager.stats")["committed"] == 64 << 20, "committed 64M after all that")
        for cl in (a, c, d):
            cl.close()
        pager.wait_for("VMs freed", lambda: pager.vm_names() == [])
        check(pager.result("pager.stats")["committed"] == 0, "committed back to 0")
    finally:
        for fd in uffds:
            os.close(fd)
        pager.stop()


def test_uffd_flags():
    pager = Pager()
    try:
        u = raw_uffd(nonblock=True, handshake=False)
        try:
            c = Client(pager)
            c.send(hello_msg("nohandshake", policy("nohandshake", "4M")), [u])
            st = c.reply()
            check(st is not None and st[0] != 0 and "UFFDIO_API" in st[1],
                  f"a uffd without the UFFDIO_API handshake is refused: {st}")
            c.close()
        finally:
            os.close(u)

        pid, out = raw_vm_child(pager, "blocking", policy("blocking", "4M"))
        rc = wait_child(pid, 90)
        text = read_pipe(out)
        os.close(out)
        if rc is None:
            st = pager.vm_stats("blocking")
            reap(pid)
            fail(f"a VM whose uffd came without O_NONBLOCK hangs (child said {text!r}; vm.stats {st}); "
                 f"pager log:\n{pager.read_log()[-3000:]}")
        check(rc == 0, f"a VM whose uffd came without O_NONBLOCK is served: every page back intact "
                       f"(exit {rc}, {text.split()[-1] if text else ''})")
        check("fault thread stops" not in pager.read_log(), "and its fault thread never failed")
        pager.wait_for("VM 'blocking' freed", lambda: "blocking" not in pager.vm_names())

        # A client that clears O_NONBLOCK after registering: poll() then answers POLLERR.
        pid, out = raw_vm_child(pager, "sabotage", policy("sabotage", "4M"), clear_nonblock_after=True)
        try:
            st = pager.wait_for("the fault thread's failure shows in vm.stats",
                                lambda: (pager.vm_stats("sabotage") or {}).get("state") == "failed", 30)
            check(True, "vm.stats state is 'failed'")
            pager.wait_for("the VM is stopped (on_data_loss: stop)", lambda: proc_state(pid) == "T", 10)
            check(True, "the VM's process is stopped (SIGSTOP) instead of hanging unnoticed")
            log = pager.read_log()
            check("fault thread stops" in log and "POLLERR" in log and "sabotage" in log,
                  "the log names the VM and the error")
        finally:
            reap(pid)
            os.close(out)
        pager.wait_for("VM 'sabotage' freed", lambda: "sabotage" not in pager.vm_names())
        check(pager.alive(), "pager alive")
    finally:
        pager.stop()


def test_metrics_slots():
    port = free_port()
    pager = Pager(extra_args=["--metrics-listen", f"127.0.0.1:{port}"])
    conns = []
    try:
        for _ in range(130):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(1)  # let the control thread accept every one of them
        r = subprocess.run([exe("uffd-ctl"), "--control", pager.control, "vm", "list"],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode == 0, f"uffd-ctl vm list answers with 130 idle metrics connections open "
                                 f"(exit {r.returncode}: {r.stderr.strip()!r})")
        check(pager.call("vm.list").get("ok"), "and so does a raw vm.list")
        for s in conns:
            s.close()
        conns = []

        def scrape():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                    buf = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            return buf
                        buf += chunk
            except OSError:
                return b""
        pager.wait_for("metrics answer again once the idle connections are gone",
                       lambda: b"200 OK" in scrape() and b"uffdvm_" in scrape(), 10)
        check(True, "GET /metrics works again afterwards")
    finally:
        for s in conns:
            s.close()
        pager.stop()


def start_pager(state, tmp, tag):
    """A uffd-pager on state (which the test owns); returns (proc, control path, log path)."""
    sock, ctl, log = (os.path.join(tmp, f"{tag}-{x}") for x in ("register.sock", "control.sock", "pager.log"))
    with open(log, "w") as lf:
        proc = subprocess.Popen([exe("uffd-pager"), "--socket", sock, "--control", ctl, "--state-dir", state],
                                stdout=lf, stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    while time.time() < deadline and proc.poll() is None and not os.path.exists(ctl):
        time.sleep(0.05)
    return proc, sock, ctl, log


def stop_pager(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            fail("uffd-pager did not stop on SIGTERM")


def read(path):
    with open(path) as f:
        return f.read()


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_leftovers():
    tmp = tempfile.mkdtemp(prefix="uffdvm-test-")
    state = tempfile.mkdtemp(prefix="uffdvm-state-", dir="/var/tmp")
    procs = []
    try:
        # ---- a pager killed with SIGKILL leaves its VM's spill file ----
        proc, sock, ctl, log = start_pager(state, tmp, "a")
        procs.append(proc)
        check(proc.poll() is None, "pager started")

        class P:  # what guestsim() needs of a pager
            pass
        pa = P()
        pa.sock = sock
        g = guestsim(pa, "crashy", policy("crashy", "8M"), ["--size", "64M", "--ops", "20000", "--hold", "120"])
        procs.append(g)
        deadline = time.time() + 60
        spill = None
        while time.time() < deadline:
            r = control_call(ctl, "vm.stats", vm="crashy")
            if r.get("ok") and r["result"].get("spill_pages", 0) > 0:
                spill = r["result"]["spill_file"]
                break
            time.sleep(0.1)
        check(spill is not None, f"the VM spilled pages to {spill}")
        proc.kill()
        proc.wait()
        check(os.path.exists(spill), f"SIGKILL left the spill file {os.path.basename(spill)} with guest data")
        kill_procs([g])

        # A file of a live process stays: a later pager may adopt that VM.
        live = os.path.join(state, f"alive-vm-{os.getpid()}.spill")
        other = os.path.join(state, "notes.txt")
        stale2 = os.path.join(state, f"web-1-{dead_pid()}.spill")
        for path in (live, other, stale2):
            with open(path, "w") as f:
                f.write("x")
        os.chmod(state, 0o755)

        proc, sock, ctl, log = start_pager(state, tmp, "b")
        procs.append(proc)
        check(proc.poll() is None, "a new pager starts on the same state dir")
        text = read(log)
        check(not os.path.exists(spill) and os.path.basename(spill) in text and "stale spill" in text,
              f"it deleted the stale spill file and said so: {[ln for ln in text.splitlines() if 'spill' in ln]}")
        check(not os.path.exists(stale2), "and another file of a dead pid")
        check(os.path.exists(live) and os.path.exists(other), "files of live pids and other files are kept")
        mode = stat.S_IMODE(os.stat(state).st_mode)
        check(mode == 0o700, f"a state dir of mode 0755 is tightened to 0700 (now {mode:04o})")
        check(state in text and "0755" in text and "0700" in text, "with a warning naming the dir and both modes")
        stop_pager(proc)

        # ---- a state dir owned by another user is refused ----
        os.chown(state, 65534, 65534)
        proc, sock, ctl, log = start_pager(state, tmp, "c")
        procs.append(proc)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        text = read(log)
        check(rc not in (None, 0), f"a state dir owned by uid 65534 is refused (exit {rc})")
        check(state in text and "uid 65534" in text and "0700" in text,
              f"the error names the dir, its owner and mode: {text.strip()!r}")
        os.chown(state, 0, 0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["rm", "-rf", tmp, state])


def main():
    require_root_and_uffd()
    which = sys.argv[1:] or ["budget", "uffd", "metrics", "leftovers"]
    tests = {"budget": test_budget, "uffd": test_uffd_flags, "metrics": test_metrics_slots,
             "leftovers": test_leftovers}
    for w in which:
        print(f"--- {w}", flush=True)
        tests[w]()


if __name__ == "__main__":
    main()
