"""CI's digest names each failed test from the JUnit XML pytest writes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from junit_failures import failures, main

# Written by pytest 9.2 for a run with one pass, one failed assertion, one
# fixture error and one skip.
SAMPLE = Path(__file__).parent / "fixtures" / "junit" / "pytest-sample.xml"


def test_failures_and_errors_are_named_with_their_first_message_line():
    assert failures(SAMPLE) == [
        "pytest-sample.xml: test_sample::test_mode_is_0600 [failure] AssertionError: /etc/ssh/sshd_config",
        "pytest-sample.xml: test_sample::test_needs_fixture [error] "
        'failed on setup with "RuntimeError: lab host unreachable"',
    ]


def test_exit_status_says_whether_any_test_failed(tmp_path, capsys):
    assert main([str(tmp_path)]) == 0
    assert "no failed tests" in capsys.readouterr().out
    (tmp_path / "stage.xml").write_bytes(SAMPLE.read_bytes())
    assert main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "JUnit reports read: stage.xml" in out
    assert "test_sample::test_mode_is_0600" in out


def test_a_passing_report_names_nothing(tmp_path):
    report = tmp_path / "pass.xml"
    report.write_text('<testsuites><testsuite><testcase classname="a" name="b"/></testsuite></testsuites>')
    assert failures(report) == []


def test_a_truncated_report_counts_as_a_failure(tmp_path):
    report = tmp_path / "cut.xml"
    report.write_bytes(SAMPLE.read_bytes()[:300])
    (line,) = failures(report)
    assert line.startswith("cut.xml: unreadable")
    assert main([str(tmp_path)]) == 1
