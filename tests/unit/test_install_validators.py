"""The commands the roles give Ansible's ``validate:`` for files that have no
checker of their own, run here on good and bad candidates: each must pass the
good one and refuse the bad one, naming the fault.

They run on this machine's own tools (systemd-analyze, apt-config, /proc/sys);
the converge runs them on the host.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def validator(role, name, **jinja):
    command = yaml.safe_load((ROLES / role / "vars" / "main.yml").read_text())[name]
    for key, value in jinja.items():
        command = command.replace("{{ " + key + " }}", value)
    assert "{{" not in command, command
    return command


def run(command, path):
    """As Ansible runs it: the path put in for %s, split like a shell would, no shell."""
    argv = shlex.split(command % path)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout + done.stderr


def needs(tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed here")


def test_a_sysctl_file_with_a_key_this_kernel_lacks_is_refused(tmp_path):
    command = validator("os_hardening", "__os_hardening_sysctl_check")
    good, bad, empty = tmp_path / "good.conf", tmp_path / "bad.conf", tmp_path / "empty.conf"
    good.write_text("# comment\n; comment\n\nkernel.ostype = Linux\n")
    bad.write_text("kernel.ostype = Linux\nnet.ipv4.no_such_key = 1\n")
    empty.write_text("kernel.ostype =\n")
    assert run(command, good) == (0, "")
    rc, said = run(command, bad)
    assert rc != 0
    assert "net.ipv4.no_such_key: no such sysctl on this kernel" in said
    assert run(command, empty)[0] != 0


@pytest.mark.parametrize(
    ("role", "name", "unit_var", "unit"),
    [
        (
            "isolation_monitor",
            "__isolation_monitor_unit_check",
            "__isolation_monitor_service",
            "enclave-isolation-monitor.service",
        ),
        ("nvidia_gpu", "__nvidia_gpu_unit_check", "__nvidia_gpu_cdi_fallback_unit", "enclave-nvidia-cdi.service"),
    ],
)
def test_a_unit_that_systemd_would_reject_is_refused(tmp_path, role, name, unit_var, unit):
    needs("systemd-analyze")
    command = validator(role, name, **{unit_var: unit})
    good, bad = tmp_path / "candidate", tmp_path / "broken"
    good.write_text("[Unit]\nDescription=good\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n")
    bad.write_text("[Unit]\nDescription=bad\n\n[Service]\nExecStart=/nonexistent/program\n")
    rc, said = run(command, good)
    assert rc == 0, said
    rc, said = run(command, bad)
    assert rc != 0
    assert "/nonexistent/program is not executable" in said
    # Judged under the unit's own name, whatever the candidate's file is called.
    assert unit in said


def test_an_apt_configuration_with_a_syntax_error_is_refused(tmp_path):
    needs("apt-config")
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text('Unattended-Upgrade::Automatic-Reboot "false";\n')
    bad.write_text('Unattended-Upgrade::Automatic-Reboot "false"\n')
    task = yaml.safe_load((ROLES / "os_hardening" / "tasks" / "updates.yml").read_text())[0]
    command = task["ansible.builtin.template"]["validate"]
    assert run(command, good)[0] == 0
    rc, said = run(command, bad)
    assert rc != 0
    assert "Syntax error" in said


def test_a_firewall_drop_in_systemd_would_only_warn_about_is_refused(tmp_path):
    needs("systemd-analyze")
    if not any(
        Path(folder, "nftables.service").exists() for folder in ("/lib/systemd/system", "/usr/lib/systemd/system")
    ):
        pytest.skip("nftables.service is not installed here")
    command = validator("firewall", "__firewall_dropin_check")
    template = (ROLES / "firewall" / "templates" / "nftables-enclave.conf.j2").read_text()
    good = tmp_path / "good.conf"
    good.write_text(
        template.replace("{{ ansible_managed }}", "managed")
        .replace("{{ __firewall_nft }}", "/usr/sbin/nft")
        .replace("{{ __firewall_emergency_ruleset }}", "/etc/enclave/firewall-emergency.nft")
    )
    assert "{{" not in good.read_text()
    assert run(command, good) == (0, "")
    for name, text, fault in [
        ("key.conf", good.read_text() + "ExecStopp=\n", "Unknown key 'ExecStopp'"),
        ("section.conf", "[Servce]\nExecStop=\n", "Unknown section 'Servce'"),
        ("program.conf", "[Service]\nExecStartPre=/nonexistent/nft -f /x\n", "/nonexistent/nft is not executable"),
    ]:
        bad = tmp_path / name
        bad.write_text(text)
        rc, said = run(command, bad)
        assert rc != 0, name
        assert fault in said


def test_a_dnf_repository_without_its_signature_checks_is_refused(tmp_path):
    command = yaml.safe_load((ROLES / "offline_mirrors" / "vars" / "RedHat.yml").read_text())[
        "__offline_mirrors_dnf_repo_check"
    ].replace("/usr/bin/python3", shutil.which("python3"))
    good, unsigned, empty = tmp_path / "good.repo", tmp_path / "unsigned.repo", tmp_path / "empty.repo"
    good.write_text(
        "[enclave-baseos]\nname=BaseOS\nbaseurl=http://192.0.2.10/BaseOS/$basearch/os\n"
        "enabled=1\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/k\n"
    )
    unsigned.write_text(good.read_text() + "\n[enclave-appstream]\nbaseurl=http://192.0.2.10/AppStream\ngpgcheck=1\n")
    empty.write_text("# nothing\n")
    assert run(command, good) == (0, "")
    rc, said = run(command, unsigned)
    assert rc != 0
    assert "needs baseurl, gpgcheck=1 and repo_gpgcheck=1: enclave-appstream" in said
    rc, said = run(command, empty)
    assert rc != 0
    assert "no repository" in said


def task_validator(role, tasks_file, dest_end):
    """The validate: of the task in roles/ROLE/tasks/TASKS_FILE whose dest ends with DEST_END."""
    for task in yaml.safe_load((ROLES / role / "tasks" / tasks_file).read_text()):
        module = task.get("ansible.builtin.template") or {}
        if str(module.get("dest", "")).endswith(dest_end):
            return module["validate"]
    raise AssertionError(f"no template task for {dest_end} in {role}/{tasks_file}")


def test_an_auditd_conf_line_auditd_cannot_read_is_refused(tmp_path):
    command = task_validator("auditd", "audit.yml", "auditd.conf")
    template = (ROLES / "auditd" / "templates" / "auditd.conf.j2").read_text()
    good = tmp_path / "good.conf"
    good.write_text(
        "\n".join(
            line for line in template.replace("{{ ansible_managed }}", "managed").splitlines() if "{%" not in line
        ).replace("{{ key }} = {{ value }}", "max_log_file = 64")
        + "\n"
    )
    assert "{{" not in good.read_text()
    assert run(command, good) == (0, "")
    for text in ("max_log_file=64\n", "max_log_file = \n", "max_log_file = 64\nspace_left_action\n"):
        bad = tmp_path / "bad.conf"
        bad.write_text(good.read_text() + text)
        rc, said = run(command, bad)
        assert rc != 0, text
        assert "not a key = value line" in said


def test_a_registries_d_file_without_its_lookaside_is_refused(tmp_path):
    command = task_validator("podman_rootless", "config.yml", "enclave-registry.yaml")
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("# managed\ndocker:\n  192.0.2.10:5000:\n    lookaside: http://192.0.2.10:8081/sigstore\n")
    bad.write_text("# managed\ndocker:\n  192.0.2.10:5000:\n    lookaside:\n")
    assert run(command, good) == (0, "")
    rc, said = run(command, bad)
    assert rc != 0
    assert "no docker: REGISTRY: lookaside: URL" in said
