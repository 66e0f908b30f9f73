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


def squash(text):
    return " ".join(text.split())


@pytest.mark.parametrize(("extra", "fragments"), CASES)
def test_bad_ingress_setting_fails_with_a_clear_message_and_changes_nothing(target, extra, fragments):
    settings = {"ingress_listen_address": target.address, "vllm_api_key": GOOD_UPSTREAM_KEY, **extra}
    before = target.state_digest()
    result = target.run_playbook("ingress.yml", "-e", json.dumps(settings))
    after = target.state_digest()
    output = result.stdout + result.stderr
    described = f"$ {result.command}\nrc={result.returncode}\n{output[-4000:]}"
    assert result.returncode != 0, described
    assert output.count("fatal: [") == 1, described
    assert len(re.findall(r"failed=[1-9]", result.stdout)) == 1, described
    for fragment in fragments:
        assert squash(fragment) in squash(output), f"missing {fragment!r}\n{described}"
    assert "BEGIN PRIVATE KEY" not in output, "the private key reached the output"
    assert GOOD_UPSTREAM_KEY not in output, "vLLM's key reached the output"
    assert before == after, f"the host changed\n{described}"


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
    for task in ("Refuse a missing listen address", "Refuse wrong settings, with every reason"):
        section = output.split(f"TASK [enclave.llm.ingress : {task}", 1)
        assert len(section) == 2, f"{task!r} did not run\n{output[-4000:]}"
        assert section[1].split("TASK [", 1)[0].count(f"ok: [{target.name}]") == 1, output[-4000:]
    assert before == target.state_digest()
