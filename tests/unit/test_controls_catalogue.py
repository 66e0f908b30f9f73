"""docs/controls.yml is the single source of the controls: every control has a
task that implements it and a host test that verifies it, read-only for at
least one, its tag is one its tasks carry, every control ID a task or a test
names is in the catalogue, and docs/controls.md is the catalogue rendered.

IDs are written ENC-OS-012 in task names and ENC_OS_012 in test function
names; both count. Only the families the catalogue covers are checked, so
a role can use a new family before it is catalogued.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.enclave.llm.plugins.module_utils.evidence import control_catalogue

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = yaml.safe_load((REPO / "docs" / "controls.yml").read_text())
CONTROLS = {control["id"]: control for control in CATALOGUE["controls"]}
FAMILIES = sorted({control_id.split("-")[1] for control_id in CONTROLS})
ID = re.compile(r"(?<![A-Za-z0-9])ENC[-_](" + "|".join(FAMILIES) + r")[-_](\d{3})(?!\d)")
THIS_FILE = Path(__file__).resolve()
HOST_SUITES = "tests/testinfra/"
# Marks a host test that changes the host; the read-only audit leaves it out.
MUTATES = "mutates_host"


def ids_in(paths):
    found = {}
    for path in paths:
        if path.resolve() == THIS_FILE:
            continue
        for family, number in ID.findall(path.read_text(errors="replace")):
            found.setdefault(f"ENC-{family}-{number}", set()).add(path.relative_to(REPO).as_posix())
    return found


def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _role_tags():
    """Tags the playbooks give a whole role (``roles: [{role: X, tags: [...]}]``, play tags)."""
    found = {}
    for path in [REPO / "site.yml", *sorted(REPO.glob("playbooks/*.yml"))]:
        for play in yaml.safe_load(path.read_text()) or []:
            for entry in play.get("roles") or []:
                role = entry.get("role") or entry.get("name") if isinstance(entry, dict) else entry
                tags = _as_list(play.get("tags")) + (_as_list(entry.get("tags")) if isinstance(entry, dict) else [])
                found.setdefault(str(role).rsplit(".", 1)[-1], set()).update(tags)
    return found


def _walk(role_dir, tasks, inherited, found, path, walked):
    """Record, per control ID at the start of a task name, the tags that task runs under.

    Ansible's inheritance: a block's and an import's tags reach every task
    below; an include_tasks passes on its parents' tags and ``apply`` tags,
    not its own.
    """
    walked.add(path)
    for task in tasks or []:
        own = inherited | set(_as_list(task.get("tags")))
        match = ID.match(str(task.get("name", "")))
        if match:
            found.setdefault(f"ENC-{match.group(1)}-{match.group(2)}", []).append((path, own))
        for key in ("block", "rescue", "always"):
            _walk(role_dir, task.get(key), own, found, path, walked)
        for action, passed_on in (("import_tasks", own), ("include_tasks", inherited)):
            target = task.get(f"ansible.builtin.{action}") or task.get(action)
            if not target:
                continue
            name = target if isinstance(target, str) else target.get("file")
            applied = set(_as_list((target.get("apply") or {}).get("tags"))) if isinstance(target, dict) else set()
            child = role_dir / "tasks" / name
            if "{{" not in name and child.is_file():
                tasks_of_child = yaml.safe_load(child.read_text())
                _walk(role_dir, tasks_of_child, passed_on | applied, found, child.relative_to(REPO).as_posix(), walked)


def task_names():
    """Control IDs at the start of task names under roles/*/tasks, blocks included, with the tags each runs under.

    ``{control_id: [(path, tags), ...]}``; a file no main.yml reaches is still
    listed, with the tags of its own tasks only.
    """
    role_tags = _role_tags()
    found, walked = {}, set()
    for role_dir in sorted(path.parent.parent for path in REPO.glob("roles/*/tasks/main.yml")):
        main = role_dir / "tasks" / "main.yml"
        base = role_tags.get(role_dir.name, set())
        _walk(role_dir, yaml.safe_load(main.read_text()), base, found, main.relative_to(REPO).as_posix(), walked)
    for path in sorted(REPO.glob("roles/*/tasks/*.yml")):
        relative = path.relative_to(REPO).as_posix()
        if relative not in walked:
            _walk(path.parent.parent, yaml.safe_load(path.read_text()), set(), found, relative, walked)
    return found


def markers(reference):
    """The pytest marks on a referenced test function (``path::function``), module-level ``pytestmark`` included."""
    path, _sep, function = reference.partition("::")
    tree = ast.parse((REPO / path).read_text())
    names = set()

    def mark_name(node):
        node = node.func if isinstance(node, ast.Call) else node
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark":
            return node.attr
        return None

    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            names |= {mark_name(value) for value in values}
        if isinstance(node, ast.FunctionDef) and node.name == function:
            names |= {mark_name(decorator) for decorator in node.decorator_list}
    return names - {None}


TASKS = task_names()
TASK_FILES = {control_id: {path for path, _tags in entries} for control_id, entries in TASKS.items()}
TESTS = ids_in(sorted(REPO.glob("tests/**/*.py")) + sorted(REPO.glob("molecule/*/tasks/*.yml")))
ALL_TASK_MENTIONS = ids_in(sorted(REPO.glob("roles/*/tasks/*.yml")))


def test_ids_are_unique_and_well_formed():
    ids = [control["id"] for control in CATALOGUE["controls"]]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"ENC-[A-Z]{2}-\d{3}", control_id) for control_id in ids)


def test_the_catalogue_validates():
    assert control_catalogue.validate(CATALOGUE) == []


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
    files = TASK_FILES.get(control_id, set())
    assert any(path.startswith(f"roles/{role}/") for path in files), f"no task of roles/{role} starts with {control_id}"


@pytest.mark.parametrize("control_id", sorted(CONTROLS))
def test_control_tag_is_carried_by_its_tasks(control_id):
    """``--tags TAG`` must reach a task of the control; a null tag only where none of them carries a tag."""
    control = CONTROLS[control_id]
    carried = set().union(
        *(tags for path, tags in TASKS.get(control_id, []) if path.startswith(f"roles/{control['role']}/"))
    )
    if control["tag"] is None:
        assert carried == set(), f"{control_id}: its tasks run under {sorted(carried)}; name one as its tag"
    else:
        assert control["tag"] in carried, (
            f"{control_id}: no task of it carries tag {control['tag']} ({sorted(carried)})"
        )


@pytest.mark.parametrize("control_id", sorted(CONTROLS))
def test_control_has_a_verifying_test_that_exists(control_id):
    assert control_id in TESTS, f"no test names {control_id}"
    for reference in CONTROLS[control_id]["tests"]:
        path, _sep, function = reference.partition("::")
        source = (REPO / path).read_text()
        assert re.search(rf"^def {re.escape(function)}\(", source, re.MULTILINE), f"{reference} does not exist"


@pytest.mark.parametrize("control_id", sorted(CONTROLS))
def test_control_names_a_host_test(control_id):
    """The audit runs the host suites; a control verified elsewhere only would go unaudited."""
    host_tests = [test for test in CONTROLS[control_id]["tests"] if test.startswith(HOST_SUITES)]
    assert host_tests, f"{control_id} names no test under {HOST_SUITES}"


@pytest.mark.parametrize("control_id", sorted(CONTROLS))
def test_control_has_a_read_only_host_test(control_id):
    host_tests = [test for test in CONTROLS[control_id]["tests"] if test.startswith(HOST_SUITES)]
    read_only = [test for test in host_tests if MUTATES not in markers(test)]
    assert read_only, f"every host test of {control_id} is marked {MUTATES}: the read-only audit cannot verify it"


def test_every_id_used_is_in_the_catalogue():
    used = set(TASK_FILES) | set(TESTS) | set(ALL_TASK_MENTIONS)
    unknown = {
        control_id: sorted(
            TASK_FILES.get(control_id, set()) | TESTS.get(control_id, set()) | ALL_TASK_MENTIONS.get(control_id, set())
        )
        for control_id in used - set(CONTROLS)
    }
    assert unknown == {}


def test_controls_md_is_generated_from_the_catalogue():
    rendered = control_catalogue.render_markdown(CATALOGUE)
    assert (REPO / "docs" / "controls.md").read_text() == rendered, "docs/controls.md is stale: run `make controls-doc`"
