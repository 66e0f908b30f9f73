"""Run the CI stages in lanes, the lanes beside each other, each within a time budget.

    python3 tests/lanes.py [--budgets .ci/budgets] [--log-dir build/ci] [--repo-root .]
                           [--stage-command 'bash tests/run-stages']

.ci/budgets lists each stage with its lane and its budget in seconds. The lane
`before` runs first; then every other lane but `after` at the same time, each
lane's stages in file order; then `after`, only when every lane passed (its
stages marked `always` run in any case). A stage runs as STAGE_COMMAND STAGE in
a session of its own; its output goes to LOG_DIR/STAGE.log, and the lanes
`main`, `before` and `after` also show it live. The other lanes print a
heartbeat, and the end of their log when they end, so that two stages' outputs
never interleave.

A failed stage ends its lane. A lane running longer than 1.5 x the sum of its
budgets is stopped (SIGTERM to the stage's process group, SIGKILL after the
grace), and the stage stage_cleanup_LANE of tests/run-stages runs when there is
one. Over budget, yet under that limit, is only a warning. Last comes a table
of time used against the budgets, and for each stage over budget, failed or
stopped its slowest tests (build/junit/STAGE*.xml) and Ansible tasks (the
profile_tasks lines in its log), since CI keeps only the end of the output.

Exit status 0 when every stage passed, 1 when one failed or was stopped,
2 for an unusable budgets file, 128+N when the runner got signal N.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

BEFORE, AFTER = "before", "after"
# The lanes whose stages own the terminal; the others run beside `main`.
STREAMED = {"main", BEFORE, AFTER}
LIMIT_FACTOR = 1.5
HEARTBEAT_S = 60.0
KILL_GRACE_S = 30.0
# A cleanup stage has no budget, but a hung one would keep the table from
# ever being printed.
CLEANUP_LIMIT_S = 600.0
# What is left of a group this long after SIGKILL is a zombie no one reaps
# (or stuck in the kernel); waiting longer changes nothing.
AFTER_KILL_S = 5.0
POLL_S = 0.1
TAIL_LINES, TAIL_LINES_FAILED = 150, 300
REPORT_NAME = "budget.txt"
LAST_LINE_WIDTH = 100
SLOWEST = 5
# A JUnit report older than its stage was left by an earlier run; the margin
# covers file systems with coarse timestamps.
STALE_MARGIN_S = 2.0

OK, OVER, FAILED, STOPPED, SKIPPED = "ok", "OVER", "FAILED", "STOPPED", "skipped"

NAME = re.compile(r"[A-Za-z0-9_-]+")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
PROFILE_TASK = re.compile(r"^(.+?)\s-{3,}\s(\d+(?:\.\d+)?)s$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class BudgetError(ValueError):
    pass


@dataclass
class Stage:
    lane: str
    name: str
    budget: float | None
    always: bool = False
    status: str = SKIPPED
    actual: float | None = None
    rc: int | None = None
    note: str = ""
    started_wall: float | None = None

    @property
    def ran(self) -> bool:
        return self.actual is not None

    @property
    def broken(self) -> bool:
        return self.status in (FAILED, STOPPED)


@dataclass
class Lane:
    name: str
    stages: list[Stage] = field(default_factory=list)
    # cleanup_LANE, run after a stop; shown in the table, outside the budget.
    cleanups: list[Stage] = field(default_factory=list)
    stopped: bool = False

    @property
    def budget(self) -> float:
        return sum(stage.budget or 0 for stage in self.stages)

    @property
    def limit(self) -> float:
        return LIMIT_FACTOR * self.budget

    @property
    def elapsed(self) -> float | None:
        times = [stage.actual for stage in self.stages if stage.actual is not None]
        return sum(times) if times else None

    @property
    def passed(self) -> bool:
        return all(stage.status in (OK, OVER) for stage in self.stages)


def parse_budgets(text: str, source: str = "budgets") -> list[Lane]:
    """The lanes of a budgets file, in the order they first appear."""
    lanes: dict[str, Lane] = {}
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{source}: line {number}"
        if len(fields) not in (3, 4):
            raise BudgetError(f"{where}: expected 'lane stage budget_s [always]', got {raw.strip()!r}")
        lane, name, budget = fields[:3]
        for what, value in (("lane", lane), ("stage", name)):
            if not NAME.fullmatch(value):
                raise BudgetError(f"{where}: {what} name {value!r} may hold only letters, digits, '_' and '-'")
        if not NUMBER.fullmatch(budget) or float(budget) <= 0:
            raise BudgetError(f"{where}: budget {budget!r} is not a positive number of seconds")
        if len(fields) == 4 and fields[3] != "always":
            raise BudgetError(f"{where}: the fourth field may only be 'always', got {fields[3]!r}")
        if name in seen:
            # Each stage writes STAGE.log; a second run would overwrite the first.
            raise BudgetError(f"{where}: stage {name!r} is already listed on line {seen[name]}")
        seen[name] = number
        stage = Stage(lane, name, float(budget), always=len(fields) == 4)
        lanes.setdefault(lane, Lane(lane)).stages.append(stage)
    if not lanes:
        raise BudgetError(f"{source}: lists no stage")
    return list(lanes.values())


def in_run_order(lanes: Iterable[Lane]) -> list[Lane]:
    lanes = list(lanes)
    return (
        [lane for lane in lanes if lane.name == BEFORE]
        + [lane for lane in lanes if lane.name not in (BEFORE, AFTER)]
        + [lane for lane in lanes if lane.name == AFTER]
    )


def seconds(value: float | None) -> str:
    """Whole seconds, but tenths below ten, where rounding would hide the difference."""
    if value is None:
        return "-"
    if value < 10 and abs(value - round(value)) >= 0.05:
        return f"{value:.1f}"
    return f"{value:.0f}"


def clean(line: str) -> str:
    return ANSI.sub("", line).rstrip()


def junit_times(report: Path) -> list[tuple[float, str]]:
    """(time, 'classname::name') for each test case; ET.ParseError for a truncated report."""
    cases = []
    for case in ET.parse(report).getroot().iter("testcase"):
        try:
            spent = float(case.get("time", ""))
        except ValueError:
            continue
        classname, name = case.get("classname", ""), case.get("name", "")
        cases.append((spent, f"{classname}::{name}" if classname else name))
    return cases


def profile_task_times(lines: Iterable[str]) -> list[tuple[float, str]]:
    """(time, 'Role : Task') for each line of Ansible's profile_tasks summary."""
    tasks = []
    for line in lines:
        # Molecule's progress output ends lines with carriage returns.
        match = PROFILE_TASK.match(clean(line).rsplit("\r", 1)[-1])
        if match:
            tasks.append((float(match.group(2)), match.group(1).strip()))
    return tasks


def slowest(items: Iterable[tuple[float, str]], count: int = SLOWEST) -> list[tuple[float, str]]:
    return sorted(items, key=lambda item: (-item[0], item[1]))[:count]


def status_text(stage: Stage) -> str:
    if stage.status == FAILED and stage.rc is not None:
        return f"{FAILED} (rc {stage.rc})"
    return stage.status


def render_table(lanes: Iterable[Lane], wall: float) -> str:
    lanes = in_run_order(lanes)
    rows = [
        (lane.name, stage.name, stage.actual, stage.budget, status_text(stage))
        for lane in lanes
        for stage in lane.stages + lane.cleanups
    ]
    lane_width = max([4] + [len(lane.name) for lane in lanes])
    stage_width = max([5] + [len(row[1]) for row in rows])

    def amount(value: float | None) -> str:
        return "-" if value is None else f"{seconds(value)} s"

    out = [
        "=== budget (actual / budget) ===",
        f"{'lane':<{lane_width}}  {'stage':<{stage_width}}  {'actual':>8} {'budget':>8}  status",
    ]
    for lane, stage, actual, budget, status in rows:
        out.append(f"{lane:<{lane_width}}  {stage:<{stage_width}}  {amount(actual):>8} {amount(budget):>8}  {status}")
    for lane in lanes:
        line = (
            f"lane {lane.name:<{lane_width}} {amount(lane.elapsed):>8} / {seconds(lane.budget)} s"
            f" (limit {seconds(lane.limit)} s)"
        )
        if lane.stopped:
            line += f" {STOPPED}"
        out.append(line)
    out.append(f"wall time  {seconds(wall)} s")
    out.extend(stage.note for lane in lanes for stage in lane.stages + lane.cleanups if stage.note)
    return "\n".join(out)


def render_slowest(
    stage: Stage, tests: list[tuple[float, str]], tasks: list[tuple[float, str]], notes: Iterable[str] = ()
) -> str:
    out = [f"=== stage {stage.name} ({status_text(stage)}): slowest ==="]
    for title, items in (("tests", tests), ("tasks", tasks)):
        if items:
            out.append(f"{title}:")
            out.extend(f"  {seconds(spent):>6} s  {name}" for spent, name in slowest(items))
    out.extend(notes)
    if not tests and not tasks:
        out.append("no test times (JUnit) and no task times (profile_tasks) from this stage")
    return "\n".join(out)


def last_line(path: Path, width: int = LAST_LINE_WIDTH) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [clean(line) for line in re.split(r"[\r\n]", text)]
    return next((line for line in reversed(lines) if line.strip()), "")[:width]


def tail(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as log:
            kept = collections.deque(log, maxlen=count)
    except OSError as error:
        return [f"(unreadable: {error})"]
    return [line.decode(errors="replace").rstrip("\r\n") for line in kept]


def group_alive(pgid: int) -> bool:
    """Whether a process other than a zombie is left in the process group."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # kill(pgid, 0) succeeds while zombies are left, and a container's PID 1
    # does not always reap the orphans it inherits.
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z" and int(pgrp) == pgid:
            return True
    return False


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


class LogFollower:
    """The complete lines a log gained since the last call."""

    def __init__(self, path: Path):
        self.file = path.open("rb")
        self.partial = b""

    def lines(self, final: bool = False) -> list[str]:
        data = self.partial + self.file.read()
        if final:
            self.partial = b""
            complete = data
        else:
            cut = data.rfind(b"\n") + 1
            complete, self.partial = data[:cut], data[cut:]
        return complete.decode(errors="replace").splitlines()

    def close(self) -> None:
        self.file.close()


class Runner:
    def __init__(
        self,
        lanes: list[Lane],
        *,
        repo_root: Path,
        log_dir: Path,
        stage_command: list[str],
        heartbeat_s: float = HEARTBEAT_S,
        kill_grace_s: float = KILL_GRACE_S,
        out=None,
    ):
        self.lanes = lanes
        self.repo_root = repo_root
        self.log_dir = log_dir
        self.stage_command = stage_command
        self.heartbeat_s = heartbeat_s
        self.kill_grace_s = kill_grace_s
        self.out = out or sys.stdout
        self.lock = threading.RLock()
        self.interrupted = threading.Event()
        # A second signal: SIGKILL now instead of after the grace.
        self.hurry = threading.Event()
        self.signum: int | None = None
        self.wall = 0.0

    def say(self, text: str) -> None:
        with self.lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):
                # Nobody reads any more; the logs still hold everything.
                pass

    def shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.repo_root))
        except ValueError:
            return str(path)

    def on_signal(self, signum: int, _frame) -> None:
        if self.interrupted.is_set():
            self.hurry.set()
            return
        self.signum = signum
        self.interrupted.set()

    def run(self) -> int:
        start = time.monotonic()
        before = [lane for lane in self.lanes if lane.name == BEFORE]
        after = [lane for lane in self.lanes if lane.name == AFTER]
        parallel = [lane for lane in self.lanes if lane not in before + after]
        self.run_lanes(before, blocked=False)
        # The lab the `before` lane brings up is what the other lanes test.
        self.run_lanes(parallel, blocked=not all(lane.passed for lane in before))
        self.run_lanes(after, blocked=not all(lane.passed for lane in before + parallel))
        self.wall = time.monotonic() - start
        if self.interrupted.is_set():
            name = signal.Signals(self.signum).name if self.signum else "a signal"
            self.say(f"the runner got {name}: it stopped the running stages and skipped the rest")
        report = [render_table(self.lanes, self.wall)]
        for lane in in_run_order(self.lanes):
            for stage in lane.stages:
                if stage.status in (OVER, FAILED, STOPPED):
                    report.append(self.slowest_of(stage))
        for part in report:
            self.say(part)
        # .ci/run shows it again as its last table, after the audit evidence.
        (self.log_dir / REPORT_NAME).write_text("\n".join(report) + "\n")
        if self.signum:
            return 128 + self.signum
        stages = [stage for lane in self.lanes for stage in lane.stages + lane.cleanups]
        return 0 if all(stage.status in (OK, OVER) for stage in stages) else 1

    def run_lanes(self, lanes: list[Lane], blocked: bool) -> None:
        threads = [threading.Thread(target=self.run_lane, args=(lane, blocked), daemon=True) for lane in lanes]
        for thread in threads:
            thread.start()
        # Joined with a timeout so the main thread keeps taking signals.
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=POLL_S)

    def run_lane(self, lane: Lane, blocked: bool) -> None:
        try:
            self._run_lane(lane, blocked)
        except Exception:
            # The table must still come; a runner bug counts as a failed stage.
            self.say(f"[{lane.name}] runner error:\n{traceback.format_exc()}")
            for stage in lane.stages:
                if stage.status == SKIPPED and not stage.ran:
                    stage.status, stage.note = FAILED, f"lane {lane.name}: runner error, see the output above"
                    break

    def _run_lane(self, lane: Lane, blocked: bool) -> None:
        streamed = lane.name in STREAMED
        used = 0.0
        broken = blocked
        last: Stage | None = None
        for stage in lane.stages:
            if self.interrupted.is_set():
                break
            if broken and not stage.always:
                continue
            limit = lane.limit - used
            message = self.lane_stop_message(lane, stage, used)
            if stage.always and LIMIT_FACTOR * stage.budget > limit:
                # A teardown marked `always` is not cut short by the stages
                # that used up the lane's time before it.
                limit = LIMIT_FACTOR * stage.budget
                message = self.own_stop_message(lane, stage)
            self.run_stage(stage, limit, message, streamed)
            used += stage.actual or 0
            last = stage
            if stage.status == STOPPED:
                lane.stopped = True
                self.run_cleanup(lane, streamed)
            broken = broken or stage.broken
        if not streamed and last is not None:
            for shown in [last, *lane.cleanups]:
                count = TAIL_LINES_FAILED if shown.broken else TAIL_LINES
                self.print_tail(lane, self.log_dir / f"{shown.name}.log", count)

    @staticmethod
    def lane_stop_message(lane: Lane, stage: Stage, used: float) -> Callable[[float], str]:
        return lambda elapsed: (
            f"lane {lane.name} stopped in stage {stage.name} at {seconds(used + elapsed)} s:"
            f" its limit is {seconds(lane.limit)} s ({LIMIT_FACTOR} x {seconds(lane.budget)} s)"
        )

    @staticmethod
    def own_stop_message(lane: Lane, stage: Stage) -> Callable[[float], str]:
        return lambda elapsed: (
            f"lane {lane.name} stopped in stage {stage.name} after {seconds(elapsed)} s in it:"
            f" an 'always' stage's limit is {seconds(LIMIT_FACTOR * stage.budget)} s"
            f" ({LIMIT_FACTOR} x {seconds(stage.budget)} s)"
        )

    def run_cleanup(self, lane: Lane, streamed: bool) -> None:
        name = f"cleanup_{lane.name}"
        if self.interrupted.is_set():
            return
        try:
            found = subprocess.run(
                [*self.stage_command, "--has", name],
                cwd=self.repo_root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            self.say(f"[{lane.name}] could not ask whether stage {name} exists: {error}")
            return
        if found.returncode != 0:
            return
        stage = Stage(lane.name, name, None)
        lane.cleanups.append(stage)

        def message(elapsed: float) -> str:
            return f"stage {name} stopped after {seconds(elapsed)} s: a cleanup's limit is {seconds(CLEANUP_LIMIT_S)} s"

        self.run_stage(stage, CLEANUP_LIMIT_S, message, streamed)

    def print_tail(self, lane: Lane, path: Path, count: int) -> None:
        lines = tail(path, count)
        with self.lock:
            self.say(f"=== lane {lane.name}: tail of {self.shown(path)} ===")
            self.show(lines)
            self.say(f"=== lane {lane.name}: end of {self.shown(path)} ===")

    def run_stage(self, stage: Stage, limit: float, stop_message: Callable[[float], str], streamed: bool) -> None:
        label = f"[{stage.lane}]"
        log_path = self.log_dir / f"{stage.name}.log"
        command = [*self.stage_command, stage.name]
        budget = f"budget {seconds(stage.budget)} s" if stage.budget else "no budget"
        self.say(f"{label} stage {stage.name} started ({budget}, log {self.shown(log_path)})")
        stage.started_wall = time.time()
        start = time.monotonic()
        try:
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    command,
                    cwd=self.repo_root,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            stage.actual, stage.status = 0.0, FAILED
            stage.note = f"stage {stage.name} could not start ({shlex.join(command)}): {error}"
            self.say(f"{label} {stage.note}")
            return
        follower = LogFollower(log_path) if streamed else None
        stopping_since: float | None = None
        killed_since: float | None = None
        next_beat = start + self.heartbeat_s
        try:
            while True:
                rc = proc.poll()
                now = time.monotonic()
                elapsed = now - start
                if stopping_since is None:
                    if rc is not None:
                        break
                    reason = None
                    if self.interrupted.is_set():
                        name = signal.Signals(self.signum).name if self.signum else "a signal"
                        reason = f"lane {stage.lane} stopped in stage {stage.name}: the runner got {name}"
                    elif elapsed >= limit:
                        reason = stop_message(elapsed)
                    if reason:
                        stage.note = reason
                        self.say(f"{label} {reason}")
                        signal_group(proc.pid, signal.SIGTERM)
                        stopping_since = now
                elif rc is not None and not group_alive(proc.pid):
                    break
                elif killed_since is None and (now - stopping_since >= self.kill_grace_s or self.hurry.is_set()):
                    self.say(
                        f"{label} stage {stage.name} still running {seconds(now - stopping_since)} s"
                        " after SIGTERM: SIGKILL"
                    )
                    signal_group(proc.pid, signal.SIGKILL)
                    killed_since = now
                elif killed_since is not None and now - killed_since >= AFTER_KILL_S:
                    self.say(f"{label} stage {stage.name}: processes of group {proc.pid} outlived SIGKILL")
                    break
                if follower:
                    self.show(follower.lines())
                elif now >= next_beat and stopping_since is None:
                    self.say(f"{label} stage {stage.name} running {seconds(elapsed)} s, last: {last_line(log_path)}")
                    next_beat += self.heartbeat_s
                time.sleep(POLL_S)
        finally:
            if follower:
                self.show(follower.lines(final=True))
                follower.close()
        stage.actual = time.monotonic() - start
        stage.rc = proc.poll()
        if stopping_since is not None:
            stage.status = STOPPED
            outcome = STOPPED
        elif stage.rc != 0:
            stage.status = FAILED
            outcome = f"{FAILED} (rc {stage.rc})"
        elif stage.budget is not None and stage.actual > stage.budget:
            stage.status = OVER
            outcome = f"passed, {OVER} budget"
        else:
            stage.status = OK
            outcome = "passed"
        self.say(f"{label} stage {stage.name} {outcome} in {seconds(stage.actual)} s ({budget})")

    def show(self, lines: list[str]) -> None:
        if lines:
            self.say("\n".join(lines))

    def slowest_of(self, stage: Stage) -> str:
        tests: list[tuple[float, str]] = []
        notes = []
        junit_dir = self.repo_root / "build" / "junit"
        for report in sorted(junit_dir.glob(f"{stage.name}*.xml")):
            try:
                if stage.started_wall and report.stat().st_mtime < stage.started_wall - STALE_MARGIN_S:
                    continue
                tests += junit_times(report)
            except (OSError, ET.ParseError) as error:
                # A stage stopped mid-write leaves a truncated report.
                notes.append(f"{self.shown(report)} unreadable: {error}")
        log_path = self.log_dir / f"{stage.name}.log"
        try:
            with log_path.open(errors="replace") as log:
                tasks = profile_task_times(log)
        except OSError:
            tasks = []
        return render_slowest(stage, tests, tasks, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/lanes.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budgets", default=".ci/budgets", help="relative to the repo root (default: %(default)s)")
    parser.add_argument("--log-dir", default="build/ci", help="relative to the repo root (default: %(default)s)")
    parser.add_argument("--repo-root", default=".", help="where stages run (default: %(default)s)")
    parser.add_argument(
        "--stage-command",
        default="bash tests/run-stages",
        help="runs STAGE as STAGE_COMMAND STAGE, and is asked STAGE_COMMAND --has cleanup_LANE (default: %(default)s)",
    )
    parser.add_argument("--heartbeat", type=float, default=HEARTBEAT_S, help="seconds (default: %(default)s)")
    parser.add_argument(
        "--kill-grace", type=float, default=KILL_GRACE_S, help="seconds from SIGTERM to SIGKILL (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    repo_root = Path(args.repo_root).resolve()
    try:
        lanes = parse_budgets((repo_root / args.budgets).read_text(), args.budgets)
    except (OSError, BudgetError) as error:
        print(f"tests/lanes.py: {error}", file=sys.stderr)
        return 2
    log_dir = repo_root / args.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(
        lanes,
        repo_root=repo_root,
        log_dir=log_dir,
        stage_command=shlex.split(args.stage_command),
        heartbeat_s=args.heartbeat,
        kill_grace_s=args.kill_grace,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, runner.on_signal)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
