"""The lab's canary never sees the enclave host's probes, while it does log a
connection from the lab network that the policy does not govern."""

import json
import socket
import subprocess
import time

from labkit import ENCLAVE_HOST, LAB_INVENTORY, REPO, lab_env, lab_host_vars, podman

CANARY = "enclave-lab-canary"
CANARY_ADDRESS = "198.51.100.99"
CANARY_LOG = "/var/log/canary.log"


def _canary_log() -> list[str]:
    return podman("exec", CANARY, "cat", CANARY_LOG).stdout.splitlines()


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
    before = _canary_log()
    probes = _probe_canaries()
    assert probes
    assert all(p["matched_expectation"] for p in probes), probes
    assert _canary_log() == before, "the canary logged traffic the enclave host's policy should have dropped"


def test_the_canary_logs_what_does_reach_it():
    # The control: the machine (not the enclave host) connects, and the canary records it.
    before = len(_canary_log())
    with socket.create_connection((CANARY_ADDRESS, 8080), timeout=5):
        pass
    for _attempt in range(20):  # the listener writes its line just after accepting
        if len(_canary_log()) > before:
            break
        time.sleep(0.1)
    assert _canary_log()[before:] == [f"tcp {CANARY_ADDRESS} 8080"]
