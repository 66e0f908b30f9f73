"""Unit tests for plugins/module_utils/monitor/network.py: interfaces and default routes."""

from __future__ import annotations

import json

from ansible_collections.enclave.llm.plugins.module_utils.monitor import network as lib

ROUTES_V4 = json.dumps(
    [
        {"dst": "default", "gateway": "198.51.100.1", "dev": "eth0", "protocol": "static", "metric": 100, "flags": []},
        {"dst": "198.51.100.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "flags": []},
        {"type": "local", "dst": "127.0.0.0/8", "dev": "lo", "table": "local", "flags": []},
        {"dst": "default", "dev": "wg0", "table": "51820", "flags": []},
    ]
)
LINKS = json.dumps(
    [{"ifindex": 1, "ifname": "lo"}, {"ifindex": 3, "ifname": "eth0"}, {"ifindex": 9, "ifname": "veth-x"}]
)


def test_only_unicast_default_routes_of_every_table():
    assert lib.default_routes(ROUTES_V4) == [
        {"dev": "eth0", "gateway": "198.51.100.1", "table": "main"},
        {"dev": "wg0", "gateway": None, "table": "51820"},
    ]


def test_interface_names():
    assert lib.interface_names(LINKS) == ["eth0", "lo", "veth-x"]


def test_what_the_settings_cover_is_no_breach():
    routes = [{"dev": "eth0", "gateway": "198.51.100.1", "table": "main"}]
    assert lib.uncovered(["lo", "eth0"], routes, ["lo", "eth*"], [{"dev": "eth0", "gateway": "198.51.100.1"}]) == []


def test_a_new_interface_and_a_new_default_route_are_breaches():
    routes = lib.default_routes(ROUTES_V4)
    found = lib.uncovered(
        ["lo", "eth0", "veth-x"], routes, ["lo", "eth*"], [{"dev": "eth0", "gateway": "198.51.100.1"}]
    )
    assert found == [
        ("interface", "interface veth-x is not in the monitor's list"),
        ("default_route", "default route dev wg0 (table 51820)"),
    ]


def test_another_gateway_on_an_allowed_device_is_a_breach():
    routes = [{"dev": "eth0", "gateway": "198.51.100.99", "table": "main"}]
    [(kind, detail)] = lib.uncovered(["eth0"], routes, ["eth0"], [{"dev": "eth0", "gateway": "198.51.100.1"}])
    assert kind == "default_route"
    assert "via 198.51.100.99" in detail
