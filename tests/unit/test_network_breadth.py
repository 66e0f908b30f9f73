"""Catch-all networks, IPv4 forms in IPv6, rule comments and the entry cap, in the library and the preflight.

The checks live in plugins/module_utils/netpolicy/network_breadth.py and run inside
nftables_policy.compile_policy; the preflight reaches them through
preflight.firewall_settings_problems, which names the inventory variable.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
import yaml
from ansible_collections.enclave.llm.plugins.module_utils import preflight
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import network_breadth
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import nftables_policy as policy_lib
from conftest import REPO

LAB = yaml.safe_load((REPO / "inventories" / "lab" / "group_vars" / "all" / "enclave.yml").read_text())
LAB_VM = yaml.safe_load((REPO / "inventories" / "lab_vm" / "group_vars" / "all" / "enclave.yml").read_text())
EXAMPLE = REPO / "inventories" / "example" / "group_vars"
INGRESS = {
    "admin": [{"proto": "tcp", "ports": [22], "comment": "SSH for administrators"}],
    "clinical": [{"proto": "tcp", "ports": [443], "comment": "inference API"}],
    "cluster": [],
}


def entry(destination="192.0.2.30", **changes):
    return {"destination": destination, "proto": "tcp", "ports": [443], "owner": "it", "reason": "SIEM", **changes}


def policy(zones=None, egress=(), ingress=None):
    return {
        "zones": zones or {"admin": ["192.0.2.0/24"], "clinical": ["203.0.113.0/24"], "cluster": []},
        "ingress": ingress or [{"zone": "admin", "proto": "tcp", "ports": [22]}],
        "egress": list(egress),
    }


def site(zones=None, **kwargs):
    """The preflight's messages for the lab inventory with ``kwargs`` changed."""
    kwargs.setdefault("ingress", INGRESS)
    return preflight.firewall_settings_problems(zones or LAB["enclave_zones"], mirror=LAB["enclave_mirror"], **kwargs)


@pytest.mark.parametrize(
    "inventory",
    [LAB, LAB_VM],
    ids=["lab", "lab_vm"],
)
def test_the_lab_inventories_stay_valid(inventory):
    assert (
        preflight.firewall_settings_problems(
            inventory["enclave_zones"], ingress=INGRESS, mirror=inventory["enclave_mirror"]
        )
        == []
    )


def test_the_example_inventory_stays_valid():
    zones = yaml.safe_load((EXAMPLE / "all" / "enclave.yml").read_text())
    firewall = yaml.safe_load((EXAMPLE / "llm_servers" / "firewall.yml").read_text())
    settings = {key.removeprefix("firewall_"): value for key, value in firewall.items() if key.startswith("firewall_")}
    settings = {
        key: value for key, value in settings.items() if key in ("ntp_servers", "dns_resolvers", "egress_extra")
    }
    assert site(zones["enclave_zones"], **settings) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([entry("0.0.0.0/0")], "firewall_egress_extra[0].destination: 0.0.0.0/0 is wider than an egress entry may be"),
        ([entry("::/0")], "firewall_egress_extra[0].destination: ::/0 is wider than an egress entry may be, /48"),
        (
            [entry("192.0.2.30"), entry("0.0.0.0/1"), entry("128.0.0.0/1")],
            "firewall_egress_extra[2].destination: 128.0.0.0/1 is wider",
        ),
        ([entry("10.0.0.0/15")], "firewall_egress_extra[0].destination: 10.0.0.0/15 is wider"),
        ([entry("2001:db8::/47")], "firewall_egress_extra[0].destination: 2001:db8::/47 is wider"),
        (
            [entry("10.1.0.0/16"), entry("10.2.0.0/16"), entry("10.3.0.0/16")],
            "the egress allowlist (enclave_mirror, firewall_ntp_servers, firewall_dns_resolvers, "
            "firewall_egress_extra): the IPv4 destinations together cover",
        ),
        (
            [entry(f"2001:db8:{i:x}::/48") for i in range(3)],
            "the IPv6 destinations together cover",
        ),
        (
            [entry("198.51.100.0/24", proto="udp", ports=["1-65535"])],
            "firewall_egress_extra[0].ports: 65535 ports to 198.51.100.0/24 open every service",
        ),
        (
            [entry("2001:db8::/120", ports=["1024-65535"])],
            "firewall_egress_extra[0].ports: 64512 ports to 2001:db8::/120",
        ),
    ],
)
def test_catch_all_egress_is_refused_naming_the_variable(extra, expected):
    problems = site(egress_extra=extra)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    "extra",
    [
        [entry("198.51.100.0/24")],
        [entry("10.20.0.0/16")],
        [entry("10.20.0.0/16"), entry("10.30.0.0/17")],
        [entry("2001:db8:7::/48")],
        [entry("192.0.2.16/28", ports=["1-65535"])],
        [entry("192.0.2.30", proto="udp", ports=["1-65535"])],
        [entry("192.0.2.30", ports=["1-1024"])],
    ],
)
def test_named_endpoints_stay_allowed(extra):
    assert site(egress_extra=extra) == []


def test_derived_entries_are_named_by_their_variable():
    problems = site(ntp_servers=["0.0.0.0/0"], dns_resolvers=["192.0.2.53", "::/0"])
    assert any(p.startswith("firewall_ntp_servers[0].destination: 0.0.0.0/0 is wider") for p in problems), problems
    assert any(p.startswith("firewall_dns_resolvers[1].destination: ::/0 is wider") for p in problems), problems
    zones = {**LAB["enclave_zones"], "cluster": ["192.0.2.64/26", "10.0.0.0/8"]}
    ingress = {**INGRESS, "cluster": [{"proto": "tcp", "ports": [7000]}]}
    problems = site(zones, ingress=ingress)
    assert any(
        p.startswith("enclave_zones.cluster[1] (firewall_ingress.cluster[0]).destination: 10.0.0.0/8") for p in problems
    ), problems


@pytest.mark.parametrize(
    ("zone", "members", "expected"),
    [
        ("admin", ["0.0.0.0/0"], "enclave_zones.admin: 0.0.0.0/0 is wider than the widest zone network allowed, /8"),
        ("admin", ["::/0"], "enclave_zones.admin: ::/0 is wider than the widest zone network allowed, /16"),
        ("clinical", ["0.0.0.0/1", "128.0.0.0/1"], "enclave_zones.clinical: 0.0.0.0/1 is wider"),
        ("cluster", [f"{i}.0.0.0/8" for i in range(1, 257) if i < 256], "enclave_zones.cluster: its IPv4 networks"),
        ("clinical", ["10.0.0.0/8", "11.0.0.0/8", "12.0.0.0/8"], "together cover 50331648 addresses"),
        ("clinical", ["2001::/16", "2002::/16"], "enclave_zones.clinical: its IPv6 networks together cover"),
    ],
)
def test_catch_all_zones_are_refused(zone, members, expected):
    zones = {**LAB["enclave_zones"], zone: members}
    if zone == "admin":
        zones["admin"] = [*LAB["enclave_zones"]["admin"], *members]
    problems = site(zones)
    assert any(expected in problem for problem in problems), problems


def test_a_hospitals_private_networks_fit_in_a_zone():
    zones = {**LAB["enclave_zones"], "clinical": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]}
    zones["cluster"] = ["fd12:3456:789a::/48", "2001:db8::/32"]
    assert site(zones) == []


@pytest.mark.parametrize(
    ("value", "ipv4"),
    [
        ("::ffff:198.51.100.5", "198.51.100.5"),
        ("::ffff:198.51.100.0/120", "198.51.100.0/24"),
        ("::198.51.100.5", "198.51.100.5"),
        ("::203.0.113.0/120", "203.0.113.0/24"),
    ],
)
def test_ipv4_forms_of_ipv6_are_refused_with_the_ipv4_form(value, ipv4):
    problems = site(egress_extra=[entry(value)])
    assert any(
        p.startswith(f"firewall_egress_extra[0].destination: {value!r} is an IPv4-")
        and f"write the IPv4 form {ipv4}" in p
        for p in problems
    ), problems
    zones = {**LAB["enclave_zones"], "clinical": [value]}
    problems = site(zones)
    assert any(p.startswith(f"enclave_zones.clinical: {value!r} is an IPv4-") for p in problems), problems


@pytest.mark.parametrize("value", ["::1", "::", "2001:db8::ffff:c633:6405", "64:ff9b::c633:6405"])
def test_other_ipv6_addresses_are_not_taken_for_ipv4_forms(value):
    network = policy_lib.ipaddress.ip_network(value)
    assert network_breadth.address_form_problem("f", value, network) is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"reason": "x" * 128}, "firewall_egress_extra[0].reason: reason 'xxxx"),
        ({"owner": "radiologie-équipe"}, "firewall_egress_extra[0].owner: owner 'radiologie-équipe' holds characters"),
        ({"reason": "tab\there"}, "firewall_egress_extra[0].reason: write one line of text"),
        ({"owner": "o" * 60, "reason": "r" * 66}, "firewall_egress_extra[0]: owner and reason make the rule comment"),
    ],
)
def test_text_the_rule_comment_cannot_carry_is_refused(changes, expected):
    problems = site(egress_extra=[entry(**changes)])
    assert any(expected in problem for problem in problems), problems


def test_merged_entries_whose_comments_overflow_are_refused():
    problems = site(egress_extra=[entry(owner="a", reason="r" * 70), entry(owner="b", reason="s" * 70)])
    assert problems == [
        "firewall_egress_extra[0] (192.0.2.30 tcp 443) and firewall_egress_extra[1] (192.0.2.30 tcp 443): the same "
        "destination, protocol and port carry one rule comment, their owners and reasons joined (148 bytes), more "
        "than the 127 an nft comment holds: merge them into one entry or shorten them; they are never cut for you."
    ]


def test_ingress_comments_are_checked_too():
    ingress = {**INGRESS, "clinical": [{"proto": "tcp", "ports": [443], "comment": "API für Kliniken"}]}
    problems = site(ingress=ingress)
    assert any(p.startswith("firewall_ingress.clinical[0].comment: comment 'API für Kliniken'") for p in problems)


def test_a_comment_at_the_limit_is_rendered_whole():
    reason = "r" * (127 - len("it: "))
    text = policy_lib.render_ruleset(policy(egress=[entry(reason=reason)]))
    assert f'comment "it: {reason}"' in text


def test_nothing_can_reach_the_renderer_cut_or_replaced():
    for text in ("x" * 128, "Zoë", 'quote"'):
        with pytest.raises(ValueError, match=r"never|cannot carry"):
            policy_lib._comment(text)


def test_the_module_refuses_what_the_preflight_refuses():
    problems = policy_lib.policy_problems(policy(egress=[entry("0.0.0.0/0")]))
    assert problems == [
        "egress[0].destination: 0.0.0.0/0 is wider than an egress entry may be, /16 (IPv4): the allowlist names "
        "endpoints; write the addresses of the hosts the enclave must reach."
    ]


def test_the_entry_cap_comes_before_any_parsing():
    entries = [entry("192.0.2.30", ports=[1 + i % 60000]) for i in range(100_000)]
    tracemalloc.start()
    start = time.perf_counter()
    library = policy_lib.policy_problems(policy(egress=entries))
    from_site = site(egress_extra=entries)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert library[0].startswith("the policy has 100002+ set elements")
    assert from_site == [
        "firewall_egress_extra, firewall_ntp_servers and firewall_dns_resolvers list 100000 entries, more than "
        "the firewall's 20000: merge destinations into CIDRs and ports into ranges."
    ]
    assert elapsed < 0.1, elapsed
    assert peak < 1_000_000, peak
