#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Host integration files are real and consistent with the programs: every
long option a program's getopt table accepts is documented by its --help and
by its man page; the man pages render without warnings; the systemd units
pass `systemd-analyze verify` (pointing at this build); the bash completion
of uffd-ctl completes commands, subcommands and VM names from a live pager."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, exe, fail, guestsim, policy, require_root_and_uffd  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROGRAMS = {  # program: (source with its option table, man page)
    "uffd-pager": ("uffd-pager/main.c", "man/uffd-pager.8"),
    "uffd-ctl": ("uffd-pager/control/uffd-ctl.c", "man/uffd-ctl.1"),
    "uffd-qemu": ("qemu-glue/launcher.c", "man/uffd-qemu.1"),
    "uffd-donor": ("donor/uffd-donor.c", "man/uffd-donor.8"),
}
OPT = re.compile(r'\{\s*"([a-z][a-z0-9-]*)",\s*(?:no|required|optional)_argument')


def man_text(path):
    p = subprocess.run(["man", "--warnings", "-l", path], capture_output=True, text=True,
                       env=dict(os.environ, MANWIDTH="100", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING=""))
    return p.returncode, re.sub(r".\x08", "", p.stdout), p.stderr


def main():
    require_root_and_uffd()
    for prog, (src, man) in PROGRAMS.items():
        with open(os.path.join(SRC, src)) as f:
            opts = sorted(set(OPT.findall(f.read())))
        check(len(opts) >= 4, f"{prog}: {len(opts)} long options in {src}")
        out = subprocess.run([exe(prog), "--help"], capture_output=True, text=True, timeout=10)
        check(out.returncode == 0, f"{prog} --help exits 0")
        missing = [o for o in opts if f"--{o}" not in out.stdout]
        check(not missing, f"{prog} --help documents every option (missing: {missing})")
        if shutil.which("man"):
            rc, text, warn = man_text(os.path.join(SRC, man))
            check(rc == 0 and not warn.strip(), f"{man} renders without warnings ({warn.strip()[:200]})")
            text = text.replace("\u2010", "-").replace("\u2212", "-")
            missing = [o for o in opts if f"--{o}" not in text]
            check(not missing, f"{man} documents every option of {prog} (missing: {missing})")

    if shutil.which("systemd-analyze"):
        tmp = tempfile.mkdtemp(prefix="uffdvm-units-")
        try:
            bindir = os.path.join(tmp, "bin")
            os.mkdir(bindir)
            for prog in ("uffd-pager", "uffd-donor"):
                os.symlink(exe(prog), os.path.join(bindir, prog))
            units = []
            for u in ("uffd-pager.service", "uffd-donor.service"):
                with open(os.path.join(SRC, "packaging", "systemd", u)) as f:
                    text = f.read().replace("@BINDIR@", bindir)
                path = os.path.join(tmp, u)
                with open(path, "w") as f:
                    f.write(text)
                units.append(path)
            p = subprocess.run(["systemd-analyze", "verify"] + units, capture_output=True, text=True,
                               env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
            # Man pages are not installed from a build tree: only those lines may appear.
            problems = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip() and "man " not in ln]
            check(not problems, f"systemd-analyze verify accepts both units ({problems})")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # bash completion, with the two bash-completion helpers it uses stubbed.
    pager = Pager()
    g = None
    try:
        g = guestsim(pager, "web-1", policy("web-1", "64M"), ["--size", "64M", "--ops", "100000000",
                                                              "--threads", "1"])
        pager.wait_vm("web-1")
        stub = ('_init_completion() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; '
                'words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }\n_filedir() { COMPREPLY=(FILES); }\n')

        def complete(line):
            words = line.split(" ")
            quoted = " ".join("'" + w + "'" for w in words)
            script = (stub + f"source {os.path.join(SRC, 'packaging', 'bash-completion', 'uffd-ctl')}\n"
                      f"COMP_WORDS=({quoted}); "
                      f"COMP_CWORD={len(words) - 1}; _uffd_ctl; echo \"${{COMPREPLY[*]}}\"\n")
            env = dict(os.environ, PATH=os.path.dirname(exe("uffd-ctl")) + ":" + os.environ["PATH"])
            p = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, env=env,
                               timeout=20)
            if p.returncode != 0:
                fail(f"completion of {line!r}: {p.stderr}")
            return p.stdout.split()

        check(complete("uffd-ctl ") == ["vm", "pager", "donor", "metrics", "top", "events", "version"],
              "completes commands")
        check(complete("uffd-ctl donor ") == ["list", "add", "drain", "remove"], "completes donor subcommands")
        check(complete("uffd-ctl vm p") == ["park", "policy"], "completes vm subcommands")
        check(complete(f"uffd-ctl --control {pager.control} vm stats ") == ["web-1"],
              "completes VM names from the pager named by --control")
        check(complete(f"uffd-ctl -c {pager.control} vm policy get w") == ["web-1"],
              "completes VM names after vm policy get")
        check(complete("uffd-ctl top --") == ["--once", "--interval", "--count"], "completes top's options")
    finally:
        if g and g.poll() is None:
            g.kill()
            g.wait()
        pager.stop()


if __name__ == "__main__":
    main()
