"""The isolation monitor on the lab's enclave host: each breach stops serving, leaves evidence, and clears.

It needs the host converged by site.yml, so it runs in molecule's verify with
the other lab checks (or by hand after ``make lab``).

Topology (all inside enclave-lab-host, documentation addresses only)::

    enclave-lab-host        198.51.100.20  converged by site.yml; the monitor is
                                           installed with playbooks/monitor.yml
    enclave-lab-canary      198.51.100.99  the lab's canary (must stay unreachable)
    netns enclave-mon-probe (lo only)      a canary probed inside it: deleting it
                                           makes the monitor's own probe fail
    netns enclave-mon-inet  192.0.2.2/30   a test "internet" with a listener,
                                           reached by a veth the test adds

The kill switch's target is a stand-in for the vLLM unit: a user unit of the
service account that runs a rootless container with no network (the same
gate test in ExecStartPre as the vLLM unit), named by the role's variables. The
gate file is a test path, so the lab's vLLM gate is left alone. Every breach is
undone at once after it was detected; the firewall is restored from its own
persisted rules file even when a test fails. The lab host is shared: breach
windows last about a second, and the ingress is not stopped here.

The injected accept rule is the one breach the monitor is left to repair: the
live table must equal the installed rules file again within the ruleset
breaches' latency goal (1 s), and the service account's connection to the
lab's canary must then be dropped (the canary logs nothing from the host, the
drop counter moves, and the machine's own connection is logged as control).

The monitor's detection latency against its goals is measured by
bench/isolation_monitor_latency.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest
from lab_host import LAB_STATE, REPO, wait_until
from labkit import AIDE_REBASELINE, CANARY_ADDRESS, canary_arrivals
from netns import ansible_bin, ensure_collection_link

HOST = "enclave-lab-host"
SERVICE = "enclave-isolation-monitor.service"
USER = "enclave-llm"
STANDIN = "enclave-mon-standin"
STANDIN_UNIT = f"{STANDIN}.service"
GATE = "/run/enclave/isolation-verified-test"
METRICS = "/run/enclave-mon-test"
STATE = "/var/lib/enclave/isolation-breach.json"
PROBE_NS, INET_NS = "enclave-mon-probe", "enclave-mon-inet"
IMAGE = "198.51.100.10:5000/enclave/workload:1"
MESSAGE_ID = "5f1c3a8e9b2d4c6e8a0b1c2d3e4f5a6b"
RESTORE_MESSAGE_ID = "8c4f6d1b2e5a4f9b1d3e4f5a6b7c8d9e"
RULES_FILE = "/etc/nftables.d/enclave.nft"
RESTORE_FIREWALL = f"nft -f {RULES_FILE}"
INTERVAL = 5
# Bounds for the waits (failures, not goals; the bench measures the goals).
EVENT_BOUND, PROBE_BOUND = 10, 30
# The monitor's goal for ruleset breaches (bench/isolation_monitor_latency.py),
# asserted for the reload: the live table is the installed one again within it.
RESTORE_GOAL = 1.0
RESTORED_BY_MONITOR = "accept rule for the service user"
HOST_ADDRESS = "198.51.100.20"

# Runs inside the lab host: the installed table as the rules file defines it
# (loaded in a scratch namespace), the injection, then the live table polled
# until it is that one again. Stateless listings: counter values are state.
RESTORE_DRIVER = r"""
import json, subprocess, sys, time
rules, inject = sys.argv[1], sys.argv[2]
LIST = "nft -s list table inet enclave"

def listed(scratch=False):
    argv = ["unshare", "--net", "--", "sh", "-c", f"nft -f {rules} && {LIST}"] if scratch else ["sh", "-c", LIST]
    return subprocess.run(argv, capture_output=True, text=True, check=scratch).stdout

installed = listed(scratch=True)
start = time.monotonic()
subprocess.run(["sh", "-c", inject], check=True)
altered = listed() != installed
restored = None
while time.monotonic() - start < 10:
    if listed() == installed:
        restored = time.monotonic() - start
        break
    time.sleep(0.02)
print(json.dumps({"altered": altered, "restored_after": restored}))
"""

STANDIN_TEXT = f"""[Unit]
Description=Stand-in for the vLLM unit (isolation monitor test)

[Service]
# Active once the container runs, like the vLLM unit.
Type=notify
NotifyAccess=all
ExecStartPre=/usr/bin/test -f {GATE}
ExecStart=/usr/bin/podman run --rm --replace --sdnotify=conmon --name {STANDIN} --network none {IMAGE} sleep 100000
# sleep, the container's first process, ignores SIGTERM.
ExecStop=/usr/bin/podman stop --ignore --time=1 {STANDIN}
ExecStopPost=-/usr/bin/podman rm --force --ignore {STANDIN}
TimeoutStopSec=20
"""

SETTINGS = {
    "isolation_monitor_vllm_unit": STANDIN_UNIT,
    "isolation_monitor_container": STANDIN,
    "isolation_monitor_gate_file": GATE,
    "isolation_monitor_metrics_dir": METRICS,
    "isolation_monitor_ingress_units": [],
    "isolation_monitor_interval": INTERVAL,
    "isolation_monitor_canaries": [
        {"name": "canary https", "address": "198.51.100.99", "proto": "tcp", "port": 443},
        {"name": "canary dns", "address": "198.51.100.99", "proto": "dns", "port": 53, "query": "example.org"},
        {"name": "probe namespace", "address": "198.51.100.99", "proto": "tcp", "port": 80, "netns": PROBE_NS},
    ],
}

# kind: (inject, undo, the breach kinds it may raise, bound)
BREACHES = {
    # First: the monitor reloads at most 3 times a minute, and this is the reload the test measures.
    "accept rule for the service user": (
        f"nft insert rule inet enclave output meta skuid {USER} accept",
        RESTORE_FIREWALL,
        {"rule_added"},
        EVENT_BOUND,
    ),
    "table deleted": ("nft delete table inet enclave", RESTORE_FIREWALL, {"table_missing"}, EVENT_BOUND),
    "table flushed": ("nft flush table inet enclave", RESTORE_FIREWALL, {"rule_removed"}, EVENT_BOUND),
    "policy accept": (
        "nft 'chain inet enclave output { policy accept; }'",
        RESTORE_FIREWALL,
        {"chain_policy"},
        EVENT_BOUND,
    ),
    "interface to a test internet": (
        f"ip netns add {INET_NS} && ip link add enc-mon0 type veth peer name enc-mon1 netns {INET_NS}"
        f" && ip -n {INET_NS} addr add 192.0.2.2/30 dev enc-mon1 && ip -n {INET_NS} link set enc-mon1 up"
        f" && (ip netns exec {INET_NS} python3 -m http.server -b 192.0.2.2 8080 >/dev/null 2>&1 &)"
        " && ip addr add 192.0.2.1/30 dev enc-mon0 && ip link set enc-mon0 up",
        f"ip netns pids {INET_NS} | xargs -r kill; ip netns del {INET_NS}",
        {"interface"},
        EVENT_BOUND,
    ),
    "default route to the canary": (
        # No device named: the kernel takes the lab network's, whichever ethN
        # podman gave it on this start.
        "ip route add default via 198.51.100.99 metric 5",
        "ip route del default via 198.51.100.99 metric 5",
        {"default_route"},
        EVENT_BOUND,
    ),
    "probe fails": (f"ip netns del {PROBE_NS}", f"ip netns add {PROBE_NS}", {"probe_error"}, PROBE_BOUND),
}


def host(command, check=True, timeout=60):
    env = {**os.environ, "CONTAINERS_CONF": str(LAB_STATE / "containers.conf")}
    try:
        run = subprocess.run(
            ["podman", "exec", HOST, "sh", "-c", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        if check:
            raise
        return subprocess.CompletedProcess(command, 124, "", f"timed out after {timeout} s")
    if check and run.returncode != 0:
        pytest.fail(f"on {HOST}: {command}: rc {run.returncode}: {run.stderr.strip() or run.stdout.strip()}")
    return run


def as_user(command, check=True):
    return host(f"cd / && runuser -u {USER} -- env XDG_RUNTIME_DIR=/run/user/$(id -u {USER}) {command}", check=check)


def standin_state():
    return as_user(f"systemctl --user is-active {STANDIN_UNIT}", check=False).stdout.strip()


def metrics():
    text = host(f"cat {METRICS}/enclave_isolation.prom", check=False).stdout
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(\S+) (\S+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def breaches_total(values, kinds):
    return sum(
        value
        for name, value in values.items()
        for kind in kinds
        if name == f'enclave_isolation_breaches_total{{kind="{kind}"}}'
    )


def all_breaches(values):
    return sum(value for name, value in values.items() if name.startswith("enclave_isolation_breaches_total"))


def breach_entries(since, message_id=MESSAGE_ID):
    run = host(f"journalctl -o json --no-pager --since @{since:.0f} MESSAGE_ID={message_id}", check=False)
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def inject_and_time_the_reload(inject):
    """Inject on the host and poll there until the live table is the installed one again."""
    run = host(f"python3 - {RULES_FILE} {shlex.quote(inject)} <<'EOF'\n{RESTORE_DRIVER}EOF", timeout=60)
    return json.loads(run.stdout.strip().splitlines()[-1])


def drop_uid_packets():
    data = json.loads(host("nft -j list counter inet enclave drop_uid").stdout)
    return data["nftables"][1]["counter"]["packets"]


def assert_reloaded_and_egress_closed(reload, since):
    """The monitor put the installed table back within the goal, said so, and the account's egress is shut."""
    assert reload["altered"], "the injected rule never showed in the live table"
    assert reload["restored_after"] is not None, "the live table did not become the installed one again in 10 s"
    print(f"live table equal to the installed one {reload['restored_after']:.3f} s after the injection")
    assert reload["restored_after"] <= RESTORE_GOAL, f"reloaded after {reload['restored_after']:.3f} s"
    restored = json.loads(host(f"cat {STATE}").stdout)["restores"][-1]
    assert (restored["action"], restored["rc"], restored["live_equals_installed"]) == ("restored", 0, True), restored
    assert any(item.startswith("rule_added: chain output") for item in restored["repaired"]), restored
    [entry] = breach_entries(since, RESTORE_MESSAGE_ID)
    assert entry["ENCLAVE_RESTORE_LIVE_EQUALS_INSTALLED"] == "yes"
    arrivals, packets = len(canary_arrivals()), drop_uid_packets()
    blocked = as_user(f"timeout 2 bash -c 'exec 3<>/dev/tcp/{CANARY_ADDRESS}/443'", check=False)
    assert blocked.returncode == 124, f"the service account's connection ended with rc {blocked.returncode}"
    # The control: this machine's own connection reaches the canary and is logged.
    with socket.create_connection((CANARY_ADDRESS, 8080), timeout=5) as sock:
        control = sock.getsockname()[:2]
    wait_until("the canary logged the control connection", lambda: len(canary_arrivals()) > arrivals, 5, 0.1)
    new = canary_arrivals()[arrivals:]
    assert [(item["sender"], item["sender_port"]) for item in new] == [control], new
    assert drop_uid_packets() > packets, "the connection was not dropped by the enclave table"


def run_playbook(tmp_path, *extra, settings=None):
    """playbooks/monitor.yml with the test's settings (``settings={}``: the inventory's own)."""
    path = tmp_path / "monitor-test.json"
    path.write_text(json.dumps(SETTINGS if settings is None else settings))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    command = [
        ansible_bin("ansible-playbook"),
        "-i",
        str(REPO / "inventories" / "lab"),
        str(REPO / "playbooks" / "monitor.yml"),
        "-e",
        f"@{path}",
        *extra,
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


def serving_verified():
    return standin_state() == "active" and host(f"test -f {GATE}", check=False).returncode == 0


def clear_and_resume():
    run = host("enclave-isolation clear", check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    wait_until(f"{STANDIN_UNIT} serving again after clear", serving_verified, 30)


def restore_everything():
    host(RESTORE_FIREWALL, check=False)
    for _name, (_inject, undo, _kinds, _bound) in BREACHES.items():
        if undo != RESTORE_FIREWALL:
            host(undo, check=False)
    host(f"ip netns list | grep -q '^{PROBE_NS}' || ip netns add {PROBE_NS}", check=False)


@contextmanager
def installed_monitor(tmp_path):
    """The monitor installed by its playbook with the test settings, the stand-in serving; all undone after."""
    home = host(f"getent passwd {USER} | cut -d: -f6").stdout.strip()
    unit_dir = f"{home}/.config/systemd/user"
    host(f"mkdir -p {unit_dir} && cat > {unit_dir}/{STANDIN_UNIT} <<'EOF'\n{STANDIN_TEXT}EOF")
    as_user("systemctl --user daemon-reload")
    host(f"ip netns add {PROBE_NS} 2>/dev/null; ip -n {PROBE_NS} link set lo up")
    # site.yml may have installed the monitor for the real vLLM unit: put that back afterwards.
    was_enabled = host(f"systemctl is-enabled {SERVICE}", check=False).stdout.strip() == "enabled"
    try:
        run = run_playbook(tmp_path)
        assert run.returncode == 0, run.stdout[-3000:]
        as_user(f"systemctl --user start {STANDIN_UNIT}")
        wait_until(f"{STANDIN_UNIT} serving", serving_verified, 60)
        yield tmp_path
    finally:
        restore_everything()
        host(f"systemctl disable --now {SERVICE}; rm -f {STATE}; rm -rf {METRICS} {GATE}", check=False)
        as_user(f"systemctl --user stop {STANDIN_UNIT}", check=False)
        host(f"rm -f {unit_dir}/{STANDIN_UNIT}; ip netns del {PROBE_NS}", check=False)
        as_user("systemctl --user daemon-reload", check=False)
        if was_enabled:
            run_playbook(tmp_path, settings={})
        # The test's installs and restores rewrote watched files, as a converge
        # would; so, as after a converge, AIDE's baseline is written again.
        host(AIDE_REBASELINE, check=False)


def lab_prerequisites():
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.skip("the lab needs root and podman")
    ensure_collection_link()
    if host("systemctl is-system-running --wait", check=False).returncode not in (0, 1):
        pytest.skip(f"{HOST} is not running (lab/up starts it)")
    if host("nft list table inet enclave", check=False).returncode != 0:
        pytest.fail(f"{HOST} has no firewall table: converge it with site.yml first (make lab)")


@pytest.fixture(scope="module")
def monitor(tmp_path_factory):
    lab_prerequisites()
    with installed_monitor(tmp_path_factory.mktemp("monitor")) as tmp_path:
        yield tmp_path


def test_converged_monitor_has_proven_the_isolation(monitor):
    assert host("enclave-isolation status", check=False).returncode == 0
    values = metrics()
    assert values["enclave_isolation_ok"] == 1
    assert values["enclave_isolation_breached"] == 0


def test_second_run_changes_nothing(monitor):
    run = run_playbook(monitor)
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.search(r"changed=0\s", run.stdout), run.stdout[-2000:]


def test_check_mode_on_the_converged_host_changes_nothing(monitor):
    run = run_playbook(monitor, "--check")
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.search(r"changed=0\s", run.stdout), run.stdout[-2000:]


def test_bad_settings_are_refused_before_any_change(monitor):
    before = host("sha256sum /etc/enclave/isolation-monitor.json").stdout
    run = run_playbook(monitor, "-e", "isolation_monitor_interval=0.5", "-e", '{"isolation_monitor_canaries": []}')
    assert run.returncode != 0
    assert "isolation_monitor_canaries is empty" in run.stdout
    assert "isolation_monitor_interval: 0.5 is below 1 s" in run.stdout
    assert host("sha256sum /etc/enclave/isolation-monitor.json").stdout == before


@pytest.mark.parametrize("name", list(BREACHES))
def test_breach_stops_serving_with_evidence_until_cleared(monitor, name):
    inject, undo, kinds, bound = BREACHES[name]
    wait_until("serving before the breach", serving_verified, 30)
    before, since = breaches_total(metrics(), kinds), time.time() - 1
    try:
        # The accept rule is left for the monitor to take out; every other breach is undone at once.
        reload = inject_and_time_the_reload(inject) if name == RESTORED_BY_MONITOR else host(inject)
        wait_until(f"{STANDIN_UNIT} stopped after '{name}'", lambda: standin_state() != "active", bound, interval=0.1)
        if name == RESTORED_BY_MONITOR:
            assert_reloaded_and_egress_closed(reload, since)
    finally:
        host(undo, check=False)
    assert host(f"test -e {GATE}", check=False).returncode != 0, "the gate stayed open"
    status = host("enclave-isolation status", check=False)
    assert status.returncode == 1
    assert any(kind in status.stdout for kind in kinds), status.stdout
    entries = [entry for entry in breach_entries(since) if entry.get("ENCLAVE_BREACH_KIND") in kinds]
    assert entries, f"no journal entry of kind {kinds}"
    assert entries[0]["PRIORITY"] == "2"
    assert STANDIN_UNIT in entries[0]["ENCLAVE_ACTIONS"]
    values = metrics()
    assert values["enclave_isolation_breached"] == 1
    assert breaches_total(values, kinds) > before
    # The gate stays shut: the unit cannot be started by hand.
    assert as_user(f"systemctl --user start {STANDIN_UNIT}", check=False).returncode != 0
    clear_and_resume()


def test_clear_is_refused_while_the_breach_lasts(monitor):
    # A route, not a ruleset change: the monitor reloads an altered table itself.
    inject, undo, _kinds, _bound = BREACHES["default route to the canary"]
    try:
        host(inject)
        wait_until("stopped", lambda: standin_state() != "active", EVENT_BOUND, interval=0.1)
        run = host("enclave-isolation clear", check=False)
        assert run.returncode == 1
        assert "still breached: default_route" in run.stdout
    finally:
        host(undo)
    clear_and_resume()


def test_breach_survives_a_monitor_restart(monitor):
    try:
        host("nft delete table inet enclave")
        wait_until("stopped", lambda: standin_state() != "active", EVENT_BOUND, interval=0.1)
    finally:
        host(RESTORE_FIREWALL)
    host(f"systemctl restart {SERVICE}")
    time.sleep(INTERVAL)  # a full check after the restart, with the isolation restored
    assert host("enclave-isolation status", check=False).returncode == 1
    assert standin_state() != "active"
    clear_and_resume()


def test_restarted_monitor_keeps_serving_and_still_detects(monitor):
    host(f"systemctl restart {SERVICE}")
    wait_until("the gate open again after the restart", serving_verified, 30)
    assert standin_state() == "active"
    try:
        host("nft insert rule inet enclave output meta skuid enclave-llm accept")
        wait_until("stopped", lambda: standin_state() != "active", EVENT_BOUND, interval=0.1)
    finally:
        host(RESTORE_FIREWALL)
    clear_and_resume()


def test_soak_without_breaches_raises_no_alarm(monitor):
    wait_until("serving", serving_verified, 30)
    before, since = metrics(), time.time()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert standin_state() == "active", "the monitor stopped serving without a breach"
        time.sleep(2)
    after = metrics()
    assert breach_entries(since) == []
    assert all_breaches(after) == all_breaches(before)
    assert after["enclave_isolation_ok"] == 1
    assert after['enclave_isolation_last_check_timestamp_seconds{check="full"}'] > since
