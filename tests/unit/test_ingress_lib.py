"""module_utils/ingress: clients, endpoint allowlist, listen address, upstream key."""

from __future__ import annotations

import hashlib

import pytest
from ansible_collections.enclave.llm.plugins.module_utils import ingress as lib

HASH_A = hashlib.sha256(b"a" * 43).hexdigest()
HASH_B = hashlib.sha256(b"b" * 43).hexdigest()


def test_valid_clients_have_no_problems():
    assert lib.client_problems([{"name": "ehr", "key_sha256": HASH_A}, {"name": "triage", "key_sha256": HASH_B}]) == []


@pytest.mark.parametrize(
    ("clients", "fragment"),
    [
        ([], "ingress_clients is empty"),
        ([{"name": "ehr", "key_sha256": HASH_A[:63]}], "got 63 characters"),
        ([{"name": "ehr", "key_sha256": "z" * 64}], "64 lowercase hex digits"),
        ([{"name": "ehr", "key_sha256": HASH_A.upper()}], "64 lowercase hex digits"),
        ([{"name": "ehr", "key_sha256": "sk-plain-api-key"}], "never the key itself"),
        ([{"name": "EHR app", "key_sha256": HASH_A}], "name 'EHR app' must be"),
        ([{"name": "ehr", "key_sha256": HASH_A, "rate": 5}], "exactly the keys name and key_sha256"),
        (
            [{"name": "ehr", "key_sha256": HASH_A}, {"name": "ehr", "key_sha256": HASH_B}],
            "ingress_clients[1]: name 'ehr' is also ingress_clients[0]",
        ),
        (
            [{"name": "ehr", "key_sha256": HASH_A}, {"name": "triage", "key_sha256": HASH_A}],
            "ingress_clients[1] (triage): key_sha256 is also that of ingress_clients[0]",
        ),
    ],
)
def test_bad_clients_are_refused_naming_the_entry(clients, fragment):
    problems = lib.client_problems(clients)
    assert len(problems) == 1
    assert fragment in problems[0]


def test_default_allowlist_is_valid_and_is_every_inference_route():
    assert lib.allowlist_problems(lib.DEFAULT_ALLOWED) == []
    assert lib.DEFAULT_ALLOWED == ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health"]


@pytest.mark.parametrize(
    "route", ["/tokenize", "/metrics", "/pooling", "/score", "/v1/embeddings", "/invocations", "/v1/responses"]
)
def test_non_inference_routes_are_refused_with_the_reason(route):
    (problem,) = lib.allowlist_problems(["/v1/chat/completions", route])
    assert f"{route} is not an inference route" in problem
    assert lib.REFUSED_ROUTES[route] in problem


@pytest.mark.parametrize("route", ["/v1/chat/completions/", "/", "/v1/*", "/v1/chat/completions?x=1", "/admin"])
def test_unknown_routes_are_refused(route):
    (problem,) = lib.allowlist_problems([route])
    assert "is not a route the ingress knows" in problem


def test_duplicate_routes_and_empty_allowlist_are_refused():
    assert "listed more than once" in lib.allowlist_problems(["/health", "/health"])[0]
    assert "is empty" in lib.allowlist_problems([])[0]


def test_route_methods_give_post_for_generation_and_get_for_reads():
    assert lib.route_methods(["/v1/chat/completions", "/v1/models"]) == {
        "/v1/chat/completions": "POST",
        "/v1/models": "GET|HEAD",
    }


HOST = ["198.51.100.20", "203.0.113.20", "127.0.0.1", "fe80::1%eth0"]


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("203.0.113.20", None),
        ("0.0.0.0", "would listen on every interface"),
        ("::", "would listen on every interface"),
        ("127.0.0.1", "is loopback"),
        ("203.0.113.21", "is not an address of this host (it has 127.0.0.1, 198.51.100.20, 203.0.113.20, fe80::1)"),
        ("llm.example", "is not an IP address"),
        ("", "is not an IP address"),
    ],
)
def test_listen_address_must_be_one_of_the_hosts_addresses(address, fragment):
    problems = lib.listen_address_problems(address, HOST)
    if fragment is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert fragment in problems[0]


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("k" * 32, None),
        ("", "vllm_api_key is not set"),
        ("k" * 31, "vllm_api_key is 31 bytes; use at least 32"),
        ("k" * 40 + " x", "contains whitespace"),
        ("k" * 40 + '"', "contains whitespace"),
    ],
)
def test_upstream_key_is_long_and_safe_to_place_in_a_header(key, fragment):
    problems = lib.api_key_problems(key)
    if fragment is None:
        assert problems == []
    else:
        assert fragment in problems[0]


@pytest.mark.parametrize(
    ("server_name", "rate", "size", "fragment"),
    [
        ("llm.lab.enclave.invalid", "5r/s", "4m", None),
        ("203.0.113.20", "120r/m", "512k", None),
        ("llm.example; return 200", "5r/s", "4m", "ingress_server_name 'llm.example; return 200' is neither"),
        ("llm.example", "5/s", "4m", "ingress_rate_limit '5/s' is not an nginx rate"),
        ("llm.example", "5r/s", "4 MB", "ingress_client_max_body_size '4 MB' is not an nginx size"),
    ],
)
def test_values_written_into_nginx_config_are_checked(server_name, rate, size, fragment):
    problems = lib.nginx_value_problems(server_name, rate, size)
    if fragment is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert fragment in problems[0]
