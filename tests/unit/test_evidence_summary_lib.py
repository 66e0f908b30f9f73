"""plugins/module_utils/evidence/summary.py and the evidence_summary module run as a script: the fleet
passes only when every host was audited, passed and still matches its SHA256SUMS.

Bundles are written with the evidence_bundle library itself, so the summary reads what the audit writes.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.evidence import bundle as bundle_lib
from ansible_collections.enclave.llm.plugins.module_utils.evidence import summary as lib

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "plugins" / "modules" / "evidence_summary.py"
SUITE = "tests/testinfra/test_zz.py"


def write_bundle(folder: Path, host: str, outcome: str = "passed") -> Path:
    """A host bundle as evidence_bundle writes it: one control, whose one test had ``outcome``."""
    catalogue = {
        "controls": [
            {
                "id": "ENC-ZZ-001",
                "title": "Control <one>",
                "rationale": "r",
                "family": "ZZ",
                "role": "os_hardening",
                "tag": "zz",
                "mappings": {"cis_debian12_l1": ["1.1"], "bsi": [], "gdpr": []},
                "tests": [f"{SUITE}::test_zz_1"],
            }
        ]
    }
    results = {
        "schema": 1,
        "pytest_exit": 0 if outcome == "passed" else 1,
        "tests": [
            {
                "nodeid": f"{SUITE}::test_zz_1[ansible://{host}]",
                "outcome": outcome,
                "message": "E   assert 'on' == 'off'" if outcome == "failed" else "",
                "commands": [],
            }
        ],
    }
    evidence = bundle_lib.build_evidence(
        host, catalogue, results, [], datetime.date(2026, 5, 1), audited_at="2026-05-01T08:00:00Z"
    )
    folder.mkdir(parents=True)
    files = bundle_lib.render_files(evidence)
    bundle_lib.write_bundle(str(folder), files, bundle_lib.render_sums(files))
    return folder


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "20260501T080000Z"
    write_bundle(run / "llm01", "llm01")
    write_bundle(run / "llm02", "llm02", "failed")
    return run


def summarise(folders, unreachable=(), dest=None):
    bundles = []
    for folder in folders:
        evidence, error = lib.load_bundle(str(folder))
        assert error == ""
        bundles.append((str(folder), evidence))
    return lib.build_summary(bundles, list(unreachable), str(dest or Path(folders[0]).parent), "2026-05-01T09:00:00Z")


def test_every_host_passing_passes_the_fleet(run_dir):
    summary, _evidences, links, error = summarise([run_dir / "llm01"])
    assert error == ""
    assert summary["status"] == "passed"
    assert summary["hosts"]["llm01"]["status"] == "passed"
    assert summary["hosts"]["llm01"]["integrity_problem"] == ""
    assert summary["hosts"]["llm01"]["bundle_digest"] == bundle_lib.sha256_hex(
        (run_dir / "llm01" / "SHA256SUMS").read_bytes()
    )
    assert links == {"llm01": "llm01/report.html"}


def test_one_failing_host_fails_the_fleet(run_dir):
    summary, _evidences, _links, _error = summarise([run_dir / "llm01", run_dir / "llm02"])
    assert summary["status"] == "failed"
    assert summary["hosts"]["llm02"]["failed_controls"] == ["ENC-ZZ-001"]
    assert summary["totals"]["passed"] == 1
    assert summary["totals"]["failed"] == 1


def test_an_unreachable_host_is_not_audited_and_fails_the_fleet(run_dir):
    summary, _evidences, _links, _error = summarise([run_dir / "llm01"], unreachable=["llm03"])
    assert summary["status"] == "failed"
    assert summary["not_audited"] == ["llm03"]
    assert "llm03" not in summary["hosts"]


def test_an_empty_audit_is_not_a_pass(tmp_path):
    summary, _evidences, _links, error = lib.build_summary([], [], str(tmp_path))
    assert error == ""
    assert summary["status"] == "failed"
    assert summary["problems"] == ["no host was audited: an empty audit proves nothing"]


def test_a_tampered_bundle_fails_its_host(run_dir):
    report = run_dir / "llm01" / "report.html"
    report.write_text(report.read_text().replace("Failed", "Passed"))
    summary, _evidences, _links, _error = summarise([run_dir / "llm01"])
    assert summary["status"] == "failed"
    assert summary["hosts"]["llm01"]["status"] == "failed"
    assert (
        summary["hosts"]["llm01"]["integrity_problem"]
        == "the bundle does not match its SHA256SUMS (report.html changed)"
    )


def test_a_bundle_without_sums_fails_its_host(run_dir):
    (run_dir / "llm01" / "SHA256SUMS").unlink()
    summary, _evidences, _links, _error = summarise([run_dir / "llm01"])
    assert summary["hosts"]["llm01"]["status"] == "failed"
    assert "SHA256SUMS is missing" in summary["hosts"]["llm01"]["integrity_problem"]


def test_the_same_host_twice_is_refused(run_dir, tmp_path):
    write_bundle(tmp_path / "again" / "llm01", "llm01")
    _summary, _evidences, _links, error = summarise([run_dir / "llm01", tmp_path / "again" / "llm01"])
    assert "two bundles are for host llm01" in error


def test_a_host_both_audited_and_unreachable_is_refused(run_dir):
    _summary, _evidences, _links, error = summarise([run_dir / "llm01"], unreachable=["llm01"])
    assert "llm01 is listed as unreachable and also has a bundle" in error


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda folder: None, "is not a folder"),
        (lambda folder: folder.mkdir(), "has no evidence.json: evidence_bundle did not finish for that host"),
        (lambda folder: (folder.mkdir(), (folder / "evidence.json").write_text("{")), "is not valid JSON"),
        (lambda folder: (folder.mkdir(), (folder / "evidence.json").write_text("{}")), "is not an evidence bundle"),
    ],
)
def test_a_bundle_folder_without_readable_evidence_is_refused(tmp_path, setup, expected):
    folder = tmp_path / "llm09"
    setup(folder)
    evidence, error = lib.load_bundle(str(folder))
    assert evidence is None
    assert expected in error


def test_the_junit_summary_has_a_suite_per_host_and_an_error_per_unreachable_host(run_dir):
    summary, evidences, links, _error = summarise([run_dir / "llm01", run_dir / "llm02"], unreachable=["llm03"])
    root = ET.fromstring(lib.render_files(summary, evidences, links)[lib.SUMMARY_JUNIT])
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert sorted(suites) == ["llm01", "llm02", "llm03"]
    assert suites["llm02"].find("testcase/failure") is not None
    assert suites["llm02"].find("testcase").get("classname") == "llm02.ZZ"
    assert suites["llm03"].find("testcase/error").get("type") == "not_audited"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")


def test_the_html_summary_links_each_report_and_shows_unreachable_hosts(run_dir):
    summary, evidences, links, _error = summarise([run_dir / "llm01", run_dir / "llm02"], unreachable=["llm<03>"])
    page = lib.render_files(summary, evidences, links)[lib.SUMMARY_HTML].decode()
    assert '<a href="llm01/report.html">llm01</a>' in page
    assert 'id="host-llm01" class="status-passed"' in page
    assert 'id="host-llm02" class="status-failed"' in page
    assert 'id="host-llm&lt;03&gt;" class="status-not_audited"' in page
    assert "llm<03>" not in page
    assert "<script" not in page
    assert "http://" not in page
    assert "https://" not in page


# ---------------------------------------------------------------------------
# The module, run as Ansible runs it
# ---------------------------------------------------------------------------


def run_module(tmp_path, args, check_mode=False):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    completed = subprocess.run(
        [sys.executable, str(MODULE), str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / ".collections")},
        timeout=120,
        check=False,
    )
    return json.loads(completed.stdout)


def test_the_module_writes_the_summary(tmp_path, run_dir):
    args = {"bundles": [str(run_dir / "llm01"), str(run_dir / "llm02")], "unreachable": ["llm03"], "dest": str(run_dir)}
    out = run_module(tmp_path, args)
    assert not out.get("failed"), out.get("msg")
    assert out["changed"] is True
    assert out["status"] == "failed"
    assert out["not_audited"] == ["llm03"]
    assert {host: entry["status"] for host, entry in out["hosts"].items()} == {"llm01": "passed", "llm02": "failed"}
    for name in ("summary.json", "summary.html", "summary.junit.xml"):
        assert (run_dir / name).is_file(), name
    written = json.loads((run_dir / "summary.json").read_text())
    assert written["status"] == "failed"
    assert written["hosts"]["llm01"]["report"] == "llm01/report.html"
    ET.parse(run_dir / "summary.junit.xml")


def test_the_module_in_check_mode_writes_nothing(tmp_path, run_dir):
    out = run_module(tmp_path, {"bundles": [str(run_dir / "llm01")], "dest": str(tmp_path / "out")}, check_mode=True)
    assert not out.get("failed"), out.get("msg")
    assert out["status"] == "passed"
    assert not (tmp_path / "out").exists()


def test_the_module_refuses_a_bundle_without_evidence(tmp_path, run_dir):
    (run_dir / "llm09").mkdir()
    out = run_module(tmp_path, {"bundles": [str(run_dir / "llm09")], "dest": str(run_dir)})
    assert out.get("failed") is True
    assert f"bundle {run_dir / 'llm09'} has no evidence.json" in out["msg"]
    assert not (run_dir / "summary.json").exists()
