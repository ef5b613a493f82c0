#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The disk cache filter (disk-cache/) in a real nbdkit over the file plugin,
caching in a real uffd-donor over TLS, driven by qemu-io over NBD. Checks:
data written and read back through the cache is right (qemu-io -P verifies
every byte); a second read is served from donor memory (hit counters,
bytes from memory); a partial overwrite of a cached block and a whole-block
overwrite are both read back right; trim/zero drop cached blocks; after the
donor is SIGKILLed every read is still right (misses from the image); the
image equals a reference file written with the same operations
(qemu-img compare); bad parameters fail with a message naming them."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, Donor, check, fail, sanitizer_report, skip, wait_for  # noqa: E402

FILTER = os.path.join(BUILD, "disk-cache", "nbdkit-uffdvm-cache-filter.so")
MiB = 1 << 20


def tools():
    for t in ("nbdkit", "qemu-io", "qemu-img"):
        if not shutil.which(t):
            skip(f"{t} not installed (scripts/install-deps)")
    if not os.path.exists(FILTER):
        skip(f"{FILTER} not built (nbdkit-plugin-dev missing at build time)")


def nbdkit_env():
    """A sanitized filter in an unsanitized nbdkit: the ASan runtime comes in with the
    filter, not first (harmless for an unsanitized build); TSan's is preloaded."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    # (Preloading libasan into nbdkit instead deadlocks its exit in p11-kit's destructor.)
    # ThreadSanitizer cannot be loaded late at all (static TLS): preload it.
    ldd = subprocess.run(["ldd", FILTER], capture_output=True, text=True).stdout
    for line in ldd.splitlines():
        if "libtsan" in line and "=>" in line:
            env["LD_PRELOAD"] = line.split("=>")[1].split()[0]
    return env


class Nbdkit:
    """nbdkit serving one image file through the cache filter on a Unix socket."""

    def __init__(self, tmp, image, params, plugin=None):
        self.sock = os.path.join(tmp, "nbd.sock")
        self.pidfile = os.path.join(tmp, "nbd.pid")
        self.stats = os.path.join(tmp, "stats.json")
        self.log_path = os.path.join(tmp, "nbdkit.log")
        self.log = open(self.log_path, "w")
        env = nbdkit_env()
        self.proc = subprocess.Popen(["nbdkit", "-f", "-U", self.sock, "-P", self.pidfile, f"--filter={FILTER}",
                                      *(plugin or ["file", image]), f"cache-stats={self.stats}"] + params,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        # nbdkit writes the pid file once it listens.
        wait_for(lambda: os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0, 30,
                 "nbdkit listening", alive=self.proc)

    def uri(self):
        return f"nbd+unix:///?socket={self.sock}"

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def counters(self):
        try:
            with open(self.stats) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_counters(self, pred, what):
        return wait_for(lambda: (lambda c: c if c and pred(c) else None)(self.counters()), 30, what,
                        alive=self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def qemu_io(target, cmds, fmt=("-f", "raw")):
    args = ["qemu-io"] + list(fmt) + [target]
    for c in cmds:
        args += ["-c", c]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    bad = [ln for ln in (p.stdout + p.stderr).splitlines() if "Pattern verification failed" in ln
           or "error" in ln.lower() or "failed" in ln.lower()]
    if p.returncode != 0 or bad:
        fail(f"qemu-io {cmds}: exit {p.returncode}: {bad or p.stderr}")


# The same operations go to the cached image and, directly, to a reference file.
PHASE1 = ["write -P 0xa1 0 4M", "write -P 0xb2 6M 2M", "write -z 9M 1M"]
PHASE2 = ["write -P 0xc3 4100 1000",   # partial: the cached block is dropped
          "write -P 0xd4 1M 128k",      # whole blocks: cached copies replaced
          "discard 2M 64k",             # trim (the file plugin punches a hole)
          "write -z 3M 192k"]           # zero
PHASE2_CHECK = ["read -P 0xa1 0 4096", "read -P 0xc3 4100 1000", "read -P 0xa1 5100 60436",
                "read -P 0xd4 1M 128k", "read -P 0 3M 192k", "read -P 0xa1 3328k 768k",
                "read -P 0xb2 6M 2M", "read -P 0 9M 1M"]


def bad_params(tmp, image, donor):
    cases = [([f"cache-donor={donor.url}"], "cache-size"),
             (["cache-size=16M"], "cache-donor"),
             (["cache-size=16M", f"cache-donor={donor.url}", "cache-block-size=3000"], "block size"),
             (["cache-size=16M", f"cache-donor={donor.url}", "cache-client-id=bad id"], "client id"),
             (["cache-size=16M", f"cache-donor={donor.url}", f"cache-key={tmp}/nonexistent"], "nonexistent")]
    for params, word in cases:
        env = nbdkit_env()
        p = subprocess.run(["nbdkit", "-f", "-U", os.path.join(tmp, "bad.sock"), f"--filter={FILTER}", "file", image]
                           + params, capture_output=True, text=True, timeout=60, env=env)
        check(p.returncode != 0 and word in p.stderr, f"nbdkit refuses {params[-1]} naming '{word}'")


def tamper():
    from test_tamper import Proxy  # noqa: E402 (the hostile donor of the pager's own test)

    tmp = tempfile.mkdtemp(prefix="uffdvm-dcache-", dir="/var/tmp")
    donor = Donor(capacity="64M")
    proxy = Proxy(donor.port, donor.key_file, "test-disk-tamper")
    nbd = None
    try:
        image = os.path.join(tmp, "disk.img")
        with open(image, "wb") as f:
            f.truncate(8 * MiB)
        nbd = Nbdkit(tmp, image, ["cache-size=16M", f"cache-donor={proxy.url}", f"cache-key={donor.key_file}",
                                  "cache-client-id=test-disk-tamper", "cache-timeout-ms=1000"])
        nbd.wait_counters(lambda c: c["donors_up"] == 1, "the cache connected through the proxy")
        qemu_io(nbd.uri(), ["write -P 0x11 0 1M", "read -P 0x11 0 1M"])
        nbd.wait_counters(lambda c: c["stores"] == 16, "16 blocks cached")
        failures, stores = 0, 16
        for mode in ("flip", "swap"):
            proxy.mode = mode
            qemu_io(nbd.uri(), ["read -P 0x11 0 1M"])
            c = nbd.wait_counters(lambda c: c["integrity_failures"] >= failures + 16, f"{mode}: copies refused")
            failures = c["integrity_failures"]
            # Stores are the writer's, after the reads: the next read must find them on the donor, not queued.
            stores += 16
            nbd.wait_counters(lambda c: c["stores"] >= stores, f"{mode}: refused blocks stored again")
            check(proxy.tampered[mode] > 0 and c["hits"] == 0,
                  f"{mode}: {proxy.tampered[mode]} tampered pages, every block a miss, data right")
        proxy.mode = "pass"
        qemu_io(nbd.uri(), ["read -P 0x11 0 1M"])
        c = nbd.wait_counters(lambda c: c["hits"] == 16, "untampered copies served")
        check(c["integrity_failures"] == failures, "untampered copies open")
        qemu_io(nbd.uri(), ["write -P 0x22 0 1M"])  # whole blocks: the same slots, a new generation
        stores += 16
        nbd.wait_counters(lambda c: c["stores"] >= stores, "the rewritten blocks stored")
        proxy.mode = "rollback"
        qemu_io(nbd.uri(), ["read -P 0x22 0 1M"])
        c = nbd.wait_counters(lambda c: c["integrity_failures"] >= failures + 16, "rollback: old copies refused")
        check(proxy.tampered["rollback"] > 0, f"rollback: {proxy.tampered['rollback']} older copies replayed, "
              "all refused, data right")
        stores += 16
        nbd.wait_counters(lambda c: c["stores"] >= stores, "rollback: refused blocks stored again")
        proxy.mode = "drop"
        qemu_io(nbd.uri(), ["read -P 0x22 0 1M", "read -P 0x22 0 1M"])
        c = nbd.wait_counters(lambda c: c["donor_failures"] >= 1, "the silent donor dropped")
        check(proxy.tampered["drop"] > 0 and c["donors_up"] == 0, "drop: the donor is given up, reads go on")
        nbd.stop()
        log = nbd.read_log()
        check("failed to open" in log, "refused copies are logged")
        check(not sanitizer_report(log), "no sanitizer report in nbdkit's log")
    finally:
        if nbd:
            nbd.stop()
        proxy.close()
        donor.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def launcher():
    from harness import exe
    tmp = tempfile.mkdtemp(prefix="uffdvm-dcache-", dir="/var/tmp")
    donor = Donor(capacity="64M")
    try:
        image = os.path.join(tmp, "disk.img")
        with open(image, "wb") as f:
            f.truncate(4 * MiB)
        pol = os.path.join(tmp, "vm.json")
        with open(pol, "w") as f:
            json.dump({"name": "dc-launch", "local_memory": "64M", "disk_cache": {
                "size": "16M", "donors": [donor.url], "drives": ["disk0"], "key_file": donor.key_file}}, f)
        run = os.path.join(tmp, "run")
        os.mkdir(run, 0o700)
        env = dict(nbdkit_env(), UFFD_QEMU_RUNTIME_DIR=run)

        def uffd_qemu(*drive):
            return subprocess.run([exe("uffd-qemu"), "--pager", os.path.join(tmp, "no-pager.sock"), "--policy", pol,
                                   "--", "qemu-system-x86_64", "-m", "64", *drive],
                                  capture_output=True, text=True, timeout=120, env=env)
        cases = [((), "drive 'disk0' (policy disk_cache.drives) is not on the command line"),
                 (("-drive", "file=nbd:localhost:10809,id=disk0"), "not a plain image file"),
                 (("-drive", f"file={tmp}/missing.img,id=disk0"), f"drive 'disk0': image {tmp}/missing.img")]
        for drive, want in cases:
            p = uffd_qemu(*drive)
            check(p.returncode == 1 and want in p.stderr, f"uffd-qemu refuses {drive or 'no drive'}: {want}")
            check(not os.listdir(run), "nothing left in the runtime directory")
        # disk_cache.write_fill reaches nbdkit's command line: UFFD_NBDKIT is a wrapper that records it.
        argv_log = os.path.join(tmp, "nbdkit-argv")
        wrapper = os.path.join(tmp, "nbdkit-wrapper")
        # Under TSan the runtime is preloaded for nbdkit (nbdkit_env), but a shell dies of it: the
        # wrapper gets it under another name and hands it on to nbdkit alone.
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {argv_log}\n'
                    f'LD_PRELOAD="$WRAPPED_NBDKIT_PRELOAD" exec {shutil.which("nbdkit")} "$@"\n')
        os.chmod(wrapper, 0o755)
        env["WRAPPED_NBDKIT_PRELOAD"] = env.pop("LD_PRELOAD", "")
        env["UFFD_NBDKIT"] = wrapper
        for write_fill in (False, True):
            with open(pol, "w") as f:
                json.dump({"name": "dc-launch", "local_memory": "64M", "disk_cache": {
                    "size": "16M", "donors": [donor.url], "drives": ["disk0"], "key_file": donor.key_file,
                    "write_fill": write_fill}}, f)
            if os.path.exists(argv_log):
                os.unlink(argv_log)
            p = uffd_qemu("-drive", f"file={image},format=raw,if=virtio,id=disk0")
            check(p.returncode == 1 and "served by nbdkit" in p.stderr and "cannot reach uffd-pager" in p.stderr,
                  f"uffd-qemu started nbdkit, then stopped short of QEMU (no pager, policy refuse): exit {p.returncode}, "
                  f"{p.stderr.strip()[-600:]}")
            wait_for(lambda: not os.listdir(run), 60, "the keeper stopped nbdkit and removed the runtime directory")
            check(True, "the keeper cleaned up after the launcher that never became QEMU")
            with open(argv_log) as f:
                argv = f.read().splitlines()
            check(("cache-write-fill=true" in argv) == write_fill and "cache-size=16777216" in argv,
                  f"disk_cache.write_fill {write_fill}: nbdkit's arguments {argv}")
    finally:
        donor.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def over_capacity(tmp, donor):
    """A cache larger than the donor: a warning at start, stores refused past its capacity, reads right."""
    sub = os.path.join(tmp, "big")
    os.mkdir(sub)
    image = os.path.join(sub, "big.img")
    with open(image, "wb") as f:
        f.truncate(96 * MiB)
    # A queue as large as what is read: every block is tried (none skipped for a writer behind).
    nbd = Nbdkit(sub, image, ["cache-size=128M", f"cache-donor={donor.url}", f"cache-key={donor.key_file}",
                              "cache-client-id=test-disk-big", "cache-queue=128M"])
    try:
        nbd.wait_counters(lambda c: c["donors_up"] == 1, "the cache connected")
        check("more than the donors' free memory" in nbd.read_log(), "a cache larger than the donor is warned about")
        qemu_io(nbd.uri(), ["read -P 0 0 80M"])
        c = nbd.wait_counters(lambda c: c["stores"] + c["store_failures"] >= 1280, "80 MiB of stores settled")
        check(c["store_failures"] > 0 and c["used_bytes"] <= 64 * MiB,
              f"stores past the donor's 64 MiB refused ({c['store_failures']}), {c['used_bytes'] >> 20} MiB cached")
        check("no donor has room" in nbd.read_log(), "the full donors are logged")
        qemu_io(nbd.uri(), ["read -P 0 0 80M"])
    finally:
        nbd.stop()
    # The donor's slabs go back when the cache closes (not after the lease): the next test has room.
    wait_for(lambda: donor.call("donor.stats").get("result", {}).get("used") == 0, 30,
             "the cache's slabs freed on the donor")
    check(True, "the cache's slabs went back to the donor when nbdkit stopped")


def block_sizes(tmp, donor):
    """The smallest and the largest block: a block per page, a block of 256 pages (16 per slab)."""
    for bs, kib in (("4K", 4), ("1M", 1024)):
        sub = os.path.join(tmp, f"bs{kib}")
        os.mkdir(sub)
        image = os.path.join(sub, "img")
        with open(image, "wb") as f:
            f.truncate(40 * MiB + 12345)  # a last block past the end of the image
        nbd = Nbdkit(sub, image, ["cache-size=64M", f"cache-block-size={bs}", f"cache-donor={donor.url}",
                                  f"cache-key={donor.key_file}", f"cache-client-id=test-disk-bs{kib}",
                                  "cache-queue=128M"])
        try:
            n = 32 * 1024 // kib
            tail = -(-12345 // (kib * 1024))  # blocks of the image's last 12345 bytes
            lo, b = 9 * MiB - 100, kib * 1024
            mid = (lo + 4999) // b - lo // b + 1  # blocks the unaligned 5000 bytes touch
            qemu_io(nbd.uri(), ["write -P 0x5a 8M 32M", "write -P 0x6b 40M 12345", "read -P 0x5a 8M 32M",
                                "read -P 0x6b 40M 12345"])
            nbd.wait_counters(lambda c: c["stores"] >= n + tail, f"{bs}: blocks stored")
            qemu_io(nbd.uri(), ["read -P 0x5a 8M 32M", f"read -P 0x5a {9 * MiB - 100} 5000", "read -P 0x6b 40M 12345"])
            c = nbd.wait_counters(lambda c: c["hits"] >= n + mid + tail, f"{bs}: second reads served from memory")
            check(c["hits"] == n + mid + tail and c["misses"] == n + tail and c["integrity_failures"] == 0,
                  f"{bs} blocks: {c['hits']} hits, {c['misses']} misses, the partial last block included")
        finally:
            nbd.stop()


def thread_model(tmp, image, donor):
    """The filter lets nbdkit run requests in parallel over a plugin that does."""
    p = subprocess.run(["nbdkit", f"--filter={FILTER}", "file", image, "cache-size=16M", f"cache-donor={donor.url}",
                        "--dump-plugin"], capture_output=True, text=True, timeout=60, env=nbdkit_env())
    check(p.returncode == 0 and "thread_model=parallel" in p.stdout.splitlines(),
          f"nbdkit runs the filter over the file plugin in parallel ({p.stderr.strip()[-200:]})")


def stale_fill(tmp, donor):
    """A read of the image that a write of the same block overtakes does not cache the old bytes: the
    plugin (nbdkit's sh, in parallel) reads the block, then sleeps 5 s before answering; 1 s in, a write
    of the block goes through. The read answers the old bytes (fine for overlapping requests), and a
    read after both must see the new ones (not the old copy cached on the read's way back)."""
    sub = os.path.join(tmp, "stale")
    os.mkdir(sub)
    image, slow, script = os.path.join(sub, "img"), os.path.join(sub, "slow-once"), os.path.join(sub, "plugin.sh")
    with open(image, "wb") as f:
        f.write(b"\x11" * MiB)
    open(slow, "w").close()
    with open(script, "w") as f:
        # Through env: nbdkit may run with a sanitizer runtime preloaded, which the shell must not inherit.
        f.write(f"""#!/usr/bin/env -S -u LD_PRELOAD /bin/sh
case "$1" in
thread_model) echo parallel ;;
get_size) stat -c %s {image} ;;
can_write) exit 0 ;;
pread) dd if={image} skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none
       if [ -e {slow} ]; then rm -f {slow}; sleep 5; fi ;;
pwrite) dd of={image} seek=$4 oflag=seek_bytes conv=notrunc status=none ;;
*) exit 2 ;;
esac
""")
    os.chmod(script, 0o755)
    nbd = Nbdkit(sub, image, ["cache-size=16M", f"cache-donor={donor.url}", f"cache-key={donor.key_file}",
                              "cache-client-id=test-disk-stale"], plugin=["sh", script])
    try:
        nbd.wait_counters(lambda c: c["donors_up"] == 1, "the cache connected")
        qemu_io(nbd.uri(), ["aio_read -P 0x11 0 64k", "sleep 1000", "aio_write -P 0x22 0 64k", "aio_flush",
                            "read -P 0x22 0 64k"])
        check(not os.path.exists(slow), "the slow read happened")
        check(True, "a read overtaken by a write of its block did not cache the old bytes")
        nbd.stop()
        check(not sanitizer_report(nbd.read_log()), "no sanitizer report in nbdkit's log (overlapping requests)")
    finally:
        nbd.stop()


def queue_full(tmp, donor):
    """A store queue that is full skips blocks (counted) and the reads go on: the donor is stopped
    (SIGSTOP) so the first queued block stays unacknowledged, and the queue holds one block."""
    sub = os.path.join(tmp, "queue")
    os.mkdir(sub)
    image = os.path.join(sub, "img")
    with open(image, "wb") as f:
        f.write(b"\x33" * (2 * MiB))
    nbd = Nbdkit(sub, image, ["cache-size=16M", f"cache-donor={donor.url}", f"cache-key={donor.key_file}",
                              "cache-client-id=test-disk-queue", "cache-queue=64K", "cache-timeout-ms=20000"])
    try:
        nbd.wait_counters(lambda c: c["donors_up"] == 1, "the cache connected")
        qemu_io(nbd.uri(), ["read -P 0x33 0 64k"])  # its slab is allocated now
        nbd.wait_counters(lambda c: c["stores"] == 1, "the first block stored")
        os.kill(donor.proc.pid, signal.SIGSTOP)
        try:
            qemu_io(nbd.uri(), ["read -P 0x33 1M 1M"])
        finally:
            os.kill(donor.proc.pid, signal.SIGCONT)
        c = nbd.wait_counters(lambda c: c["stores"] == 2, "the queued block stored once the donor ran again")
        check(c["store_skips"] == 15 and c["misses"] == 17 and c["store_failures"] == 0,
              f"a full queue skipped 15 of 16 blocks, the reads were right ({c})")
        qemu_io(nbd.uri(), ["read -P 0x33 1M 1M"])
        c = nbd.wait_counters(lambda c: c["hits"] + c["misses"] == 33, "re-read counted")
        check(c["hits"] == 1, f"the one block stored is a hit, the skipped ones misses ({c})")
        nbd.stop()
        check(not sanitizer_report(nbd.read_log()), "no sanitizer report in nbdkit's log (full queue)")
    finally:
        nbd.stop()


def main():
    tools()
    if len(sys.argv) > 1 and sys.argv[1] == "launcher":
        return launcher()
    if len(sys.argv) > 1 and sys.argv[1] == "tamper":
        return tamper()
    tmp = tempfile.mkdtemp(prefix="uffdvm-dcache-", dir="/var/tmp")
    donor = Donor(capacity="64M")
    nbd = None
    try:
        image, ref = os.path.join(tmp, "disk.img"), os.path.join(tmp, "ref.img")
        for p in (image, ref):
            with open(p, "wb") as f:
                f.truncate(16 * MiB)
        bad_params(tmp, image, donor)
        thread_model(tmp, image, donor)
        stale_fill(tmp, donor)
        queue_full(tmp, donor)
        over_capacity(tmp, donor)
        block_sizes(tmp, donor)
        nbd = Nbdkit(tmp, image, ["cache-size=32M", f"cache-donor={donor.url}", f"cache-key={donor.key_file}",
                                  "cache-client-id=test-disk-cache", "cache-timeout-ms=1000"])
        nbd.wait_counters(lambda c: c["donors_up"] == 1, "the cache connected to its donor")

        qemu_io(nbd.uri(), PHASE1)
        qemu_io(ref, PHASE1)
        qemu_io(nbd.uri(), ["read -P 0xa1 0 4M", "read -P 0xb2 6M 2M"])
        # Stores are acknowledged after the reads returned: wait for both.
        c = nbd.wait_counters(lambda c: c["misses"] >= 96 and c["stores"] >= 96, "first read stored")
        check(c["hits"] == 0 and c["stores"] == 96 and c["used_bytes"] == 6 * MiB,
              f"first read: 96 misses stored, no hits ({c})")
        qemu_io(nbd.uri(), ["read -P 0xa1 0 4M", "read -P 0xb2 6M 2M"])
        c = nbd.wait_counters(lambda c: c["hits"] >= 96, "second read from memory")
        check(c["hits"] == 96 and c["misses"] == 96 and c["bytes_from_memory"] == 6 * MiB,
              f"second read: 96 hits, 6 MiB from donor memory ({c})")

        qemu_io(nbd.uri(), PHASE2)
        qemu_io(ref, PHASE2)
        qemu_io(nbd.uri(), PHASE2_CHECK)
        c = nbd.wait_counters(lambda c: c["drops"] >= 5, "cached blocks dropped")
        check(c["drops"] == 5 and c["integrity_failures"] == 0,
              f"partial write, trim and zero dropped cached blocks ({c})")

        c = nbd.wait_counters(lambda c: c["hits"] + c["misses"] >= 192 + 62, "phase 2 reads counted")
        hits = c["hits"]
        qemu_io(nbd.uri(), ["read -P 0xd4 1M 128k"])
        c = nbd.wait_counters(lambda c: c["hits"] >= hits + 2, "rewritten blocks served from memory")
        check(c["hits"] == hits + 2, "whole-block overwrite replaced the cached copies (hits, right data)")

        donor.kill()
        qemu_io(nbd.uri(), PHASE2_CHECK)
        # Blocks read meanwhile may still be queued when the loss is noticed: they fail with no donor to go to.
        c = nbd.wait_counters(lambda c: c["donor_failures"] == 1 and c["donors_up"] == 0 and c["used_bytes"] == 0,
                              "donor loss noticed, its blocks forgotten")
        check(c["queued_bytes"] == 0, "blocks of the killed donor are forgotten")
        qemu_io(nbd.uri(), ["write -P 0xe5 8M 256k", "read -P 0xe5 8M 256k"])
        qemu_io(ref, ["write -P 0xe5 8M 256k"])
        check(nbd.proc.poll() is None, "nbdkit keeps serving without its donor")
        nbd.stop()
        log = nbd.read_log()
        check("lost" in log and "misses from now on" in log, "the donor loss is logged")
        check(not sanitizer_report(log), "no sanitizer report in nbdkit's log")
        p = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", image, ref],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"qemu-img compare: image equals the reference ({p.stdout.strip()})")
    finally:
        if nbd:
            nbd.stop()
        donor.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
