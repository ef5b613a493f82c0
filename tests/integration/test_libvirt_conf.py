#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""uffd-qemu's libvirt mode without libvirt: a stand-in QEMU prints what it
was given, so each rule of docs/libvirt.md is checked on its own —
capability probes pass through without the shim, the policy comes from the
root-owned policy directory by -name guest=NAME, untrusted configuration or
policy files are refused, require_policy, and a QEMU user without
userfaultfd access gets one clear message instead of a dying QEMU."""
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import Pager, check, exe, require_root_and_uffd, skip  # noqa: E402

FAKE_QEMU = """#!/bin/sh
echo "FAKEQEMU $*"
echo "PRELOAD=${LD_PRELOAD:-}"
echo "NAME=${UFFD_GLUE_NAME:-}"
echo "POLICY=${UFFD_GLUE_POLICY:-}"
"""
QEMU_ARGS = ["-name", "guest=web1,debug-threads=on", "-m", "64",
             "-object", '{"qom-type":"memory-backend-memfd","id":"pc.ram","share":true,"size":67108864}',
             "-machine", "pc,memory-backend=pc.ram", "-sandbox", "on,obsolete=deny,spawn=deny"]


def run(conf, args, user=None):
    env = {"PATH": "/usr/bin:/bin", "UFFD_QEMU_CONF": conf}
    # A sanitized build preloads a sanitized shim into the stand-in QEMU (a shell): no leak report of sh.
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k] + (":detect_leaks=0" if k == "ASAN_OPTIONS" else "")
    pre = None
    if user is not None:
        pw = pwd.getpwnam(user)

        def pre():
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
    p = subprocess.run([exe("uffd-qemu")] + args, env=env, capture_output=True, text=True, timeout=30,
                       preexec_fn=pre)
    return p.returncode, p.stdout + p.stderr


def main():
    require_root_and_uffd()
    work = tempfile.mkdtemp(prefix="uffdvm-lvconf-", dir="/var/tmp")
    pager = None
    uffd_mode = stat.S_IMODE(os.stat("/dev/userfaultfd").st_mode)
    try:
        os.chmod(work, 0o755)
        fake = os.path.join(work, "fake-qemu")
        with open(fake, "w") as f:
            f.write(FAKE_QEMU)
        os.chmod(fake, 0o755)
        policies = os.path.join(work, "policies")
        os.mkdir(policies, 0o755)
        pol = os.path.join(policies, "web1.json")
        with open(pol, "w") as f:
            f.write('{"name": "web1", "local_memory": "48M"}\n')
        os.chmod(pol, 0o644)
        try:
            uid = pwd.getpwnam("libvirt-qemu").pw_uid
            user = "libvirt-qemu"
        except KeyError:
            uid, user = 65534, "nobody"
        pager = Pager(config={"allowed_uids": [uid]})
        os.chmod(pager.tmp, 0o755)
        conf = os.path.join(work, "uffd-qemu.conf")

        def write_conf(extra=""):
            with open(conf, "w") as f:
                f.write(f"# comment\n\nqemu = {fake}\npager_socket = {pager.sock}\n"
                        f"policy_dir = {policies}\n{extra}")
            os.chmod(conf, 0o644)

        write_conf()
        rc, out = run(conf, ["-machine", "none", "-qmp", "stdio", "-nodefaults"])
        check(rc == 0 and "FAKEQEMU -machine none -qmp stdio -nodefaults" in out and "PRELOAD=\n" in out,
              f"a capability probe runs the configured QEMU untouched, without the shim: {out!r}")

        rc, out = run(conf, QEMU_ARGS)
        check(rc == 0 and "NAME=web1" in out and '"local_memory": "48M"' in out,
              f"the policy is found by -name guest=web1 in policy_dir: {out[-400:]!r}")
        check("libuffd-glue.so" in out, "the shim is preloaded for a real start")

        rc, out = run(conf, ["-name", "guest=other"] + QEMU_ARGS[2:])
        check(rc == 0 and "PRELOAD=\n" in out and "starting it unpaged" in out,
              "a domain without a policy file starts as plain QEMU, without the shim")
        write_conf("require_policy = yes\n")
        rc, out = run(conf, ["-name", "guest=other"] + QEMU_ARGS[2:])
        check(rc == 1 and "no policy" in out and "require_policy" in out,
              f"require_policy refuses a domain without a policy: {out.strip()!r}")

        write_conf("bogus = 1\n")
        rc, out = run(conf, QEMU_ARGS)
        check(rc == 1 and ":6:1: unknown key 'bogus'" in out, f"unknown key named with line:column: {out.strip()!r}")

        write_conf()
        os.chmod(conf, 0o664)
        rc, out = run(conf, QEMU_ARGS)
        check(rc == 1 and "group-writable" in out, f"a group-writable configuration is refused: {out.strip()!r}")
        os.chmod(conf, 0o644)
        os.chown(conf, uid, 0)
        rc, out = run(conf, QEMU_ARGS)
        check(rc == 1 and "not root" in out, f"a configuration not owned by root is refused: {out.strip()!r}")
        os.chown(conf, 0, 0)

        os.chmod(policies, 0o777)
        rc, out = run(conf, QEMU_ARGS)
        check(rc == 1 and "policy directory" in out and "world-writable" in out,
              f"a world-writable policy directory is refused: {out.strip()!r}")
        os.chmod(policies, 0o755)
        os.chown(pol, uid, 0)
        rc, out = run(conf, QEMU_ARGS)
        check(rc == 1 and "not root" in out, f"a policy file not owned by root is refused: {out.strip()!r}")
        os.chown(pol, 0, 0)
        os.rename(pol, pol + ".real")
        os.symlink(pol + ".real", pol)
        rc, out = run(conf, QEMU_ARGS)
        check(rc == 1 and "symbolic link" in out, f"a symlinked policy is refused: {out.strip()!r}")
        os.unlink(pol)
        os.rename(pol + ".real", pol)

        # The QEMU user without access to /dev/userfaultfd (mode 0600, root's).
        os.chmod("/dev/userfaultfd", 0o600)
        if subprocess.run(["sysctl", "-n", "vm.unprivileged_userfaultfd"], capture_output=True,
                          text=True).stdout.strip() == "1":
            skip("vm.unprivileged_userfaultfd=1: cannot test a missing userfaultfd permission")
        rc, out = run(conf, QEMU_ARGS, user=user)
        check(rc == 1 and "cannot create a userfaultfd" in out and "docs/libvirt.md" in out
              and "FAKEQEMU" not in out,
              f"{user} without userfaultfd access: one clear message, QEMU not started: {out.strip()!r}")
    finally:
        os.chmod("/dev/userfaultfd", uffd_mode)
        if pager:
            pager.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
