"""plugins/module_utils/evidence/control_catalogue.py: loading, the shape check, and the generated document."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.enclave.llm.plugins.module_utils.evidence import control_catalogue as lib

REPO = Path(__file__).resolve().parents[2]
MODULE = "ansible_collections.enclave.llm.plugins.module_utils.evidence.control_catalogue"


def control(control_id="ENC-FW-001", **changes):
    entry = {
        "id": control_id,
        "title": "Default drop in every direction",
        "rationale": "What is not allowed is dropped.",
        "mappings": {"cis_debian12_l1": ["4.3.8"], "bsi": ["NET.3.2.A2"], "gdpr": ["Art. 32(1)(b)"]},
        "role": "firewall",
        "tag": "firewall_apply",
        "tests": ["tests/testinfra/test_isolation.py::test_ENC_FW_001_every_direction_drops_by_default"],
    }
    entry.update(changes)
    return entry


def catalogue(*controls):
    return {"schema": 1, "description": "test", "controls": list(controls) or [control()]}


def test_a_well_formed_catalogue_has_no_problem():
    assert lib.validate(catalogue(control(), control("ENC-MS-002", role="model_store", tag=None))) == []


def test_the_collections_catalogue_is_well_formed():
    assert lib.validate(lib.load(REPO / "docs" / "controls.yml")) == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param(control(id="FW-1"), "id must be ENC-<two capitals>-<three digits>", id="bad-id"),
        pytest.param(control(title=""), "title must be non-empty text", id="empty-title"),
        pytest.param(control(rationale=None), "rationale must be non-empty text", id="no-rationale"),
        pytest.param(control(role=3), "role must be non-empty text", id="role-not-text"),
        pytest.param(control(tag=""), "tag must be the tag its tasks carry, or null", id="empty-tag"),
        pytest.param(control(tests=[]), "tests must list at least one test", id="no-tests"),
        pytest.param(control(tests=["test_isolation.py"]), "is not tests/<path>.py::<function>", id="bad-test"),
        pytest.param(control(tests=["tests/a.py::t", "tests/a.py::t"]), "a test is listed twice", id="twice"),
        pytest.param(control(mappings=[]), "mappings must be a mapping", id="mappings-list"),
        pytest.param(
            control(mappings={"cis_debian12_l1": [], "bsi": []}), "mappings lack gdpr (an empty list", id="no-gdpr"
        ),
        pytest.param(
            control(mappings={"cis_debian12_l1": [], "bsi": [], "gdpr": [], "nist": []}),
            "unknown mappings nist",
            id="unknown-mapping",
        ),
        pytest.param(
            control(mappings={"cis_debian12_l1": [1.1], "bsi": [], "gdpr": []}),
            "entry 1.1 is not text; quote it",
            id="cis-read-as-number",
        ),
        pytest.param(
            control(mappings={"cis_debian12_l1": ["four"], "bsi": [], "gdpr": []}),
            "'four' is not a cis_debian12_l1 reference",
            id="cis-not-a-number",
        ),
        pytest.param(
            control(mappings={"cis_debian12_l1": [], "bsi": ["NET 3.2"], "gdpr": []}),
            "'NET 3.2' is not a bsi reference",
            id="bsi-malformed",
        ),
        pytest.param(
            control(mappings={"cis_debian12_l1": [], "bsi": [], "gdpr": ["32(1)(b)"]}),
            "'32(1)(b)' is not a gdpr reference",
            id="gdpr-without-article",
        ),
        pytest.param(
            control(mappings={"cis_debian12_l1": ["4.3.8", "4.3.8"], "bsi": [], "gdpr": []}),
            "mappings.cis_debian12_l1 lists a reference twice",
            id="reference-twice",
        ),
        pytest.param(control(owner="it"), "unknown keys owner", id="unknown-key"),
    ],
)
def test_each_problem_has_a_message_naming_the_control(entry, message):
    problems = lib.validate(catalogue(entry))
    assert len(problems) == 1, problems
    assert message in problems[0]
    assert problems[0].startswith(str(entry["id"]))


def test_a_missing_field_is_named():
    entry = control()
    del entry["tag"], entry["tests"]
    assert lib.validate(catalogue(entry)) == ["ENC-FW-001: missing tag, tests"]


def test_an_id_listed_twice_is_reported():
    assert lib.validate(catalogue(control(), control())) == ["ENC-FW-001: listed twice"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param([], "must be a mapping", id="not-a-mapping"),
        pytest.param({"schema": 1, "controls": []}, "controls must be a non-empty list", id="no-controls"),
        pytest.param({"schema": 2, "controls": [control()]}, "schema must be 1, not 2", id="schema"),
        pytest.param({"schema": 1, "controls": ["ENC-FW-001"]}, "controls[0] is not a mapping", id="entry-text"),
    ],
)
def test_a_catalogue_of_the_wrong_shape_is_refused(data, message):
    assert any(message in problem for problem in lib.validate(data)), lib.validate(data)


def test_every_problem_is_reported_at_once():
    problems = lib.validate(catalogue(control(title="", tag="", tests=[]), control("ENC-MS-001", role="")))
    assert len(problems) == 4, problems


def test_load_reads_the_yaml(tmp_path):
    path = tmp_path / "controls.yml"
    path.write_text(yaml.safe_dump(catalogue()))
    assert lib.load(path) == catalogue()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("controls: [", "is not valid YAML", id="broken"),
        pytest.param("- ENC-FW-001\n", "holds no mapping", id="a-list"),
    ],
)
def test_load_says_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "controls.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        lib.load(path)


def test_the_document_has_a_table_per_family_in_catalogue_order():
    text = lib.render_markdown(
        catalogue(control("ENC-MS-001", role="model_store", tag=None), control(), control("ENC-MS-002"))
    )
    assert text.index("## Model store (ENC-MS)") < text.index("## Firewall (ENC-FW)")
    assert "3 controls in 2 families:" in text
    assert "- [Model store (ENC-MS)](#model-store-enc-ms): 2" in text
    assert "| ID | Title | Role | Tag | CIS | BSI | GDPR |" in text
    row = (
        "| [ENC-FW-001](#enc-fw-001) | Default drop in every direction | `firewall` | `firewall_apply` "
        "| 4.3.8 | NET.3.2.A2 | Art. 32(1)(b) |"
    )
    assert row in text


def test_the_document_gives_each_control_its_rationale_and_tests():
    text = lib.render_markdown(catalogue())
    section = text[text.index("### ENC-FW-001") :]
    assert "**Default drop in every direction**" in section
    assert "What is not allowed is dropped." in section
    assert "- `tests/testinfra/test_isolation.py::test_ENC_FW_001_every_direction_drops_by_default`" in section


def test_the_document_says_it_is_generated_and_how_to_regenerate():
    text = lib.render_markdown(catalogue())
    assert "generated from [`controls.yml`](controls.yml)" in text
    assert "make controls-doc" in text
    assert lib.REGENERATE in text


def test_empty_references_a_null_tag_and_markup_in_text_render_safely():
    entry = control(
        title="Weights under /srv/models/<name> | read-only",
        tag=None,
        mappings={"cis_debian12_l1": [], "bsi": ["SYS.1.1.A3"], "gdpr": []},
    )
    row = next(line for line in lib.render_markdown(catalogue(entry)).splitlines() if line.startswith("| [ENC"))
    assert "/srv/models/&lt;name&gt; \\| read-only" in row
    assert row.endswith("| `firewall` | — | — | SYS.1.1.A3 | — |")


def test_an_unknown_family_still_gets_a_section():
    text = lib.render_markdown(catalogue(control("ENC-ZZ-001")))
    assert "## Controls (ENC-ZZ)" in text


def test_rendering_is_deterministic_and_does_not_change_the_catalogue():
    data = catalogue(control(), control("ENC-MS-001", role="model_store", tag=None))
    before = copy.deepcopy(data)
    assert lib.render_markdown(data) == lib.render_markdown(data)
    assert data == before


def test_main_prints_the_document(tmp_path, capsys):
    path = tmp_path / "controls.yml"
    path.write_text(yaml.safe_dump(catalogue()))
    assert lib.main([str(path)]) == 0
    assert capsys.readouterr().out == lib.render_markdown(catalogue())


def test_main_refuses_a_malformed_catalogue_with_every_problem(tmp_path, capsys):
    path = tmp_path / "controls.yml"
    path.write_text(yaml.safe_dump(catalogue(control(title="", tests=[]))))
    assert lib.main([str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ENC-FW-001: title must be non-empty text" in captured.err
    assert "ENC-FW-001: tests must list at least one test" in captured.err


def test_main_reports_a_missing_file_and_a_wrong_call(tmp_path, capsys):
    assert lib.main([str(tmp_path / "missing.yml")]) == 1
    assert "missing.yml" in capsys.readouterr().err
    assert lib.main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_it_runs_as_a_module_from_the_collection_path():
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "docs/controls.yml"],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / ".collections"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "docs" / "controls.md").read_text()
