"""Unit tests for the ruleset restore on a breach: plugins/module_utils/monitor/restore.py and
the monitor's use of it (what is reloaded, when not, the rate limit, the evidence)."""

from __future__ import annotations

import json

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.monitor import config as config_lib
from ansible_collections.enclave.llm.plugins.module_utils.monitor import daemon as monitor_lib
from ansible_collections.enclave.llm.plugins.module_utils.monitor import evidence
from ansible_collections.enclave.llm.plugins.module_utils.monitor import restore as lib

RULES = "/etc/nftables.d/enclave.nft"
ADDED = monitor_lib.breach("rule_added", "table inet enclave", 'chain output: [{"accept":null}]')
CANARY = monitor_lib.breach("canary_reachable", "host", "connected", "canary https tcp 198.51.100.99:443")


class Units:
    def __init__(self):
        self.stopped = 0

    def stop_serving(self):
        self.stopped += 1
        return ["stop vllm.service (user enclave-llm): rc 0"]


class Host:
    """The monitor's side effects, recorded: nft loads, journal entries, audit records."""

    def __init__(self, monkeypatch, rc=0, after=()):
        self.loads, self.journal, self.audit = [], [], []
        self.after = list(after)
        monkeypatch.setattr(lib, "load", self.load)
        monkeypatch.setattr(evidence, "send_journal", lambda fields, *a: self.journal.append(fields))
        monkeypatch.setattr(evidence, "send_audit", self.audit.append)
        self.rc = rc

    def load(self, path, nft):
        self.loads.append((path, nft))
        return self.rc, "" if self.rc == 0 else "Error: syntax error"

    def restores(self):
        return [fields for fields in self.journal if fields.get("MESSAGE_ID") == evidence.MESSAGE_ID_RESTORE]


def make_monitor(tmp_path, monkeypatch, remaining=(), **settings):
    config = {
        **config_lib.DEFAULTS,
        "state_dir": str(tmp_path / "state"),
        "gate_file": str(tmp_path / "gate"),
        "metrics_dir": str(tmp_path / "metrics"),
        **settings,
    }
    monitor = monitor_lib.Monitor(config, units=Units())
    # The table listed again after the reload: equal unless the test says otherwise.
    monkeypatch.setattr(monitor, "table_breaches", lambda: (list(remaining), []))
    return monitor


def state(monitor):
    return json.loads(open(monitor.breach_path, encoding="utf-8").read())


def test_the_rate_limit_grants_a_burst_per_window():
    limit = lib.RateLimit(burst=3, window=60)
    assert [limit.allow(now) for now in (0, 1, 2, 3)] == [True, True, True, False]
    assert limit.refused == 1
    assert limit.next_allowed(3) == 57
    assert limit.allow(60) is True  # the first grant left the window
    assert limit.allow(60.5) is False


def test_only_table_findings_are_repaired_by_a_reload():
    probe = monitor_lib.breach("probe_error", "table inet enclave", "cannot list the table")
    assert lib.table_findings([ADDED, CANARY, probe]) == [ADDED]


def test_the_entry_says_what_was_repaired_and_how_the_table_is_after():
    item = lib.entry("T", RULES, [ADDED], 0, "", [], 0.0421)
    assert item["repaired"] == [f"rule_added: {ADDED['detail']}"]
    assert item["live_equals_installed"] is True
    assert lib.outcome(item) == "restored"
    assert lib.summary(item) == f"nft -f {RULES}: rc 0; live table equals the installed one (0.042 s)"
    failed = lib.entry("T", RULES, [ADDED], 1, "Error: syntax error", ["rule_added: x"], 0.01)
    assert lib.outcome(failed) == "failed"
    assert "(Error: syntax error); live table STILL differs" in lib.summary(failed)


def test_an_altered_table_is_reloaded_and_the_restore_is_in_the_evidence(tmp_path, monkeypatch):
    host = Host(monkeypatch)
    monitor = make_monitor(tmp_path, monkeypatch)
    monitor.on_breach([ADDED])
    assert host.loads == [(RULES, "/usr/sbin/nft")]
    assert monitor.units.stopped == 1
    [restored] = state(monitor)["restores"]
    assert restored["action"] == "restored"
    assert restored["rc"] == 0
    assert restored["live_equals_installed"] is True
    assert restored["repaired"] == [f"rule_added: {ADDED['detail']}"]
    # The breach stays a breach: the operator clears it.
    assert state(monitor)["breaches"][0]["kind"] == "rule_added"
    assert not (tmp_path / "gate").exists()
    [breach_entry] = [fields for fields in host.journal if fields["MESSAGE_ID"] == evidence.MESSAGE_ID_BREACH]
    assert f"nft -f {RULES}: rc 0" in breach_entry["ENCLAVE_ACTIONS"]
    [restore_entry] = host.restores()
    assert restore_entry["ENCLAVE_RESTORE_LIVE_EQUALS_INSTALLED"] == "yes"
    assert restore_entry["PRIORITY"] == evidence.PRIORITY_WARNING
    assert any("op=enclave-isolation-restore" in text and "res=success" in text for text in host.audit)
    assert monitor.restores_by_outcome == {"restored": 1}


def test_a_reload_that_leaves_the_table_altered_is_recorded_as_failed(tmp_path, monkeypatch):
    host = Host(monkeypatch, rc=1)
    monitor = make_monitor(tmp_path, monkeypatch, remaining=[ADDED])
    monitor.on_breach([ADDED])
    [restored] = state(monitor)["restores"]
    assert restored["rc"] == 1
    assert restored["live_equals_installed"] is False
    assert restored["remaining"] == [f"rule_added: {ADDED['detail']}"]
    assert host.restores()[0]["PRIORITY"] == evidence.PRIORITY_CRIT
    assert monitor.restores_by_outcome == {"failed": 1}


@pytest.mark.parametrize(
    ("settings", "found"),
    [
        ({"alert_only": True}, [ADDED]),
        ({"restore_ruleset": False}, [ADDED]),
        ({}, [CANARY]),  # the table equals the rules file: a reload repairs nothing
    ],
    ids=["alert only", "restore off", "no table finding"],
)
def test_no_reload(tmp_path, monkeypatch, settings, found):
    host = Host(monkeypatch)
    monitor = make_monitor(tmp_path, monkeypatch, **settings)
    monitor.on_breach(found)
    assert host.loads == []
    assert state(monitor)["restores"] == []
    assert host.restores() == []


def test_a_rule_injected_again_and_again_is_reloaded_three_times_a_minute(tmp_path, monkeypatch):
    host = Host(monkeypatch)
    monitor = make_monitor(tmp_path, monkeypatch)
    for _again in range(10):
        monitor.on_breach([ADDED])
    assert len(host.loads) == lib.BURST
    actions = [item["action"] for item in state(monitor)["restores"]]
    # Each refusal streak is recorded once, not once per event.
    assert actions == ["restored"] * lib.BURST + ["rate_limited"]
    assert "3 restores in the last 60 s already" in state(monitor)["restores"][-1]["detail"]
    assert [fields["ENCLAVE_RESTORE_ACTION"] for fields in host.restores()] == ["restored"] * 3 + ["rate_limited"]
    assert monitor.restores_by_outcome == {"restored": 3, "rate_limited": 7}
    # Only the first detection was a new breach.
    assert len([f for f in host.journal if f["MESSAGE_ID"] == evidence.MESSAGE_ID_BREACH]) == 1


def test_the_state_keeps_the_latest_restores():
    entries = []
    for number in range(lib.KEPT + 5):
        entries = lib.keep(entries, {"n": number})
    assert [item["n"] for item in entries] == list(range(5, lib.KEPT + 5))


def test_a_reload_during_a_full_check_raises_no_counter_breach(tmp_path, monkeypatch):
    monitor = make_monitor(tmp_path, monkeypatch)
    counter = monitor_lib.breach("counter", "host", "counter drop_output did not move")

    def check_with_a_reload():
        monitor.reloads += 1  # an event's fast check reloaded the table while the probes ran
        return [counter, CANARY]

    monkeypatch.setattr(monitor, "_full_check", check_with_a_reload)
    assert monitor.full_check() == [CANARY]
    monkeypatch.setattr(monitor, "_full_check", lambda: [counter])
    assert monitor.full_check() == [counter]


def test_the_setting_is_validated_and_named():
    settings = {
        "canaries": [{"name": "canary https", "address": "198.51.100.99", "proto": "tcp", "port": 443}],
        "interfaces": ["lo", "eth*"],
    }
    config, problems = config_lib.validate(settings)
    assert problems == []
    assert config["restore_ruleset"] is True
    _config, problems = config_lib.validate({**settings, "restore_ruleset": "yes"})
    assert problems == ["isolation_monitor_restore_ruleset: 'yes' is not true or false."]


def test_the_metrics_count_the_restores_by_outcome():
    text = evidence.metrics_text(False, True, {}, {}, {}, 0, {"restored": 2, "rate_limited": 5})
    assert 'enclave_isolation_ruleset_restores_total{outcome="restored"} 2' in text
    assert 'enclave_isolation_ruleset_restores_total{outcome="rate_limited"} 5' in text
