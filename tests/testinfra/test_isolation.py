"""firewall: the host drops by default in every direction and opens inbound only
what each zone's allowlist names, canaries outside stay unreachable while the
mirror answers, denied users get no egress at all, SSH stays open to the admin
zone, the live table is the one installed for boot, and the policy is
installed to load before the network at boot (ENC-FW-*, docs/controls.yml).

Probes run through the enclave.llm.egress_probe module on the host itself,
with the canaries and the mirror named by the inventory; every "blocked" is
paired with the drop counter that moved and with the mirror, which connected
in the same call.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from enclave_host import REPO, inventory_name

PROBE_TIMEOUT = 2
RULES_FILE = "/etc/nftables.d/enclave.nft"
EMERGENCY_FILE = "/etc/enclave/firewall-emergency.nft"
BOOT_CONFIGS = ("/etc/nftables.conf", "/etc/sysconfig/nftables.conf")
ROLE_DEFAULTS = yaml.safe_load((REPO / "roles" / "firewall" / "defaults" / "main.yml").read_text())
# Run-time state, not policy: two loads of the same file differ only here.
VOLATILE_KEYS = ("handle", "packets", "bytes")
# Matches an accept rule may carry without naming a zone: loopback, replies and
# the ICMP that IP needs (roles/firewall/README.md).
BASE_MATCHES = {"meta iif", "ct state", "icmp type", "icmpv6 type", "ip6 hoplimit", "ip6 saddr"}
LINK_LOCAL = {"prefix": {"addr": "fe80::", "len": 10}}


def _egress_probe(request, host, **args) -> dict:
    """Run enclave.llm.egress_probe on the host under test; its result as a dict."""
    inventory = request.config.getoption("--enclave-inventory")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": os.environ.get("ANSIBLE_CONFIG", str(REPO / "ansible.cfg")),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }
    completed = subprocess.run(
        ["ansible", inventory_name(host), "-i", inventory, "-m", "enclave.llm.egress_probe", "-a", json.dumps(args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        plays = json.loads(completed.stdout)["plays"]
        (result,) = plays[0]["tasks"][0]["hosts"].values()
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(
            f"no result from egress_probe: {completed.stdout[-2000:]} {completed.stderr[-2000:]}"
        ) from exc
    assert not result.get("failed"), result.get("msg")
    return result


@pytest.fixture
def mirror_control(enclave_vars) -> dict:
    mirror = enclave_vars["enclave_mirror"]
    url = urlsplit(mirror["apt_url"])
    port = url.port or (443 if url.scheme == "https" else 80)
    return {"name": "mirror apt", "address": mirror["host"], "proto": "tcp", "port": port, "timeout": PROBE_TIMEOUT}


@pytest.fixture
def canaries(enclave_vars) -> list[dict]:
    found = enclave_vars.get("enclave_canaries") or []
    if not found:
        pytest.skip("the inventory names no enclave_canaries")
    return [{**c, "expect": "blocked", "counter": "drop_output", "timeout": PROBE_TIMEOUT} for c in found]


def _nft_objects(host, command, *args) -> list[dict]:
    """The objects of an ``nft -j`` listing, without its metainfo."""
    return [item for item in json.loads(host.check_output(command, *args))["nftables"] if "metainfo" not in item]


def _without_state(value):
    if isinstance(value, dict):
        return {key: _without_state(item) for key, item in value.items() if key not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without_state(item) for item in value]
    return value


def _left(match) -> str:
    """A match's left-hand side as nft writes it: ``tcp dport``, ``ip saddr``, ``ct state``, ``meta iif``."""
    left = match["left"]
    if "payload" in left:
        return f"{left['payload'].get('protocol')} {left['payload'].get('field')}"
    for kind in ("meta", "ct"):
        if kind in left:
            return f"{kind} {left[kind].get('key')}"
    return json.dumps(left, sort_keys=True)


def _ports(right) -> set[int]:
    if isinstance(right, dict) and "set" in right:
        return {port for element in right["set"] for port in _ports(element)}
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return set(range(int(low), int(high) + 1))
    return {int(right)}


def _inventory_ports(ports) -> set[int]:
    found = set()
    for port in ports:
        low, _sep, high = str(port).partition("-")
        found |= set(range(int(low), int(high or low) + 1))
    return found


def _inbound_openings(host) -> set[tuple[str, str, int]]:
    """``(zone, proto, port)`` for every port the live input chain accepts.

    Fails on an accept rule that opens a port without naming a zone's set, or
    accepts anything beyond loopback, replies and ICMP without one.
    """
    rules = [item["rule"] for item in _nft_objects(host, "nft -j list chain inet enclave input") if "rule" in item]
    found = set()
    for rule in rules:
        expr = rule["expr"]
        if not any("accept" in item for item in expr):
            continue
        matches = [item["match"] for item in expr if "match" in item]
        zones = [
            m["right"][len("@zone_") :].rsplit("_v", 1)[0]
            for m in matches
            if isinstance(m["right"], str) and m["right"].startswith("@zone_")
        ]
        dports = [(_left(m).split()[0], _ports(m["right"])) for m in matches if _left(m).endswith(" dport")]
        if dports:
            assert zones, f"a port is open to every source: {json.dumps(expr)}"
            found |= {(zones[0], proto, port) for proto, ports in dports for port in ports}
            continue
        assert matches, f"an accept of everything: {expr}"
        assert {_left(m) for m in matches} <= BASE_MATCHES, f"an accept beyond the base rules: {expr}"
        sources = [m["right"] for m in matches if _left(m) == "ip6 saddr"]
        assert all(source == LINK_LOCAL for source in sources), f"a source beyond fe80::/10: {expr}"
    return found


def test_ENC_FW_001_every_direction_drops_by_default(host):
    table = json.loads(host.check_output("nft -j list table inet enclave"))
    chains = {c["chain"]["name"]: c["chain"] for c in table["nftables"] if "chain" in c}
    for hook in ("input", "output", "forward"):
        base = [c for c in chains.values() if c.get("hook") == hook]
        assert base, f"no base chain on the {hook} hook"
        assert all(c["policy"] == "drop" for c in base), f"{hook}: {base}"


def test_ENC_FW_001_no_table_beside_those_loaded_at_boot(host):
    """Another table cannot re-open what ours drops, but it can mark, redirect or
    forward around it; every table live must be one the boot configuration loads."""
    config = next((path for path in BOOT_CONFIGS if host.file(path).exists), None)
    assert config, f"none of {BOOT_CONFIGS} exists"
    # The boot configuration flushes the ruleset: load it where that harms nothing.
    expected = host.check_output("unshare --net -- sh -c %s sh %s", 'nft -f "$1" && nft list tables', config)
    live = host.check_output("nft list tables")
    extra = sorted(set(live.splitlines()) - set(expected.splitlines()))
    assert "table inet enclave" in live.splitlines()
    assert extra == [], f"tables the boot configuration {config} does not load: {extra}"


def test_ENC_FW_001_inbound_opens_only_the_zone_allowlists(host, enclave_vars):
    ingress = enclave_vars.get("firewall_ingress", ROLE_DEFAULTS["firewall_ingress"])
    wanted = {
        (zone, rule["proto"], port)
        for zone, rules in ingress.items()
        for rule in rules or []
        for port in _inventory_ports(rule["ports"])
    }
    assert _inbound_openings(host) == wanted


def test_ENC_FW_002_canaries_are_unreachable_while_the_mirror_answers(request, host, mirror_control, canaries):
    result = _egress_probe(
        request, host, targets=[{**mirror_control, "expect": "open"}, *canaries], fail_on_mismatch=False
    )
    control, *probes = result["probes"]
    assert control["verdict"] == "connected", f"the mirror did not answer, so nothing below proves a block: {control}"
    for probe in probes:
        assert probe["reachable"] is False, probe
        assert probe["verdict"] in ("timeout", "rejected"), probe
        assert (probe["counter_delta"] or 0) > 0, f"{probe['name']}: drop_output did not move"


def test_ENC_FW_003_denied_users_reach_nothing_not_even_the_mirror(request, host, enclave_vars, mirror_control):
    users = enclave_vars.get("firewall_deny_egress_users") or []
    if not users:
        pytest.skip("the inventory denies no user egress")
    # One probe run (a module start costs seconds on an emulated host): root
    # first, the control that must connect, then each denied user.
    targets = [{**mirror_control, "expect": "open"}] + [
        {**mirror_control, "name": f"mirror apt as {user}", "as_user": user, "expect": "blocked", "counter": "drop_uid"}
        for user in users
    ]
    as_root, *as_users = _egress_probe(request, host, targets=targets, fail_on_mismatch=False)["probes"]
    assert as_root["verdict"] == "connected", as_root
    for user, as_user in zip(users, as_users, strict=True):
        assert as_user["reachable"] is False, as_user
        assert (as_user["counter_delta"] or 0) > 0, f"{user}: drop_uid did not move"


def test_ENC_FW_004_ssh_stays_open_to_the_admin_zone(host):
    sshd = host.check_output("sshd -T").splitlines()
    sshd_ports = {int(line.split()[1]) for line in sshd if line.startswith("port ")}
    assert sshd_ports, "sshd -T names no port"
    assert {("admin", "tcp", port) for port in sshd_ports} <= _inbound_openings(host)
    members = []
    for version in (4, 6):
        objects = _nft_objects(host, f"nft -j list set inet enclave zone_admin_v{version}")
        members += [element for item in objects if "set" in item for element in item["set"].get("elem", [])]
    assert members, "the admin zone is empty: SSH is open to no one"
    # What nftables.service loads first at boot, and keeps when the ruleset fails.
    emergency = host.file(EMERGENCY_FILE).content_string
    for port in sshd_ports:
        assert re.search(rf"@zone_admin_v[46] tcp dport (\{{[^}}]*\b{port}\b[^}}]*\}}|{port}\b)", emergency), (
            f"the emergency table {EMERGENCY_FILE} does not keep SSH port {port} open to the admin zone"
        )


def test_ENC_FW_005_live_table_equals_the_installed_ruleset(host):
    """The table in force is, rule for rule and element for element, the one
    the role installed for boot: loaded into a scratch network namespace and
    listed by the same nft, so both sides are printed alike."""
    assert host.file(RULES_FILE).exists, f"{RULES_FILE} is missing"
    script = 'nft -f "$1" && nft -j list table inet enclave'
    installed = _without_state(_nft_objects(host, "unshare --net -- sh -c %s sh %s", script, RULES_FILE))
    live = _without_state(_nft_objects(host, "nft -j list table inet enclave"))
    only_live = [item for item in live if item not in installed]
    only_installed = [item for item in installed if item not in live]
    assert (only_live, only_installed) == ([], []), "the live table departs from " + RULES_FILE
    assert live == installed, "the same rules in another order: the first match wins, so the order matters"


def test_ENC_FW_006_policy_loads_before_the_network_at_boot(host):
    rules = host.file("/etc/nftables.d/enclave.nft")
    assert rules.exists
    assert rules.user == "root"
    assert not rules.mode & 0o022, oct(rules.mode)
    assert host.run("nft -c -f /etc/nftables.d/enclave.nft").rc == 0
    assert "include" in host.file("/etc/nftables.conf").content_string
    assert host.service("nftables").is_enabled
    before = host.check_output("systemctl show nftables.service -p Before --value")
    assert "network-pre.target" in before.split()
