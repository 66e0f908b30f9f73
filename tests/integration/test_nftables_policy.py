"""The nftables_policy module on a real kernel, inside throwaway network namespaces.

Topology (nothing leaves the two namespaces; documentation addresses only)::

    enc-nft-host-PID  192.0.2.1/24 2001:db8:1::1/64   the enclave host: the module runs here
          | veth
    enc-nft-peer-PID  192.0.2.2 192.0.2.3 /24          "mirror" (allowed) and "internet" (blocked)
                      2001:db8:1::2 2001:db8:1::3 /64   on the same listener, port 8080

The module runs through ``ansible -c local`` started inside the host namespace,
so it acts on that namespace's ruleset and never on the machine's own. Every
"blocked" below is paired with an "allowed" in the same test and proven by the
named drop counter moving and the listener seeing nothing. The tests share one
namespace pair and run in file order (apply, re-apply, traffic, check mode, bad
input, absent); the whole file takes about 20 s.
Needs root, nft, ip and unshare; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from contextlib import ExitStack

import pytest
from netns import (
    add_namespace,
    delete_namespaces,
    ensure_collection_link,
    in_ns,
    listener,
    require_root,
    run_module,
    veth_pair,
)

SUFFIX = str(os.getpid())
HOST_NS = f"enc-nft-host-{SUFFIX}"
PEER_NS = f"enc-nft-peer-{SUFFIX}"
VETH_HOST, VETH_PEER = f"encnft{SUFFIX}h"[:15], f"encnft{SUFFIX}p"[:15]
PORT = 8080
NOBODY = 65534

ALLOWED_V4, BLOCKED_V4 = "192.0.2.2", "192.0.2.3"
ALLOWED_V6, BLOCKED_V6 = "2001:db8:1::2", "2001:db8:1::3"

# Accepts TCP on every address of its namespace and appends the local address
# of each accepted connection to a file: what reached the listener, and where.
LISTENER = r"""
import socket, sys
ports = [int(p) for p in sys.argv[2:]]
socks = []
for port in ports:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(16)
    socks.append(s)
print("ready", flush=True)
import selectors
sel = selectors.DefaultSelector()
for s in socks:
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        with open(sys.argv[1], "a") as log:
            log.write("%s %d\n" % (conn.getsockname()[0].replace("::ffff:", ""), conn.getsockname()[1]))
        conn.close()
"""

# Connects once and prints the outcome: connected, or the errno name / timeout.
CONNECT = r"""
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, str(exc.errno)))
"""

OTHER_TABLE = """
table inet othertable {
    chain input { type filter hook input priority -10; policy accept; accept; }
    chain output { type filter hook output priority -10; policy accept; accept; }
    chain forward { type filter hook forward priority -10; policy accept; accept; }
}
"""


def _without_counts(value):
    if isinstance(value, list):
        return [_without_counts(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_counts(item) for key, item in value.items() if key not in ("packets", "bytes")}
    return value


class Lab:
    def __init__(self, log_dir):
        self.peer_log = log_dir / "peer.log"
        self.host_log = log_dir / "host.log"

    # --- the module -----------------------------------------------------------
    def module(self, *, check=False, **args):
        """Run enclave.llm.nftables_policy in the host namespace; return its result dict."""
        return run_module("nftables_policy", args, netns=HOST_NS, extra=["--diff", *(["--check"] if check else [])])

    # --- state of the host namespace -------------------------------------------
    def nft(self, *args):
        return in_ns(HOST_NS, "nft", *args).stdout

    def ruleset(self):
        """The host namespace's whole ruleset without counter values, but with handles:
        replacing a table, even by an identical one, changes its handles."""
        return _without_counts(json.loads(self.nft("-j", "list", "ruleset"))["nftables"][1:])

    def table_exists(self):
        return in_ns(HOST_NS, "nft", "list", "table", "inet", "enclave", check=False).returncode == 0

    def counter(self, name):
        data = json.loads(self.nft("-j", "list", "counter", "inet", "enclave", name))
        return data["nftables"][1]["counter"]["packets"]

    # --- traffic ---------------------------------------------------------------
    def connect(self, ns, address, port=PORT, uid=None, timeout=1.0):
        argv = [sys.executable, "-c", CONNECT, address, str(port), str(timeout)]
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
        return in_ns(ns, *argv).stdout.strip()

    def seen(self, log, address, port=PORT, at_least=0):
        """How many connections the listener accepted on ``address``:``port``.

        The kernel completes a handshake before the listener accepts and logs
        it, so a busy machine may log it a moment after connect() returned:
        with ``at_least``, wait up to 5 s for that many before counting.
        """
        deadline = time.monotonic() + 5
        while True:
            count = log.read_text().splitlines().count(f"{address} {port}") if log.exists() else 0
            if count >= at_least or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_root("nft", "ip", "unshare", "setpriv")
    ensure_collection_link()

    lab = Lab(tmp_path_factory.mktemp("nft"))
    namespaces = (HOST_NS, PEER_NS)
    delete_namespaces(namespaces)
    try:
        add_namespace(HOST_NS)
        add_namespace(PEER_NS)
        veth_pair(
            *(HOST_NS, VETH_HOST, ["192.0.2.1/24", "2001:db8:1::1/64"]),
            *(PEER_NS, VETH_PEER, ["192.0.2.2/24", "192.0.2.3/24", "2001:db8:1::2/64", "2001:db8:1::3/64"]),
        )
        with ExitStack() as listeners:
            for ns, log, ports in ((PEER_NS, lab.peer_log, [PORT]), (HOST_NS, lab.host_log, [22, 8081])):
                listeners.enter_context(listener(ns, [sys.executable, "-c", LISTENER, str(log), *map(str, ports)]))
            # Without any ruleset every path is open: the baseline the policy must close.
            deadline = time.monotonic() + 10
            while lab.connect(HOST_NS, ALLOWED_V6) != "connected" and time.monotonic() < deadline:
                time.sleep(0.2)
            for address in (ALLOWED_V4, BLOCKED_V4, ALLOWED_V6, BLOCKED_V6):
                assert lab.connect(HOST_NS, address) == "connected", address
            assert lab.connect(PEER_NS, "192.0.2.1", 8081) == "connected"
            lab.peer_log.unlink()
            lab.host_log.unlink()
            yield lab
    finally:
        delete_namespaces(namespaces)


def policy(**changes):
    data = {
        "zones": {"admin": ["192.0.2.0/24", "2001:db8:1::/64"]},
        "ingress": [{"zone": "admin", "proto": "tcp", "ports": [22]}],
        "egress": [
            {"destination": ALLOWED_V4, "proto": "tcp", "ports": [PORT], "owner": "it", "reason": "mirror"},
            {"destination": ALLOWED_V6, "proto": "tcp", "ports": [PORT], "owner": "it", "reason": "mirror v6"},
        ],
        "deny_egress_uids": [NOBODY],
        "log": {"rate": "1/second", "burst": 2, "prefix": "enc-test"},
    }
    data.update(changes)
    return data


def applied(result):
    """True when the module ran the applying ``nft -f FILE`` (not only ``nft -c -f`` or a listing)."""
    return any(shlex.split(command)[1:2] == ["-f"] for command in result["commands"])


def test_apply_closes_every_direction(lab):
    in_ns(HOST_NS, "nft", "-f", "-", input=OTHER_TABLE)
    result = lab.module(**policy())
    assert result["changed"] is True, result
    assert "failed" not in result
    assert applied(result)
    assert result["diff"]["prepared"].startswith("--- live: table inet enclave")
    chains = {
        obj["chain"]["name"]: obj["chain"]
        for obj in json.loads(lab.nft("-j", "list", "table", "inet", "enclave"))["nftables"]
        if "chain" in obj
    }
    for hook in ("input", "output", "forward"):
        assert chains[hook]["hook"] == hook
        assert chains[hook]["policy"] == "drop"
    # The other owner's table is still there, untouched.
    assert "othertable" in lab.nft("list", "tables")


def test_second_apply_changes_nothing(lab):
    before = lab.ruleset()
    result = lab.module(**policy())
    assert result["changed"] is False, result["diff"]
    assert result["diff"]["prepared"] == ""
    assert not applied(result)
    assert lab.ruleset() == before


def test_allowed_egress_connects_blocked_is_dropped_despite_accept_all_table(lab):
    for allowed, blocked in ((ALLOWED_V4, BLOCKED_V4), (ALLOWED_V6, BLOCKED_V6)):
        drops = lab.counter("drop_output")
        assert lab.connect(HOST_NS, allowed) == "connected", allowed
        assert lab.seen(lab.peer_log, allowed, at_least=1) == 1
        assert lab.connect(HOST_NS, blocked) in ("timeout", "EPERM"), blocked
        assert lab.counter("drop_output") > drops, blocked
        assert lab.seen(lab.peer_log, blocked) == 0
    # othertable accepts everything at an earlier priority; our drop still wins.
    assert "accept" in lab.nft("list", "table", "inet", "othertable")


def test_denied_uid_gets_nothing_even_to_allowed_destinations(lab):
    before = lab.seen(lab.peer_log, ALLOWED_V4)
    assert lab.connect(HOST_NS, ALLOWED_V4) == "connected"
    drops = lab.counter("drop_uid")
    assert lab.connect(HOST_NS, ALLOWED_V4, uid=NOBODY) in ("timeout", "EPERM")
    assert lab.counter("drop_uid") > drops
    assert lab.seen(lab.peer_log, ALLOWED_V4, at_least=before + 1) == before + 1
    assert lab.connect(HOST_NS, "127.0.0.1", 22, uid=NOBODY) == "connected"  # loopback stays open


def test_ingress_only_from_the_admin_zone_to_ssh(lab):
    drops = lab.counter("drop_input")
    assert lab.connect(PEER_NS, "192.0.2.1", 22) == "connected"
    assert lab.connect(PEER_NS, "192.0.2.1", 8081) == "timeout"
    assert lab.counter("drop_input") > drops
    assert lab.seen(lab.host_log, "192.0.2.1", 22, at_least=1) == 1
    assert lab.seen(lab.host_log, "192.0.2.1", 8081) == 0


def test_check_mode_reports_but_applies_nothing(lab):
    before = lab.ruleset()
    extra = {"destination": BLOCKED_V4, "proto": "tcp", "ports": [PORT], "owner": "it", "reason": "check mode"}
    result = lab.module(check=True, **policy(egress=[*policy()["egress"], extra]))
    assert result["changed"] is True
    assert BLOCKED_V4 in result["diff"]["prepared"]
    assert not applied(result)
    assert lab.ruleset() == before
    assert lab.connect(HOST_NS, BLOCKED_V4, timeout=0.5) in ("timeout", "EPERM")


def test_a_group_no_denied_user_has_is_named(lab):
    # nobody's primary group is nogroup: a setuid program it runs keeps that, not 64990.
    result = lab.module(check=True, **policy(deny_egress_gids=[64990]))
    assert "failed" not in result, result.get("msg")
    assert any(
        "deny_egress_gids: 64990 is no primary group of a user in deny_egress_uids" in w for w in result["warnings"]
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"zones": {"admin": []}}, "zones.admin is empty", id="empty-admin"),
        pytest.param(
            {"egress": [{"destination": "192.0.2.0/33", "proto": "tcp", "ports": [80], "owner": "o", "reason": "r"}]},
            "egress[0].destination: '192.0.2.0/33' is not an address or CIDR",
            id="bad-cidr",
        ),
        pytest.param(
            {"egress": [{"destination": BLOCKED_V4, "proto": "tcp", "ports": ["90-80"], "reason": "r"}]},
            "egress[0].owner is missing",
            id="no-owner-reversed-range",
        ),
        pytest.param(
            # daemon's own group: denying it would cut daemon (not in deny_egress_uids) off too.
            {"deny_egress_gids": ["daemon"]},
            "deny_egress_gids: the group daemon (1) is shared with daemon, whose egress is not denied",
            id="shared-group",
        ),
        pytest.param({"deny_egress_gids": [0]}, "deny_egress_gids: 0 is the root group", id="root-group"),
        pytest.param(
            {"protect_client": "198.51.100.1", "protect_port": 22},
            "this policy would lock out the controller: a new SSH connection from 198.51.100.1 to tcp port 22",
            id="controller-locked-out",
        ),
    ],
)
def test_bad_policy_changes_nothing(lab, changes, message):
    before = lab.ruleset()
    result = lab.module(**policy(**changes))
    assert result.get("failed") is True
    assert message in result["msg"]
    assert result["commands"] == []
    assert lab.ruleset() == before


def test_absent_removes_only_our_table(lab):
    result = lab.module(state="absent")
    assert result["changed"] is True
    assert not lab.table_exists()
    assert "othertable" in lab.nft("list", "tables")
    assert lab.module(state="absent")["changed"] is False
    assert lab.connect(HOST_NS, BLOCKED_V4) == "connected"
