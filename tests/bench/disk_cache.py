# SPDX-License-Identifier: MIT
"""scripts/bench --disk-cache: a TCG guest reads its virtual disk through
nbdkit with the image behind nbdkit's delay filter (emulated network
storage), once without the cache ("native") and once with the uffdvm cache
filter above the delay (a real uffd-donor on TCP loopback, TLS). The guest
(tests/e2e/guest-disk-workload.c "bench") reads the raw device with
O_DIRECT (its page cache serves nothing): sequential 64 KiB over one
region, random 4 KiB over another, each pass twice (cold, then warm); the
file plugin runs with cache=none so the host's page cache keeps little.
Reports throughput, guest-visible p50/p99 and the cache's hit ratio per
pass (from its stats file, read between passes). A third run without the
delay ("nodelay") measures the path itself (TCG, virtio-blk, NBD, nbdkit):
no cache can make a read cheaper than that.

The swap rows (the seed's case, --disk-swap-mib; --disk-rows swap for them
alone): a guest with --disk-swap-ram MiB makes the same disk its swap and
writes, then touches at random, --disk-swap-mib MiB of memory, with and
without the cache; the image pays the delay on writes too (swap-outs are
writes). Two cached configs: the defaults (64 KiB blocks, writes only
replace cached copies) and "cached-wfill" (4 KiB blocks, a swap slot each,
with cache-write-fill: a page swapped out is in the cache when it is swapped
back in)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

MiB = 1 << 20


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


SWAP_CFGS = {"native": [], "cached": [], "cached-wfill": ["cache-block-size=4K", "cache-write-fill=true"]}


def run_guest(build, kernel, initrd, image, tmp, cfg, args, donor, swap=False):
    run_name = f"{cfg}-swap" if swap else cfg  # a run's own files: an old pid file would pass for the new nbdkit's
    sock, pidfile = os.path.join(tmp, f"{run_name}.sock"), os.path.join(tmp, f"{run_name}.pid")
    stats_path = os.path.join(tmp, f"{run_name}-stats.json")
    filt = os.path.join(build, "disk-cache", "nbdkit-uffdvm-cache-filter.so")
    cmd = ["nbdkit", "-f", "-U", sock, "-P", pidfile]
    cached = cfg.startswith("cached")
    if cached:
        cmd += [f"--filter={filt}"]
    # The delay below the cache: misses pay it, hits do not. "nodelay" is the floor: the path alone.
    if cfg == "nodelay":
        cmd += ["file", image, "cache=none"]
    else:
        cmd += ["--filter=delay", "file", image, "cache=none", f"rdelay={args.disk_delay_ms}ms"]
        if swap:
            cmd += [f"wdelay={args.disk_delay_ms}ms"]
    if cached:
        cmd += [f"cache-size={args.disk_cache_mib}M", f"cache-donor={donor.url}", f"cache-key={donor.key_file}",
                "cache-client-id=bench-disk", f"cache-stats={stats_path}"] + (SWAP_CFGS[cfg] if swap else [])
    nlog = open(os.path.join(tmp, f"{run_name}-nbdkit.log"), "w")
    nbd = subprocess.Popen(cmd, stdout=nlog, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while not (os.path.exists(pidfile) and os.path.getsize(pidfile)):
            if nbd.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nbdkit ({cfg}) did not start")
            time.sleep(0.05)
        ram = args.disk_swap_ram if swap else args.disk_guest_ram
        swap_arg = f" uffdvm.swap_mib={args.disk_swap_mib}" if swap else ""
        q = [os.environ.get("UFFDVM_QEMU", "qemu-system-x86_64"), "-accel", "tcg", "-m", str(ram),
             "-smp", "1", "-nographic", "-no-reboot", "-net", "none", "-kernel", kernel, "-initrd", initrd,
             "-append", f"console=ttyS0 panic=-1 quiet uffdvm.seed=0x5eed uffdvm.bench_mib={args.disk_region_mib} "
                        f"uffdvm.bench_ops={args.disk_ops}{swap_arg}",
             "-drive", f"file=nbd+unix:///?socket={sock},format=raw,if=virtio"]
        guest = subprocess.Popen(q, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        passes, prev, tail = [], None, []

        def counters():
            try:
                with open(stats_path) as f:
                    return json.load(f)
            except (OSError, ValueError):
                return None
        for line in guest.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            if not line.startswith("UFFDVM-BENCH "):
                continue
            p = json.loads(line.split(" ", 1)[1])
            if cached:
                time.sleep(0.6)  # the guest sleeps 1 s between passes; the stats file lags 250 ms at most
                c = counters() or {}
                prev = prev or {"hits": 0, "misses": 0}
                h, m = c.get("hits", 0) - prev["hits"], c.get("misses", 0) - prev["misses"]
                p["hit_ratio"] = h / (h + m) if h + m else None
                prev = c
            p["mib_s"] = p["bytes"] / MiB / p["seconds"]
            p["iops"] = p["ops"] / p["seconds"]
            passes.append(p)
            p["load"] = os.getloadavg()[0]
            log(f"{cfg} {p['pass']}: {p['mib_s']:.1f} MiB/s, {p['iops']:.0f} IOPS, p50 {p['p50_us']:.0f} us, "
                f"p99 {p['p99_us']:.0f} us, load {p['load']:.1f}" + (f", hit ratio {p['hit_ratio']:.2f}" if p.get("hit_ratio") is not None
                                                else ""))
        guest.wait(timeout=60)
        want = 3 if swap else 4
        if len(passes) != want:
            raise RuntimeError(f"guest ({cfg}) reported {len(passes)} of {want} passes; its last lines:\n"
                               + "\n".join(tail))
        return passes
    finally:
        nbd.terminate()
        nbd.wait(timeout=60)
        nlog.close()


def ratios(native, cached):
    return {nat["pass"]: {"throughput_x": cac["mib_s"] / nat["mib_s"], "p99_ratio": cac["p99_us"] / nat["p99_us"]}
            for nat, cac in zip(native, cached)}


def table(res, cfgs, rat, swap=False):
    lines = ["| config | pass | MiB/s | IOPS | p50 | " + ("p90 | p99 | p99.9 " if swap else "p99 ") +
             "| hit ratio | vs native | load |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if swap else "")]
    for cfg in cfgs:
        for p in res[cfg]:
            hr = p.get("hit_ratio")
            r = rat[cfg][p["pass"]] if swap and cfg in rat else rat.get(p["pass"]) if cfg.startswith("cached") else None
            vs = f"{r['throughput_x']:.2f}x, p99 {r['p99_ratio']:.2f}x" if r else ""
            lat = (f"{p['p90_us']:.0f} us | {p['p99_us']:.0f} us | {p['p999_us']:.0f} us" if swap
                   else f"{p['p99_us']:.0f} us")
            lines.append(f"| {cfg} | {p['pass']} | {p['mib_s']:.1f} | {p['iops']:.0f} | {p['p50_us']:.0f} us | {lat} | "
                         f"{'' if hr is None else f'{hr:.2f}'} | {vs} | {p['load']:.1f} |")
    return lines


def run(args, build, out):
    os.environ["UFFDVM_BUILD_DIR"] = build  # harness finds uffd-donor there
    from harness import Donor
    base_initrd = os.path.join(build, "tests", "e2e", "e2e-initramfs.cpio.gz")
    workload = os.path.join(build, "tests", "e2e", "guest-disk-workload")
    for t in ("nbdkit", os.environ.get("UFFDVM_QEMU", "qemu-system-x86_64")):
        if not shutil.which(t):
            return {"na": f"{t} not installed"}
    tmp = tempfile.mkdtemp(prefix="uffdvm-bench-disk-", dir="/var/tmp")
    donor = None
    try:
        kernel, initrd = os.path.join(tmp, "vmlinuz"), os.path.join(tmp, "initrd")
        subprocess.run([os.path.join(SRC, "tests", "e2e", "disk-guest.sh"), base_initrd, workload, kernel, initrd],
                       check=True, capture_output=True)
        image = os.path.join(tmp, "disk.img")
        with open(image, "wb") as f:  # real data: a sparse image would read as holes
            for _ in range(2 * args.disk_region_mib + 1):
                f.write(os.urandom(MiB))
            os.fsync(f.fileno())
        donor = Donor(capacity=f"{2 * args.disk_cache_mib}M",
                      extra_args=["--preallocate"] if args.disk_donor_preallocate else [])
        res = {"delay_ms": args.disk_delay_ms, "region_mib": args.disk_region_mib, "ops": args.disk_ops,
               "cache_mib": args.disk_cache_mib, "guest_ram_mib": args.disk_guest_ram, "block_size": 65536,
               "load_at_start": os.getloadavg()[0]}
        lines = []
        if args.disk_rows in ("all", "read"):
            for cfg in ("nodelay", "native", "cached"):
                res[cfg] = run_guest(build, kernel, initrd, image, tmp, cfg, args, donor)
            res["ratios"] = ratios(res["native"], res["cached"])
            lines += [f"Image behind nbdkit's delay filter ({args.disk_delay_ms} ms per read), file plugin cache=none; "
                      f"guest {args.disk_guest_ram} MiB RAM, TCG, O_DIRECT reads of /dev/vda; cache "
                      f"{args.disk_cache_mib} MiB on one uffd-donor (TCP loopback, TLS"
                      f"{', --preallocate' if args.disk_donor_preallocate else ''}), 64 KiB blocks.", ""]
            lines += table(res, ("nodelay", "native", "cached"), res["ratios"])
        if args.disk_rows in ("all", "swap"):
            res["swap"] = {"ram_mib": args.disk_swap_ram, "mib": args.disk_swap_mib}
            for cfg in SWAP_CFGS:
                res["swap"][cfg] = run_guest(build, kernel, initrd, image, tmp, cfg, args, donor, swap=True)
            res["swap"]["ratios"] = {c: ratios(res["swap"]["native"], res["swap"][c]) for c in SWAP_CFGS if c != "native"}
            lines += ["", f"Swap: guest {args.disk_swap_ram} MiB RAM, its disk as swap, {args.disk_swap_mib} MiB of "
                          f"memory written, then {args.disk_ops} random page touches twice; image behind the delay "
                          f"filter ({args.disk_delay_ms} ms per read and per write). Latency per page touch.", ""]
            lines += table(res["swap"], tuple(SWAP_CFGS), res["swap"]["ratios"], swap=True)
        res["load_at_end"] = os.getloadavg()[0]
        lines += ["", f"Load average (1 min): {res['load_at_start']:.1f} at start, {res['load_at_end']:.1f} at end."]
        with open(os.path.join(out, "disk-cache.json"), "w") as f:
            json.dump(res, f, indent=1)
        with open(os.path.join(out, "disk-cache.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))
        return res
    finally:
        if donor:
            donor.stop()
        shutil.rmtree(tmp, ignore_errors=True)
