"""The audit_rules_loaded module's decisions, with auditctl and augenrules stood in by scripts.

The kernel's rules are a file the stand-in auditctl prints; augenrules --load copies the
rules built from rules.d to /etc/audit/audit.rules and into that file. The comparison
itself runs on real kernel output in test_audit_rules_lib.py and in the VM lane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "plugins" / "modules" / "audit_rules_loaded.py"
RULES = "-D\n-w /etc/passwd -p wa -k identity\n-a always,exit -F path=/usr/sbin/nft -F perm=x -k enclave_nft\n-e 1\n"

AUDITCTL = """#!/bin/sh
case "$1" in
  -l) if [ -s "$STATE/kernel" ]; then cat "$STATE/kernel"; else echo "No rules"; fi ;;
  -s) echo "enabled $(cat "$STATE/enabled")"; echo "failure 1" ;;
  -D) : > "$STATE/kernel"; echo clear >> "$STATE/put_back" ;;
  -R) grep -v -e '^-D' -e '^-e' "$2" | sed "$STATE_PUT_BACK_EDIT" >> "$STATE/kernel"; echo load >> "$STATE/put_back" ;;
esac
"""
AUGENRULES = """#!/bin/sh
if cmp -s "$STATE/rules.d" "$STATE/audit.rules"; then echo "augenrules: No change"
elif [ "$1" = --check ]; then echo "augenrules: Rules have changed and should be updated"; exit 0
else cp "$STATE/rules.d" "$STATE/audit.rules"; fi
if [ "$1" = --load ]; then
  echo load >> "$STATE/loads"
  grep -v -e '^-D' -e '^-e' "$STATE/audit.rules" | sed "$STATE_LOAD_EDIT" > "$STATE/kernel"
  if [ -n "$STATE_LOAD_FAIL" ]; then echo "Error sending add rule data request (Invalid argument)" >&2; exit 1; fi
fi
"""


@pytest.fixture
def host(tmp_path):
    """A stand-in host whose kernel holds exactly the rules on disk."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("auditctl", AUDITCTL), ("augenrules", AUGENRULES)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "rules.d").write_text(RULES)
    (tmp_path / "audit.rules").write_text(RULES)
    (tmp_path / "kernel").write_text("-w /etc/passwd -p wa -k identity\n-w /usr/sbin/nft -p x -k enclave_nft\n")
    (tmp_path / "enabled").write_text("1")
    return tmp_path


def run(host, check_mode=False, load_edit="", load_fail="", put_back_edit="", **args):
    path = host / "args.json"
    args = {"rules_file": str(host / "audit.rules"), **args, "_ansible_check_mode": check_mode}
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {
        **os.environ,
        "PATH": f"{host / 'bin'}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO / ".collections"),
        "STATE": str(host),
        "STATE_LOAD_EDIT": load_edit,
        "STATE_LOAD_FAIL": load_fail,
        "STATE_PUT_BACK_EDIT": put_back_edit,
    }
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(path)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    return json.loads(completed.stdout)


def loads(host):
    return len((host / "loads").read_text().splitlines()) if (host / "loads").exists() else 0


def test_a_converged_host_changes_nothing(host):
    result = run(host)
    assert (result.get("failed"), result["changed"], result["equal"], loads(host)) == (None, False, True, 0)


def test_a_rule_removed_from_the_kernel_is_loaded_again(host):
    (host / "kernel").write_text("-w /etc/passwd -p wa -k identity\n")
    result = run(host)
    assert not result.get("failed"), result
    assert (result["changed"], result["loaded_now"], result["stale"], result["equal"]) == (True, True, False, True)
    assert result["only_on_disk"] == ["-w /usr/sbin/nft -p x -k enclave_nft"]
    assert loads(host) == 1
    assert run(host)["changed"] is False


def test_check_mode_reports_the_drift_and_loads_nothing(host):
    (host / "kernel").write_text("-w /etc/passwd -p wa -k identity\n-w /tmp/x -p wa -k by_hand\n")
    result = run(host, check_mode=True)
    assert (result["changed"], result["loaded_now"], loads(host)) == (True, False, 0)
    assert result["only_loaded"] == ["-w /tmp/x -p wa -k by_hand"]


def test_a_changed_rules_file_is_loaded(host):
    (host / "rules.d").write_text(RULES.replace("-p wa -k identity", "-p rwa -k identity"))
    result = run(host)
    assert not result.get("failed"), result
    assert (result["changed"], result["stale"], loads(host)) == (True, True, 1)
    assert "-w /etc/passwd -p rwa -k identity" in (host / "kernel").read_text()


def test_compare_only_never_loads(host):
    (host / "kernel").write_text("-w /etc/passwd -p wa -k identity\n")
    result = run(host, reload=False)
    assert (result["changed"], result["equal"], loads(host)) == (False, False, 0)


def test_locked_rules_that_differ_ask_for_a_reboot(host):
    (host / "kernel").write_text("-w /etc/passwd -p wa -k identity\n")
    (host / "enabled").write_text("2")
    result = run(host)
    assert result["failed"]
    assert "locked (-e 2) until the next boot" in result["msg"]
    assert "Reboot the host" in result["msg"]
    assert "only on disk: -w /usr/sbin/nft -p x -k enclave_nft" in result["msg"]
    assert loads(host) == 0


def test_a_load_that_leaves_the_kernel_different_fails(host):
    (host / "kernel").write_text("")
    result = run(host, load_edit="/enclave_nft/d")
    assert result["failed"]
    assert "after augenrules --load the kernel's audit rules still differ" in result["msg"]
    assert "enclave_nft" in result["msg"]
    assert result["put_back"] == "The kernel held no rules before, and holds none again."
    assert (host / "kernel").read_text() == ""


BEFORE = "-w /etc/passwd -p wa -k identity\n-w /etc/shadow -p wa -k identity\n"


def test_a_failed_load_puts_the_kernel_s_previous_rules_back(host):
    """augenrules --load clears the kernel's rules first; a rule it then cannot add must not leave fewer."""
    (host / "kernel").write_text(BEFORE)
    result = run(host, load_edit="/enclave_nft/d", load_fail="1")
    assert result["failed"]
    assert result["msg"].startswith("augenrules --load failed (rc 1): ")
    assert "Error sending add rule data request (Invalid argument)" in result["msg"]
    assert "The 2 rule(s) the kernel held before were loaded again." in result["msg"]
    assert (host / "kernel").read_text() == BEFORE
    assert (host / "put_back").read_text().split() == ["clear", "load"]


def test_rules_that_cannot_all_be_put_back_are_named(host):
    (host / "kernel").write_text(BEFORE)
    result = run(host, load_fail="1", put_back_edit="/shadow/d")
    assert result["failed"]
    assert "could not all be loaded again (only on disk: -w /etc/shadow -p wa -k identity" in result["msg"]
    assert "audits less than it did" in result["msg"]


def test_a_good_load_puts_nothing_back(host):
    (host / "kernel").write_text(BEFORE)
    result = run(host)
    assert not result.get("failed"), result
    assert "put_back" not in result
    assert not (host / "put_back").exists()
