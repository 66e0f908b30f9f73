"""tests/testinfra/audit_evidence.py: the pytest plugin that records each host test and the commands it
ran, run in a child pytest on generated suites against local:// (the machine running these tests).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
NODE = "tests/testinfra/test_sample.py::{}[local]"

SAMPLE = r"""
import pytest


@pytest.fixture
def broken(host):
    host.run("echo from-setup")
    raise RuntimeError("fixture broke")


@pytest.fixture
def failing_teardown(host):
    yield
    host.run("echo from-teardown")
    raise RuntimeError("teardown broke")


def test_passes(host):
    assert host.check_output("echo hello") == "hello"
    assert host.file("/").is_directory


def test_fails(host):
    out = host.run("printf '<b>x</b>\\377'; echo err >&2; exit 3")
    assert out.rc == 0, "expected success"


def test_skips(host):
    pytest.skip("not on this host")


def test_setup_errors(broken):
    pass


def test_teardown_errors(failing_teardown):
    pass


@pytest.mark.parametrize("n", [1, 2])
def test_param(host, n):
    host.run("echo %s", str(n))


def test_big_output(host):
    host.run("head -c 10000 /dev/zero | tr '\\0' o; head -c 5000 /dev/zero | tr '\\0' e >&2")


@pytest.mark.xfail(reason="known drift")
def test_expected_failure(host):
    assert host.run("false").rc == 0


def test_command_that_cannot_start(host):
    host.run("echo %s %s", "only-one")


def test_nested_host(host):
    # The ansible backend runs each command through a Host of its own.
    import testinfra

    inner = testinfra.get_host("local://")
    original = host.backend.run
    host.backend.run = lambda command, *args, **kwargs: inner.run(command, *args)
    try:
        assert host.check_output("echo nested") == "nested"
    finally:
        host.backend.run = original
"""


def make_suite(root: Path, source: str = SAMPLE, name: str = "test_sample.py") -> Path:
    (root / "pytest.ini").write_text("[pytest]\n")
    suite = root / "tests" / "testinfra"
    suite.mkdir(parents=True, exist_ok=True)
    (suite / name).write_text(textwrap.dedent(source))
    return suite


def run_pytest(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hosts=local://", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests" / "testinfra")},
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    make_suite(root)
    completed = run_pytest(root, "-p", "audit_evidence", "--enclave-evidence=out/tests.json", "tests/testinfra")
    path = root / "out" / "tests.json"
    assert path.is_file(), completed.stdout + completed.stderr
    document = json.loads(path.read_text())
    document["_by_node"] = {test["nodeid"]: test for test in document["tests"]}
    document["_root"] = root
    return document


def test_the_session_is_recorded(recorded):
    assert recorded["schema"] == 1
    assert recorded["pytest_exit"] == 1
    assert ISO_UTC.match(recorded["started"])
    assert ISO_UTC.match(recorded["finished"])
    assert recorded["started"] <= recorded["finished"]
    assert recorded["collection_errors"] == []
    assert list(recorded["_by_node"]) == [
        NODE.format("test_passes"),
        NODE.format("test_fails"),
        NODE.format("test_skips"),
        NODE.format("test_setup_errors"),
        NODE.format("test_teardown_errors"),
        "tests/testinfra/test_sample.py::test_param[local-1]",
        "tests/testinfra/test_sample.py::test_param[local-2]",
        NODE.format("test_big_output"),
        NODE.format("test_expected_failure"),
        NODE.format("test_command_that_cannot_start"),
        NODE.format("test_nested_host"),
    ]
    assert not list((recorded["_root"] / "out").glob(".tmp-*")), "a temporary file was left behind"


def test_a_passed_test_holds_every_command_it_ran(recorded):
    test = recorded["_by_node"][NODE.format("test_passes")]
    assert test["outcome"] == "passed"
    assert test["message"] == ""
    assert ISO_UTC.match(test["started"])
    assert isinstance(test["duration_s"], float)
    commands = [c["command"] for c in test["commands"]]
    assert commands[0] == "echo hello"
    # host.file(...) runs its commands through the same path as host.run.
    assert any(c.startswith("stat ") or c.startswith("test ") for c in commands[1:]), commands
    first = test["commands"][0]
    assert (first["rc"], first["stdout"], first["stderr"], first["phase"]) == (0, "hello\n", "", "call")
    assert ISO_UTC.match(first["started"])
    assert isinstance(first["duration_s"], float)


def test_a_failed_test_keeps_its_failure_and_raw_output(recorded):
    test = recorded["_by_node"][NODE.format("test_fails")]
    assert test["outcome"] == "failed"
    assert "AssertionError: expected success" in test["message"]
    (command,) = test["commands"]
    assert command["rc"] == 3
    # Bytes that are not UTF-8 are kept as escapes instead of failing the run.
    assert command["stdout"] == "<b>x</b>\\xff"
    assert command["stderr"] == "err\n"


def test_deselected_tests_are_listed_apart(tmp_path):
    make_suite(tmp_path)
    completed = run_pytest(
        tmp_path, "-p", "audit_evidence", "--enclave-evidence=tests.json", "-k", "not test_fails", "tests/testinfra"
    )
    document = json.loads((tmp_path / "tests.json").read_text())
    assert [nodeid.split("::")[1] for nodeid in document["deselected"]] == ["test_fails[local]"], completed.stdout
    assert all("test_fails" not in test["nodeid"] for test in document["tests"])


def test_a_command_run_through_an_inner_host_is_recorded_once(recorded):
    test = recorded["_by_node"]["tests/testinfra/test_sample.py::test_nested_host[local]"]
    assert [c["command"] for c in test["commands"]] == ["echo nested"]


def test_a_skip_keeps_its_reason(recorded):
    test = recorded["_by_node"][NODE.format("test_skips")]
    assert (test["outcome"], test["message"], test["commands"]) == ("skipped", "not on this host", [])


def test_a_setup_failure_is_an_error_with_the_setup_commands(recorded):
    test = recorded["_by_node"][NODE.format("test_setup_errors")]
    assert test["outcome"] == "error"
    assert "RuntimeError: fixture broke" in test["message"]
    assert [(c["command"], c["phase"]) for c in test["commands"]] == [("echo from-setup", "setup")]


def test_a_teardown_failure_is_an_error_with_the_teardown_commands(recorded):
    test = recorded["_by_node"][NODE.format("test_teardown_errors")]
    assert test["outcome"] == "error"
    assert "RuntimeError: teardown broke" in test["message"]
    assert [(c["command"], c["phase"]) for c in test["commands"]] == [("echo from-teardown", "teardown")]


def test_each_parametrized_run_is_its_own_result(recorded):
    for n in (1, 2):
        test = recorded["_by_node"][f"tests/testinfra/test_sample.py::test_param[local-{n}]"]
        assert test["outcome"] == "passed"
        assert [c["command"] for c in test["commands"]] == [f"echo {n}"]


def test_long_output_is_truncated_keeping_both_ends(recorded):
    (command,) = recorded["_by_node"][NODE.format("test_big_output")]["commands"]
    assert len(command["stdout"]) <= 4000
    assert len(command["stderr"]) <= 2000
    assert command["stdout"].startswith("ooo")
    assert command["stdout"].endswith("ooo")
    assert "characters cut" in command["stdout"]
    assert "characters cut" in command["stderr"]


def test_an_expected_failure_is_a_skip_that_says_so(recorded):
    test = recorded["_by_node"][NODE.format("test_expected_failure")]
    assert test["outcome"] == "skipped"
    assert test["message"] == "xfail: known drift"
    assert test["commands"][0]["rc"] == 1


def test_a_command_that_raises_is_recorded_with_its_error(recorded):
    test = recorded["_by_node"][NODE.format("test_command_that_cannot_start")]
    assert test["outcome"] == "failed"
    (command,) = test["commands"]
    assert command["rc"] is None
    assert command["error"].startswith("TypeError")


def test_commands_outside_any_test_are_kept_apart(tmp_path):
    make_suite(
        tmp_path,
        """
        import testinfra

        testinfra.get_host("local://").run("echo at-collection")


        def test_nothing(host):
            pass
        """,
    )
    completed = run_pytest(tmp_path, "-p", "audit_evidence", "--enclave-evidence=tests.json", "tests/testinfra")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads((tmp_path / "tests.json").read_text())
    assert [(c["command"], c["phase"]) for c in document["commands_outside_tests"]] == [
        ("echo at-collection", "session")
    ]
    assert document["tests"][0]["commands"] == []


def test_a_suite_that_cannot_be_collected_is_recorded(tmp_path):
    make_suite(tmp_path, "def test_broken(:\n    pass\n", name="test_broken.py")
    completed = run_pytest(tmp_path, "-p", "audit_evidence", "--enclave-evidence=tests.json", "tests/testinfra")
    assert completed.returncode == 2
    document = json.loads((tmp_path / "tests.json").read_text())
    assert document["pytest_exit"] == 2
    (error,) = document["collection_errors"]
    assert error["nodeid"] == "tests/testinfra/test_broken.py"
    assert "SyntaxError" in error["message"]


def test_without_the_option_the_plugin_does_nothing(tmp_path):
    make_suite(
        tmp_path,
        """
        import testinfra.host


        def test_run_is_not_wrapped(host):
            assert testinfra.host.Host.run.__module__ == "testinfra.host"
            host.run("true")
        """,
    )
    completed = run_pytest(tmp_path, "-p", "audit_evidence", "tests/testinfra")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert sorted(p.name for p in tmp_path.rglob("*.json")) == []


def test_the_plugin_registers_its_option(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    with_plugin = run_pytest(tmp_path, "-p", "audit_evidence", "--help")
    assert "--enclave-evidence=PATH" in with_plugin.stdout
    without = run_pytest(tmp_path, "--enclave-evidence=x.json")
    assert without.returncode == 4
    assert "unrecognized arguments: --enclave-evidence" in without.stderr


def test_an_unwritable_destination_stops_the_run_before_it_starts(tmp_path):
    make_suite(tmp_path, "def test_nothing(host):\n    pass\n")
    completed = run_pytest(
        tmp_path, "-p", "audit_evidence", "--enclave-evidence=/proc/no-such/tests.json", "tests/testinfra"
    )
    assert completed.returncode == 4
    assert "--enclave-evidence: cannot create /proc/no-such" in completed.stderr
