# SPDX-License-Identifier: MIT
"""Output of scripts/bench: the markdown table (stdout and results.md), a CSV
of every cell, PNG plots through gnuplot (latency percentiles as a CDF, since
guestsim reports percentiles rather than a full histogram; throughput bars),
a GOALS line (each goal of docs/benchmarks.md, met or not) and the final
SUMMARY line, computed from (b) or, while the pager has no donor support,
from (a), labelled with the configuration used."""
import csv
import json
import os
import shutil
import subprocess


ZIPF_THETA = 0.99  # guestsim --zipf-theta of every Zipf row


def wl_name(w):
    s = f"{w['pattern']}-{w['threads']}t-{int(w['local'] * 100)}%"
    if w.get("writes", 50) != 50:
        s += f"-w{w['writes']:g}"
    if w.get("sized"):  # a working set of its own
        s += f"-{w['size'] >> 20}M"
    if w["content"] != "random":
        s += f"-{w['content']}"
    if w.get("tag"):
        s += f"-{w['tag']}"
    return s


def us(ns):
    return "" if ns is None else f"{ns / 1000:.1f}"


def num(x, fmt="{:.0f}"):
    return "" if x is None else fmt.format(x)


def brief(m):
    if "na" in m:
        return f"n/a: {m['na']}"
    s = f"{m['pages_per_s']:.0f} pages/s p50 {us(m['p50_ns'])} us p99 {us(m['p99_ns'])} us"
    if m.get("fault_p50_ns") is not None:
        s += f" fault p50 {us(m['fault_p50_ns'])} us"
    if m.get("refaults") is not None:
        s += f" refaults {m['refaults']:.0f}"
    if m.get("cs_per_fault") is not None:
        s += f" switches/fault {m['cs_per_fault']:.1f}"
    if m.get("store_bytes_per_evict") is not None:
        s += f" store B/evict {m['store_bytes_per_evict']:.0f}"
    return s


def idle_brief(idle):
    if idle is None:
        return "not run"
    if "na" in idle:
        return f"n/a: {idle['na']}"
    return (f"{idle['size'] >> 20} MiB guestsim VM, {idle['local'] >> 20} MiB local, ({idle['config']}) spill file, "
            f"idle {idle['idle_s']:g} s after a {idle['fill_s']:.0f} s fill: CPU {idle['cpu_pct']:.2f}% of one core "
            f"(pager {idle['pager_cpu_pct']:.2f}%, guestsim with the shim {idle['guest_cpu_pct']:.2f}%); {idle['sampled_pages']} pages sampled, {idle['minor_faults']} minor faults, "
            f"{idle['evictions']} evictions meanwhile")


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


COLS = ["config", "workload", "pages_per_s", "p50_us", "p99_us", "p999_us", "fault_p50_us", "fault_p99_us",
        "cpu_us_per_fault", "cpu_over_uffd", "remote_faults", "refaults", "swap_ins", "throttle_waits", "wp_faults",
        "minor_faults", "sampled_pages", "evictions", "clean_evictions", "zero_evictions", "store_bytes_per_evict",
        "evict_gbps", "evict_gbps_access", "bytes_per_page", "cs_per_fault", "cs_pager_per_fault",
        "cs_donor_per_fault", "cs_guest_per_fault", "tput_vs_c", "tput_vs_d", "p99_vs_c", "refaults_vs_c", "reps",
        "note"]


def uffd_rtt_us(meta):
    return meta["floor"]["uffd_fault_ns"]["p50"] / 1000


def rows(results, meta):
    by = {(c, wl_name(w)): m for c, w, m in results}
    out = []
    for c, w, m in results:
        name = wl_name(w)
        if "na" in m:
            out.append({"config": c, "workload": name, "note": "n/a: " + m["na"]})
            continue
        mc, md = by.get(("c", name), {}), by.get(("d", name), {})
        r = {k: m.get(k) for k in COLS}
        r.update({
            "config": c, "workload": name,
            "p50_us": m["p50_ns"] / 1000, "p99_us": m["p99_ns"] / 1000, "p999_us": m["p999_ns"] / 1000,
            "fault_p50_us": m["fault_p50_ns"] / 1000 if m.get("fault_p50_ns") else None,
            "fault_p99_us": m["fault_p99_ns"] / 1000 if m.get("fault_p99_ns") else None,
            "cpu_over_uffd": ratio(m.get("cpu_us_per_fault"), uffd_rtt_us(meta)),
            "tput_vs_c": ratio(m["pages_per_s"], mc.get("pages_per_s")),
            "tput_vs_d": ratio(m["pages_per_s"], md.get("pages_per_s")),
            "p99_vs_c": ratio(m["p99_ns"], mc.get("p99_ns")),
            "refaults_vs_c": ratio(m.get("refaults"), mc.get("refaults")) if c != "c" else None,
            "note": "",
        })
        out.append(r)
    return out


def markdown(rs, meta, configs):
    lines = []
    fl = meta["floor"]
    lines.append(f"working set {meta['size'] >> 20} MiB, {meta['ops']} accesses per run, 50% writes unless the "
                 f"workload says -wN (N% writes), Zipf theta {meta.get('zipf_theta', ZIPF_THETA):g}, "
                 f"median of {meta['reps']}; {meta['nproc']} CPUs; kernel {meta['kernel']}; "
                 f"zram {meta.get('zram_algorithm') or '-'}; "
                 + (f"guest halt polling {meta['halt_poll_ns'][1]} ns (system: {meta['halt_poll_ns'][0]})"
                    if meta.get("halt_poll_ns") else "no guest halt polling set"))
    lines.append(f"floor: uffd fault p50 {us(fl['uffd_fault_ns']['p50'])} us p99 {us(fl['uffd_fault_ns']['p99'])} us"
                 f" + TCP 4K RTT p50 {us(fl['tcp_4k_rtt_ns']['p50'])} us p99 {us(fl['tcp_4k_rtt_ns']['p99'])} us"
                 f" = {us(fl['floor_p50_ns'])} us (p50)")
    if meta.get("b_na"):
        lines.append(f"(b) n/a: {meta['b_na']}")
    lines.append("configs: " + "; ".join(f"({k}) {v}" for k, v in configs.items()))
    lines.append("refaults: (a)/(b) faults served from the spill file or a donor; (c)/(d) major faults of guestsim "
                 "(swap-ins that read the device); both over the access phase")
    if meta.get("idle") is not None:
        lines.append("idle: " + idle_brief(meta["idle"]))
    lines.append("")
    hdr = ["cfg", "workload", "pages/s", "p50 us", "p99 us", "fault p50 us", "cpu us/fault", "cpu/uffd",
           "refaults", "clean ev", "store B/ev", "ev GB/s", "minor", "sampled", "sw/fault (pager/donor/guest)",
           "x(c)", "x(d)", "p99/(c)", "refaults/(c)"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for r in sorted(rs, key=lambda r: (r["workload"], r["config"])):
        if r.get("note"):
            lines.append(f"| {r['config']} | {r['workload']} | {r['note']} |" + " |" * (len(hdr) - 3))
            continue
        sw = ""
        if r.get("cs_per_fault") is not None:
            sw = (f"{r['cs_per_fault']:.1f} ({r['cs_pager_per_fault']:.1f}/{r['cs_donor_per_fault']:.1f}/"
                  f"{r['cs_guest_per_fault']:.1f})")
        elif r.get("cs_guest_per_fault") is not None:
            sw = f"guest {r['cs_guest_per_fault']:.1f}"
        cells = [r["config"], r["workload"], num(r["pages_per_s"]), num(r["p50_us"], "{:.1f}"),
                 num(r["p99_us"], "{:.1f}"), num(r["fault_p50_us"], "{:.1f}"),
                 num(r["cpu_us_per_fault"], "{:.1f}"), num(r["cpu_over_uffd"], "{:.2f}"), num(r["refaults"]),
                 num(r["clean_evictions"]), num(r["store_bytes_per_evict"]), num(r["evict_gbps_access"], "{:.2f}"),
                 num(r["minor_faults"]), num(r["sampled_pages"]), sw, num(r["tput_vs_c"], "{:.2f}"),
                 num(r["tput_vs_d"], "{:.2f}"), num(r["p99_vs_c"], "{:.2f}"), num(r["refaults_vs_c"], "{:.2f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The goals of docs/benchmarks.md (section Goals): (SUMMARY key, comparison, bound).
GOALS = [("zipf_vs_swapfile", ">=", 1.5), ("zipf_refaults_vs_majflt", "<=", 1.0),
         ("random1_vs_swapfile", ">=", 1.0), ("random2_vs_swapfile", ">=", 1.3), ("p99_vs_swapfile", "<=", 0.7),
         ("r90_store_vs_noclean", "<=", 0.4), ("r90_evict_gbps", ">=", 0.5), ("cpu_vs_uffd_rtt", "<=", 1.2),
         ("cs_per_fault", "<=", 3.0), ("idle_cpu_pct", "<=", 2.0)]


def summary(results, meta):
    """SUMMARY from (b) when it ran, else from (a), labelled."""
    by = {(c, wl_name(w)): m for c, w, m in results}
    cfg = "b" if any(c == "b" and "na" not in m for c, _, m in results) else "a"

    def get(c, name, key):
        m = by.get((c, name))
        return None if not m or "na" in m else m.get(key)

    loc = "25%"
    r1, r2, s1, z1 = f"uniform-1t-{loc}", f"uniform-2t-{loc}", f"seq-1t-{loc}", f"zipf-1t-{loc}"
    r90 = r90n = None
    for _, w, _ in results:
        if w["pattern"] == "uniform" and w["threads"] == 1 and w["writes"] == 10 and w["local"] == 0.25:
            if w.get("tag") == "noclean":
                r90n = wl_name(w)
            elif not w.get("tag"):
                r90 = wl_name(w)
    fp50 = get(cfg, r1, "fault_p50_ns")
    idle = meta.get("idle") or {}
    vals = {
        "fault_p50_over_floor": ratio(fp50, meta["floor"]["floor_p50_ns"]),
        "random1_vs_swapfile": ratio(get(cfg, r1, "pages_per_s"), get("c", r1, "pages_per_s")),
        "random2_vs_swapfile": ratio(get(cfg, r2, "pages_per_s"), get("c", r2, "pages_per_s")),
        "p99_vs_swapfile": ratio(get(cfg, r1, "p99_ns"), get("c", r1, "p99_ns")),
        "seq_vs_swapfile": ratio(get(cfg, s1, "pages_per_s"), get("c", s1, "pages_per_s")),
        "zipf_vs_swapfile": ratio(get(cfg, z1, "pages_per_s"), get("c", z1, "pages_per_s")),
        "zipf_refaults": get(cfg, z1, "refaults"),
        "zipf_majflt_swapfile": get("c", z1, "refaults"),
        "zipf_refaults_vs_majflt": ratio(get(cfg, z1, "refaults"), get("c", z1, "refaults")),
        # The same Zipf run with access sampling (victims "clock") against fifo, same configuration.
        "zipf_clock_vs_fifo": ratio(get(cfg, z1 + "-clock", "pages_per_s"), get(cfg, z1, "pages_per_s")),
        "zipf_clock_refaults_vs_fifo": ratio(get(cfg, z1 + "-clock", "refaults"), get(cfg, z1, "refaults")),
        "zipf_clock_minor_faults": get(cfg, z1 + "-clock", "minor_faults"),
        "zipf_clock_sampled_pages": get(cfg, z1 + "-clock", "sampled_pages"),
        "r90_store_bytes_per_evict": get(cfg, r90, "store_bytes_per_evict"),
        "r90_store_vs_noclean": ratio(get(cfg, r90, "store_bytes_per_evict"), get(cfg, r90n, "store_bytes_per_evict")),
        "r90_clean_evictions": get(cfg, r90, "clean_evictions"),
        "r90_evict_gbps": get(cfg, r90, "evict_gbps_access"),
        "evict_gbps": get(cfg, r1, "evict_gbps"),
        "bytes_per_page": get(cfg, r1, "bytes_per_page"),
        "cpu_us_per_fault": get(cfg, r1, "cpu_us_per_fault"),
        "cpu_vs_uffd_rtt": ratio(get(cfg, r1, "cpu_us_per_fault"), uffd_rtt_us(meta)),
        "cs_per_fault": get(cfg, r1, "cs_per_fault"),
        "cs_pager": get(cfg, r1, "cs_pager_per_fault"),
        "cs_donor": get(cfg, r1, "cs_donor_per_fault"),
        "cs_guest": get(cfg, r1, "cs_guest_per_fault"),
        "minor_faults": get(cfg, r1, "minor_faults"),
        "sampled_pages": get(cfg, r1, "sampled_pages"),
        "idle_cpu_pct": idle.get("cpu_pct"),
        "idle_pager_cpu_pct": idle.get("pager_cpu_pct"),
        "idle_gib": idle["size"] / (1 << 30) if "size" in idle else None,
    }
    def fmt(v):
        if v is None:
            return "n/a"
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"  # counts in full, ratios to 3 digits
    parts = [f"{k}={fmt(v)}" for k, v in vals.items()]
    return "SUMMARY " + " ".join(parts) + f" config={cfg}", vals, cfg


def goals(vals):
    """One line: each goal with its value and whether it is met."""
    out, met, known = [], 0, 0
    for k, op, bound in GOALS:
        v = vals.get(k)
        if v is None:
            out.append(f"{k} n/a ({op}{bound:g})")
            continue
        ok = v >= bound if op == ">=" else v <= bound
        known += 1
        met += ok
        note = ""
        if k == "idle_cpu_pct" and vals.get("idle_gib") != 4:
            note = f", {vals.get('idle_gib'):g} GiB VM, the goal is for 4 GiB"
        out.append(f"{k} {v:.3g} ({op}{bound:g}{note}) {'met' if ok else 'NOT met'}")
    return f"GOALS {met}/{known} met ({len(GOALS)} goals): " + "; ".join(out)


def gnuplot(script, out_dir):
    if not shutil.which("gnuplot"):
        return "gnuplot not installed"
    term = "pngcairo size 1000,600"
    probe = subprocess.run(["gnuplot", "-e", "set terminal pngcairo"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stderr.strip():
        term = "png size 1000,600"
    r = subprocess.run(["gnuplot"], input=f"set terminal {term}\n" + script, capture_output=True, text=True,
                       cwd=out_dir)
    return r.stderr.strip() or None


def plots(out_dir, results, configs):
    errs = []
    names = []
    for _, w, _ in results:
        if wl_name(w) not in names:
            names.append(wl_name(w))
    cfgs = [c for c in "abcde" if any(r[0] == c for r in results)]
    by = {(c, wl_name(w)): m for c, w, m in results}
    # throughput bars: one cluster per workload, one bar per configuration
    with open(os.path.join(out_dir, "throughput.dat"), "w") as f:
        f.write("workload " + " ".join(f'"({c})"' for c in cfgs) + "\n")
        for n in names:
            vals = []
            for c in cfgs:
                m = by.get((c, n))
                vals.append("0" if not m or "na" in m else f"{m['pages_per_s']:.0f}")
            f.write(f'"{n}" ' + " ".join(vals) + "\n")
    cols = " ".join(f"'throughput.dat' using {i + 2}:xtic(1) title columnhead," for i in range(len(cfgs)))
    errs.append(gnuplot("set output 'throughput.png'\nset style data histograms\nset style histogram cluster gap 1\n"
                        "set style fill solid border -1\nset ylabel 'pages/s (access phase)'\nset logscale y\n"
                        "set xtics rotate by -30\nset key top right\nplot " + cols.rstrip(",") + "\n", out_dir))
    # latency CDFs from the percentiles guestsim reports
    qs = [("min_ns", 0.0), ("p50_ns", 0.5), ("p90_ns", 0.9), ("p99_ns", 0.99), ("p999_ns", 0.999), ("max_ns", 1.0)]
    for n in names:
        series = []
        for c in cfgs:
            m = by.get((c, n))
            if not m or "na" in m:
                continue
            dat = f"cdf-{n}-{c}.dat".replace("%", "pct")
            with open(os.path.join(out_dir, dat), "w") as f:
                for k, q in qs:
                    f.write(f"{max(m[k], 1) / 1000:.3f} {q}\n")
            series.append(f"'{dat}' using 1:2 with linespoints title '({c})'")
        if series:
            png = f"latency-{n}.png".replace("%", "pct")
            errs.append(gnuplot(f"set output '{png}'\nset logscale x\nset xlabel 'access latency (us)'\n"
                                f"set ylabel 'fraction of accesses'\nset title '{n}'\nset key bottom right\n"
                                "set yrange [0:1.02]\nplot " + ", ".join(series) + "\n", out_dir))
    return [e for e in errs if e]


def emit(out_dir, results, meta, configs):
    rs = rows(results, meta)
    md = markdown(rs, meta, configs)
    line, vals, cfg = summary(results, meta)
    gl = goals(vals)
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=COLS)
        wr.writeheader()
        for r in rs:
            wr.writerow({k: r.get(k) for k in COLS})
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": [{"config": c, "workload": w, "metrics": m} for c, w, m in results],
                   "summary": vals, "summary_config": cfg, "goals": gl}, f, indent=1)
    errs = plots(out_dir, results, configs)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md + "\n\n" + gl + "\n" + line + "\n")
    print(md)
    print()
    t = meta["timings_s"]
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in t.items()))
    for e in errs:
        print(f"plot warning: {e}")
    print(f"results: {out_dir}/results.md, results.csv, results.json, *.png")
    print(gl)
    print(line, flush=True)
