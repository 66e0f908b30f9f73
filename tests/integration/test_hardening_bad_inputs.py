"""Bad settings for os_hardening and auditd against a real host: each fails
with one clear message naming the variable, and leaves the host exactly as it
was (the state digest covers /etc, /usr/local, /opt and the package list, so
an installed package or a written sshd drop-in would show).

The host is a throwaway container from the lab's host image, provisioned by
nothing: the refusals must come before the first change.
"""

from __future__ import annotations

import re

import pytest
from lab_host import lab_target

pytestmark = pytest.mark.lab

TARGET_NAME = "enclave-test-hardening"
TARGET_ADDR = "198.51.100.38"
TARGET_LABEL = "io.enclave.test=hardening"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    with lab_target(tmp_path_factory, TARGET_NAME, TARGET_ADDR, TARGET_LABEL) as host:
        yield host


CASES = [
    pytest.param(
        {"os_hardening_ssh_allow_groups": ["clinicians"]},
        [
            "os_hardening_ssh_allow_groups (clinicians) does not include any group of enclave-admin",
            "this run would lock it out",
        ],
        id="allow_groups_lock_out_the_admin",
    ),
    pytest.param(
        {"os_hardening_sysctl_network_settings": {"net.ipv4.ip_forward": 0, "net.ipv4.no_such_key": 1}},
        [
            "os_hardening_sysctl_network_settings: the kernel on this host has no sysctl 'net.ipv4.no_such_key'",
            "/proc/sys/net/ipv4/no_such_key does not exist",
        ],
        id="sysctl_key_unknown",
    ),
    pytest.param(
        {"os_hardening_ssh_ciphers": ["chacha20-poly1305@openssh.com", "aes256-ocb@openssh.com"]},
        ["os_hardening_ssh_ciphers: 'aes256-ocb@openssh.com' unknown to this host's OpenSSH", "ssh -Q cipher"],
        id="ssh_cipher_unknown",
    ),
    pytest.param(
        {"os_hardening_ssh_kex": []},
        ["os_hardening_ssh_kex is empty"],
        id="ssh_kex_empty",
    ),
    pytest.param(
        {
            "auditd_enabled": True,
            "auditd_conf": {
                "max_log_file": 32,
                "max_log_file_action": "keep_logs",
                "num_logs": 10,
                "space_left": "25%",
                "space_left_action": "syslog",
                "admin_space_left": "10%",
                "admin_space_left_action": "suspend",
                "disk_full_action": "reboot",
                "disk_error_action": "suspend",
            },
        },
        ["auditd_conf.disk_full_action is 'reboot', which auditd does not accept", "suspend, single, halt"],
        id="auditd_disk_action_invalid",
    ),
    pytest.param(
        {"os_hardening_modules": True, "os_hardening_modules_blacklist": ["cramfs", "overlay"]},
        ["os_hardening_modules_blacklist names 'overlay', which rootless Podman needs"],
        id="module_blacklist_breaks_podman",
    ),
]


@pytest.mark.parametrize(("extra", "fragments"), CASES)
def test_bad_setting_fails_with_a_clear_message_and_changes_nothing(target, extra, fragments):
    output = target.run_refused("hardening.yml", extra, fragments)
    assert "Nothing was changed" in output, output[-4000:]


def test_good_settings_pass_the_validation(target):
    """The control: the same host and playbook get past validation with the lab's settings."""
    result = target.run_playbook("hardening.yml", "--check", "--tags", "always")
    assert "Nothing was changed" not in result.stdout + result.stderr, result.stdout[-3000:]
    assert re.search(r"failed=0", result.stdout), result.stdout[-3000:]
