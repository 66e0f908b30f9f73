"""module_utils/ingress.certificate_report against certificates made here with cryptography."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from ansible_collections.enclave.llm.plugins.module_utils import ingress as lib
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def cert_pem(key, sans=("DNS:llm.lab.enclave.invalid", "IP:203.0.113.20"), start=NOW - DAY, end=NOW + 365 * DAY):
    names = [x509.IPAddress(ipaddress.ip_address(v[3:])) if v.startswith("IP:") else x509.DNSName(v[4:]) for v in sans]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def report(cert, key, name="llm.lab.enclave.invalid", warn_days=30):
    return lib.certificate_report(cert, key_pem(key), name, warn_days, now=NOW)


def test_matching_current_certificate_has_no_problems():
    key = new_key()
    result = report(cert_pem(key), key)
    assert result["problems"] == []
    assert result["warnings"] == []
    assert result["not_after"].startswith("2027-06-01")


@pytest.mark.parametrize("name", ["llm.lab.enclave.invalid", "203.0.113.20", "LLM.lab.enclave.invalid."])
def test_san_covers_dns_names_and_ip_addresses(name):
    key = new_key()
    assert report(cert_pem(key), key, name)["problems"] == []


def test_wildcard_covers_one_label_only():
    key = new_key()
    cert = cert_pem(key, sans=("DNS:*.lab.enclave.invalid",))
    assert report(cert, key, "llm.lab.enclave.invalid")["problems"] == []
    assert "does not cover" in report(cert, key, "a.llm.lab.enclave.invalid")["problems"][0]


def test_certificate_of_another_key_is_refused():
    cert = cert_pem(new_key())
    (problem,) = report(cert, new_key())["problems"]
    assert "does not match the private key ingress_tls_key" in problem


def test_a_chain_with_the_intermediate_first_is_refused_as_out_of_order():
    key = new_key()
    intermediate = cert_pem(new_key(), sans=())
    (problem,) = report(intermediate + cert_pem(key), key)["problems"]
    assert "the chain is in the wrong order" in problem
    assert "is number 2 of 2; put it first" in problem


def test_expired_certificate_is_refused():
    key = new_key()
    (problem,) = report(cert_pem(key, start=NOW - 400 * DAY, end=NOW - DAY), key)["problems"]
    assert "the certificate expired on 2026-05-31" in problem


def test_certificate_not_yet_valid_is_refused():
    key = new_key()
    (problem,) = report(cert_pem(key, start=NOW + DAY), key)["problems"]
    assert "is not valid before" in problem


def test_certificate_ending_soon_is_a_warning_only():
    key = new_key()
    result = report(cert_pem(key, end=NOW + 10 * DAY), key, warn_days=30)
    assert result["problems"] == []
    assert "expires on 2026-06-11" in result["warnings"][0]


def test_san_not_covering_the_server_name_is_refused():
    key = new_key()
    (problem,) = report(cert_pem(key, sans=("DNS:other.example",)), key)["problems"]
    assert "(DNS:other.example) does not cover ingress_server_name llm.lab.enclave.invalid" in problem


def test_garbage_is_refused_not_raised():
    key = new_key()
    assert "not a PEM certificate" in lib.certificate_report("junk", key_pem(key), "x", now=NOW)["problems"][0]
    assert (
        "not an unencrypted PEM private key"
        in lib.certificate_report(cert_pem(key), "junk", "x", now=NOW)["problems"][0]
    )
