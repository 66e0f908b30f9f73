"""The roles' READMEs, defaults and argument specs agree.

meta/argument_specs.yml is the source of truth: the README's variable table is
generated from it (``make role-docs``, tests/role_readmes.py), and every public
default must be declared there with the same value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import role_readmes

ROLES_DIR = role_readmes.ROLES_DIR
ROLES = role_readmes.roles()


_spec_options = role_readmes.spec_options
_flatten = role_readmes.flatten


@pytest.mark.parametrize("role", ROLES)
def test_every_option_is_described(role):
    undocumented = [name for name, option in _flatten(_spec_options(role)) if not option.get("description")]
    assert undocumented == []


@pytest.mark.parametrize("role", ROLES)
def test_readme_table_is_generated_from_the_argument_spec(role):
    readme = (ROLES_DIR / role / "README.md").read_text()
    assert readme == role_readmes.rendered_readme(role), f"roles/{role}/README.md is stale: run make role-docs"


@pytest.mark.parametrize("role", ROLES)
def test_public_defaults_match_the_argument_spec(role):
    defaults = yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text())
    options = _spec_options(role)
    declared = {name for name in options if name.startswith(f"{role}_")}
    assert set(defaults) == declared
    for name, value in defaults.items():
        if value is None:
            assert "default" not in options[name], name
        else:
            assert options[name].get("default") == value, name


@pytest.mark.parametrize(
    "path",
    sorted(path for role in ROLES for path in (ROLES_DIR / role / "tasks").glob("*.yml")),
    ids=lambda p: f"{p.parts[-3]}/{p.name}",
)
def test_task_files_open_with_inputs_and_outputs(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "---"
    assert lines[1].startswith("# Inputs:"), path.name
    assert any(line.startswith("# Outputs:") for line in lines[2:6]), path.name
