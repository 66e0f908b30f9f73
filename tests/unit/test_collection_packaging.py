"""The collection builds into a Galaxy tarball and every module documents itself."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def _ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}


def test_collection_builds(tmp_path):
    subprocess.run(
        ["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
        env=_ansible_env(),
    )
    (tarball,) = tmp_path.glob("enclave-llm-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert "MANIFEST.json" in names
    assert "roles/preflight/meta/argument_specs.yml" in names
    assert "roles/offline_mirrors/tasks/main.yml" in names
    # Lab state, keys and the controller venv never ship.
    assert not [n for n in names if n.startswith((".lab", ".venv", ".collections", "lab/"))]


@pytest.mark.parametrize("module", MODULES)
def test_module_documentation_renders(module):
    result = subprocess.run(
        ["ansible-doc", f"enclave.llm.{module}"],
        capture_output=True,
        text=True,
        env=_ansible_env(),
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for section in ("OPTIONS", "EXAMPLES", "RETURN VALUES"):
        assert section in result.stdout, f"{module}: no {section} in ansible-doc output"


def test_role_entry_points_document_themselves():
    result = subprocess.run(
        ["ansible-doc", "-t", "role", "-l", "enclave.llm"],
        capture_output=True,
        text=True,
        env=_ansible_env(),
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for role in ("preflight", "offline_mirrors"):
        assert f"enclave.llm.{role}" in result.stdout
