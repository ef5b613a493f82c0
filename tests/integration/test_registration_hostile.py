#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A hostile local client on the pager's registration socket
(SOCK_SEQPACKET, layouts of proto/glue-proto.h): garbage, truncated and
oversized messages, wrong magic and version, HELLOs with the wrong fds, bad
names and bad policies, REGIONs out of order, too long or with the wrong fd,
and 200 connections opened and dropped. Every case must get an error reply
(status != 0, text checked) or a close, never crash the pager or leak an fd;
afterwards a real guestsim still registers and passes. Then the refusals a
real shim sees: a duplicate VM name, and a VM over the host budget, which
guestsim (on_pager_unavailable = refuse) reports on stderr and exits for."""
import array
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, fail, guestsim, kill_procs, policy, require_root_and_uffd  # noqa: E402

MAGIC = 0x75666664
VERSION = 3
HELLO, REGION, REPLY = 1, 2, 3
HELLO_RESUME = 1
HDR = struct.Struct("=IHHI")              # magic, version, type, length (12 bytes)
# hdr, uffd_features, pid, policy_len, name, uuid, flags, waited_ms, secret (176 bytes)
HELLO_S = struct.Struct("=IHHI4xQII64s37s3xII32s")
REGION_S = struct.Struct("=IHHI4xQQQ")    # hdr, host_addr, length, memfd_offset (40 bytes)
REPLY_S = struct.Struct("=IHHII256s32s")  # hdr, status, text, secret (304 bytes)
assert (HDR.size, HELLO_S.size, REGION_S.size, REPLY_S.size) == (12, 176, 40, 304)

USERFAULTFD_IOC_NEW = 0xAA00           # _IO(0xAA, 0)
UFFDIO_API = 0xC018AA3F                # _IOWR(0xAA, 0x3F, struct uffdio_api)
UFFD_API = 0xAA


def new_uffd():
    """A real userfaultfd with the API handshake done, as the shim makes it."""
    dev = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)
    try:
        fd = fcntl.ioctl(dev, USERFAULTFD_IOC_NEW, os.O_CLOEXEC | os.O_NONBLOCK)
    finally:
        os.close(dev)
    api = bytearray(struct.pack("=QQQ", UFFD_API, 0, 0))
    fcntl.ioctl(fd, UFFDIO_API, api)
    return fd


def hello_msg(name, policy_text, length_delta=0, version=VERSION, magic=MAGIC, uuid=b"", flags=0, secret=b""):
    pol = policy_text.encode() if isinstance(policy_text, str) else policy_text
    name = name.encode() if isinstance(name, str) else name
    length = HELLO_S.size + len(pol) + length_delta
    uuid = uuid.encode() if isinstance(uuid, str) else uuid
    return HELLO_S.pack(magic, version, HELLO, length, 0, os.getpid(), len(pol), name, uuid, flags, 0,
                        secret) + pol


def region_msg(addr, length, offset=0):
    return REGION_S.pack(MAGIC, VERSION, REGION, REGION_S.size, addr, length, offset)


class Client:
    def __init__(self, pager):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.settimeout(5)
        self.s.connect(pager.sock)

    def send(self, data, fds=()):
        if fds:
            self.s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.s.send(data)

    def reply(self):
        """(status, text) of the pager's answer, or None if it closed the connection."""
        try:
            data = self.s.recv(4096)
        except ConnectionResetError:
            return None
        if not data:
            return None
        if len(data) != REPLY_S.size:
            fail(f"reply of {len(data)} bytes, expected {REPLY_S.size}")
        magic, version, typ, length, status, text, self.secret = REPLY_S.unpack(data)
        if (magic, version, typ, length) != (MAGIC, VERSION, REPLY, REPLY_S.size):
            fail(f"reply header {(hex(magic), version, typ, length)}")
        return status, text.split(b"\0", 1)[0].decode()

    def closed(self):
        try:
            return self.s.recv(4096) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def expect_error(pager, what, data, fds=(), text=None, dropped=True, client=None):
    """Sends one message; requires an error reply naming `text`, and (for a
    stranger) that the pager then hangs up."""
    c = client or Client(pager)
    try:
        c.send(data, fds)
        r = c.reply()
        if r is None:
            check(text is None, f"{what}: connection closed")
        else:
            status, msg = r
            if status == 0:
                fail(f"{what}: accepted ({msg!r})")
            if text is not None and text not in msg:
                fail(f"{what}: reply {msg!r} lacks {text!r}")
            if dropped and not c.closed():
                fail(f"{what}: the pager kept the connection of a client that is not a VM")
            check(True, f"{what}: refused with status {status}: {msg!r}")
    finally:
        if client is None:
            c.close()
    check(pager.alive(), f"pager alive after: {what}")


def main():
    require_root_and_uffd()
    pager = Pager()
    procs, opened = [], []
    try:
        base_fds = pager.settled_fds()
        good = policy("hostile", "8M")

        expect_error(pager, "garbage bytes", os.urandom(100), text="malformed message")
        expect_error(pager, "truncated header", HDR.pack(MAGIC, VERSION, HELLO, 12)[:6], text="malformed message")
        expect_error(pager, "wrong magic", hello_msg("x", good, magic=0xDEADBEEF), text="malformed message")
        expect_error(pager, "header length lies", hello_msg("x", good, length_delta=8), text="malformed message")
        expect_error(pager, "wrong version", hello_msg("x", good, version=7), text="protocol version 7")
        expect_error(pager, "unknown type", HDR.pack(MAGIC, VERSION, 99, 12), text="unknown message type 99")
        expect_error(pager, "oversized message (41 KiB)", hello_msg("x", "x" * (41 << 10)),
                     text="malformed message")

        r, w = os.pipe()
        uffds = [new_uffd() for _ in range(3)]
        opened += [r, w] + uffds
        expect_error(pager, "HELLO with a pipe instead of a uffd", hello_msg("x", good), [r],
                     text="exactly one userfaultfd")
        expect_error(pager, "HELLO without an fd", hello_msg("x", good), text="exactly one userfaultfd")
        expect_error(pager, "HELLO with 3 fds", hello_msg("x", good), [uffds[0], r, w],
                     text="exactly one userfaultfd")
        expect_error(pager, "HELLO with 3 uffds", hello_msg("x", good), uffds, text="exactly one userfaultfd")
        for bad in ["../x", "", "a" * 64, "a/b", "..", "sp ace"]:
            expect_error(pager, f"HELLO with name {bad!r}", hello_msg(bad, good), [uffds[0]],
                         text="VM name must be 1-63 characters")
        for bad in ["x", "6f1d4e1a-8c1b-4f0e-9a57-2f3c4b5d6e7", "6f1d4e1a-8c1b-4f0e-9a57-2f3c4b5d6e7g",
                    "6f1d4e1a18c1b-4f0e-9a57-2f3c4b5d6e7f", "6f1d4e1a-8c1b-4f0e-9a57-2f3c4b5d6e7f"[:35] + "\n"]:
            expect_error(pager, f"HELLO with uuid {bad!r}", hello_msg("x", good, uuid=bad), [uffds[0]],
                         text="UUID must be")
        expect_error(pager, "HELLO with an unterminated uuid", hello_msg("x", good, uuid=b"1" * 37), [uffds[0]],
                     text="uuid not terminated")
        expect_error(pager, "HELLO whose policy_len exceeds the message",
                     hello_msg("x", good)[:-4], [uffds[0]], text="malformed message")
        expect_error(pager, "HELLO without a policy", hello_msg("x", ""), [uffds[0]], text="no policy")
        expect_error(pager, "HELLO with a bad local_memory",
                     hello_msg("x", json.dumps({"name": "x", "local_memory": "lots"})), [uffds[0]],
                     text="local_memory")
        expect_error(pager, "HELLO with an unknown policy key",
                     hello_msg("x", json.dumps({"name": "x", "local_memory": "8M", "locla": 1})), [uffds[0]],
                     text="locla")
        expect_error(pager, "HELLO with a bad on_data_loss",
                     hello_msg("x", json.dumps({"name": "x", "local_memory": "8M", "on_data_loss": "pause"})),
                     [uffds[0]], text="on_data_loss")
        expect_error(pager, "HELLO with policy that is not JSON", hello_msg("x", "{{{"), [uffds[0]])

        mfd = os.memfd_create("hostile-ram", os.MFD_CLOEXEC)
        os.ftruncate(mfd, 1 << 20)
        opened.append(mfd)
        expect_error(pager, "REGION before HELLO", region_msg(0x10000000, 1 << 20), [mfd],
                     text="REGION before HELLO", dropped=False)

        # A registered client (real uffd, valid policy) that then misbehaves: errors, not drops.
        c = Client(pager)
        c.send(hello_msg("hostile", good, uuid="6F1D4E1A-8c1b-4f0e-9a57-2f3c4b5d6e7f"), [uffds[0]])
        st = c.reply()
        check(st is not None and st[0] == 0, f"valid HELLO from the test accepted: {st}")
        check("hostile" in pager.vm_names(), "vm.list shows the test's VM")
        uuids = {v["name"]: v.get("uuid") for v in pager.result("vm.list")["vms"]}
        check(uuids.get("hostile") == "6F1D4E1A-8c1b-4f0e-9a57-2f3c4b5d6e7f",
              f"vm.list shows the UUID from HELLO: {uuids}")
        expect_error(pager, "REGION longer than its memfd", region_msg(0x10000000, 2 << 20), [mfd],
                     text="does not fit the memfd", dropped=False, client=c)
        expect_error(pager, "REGION past the memfd's end", region_msg(0x10000000, 1 << 20, 4096), [mfd],
                     text="does not fit the memfd", dropped=False, client=c)
        expect_error(pager, "REGION not page aligned", region_msg(0x10000000, 5000), [mfd],
                     text="not 4 KiB aligned", dropped=False, client=c)
        expect_error(pager, "REGION with a pipe", region_msg(0x10000000, 1 << 20), [r],
                     text="exactly one memfd", dropped=False, client=c)
        with open(__file__, "rb") as f:
            expect_error(pager, "REGION with a regular file", region_msg(0x10000000, 4096), [f.fileno()],
                         text="exactly one memfd", dropped=False, client=c)
        expect_error(pager, "REGION with two memfds", region_msg(0x10000000, 1 << 20), [mfd, mfd],
                     text="exactly one memfd", dropped=False, client=c)
        expect_error(pager, "REGION of the wrong size", region_msg(0x10000000, 1 << 20) + b"xx", [mfd],
                     text="malformed message", dropped=False, client=c)
        expect_error(pager, "HELLO sent twice", hello_msg("other", good), [uffds[1]],
                     text="HELLO sent twice", dropped=False, client=c)
        expect_error(pager, "garbage from a registered client", os.urandom(50), text="malformed message",
                     dropped=False, client=c)
        check("hostile" in pager.vm_names(), "the test's VM is still registered after its bad messages")
        c.close()
        pager.wait_for("the test's VM freed after its close", lambda: "hostile" not in pager.vm_names())

        socks = []
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(pager.sock)
            socks.append(s)
        for i, s in enumerate(socks):
            if i % 2:
                s.send(HDR.pack(MAGIC, VERSION, HELLO, 12))  # half say something first
            s.close()
        check(pager.alive(), "pager alive after 200 connections opened and dropped")

        # A stranger that connects and says nothing must not keep a client slot forever.
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        silent.connect(pager.sock)
        silent.settimeout(60)  # the pager's HELLO timeout is 10 s; a loaded host may tick late
        t0 = time.time()
        try:
            got = silent.recv(64)
        except socket.timeout:
            got = None
        silent.close()
        check(got == b"" and time.time() - t0 < 40,
              f"a connection that never says HELLO is closed by the pager ({time.time() - t0:.1f} s)")

        for fd in opened:
            os.close(fd)
        opened = []
        deadline = time.time() + 10
        while pager.fds() != base_fds and time.time() < deadline:
            time.sleep(0.05)
        check(pager.fds() == base_fds, f"pager fds back to baseline {base_fds} (now {pager.fds()}: "
                                       f"{pager.fd_targets() if pager.fds() != base_fds else ''})")
        st = pager.result("pager.stats")
        check(st["vms"] == 0 and st["committed"] == 0, f"nothing registered or committed ({st})")

        # Duplicate name: a real guestsim holds "dup"; a second one is refused, and so is a raw HELLO.
        first = guestsim(pager, "dup", policy("dup", "8M"),
                         ["--size", "32M", "--ops", "1000", "--hold", "60"])
        procs.append(first)
        pager.wait_for("first 'dup' registered", lambda: (pager.vm_stats("dup") or {}).get("guest_pages"), 20)
        second = guestsim(pager, "dup", policy("dup", "8M"), ["--size", "32M", "--ops", "1000"],
                          stderr=subprocess.PIPE, text=True)
        procs.append(second)
        _, err = second.communicate(timeout=30)
        check(second.returncode != 0, f"second 'dup' guestsim refused (exit {second.returncode})")
        check("already registered" in err and "dup" in err, f"its stderr says the name is taken: {err.strip()!r}")
        u = new_uffd()
        try:
            expect_error(pager, "raw HELLO with a taken name", hello_msg("dup", good), [u],
                         text="a VM named 'dup' is already registered")
        finally:
            os.close(u)
        first.kill()
        first.wait()
        pager.wait_for("first 'dup' freed", lambda: pager.vm_names() == [])

        # A real guestsim still registers and passes.
        g = guestsim(pager, "after", policy("after", "8M"),
                     ["--size", "32M", "--threads", "2", "--writes", "50", "--ops", "30000"])
        procs.append(g)
        rc = g.wait(timeout=120)
        check(rc == 0, f"a real guestsim registers and verifies every byte afterwards (exit {rc})")
        pager.wait_for("it was paged", lambda: pager.result("pager.stats")["vms_registered"] >= 3
                            and pager.result("pager.stats"))
        pager.wait_for("VM 'after' freed", lambda: pager.vm_names() == [])
        pager.wait_for(f"pager fds back to baseline {base_fds}", lambda: pager.fds() == base_fds)
        check(pager.alive(), "pager still running")

        # Resumes: one for a VM no pager ever had is refused; one for a VM whose pager died
        # between its HELLO and its first REGION (nothing served yet) is registered afresh.
        u = new_uffd()
        opened.append(u)
        expect_error(pager, "resume of an unknown VM", hello_msg("ghost", good, flags=HELLO_RESUME, secret=b"x" * 32),
                     [u], text="no state file")
        first = Client(pager)
        first.send(hello_msg("early", good), [u])
        status, msg = first.reply()
        secret = first.secret
        check(status == 0 and secret != bytes(32), f"HELLO accepted with a secret: {msg!r}")
        pager.kill()
        first.close()
        pager.restart()
        again = Client(pager)
        again.send(hello_msg("early", good, flags=HELLO_RESUME, secret=secret), [u])
        status, msg = again.reply()
        check(status == 0 and msg == "registered as early" and again.secret not in (secret, bytes(32)),
              f"a resume before any region is registered afresh, with a new secret ({status}, {msg!r})")
        again.close()
    finally:
        for fd in opened:
            os.close(fd)
        kill_procs(procs)
        pager.stop()

    # Budget: a second VM whose local_memory does not fit is refused; the shim says why.
    pager = Pager(extra_args=["--budget", "64M"])
    procs = []
    try:
        a = guestsim(pager, "big", policy("big", "48M"), ["--size", "64M", "--ops", "1000", "--hold", "60"])
        procs.append(a)
        pager.wait_for("'big' registered", lambda: (pager.vm_stats("big") or {}).get("guest_pages"), 20)
        b = guestsim(pager, "over", policy("over", "32M"), ["--size", "64M", "--ops", "1000"],
                     stderr=subprocess.PIPE, text=True)
        procs.append(b)
        _, err = b.communicate(timeout=30)
        check(b.returncode != 0, f"VM over the budget refused: guestsim exit {b.returncode}")
        check("budget" in err and "64" in err, f"guestsim's stderr names the budget: {err.strip()!r}")
        check("refuse" in err, "and says the policy made it refuse to start")
        check(pager.vm_names() == ["big"], "only 'big' is registered")
        st = pager.result("pager.stats")
        check(st["committed"] == 48 << 20 and st["vms_refused"] == 1, f"budget accounting intact ({st})")
        a.kill()
        a.wait()
        pager.wait_for("'big' freed", lambda: pager.vm_names() == [])
        c = guestsim(pager, "fits", policy("fits", "32M"), ["--size", "64M", "--ops", "1000"])
        procs.append(c)
        check(c.wait(timeout=60) == 0, "once 'big' is gone the 32M VM fits and passes")
        check(pager.alive(), "pager still running")
    finally:
        kill_procs(procs)
        pager.stop()


if __name__ == "__main__":
    main()
