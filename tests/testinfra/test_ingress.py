"""ingress: the live TLS endpoint as a clinical application sees it.

Requests come from a clinical client (the lab's clinic container, reached with
``podman exec``; ENCLAVE_CLINIC_CONTAINER names another one), with the client
applications' keys lab/make-tls made (ENCLAVE_INGRESS_KEY_DIR). What the host
should serve comes from the inventory that provisioned it.

    pytest tests/testinfra/test_ingress.py --hosts=podman://enclave-lab-host
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import socket
import time
import uuid

import pytest
import yaml
from clinic_client import KEY_DIR, clinic, clinic_endpoint
from enclave_host import REPO

pytestmark = pytest.mark.serving

# An address outside the clinical zone that this machine holds: the lab
# bridge's gateway, the admin zone's only member.
NON_CLINICAL_SOURCE = os.environ.get("ENCLAVE_NON_CLINICAL_SOURCE", "198.51.100.1")
NOT_ALLOWLISTED = ["/tokenize", "/detokenize", "/metrics", "/v1/embeddings", "/docs", "/openapi.json", "/pooling"]


@pytest.fixture
def endpoint(enclave_vars):
    return clinic_endpoint(enclave_vars)


@pytest.fixture(scope="module")
def keys():
    found = {p.stem: p.read_text().strip() for p in KEY_DIR.glob("*.key")}
    if len(found) < 2:
        pytest.skip(f"two client keys are needed under {KEY_DIR} (lab/make-tls makes them)")
    return found


def test_ENC_IG_001_tls_below_1_2_is_refused_and_1_2_and_1_3_are_accepted(endpoint):
    old, v12, v13 = clinic(endpoint, {"handshake": "TLSv1_1"}, {"handshake": "TLSv1_2"}, {"handshake": "TLSv1_3"})
    assert old["version"] is None
    assert "protocol version" in old["error"] or "unsupported protocol" in old["error"], old
    assert v12["version"] == "TLSv1.2"
    assert v13["version"] == "TLSv1.3"


def test_ENC_IG_003_missing_and_wrong_keys_get_a_json_401(endpoint, keys):
    wrong = "x" * 64
    valid = next(iter(keys.values()))
    for answer in clinic(
        endpoint,
        {"path": "/v1/models"},
        {"path": "/v1/models", "key": wrong},
        {"path": "/v1/chat/completions", "method": "POST", "key": valid[:-1], "body": "{}"},
        {"path": "/tokenize", "method": "POST", "body": "{}"},
    ):
        assert answer["status"] == 401, answer
        assert json.loads(answer["body"])["error"]["type"] == "unauthorized"


def test_ENC_IG_003_valid_key_reaches_vllm(host, endpoint, keys):
    (answer,) = clinic(endpoint, {"path": "/v1/models", "key": keys["clinic-app"]})
    assert answer["status"] != 401, answer
    # vLLM listens inside its container's network namespace, where the host's
    # ss cannot see it; the socket file is what the ingress connects to.
    if not host.file(_socket_path(host)).is_socket:
        pytest.fail(f"vLLM does not listen on {_socket_path(host)}: the ingress answered {answer['status']}")
    assert answer["status"] == 200, answer
    assert json.loads(answer["body"])["object"] == "list"


def _socket_path(host):
    config = host.file("/etc/nginx/nginx.conf").content_string
    return config.split("server unix:", 1)[1].split(";", 1)[0]


def test_ENC_IG_003_client_keys_are_stored_only_as_hashes(host):
    """nginx knows each application by its key's SHA-256; the key itself is on no file of its.

    Where the client keys are at hand (the lab's, ENCLAVE_INGRESS_KEY_DIR), each
    one is also looked for in nginx's files; elsewhere only the map is checked.
    """
    config = host.file("/etc/nginx/nginx.conf").content_string
    block = re.search(r"map \$enclave_key_sha256 \$enclave_client \{(.*?)\}", config, re.DOTALL)
    assert block, "nginx.conf has no map from key hashes to clients"
    entries = [line.split() for line in block.group(1).splitlines() if line.strip()]
    clients = {entry[0]: entry[1].rstrip(";") for entry in entries if entry[0] != "default"}
    assert clients, "no client application is known"
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in clients), sorted(clients)
    keys = {path.stem: path.read_text().strip() for path in KEY_DIR.glob("*.key")}
    for name, key in keys.items():
        assert clients.get(hashlib.sha256(key.encode()).hexdigest()) == name, f"{name}'s key hash is not in the map"
        found = host.run("grep -rlF -- %s /etc/nginx", key)
        # grep: 1 is "not found"; 0 lists the files that hold the key.
        assert found.rc == 1, f"{name}'s key is stored in {found.stdout or found.stderr}"


@pytest.mark.parametrize("path", NOT_ALLOWLISTED)
def test_ENC_IG_004_routes_outside_the_allowlist_are_404_for_a_valid_client(endpoint, keys, path):
    get, post = clinic(
        endpoint,
        {"path": path, "key": keys["clinic-app"]},
        {"path": path, "method": "POST", "key": keys["clinic-app"], "body": "{}"},
    )
    for answer in (get, post):
        assert answer["status"] == 404, answer
        assert json.loads(answer["body"])["error"]["type"] == "not_found"


def test_ENC_IG_001_plain_http_on_the_tls_port_gets_no_answer(endpoint, keys):
    plain, control = clinic(endpoint, {"plain": True}, {"path": "/v1/models"})
    assert plain["received"] == "", plain
    assert control["status"] == 401


def test_ENC_IG_002_nginx_listens_on_the_clinical_address_only(host, endpoint):
    address, port = endpoint
    listeners = host.check_output("ss -Hltnp")
    nginx = sorted({line.split()[3] for line in listeners.splitlines() if '"nginx"' in line})
    assert nginx == [f"{address}:{port}"], listeners
    assert not [line for line in listeners.splitlines() if line.split()[3].endswith(":80")], listeners


def test_ENC_IG_001_security_headers_on_every_answer(endpoint, keys):
    for answer in clinic(endpoint, {"path": "/v1/models"}, {"path": "/docs", "key": keys["clinic-app"]}):
        headers = answer["headers"]
        assert headers["strict-transport-security"].startswith("max-age=")
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
        assert headers["server"] == "nginx", "the version must not show"


def test_ENC_IG_005_logs_hold_no_query_string_body_or_key(host, endpoint, keys):
    marker = f"phi-marker-{uuid.uuid4().hex}"
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": marker}], "max_tokens": 1})
    answers = clinic(
        endpoint,
        {"path": f"/v1/models?patient={marker}", "key": keys["clinic-app"]},
        {"path": "/v1/chat/completions", "method": "POST", "key": keys["clinic-app"], "body": body},
        {"path": f"/{marker}", "key": keys["clinic-app"]},
    )
    assert answers[0]["status"] == 400, "a query string must be refused"
    logs = host.check_output("cat /var/log/nginx/enclave-access.log /var/log/nginx/error.log")
    mine = [line for line in logs.splitlines() if '"client":"clinic-app"' in line]
    assert mine, "the access log names no client"
    assert f"?patient={marker}" not in logs
    assert f"patient={marker}" not in logs
    assert marker not in logs.replace(f'"uri":"/{marker}"', ""), "the body or the query reached a log"
    for key in keys.values():
        assert key not in logs


def test_rate_limit_is_per_application(endpoint, keys, enclave_vars):
    burst = int(enclave_vars.get("ingress_rate_burst", 20))
    # Let the bucket drain from the earlier tests first.
    time.sleep(2)
    limited, other = clinic(
        endpoint,
        {"path": "/health", "key": keys["triage-app"], "repeat": 2 * burst},
        {"path": "/health", "key": keys["clinic-app"]},
    )
    assert 429 in limited["statuses"], limited
    assert 429 not in limited["statuses"][: burst + 1], limited
    assert other["status"] != 429, "another application's requests were limited too"


def _drop_input(host):
    counter = json.loads(host.check_output("nft -j list counter inet enclave drop_input"))
    (entry,) = [c["counter"] for c in counter["nftables"] if "counter" in c]
    return entry["packets"]


def test_ENC_FW_001_non_clinical_source_is_dropped_by_the_firewall(host, endpoint, enclave_vars):
    # From the admin zone to the host's admin address: port 443 is open to the
    # clinical zone only. (In the lab, traffic routed from the lab network
    # onto the clinical bridge is masqueraded to the bridge's gateway, so a
    # non-clinical source can only be shown on the host's other address.)
    admin_address = enclave_vars.get("ansible_host")
    if not admin_address or admin_address == endpoint[0]:
        pytest.skip("the host has no address outside the clinical network in the inventory")
    before = _drop_input(host)
    with socket.socket() as sock:
        sock.settimeout(3)
        try:
            sock.bind((NON_CLINICAL_SOURCE, 0))
        except OSError:
            pytest.skip(f"this machine does not hold {NON_CLINICAL_SOURCE}")
        with pytest.raises(TimeoutError):
            sock.connect((admin_address, endpoint[1]))
    assert _drop_input(host) > before, "drop_input did not move: the connection was not dropped by the firewall"
    (control,) = clinic(endpoint, {"path": "/v1/models"})
    assert control["status"] == 401, "the clinical client must still connect"


def test_ENC_IG_003_the_upstream_key_fragment_is_checked_before_it_is_installed(host):
    """The fragment holding vLLM's key goes in before nginx.conf, whose check would catch it too late."""
    check = yaml.safe_load((REPO / "roles" / "ingress" / "vars" / "main.yml").read_text())["__ingress_fragment_check"]
    good = shlex.quote('proxy_set_header Authorization "Bearer test";')
    unterminated = shlex.quote('proxy_set_header Authorization "Bearer test"')
    path = host.check_output("mktemp")
    try:
        host.check_output(f"echo {good} > {path}")
        assert host.run(check % path).rc == 0
        host.check_output(f"echo {unterminated} > {path}")
        refused = host.run(check % path)
        assert refused.rc != 0
        assert "unexpected" in refused.stderr
    finally:
        host.run(f"rm -f {path}")
