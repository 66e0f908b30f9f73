"""Unit tests for plugins/module_utils/monitor/config.py: one message per bad setting, naming it."""

from __future__ import annotations

import pytest
from ansible_collections.enclave.llm.plugins.filter.isolation_monitor import isolation_monitor_problems
from ansible_collections.enclave.llm.plugins.module_utils.monitor import config as lib


def settings(**changes):
    data = {
        "canaries": [{"name": "canary https", "address": "198.51.100.99", "proto": "tcp", "port": 443}],
        "allowlisted": ["198.51.100.1/32", "203.0.113.192/26", "198.51.100.10"],
        "interfaces": ["lo", "eth*"],
        "default_routes": [{"dev": "eth0", "gateway": "198.51.100.1"}],
    }
    data.update(changes)
    return data


def problems(**changes):
    return lib.validate(settings(**changes))[1]


def test_good_settings_get_the_defaults():
    config, found = lib.validate(settings())
    assert found == []
    assert config["interval"] == 30.0
    assert config["vllm_unit"] == "vllm.service"
    # The probe timeout caps each canary's own.
    assert config["canaries"][0]["timeout"] == 1.0


@pytest.mark.parametrize(
    ("changes", "variable", "words"),
    [
        ({"canaries": []}, "isolation_monitor_canaries", "is empty"),
        (
            {"canaries": [{"name": "mirror", "address": "198.51.100.10", "proto": "tcp", "port": 80}]},
            "isolation_monitor_canaries",
            "lies inside 198.51.100.10/32",
        ),
        (
            {"canaries": [{"name": "clinic", "address": "203.0.113.210", "proto": "tcp", "port": 443}]},
            "isolation_monitor_canaries",
            "lies inside 203.0.113.192/26",
        ),
        ({"interval": 0.5}, "isolation_monitor_interval", "below 1 s"),
        ({"interval": "soon"}, "isolation_monitor_interval", "not a number"),
        (
            {"container": "vllm", "known_containers": ["enclave-vllm"]},
            "isolation_monitor_container",
            "no container 'vllm'",
        ),
        ({"container": "bad name"}, "isolation_monitor_container", "not a container name"),
        ({"vllm_unit": "vllm"}, "isolation_monitor_vllm_unit", "not a unit name"),
        ({"interfaces": []}, "isolation_monitor_interfaces", "is empty"),
        (
            {"default_routes": [{"dev": "wg0"}]},
            "isolation_monitor_default_routes",
            "not in isolation_monitor_interfaces",
        ),
        ({"syslog": {"address": "192.0.2.70", "port": 514}}, "isolation_monitor_syslog", "firewall_egress_extra"),
        ({"alert_only": "yes"}, "isolation_monitor_alert_only", "not true or false"),
        ({"gate_file": "run/gate"}, "isolation_monitor_gate_file", "not an absolute path"),
    ],
)
def test_each_bad_setting_names_its_variable(changes, variable, words):
    found = problems(**changes)
    assert len(found) == 1, found
    assert found[0].startswith(variable)
    assert words in found[0]


def test_a_canary_of_another_family_is_not_inside_a_v4_range():
    assert problems(canaries=[{"name": "v6", "address": "2001:db8::99", "proto": "tcp", "port": 443}]) == []


def test_an_allowed_siem_passes():
    assert problems(syslog={"address": "192.0.2.70", "port": 514, "proto": "udp"}, allowlisted=["192.0.2.70"]) == []


def test_the_known_container_passes_and_none_known_leaves_it_unchecked():
    assert problems(container="enclave-vllm", known_containers=["enclave-vllm"]) == []
    assert problems(container="enclave-vllm", known_containers=[]) == []


def test_an_interface_the_host_lacks_is_refused_by_name():
    found = problems(interfaces=["lo", "eth0", "eth9"], host_interfaces=["eth0", "lo"])
    assert found == [
        "isolation_monitor_interfaces names eth9, which this host does not have (it has eth0, lo): correct the name."
    ]


def test_a_host_interface_left_out_is_refused_before_it_becomes_a_breach():
    found = problems(interfaces=["lo", "ens1"], host_interfaces=["ens1", "eth0", "lo"], default_routes=[])
    assert len(found) == 1
    assert "leaves out eth0 of this host's interfaces" in found[0]
    assert "stop serving" in found[0]


def test_patterns_cover_the_host_and_need_not_match_now():
    assert problems(interfaces=["lo", "eth*", "wg*"], host_interfaces=["eth0", "eth1", "lo"]) == []
    assert problems(interfaces=["lo", "eth0"], host_interfaces=[]) == []


def test_every_problem_is_reported_at_once():
    assert len(problems(canaries=[], interfaces=[], vllm_unit="x")) == 3


def test_the_role_s_filter_reports_what_the_monitor_would_refuse():
    """The controller's check (enclave.llm.isolation_monitor_problems) is the monitor's own, after JSON."""
    refused = isolation_monitor_problems(settings(interval=0.2))
    assert refused[0].startswith("isolation_monitor_interval: 0.2 is below 1 s")
    assert isolation_monitor_problems(settings()) == []
