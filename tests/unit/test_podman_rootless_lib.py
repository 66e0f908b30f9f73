"""module_utils/podman_rootless: subordinate id plans and registry trust checks."""

from __future__ import annotations

import pytest
from ansible_collections.enclave.llm.plugins.module_utils import podman_rootless as lib

START, COUNT = 1000000000, 65536
SUBUID = "enclave-admin:100000:65536\nbackup-svc:165536:65536\n"


def plan(text, start=START, count=COUNT, user="enclave-llm", uid="999"):
    return lib.subid_plan(text, user, uid, start, count)


def test_new_range_is_added_when_the_account_has_none():
    result = plan(SUBUID)
    assert result == {"conflicts": [], "remove": [], "add": "1000000000-1000065535", "changed": True}


def test_the_wanted_range_already_present_changes_nothing():
    result = plan(SUBUID + "enclave-llm:1000000000:65536\n")
    assert result == {"conflicts": [], "remove": [], "add": "", "changed": False}


def test_other_ranges_of_the_account_are_removed_so_exactly_one_remains():
    text = SUBUID + "enclave-llm:300000:65536\nenclave-llm:1000000000:65536\n999:500000:10\n"
    result = plan(text)
    assert result["remove"] == ["300000-365535", "500000-500009", "1000000000-1000065535"]
    assert result["add"] == "1000000000-1000065535"


def test_a_duplicate_of_the_wanted_range_is_removed_and_added_back():
    # usermod --del-subuids removes every copy; the plan adds the range back once.
    text = "enclave-llm:1000000000:65536\nenclave-llm:1000000000:65536\n"
    result = plan(text)
    assert result["remove"] == ["1000000000-1000065535"]
    assert result["add"] == "1000000000-1000065535"


def test_overlap_with_another_users_range_is_a_conflict_naming_both():
    text = "enclave-admin:999990000:20000\n"
    result = plan(text)
    assert len(result["conflicts"]) == 1
    message = result["conflicts"][0]
    assert "enclave-admin owns 999990000-1000009999" in message
    assert "1000000000-1000065535" in message
    assert "podman_rootless_subid_start" in message


@pytest.mark.parametrize(
    ("other_start", "other_count", "overlaps"),
    [(START - 10, 10, False), (START - 10, 11, True), (START + COUNT, 5, False), (START + COUNT - 1, 5, True)],
)
def test_range_edges(other_start, other_count, overlaps):
    result = plan(f"other:{other_start}:{other_count}\n")
    assert bool(result["conflicts"]) is overlaps


@pytest.mark.parametrize(
    ("start", "count", "fragment"),
    [(1000, COUNT, "start at 100000"), (START, 1000, "at least 65536"), (2**32 - 10, COUNT, "ends above")],
)
def test_bad_ranges_are_refused(start, count, fragment):
    result = plan("", start=start, count=count)
    assert any(fragment in c for c in result["conflicts"]), result


def test_malformed_line_is_an_error_with_its_number():
    with pytest.raises(ValueError, match="line 2"):
        lib.parse_subids("a:1:2\nbroken line\n")


def test_comments_and_blank_lines_are_skipped():
    assert [e["owner"] for e in lib.parse_subids("# c\n\nx:100000:65536\n")] == ["x"]


BLOCKED = ["docker.io", "quay.io"]


def problems(
    registry="10.0.0.5:5000",
    insecure=False,
    profile="production",
    trust="signed",
    keys=("k.gpg",),
    lookaside="https://10.0.0.5/sigstore",
):
    return lib.registry_problems(registry, BLOCKED, insecure, profile, trust, list(keys), lookaside)


def test_a_sound_production_setting_has_no_problems():
    assert problems() == []


@pytest.mark.parametrize("registry", ["", "*", "*.example.org", "http://10.0.0.5:5000", "a b"])
def test_registry_must_be_exactly_one_registry(registry):
    assert any("is not one registry" in p for p in problems(registry=registry))


@pytest.mark.parametrize("registry", ["docker.io", "quay.io/library", "QUAY.IO"])
def test_a_public_registry_cannot_be_the_internal_one(registry):
    assert any("public registry" in p for p in problems(registry=registry))


def test_plain_http_registry_is_refused_in_production_only():
    assert any("https" in p for p in problems(insecure=True))
    assert problems(insecure=True, profile="lab") == []


def test_signed_trust_needs_keys_and_a_signature_location():
    found = problems(keys=(), lookaside="sigstore")
    assert any("podman_rootless_signing_keys is empty" in p for p in found)
    assert any("podman_rootless_signature_lookaside" in p for p in found)


def test_digest_trust_needs_no_keys():
    assert problems(trust="digest", keys=(), lookaside="") == []


def test_unknown_trust_mode_is_refused():
    assert any("podman_rootless_trust 'any'" in p for p in problems(trust="any"))


def test_signed_policy_rejects_by_default_and_requires_the_keys():
    document = lib.policy_document("10.0.0.5:5000", "signed", ["/etc/pki/containers/enclave/k.gpg"])
    assert document["default"] == [{"type": "reject"}]
    assert document["transports"] == {
        "docker": {
            "10.0.0.5:5000": [
                {"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/etc/pki/containers/enclave/k.gpg"]}
            ]
        }
    }


def test_digest_policy_accepts_only_the_internal_registry():
    document = lib.policy_document("10.0.0.5:5000", "digest", [])
    assert document == {
        "default": [{"type": "reject"}],
        "transports": {"docker": {"10.0.0.5:5000": [{"type": "insecureAcceptAnything"}]}},
    }


DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("images", "trust", "profile", "fragment"),
    [
        (["busybox"], "signed", "lab", "not a full name"),
        (["enclave/vllm:1"], "signed", "lab", "not a full name"),
        (["10.0.0.5:5000/enclave/vllm:1"], "signed", "production", "not pinned by digest"),
        (["10.0.0.5:5000/enclave/vllm:1"], "digest", "lab", "not pinned by digest"),
        ([f"10.0.0.5:5000/enclave/vllm@sha256:{'a' * 63}"], "digest", "lab", "not pinned by digest"),
    ],
)
def test_images_handed_to_the_account_must_be_full_names_and_pinned_where_needed(images, trust, profile, fragment):
    assert any(fragment in p for p in lib.image_problems(images, trust, profile))


@pytest.mark.parametrize(
    ("images", "trust", "profile"),
    [
        ([f"10.0.0.5:5000/enclave/vllm@{DIGEST}"], "digest", "production"),
        ([f"registry.hospital.example/enclave/vllm@{DIGEST}"], "signed", "production"),
        (["10.0.0.5:5000/enclave/vllm:1"], "signed", "lab"),
        ([], "digest", "production"),
    ],
)
def test_sound_image_lists_pass(images, trust, profile):
    assert lib.image_problems(images, trust, profile) == []


def test_local_handover_scope_accepts_only_that_transport_and_folder():
    document = lib.policy_document("10.0.0.5:5000", "signed", ["/k.gpg"], {"oci-archive": "/srv/enclave-llm/images"})
    assert document["default"] == [{"type": "reject"}]
    assert document["transports"]["oci-archive"] == {"/srv/enclave-llm/images": [{"type": "insecureAcceptAnything"}]}
    assert set(document["transports"]) == {"docker", "oci-archive"}
