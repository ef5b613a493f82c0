#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The operators' interface against a real pager serving a guestsim VM:
every uffd-ctl subcommand with --json (parsed), its exit codes, the
Prometheus exposition (from `uffd-ctl metrics` and from GET /metrics on the
loopback listener) parsed and checked against the format's rules and
against vm.stats, and access control: a non-admin peer may read but gets
EPERM (exit 4) for every admin command, a member of the admin group may run
them, and the control socket gets the configured mode and group."""
import grp
import json
import os
import pty
import pwd
import re
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, exe, fail, free_port, guestsim, policy, require_root_and_uffd  # noqa: E402

VM = "opsvm"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def ctl(pager, *args, user=None, stdin=None):
    pre = None
    if user is not None:
        pw, groups = user

        def pre():
            os.setgroups(groups)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
    p = subprocess.run([exe("uffd-ctl"), "--control", pager.control] + list(args), capture_output=True,
                       text=True, timeout=30, preexec_fn=pre, input=stdin)
    return p.returncode, p.stdout, p.stderr


def ctl_tty(pager, *args):
    """uffd-ctl with its stdout on a pseudo-terminal; returns (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([exe("uffd-ctl"), "--control", pager.control] + list(args), stdout=slave,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    try:
        while True:
            r, _, _ = select.select([master], [], [], 60)
            if not r:
                fail(f"uffd-ctl {' '.join(args)} on a terminal: silent for 60 s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        rc = p.wait(timeout=60)
    return rc, out.decode(errors="replace").replace("\r\n", "\n")


def ctl_json(pager, *args, **kw):
    rc, out, err = ctl(pager, "--json", *args, **kw)
    if rc != 0:
        fail(f"uffd-ctl --json {' '.join(args)}: exit {rc}: {err}")
    try:
        return json.loads(out)
    except ValueError as e:
        fail(f"uffd-ctl --json {' '.join(args)}: not JSON ({e}): {out[:300]!r}")


def parse_exposition(text):
    """Checks the text format's rules; returns {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    fams, current = {}, None
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            if name in fams:
                fail(f"line {n}: family {name} declared twice (samples of a family must be contiguous)")
            fams[name] = {"help": help_, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            if name != current or typ not in ("counter", "gauge", "histogram", "summary", "untyped"):
                fail(f"line {n}: TYPE {line!r} does not follow its HELP")
            fams[name]["type"] = typ
        elif line.startswith("#") or not line:
            continue
        else:
            m = SAMPLE.match(line)
            if not m:
                fail(f"line {n}: not a sample: {line!r}")
            name, labels, value = m.group(1), dict(LABEL.findall(m.group(3) or "")), m.group(4)
            base = current
            ok = name == base or (fams[base]["type"] == "histogram" and name in
                                  (base + "_bucket", base + "_sum", base + "_count"))
            if not ok:
                fail(f"line {n}: sample {name} outside its family (current {base})")
            try:
                v = float(value)
            except ValueError:
                fail(f"line {n}: value {value!r} is not numeric")
            fams[base]["samples"].append((name, labels, v))
    for name, f in fams.items():
        if not f["help"] or not f["type"]:
            fail(f"family {name} lacks HELP or TYPE")
        if f["type"] == "counter" and not name.endswith("_total"):
            fail(f"counter {name} does not end in _total")
    return fams


def check_histograms(fams, where):
    hist = fams.get("uffdvm_vm_fault_latency_seconds")
    check(hist and hist["type"] == "histogram", f"{where}: the fault latency is a histogram")
    by_vm = {}
    for name, labels, v in hist["samples"]:
        by_vm.setdefault(labels["vm"], []).append((name, labels, v))
    for vm, samples in by_vm.items():
        buckets = [(float(lb["le"]), v) for n, lb, v in samples if n.endswith("_bucket")]
        count = [v for n, _, v in samples if n.endswith("_count")][0]
        check(buckets[-1][0] == float("inf") and buckets[-1][1] == count,
              f"{where}: {vm}: +Inf bucket equals _count ({count:.0f})")
        les = [b[0] for b in buckets]
        cums = [b[1] for b in buckets]
        check(les == sorted(les) and len(set(les)) == len(les), f"{where}: {vm}: bucket bounds ascend")
        check(all(a <= b for a, b in zip(cums, cums[1:])), f"{where}: {vm}: bucket counts are cumulative")
    return by_vm


def main():
    require_root_and_uffd()
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        fail("no user nobody")
    admin_group = grp.getgrnam("adm").gr_gid if "adm" in [g.gr_name for g in grp.getgrall()] else 4
    port = free_port()
    pager = Pager(extra_args=["--metrics-listen", f"127.0.0.1:{port}", "--control-mode", "0666",
                              "--admin-group", str(admin_group), "--budget", "1G"])
    g = None
    try:
        st = os.stat(pager.control)
        check(st.st_mode & 0o777 == 0o666, f"--control-mode applied to the socket ({oct(st.st_mode & 0o777)})")
        os.chmod(pager.tmp, 0o755)  # let uid nobody reach the socket

        g = guestsim(pager, VM, policy(VM, "32M"),
                     ["--size", "96M", "--threads", "1", "--pattern", "uniform", "--writes", "50",
                      "--ops", "20000000", "--seed", "3"])
        pager.wait_vm(VM)
        deadline = time.time() + 30
        while time.time() < deadline and pager.vm_stats(VM)["evictions"] == 0:
            time.sleep(0.1)

        # ---- every subcommand, --json parsed ----
        v = ctl_json(pager, "version")
        check("pager.metrics" in v["commands"] and "vm.drain" in v["commands"] and v["client_version"],
              "version --json lists the new commands")
        lst = ctl_json(pager, "vm", "list")
        check([x["name"] for x in lst["vms"]] == [VM], "vm list --json holds the VM")
        sts = ctl_json(pager, "vm", "stats", VM)
        check(sts["name"] == VM and sts["evictions"] > 0, f"vm stats --json ({sts['evictions']} evictions)")
        ps = ctl_json(pager, "pager", "stats")
        check(ps["vms"] == 1, "pager stats --json")
        top = ctl_json(pager, "top", "--once", "--interval", "0.5")
        check(len(top) == 1 and top[0]["name"] == VM and top[0]["fault_rate"] > 0 and top[0]["p99_ns"] > 0,
              f"top --once --json: fault rate {top[0]['fault_rate']:.0f}/s, p99 {top[0]['p99_ns']} ns")
        rc, out, err = ctl(pager, "top", "--once", "--interval", "0.3")
        check(rc == 0 and out.startswith("NAME") and VM in out and "FAULTS/s" in out, "top --once, human")
        rc, out, err = ctl(pager, "top", "--count", "2", "--interval", "0.2")
        check(rc == 0 and out.count("FAULTS/s") == 2, "top --count 2 shows two screens")
        sl = ctl_json(pager, "vm", "set-limit", VM, "40M")
        check(sl["local_memory"] == 40 << 20, "vm set-limit --json")
        check(pager.vm_stats(VM)["local_memory"] == 40 << 20, "the new limit is in force")
        m = ctl_json(pager, "metrics")
        check(m["content_type"].startswith("text/plain; version=0.0.4"), "metrics --json carries the content type")

        # vm.drain brings every stored page back (raising the limit to the guest's size), vm.park pushes
        # the VM out again, vm.policy get/set read and replace its run-time policy.
        before = pager.vm_stats(VM)["stored_pages"]
        check(before > 0, f"the VM has stored pages before the drain ({before})")
        rc, out, err = ctl(pager, "vm", "drain", VM)
        st = pager.vm_stats(VM)
        check(rc == 0 and st["stored_pages"] == 0,
              f"vm drain: exit {rc}, stored pages now {st['stored_pages']}: {err.strip()}")
        # Without a terminal the progress is one line per second, starting with the pages to bring back.
        prog = [int(m.group(1)) for m in re.finditer(rf"^drain {VM}: (\d+) pages still stored$", out, re.M)]
        check(prog and prog[0] > 0 and out.rstrip().endswith(f"{VM}: done"),
              f"vm drain reports progress ({prog[:5]}) and then done: {out!r}")
        check(len(prog) == 1 or prog[-1] < prog[0], f"the stored count falls during the drain: {prog}")
        check(st["local_memory"] >= st["guest_pages"] * 4096, "vm drain raised the limit to the guest's size")
        # On a terminal: a bar with a percentage, redrawn in place.
        rc, out = ctl_tty(pager, "vm", "park", VM)
        st = pager.vm_stats(VM)
        check(rc == 0 and st["stored_pages"] > 0, f"vm park: exit {rc}, {st['stored_pages']} pages pushed out")
        check(f"{VM}: done" in out, f"vm park on a terminal ends with done: {out!r}")
        if "\r" in out:
            check(re.search(r"\rpark " + VM + r" \[[#.]{40}\] +\d+%", out), f"the park bar on a terminal: {out!r}")
        pol = ctl_json(pager, "vm", "policy", "get", VM)
        check(pol["name"] == VM and "local_memory" in pol, "vm policy get returns the policy")
        rc, out, err = ctl(pager, "vm", "policy", "set", VM, "-", stdin='{"local_memory": "48M"}')
        check(rc == 0 and pager.vm_stats(VM)["local_memory"] == 48 << 20, f"vm policy set from stdin: exit {rc}")
        rc, out, err = ctl(pager, "vm", "policy", "set", VM, "-", stdin='{"watermarks": {"low": 120}}')
        check(rc == 1 and "watermarks.low" in err, "an invalid policy is refused naming the field; the old one stays")
        check(pager.vm_stats(VM)["local_memory"] == 48 << 20, "the refused policy changed nothing")

        # ---- exit codes ----
        rc, out, err = ctl(pager, "vm", "stats", "nosuch")
        check(rc == 5 and "ENOENT" in err, "no such VM: exit 5")
        rc, out, err = ctl(pager, "vm", "stats", "a/b")
        check(rc == 2, "invalid VM name: exit 2, nothing sent")
        rc, out, err = ctl(pager, "frobnicate")
        check(rc == 2, "unknown command: exit 2")
        rc, out, err = ctl(pager, "vm", "policy", "set", VM, "-", stdin="{not json")
        check(rc == 2 and "(stdin):1:" in err, f"invalid policy JSON: exit 2 naming line:column ({err.strip()})")
        rc, out, err = ctl(pager, "vm", "set-limit", VM, "64T")
        check(rc == 1 and "ENOSPC" in err, f"a limit over the host budget: ENOSPC, exit {rc}")
        rc, out, err = subprocess.run([exe("uffd-ctl"), "--control", pager.tmp + "/none.sock", "vm", "list"],
                                      capture_output=True, text=True).returncode, "", ""
        check(rc == 3, "no daemon: exit 3")
        rc, out, err = ctl(pager, "--timeout", "0", "vm", "list")
        check(rc == 2, "invalid --timeout: exit 2")

        # ---- access control ----
        plain = (nobody, [])
        rc, out, err = ctl(pager, "--json", "vm", "list", user=plain)
        check(rc == 0 and json.loads(out)["vms"][0]["name"] == VM, "a non-admin peer may read (vm list)")
        rc, out, err = ctl(pager, "metrics", user=plain)
        check(rc == 0 and "uffdvm_vm_info" in out, "a non-admin peer may read metrics")
        for args in (["vm", "set-limit", VM, "64M"], ["vm", "drain", VM], ["vm", "park", VM]):
            rc, out, err = ctl(pager, *args, user=plain)
            check(rc == 4 and "EPERM" in err, f"non-admin peer: {' '.join(args)} refused with EPERM, exit 4")
        rc, out, err = ctl(pager, "vm", "policy", "set", VM, "-", user=plain, stdin='{"local_memory": "48M"}')
        check(rc == 4 and "EPERM" in err, "non-admin peer: vm policy set refused, exit 4")
        check(pager.vm_stats(VM)["local_memory"] == 48 << 20, "the refused set-limit changed nothing")
        member = (nobody, [admin_group])
        rc, out, err = ctl(pager, "vm", "set-limit", VM, "36M", user=member)
        check(rc == 0 and pager.vm_stats(VM)["local_memory"] == 36 << 20,
              f"a member of the admin group (gid {admin_group}) may run admin commands")
        check("peer uid 65534" in pager.read_log() and "vm.set-limit" in pager.read_log(),
              "admin commands are logged with the peer's uid")

        # ---- metrics: uffd-ctl and HTTP ----
        rc, text, err = ctl(pager, "metrics")
        check(rc == 0, "uffd-ctl metrics")
        fams = parse_exposition(text)
        check(len(fams) >= 20, f"{len(fams)} metric families, each with HELP and TYPE, values numeric")
        check_histograms(fams, "uffd-ctl metrics")
        stats = pager.vm_stats(VM)
        ev = [v for _, lb, v in fams["uffdvm_vm_evictions_total"]["samples"] if lb["vm"] == VM][0]
        check(0 < ev <= stats["evictions"], f"evictions_total ({ev:.0f}) agrees with vm.stats ({stats['evictions']})")
        lim = fams["uffdvm_vm_local_memory_bytes"]["samples"][0][2]
        check(lim == 36 << 20, "local_memory_bytes is the limit in force")
        kinds = {lb["kind"] for _, lb, _ in fams["uffdvm_vm_faults_total"]["samples"]}
        check({"zero", "spill"} <= kinds, f"faults_total by kind ({sorted(kinds)})")

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            ctype = r.headers["Content-Type"]
            body = r.read().decode()
        check(ctype.startswith("text/plain; version=0.0.4"), f"GET /metrics: {ctype}")
        hf = parse_exposition(body)
        check_histograms(hf, "GET /metrics")
        check(set(hf) == set(fams), "HTTP and uffd-ctl expose the same families")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
            fail("GET /other succeeded")
        except urllib.error.HTTPError as e:
            check(e.code == 404, "GET /other: 404")
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x"),
                                   timeout=10)
            fail("POST /metrics succeeded")
        except urllib.error.HTTPError as e:
            check(e.code == 405, "POST /metrics: 405")
        # A client that sends half a request must not stall the control socket.
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /metr")
            t0 = time.time()
            rc, out, err = ctl(pager, "vm", "list")
            check(rc == 0 and time.time() - t0 < 5, "a stalled HTTP client does not block control")
        check(pager.alive(), "pager still running")
    finally:
        if g and g.poll() is None:
            g.kill()
            g.wait()
        pager.stop()


if __name__ == "__main__":
    main()
