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

The attacker's flows (``craft`` in the matrix: forged sources, raw sockets, a
setuid-root helper, a socket made before a uid switch, extension headers and
fragments, a second interface, tunnels, a zone's address forged from outside)
run last, all in one matrix_craft.py on the enclave, which reads the drop
counters around each. Each carries its own source port; a witness table in the
mirror, internet and admin namespaces counts that port before anything there
can drop it, so "the receiver saw nothing" needs no listener. The service
account is nobody with a group of its own (a gid no user or group has), as
the firewall role requires; the setuid helper is matrix_connect.c, built with
cc (those flows skip without a compiler), and kernel tunnel flows skip where
the kernel lacks the driver. The test prints the number of flows.
About 65 s on 2 idle cores (the attacker's flows about 10 s of it). Needs root,
ip, nft and setpriv; skipped otherwise.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import select
import shutil
import sys
import tempfile
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
CRAFT_SCRIPT = HERE / "matrix_craft.py"
CONNECT_SOURCE = HERE / "matrix_connect.c"
MATRIX = yaml.safe_load((HERE / "isolation_matrix.yml").read_text())
HOSTS = MATRIX["hosts"]
FLOWS = [{"from": "enclave", "as": "root", **flow} for flow in MATRIX["flows"]]
CRAFTED = [flow for flow in FLOWS if "craft" in flow]
# Each attacker flow's own source port: the witnesses count it (and replies to it).
MARKER = {flow["name"]: 41000 + index for index, flow in enumerate(CRAFTED)}

SUFFIX = str(os.getpid())
ROLES = ("bridge", "enclave", "mirror", "internet", "clinical", "admin", "container")
NS = {role: f"enc-mx-{SUFFIX}-{role}" for role in ROLES}
SERVICE_UID = pwd.getpwnam("nobody").pw_uid
DAD_ADDRESS = "2001:db8:4::99"


def _free_gid(start=64990):
    """A gid no group and no user has: the service account's own group, shared with nobody."""
    used = {group.gr_gid for group in grp.getgrall()} | {user.pw_gid for user in pwd.getpwall()}
    return next(gid for gid in range(start, 1000, -1) if gid not in used)


SERVICE_GID = _free_gid()
# Another account with a group of its own (daemon on Debian): the setuid control.
OTHER_UID, OTHER_GID = 1, 1
IDENTITY = {"service": (SERVICE_UID, SERVICE_GID), "other": (OTHER_UID, OTHER_GID), "root": (0, 0)}
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
# What reached a namespace from an attacker flow: its marker port, either way
# (after reassembly), and tunnel packets. Counted before anything can drop it.
WITNESS_ROLES = ("mirror", "internet", "admin")


def marker_witness():
    counters = [f"\tcounter m{port} {{}}" for port in MARKER.values()]
    rules = [
        f'\t\tmeta l4proto {{ tcp, udp }} th sport {port} counter name "m{port}"\n'
        f'\t\tmeta l4proto {{ tcp, udp }} th dport {port} counter name "m{port}"'
        for port in MARKER.values()
    ]
    return "\n".join(
        [
            "table inet mx_marks {",
            "\tcounter tunnel {}",
            "\tcounter dad {}",
            *counters,
            "\tchain prerouting {",
            "\t\ttype filter hook prerouting priority raw; policy accept;",
            '\t\tmeta l4proto { ipip, ipv6, gre } counter name "tunnel"',
            '\t\tip6 saddr :: icmpv6 type nd-neighbor-solicit counter name "dad"',
            *rules,
            "\t}",
            "}",
        ]
    )


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
    "deny_egress_gids": [SERVICE_GID],
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
    if "craft" in flow:
        return "crafted"
    if flow["from"] == "enclave" and "relay" not in flow:
        return f"enclave-{flow['as']}"
    return flow["name"]


@dataclass
class Outcome:
    report: dict
    counter_delta: int | None = None
    seen: int = 0
    relay: str | None = None
    moved: dict | None = None


def craft_spec(flow, helper):
    """The matrix_craft.py spec of an attacker flow."""
    family = flow["family"]
    seen_at = flow.get("seen_at") or RECEIVER[flow["to"]]
    spec = {
        "name": flow["name"],
        "kind": flow["craft"],
        "proto": flow["proto"],
        "dst": address(flow),
        "port": flow["port"],
        "sport": MARKER[flow["name"]],
        "receiver": NS[seen_at],
        "witness": f"m{MARKER[flow['name']]}",
    }
    uid, gid = IDENTITY[flow["as"]]
    spec.update(uid=uid, gid=gid)
    if "source" in flow:
        spec["src"] = HOSTS[flow["source"]][family]
    for key in ("headers", "fragments", "options", "device"):
        if key in flow:
            spec[key] = flow[key]
    if "bind_from" in flow:
        spec["bind_src"] = HOSTS[flow["bind_from"]][family]
    if flow["craft"] == "setuid":
        spec["helper"] = helper
    if flow["craft"] == "inbound":
        spec["netns"] = NS[flow["from"]]
        # Had the enclave accepted the forged SYN, its SYN-ACK would go to the real owner.
        spec["receiver"] = NS[flow["source"]]
    if flow["craft"] == "tunnel":
        tunnel = flow["tunnel"]
        spec["tunnel"] = {
            "type": tunnel["type"],
            "local": HOSTS["enclave-uplink"][family],
            "remote": HOSTS["internet"][family],
        }
        if tunnel.get("address"):
            spec["tunnel"]["address"] = HOSTS["tunnel"][family] + ("/32" if family == 4 else "/128")
        if tunnel["type"] != "tun":
            spec["witness"] = "tunnel"  # the kernel's outer packets carry no marker port
    return spec


class Topology:
    def __init__(self, log_dir):
        self.logs = {role: log_dir / f"{role}.log" for role in LISTENERS}
        self.processes = ExitStack()
        self.relays = {}
        self.helper_dir = None

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
        for role in WITNESS_ROLES:
            in_ns(role, "nft", "-f", "-", input=marker_witness())
        # The internet host also claims the mirror's IPv4 address on its own
        # segment, as an attacker there would (otherif-uplink-mirror-apt-v4).
        in_ns("internet", "ip", "addr", "add", f"{HOSTS['mirror'][4]}/32", "dev", "eth0")
        # The kernel's own reverse-path filter would hide the policy's for IPv4.
        for setting in ("net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth-inet.rp_filter=0"):
            in_ns("enclave", "sysctl", "-qw", setting)
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
        if self.helper_dir:
            shutil.rmtree(self.helper_dir, ignore_errors=True)

    # --- the attacker's flows ------------------------------------------------------
    def build_helper(self):
        """matrix_connect.c compiled and installed setuid root where every uid may run it; None without cc."""
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            return None
        self.helper_dir = tempfile.mkdtemp(prefix="enc-mx-")
        os.chmod(self.helper_dir, 0o755)
        helper = os.path.join(self.helper_dir, "matrix_connect")
        sh(compiler, "-O", "-o", helper, str(CONNECT_SOURCE))
        os.chown(helper, 0, 0)
        os.chmod(helper, 0o4755)
        return helper

    def crafted(self, flows):
        """Run every attacker flow in one matrix_craft.py on the enclave; an Outcome per flow name."""
        helper = self.build_helper()
        specs = [craft_spec(flow, helper) for flow in flows if flow["craft"] != "setuid" or helper]
        config = {"witness_table": "mx_marks", "flows": specs}
        # The system interpreter: the service uid runs this script too.
        result = in_ns("enclave", "/usr/bin/python3", str(CRAFT_SCRIPT), "run", input=json.dumps(config), timeout=300)
        outcomes = {}
        for line in result.stdout.splitlines():
            report = json.loads(line)
            flow = next(flow for flow in flows if flow["name"] == report["name"])
            outcome = Outcome(report, seen=report["seen"])
            outcome.counter_delta = report["counters"].get(flow.get("counter", ""), 0)
            outcome.moved = {name: delta for name, delta in report["counters"].items() if delta}
            outcomes[flow["name"]] = outcome
        return outcomes


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
        # Forget every neighbour, so the open IPv6 flows below also prove that
        # neighbour discovery passes the anti-spoofing rule.
        for role in ROLES:
            in_ns(role, "ip", "-6", "neigh", "flush", "all", check=False)
        # An address with duplicate address detection: its probe leaves from ::
        # while the flows run (test_duplicate_address_detection_leaves).
        in_ns("enclave", "ip", "addr", "add", f"{DAD_ADDRESS}/64", "dev", "eth-hosp")
        batches = {}
        for flow in FLOWS:
            batches.setdefault(batch_of(flow), []).append(flow)
        results = {}
        for name, flows in batches.items():
            if name == "crafted":
                results.update(topology.crafted(flows))
            else:
                results.update(run_batch(topology, flows))
        results["dad"] = {
            "probes": counter("dad", "mirror", "mx_marks"),
            "tentative": in_ns("enclave", "ip", "-6", "addr", "show", "dev", "eth-hosp", "tentative").stdout,
        }
        yield results
    finally:
        topology.close()


def test_matrix_file_is_consistent(capsys):
    names = [flow["name"] for flow in FLOWS]
    assert len(names) == len(set(names)), "flow names must be unique"
    assert len(FLOWS) >= 100
    assert {flow["family"] for flow in FLOWS} == {4, 6}
    for flow in FLOWS:
        assert flow["expect"] in ("open", "blocked"), flow["name"]
        assert (flow["expect"] == "blocked") == ("counter" in flow), flow["name"]
        assert "remaining" not in flow or flow["expect"] == "open", flow["name"]
        assert flow["to"] in RECEIVER, flow["name"]
        assert flow["proto"] in ("tcp", "udp", "dns", "icmp"), flow["name"]
        if "craft" in flow:
            assert flow["craft"] in ("raw", "raw-service", "handover", "setuid", "bind", "tunnel", "inbound")
            assert flow["proto"] in ("tcp", "udp"), flow["name"]
            assert flow["as"] in IDENTITY, flow["name"]
    with capsys.disabled():
        counts = Counter(flow["expect"] for flow in FLOWS)
        remaining = sum("remaining" in flow for flow in FLOWS)
        print(
            f"\nisolation matrix: {len(FLOWS)} flows (v4 {sum(f['family'] == 4 for f in FLOWS)}, "
            f"v6 {sum(f['family'] == 6 for f in FLOWS)}): {counts['blocked']} blocked, {counts['open']} open "
            f"({remaining} of them known remaining paths)"
        )
    # Within a batch a blocked flow's listener evidence must be its own.
    for flow in FLOWS:
        if "craft" in flow:
            continue  # each has its own marker port
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


def test_duplicate_address_detection_leaves(matrix):
    # The probe comes from ::, not one of the host's addresses; the anti-spoofing
    # rule must let it out, or a duplicate address would go unnoticed.
    assert matrix["dad"]["probes"] >= 1, "the mirror saw no duplicate address detection probe from ::"
    assert DAD_ADDRESS not in matrix["dad"]["tentative"]


def check_crafted(flow, outcome):
    """An attacker flow: its verdict, the witness at the receiver and the counter that moved."""
    verdict = outcome.report["verdict"]
    if verdict == "unsupported":
        pytest.skip(f"this kernel has no {flow['tunnel']['type']} tunnel driver")
    where = f"{verdict}, counters moved {outcome.moved}, witness saw {outcome.seen}"
    if flow["expect"] == "open":
        assert verdict in ("sent", "connected", "rejected"), where
        assert outcome.seen >= 1, f"the receiver saw nothing: {where}"
    else:
        # A packet sent from another namespace is judged where it arrives.
        assert verdict in ("EPERM", "timeout", *(["sent"] if flow["craft"] == "inbound" else [])), where
        assert outcome.counter_delta > 0, f"{flow['counter']} did not move: {where}"
        assert outcome.seen == 0, f"the receiver saw it: {where}"


@pytest.mark.parametrize("flow", FLOWS, ids=[flow["name"] for flow in FLOWS])
def test_flow(matrix, flow):
    if flow["name"] not in matrix and flow.get("craft") == "setuid":
        pytest.skip("no C compiler to build the setuid helper")
    outcome = matrix[flow["name"]]
    if "craft" in flow:
        check_crafted(flow, outcome)
        return
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
