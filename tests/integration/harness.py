# SPDX-License-Identifier: MIT
"""Shared helpers for uffdvm integration tests: start real daemons, talk to
their control sockets, run guestsim under the pager through the same glue
path QEMU uses (LD_PRELOAD of libuffd-glue.so), and read ground truth from
/proc. Tests are plain scripts: exit 0 pass, 1 fail, 77 skip (or fail when
UFFDVM_REQUIRE_ALL=1)."""
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BUILD = os.environ.get("UFFDVM_BUILD_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "build"))


# scripts/test's budget multiplier: sanitizer builds run the same work several times slower, so
# donor timeouts and long waits scale with it as the suites' budgets do.
BUDGET_X = int(os.environ.get("UFFDVM_BUDGET_X", "1"))

def sanitizer_report(log):
    """True when a daemon's log holds a sanitizer report: ASan/LSan/TSan
    ("WARNING: ThreadSanitizer: data race", "ERROR: AddressSanitizer") or UBSan
    ("runtime error:"). TSan runs with halt_on_error=0, so its reports can
    sit in the log of a daemon that then exits 0 or is killed."""
    return "Sanitizer" in log or "runtime error:" in log


def log_excerpt(log, limit=200000):
    """What a failure shows of a daemon's log: all of it when a sanitizer reported (every
    report counts, and the log is deleted with the test's directory), else the tail."""
    return log[-limit:] if sanitizer_report(log) else log[-4000:]


def fail(msg):
    # Called from a clean-up (finally) while an exception propagates: that exception is the first
    # failure, and exiting here would hide it.
    exc = sys.exc_info()[1]
    if exc is not None and not isinstance(exc, SystemExit):
        print("FAIL (first): " + "".join(traceback.format_exception(exc)).rstrip(), flush=True)
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"ok: {msg}", flush=True)


def skip(msg):
    if os.environ.get("UFFDVM_REQUIRE_ALL") == "1":
        fail(f"cannot run ({msg}) and UFFDVM_REQUIRE_ALL=1")
    print(f"SKIP: {msg}", flush=True)
    sys.exit(77)


def require_root_and_uffd():
    if os.geteuid() != 0:
        skip("needs root (userfaultfd for kernel-mode faults, /var/lib state)")
    if not os.path.exists("/dev/userfaultfd"):
        skip("no /dev/userfaultfd")


def exe(name):
    for sub in ("uffd-pager", "uffd-pager/control", "qemu-glue", "tests/guestsim", "donor", "tests/integration"):
        p = os.path.join(BUILD, sub, name)
        if os.path.exists(p):
            return p
    fail(f"{name} not built under {BUILD}")


def wait_for(pred, timeout, what, alive=None, interval=0.05):
    """Polls pred() until it returns something true and returns that; fails naming `what` after
    timeout seconds, or at once if the process `alive` (a guestsim, say) has ended meanwhile."""
    timeout *= BUDGET_X  # sanitizer builds run the same work several times slower
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if alive is not None and alive.poll() is not None:
            fail(f"process {alive.pid} ended (exit {alive.returncode}) while waiting for {what}")
        if time.time() >= deadline:
            fail(f"{what}: not reached within {timeout} s")
        time.sleep(interval)


def control_call(path, cmd, timeout=10, **args):
    """One request on a JSON-lines control socket (pager or donor); returns the parsed response."""
    req = {"cmd": cmd}
    if args:
        req["args"] = args
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


class Pager:
    """A real uffd-pager with private sockets and a private state dir on disk."""

    def __init__(self, extra_args=(), config=None):
        self.tmp = tempfile.mkdtemp(prefix="uffdvm-test-")
        # spill files must be on disk, never tmpfs: /var/tmp is on disk here
        self.state = tempfile.mkdtemp(prefix="uffdvm-state-", dir="/var/tmp")
        self.sock = os.path.join(self.tmp, "register.sock")
        self.control = os.path.join(self.tmp, "control.sock")
        self.log_path = os.path.join(self.tmp, "pager.log")
        args = [exe("uffd-pager"), "--socket", self.sock, "--control", self.control,
                "--state-dir", self.state]
        if config is not None:
            cfg = os.path.join(self.tmp, "pager.json")
            with open(cfg, "w") as f:
                json.dump(config, f)
            args += ["--config", cfg]
        self.args = args + list(extra_args)
        self.log = open(self.log_path, "w")
        self._start()

    def _start(self, env=None):
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 30  # sanitizer builds on a loaded host start slowly
        while time.time() < deadline:
            # The control socket is bound before its thread runs: an answered call means
            # every start-up thread is there (tests count the pager's threads from here).
            if os.path.exists(self.sock) and os.path.exists(self.control) and self.answers():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        fail(f"uffd-pager did not start: {self.read_log()}")

    def kill(self):
        """SIGKILLs the pager, as a crash or the OOM killer would; its files stay."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        check(not sanitizer_report(self.read_log()), "no sanitizer report before the kill")

    def restart(self, env=None):
        """Starts the pager again with the same sockets, state dir and config (after kill(),
        a crash, or a stop_only()), as systemd's Restart= would. env: extra environment."""
        check(self.proc.poll() is not None, "the previous pager is gone before the restart")
        self.log.write("=== restart ===\n")
        self.log.flush()
        self._start(dict(os.environ, **env) if env else None)

    def stop_only(self):
        """SIGTERM, as `systemctl stop` does; the state dir stays for the next pager."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        check(self.proc.returncode == 0, f"uffd-pager exited {self.proc.returncode} on SIGTERM")

    def answers(self):
        try:
            return bool(self.call("pager.stats", timeout=2).get("ok"))
        except (OSError, ValueError):
            return False

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def call(self, cmd, timeout=10, **args):
        return control_call(self.control, cmd, timeout, **args)

    def result(self, cmd, **args):
        r = self.call(cmd, **args)
        if not r.get("ok"):
            fail(f"{cmd} {args}: {r}")
        return r["result"]

    def vm_stats(self, name):
        r = self.call("vm.stats", vm=name)
        return r["result"] if r.get("ok") else None

    def watch(self, name, proc, timeout, interval=0.1, on_stats=None, finish_when=None):
        """Samples vm.stats of name until proc (guestsim) exits or timeout s pass; returns the last
        sample (None if none was taken). on_stats, if given, sees every sample. Once
        finish_when(sample) holds, the test has seen what it needed: guestsim's access phase is
        ended (SIGUSR1) and sampling goes on through its final verification of every byte."""
        last = None
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            s = self.vm_stats(name)
            if s:
                last = s
                if on_stats:
                    on_stats(s)
                if finish_when and finish_when(s):
                    proc.send_signal(signal.SIGUSR1)
                    finish_when = None
            time.sleep(interval)
        return last

    def wait_vm(self, name, timeout=20):
        deadline = time.time() + timeout * BUDGET_X
        while time.time() < deadline:
            st = self.vm_stats(name)
            if st:
                return st
            time.sleep(0.05)
        fail(f"VM {name} never registered; pager log:\n{self.read_log()}")

    def alive(self):
        return self.proc.poll() is None

    def threads(self, io_workers=False):
        """The pager's threads. io_uring's kernel workers (iou-wrk-*) come and
        go on their own, so they are left out unless asked for."""
        n = 0
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if io_workers or not comm.startswith("iou-"):
                n += 1
        return n

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def settled_fds(self, quiet=1.0, timeout=20):
        """The pager's fd count once it has not changed for `quiet` seconds: fds come and go
        with control connections (the harness's own included) and with a VM's threads as
        they start, so a count read at a fixed moment races with them."""
        deadline = time.time() + timeout
        n, since = self.fds(), time.time()
        while time.time() < deadline:
            time.sleep(0.05)
            m = self.fds()
            if m != n:
                n, since = m, time.time()
            elif time.time() - since >= quiet:
                return n
        fail(f"the pager's fd count never settled within {timeout} s: {n}: {self.fd_targets()}")

    def fd_targets(self):
        """What the pager's fds point at, for messages about leaks."""
        out = []
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                out.append(os.readlink(f"/proc/{self.proc.pid}/fd/{fd}"))
            except OSError:
                pass
        return sorted(out)

    def vm_names(self):
        return sorted(v["name"] for v in self.result("vm.list")["vms"])

    def wait_for(self, what, cond, timeout=10, interval=0.05):
        """Polls cond() until true; fails naming `what`."""
        return wait_for(cond, timeout, what, interval=interval)

    def wait_subscribed(self, pid, timeout=30):
        """Waits until process pid's events.subscribe was accepted, so that no event it must see
        can come before it (a sleep would race with a slow start). The pager logs each
        subscription at debug level: start it with --log-level debug."""
        line = f"pid {pid} subscribed to events"
        self.wait_for(f"uffd-ctl (pid {pid}) subscribed to events (pager log: {line!r})",
                      lambda: line in self.read_log(), timeout, 0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20 * BUDGET_X)
            except subprocess.TimeoutExpired:
                # Where each thread waits, before the kill: a hang is a bug to find, not only to report.
                stacks = subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-ex", "thread apply all bt"],
                                        capture_output=True, text=True, timeout=120).stdout \
                    if shutil.which("gdb") else "(no gdb)"
                self.proc.kill()
                self.proc.wait()
                fail(f"uffd-pager did not stop on SIGTERM within {20 * BUDGET_X} s; its threads:\n{stacks[-20000:]}\n"
                     f"its log:\n{log_excerpt(self.read_log(), 20000)}")
        self.log.close()
        log = self.read_log()
        rc = self.proc.returncode
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.state, ignore_errors=True)
        # A sanitizer report (leak at exit, UB) or a bad exit must fail the test.
        if rc != 0 or sanitizer_report(log):
            fail(f"uffd-pager exited {rc} or reported a sanitizer error:\n{log_excerpt(log)}")


def policy(name, local_memory, **extra):
    p = {"name": name, "local_memory": local_memory}
    p.update(extra)
    return json.dumps(p)


def guestsim(pager, name, policy_json, args, extra_env=None, **popen):
    """Starts guestsim registered with pager as VM `name` (extra_env: more shim settings)."""
    env = dict(os.environ)
    env.update({
        "LD_PRELOAD": exe("libuffd-glue.so"),
        "UFFD_GLUE_SOCKET": pager.sock,
        "UFFD_GLUE_NAME": name,
        "UFFD_GLUE_POLICY": policy_json,
    })
    env.update(extra_env or {})
    if "ASAN_OPTIONS" in os.environ or os.environ.get("UFFDVM_ASAN"):
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    return subprocess.Popen([exe("guestsim")] + list(args), env=env, **popen)


def finish(g, timeout=300):
    """Ends a --duration guestsim's access phase (SIGUSR1: the test has seen what it needed) and
    returns its exit code once its final verification of every byte is done."""
    if g.poll() is None:
        g.send_signal(signal.SIGUSR1)
    return g.wait(timeout=timeout)


def guest_boot_files():
    """(qemu, kernel, initramfs) for an e2e guest; a skip (a failure under CI) names what is missing."""
    qemu = os.environ.get("UFFDVM_QEMU", "qemu-system-x86_64")
    if not shutil.which(qemu):
        skip(f"{qemu} not found (apt-get install qemu-system-x86)")
    initrd = os.environ.get("UFFDVM_E2E_INITRD", "")
    if not initrd or not os.access(initrd, os.R_OK):
        skip("no e2e initramfs (needs busybox-static and static glibc at configure time)")
    fetch = subprocess.run([os.environ["UFFDVM_FETCH_KERNEL"]], capture_output=True, text=True)
    kernel = fetch.stdout.strip()
    if fetch.returncode != 0 or not kernel:
        skip(f"cannot fetch the guest kernel: {fetch.stderr.strip()}")
    return qemu, kernel, initrd


def kill_procs(procs):
    """Kills and reaps every process of procs still running (test clean-up)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def proc_state(pid):
    """The one-letter state of pid from /proc (R, S, T, ...), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def memfd_blocks(pid, prefix="/memfd:guestsim-ram"):
    """Resident pages of a process's RAM memfd, from the kernel's st_blocks."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512 // 4096
        except OSError:
            pass
    return None


def memfd_resident_ok(stats):
    return stats["memfd_resident_pages"] <= stats["high_watermark_pages"]


def free_port():
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range.

    A port from the ephemeral range can be taken at any moment by any outgoing
    connection on the host (even by the pager's own reconnect attempts, which
    can connect a socket to itself), so a test that restarts a listener on the
    same port would find it in use. Ports below the range are never handed out
    by connect(); only another test picking the same number could collide,
    and bind() below checks for that.
    """
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for _ in range(1000):
        port = random.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    fail(f"no free TCP port in 10000..{low - 1}")


class Donor:
    """A real uffd-donor on 127.0.0.1 with a private key file and control socket."""

    def __init__(self, capacity="64M", key=None, extra_args=(), port=None):
        self.tmp = tempfile.mkdtemp(prefix="uffdvm-donor-")
        self.port = port or free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.key_file = os.path.join(self.tmp, "key")
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, key if key is not None else b"uffdvm-test-key-0123456789abcdef")
        os.close(fd)
        self.control = os.path.join(self.tmp, "control.sock")
        self.log_path = os.path.join(self.tmp, "donor.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([exe("uffd-donor"), "--listen", self.url, "--capacity", capacity,
                                      "--key-file", self.key_file, "--control", self.control] + list(extra_args),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(self.control):
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        fail(f"uffd-donor did not start: {self.read_log()}")

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def call(self, cmd, timeout=10, **args):
        return control_call(self.control, cmd, timeout, **args)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        log = self.read_log()
        shutil.rmtree(self.tmp, ignore_errors=True)
        # Exit codes are not checked (tests SIGKILL donors on purpose); a sanitizer report is a failure.
        if sanitizer_report(log):
            fail(f"uffd-donor reported a sanitizer error:\n{log_excerpt(log)}")


class Subscriber:
    """A raw events.subscribe connection."""

    def __init__(self, pager):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(pager.control)
        self.s.sendall(b'{"cmd":"events.subscribe","id":7}\n')
        self.buf = b""
        first = self.line(10)
        check(first == {"ok": True, "result": {"subscribed": True}, "id": 7},
              f"events.subscribe answers first: {first}")
        self.events = []

    def line(self, timeout):
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                return None
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                return None
            chunk = self.s.recv(65536)
            if not chunk:
                fail("the pager closed the event stream")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def wait(self, kind, timeout, **match):
        """Reads events until one of kind with the given fields arrives; returns it."""
        timeout *= BUDGET_X
        deadline = time.time() + timeout
        while time.time() < deadline:
            ev = self.line(deadline - time.time())
            if ev is None:
                break
            self.events.append(ev)
            if ev.get("event") == kind and all(ev.get(k) == v for k, v in match.items()):
                return ev
        fail(f"no {kind} event {match} within {timeout} s; saw {[e.get('event') for e in self.events]}")
