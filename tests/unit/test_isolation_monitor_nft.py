"""Unit tests for plugins/module_utils/monitor/nft.py: normalising and comparing nft JSON."""

from __future__ import annotations

import copy
import json

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.monitor import nft as lib

TABLE = {"family": "inet", "table": "enclave"}


def rule(chain, handle, *expr):
    return {"rule": {**TABLE, "chain": chain, "handle": handle, "expr": list(expr)}}


def listing(handle_base=0, packets=0):
    """A small table as ``nft -j list table inet enclave`` prints it."""
    return [
        {"table": {"family": "inet", "name": "enclave", "handle": 7 + handle_base}},
        {
            "counter": {
                **TABLE,
                "name": "drop_output",
                "handle": 9 + handle_base,
                "packets": packets,
                "bytes": 60 * packets,
            }
        },
        {"counter": {**TABLE, "name": "drop_uid", "handle": 10 + handle_base, "packets": 1, "bytes": 60}},
        {"set": {**TABLE, "name": "deny_uids", "type": "uid", "handle": 11 + handle_base, "elem": [999, 65534]}},
        {
            "chain": {
                **TABLE,
                "name": "output",
                "handle": 2 + handle_base,
                "type": "filter",
                "hook": "output",
                "prio": 0,
                "policy": "drop",
            }
        },
        rule(
            "output",
            20 + handle_base,
            {"match": {"left": {"meta": {"key": "oifname"}}, "op": "==", "right": "lo"}},
            {"accept": None},
        ),
        rule(
            "output",
            21 + handle_base,
            {"counter": {"packets": packets, "bytes": 1}},
            {"counter": "drop_output"},
            {"drop": None},
        ),
    ]


def text(objects):
    return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, *objects]})


def test_two_loads_with_other_handles_and_counters_are_equal():
    assert lib.differences(listing(), listing(handle_base=100, packets=42)) == []


def test_parse_drops_metainfo_and_refuses_other_text():
    assert lib.parse(text(listing())) == listing()
    with pytest.raises(ValueError, match="no JSON"):
        lib.parse("Error: No such file or directory")
    with pytest.raises(ValueError, match="without an nftables list"):
        lib.parse("{}")


def test_counters_reads_the_named_counters():
    assert lib.counters(listing(packets=5)) == {"drop_output": 5, "drop_uid": 1}


def test_policy_changed_to_accept():
    live = copy.deepcopy(listing())
    live[4]["chain"]["policy"] = "accept"
    [(kind, detail)] = lib.differences(listing(), live)
    assert kind == "chain_policy"
    assert "drop -> accept" in detail


def test_an_accept_rule_for_the_service_user():
    live = listing()
    live.insert(
        5,
        rule("output", 99, {"match": {"left": {"meta": {"key": "skuid"}}, "op": "==", "right": 999}}, {"accept": None}),
    )
    [(kind, detail)] = lib.differences(listing(), live)
    assert kind == "rule_added"
    assert '"skuid"' in detail
    assert detail.startswith("chain output")


def test_a_flushed_table_misses_every_rule():
    live = [item for item in listing() if "rule" not in item]
    kinds = [kind for kind, _detail in lib.differences(listing(), live)]
    assert kinds == ["rule_removed", "rule_removed"]


def test_reordered_rules_are_a_change():
    live = listing()
    live[5], live[6] = live[6], live[5]
    assert lib.differences(listing(), live) == [("order_changed", "the same rules in another order")]


def test_a_changed_set_and_an_added_chain():
    live = copy.deepcopy(listing())
    live[3]["set"]["elem"] = [65534]
    live.append({"chain": {**TABLE, "name": "extra", "handle": 50}})
    assert lib.differences(listing(), live) == [("set_changed", "set deny_uids"), ("object_added", "chain extra")]


def test_collapse_keeps_a_few_of_each_kind_and_counts_the_rest():
    found = [("rule_removed", f"rule {n}") for n in range(10)] + [("chain_policy", "output")]
    assert lib.collapse(found) == [
        ("rule_removed", "rule 0"),
        ("rule_removed", "rule 1"),
        ("rule_removed", "8 more like: rule 2"),
        ("chain_policy", "output"),
    ]
    assert lib.collapse(found[:3]) == found[:3]


SPOOF = rule(
    "output",
    30,
    {"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["saddr", "oif"]}}, "right": "local"}},
    {"goto": {"target": "drop_spoof"}},
)
SERVICE_GROUP = rule(
    "output",
    31,
    {"match": {"op": "==", "left": {"meta": {"key": "skgid"}}, "right": "@deny_gids"}},
    {"goto": {"target": "drop_uid"}},
)


def guarded():
    """listing() with the anti-spoof and service-group rules as nft 1.0.6 prints them, before the final drop."""
    objects = listing()
    return [*objects[:6], copy.deepcopy(SERVICE_GROUP), copy.deepcopy(SPOOF), objects[6]]


def test_the_anti_spoof_and_group_rules_compare_equal_across_loads():
    again = guarded()
    for item in again:
        if "rule" in item:
            item["rule"]["handle"] += 100
    assert lib.differences(guarded(), again) == []


@pytest.mark.parametrize("removed", [SPOOF, SERVICE_GROUP], ids=["anti-spoof", "service-group"])
def test_removing_a_new_rule_is_a_breach(removed):
    live = [item for item in guarded() if item != removed]
    [(kind, detail)] = lib.differences(guarded(), live)
    assert kind == "rule_removed"
    assert removed["rule"]["expr"][-1]["goto"]["target"] in detail


@pytest.mark.parametrize(
    ("field", "weaker"),
    [
        # Any local address instead of one on the outgoing interface.
        ("flags", ["saddr"]),
        # The opposite test: forged sources pass, the host's own are dropped.
        ("op", "=="),
    ],
)
def test_weakening_the_anti_spoof_rule_is_a_breach(field, weaker):
    live = copy.deepcopy(guarded())
    match = live[7]["rule"]["expr"][0]["match"]
    if field == "flags":
        match["left"]["fib"]["flags"] = weaker
    else:
        match["op"] = weaker
    found = lib.differences(guarded(), live)
    assert found, "a weaker anti-spoof rule went unnoticed"
    assert any("drop_spoof" in detail for _kind, detail in found)
