# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The isolation monitor's settings: defaults, validation, and one message per problem.

The role runs ``validate`` on the controller (the
``enclave.llm.isolation_monitor_problems`` filter) before it changes anything on
the host; the monitor runs it again when it starts. Every message names the role
variable to change (``VARIABLES``) and says how.

Pure logic, stdlib only: the host runs it from /usr/local/lib/enclave-isolation,
under the collection's package path.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re

from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import egress_probe

# The role variable behind each setting, for the messages.
VARIABLES = {
    "canaries": "isolation_monitor_canaries",
    "allowlisted": "the firewall's allowlist (enclave_zones, enclave_mirror, firewall_ntp_servers, "
    "firewall_dns_resolvers, firewall_egress_extra)",
    "interval": "isolation_monitor_interval",
    "probe_timeout": "isolation_monitor_probe_timeout",
    "container": "isolation_monitor_container",
    "known_containers": "the vLLM role's container name",
    "host_interfaces": "the host's interfaces",
    "service_user": "isolation_monitor_service_user",
    "vllm_unit": "isolation_monitor_vllm_unit",
    "ingress_units": "isolation_monitor_ingress_units",
    "interfaces": "isolation_monitor_interfaces",
    "default_routes": "isolation_monitor_default_routes",
    "syslog": "isolation_monitor_syslog",
    "gate_file": "isolation_monitor_gate_file",
    "state_dir": "isolation_monitor_state_dir",
    "metrics_dir": "isolation_monitor_metrics_dir",
    "rules_file": "isolation_monitor_rules_file",
    "alert_only": "isolation_monitor_alert_only",
    "events": "isolation_monitor_events",
    "resume_units": "isolation_monitor_resume_units",
    "restore_ruleset": "isolation_monitor_restore_ruleset",
    "counters": "isolation_monitor_counters",
}

DEFAULTS = {
    "table": {"family": "inet", "name": "enclave"},
    "rules_file": "/etc/nftables.d/enclave.nft",
    "service_user": "enclave-llm",
    "vllm_unit": "vllm.service",
    "container": "vllm",
    "known_containers": [],
    "host_interfaces": [],
    "ingress_units": [],
    "gate_file": "/run/enclave/isolation-verified",
    "state_dir": "/var/lib/enclave",
    "metrics_dir": "/var/lib/prometheus/node-exporter",
    "interval": 30.0,
    "probe_timeout": 1.0,
    "settle": 0.05,
    "alert_only": False,
    "events": True,
    "resume_units": True,
    "restore_ruleset": True,
    "canaries": [],
    "allowlisted": [],
    "interfaces": [],
    "default_routes": [],
    "counters": {"host": "drop_output", "service_user": "drop_uid"},
    "syslog": {},
}

MIN_INTERVAL = 1.0
SYSLOG_PROTOS = ("udp", "tcp")
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|target)$")
_CONTAINER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:@*?\[\]-]{1,15}$")
_GLOB = re.compile(r"[*?\[]")
_COUNTER = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def _var(key):
    return VARIABLES.get(key, key)


def _network(text):
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        return None


def _canary_problems(config):
    canaries = config.get("canaries")
    if not isinstance(canaries, list) or not canaries:
        return [], [
            f"{_var('canaries')} is empty: list at least one address outside the hospital that must stay "
            "unreachable (production: well-known public addresses; labs: the lab's canary host)."
        ]
    targets, problems = egress_probe.validate_targets(canaries)
    problems = [f"{_var('canaries')}: {problem}" for problem in problems]
    for target in targets:
        if target.get("expect") == "open":
            problems.append(
                f"{_var('canaries')}: {target['name']!r} has expect: open: a canary must stay blocked; remove expect."
            )
    allowlisted = []
    for entry in config.get("allowlisted") or []:
        network = _network(entry.get("network") if isinstance(entry, dict) else entry)
        if network is None:
            problems.append(f"{_var('allowlisted')}: {entry!r} is not an address or network.")
            continue
        allowlisted.append((network, entry.get("name", str(network)) if isinstance(entry, dict) else str(network)))
    for target in targets:
        if not target.get("address"):
            continue
        address = ipaddress.ip_address(target["address"])
        for network, name in allowlisted:
            if address.version == network.version and address in network:
                problems.append(
                    f"{_var('canaries')}: {target['name']!r} ({address}) lies inside {network}, which the firewall "
                    f"allows ({name}): it would raise false alarms or hide a real leak. Pick a canary outside every "
                    "allowed zone, mirror, NTP, DNS and extra egress destination."
                )
    return targets, problems


def _number_problem(config, key, minimum):
    value = config.get(key)
    if isinstance(value, bool):
        return f"{_var(key)}: {value!r} is not a number of seconds."
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{_var(key)}: {value!r} is not a number of seconds."
    if number < minimum:
        return f"{_var(key)}: {number:g} is below {minimum:g} s: set it to {minimum:g} or more."
    return None


def _unit_problems(config):
    problems = []
    if not isinstance(config.get("vllm_unit"), str) or not _UNIT.match(config["vllm_unit"]):
        problems.append(f"{_var('vllm_unit')}: {config.get('vllm_unit')!r} is not a unit name such as vllm.service.")
    units = config.get("ingress_units")
    if not isinstance(units, list) or any(not isinstance(unit, str) or not _UNIT.match(unit) for unit in units):
        problems.append(f"{_var('ingress_units')}: {units!r} must be a list of unit names such as nginx.service.")
    return problems


def _container_problems(config):
    name = config.get("container")
    if name in (None, ""):
        return []
    if not isinstance(name, str) or not _CONTAINER.match(name):
        return [f"{_var('container')}: {name!r} is not a container name (letters, digits, '_', '.', '-')."]
    known = config.get("known_containers") or []
    if known and name not in known:
        return [
            f"{_var('container')}: there is no container {name!r} among the service account's containers "
            f"({', '.join(known)}): name one of them, or leave it empty to skip the container's namespace."
        ]
    return []


def _host_interface_problems(interfaces, host_interfaces):
    """Names the host lacks, and the host's interfaces the list leaves out.

    ``host_interfaces`` is what the host has now (validation only, never
    installed). An interface left out is a breach at the monitor's first
    check, which stops serving: refused here, naming it, instead.
    """
    problems = []
    have = sorted(str(name) for name in host_interfaces)
    absent = [item for item in interfaces if not _GLOB.search(item) and item not in have]
    if absent:
        problems.append(
            f"{_var('interfaces')} names {', '.join(absent)}, which this host does not have "
            f"(it has {', '.join(have)}): correct the name."
        )
    left_out = [name for name in have if not any(fnmatch.fnmatchcase(name, item) for item in interfaces)]
    if left_out:
        problems.append(
            f"{_var('interfaces')} leaves out {', '.join(left_out)} of this host's interfaces: the monitor's "
            "first check would call each a breach and stop serving. Add them (or a pattern such as eth*)."
        )
    return problems


def _network_problems(config):
    problems = []
    interfaces = config.get("interfaces")
    if not isinstance(interfaces, list) or not interfaces:
        problems.append(
            f"{_var('interfaces')} is empty: list the host's interfaces (names or patterns such as eth*); "
            "any other interface is a breach."
        )
    elif any(not isinstance(item, str) or not _INTERFACE.match(item) for item in interfaces):
        problems.append(f"{_var('interfaces')}: {interfaces!r} must be interface names or patterns such as eth*.")
    elif config.get("host_interfaces"):
        problems += _host_interface_problems(interfaces, config["host_interfaces"])
    routes = config.get("default_routes")
    if not isinstance(routes, list):
        problems.append(f"{_var('default_routes')} must be a list of {{dev, gateway}}.")
        return problems
    for index, route in enumerate(routes):
        if not isinstance(route, dict) or not isinstance(route.get("dev"), str):
            problems.append(f"{_var('default_routes')}[{index}]: {route!r} needs dev (and gateway, or none).")
            continue
        gateway = route.get("gateway")
        if gateway not in (None, "") and _network(gateway) is None:
            problems.append(f"{_var('default_routes')}[{index}].gateway: {gateway!r} is not an address.")
        covered = any(fnmatch.fnmatchcase(route["dev"], item) for item in interfaces or [])
        if interfaces and isinstance(interfaces, list) and not covered:
            problems.append(
                f"{_var('default_routes')}[{index}]: dev {route['dev']!r} is not in {_var('interfaces')}: add it there."
            )
    return problems


def _syslog_problems(config, allowlisted):
    syslog = config.get("syslog") or {}
    if not syslog:
        return []
    if not isinstance(syslog, dict):
        return [f"{_var('syslog')} must be a mapping {{address, port, proto}} or empty."]
    problems = []
    address = syslog.get("address")
    try:
        parsed = ipaddress.ip_address(str(address))
    except ValueError:
        return [f"{_var('syslog')}.address: {address!r} is not an address (the host has no DNS)."]
    port = syslog.get("port", 514)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append(f"{_var('syslog')}.port: {port!r} is not a port from 1 to 65535.")
    if syslog.get("proto", "udp") not in SYSLOG_PROTOS:
        problems.append(f"{_var('syslog')}.proto: {syslog.get('proto')!r} is not udp or tcp.")
    if not any(parsed.version == network.version and parsed in network for network in allowlisted):
        problems.append(
            f"{_var('syslog')}.address: {address} is not allowed by the firewall: add "
            f"{{destination: {address}, proto: {syslog.get('proto', 'udp')}, ports: [{port}], owner: ..., "
            "reason: SIEM}} to firewall_egress_extra, or leave isolation_monitor_syslog empty."
        )
    return problems


def validate(raw):
    """Return ``(config, problems)``: the settings with defaults filled in, and every problem found."""
    if not isinstance(raw, dict):
        return None, ["the monitor's settings must be a mapping."]
    config = {**DEFAULTS, **{key: value for key, value in raw.items() if value is not None}}
    unknown = sorted(set(raw) - set(DEFAULTS))
    problems = [f"unknown setting(s) {', '.join(unknown)}."] if unknown else []
    targets, canary_problems = _canary_problems(config)
    problems += canary_problems
    for key, minimum in (("interval", MIN_INTERVAL), ("probe_timeout", 0.1)):
        problem = _number_problem(config, key, minimum)
        if problem:
            problems.append(problem)
    if not problems and float(config["probe_timeout"]) >= float(config["interval"]):
        problems.append(
            f"{_var('probe_timeout')} ({config['probe_timeout']}) must be shorter than {_var('interval')} "
            f"({config['interval']})."
        )
    problems += _unit_problems(config)
    problems += _container_problems(config)
    problems += _network_problems(config)
    networks = [_network(e.get("network") if isinstance(e, dict) else e) for e in config.get("allowlisted") or []]
    problems += _syslog_problems(config, [network for network in networks if network is not None])
    counters = config.get("counters")
    if not isinstance(counters, dict) or any(
        not isinstance(counters.get(key), str) or not _COUNTER.match(counters[key]) for key in ("host", "service_user")
    ):
        problems.append(f"{_var('counters')} must name the drop counters {{host: ..., service_user: ...}}.")
    for key in ("gate_file", "state_dir", "metrics_dir", "rules_file"):
        if not isinstance(config.get(key), str) or not config[key].startswith("/"):
            problems.append(f"{_var(key)}: {config.get(key)!r} is not an absolute path.")
    if not isinstance(config.get("service_user"), str) or not config["service_user"]:
        problems.append(f"{_var('service_user')} is empty: name the inference service account.")
    for key in ("alert_only", "events", "resume_units", "restore_ruleset"):
        if not isinstance(config.get(key), bool):
            problems.append(f"{_var(key)}: {config.get(key)!r} is not true or false.")
    if problems:
        return None, problems
    timeout = float(config["probe_timeout"])
    config["canaries"] = [{**target, "timeout": min(target["timeout"], timeout)} for target in targets]
    config["interval"] = float(config["interval"])
    config["probe_timeout"] = timeout
    return config, []


def load(path):
    """The validated settings from a JSON file; ValueError with every problem otherwise."""
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    config, problems = validate(raw)
    if problems:
        raise ValueError("\n".join(problems))
    return config
