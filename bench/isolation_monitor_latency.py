"""Isolation monitor: breach -> vLLM unit stopped, event-driven vs. polling every 5 s, and CPU over a soak.

    sudo python3 bench/isolation_monitor_latency.py [--count 20] [--soak 600] [--json out.json]

Runs against the lab's enclave host (lab/up, site.yml applied). Installs the
monitor with playbooks/monitor.yml and a stand-in for the vLLM unit (a user
unit of the service account running a rootless container with no network),
as tests/lab/test_isolation_monitor_breaches.py does. Then, for each mode —
the monitor as shipped (nft and netlink events, full check every 30 s) and the
same monitor polling only, every 5 s (the reference design's interval) — it
injects each kind of breach ``--count`` times from a driver inside the host:
the latency is the unit's InactiveEnterTimestampMonotonic minus the injection
time on the same clock. For ruleset breaches it also times the monitor's
reload: until the live table (``nft -s list``) equals the rules file loaded in
a scratch namespace. The monitor reloads at most 3 times a minute, so only
some ruleset samples have a reload (``reloaded`` n). After each breach the
change is undone (the firewall from its persisted rules file) and
``enclave-isolation clear`` resumes the unit.
Finally the shipped monitor runs ``--soak`` seconds with no breach: its CPU
(the service's cgroup, children included) and the alarms raised (none
expected). Goals (issue 6): ruleset breaches max <= 1 s, route/interface max
<= 2 s, CPU < 1 % of one core. Nothing is asserted.

The lab host is restored and the monitor disabled at the end, also when the
run fails or is interrupted (Ctrl-C, SIGTERM, SIGHUP): the driver inside the
host undoes its own breach, is killed by its pid file, every breach is undone
again, the monitor's settings file is put back as it was, and the stand-in unit
is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The test's lab helpers and stand-in unit, and the integration helpers they use.
sys.path[:0] = [str(REPO / "tests" / "lab"), str(REPO / "tests" / "integration")]

import test_isolation_monitor_breaches as lab  # noqa: E402  (the test's lab helpers and stand-in unit)

CONFIG = "/etc/enclave/isolation-monitor.json"
DRIVER_PID = "/run/enclave-mon-bench-driver.pid"
# The lab test's route: no device named, so the kernel takes the lab network's
# (whichever ethN podman gave it on this start; "dev eth0" fails on the others).
ROUTE_INJECT, ROUTE_UNDO, _KINDS, _BOUND = lab.BREACHES["default route to the canary"]
KINDS = {
    "table deleted": ("ruleset", "nft delete table inet enclave", lab.RESTORE_FIREWALL),
    "table flushed": ("ruleset", "nft flush table inet enclave", lab.RESTORE_FIREWALL),
    "accept rule for the service user": (
        "ruleset",
        f"nft insert rule inet enclave output meta skuid {lab.USER} accept",
        lab.RESTORE_FIREWALL,
    ),
    "policy accept": ("ruleset", "nft 'chain inet enclave output { policy accept; }'", lab.RESTORE_FIREWALL),
    "new interface (veth)": (
        "network",
        "ip link add enc-mon0 type veth peer name enc-mon1",
        "ip link del enc-mon0",
    ),
    "new default route": ("network", ROUTE_INJECT, ROUTE_UNDO),
}

# Runs inside the lab host: inject, wait for the unit to stop (and, for the
# ruleset, for the monitor's reload), undo, clear, wait for it to serve.
DRIVER = r"""
import json, os, subprocess, sys, time
unit, gate, user, kinds, count = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
rules, pidfile = sys.argv[6], sys.argv[7]
with open(pidfile, "w") as handle:
    handle.write(str(os.getpid()))
uid = subprocess.run(["id", "-u", user], capture_output=True, text=True).stdout.strip()
as_user = ["runuser", "-u", user, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{uid}", "systemctl", "--user"]
LIST = "nft -s list table inet enclave"

def table(scratch=False):
    argv = ["unshare", "--net", "--", "sh", "-c", f"nft -f {rules} && {LIST}"] if scratch else ["sh", "-c", LIST]
    return subprocess.run(argv, capture_output=True, text=True, check=scratch).stdout

installed = table(scratch=True)

def show(prop):
    out = subprocess.run(as_user + ["show", "-p", prop, "--value", unit], capture_output=True, text=True, cwd="/")
    return out.stdout.strip()

def serving(limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if show("ActiveState") == "active" and subprocess.run(["test", "-f", gate]).returncode == 0:
            return True
        time.sleep(0.2)
    return False

for name, (group, inject, undo) in kinds.items():
    for index in range(count):
        if not serving():
            print(json.dumps({"kind": name, "error": "not serving before the breach"}), flush=True)
            subprocess.run(["enclave-isolation", "clear"], capture_output=True)
            continue
        start = time.monotonic()
        latency = fired = restored = None
        try:
            subprocess.run(["sh", "-c", inject], check=True)
            while time.monotonic() - start < 30:
                if restored is None and group == "ruleset" and table() == installed:
                    restored = time.monotonic() - start
                if latency is None and show("ActiveState") in ("inactive", "failed"):
                    # Killed, the unit ends failed rather than inactive: the last state change is the stop.
                    latency = int(show("StateChangeTimestampMonotonic")) / 1e6 - start
                    fired = int(show("ActiveExitTimestampMonotonic")) / 1e6 - start
                # A reload refused by the monitor's rate limit (3 a minute) never comes: stop waiting for it.
                done = restored is not None or group != "ruleset" or time.monotonic() - start > 5
                if latency is not None and done:
                    break
                time.sleep(0.02)
        finally:
            subprocess.run(["sh", "-c", undo])
        sample = {"kind": name, "group": group, "latency": latency, "fired": fired, "restored": restored}
        print(json.dumps(sample), flush=True)
        for _ in range(5):
            if subprocess.run(["enclave-isolation", "clear"], capture_output=True).returncode == 0:
                break
            time.sleep(1)
"""


def set_mode(events, interval):
    """Rewrite the installed settings' mode and restart the monitor; the role's next run puts them back."""
    settings = json.loads(lab.host(f"cat {CONFIG}").stdout)
    settings.update(events=events, interval=interval)
    lab.host(f"cat > {CONFIG} <<'EOF'\n{json.dumps(settings, indent=4)}\nEOF")
    lab.host(f"systemctl restart {lab.SERVICE}")
    lab.wait_until("serving after the monitor restart", lab.serving_verified, 60)


def keep_loaded(on):
    """A wants link keeps the stopped stand-in loaded, so systemd keeps its timestamps (an unreferenced
    inactive unit is unloaded at once, and its timestamps read 0)."""
    home = lab.host(f"getent passwd {lab.USER} | cut -d: -f6").stdout.strip()
    link = f"{home}/.config/systemd/user/default.target.wants/{lab.STANDIN_UNIT}"
    if on:
        lab.host(f"mkdir -p {os.path.dirname(link)} && ln -sfn ../{lab.STANDIN_UNIT} {link}")
    else:
        lab.host(f"rm -f {link}", check=False)
    lab.as_user("systemctl --user daemon-reload", check=False)


def run_driver(count):
    env = {**os.environ, "CONTAINERS_CONF": str(lab.LAB_STATE / "containers.conf")}
    kinds = json.dumps(KINDS)
    command = [
        "podman",
        "exec",
        "-i",
        lab.HOST,
        "python3",
        "-",
        lab.STANDIN_UNIT,
        lab.GATE,
        lab.USER,
        kinds,
        str(count),
        lab.RULES_FILE,
        DRIVER_PID,
    ]
    run = subprocess.run(command, input=DRIVER, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if run.returncode != 0:
        raise SystemExit(f"driver failed: {run.stderr[-2000:]}")
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def stop_driver():
    """Kill the driver inside the host if it still runs (this process was interrupted), by its pid file."""
    lab.host(f"test -f {DRIVER_PID} && kill $(cat {DRIVER_PID}) 2>/dev/null; rm -f {DRIVER_PID}", check=False)


def undo_every_breach():
    for _group, _inject, undo in KINDS.values():
        lab.host(undo, check=False)


def interrupted(signum, _frame):
    # SIGTERM and SIGHUP end the run through the finally blocks, as Ctrl-C does.
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def summary(samples):
    rows = {}
    for name in KINDS:
        values = [
            sample["latency"] for sample in samples if sample["kind"] == name and sample.get("latency") is not None
        ]
        missed = sum(1 for sample in samples if sample["kind"] == name and sample.get("latency") is None)
        fired = [sample["fired"] for sample in samples if sample["kind"] == name and sample.get("fired") is not None]
        restored = [
            sample["restored"] for sample in samples if sample["kind"] == name and sample.get("restored") is not None
        ]
        rows[name] = {
            "n": len(values),
            "missed": missed,
            "errors": sorted({sample["error"] for sample in samples if sample["kind"] == name and "error" in sample}),
            "p50": statistics.median(values) if values else None,
            "max": max(values) if values else None,
            "fired_p50": statistics.median(fired) if fired else None,
            "fired_max": max(fired) if fired else None,
            "restored_n": len(restored),
            "restored_p50": statistics.median(restored) if restored else None,
            "restored_max": max(restored) if restored else None,
        }
    return rows


def cpu_seconds():
    pid = lab.host(f"systemctl show -p MainPID --value {lab.SERVICE}").stdout.strip()
    fields = lab.host(f"cat /proc/{pid}/stat").stdout.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # utime, stime, and the reaped children's (nft, ip, unshare, systemctl, probe forks).
    return sum(int(value) for value in fields[11:15]) / ticks


def soak(seconds):
    set_mode(True, 30)
    before_metrics, since = lab.metrics(), time.time()
    time.sleep(2)
    start_cpu, start = cpu_seconds(), time.monotonic()
    not_serving = 0
    while time.monotonic() - start < seconds:
        time.sleep(5)
        if lab.standin_state() != "active":
            not_serving += 1
    used, elapsed = cpu_seconds() - start_cpu, time.monotonic() - start
    after = lab.metrics()
    return {
        "seconds": round(elapsed, 1),
        "cpu_percent_of_one_core": round(100 * used / elapsed, 3),
        "alarms": len(lab.breach_entries(since)),
        "breaches_total_delta": lab.all_breaches(after) - lab.all_breaches(before_metrics),
        "samples_not_serving": not_serving,
        "full_check_seconds": after.get('enclave_isolation_check_duration_seconds{check="full"}'),
    }


def fmt(value):
    return "-" if value is None else f"{value:.3f} s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--soak", type=int, default=600)
    parser.add_argument("--json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the lab is rootful podman")
    lab.ensure_collection_link()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    results = {}
    with lab.installed_monitor(Path(tempfile.mkdtemp(prefix="monitor-bench"))):
        settings = lab.host(f"cat {CONFIG}").stdout
        keep_loaded(True)
        try:
            set_mode(True, 30)
            results["events"] = summary(run_driver(args.count))
            set_mode(False, 5)
            results["polling 5 s"] = summary(run_driver(args.count))
            results["soak"] = soak(args.soak) if args.soak else None
        finally:
            stop_driver()
            undo_every_breach()
            keep_loaded(False)
            # The settings as the test's install wrote them; installed_monitor then removes the rest.
            lab.host(f"cat > {CONFIG} <<'EOF'\n{settings}EOF", check=False)
    print("unit stopped (left active: kill switch fired) after the change; p50 / max")
    print(
        "| breach | group | events: stopped | events: fired | events: table reloaded "
        "| polling 5 s: stopped | polling 5 s: fired | polling 5 s: table reloaded |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (group, _inject, _undo) in KINDS.items():
        ours, poll = results["events"][name], results["polling 5 s"][name]
        print(
            f"| {name} (n={ours['n']}/{poll['n']}) | {group} | {fmt(ours['p50'])} / {fmt(ours['max'])} "
            f"| {fmt(ours['fired_p50'])} / {fmt(ours['fired_max'])} "
            f"| {fmt(ours['restored_p50'])} / {fmt(ours['restored_max'])} "
            f"| {fmt(poll['p50'])} / {fmt(poll['max'])} | {fmt(poll['fired_p50'])} / {fmt(poll['fired_max'])} "
            f"| {fmt(poll['restored_p50'])} / {fmt(poll['restored_max'])} |"
        )
        for mode in ("events", "polling 5 s"):
            row = results[mode][name]
            if row["missed"] or row["errors"]:
                print(f"  {mode}: {row['missed']} missed, errors: {row['errors']}")
            if group == "ruleset":
                print(f"  {mode}: table reloaded by the monitor in {row['restored_n']} of {row['n']} (rate limit)")
    if results["soak"]:
        print(f"soak: {json.dumps(results['soak'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
