"""Unit tests of the isolation monitor's check-and-act loop (plugins/module_utils/monitor/daemon.py).

The host is faked at the monitor's edges only: the live and the installed
table (nft JSON), the interfaces and routes, the probes from each place, the
service account and its container, the units and the evidence sinks. The
comparison of tables, the counters, the breach state file, the gate, the
metrics and the CLI are the monitor's own code. A blocked probe moves the
drop counter of the table it is judged by, as the firewall's counting rules
do; a world can stop that to stand for a drop by something else.
"""

from __future__ import annotations

import copy
import json
import subprocess
import types

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.monitor import config as config_lib
from ansible_collections.enclave.llm.plugins.module_utils.monitor import daemon as monitor_lib
from ansible_collections.enclave.llm.plugins.module_utils.monitor import evidence, network, nft, probes, restore

CANARY = {"name": "canary", "address": "198.51.100.99", "proto": "tcp", "port": 443}
OWN_NAMESPACE_CANARY = {"name": "probe-ns", "address": "192.0.2.99", "proto": "tcp", "port": 80, "netns": "mon"}
TABLE = [
    {"table": {"family": "inet", "name": "enclave", "handle": 1}},
    {
        "chain": {
            "family": "inet",
            "table": "enclave",
            "name": "output",
            "handle": 1,
            "type": "filter",
            "hook": "output",
            "prio": 0,
            "policy": "drop",
        }
    },
    {"counter": {"family": "inet", "table": "enclave", "name": "drop_output", "handle": 2, "packets": 0, "bytes": 0}},
    {"counter": {"family": "inet", "table": "enclave", "name": "drop_uid", "handle": 3, "packets": 0, "bytes": 0}},
    {"rule": {"family": "inet", "table": "enclave", "chain": "output", "handle": 4, "expr": [{"drop": None}]}},
]
ACCEPT_RULE = {
    "rule": {"family": "inet", "table": "enclave", "chain": "output", "handle": 9, "expr": [{"accept": None}]}
}
SERVICE_USER = types.SimpleNamespace(pw_name="enclave-llm", pw_uid=990, pw_gid=990)


class World:
    """The host as the monitor sees it, and what the monitor did to it."""

    def __init__(self, monkeypatch):
        self.live = copy.deepcopy(TABLE)
        self.installed = copy.deepcopy(TABLE)
        self.table_error = None
        self.slow_listings, self.list_timeouts = 0, []
        self.links, self.routes = ["lo", "eth0"], [{"dev": "eth0", "gateway": "192.0.2.1", "table": "main"}]
        # The verdict of a canary probe from each place; a dict is returned as the whole result.
        self.verdicts = {"host": "timeout", "user": "timeout", "container": "timeout", "own": "timeout"}
        self.counting = True
        self.user_exists = True
        self.container_pid = 4242
        self.vllm = "active"
        self.vllm_active_for = 3600.0
        self.probed, self.loads, self.journal, self.audit, self.syslog = [], [], [], [], []
        for module, name, fake in (
            (nft, "list_table", self.list_table),
            (nft, "expected_table", lambda path, family, name: copy.deepcopy(self.installed)),
            (network, "read", lambda: (list(self.links), list(self.routes))),
            (probes, "probe_all", self.probe_all),
            (probes, "probe_own_namespace", lambda target: self.result("own", "drop_output")),
            (probes, "service_user", self.service_user),
            (probes, "container_pid", lambda name, uid: self.container_pid),
            (restore, "load", self.load),
            (evidence, "send_journal", lambda fields, *args: self.journal.append(fields)),
            (evidence, "send_audit", self.audit.append),
            (evidence, "send_syslog", lambda line, endpoint: self.syslog.append((line, endpoint))),
        ):
            monkeypatch.setattr(module, name, fake)

    def list_table(self, family, name, timeout=None):
        self.list_timeouts.append(timeout)
        if self.slow_listings:
            self.slow_listings -= 1
            raise subprocess.TimeoutExpired(["nft"], timeout or 10)
        if self.table_error:
            return None, self.table_error
        return (None if self.live is None else copy.deepcopy(self.live)), None

    def service_user(self, name):
        if not self.user_exists:
            raise KeyError(name)
        return SERVICE_USER

    def result(self, place, counter):
        verdict = self.verdicts[place]
        self.probed.append(place)
        if isinstance(verdict, dict):
            return verdict
        if verdict in monitor_lib.BLOCKED and self.counting:
            for item in self.live:
                if item.get("counter", {}).get("name") == counter:
                    item["counter"]["packets"] += 1
        return {"verdict": verdict, "evidence": f"{verdict} from {place}"}

    def probe_all(self, targets, netns_path=None, user=None):
        place = "container" if netns_path else "user" if user else "host"
        counter = "drop_uid" if user else "drop_output"
        return [self.result(place, counter) for _target in targets]

    def load(self, path, nft_path):
        self.loads.append(path)
        self.live = copy.deepcopy(self.installed)
        return 0, ""


class Units:
    def __init__(self, world):
        self.world, self.stops, self.resumed = world, 0, []

    def vllm_state(self):
        return self.world.vllm, "enabled"

    def vllm_active_seconds(self):
        return self.world.vllm_active_for

    def stop_serving(self):
        self.stops += 1
        self.world.vllm = "inactive"
        return ["stop vllm.service (user enclave-llm): rc 0"]

    def resume(self, units):
        self.resumed += list(units)
        return [f"start {unit}: rc 0" for _scope, unit in units]


@pytest.fixture
def world(monkeypatch):
    return World(monkeypatch)


def settings(tmp_path, **overrides):
    rules = tmp_path / "enclave.nft"
    rules.write_text("table inet enclave {}\n")
    raw = {
        "canaries": [CANARY],
        "interfaces": ["lo", "eth*"],
        "default_routes": [{"dev": "eth0", "gateway": "192.0.2.1"}],
        "gate_file": str(tmp_path / "run" / "isolation-verified"),
        "state_dir": str(tmp_path / "state"),
        "metrics_dir": str(tmp_path / "metrics"),
        "rules_file": str(rules),
        "interval": 5,
        **overrides,
    }
    config, problems = config_lib.validate(raw)
    assert problems == []
    return config


@pytest.fixture
def monitor(tmp_path, world):
    watched = monitor_lib.Monitor(settings(tmp_path))
    watched.units = Units(world)
    return watched


def metrics(monitor):
    path = f"{monitor.config['metrics_dir']}/{evidence.METRICS_FILE}"
    with open(path, encoding="utf-8") as handle:
        return dict(line.rsplit(" ", 1) for line in handle.read().splitlines() if not line.startswith("#"))


def state(monitor):
    with open(monitor.breach_path, encoding="utf-8") as handle:
        return json.load(handle)


def test_a_clean_full_check_probes_every_place_opens_the_gate_and_says_so(monitor, world):
    assert monitor.cycle(full=True) == []
    assert world.probed == ["host", "user", "container"]
    assert monitor.gate_open()
    assert [fields["MESSAGE"] for fields in world.journal] == ["isolation verified: the gate is open"]
    values = metrics(monitor)
    assert (values["enclave_isolation_ok"], values["enclave_isolation_breached"]) == ("1", "0")
    assert 'enclave_isolation_last_check_timestamp_seconds{check="full"}' in values
    # Already open: a second pass logs nothing new.
    assert monitor.cycle(full=True) == []
    assert len(world.journal) == 1


def test_a_fast_check_alone_never_opens_the_gate(monitor, world):
    assert monitor.cycle(full=False) == []
    assert world.probed == []
    assert not monitor.gate_open()


@pytest.mark.parametrize("place", ["host", "user", "container"])
def test_a_reachable_canary_stops_serving_and_leaves_evidence(monitor, world, place):
    monitor.cycle(full=True)
    world.verdicts[place] = "connected"
    found = monitor.cycle(full=True)
    assert [item["kind"] for item in found] == ["canary_reachable"]
    assert (
        found[0]["where"]
        == {
            "host": "host",
            "user": "service user enclave-llm",
            "container": "container vllm",
        }[place]
    )
    assert not monitor.gate_open()
    assert monitor.units.stops == 1
    persisted = state(monitor)
    assert [item["kind"] for item in persisted["breaches"]] == ["canary_reachable"]
    assert persisted["stopped"] == [["user", "vllm.service"]]
    assert len(world.audit) == 1
    assert "canary_reachable" in world.audit[0]
    values = metrics(monitor)
    assert (values["enclave_isolation_ok"], values["enclave_isolation_breached"]) == ("0", "1")
    assert values['enclave_isolation_breaches_total{kind="canary_reachable"}'] == "1"


def test_the_same_breach_again_is_stopped_again_without_new_evidence(monitor, world):
    world.verdicts["host"] = "connected"
    monitor.cycle(full=True)
    monitor.cycle(full=True)
    assert monitor.units.stops == 2
    assert len(world.audit) == 1
    assert len(state(monitor)["breaches"]) == 1


def test_a_probe_that_errors_is_not_a_pass(monitor, world):
    world.verdicts["user"] = {"error": "cannot switch to uid 990"}
    found = monitor.cycle(full=True)
    assert [(item["kind"], item["detail"]) for item in found] == [("probe_error", "cannot switch to uid 990")]
    assert not monitor.gate_open()
    assert monitor.probe_errors == 1
    assert metrics(monitor)["enclave_isolation_probe_errors_total"] == "1"


def test_blocked_probes_whose_counter_did_not_move_are_a_breach(monitor, world):
    world.counting = False
    found = monitor.cycle(full=True)
    assert [(item["kind"], item["where"]) for item in found] == [
        ("counter", "host"),
        ("counter", "service user enclave-llm"),
    ]
    assert "something other than the enclave table dropped them" in found[0]["detail"]


def test_a_counter_missing_from_the_table_is_a_breach(monitor, world):
    world.live = [item for item in world.live if item.get("counter", {}).get("name") != "drop_uid"]
    world.installed = copy.deepcopy(world.live)
    found = monitor.cycle(full=True)
    assert [(item["kind"], item["detail"]) for item in found] == [
        ("counter", "counter drop_uid is missing from the table")
    ]


def test_a_check_that_cannot_finish_fails_closed(monitor, world, monkeypatch):
    def broken():
        raise TypeError("unexpected output")

    monkeypatch.setattr(network, "read", broken)
    found = monitor.cycle(full=True)
    assert [item["kind"] for item in found] == ["probe_error"]
    assert "the full check failed" in found[0]["detail"]
    assert not monitor.gate_open()
    assert monitor.units.stops == 1


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda world: setattr(world, "table_error", "nft: permission denied"), "probe_error"),
        (lambda world: setattr(world, "live", None), "table_missing"),
        (lambda world: world.links.append("wlan0"), "interface"),
        (
            lambda world: world.routes.append({"dev": "eth0", "gateway": "192.0.2.254", "table": "main"}),
            "default_route",
        ),
    ],
    ids=["table unreadable", "table missing", "unknown interface", "unknown default route"],
)
def test_a_fast_check_finds_table_and_network_breaches(monitor, world, change, kind):
    change(world)
    found = monitor.cycle(full=False)
    assert kind in [item["kind"] for item in found]
    assert monitor.units.stops == 1


def test_a_listing_that_outlasts_its_bound_is_tried_once_more_before_it_counts(monitor, world):
    world.slow_listings = 1
    assert monitor.cycle(full=False) == []
    assert world.list_timeouts == [None, monitor_lib.SLOW_LIST_TIMEOUT]
    world.slow_listings = 2
    (found,) = monitor.cycle(full=False)
    assert found["kind"] == "probe_error"
    assert "timed out" in found["detail"]
    assert not monitor.gate_open()


def test_an_injected_rule_is_reloaded_away_and_recorded(monitor, world):
    monitor.cycle(full=True)
    world.live.append(ACCEPT_RULE)
    found = monitor.cycle(full=False)
    assert [item["kind"] for item in found] == ["rule_added"]
    assert world.loads == [monitor.config["rules_file"]]
    assert nft.differences(world.installed, world.live) == []
    assert monitor.restores_by_outcome == {"restored": 1}
    assert len(state(monitor)["restores"]) == 1
    assert metrics(monitor)['enclave_isolation_ruleset_restores_total{outcome="restored"}'] == "1"
    # Stays breached until an operator clears it, though the table is right again.
    assert monitor.cycle(full=True) == []
    assert not monitor.gate_open()


def test_a_reload_during_a_full_check_is_not_taken_for_a_silent_drop(monitor, world, monkeypatch):
    """Counters start again at zero after a reload; that is not a probe dropped elsewhere."""
    original = monitor._full_check

    def straddled():
        monitor.reloads += 1
        return [*original(), monitor_lib.breach("counter", "host", "did not move")]

    monkeypatch.setattr(monitor, "_full_check", straddled)
    assert monitor.full_check() == []


def test_alert_only_writes_the_evidence_and_stops_nothing(tmp_path, world):
    watched = monitor_lib.Monitor(settings(tmp_path, alert_only=True))
    watched.units = Units(world)
    watched.cycle(full=True)
    world.verdicts["host"] = "connected"
    world.live.append(ACCEPT_RULE)
    found = watched.cycle(full=True)
    assert {item["kind"] for item in found} == {"canary_reachable", "rule_added"}
    assert watched.units.stops == 0
    assert world.loads == []
    assert watched.gate_open()
    persisted = state(watched)
    assert (persisted["alert_only"], persisted["stopped"]) == (True, [])
    assert len(world.audit) == 2


def test_a_unit_started_while_a_breach_waits_is_stopped_again(monitor, world):
    world.verdicts["host"] = "connected"
    monitor.cycle(full=True)
    world.verdicts["host"] = "timeout"
    world.vllm = "active"  # started by hand
    assert monitor.cycle(full=True) == []
    assert monitor.units.stops == 2
    assert "started_while_breached" in world.audit[-1]
    assert not monitor.gate_open()


def test_clear_is_refused_while_the_breach_lasts_and_resumes_once_it_is_gone(monitor, world, capsys):
    world.verdicts["container"] = "connected"
    monitor.cycle(full=True)
    assert monitor_lib.clear(monitor) == 1
    assert "nothing cleared" in capsys.readouterr().out
    assert not monitor.gate_open()
    world.verdicts["container"] = "timeout"
    assert monitor_lib.clear(monitor) == 0
    assert monitor.breach_state() is None
    assert monitor.gate_open()
    assert monitor.units.resumed == [("user", "vllm.service")]
    assert world.journal[-1]["MESSAGE_ID"] == evidence.MESSAGE_ID_CLEARED


def test_the_container_is_judged_by_its_unit(monitor, world):
    world.container_pid = None
    world.vllm = "activating"
    assert monitor.container_breaches() == []
    world.vllm = "active"
    (found,) = monitor.container_breaches()
    assert (found["kind"], found["detail"]) == (
        "probe_error",
        "vllm.service is active but container vllm is not running",
    )


@pytest.mark.parametrize(("active_for", "breaches"), [(2.0, 0), (monitor_lib.CONTAINER_START_GRACE + 1, 1), (None, 1)])
def test_a_unit_just_started_has_time_to_make_its_container(monitor, world, active_for, breaches):
    """Type=exec is active once podman run starts; the container comes seconds later."""
    world.container_pid = None
    world.vllm_active_for = active_for
    assert len(monitor.container_breaches()) == breaches


def test_a_missing_service_account_is_a_breach_not_a_pass(monitor, world):
    world.user_exists = False
    found = monitor.cycle(full=True)
    assert [(item["kind"], item["where"]) for item in found] == [
        ("probe_error", "service user"),
        ("probe_error", "container vllm"),
    ]


def test_a_canary_in_its_own_namespace_is_probed_there(tmp_path, world):
    watched = monitor_lib.Monitor(settings(tmp_path, canaries=[CANARY, OWN_NAMESPACE_CANARY]))
    watched.units = Units(world)
    assert watched.cycle(full=True) == []
    assert world.probed == ["host", "user", "own", "container"]
    world.verdicts["own"] = "connected"
    (found,) = watched.cycle(full=True)
    assert (found["kind"], found["where"]) == ("canary_reachable", "namespace mon")


def test_a_breach_goes_to_the_siem_when_one_is_configured(tmp_path, world):
    siem = {"address": "192.0.2.50", "port": 6514, "proto": "tcp"}
    watched = monitor_lib.Monitor(settings(tmp_path, syslog=siem, allowlisted=["192.0.2.50/32"]))
    watched.units = Units(world)
    world.verdicts["host"] = "connected"
    watched.cycle(full=True)
    ((line, endpoint),) = world.syslog
    assert endpoint["address"] == "192.0.2.50"
    assert "canary_reachable (host)" in line


def test_an_unreadable_breach_state_counts_as_a_breach(monitor, tmp_path):
    path = tmp_path / "state"
    path.mkdir()
    (path / monitor_lib.BREACH_FILE).write_text("{not json")
    assert monitor.breach_state()["breaches"][0]["kind"] == "probe_error"


def test_status_and_check_say_what_holds(monitor, world, capsys):
    assert monitor_lib.status(monitor) == 2  # no breach, but nothing verified yet
    assert monitor_lib.check(monitor) == 0
    assert "isolation verified" in capsys.readouterr().out
    world.verdicts["host"] = "connected"
    assert monitor_lib.check(monitor) == 1
    monitor.cycle(full=True)
    assert monitor_lib.status(monitor) == 1
    out = capsys.readouterr().out
    assert "BREACH pending since" in out
    assert "canary_reachable (host) [canary tcp 198.51.100.99:443]" in out
    world.verdicts["host"] = "timeout"
    assert monitor_lib.clear(monitor) == 0
    assert monitor_lib.status(monitor) == 0


def test_the_command_line_validates_its_settings_first(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"canaries": [CANARY], "interfaces": ["eth0"]}))
    assert monitor_lib.main(["validate", "--config", str(good)]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"canaries": [], "interfaces": ["eth0"]}))
    assert monitor_lib.main(["validate", "--config", str(bad)]) == 2
    assert "isolation_monitor_canaries is empty" in capsys.readouterr().err


class StopLoop(Exception):
    """Ends a loop the daemon runs for ever."""


def test_the_daemon_checks_fully_at_start_tells_systemd_and_schedules_the_next(monitor, world, tmp_path, monkeypatch):
    import socket

    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monitor.config["interval"] = 0.05
    calls = []

    class Scheduled:
        def __init__(self, target, args, daemon):
            calls.append(("scheduled", target.__name__, args))

        def start(self):
            raise StopLoop

    monkeypatch.setattr(monitor_lib.threading, "Thread", Scheduled)
    with pytest.raises(StopLoop):
        monitor_lib.run(monitor, events=False)
    assert world.probed == ["host", "user", "container"]  # the full check before READY
    assert listener.recv(64) == b"READY=1"
    assert calls == [("scheduled", "cycle", (True,))]
    assert "kill switch armed" in world.journal[0]["MESSAGE"]
    listener.close()


def test_an_event_watcher_wakes_the_monitor_and_is_restarted_when_it_ends(monkeypatch):
    wake, said = monitor_lib.threading.Event(), []

    def log(message, priority):
        said.append(message)
        raise StopLoop

    watch = monitor_lib.EventWatch(wake, log)
    with pytest.raises(StopLoop):
        watch._follow(["printf", "table inet enclave changed\n"])
    assert wake.is_set()
    assert said == ["printf monitor ended (rc 0); restarting it"]


class Systemctl:
    """subprocess.run for systemctl, recorded; ``show`` answers with the given state."""

    def __init__(self, monkeypatch, show="ActiveState=active\nUnitFileState=enabled\n"):
        self.calls, self.show = [], show
        monkeypatch.setattr(monitor_lib.subprocess, "run", self.run)

    def run(self, argv, **kwargs):
        self.calls.append((argv, kwargs.get("user")))
        return monitor_lib.subprocess.CompletedProcess(argv, 0, self.show if "show" in argv else "", "")


def test_stopping_kills_the_container_and_stops_the_units(tmp_path, world, monkeypatch):
    units = monitor_lib.UnitControl(settings(tmp_path, ingress_units=["nginx.service"]))
    systemctl = Systemctl(monkeypatch)
    killed = []
    monkeypatch.setattr(monitor_lib.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    actions = units.stop_serving()
    assert killed == [(4242, monitor_lib.signal.SIGKILL)]
    assert [(argv[1:], user) for argv, user in systemctl.calls] == [
        (["--user", "stop", "--no-block", "vllm.service"], 990),
        (["stop", "--no-block", "nginx.service"], None),
    ]
    assert actions == [
        "stop vllm.service (user enclave-llm): rc 0",
        "killed container vllm (pid 4242)",
        "stop nginx.service: rc 0",
    ]
    assert units.vllm_state() == ("active", "enabled")
    assert units.resume([("user", "vllm.service"), ("system", "nginx.service")]) == [
        "start vllm.service: rc 0",
        "start nginx.service: rc 0",
    ]


def test_how_long_the_unit_has_been_active_comes_from_its_monotonic_timestamp(tmp_path, world, monkeypatch):
    units = monitor_lib.UnitControl(settings(tmp_path))
    monkeypatch.setattr(monitor_lib.time, "monotonic", lambda: 1000.0)
    Systemctl(monkeypatch, show="ActiveEnterTimestampMonotonic=990000000\n")
    assert units.vllm_active_seconds() == 10.0
    Systemctl(monkeypatch, show="ActiveEnterTimestampMonotonic=0\n")
    assert units.vllm_active_seconds() is None
    Systemctl(monkeypatch, show="")
    assert units.vllm_active_seconds() is None


def test_a_kill_that_fails_is_in_the_evidence_and_a_missing_account_is_no_crash(tmp_path, world, monkeypatch):
    units = monitor_lib.UnitControl(settings(tmp_path))
    Systemctl(monkeypatch)

    def refused(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(monitor_lib.os, "kill", refused)
    assert "kill container vllm (pid 4242) failed: Operation not permitted" in units.stop_serving()
    world.user_exists = False
    assert units.user_systemctl("show").returncode == 1
    assert units.vllm_state() == ("unknown", "")


def test_the_container_is_found_by_its_conmon_without_podman(tmp_path):
    import os

    def process(pid, comm, args, children=""):
        folder = tmp_path / str(pid)
        (folder / "task" / str(pid)).mkdir(parents=True)
        (folder / "comm").write_text(comm + "\n")
        (folder / "cmdline").write_bytes(b"\x00".join(arg.encode() for arg in args) + b"\x00")
        (folder / "task" / str(pid) / "children").write_text(children)

    process(10, "bash", ["bash", "-n", "vllm"], "11")
    process(20, "conmon", ["/usr/bin/conmon", "--api-version", "1", "-n", "other"], "21")
    process(30, "conmon", ["/usr/bin/conmon", "-n", "vllm"], "31 32")
    (tmp_path / "self").mkdir()
    assert probes.container_pid("vllm", os.getuid(), proc=str(tmp_path)) == 31
    assert probes.container_pid("vllm", os.getuid() + 1, proc=str(tmp_path)) is None
    assert probes.conmon_container(["conmon", "--name=vllm"], "vllm")
    assert not probes.conmon_container(["conmon", "-n"], "vllm")
