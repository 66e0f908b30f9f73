"""A missing prerequisite stops the lab scripts with one line that says what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# What the lab scripts need from the system besides the tools under test.
BASE_TOOLS = ["bash", "cat", "sed", "mv", "mkdir", "dirname", "df", "awk", "sha256sum", "cut", "date", "printf"]


@pytest.fixture
def sparse_path(tmp_path):
    """A PATH that holds only the basic tools, plus whatever a test adds."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in BASE_TOOLS:
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)

    def add(*tools: str) -> str:
        for tool in tools:
            (bindir / tool).symlink_to(shutil.which(tool) or "/bin/true")
        return str(bindir)

    return add


def _run(script: str, path: str, tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {"PATH": path, "ENCLAVE_LAB_STATE": str(tmp_path / "state"), **extra_env}
    return subprocess.run(["bash", str(REPO / "lab" / script)], env=env, capture_output=True, text=True, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab scripts check for root before anything else")
@pytest.mark.parametrize(
    ("missing", "present", "advice"),
    [
        ("podman", ["debootstrap", "runc"], "apt-get install podman"),
        ("debootstrap", ["podman", "runc"], "apt-get install debootstrap"),
        ("runc", ["podman", "debootstrap"], "apt-get install runc"),
    ],
)
def test_missing_tool_is_named_with_its_package(sparse_path, tmp_path, missing, present, advice):
    result = _run("build-images", sparse_path(*present), tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"'{missing}' not found" in lines[0]
    assert advice in lines[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab scripts check for root before anything else")
def test_too_little_disk_says_how_much_is_needed(sparse_path, tmp_path):
    result = _run(
        "build-images", sparse_path("podman", "debootstrap", "runc"), tmp_path, ENCLAVE_LAB_MIN_FREE_GB="1000000"
    )
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "the lab needs 1000000 GiB" in line
    assert "ENCLAVE_LAB_STATE" in line


def test_non_root_is_told_to_use_sudo(sparse_path, tmp_path):
    if os.geteuid() != 0:
        result = _run("up", sparse_path(), tmp_path)
    else:
        # Drop to nobody; pytest's temporary folders are private to root, so
        # the state folder and the tools come from places nobody can reach.
        state = Path(tempfile.mkdtemp(prefix="enclave-lab-test-"))
        state.chmod(0o777)
        try:
            result = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/bash", str(REPO / "lab" / "up")],
                env={"PATH": "/usr/bin:/bin", "ENCLAVE_LAB_STATE": str(state)},
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            shutil.rmtree(state)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "run it as root" in line
