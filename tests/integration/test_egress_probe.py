"""The egress_probe module on a real kernel, between two throwaway network namespaces.

Topology (nothing leaves the two namespaces; documentation addresses only)::

    enc-probe-PID-host  192.0.2.1/24 2001:db8:2::1/64   probes run here; a small
          | veth                                        `inet enclave` table filters output
    enc-probe-PID-peer  192.0.2.2/24 2001:db8:2::2/64   listeners.py: tcp 8080 8081 8084,
                                                        udp echo 7007 7009, dns 53

The host namespace's table accepts tcp 8080/8082/8084, udp 53/7007/7008 and
ICMP echo, drops tcp 8084 for uid 65534 into counter ``drop_uid`` and
everything else into ``drop_output``. 203.0.113.0/24 has no route there.
Every "blocked" is proven by the counter moving and the peer's log showing
nothing, next to an allowed probe that did get through. The module runs both
ways: ``ip netns exec HOST ansible ...`` and from the root namespace with its
own ``netns``/``pid`` options. About 15 s. Needs root, nft and ip; skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from netns import (
    CANARY_LISTENERS,
    add_namespace,
    delete_namespaces,
    ensure_collection_link,
    in_ns,
    listener,
    require_root,
    run_module,
    sh,
    veth_pair,
)

SUFFIX = str(os.getpid())
HOST_NS = f"enc-probe-{SUFFIX}-host"
PEER_NS = f"enc-probe-{SUFFIX}-peer"
MISSING_NS = f"enc-probe-{SUFFIX}-missing"
VETH_HOST, VETH_PEER = f"encprb{SUFFIX}h"[:15], f"encprb{SUFFIX}p"[:15]
PEER_V4, PEER_V6 = "192.0.2.2", "2001:db8:2::2"
NO_ROUTE = "203.0.113.99"
NOBODY = 65534

RULESET = """
table inet enclave {
    counter drop_output {}
    counter drop_uid {}
    chain output {
        type filter hook output priority filter; policy drop;
        oif "lo" accept
        meta skuid 65534 tcp dport 8084 counter name "drop_uid" drop
        ct state established,related accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld2-listener-report } accept
        icmpv6 type echo-request accept
        icmp type echo-request accept
        tcp dport { 8080, 8082, 8084 } accept
        udp dport { 53, 7007, 7008 } accept
        counter name "drop_output" drop
    }
}
"""


def probe(*, netns_exec=None, check=False, **args):
    """Run enclave.llm.egress_probe (inside ``netns_exec`` via ip netns exec, else here); return its result."""
    return run_module("egress_probe", args, netns=netns_exec, extra=["--check"] if check else [])


def by_name(result):
    return {report["name"]: report for report in result["probes"]}


class Peer:
    def __init__(self, log):
        self.log = log

    def seen(self, line):
        return self.log.read_text().splitlines().count(line) if self.log.exists() else 0


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    require_root("nft", "ip", reason="network namespaces, nftables and switching user need root")
    ensure_collection_link()

    peer = Peer(tmp_path_factory.mktemp("probe") / "peer.log")
    namespaces = (HOST_NS, PEER_NS, MISSING_NS)
    delete_namespaces(namespaces)
    try:
        add_namespace(HOST_NS)
        add_namespace(PEER_NS)
        veth_pair(
            *(HOST_NS, VETH_HOST, ["192.0.2.1/24", "2001:db8:2::1/64"]),
            *(PEER_NS, VETH_PEER, [f"{PEER_V4}/24", f"{PEER_V6}/64"]),
        )
        in_ns(HOST_NS, "nft", "-f", "-", input=RULESET)
        args = ("--tcp", "8080,8081,8084", "--udp", "7007,7009", "--dns", "53")
        with listener(PEER_NS, [sys.executable, str(CANARY_LISTENERS), str(peer.log), *args]):
            yield peer
    finally:
        delete_namespaces(namespaces)


@pytest.fixture
def host_ns_process(peer):
    """A process of ours in the host namespace, so probes can join it by pid like a container's."""
    process = subprocess.Popen(["ip", "netns", "exec", HOST_NS, "sleep", "60"])
    try:
        yield process.pid  # ip netns exec execs sleep: same pid
    finally:
        process.kill()
        process.wait(timeout=10)


def test_tcp_allowed_connects_blocked_drops_with_counter(peer):
    result = probe(
        netns_exec=HOST_NS,
        targets=[
            {"name": "allowed", "address": PEER_V4, "proto": "tcp", "port": 8080, "expect": "open"},
            {"name": "allowed v6", "address": PEER_V6, "proto": "tcp", "port": 8080, "expect": "open"},
            {
                "name": "blocked",
                "address": PEER_V4,
                "proto": "tcp",
                "port": 8081,
                "expect": "blocked",
                "counter": "drop_output",
                "timeout": 1,
            },
            {"name": "closed", "address": PEER_V4, "proto": "tcp", "port": 8082, "expect": "open"},
            {"name": "no route", "address": NO_ROUTE, "proto": "tcp", "port": 8080, "expect": "blocked"},
        ],
    )
    assert "failed" not in result, result.get("msg")
    reports = by_name(result)
    assert [reports[name]["verdict"] for name in reports] == [
        "connected",
        "connected",
        "timeout",
        "refused",
        "unreachable",
    ]
    assert all(report["matched_expectation"] for report in reports.values())
    blocked = reports["blocked"]
    assert blocked["reachable"] is False
    assert blocked["counter_delta"] > 0
    assert 900 <= blocked["duration_ms"] < 2000
    assert reports["closed"]["errno"] == "ECONNREFUSED"
    assert reports["closed"]["reachable"] is True
    assert reports["no route"]["errno"] == "ENETUNREACH"
    assert len(result["commands"]) == 2
    assert all(command.endswith("nft -j list counter inet enclave drop_output") for command in result["commands"])
    assert peer.seen(f"tcp {PEER_V4} 8080") == 1
    assert peer.seen(f"tcp {PEER_V6} 8080") == 1
    assert peer.seen(f"tcp {PEER_V4} 8081") == 0


def test_udp_dns_icmp_from_the_root_namespace_in_check_mode(peer):
    result = probe(
        check=True,
        netns=HOST_NS,
        targets=[
            {"name": "udp echo", "address": PEER_V4, "proto": "udp", "port": 7007, "expect": "open"},
            {"name": "udp closed", "address": PEER_V6, "proto": "udp", "port": 7008, "expect": "open"},
            {
                "name": "udp blocked",
                "address": PEER_V4,
                "proto": "udp",
                "port": 7009,
                "expect": "blocked",
                "counter": "drop_output",
            },
            {"name": "dns", "address": PEER_V4, "proto": "dns", "query": "mirror.example.org", "expect": "open"},
            {"name": "dns6", "address": PEER_V6, "proto": "dns", "query": "example.org", "qtype": "AAAA"},
            {"name": "ping", "address": PEER_V4, "proto": "icmp", "expect": "open"},
            {"name": "ping6", "address": PEER_V6, "proto": "icmp", "expect": "open"},
        ],
    )
    assert "failed" not in result, result.get("msg")
    assert result["changed"] is False
    reports = by_name(result)
    assert reports["udp echo"]["verdict"] == "connected"
    assert reports["udp echo"]["detail"] == {"reply_bytes": 14, "echoed": True}
    assert reports["udp closed"]["verdict"] == "refused"  # ICMPv6 port unreachable came back
    # The local drop fails the send itself: EPERM, and the counter saw the datagram.
    assert (reports["udp blocked"]["verdict"], reports["udp blocked"]["errno"]) == ("rejected", "EPERM")
    assert reports["udp blocked"]["counter_delta"] > 0
    assert reports["dns"]["detail"] == {"rcode": "NOERROR", "answers": ["203.0.113.53"]}
    assert reports["dns6"]["detail"] == {"rcode": "NOERROR", "answers": ["2001:db8:2::53"]}
    assert reports["dns6"]["matched_expectation"] is None
    for name in ("ping", "ping6"):
        assert reports[name]["verdict"] == "connected", reports[name]
        assert reports[name]["netns"] == HOST_NS
    assert peer.seen("udp 7007") == 1
    assert peer.seen("udp 7009") == 0
    assert peer.seen("dns mirror.example.org 1") == 1
    assert peer.seen("dns example.org 28") == 1


def test_as_user_nobody_in_a_process_namespace(peer, host_ns_process):
    result = probe(
        pid=host_ns_process,
        as_user="nobody",
        targets=[
            {"name": "nobody allowed", "address": PEER_V4, "proto": "tcp", "port": 8080, "expect": "open"},
            {"name": "root 8084", "address": PEER_V4, "proto": "tcp", "port": 8084, "as_user": 0, "expect": "open"},
            {
                "name": "nobody 8084",
                "address": PEER_V4,
                "proto": "tcp",
                "port": 8084,
                "expect": "blocked",
                "counter": "drop_uid",
                "timeout": 1,
            },
        ],
    )
    assert "failed" not in result, result.get("msg")
    reports = by_name(result)
    assert reports["nobody allowed"]["verdict"] == "connected"
    assert reports["nobody allowed"]["uid"] == NOBODY
    assert reports["root 8084"]["verdict"] == "connected"
    # Only the uid differs, and only the uid rule's counter moved: the probe did run as nobody.
    assert reports["nobody 8084"]["verdict"] == "timeout"
    assert reports["nobody 8084"]["counter_delta"] > 0
    assert peer.seen(f"tcp {PEER_V4} 8084") == 1


def test_mismatch_fails_the_task_naming_target_expectation_and_evidence(peer):
    result = probe(
        netns=HOST_NS,
        targets=[
            {"name": "control", "address": PEER_V4, "proto": "tcp", "port": 8080, "expect": "open"},
            {
                "name": "should be open",
                "address": PEER_V4,
                "proto": "tcp",
                "port": 8081,
                "expect": "open",
                "counter": "drop_output",
                "timeout": 0.5,
            },
        ],
    )
    assert result["failed"] is True
    assert result["mismatched"] == ["should be open"]
    assert (
        "should be open: expected open, observed timeout (tcp connect to 192.0.2.2:8081 got no answer"
        in (result["msg"])
    )
    assert "drop_output +" in result["msg"]
    assert "control" not in result["msg"]
    assert by_name(result)["control"]["verdict"] == "connected"


def test_could_not_try_is_an_error_never_blocked(peer):
    sh("ip", "netns", "del", MISSING_NS, check=False)
    result = probe(
        targets=[
            {
                "name": "no netns",
                "address": PEER_V4,
                "proto": "tcp",
                "port": 8081,
                "expect": "blocked",
                "netns": MISSING_NS,
            },
            {"name": "no pid", "address": PEER_V4, "proto": "tcp", "port": 8081, "expect": "blocked", "pid": 999999999},
            {
                "name": "no user",
                "address": PEER_V4,
                "proto": "tcp",
                "port": 8081,
                "expect": "blocked",
                "as_user": "enc-probe-nouser",
            },
            # nobody may neither open a ping socket (ping_group_range "1 0") nor a raw one.
            {
                "name": "no icmp socket",
                "address": PEER_V4,
                "proto": "icmp",
                "expect": "blocked",
                "netns": HOST_NS,
                "as_user": "nobody",
            },
        ],
    )
    assert result["failed"] is True
    assert "4 target(s) could not be probed, so they have no verdict" in result["msg"]
    reports = by_name(result)
    for report in reports.values():
        assert report["verdict"] is None, report
        assert report["reachable"] is None
        assert report["matched_expectation"] is None
    assert f"there is no network namespace '{MISSING_NS}'" in reports["no netns"]["error"]
    assert "there is no process 999999999" in reports["no pid"]["error"]
    assert "there is no user 'enc-probe-nouser'" in reports["no user"]["error"]
    assert "cannot open an ICMP socket as uid 65534" in reports["no icmp socket"]["error"]
    assert result["mismatched"] == []


def test_bad_target_refused_before_anything_runs(peer):
    result = probe(
        netns=HOST_NS,
        targets=[{"name": "by name", "address": "mirror.example.org", "proto": "tcp", "port": 80, "expect": "blocked"}],
    )
    assert result["failed"] is True
    assert "targets[0] (by name).address: 'mirror.example.org' is not an IPv4 or IPv6 address" in result["msg"]
    assert result["probes"] == []
    assert result["commands"] == []
