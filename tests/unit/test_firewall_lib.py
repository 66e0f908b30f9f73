"""Unit tests for plugins/module_utils/netpolicy/firewall.py: site variables to an nftables_policy policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import firewall as lib
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import nftables_policy

REPO = Path(__file__).resolve().parents[2]
LAB = yaml.safe_load((REPO / "inventories" / "lab" / "group_vars" / "all" / "enclave.yml").read_text())
DEFAULTS = yaml.safe_load((REPO / "roles" / "firewall" / "defaults" / "main.yml").read_text())


def lab_policy(**changes):
    args = {
        "ingress": DEFAULTS["firewall_ingress"],
        "mirror": LAB["enclave_mirror"],
        "ntp_servers": [],
        "dns_resolvers": [],
        "egress_extra": [],
        "deny_egress_users": [],
        "owner": "hospital-it",
    }
    args.update(changes)
    return lib.build_policy(LAB["enclave_zones"], **args)


def test_lab_policy_is_valid_and_allows_only_the_mirror():
    policy = lab_policy()
    assert nftables_policy.policy_problems(policy) == []
    assert policy["egress"] == [
        {
            "destination": "198.51.100.10",
            "proto": "tcp",
            "ports": [80, 3142, 5000],
            "owner": "hospital-it",
            "reason": "offline mirror (apt_security_url, apt_url, models_url, pip_index_url, registry)",
        }
    ]
    assert policy["ingress"] == [
        {"zone": "admin", "proto": "tcp", "ports": [22], "comment": "SSH for administrators"},
        {"zone": "clinical", "proto": "tcp", "ports": [443], "comment": "inference API"},
    ]
    assert nftables_policy.client_lockout_problem(policy, "198.51.100.1", 22) == ""


@pytest.mark.parametrize(
    ("mirror", "expected"),
    [
        pytest.param(
            {"host": "192.0.2.10", "apt_url": "https://192.0.2.10/debian", "registry": "192.0.2.11:5000"},
            {"192.0.2.10": {443: ["apt_url"]}, "192.0.2.11": {5000: ["registry"]}},
            id="https-default-port-and-a-second-host",
        ),
        pytest.param(
            {"host": "2001:db8::10", "pip_index_url": "http://[2001:db8::10]:8080/", "registry": "[2001:db8::10]:5000"},
            {"2001:db8::10": {8080: ["pip_index_url"], 5000: ["registry"]}},
            id="ipv6",
        ),
        pytest.param({"host": "192.0.2.10"}, {"192.0.2.10": {}}, id="host-only"),
    ],
)
def test_mirror_endpoints(mirror, expected):
    assert lib.mirror_endpoints(mirror) == expected


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        pytest.param({"apt_url": "ftp://192.0.2.10/"}, "enclave_mirror.apt_url 'ftp://192.0.2.10/'", id="scheme"),
        pytest.param({"registry": "192.0.2.10"}, "enclave_mirror.registry '192.0.2.10' is not ADDRESS:PORT", id="reg"),
        pytest.param({"models_url": "http://192.0.2.10:99999/"}, "is not a valid URL", id="port"),
    ],
)
def test_bad_mirror_names_the_variable(mirror, message):
    with pytest.raises(ValueError, match="enclave_mirror") as error:
        lib.mirror_endpoints(mirror)
    assert message in str(error.value)


def test_ntp_and_dns_are_explicit_and_dns_says_why_it_is_risky():
    policy = lab_policy(ntp_servers=["198.51.100.11"], dns_resolvers=["198.51.100.12"])
    extra = [entry for entry in policy["egress"] if entry["destination"] != "198.51.100.10"]
    assert [(e["destination"], e["proto"], e["ports"]) for e in extra] == [
        ("198.51.100.11", "udp", [123]),
        ("198.51.100.12", "udp", [53]),
        ("198.51.100.12", "tcp", [53]),
    ]
    assert "exfiltration" in extra[1]["reason"]
    assert nftables_policy.policy_problems(policy) == []


def test_no_dns_egress_by_default():
    ports = {(entry["proto"], port) for entry in lab_policy()["egress"] for port in entry["ports"]}
    assert ("udp", 53) not in ports
    assert ("tcp", 53) not in ports


def test_cluster_ports_are_open_between_members_only():
    zones = {**LAB["enclave_zones"], "cluster": ["192.0.2.21/32", "192.0.2.22/32"]}
    ingress = {**DEFAULTS["firewall_ingress"], "cluster": [{"proto": "tcp", "ports": ["29500-29510"]}]}
    policy = lib.build_policy(zones, ingress=ingress, mirror=LAB["enclave_mirror"])
    assert {"zone": "cluster", "proto": "tcp", "ports": ["29500-29510"]} in policy["ingress"]
    cluster = [e for e in policy["egress"] if e["reason"] == lib.CLUSTER_REASON]
    assert [e["destination"] for e in cluster] == ["192.0.2.21/32", "192.0.2.22/32"]
    assert nftables_policy.policy_problems(policy) == []


def test_extra_egress_and_denied_users_pass_through():
    extra = {"destination": "192.0.2.50", "proto": "tcp", "ports": [636], "owner": "iam", "reason": "LDAP"}
    policy = lab_policy(egress_extra=[extra], deny_egress_users=["vllm"], families=["ipv4"])
    assert policy["egress"][-1] == extra
    assert policy["deny_egress_uids"] == ["vllm"]
    assert policy["deny_egress_gids"] == []
    assert policy["families"] == ["ipv4"]


def test_the_service_group_passes_through_and_root_is_refused():
    policy = lab_policy(deny_egress_users=[999], deny_egress_groups=[998])
    assert policy["deny_egress_gids"] == [998]
    assert nftables_policy.policy_problems(policy) == []
    problems = nftables_policy.policy_problems(lab_policy(deny_egress_groups=[0]))
    assert problems == [
        "deny_egress_gids: 0 is the root group; root's own programs run with it, so denying it would cut the host "
        "off from its mirror and its administrators: remove it and list only the service accounts' own groups."
    ]


def test_unknown_ingress_zone_is_refused():
    with pytest.raises(ValueError, match="firewall_ingress: unknown zone dmz"):
        lib.ingress_rules({"dmz": [{"proto": "tcp", "ports": [80]}]})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("198.51.100.1 40000 198.51.100.31 22", {"client": "198.51.100.1", "port": 22}),
        ("2001:db8::1 40000 2001:db8::2 2222", {"client": "2001:db8::1", "port": 2222}),
        ("", {"client": "", "port": ""}),
        (None, {"client": "", "port": ""}),
    ],
)
def test_ssh_session(value, expected):
    assert lib.ssh_session(value) == expected


def test_allowlisted_names_every_mirror_host_zone_and_egress_destination():
    mirror = {
        "host": "198.51.100.10",
        "apt_url": "http://198.51.100.10:3142/debian",
        "pip_index_url": "https://198.51.100.11/wheels/",
        "models_url": "https://198.51.100.12/models/",
        "registry": "198.51.100.13:5000",
    }
    zones = {"admin": ["192.0.2.0/28"], "clinical": ["203.0.113.0/24"], "cluster": ["198.51.100.40"]}
    policy = lib.build_policy(
        zones,
        ingress={"cluster": [{"proto": "tcp", "ports": [29500]}]},
        mirror=mirror,
        ntp_servers=["192.0.2.123"],
        dns_resolvers=["192.0.2.53"],
        egress_extra=[
            {"destination": "192.0.2.77/32", "proto": "tcp", "ports": [6514], "owner": "soc", "reason": "SIEM"}
        ],
    )
    found = lib.allowlisted(policy)
    # A mirror URL on another host than enclave_mirror.host is allowed too: a
    # canary there would pass the firewall by design.
    assert set(found) == {
        "192.0.2.0/28",
        "203.0.113.0/24",
        "198.51.100.40",
        "198.51.100.10",
        "198.51.100.11",
        "198.51.100.12",
        "198.51.100.13",
        "192.0.2.123",
        "192.0.2.53",
        "192.0.2.77/32",
    }
    assert len(found) == len(set(found))
