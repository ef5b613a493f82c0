#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The pager <-> donor link: TLS, identities, reconnection, key length.
Scenarios (argv[1]):
  wire       a TCP proxy between a real pager and a real uffd-donor records
             both directions: guestsim's page header ("GUESTSIM", in every
             page it writes) never appears on the wire. Then the proxy
             flips one byte donor->pager on the first connection and one
             byte pager->donor on the second: each connection fails closed
             (the donor is marked down), the pager reconnects, guestsim
             (replicas 1 + spill backup) verifies every byte, and the pager
             stays alive.
  reconnect  SIGKILL the donor, restart it on the same port: the pager
             reconnects (pager.stats lists the URL up again) and stores
             pages there again (the new donor's stats count them).
  ids        the default client id is derived from /etc/machine-id (not the
             raw id, not a shared constant); a second pager standing for
             another host (--client-id, as one machine-id cannot be varied
             here) on the same donor gets its own slabs, and both guests
             verify every byte.
  shortkey   a 31-byte key file is refused at start-up by the donor and by
             the pager, with a message naming the file and the lengths.
  clientkeys a donor with --client-key hostA=keyA: a pager with id hostA and
             keyA stores and reads pages; a second pager claiming hostA
             with the shared key is refused (its donor is down, the donor
             logs the failed handshake, hostA keeps its session and slabs
             and its guest verifies every byte); a third id with the shared
             key still gets in. Bad --client-key arguments are refused at
             start-up naming the id or file."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import (  # noqa: E402
    Donor, Pager, check, exe, finish, free_port, guestsim, policy, require_root_and_uffd, wait_for)

MAGIC = b"GUESTSIM"



class Proxy:
    """Forwards 127.0.0.1:port to a donor; scans both directions for MAGIC; can flip one byte
    per connection (tamper[i] = "d2p" or "p2d" for the i-th connection, after `after` bytes)."""

    def __init__(self, target_port, tamper=(), after=512 << 10):
        self.target = target_port
        self.tamper = list(tamper)
        self.after = after
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.bytes = {"p2d": 0, "d2p": 0}
        self.found = []
        self.flipped = 0
        self.conns = 0
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                a.close()
                continue
            with self.lock:
                idx = self.conns
                self.conns += 1
            mode = self.tamper[idx] if idx < len(self.tamper) else None
            threading.Thread(target=self.pump, args=(a, b, "p2d", mode == "p2d"), daemon=True).start()
            threading.Thread(target=self.pump, args=(b, a, "d2p", mode == "d2p"), daemon=True).start()

    def pump(self, src, dst, direction, flip):
        tail = b""
        seen = 0
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if flip and seen + len(data) > self.after and len(data) > 64:
                buf = bytearray(data)
                buf[len(buf) // 2] ^= 0x01
                data = bytes(buf)
                flip = False
                with self.lock:
                    self.flipped += 1
            seen += len(data)
            window = tail + data
            if MAGIC in window:
                with self.lock:
                    self.found.append((direction, window.index(MAGIC)))
            tail = window[-(len(MAGIC) - 1):]
            with self.lock:
                self.bytes[direction] += len(data)
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()


def donors_of(pager):
    return pager.result("pager.stats")["donors"]


def run_guest(pager, name, size_mb, seconds, seed, backup=True):
    dur = {"replicas": 1, "backup": "spill"} if backup else {"replicas": 1}
    return guestsim(pager, name, policy(name, f"{size_mb // 4}M", durability=dur, on_data_loss="stop"),
                    ["--size", f"{size_mb}M", "--threads", "2", "--pattern", "uniform", "--writes", "50",
                     "--duration", str(seconds), "--seed", str(seed)])


def scen_wire():
    donor = Donor(capacity="256M")
    proxy = Proxy(donor.port, tamper=("d2p", "p2d"))
    pager = g = None
    try:
        pager = Pager(config={"donors": [proxy.url], "donor_key_file": donor.key_file,
                              "client_id": "wire-pager", "donor_timeout_ms": 2000})
        g = run_guest(pager, "wire", 64, 15, 5)
        pager.wait_vm("wire")
        # Both tampered connections broke and a third one serves again.
        wait_for(lambda: proxy.conns >= 3 and proxy.flipped >= 2, 90, "two tampered connections and a third one")
        wait_for(lambda: any(d["url"] == proxy.url and d["state"] == "up" for d in donors_of(pager)), 60,
                 "the pager reconnected after the tampering")
        rc = finish(g, 180)
        check(rc == 0, f"guestsim verified every byte (exit {rc})")
        dl = donors_of(pager)
        print("donors:", json.dumps(dl))
        check(sum(d["failures"] for d in dl) >= 2, "both tampered connections failed (donor marked down twice)")
        check(pager.alive(), "pager still running")
        log = pager.read_log()
        check(wait_for(lambda: "0 integrity errors" in pager.read_log(), 30, "the VM's final line"),
              "no integrity errors")
        # A flipped byte in a record's body fails its tag; in its header, the framing:
        # either way the connection ends, and the log says why.
        check(log.count("is down (") >= 2, "the pager logged why each tampered connection ended")
        with proxy.lock:
            print(f"wire: {proxy.bytes['p2d'] >> 20} MiB pager->donor, {proxy.bytes['d2p'] >> 20} MiB donor->pager, "
                  f"{proxy.conns} connections, {proxy.flipped} bytes flipped")
            check(proxy.bytes["p2d"] > 8 << 20, "pages went through the proxy")
            check(not proxy.found, f"no plaintext page header on the wire (found {proxy.found[:5]})")
    finally:
        if g and g.poll() is None:
            g.kill()
            g.wait()
        if pager:
            print(pager.read_log()[-2000:])
            pager.stop()
        proxy.close()
        donor.stop()


def scen_reconnect():
    donor = Donor(capacity="256M")
    port, key = donor.port, donor.key_file
    keep = tempfile.mkdtemp(prefix="uffdvm-key-")
    key2 = os.path.join(keep, "key")
    with open(key, "rb") as f, open(os.open(key2, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as o:
        o.write(f.read())
    pager = g = donor2 = None
    try:
        pager = Pager(config={"donors": [donor.url], "donor_key_file": key2, "client_id": "re-pager",
                              "donor_timeout_ms": 1000})
        g = run_guest(pager, "re", 64, 20, 7)
        pager.wait_vm("re")
        wait_for(lambda: (pager.vm_stats("re") or {}).get("remote", {}).get("copies", 0) > 0, 60, "pages on the donor")
        donor.kill()
        wait_for(lambda: any(d["state"] == "down" for d in donors_of(pager)), 60, "the donor marked down")
        donor2 = Donor(capacity="256M", port=port, key=open(key2, "rb").read())
        wait_for(lambda: any(d["url"] == donor2.url and d["state"] == "up" for d in donors_of(pager)), 60,
                 "the pager reconnected to the restarted donor")

        def written():
            cl = donor2.call("donor.stats")["result"]["clients"]
            return sum(c["pages_written"] for c in cl if c["id"] == "re-pager")
        wait_for(lambda: written() > 0, 60, "pages stored on the restarted donor")
        print("donors:", json.dumps(donors_of(pager)), "pages written after restart:", written())
        rc = finish(g, 180)
        check(rc == 0, f"guestsim verified every byte (exit {rc})")
        check(pager.read_log().count("is back") == 1, "the reconnection logged once")
        check(pager.alive(), "pager still running")
    finally:
        if g and g.poll() is None:
            g.kill()
            g.wait()
        if pager:
            print(pager.read_log()[-2000:])
            pager.stop()
        donor.stop()
        if donor2:
            donor2.stop()


def scen_ids():
    with open("/etc/machine-id", "rb") as f:
        mid = f.read().strip()
    want = "uffd-pager-" + hashlib.sha256(b"uffdvm client id\n" + mid).hexdigest()[:16]
    donor = Donor(capacity="256M")
    a = b = ga = gb = None
    try:
        a = Pager(config={"donors": [donor.url], "donor_key_file": donor.key_file, "donor_timeout_ms": 2000})
        # Another host: a machine-id cannot be varied on one machine, so its id is given explicitly.
        b = Pager(config={"donors": [donor.url], "donor_key_file": donor.key_file, "donor_timeout_ms": 2000},
                  extra_args=["--client-id", "uffd-pager-otherhost"])
        ga = run_guest(a, "ga", 48, 10, 21, backup=False)
        gb = run_guest(b, "gb", 48, 10, 22, backup=False)
        clients = wait_for(lambda: (lambda cl: cl if len([c for c in cl if c["slabs"] > 0]) >= 2 else None)(
            donor.call("donor.stats")["result"]["clients"]), 60, "both pagers holding slabs")
        ids = sorted(c["id"] for c in clients)
        print("donor clients:", json.dumps(clients))
        check(want in ids, f"default id {want} derived from the machine-id ({ids})")
        check(mid.decode() not in json.dumps(clients), "the raw machine-id is not sent")
        check("uffd-pager-otherhost" in ids, "the second pager has its own id")
        for name, g in (("ga", ga), ("gb", gb)):
            rc = finish(g, 180)
            check(rc == 0, f"{name} verified every byte (exit {rc})")
        check(all(d["state"] == "up" for d in donors_of(a) + donors_of(b)), "neither pager lost its donor session")
    finally:
        for g in (ga, gb):
            if g and g.poll() is None:
                g.kill()
                g.wait()
        for p in (a, b):
            if p:
                p.stop()
        donor.stop()


def scen_shortkey():
    tmp = tempfile.mkdtemp(prefix="uffdvm-shortkey-")
    key = os.path.join(tmp, "short.key")
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(b"x" * 31 + b"\n")
    port = free_port()
    r = subprocess.run([exe("uffd-donor"), "--listen", f"tcp://127.0.0.1:{port}", "--capacity", "64M",
                        "--key-file", key], capture_output=True, text=True, timeout=30)
    print("donor:", r.stderr.strip())
    check(r.returncode != 0, "the donor refuses a 31-byte key")
    check(key in r.stderr and "31 bytes" in r.stderr and "32..256" in r.stderr,
          "the donor's message names the file, the length found and the lengths allowed")
    cfg = os.path.join(tmp, "pager.json")
    with open(cfg, "w") as f:
        json.dump({"donors": [f"tcp://127.0.0.1:{port}"], "donor_key_file": key}, f)
    state = tempfile.mkdtemp(prefix="uffdvm-state-", dir="/var/tmp")
    r = subprocess.run([exe("uffd-pager"), "--socket", os.path.join(tmp, "s.sock"), "--control",
                        os.path.join(tmp, "c.sock"), "--state-dir", state, "--config", cfg],
                       capture_output=True, text=True, timeout=30)
    print("pager:", r.stderr.strip()[-600:])
    check(r.returncode != 0, "the pager refuses a 31-byte key")
    check(key in r.stderr and "31 bytes" in r.stderr and "32..256" in r.stderr,
          "the pager's message names the file, the length found and the lengths allowed")


def write_key(path, data, mode=0o600):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, mode), "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def scen_clientkeys():
    tmp = tempfile.mkdtemp(prefix="uffdvm-clientkeys-")
    key_a = os.path.join(tmp, "hostA.key")
    write_key(key_a, b"hostA-own-key-0123456789abcdef-xyz\n")
    loose = os.path.join(tmp, "loose.key")
    write_key(loose, b"loose-key-0123456789abcdef-0123456", 0o644)
    port = free_port()
    base = [exe("uffd-donor"), "--listen", f"tcp://127.0.0.1:{port}", "--capacity", "64M"]
    for args, want in ((["--client-key", f"bad id={key_a}"], "bad id"),
                       (["--client-key", f"hostB={loose}"], loose),
                       (["--client-key", "hostB"], "ID=FILE"),
                       (["--client-key", f"hostA={key_a}", "--client-key", f"hostA={key_a}"], "already has a key"),
                       (["--client-keys-only"], "--client-key")):
        r = subprocess.run(base + args, capture_output=True, text=True, timeout=30)
        print("donor", args, "->", r.stderr.strip()[-300:])
        check(r.returncode != 0 and want in r.stderr, f"uffd-donor {args} refused, naming {want!r}")

    donor = Donor(capacity="256M", extra_args=["--client-key", f"hostA={key_a}"])
    a = b = c = ga = None
    try:
        cfg = {"donors": [donor.url], "donor_timeout_ms": 2000}
        a = Pager(config=dict(cfg, donor_key_file=key_a, client_id="hostA"))
        ga = run_guest(a, "ga", 48, 10, 31, backup=False)

        def host_a():
            return next((x for x in donor.call("donor.stats")["result"]["clients"] if x["id"] == "hostA"), None)
        before = wait_for(lambda: (lambda x: x if x and x["slabs"] > 0 and x["pages_written"] > 0 else None)(
            host_a()), 60, "hostA holding slabs with its own key")
        # The shared key no longer opens hostA's slabs.
        b = Pager(config=dict(cfg, donor_key_file=donor.key_file, client_id="hostA"))
        wait_for(lambda: "TLS handshake failed" in donor.read_log(), 60, "the donor refusing hostA's shared key")
        check(all(d["state"] == "down" for d in donors_of(b)), f"the impostor's donor is down ({donors_of(b)})")
        after = host_a()
        print("hostA before:", json.dumps(before), "after:", json.dumps(after))
        check(after["connected"] and after["slabs"] >= before["slabs"], "hostA keeps its session and slabs")
        check(all(d["state"] == "up" for d in donors_of(a)), "hostA's pager kept its donor session")
        # Ids without a key of their own still use the shared key.
        c = Pager(config=dict(cfg, donor_key_file=donor.key_file, client_id="hostC"))
        check(all(d["state"] == "up" for d in donors_of(c)), f"hostC gets in with the shared key ({donors_of(c)})")
        rc = finish(ga, 180)
        check(rc == 0, f"hostA's guest verified every byte (exit {rc})")
        check(host_a()["pages_read"] > 0, "hostA read pages back from the donor")
        check(all(d["state"] == "up" for d in donors_of(a)), "hostA's pager still up after its guest")
    finally:
        if ga and ga.poll() is None:
            ga.kill()
            ga.wait()
        for p in (a, b, c):
            if p:
                p.stop()
        donor.stop()


def main():
    scen = sys.argv[1] if len(sys.argv) > 1 else "wire"
    if scen != "shortkey":
        require_root_and_uffd()
    {"wire": scen_wire, "reconnect": scen_reconnect, "ids": scen_ids, "shortkey": scen_shortkey,
     "clientkeys": scen_clientkeys}[scen]()
    print("ok")


if __name__ == "__main__":
    main()
