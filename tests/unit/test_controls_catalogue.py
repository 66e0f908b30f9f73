"""docs/controls.yml is the single source of the controls: every control has a
task that implements it and a test that verifies it, and every control ID a
task or a test names is in the catalogue.

IDs are written ENC-OS-012 in task names and ENC_OS_012 in test function
names; both count. Only the families the catalogue covers are checked, so
a role can use a new family before it is catalogued.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = yaml.safe_load((REPO / "docs" / "controls.yml").read_text())
CONTROLS = {control["id"]: control for control in CATALOGUE["controls"]}
FAMILIES = sorted({control_id.split("-")[1] for control_id in CONTROLS})
ID = re.compile(r"(?<![A-Za-z0-9])ENC[-_](" + "|".join(FAMILIES) + r")[-_](\d{3})(?!\d)")
THIS_FILE = Path(__file__).resolve()


def ids_in(paths):
    found = {}
    for path in paths:
        if path.resolve() == THIS_FILE:
            continue
        for family, number in ID.findall(path.read_text(errors="replace")):
            found.setdefault(f"ENC-{family}-{number}", set()).add(path.relative_to(REPO).as_posix())
    return found


def task_names():
    """Control IDs at the start of task names under roles/*/tasks."""
    found = {}
    for path in sorted(REPO.glob("roles/*/tasks/*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            match = ID.match(str(task.get("name", "")))
            if match:
                found.setdefault(f"ENC-{match.group(1)}-{match.group(2)}", set()).add(path.relative_to(REPO).as_posix())
    return found


TASKS = task_names()
TESTS = ids_in(sorted(REPO.glob("tests/**/*.py")) + sorted(REPO.glob("molecule/*/checks/*.yml")))
ALL_TASK_MENTIONS = ids_in(sorted(REPO.glob("roles/*/tasks/*.yml")))


def test_ids_are_unique_and_well_formed():
    ids = [control["id"] for control in CATALOGUE["controls"]]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"ENC-[A-Z]{2}-\d{3}", control_id) for control_id in ids)


@pytest.mark.parametrize("control_id", sorted(CONTROLS))
def test_control_has_the_schema(control_id):
    control = CONTROLS[control_id]
    assert {"id", "title", "rationale", "mappings", "role", "tag", "tests"} <= set(control)
    assert set(control["mappings"]) == {"cis_debian12_l1", "bsi", "gdpr"}
    assert control["title"]
    assert control["rationale"]
    assert (REPO / "roles" / control["role"]).is_dir(), control["role"]
    assert control["tests"], f"{control_id} names no test"


@pytest.mark.parametrize("control_id", sorted(CONTROLS))
def test_control_has_an_implementing_task(control_id):
    role = CONTROLS[control_id]["role"]
    files = TASKS.get(control_id, set())
    assert any(path.startswith(f"roles/{role}/") for path in files), f"no task of roles/{role} starts with {control_id}"


@pytest.mark.parametrize("control_id", sorted(CONTROLS))
def test_control_has_a_verifying_test_that_exists(control_id):
    assert control_id in TESTS, f"no test names {control_id}"
    for reference in CONTROLS[control_id]["tests"]:
        path, _, function = reference.partition("::")
        source = (REPO / path).read_text()
        assert re.search(rf"^def {re.escape(function)}\(", source, re.MULTILINE), f"{reference} does not exist"


def test_every_id_used_is_in_the_catalogue():
    used = set(TASKS) | set(TESTS) | set(ALL_TASK_MENTIONS)
    unknown = {
        control_id: sorted(
            TASKS.get(control_id, set()) | TESTS.get(control_id, set()) | ALL_TASK_MENTIONS.get(control_id, set())
        )
        for control_id in used - set(CONTROLS)
    }
    assert unknown == {}
