"""playbooks/audit.yml on the converged lab host, in two audits.

The baseline audit runs on the host as converged: it changes nothing, passes,
and writes a complete bundle whose digest verifies.

The drifted audit runs once with every drift below on the host at the same
time, beside an active and an expired waiver, a signing key and a host that
does not answer. Each drift is a change an operator could make by hand on a
production host; from that one run, each drift must have failed exactly its
controls, and each failed control's evidence must show its own drift and no
other. A hardening run over the drifts before that audit must stop without
touching the host, with AIDE's report archived, and the audit after it still
fail ENC-OS-022; a run with that report acknowledged writes the baseline and
installs the pending security update. Then the drifts are undone, the
file-integrity baseline (which rightly saw the changes) is written again as a
converge would, and the host must be as the baseline audit found it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from labkit import AIDE_REBASELINE, ENCLAVE_HOST, REPO, lab_host_vars, play_recap, podman, run_playbook

# Where CI keeps the lab's evidence bundle as a build artefact.
EXPORT = os.environ.get("ENCLAVE_EVIDENCE_EXPORT", str(REPO / "build" / "evidence"))


def on_host(script: str, check: bool = True) -> subprocess.CompletedProcess:
    return podman("exec", ENCLAVE_HOST, "sh", "-c", script, check=check)


def host_state() -> list[str]:
    """What an audit must never change: configuration, packages, the model
    store's files and modes, the loaded ruleset and audit rules, unit states."""
    script = (
        "find /etc -xdev -type f -print0 | sort -z | xargs -0 sha256sum; "
        "find /etc -xdev -printf '%p %m %U %G\\n' | sort; "
        "find /srv/models -printf '%p %m %U %G %s %T@\\n' | sort; "
        "dpkg-query -W -f='${Package} ${Version} ${Status}\\n'; "
        "nft -s list ruleset; auditctl -l; "
        # Transient units (each SSH login's session scope) come and go with logins.
        "systemctl list-unit-files --no-legend --no-pager | grep -v ' transient '"
    )
    return on_host(script).stdout.splitlines()


def digest_of(state: list[str]) -> str:
    return hashlib.sha256("\n".join(state).encode()).hexdigest()


def state_diff(before: list[str], after: list[str], names: tuple[str, str]) -> list[str]:
    return list(difflib.unified_diff(before, after, *names, lineterm="", n=0))


@dataclass
class Audit:
    result: subprocess.CompletedProcess
    run_dir: Path
    # The host's state once the audit (and whatever it was part of) is over.
    host_state: list[str] = field(default_factory=list)

    @property
    def bundle(self) -> Path:
        return self.run_dir / ENCLAVE_HOST

    @functools.cached_property
    def evidence(self) -> dict:
        return json.loads((self.bundle / "evidence.json").read_text())

    @property
    def controls(self) -> dict[str, dict]:
        return {c["id"]: c for c in self.evidence["controls"]}

    def controls_with(self, status: str) -> set[str]:
        return {c["id"] for c in self.evidence["controls"] if c["status"] == status}

    def output(self) -> str:
        return self.result.stdout[-6000:] + self.result.stderr[-2000:]


def run_audit(dest: Path, *extra: str) -> Audit:
    result = run_playbook("playbooks/audit.yml", "-e", f"enclave_audit_dest={dest}", *extra)
    runs = sorted(p for p in dest.iterdir() if p.is_dir()) if dest.is_dir() else []
    assert runs, f"the audit wrote no run folder under {dest}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
    return Audit(result, runs[-1])


@pytest.fixture(scope="module")
def baseline_audit(tmp_path_factory) -> Audit:
    """An audit of the converged host, with its state hashed before and after."""
    dest = tmp_path_factory.mktemp("audit")
    # The host suites may have run first, and their AIDE probe (ENC-OS-022)
    # adds and removes a file under /etc: start from the baseline a converge
    # writes, so the audit sees the converged host whatever the test order.
    on_host(AIDE_REBASELINE)
    before = host_state()
    audit = run_audit(dest)
    after = host_state()
    changed = state_diff(before, after, ("before", "after"))
    assert changed == [], "the audit changed the host:\n" + "\n".join(changed[:40])
    shutil.rmtree(EXPORT, ignore_errors=True)
    shutil.copytree(audit.run_dir, EXPORT)
    Path(EXPORT, "host-state.txt").write_text(
        f"sha256 of {ENCLAVE_HOST}'s state before and after the audit: {digest_of(after)} (equal)\n"
    )
    audit.host_state = after
    return audit


def test_audit_passes_on_the_converged_host_and_changes_nothing(baseline_audit):
    assert baseline_audit.result.returncode == 0, baseline_audit.output()
    evidence = baseline_audit.evidence
    assert evidence["status"] == "passed", {c["id"]: c["status"] for c in evidence["controls"]}
    assert baseline_audit.controls_with("failed") == set()
    assert baseline_audit.controls_with("not_verified") == set()
    assert baseline_audit.controls_with("passed"), "no control passed: nothing was verified"


def test_every_catalogued_control_is_in_the_bundle(baseline_audit):
    import yaml

    catalogue = yaml.safe_load((REPO / "docs" / "controls.yml").read_text())
    assert {c["id"] for c in baseline_audit.evidence["controls"]} == {c["id"] for c in catalogue["controls"]}


def test_the_bundle_is_complete_and_its_digest_verifies(baseline_audit):
    bundle = baseline_audit.bundle
    for name in ("evidence.json", "report.html", "junit.xml", "SHA256SUMS"):
        assert (bundle / name).is_file(), name
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    evidence = baseline_audit.evidence
    cases = list(ET.parse(bundle / "junit.xml").getroot().iter("testcase"))
    assert len(cases) == len(evidence["controls"]), "junit.xml needs one test case per control"
    facts = evidence["facts"]
    assert facts["ruleset_digest"], "no ruleset digest"
    assert "table inet enclave" in facts["enclave_table"]
    if lab_host_vars().get("auditd_enabled"):
        assert facts["audit_rules"], "no loaded audit rules"
    else:
        assert "audit_rules" in facts
    assert facts["packages"].get("nftables"), "no package versions"
    assert facts["model_manifests"], "no model manifest result"
    assert all(not m.get("failed") for m in facts["model_manifests"]), facts["model_manifests"]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert evidence["git_commit"] == commit
    # Evidence is the commands themselves with their output, not a verdict alone.
    passed = [c for c in evidence["controls"] if c["status"] == "passed"]
    without = {c["id"] for c in passed if not any(t["commands"] for t in c["tests"])}
    # These are verified from outside the host (the clinic's requests, the
    # canary probes run through the egress_probe module), which the recorder
    # does not see; their evidence is the test's own result.
    from_outside = {"ENC-FW-002", "ENC-FW-003", "ENC-IG-001", "ENC-IG-004"}
    assert without <= from_outside, f"passed controls without recorded commands: {sorted(without - from_outside)}"
    assert len(passed) - len(without) >= 40, "too few controls carry the commands that verified them"
    summary = json.loads((baseline_audit.run_dir / "summary.json").read_text())
    assert summary["status"] == "passed"


@dataclass
class Drift:
    name: str
    apply: str
    undo: str
    controls: set[str]
    # A pattern that matches the failing evidence only when this drift is on
    # the host: the drifted value or the drifted path, never a name the
    # control's tests print whatever the host looks like.
    marker: str
    # The inventory switch the drifted area needs on the host, if any.
    needs: str | None = None

    def __str__(self) -> str:
        return self.name

    def shown_in(self, text: str) -> bool:
        return re.search(self.marker, text) is not None


def failure_text(control: dict) -> str:
    """What a control's failing tests reported and the output of the commands
    they ran. Its passing tests are left out: they record healthy values, and
    would let one drift's marker turn up under another drift's control."""
    parts = []
    for test in control["tests"]:
        if test["outcome"] not in ("failed", "error"):
            continue
        parts.append(test.get("message") or "")
        for command in test.get("commands") or []:
            parts += [command.get("command") or "", command.get("stdout") or "", command.get("stderr") or ""]
    return "\n".join(parts)


MODEL_FILE = "$(readlink -f /srv/models/tiny-r1/current)/config.json"
PENDING_UPDATE = "a security update pending (a library downgraded)"
ACK_REASON = "lab drift test: changes made by tests/lab/test_audit.py"
# ENC-OS-022 (AIDE) is the one control two drifts share: a single AIDE check
# reports every file changed since the baseline, so both drifts that change a
# file fail it, and no file drift can avoid it. There the evidence decides: the
# AIDE report must name each of the two files, and the check per drift allows a
# shared control to name only the other drifts that expect it too.
DRIFTS = [
    Drift(
        "sshd allows TCP forwarding",
        # Root-only like the drop-ins the role writes, so the one drift is
        # the forwarding (a world-readable file would fail ENC-OS-007 too).
        apply="umask 077; printf 'AllowTcpForwarding yes\\n' > /etc/ssh/sshd_config.d/00-drift.conf",
        undo="rm -f /etc/ssh/sshd_config.d/00-drift.conf",
        controls={"ENC-OS-011", "ENC-OS-022"},
        # sshd -T and the test's dict comparison print the value; AIDE the file.
        marker=r"allowtcpforwarding\W+yes|/etc/ssh/sshd_config\.d/00-drift\.conf",
    ),
    Drift(
        "a model file made writable",
        apply=f"chmod 0644 {MODEL_FILE}",
        undo=f"chmod 0444 {MODEL_FILE}",
        controls={"ENC-MS-002", "ENC-OS-022"},
        # The store's listing prints the mode beside the name; AIDE the full
        # path (the slash keeps tokenizer_config.json and the like out).
        marker=r"644 root root config\.json|/config\.json\b",
    ),
    Drift(
        "an audit rule removed",
        # auditctl -l lists a watch as -w PATH -p x -k KEY, a syscall rule as -a ... key=KEY.
        apply="auditctl -l | grep -m1 -E '(-k |key=)enclave_nft$' | sed -e 's/^-a /-d /' -e 's/^-w /-W /' "
        "| xargs auditctl",
        undo="augenrules --load >/dev/null",
        controls={"ENC-AU-004", "ENC-AU-007"},
        marker=r"\benclave_nft\b",
        needs="auditd_enabled",
    ),
    Drift(
        "a redirect-accepting sysctl",
        apply="sysctl -qw net.ipv4.conf.all.accept_redirects=1",
        undo="sysctl -qw net.ipv4.conf.all.accept_redirects=0",
        controls={"ENC-OS-001"},
        marker=r"accept_redirects\W+1\b",
    ),
    Drift(
        PENDING_UPDATE,
        # The newest libexpat1 of the point release (no -security source):
        # the converged host has the security version, so one is pending again.
        apply="v=$(apt-cache madison libexpat1 | awk -F' *[|] *' '$3 !~ /-security/ {print $2; exit}') && "
        "DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --allow-downgrades libexpat1=$v >/dev/null",
        # The acknowledged hardening run installs the update itself (and
        # checks it did); this only brings the lab back if that run did not.
        undo="DEBIAN_FRONTEND=noninteractive apt-get install -qq -y --only-upgrade libexpat1 >/dev/null",
        controls={"ENC-OS-015", "ENC-OS-022"},
        # The test names the package; AIDE the library's files.
        marker=r"\blibexpat1\b|/libexpat\.so",
    ),
    Drift(
        "an nftables table added beside the enclave's",
        apply="nft add table inet enclave_drift && "
        "nft add chain inet enclave_drift output '{ type filter hook output priority 10; policy accept; }'",
        undo="nft delete table inet enclave_drift",
        controls={"ENC-FW-001"},
        marker=r"\benclave_drift\b",
    ),
]

GHOST = "enclave-lab-ghost"
ARCHIVE = "/var/lib/enclave/aide-reports"
WAIVED = "ENC-OS-020"
EXPIRED = "ENC-OS-021"
WAIVERS = (
    "schema: 1\n"
    "waivers:\n"
    f"  - control: {WAIVED}\n"
    "    reason: the banner text is being agreed with the data protection officer\n"
    "    approver: Head of IT security\n"
    "    expires: 2099-12-31\n"
    f"    hosts: [{ENCLAVE_HOST}]\n"
    f"  - control: {EXPIRED}\n"
    "    reason: an old exception that nobody renewed\n"
    "    approver: Head of IT security\n"
    "    expires: 2020-01-31\n"
)
# An address on the lab's own network where nothing listens.
GHOST_INVENTORY = (
    "llm_servers:\n"
    "  hosts:\n"
    f"    {GHOST}:\n"
    "      ansible_host: 198.51.100.99\n"
    "      ansible_ssh_common_args: >-\n"
    "        -o ConnectTimeout=3 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
)


def new_signing_home(home: Path) -> Path:
    """A throwaway GNUPGHOME with an audit-signing key."""
    home.mkdir(mode=0o700)
    subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key", "audit@lab.enclave.invalid"],
        check=True,
        capture_output=True,
    )
    return home


@pytest.fixture
def signing_home(tmp_path) -> Path:
    return new_signing_home(tmp_path / "gnupg")


def gpg_verify(home: Path, bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--verify", "SHA256SUMS.asc", "SHA256SUMS"],
        cwd=bundle,
        capture_output=True,
        text=True,
        check=False,
    )


@dataclass
class DriftedAudit:
    audit: Audit
    applied: list[Drift]
    # Drift name -> why it was left off this host.
    left_off: dict[str, str]
    signing_home: Path
    undo_failures: list[str]
    # The hardening run before the audit, over the drifts (refused), and the
    # one after it with that report acknowledged (and the updates area).
    refused: subprocess.CompletedProcess | None = None
    acknowledged: subprocess.CompletedProcess | None = None
    report_id: str | None = None
    # What the host held right after the acknowledged run.
    after_ack: dict[str, str] = field(default_factory=dict)

    def drifts_shown_in(self, control_id: str) -> set[str]:
        text = failure_text(self.audit.controls[control_id])
        return {d.name for d in self.applied if d.shown_in(text)}


@pytest.fixture(scope="module")
def drifted_audit(tmp_path_factory, baseline_audit) -> DriftedAudit:
    """One fleet run over the lab host, with every drift on it at once, and a
    host that does not answer, an active and an expired waiver and a signing key.
    The drifts are undone before any test reads the result."""
    work = tmp_path_factory.mktemp("drifted")
    home = new_signing_home(work / "gnupg")
    (work / "waivers.yml").write_text(WAIVERS)
    (work / "ghost.yml").write_text(GHOST_INVENTORY)
    host_vars = lab_host_vars()
    # The container lab shares the machine's audit subsystem and leaves
    # auditd off; the VM lab holds it.
    left_off = {
        d.name: f"{d.needs} is false for {ENCLAVE_HOST} in the lab inventory"
        for d in DRIFTS
        if d.needs and not host_vars.get(d.needs)
    }
    applied = [d for d in DRIFTS if d.name not in left_off]
    # Listed before it is applied, so a drift that fails half-way is undone too.
    touched: list[Drift] = []
    undo_failures: list[str] = []
    result = DriftedAudit(None, applied, left_off, home, undo_failures)
    try:
        for drift in applied:
            touched.append(drift)
            on_host(drift.apply)
        # A converge over the drifts must keep AIDE's evidence: it stops before
        # changing anything, with the report archived.
        result.refused = run_playbook("playbooks/hardening.yml", "--tags", "os_hardening_aide")
        found = re.search(r"\(report ([0-9a-f]{12})\)", result.refused.stdout)
        result.report_id = found.group(1) if found else None
        audit = run_audit(
            work / "evidence",
            "-i",
            str(work / "ghost.yml"),
            "-e",
            f"enclave_audit_waivers={work / 'waivers.yml'}",
            "-e",
            "enclave_audit_signing_key=audit@lab.enclave.invalid",
            "-e",
            f"enclave_audit_gnupghome={home}",
        )
        result.audit = audit
        if result.report_id:
            # The operator's acknowledgement of that report lets the run write
            # the baseline; the same run installs the pending security update.
            result.acknowledged = run_playbook(
                "playbooks/hardening.yml",
                "--tags",
                "os_hardening_aide,os_hardening_updates",
                "-e",
                f"os_hardening_aide_acknowledge='{result.report_id} {ACK_REASON}'",
            )
            result.after_ack = {
                "aide": str(on_host("aide --check --config /etc/aide/aide.conf >/dev/null", check=False).returncode),
                "libexpat1": on_host("dpkg-query -W -f='${Version}' libexpat1").stdout,
                "archive": on_host(
                    f"stat -c '%a %U %n' {ARCHIVE}/*-{result.report_id}.txt {ARCHIVE}/*-{result.report_id}.txt.ack; "
                    f"cat {ARCHIVE}/*-{result.report_id}.txt.ack",
                    check=False,
                ).stdout,
                "journal": on_host(
                    f"journalctl -q -o cat -t enclave-aide | grep -F {result.report_id}", check=False
                ).stdout,
            }
    finally:
        for drift in reversed(touched):
            undo = on_host(drift.undo, check=False)
            if undo.returncode != 0:
                undo_failures.append(f"{drift}: exit {undo.returncode}: {undo.stderr.strip()}")
        on_host(AIDE_REBASELINE)
        if result.report_id:
            on_host(f"rm -f {ARCHIVE}/*-{result.report_id}.txt {ARCHIVE}/*-{result.report_id}.txt.ack", check=False)
    audit.host_state = host_state()
    return result


@pytest.mark.parametrize("drift", DRIFTS, ids=str)
def test_drift_fails_exactly_the_affected_controls(drift, drifted_audit):
    if drift.name in drifted_audit.left_off:
        pytest.skip(drifted_audit.left_off[drift.name])
    audit = drifted_audit.audit
    statuses = {c: audit.controls[c]["status"] for c in sorted(drift.controls)}
    assert all(s == "failed" for s in statuses.values()), f"{drift}: its controls did not all fail: {statuses}"
    failed = audit.controls_with("failed")
    shown = {c for c in failed if drift.name in drifted_audit.drifts_shown_in(c)}
    unexpected = sorted(shown - drift.controls)
    assert unexpected == [], f"{drift} failed {unexpected} as well, which it must not break"
    silent = sorted(drift.controls - shown)
    assert silent == [], f"{drift}: the evidence of {silent} does not show the drift ({drift.marker!r})"
    for control_id in sorted(drift.controls):
        sharing = {d.name for d in drifted_audit.applied if control_id in d.controls}
        others = sorted(drifted_audit.drifts_shown_in(control_id) - sharing)
        assert others == [], f"{control_id}, failed by {drift}, shows drift {others} too, which must not break it"


def test_the_drifted_audit_fails_the_drifts_controls_and_nothing_else(drifted_audit):
    audit = drifted_audit.audit
    assert audit.result.returncode != 0, "the audit passed with drift on the host"
    by_drift = set().union(*(d.controls for d in drifted_audit.applied))
    # An active waiver turns a failure into waived; an expired one fails its control.
    expected = (by_drift - {WAIVED}) | {EXPIRED}
    failed = audit.controls_with("failed")
    # Each unexpected control with the drifts its evidence shows: who broke it.
    unexpected = {c: sorted(drifted_audit.drifts_shown_in(c)) or "no drift" for c in sorted(failed - expected)}
    assert unexpected == {}, f"controls that no drift should fail failed, by drift: {unexpected}"
    assert failed == expected, f"controls that should have failed and did not: {sorted(expected - failed)}"
    assert audit.controls_with("not_verified") == set()
    assert audit.evidence["status"] == "failed"
    summary = json.loads((audit.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"


def test_waivers_signing_and_an_unreachable_host_in_one_fleet_run(drifted_audit, tmp_path):
    audit = drifted_audit.audit
    controls = audit.controls
    assert audit.controls_with("waived") == {WAIVED}
    assert controls[WAIVED]["waiver"]["state"] == "active"
    assert controls[WAIVED]["result_status"] == "passed", "a waiver must keep the tests' own result"
    expired = controls[EXPIRED]
    assert expired["status"] == "failed", "an expired waiver must fail its control"
    assert expired["waiver"]["state"] == "expired"
    assert "2020-01-31" in json.dumps(expired)
    summary = json.loads((audit.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["not_audited"] == [GHOST]
    assert not (audit.run_dir / GHOST / "evidence.json").exists(), "a host that was not reached has no evidence"
    verify = gpg_verify(drifted_audit.signing_home, audit.bundle)
    assert verify.returncode == 0, verify.stderr
    # Forged on a copy: the other tests read the same bundle.
    forged = tmp_path / "forged"
    shutil.copytree(audit.bundle, forged)
    (forged / "SHA256SUMS").write_text((forged / "SHA256SUMS").read_text() + "0" * 64 + "  forged\n")
    assert gpg_verify(drifted_audit.signing_home, forged).returncode != 0, "a changed SHA256SUMS still verified"


def test_a_converge_over_the_drifts_keeps_the_aide_evidence(drifted_audit):
    """The run stopped before changing anything, the report archived root-only;
    the audit after it still failed ENC-OS-022 with every file drift in its
    evidence (test_drift_fails_exactly_the_affected_controls)."""
    refused = drifted_audit.refused
    assert refused is not None
    assert refused.returncode != 0, "a converge ran over unexplained AIDE changes"
    output = refused.stdout[-6000:] + refused.stderr[-2000:]
    assert drifted_audit.report_id, f"the refusal names no report id:\n{output}"
    assert "the baseline is kept" in refused.stdout, output
    assert "os_hardening_aide_acknowledge=" in refused.stdout, output
    recap = play_recap(refused.stdout)[ENCLAVE_HOST]
    # The one change: the report archived.
    assert (recap["changed"], recap["failed"]) == (1, 1), recap
    assert drifted_audit.audit.controls["ENC-OS-022"]["status"] == "failed"
    archive = drifted_audit.after_ack["archive"].splitlines()
    assert archive[0].startswith("600 root "), archive
    assert archive[0].endswith(f"-{drifted_audit.report_id}.txt"), archive


def test_the_acknowledged_report_lets_the_converge_rebaseline_and_apply_the_update(drifted_audit, baseline_audit):
    acknowledged = drifted_audit.acknowledged
    assert acknowledged is not None, "no acknowledged run (the refusal named no report)"
    assert acknowledged.returncode == 0, acknowledged.stdout[-6000:] + acknowledged.stderr[-2000:]
    after = drifted_audit.after_ack
    assert after["aide"] == "0", "the acknowledged run left the host different from its baseline"
    wanted = baseline_audit.evidence["facts"]["packages"]["libexpat1"]
    assert after["libexpat1"] == wanted, f"the converge did not install the pending security update: {after}"
    archive = after["archive"].splitlines()
    assert archive[1].startswith("600 root "), archive
    assert archive[1].endswith(".txt.ack"), archive
    assert f"AIDE report {drifted_audit.report_id}" in after["archive"], archive
    assert ACK_REASON in after["archive"], archive
    assert ACK_REASON in after["journal"], "the acknowledgement is not in the journal"


def test_every_drift_is_undone_and_the_host_is_as_the_baseline_audit_found_it(drifted_audit, baseline_audit):
    assert drifted_audit.undo_failures == [], "drifts that could not be undone"
    before, after = baseline_audit.host_state, drifted_audit.audit.host_state
    changed = state_diff(before, after, ("baseline", "after the drifts were undone"))
    assert digest_of(after) == digest_of(before), "the drifts left the host changed:\n" + "\n".join(changed[:40])


BAD_INPUTS = {
    "a waiver for an unknown control": (
        "waivers:\n  - {control: ENC-ZZ-999, reason: r, approver: a, expires: 2099-01-01}\n",
        [],
        "ENC-ZZ-999",
    ),
    "a waiver without expiry": (
        "waivers:\n  - {control: ENC-OS-013, reason: r, approver: a}\n",
        [],
        "expires",
    ),
    "a signing key that does not exist": (
        None,
        ["-e", "enclave_audit_signing_key=nobody@lab.enclave.invalid"],
        "nobody@lab.enclave.invalid",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_before_any_host_is_contacted(case, tmp_path, signing_home):
    waivers, extra, needle = BAD_INPUTS[case]
    args = ["-e", f"enclave_audit_gnupghome={signing_home}", *extra]
    if waivers is not None:
        (tmp_path / "waivers.yml").write_text("schema: 1\n" + waivers)
        args += ["-e", f"enclave_audit_waivers={tmp_path / 'waivers.yml'}"]
    dest = tmp_path / "evidence"
    result = run_playbook("playbooks/audit.yml", "-e", f"enclave_audit_dest={dest}", *args)
    assert result.returncode != 0
    assert needle in result.stdout, result.stdout[-3000:]
    assert ENCLAVE_HOST not in result.stdout, "the audit reached a host despite bad input"
    assert not dest.exists() or not any(dest.iterdir()), "bad input still wrote evidence"
