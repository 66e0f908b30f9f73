"""The lab's canary never sees the enclave host's probes, while it does log a
connection from the lab network that the policy does not govern, with its
sender and time."""

import datetime
import json
import socket
import subprocess
import time

from labkit import (
    CANARY_ADDRESS,
    ENCLAVE_HOST,
    LAB_INVENTORY,
    REPO,
    canary_arrivals,
    canary_log,
    lab_env,
    lab_host_vars,
)


def _probe_canaries() -> list[dict]:
    canaries = lab_host_vars()["enclave_canaries"]
    targets = [{**c, "expect": "blocked", "counter": "drop_output", "timeout": 2} for c in canaries]
    env = {**lab_env(), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
    out = subprocess.run(
        [
            "ansible",
            ENCLAVE_HOST,
            "-i",
            str(LAB_INVENTORY),
            "-m",
            "enclave.llm.egress_probe",
            "-a",
            json.dumps({"targets": targets}),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    ).stdout
    (result,) = json.loads(out)["plays"][0]["tasks"][0]["hosts"].values()
    assert not result.get("failed"), result.get("msg")
    return result["probes"]


def test_blocked_probes_never_reach_the_canary():
    before, arrivals = canary_log(), canary_arrivals()
    probes = _probe_canaries()
    assert probes
    assert all(p["matched_expectation"] for p in probes), probes
    assert canary_log() == before, "the canary logged traffic the enclave host's policy should have dropped"
    assert canary_arrivals() == arrivals


def test_the_canary_logs_what_does_reach_it_with_sender_and_time():
    # The control: the machine (not the enclave host) connects, and the canary records it.
    before, arrivals = len(canary_log()), len(canary_arrivals())
    start = datetime.datetime.now(datetime.UTC)
    with socket.create_connection((CANARY_ADDRESS, 8080), timeout=5) as sock:
        sender, sender_port = sock.getsockname()[:2]
    for _attempt in range(20):  # the listener writes its line just after accepting
        if len(canary_arrivals()) > arrivals:
            break
        time.sleep(0.1)
    assert canary_log()[before:] == [f"tcp {CANARY_ADDRESS} 8080"]
    [arrival] = canary_arrivals()[arrivals:]
    assert arrival["proto"] == "tcp"
    assert (arrival["address"], arrival["port"]) == (CANARY_ADDRESS, 8080)
    assert (arrival["sender"], arrival["sender_port"]) == (sender, sender_port)
    at = datetime.datetime.fromisoformat(arrival["at"])
    assert at.utcoffset() == datetime.timedelta(0), arrival["at"]
    # Clocks of one machine: the container and this process read the same one.
    assert start - datetime.timedelta(seconds=1) <= at <= datetime.datetime.now(datetime.UTC), arrival["at"]
