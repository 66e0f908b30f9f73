"""Throwaway hosts on the lab network for the integration suite: podman, the lab, SSH.

Shared by conftest.py (the preflight target) and test_firewall_role.py (its
own host and peer), so both start, reach and remove containers the same way.
A module of its own because test files cannot import conftest.py reliably:
other suites have a conftest module of the same name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from netns import ansible_bin, ensure_collection_link

REPO = Path(__file__).resolve().parents[2]
LAB_STATE = Path(os.environ.get("ENCLAVE_LAB_STATE", REPO / ".lab"))
LAB_NETWORK = "enclave-lab"
LAB_MIRROR = "enclave-lab-mirror"
LAB_SSH_KEY = LAB_STATE / "ssh" / "id_ed25519"
ADMIN_USER = "enclave-admin"

TARGET_IMAGE = "localhost/enclave-lab-host:current"

# What "the host did not change" means here: the content of every file under
# these trees, and the installed package list.
STATE_COMMAND = "find /etc /usr/local /opt -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum; dpkg -l"


def _podman_env():
    return {**os.environ, "CONTAINERS_CONF": str(LAB_STATE / "containers.conf")}


def podman(*args, check=True, **kwargs):
    return subprocess.run(["podman", *args], env=_podman_env(), check=check, capture_output=True, text=True, **kwargs)


def wait_until(what, probe, seconds, interval=0.5):
    """Poll ``probe`` every ``interval`` s; fail the test with "WHAT within SECONDS s" when time runs out."""
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {seconds} s")
        time.sleep(interval)


@dataclass
class Target:
    name: str
    address: str
    inventory: Path
    control_path_dir: Path

    def state_digest(self):
        """sha256 over the host's /etc, /usr/local, /opt contents and `dpkg -l`."""
        result = podman("exec", self.name, "sh", "-c", STATE_COMMAND)
        return hashlib.sha256(result.stdout.encode()).hexdigest()

    def run_preflight(self, *extra_args, timeout=240):
        return self.run_playbook("preflight.yml", *extra_args, timeout=timeout)

    def run_playbook(self, playbook, *extra_args, timeout=240, inventory=None, extra_env=None):
        """Run playbooks/PLAYBOOK (or a playbook at an absolute path) against this host only.

        ``inventory`` replaces the host's own (aliases of this host, say);
        ``extra_env`` adds Ansible settings. The result has ``command`` set.
        """
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            # SSH masters of this session only: one left by an earlier container
            # at the same address would point at a dead connection.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_path_dir),
            **(extra_env or {}),
        }
        command = [
            ansible_bin("ansible-playbook"),
            "-i",
            str(inventory or self.inventory),
            str(REPO / "playbooks" / playbook),
            *extra_args,
        ]
        result = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        result.command = " ".join(command)
        return result

    def run_refused(self, playbook, extra, fragments):
        """Run PLAYBOOK with the extra variables ``extra``, which it must refuse.

        Asserts one failed task on one host, every fragment in the output (white
        space does not count), and the host's state digest unchanged; returns the
        output for further checks.
        """
        before = self.state_digest()
        result = self.run_playbook(playbook, "-e", json.dumps(extra))
        unchanged = before == self.state_digest()
        output = result.stdout + result.stderr
        described = f"$ {result.command}\nrc={result.returncode}\n{output[-4000:]}"
        assert result.returncode != 0, described
        assert output.count("fatal: [") == 1, described
        assert len(re.findall(r"failed=[1-9]", result.stdout)) == 1, described
        for fragment in fragments:
            assert squash(fragment) in squash(output), f"missing {fragment!r}\n{described}"
        assert unchanged, f"the host changed\n{described}"
        return output


def squash(text):
    """``text`` with every run of white space made one blank (Ansible wraps long messages)."""
    return " ".join(text.split())


def lab_prerequisites():
    """Skip without root or podman; link the collection and bring the lab up (idempotent)."""
    if os.geteuid() != 0:
        pytest.skip("the integration suite runs podman and the lab network as root")
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (lab/install-deps or make deps installs it)")
    ensure_collection_link()
    # lab/up leaves what already runs for this checkout as it is and takes over
    # a lab that another checkout left running.
    subprocess.run(["bash", str(REPO / "lab" / "up")], cwd=REPO, check=True)


def ssh_command(address, connect_timeout=2):
    """``ssh`` as the admin user with the lab key, running ``true``: exit status 0 means logged in.

    Batch mode and no host key checks: every container at an address is new.
    """
    return [
        "ssh",
        "-i",
        str(LAB_SSH_KEY),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        f"{ADMIN_USER}@{address}",
        "true",
    ]


def wait_for_ssh(name, address, seconds=60):
    """Wait until the lab key logs in to ``address`` as the admin user.

    A fresh container on a loaded 2-core machine has at times needed more
    than 30 s before its sshd let the key in.
    """
    ssh = ssh_command(address)
    wait_until(
        f"cannot log in to {name} at {address} over SSH",
        lambda: subprocess.run(ssh, capture_output=True, check=False).returncode == 0,
        seconds,
    )


@contextmanager
def lab_target(tmp_path_factory, name, address, label, run_args=()):
    """Start container ``name`` at ``address`` from the lab's host image; yield a :class:`Target`.

    ``run_args`` are more ``podman run`` options (capabilities, for example).
    The container is removed by name afterwards.
    """
    lab_prerequisites()
    podman("rm", "--force", "--ignore", name)
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--hostname",
        name,
        "--label",
        label,
        "--network",
        LAB_NETWORK,
        "--ip",
        address,
        "--systemd=always",
        *run_args,
        TARGET_IMAGE,
    )
    try:
        wait_until(
            f"ssh did not start in {name}",
            lambda: podman("exec", name, "systemctl", "is-active", "--quiet", "ssh", check=False).returncode == 0,
            60,
        )
        podman(
            "exec",
            "-i",
            name,
            "install",
            "-m",
            "0600",
            "-o",
            ADMIN_USER,
            "-g",
            ADMIN_USER,
            "/dev/stdin",
            f"/home/{ADMIN_USER}/.ssh/authorized_keys",
            input=(LAB_SSH_KEY.with_suffix(".pub")).read_text(),
        )
        wait_for_ssh(name, address)

        # The lab inventory's group_vars, with this container as the only host;
        # its ingress listens on its own address (the lab's clinical address
        # belongs to the lab's enclave host, and the preflight checks it).
        inventory = tmp_path_factory.mktemp("inventory")
        (inventory / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
        own = {"ansible_host": address, "ansible_ssh_private_key_file": str(LAB_SSH_KEY)}
        hosts = {"llm_servers": {"hosts": {name: {**own, "ingress_listen_address": address}}}}
        (inventory / "hosts.yml").write_text("---\n" + yaml.safe_dump(hosts, sort_keys=False))
        yield Target(name, address, inventory, tmp_path_factory.mktemp("ssh-cp"))
    finally:
        podman("rm", "--force", "--time", "5", "--ignore", name, check=False)
