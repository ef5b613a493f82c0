# SPDX-License-Identifier: MIT
"""scripts/bench: runs one guestsim workload matrix under uffd-pager (spill
file; donor over TCP loopback) and under kernel swap (swap file; zram) with
the same local-memory limit, plus an unlimited local run, measures the
floors (uffd round trip, TCP 4 KiB round trip) with bench-floor and the
pager's CPU under an idle guest, and writes a markdown table, a CSV, PNG
plots, a GOALS line and one SUMMARY line. See docs/benchmarks.md for the
method and its caveats."""
import argparse
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perf_profile  # noqa: E402
import report  # noqa: E402
import sysenv  # noqa: E402

MiB = 1 << 20
PAGE = 4096
# The SPIN line's fault_spin_us: about two TCP loopback round trips here (bench-floor), so most reads end within it.
SPIN_US = 100
CONFIGS = {
    "a": "uffd-pager + spill file",
    "b": "uffd-pager + uffd-donor (TCP loopback)",
    "c": "kernel swap, swap file, memcg limit",
    "d": "kernel swap, zram, memcg limit",
    "e": "local, no limit",
}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper()
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def fmt_size(n):
    return f"{n // MiB}M" if n % MiB == 0 else str(n)


class Build:
    def __init__(self, root):
        self.root = root

    def exe(self, name):
        for sub in ("uffd-pager", "uffd-pager/control", "qemu-glue", "tests/guestsim", "donor", "tests/bench"):
            p = os.path.join(self.root, sub, name)
            if os.path.exists(p):
                return p
        raise RuntimeError(f"{name} not built under {self.root} (run ninja -C {self.root})")


def proc_cpu_s(pid):
    """utime+stime of a process in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def proc_majflt(pid):
    """Major faults of a whole process (all its threads, live or exited), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[9])


def task_ctxt(pid):
    """{tid: voluntary + involuntary context switches} of every live thread of a process."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        n = 0
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        n += int(line.split()[1])
        except OSError:
            continue  # the thread exited
        out[tid] = n
    return out


def ctxt_delta(before, after):
    """Switches between two task_ctxt snapshots: threads that started in between
    count from zero; a thread that exited in between is lost (the kernel keeps
    no per-process total of switches that /proc shows)."""
    return sum(v - before.get(t, 0) for t, v in after.items())


def drive(p, timeout, on_filled, on_done):
    """Reads guestsim's stdout: calls on_filled() at FILLED (the pause after the
    fill) and on_done() at its summary line (the --hold after the access
    phase). Returns whether both were seen."""
    seen = [False, False]
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 1.0)
        if not r:
            if p.poll() is not None:
                break
            continue
        line = p.stdout.readline()
        if not line:
            break
        if line.startswith("FILLED"):
            on_filled()
            seen[0] = True
        elif line.startswith("guestsim:"):
            on_done()
            seen[1] = True
            break
    return all(seen)


class Daemons:
    """uffd-pager (and for (b) uffd-donor) with private sockets and state."""

    def __init__(self, build, cleanup, donor, size=0):
        self.tmp = tempfile.mkdtemp(prefix="uffdvm-bench-")
        self.state = tempfile.mkdtemp(prefix="uffdvm-bench-state-", dir="/var/tmp")
        self.sock = os.path.join(self.tmp, "register.sock")
        self.control = os.path.join(self.tmp, "control.sock")
        self.procs = []
        self.undo = cleanup.push("stop daemons", self.stop)
        self.cleanup = cleanup
        self.failure = None
        self.pager_exe = build.exe("uffd-pager")
        args = [self.pager_exe, "--socket", self.sock, "--control", self.control,
                "--state-dir", self.state, "--log-level", "warn"]
        if donor:
            key = os.path.join(self.tmp, "donor.key")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, os.urandom(48))  # 32..256 bytes even once trailing whitespace is dropped
            os.close(fd)
            with socket.socket() as s:  # a free loopback port
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            url = f"tcp://127.0.0.1:{port}"
            self.donor = self._spawn("donor", [build.exe("uffd-donor"), "--listen", url, "--capacity",
                                               fmt_size(max(2 << 30, 2 * size)), "--key-file", key, "--log-level", "warn"])
            time.sleep(0.3)
            if self.donor.poll() is not None:
                self.failure = f"uffd-donor exited: {self.tail('donor')}"
                return
            args += ["--donor", url, "--donor-key-file", key]
        self.pager = self._spawn("pager", args)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.pager.poll() is not None:
                self.failure = f"uffd-pager exited: {self.tail('pager')}"
                return
            if os.path.exists(self.sock) and os.path.exists(self.control):
                return
            time.sleep(0.05)
        self.failure = "uffd-pager did not create its sockets in 10 s"

    def _spawn(self, name, args):
        logf = open(os.path.join(self.tmp, f"{name}.log"), "w")
        p = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.procs.append(p)
        return p

    def tail(self, name):
        try:
            with open(os.path.join(self.tmp, f"{name}.log")) as f:
                lines = [x.strip() for x in f.read().splitlines() if x.strip()]
            # The first complaint names the cause; a usage text follows it.
            for x in lines:
                if any(k in x.lower() for k in ("error", "unrecognized", "invalid", "unknown", "fail", "refus")):
                    return x.replace(os.path.dirname(self.pager_exe) + "/", "")
            return lines[-1] if lines else "(no output)"
        except OSError:
            return "(no log)"

    def call(self, cmd, **args):
        req = {"cmd": cmd}
        if args:
            req["args"] = args
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.control)
            s.sendall((json.dumps(req) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def vm_stats(self, name):
        r = self.call("vm.stats", vm=name)
        return r["result"] if r.get("ok") else None

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run(["rm", "-rf", self.tmp, self.state])

    def close(self):
        self.cleanup.run_one(self.undo)


def hist_quantile(buckets, q):
    """Quantile upper bound from [(le, count)] sorted by le."""
    total = sum(c for _, c in buckets)
    if total <= 0:
        return None
    need, acc = q * total, 0
    for le, c in buckets:
        acc += c
        if acc >= need:
            return le
    return buckets[-1][0]


def access_fault_latency(before, after):
    """Fault-service latency of the access phase: the pager's histogram at the
    end minus its snapshot after the fill (the fill's zero-page faults would
    otherwise dominate)."""
    b = {x["le"]: x["count"] for x in before["fault_latency_ns"]["buckets"]}
    diff = sorted((x["le"], x["count"] - b.get(x["le"], 0)) for x in after["fault_latency_ns"]["buckets"])
    diff = [(le, c) for le, c in diff if c > 0]
    if not diff:
        return {}
    return {"count": sum(c for _, c in diff), "p50": hist_quantile(diff, 0.5),
            "p99": hist_quantile(diff, 0.99), "p999": hist_quantile(diff, 0.999)}


def remote_faults(st):
    f = st.get("faults", {})
    return f.get("donor", 0) + f.get("spill", 0) + f.get("remote", 0)


class Runner:
    def __init__(self, args, build, cleanup, tmp):
        self.args = args
        self.build = build
        self.cleanup = cleanup
        self.tmp = tmp
        self.seq = 0
        self.overhead = None
        self.b_reason = None  # why (b) is n/a, once known

    def gs_args(self, w, json_path, extra=()):
        args = [self.build.exe("guestsim"), "--size", fmt_size(w["size"]), "--threads", str(w["threads"]),
                "--pattern", w["pattern"], "--writes", str(w["writes"]), "--ops", str(w["ops"]),
                "--content", w["content"], "--seed", str(w["seed"]), "--no-final-verify",
                "--json", json_path]
        if w["pattern"] == "zipf":
            args += ["--zipf-theta", str(w.get("theta", report.ZIPF_THETA))]
        return args + list(extra)

    def spawn(self, args, **kw):
        """Popen whose process is killed by the cleanup stack if the run is cut short."""
        p = subprocess.Popen(args, **kw)

        def kill():
            if p.poll() is None:
                p.kill()
                p.wait()
        p.bench_undo = self.cleanup.push(f"kill {args[0]}", kill)
        return p

    def measure_overhead(self):
        """guestsim's own memory besides its guest RAM: RSS at a tiny --size,
        and the peak charge of an unlimited cgroup running it; the larger."""
        size = 1 * MiB
        jp = os.path.join(self.tmp, "overhead.json")
        cg = sysenv.Cgroup(self.cleanup, f"uffdvm-bench-{os.getpid()}-ovh", None)
        w = dict(size=size, threads=2, pattern="uniform", writes=50, ops=2000, content="random", seed=1)
        p = self.spawn(self.gs_args(w, jp, ["--hold", "0.5"]), stdout=subprocess.PIPE, text=True,
                             preexec_fn=cg.enter_fn())
        p.stdout.readline()  # summary: the run is done, RAM still mapped
        rss = proc_rss(p.pid)
        p.wait()
        self.cleanup.run_one(p.bench_undo)
        peak = cg.peak() or 0
        cg.close()
        self.overhead = {"rss": rss - size, "cgroup_peak": peak - size}
        self.overhead["used"] = max(self.overhead["rss"], self.overhead["cgroup_peak"], 0)
        log(f"guestsim overhead: RSS {self.overhead['rss'] >> 10} KiB, cgroup peak "
            f"{self.overhead['cgroup_peak'] >> 10} KiB over its RAM; cgroup limits add "
            f"{self.overhead['used'] >> 10} KiB")

    def run(self, config, w):
        """One run; returns a dict of metrics or {'na': reason}."""
        self.seq += 1
        jp = os.path.join(self.tmp, f"run-{self.seq}.json")
        local = int(w["size"] * w["local"]) // PAGE * PAGE
        if config in ("a", "b"):
            return self.run_pager(config, w, jp, local)
        return self.run_kernel(config, w, jp, local)

    def run_kernel(self, config, w, jp, local):
        cg = None
        kw = {}
        if config in ("c", "d"):
            cg = sysenv.Cgroup(self.cleanup, f"uffdvm-bench-{os.getpid()}-{self.seq}",
                               local + self.overhead["used"])
            kw["preexec_fn"] = cg.enter_fn()
        vm0 = vmstat()
        # The pause and hold (as under the pager) bracket the access phase for the fault counts.
        p = self.spawn(self.gs_args(w, jp, ["--pause-after-fill", "0.2", "--hold", "0.2"]), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, **kw)
        flt = {}

        def snap(key):
            try:
                flt[key] = proc_majflt(p.pid)
            except OSError:
                pass
        try:
            seen = drive(p, self.args.run_timeout, lambda: snap("fill"), lambda: snap("end"))
            _, err = p.communicate(timeout=self.args.run_timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"guestsim timed out under ({config})")
        finally:
            self.cleanup.run_one(p.bench_undo)
        vm1 = vmstat()
        if cg:
            cg.close()
        if p.returncode != 0 or not seen:
            raise RuntimeError(f"guestsim failed under ({config}): exit {p.returncode}: {err.strip()}")
        m = guestsim_metrics(jp)
        m["swap_ins"] = vm1.get("pswpin", 0) - vm0.get("pswpin", 0)
        m["swap_outs"] = vm1.get("pswpout", 0) - vm0.get("pswpout", 0)
        # Swap-ins that read the device (swap-cache hits are minor faults): the kernel's refaults.
        m["refaults"] = flt["end"] - flt["fill"] if "end" in flt and "fill" in flt else None
        m["cs_guest_per_fault"] = m["cs_guest"] / m["refaults"] if m["refaults"] else None
        return m

    def run_pager(self, config, w, jp, local):
        if config == "b" and self.b_reason:
            return {"na": self.b_reason}
        # A row whose policy the pager may not know yet (w["tolerate"]) is n/a
        # on failure, without taking (b) down for the other rows.
        tolerate = w.get("tolerate", False)
        d = Daemons(self.build, self.cleanup, donor=(config == "b"), size=w["size"])
        try:
            if d.failure:
                if config == "b":
                    self.b_reason = d.failure
                    return {"na": d.failure}
                raise RuntimeError(d.failure)
            pol = {"name": "bench", "local_memory": str(local)}
            if config == "b":
                pol["durability"] = {"replicas": 1}
            pol["encryption"] = w.get("encryption", True)
            pol.update(w.get("policy", {}))
            env = dict(os.environ, LD_PRELOAD=self.build.exe("libuffd-glue.so"), UFFD_GLUE_SOCKET=d.sock,
                       UFFD_GLUE_NAME="bench", UFFD_GLUE_POLICY=json.dumps(pol))
            rss0 = proc_rss(d.pager.pid)
            p = self.spawn(self.gs_args(w, jp, ["--pause-after-fill", "0.3", "--hold", "0.5"]), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            snaps = {}
            donor_pid = d.donor.pid if config == "b" else None

            # perf over the access phase only: its samples are divided by that phase's remote faults.
            rec = perf_profile.Recorder(w["perf_out"]) if w.get("perf_out") else None

            def snap(key):
                snaps[key] = {"st": d.vm_stats("bench"), "cpu": proc_cpu_s(d.pager.pid),
                              "rss": proc_rss(d.pager.pid), "cs_pager": task_ctxt(d.pager.pid),
                              "cs_donor": task_ctxt(donor_pid) if donor_pid else {}}
                # perf stops only after the snapshot: its wait for perf to write its file must not
                # run into the guest's exit (the VM's stats are gone then).
                if rec and key == "fill":
                    rec.start([d.pager.pid, p.pid] + ([donor_pid] if donor_pid else []))
                elif rec and key == "end":
                    rec.stop()
            try:
                drive(p, self.args.run_timeout, lambda: snap("fill"), lambda: snap("end"))
                _, err = p.communicate(timeout=self.args.run_timeout)
            finally:
                if rec:
                    rec.stop()
                self.cleanup.run_one(p.bench_undo)
            st_fill = snaps.get("fill", {}).get("st")
            st_end = snaps.get("end", {}).get("st")
            if p.returncode != 0 or st_end is None or st_fill is None:
                why = (err.strip().splitlines() or ["no output"])[-1]
                reason = f"guestsim under the pager failed (exit {p.returncode}): {why}; pager: {d.tail('pager')}"
                if tolerate:
                    return {"na": reason}
                if config == "b":
                    self.b_reason = reason
                    return {"na": reason}
                raise RuntimeError(reason)
            m = pager_metrics(jp, snaps, rss0)
            if rec:
                m["perf_pids"] = rec.pids
            return m
        finally:
            d.close()


def pager_metrics(jp, snaps, rss0):
    """Metrics of one pager run from the vm.stats, CPU and context-switch
    snapshots taken after the fill and after the access phase."""
    f, e = snaps["fill"], snaps["end"]
    st_fill, st_end = f["st"], e["st"]

    def delta(key):
        return st_end.get(key, 0) - st_fill.get(key, 0)

    def fdelta(kind):
        return st_end.get("faults", {}).get(kind, 0) - st_fill.get("faults", {}).get(kind, 0)
    m = guestsim_metrics(jp)
    fl = access_fault_latency(st_fill, st_end)
    m["fault_p50_ns"] = fl.get("p50")
    m["fault_p99_ns"] = fl.get("p99")
    m["fault_p999_ns"] = fl.get("p999")
    cpu = e["cpu"] - f["cpu"]
    m["remote_faults"] = remote_faults(st_end) - remote_faults(st_fill)
    m["refaults"] = m["remote_faults"]
    m["cpu_us_per_fault"] = cpu * 1e6 / m["remote_faults"] if m["remote_faults"] else None
    m["evict_gbps"] = st_end.get("eviction_mbps", 0) / 1000.0
    m["evict_gbps_access"] = access_evict_gbps(st_fill, st_end)
    m["bytes_per_page"] = (f["rss"] - rss0) / st_end["guest_pages"]
    m["throttle_waits"] = delta("throttle_waits")
    m["wp_faults"] = fdelta("wp")
    m["minor_faults"] = fdelta("minor")
    m["sampled_pages"] = delta("sampled_pages")
    ev = m["evictions"] = delta("evictions")
    m["clean_evictions"] = delta("evictions_clean")
    m["zero_evictions"] = delta("zero_pages_skipped")
    written = max(ev - m["clean_evictions"] - m["zero_evictions"], 0)
    m["store_bytes_per_evict"] = written * PAGE / ev if ev else None
    # Every page that moved (read back or written out) over the access phase.
    moved = m["remote_faults"] + ev
    m["pager_cpu_us_per_page"] = cpu * 1e6 / moved if moved else None
    m["cs_pager"] = ctxt_delta(f["cs_pager"], e["cs_pager"])
    m["cs_donor"] = ctxt_delta(f["cs_donor"], e["cs_donor"])
    rf = m["remote_faults"]
    for part in ("pager", "donor", "guest"):
        m[f"cs_{part}_per_fault"] = m[f"cs_{part}"] / rf if rf else None
    m["cs_per_fault"] = (m["cs_pager"] + m["cs_donor"] + m["cs_guest"]) / rf if rf else None
    m["integrity_errors"] = st_end.get("integrity_errors", 0)
    if m["integrity_errors"]:
        raise RuntimeError(f"pager reported {m['integrity_errors']} integrity errors")
    return m


def access_evict_gbps(st_fill, st_end):
    """Eviction GB/s of the access phase alone, while the evictor worked:
    vm.stats has the cumulative rate (eviction_mbps = evictions x 4 KiB over
    the evictor's busy time), so each snapshot's busy time is derived from it
    and the two are subtracted."""
    def busy_s(st):
        mbps = st.get("eviction_mbps", 0)
        return st.get("evictions", 0) * PAGE / (mbps * 1e6) if mbps else 0.0
    dt = busy_s(st_end) - busy_s(st_fill)
    dev = st_end.get("evictions", 0) - st_fill.get("evictions", 0)
    return dev * PAGE / dt / 1e9 if dt > 0 and dev > 0 else None


def policy_cost(runner, args, on_policy, off_policy):
    """Same run, same workload, a policy feature on and off interleaved: pager
    CPU per page moved and fault p50 over TCP loopback (configuration b)."""
    w = dict(size=args.size, writes=50, ops=args.ops, seed=1, pattern="uniform", threads=1, local=0.25,
             content="random")
    runs = {"on": [], "off": []}
    for _ in range(args.reps):
        for side, pol in (("on", on_policy), ("off", off_policy)):
            m = runner.run("b", dict(w, policy=pol))
            if "na" in m:
                return {"na": m["na"]}
            runs[side].append(m)
    out = {}
    for side, rs in runs.items():
        med = median_metrics(rs)
        out[side] = {k: med.get(k) for k in ("pager_cpu_us_per_page", "cpu_us_per_fault", "fault_p50_ns",
                                             "fault_p99_ns", "remote_faults", "evictions", "pages_per_s",
                                             "p99_ns", "cs_pager_per_fault", "cs_per_fault")}
    on, off = out["on"], out["off"]
    if on["pager_cpu_us_per_page"] is not None and off["pager_cpu_us_per_page"] is not None:
        out["cpu_us_per_page_delta"] = on["pager_cpu_us_per_page"] - off["pager_cpu_us_per_page"]
    if on["fault_p50_ns"] and off["fault_p50_ns"]:
        out["fault_p50_delta_ns"] = on["fault_p50_ns"] - off["fault_p50_ns"]
    out["workload"] = report.wl_name(w)
    return out


def encryption_cost(runner, args):
    out = policy_cost(runner, args, {"encryption": True}, {"encryption": False})
    if "na" in out:
        return out
    # The crypto alone, same run: the pager's seal.c on one thread.
    sc = subprocess.run([runner.build.exe("bench-seal"), "--pages", "100000"], capture_output=True, text=True,
                        check=True, timeout=120)
    out["seal_only"] = json.loads(sc.stdout)
    return out


def fault_profile(runner, args, tmp):
    """perf over one access phase of configuration (b), 1 thread, uniform, with
    the fault thread sleeping and spinning: CPU per remote fault by thread and
    activity (tests/bench/perf_profile.py), written to profile.md."""
    if not perf_profile.available():
        log("PROFILE n/a: needs perf (linux-perf) and root")
        return 77
    w = dict(size=args.size, writes=50, ops=args.ops, seed=1, pattern="uniform", threads=1, local=0.25,
             content="random")
    cols, metrics = {}, {}
    for label, spin in (("sleep", 0), (f"spin {SPIN_US} us", SPIN_US)):
        data = os.path.join(tmp, f"perf-{spin}.data")
        m = runner.run("b", dict(w, policy={"fault_spin_us": spin}, perf_out=data))
        if "na" in m:
            log(f"PROFILE n/a: {m['na']}")
            return 77
        cols[label] = perf_profile.breakdown(data, m["perf_pids"], m["remote_faults"])
        metrics[label] = m
    head = [f"Workload {report.wl_name(w)}, configuration (b), {args.ops} accesses; CPU per remote fault "
            "from perf samples (4 kHz) of the access phase.", "",
            "| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for key, name in (("remote_faults", "remote faults"), ("pages_per_s", "accesses/s"),
                      ("fault_p50_ns", "fault p50 (ns)"), ("cpu_us_per_fault", "pager CPU per remote fault (us)"),
                      ("cs_pager_per_fault", "pager switches per remote fault"),
                      ("cs_donor_per_fault", "donor switches per remote fault"),
                      ("cs_guest_per_fault", "guest switches per remote fault")):
        vals = [metrics[lb].get(key) for lb in cols]
        head.append(f"| {name} | " + " | ".join("n/a" if v is None else f"{v:.4g}" for v in vals) + " |")
    text = "\n".join(head) + "\n\n" + perf_profile.table(cols) + "\n"
    with open(os.path.join(args.out, "profile.md"), "w") as f:
        f.write(text)
    log("PROFILE\n" + text)
    return 0


def vmstat():
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            out[k] = int(v)
    return out


def guestsim_metrics(jp):
    with open(jp) as f:
        j = json.load(f)
    if j["status"] != "ok":
        raise RuntimeError(f"guestsim reported {j['status']}")
    a = j["access"]
    lat = a["latency_ns"]
    return {"pages_per_s": a["accesses_per_s"], "p50_ns": lat["p50"], "p90_ns": lat["p90"], "p99_ns": lat["p99"],
            "p999_ns": lat["p99_9"], "min_ns": lat["min"], "max_ns": lat["max"],
            "fill_pages_per_s": j["fill"]["accesses_per_s"],
            # guestsim's workers, access phase (their own getrusage, so exited threads count too)
            "cs_guest": sum(a.get("ctx_switches", {}).values())}


def median_metrics(runs):
    ok = [r for r in runs if "na" not in r]
    if not ok:
        return {"na": runs[0]["na"] if runs else "not run"}
    out = {}
    for k in ok[0]:
        vals = [r[k] for r in ok if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    out["reps"] = len(ok)
    return out


def workloads(args):
    """The matrix. Each workload: guestsim's options, the local-memory share,
    optionally extra pager policy keys ("policy"), the configurations it runs
    under ("configs", default all) and whether a failure is n/a ("tolerate")."""
    base = dict(size=args.size, writes=50, ops=args.ops, seed=1, content="random")
    if args.quick:
        pats, threads, locals_ = ["seq", "uniform"], [1, 2], [0.25]
    else:
        pats, threads, locals_ = ["seq", "uniform", "zipf"], [1, 2], [0.25, 0.5]
    wl = []
    for loc in locals_:
        for pat in pats:
            for t in threads:
                wl.append(dict(base, pattern=pat, threads=t, local=loc))
    if args.quick:
        wl.append(dict(base, pattern="zipf", threads=1, local=0.25))
    else:
        wl.append(dict(base, pattern="zipf", threads=1, local=0.25, content="realistic"))
    # The same Zipf row with access sampling (victims "clock"), under the pager only: its refaults and
    # throughput against fifo's in the same run decide the default.
    wl.append(dict(wl[-1], tag="clock", policy={"victims": "clock"}, configs="ab", tolerate=True))
    # 90% reads: what clean-page eviction saves. The same workload with clean
    # eviction off and FIFO victims is the before-state, under the pager only;
    # a pager that does not know those policy keys refuses the VM: n/a.
    # Half the working set and twice the accesses: the pages resident after
    # the fill were all written and are evicted dirty once, which would
    # otherwise be 70% of the access phase's evictions, not a steady state.
    # (A quarter gave (c) a 16 MiB cgroup, where the kernel OOM-killed guestsim.)
    r90 = dict(base, pattern="uniform", threads=1, local=0.25, writes=10, size=args.size // 2, ops=2 * args.ops,
               sized=True)
    wl.append(r90)
    wl.append(dict(r90, tag="noclean", policy={"clean_eviction": False, "victims": "fifo"}, configs="ab",
                   tolerate=True))
    for w in wl:
        if w["pattern"] == "zipf":
            w["theta"] = report.ZIPF_THETA
    return wl


def idle_cost(runner, args):
    """Sampling cost at rest: a guestsim VM under the pager (spill file, 25%
    local memory) is filled, then left idle (no accesses) for args.idle_secs
    once the evictor has settled; the CPU of the pager and of guestsim (the
    shim's side of sampling) over that time as a percentage of one core, and
    what the pager did meanwhile."""
    size = args.idle_size
    local = int(size * 0.25) // PAGE * PAGE
    d = Daemons(runner.build, runner.cleanup, donor=False, size=size)
    try:
        if d.failure:
            return {"na": d.failure}
        pol = {"name": "bench", "local_memory": str(local)}
        env = dict(os.environ, LD_PRELOAD=runner.build.exe("libuffd-glue.so"), UFFD_GLUE_SOCKET=d.sock,
                   UFFD_GLUE_NAME="bench", UFFD_GLUE_POLICY=json.dumps(pol))
        jp = os.path.join(runner.tmp, "idle.json")
        w = dict(size=size, threads=2, pattern="uniform", writes=50, ops=0, content="random", seed=1)
        # guestsim pauses after the fill far longer than the measurement needs; it is killed after it.
        p = runner.spawn(runner.gs_args(w, jp, ["--pause-after-fill", str(args.idle_secs + 120)]), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = {"size": size, "local": local, "config": "a", "idle_s": args.idle_secs}
        try:
            t0 = time.time()
            filled = False
            while time.time() < t0 + args.run_timeout:
                r, _, _ = select.select([p.stdout], [], [], 1.0)
                if r:
                    line = p.stdout.readline()
                    if not line or line.startswith("FILLED"):
                        filled = bool(line)
                        break
                elif p.poll() is not None:
                    break
            out["fill_s"] = time.time() - t0
            if not filled:
                p.kill()
                _, err = p.communicate()
                why = (err.strip().splitlines() or ["no output"])[-1]
                return {"na": f"guestsim under the pager failed (exit {p.returncode}): {why}; pager: {d.tail('pager')}"}
            # Settled: the evictor has stopped (no evictions for 1 s, at most 30 s).
            last, still = None, 0.0
            settle0 = time.time()
            while time.time() < settle0 + 30 and still < 1.0:
                st = d.vm_stats("bench")
                ev = st.get("evictions", 0) if st else None
                still = still + 0.25 if ev == last else 0.0
                last = ev
                time.sleep(0.25)
            out["settle_s"] = time.time() - settle0
            # guestsim's CPU too: the shim's thread in it does the guest's side of sampling.
            st0, cpu0, gcpu0, t_0 = d.vm_stats("bench"), proc_cpu_s(d.pager.pid), proc_cpu_s(p.pid), time.time()
            time.sleep(args.idle_secs)
            st1, cpu1, gcpu1, t_1 = d.vm_stats("bench"), proc_cpu_s(d.pager.pid), proc_cpu_s(p.pid), time.time()
            if p.poll() is not None or not st0 or not st1:
                return {"na": f"guestsim or the VM went away during the idle period; pager: {d.tail('pager')}"}
        finally:
            runner.cleanup.run_one(p.bench_undo)
        out["pager_cpu_pct"] = (cpu1 - cpu0) / (t_1 - t_0) * 100
        out["guest_cpu_pct"] = (gcpu1 - gcpu0) / (t_1 - t_0) * 100
        out["cpu_pct"] = out["pager_cpu_pct"] + out["guest_cpu_pct"]
        out["clk_tck"] = os.sysconf("SC_CLK_TCK")
        out["sampled_pages"] = st1.get("sampled_pages", 0) - st0.get("sampled_pages", 0)
        out["minor_faults"] = st1.get("faults", {}).get("minor", 0) - st0.get("faults", {}).get("minor", 0)
        out["evictions"] = st1.get("evictions", 0) - st0.get("evictions", 0)
        out["resident_pages"] = st1.get("memfd_resident_pages")
        return out
    finally:
        d.close()


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small matrix, configurations (b)-(e), ~10 min")
    ap.add_argument("--out", default="bench-results", help="output directory (default bench-results)")
    ap.add_argument("--build", default=os.environ.get("UFFDVM_BUILD_DIR"), help="meson build directory")
    ap.add_argument("--size", type=parse_size, default=None, help="working set (default 256M quick, 512M full)")
    ap.add_argument("--ops", type=int, default=None, help="accesses per run (default 30000 quick, 100000 full)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per cell (median reported)")
    ap.add_argument("--configs", default=None, help="subset, e.g. 'ace' (default: bcde quick, abcde full)")
    ap.add_argument("--run-timeout", type=float, default=300)
    ap.add_argument("--idle-size", type=parse_size, default=None,
                    help="the idle row's guest size (default 4G)")
    ap.add_argument("--idle-secs", type=float, default=10,
                    help="the idle row's measured idle time in s (0: no idle row)")
    ap.add_argument("--profile", action="store_true",
                    help="only the fault profile: where each microsecond of a remote fault goes (perf), "
                         f"fault thread sleeping vs spinning {SPIN_US} us; writes profile.md")
    ap.add_argument("--restart", action="store_true",
                    help="only the pager-restart measurements (guest pause and recovery for 1, 4, 16 GiB guests)")
    ap.add_argument("--halt-poll-ns", type=int, default=200000,
                    help="on a VM guest with cpuidle-haltpoll: guest halt polling for the run, in ns "
                         "(default 200000; -1 leaves the system's setting); see docs/benchmarks.md")
    ap.add_argument("--disk-cache", action="store_true",
                    help="only the disk cache rows (tests/bench/disk_cache.py; docs/benchmarks.md)")
    ap.add_argument("--disk-delay-ms", type=int, default=1, help="disk cache rows: read delay of the image")
    ap.add_argument("--disk-region-mib", type=int, default=128, help="disk cache rows: each pass's region")
    ap.add_argument("--disk-ops", type=int, default=8192, help="disk cache rows: random reads per pass")
    ap.add_argument("--disk-cache-mib", type=int, default=512, help="disk cache rows: cache size")
    ap.add_argument("--disk-guest-ram", type=int, default=256, help="disk cache rows: guest RAM in MiB")
    ap.add_argument("--disk-donor-preallocate", action="store_true",
                    help="disk cache rows: start the donor with --preallocate (its memory faulted in at start)")
    ap.add_argument("--disk-rows", choices=("all", "read", "swap"), default="all", help="disk cache rows: which")
    ap.add_argument("--disk-swap-mib", type=int, default=256, help="disk cache swap rows: guest memory written")
    ap.add_argument("--disk-swap-ram", type=int, default=128, help="disk cache swap rows: guest RAM in MiB")
    args = ap.parse_args()
    if args.disk_cache:
        import disk_cache
        os.makedirs(args.out, exist_ok=True)
        res = disk_cache.run(args, os.path.abspath(args.build or "build"), args.out)
        if "na" in res:
            log(f"disk cache rows n/a: {res['na']}")
            return 77
        return 0
    args.size = args.size or (256 * MiB if args.quick else 512 * MiB)
    args.ops = args.ops or (30000 if args.quick else 100000)
    args.idle_size = args.idle_size or 4 << 30
    configs = args.configs or ("bcde" if args.quick else "abcde")
    if os.geteuid() != 0:
        log("needs root (userfaultfd, swapon, cgroups)")
        return 77
    build = Build(os.path.abspath(args.build or "build"))
    os.makedirs(args.out, exist_ok=True)
    if args.restart:
        import restart  # noqa: E402
        rows = restart.measure(build.root, log=log)
        with open(os.path.join(args.out, "restart.json"), "w") as f:
            json.dump(rows, f, indent=1)
        return 0
    t_start = time.time()
    cleanup = sysenv.Cleanup()

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    # Explicit, since a shell may start a background job with SIGINT ignored.
    signal.signal(signal.SIGINT, on_term)
    tmp = tempfile.mkdtemp(prefix="uffdvm-bench-run-")
    cleanup.push("rm tmp", lambda: subprocess.run(["rm", "-rf", tmp]))
    timings = {}
    try:
        sysenv.swapoff_host(cleanup, log)
        halt_poll = sysenv.set_halt_poll(cleanup, None if args.halt_poll_ns < 0 else args.halt_poll_ns, log)
        t = time.time()
        fl = subprocess.run([build.exe("bench-floor"), "--samples", "20000"], capture_output=True, text=True,
                            check=True, timeout=120)
        floor = json.loads(fl.stdout)
        floor["floor_p50_ns"] = floor["uffd_fault_ns"]["p50"] + floor["tcp_4k_rtt_ns"]["p50"]
        floor["floor_p99_ns"] = floor["uffd_fault_ns"]["p99"] + floor["tcp_4k_rtt_ns"]["p99"]
        timings["floor"] = time.time() - t
        runner = Runner(args, build, cleanup, tmp)
        runner.measure_overhead()
        if args.profile:
            return fault_profile(runner, args, tmp)
        wl = workloads(args)
        results = []  # (config, workload, median metrics)
        # Order: no swap for (b)/(a)/(e); then the swap file alone; then zram alone.
        # (a) stands in for (b) while the pager rejects the donor flags: when
        # (a) was not asked for, it runs only once (b) turned out n/a.
        order = [c for c in "bae" if c in configs or (c == "a" and "b" in configs)]
        order += [c for c in "cd" if c in configs]
        swap_size = 2 * args.size
        zram_algo = None
        for c in order:
            if c == "a" and "a" not in configs and runner.b_reason is None:
                continue
            t = time.time()
            dev = None
            if c == "c":
                dev = sysenv.SwapFile(cleanup, swap_size, log)
            elif c == "d":
                dev = sysenv.Zram(cleanup, swap_size, log)
            try:
                if dev:
                    log(f"({c}) swap on {dev.on()}")
                    if c == "d":
                        zram_algo = dev.algorithm
                others = [s for s, _ in sysenv.active_swaps()]
                if (dev is None and others) or (dev and len(others) != 1):
                    raise RuntimeError(f"unexpected swap devices active during ({c}): {others}")
                for w in wl:
                    if c not in w.get("configs", "abcde"):
                        continue
                    runs = []
                    for _ in range(args.reps):
                        runs.append(runner.run(c, w))
                        if "na" in runs[-1]:
                            break  # the same reason again, reps times
                    med = median_metrics(runs)
                    results.append((c, w, med))
                    log(f"({c}) {report.wl_name(w)}: " + report.brief(med))
            finally:
                if dev:
                    dev.off()
            timings[c] = time.time() - t
        idle = None
        if args.idle_secs > 0:
            t = time.time()
            if sysenv.active_swaps():
                raise RuntimeError(f"unexpected swap devices active for the idle row: {sysenv.active_swaps()}")
            idle = idle_cost(runner, args)
            timings["idle"] = time.time() - t
            log("IDLE " + report.idle_brief(idle))
        enc = share = spin = None
        if "b" in configs and runner.b_reason is None:
            def us(v):
                return "n/a" if v is None else f"{v / 1000:.1f} us"

            def cpu(v):
                return "n/a" if v is None else f"{v:.2f} us"

            def cost_line(c):
                return (f"{c['workload']}: pager CPU per page moved {cpu(c['on']['pager_cpu_us_per_page'])} "
                        f"on vs {cpu(c['off']['pager_cpu_us_per_page'])} off (delta {cpu(c.get('cpu_us_per_page_delta'))}); "
                        f"fault p50 {us(c['on']['fault_p50_ns'])} on vs {us(c['off']['fault_p50_ns'])} off")
            t = time.time()
            enc = encryption_cost(runner, args)
            timings["encryption"] = time.time() - t
            with open(os.path.join(args.out, "encryption.json"), "w") as f:
                json.dump(enc, f, indent=1)
            if "na" in enc:
                log(f"ENCRYPTION n/a: {enc['na']}")
            else:
                log(f"ENCRYPTION (b) {cost_line(enc)}; seal.c alone: seal {enc['seal_only']['seal_ns'] / 1000:.2f} us, "
                    f"open {enc['seal_only']['open_ns'] / 1000:.2f} us per page")
            # A lone VM in a sharing group with random contents: every eviction pays the content
            # key and the index, none is a hit: the cost of sharing, not its savings.
            t = time.time()
            share = policy_cost(runner, args, {"sharing_group": "bench"}, {})
            timings["sharing"] = time.time() - t
            with open(os.path.join(args.out, "sharing.json"), "w") as f:
                json.dump(share, f, indent=1)
            log(f"SHARING n/a: {share['na']}" if "na" in share else f"SHARING (b) {cost_line(share)}")
            # The fault thread polling before it sleeps: fewer wake-ups bought with pager CPU.
            t = time.time()
            spin = policy_cost(runner, args, {"fault_spin_us": SPIN_US}, {"fault_spin_us": 0})
            timings["spin"] = time.time() - t
            with open(os.path.join(args.out, "spin.json"), "w") as f:
                json.dump(spin, f, indent=1)
            if "na" in spin:
                log(f"SPIN n/a: {spin['na']}")
            else:
                on, off = spin["on"], spin["off"]

                def sw(v):
                    return "n/a" if v is None else f"{v:.2f}"
                ratio = (on["pages_per_s"] / off["pages_per_s"]) if on["pages_per_s"] and off["pages_per_s"] else None
                log(f"SPIN (b) fault_spin_us {SPIN_US} vs 0, {spin['workload']}: throughput x{sw(ratio)}, "
                    f"pager switches per remote fault {sw(on['cs_pager_per_fault'])} vs {sw(off['cs_pager_per_fault'])} "
                    f"(all {sw(on['cs_per_fault'])} vs {sw(off['cs_per_fault'])}), pager CPU per remote fault "
                    f"{cpu(on['cpu_us_per_fault'])} vs {cpu(off['cpu_us_per_fault'])}, fault p50 "
                    f"{us(on['fault_p50_ns'])} vs {us(off['fault_p50_ns'])}, guest p99 {us(on['p99_ns'])} vs {us(off['p99_ns'])}")
        timings["total"] = time.time() - t_start
        meta = {"size": args.size, "ops": args.ops, "reps": args.reps, "quick": args.quick,
                "overhead": runner.overhead, "floor": floor, "b_na": runner.b_reason, "zram_algorithm": zram_algo,
                "timings_s": timings, "nproc": os.cpu_count(), "kernel": os.uname().release,
                "halt_poll_ns": halt_poll, "encryption": enc, "sharing": share, "spin": spin, "idle": idle, "zipf_theta": report.ZIPF_THETA}
        report.emit(args.out, results, meta, CONFIGS)
        return 0
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        return 130
    finally:
        cleanup.run_all()


if __name__ == "__main__":
    sys.exit(main())
