"""Helpers for lab-only tests: they run playbooks against the lab and may stop
lab services, so they never run against a real server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventories" / "lab"
MIRROR = "enclave-lab-mirror"
ENCLAVE_HOST = "enclave-lab-host"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def lab_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    env.setdefault("CONTAINERS_CONF", str(REPO / ".lab" / "containers.conf"))
    env.setdefault("ENCLAVE_LAB_STATE", str(REPO / ".lab"))
    env["ANSIBLE_NOCOLOR"] = "1"
    env.pop("ANSIBLE_FORCE_COLOR", None)
    return env


def run_playbook(playbook: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", "-i", str(LAB_INVENTORY), playbook, *args],
        cwd=REPO,
        env=lab_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """Per host: ok, changed, unreachable and failed counts from a PLAY RECAP."""
    return {
        m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
        for m in RECAP.finditer(ANSI_ESCAPE.sub("", output))
    }


def lab_host_vars() -> dict:
    """The lab inventory's variables for the enclave host, as Ansible resolves them."""
    out = subprocess.run(
        ["ansible-inventory", "-i", str(LAB_INVENTORY), "--host", ENCLAVE_HOST],
        cwd=REPO,
        env=lab_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=lab_env(), capture_output=True, text=True, check=check)


# What a converge does after an authorised change: AIDE's baseline written again.
AIDE_REBASELINE = (
    "test ! -f /etc/aide/aide.conf || { aide --init --config /etc/aide/aide.conf >/dev/null && "
    "mv -f /var/lib/aide/aide.db.new /var/lib/aide/aide.db; }"
)


def state_digest(container: str) -> str:
    """Digest of a host's configuration and package set, to prove a run changed nothing."""
    script = (
        "find /etc -xdev -type f -print0 | sort -z | xargs -0 sha256sum; "
        "dpkg-query -W -f='${Package} ${Version} ${Status}\\n'"
    )
    out = podman("exec", container, "sh", "-c", script).stdout
    return hashlib.sha256(out.encode()).hexdigest()


# The lab's canary (lab/canary/listeners.py): LOG has one short line per
# arrival, LOG.jsonl the same arrival with its sender and time.
CANARY = "enclave-lab-canary"
CANARY_ADDRESS = "198.51.100.99"
CANARY_LOG = "/var/log/canary.log"


def canary_log() -> list[str]:
    return podman("exec", CANARY, "cat", CANARY_LOG).stdout.splitlines()


def canary_arrivals() -> list[dict]:
    """Every arrival at the canary: at (UTC, ISO 8601), proto, address, port, sender, sender_port."""
    run = podman("exec", CANARY, "cat", f"{CANARY_LOG}.jsonl", check=False)
    if run.returncode != 0:
        raise AssertionError(
            f"{CANARY} has no {CANARY_LOG}.jsonl ({run.stderr.strip()}): it runs an older lab/canary/listeners.py; "
            f"restart it: lab/podman restart {CANARY}"
        )
    out = run.stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
