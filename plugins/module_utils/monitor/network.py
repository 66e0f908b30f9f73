# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Interfaces and default routes the policy does not cover.

The firewall's rules name no interface for egress (the default is drop), so a
new interface is no hole by itself; but one that appears on an enclave host is
a change nobody planned (a VPN, a USB modem, a veth into another namespace),
and a new default route says where packets would go once a rule lets them.
Both are breaches until an operator adds them to the monitor's settings.

Pure functions over ``ip -j`` output, plus ``read`` which runs ip.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import subprocess

IP = "/usr/sbin/ip"
DEFAULT_DESTINATIONS = ("default", "0.0.0.0/0", "::/0")


def interface_names(link_json):
    """Names of the interfaces in ``ip -j link show`` output."""
    return sorted({item["ifname"] for item in json.loads(link_json or "[]") if "ifname" in item})


def default_routes(route_json):
    """``[{dev, gateway, table}]`` of the unicast default routes in ``ip -j route show table all`` output."""
    routes = []
    for item in json.loads(route_json or "[]"):
        if item.get("type", "unicast") != "unicast" or item.get("dst") not in DEFAULT_DESTINATIONS:
            continue
        routes.append({"dev": item.get("dev"), "gateway": item.get("gateway"), "table": item.get("table", "main")})
    return routes


def _same_gateway(allowed, gateway):
    if allowed in (None, ""):
        return gateway in (None, "")
    if gateway in (None, ""):
        return False
    return ipaddress.ip_address(allowed) == ipaddress.ip_address(gateway)


def uncovered(interfaces, routes, allowed_interfaces, allowed_routes):
    """``[(kind, detail)]`` for each interface and default route the settings do not list."""
    found = []
    for name in interfaces:
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed_interfaces):
            found.append(("interface", f"interface {name} is not in the monitor's list"))
    for route in routes:
        if not any(
            route["dev"] == allowed["dev"] and _same_gateway(allowed.get("gateway"), route["gateway"])
            for allowed in allowed_routes
        ):
            via = f" via {route['gateway']}" if route["gateway"] else ""
            found.append(("default_route", f"default route{via} dev {route['dev']} (table {route['table']})"))
    return found


def read(ip=IP):
    """``(interface names, default routes)`` of this network namespace; RuntimeError when ip fails."""

    def run(*args):
        result = subprocess.run([ip, "-j", *args], capture_output=True, text=True, timeout=10, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()[:200]}")
        return result.stdout

    links = interface_names(run("link", "show"))
    routes = default_routes(run("-4", "route", "show", "table", "all")) + default_routes(
        run("-6", "route", "show", "table", "all")
    )
    return links, routes
