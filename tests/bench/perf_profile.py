# SPDX-License-Identifier: MIT
"""Where the CPU of a remote fault goes: `perf record` over the pager, the
donor and guestsim during one access phase, each sample charged to its
thread (the pager names its threads: pager-fault, pager-evict,
donor-tcp-rx, ...) and to an activity found in its call chain (the kernel's
half of the chain is always complete; user-space frames are partial without
frame pointers, so kernel entry points decide most activities). Sample
periods are summed and divided by the phase's remote faults: microseconds
of CPU per remote fault, per thread and activity."""
import collections
import os
import signal
import subprocess

# (activity, symbol prefixes); the first activity with a frame matching wins,
# so a wake-up done inside a send is charged to the send.
ACTIVITIES = [
    ("install page (uffd ioctl)", ("userfaultfd_ioctl", "mfill_atomic", "mwriteprotect", "uffd_")),
    ("hole punch (fallocate)", ("shmem_fallocate", "vfs_fallocate")),
    ("TCP send", ("tcp_sendmsg", "__sys_sendto", "__sys_sendmsg", "__send", "sendmsg")),
    ("TCP receive", ("tcp_recvmsg", "__sys_recvfrom", "__libc_recv")),
    ("read guest page (memfd)", ("shmem_file_read_iter",)),
    ("spill file I/O", ("io_uring", "spill_")),
    ("TLS + AES-GCM (libcrypto)", ()),  # matched by library, below
    ("CRC32C", ("crc32c",)),
    ("poll / sleep / wake", ("__poll", "do_sys_poll", "futex", "schedule", "eventfd", "pthread_cond",
                             "__lll_lock", "pthread_mutex", "try_to_wake_up", "epoll", "do_idle")),
    ("lseek SEEK_DATA", ("mapping_seek_hole_data", "lseek")),
    ("page fault (guest)", ("handle_userfault", "exc_page_fault")),
]


def activity(frames):
    for name, prefixes in ACTIVITIES:
        for sym, dso in frames:
            if prefixes and sym.startswith(prefixes):
                return name
            if not prefixes and ("libcrypto" in dso or "libssl" in dso):
                return name
    sym, dso = frames[0] if frames else ("", "")
    if dso.endswith(("uffd-pager", "uffd-donor", "guestsim")):
        return "own code"
    return "other kernel" if "kernel" in dso else "other user"


def thread_group(comm):
    if comm.startswith(("pager-", "donor-tcp-rx", "donor-rdma-ev")):
        return comm
    if comm.startswith("uffd-pager"):
        return "pager (main)"
    if comm.startswith("uffd-donor"):
        return "donor"
    if comm.startswith("guestsim"):
        return "guest"
    return "other"


class Recorder:
    """perf record over the whole machine, started and stopped around a phase;
    the samples of the processes of interest are picked out afterwards (perf's
    -p would miss threads a process starts later, such as guestsim's workers)."""

    def __init__(self, out):
        self.out = out
        self.proc = None
        self.pids = set()

    def start(self, pids):
        self.pids = set(pids)
        self.proc = subprocess.Popen(["perf", "record", "-q", "-a", "-g", "-e", "cpu-clock", "-F", "4000",
                                      "-o", self.out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=120)
            self.proc = None


def breakdown(data, pids, remote_faults):
    """{(thread, activity): us per remote fault} of the samples of pids in a perf.data file."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,period,ip,sym,dso"],
                         capture_output=True, text=True, timeout=600).stdout
    ns = collections.Counter()
    comm, period, frames = None, 0, []

    def flush():
        if comm is not None:
            ns[(thread_group(comm), activity(frames))] += period
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            flush()
            # "COMM PID PERIOD"; a comm may hold spaces
            parts = line.split()
            pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else -1
            comm = " ".join(parts[:-2]) if pid in pids else None
            period = int(parts[-1]) if parts[-1].isdigit() else 0
            frames = []
            continue
        # "\t ADDR SYM (DSO)"
        body = line.strip().split(" ", 1)
        if len(body) < 2:
            continue
        sym, _, dso = body[1].rpartition(" (")
        frames.append((sym, dso.rstrip(")")))
    flush()
    if not remote_faults:
        return {}
    return {k: v / 1000.0 / remote_faults for k, v in ns.items()}


def table(rows_by_label):
    """Markdown: one column per label (e.g. spin off / on), a row per thread and activity
    above 0.5 us per fault in any column, thread totals first."""
    labels = list(rows_by_label)
    keys = set()
    totals = collections.defaultdict(dict)
    for label, rows in rows_by_label.items():
        for (thread, act), us in rows.items():
            totals[thread][label] = totals[thread].get(label, 0.0) + us
            if us >= 0.5:
                keys.add((thread, act))
    lines = ["| thread | activity | " + " | ".join(f"{lb} (us/fault)" for lb in labels) + " |",
             "|---|---|" + "---:|" * len(labels)]
    for thread in sorted(totals, key=lambda t: -max(totals[t].values())):
        lines.append(f"| {thread} | **all** | " + " | ".join(f"**{totals[thread].get(lb, 0):.1f}**"
                                                        for lb in labels) + " |")
        for (t, act) in sorted((k for k in keys if k[0] == thread),
                               key=lambda k: -max(rows_by_label[lb].get(k, 0) for lb in labels)):
            lines.append(f"| | {act} | " + " | ".join(f"{rows_by_label[lb].get((t, act), 0):.1f}"
                                                     for lb in labels) + " |")
    return "\n".join(lines)


def available():
    try:
        return subprocess.run(["perf", "--version"], capture_output=True, timeout=30).returncode == 0 \
            and os.geteuid() == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
