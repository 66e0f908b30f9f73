"""vllm: the inference service runs rootless with no network, read-only, without
capabilities, offline, and answers a real chat completion only with the key.

Run against the lab (the tiny model's answer is known, lab/models/make_tiny_r1.py)
or a real host (the answer is then only checked to be there):

    pytest tests/testinfra/test_vllm.py --hosts=podman://enclave-lab-host
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from enclave_host import REPO

pytestmark = pytest.mark.serving

_spec = importlib.util.spec_from_file_location("make_tiny_r1", REPO / "lab" / "models" / "make_tiny_r1.py")
tiny_r1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_r1)

SERVICE = "enclave-vllm.service"
CONTAINER = "enclave-vllm"
MONITOR_CONFIG = "/etc/enclave/isolation-monitor.json"


@pytest.fixture
def account(enclave_vars) -> str:
    return enclave_vars.get("vllm_user") if "{{" not in str(enclave_vars.get("vllm_user", "{{")) else "enclave-llm"


@pytest.fixture
def socket_dir(enclave_vars) -> str:
    return enclave_vars.get("vllm_socket_dir", "/run/enclave-llm")


@pytest.fixture
def socket_path(socket_dir) -> str:
    return f"{socket_dir}/vllm.sock"


@pytest.fixture
def api_key(enclave_vars) -> str:
    key = enclave_vars.get("vllm_api_key")
    if not key or "{{" in key:
        pytest.skip("vllm_api_key comes from a vault or lookup; give it to the suite through the inventory")
    return key


@pytest.fixture
def served_name(enclave_vars) -> str:
    name = enclave_vars.get("vllm_served_model_name", "{{")
    return enclave_vars["enclave_model_profile"] if "{{" in name else name


def as_account(host, account, *command):
    return host.run(
        "systemd-run --quiet --wait --pipe --machine=%s@ --user " + " ".join(["%s"] * len(command)),
        account,
        *command,
    )


@pytest.fixture
def container(host, account) -> dict:
    """The running container as the account's Podman sees it."""
    result = as_account(host, account, "podman", "inspect", CONTAINER)
    assert result.rc == 0, f"no container {CONTAINER} for {account}: {result.stderr}"
    (data,) = json.loads(result.stdout)
    return data


# HTTP over the socket with the host's own Python (servers need not have curl).
# The key never travels on the command line, where sudo would log it (and the
# audit's evidence would keep it): the script reads it on the host, from the
# ingress's root-only upstream configuration, when asked to.
_HTTP_OVER_SOCKET = """
import http.client, json, re, socket, sys
path, body, key, key_file = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5]
if key_file:
    key = re.search(r'Bearer ([^"\\s]+)', open(key_file).read()).group(1)
conn = http.client.HTTPConnection("localhost", timeout=120)
conn.sock = socket.socket(socket.AF_UNIX)
conn.sock.connect(sys.argv[4])
headers = {"Content-Type": "application/json"}
if key:
    headers["Authorization"] = "Bearer " + key
conn.request("POST" if body else "GET", path, body=body or None, headers=headers)
reply = conn.getresponse()
print(reply.status)
print(reply.read().decode())
"""
UPSTREAM_AUTH = "/etc/nginx/enclave/upstream-auth.conf"


def request(host, socket_path, path, body="", key="", key_file=""):
    """(status, body) of a request over the socket, as root."""
    result = host.run("python3 -c %s %s %s %s %s %s", _HTTP_OVER_SOCKET, path, body, key, socket_path, key_file)
    assert result.rc == 0, result.stderr
    status, _sep, text = result.stdout.partition("\n")
    return int(status), text


def chat(host, socket_path, served_name, key="", content=tiny_r1.GREETING, key_file=""):
    body = json.dumps({"model": served_name, "messages": [{"role": "user", "content": content}], "max_tokens": 32})
    return request(host, socket_path, "/v1/chat/completions", body, key, key_file)


def test_service_is_active_in_the_accounts_systemd(host, account):
    result = host.run("systemctl --user --machine=%s@ is-active %s", account, SERVICE)
    assert result.stdout.strip() == "active", result.stdout + result.stderr


def test_ENC_VL_003_container_runs_rootless_as_the_account(host, account, container):
    pid = container["State"]["Pid"]
    assert pid > 0
    uid_line = host.file(f"/proc/{pid}/status").content_string
    uids = next(line for line in uid_line.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {str(host.user(account).uid)}, f"the container's main process runs as uids {uids}"


def test_ENC_VL_004_container_runs_a_pinned_image_from_the_internal_registry(container, enclave_vars):
    registry = enclave_vars.get("podman_rootless_registry") or enclave_vars["enclave_mirror"]["registry"]
    image = container["ImageName"]
    assert image.startswith(f"{registry}/"), f"{image} is not from the internal registry {registry}"
    if enclave_vars.get("enclave_profile", "production") == "production":
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{image} is not pinned by digest"


def test_ENC_VL_007_service_starts_only_through_the_isolation_gate(host, account):
    """The unit refuses to start without the gate the isolation monitor opens; it runs, so the gate is open."""
    gate = json.loads(host.file(MONITOR_CONFIG).content_string)["gate_file"]
    unit = host.run("systemctl --user --machine=%s@ show -p FragmentPath --value %s", account, SERVICE)
    assert unit.rc == 0, unit.stderr
    lines = host.file(unit.stdout.strip()).content_string.splitlines()
    assert f"ExecStartPre=/usr/bin/test -f {gate}" in lines, f"{unit.stdout.strip()} does not wait for {gate}"
    assert host.file(gate).exists, "vLLM runs while the isolation gate is closed"


def test_ENC_VL_001_container_has_only_loopback(host, account):
    result = as_account(host, account, "podman", "exec", CONTAINER, "cat", "/proc/net/dev")
    assert result.rc == 0, result.stderr
    devices = [line.split(":")[0].strip() for line in result.stdout.splitlines()[2:]]
    assert devices == ["lo"]


def test_ENC_VL_001_container_network_mode_is_none(container):
    assert container["HostConfig"]["NetworkMode"] == "none"


def test_ENC_VL_003_root_is_mounted_read_only(host, container):
    """The container's own view of its mounts, read from the host: / is mounted ro."""
    mountinfo = host.file(f"/proc/{container['State']['Pid']}/mountinfo").content_string
    roots = [line.split() for line in mountinfo.splitlines() if line.split()[4] == "/"]
    assert roots, mountinfo
    # The last mount on / is the one the process sees.
    assert "ro" in roots[-1][5].split(","), " ".join(roots[-1])


@pytest.mark.mutates_host
def test_ENC_VL_003_root_filesystem_is_read_only(host, account, container):
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    result = as_account(host, account, "podman", "exec", CONTAINER, "touch", "/opt/vllm/probe")
    assert result.rc != 0
    assert "Read-only file system" in result.stderr
    scratch = as_account(host, account, "podman", "exec", CONTAINER, "touch", "/tmp/probe")
    assert scratch.rc == 0, f"the tmpfs scratch is not writable: {scratch.stderr}"


def test_ENC_VL_003_no_capabilities_and_no_new_privileges(host, account):
    result = as_account(host, account, "podman", "exec", CONTAINER, "cat", "/proc/1/status")
    assert result.rc == 0, result.stderr
    fields = dict(line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, f"{cap} = {fields[cap]}"
    assert fields["NoNewPrivs"].strip() == "1"


def test_ENC_VL_003_model_is_mounted_read_only(container):
    (mount,) = [m for m in container["Mounts"] if m["Destination"] == "/models"]
    assert mount["RW"] is False


def test_ENC_VL_003_environment_is_offline(container):
    env = dict(item.split("=", 1) for item in container["Config"]["Env"])
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        assert env.get(name) == "1", name
    assert env.get("VLLM_HOST_IP") == "127.0.0.1"


def test_ENC_VL_006_key_is_in_no_command_line_or_unit(host, account, container, api_key):
    """Every user on the host can read command lines and the unit; the key is in neither."""
    cmdline = host.file(f"/proc/{container['State']['Pid']}/cmdline").content_string
    assert api_key not in cmdline
    unit = host.run("systemctl --user --machine=%s@ show -p FragmentPath --value %s", account, SERVICE)
    assert unit.rc == 0, unit.stderr
    assert api_key not in host.file(unit.stdout.strip()).content_string


def test_ENC_VL_005_request_logging_is_off(container):
    args = container["Config"]["Cmd"] or container["Args"]
    assert "--enable-log-requests" not in args
    level = args[args.index("--uvicorn-log-level") + 1]
    assert level not in ("debug", "trace")


def test_ENC_VL_002_socket_folder_is_not_world_accessible(host, socket_dir, enclave_vars):
    folder = host.file(socket_dir)
    assert folder.is_directory
    assert folder.mode & 0o007 == 0, oct(folder.mode)
    assert folder.group == enclave_vars.get("vllm_socket_group", "enclave-inference")


def test_ENC_VL_002_health_answers_on_the_socket(host, socket_path):
    status, _body = request(host, socket_path, "/health")
    assert status == 200


def test_ENC_VL_006_chat_without_key_is_refused(host, socket_path, served_name, api_key):
    status, body = chat(host, socket_path, served_name)
    assert status == 401, body
    status, _body = chat(host, socket_path, served_name, key="x" * 40)
    assert status == 401


def test_chat_with_key_returns_the_reasoning_and_answer(host, socket_path, served_name, enclave_vars):
    if not host.file(UPSTREAM_AUTH).exists:
        pytest.skip(f"no {UPSTREAM_AUTH}: the key is read on the host from the ingress's configuration")
    status, body = chat(host, socket_path, served_name, key_file=UPSTREAM_AUTH)
    assert status == 200, body
    message = json.loads(body)["choices"][0]["message"]
    if enclave_vars.get("enclave_model_profile") == "tiny-r1":
        assert message.get("reasoning") == tiny_r1.REASONING
        assert message["content"] == tiny_r1.CONTENT
    else:
        assert message["content"]
