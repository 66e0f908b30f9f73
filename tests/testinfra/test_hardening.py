"""os_hardening and auditd: one test per control ID of docs/controls.yml, each
checking the live state of the host (a value in force, a refusal seen), not a
file on disk alone.

An area switched off in the inventory that provisioned the host is skipped
with that reason (the container lab switches the kernel-wide areas and auditd
off; the VM lab proves them):

    pytest tests/testinfra/test_hardening.py --hosts=podman://enclave-lab-host
    pytest tests/testinfra/test_hardening.py --hosts=ssh://enclave-lab-vm --sudo \
        --ssh-config=.lab/vm/ssh_config --enclave-inventory=inventories/lab_vm

test_ENC_AU_004_audit_trail performs each audited action and finds it in the
audit log by its key (ausearch -k); its probes are removed afterwards. Tests
that change the host, as that one does, are marked mutates_host; each control
also has a read-only test, so an audit (-m "not mutates_host") covers them all.
"""

from __future__ import annotations

import importlib.util
import shlex
import time
import uuid
from types import SimpleNamespace

import pytest
import yaml
from enclave_host import REPO

ROLE_DEFAULTS = {
    role: yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    for role in ("os_hardening", "auditd")
}
_spec = importlib.util.spec_from_file_location("hardening_lib", REPO / "plugins/module_utils/hardening/facts.py")
lib = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lib)
_spec = importlib.util.spec_from_file_location(
    "audit_rules_lib", REPO / "plugins/module_utils/hardening/audit_rules.py"
)
audit_rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit_rules)


@pytest.fixture
def settings(enclave_vars) -> dict:
    """The role defaults overlaid with the inventory: what the host should look like."""
    merged = {**ROLE_DEFAULTS["os_hardening"], **ROLE_DEFAULTS["auditd"]}
    merged.update({key: value for key, value in enclave_vars.items() if key in merged})
    return merged


def require(settings, *switches):
    for switch in switches:
        if not settings[switch]:
            pytest.skip(f"{switch} is false in the inventory (an area this host does not hold)")


def proc_sys(host, key):
    return " ".join(host.file(lib.sysctl_path(key)).content_string.split())


@pytest.fixture
def sshd(host) -> dict:
    out = host.check_output("sshd -T")
    return lib.parse_sshd_t(out)


def ssh_attempt(host, *options):
    """An SSH login from the host to its own sshd without any key: the refusal shows what sshd offers.

    The refused ssh exits 255, which testinfra's own SSH backend takes for a lost
    connection; the exit status is therefore carried in the output instead."""
    attempt = host.run(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o IdentitiesOnly=yes -o IdentityFile=/dev/null -o ConnectTimeout=5 "
        + " ".join(shlex.quote(option) for option in options)
        + ' 127.0.0.1 true; echo "ssh-exit=$?"'
    )
    status = attempt.stdout.rstrip().rsplit("ssh-exit=", 1)
    assert attempt.rc == 0, attempt
    assert len(status) == 2, attempt
    return SimpleNamespace(rc=int(status[1]), stdout=status[0], stderr=attempt.stderr)


# ENC-OS-001 / ENC-OS-002: the values in force, and persisted.
@pytest.mark.parametrize(
    ("switch", "settings_key", "path"),
    [
        (
            "os_hardening_sysctl_network",
            "os_hardening_sysctl_network_settings",
            "/etc/sysctl.d/99-zz-enclave-network.conf",
        ),
    ],
)
def test_ENC_OS_001_network_sysctls(host, settings, switch, settings_key, path):
    require(settings, switch)
    wrong = {
        key: proc_sys(host, key) for key, value in settings[settings_key].items() if proc_sys(host, key) != str(value)
    }
    assert wrong == {}
    assert host.file(path).contains("net.ipv4.ip_forward = 0")


def test_ENC_OS_002_kernel_sysctls(host, settings):
    require(settings, "os_hardening_sysctl_kernel")
    wanted = settings["os_hardening_sysctl_kernel_settings"]
    wrong = {key: proc_sys(host, key) for key, value in wanted.items() if proc_sys(host, key) != str(value)}
    assert wrong == {}
    assert host.file("/etc/sysctl.d/99-zz-enclave-kernel.conf").contains("kernel.yama.ptrace_scope")


def modprobe_refuses(host, name):
    dry = host.run("modprobe --dry-run --verbose %s", name)
    return "/bin/false" in dry.stdout + dry.stderr


def test_ENC_OS_003_uncommon_modules_cannot_load(host, settings):
    require(settings, "os_hardening_modules")
    loaded = set(lib.parse_lsmod(host.file("/proc/modules").content_string))
    for name in settings["os_hardening_modules_blacklist"]:
        assert modprobe_refuses(host, name), f"modprobe would load {name}"
        assert name.replace("-", "_") not in loaded


# A module that is not refused gets loaded.
@pytest.mark.mutates_host
def test_ENC_OS_003_modprobe_refuses_cramfs(host, settings):
    require(settings, "os_hardening_modules")
    assert host.run("modprobe cramfs").rc != 0


def test_ENC_OS_004_usb_storage_cannot_load(host, settings):
    require(settings, "os_hardening_modules", "os_hardening_usb_storage_disabled")
    assert modprobe_refuses(host, "usb-storage")
    assert "usb_storage" not in lib.parse_lsmod(host.file("/proc/modules").content_string)


@pytest.mark.mutates_host
def test_ENC_OS_004_modprobe_refuses_usb_storage(host, settings):
    require(settings, "os_hardening_modules", "os_hardening_usb_storage_disabled")
    assert host.run("modprobe usb-storage").rc != 0
    assert "usb_storage" not in lib.parse_lsmod(host.file("/proc/modules").content_string)


def mount_of(host, point):
    return lib.parse_mounts(host.file("/proc/self/mounts").content_string)[point]


def cannot_execute_in(host, directory):
    probe = f"{directory}/enclave-noexec-{uuid.uuid4().hex[:8]}"
    host.run("printf '#!/bin/sh\\necho ran\\n' > %s && chmod 0755 %s", probe, probe)
    try:
        result = host.run(probe)
        return result.rc != 0 and "ran" not in result.stdout
    finally:
        host.run("rm -f %s", probe)


def test_ENC_OS_005_tmp_mount_options(host, settings):
    require(settings, "os_hardening_mounts")
    mount = mount_of(host, "/tmp")
    assert mount["fstype"] == "tmpfs"
    assert {"nodev", "nosuid", "noexec"} <= set(mount["options"])


# Writes a probe program, runs it and removes it.
@pytest.mark.mutates_host
def test_ENC_OS_005_tmp_refuses_to_execute(host, settings):
    require(settings, "os_hardening_mounts")
    assert cannot_execute_in(host, "/tmp")


def test_ENC_OS_006_dev_shm_mount_options(host, settings):
    require(settings, "os_hardening_mounts")
    assert {"nodev", "nosuid", "noexec"} <= set(mount_of(host, "/dev/shm")["options"])


@pytest.mark.mutates_host
def test_ENC_OS_006_dev_shm_refuses_to_execute(host, settings):
    require(settings, "os_hardening_mounts")
    assert cannot_execute_in(host, "/dev/shm")


def test_ENC_OS_007_ssh_keys_only_no_root(host, settings, sshd):
    require(settings, "os_hardening_ssh")
    assert sshd["permitrootlogin"] == "no"
    assert sshd["passwordauthentication"] == "no"
    assert sshd["kbdinteractiveauthentication"] == "no"
    assert sshd["authenticationmethods"] == "publickey"
    refused = ssh_attempt(host, "-o", "PreferredAuthentications=password,keyboard-interactive", "-l", "root")
    assert refused.rc != 0
    assert "Permission denied (publickey)" in refused.stderr, refused.stderr
    # Only root reads how sshd is configured (CIS 5.1.1): the main file and
    # every drop-in it includes.
    dropins = host.run("find /etc/ssh/sshd_config.d -maxdepth 1 -name '*.conf'").stdout.split()
    for path in ["/etc/ssh/sshd_config", *dropins]:
        config = host.file(path)
        assert (config.user, config.group, config.mode) == ("root", "root", 0o600), path


def test_ENC_OS_008_ssh_allow_groups(host, settings, sshd, enclave_vars):
    require(settings, "os_hardening_ssh")
    assert sshd["allowgroups"].split() == settings["os_hardening_ssh_allow_groups"]
    for admin in enclave_vars["enclave_admin_users"]:
        assert set(host.user(admin).groups) & set(settings["os_hardening_ssh_allow_groups"]), admin


def test_ENC_OS_009_ssh_algorithms(host, settings, sshd):
    require(settings, "os_hardening_ssh")
    assert sshd["ciphers"].split(",") == settings["os_hardening_ssh_ciphers"]
    assert sshd["macs"].split(",") == settings["os_hardening_ssh_macs"]
    assert sshd["kexalgorithms"].split(",") == settings["os_hardening_ssh_kex"]
    # The server itself refuses an old cipher: the client offers nothing else.
    refused = ssh_attempt(host, "-o", "Ciphers=aes128-cbc")
    assert "no matching cipher found" in refused.stderr, refused.stderr
    allowed = ssh_attempt(host, "-o", f"Ciphers={settings['os_hardening_ssh_ciphers'][0]}")
    assert "Permission denied (publickey)" in allowed.stderr, allowed.stderr


def test_ENC_OS_010_ssh_idle_timeout(host, settings, sshd):
    require(settings, "os_hardening_ssh")
    assert int(sshd["clientaliveinterval"]) == settings["os_hardening_ssh_client_alive_interval"]
    assert int(sshd["clientalivecountmax"]) == settings["os_hardening_ssh_client_alive_count"]
    assert 0 < int(sshd["clientaliveinterval"]) * int(sshd["clientalivecountmax"]) <= 900


def test_ENC_OS_011_ssh_no_forwarding(host, settings, sshd):
    require(settings, "os_hardening_ssh")
    expected = {
        "disableforwarding": "yes",
        "allowtcpforwarding": "no",
        "allowagentforwarding": "no",
        "allowstreamlocalforwarding": "no",
        "x11forwarding": "no",
        "permittunnel": "no",
        "gatewayports": "no",
    }
    assert {key: sshd[key] for key in expected} == expected


def test_ENC_OS_012_no_core_dumps(host, settings):
    require(settings, "os_hardening_core_dumps")
    assert host.check_output("systemctl show --property=DefaultLimitCORE --value") == "0"
    assert host.check_output("su -s /bin/bash -c 'ulimit -Hc' nobody") == "0"
    assert host.check_output("bash -lc 'ulimit -c'") == "0"
    coredump = host.check_output("systemd-analyze cat-config systemd/coredump.conf")
    assert "Storage=none" in coredump
    if settings["os_hardening_sysctl_kernel"]:
        assert proc_sys(host, "fs.suid_dumpable") == "0"


def test_ENC_OS_013_no_swap(host, settings):
    require(settings, "os_hardening_swap")
    assert host.file("/proc/swaps").content_string.strip().splitlines()[1:] == []
    assert host.run("systemctl is-enabled swap.target").stdout.strip() == "masked"


def test_ENC_OS_014_unneeded_packages_and_units(host, settings):
    require(settings, "os_hardening_packages")
    installed = [name for name in settings["os_hardening_packages_absent"] if host.package(name).is_installed]
    assert installed == []
    states = {
        unit: host.run("systemctl is-enabled %s", unit).stdout.strip() for unit in settings["os_hardening_units_masked"]
    }
    assert set(states.values()) == {"masked"}, states
    overrides = host.run("dpkg-statoverride --list").stdout.splitlines()
    for name in settings["os_hardening_root_only_programs"]:
        program = host.file(f"/usr/bin/{name}")
        if not program.exists:
            continue
        real = host.check_output("readlink -f %s", program.path)
        assert (host.file(real).user, host.file(real).mode) == ("root", 0o750), real
        assert f"root root 750 {real}" in overrides, f"{real}: a package update would reset its mode"


def test_ENC_OS_015_unattended_security_updates(host, settings):
    require(settings, "os_hardening_updates")
    assert host.package("unattended-upgrades").is_installed
    config = host.check_output("apt-config dump")
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in config
    assert 'APT::Periodic::Unattended-Upgrade "1";' in config
    assert "Debian-Security" in config
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled


def test_ENC_OS_015_no_security_update_pending(host, settings):
    """Read-only: no installed package has a newer version from a source the
    Origins-Pattern matches, in the package lists as the host has them (the
    daily apt job and every converge refresh them from the mirror)."""
    require(settings, "os_hardening_updates")
    simulation = host.run("LC_ALL=C apt-get -s -o Debug::NoLocking=true dist-upgrade")
    assert simulation.rc == 0, simulation.stderr
    upgrades = lib.parse_apt_simulation(simulation.stdout)
    sources = lib.parse_apt_sources(host.check_output("LC_ALL=C apt-cache policy"))
    names = " ".join(shlex.quote(name) for name in sorted(upgrades))
    policy = host.check_output(f"LC_ALL=C apt-cache policy {names}") if upgrades else ""
    distro_id, codename = lib.distro_of(host.file("/etc/os-release").content_string)
    pending = lib.pending_security_updates(
        upgrades,
        lib.parse_apt_policy_versions(policy),
        sources,
        settings["os_hardening_updates_origins"],
        distro_id,
        codename,
    )
    assert pending == [], f"{len(pending)} security updates pending from the configured sources: " + ", ".join(
        f"{p['name']} {p['installed']} -> {p['version']} ({p['source']})" for p in pending
    )


def test_ENC_OS_016_time_from_internal_servers(host, settings):
    require(settings, "os_hardening_time")
    sources = host.check_output("chronyc -n sources")
    for server in settings["os_hardening_ntp_servers"]:
        assert server in sources
    assert "0.debian.pool" not in sources


def test_ENC_OS_017_journald_persistent_and_bounded(host, settings):
    require(settings, "os_hardening_journald")
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "Storage=persistent" in config
    assert f"SystemMaxUse={settings['os_hardening_journald_system_max_use']}" in config
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert host.file(f"/var/log/journal/{machine_id}").is_directory
    assert host.run("journalctl --disk-usage").rc == 0


def test_ENC_OS_018_sudo_pty_and_io_log(host, settings):
    require(settings, "os_hardening_sudo")
    marker = f"enclave-sudo-probe-{uuid.uuid4().hex[:8]}"
    assert host.run("sudo -n /bin/echo %s", marker).rc == 0
    # sudo's log line can land a moment after the command returned (seen over
    # SSH about one time in eight), so the log is searched until it shows up.
    # Only the matching lines are read: the rest of sudo's log is other
    # people's commands, which an audit's evidence has no business holding.
    deadline = time.monotonic() + 10
    # The shell joins the marker, or this search's own log line would match.
    search = 'head=%s; tail=%s; grep -F -- "$head$tail" /var/log/sudo.log'
    while (found := host.run(search, marker[:12], marker[12:])).rc == 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert found.rc == 0, found.stderr or "the probe is not in /var/log/sudo.log"
    assert marker in found.stdout
    replay = host.run("sudoreplay -d %s -l command /bin/echo", settings["os_hardening_sudo_iolog_dir"] + "/root")
    assert replay.rc == 0, replay.stderr
    assert "/bin/echo" in replay.stdout
    assert host.file(settings["os_hardening_sudo_iolog_dir"]).mode == 0o700


def test_ENC_OS_019_cron_and_at_restricted(host, settings):
    require(settings, "os_hardening_cron")
    for tool in ("cron", "at"):
        allow = host.file(f"/etc/{tool}.allow")
        assert allow.content_string.split() == settings["os_hardening_cron_allow"]
        assert allow.mode == 0o600
        assert allow.user == "root"
        assert not host.file(f"/etc/{tool}.deny").exists
    if host.exists("crontab"):
        refused = host.run("runuser -u nobody -- crontab -l")
        assert "not allowed" in refused.stdout + refused.stderr


def test_ENC_OS_020_login_banner(host, settings, sshd):
    banner = settings["os_hardening_banner"]
    if not banner:
        pytest.skip("os_hardening_banner is empty in the inventory")
    for name in ("issue", "issue.net", "motd"):
        assert host.file(f"/etc/{name}").content_string == banner
    if settings["os_hardening_ssh"]:
        assert sshd["banner"] == "/etc/issue.net"


def test_ENC_OS_021_default_umask(host, settings):
    if not settings["os_hardening_umask"]:
        pytest.skip("os_hardening_umask is empty in the inventory")
    assert host.check_output("bash -lc umask") == "0" + settings["os_hardening_umask"]


def test_ENC_OS_022_aide_finds_no_change_since_the_baseline(host, settings):
    """Read-only: every converge writes the baseline, so on an untouched host
    the check is clean and anything it reports is a change nobody converged.
    Runs before the probe below, which changes /etc."""
    require(settings, "os_hardening_aide")
    check = host.run("aide --check --config /etc/aide/aide.conf")
    assert check.rc < 14, check.stdout[-2000:] + check.stderr
    # 1, 2, 4: entries added, removed, changed.
    assert check.rc & 7 == 0, check.stdout[-4000:]


# Adds a file under /etc and removes it.
@pytest.mark.mutates_host
def test_ENC_OS_022_aide_baseline_matches(host, settings):
    """AIDE has a baseline and reports a file added under /etc. The host may have
    changed since the converge wrote the baseline (another playbook), so the
    proof is the difference the probe makes, not a clean report."""
    require(settings, "os_hardening_aide")
    assert host.file("/var/lib/aide/aide.db").exists
    probe = f"/etc/enclave-aide-probe-{uuid.uuid4().hex[:8]}"
    before = host.run("aide --check --config /etc/aide/aide.conf")
    assert before.rc < 14, before.stdout[-2000:] + before.stderr
    assert probe not in before.stdout
    host.run("touch %s", probe)
    try:
        tampered = host.run("aide --check --config /etc/aide/aide.conf")
        assert tampered.rc & 1, "AIDE did not report an added file"
        assert probe in tampered.stdout
    finally:
        host.run("rm -f %s", probe)


def test_ENC_OS_023_rootless_podman_prerequisites(host, settings, enclave_vars):
    require(settings, "os_hardening_podman_check")
    for tool in ("/usr/bin/newuidmap", "/usr/bin/newgidmap"):
        assert host.file(tool).mode & 0o4000 or host.run("getcap %s", tool).stdout.strip(), tool
    assert host.file("/dev/fuse").exists
    for name in ("overlay", "fuse"):
        assert name not in settings["os_hardening_modules_blacklist"]
    assert proc_sys(host, "net.ipv4.ip_forward") == "0"
    account = enclave_vars.get("podman_rootless_user", "enclave-llm")
    mapped = host.run(
        "systemd-run --quiet --wait --pipe --machine=%s@ --user podman unshare cat /proc/self/uid_map", account
    )
    assert mapped.rc == 0, mapped.stderr
    assert len(mapped.stdout.strip().splitlines()) == 2, "the account's user namespace lacks its subordinate range"


def test_ENC_OS_024_password_policy(host, settings):
    require(settings, "os_hardening_passwords")
    login_defs = dict(
        line.split(None, 1)
        for line in host.file("/etc/login.defs").content_string.splitlines()
        if line.strip() and not line.startswith("#") and len(line.split(None, 1)) == 2
    )
    for key, value in settings["os_hardening_login_defs"].items():
        assert login_defs.get(key, "").strip() == str(value), key
    assert "pam_pwquality.so" in host.file("/etc/pam.d/common-password").content_string


def test_ENC_OS_025_operational_tools(host, settings):
    tools = settings["os_hardening_tools"]
    if not tools:
        pytest.skip("os_hardening_tools is empty in the inventory")
    assert [name for name in tools if not host.package(name).is_installed] == []
    if "needrestart" in tools:
        listed = host.run("needrestart -b -r l")
        assert listed.rc == 0, listed.stderr
        assert "NEEDRESTART-VER" in listed.stdout
    if "debsums" in tools:
        assert host.run("debsums -s openssh-server sudo").rc == 0
    if "acct" in tools:
        assert host.service("acct").is_enabled
        # The kernel appends a record for every process that ends.
        pacct = host.file("/var/log/account/pacct")
        before = pacct.size
        assert host.run("/bin/true").rc == 0
        assert host.file("/var/log/account/pacct").size > before, "process accounting records nothing"
    if "chkrootkit" in tools:
        timer = host.service("chkrootkit.timer")
        assert timer.is_enabled
        assert timer.is_running


def test_ENC_OS_026_usb_devices_by_policy(host, settings):
    require(settings, "os_hardening_usbguard")
    assert host.service("usbguard").is_enabled
    assert host.service("usbguard").is_running
    # The running daemon's own view, over its IPC: root only.
    wanted = settings["os_hardening_usbguard_settings"]
    for name in ("ImplicitPolicyTarget", "InsertedDevicePolicy"):
        if name in wanted:
            assert host.check_output("usbguard get-parameter %s", name) == str(wanted[name]), name
    devices = host.run("usbguard list-devices")
    assert devices.rc == 0, devices.stderr
    # The policy holds the devices present when the host was hardened: the
    # host's own USB controllers (root hubs) stay authorised.
    assert host.check_output("usbguard list-rules"), "the USB policy is empty: it blocks every device"
    hubs = [line for line in devices.stdout.splitlines() if "Host Controller" in line]
    assert [line for line in hubs if line.split()[1] != "allow"] == []
    conf = dict(
        line.split("=", 1)
        for line in host.file("/etc/usbguard/usbguard-daemon.conf").content_string.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    assert {key: conf.get(key) for key in wanted} == {
        key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in wanted.items()
    }
    assert not host.file("/etc/usbguard/IPCAccessControl.d/:plugdev").exists
    rules = host.file("/etc/usbguard/rules.conf")
    assert (rules.user, rules.group, rules.mode) == ("root", "root", 0o600)


def test_ENC_OS_027_idle_shells_end(host, settings):
    timeout = settings["os_hardening_shell_timeout"]
    if not timeout:
        pytest.skip("os_hardening_shell_timeout is 0 in the inventory")
    # A login shell has the timeout, and cannot lift it.
    assert host.check_output("bash -lc 'echo $TMOUT'") == str(timeout)
    lifted = host.run("bash -lc 'TMOUT=0'")
    assert lifted.rc != 0
    assert "readonly" in lifted.stderr


def test_no_unit_failed(host):
    """The units the roles add, mask or schedule leave none failed (systemd would report 'degraded').

    A timer masked while active and chkrootkit's daily run that could not mail its report did.
    """
    failed = host.run("systemctl list-units --failed --plain --no-legend")
    assert failed.rc == 0, failed.stderr
    assert failed.stdout.strip() == "", f"failed units: {failed.stdout.strip()}"


# auditd (ENC-AU-*): only where the kernel lets the host hold audit control.


@pytest.fixture
def loaded_rules(host, settings) -> list:
    require(settings, "auditd_enabled")
    return lib.parse_audit_rules(host.check_output("auditctl -l"))


def keys_of(rules):
    return {entry.split("|")[0] for entry in lib.audit_rule_summary(rules)}


def test_ENC_AU_001_auditd_running(host, settings):
    require(settings, "auditd_enabled")
    assert host.service("auditd").is_running
    assert host.service("auditd").is_enabled
    status = host.check_output("auditctl -s")
    assert "pid 0" not in status


def test_ENC_AU_002_auditd_conf(host, settings):
    require(settings, "auditd_enabled")
    conf = dict(
        (key.strip(), value.strip())
        for key, sep, value in (
            line.partition("=") for line in host.file("/etc/audit/auditd.conf").content_string.splitlines()
        )
        if sep and not key.startswith("#")
    )
    for key, value in settings["auditd_conf"].items():
        assert conf[key] == str(value), key


def test_ENC_AU_003_cis_rule_groups_loaded(loaded_rules):
    wanted = {
        "scope",
        "user_emulation",
        "sudo_log_file",
        "time-change",
        "system-locale",
        "access",
        "identity",
        "perm_mod",
        "mounts",
        "session",
        "logins",
        "delete",
        "MAC-policy",
        "kernel_modules",
    }
    assert wanted - keys_of(loaded_rules) == set()


def test_ENC_AU_004_enclave_keys_loaded(host, loaded_rules, settings):
    keys = keys_of(loaded_rules)
    assert {"enclave_nft", "enclave_svc_exec"} <= keys
    for watch in settings["auditd_enclave_watches"]:
        if host.file(watch["path"]).exists:
            assert f"{watch['key']}|path={watch['path'].rstrip('/')}" in lib.audit_rule_summary(loaded_rules)


def ausearch(host, key, needle, seconds=10):
    """The audit log's events for KEY since the test began, waited for up to SECONDS."""
    deadline = time.monotonic() + seconds
    while True:
        found = host.run("ausearch --input-logs -i -k %s -ts recent", key)
        if needle in found.stdout or time.monotonic() > deadline:
            return found.stdout
        time.sleep(1)


# Touches /etc/passwd and each watched path.
@pytest.mark.mutates_host
def test_ENC_AU_004_audit_trail(host, settings, loaded_rules, enclave_vars):
    """Perform each audited action, then find it in the audit log by its key."""
    tag = uuid.uuid4().hex[:8]
    account = enclave_vars.get("podman_rootless_user", "enclave-llm")
    actions = {
        "enclave_nft": ("nft list tables", "nft"),
        "enclave_svc_exec": (f"runuser -u {account} -- /bin/true", "/bin/true"),
        "sudo_log_file": (f"sudo -n /bin/echo {tag}", "sudo.log"),
        "identity": ("touch /etc/passwd", "/etc/passwd"),
    }
    for watch in settings["auditd_enclave_watches"]:
        path = watch["path"]
        if host.file(path).is_directory:
            probe = f"{path}/enclave-audit-probe-{tag}"
            actions.setdefault(watch["key"], (f"touch {probe} && rm -f {probe}", f"enclave-audit-probe-{tag}"))
        elif host.file(path).exists:
            actions.setdefault(watch["key"], (f"touch {path}", path.rsplit("/", 1)[-1]))
    missing = {}
    for key, (command, needle) in actions.items():
        assert host.run(command).rc == 0, command
        if needle not in ausearch(host, key, needle):
            missing[key] = command
    assert missing == {}, "actions not found in the audit log by their key"
    absent = {w["key"] for w in settings["auditd_enclave_watches"]} - set(actions)
    if absent:
        pytest.skip(f"performed and found {sorted(actions)}; paths missing on this host for {sorted(absent)}")


def test_ENC_AU_005_privileged_programs_audited(host, loaded_rules, settings):
    roots = " ".join(root for root in settings["auditd_privileged_roots"] if host.file(root).is_directory)
    programs = lib.parse_find_setid(host.run(f"find {roots} -xdev -type f -perm /6000").stdout)
    audited = set(lib.audit_rule_summary(loaded_rules))
    assert [p for p in programs if f"privileged|path={p}" not in audited] == []
    assert "/usr/bin/sudo" in programs


def test_ENC_AU_006_immutable_mode_as_configured(host, settings):
    require(settings, "auditd_enabled")
    status = host.check_output("auditctl -s")
    enabled = [line.split()[1] for line in status.splitlines() if line.startswith("enabled ")]
    assert enabled == ["2" if settings["auditd_immutable"] else "1"]


def test_ENC_AU_007_loaded_rules_equal_disk(host, loaded_rules):
    """Whole rules in canonical form (syscalls, fields, permissions, keys), in each list's order."""
    result = audit_rules.compare(host.file("/etc/audit/audit.rules").content_string, host.check_output("auditctl -l"))
    assert result["equal"], audit_rules.describe(result)
    assert "No change" in host.run("augenrules --check").stdout


ROLE_VARS = yaml.safe_load((REPO / "roles" / "os_hardening" / "vars" / "main.yml").read_text())


def validate_on_host(host, check, text):
    """Run the role's validate: command (``check``, %s the candidate) on a temporary file holding ``text``."""
    path = host.check_output("mktemp")
    try:
        host.check_output(f"printf '%s' {shlex.quote(text)} > {shlex.quote(path)}")
        return host.run(check % shlex.quote(path))
    finally:
        host.run(f"rm -f {shlex.quote(path)}")


# The installed file passes its own check, and a misspelt directive, which the
# program would skip or stop at, is refused before it could be installed.
@pytest.mark.mutates_host
def test_ENC_OS_016_chrony_conf_is_checked_before_it_is_installed(host, settings):
    require(settings, "os_hardening_time")
    installed = host.file("/etc/chrony/chrony.conf").content_string
    check = ROLE_VARS["__os_hardening_chrony_check"]
    assert validate_on_host(host, check, installed).rc == 0
    refused = validate_on_host(host, check, installed + "serverr 192.0.2.1 iburst\n")
    assert refused.rc != 0
    assert "Invalid directive" in refused.stdout + refused.stderr


@pytest.mark.mutates_host
def test_ENC_OS_003_modprobe_conf_is_checked_before_it_is_installed(host, settings):
    require(settings, "os_hardening_modules")
    installed = host.file("/etc/modprobe.d/enclave-hardening.conf").content_string
    check = ROLE_VARS["__os_hardening_modprobe_check"]
    passed = validate_on_host(host, check, installed)
    assert passed.rc == 0, passed.stderr
    refused = validate_on_host(host, check, installed + "instal cramfs /bin/false\n")
    assert refused.rc != 0
    assert "instal" in refused.stderr
