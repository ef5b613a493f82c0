#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""uffd-pager --libvirt URI without a libvirtd: the option's checks, a
connection to libvirt's built-in test driver (test:///default, no daemon
needed), and an unreachable URI, which must leave the pager serving (the
libvirt connection only reports, paging does not depend on it). A build
without libvirt must refuse the option with a clear error instead.
The lifecycle events themselves are checked under a real libvirtd by
test_libvirt.py."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Pager, check, exe, require_root_and_uffd  # noqa: E402


def wait_log(pager, text, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline and text not in pager.read_log():
        time.sleep(0.05)
    return text in pager.read_log()


def main():
    require_root_and_uffd()
    helptext = subprocess.run([exe("uffd-pager"), "--help"], capture_output=True, text=True, timeout=10).stdout
    check("--libvirt URI" in helptext, "--help documents --libvirt")
    if "built without libvirt" in helptext:
        p = subprocess.run([exe("uffd-pager"), "--libvirt", "qemu:///system"], capture_output=True, text=True,
                           timeout=10)
        check(p.returncode == 2 and "built without libvirt" in p.stderr,
              f"a build without libvirt refuses --libvirt: exit {p.returncode} {p.stderr!r}")
        return
    p = subprocess.run([exe("uffd-pager"), "--libvirt", ""], capture_output=True, text=True, timeout=10)
    check(p.returncode == 2 and "expected a libvirt URI" in p.stderr, f"--libvirt '' refused: {p.stderr!r}")

    pager = Pager(extra_args=["--libvirt", "test:///default"])
    try:
        check(wait_log(pager, "libvirt: connected to test:///default, watching domain lifecycle events"),
              f"connected to libvirt's test driver: {pager.read_log()[-600:]!r}")
        check(pager.alive() and pager.result("vm.list")["vms"] == [], "the pager serves its control socket")
    finally:
        pager.stop()  # fails the test on a bad exit (the libvirt thread must stop on SIGTERM)

    pager = Pager(extra_args=["--libvirt", "qemu+unix:///system?socket=/nonexistent/libvirt-sock"])
    try:
        check(wait_log(pager, "libvirt: cannot connect to qemu+unix:///system?socket=/nonexistent/libvirt-sock"),
              f"an unreachable libvirt is logged: {pager.read_log()[-600:]!r}")
        time.sleep(0.3)
        check(pager.alive() and pager.result("vm.list")["vms"] == [],
              "the pager keeps serving without its libvirt connection")
    finally:
        pager.stop()


if __name__ == "__main__":
    main()
