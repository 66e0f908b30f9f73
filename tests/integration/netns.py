"""Plumbing shared by the suites that test on a real kernel inside throwaway network namespaces.

test_egress_probe.py, test_nftables_policy.py and test_isolation_matrix.py each
build their own topology, but they build it the same way: skip without root and
the tools, link the collection so ansible finds ``enclave.llm.*``, create
namespaces joined by veth pairs, start listeners in them, run a module through
ansible, and remove everything by name at the end. Keeping those steps here
means a fix to one (a flaky address, a leaked process) reaches every suite.
Importable by name: tests/integration is on sys.path; conftest.py is not meant
to be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTION_LINK = REPO / ".collections" / "ansible_collections" / "enclave" / "llm"
# The lab's canary host runs the same listeners, so the tests and the lab log alike.
CANARY_LISTENERS = REPO / "lab" / "canary" / "listeners.py"


def require_root(*tools, reason="network namespaces and nftables need root"):
    """Skip the calling test unless running as root with every one of ``tools`` installed.

    Namespaces, nftables and switching user all need root; without it, or
    without a tool, the suite cannot say anything, so it skips rather than fails.
    """
    if os.geteuid() != 0:
        pytest.skip(reason)
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def ensure_collection_link():
    """Create ``.collections/ansible_collections/enclave/llm -> ../../..`` when it is missing.

    ansible.cfg resolves ``enclave.llm.*`` through this link (`make deps` makes
    it too); a dangling link left by a moved checkout is replaced.
    """
    if not COLLECTION_LINK.exists():
        COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
        if COLLECTION_LINK.is_symlink():
            COLLECTION_LINK.unlink()
        COLLECTION_LINK.symlink_to("../../..")


def sh(*argv, check=True, **kwargs):
    """Run ``argv`` with its output captured as text; raise on failure unless ``check=False``."""
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


def in_ns(ns, *argv, **kwargs):
    """:func:`sh` inside network namespace ``ns`` (``ip netns exec``)."""
    return sh("ip", "netns", "exec", ns, *argv, **kwargs)


def add_namespace(ns):
    """Create network namespace ``ns`` with its loopback up (listeners and probes use it)."""
    sh("ip", "netns", "add", ns)
    in_ns(ns, "ip", "link", "set", "lo", "up")


def veth_pair(ns_a, dev_a, addrs_a, ns_b, dev_b, addrs_b):
    """Join ``ns_a`` and ``ns_b`` by a veth pair, address both ends and bring them up.

    IPv6 addresses get ``nodad``: duplicate address detection would leave them
    tentative (unusable) for a second or two after the link comes up.
    """
    sh("ip", "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b)
    for ns, dev, addresses in ((ns_a, dev_a, addrs_a), (ns_b, dev_b, addrs_b)):
        for address in addresses:
            in_ns(ns, "ip", "addr", "add", address, "dev", dev, *(["nodad"] if ":" in address else []))
        in_ns(ns, "ip", "link", "set", dev, "up")


def delete_namespaces(names):
    """Delete each of the namespaces ``names`` that exists (and so its veth ends).

    Exact names, never a pattern: another run's namespaces differ only by pid.
    """
    for ns in names:
        sh("ip", "netns", "del", ns, check=False)


@contextmanager
def listener(ns, argv, user=None):
    """Run ``argv`` in namespace ``ns`` (as uid ``user`` when given) until the block ends.

    The process must print ``ready`` first, so nothing is probed before it
    listens. Yields the process (its stdout stays readable); it is killed by
    its own pid afterwards, and waited for.
    """
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []
    process = subprocess.Popen(["ip", "netns", "exec", ns, *prefix, *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready", argv
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def ansible_bin(name):
    """The ansible command ``name`` of this interpreter's virtualenv, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def run_module(name, args, *, netns=None, extra=(), timeout=60):
    """Run ``enclave.llm.NAME`` with ``args`` through ``ansible -c local``; return the task's result.

    With ``netns`` the whole ansible run happens inside that namespace, so the
    module sees that namespace's network and ruleset. The json callback gives
    a result to assert on; without one the test fails with ansible's output.
    """
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    command = [
        ansible_bin("ansible"),
        *("localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"),
        *("-m", f"enclave.llm.{name}", "-a", json.dumps(args)),
        *extra,
    ]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    result = sh(*command, check=False, cwd=REPO, env=env, timeout=timeout)
    try:
        return json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        pytest.fail(f"ansible gave no result (rc {result.returncode}):\n{result.stdout}\n{result.stderr}")
