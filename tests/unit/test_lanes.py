"""The CI runner (tests/lanes.py): lanes side by side, each within its budget.

The runner runs for real here, with a small bash script in place of
tests/run-stages: each stage is a function of that script, which notes when
the stage started and ended, so the tests read the order of events from the
stages themselves rather than from the clock alone.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lanes import (
    FAILED,
    OK,
    OVER,
    SKIPPED,
    STOPPED,
    BudgetError,
    Lane,
    Stage,
    junit_times,
    parse_budgets,
    profile_task_times,
    render_slowest,
    render_table,
    seconds,
    slowest,
)

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
LANES = TESTS / "lanes.py"

STAGE_SCRIPT = """#!/usr/bin/env bash
set -u
here=$(cd "$(dirname "$0")" && pwd)
FUNCTIONS
if [[ $1 == --has ]]; then
  declare -F "stage_$2" >/dev/null
  exit
fi
echo "$1 start $EPOCHREALTIME" >>"$here/marks"
"stage_$1"
rc=$?
echo "$1 end $EPOCHREALTIME" >>"$here/marks"
exit "$rc"
"""


def make_repo(root: Path, budgets: str, stages: dict[str, str]) -> Path:
    functions = "\n".join(f"stage_{name}() {{\n{body}\n}}" for name, body in stages.items())
    (root / "stage").write_text(STAGE_SCRIPT.replace("FUNCTIONS", functions))
    (root / "budgets").write_text(budgets)
    return root


def command(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(LANES),
        "--repo-root",
        str(root),
        "--budgets",
        "budgets",
        "--log-dir",
        "build/ci",
        "--stage-command",
        shlex.join(["bash", str(root / "stage")]),
        *extra,
    ]


def run_lanes(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(root, *extra), capture_output=True, text=True, timeout=30, check=False)


def marks(root: Path) -> dict[tuple[str, str], float]:
    path = root / "marks"
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        stage, event, when = line.split()
        found[stage, event] = float(when)
    return found


def started(root: Path) -> set[str]:
    return {stage for stage, event in marks(root) if event == "start"}


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # A zombie has ended; only its parent's bookkeeping is left.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def row(output: str, lane: str, stage: str) -> str:
    (line,) = [line for line in output.splitlines() if re.match(rf"{lane}\s+{stage}\s+(-|[\d.]+ s)\s", line)]
    return line


# --- the budgets file


def test_budgets_give_lanes_in_order_of_appearance_with_their_stages():
    lanes = parse_budgets(
        """
        # lane  stage  budget_s  [always]
        before  lab    10
        main    lint   2.5   # inline comment
        vm      vm     20
        main    unit   4
        after   down   3     always
        """
    )
    assert [lane.name for lane in lanes] == ["before", "main", "vm", "after"]
    main = lanes[1]
    assert [(stage.name, stage.budget, stage.always) for stage in main.stages] == [
        ("lint", 2.5, False),
        ("unit", 4.0, False),
    ]
    assert main.budget == 6.5
    assert main.limit == pytest.approx(9.75)
    assert lanes[3].stages[0].always


def test_the_ci_budgets_file_is_valid():
    lanes = parse_budgets((REPO / ".ci" / "budgets").read_text(), ".ci/budgets")
    assert {"before", "main", "after"} <= {lane.name for lane in lanes}
    assert all(stage.budget > 0 for lane in lanes for stage in lane.stages)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("main lint", "expected 'lane stage budget_s"),
        ("main lint 10 always extra", "expected 'lane stage budget_s"),
        ("main lint ten", "not a positive number"),
        ("main lint 0", "not a positive number"),
        ("main lint -5", "not a positive number"),
        ("main lint 10 sometimes", "may only be 'always'"),
        ("main li/nt 10", "stage name 'li/nt'"),
        ("ma:in lint 10", "lane name 'ma:in'"),
        ("vm unit 10", "stage 'unit' is already listed on line 2"),
    ],
)
def test_a_malformed_line_is_rejected_with_its_number(line, complaint):
    text = f"# header\nmain unit 5\n{line}\n"
    with pytest.raises(BudgetError, match="line 3") as error:
        parse_budgets(text, "budgets")
    assert complaint in str(error.value)


def test_a_budgets_file_without_stages_is_rejected():
    with pytest.raises(BudgetError, match="lists no stage"):
        parse_budgets("# nothing\n\n")


def test_the_runner_refuses_a_malformed_budgets_file_before_running_anything(tmp_path):
    root = make_repo(tmp_path, "main unit 5\nmain lint x\n", {"unit": "true", "lint": "true"})
    result = run_lanes(root)
    assert result.returncode == 2
    assert "budgets: line 2: budget 'x'" in result.stderr
    assert started(root) == set()


# --- timings from JUnit reports and profile_tasks lines


def test_junit_times_name_tests_by_class_and_name(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite><testcase classname="t.a" name="one" time="1.5"/>'
        '<testcase name="bare" time="0.2"/><testcase classname="t.a" name="untimed"/></testsuite></testsuites>'
    )
    assert junit_times(report) == [(1.5, "t.a::one"), (0.2, "bare")]


def test_junit_times_read_pytest_reports():
    sample = Path(__file__).parent / "fixtures" / "junit" / "pytest-sample.xml"
    assert (0.001, "test_sample::test_mode_is_0600") in junit_times(sample)


def test_profile_tasks_lines_are_found_among_other_output():
    log = [
        "TASK [enclave.llm.preflight : Check the kernel] ********************",
        "ok: [lab]",
        "===============================================================================",
        "enclave.llm.vllm : Pull the image ------------------------------------- 112.48s\n",
        "\x1b[0;33mGathering Facts --------------------------------------------------- 3.10s\x1b[0m\n",
        "progress 10%\rprogress 100%\renclave.llm.nftables : Load rules ------------ 0.51s\r\n",
        "a line -- with dashes 2.0s",
        "Thursday 01 January 2026  12:00:00 +0000 (0:00:01.234)       0:00:05.678 ****",
    ]
    assert profile_task_times(log) == [
        (112.48, "enclave.llm.vllm : Pull the image"),
        (3.10, "Gathering Facts"),
        (0.51, "enclave.llm.nftables : Load rules"),
    ]


def test_slowest_keeps_the_five_longest_longest_first():
    items = [(float(n), f"t{n}") for n in (3, 9, 1, 7, 5, 8, 2)]
    assert slowest(items) == [(9.0, "t9"), (8.0, "t8"), (7.0, "t7"), (5.0, "t5"), (3.0, "t3")]


def test_seconds_keep_tenths_only_where_they_matter():
    assert [seconds(v) for v in (None, 0.04, 1.5, 1.0, 9.96, 12.7, 2712.3)] == [
        "-",
        "0",
        "1.5",
        "1",
        "10",
        "13",
        "2712",
    ]


# --- the table


def lane(name: str, *stages: Stage, stopped: bool = False) -> Lane:
    return Lane(name, list(stages), stopped=stopped)


def test_the_table_compares_each_stage_and_lane_with_its_budget():
    table = render_table(
        [
            lane("main", Stage("main", "lint", 150, status=OK, actual=95), Stage("main", "unit", 60, status=SKIPPED)),
            lane(
                "vm",
                Stage("vm", "vm", 1800, status=STOPPED, actual=2712, rc=-15, note="lane vm stopped in stage vm"),
                stopped=True,
            ),
            lane("before", Stage("before", "lab", 420, status=OK, actual=212)),
            lane("after", Stage("after", "teardown", 120, always=True, status=FAILED, actual=3, rc=2)),
        ],
        wall=3000,
    )
    assert table == "\n".join(
        [
            "=== budget (actual / budget) ===",
            "lane    stage       actual   budget  status",
            "before  lab          212 s    420 s  ok",
            "main    lint          95 s    150 s  ok",
            "main    unit             -     60 s  skipped",
            "vm      vm          2712 s   1800 s  STOPPED",
            "after   teardown       3 s    120 s  FAILED (rc 2)",
            "lane before    212 s / 420 s (limit 630 s)",
            "lane main       95 s / 210 s (limit 315 s)",
            "lane vm       2712 s / 1800 s (limit 2700 s) STOPPED",
            "lane after       3 s / 120 s (limit 180 s)",
            "wall time  3000 s",
            "lane vm stopped in stage vm",
        ]
    )


def test_the_slowest_list_shows_whatever_has_data():
    stage = Stage("main", "container", 1500, status=OVER, actual=1600)
    tasks = [(float(n), f"task {n}") for n in range(1, 8)]
    assert render_slowest(stage, [], tasks) == "\n".join(
        [
            "=== stage container (OVER): slowest ===",
            "tasks:",
            "       7 s  task 7",
            "       6 s  task 6",
            "       5 s  task 5",
            "       4 s  task 4",
            "       3 s  task 3",
        ]
    )
    assert "no test times" in render_slowest(stage, [], [])


# --- the runner, with real processes


def test_a_lane_past_its_limit_is_stopped_named_and_cleaned_up(tmp_path):
    root = make_repo(
        tmp_path,
        "vm vm 1\n",
        {
            "vm": 'echo "booting"\nsleep 30 &\necho $! >"$here/sleep.pid"\nwait',
            "cleanup_vm": 'echo "cleanup ran" >"$here/cleaned"',
        },
    )
    begun = time.monotonic()
    result = run_lanes(root, "--kill-grace", "10")
    took = time.monotonic() - begun
    assert result.returncode == 1
    assert re.search(r"lane vm stopped in stage vm at 1\.\d s: its limit is 1\.5 s \(1\.5 x 1 s\)", result.stdout)
    # Stopped at its limit, not after the grace for SIGKILL, nor when the sleep ended.
    assert took < 8
    assert not alive(int((root / "sleep.pid").read_text()))
    assert (root / "cleaned").read_text() == "cleanup ran\n"
    assert "STOPPED" in row(result.stdout, "vm", "vm")
    assert row(result.stdout, "vm", "cleanup_vm").endswith("ok")
    assert "=== lane vm: tail of build/ci/vm.log ===\nbooting\n=== lane vm: end of build/ci/vm.log ===" in result.stdout


def test_a_stage_that_ignores_sigterm_gets_sigkill_after_the_grace(tmp_path):
    root = make_repo(
        tmp_path, "main stubborn 0.5\n", {"stubborn": "trap '' TERM\nsleep 30 &\necho $! >\"$here/sleep.pid\"\nwait"}
    )
    begun = time.monotonic()
    result = run_lanes(root, "--kill-grace", "0.5")
    assert time.monotonic() - begun < 8
    assert result.returncode == 1
    assert "stage stubborn still running" in result.stdout
    assert "SIGKILL" in result.stdout
    assert not alive(int((root / "sleep.pid").read_text()))
    # No cleanup_main stage in this script: nothing to run after the stop.
    assert "cleanup_main" not in result.stdout


def test_two_lanes_run_at_the_same_time(tmp_path):
    root = make_repo(tmp_path, "main a 5\nvm b 5\n", {"a": "sleep 1", "b": "sleep 1"})
    result = run_lanes(root)
    assert result.returncode == 0, result.stdout
    at = marks(root)
    assert at["a", "start"] < at["b", "end"]
    assert at["b", "start"] < at["a", "end"]
    span = max(at["a", "end"], at["b", "end"]) - min(at["a", "start"], at["b", "start"])
    assert span < 1.8


def test_before_runs_first_and_after_last(tmp_path):
    root = make_repo(
        tmp_path,
        "after down 5\nmain a 5\nbefore up 5\nvm b 5\n",
        {"up": "sleep 0.2", "a": "sleep 0.2", "b": "sleep 0.2", "down": "true"},
    )
    assert run_lanes(root).returncode == 0
    at = marks(root)
    assert at["up", "end"] <= min(at["a", "start"], at["b", "start"])
    assert at["down", "start"] >= max(at["a", "end"], at["b", "end"])


def test_a_failed_stage_ends_its_lane_only_and_skips_after_except_always(tmp_path):
    root = make_repo(
        tmp_path,
        "main a 5\nmain a2 5\nvm b 5\nvm b2 5\nafter c 5\nafter d 5 always\n",
        {"a": "echo broken; return 3", "a2": "true", "b": "sleep 0.3", "b2": "true", "c": "true", "d": "true"},
    )
    result = run_lanes(root)
    assert result.returncode == 1
    assert started(root) == {"a", "b", "b2", "d"}
    assert row(result.stdout, "main", "a").endswith("FAILED (rc 3)")
    for lane_name, stage in (("main", "a2"), ("after", "c")):
        assert row(result.stdout, lane_name, stage).endswith("skipped")
    for lane_name, stage in (("vm", "b"), ("vm", "b2"), ("after", "d")):
        assert row(result.stdout, lane_name, stage).endswith("ok")
    # A failed stage of `main` shows its output live; its slowest list says it has none.
    assert "broken" in result.stdout
    assert "=== stage a (FAILED (rc 3)): slowest ===" in result.stdout


def test_a_failed_before_lane_skips_the_lanes_that_need_it(tmp_path):
    root = make_repo(
        tmp_path,
        "before up 5\nmain a 5\nvm b 5\nafter down 5 always\n",
        {"up": "return 1", "a": "true", "b": "true", "down": "true"},
    )
    result = run_lanes(root)
    assert result.returncode == 1
    assert started(root) == {"up", "down"}


def test_over_budget_is_a_warning_with_the_slowest_tests_and_tasks(tmp_path):
    cases = "".join(f'<testcase classname="t" name="test_{n}" time="{n}.4"/>' for n in (4, 9, 1, 7, 6, 8, 2))
    (tmp_path / "junit.xml").write_text(f"<testsuites><testsuite>{cases}</testsuite></testsuites>")
    # Left by an earlier run: its times are no longer this stage's.
    stale = tmp_path / "build" / "junit" / "slow-old.xml"
    stale.parent.mkdir(parents=True)
    stale.write_text('<testsuite><testcase classname="t" name="test_stale" time="999"/></testsuite>')
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    tasks = "\n".join(
        f"echo 'role : task {n} {'-' * 30} {n}.40s'" for n in (13, 11, 17, 12, 16, 14, 15, 3)
    )  # eight tasks, five shown
    root = make_repo(
        tmp_path,
        "main fast 5\nmain slow 0.2\n",
        {"fast": "true", "slow": f'cp "$here/junit.xml" build/junit/slow.xml\n{tasks}\nsleep 0.6'},
    )
    result = run_lanes(root)
    assert result.returncode == 0, result.stdout
    assert row(result.stdout, "main", "slow").endswith("OVER")
    assert row(result.stdout, "main", "fast").endswith("ok")
    report = result.stdout.split("=== stage slow (OVER): slowest ===\n", 1)[1]
    assert report.splitlines()[:12] == [
        "tests:",
        "     9.4 s  t::test_9",
        "     8.4 s  t::test_8",
        "     7.4 s  t::test_7",
        "     6.4 s  t::test_6",
        "     4.4 s  t::test_4",
        "tasks:",
        "      17 s  role : task 17",
        "      16 s  role : task 16",
        "      15 s  role : task 15",
        "      14 s  role : task 14",
        "      13 s  role : task 13",
    ]
    assert "test_stale" not in result.stdout
    assert "=== stage fast" not in result.stdout
    # .ci/run prints the same report again as its last table.
    saved = (root / "build" / "ci" / "budget.txt").read_text()
    assert row(saved, "main", "slow").endswith("OVER")
    assert "     9.4 s  t::test_9" in saved


@pytest.mark.parametrize(("outcome", "shown"), [("return 0", 150), ("return 1", 300)])
def test_a_side_lane_is_only_logged_with_a_heartbeat_and_its_tail_at_the_end(tmp_path, outcome, shown):
    root = make_repo(
        tmp_path,
        "main m 5\nvm v 5\n",
        {
            "m": "echo m-live; sleep 0.8",
            "v": f"for i in $(seq 1 400); do echo v-line-$i; done\nsleep 0.8\necho v-done\n{outcome}",
        },
    )
    result = run_lanes(root, "--heartbeat", "0.2")
    assert "m-live" in result.stdout
    assert re.search(r"^\[vm\] stage v running [\d.]+ s, last: v-line-400$", result.stdout, re.MULTILINE)
    frame = re.search(
        r"=== lane vm: tail of build/ci/v.log ===\n(.*)\n=== lane vm: end of build/ci/v.log ===", result.stdout, re.S
    )
    assert frame
    lines = frame.group(1).splitlines()
    assert len(lines) == shown
    assert lines[-2:] == ["v-line-400", "v-done"]
    outside = result.stdout.replace(frame.group(0), "")
    assert all(line.startswith("[vm] ") for line in outside.splitlines() if "v-line" in line)
    assert (root / "build" / "ci" / "v.log").read_text().count("\n") == 401


def test_the_main_lane_is_shown_while_it_runs(tmp_path):
    root = make_repo(tmp_path, "main m 5\n", {"m": "echo m-live\nsleep 1.5"})
    with subprocess.Popen(command(root), stdout=subprocess.PIPE, text=True) as runner:
        for line in runner.stdout:
            if line == "m-live\n":
                break
        still_running = runner.poll() is None
        runner.communicate(timeout=10)
    assert still_running
    assert runner.returncode == 0


def test_a_signal_to_the_runner_stops_every_stage_and_still_prints_the_table(tmp_path):
    sleeper = 'sleep 30 &\necho $! >"$here/{}.pid"\nwait'
    root = make_repo(
        tmp_path,
        "main m 30\nvm v 30\nafter down 5 always\n",
        {"m": sleeper.format("m"), "v": sleeper.format("v"), "down": "true"},
    )
    with subprocess.Popen(command(root), stdout=subprocess.PIPE, text=True) as runner:
        deadline = time.monotonic() + 10
        while not ((root / "m.pid").exists() and (root / "v.pid").exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.send_signal(signal.SIGTERM)
        out = runner.communicate(timeout=15)[0]
    assert runner.returncode == 128 + signal.SIGTERM
    assert "lane main stopped in stage m: the runner got SIGTERM" in out
    assert "lane vm stopped in stage v: the runner got SIGTERM" in out
    assert "=== budget (actual / budget) ===" in out
    assert row(out, "after", "down").endswith("skipped")
    for name in ("m", "v"):
        assert not alive(int((root / f"{name}.pid").read_text()))


# --- tests/run-stages


def test_run_stages_says_whether_a_stage_exists():
    for name, expected in (("lint", 0), ("unit", 0), ("cleanup_nothing", 1)):
        result = subprocess.run(
            ["bash", str(TESTS / "run-stages"), "--has", name], capture_output=True, text=True, check=False
        )
        assert (result.returncode, result.stdout, result.stderr) == (expected, "", "")


def test_run_stages_without_arguments_hands_over_to_the_lanes(tmp_path):
    # A copy in a tree of its own, where tests/lanes.py only says it was run.
    (tmp_path / "tests").mkdir()
    shutil.copy(TESTS / "run-stages", tmp_path / "tests" / "run-stages")
    (tmp_path / "tests" / "lanes.py").write_text("import sys\nprint('lanes', sys.argv[1:])\nsys.exit(7)\n")
    result = subprocess.run(
        ["bash", str(tmp_path / "tests" / "run-stages")], capture_output=True, text=True, check=False, timeout=30
    )
    assert (result.returncode, result.stdout) == (7, "lanes []\n")
