"""module_utils/aide_report: the findings, entries and identity of AIDE's check
report (AIDE 0.18.3 as in Debian 12, recorded in tests/unit/fixtures/aide/), and
the acknowledgement an operator writes for one report (ENC-OS-022)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.hardening import aide_report as lib

FIXTURES = Path(__file__).parent / "fixtures" / "aide"


def fixture(name):
    return (FIXTURES / name).read_text()


def test_the_entries_name_each_change_and_its_kind():
    assert lib.entries(fixture("check_changed.txt")) == [
        {"change": "added", "path": "/tmp/aidet/w/sub/added"},
        {"change": "removed", "path": "/tmp/aidet/w/three"},
        {"change": "changed", "path": "/tmp/aidet/w/one"},
        {"change": "changed", "path": "/tmp/aidet/w/sub/two"},
    ]


def test_a_clean_report_has_no_entries_and_no_id():
    assert lib.entries(fixture("check_clean.txt")) == []
    assert lib.report_id(fixture("check_clean.txt")) is None


def test_the_findings_leave_out_timestamps_and_the_database_digests():
    lines = lib.findings(fixture("check_changed.txt"))
    assert lines[0] == "AIDE found differences between database and filesystem!!"
    assert "File: /tmp/aidet/w/one" in lines
    text = "\n".join(lines)
    assert "timestamp" not in text
    assert "MD5" not in text
    assert not any(set(line) == {"-"} for line in lines)


def test_the_id_is_the_same_for_the_same_findings_at_another_time():
    report = fixture("check_changed.txt")
    later = report.replace("2026-12-07 06:42:34", "2027-01-02 03:04:05").replace("guWTE3Uu", "zzzzzzzz")
    assert lib.report_id(report) == lib.report_id(later)
    assert len(lib.report_id(report)) == 12


def test_one_more_change_gives_another_id():
    report = fixture("check_changed.txt")
    more = report.replace(
        "f-----------------: /tmp/aidet/w/three",
        "f-----------------: /tmp/aidet/w/three\nf-----------------: /tmp/aidet/w/four",
    )
    assert lib.report_id(more) != lib.report_id(report)


def test_a_report_in_an_unknown_layout_still_gets_an_id_when_aide_says_the_host_differs():
    report = "Start timestamp: 2026-12-07 06:42:34\nsomething changed: /etc/x\n"
    later = "Start timestamp: 2027-01-01 00:00:00\nsomething changed: /etc/x\n"
    assert lib.report_id(report) is None
    assert lib.report_id(report, differs=True) == lib.report_id(later, differs=True)
    assert len(lib.report_id(report, differs=True)) == 12


def test_an_acknowledgement_is_the_id_and_a_reason():
    assert lib.parse_acknowledgement("3f2a9c0b1d4e restored from backup, ticket 4711") == (
        "3f2a9c0b1d4e",
        "restored from backup, ticket 4711",
    )
    assert lib.parse_acknowledgement("") == ("", "")
    assert lib.parse_acknowledgement(None) == ("", "")


@pytest.mark.parametrize("text", ["3f2a9c0b1d4e", "looks fine", "3F2A9C0B1D4E reason", "3f2a9c0b1d4 reason"])
def test_an_acknowledgement_without_id_or_reason_says_what_to_write(text):
    with pytest.raises(ValueError, match="12-digit id, a space and the reason"):
        lib.parse_acknowledgement(text)
