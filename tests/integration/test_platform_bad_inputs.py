"""Bad settings for podman_rootless and nvidia_gpu against a real host: each
fails with one clear message and leaves the host exactly as it was (the state
digest covers /etc, /usr/local, /opt and the package list, so a created
account, an edited /etc/subuid or an installed package would show).

The host is the integration suite's lab target (conftest.py), provisioned by
nothing: the refusals must come before the first change.
"""

from __future__ import annotations

import pytest
from lab_host import podman

pytestmark = pytest.mark.lab

DIGEST = "sha256:" + "0" * 64
REGISTRY = "198.51.100.10:5000"

# Eight H100s on a PCI bus made of files, for the GPU role's sysfs root: the
# role then goes past its no-GPU mode to the version checks. Those read apt's
# view of the mirror, so the host's sources point at the lab mirror for the
# case, as offline_mirrors leaves them (this host is otherwise unprovisioned).
FAKE_SYSFS = "/tmp/enclave-fake-sys"
EIGHT_GPUS_ON_A_MIRRORED_HOST = (
    f"for n in 1 2 3 4 5 6 7 8; do d={FAKE_SYSFS}/bus/pci/devices/0000:$((n + 10)):00.0; mkdir -p $d; "
    "echo 0x10de > $d/vendor; echo 0x030200 > $d/class; echo 0x2330 > $d/device; done; "
    "cp -a /etc/apt /tmp/apt.enclave-test && rm -f /etc/apt/sources.list.d/* && "
    "echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://198.51.100.10:3142/debian bookworm main' > /etc/apt/sources.list"
)
RESTORE = f"rm -rf {FAKE_SYSFS} /etc/apt && mv /tmp/apt.enclave-test /etc/apt"
SUBUID_ENTRY = "cp -p /etc/subuid /tmp/subuid.enclave-test && echo backup-svc:999999000:2000 >> /etc/subuid"


def case(name, playbook, extra, fragments, setup=None, cleanup=None):
    return pytest.param(playbook, extra, fragments, setup, cleanup, id=name)


CASES = [
    case(
        "registry_plain_http_in_production",
        "podman.yml",
        {"enclave_profile": "production"},
        ["must be served over https"],
    ),
    case(
        "registry_wildcard",
        "podman.yml",
        {"podman_rootless_registry": "*"},
        ["is not one registry", "never a wildcard"],
    ),
    case(
        "registry_public",
        "podman.yml",
        {"podman_rootless_registry": "quay.io"},
        ["is a public registry that the role blocks"],
    ),
    case(
        "signed_without_keys",
        "podman.yml",
        {"podman_rootless_signing_keys": []},
        ["podman_rootless_signing_keys is empty"],
    ),
    case(
        "signing_key_missing",
        "podman.yml",
        {"podman_rootless_signing_keys": ["/nonexistent/signing.gpg"]},
        ["missing on the controller: /nonexistent/signing.gpg"],
    ),
    case(
        "image_not_pinned_with_digest_trust",
        "podman.yml",
        {"podman_rootless_trust": "digest", "podman_rootless_images": [f"{REGISTRY}/enclave/workload:1"]},
        ["is not pinned by digest"],
    ),
    case("image_short_name", "podman.yml", {"podman_rootless_images": [f"workload@{DIGEST}"]}, ["is not a full name"]),
    case(
        "subuid_range_overlaps_another_user",
        "podman.yml",
        {},
        ["/etc/subuid line 2: backup-svc owns 999999000-1000000999", "choose another podman_rootless_subid_start"],
        setup=SUBUID_ENTRY,
        cleanup="mv /tmp/subuid.enclave-test /etc/subuid",
    ),
    case(
        "gpus_expected_but_none_on_the_bus",
        "gpu.yml",
        {"nvidia_gpu_expected_count": 2},
        ["nvidia_gpu_expected_count is 2 but the PCI bus shows 0 NVIDIA GPU(s)", "Nothing was changed"],
    ),
    case(
        "driver_version_not_exact",
        "gpu.yml",
        {"nvidia_gpu_driver_version": "580.105"},
        ["nvidia_gpu_driver_version '580.105' is not an exact driver version"],
    ),
    case(
        "driver_version_off_branch",
        "gpu.yml",
        {"nvidia_gpu_driver_branch": "570"},
        ["is on branch 580, not on nvidia_gpu_driver_branch 570"],
    ),
    case(
        "fabric_manager_differs_from_driver",
        "gpu.yml",
        {"nvidia_gpu_fabric_manager_version": "580.95.05"},
        ["fabric manager 580.95.05 does not equal the driver 580.105.08"],
    ),
    case(
        "container_toolkit_too_old",
        "gpu.yml",
        {"nvidia_gpu_container_toolkit_version": "1.17.8"},
        ["nvidia_gpu_container_toolkit_version 1.17.8 is older than 1.18"],
    ),
    case(
        "driver_not_in_the_mirror",
        "gpu.yml",
        {
            "nvidia_gpu_expected_count": 8,
            "__nvidia_gpu_sysfs_root": FAKE_SYSFS,
            "__nvidia_gpu_nvidia_smi": "/nonexistent/nvidia-smi",
        },
        [
            "nvidia-driver-cuda, nvidia-kernel-open-dkms, nvidia-persistenced",
            "not in the configured package repositories at all",
        ],
        setup=EIGHT_GPUS_ON_A_MIRRORED_HOST,
        cleanup=RESTORE,
    ),
]


@pytest.mark.parametrize(("playbook", "extra", "fragments", "setup", "cleanup"), CASES)
def test_bad_setting_fails_with_a_clear_message_and_changes_nothing(target, playbook, extra, fragments, setup, cleanup):
    if setup:
        podman("exec", target.name, "sh", "-c", setup)
    try:
        target.run_refused(playbook, extra, fragments)
    finally:
        if cleanup:
            podman("exec", target.name, "sh", "-c", cleanup)
