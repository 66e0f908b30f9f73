"""pytest plugin: record each host test with every command it ran on the host, as audit evidence.

    PYTHONPATH=tests/testinfra pytest -p audit_evidence --enclave-evidence=PATH \\
        tests/testinfra --hosts=ansible://llm01 ...

``-p`` loads a plugin before conftest files put tests/testinfra on sys.path,
hence PYTHONPATH. Without ``--enclave-evidence`` the plugin does nothing.

With it, the plugin writes PATH (atomically, at the end of the session) with,
for every test: its node id as pytest reports it, its outcome (``passed``,
``failed``, ``skipped``, or ``error`` when its setup or teardown failed), when
it started and how long it took, the failure text or skip reason, and each
command it ran on the host with exit code, output and timing. The
enclave.llm.evidence_bundle module turns this into the per-control evidence.

Commands are captured at ``testinfra.host.Host.run``: host.run, check_output,
run_expect, run_test, exists, find_command and every testinfra module
(host.file, host.package, host.service...) run their commands through it, on
every backend. A command is attributed to the test whose setup, call or
teardown is running; a module-scoped fixture's commands therefore belong to
the first test that needed it. Commands outside any test are kept separately.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import tempfile
import time

import pytest

SCHEMA = 1
STDOUT_LIMIT = 4000
STDERR_LIMIT = 2000
MESSAGE_LIMIT = 4000
RECORDER_NAME = "enclave-audit-evidence-recorder"


def pytest_addoption(parser):
    parser.getgroup("enclave evidence").addoption(
        "--enclave-evidence",
        metavar="PATH",
        default=None,
        help="write every test's outcome and the commands it ran on the host to PATH (JSON), as audit evidence",
    )


def pytest_configure(config):
    path = config.getoption("--enclave-evidence")
    if not path:
        return
    recorder = EvidenceRecorder(os.path.abspath(path))
    recorder.check_writable()
    config.pluginmanager.register(recorder, RECORDER_NAME)
    recorder.install()


def pytest_unconfigure(config):
    recorder = config.pluginmanager.get_plugin(RECORDER_NAME)
    if recorder is not None:
        recorder.uninstall()
        config.pluginmanager.unregister(recorder)


def now_iso():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def truncate(text, limit):
    """``text`` cut to ``limit`` characters, keeping its start and its end (where errors usually are)."""
    if text is None or len(text) <= limit:
        return text
    marker = "\n[... {} characters cut ...]\n"
    keep = limit - len(marker.format(len(text)))
    head = keep * 3 // 5
    tail = keep - head
    return text[:head] + marker.format(len(text) - keep) + text[len(text) - tail :]


def _output(result, field):
    """A command's stdout or stderr as text, whatever the host printed.

    The raw field is read so that output that is not valid in the host's
    encoding is kept (as backslash escapes) instead of failing the test when
    the evidence is recorded.
    """
    raw = getattr(result, f"_{field}", None)
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    if isinstance(raw, str):
        return raw
    return str(getattr(result, field, ""))


def _skip_reason(report):
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail}".rstrip(": ")
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason
    return report.longreprtext


class EvidenceRecorder:
    """Collects the tests and their commands for one session and writes them at its end."""

    def __init__(self, path):
        self.path = path
        self.started = now_iso()
        self.tests = []
        self.collection_errors = []
        self.deselected = []
        self.outside = []
        self.current = None
        self.phase = None
        self.depth = 0
        self._restore = None

    def check_writable(self):
        """Refuse to start a run whose evidence could not be written at its end."""
        folder = os.path.dirname(self.path) or "."
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise pytest.UsageError(f"--enclave-evidence: cannot create {folder}: {exc.strerror}") from exc
        if not os.access(folder, os.W_OK):
            raise pytest.UsageError(f"--enclave-evidence: {folder} is not writable")

    # -- command capture ---------------------------------------------------

    def install(self):
        try:
            import testinfra.host
        except ImportError:  # pragma: no cover - the host suites need testinfra
            return
        original = testinfra.host.Host.run
        recorder = self

        @functools.wraps(original)
        def run(host, command, *args, **kwargs):
            # The ansible backend runs each command through a Host of its own
            # (ssh, local...): only the test's own call is recorded, once.
            if recorder.depth:
                return original(host, command, *args, **kwargs)
            recorder.depth += 1
            try:
                return recorder.record(host, original, command, args, kwargs)
            finally:
                recorder.depth -= 1

        testinfra.host.Host.run = run
        self._restore = lambda: setattr(testinfra.host.Host, "run", original)

    def uninstall(self):
        if self._restore is not None:
            self._restore()
            self._restore = None

    def record(self, host, original, command, args, kwargs):
        try:
            shown = host.backend.quote(command, *args)
        except Exception:  # the real call will report the bad arguments
            shown = " ".join([str(command), *map(str, args)])
        entry = {"command": shown, "phase": self.phase or "session", "started": now_iso()}
        start = time.perf_counter()
        try:
            result = original(host, command, *args, **kwargs)
        except BaseException as exc:
            entry.update(
                rc=None,
                stdout="",
                stderr="",
                error=truncate(f"{type(exc).__name__}: {exc}", MESSAGE_LIMIT),
                duration_s=round(time.perf_counter() - start, 6),
            )
            self._attach(entry)
            raise
        entry.update(
            rc=result.rc,
            stdout=truncate(_output(result, "stdout"), STDOUT_LIMIT),
            stderr=truncate(_output(result, "stderr"), STDERR_LIMIT),
            duration_s=round(time.perf_counter() - start, 6),
        )
        executed = result.command
        if isinstance(executed, bytes):
            executed = executed.decode("utf-8", "backslashreplace")
        if executed and executed != shown:
            # What the backend really ran (sudo, podman exec, ssh...): where the command ran.
            entry["executed"] = truncate(executed, STDOUT_LIMIT)
        self._attach(entry)
        return result

    def _attach(self, entry):
        (self.current["commands"] if self.current is not None else self.outside).append(entry)

    # -- test bookkeeping --------------------------------------------------

    def pytest_runtest_logstart(self, nodeid, location):
        self.current = {
            "nodeid": nodeid,
            "outcome": None,
            "started": now_iso(),
            "duration_s": 0.0,
            "message": "",
            "commands": [],
        }

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item):
        self.phase = "setup"
        try:
            return (yield)
        finally:
            self.phase = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        self.phase = "call"
        try:
            return (yield)
        finally:
            self.phase = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        self.phase = "teardown"
        try:
            return (yield)
        finally:
            self.phase = None

    def pytest_runtest_logreport(self, report):
        test = self.current
        if test is None or report.nodeid != test["nodeid"]:
            return
        test["duration_s"] = round(test["duration_s"] + (report.duration or 0.0), 6)
        if report.when == "setup":
            if report.failed:
                self._set(test, "error", report.longreprtext)
            elif report.skipped:
                self._set(test, "skipped", _skip_reason(report))
        elif report.when == "call":
            if report.failed:
                self._set(test, "failed", report.longreprtext)
            elif report.skipped:
                self._set(test, "skipped", _skip_reason(report))
            else:
                self._set(test, "passed", f"xpass: {report.wasxfail}" if hasattr(report, "wasxfail") else "")
        elif report.failed:
            # A failing teardown is an error even after a pass; after a failure both texts are kept.
            message = (
                f"{test['message']}\n\nteardown: {report.longreprtext}" if test["message"] else report.longreprtext
            )
            self._set(test, "failed" if test["outcome"] == "failed" else "error", message)

    @staticmethod
    def _set(test, outcome, message):
        test["outcome"] = outcome
        test["message"] = truncate(message or "", MESSAGE_LIMIT)

    def pytest_runtest_logfinish(self, nodeid, location):
        test = self.current
        if test is None:
            return
        if test["outcome"] is None:
            self._set(test, "error", "pytest reported no outcome for this test")
        self.tests.append(test)
        self.current = None

    def pytest_deselected(self, items):
        # Deselected (e.g. -m "not mutates_host") is recorded as such, so a
        # reader can tell "left out on purpose" from "did not run".
        self.deselected.extend(item.nodeid for item in items)

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(
                {"nodeid": report.nodeid, "message": truncate(report.longreprtext, MESSAGE_LIMIT)}
            )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        document = {
            "schema": SCHEMA,
            "started": self.started,
            "finished": now_iso(),
            "pytest_exit": int(exitstatus),
            "tests": self.tests,
            "collection_errors": self.collection_errors,
            "deselected": self.deselected,
            "commands_outside_tests": self.outside,
        }
        write_atomic(self.path, json.dumps(document, indent=1, ensure_ascii=True) + "\n")


def write_atomic(path, text):
    """Replace ``path`` in one rename, so a reader never sees half a file."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o640)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
