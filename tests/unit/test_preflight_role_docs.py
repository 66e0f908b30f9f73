"""The roles' READMEs, defaults and argument specs agree.

meta/argument_specs.yml is the source of truth: the README's variable table is
rendered from it (run with PREFLIGHT_README_UPDATE=1 to rewrite the tables), and
every public default must be declared there with the same value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ROLES = [
    "preflight",
    "firewall",
    "podman_rootless",
    "nvidia_gpu",
    "ingress",
    "model_store",
    "os_hardening",
    "auditd",
    "vllm",
    "isolation_monitor",
]
BEGIN = "<!-- BEGIN VARIABLES: generated from meta/argument_specs.yml -->"
END = "<!-- END VARIABLES -->"


def _spec_options(role):
    spec = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]["main"]["options"]


def _flatten(options, prefix=""):
    for name, option in options.items():
        yield prefix + name, option
        if option.get("options"):
            yield from _flatten(option["options"], prefix + name + ".")


def _cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_table(role):
    rows = ["| Variable | Type | Required | Default | Description |", "| --- | --- | --- | --- | --- |"]
    for name, option in _flatten(_spec_options(role)):
        kind = option.get("type", "str")
        if option.get("elements"):
            kind += f" of {option['elements']}"
        default = ""
        if "default" in option:
            rendered = yaml.safe_dump(option["default"], default_flow_style=True).replace("\n...", "").strip()
            default = f"`{rendered}`"
        description = re.sub(r"C\(([^)]*)\)", r"`\1`", " ".join(option.get("description", [])))
        if option.get("choices"):
            description += " Choices: " + ", ".join(f"`{c}`" for c in option["choices"]) + "."
        required = "yes" if option.get("required") else ""
        rows.append(f"| `{name}` | {kind} | {required} | {_cell(default)} | {_cell(description)} |")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("role", ROLES)
def test_every_option_is_described(role):
    undocumented = [name for name, option in _flatten(_spec_options(role)) if not option.get("description")]
    assert undocumented == []


@pytest.mark.parametrize("role", ROLES)
def test_readme_table_is_generated_from_the_argument_spec(role):
    readme_path = ROLES_DIR / role / "README.md"
    readme = readme_path.read_text()
    assert BEGIN in readme, f"README.md needs the marker {BEGIN}"
    assert END in readme, f"README.md needs the marker {END}"
    head, rest = readme.split(BEGIN, 1)
    _old_table, tail = rest.split(END, 1)
    expected = f"{head}{BEGIN}\n{render_table(role)}{END}{tail}"
    if os.environ.get("PREFLIGHT_README_UPDATE") == "1":
        readme_path.write_text(expected)
    assert readme == expected, "README variable table is stale: rerun with PREFLIGHT_README_UPDATE=1"


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
