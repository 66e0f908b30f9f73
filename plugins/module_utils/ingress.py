# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Pure logic of the ingress role: clients, endpoint allowlist, listen address, certificate.

Everything is decided on the controller from the inventory and the host's facts,
so a bad setting is refused with every reason before the host is changed. Each
function returns a list of messages; an empty list means "fine".
"""

from __future__ import annotations

import datetime
import ipaddress
import re

# Client names end up in nginx's configuration and in every access log line.
_CLIENT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# vLLM's inference routes the ingress may expose, and the HTTP methods each takes.
INFERENCE_ROUTES = {
    "/v1/chat/completions": ("POST",),
    "/v1/completions": ("POST",),
    "/v1/models": ("GET", "HEAD"),
    "/health": ("GET", "HEAD"),
}

# Routes vLLM serves that the ingress never exposes, and why; anything that is
# neither here nor in INFERENCE_ROUTES is an unknown route and refused as well.
REFUSED_ROUTES = {
    "/tokenize": "reveals the tokenizer and model internals, not inference",
    "/detokenize": "reveals the tokenizer and model internals, not inference",
    "/pooling": "returns hidden states, not generated text",
    "/score": "a scoring model's route, not chat inference",
    "/rerank": "a scoring model's route, not chat inference",
    "/v1/rerank": "a scoring model's route, not chat inference",
    "/v2/rerank": "a scoring model's route, not chat inference",
    "/v1/score": "a scoring model's route, not chat inference",
    "/classify": "a classification model's route, not chat inference",
    "/v1/embeddings": "embeddings of a generative model leak its hidden states and are not a clinical use",
    "/v1/responses": "keeps conversations in the server's memory (PHI retained beyond the request)",
    "/v1/audio/transcriptions": "audio input is not part of the service",
    "/v1/audio/translations": "audio input is not part of the service",
    "/invocations": "a SageMaker alias that dispatches to every route, allowlisted or not",
    "/metrics": "operational data for the monitoring network, not for clients",
    "/version": "tells an attacker the exact server version",
    "/ping": "a SageMaker health alias; use /health",
    "/load": "operational data, not inference",
    "/docs": "interactive API documentation lists every route",
    "/openapi.json": "the API description lists every route",
    "/redoc": "interactive API documentation lists every route",
    "/sleep": "an administrative route that stops serving",
    "/wake_up": "an administrative route",
    "/is_sleeping": "an administrative route",
    "/reset_prefix_cache": "an administrative route",
    "/reset_mm_cache": "an administrative route",
    "/scale_elastic_ep": "an administrative route that reshapes the deployment",
    "/is_scaling_elastic_ep": "an administrative route",
    "/collective_rpc": "an administrative route that runs code in the workers",
    "/v1/load_lora_adapter": "loads code and weights into the server",
    "/v1/unload_lora_adapter": "an administrative route",
    "/start_profile": "an administrative route that writes traces to disk",
    "/stop_profile": "an administrative route",
}

DEFAULT_ALLOWED = list(INFERENCE_ROUTES)
# The same floor as the vLLM role: a key an attacker could guess offline is no key.
MIN_API_KEY_BYTES = 32
_UNSPECIFIED = (ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::"))


def client_problems(clients):
    """Problems with ``ingress_clients``: a list of {name, key_sha256} with unique names and hashes."""
    if not isinstance(clients, list) or not clients:
        return ["ingress_clients is empty: add at least one {name, key_sha256} (docs/ingress.md shows how)"]
    problems, names, hashes = [], {}, {}
    for index, client in enumerate(clients):
        where = f"ingress_clients[{index}]"
        if not isinstance(client, dict) or set(client) - {"name", "key_sha256"}:
            problems.append(f"{where}: give exactly the keys name and key_sha256, nothing else")
            continue
        name, digest = str(client.get("name", "")), str(client.get("key_sha256", ""))
        if not _CLIENT_NAME_RE.match(name):
            problems.append(
                f"{where}: name {name!r} must be 1-63 lowercase letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        elif name in names:
            problems.append(f"{where}: name {name!r} is also ingress_clients[{names[name]}]; names must be unique")
        else:
            names[name] = index
        if not _SHA256_RE.match(digest):
            problems.append(
                f"{where} ({name}): key_sha256 must be the 64 lowercase hex digits of the key's SHA-256, "
                f"got {len(digest)} characters; never the key itself "
                '(printf %s "$KEY" | sha256sum)'
            )
        elif digest in hashes:
            problems.append(
                f"{where} ({name}): key_sha256 is also that of ingress_clients[{hashes[digest]}]; "
                "give every application its own key"
            )
        else:
            hashes[digest] = index
    return problems


def allowlist_problems(routes):
    """Problems with ``ingress_allowed_endpoints``: only known inference routes, each once."""
    if not isinstance(routes, list) or not routes:
        return ["ingress_allowed_endpoints is empty: list the inference routes to serve, e.g. /v1/chat/completions"]
    problems = []
    for route in routes:
        if route in INFERENCE_ROUTES:
            continue
        if route in REFUSED_ROUTES:
            problems.append(
                f"ingress_allowed_endpoints: {route} is not an inference route ({REFUSED_ROUTES[route]}); remove it"
            )
        else:
            problems.append(
                f"ingress_allowed_endpoints: {route!r} is not a route the ingress knows; "
                f"choose from {', '.join(INFERENCE_ROUTES)}"
            )
    duplicates = sorted({r for r in routes if routes.count(r) > 1})
    if duplicates:
        problems.append(f"ingress_allowed_endpoints: {', '.join(map(str, duplicates))} listed more than once")
    return problems


def route_methods(routes):
    """{route: "POST|..."} for the allowlisted routes, as a regex alternation for nginx."""
    return {route: "|".join(INFERENCE_ROUTES[route]) for route in routes if route in INFERENCE_ROUTES}


def listen_address_problems(address, host_addresses):
    """Problems with ``ingress_listen_address``: one concrete address the host has."""
    try:
        parsed = ipaddress.ip_address(str(address or "").strip())
    except ValueError:
        return [f"ingress_listen_address {address!r} is not an IP address; give the clinical interface's address"]
    if parsed in _UNSPECIFIED:
        return [
            f"ingress_listen_address {address} would listen on every interface, the admin network included; "
            "give the clinical interface's address"
        ]
    if parsed.is_loopback:
        return [f"ingress_listen_address {address} is loopback: no clinical client could connect"]
    known = set()
    for item in host_addresses or []:
        try:
            known.add(ipaddress.ip_address(str(item).split("%", maxsplit=1)[0]))
        except ValueError:
            continue
    if parsed not in known:
        return [
            f"ingress_listen_address {address} is not an address of this host "
            f"(it has {', '.join(sorted(map(str, known))) or 'none'}); give the clinical interface's address"
        ]
    return []


_SERVER_NAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_RATE_RE = re.compile(r"^[1-9][0-9]{0,5}r/[sm]$")
_SIZE_RE = re.compile(r"^[1-9][0-9]{0,5}[km]?$")


def nginx_value_problems(server_name, rate, size):
    """Problems with the settings written into nginx's configuration as they are."""
    problems = []
    try:
        ipaddress.ip_address(str(server_name))
    except ValueError:
        if not _SERVER_NAME_RE.match(str(server_name or "")):
            problems.append(f"ingress_server_name {server_name!r} is neither a DNS name nor an IP address")
    if not _RATE_RE.match(str(rate or "")):
        problems.append(f"ingress_rate_limit {rate!r} is not an nginx rate such as 5r/s or 120r/m")
    if not _SIZE_RE.match(str(size or "")):
        problems.append(f"ingress_client_max_body_size {size!r} is not an nginx size such as 4m or 512k")
    return problems


def api_key_problems(key, variable="vllm_api_key"):
    """Problems with the key the ingress sends to vLLM."""
    if not key:
        return [f"{variable} is not set: the ingress must present vLLM's API key (see docs/ingress.md)"]
    length = len(str(key).encode())
    if length < MIN_API_KEY_BYTES:
        return [
            f"{variable} is {length} bytes; use at least {MIN_API_KEY_BYTES} random bytes (openssl rand -base64 48)"
        ]
    if any(c.isspace() or c in "\"'\\;{}$" for c in str(key)):
        return [f"{variable} contains whitespace or one of \"'\\;{{}}$; use a base64 or hex key"]
    return []


def certificate_report(cert_pem, key_pem, server_name, warn_days=30, now=None, variable="ingress_tls_certificate"):
    """Check the server certificate chain and key; returns {"problems": [...], "warnings": [...], "not_after": iso}.

    The first certificate in ``cert_pem`` is the server's; the key must match it,
    it must be valid now, and its subjectAltName must cover ``server_name`` (a
    DNS name or an IP address). A certificate ending within ``warn_days`` is a
    warning, not a refusal.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    now = now or datetime.datetime.now(datetime.UTC)
    report = {"problems": [], "warnings": [], "not_after": ""}
    try:
        chain = x509.load_pem_x509_certificates(_bytes(cert_pem))
    except ValueError as exc:
        report["problems"].append(f"{variable}: not a PEM certificate ({exc})")
        return report
    cert = chain[0]
    try:
        key = serialization.load_pem_private_key(_bytes(key_pem), password=None)
    except (ValueError, TypeError) as exc:
        key_variable = variable.replace("certificate", "key")
        report["problems"].append(f"{key_variable}: not an unencrypted PEM private key ({exc})")
        key = None
    if key is not None and _public_bytes(key.public_key()) != _public_bytes(cert.public_key()):
        position = next(
            (
                n
                for n, other in enumerate(chain[1:], 2)
                if _public_bytes(other.public_key()) == _public_bytes(key.public_key())
            ),
            None,
        )
        if position is not None:
            # The key's certificate is in the chain, just not first: the other
            # checks would judge an intermediate, so say only this.
            report["problems"].append(
                f"{variable}: the chain is in the wrong order: the server's certificate (the one "
                f"{variable.replace('certificate', 'key')} belongs to) is number {position} of {len(chain)}; "
                "put it first, then the intermediates from the one that issued it up to the root's"
            )
            return report
        report["problems"].append(
            f"{variable}: the certificate does not match the private key "
            f"{variable.replace('certificate', 'key')}; install the key the certificate was issued for"
        )
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    report["not_after"] = not_after.isoformat()
    if now < not_before:
        report["problems"].append(f"{variable}: the certificate is not valid before {not_before.isoformat()}")
    if now >= not_after:
        report["problems"].append(f"{variable}: the certificate expired on {not_after.isoformat()}; renew it")
    elif now + datetime.timedelta(days=int(warn_days)) >= not_after:
        days = (not_after - now).days
        report["warnings"].append(f"{variable}: the certificate expires on {not_after.isoformat()} ({days} days)")
    if not _san_covers(cert, server_name):
        report["problems"].append(
            f"{variable}: the certificate's subjectAltName ({', '.join(_san_names(cert)) or 'none'}) "
            f"does not cover ingress_server_name {server_name}"
        )
    return report


def _bytes(text):
    return text.encode() if isinstance(text, str) else bytes(text or b"")


def _public_bytes(public_key):
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _san_entries(cert):
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)


def _san_names(cert):
    dns, ips = _san_entries(cert)
    return [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]


def _san_covers(cert, server_name):
    dns, ips = _san_entries(cert)
    try:
        return ipaddress.ip_address(str(server_name)) in ips
    except ValueError:
        pass
    name = str(server_name).lower().rstrip(".")
    for pattern in (d.lower().rstrip(".") for d in dns):
        if pattern == name:
            return True
        # A wildcard covers exactly one leftmost label (RFC 6125 6.4.3).
        if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
            return True
    return False
