"""Bad ingress settings against a real host: each fails with one clear message
and leaves the host exactly as it was (the state digest covers /etc,
/usr/local, /opt and the package list, so an installed nginx, a written
certificate or a new group would show).

The host is the integration suite's lab target (conftest.py), provisioned by
nothing: the refusals must come before the first change. Every case starts
from settings that pass (the lab inventory's, listening on the target's own
address) and breaks exactly one.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.lab

SERVER_NAME = "llm.lab.enclave.invalid"
GOOD_UPSTREAM_KEY = "lab-upstream-key-" + "k" * 32
NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(key, start, end):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("198.51.100.30"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


_EXPIRED_KEY = _key()
EXPIRED = {
    "ingress_tls_certificate": _cert_pem(_EXPIRED_KEY, NOW - 400 * DAY, NOW - DAY),
    "ingress_tls_key": _key_pem(_EXPIRED_KEY),
}
# The server's certificate after another one (an intermediate's place).
_LEAF_KEY = _key()
_CURRENT = (NOW - DAY, NOW + 90 * DAY)
OUT_OF_ORDER = {
    "ingress_tls_certificate": _cert_pem(_key(), *_CURRENT) + _cert_pem(_LEAF_KEY, *_CURRENT),
    "ingress_tls_key": _key_pem(_LEAF_KEY),
}
MISMATCHED = {
    "ingress_tls_certificate": _cert_pem(_key(), NOW - DAY, NOW + 90 * DAY),
    "ingress_tls_key": _key_pem(_key()),
}


def case(name, extra, fragments):
    return pytest.param(extra, fragments, id=name)


CASES = [
    case("certificate_not_matching_its_key", MISMATCHED, ["the certificate does not match the private key"]),
    case("certificate_expired", EXPIRED, ["ingress_tls_certificate: the certificate expired on"]),
    case(
        "chain_out_of_order",
        OUT_OF_ORDER,
        ["ingress_tls_certificate: the chain is in the wrong order", "is number 2 of 2; put it first"],
    ),
    case(
        "key_hash_not_hex",
        {"ingress_clients": [{"name": "clinic-app", "key_sha256": "z" * 64}]},
        ["ingress_clients[0] (clinic-app): key_sha256 must be the 64 lowercase hex digits"],
    ),
    case(
        "key_hash_short",
        {"ingress_clients": [{"name": "clinic-app", "key_sha256": "ab" * 16}]},
        ["key_sha256 must be the 64 lowercase hex digits of the key's SHA-256, got 32 characters"],
    ),
    case("upstream_api_key_short", {"vllm_api_key": "short-key-of-24-bytes..."}, ["vllm_api_key is 24 bytes"]),
    case(
        "allowlist_with_tokenize",
        {"ingress_allowed_endpoints": ["/v1/chat/completions", "/tokenize"]},
        ["ingress_allowed_endpoints: /tokenize is not an inference route"],
    ),
    case(
        "allowlist_with_metrics",
        {"ingress_allowed_endpoints": ["/v1/models", "/metrics"]},
        ["/metrics is not an inference route"],
    ),
    case(
        "listen_address_not_on_the_host",
        {"ingress_listen_address": "203.0.113.99"},
        ["ingress_listen_address 203.0.113.99 is not an address of this host", "198.51.100.30"],
    ),
    case(
        "listen_address_any",
        {"ingress_listen_address": "0.0.0.0"},
        ["ingress_listen_address 0.0.0.0 would listen on every interface"],
    ),
]


@pytest.mark.parametrize(("extra", "fragments"), CASES)
def test_bad_ingress_setting_fails_with_a_clear_message_and_changes_nothing(target, extra, fragments):
    settings = {"ingress_listen_address": target.address, "vllm_api_key": GOOD_UPSTREAM_KEY, **extra}
    output = target.run_refused("ingress.yml", settings, fragments)
    assert "BEGIN PRIVATE KEY" not in output, "the private key reached the output"
    assert GOOD_UPSTREAM_KEY not in output, "vLLM's key reached the output"


def test_good_settings_pass_the_same_checks(target):
    """The control: the base settings of every case get past every refusal.

    In check mode on this unprovisioned host the play may stop later, at the
    package install (its apt sources are not the mirror's): what matters is
    that each validation task answered ok and nothing changed.
    """
    settings = {"ingress_listen_address": target.address, "vllm_api_key": GOOD_UPSTREAM_KEY}
    before = target.state_digest()
    result = target.run_playbook("ingress.yml", "--check", "-e", json.dumps(settings))
    output = result.stdout + result.stderr
    for task in ("Refuse a missing listen address", "ENC-IG-004 | Refuse wrong settings, with every reason"):
        section = output.split(f"TASK [enclave.llm.ingress : {task}", 1)
        assert len(section) == 2, f"{task!r} did not run\n{output[-4000:]}"
        assert section[1].split("TASK [", 1)[0].count(f"ok: [{target.name}]") == 1, output[-4000:]
    assert before == target.state_digest()


# Bad requests against good settings: the ingress converges on a throwaway
# host of its own, in front of a recording stand-in for vLLM on the Unix
# socket (the observation point only: it shows which requests got through
# and with which key). The end-to-end run against the real vLLM is the host
# suite's (tests/testinfra/test_ingress.py).
INGRESS_HOST = "enclave-test-ingress"
INGRESS_ADDR = "198.51.100.33"
INGRESS_LABEL = "io.enclave.test=ingress"
STANDIN_DIR = "/run/ingress-standin"
STANDIN_SOCKET = f"{STANDIN_DIR}/vllm.sock"
STANDIN_LOG = f"{STANDIN_DIR}/requests.log"
STANDIN_RELEASE = f"{STANDIN_DIR}/release"
MIRROR_SOURCES = (
    "rm -f /etc/apt/sources.list.d/* && echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://198.51.100.10:3142/debian bookworm main' > /etc/apt/sources.list && apt-get -qq update"
)
STANDIN = r"""
import json, os, socketserver, sys, time
from http.server import BaseHTTPRequestHandler
SOCKET, LOG, RELEASE = sys.argv[1:4]

class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(LOG, "a") as log:
            log.write(json.dumps({"method": self.command, "path": self.path,
                                  "authorization": self.headers.get("Authorization", "")}) + "\n")
        if b'"stream": true' in body:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"data: first\n\n")
            self.wfile.flush()
            for _ in range(300):
                if os.path.exists(RELEASE):
                    break
                time.sleep(0.1)
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True
            return
        reply = json.dumps({"object": "list", "standin": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    do_GET = do_POST = do_HEAD = _answer

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

if os.path.exists(SOCKET):
    os.unlink(SOCKET)
server = Server(SOCKET, Recorder)
os.chmod(SOCKET, 0o660)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def ingress_host(tmp_path_factory):
    from lab_host import LAB_STATE, lab_target, podman

    with lab_target(tmp_path_factory, INGRESS_HOST, INGRESS_ADDR, INGRESS_LABEL) as host:
        podman("exec", host.name, "sh", "-c", MIRROR_SOURCES)
        podman(
            "exec",
            host.name,
            "sh",
            "-c",
            f"groupadd --system enclave-inference && install -d -m 2750 -g enclave-inference {STANDIN_DIR}",
        )
        podman("exec", "-i", host.name, "sh", "-c", f"cat > {STANDIN_DIR}/standin.py", input=STANDIN)
        podman(
            "exec",
            "-d",
            host.name,
            "sg",
            "enclave-inference",
            "-c",
            f"python3 {STANDIN_DIR}/standin.py {STANDIN_SOCKET} {STANDIN_LOG} {STANDIN_RELEASE}",
        )
        settings = {
            "ingress_listen_address": INGRESS_ADDR,
            "ingress_upstream_socket": STANDIN_SOCKET,
            "vllm_api_key": GOOD_UPSTREAM_KEY,
        }
        first = host.run_playbook("ingress.yml", "-e", json.dumps(settings), timeout=600)
        assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
        second = host.run_playbook("ingress.yml", "-e", json.dumps(settings), timeout=600)
        host.converge_runs = (first, second)
        host.client_keys = {p.stem: p.read_text().strip() for p in (LAB_STATE / "ingress" / "clients").glob("*.key")}
        host.recorded = lambda: [
            json.loads(line) for line in podman("exec", host.name, "cat", STANDIN_LOG, check=False).stdout.splitlines()
        ]
        host.release = lambda: podman("exec", host.name, "touch", STANDIN_RELEASE)
        yield host


def _https(address, method, path, key=None, body=None):
    import http.client
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(address, 443, context=context, timeout=15)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    connection.request(method, path, body=body, headers=headers)
    return connection, connection.getresponse()


def _status(address, method, path, key=None, body=None):
    connection, response = _https(address, method, path, key, body)
    response.read()
    connection.close()
    return response.status


def test_second_converge_changes_nothing_and_reloads_nothing(ingress_host):
    first, second = ingress_host.converge_runs
    assert re.search(r"changed=[1-9]", first.stdout), first.stdout[-2000:]
    assert second.returncode == 0, second.stdout[-4000:]
    assert re.search(r"changed=0\b", second.stdout), second.stdout[-3000:]
    assert "RUNNING HANDLER" not in second.stdout


def test_refused_requests_never_reach_the_upstream(ingress_host):
    key = ingress_host.client_keys["clinic-app"]
    before = len(ingress_host.recorded())
    refused = {
        ("POST", "/v1/chat/completions", None): 401,
        ("POST", "/v1/chat/completions", "x" * 64): 401,
        ("GET", "/tokenize", key): 404,
        ("POST", "/tokenize", key): 404,
        ("GET", "/metrics", key): 404,
        ("POST", "/v1/embeddings", key): 404,
        ("GET", "/docs", key): 404,
        ("GET", "/openapi.json", key): 404,
        ("POST", "/v1/responses", key): 404,
        ("GET", "/v1/chat/completions", key): 405,
        ("GET", "/v1/models?secret=1", key): 400,
    }
    for (method, path, client_key), expected in refused.items():
        assert _status(INGRESS_ADDR, method, path, client_key, "{}" if method == "POST" else None) == expected, path
    assert ingress_host.recorded()[before:] == [], "a refused request reached the upstream"


def test_an_allowed_request_reaches_the_upstream_with_vllms_key_only(ingress_host):
    key = ingress_host.client_keys["clinic-app"]
    before = len(ingress_host.recorded())
    assert _status(INGRESS_ADDR, "POST", "/v1/chat/completions", key, '{"messages": []}') == 200
    assert _status(INGRESS_ADDR, "GET", "/v1/models", key) == 200
    recorded = ingress_host.recorded()[before:]
    assert [(r["method"], r["path"]) for r in recorded] == [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
    assert {r["authorization"] for r in recorded} == {f"Bearer {GOOD_UPSTREAM_KEY}"}


def test_streamed_tokens_are_passed_on_before_the_reply_ends(ingress_host):
    key = ingress_host.client_keys["clinic-app"]
    connection, response = _https(INGRESS_ADDR, "POST", "/v1/chat/completions", key, '{"stream": true}')
    try:
        # The stand-in holds its last event until released: a buffering proxy
        # would deliver nothing before this read times out.
        assert response.read1(64).startswith(b"data: first")
    finally:
        ingress_host.release()
    assert b"[DONE]" in response.read()
    connection.close()
