#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A hostile donor between the pager and a real uffd-donor's memory.

A TCP proxy relays the donor protocol between the pager and the donor and,
phase after phase, answers the pager's page reads with:
  flip      one flipped bit in the ciphertext of every slot read;
  swap      every slot replaced by another slot's stored bytes (another page);
  rollback  every slot replaced by an older copy that was written to it;
  drop      no reply at all (the donor is then marked down).
guestsim (replicas 1 + spill backup, on_data_loss kill) checks every byte
it reads and must finish with exit 0: a forged copy never reaches the
guest, the spill copy serves the page. Each tampering phase ends once the
pager's integrity_errors rose (a property, not a timer). The proxy also
scans every page written to the donor for text guestsim's pages are known
to contain: sealed pages show none. A short VM with `encryption: false`
through the same proxy is the negative control of that scan.

The link is TLS: two tls-relay processes (built with the tests) end it
before the proxy and start it again after, so the proxy sees and changes
frames as a donor holding the key could; sealing is what still stops it."""
import os
import signal
import socket
import struct
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import (  # noqa: E402
    Donor, Pager, check, exe, fail, free_port, guestsim, policy, require_root_and_uffd, wait_for)

HDR = struct.Struct("<IBBHQII")  # magic, version, opcode, flags, request id, status, length
OP_ALLOC, OP_FREE, OP_WRITE, OP_READ = 3, 4, 5, 6
F_REPLY = 1
SLOT = 4096 + 16  # a page and its tag
# Lines guestsim's "realistic" pages contain (tests/guestsim/gs-pattern.c).
PLAINTEXT = [b"the quick brown fox jumps over", b"systemd[1]: Started Session"]


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


class Proxy:
    """Relays frames pager <-> donor; tampers with READ_PAGES replies per self.mode."""

    def __init__(self, donor_port, key_file, client_id):
        self.port = free_port()
        # pager --TLS--> relay --plain--> this proxy --plain--> relay --TLS--> donor
        tls_port, self.donor_port = free_port(), free_port()
        self.relays = [start_relay("accept-tls", tls_port, self.port, key_file),
                       start_relay("connect-tls", self.donor_port, donor_port, key_file, client_id)]
        self.url = f"tcp://127.0.0.1:{tls_port}"
        self.mode = "pass"
        self.lock = threading.Lock()
        self.history = {}  # (slab, slot) -> last two payloads written there
        self.reads = {}  # request id -> [(slab, slot), ...]
        self.tampered = {"flip": 0, "swap": 0, "rollback": 0, "drop": 0}
        self.allocated, self.freed = set(), set()  # slab ids
        self.pages_written = {}  # slab -> pages written to it
        self.plaintext_hits = {}  # slab -> of those, pages showing guest text
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(8)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            d = socket.create_connection(("127.0.0.1", self.donor_port))
            threading.Thread(target=self.pump, args=(c, d, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(d, c, False), daemon=True).start()

    def pump(self, src, dst, from_pager):
        try:
            while True:
                hdr = recv_exact(src, HDR.size)
                magic, ver, op, flags, rid, status, length = HDR.unpack(hdr)
                payload = recv_exact(src, length) if length else b""
                if from_pager:
                    self.saw_request(op, rid, payload)
                elif op == OP_ALLOC and flags & F_REPLY and status == 0:
                    with self.lock:
                        self.allocated.add(struct.unpack_from("<I", payload)[0])
                elif op == OP_READ and flags & F_REPLY and status == 0:
                    payload = self.tamper(rid, payload)
                    if payload is None:
                        continue
                dst.sendall(hdr + payload)
        except (EOFError, OSError):
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def saw_request(self, op, rid, p):
        if op == OP_FREE:
            with self.lock:
                self.freed.add(struct.unpack_from("<I", p)[0])
        elif op == OP_WRITE:
            slab, n = struct.unpack_from("<II", p)
            with self.lock:
                for i in range(n):
                    off = 8 + i * (4 + SLOT)
                    slot = struct.unpack_from("<I", p, off)[0]
                    data = p[off + 4:off + 4 + SLOT]
                    self.pages_written[slab] = self.pages_written.get(slab, 0) + 1
                    if any(t in data for t in PLAINTEXT):
                        self.plaintext_hits[slab] = self.plaintext_hits.get(slab, 0) + 1
                    h = self.history.setdefault((slab, slot), [])
                    h.append(data)
                    del h[:-2]
        elif op == OP_READ:
            n = struct.unpack_from("<I", p)[0]
            with self.lock:
                self.reads[rid] = [struct.unpack_from("<II", p, 4 + 8 * i) for i in range(n)]

    def tamper(self, rid, payload):
        with self.lock:
            keys = self.reads.pop(rid, [])
            mode = self.mode
            if mode == "pass" or len(payload) != len(keys) * SLOT:
                return payload
            if mode == "drop":
                self.tampered["drop"] += 1
                return None
            out = bytearray(payload)
            for i, key in enumerate(keys):
                cur = out[i * SLOT:(i + 1) * SLOT]
                new = None
                if mode == "flip":
                    cur[1000] ^= 0x04
                    new = cur
                elif mode == "swap":
                    # Another slot's stored bytes: a valid sealed copy of some other page.
                    for other, h in self.history.items():
                        if other != key and h and h[-1] != bytes(cur):
                            new = h[-1]
                            break
                elif mode == "rollback":
                    h = self.history.get(key, [])
                    if len(h) == 2 and h[0] != bytes(cur):
                        new = h[0]
                if new is not None:
                    out[i * SLOT:(i + 1) * SLOT] = new
                    self.tampered[mode] += 1
            return bytes(out)

    def close(self):
        self.ls.close()
        for r in self.relays:
            r.kill()
            r.wait()


def start_relay(mode, listen_port, target_port, key_file, *rest):
    r = subprocess.Popen([exe("tls-relay"), mode, str(listen_port), str(target_port), key_file, *rest],
                         stdout=subprocess.PIPE, text=True)
    if r.stdout.readline().strip() != "ready":
        fail(f"tls-relay {mode} did not start (exit {r.poll()})")
    return r



def main():
    require_root_and_uffd()
    donor = Donor(capacity="256M")
    proxy = Proxy(donor.port, donor.key_file, "tamper-pager")
    pager = None
    g = None
    try:
        pager = Pager(config={"donors": [proxy.url], "donor_key_file": donor.key_file,
                              "client_id": "tamper-pager", "donor_timeout_ms": 2000})
        dur = {"replicas": 1, "backup": "spill"}
        # Four hops and two TLS handshakes: on a loaded host the first connect may time out;
        # the pager then reconnects in the background.
        pager.wait_for("the donor connected through the relays",
                       lambda: "up" in [d["state"] for d in pager.result("pager.stats")["donors"]], 90)

        # Negative control: copies in clear show guestsim's text on the wire.
        c = guestsim(pager, "clear", policy("clear", "16M", durability=dur, encryption=False),
                     ["--size", "32M", "--threads", "1", "--content", "realistic", "--ops", "2000", "--seed", "5"])
        check(c.wait(timeout=120) == 0, "the unsealed VM ran and verified its data")
        # Its pages are told apart by slab: every slab it had is given back when the pager frees it.
        wait_for(lambda: proxy.allocated and proxy.allocated <= proxy.freed, 30, "the unsealed VM's slabs freed")
        with proxy.lock:
            clear_slabs = set(proxy.allocated)
            clear_pages = sum(proxy.pages_written.get(sl, 0) for sl in clear_slabs)
            clear_hits = sum(proxy.plaintext_hits.get(sl, 0) for sl in clear_slabs)
        check(clear_pages > 100 and clear_hits > 0,
              f"in clear, guest text crosses the wire ({clear_hits} of {clear_pages} pages written)")

        name = "tamper"
        g = guestsim(pager, name, policy(name, "16M", durability=dur, on_data_loss="kill"),
                     ["--size", "32M", "--threads", "2", "--pattern", "uniform", "--writes", "30",
                      "--content", "realistic", "--duration", "45", "--seed", "7"])
        pager.wait_vm(name)
        st = wait_for(lambda: (lambda s: s if s and s["faults"]["donor"] > 100 else None)(pager.vm_stats(name)),
                      90, "faults served from the donor", g)
        check(st["encryption"] is True, "vm.stats shows encryption on (the default)")
        check(st["integrity_errors"] == 0, "no integrity error before tampering")
        r = pager.call("vm.policy.set", vm=name, policy={"encryption": False})
        check(not r.get("ok") and "encryption" in r["error"]["message"],
              f"encryption cannot be turned off while the VM runs: {r}")

        for mode in ("flip", "swap", "rollback"):
            before = pager.vm_stats(name)["integrity_errors"]
            with proxy.lock:
                proxy.mode = mode
            wait_for(lambda: proxy.tampered[mode] >= 10 and pager.vm_stats(name)["integrity_errors"] >= before + 10,
                     60, f"integrity errors from {mode}", g)
            with proxy.lock:
                proxy.mode = "pass"
            s = pager.vm_stats(name)
            print(f"{mode}: {proxy.tampered[mode]} slots tampered with, integrity_errors "
                  f"{before} -> {s['integrity_errors']}, faults from spill {s['faults']['spill']}")

        # A donor that went down stays listed ("down", or "gone" once the pager reconnected
        # as a new entry): count them rather than watch one entry's state.
        def not_up():
            return sum(d["state"] != "up" for d in pager.result("pager.stats")["donors"])
        was = not_up()
        with proxy.lock:
            proxy.mode = "drop"
        wait_for(lambda: not_up() > was, 60, "the silent donor marked down", g)
        with proxy.lock:
            proxy.mode = "pass"
        print(f"drop: {proxy.tampered['drop']} replies dropped, donor marked down")

        g.send_signal(signal.SIGUSR1)  # every phase seen: end the access phase, guestsim verifies every byte
        last = pager.watch(name, g, 300) or pager.vm_stats(name)
        rc = g.wait(timeout=10)
        check(rc == 0, f"guestsim verified every byte it read (exit {rc}; 1 = wrong data, -9 = page lost)")
        check(last["remote"]["pages_lost"] == 0, "no page lost: the spill copies served every rejected one")
        with proxy.lock:
            sealed_pages = sum(n for sl, n in proxy.pages_written.items() if sl not in clear_slabs)
            sealed_hits = sum(n for sl, n in proxy.plaintext_hits.items() if sl not in clear_slabs)
        check(sealed_pages > 1000, f"the sealed VM wrote pages to the donor ({sealed_pages})")
        check(sealed_hits == 0, f"no guest text in any sealed page on the wire ({sealed_hits} of {sealed_pages})")
        check(pager.alive(), "pager still running")
    finally:
        if g and g.poll() is None:
            g.kill()
            g.wait()
        if pager:
            print(pager.read_log()[-2000:])
            pager.stop()
        proxy.close()
        donor.stop()


if __name__ == "__main__":
    main()
