"""playbooks/audit.yml on the converged lab host: read-only, a complete and
verifiable evidence bundle, and drift that fails exactly the affected controls.

Each drift is a change an operator could make by hand on a production host.
It is applied, the audit runs, the report must fail exactly the controls the
drift breaks (with the drifted thing in their evidence) and the playbook must
exit non-zero; then the drift is undone and the file-integrity baseline, which
rightly saw the change, is written again as a converge would.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from labkit import AIDE_REBASELINE, ENCLAVE_HOST, REPO, lab_host_vars, podman, run_playbook

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


@dataclass
class Audit:
    result: subprocess.CompletedProcess
    run_dir: Path

    @property
    def bundle(self) -> Path:
        return self.run_dir / ENCLAVE_HOST

    @property
    def evidence(self) -> dict:
        return json.loads((self.bundle / "evidence.json").read_text())

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
    """Two audits of the converged host, with its state hashed before and after."""
    dest = tmp_path_factory.mktemp("audit")
    # The host suites may have run first, and their AIDE probe (ENC-OS-022)
    # adds and removes a file under /etc: start from the baseline a converge
    # writes, so the audit sees the converged host whatever the test order.
    on_host(AIDE_REBASELINE)
    before = host_state()
    first = run_audit(dest / "first")
    second = run_audit(dest / "second")
    after = host_state()
    changed = list(difflib.unified_diff(before, after, "before", "after", lineterm="", n=0))
    assert changed == [], "the audit changed the host:\n" + "\n".join(changed[:40])
    shutil.rmtree(EXPORT, ignore_errors=True)
    shutil.copytree(second.run_dir, EXPORT)
    digest = hashlib.sha256("\n".join(after).encode()).hexdigest()
    Path(EXPORT, "host-state.txt").write_text(
        f"sha256 of {ENCLAVE_HOST}'s state before the first and after the second audit: {digest} (equal)\n"
    )
    first.second = second
    return first


def test_audit_passes_on_the_converged_host_and_changes_nothing(baseline_audit):
    for audit in (baseline_audit, baseline_audit.second):
        assert audit.result.returncode == 0, audit.output()
        evidence = audit.evidence
        assert evidence["status"] == "passed", {c["id"]: c["status"] for c in evidence["controls"]}
        assert audit.controls_with("failed") == set()
        assert audit.controls_with("not_verified") == set()
        assert audit.controls_with("passed"), "no control passed: nothing was verified"


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
    # Text that must appear in the evidence of the first control, proving the
    # failure names the drifted thing.
    needle: str
    # The inventory switch the drifted area needs on the host, if any.
    needs: str | None = None

    def __str__(self) -> str:
        return self.name


MODEL_FILE = "$(readlink -f /srv/models/tiny-r1/current)/config.json"
DRIFTS = [
    Drift(
        "sshd allows TCP forwarding",
        # Root-only like the drop-ins the role writes, so the one drift is
        # the forwarding (a world-readable file would fail ENC-OS-007 too).
        apply="umask 077; printf 'AllowTcpForwarding yes\\n' > /etc/ssh/sshd_config.d/00-drift.conf",
        undo="rm -f /etc/ssh/sshd_config.d/00-drift.conf",
        controls={"ENC-OS-011", "ENC-OS-022"},
        needle="allowtcpforwarding",
    ),
    Drift(
        "a model file made writable",
        apply=f"chmod 0644 {MODEL_FILE}",
        undo=f"chmod 0444 {MODEL_FILE}",
        controls={"ENC-MS-002", "ENC-OS-022"},
        needle="config.json",
    ),
    Drift(
        "an audit rule removed",
        # auditctl -l lists a watch as -w PATH -p x -k KEY, a syscall rule as -a ... key=KEY.
        apply="auditctl -l | grep -m1 -E '(-k |key=)enclave_nft$' | sed -e 's/^-a /-d /' -e 's/^-w /-W /' "
        "| xargs auditctl",
        undo="augenrules --load >/dev/null",
        controls={"ENC-AU-004", "ENC-AU-007"},
        needle="enclave_nft",
        needs="auditd_enabled",
    ),
    Drift(
        "a redirect-accepting sysctl",
        apply="sysctl -qw net.ipv4.conf.all.accept_redirects=1",
        undo="sysctl -qw net.ipv4.conf.all.accept_redirects=0",
        controls={"ENC-OS-001"},
        needle="accept_redirects",
    ),
    Drift(
        "an nftables table added beside the enclave's",
        apply="nft add table inet enclave_drift && "
        "nft add chain inet enclave_drift output '{ type filter hook output priority 10; policy accept; }'",
        undo="nft delete table inet enclave_drift",
        controls={"ENC-FW-001"},
        needle="enclave_drift",
    ),
]


@pytest.mark.parametrize("drift", DRIFTS, ids=str)
def test_drift_fails_exactly_the_affected_controls(drift, tmp_path, baseline_audit):
    if drift.needs and not lab_host_vars().get(drift.needs):
        # The container lab shares the machine's audit subsystem and leaves
        # auditd off; the VM lab holds it.
        pytest.skip(f"{drift.needs} is false for {ENCLAVE_HOST} in the lab inventory")
    on_host(drift.apply)
    try:
        audit = run_audit(tmp_path)
    finally:
        on_host(drift.undo)
        on_host(AIDE_REBASELINE)
    assert audit.result.returncode != 0, "the audit passed with drift on the host"
    failed = audit.controls_with("failed")
    assert failed == drift.controls, f"{drift}: failed {sorted(failed)}, expected {sorted(drift.controls)}"
    first = next(c for c in audit.evidence["controls"] if c["id"] == sorted(drift.controls)[0])
    assert drift.needle in json.dumps(first["tests"]).lower(), f"the evidence of {first['id']} does not show the drift"
    summary = json.loads((audit.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"


GHOST = "enclave-lab-ghost"


@pytest.fixture
def signing_home(tmp_path) -> Path:
    """A throwaway GNUPGHOME with an audit-signing key."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key", "audit@lab.enclave.invalid"],
        check=True,
        capture_output=True,
    )
    return home


def gpg_verify(home: Path, bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--verify", "SHA256SUMS.asc", "SHA256SUMS"],
        cwd=bundle,
        capture_output=True,
        text=True,
        check=False,
    )


def test_waivers_signing_and_an_unreachable_host_in_one_fleet_run(tmp_path, signing_home, baseline_audit):
    """One run over the lab host and a host that does not answer (an address on
    the lab's own network where nothing listens), with an active and an expired
    waiver and a signing key."""
    waivers = tmp_path / "waivers.yml"
    waivers.write_text(
        "schema: 1\n"
        "waivers:\n"
        "  - control: ENC-OS-020\n"
        "    reason: the banner text is being agreed with the data protection officer\n"
        "    approver: Head of IT security\n"
        "    expires: 2099-12-31\n"
        f"    hosts: [{ENCLAVE_HOST}]\n"
        "  - control: ENC-OS-021\n"
        "    reason: an old exception that nobody renewed\n"
        "    approver: Head of IT security\n"
        "    expires: 2020-01-31\n"
    )
    ghost = tmp_path / "ghost.yml"
    ghost.write_text(
        "llm_servers:\n"
        "  hosts:\n"
        f"    {GHOST}:\n"
        "      ansible_host: 198.51.100.99\n"
        "      ansible_ssh_common_args: >-\n"
        "        -o ConnectTimeout=3 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
    )
    audit = run_audit(
        tmp_path / "evidence",
        "-i",
        str(ghost),
        "-e",
        f"enclave_audit_waivers={waivers}",
        "-e",
        "enclave_audit_signing_key=audit@lab.enclave.invalid",
        "-e",
        f"enclave_audit_gnupghome={signing_home}",
    )
    assert audit.result.returncode != 0, "an unreachable host and an expired waiver must fail the audit"
    assert audit.controls_with("waived") == {"ENC-OS-020"}
    assert audit.controls_with("failed") == {"ENC-OS-021"}
    expired = next(c for c in audit.evidence["controls"] if c["id"] == "ENC-OS-021")
    assert "2020-01-31" in json.dumps(expired)
    summary = json.loads((audit.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert GHOST in json.dumps(summary["not_audited"])
    assert not (audit.run_dir / GHOST / "evidence.json").exists(), "a host that was not reached has no evidence"
    verify = gpg_verify(signing_home, audit.bundle)
    assert verify.returncode == 0, verify.stderr
    (audit.bundle / "SHA256SUMS").write_text((audit.bundle / "SHA256SUMS").read_text() + "0" * 64 + "  forged\n")
    assert gpg_verify(signing_home, audit.bundle).returncode != 0, "a changed SHA256SUMS still verified"


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
