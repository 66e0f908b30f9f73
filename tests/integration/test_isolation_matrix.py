"""The isolation matrix: every flow of isolation_matrix.yml against the enclave policy on a real kernel.

Topology (network namespaces ``enc-mx-PID-ROLE``; documentation addresses only,
nothing reaches the machine's own namespace)::

    internet 203.0.113.80 2001:db8:3::80      listeners.py: tcp 22 53 80 123 443 8080,
       | veth                                 udp 123 443, dns 53, echo (counted by a witness table)
    enclave  uplink 203.0.113.1 2001:db8:3::1 the host under test: `inet enclave` applied by
             lan    192.0.2.1   2001:db8:4::1  enclave.llm.nftables_policy; listeners.py on
             ctr    192.0.2.129 2001:db8:5::1  tcp 22 443 8080, dns 53; forwarding on
       | veth                      | veth to the bridge namespace (bridge "hosp")
    container 192.0.2.130          mirror 192.0.2.10 (+ NTP)      clinical 192.0.2.20   admin 192.0.2.30
              2001:db8:5::2               2001:db8:4::10                    2001:db8:4::20        2001:db8:4::30
              routed via the enclave      tcp 22 80 3142 5000, udp 123

Policy: admin -> ssh, clinical -> 443, egress = mirror tcp 80/3142/5000 and NTP udp
123, no DNS, and no egress at all for the service uid (nobody). Before the policy is
applied a baseline shows the paths it must close are open (so a later "blocked"
is the policy's doing, not the topology's).

Each flow is one test. Probes run in batches while the module fixture builds its
results: one ``enclave.llm.egress_probe`` call per uid for the enclave's own egress
(the module reads the counter); one call per flow for flows that start elsewhere
(ingress, the container) or go through a relay, with the enclave's counter read here
before and after. A blocked flow needs a blocked verdict, its drop counter moved and
its listener's log unchanged; an open flow must connect and be seen by the listener.
The SSH-forwarding flows use a small relay (matrix_relay.py) on the enclave's
loopback rather than a real sshd: what the policy decides is the relay's outward
connect as its uid, which is what sshd does for ``ssh -L`` as the login user. A
remote forward (``ssh -R``) would be an inbound connection to a port the enclave
opens; the ingress flows cover that path.
About 65 s on 2 cores. Needs root, ip, nft and setpriv; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import pwd
import select
import sys
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from netns import (
    CANARY_LISTENERS,
    add_namespace,
    delete_namespaces,
    ensure_collection_link,
    listener,
    require_root,
    run_module,
    sh,
    veth_pair,
)

HERE = Path(__file__).resolve().parent
RELAY_SCRIPT = HERE / "matrix_relay.py"
MATRIX = yaml.safe_load((HERE / "isolation_matrix.yml").read_text())
HOSTS = MATRIX["hosts"]
FLOWS = [{"from": "enclave", "as": "root", **flow} for flow in MATRIX["flows"]]

SUFFIX = str(os.getpid())
ROLES = ("bridge", "enclave", "mirror", "internet", "clinical", "admin", "container")
NS = {role: f"enc-mx-{SUFFIX}-{role}" for role in ROLES}
SERVICE_UID = pwd.getpwnam("nobody").pw_uid
# A dropped SYN is counted at once, so a blocked probe need not wait long.
OPEN_TIMEOUT, BLOCKED_TIMEOUT = 2.0, 0.5

# The namespace whose listener receives a flow to each host.
RECEIVER = {
    "internet": "internet",
    "mirror": "mirror",
    "ntp": "mirror",
    "enclave": "enclave",
    "enclave-uplink": "enclave",
}
LISTENERS = {
    "internet": ["--tcp", "22,53,80,123,443,8080", "--udp", "123,443", "--dns", "53"],
    "mirror": ["--tcp", "22,80,3142,5000", "--udp", "123"],
    "enclave": ["--tcp", "22,443,8080", "--dns", "53"],
}
# Echo requests reaching the internet host; the kernel answers them, so this
# table is the listener's log for ICMP.
WITNESS = """
table inet mx_witness {
    counter echo {}
    chain input {
        type filter hook input priority filter; policy accept;
        icmp type echo-request counter name "echo"
        icmpv6 type echo-request counter name "echo"
    }
}
"""
POLICY = {
    "zones": {
        "admin": [HOSTS["admin"][4], HOSTS["admin"][6]],
        "clinical": [HOSTS["clinical"][4], HOSTS["clinical"][6]],
    },
    "ingress": [
        {"zone": "admin", "proto": "tcp", "ports": [22], "comment": "ssh"},
        {"zone": "clinical", "proto": "tcp", "ports": [443], "comment": "inference API"},
    ],
    "egress": [
        *(
            {
                "destination": HOSTS["mirror"][f],
                "proto": "tcp",
                "ports": [80, 3142, 5000],
                "owner": "it",
                "reason": "mirror",
            }
            for f in (4, 6)
        ),
        *(
            {"destination": HOSTS["ntp"][f], "proto": "udp", "ports": [123], "owner": "it", "reason": "ntp"}
            for f in (4, 6)
        ),
    ],
    "deny_egress_uids": [SERVICE_UID],
    "log": {"rate": "5/second", "burst": 5, "prefix": "enc-mx"},
}


def in_ns(role, *argv, **kwargs):
    return sh("ip", "netns", "exec", NS[role], *argv, **kwargs)


def module(name, args, netns=None):
    """Run enclave.llm.NAME through ansible (inside role ``netns`` via ip netns exec); return its result."""
    return run_module(name, args, netns=NS[netns] if netns else None, timeout=120)


def counter(name, role="enclave", table="enclave"):
    data = json.loads(in_ns(role, "nft", "-j", "list", "counter", "inet", table, name).stdout)
    return data["nftables"][1]["counter"]["packets"]


def address(flow):
    return HOSTS[flow["to"]][flow["family"]]


def target(flow):
    """The egress_probe target of a flow (a relay flow probes the relay's loopback port)."""
    blocked = flow["expect"] == "blocked"
    spec = {"name": flow["name"], "proto": flow["proto"], "timeout": BLOCKED_TIMEOUT if blocked else OPEN_TIMEOUT}
    if "relay" in flow:
        loopback = "127.0.0.1" if flow["family"] == 4 else "::1"
        return {**spec, "address": loopback, "port": flow["relay"], "expect": "open", "timeout": OPEN_TIMEOUT}
    spec.update(address=address(flow), expect=flow["expect"])
    if "port" in flow:
        spec["port"] = flow["port"]
    if flow["proto"] == "dns":
        spec["query"] = f"{flow['name']}.example.org"
    return spec


def listener_key(flow):
    """The line (or witness counter) that shows a flow reached its listener; None where there is none."""
    proto = flow["proto"]
    if proto == "tcp":
        return f"tcp {address(flow)} {flow['port']}"
    if proto == "udp":
        return f"udp {flow['port']}"
    if proto == "dns":
        return f"dns {flow['name']}.example.org 1"
    return "echo" if RECEIVER[flow["to"]] == "internet" else None


def batch_of(flow):
    """Flows sharing a batch run in one egress_probe call and share listener deltas."""
    if flow["from"] == "enclave" and "relay" not in flow:
        return f"enclave-{flow['as']}"
    return flow["name"]


@dataclass
class Outcome:
    report: dict
    counter_delta: int | None = None
    seen: int = 0
    relay: str | None = None


class Topology:
    def __init__(self, log_dir):
        self.logs = {role: log_dir / f"{role}.log" for role in LISTENERS}
        self.processes = ExitStack()
        self.relays = {}

    # --- listeners ---------------------------------------------------------------
    def start(self, role, argv, user=None):
        return self.processes.enter_context(listener(NS[role], argv, user=user))

    def snapshot(self):
        seen = Counter()
        for role, log in self.logs.items():
            if log.exists():
                seen.update((role, line) for line in log.read_text().splitlines())
        seen[("internet", "echo")] = counter("echo", "internet", "mx_witness")
        return seen

    def relay_outcome(self, port, uid):
        process = self.relays[uid]
        ready, _writable, _errored = select.select([process.stdout], [], [], 5)
        if not ready:
            return None
        listen, _sep, outcome = process.stdout.readline().strip().partition(" ")
        assert int(listen) == port
        return outcome

    # --- building -----------------------------------------------------------------
    def build(self):
        for role in ROLES:
            add_namespace(NS[role])
        in_ns("bridge", "ip", "link", "add", "hosp", "type", "bridge")
        in_ns("bridge", "ip", "link", "set", "hosp", "up")
        links = [
            ("enclave", "eth-hosp", ["192.0.2.1/25", "2001:db8:4::1/64"], "bridge", "p-enclave", []),
            ("mirror", "eth0", ["192.0.2.10/25", "2001:db8:4::10/64"], "bridge", "p-mirror", []),
            ("clinical", "eth0", ["192.0.2.20/25", "2001:db8:4::20/64"], "bridge", "p-clinical", []),
            ("admin", "eth0", ["192.0.2.30/25", "2001:db8:4::30/64"], "bridge", "p-admin", []),
            (
                *("enclave", "eth-inet", ["203.0.113.1/24", "2001:db8:3::1/64"]),
                *("internet", "eth0", ["203.0.113.80/24", "2001:db8:3::80/64"]),
            ),
            (
                *("enclave", "eth-ctr", ["192.0.2.129/28", "2001:db8:5::1/64"]),
                *("container", "eth0", ["192.0.2.130/28", "2001:db8:5::2/64"]),
            ),
        ]
        for one, one_dev, one_cidrs, other, other_dev, other_cidrs in links:
            veth_pair(NS[one], one_dev, one_cidrs, NS[other], other_dev, other_cidrs)
            if other == "bridge":
                in_ns("bridge", "ip", "link", "set", other_dev, "master", "hosp")
        routes = {
            "container": [["default", "via", "192.0.2.129"], ["-6", "default", "via", "2001:db8:5::1"]],
            "internet": [["192.0.2.128/28", "via", "203.0.113.1"], ["-6", "2001:db8:5::/64", "via", "2001:db8:3::1"]],
            "mirror": [["192.0.2.128/28", "via", "192.0.2.1"], ["-6", "2001:db8:5::/64", "via", "2001:db8:4::1"]],
        }
        for role, entries in routes.items():
            for entry in entries:
                family = entry[:1] if entry[0] == "-6" else []
                in_ns(role, "ip", *family, "route", "add", *entry[len(family) :])
        # Per-namespace settings of the enclave: it routes for the container, and
        # the service uid may open ping sockets so its ICMP is probed, not refused.
        for setting in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.ping_group_range=0 65534"):
            in_ns("enclave", "sysctl", "-qw", setting)
        in_ns("internet", "nft", "-f", "-", input=WITNESS)
        for role, args in LISTENERS.items():
            self.start(role, [sys.executable, str(CANARY_LISTENERS), str(self.logs[role]), *args])
        relays = {}
        for flow in FLOWS:
            if "relay" in flow:
                uid = SERVICE_UID if flow["as"] == "service" else 0
                relays.setdefault(uid, []).append(f"{flow['relay']}={address(flow)},{flow['port']}")
        for uid, specs in relays.items():
            # The system interpreter: the service uid may not read the test's virtualenv.
            self.relays[uid] = self.start("enclave", ["/usr/bin/python3", str(RELAY_SCRIPT), *specs], user=uid)

    def close(self):
        self.processes.close()
        delete_namespaces(NS.values())


BASELINE = [
    {"name": "enclave-inet-v4", "netns": NS["enclave"], "address": "203.0.113.80", "proto": "tcp", "port": 443},
    {"name": "enclave-inet-v6", "netns": NS["enclave"], "address": "2001:db8:3::80", "proto": "tcp", "port": 443},
    {"name": "enclave-mirror-v4", "netns": NS["enclave"], "address": "192.0.2.10", "proto": "tcp", "port": 3142},
    {"name": "enclave-dns-v4", "netns": NS["enclave"], "address": "203.0.113.80", "proto": "dns", "query": "baseline"},
    {"name": "ctr-inet-v4", "netns": NS["container"], "address": "203.0.113.80", "proto": "tcp", "port": 443},
    {"name": "ctr-inet-v6", "netns": NS["container"], "address": "2001:db8:3::80", "proto": "tcp", "port": 443},
    {"name": "ctr-mirror-v6", "netns": NS["container"], "address": "2001:db8:4::10", "proto": "tcp", "port": 3142},
    {"name": "inet-ssh-v6", "netns": NS["internet"], "address": "2001:db8:3::1", "proto": "tcp", "port": 22},
    {"name": "clinical-ssh-v4", "netns": NS["clinical"], "address": "192.0.2.1", "proto": "tcp", "port": 22},
    {
        "name": "svc-mirror-v4",
        "netns": NS["enclave"],
        "as_user": SERVICE_UID,
        "address": "192.0.2.10",
        "proto": "tcp",
        "port": 5000,
    },
]


def run_batch(topology, flows):
    """Probe ``flows`` (one batch); return an Outcome per flow name."""
    first = flows[0]
    before = topology.snapshot()
    if batch_of(first) != first["name"]:
        targets = [{**target(flow), "counter": flow.get("counter")} for flow in flows]
        targets = [{key: value for key, value in spec.items() if value is not None} for spec in targets]
        args = {"netns": NS["enclave"], "fail_on_mismatch": False, "targets": targets}
        if first["as"] == "service":
            args["as_user"] = SERVICE_UID
        result = module("egress_probe", args)
        reports = {report["name"]: report for report in result.get("probes", [])}
        outcomes = {flow["name"]: Outcome(reports.get(flow["name"], {"error": result.get("msg")})) for flow in flows}
        for flow in flows:
            outcomes[flow["name"]].counter_delta = outcomes[flow["name"]].report.get("counter_delta")
    else:
        name = first.get("counter") or "drop_input"
        start = counter(name)
        relay = "relay" in first
        source = "enclave" if relay else first["from"]
        result = module("egress_probe", {"netns": NS[source], "fail_on_mismatch": False, "targets": [target(first)]})
        report = (result.get("probes") or [{"error": result.get("msg")}])[0]
        outcome = Outcome(report)
        if relay:
            outcome.relay = topology.relay_outcome(first["relay"], SERVICE_UID if first["as"] == "service" else 0)
        outcome.counter_delta = counter(name) - start
        outcomes = {first["name"]: outcome}
    after = topology.snapshot()
    for flow in flows:
        key = listener_key(flow)
        if key is not None:
            role = RECEIVER[flow["to"]]
            outcomes[flow["name"]].seen = after[(role, key)] - before[(role, key)]
    return outcomes


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    require_root("nft", "ip", "setpriv", "unshare", reason="network namespaces, nftables and switching user need root")
    ensure_collection_link()

    topology = Topology(tmp_path_factory.mktemp("matrix"))
    delete_namespaces(NS.values())
    try:
        topology.build()
        # Without the policy every path the matrix closes is open; IPv6 neighbours
        # may need a moment, so retry briefly.
        for _attempt in range(5):
            targets = [{**spec, "expect": "open", "timeout": OPEN_TIMEOUT} for spec in BASELINE]
            result = module("egress_probe", {"fail_on_mismatch": False, "targets": targets})
            if not result.get("mismatched") and "failed" not in result:
                break
        assert "failed" not in result, result.get("msg")
        verdicts = {report["name"]: report["verdict"] for report in result["probes"]}
        assert not result["mismatched"], f"without the policy these should connect: {verdicts}"
        applied = module("nftables_policy", POLICY, netns="enclave")
        assert "failed" not in applied, applied.get("msg")
        assert applied["changed"] is True
        batches = {}
        for flow in FLOWS:
            batches.setdefault(batch_of(flow), []).append(flow)
        results = {}
        for flows in batches.values():
            results.update(run_batch(topology, flows))
        yield results
    finally:
        topology.close()


def test_matrix_file_is_consistent():
    names = [flow["name"] for flow in FLOWS]
    assert len(names) == len(set(names)), "flow names must be unique"
    assert len(FLOWS) >= 40
    assert {flow["family"] for flow in FLOWS} == {4, 6}
    for flow in FLOWS:
        assert flow["expect"] in ("open", "blocked"), flow["name"]
        assert (flow["expect"] == "blocked") == ("counter" in flow), flow["name"]
        assert flow["to"] in RECEIVER, flow["name"]
        assert flow["proto"] in ("tcp", "udp", "dns", "icmp"), flow["name"]
    # Within a batch a blocked flow's listener evidence must be its own.
    for flow in FLOWS:
        if flow["expect"] == "blocked" and listener_key(flow) is not None:
            shared = [
                other["name"]
                for other in FLOWS
                if other is not flow
                and other["expect"] == "open"
                and (batch_of(other), RECEIVER[other["to"]], listener_key(other))
                == (batch_of(flow), RECEIVER[flow["to"]], listener_key(flow))
            ]
            assert not shared, f"{flow['name']} shares its listener evidence with {shared}"


@pytest.mark.parametrize("flow", FLOWS, ids=[flow["name"] for flow in FLOWS])
def test_flow(matrix, flow):
    outcome = matrix[flow["name"]]
    report = outcome.report
    assert report.get("verdict") is not None, f"could not be probed: {report.get('error')}"
    where = f"{report['verdict']} ({report.get('errno')}), counter +{outcome.counter_delta}, seen {outcome.seen}"
    if "relay" in flow:
        # The loopback leg is allowed; the relay's outward leg is the flow.
        assert report["verdict"] == "connected", f"the relay was not reached: {where}"
        assert outcome.relay is not None, "the relay reported nothing"
        verdict = outcome.relay
        where = f"relay {outcome.relay}, counter +{outcome.counter_delta}, seen {outcome.seen}"
    else:
        verdict = report["verdict"]
    if flow["expect"] == "open":
        assert verdict == "connected", where
        if listener_key(flow) is not None:
            assert outcome.seen >= 1, f"the listener saw nothing: {where}"
    else:
        # "unreachable" would be the topology's doing, not the policy's.
        assert verdict in ("timeout", "rejected", "EPERM"), where
        assert outcome.counter_delta > 0, f"{flow['counter']} did not move: {where}"
        assert outcome.seen == 0, f"the listener saw it: {where}"
