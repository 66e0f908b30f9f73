"""plugins/module_utils/evidence/bundle.py and audit_waivers.py, and the evidence_bundle module run as a
script: the status rules, waivers, every refusal before anything is written, check mode, SHA256SUMS and
the gpg signature.

Control IDs here use the family ZZ, which the catalogue does not have, so these made-up controls never
count as tests of real ones (tests/unit/test_controls_catalogue.py).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from ansible_collections.enclave.llm.plugins.module_utils.evidence import audit_waivers
from ansible_collections.enclave.llm.plugins.module_utils.evidence import bundle as lib

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "plugins" / "modules" / "evidence_bundle.py"
SUITE = "tests/testinfra/test_zz.py"
TODAY = datetime.date(2026, 5, 1)


def control(number, *tests, **changes):
    data = {
        "id": f"ENC-ZZ-{number:03d}",
        "title": f"Control {number}",
        "rationale": "Why it matters.",
        "mappings": {"cis_debian12_l1": ["1.1.1"], "bsi": ["SYS.1.1.A1"], "gdpr": ["Art. 32(1)(b)"]},
        "role": "os_hardening",
        "tag": f"zz_{number}",
        "tests": list(tests) or [f"{SUITE}::test_zz_{number}"],
    }
    data.update(changes)
    return data


def result(name, outcome="passed", params="ansible://llm01", message="", commands=None):
    nodeid = f"{SUITE}::{name}" + (f"[{params}]" if params else "")
    return {
        "nodeid": nodeid,
        "outcome": outcome,
        "started": "2026-05-01T08:00:01.000Z",
        "duration_s": 0.25,
        "message": message,
        "commands": commands
        if commands is not None
        else [
            {
                "command": f"echo {name}",
                "rc": 0,
                "stdout": name,
                "stderr": "",
                "started": "2026-05-01T08:00:01.100Z",
                "duration_s": 0.01,
                "phase": "call",
            }
        ],
    }


def results_doc(*tests, exit_code=None, **extra):
    outcomes = {t["outcome"] for t in tests}
    return {
        "schema": 1,
        "started": "2026-05-01T08:00:00.000Z",
        "finished": "2026-05-01T08:00:09.000Z",
        "pytest_exit": exit_code if exit_code is not None else (1 if outcomes & {"failed", "error"} else 0),
        "tests": list(tests),
        **extra,
    }


def catalogue_of(*controls):
    return {"controls": [{**c, "family": "ZZ"} for c in controls]}


def status_of(ctrl, *tests, waivers=(), host="llm01", today=TODAY, collection_errors=(), deselected=()):
    index = lib.index_results(list(tests))
    found = lib.control_result(ctrl, index, list(collection_errors), set(deselected))
    return lib.apply_waiver(found, ctrl["id"], host, list(waivers), today)


def waiver(control_id="ENC-ZZ-001", expires="2026-12-31", hosts=None, **changes):
    data = {"control": control_id, "reason": "vendor fix due", "approver": "A. Auditor, CISO", "expires": expires}
    if hosts is not None:
        data["hosts"] = hosts
    data.update(changes)
    return data


def parsed(*entries, ids=("ENC-ZZ-001", "ENC-ZZ-002")):
    waivers, problems = audit_waivers.parse_waivers({"schema": 1, "waivers": list(entries)}, set(ids))
    assert problems == []
    return waivers


# ---------------------------------------------------------------------------
# Matching results to catalogue references
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodeid", "reference"),
    [
        (f"{SUITE}::test_a[ansible://llm01]", f"{SUITE}::test_a"),
        (f"{SUITE}::test_a[podman://h-param-1]", f"{SUITE}::test_a"),
        (f"{SUITE}::test_a", f"{SUITE}::test_a"),
        (f"{SUITE}::TestClass::test_a[local]", f"{SUITE}::TestClass::test_a"),
        ("tests/testinfra/odd[dir]/test_b.py::test_b[x]", "tests/testinfra/odd[dir]/test_b.py::test_b"),
    ],
)
def test_a_result_matches_its_reference_without_the_parameters(nodeid, reference):
    assert lib.reference_of(nodeid) == reference


def test_a_reference_matches_every_parametrized_result():
    ctrl = control(1)
    found = status_of(ctrl, result("test_zz_1", params="local-1"), result("test_zz_1", params="local-2"))
    assert found["status"] == "passed"
    assert len(found["tests"]) == 2
    assert all(t["reference"] == f"{SUITE}::test_zz_1" for t in found["tests"])


def test_a_similar_name_is_not_a_match():
    found = status_of(control(1), result("test_zz_10"))
    assert found["status"] == "not_verified"


# ---------------------------------------------------------------------------
# Status rules
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (["passed"], "passed"),
        (["passed", "passed"], "passed"),
        (["passed", "skipped"], "passed"),
        (["failed"], "failed"),
        (["error"], "failed"),
        (["passed", "failed"], "failed"),
        (["skipped", "error"], "failed"),
        (["skipped"], "not_applicable"),
        (["skipped", "skipped"], "not_applicable"),
        ([], "not_verified"),
    ],
)
def test_status_from_outcomes(outcomes, expected):
    tests = [result("test_zz_1", outcome, params=f"local-{i}") for i, outcome in enumerate(outcomes)]
    found = status_of(control(1), *tests)
    assert found["status"] == expected
    assert found["result_status"] == expected
    assert found["waiver"] is None


def test_a_failure_message_names_the_test_and_the_assertion():
    message = (
        "host = ...\n    def test():\n>       assert x\nE       AssertionError: sshd allows tcp forwarding\nE  assert 1"
    )
    found = status_of(control(1), result("test_zz_1", "failed", message=message))
    assert found["message"] == (
        f"{SUITE}::test_zz_1[ansible://llm01] failed: AssertionError: sshd allows tcp forwarding"
    )


def test_not_applicable_keeps_the_skip_reasons():
    found = status_of(
        control(1),
        result("test_zz_1", "skipped", params="a", message="auditd_enabled is false in the inventory"),
        result("test_zz_1", "skipped", params="b", message="no GPU on this host"),
    )
    assert found["status"] == "not_applicable"
    assert found["skip_reasons"] == ["auditd_enabled is false in the inventory", "no GPU on this host"]
    assert "auditd_enabled is false" in found["message"]


def test_a_test_that_did_not_run_is_never_passed():
    found = status_of(control(1), result("test_other"))
    assert found["status"] == "not_verified"
    assert "no result for tests/testinfra/test_zz.py::test_zz_1" in found["message"]
    assert "Not run is not passed" in found["message"]


def test_one_reference_without_a_result_leaves_the_control_unverified_even_when_another_passed():
    ctrl = control(1, f"{SUITE}::test_a", f"{SUITE}::test_b")
    found = status_of(ctrl, result("test_a"))
    assert found["status"] == "not_verified"
    assert f"{SUITE}::test_b" in found["message"]
    assert f"{SUITE}::test_a" not in found["message"]


def test_a_reference_deselected_on_purpose_counts_neither_way():
    ctrl = control(1, f"{SUITE}::test_a", f"{SUITE}::test_changes_host")
    found = status_of(ctrl, result("test_a"), deselected=[f"{SUITE}::test_changes_host"])
    assert found["status"] == "passed"
    assert [r["deselected"] for r in found["references"]] == [False, True]


def test_a_control_whose_every_reference_was_deselected_is_not_verified():
    ctrl = control(1, f"{SUITE}::test_changes_host")
    found = status_of(ctrl, deselected=[f"{SUITE}::test_changes_host"])
    assert found["status"] == "not_verified"
    assert "that the audit ran" in found["message"]


def test_deselected_nodeids_are_matched_without_their_parameters(tmp_path):
    ctrl = control(1, f"{SUITE}::test_a", f"{SUITE}::test_changes_host")
    results = {
        "tests": [result("test_a")],
        "deselected": [f"{SUITE}::test_changes_host[ansible://llm01]"],
    }
    evidence = lib.build_evidence("llm01", {"controls": [ctrl]}, results, [], TODAY)
    assert evidence["controls"][0]["status"] == "passed"


def test_a_failure_outweighs_a_missing_result():
    ctrl = control(1, f"{SUITE}::test_a", f"{SUITE}::test_b")
    assert status_of(ctrl, result("test_a", "failed"))["status"] == "failed"


def test_references_outside_the_host_suites_are_not_required():
    ctrl = control(1, f"{SUITE}::test_zz_1", "tests/integration/test_x.py::test_y")
    found = status_of(ctrl, result("test_zz_1"))
    assert found["status"] == "passed"
    assert [r["in_host_audit"] for r in found["references"]] == [True, False]


def test_a_control_with_no_host_suite_test_is_not_verified():
    found = status_of(control(1, "tests/integration/test_x.py::test_y"))
    assert found["status"] == "not_verified"
    assert "names no test under tests/testinfra/" in found["message"]


def test_a_collection_error_is_named_in_the_unverified_message():
    errors = [{"nodeid": SUITE, "message": "E   ImportError: No module named 'yaml'"}]
    found = status_of(control(1), collection_errors=errors)
    assert found["status"] == "not_verified"
    assert "could not be collected: ImportError: No module named 'yaml'" in found["message"]


# ---------------------------------------------------------------------------
# Waivers
# ---------------------------------------------------------------------------


def test_an_active_waiver_waives_and_keeps_the_underlying_result():
    found = status_of(control(1), result("test_zz_1", "failed", message="E  boom"), waivers=parsed(waiver()))
    assert found["status"] == "waived"
    assert found["result_status"] == "failed"
    assert found["waiver"] == {
        "control": "ENC-ZZ-001",
        "reason": "vendor fix due",
        "approver": "A. Auditor, CISO",
        "expires": "2026-12-31",
        "hosts": None,
        "state": "active",
    }
    assert "A. Auditor, CISO" in found["message"]
    assert "boom" in found["message"]
    assert found["tests"][0]["outcome"] == "failed"


def test_a_waiver_holds_through_its_expiry_day():
    found = status_of(control(1), result("test_zz_1", "failed"), waivers=parsed(waiver(expires="2026-05-01")))
    assert found["status"] == "waived"


def test_an_expired_waiver_fails_the_control_and_names_the_date():
    found = status_of(control(1), result("test_zz_1", "failed"), waivers=parsed(waiver(expires="2026-04-30")))
    assert found["status"] == "failed"
    assert found["waiver"]["state"] == "expired"
    assert "expired on 2026-04-30" in found["message"]


def test_an_expired_waiver_fails_even_a_passing_control():
    found = status_of(control(1), result("test_zz_1"), waivers=parsed(waiver(expires="2025-01-01")))
    assert found["status"] == "failed"
    assert found["result_status"] == "passed"


def test_a_renewed_waiver_wins_over_the_expired_one():
    waivers = parsed(waiver(expires="2026-01-31"), waiver(expires="2027-01-31"))
    found = status_of(control(1), result("test_zz_1", "failed"), waivers=waivers)
    assert found["status"] == "waived"
    assert found["waiver"]["expires"] == "2027-01-31"


def test_a_host_scoped_waiver_covers_only_its_hosts():
    waivers = parsed(waiver(hosts=["llm02"]))
    assert status_of(control(1), result("test_zz_1", "failed"), waivers=waivers, host="llm02")["status"] == "waived"
    assert status_of(control(1), result("test_zz_1", "failed"), waivers=waivers, host="llm01")["status"] == "failed"


def test_a_waiver_for_another_control_changes_nothing():
    waivers = parsed(waiver(control_id="ENC-ZZ-002"))
    assert status_of(control(1), result("test_zz_1", "failed"), waivers=waivers)["status"] == "failed"


def test_a_yaml_date_is_accepted():
    data = yaml.safe_load("schema: 1\nwaivers:\n  - {control: ENC-ZZ-001, reason: r, approver: a, expires: 2027-03-31}")
    waivers, problems = audit_waivers.parse_waivers(data, {"ENC-ZZ-001"})
    assert problems == []
    assert waivers[0]["expires"] == "2027-03-31"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (waiver(control_id="ENC-ZZ-999"), "'ENC-ZZ-999' is not a control of the catalogue"),
        (waiver(control_id=""), "names no control"),
        ({k: v for k, v in waiver().items() if k != "expires"}, "has no expires"),
        (waiver(expires=None), "has no expires"),
        (waiver(expires="31.03.2027"), "'31.03.2027' is not a date; write it as YYYY-MM-DD"),
        (waiver(expires="2027-02-30"), "'2027-02-30' is not a date"),
        (waiver(expires=datetime.datetime(2027, 3, 31, 12, 0)), "has a time of day"),
        ({k: v for k, v in waiver().items() if k != "reason"}, "has no reason"),
        (waiver(reason="  "), "has no reason"),
        ({k: v for k, v in waiver().items() if k != "approver"}, "has no approver"),
        (waiver(hosts=[]), "hosts: give a non-empty list"),
        (waiver(hosts="llm01"), "hosts: give a non-empty list"),
        (waiver(expiry="2027-01-01"), "unknown keys expiry"),
        ("ENC-ZZ-001", "waivers[0] is not a mapping"),
    ],
)
def test_bad_waivers_are_refused_with_what_to_fix(entry, expected):
    waivers, problems = audit_waivers.parse_waivers({"schema": 1, "waivers": [entry]}, {"ENC-ZZ-001"})
    assert waivers == []
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (["a list"], "the file is not a mapping"),
        ({"schema": 2, "waivers": []}, "schema is 2"),
        ({"schema": 1, "waivers": {"ENC-ZZ-001": {}}}, "waivers is not a list"),
        ({"schema": 1, "waivers": [], "extra": 1}, "unknown top-level keys extra"),
    ],
)
def test_a_malformed_waivers_document_is_refused(data, expected):
    _waivers, problems = audit_waivers.parse_waivers(data, {"ENC-ZZ-001"})
    assert any(expected in p for p in problems), problems


def test_every_problem_is_reported_at_once():
    entries = [waiver(control_id="ENC-ZZ-999"), waiver(expires="soon"), waiver(approver="")]
    _waivers, problems = audit_waivers.parse_waivers({"schema": 1, "waivers": entries}, {"ENC-ZZ-001"})
    assert len(problems) == 3


def test_the_shipped_example_is_valid():
    catalogue, error = lib.load_catalogue(str(REPO / "docs" / "controls.yml"))
    assert error == ""
    ids = [c["id"] for c in catalogue["controls"]]
    waivers, _sha, error = lib.load_waivers(str(REPO / "docs" / "waivers.example.yml"), ids)
    assert error == ""
    assert waivers


# ---------------------------------------------------------------------------
# Loading inputs
# ---------------------------------------------------------------------------


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_the_real_catalogue_loads():
    catalogue, error = lib.load_catalogue(str(REPO / "docs" / "controls.yml"))
    assert error == ""
    first = catalogue["controls"][0]
    assert first["family"] == first["id"].split("-")[1]
    assert set(first["mappings"]) >= {"cis_debian12_l1", "bsi", "gdpr"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("controls: [unclosed", "is not valid YAML"),
        ("schema: 1\n", "has no controls list"),
        ("controls: []\n", "has no controls list"),
        ("controls:\n  - {id: ENC-ZZ-001}\n", "controls[0] has no id or no title"),
        ("controls:\n  - {id: ENC-ZZ-001, title: a}\n  - {id: ENC-ZZ-001, title: b}\n", "ENC-ZZ-001 is listed twice"),
    ],
)
def test_a_bad_catalogue_is_refused(tmp_path, content, expected):
    path = tmp_path / "controls.yml"
    if content is not None:
        path.write_text(content)
    catalogue, error = lib.load_catalogue(str(path))
    assert catalogue is None
    assert expected in error
    assert str(path) in error


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist: the test run did not produce evidence"),
        ('{"schema": 1, "tests": [', "is not valid JSON"),
        ('{"tests": []}', "is not the audit_evidence plugin's output"),
        ('{"schema": 1, "tests": [{"outcome": "passed"}]}', "tests[0] has no nodeid"),
        ('{"schema": 1, "tests": [{"nodeid": "a::b", "outcome": "xfailed"}]}', "has outcome 'xfailed'"),
    ],
)
def test_unusable_test_results_are_refused(tmp_path, content, expected):
    path = tmp_path / "tests.json"
    if content is not None:
        path.write_text(content)
    results, error = lib.load_test_results(str(path))
    assert results is None
    assert expected in error
    assert "did not produce" in error


def test_facts_must_be_plain_data():
    assert lib.facts_problem({"digest": "abc", "rules": ["-a"], "n": 1}) == ""
    assert lib.facts_problem({"when": datetime.date(2026, 1, 1)}).startswith("facts.when cannot be written as JSON")


# ---------------------------------------------------------------------------
# The evidence document
# ---------------------------------------------------------------------------


def sample_evidence(exit_code=None, waivers=(), **extra):
    catalogue = catalogue_of(control(1), control(2), control(3), control(4))
    results = results_doc(
        result("test_zz_1"),
        result("test_zz_2", "failed", message="E   assert 'yes' == 'no'"),
        result("test_zz_3", "skipped", message="area switched off"),
        result("test_unlisted"),
        exit_code=exit_code,
        **extra,
    )
    return lib.build_evidence(
        "llm01",
        catalogue,
        results,
        list(waivers),
        TODAY,
        facts={"ruleset_digest": "abc"},
        audited_at="2026-05-01T08:00:00Z",
        collection_version="0.1.0",
        git_commit="0" * 40,
    )


def test_the_evidence_counts_every_status_and_fails_on_a_blocking_one():
    evidence = sample_evidence()
    assert evidence["summary"] == {
        "passed": 1,
        "failed": 1,
        "not_applicable": 1,
        "not_verified": 1,
        "waived": 0,
        "total": 4,
    }
    assert evidence["status"] == "failed"
    assert evidence["failed_controls"] == ["ENC-ZZ-002"]
    assert evidence["not_verified_controls"] == ["ENC-ZZ-004"]
    assert [t["nodeid"] for t in evidence["unreferenced_tests"]] == [f"{SUITE}::test_unlisted[ansible://llm01]"]
    assert evidence["facts"] == {"ruleset_digest": "abc"}
    assert evidence["controls"][0]["tests"][0]["commands"][0]["stdout"] == "test_zz_1"


def test_waived_and_not_applicable_controls_pass_the_bundle():
    waivers = parsed(
        waiver(control_id="ENC-ZZ-002"),
        waiver(control_id="ENC-ZZ-004"),
        ids=("ENC-ZZ-002", "ENC-ZZ-004"),
    )
    evidence = sample_evidence(waivers=waivers)
    assert evidence["status"] == "passed"
    assert evidence["waived_controls"] == ["ENC-ZZ-002", "ENC-ZZ-004"]
    assert [w["control"] for w in evidence["waivers"]["applied"]] == ["ENC-ZZ-002", "ENC-ZZ-004"]


@pytest.mark.parametrize(("exit_code", "word"), [(2, "interrupted"), (3, "internal error"), (4, "usage error")])
def test_a_broken_test_run_fails_the_bundle(exit_code, word):
    waivers = parsed(waiver(control_id="ENC-ZZ-002"), waiver(control_id="ENC-ZZ-004"), ids=("ENC-ZZ-002", "ENC-ZZ-004"))
    evidence = sample_evidence(exit_code=exit_code, waivers=waivers)
    assert evidence["status"] == "failed"
    assert word in evidence["problems"][0]


# ---------------------------------------------------------------------------
# SHA256SUMS
# ---------------------------------------------------------------------------


def test_sha256sums_verify_with_sha256sum_and_catch_tampering(tmp_path):
    files = {"evidence.json": b"{}\n", "report.html": b"<html>", "odd name.txt": b"x", "back\\slash": b"y"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "SHA256SUMS").write_bytes(lib.render_sums(files))
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    (tmp_path / "report.html").write_bytes(b"<html>changed")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert check.returncode != 0
    assert "report.html: FAILED" in check.stdout


def test_existing_files_are_covered_but_not_the_sums_or_temp_files(tmp_path):
    (tmp_path / "tests.json").write_text("{}")
    (tmp_path / "SHA256SUMS").write_text("old")
    (tmp_path / "SHA256SUMS.asc").write_text("old")
    (tmp_path / ".tmp-abc").write_text("half")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "tests.json")
    assert lib.existing_files(str(tmp_path)) == {"tests.json": b"{}"}


# ---------------------------------------------------------------------------
# The module, run as Ansible runs it
# ---------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path):
    """A catalogue, the plugin's results in the bundle folder, and a waivers file."""
    catalogue = write_yaml(
        tmp_path / "controls.yml",
        {"schema": 1, "controls": [control(1), control(2), control(3)]},
    )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    results = bundle / "tests.json"
    results.write_text(
        json.dumps(
            results_doc(
                result("test_zz_1"),
                result("test_zz_2", "failed", message="E  <script>alert(1)</script>"),
                result("test_zz_3", "skipped", message="off here"),
            )
        )
    )
    waivers = write_yaml(tmp_path / "waivers.yml", {"schema": 1, "waivers": [waiver(control_id="ENC-ZZ-002")]})
    return {
        "host": "llm01",
        "catalogue": catalogue,
        "test_results": str(results),
        "waivers": waivers,
        "dest": str(bundle),
        "collection_version": "0.1.0",
        "git_commit": "1" * 40,
        "today": "2026-05-01",
        "audited_at": "2026-05-01T08:00:00Z",
        "facts": {"ruleset_digest": "abc", "packages": {"nftables": "1.0.6-2"}},
    }


def run_module(tmp_path, args, check_mode=False, env=None):
    path = tmp_path / f"args-{len(list(tmp_path.glob('args-*')))}.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / ".collections"), **(env or {})},
        timeout=120,
        check=False,
    )
    return json.loads(completed.stdout)


def folder_state(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def test_the_module_writes_a_complete_bundle(tmp_path, inputs):
    out = run_module(tmp_path, inputs)
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is True
    assert out["status"] == "passed"
    assert out["summary"] == {
        "passed": 1,
        "failed": 0,
        "not_applicable": 1,
        "not_verified": 0,
        "waived": 1,
        "total": 3,
    }
    assert out["waived_controls"] == ["ENC-ZZ-002"]
    assert out["failed_controls"] == []
    assert out["signed"] is False
    bundle = Path(inputs["dest"])
    assert sorted(p.name for p in bundle.iterdir()) == [
        "SHA256SUMS",
        "evidence.json",
        "junit.xml",
        "report.html",
        "tests.json",
    ]
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "tests.json: OK" in check.stdout
    assert out["bundle_digest"] == lib.sha256_hex((bundle / "SHA256SUMS").read_bytes())
    evidence = json.loads((bundle / "evidence.json").read_text())
    assert evidence["git_commit"] == "1" * 40
    assert evidence["audited_at"] == "2026-05-01T08:00:00Z"
    assert evidence["facts"]["packages"] == {"nftables": "1.0.6-2"}
    assert evidence["sources"]["waivers"]["sha256"] == lib.sha256_hex(Path(inputs["waivers"]).read_bytes())
    waived = next(c for c in evidence["controls"] if c["id"] == "ENC-ZZ-002")
    assert waived["result_status"] == "failed"
    assert waived["tests"][0]["message"] == "E  <script>alert(1)</script>"
    assert "<script>alert(1)</script>" not in (bundle / "report.html").read_text()


def test_the_junit_file_has_one_case_per_control(tmp_path, inputs):
    inputs.pop("waivers")
    run_module(tmp_path, inputs)
    root = ET.parse(Path(inputs["dest"]) / "junit.xml").getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name").split()[0] for c in cases] == ["ENC-ZZ-001", "ENC-ZZ-002", "ENC-ZZ-003"]
    assert {c.get("classname") for c in cases} == {"ZZ"}
    assert cases[0].find("failure") is None
    assert cases[0].find("skipped") is None
    assert "<script>" in cases[1].find("failure").get("message")
    assert cases[2].find("skipped") is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "3",
        "1",
        "0",
        "1",
    )
    assert suite.get("timestamp") == "2026-05-01T08:00:00"


def test_check_mode_computes_everything_and_writes_nothing(tmp_path, inputs):
    before = folder_state(inputs["dest"])
    out = run_module(tmp_path, inputs, check_mode=True)
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is True
    assert out["status"] == "passed"
    assert len(out["bundle_digest"]) == 64
    assert folder_state(inputs["dest"]) == before


def test_check_mode_into_a_missing_folder_creates_nothing(tmp_path, inputs):
    inputs["dest"] = str(tmp_path / "new")
    out = run_module(tmp_path, inputs, check_mode=True)
    assert not out.get("failed"), out.get("msg")
    assert not (tmp_path / "new").exists()


def test_an_expired_waiver_fails_the_bundle(tmp_path, inputs):
    inputs["today"] = "2027-01-01"
    out = run_module(tmp_path, inputs)
    assert out["status"] == "failed"
    assert out["failed_controls"] == ["ENC-ZZ-002"]
    evidence = json.loads((Path(inputs["dest"]) / "evidence.json").read_text())
    assert "expired on 2026-12-31" in evidence["controls"][1]["message"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"catalogue": "/nonexistent/controls.yml"}, "catalogue /nonexistent/controls.yml does not exist"),
        ({"catalogue": "{bad yaml"}, "is not valid YAML"),
        ({"test_results": "/nonexistent/tests.json"}, "the test run did not produce evidence"),
        ({"test_results": "not json"}, "is not valid JSON"),
        ({"waivers": "[unclosed"}, "is not valid YAML"),
        ({"waivers": "/nonexistent/waivers.yml"}, "waivers /nonexistent/waivers.yml does not exist"),
        ({"waivers": {"control": "ENC-ZZ-999"}}, "'ENC-ZZ-999' is not a control of the catalogue"),
        ({"waivers": {"expires": None}}, "has no expires"),
        ({"waivers": {"expires": "next year"}}, "'next year' is not a date"),
        ({"waivers": {"reason": ""}}, "has no reason"),
        ({"waivers": {"approver": None}}, "has no approver"),
        ({"today": "01.05.2026"}, "today '01.05.2026' is not a date"),
        ({"audited_at": "yesterday"}, "audited_at 'yesterday' is not an ISO 8601 time"),
        (
            {"signing_key": "nobody@example.invalid", "gnupghome": "/nonexistent"},
            "gnupghome /nonexistent is not a folder",
        ),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_written(tmp_path, inputs, change, expected):
    for key, value in change.items():
        if key in ("catalogue", "test_results") and not value.startswith("/"):
            path = tmp_path / f"bad-{key}"
            path.write_text(value)
            value = str(path)
        elif key == "waivers" and isinstance(value, dict):
            value = write_yaml(tmp_path / "bad-waivers.yml", {"schema": 1, "waivers": [{**waiver(), **value}]})
        elif key == "waivers" and not value.startswith("/"):
            path = tmp_path / "bad-waivers.yml"
            path.write_text(value)
            value = str(path)
        inputs[key] = value
    before = folder_state(inputs["dest"])
    out = run_module(tmp_path, inputs)
    assert out.get("failed") is True
    assert expected in out["msg"], out["msg"]
    assert folder_state(inputs["dest"]) == before


def test_signing_without_gpg_is_refused(tmp_path, inputs):
    if shutil.which("gpg", path="/sbin:/usr/sbin:/usr/local/sbin"):
        pytest.skip("gpg lies in an sbin folder, where Ansible always looks")
    inputs["signing_key"] = "audit@example.invalid"
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    before = folder_state(inputs["dest"])
    out = run_module(tmp_path, inputs, env={"PATH": str(empty)})
    assert out.get("failed") is True
    assert "gpg is not installed on the controller" in out["msg"]
    assert folder_state(inputs["dest"]) == before


# ---------------------------------------------------------------------------
# Signing, with a throwaway key
# ---------------------------------------------------------------------------

GPG = shutil.which("gpg")


@pytest.fixture(scope="module")
def gnupghome(tmp_path_factory):
    if GPG is None:
        pytest.skip("gpg is not installed")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    subprocess.run(
        [GPG, "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
         "Audit Signer <audit@example.invalid>", "ed25519", "sign", "never"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield str(home)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True)


def gpg_verify(gnupghome, bundle):
    return subprocess.run(
        [GPG, "--homedir", gnupghome, "--batch", "--verify", "SHA256SUMS.asc", "SHA256SUMS"],
        cwd=bundle,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_signed_bundle_verifies_and_tampering_breaks_it(tmp_path, inputs, gnupghome):
    inputs.update(signing_key="audit@example.invalid", gnupghome=gnupghome)
    out = run_module(tmp_path, inputs)
    assert not out.get("failed"), out.get("msg")
    assert out["signed"] is True
    assert "SHA256SUMS.asc" in out["files"]
    assert any("--detach-sign" in c and "--local-user audit@example.invalid" in c for c in out["commands"])
    bundle = Path(inputs["dest"])
    assert (bundle / "SHA256SUMS.asc").read_text().startswith("-----BEGIN PGP SIGNATURE-----")
    verified = gpg_verify(gnupghome, bundle)
    assert verified.returncode == 0, verified.stderr
    assert 'Good signature from "Audit Signer' in verified.stderr
    sums = bundle / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("evidence.json", "evidence.jso"))
    assert gpg_verify(gnupghome, bundle).returncode != 0


def test_an_unsigned_rerun_removes_the_stale_signature(tmp_path, inputs, gnupghome):
    run_module(tmp_path, {**inputs, "signing_key": "audit@example.invalid", "gnupghome": gnupghome})
    assert (Path(inputs["dest"]) / "SHA256SUMS.asc").exists()
    out = run_module(tmp_path, inputs)
    assert out["signed"] is False
    assert not (Path(inputs["dest"]) / "SHA256SUMS.asc").exists()


def test_a_key_not_in_the_keyring_is_refused_before_writing(tmp_path, inputs, gnupghome):
    inputs.update(signing_key="someone-else@example.invalid", gnupghome=gnupghome)
    before = folder_state(inputs["dest"])
    out = run_module(tmp_path, inputs)
    assert out.get("failed") is True
    assert "signing_key 'someone-else@example.invalid' is not in the secret keyring" in out["msg"]
    assert "gpg --list-secret-keys" in out["msg"]
    assert folder_state(inputs["dest"]) == before


def test_check_mode_checks_the_key_but_does_not_sign(tmp_path, inputs, gnupghome):
    inputs.update(signing_key="audit@example.invalid", gnupghome=gnupghome)
    before = folder_state(inputs["dest"])
    out = run_module(tmp_path, inputs, check_mode=True)
    assert not out.get("failed"), out.get("msg")
    assert out["signed"] is False
    assert [c.split()[-1] for c in out["commands"]] == ["audit@example.invalid"]
    assert "--list-secret-keys" in out["commands"][0]
    assert folder_state(inputs["dest"]) == before


@pytest.mark.skipif(not (Path(sys.executable).parent / "ansible").exists(), reason="ansible is not in this venv")
def test_ansible_runs_the_module_from_the_collection(tmp_path, inputs):
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", "enclave.llm.evidence_bundle",
         "-a", json.dumps(inputs), "-o"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        timeout=180,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert '"status": "passed"' in completed.stdout
    assert (Path(inputs["dest"]) / "report.html").is_file()


def test_inputs_only_accepts_good_inputs_without_results_or_a_folder(tmp_path, inputs):
    args = {"host": "llm01", "catalogue": inputs["catalogue"], "waivers": inputs["waivers"], "inputs_only": True}
    out = run_module(tmp_path, args)
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is False
    assert not Path(inputs["dest"]).joinpath("evidence.json").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"control": "ENC-ZZ-999"}, "ENC-ZZ-999"),
        ({"expires": None}, "expires"),
    ],
)
def test_inputs_only_refuses_a_bad_waiver(tmp_path, inputs, change, expected):
    entry = {k: v for k, v in waiver(**change).items() if v is not None}
    waivers = write_yaml(tmp_path / "bad-waivers.yml", {"schema": 1, "waivers": [entry]})
    args = {"host": "llm01", "catalogue": inputs["catalogue"], "waivers": waivers, "inputs_only": True}
    out = run_module(tmp_path, args)
    assert out.get("failed"), out
    assert expected in out["msg"]


def test_inputs_only_refuses_a_signing_key_that_is_not_there(tmp_path, inputs, gnupghome):
    args = {
        "host": "llm01",
        "catalogue": inputs["catalogue"],
        "inputs_only": True,
        "signing_key": "nobody@audit.invalid",
        "gnupghome": str(gnupghome),
    }
    out = run_module(tmp_path, args)
    assert out.get("failed"), out
    assert "nobody@audit.invalid" in out["msg"]


def test_results_and_a_folder_are_required_for_a_bundle(tmp_path, inputs):
    out = run_module(tmp_path, {"host": "llm01", "catalogue": inputs["catalogue"]})
    assert out.get("failed"), out
    assert "test_results" in out["msg"]
