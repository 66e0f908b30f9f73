"""isolation_monitor: the monitor runs hardened, has proven the isolation, and its evidence is in place.

Checks the live state of a host converged with roles/isolation_monitor; the
breaches themselves are injected by tests/lab/test_isolation_monitor_breaches.py.
"""

from __future__ import annotations

import json

import pytest

SERVICE = "enclave-isolation-monitor.service"
CONFIG = "/etc/enclave/isolation-monitor.json"
# What the unit may hold; anything more is a finding.
ALLOWED_CAPABILITIES = {
    "cap_net_admin",
    "cap_sys_admin",
    "cap_sys_ptrace",
    "cap_setuid",
    "cap_setgid",
    "cap_net_raw",
    "cap_kill",
    "cap_audit_write",
}


@pytest.fixture
def settings(host) -> dict:
    return json.loads(host.file(CONFIG).content_string)


def show(host, *properties):
    out = host.check_output("systemctl show %s " + " ".join(f"-p {name}" for name in properties), SERVICE)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_ENC_MN_001_monitor_runs_and_starts_at_boot(host):
    service = host.service(SERVICE)
    assert service.is_running
    assert service.is_enabled


def test_ENC_MN_002_monitor_is_hardened(host):
    props = show(host, "ProtectSystem", "NoNewPrivileges", "CapabilityBoundingSet", "PrivateTmp", "RestrictNamespaces")
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert props["PrivateTmp"] == "yes"
    held = set(props["CapabilityBoundingSet"].split())
    assert held, "no bounding set: the monitor holds every capability"
    assert held <= ALLOWED_CAPABILITIES, held - ALLOWED_CAPABILITIES


def test_ENC_MN_003_settings_are_root_owned_and_name_canaries(host, settings):
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "root", 0o644)
    assert settings["canaries"], "no canary"
    assert settings["alert_only"] is False
    # A breach that alters the table also closes the egress it opened.
    assert settings["restore_ruleset"] is True


def test_ENC_MN_004_isolation_is_proven_and_the_gate_is_open(host, settings):
    status = host.run("enclave-isolation status")
    assert status.rc == 0, status.stdout
    assert host.file(settings["gate_file"]).exists
    assert not host.file(f"{settings['state_dir']}/isolation-breach.json").exists


def test_ENC_MN_005_a_check_now_finds_nothing(host):
    check = host.run("enclave-isolation check")
    assert check.rc == 0, check.stdout
    assert "isolation verified" in check.stdout


def test_ENC_MN_006_metrics_say_ok_and_are_fresh(host, settings):
    text = host.file(f"{settings['metrics_dir']}/enclave_isolation.prom").content_string
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert values["enclave_isolation_ok"] == "1"
    assert values["enclave_isolation_breached"] == "0"
    now = float(host.check_output("date +%s"))
    last = float(values['enclave_isolation_last_check_timestamp_seconds{check="full"}'])
    assert now - last < 3 * settings["interval"] + 30
