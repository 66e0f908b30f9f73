"""Bad settings for podman_rootless and nvidia_gpu against a real host: each
fails with one clear message and leaves the host exactly as it was (the state
digest covers /etc, /usr/local, /opt and the package list, so a created
account, an edited /etc/subuid or an installed package would show).

The host is the integration suite's lab target (conftest.py), provisioned by
nothing: the refusals must come before the first change.
"""

from __future__ import annotations

import json
import re

import pytest
from lab_host import podman

DIGEST = "sha256:" + "0" * 64
REGISTRY = "198.51.100.10:5000"

# (id, playbook, extra vars, fragments the failure must contain, /etc/subuid line added first)
CASES = [
    (
        "registry_plain_http_in_production",
        "podman.yml",
        {"enclave_profile": "production"},
        ["must be served over https"],
        None,
    ),
    (
        "registry_wildcard",
        "podman.yml",
        {"podman_rootless_registry": "*"},
        ["is not one registry", "never a wildcard"],
        None,
    ),
    (
        "registry_public",
        "podman.yml",
        {"podman_rootless_registry": "quay.io"},
        ["is a public registry that the role blocks"],
        None,
    ),
    (
        "signed_without_keys",
        "podman.yml",
        {"podman_rootless_signing_keys": []},
        ["podman_rootless_signing_keys is empty"],
        None,
    ),
    (
        "signing_key_missing",
        "podman.yml",
        {"podman_rootless_signing_keys": ["/nonexistent/signing.gpg"]},
        ["missing on the controller: /nonexistent/signing.gpg"],
        None,
    ),
    (
        "image_not_pinned_with_digest_trust",
        "podman.yml",
        {"podman_rootless_trust": "digest", "podman_rootless_images": [f"{REGISTRY}/enclave/workload:1"]},
        ["is not pinned by digest"],
        None,
    ),
    (
        "image_short_name",
        "podman.yml",
        {"podman_rootless_images": [f"workload@{DIGEST}"]},
        ["is not a full name"],
        None,
    ),
    (
        "subuid_range_overlaps_another_user",
        "podman.yml",
        {},
        ["/etc/subuid line 2: backup-svc owns 999999000-1000000999", "choose another podman_rootless_subid_start"],
        "backup-svc:999999000:2000",
    ),
    (
        "gpus_expected_but_none_on_the_bus",
        "gpu.yml",
        {"nvidia_gpu_expected_count": 2},
        ["nvidia_gpu_expected_count is 2 but the PCI bus shows 0 NVIDIA GPU(s)", "Nothing was changed"],
        None,
    ),
    (
        "driver_version_not_exact",
        "gpu.yml",
        {"nvidia_gpu_driver_version": "580.105"},
        ["nvidia_gpu_driver_version '580.105' is not an exact driver version"],
        None,
    ),
    (
        "driver_version_off_branch",
        "gpu.yml",
        {"nvidia_gpu_driver_branch": "570"},
        ["is on branch 580, not on nvidia_gpu_driver_branch 570"],
        None,
    ),
    (
        "fabric_manager_differs_from_driver",
        "gpu.yml",
        {"nvidia_gpu_fabric_manager_version": "580.95.05"},
        ["fabric manager 580.95.05 does not equal the driver 580.105.08"],
        None,
    ),
    (
        "container_toolkit_too_old",
        "gpu.yml",
        {"nvidia_gpu_container_toolkit_version": "1.17.8"},
        ["nvidia_gpu_container_toolkit_version 1.17.8 is older than 1.18"],
        None,
    ),
]


def squash(text):
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("playbook", "extra", "fragments", "subuid_line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_setting_fails_with_a_clear_message_and_changes_nothing(target, playbook, extra, fragments, subuid_line):
    if subuid_line:
        podman("exec", target.name, "cp", "-p", "/etc/subuid", "/etc/subuid.enclave-test")
        podman("exec", target.name, "sh", "-c", f"echo {subuid_line} >> /etc/subuid")
    try:
        before = target.state_digest()
        result = target.run_playbook(playbook, "-e", json.dumps(extra))
        after = target.state_digest()
    finally:
        if subuid_line:
            podman("exec", target.name, "mv", "/etc/subuid.enclave-test", "/etc/subuid")
    output = result.stdout + result.stderr
    described = f"$ {result.command}\nrc={result.returncode}\n{output[-4000:]}"
    assert result.returncode != 0, described
    assert output.count("fatal: [") == 1, described
    assert len(re.findall(r"failed=[1-9]", result.stdout)) == 1, described
    for fragment in fragments:
        assert squash(fragment) in squash(output), f"missing {fragment!r}\n{described}"
    assert before == after, f"the host changed\n{described}"
