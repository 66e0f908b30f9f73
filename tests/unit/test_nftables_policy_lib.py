"""Unit tests for plugins/module_utils/netpolicy/nftables_policy.py (no root, no nft)."""

from __future__ import annotations

import copy
import json

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import nftables_policy as lib


def good_policy(**changes):
    policy = {
        "zones": {"admin": ["192.0.2.0/24", "2001:db8:1::/48"], "clinical": ["203.0.113.0/24"], "cluster": []},
        "ingress": [
            {"zone": "admin", "proto": "tcp", "ports": [22]},
            {"zone": "clinical", "proto": "tcp", "ports": ["8443", "9000-9010"], "comment": "inference API"},
        ],
        "egress": [
            {"destination": "198.51.100.10", "proto": "tcp", "ports": [80, 3142], "owner": "it", "reason": "mirror"},
            {"destination": "198.51.100.10", "proto": "tcp", "ports": [80], "owner": "ai-team", "reason": "weights"},
            {"destination": "2001:db8:5::/64", "proto": "udp", "ports": [123], "owner": "it", "reason": "NTP"},
        ],
        "deny_egress_uids": [999],
        "deny_egress_gids": [998],
        "log": {"rate": "5/second", "burst": 10, "prefix": "enc"},
    }
    policy.update(changes)
    return policy


def egress(**changes):
    entry = {"destination": "198.51.100.10", "proto": "tcp", "ports": [443], "owner": "it", "reason": "mirror"}
    entry.update(changes)
    return [{key: value for key, value in entry.items() if value is not None}]


def test_good_policy_has_no_problems():
    assert lib.policy_problems(good_policy()) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"zones": {"admin": ["192.0.2.0/33"]}},
            "zones.admin: '192.0.2.0/33' is not an address or CIDR: write ADDRESS or ADDRESS/PREFIX",
            id="invalid-cidr-prefix",
        ),
        pytest.param(
            {"egress": egress(destination="mirror.example.org")},
            "egress[0].destination: 'mirror.example.org' is not an address or CIDR",
            id="name-not-address",
        ),
        pytest.param(
            {"zones": {"admin": ["192.0.2.5/24"]}},
            "zones.admin: '192.0.2.5/24' has host bits set: write 192.0.2.0/24 (the network) or 192.0.2.5/32",
            id="host-bits",
        ),
        pytest.param(
            {"egress": egress(ports=[70000])},
            "egress[0].ports: 70000 is not a port: use a number from 1 to 65535 or a range such as '8000-8100'.",
            id="port-too-big",
        ),
        pytest.param({"egress": egress(ports=[0])}, "egress[0].ports: 0 is not a port", id="port-zero"),
        pytest.param({"egress": egress(ports=["https"])}, "egress[0].ports: 'https' is not a port", id="port-name"),
        pytest.param({"egress": egress(ports=[True])}, "egress[0].ports: True is not a port", id="port-bool"),
        pytest.param(
            {"egress": egress(ports=["8100-8000"])},
            "egress[0].ports: the range '8100-8000' is reversed: write '8000-8100'.",
            id="reversed-range",
        ),
        pytest.param(
            {"egress": egress(ports=[])},
            "egress[0].ports is empty: list at least one port or range",
            id="no-ports",
        ),
        pytest.param(
            {"egress": egress(ports=[443, "400-500"])},
            "egress[0].ports: 400-500 and 443 overlap: merge them into one range.",
            id="ports-overlap",
        ),
        pytest.param(
            {"ingress": [{"zone": "guests", "proto": "tcp", "ports": [22]}]},
            "ingress[0].zone: 'guests' is not a zone: use one of admin, clinical, cluster.",
            id="unknown-zone",
        ),
        pytest.param(
            {"zones": {"admin": ["192.0.2.0/24"], "guests": ["203.0.113.0/24"]}},
            "zones: unknown key 'guests': use only admin, clinical, cluster.",
            id="unknown-zone-key",
        ),
        pytest.param(
            {"ingress": [{"zone": "admin", "proto": "icmp", "ports": [22]}]},
            "ingress[0].proto: 'icmp' is not supported: use tcp or udp.",
            id="bad-proto",
        ),
        pytest.param(
            {"egress": egress(owner=None)},
            "egress[0].owner is missing: say who answers for this flow (e.g. owner: radiology-it).",
            id="no-owner",
        ),
        pytest.param(
            {"egress": egress(reason="  ")},
            "egress[0].reason is missing: say why the host needs this flow (e.g. reason: package mirror).",
            id="blank-reason",
        ),
        pytest.param(
            {"egress": egress(reason='say "hi"')},
            "egress[0].reason: write one line of text without double quotes or backslashes.",
            id="quote-in-reason",
        ),
        pytest.param(
            {"zones": {"admin": []}},
            "zones.admin is empty: list at least one network the administrators connect from",
            id="empty-admin",
        ),
        pytest.param(
            {"families": ["ipv4"], "egress": egress(destination="2001:db8::10")},
            "egress[0].destination: '2001:db8::10' is IPv6, but families allows only ipv4: write an IPv4 "
            "address or add ipv6 to families.",
            id="v6-on-v4-host",
        ),
        pytest.param(
            {"families": ["ipv6"], "zones": {"admin": ["192.0.2.0/24"]}},
            "zones.admin: '192.0.2.0/24' is IPv4, but families allows only ipv6",
            id="v4-on-v6-host",
        ),
        pytest.param({"families": ["ipx"]}, "families: 'ipx' is not a family: use ipv4, ipv6 or both.", id="family"),
        pytest.param(
            {
                "egress": egress(destination="198.51.100.0/24")
                + egress(destination="198.51.100.7", owner="x", reason="y")
            },
            "egress: egress[1] (198.51.100.7 tcp 443) overlaps egress[0] (198.51.100.0/24 tcp 443): the kernel "
            "refuses overlapping set elements",
            id="egress-overlap",
        ),
        pytest.param(
            {"zones": {"admin": ["192.0.2.0/24", "192.0.2.128/25"]}},
            "zones.admin: 192.0.2.128/25 overlaps 192.0.2.0/24",
            id="zone-overlap",
        ),
        pytest.param(
            {"deny_egress_uids": [0]},
            "deny_egress_uids: 0 is root; denying root all traffic would cut the host off",
            id="uid-root",
        ),
        pytest.param(
            {"deny_egress_uids": ["vllm"]},
            "deny_egress_uids: 'vllm' is not a uid: use a number from 1 to 4294967294.",
            id="uid-name",
        ),
        pytest.param(
            {"deny_egress_gids": [0]},
            "deny_egress_gids: 0 is the root group; root's own programs run with it",
            id="gid-root",
        ),
        pytest.param(
            {"deny_egress_gids": ["enclave-llm"]},
            "deny_egress_gids: 'enclave-llm' is not a gid: use a number from 1 to 4294967294.",
            id="gid-name",
        ),
        pytest.param(
            {"log": {"rate": "10 per minute"}},
            "log.rate: '10 per minute' is not a rate: write N/second, N/minute, N/hour or N/day",
            id="log-rate",
        ),
        pytest.param({"log": {"burst": 0}}, "log.burst: 0 is not a burst", id="log-burst"),
        pytest.param({"log": {"prefix": 'a"b'}}, "log.prefix: 'a\"b' is not a log prefix", id="log-prefix"),
        pytest.param({"egres": []}, "policy: unknown key 'egres': use only zones,", id="typo-key"),
        pytest.param(
            {"egress": [{**egress()[0], "dest": "x"}]},
            "egress[0]: unknown key 'dest': use only destination, proto, ports, owner, reason.",
            id="typo-entry-key",
        ),
        pytest.param({"egress": ["198.51.100.10"]}, "egress[0] must be a mapping", id="entry-not-dict"),
    ],
)
def test_bad_input_is_named_with_its_fix(changes, expected):
    problems = lib.policy_problems(good_policy(**changes))
    assert any(expected in problem for problem in problems), problems


def test_more_elements_than_max_entries():
    policy = good_policy(
        egress=[
            {"destination": f"198.51.100.{i}", "proto": "tcp", "ports": [443], "owner": "o", "reason": "r"}
            for i in range(1, 11)
        ]
    )
    problems = lib.policy_problems(policy, max_entries=12)
    assert problems == [
        "the policy has 15+ set elements (egress destination/port pairs, zone networks, uids and gids), more than "
        "max_entries (12): merge destinations into CIDRs and ports into ranges, or raise max_entries."
    ]
    assert lib.policy_problems(policy, max_entries=15) == []


def test_all_problems_are_reported_at_once():
    problems = lib.policy_problems(good_policy(zones={"admin": []}, egress=egress(owner=None, ports=["9-1"])))
    assert len(problems) == 3


def test_identical_elements_merge_and_keep_both_owners():
    compiled, problems = lib.compile_policy(good_policy())
    assert problems == []
    assert compiled["elements"] == 3 + 3 + 1 + 1  # egress (80 merged), zone networks, uids, gids
    text = lib.render_ruleset(good_policy())
    assert '198.51.100.10 . tcp . 80 comment "it: mirror; ai-team: weights"' in text


def test_render_refuses_invalid_policy():
    with pytest.raises(ValueError, match=r"zones\.admin is empty"):
        lib.render_ruleset(good_policy(zones={"admin": []}))


def test_port_alias_and_single_values():
    policy = good_policy(
        egress=[{"destination": "192.0.2.9", "proto": "udp", "port": "123", "owner": "o", "reason": "r"}]
    )
    assert lib.policy_problems(policy) == []
    assert "192.0.2.9 . udp . 123" in lib.render_ruleset(policy)


@pytest.fixture(scope="module")
def rendered():
    return lib.render_ruleset(good_policy())


def test_transaction_replaces_only_our_table(rendered):
    lines = [line for line in rendered.splitlines() if line and not line.startswith("#")]
    assert lines[:3] == ["table inet enclave {}", "delete table inet enclave", "table inet enclave {"]
    assert "flush" not in rendered
    assert rendered.count("delete ") == 1


@pytest.mark.parametrize("hook", ["input", "output", "forward"])
def test_base_chains_drop_by_policy(rendered, hook):
    assert f"\tchain {hook} {{\n\t\ttype filter hook {hook} priority filter; policy drop;\n" in rendered


@pytest.mark.parametrize("path", ["input", "output", "forward", "uid", "invalid"])
def test_every_drop_path_logs_at_a_limited_rate_and_counts(rendered, path):
    assert f"\tcounter drop_{path} {{}}" in rendered
    assert (
        f"\tchain drop_{path} {{\n"
        f'\t\tlimit rate 5/second burst 10 packets log prefix "enc drop {path}: "\n'
        f'\t\tcounter name "drop_{path}"\n'
        "\t\tdrop\n"
    ) in rendered


def _chain(text, name):
    start = text.index(f"\tchain {name} {{")
    return text[start : text.index("\n\t}", start)]


def test_input_chain_order(rendered):
    rules = [line.strip() for line in _chain(rendered, "input").splitlines()[2:]]
    assert rules[:3] == ['iif "lo" accept', "ct state invalid goto drop_invalid", "ct state established,related accept"]
    assert rules[-1] == "goto drop_input"
    assert "ip saddr @zone_admin_v4 tcp dport { 22 } accept" in rules
    assert "ip6 saddr @zone_admin_v6 tcp dport { 22 } accept" in rules
    assert 'ip saddr @zone_clinical_v4 tcp dport { 8443, 9000-9010 } accept comment "inference API"' in rules


def test_icmp_that_ip_needs(rendered):
    inbound, outbound = _chain(rendered, "input"), _chain(rendered, "output")
    assert "icmp type { destination-unreachable, time-exceeded, parameter-problem } accept" in inbound
    assert "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem }" in inbound
    assert "nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept" in inbound
    assert "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } ip6 hoplimit 255 accept" in outbound
    assert "echo-request" not in rendered
    assert "nd-redirect" not in rendered


def test_output_denies_uids_before_the_allowlist(rendered):
    rules = [line.strip() for line in _chain(rendered, "output").splitlines()[2:]]
    uid = rules.index("meta skuid @deny_uids goto drop_uid")
    established = rules.index("ct state established,related accept")
    allow_v4 = rules.index("ip daddr . meta l4proto . th dport @egress_v4 accept")
    allow_v6 = rules.index("ip6 daddr . meta l4proto . th dport @egress_v6 accept")
    assert rules[0] == 'oif "lo" accept'
    assert uid < established < allow_v4 < allow_v6
    assert rules[-1] == "goto drop_output"


def test_output_denies_the_service_group_beside_its_uid(rendered):
    # A setuid-root program run by the service account gets sockets owned by
    # uid 0 but keeps the account's gid.
    rules = [line.strip() for line in _chain(rendered, "output").splitlines()[2:]]
    uid = rules.index("meta skuid @deny_uids goto drop_uid")
    assert rules[uid + 1] == "meta skgid @deny_gids goto drop_uid"
    assert uid + 1 < rules.index("ct state established,related accept")


def test_output_drops_forged_sources_before_anything_new_is_accepted(rendered):
    rules = [line.strip() for line in _chain(rendered, "output").splitlines()[2:]]
    spoof = rules.index("fib saddr . oif type != local goto drop_spoof")
    established = rules.index("ct state established,related accept")
    accepts = [i for i, rule in enumerate(rules) if rule.endswith("accept") and i > established]
    # Only duplicate address detection, from :: to a multicast group, goes first.
    before = [rules[i] for i in accepts if i < spoof]
    assert before == [
        "ip6 saddr :: ip6 daddr ff00::/8 icmpv6 type { nd-neighbor-solicit, nd-router-solicit } "
        "ip6 hoplimit 255 accept",
        "ip6 saddr :: ip6 daddr ff00::/8 icmpv6 type { mld-listener-report, mld2-listener-report } "
        "ip6 hoplimit 1 accept",
    ]
    assert established < spoof < rules.index("ip daddr . meta l4proto . th dport @egress_v4 accept")


def test_input_drops_sources_without_a_route_back_before_the_zones(rendered):
    rules = [line.strip() for line in _chain(rendered, "input").splitlines()[2:]]
    rpf = rules.index("fib saddr . iif oif missing goto drop_rpf")
    nd = next(i for i, rule in enumerate(rules) if "nd-neighbor-solicit" in rule)
    zones = [i for i, rule in enumerate(rules) if "@zone_" in rule]
    assert nd < rpf < min(zones)


@pytest.mark.parametrize("path", ["spoof", "rpf"])
def test_new_drop_paths_count_and_log(rendered, path):
    assert path in lib.DROP_PATHS
    assert f"\tcounter drop_{path} {{}}" in rendered
    chain = _chain(rendered, f"drop_{path}")
    assert f'log prefix "enc drop {path}: "' in chain
    assert f'counter name "drop_{path}"' in chain


def test_forward_drops_everything(rendered):
    assert _chain(rendered, "forward").splitlines()[2:] == ["\t\tgoto drop_forward"]


@pytest.mark.parametrize(
    ("name", "kind", "element"),
    [
        ("zone_admin_v4", "ipv4_addr", "192.0.2.0/24"),
        ("zone_admin_v6", "ipv6_addr", "2001:db8:1::/48"),
        ("zone_clinical_v4", "ipv4_addr", "203.0.113.0/24"),
        ("egress_v4", "ipv4_addr . inet_proto . inet_service", '198.51.100.10 . tcp . 3142 comment "it: mirror"'),
        ("egress_v6", "ipv6_addr . inet_proto . inet_service", '2001:db8:5::/64 . udp . 123 comment "it: NTP"'),
        ("deny_uids", "uid", "999"),
        ("deny_gids", "gid", "998"),
    ],
)
def test_named_sets(rendered, name, kind, element):
    block = rendered[rendered.index(f"\tset {name} {{") :]
    block = block[: block.index("\n\t}")]
    assert f"\t\ttype {kind}\n" in block
    assert ("flags interval" in block) == (name not in ("deny_uids", "deny_gids"))
    assert f"\t\t\t{element}" in block


def test_empty_sets_have_no_elements_line(rendered):
    block = rendered[rendered.index("\tset zone_cluster_v4 {") :]
    assert block[: block.index("\n\t}")] == "\tset zone_cluster_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval"


def test_rendering_is_deterministic():
    shuffled = good_policy()
    shuffled["egress"] = list(reversed(shuffled["egress"]))
    shuffled["zones"]["admin"] = list(reversed(shuffled["zones"]["admin"]))
    first = lib.render_ruleset(good_policy())
    assert lib.render_ruleset(good_policy()) == first
    # Element order follows the addresses, not the input; only merged comments keep input order.
    assert lib.render_ruleset(shuffled).replace("ai-team: weights; it: mirror", "it: mirror; ai-team: weights") == first


# --- normalisation ---------------------------------------------------------------

LISTING = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "enclave", "handle": 5}},
        {
            "counter": {
                "family": "inet",
                "name": "drop_output",
                "table": "enclave",
                "handle": 3,
                "packets": 0,
                "bytes": 0,
            }
        },
        {
            "set": {
                "family": "inet",
                "name": "egress_v4",
                "table": "enclave",
                "type": ["ipv4_addr", "inet_proto", "inet_service"],
                "handle": 4,
                "flags": ["interval"],
                "elem": [
                    {"elem": {"val": {"concat": ["192.0.2.10", "tcp", 3142]}, "comment": "it: mirror"}},
                    {"concat": [{"prefix": {"addr": "198.51.100.0", "len": 24}}, "udp", 123]},
                ],
            }
        },
        {
            "chain": {
                "family": "inet",
                "table": "enclave",
                "name": "output",
                "handle": 2,
                "type": "filter",
                "hook": "output",
                "prio": 0,
                "policy": "drop",
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "enclave",
                "chain": "output",
                "handle": 9,
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                            "right": {"set": ["nd-neighbor-solicit", "nd-neighbor-advert"]},
                        }
                    },
                    {"counter": {"packets": 3, "bytes": 180}},
                    {"accept": None},
                ],
            }
        },
        {"rule": {"family": "inet", "table": "enclave", "chain": "output", "handle": 10, "expr": [{"drop": None}]}},
        {"table": {"family": "inet", "name": "othertable", "handle": 6}},
        {"chain": {"family": "inet", "table": "othertable", "name": "output", "handle": 1}},
        {"table": {"family": "ip", "name": "enclave", "handle": 7}},
    ]
}


def _mutated(function):
    data = copy.deepcopy(LISTING)
    function(data["nftables"])
    return data


def test_normalised_form():
    normal = lib.normalise_ruleset(LISTING)
    assert normal["table"] == {"family": "inet", "name": "enclave"}
    assert set(normal["chains"]) == {"output"}
    assert [rule["expr"][-1] for rule in normal["chains"]["output"]["rules"]] == [{"accept": None}, {"drop": None}]
    assert normal["counters"] == {"drop_output": {"family": "inet", "name": "drop_output", "table": "enclave"}}
    assert "handle" not in json.dumps(normal)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda objs: objs[1]["table"].update(handle=99), id="table-handle"),
        pytest.param(lambda objs: objs[5]["rule"].update(handle=99), id="rule-handle"),
        pytest.param(lambda objs: objs[2]["counter"].update(packets=7, bytes=900), id="named-counter-values"),
        pytest.param(lambda objs: objs[5]["rule"]["expr"][1]["counter"].update(packets=0), id="rule-counter-values"),
        pytest.param(lambda objs: objs[3]["set"]["elem"].reverse(), id="set-element-order"),
        pytest.param(lambda objs: objs[5]["rule"]["expr"][0]["match"]["right"]["set"].reverse(), id="anon-set-order"),
        pytest.param(lambda objs: objs[0]["metainfo"].update(version="1.0.9"), id="metainfo"),
        pytest.param(lambda objs: objs.insert(2, objs.pop(3)), id="object-order"),
        pytest.param(lambda objs: objs[8]["chain"].update(policy="accept"), id="other-table"),
    ],
)
def test_normalisation_ignores(change):
    assert lib.rulesets_equal(LISTING, _mutated(change))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda objs: objs[4]["chain"].update(policy="accept"), id="chain-policy"),
        pytest.param(lambda objs: objs[3]["set"]["elem"].pop(), id="element-removed"),
        pytest.param(lambda objs: objs[3]["set"]["elem"][0]["elem"].update(comment="other"), id="element-comment"),
        pytest.param(lambda objs: objs.insert(5, objs.pop(6)), id="rule-order"),
        pytest.param(lambda objs: objs.pop(2), id="counter-removed"),
        pytest.param(lambda objs: objs[5]["rule"]["expr"].__setitem__(2, {"drop": None}), id="verdict"),
    ],
)
def test_normalisation_sees_real_changes(change):
    assert not lib.rulesets_equal(LISTING, _mutated(change))


def test_missing_table_normalises_to_none():
    assert lib.normalise_ruleset("") is None
    assert lib.normalise_ruleset({"nftables": [{"table": {"family": "inet", "name": "other"}}]}) is None
    assert lib.normalise_ruleset(json.dumps(LISTING)) == lib.normalise_ruleset(LISTING)


def test_ruleset_diff():
    assert lib.ruleset_diff("a\nb\n", "a\nb\n") == ""
    diff = lib.ruleset_diff("a\nb\n", "a\nc\n")
    assert diff.splitlines() == [
        "--- live: table inet enclave",
        "+++ policy: table inet enclave",
        "@@ -1,2 +1,2 @@",
        " a",
        "-b",
        "+c",
    ]
    assert "+table inet enclave {" in lib.ruleset_diff("", "table inet enclave {\n}\n")


@pytest.mark.parametrize(
    ("client", "port", "changes"),
    [
        pytest.param("192.0.2.7", 22, {}, id="v4-admin"),
        pytest.param("2001:db8:1::9", "22", {}, id="v6-admin-port-as-text"),
        pytest.param(
            "203.0.113.5",
            2222,
            {
                "ingress": [
                    {"zone": "admin", "proto": "tcp", "ports": [22]},
                    {"zone": "clinical", "proto": "tcp", "ports": ["2000-3000"]},
                ]
            },
            id="other-zone-with-a-range",
        ),
    ],
)
def test_client_kept_when_a_zone_holding_it_allows_the_ssh_port(client, port, changes):
    assert lib.client_lockout_problem(good_policy(**changes), client, port) == ""


@pytest.mark.parametrize(
    ("client", "port", "changes", "expected"),
    [
        pytest.param(
            "198.51.100.1",
            22,
            {},
            "a new SSH connection from 198.51.100.1 to tcp port 22 would be dropped (198.51.100.1 is in no zone "
            "(zones.admin holds 192.0.2.0/24, 2001:db8:1::/48)). Add 198.51.100.1/32",
            id="outside-every-zone",
        ),
        pytest.param(
            "192.0.2.7",
            2222,
            {},
            "192.0.2.7 is in zones admin, but none of them has an ingress rule for tcp 2222",
            id="ssh-port-not-open",
        ),
        pytest.param(
            "192.0.2.7",
            22,
            {"ingress": [{"zone": "admin", "proto": "udp", "ports": [22]}]},
            "none of them has an ingress rule for tcp 22",
            id="udp-only",
        ),
        pytest.param(
            "203.0.113.5",
            22,
            {},
            "203.0.113.5 is in zones clinical, but none of them has an ingress rule for tcp 22",
            id="clinical-client",
        ),
        pytest.param("2001:db8:2::1", 22, {}, "Add 2001:db8:2::1/128 or a network holding it", id="v6-outside"),
        pytest.param(
            "controller.example", 22, {}, "protect_client: 'controller.example' is not an IP address", id="name"
        ),
        pytest.param("192.0.2.7", 0, {}, "protect_port: 0 is not a port", id="port-zero"),
        pytest.param("192.0.2.7", "22-23", {}, "protect_port: '22-23' is not a port", id="port-range"),
    ],
)
def test_client_lockout_is_refused_with_the_fix(client, port, changes, expected):
    message = lib.client_lockout_problem(good_policy(**changes), client, port)
    assert expected in message
    assert message.endswith("nothing was applied.") or message.startswith("protect_")


def test_client_lockout_leaves_invalid_policies_to_policy_problems():
    assert lib.client_lockout_problem(good_policy(zones={"admin": ["192.0.2.0/33"]}), "192.0.2.7") == ""
