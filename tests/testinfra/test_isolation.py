"""firewall: the host drops by default in every direction, canaries outside
stay unreachable while the mirror answers, denied users get no egress at all,
and the policy is installed to load before the network at boot.

Probes run through the enclave.llm.egress_probe module on the host itself,
with the canaries and the mirror named by the inventory; every "blocked" is
paired with the drop counter that moved and with the mirror, which connected
in the same call.
"""

from __future__ import annotations

import json
import os
import subprocess
from urllib.parse import urlsplit

import pytest
from enclave_host import REPO, inventory_name

PROBE_TIMEOUT = 2


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


def test_every_direction_drops_by_default(host):
    table = json.loads(host.check_output("nft -j list table inet enclave"))
    chains = {c["chain"]["name"]: c["chain"] for c in table["nftables"] if "chain" in c}
    for hook in ("input", "output", "forward"):
        base = [c for c in chains.values() if c.get("hook") == hook]
        assert base, f"no base chain on the {hook} hook"
        assert all(c["policy"] == "drop" for c in base), f"{hook}: {base}"


def test_canaries_are_unreachable_while_the_mirror_answers(request, host, mirror_control, canaries):
    result = _egress_probe(
        request, host, targets=[{**mirror_control, "expect": "open"}, *canaries], fail_on_mismatch=False
    )
    control, *probes = result["probes"]
    assert control["verdict"] == "connected", f"the mirror did not answer, so nothing below proves a block: {control}"
    for probe in probes:
        assert probe["reachable"] is False, probe
        assert probe["verdict"] in ("timeout", "rejected"), probe
        assert (probe["counter_delta"] or 0) > 0, f"{probe['name']}: drop_output did not move"


def test_denied_users_reach_nothing_not_even_the_mirror(request, host, enclave_vars, mirror_control):
    users = enclave_vars.get("firewall_deny_egress_users") or []
    if not users:
        pytest.skip("the inventory denies no user egress")
    as_root = _egress_probe(request, host, targets=[{**mirror_control, "expect": "open"}])["probes"][0]
    assert as_root["verdict"] == "connected", as_root
    for user in users:
        target = {**mirror_control, "expect": "blocked", "counter": "drop_uid"}
        (as_user,) = _egress_probe(request, host, as_user=user, targets=[target], fail_on_mismatch=False)["probes"]
        assert as_user["reachable"] is False, as_user
        assert (as_user["counter_delta"] or 0) > 0, f"{user}: drop_uid did not move"


def test_policy_loads_before_the_network_at_boot(host):
    rules = host.file("/etc/nftables.d/enclave.nft")
    assert rules.exists
    assert rules.user == "root"
    assert not rules.mode & 0o022, oct(rules.mode)
    assert host.run("nft -c -f /etc/nftables.d/enclave.nft").rc == 0
    assert "include" in host.file("/etc/nftables.conf").content_string
    assert host.service("nftables").is_enabled
    before = host.check_output("systemctl show nftables.service -p Before --value")
    assert "network-pre.target" in before.split()
