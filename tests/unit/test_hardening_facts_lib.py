"""module_utils/hardening/facts.py: the parsers on output recorded from the lab
host and the lab VM (tests/unit/fixtures/hardening/), and the checks that
refuse bad settings before the host changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.hardening import facts as lib

FIXTURES = Path(__file__).parent / "fixtures" / "hardening"


def fixture(name):
    return (FIXTURES / name).read_text()


def test_sysctl_values_keep_their_inner_spaces_squashed():
    values = lib.parse_sysctl(fixture("sysctl.txt"))
    assert values["net.ipv4.ip_forward"] == "0"
    assert values["kernel.kptr_restrict"] == "0"
    assert values["net.ipv4.ip_local_port_range"] == "32768 60999"


def test_sysctl_mismatches_compare_as_text_without_whitespace_noise():
    runtime = {"net.ipv4.ip_forward": "0", "kernel.kptr_restrict": "0", "net.ipv4.ip_local_port_range": "32768 60999"}
    wanted = {"net.ipv4.ip_forward": 0, "kernel.kptr_restrict": 2, "net.ipv4.ip_local_port_range": "32768   60999"}
    assert lib.sysctl_mismatches(wanted, runtime) == ["kernel.kptr_restrict"]
    assert lib.sysctl_mismatches({"kernel.missing": 1}, runtime) == ["kernel.missing"]


def test_sysctl_path():
    assert lib.sysctl_path("net.ipv4.conf.all.rp_filter") == "/proc/sys/net/ipv4/conf/all/rp_filter"


def test_mounts_give_the_options_of_the_last_mount():
    mounts = lib.parse_mounts(fixture("mounts.txt"))
    assert mounts["/"]["fstype"] == "overlay"
    assert "nosuid" in mounts["/dev"]["options"]
    stacked = lib.parse_mounts("tmpfs /tmp tmpfs rw 0 0\ntmpfs /tmp tmpfs rw,nodev,noexec 0 0\n")
    assert stacked["/tmp"]["options"] == ["rw", "nodev", "noexec"]


def test_listening_sockets_name_their_processes():
    sockets = lib.parse_ss_listening(fixture("ss.txt"))
    by_port = {(s["address"], s["port"]): s for s in sockets}
    assert by_port[("0.0.0.0", 22)]["processes"] == ["sshd"]
    assert by_port[("203.0.113.200", 443)]["processes"] == ["nginx"]
    assert by_port[("::", 22)]["proto"] == "tcp"


def test_sshd_t_gives_lowercase_keywords_and_lists_for_repeats():
    config = lib.parse_sshd_t(fixture("sshd_T.txt"))
    assert config["permitrootlogin"] == "no"
    assert config["disableforwarding"] == "yes"
    assert config["allowgroups"] == "sudo"
    assert isinstance(config["hostkey"], list)
    assert len(config["hostkey"]) >= 2


def test_unit_file_states():
    states = lib.parse_systemctl_unit_files(fixture("unit_files.txt"))
    assert states["debug-shell.service"] == "masked"
    assert states["ssh.service"] == "enabled"


def test_loaded_modules():
    modules = lib.parse_lsmod(fixture("modules.txt"))
    assert modules == sorted(modules)
    assert "ext4" in modules


def test_setid_files():
    files = lib.parse_find_setid(fixture("setid.txt") + "find: '/proc/1': Permission denied\n")
    assert "/usr/bin/sudo" in files
    assert all(path.startswith("/") for path in files)


def test_ruleset_digest_ignores_handles_and_trailing_space():
    text = fixture("ruleset.nft")
    numbered = "\n".join(
        f"{line} # handle {n}" if "accept" in line else f"{line}  " for n, line in enumerate(text.splitlines())
    )
    assert lib.ruleset_digest(text) == lib.ruleset_digest(numbered)
    assert lib.ruleset_digest(text) != lib.ruleset_digest(text.replace("drop", "accept", 1))


def test_audit_rules_drop_control_lines_and_comments():
    text = "-D\n-b 8192\n--backlog_wait_time 60000\n## comment\n-w /etc/passwd -p wa -k identity\n-e 2\n"
    assert lib.parse_audit_rules(text) == ["-w /etc/passwd -p wa -k identity"]
    assert lib.parse_audit_rules("No rules\n") == []


def test_audit_rule_summary_matches_auditctl_canonical_form():
    on_disk = lib.parse_audit_rules(fixture("audit_rules_disk.txt"))
    loaded = lib.parse_audit_rules(fixture("auditctl_l.txt"))
    assert lib.audit_rule_summary(on_disk) == lib.audit_rule_summary(loaded)
    assert lib.audit_rule_summary(on_disk) != lib.audit_rule_summary(loaded[1:])


SUPPORTED = {kind: fixture(f"ssh_Q_{kind}.txt") for kind in ("cipher", "mac", "kex")}
GOOD = {
    "cipher": ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"],
    "mac": ["hmac-sha2-512-etm@openssh.com"],
    "kex": ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256"],
}


def test_known_ssh_algorithms_pass():
    assert lib.unknown_ssh_algorithms(GOOD, SUPPORTED) == []


@pytest.mark.parametrize(
    ("kind", "name", "variable"),
    [
        ("cipher", "aes256-ocb@openssh.com", "os_hardening_ssh_ciphers"),
        ("mac", "hmac-sha3-512", "os_hardening_ssh_macs"),
        ("kex", "mlkem768x25519-sha256", "os_hardening_ssh_kex"),
    ],
)
def test_an_unknown_ssh_algorithm_is_named_with_its_variable(kind, name, variable):
    problems = lib.unknown_ssh_algorithms({**GOOD, kind: [*GOOD[kind], name]}, SUPPORTED)
    assert len(problems) == 1
    assert problems[0].startswith(f"{variable}: '{name}' unknown to this host's OpenSSH")


def test_an_empty_algorithm_list_is_refused():
    assert lib.unknown_ssh_algorithms({**GOOD, "mac": []}, SUPPORTED) == [
        "os_hardening_ssh_macs is empty: name at least one algorithm"
    ]


def test_lockout_checks():
    assert lib.ssh_lockout_problems("enclave-admin", ["enclave-admin", "sudo"], ["sudo"]) == []
    (problem,) = lib.ssh_lockout_problems("enclave-admin", ["enclave-admin", "sudo"], ["clinicians"])
    assert "does not include any group of enclave-admin (enclave-admin, sudo)" in problem
    assert "os_hardening_ssh_allow_groups" in problem
    assert "PermitRootLogin no" in lib.ssh_lockout_problems("root", ["root"], ["root"])[0]
    assert "is empty" in lib.ssh_lockout_problems("enclave-admin", ["sudo"], [])[0]


def test_unknown_sysctl_keys_are_named():
    (problem,) = lib.unknown_sysctl_keys(["net.ipv4.no_such_key"], "os_hardening_sysctl_network_settings")
    assert problem.startswith("os_hardening_sysctl_network_settings: the kernel on this host has no sysctl")
    assert "/proc/sys/net/ipv4/no_such_key" in problem


def test_podman_modules_cannot_be_blacklisted():
    assert lib.module_problems(["cramfs", "udf"]) == []
    assert [p.split("'")[1] for p in lib.module_problems(["overlay", "fuse", "udf"])] == ["overlay", "fuse"]


def test_auditd_actions():
    good = {
        "disk_full_action": "suspend",
        "disk_error_action": "SUSPEND",
        "space_left_action": "syslog",
        "admin_space_left_action": "single",
        "max_log_file_action": "keep_logs",
    }
    assert lib.auditd_conf_problems(good) == []
    (problem,) = lib.auditd_conf_problems({**good, "disk_full_action": "explode"})
    assert problem.startswith("auditd_conf.disk_full_action is 'explode', which auditd does not accept")
    assert "email" in lib.auditd_conf_problems({**good, "max_log_file_action": "email"})[0]


def test_usbguard_settings_are_checked_against_the_daemons_own():
    good = {
        "ImplicitPolicyTarget": "block",
        "InsertedDevicePolicy": "apply-policy",
        "RestoreControllerDeviceState": False,
        "IPCAllowedGroups": "root",
        "AuditBackend": "LinuxAudit",
    }
    assert lib.usbguard_setting_problems(good) == []
    (unknown,) = lib.usbguard_setting_problems({**good, "InsertedPolicy": "block"})
    assert unknown.startswith("os_hardening_usbguard_settings names 'InsertedPolicy'")
    (bad,) = lib.usbguard_setting_problems({**good, "InsertedDevicePolicy": "allow"})
    assert "InsertedDevicePolicy is 'allow'" in bad
    assert "apply-policy" in bad
    assert lib.usbguard_setting_problems({**good, "IPCAllowedUsers": " "}) == [
        "os_hardening_usbguard_settings.IPCAllowedUsers must be one non-empty line"
    ]
