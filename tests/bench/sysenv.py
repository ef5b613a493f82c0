# SPDX-License-Identifier: MIT
"""Host set-up for the kernel-swap baselines of scripts/bench: a swap file or
a zram swap device (exactly one active at a time), memory cgroups (v1 or v2)
that hold a process to a limit, and a Cleanup stack that undoes every change
on normal exit, errors, Ctrl-C and SIGTERM. Swap devices that were active
before the run are switched off for its duration (they would page the
pager's and the baselines' memory behind their backs) and restored after.
On a VM guest with the cpuidle-haltpoll driver, guest halt polling can be
set for the run too (see set_halt_poll)."""
import os
import subprocess
import time


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


def write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def read(path):
    with open(path) as f:
        return f.read().strip()


class Cleanup:
    """A stack of undo actions run in reverse order; each runs at most once."""

    def __init__(self):
        self.actions = []

    def push(self, what, fn):
        self.actions.append((what, fn))
        return len(self.actions) - 1

    def run_one(self, idx):
        what, fn = self.actions[idx]
        if fn is None:
            return
        self.actions[idx] = (what, None)
        try:
            fn()
        except Exception as e:  # undo the rest regardless
            print(f"bench: cleanup '{what}' failed: {e}", flush=True)

    def run_all(self):
        for i in reversed(range(len(self.actions))):
            self.run_one(i)


def active_swaps():
    """[(path, priority)] of /proc/swaps."""
    out = []
    with open("/proc/swaps") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts:
                out.append((parts[0], int(parts[4])))
    return out


def swapoff_host(cleanup, log):
    """Switches off swap that was active before the run; restores it at the end."""
    for path, prio in active_swaps():
        log(f"host swap {path} (priority {prio}) is active: switching it off for the run")
        sh("swapoff", path)
        cleanup.push(f"swapon {path}",
                     lambda p=path, pr=prio: sh("swapon", "-p", str(max(pr, -1)), p) if pr >= 0
                     else sh("swapon", p))


class SwapFile:
    def __init__(self, cleanup, size, log, directory="/var/tmp"):
        self.path = os.path.join(directory, f"uffdvm-bench-swap-{os.getpid()}")
        self.size = size
        self.cleanup = cleanup
        self.log = log
        self.undo = []

    def on(self):
        self.undo.append(self.cleanup.push(f"rm {self.path}", lambda: os.path.exists(self.path) and os.unlink(self.path)))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        ok = sh("fallocate", "-l", str(self.size), self.path, check=False).returncode == 0
        if ok:
            sh("mkswap", self.path)
            ok = sh("swapon", "-p", "100", self.path, check=False).returncode == 0
        if not ok:
            # Some file systems refuse swap files with unwritten extents.
            self.log("swapon refused the fallocated swap file; writing it with dd")
            sh("dd", "if=/dev/zero", f"of={self.path}", "bs=1M", f"count={self.size >> 20}", "status=none")
            sh("mkswap", self.path)
            sh("swapon", "-p", "100", self.path)
        self.undo.append(self.cleanup.push(f"swapoff {self.path}", lambda: sh("swapoff", self.path)))
        return self.path

    def off(self):
        for i in reversed(self.undo):
            self.cleanup.run_one(i)
        self.undo = []


class Zram:
    """A zram swap device: a new one from zram-control when possible, else an
    unused /dev/zram0 (disksize 0), reset afterwards."""

    def __init__(self, cleanup, size, log):
        self.cleanup = cleanup
        self.size = size
        self.log = log
        self.undo = []
        self.dev = None
        self.algorithm = "?"

    def on(self):
        ctl = "/sys/class/zram-control/hot_add"
        if not os.path.exists(ctl) and not os.path.exists("/sys/block/zram0"):
            sh("modprobe", "zram", check=False)
            time.sleep(0.2)
        n = None
        if os.path.exists(ctl):
            n = int(read(ctl))
            self.undo.append(self.cleanup.push(f"hot_remove zram{n}",
                                               lambda: write("/sys/class/zram-control/hot_remove", n)))
        elif os.path.exists("/sys/block/zram0") and read("/sys/block/zram0/disksize") == "0":
            n = 0
        else:
            raise RuntimeError("no zram: neither /sys/class/zram-control nor an unused zram0 (modprobe zram?)")
        sysdir = f"/sys/block/zram{n}"
        self.dev = f"/dev/zram{n}"
        self.undo.append(self.cleanup.push(f"reset zram{n}", lambda: write(f"{sysdir}/reset", 1)))
        for _ in range(50):  # udev/devtmpfs may lag behind hot_add
            if os.path.exists(self.dev):
                break
            time.sleep(0.05)
        if not os.path.exists(self.dev):
            raise RuntimeError(f"{self.dev} did not appear")
        algo = read(f"{sysdir}/comp_algorithm")
        self.algorithm = next((a.strip("[]") for a in algo.split() if a.startswith("[")), algo)
        write(f"{sysdir}/disksize", self.size)
        sh("mkswap", self.dev)
        sh("swapon", "-p", "100", self.dev)
        self.undo.append(self.cleanup.push(f"swapoff {self.dev}", lambda: sh("swapoff", self.dev)))
        return self.dev

    def off(self):
        for i in reversed(self.undo):
            self.cleanup.run_one(i)
        self.undo = []


class Cgroup:
    """A memory cgroup with a hard limit and unlimited swap, v1 or v2."""

    @staticmethod
    def version():
        if os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            return 1
        ctrl = "/sys/fs/cgroup/cgroup.controllers"
        if os.path.exists(ctrl) and "memory" in read(ctrl).split():
            return 2
        return 0

    def __init__(self, cleanup, name, limit):
        self.v = self.version()
        if self.v == 0:
            raise RuntimeError("no memory cgroup controller (neither v1 memory nor v2 with memory)")
        base = "/sys/fs/cgroup/memory" if self.v == 1 else "/sys/fs/cgroup"
        self.path = os.path.join(base, name)
        if self.v == 2:
            sub = os.path.join(base, "cgroup.subtree_control")
            if "memory" not in read(sub).split():
                write(sub, "+memory")
        os.mkdir(self.path)
        self.undo = cleanup.push(f"rmdir {self.path}", self.remove)
        self.cleanup = cleanup
        if limit is None:
            return
        if self.v == 1:
            write(os.path.join(self.path, "memory.limit_in_bytes"), limit)
        else:
            write(os.path.join(self.path, "memory.max"), limit)
            write(os.path.join(self.path, "memory.swap.max"), "max")

    def enter_fn(self):
        """A preexec_fn that moves the child into this group before exec."""
        procs = os.path.join(self.path, "cgroup.procs")
        return lambda: write(procs, os.getpid())

    def peak(self):
        f = "memory.max_usage_in_bytes" if self.v == 1 else "memory.peak"
        try:
            return int(read(os.path.join(self.path, f)))
        except OSError:
            return None

    def remove(self):
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)  # the last task is still exiting
        os.rmdir(self.path)

    def close(self):
        self.cleanup.run_one(self.undo)


HALT_POLL = "/sys/module/haltpoll/parameters/guest_halt_poll_ns"


def set_halt_poll(cleanup, ns, log):
    """Sets the guest halt-polling window of a VM guest running cpuidle-haltpoll
    and restores the old value afterwards. Returns (old, new) in ns, or None
    when this is no such guest (nothing to set). An idle vCPU that halts is
    woken through the hypervisor, which costs tens of microseconds per
    cross-CPU wake-up; polling first keeps wake-ups at bare-metal cost. It
    only runs in the idle loop, so it takes no CPU from runnable tasks."""
    if ns is None or not os.path.exists(HALT_POLL):
        return None
    old = int(read(HALT_POLL))
    if old != ns:
        log(f"guest halt polling: {old} -> {ns} ns for the run")
        write(HALT_POLL, ns)
        cleanup.push("restore guest_halt_poll_ns", lambda: write(HALT_POLL, old))
    return (old, ns)
