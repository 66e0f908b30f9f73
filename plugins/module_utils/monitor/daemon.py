# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The isolation monitor: prove the host's isolation, and stop serving the moment it cannot.

Two kinds of check:

- fast (on every ruleset, link, address or route event, within ``settle`` s, and
  before every full check): the live ``inet enclave`` table against the installed
  rules file, interfaces and default routes against the settings;
- full (every ``interval`` s, and before the gate is opened): the fast check, the
  canaries from the host, as the service user and inside the vLLM container's
  network namespace, and the drop counters that must have moved with them.

The gate file exists only while a full check has passed and no breach waits for
an operator. A breach removes it, kills the container, stops the vLLM unit (and
the ingress), reloads the installed rules file when the live table differs from
it (``restore_ruleset``, rate-limited), and is persisted under ``state_dir``
until ``enclave-isolation clear`` passes a full check. With ``alert_only`` the
evidence is written but nothing is stopped or restored.

CLI: ``enclave-isolation run|status|check|clear|validate [--config PATH] [--no-events]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from ansible_collections.enclave.llm.plugins.module_utils import atomic_file
from ansible_collections.enclave.llm.plugins.module_utils.monitor import config as config_lib
from ansible_collections.enclave.llm.plugins.module_utils.monitor import evidence, network, nft, probes, restore
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import egress_probe

CONFIG_PATH = "/etc/enclave/isolation-monitor.json"
BREACH_FILE = "isolation-breach.json"
SYSTEMCTL = "/usr/bin/systemctl"
BLOCKED = ("rejected", "timeout", "unreachable")
# A listing of the table that outlasts nft's usual bound is tried once more
# with this one: a host busy booting (or an emulated one) can be that slow,
# and a slow listing proves nothing either way.
SLOW_LIST_TIMEOUT = 30
# The vLLM unit (Type=exec) is active as soon as `podman run` has started,
# seconds before the container exists. Within this many seconds of becoming
# active a unit without its container is starting, not a probe error: there
# is no namespace yet that anything could leave from.
CONTAINER_START_GRACE = 90


def _stop_on_sigterm(_signum, _frame):
    raise SystemExit(0)


def _say(text="", stream=None):
    """One line of the command-line program this module also is."""
    stream = stream or sys.stdout
    stream.write(f"{text}\n")
    stream.flush()


def breach(kind, where, detail, target=None):
    return {"kind": kind, "where": where, "detail": detail, "target": target}


class UnitControl:
    """Start, stop and query the vLLM user unit (as the service account) and the ingress system units."""

    def __init__(self, config):
        self.config = config

    def _user_env(self, user):
        runtime = f"/run/user/{user.pw_uid}"
        return {
            "XDG_RUNTIME_DIR": runtime,
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus",
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C",
        }

    def user_systemctl(self, *args):
        try:
            user = probes.service_user(self.config["service_user"])
        except KeyError:
            return subprocess.CompletedProcess(args, 1, "", f"no user {self.config['service_user']}")
        return subprocess.run(
            [SYSTEMCTL, "--user", *args],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            env=self._user_env(user),
            capture_output=True,
            text=True,
            timeout=15,
            cwd="/",
            check=False,
        )

    def system_systemctl(self, *args):
        return subprocess.run([SYSTEMCTL, *args], capture_output=True, text=True, timeout=15, check=False)

    def vllm_state(self):
        """``(ActiveState, UnitFileState)`` of the vLLM unit; ('unknown', '') when its manager cannot tell."""
        run = self.user_systemctl("show", "-p", "ActiveState", "-p", "UnitFileState", self.config["vllm_unit"])
        values = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
        return values.get("ActiveState", "unknown"), values.get("UnitFileState", "")

    def vllm_active_seconds(self):
        """How long the vLLM unit has been active, from its manager's monotonic timestamp; None when unknown."""
        run = self.user_systemctl("show", "-p", "ActiveEnterTimestampMonotonic", self.config["vllm_unit"])
        values = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
        try:
            entered = int(values.get("ActiveEnterTimestampMonotonic", ""))
        except ValueError:
            return None
        # Both clocks are the kernel's CLOCK_MONOTONIC; 0 means never active.
        return max(time.monotonic() - entered / 1e6, 0.0) if entered > 0 else None

    def stop_serving(self):
        """Kill the container, stop the vLLM unit and the ingress; the actions taken, for the evidence."""
        actions = []
        run = self.user_systemctl("stop", "--no-block", self.config["vllm_unit"])
        actions.append(f"stop {self.config['vllm_unit']} (user {self.config['service_user']}): rc {run.returncode}")
        if self.config["container"]:
            try:
                uid = probes.service_user(self.config["service_user"]).pw_uid
                pid = probes.container_pid(self.config["container"], uid)
            except KeyError:
                pid = None
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    actions.append(f"killed container {self.config['container']} (pid {pid})")
                except OSError as exc:
                    actions.append(f"kill container {self.config['container']} (pid {pid}) failed: {exc.strerror}")
        for unit in self.config["ingress_units"]:
            run = self.system_systemctl("stop", "--no-block", unit)
            actions.append(f"stop {unit}: rc {run.returncode}")
        return actions

    def resume(self, units):
        """Start the units a breach stopped, now that the gate is open again."""
        actions = []
        for scope, unit in units:
            run = (
                self.user_systemctl("start", "--no-block", unit)
                if scope == "user"
                else self.system_systemctl("start", "--no-block", unit)
            )
            actions.append(f"start {unit}: rc {run.returncode}")
        return actions


class Monitor:
    def __init__(self, config, units=None):
        self.config = config
        self.units = units or UnitControl(config)
        self.host = socket.gethostname()
        self.breach_path = os.path.join(config["state_dir"], BREACH_FILE)
        self._expected = (None, None)
        self.breaches_by_kind = {}
        self.probe_errors = 0
        self.last_check = {}
        self.durations = {}
        self.last_ok = False
        self.lock = threading.Lock()
        self.restore_limit = restore.RateLimit()
        self.restores_by_outcome = {}
        self._refusing = False
        # Bumped by every reload: a full check whose probes straddle one reads
        # counters reset to zero, not counters that failed to move.
        self.reloads = 0

    # --- checks ----------------------------------------------------------------

    def expected(self):
        path = self.config["rules_file"]
        try:
            stat = os.stat(path)
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None
        if key is None or key != self._expected[0]:
            table = self.config["table"]
            self._expected = (key, nft.expected_table(path, table["family"], table["name"]))
        return self._expected[1]

    def table_breaches(self):
        """``(breaches, live objects or None)``."""
        table = self.config["table"]
        where = f"table {table['family']} {table['name']}"
        try:
            try:
                live, error = nft.list_table(table["family"], table["name"])
            except subprocess.TimeoutExpired:
                live, error = nft.list_table(table["family"], table["name"], timeout=SLOW_LIST_TIMEOUT)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return [breach("probe_error", where, f"cannot list the table: {exc}")], None
        if error:
            return [breach("probe_error", where, error)], None
        if live is None:
            return [breach("table_missing", where, "the table is not loaded")], None
        try:
            expected = self.expected()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return [breach("probe_error", where, f"no expected table: {exc}")], live
        return [breach(kind, where, detail) for kind, detail in nft.collapse(nft.differences(expected, live))], live

    def network_breaches(self):
        try:
            links, routes = network.read()
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            return [breach("probe_error", "host network", f"cannot read interfaces and routes: {exc}")]
        found = network.uncovered(links, routes, self.config["interfaces"], self.config["default_routes"])
        return [breach(kind, "host network", detail) for kind, detail in found]

    def fast_check(self):
        table_found, live = self.table_breaches()
        return table_found + self.network_breaches(), live

    def _probe_breaches(self, where, targets, results):
        found, blocked = [], 0
        for target, result in zip(targets, results, strict=True):
            label = f"{target['name']} {target['proto']} {target['address']}:{target.get('port') or ''}".rstrip(":")
            if "error" in result:
                self.probe_errors += 1
                found.append(breach("probe_error", where, result["error"], label))
            elif egress_probe.reachable(result["verdict"]):
                found.append(breach("canary_reachable", where, result["evidence"], label))
            else:
                blocked += 1
        return found, blocked

    def _counter_breaches(self, before, counter, where, blocked):
        if not blocked or before is None:
            return []
        _after_found, after_live = self.table_breaches()
        if after_live is None:
            return []
        start, end = nft.counters(before).get(counter), nft.counters(after_live).get(counter)
        if start is None or end is None:
            return [breach("counter", where, f"counter {counter} is missing from the table")]
        if end <= start:
            return [
                breach(
                    "counter",
                    where,
                    f"{blocked} canary probe(s) were blocked but counter {counter} did not move: "
                    "something other than the enclave table dropped them",
                )
            ]
        return []

    def container_breaches(self):
        name = self.config["container"]
        if not name:
            return []
        where = f"container {name}"
        try:
            uid = probes.service_user(self.config["service_user"]).pw_uid
        except KeyError:
            return [breach("probe_error", where, f"there is no service user {self.config['service_user']}")]
        pid = probes.container_pid(name, uid)
        if pid is None:
            state, _file_state = self.units.vllm_state()
            if state != "active":
                return []  # stopped, starting or stopping: no namespace to leak from yet, or any more
            active_for = self.units.vllm_active_seconds()
            if active_for is not None and active_for < CONTAINER_START_GRACE:
                return []  # podman run is still making the container
            return [
                breach(
                    "probe_error", where, f"{self.config['vllm_unit']} is {state} but container {name} is not running"
                )
            ]
        targets = [target for target in self.config["canaries"] if not (target.get("netns") or target.get("pid"))]
        results = probes.probe_all(targets, netns_path=f"/proc/{pid}/ns/net")
        return self._probe_breaches(where, targets, results)[0]

    def full_check(self):
        reloads = self.reloads
        found = self._full_check()
        if self.reloads != reloads:
            found = [item for item in found if item["kind"] != "counter"]
        return found

    def _full_check(self):
        found, live = self.fast_check()
        general = [target for target in self.config["canaries"] if not (target.get("netns") or target.get("pid"))]
        own = [target for target in self.config["canaries"] if target.get("netns") or target.get("pid")]
        counters = self.config["counters"]
        host_found, blocked = self._probe_breaches("host", general, probes.probe_all(general))
        found += host_found + self._counter_breaches(live, counters["host"], "host", blocked)
        _again, live = self.table_breaches()
        try:
            user = probes.service_user(self.config["service_user"])
            where = f"service user {user.pw_name}"
            user_found, blocked = self._probe_breaches(where, general, probes.probe_all(general, user=user))
            found += user_found + self._counter_breaches(live, counters["service_user"], where, blocked)
        except KeyError:
            found.append(breach("probe_error", "service user", f"there is no user {self.config['service_user']}"))
        for target in own:
            found += self._probe_breaches(
                f"namespace {target.get('netns') or target.get('pid')}", [target], [probes.probe_own_namespace(target)]
            )[0]
        found += self.container_breaches()
        return found

    # --- state and actions -------------------------------------------------------

    def breach_state(self):
        try:
            with open(self.breach_path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"breaches": [breach("probe_error", "state", f"{self.breach_path} is unreadable")], "stopped": []}

    def gate_open(self):
        return os.path.exists(self.config["gate_file"])

    def open_gate(self):
        os.makedirs(os.path.dirname(self.config["gate_file"]), mode=0o755, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_file.write_atomic(self.config["gate_file"], json.dumps({"verified_at": stamp, "host": self.host}) + "\n")

    def close_gate(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config["gate_file"])

    def _emit(self, found, actions):
        problems = []
        for item in found:
            self.breaches_by_kind[item["kind"]] = self.breaches_by_kind.get(item["kind"], 0) + 1
            problems.append(evidence.send_journal(evidence.breach_fields(item, actions, self.host)))
            problems.append(evidence.send_audit(evidence.audit_text(item)))
            if self.config["syslog"]:
                line = evidence.syslog_line(f"{item['kind']} ({item['where']}): {item['detail']}", self.host)
                problems.append(evidence.send_syslog(line, self.config["syslog"]))
        failed = sorted({problem for problem in problems if problem})
        if failed:
            self.log(f"some evidence could not be written: {'; '.join(failed)}", evidence.PRIORITY_NOTICE)

    def restore_ruleset(self, found):
        """Reload the installed rules file when the live table departs from it; the restore entry, or None."""
        findings = restore.table_findings(found)
        if not findings or self.config["alert_only"] or not self.config["restore_ruleset"]:
            return None
        path = self.config["rules_file"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        started = time.monotonic()
        if not self.restore_limit.allow(started):
            return restore.refused_entry(stamp, path, findings, self.restore_limit, started)
        rc, message = restore.load(path, nft.NFT)
        self.reloads += 1
        remaining, _live = self.table_breaches()
        remaining = [f"{item['kind']}: {item['detail']}" for item in remaining]
        return restore.entry(stamp, path, findings, rc, message, remaining, time.monotonic() - started)

    def _record_restore(self, item):
        """Count the restore and write its journal entry and audit record; False when a refusal streak goes on."""
        outcome = restore.outcome(item)
        self.restores_by_outcome[outcome] = self.restores_by_outcome.get(outcome, 0) + 1
        # One entry per refusal streak: a rule injected in a loop must not flood the journal either.
        refusing, self._refusing = self._refusing, outcome == "rate_limited"
        if refusing and self._refusing:
            return False
        problems = [
            evidence.send_journal(evidence.restore_fields(item, self.host)),
            evidence.send_audit(evidence.restore_audit_text(item)),
        ]
        failed = sorted({problem for problem in problems if problem})
        if failed:
            self.log(f"some evidence could not be written: {'; '.join(failed)}", evidence.PRIORITY_NOTICE)
        return True

    def on_breach(self, found):
        """Close the gate, stop serving and restore the ruleset (unless alert-only), persist, write the evidence."""
        state = self.breach_state()
        known = {(item["kind"], item["where"], item["detail"]) for item in (state or {}).get("breaches", [])}
        new = [item for item in found if (item["kind"], item["where"], item["detail"]) not in known]
        actions, restored = [], None
        if not self.config["alert_only"]:
            self.close_gate()
            actions = self.units.stop_serving()
            restored = self.restore_ruleset(found)
        if restored and self._record_restore(restored):
            actions.append(restore.summary(restored))
        else:
            restored = None
        first = state is None
        if new or first or restored:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            stopped = (state or {}).get("stopped") or (
                []
                if self.config["alert_only"]
                else [["user", self.config["vllm_unit"]]] + [["system", unit] for unit in self.config["ingress_units"]]
            )
            state = {
                "since": (state or {}).get("since", stamp),
                "breaches": (state or {}).get("breaches", []) + [{**item, "at": stamp} for item in new],
                "stopped": stopped,
                "alert_only": self.config["alert_only"],
                "restores": restore.keep((state or {}).get("restores"), restored)
                if restored
                else (state or {}).get("restores", []),
            }
            os.makedirs(self.config["state_dir"], mode=0o755, exist_ok=True)
            atomic_file.write_atomic(self.breach_path, json.dumps(state, indent=2) + "\n", mode=0o600)
            if new or first:
                self._emit(new or found, actions)

    def enforce_while_breached(self):
        """A unit started while a breach waits (by hand, by a timer) is stopped again."""
        if self.config["alert_only"]:
            return
        self.close_gate()
        state, _file_state = self.units.vllm_state()
        if state in ("active", "activating", "reloading"):
            actions = self.units.stop_serving()
            self._emit(
                [breach("started_while_breached", self.config["vllm_unit"], f"{self.config['vllm_unit']} was {state}")],
                actions,
            )

    def verified(self):
        """A full check passed and no breach waits: open the gate (the vLLM unit retries until it is)."""
        if self.gate_open():
            return
        self.open_gate()
        self.log("isolation verified: the gate is open", evidence.PRIORITY_INFO, evidence.MESSAGE_ID_VERIFIED)

    def log(self, message, priority, message_id=None):
        fields = {"MESSAGE": message, "PRIORITY": priority, "SYSLOG_IDENTIFIER": "enclave-isolation"}
        if message_id:
            fields["MESSAGE_ID"] = message_id
        if evidence.send_journal(fields):
            _say(message, stream=sys.stderr)

    def write_metrics(self):
        folder = self.config["metrics_dir"]
        text = evidence.metrics_text(
            self.last_ok and self.breach_state() is None,
            self.breach_state() is not None,
            self.breaches_by_kind,
            self.last_check,
            self.durations,
            self.probe_errors,
            self.restores_by_outcome,
        )
        try:
            os.makedirs(folder, mode=0o755, exist_ok=True)
            atomic_file.write_atomic(os.path.join(folder, evidence.METRICS_FILE), text)
        except OSError as exc:
            self.log(f"cannot write metrics to {folder}: {exc.strerror}", evidence.PRIORITY_NOTICE)

    def cycle(self, full):
        """One check and its consequences; returns the breaches found.

        The checks run unlocked, so an event's fast check never waits for a full
        check's probes; only the consequences are serialised.
        """
        started = time.monotonic()
        try:
            found = self.full_check() if full else self.fast_check()[0]
        except Exception as exc:  # a check that cannot finish proves nothing: fail closed
            found = [breach("probe_error", "monitor", f"the {'full' if full else 'fast'} check failed: {exc!r}")]
        with self.lock:
            name = "full" if full else "fast"
            self.durations[name] = time.monotonic() - started
            self.last_check[name] = time.time()
            self.last_ok = not found
            if found:
                self.on_breach(found)
            elif self.breach_state() is not None:
                self.enforce_while_breached()
            elif full:
                self.verified()
            self.write_metrics()
            return found


class EventWatch:
    """Lines from ``nft monitor`` and ``ip monitor`` wake the monitor; a watcher that dies is restarted."""

    COMMANDS = (
        [nft.NFT, "monitor"],
        [network.IP, "-o", "monitor", "link", "address", "route"],
    )

    def __init__(self, wake, log):
        self.wake, self.log = wake, log
        self.processes = []

    def start(self):
        for command in self.COMMANDS:
            threading.Thread(target=self._follow, args=(command,), daemon=True).start()

    def _follow(self, command):
        while True:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.processes.append(process)
            for _line in process.stdout:
                self.wake.set()
            process.wait()
            self.log(f"{command[0]} monitor ended (rc {process.returncode}); restarting it", evidence.PRIORITY_NOTICE)
            self.wake.set()
            time.sleep(1)


def notify(state):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), path)


def run(monitor, events=True):
    wake = threading.Event()
    if events:
        EventWatch(wake, monitor.log).start()
        time.sleep(0.2)  # let both watchers subscribe before the first check
    monitor.log(
        f"monitor started: interval {monitor.config['interval']:g} s, events {'on' if events else 'off'}, "
        f"{'alert only' if monitor.config['alert_only'] else 'kill switch armed'}",
        evidence.PRIORITY_INFO,
    )
    monitor.cycle(full=True)
    notify("READY=1")
    next_full, full_check = time.monotonic() + monitor.config["interval"], None
    while True:
        if wake.wait(timeout=max(next_full - time.monotonic(), 0)):
            time.sleep(monitor.config["settle"])  # one check for a burst of events
            wake.clear()
            monitor.cycle(full=False)
        if time.monotonic() >= next_full:
            # In a thread of its own: its probes take seconds, events must not wait for them.
            if full_check is None or not full_check.is_alive():
                full_check = threading.Thread(target=monitor.cycle, args=(True,), daemon=True)
                full_check.start()
            next_full = time.monotonic() + monitor.config["interval"]


def status(monitor):
    state = monitor.breach_state()
    _say(f"gate {monitor.config['gate_file']}: {'open' if monitor.gate_open() else 'closed'}")
    if state is None:
        _say("no breach is pending")
        return 0 if monitor.gate_open() else 2
    _say(f"BREACH pending since {state.get('since')}{' (alert only)' if state.get('alert_only') else ''}:")
    for item in state.get("breaches", []):
        target = f" [{item['target']}]" if item.get("target") else ""
        _say(f"  {item.get('at')} {item['kind']} ({item['where']}){target}: {item['detail']}")
    _say("restore the isolation (docs/isolation-monitor.md), then run: enclave-isolation clear")
    return 1


def check(monitor):
    found = monitor.full_check()
    for item in found:
        target = f" [{item['target']}]" if item.get("target") else ""
        _say(f"{item['kind']} ({item['where']}){target}: {item['detail']}")
    if not found:
        _say("isolation verified: no breach found")
    return 1 if found else 0


def clear(monitor):
    state = monitor.breach_state()
    found = monitor.full_check()
    if found:
        for item in found:
            _say(f"still breached: {item['kind']} ({item['where']}): {item['detail']}")
        _say("nothing cleared: restore the isolation first (docs/isolation-monitor.md)")
        return 1
    with contextlib.suppress(FileNotFoundError):
        os.unlink(monitor.breach_path)
    monitor.open_gate()
    stopped = [tuple(item) for item in (state or {}).get("stopped", [])] if monitor.config["resume_units"] else []
    actions = monitor.units.resume(stopped)
    monitor.log(
        f"breach cleared by {os.environ.get('SUDO_USER') or os.environ.get('USER') or 'root'} after a full check; "
        f"gate open; {'; '.join(actions) or 'nothing to restart'}",
        evidence.PRIORITY_NOTICE,
        evidence.MESSAGE_ID_CLEARED,
    )
    # The metrics are the daemon's: this process knows none of its counters.
    _say("isolation verified; breach cleared; " + ("; ".join(actions) or "nothing to restart"))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="enclave-isolation", description="The enclave's isolation monitor.")
    parser.add_argument("command", choices=("run", "status", "check", "clear", "validate"))
    parser.add_argument("--config", default=CONFIG_PATH)
    parser.add_argument("--no-events", action="store_true", help="poll only (the benchmark's baseline)")
    args = parser.parse_args(argv)
    try:
        config = config_lib.load(args.config)
    except (OSError, ValueError) as exc:
        _say(f"{args.config}: {exc}", stream=sys.stderr)
        return 2
    if args.command == "validate":
        return 0
    monitor = Monitor(config)
    if args.command == "run":
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        run(monitor, events=config["events"] and not args.no_events)
        return 0
    return {"status": status, "check": check, "clear": clear}[args.command](monitor)


if __name__ == "__main__":
    raise SystemExit(main())
