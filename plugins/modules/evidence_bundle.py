#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: write the signed evidence bundle of one audited host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: evidence_bundle
short_description: Write one audited host's evidence bundle (status per control, report, JUnit, SHA256SUMS, signature)
version_added: 0.1.0
description:
  - Runs on the controller (the task is delegated to C(localhost)) after the host suites ran with the C(audit_evidence)
    pytest plugin (C(tests/testinfra/audit_evidence.py)), whose JSON is O(test_results).
  - Gives every control of the catalogue (C(docs/controls.yml)) a status from the results of the tests it lists
    under C(tests/testinfra/); a result matches a reference when its node id without the C([...]) parameter
    suffix equals it, so one reference may match several parametrized results.
  - C(failed) when a test failed or errored; C(not_verified) when a listed host test has no result (deselected,
    not collected, the run stopped) or the control lists none; C(passed) when a test passed; C(not_applicable)
    when every result skipped (the skip reasons are kept). C(not_verified) fails the bundle like C(failed);
    a test that did not run is never reported as passed.
  - A waiver (O(waivers), format in C(docs/waivers.md)) that covers the host and has not expired makes its
    control C(waived), keeping the tests' own result and the waiver in the evidence; a waiver past its
    C(expires) day makes the control C(failed), naming the expiry date.
  - Writes into O(dest) C(evidence.json) (everything), C(report.html) (self-contained, for people),
    C(junit.xml) (one test case per control), then C(SHA256SUMS) over every file in O(dest) (the plugin's
    JSON too when it lies there), and with O(signing_key) C(SHA256SUMS.asc), a detached armored signature.
  - Every input is checked, and the signature made, before anything is written; a failure leaves O(dest) as
    it was.
author:
  - llm-enclave maintainers (@llm-enclave)
requirements:
  - PyYAML on the controller (it comes with ansible-core)
  - C(gpg) on the controller when O(signing_key) is set
attributes:
  check_mode:
    description:
      - Checks every input and the signing key and computes the whole bundle, its status and digest;
        writes nothing and does not sign.
    support: full
  diff_mode:
    description: Each run writes a new bundle; there is no before to compare with.
    support: none
options:
  host:
    description: The inventory hostname of the audited host.
    type: str
    required: true
  catalogue:
    description: The control catalogue, C(docs/controls.yml) of the collection that was applied.
    type: path
    required: true
  test_results:
    description:
      - The JSON the C(audit_evidence) pytest plugin wrote for this host's run (C(--enclave-evidence)).
      - Required unless O(inputs_only=true).
    type: path
  inputs_only:
    description:
      - Check only the inputs that do not depend on a host (O(catalogue), O(waivers), O(signing_key) and
        O(gnupghome)) and write nothing, so that an audit refuses bad input before it contacts any host.
    type: bool
    default: false
  facts:
    description:
      - Free-form host evidence gathered by the playbook (ruleset digest, loaded audit rules, package
        versions, model manifest results, monitor state, GPU and hardening facts), kept as given in
        C(evidence.json) and shown in the report. Every value must be plain JSON data.
    type: dict
    default: {}
  waivers:
    description: The waivers file (C(docs/waivers.md)). Unset means no waivers.
    type: path
  dest:
    description: The bundle folder; created when missing. Required unless O(inputs_only=true).
    type: path
  collection_version:
    description: The version of this collection that was applied, recorded in the bundle.
    type: str
    default: ''
  git_commit:
    description: The git commit of the collection checkout, recorded in the bundle.
    type: str
    default: ''
  signing_key:
    description:
      - A gpg key ID, fingerprint or user ID whose secret key signs C(SHA256SUMS)
        (C(gpg --batch --armor --detach-sign --local-user KEY)). It must be in the keyring
        (C(gpg --list-secret-keys)), and a key with a passphrase must have it cached in gpg-agent.
    type: str
  gnupghome:
    description: The gpg home directory holding O(signing_key); gpg's default when unset.
    type: path
  today:
    description: The date waivers are checked against, C(YYYY-MM-DD). Default today in UTC.
    type: str
  audited_at:
    description: When the audit ran, ISO 8601 (C(2026-05-01T08:00:00Z)). Default now in UTC.
    type: str
notes:
  - The module reports C(changed) whenever it runs (in check mode, that it would write), since each run writes
    a new bundle.
  - A C(SHA256SUMS.asc) left in O(dest) by an earlier run is removed when this run does not sign, since it would
    no longer match.
seealso:
  - name: Compliance re-runs
    description: The audit playbook that calls this module (C(docs/audit.md)).
    link: https://example.invalid/llm-enclave/docs/audit.md
"""

EXAMPLES = r"""
- name: Refuse bad waivers or a missing signing key before any host is contacted
  enclave.llm.evidence_bundle:
    host: localhost
    inputs_only: true
    catalogue: "{{ playbook_dir }}/../docs/controls.yml"
    waivers: /etc/enclave/waivers.yml
    signing_key: audit@hospital.example

- name: Write the evidence bundle of this host
  enclave.llm.evidence_bundle:
    host: "{{ inventory_hostname }}"
    catalogue: "{{ playbook_dir }}/../docs/controls.yml"
    test_results: /srv/audit/20260501T080000Z/llm01/tests.json
    waivers: /etc/enclave/waivers.yml
    dest: /srv/audit/20260501T080000Z/llm01
    collection_version: 0.1.0
    git_commit: 5ee49a6d0c7f3b2a1e9d8c7b6a5f4e3d2c1b0a99
    signing_key: audit@hospital.example
    facts:
      ruleset_digest: "{{ hardening.nft_digest }}"
  delegate_to: localhost
  register: bundle

- name: Fail the play when a control failed or was not verified
  ansible.builtin.assert:
    that: bundle.status == 'passed'
    fail_msg: "failed: {{ bundle.failed_controls }}, not verified: {{ bundle.not_verified_controls }}"
"""

RETURN = r"""
status:
  description: C(passed) when no control failed or went unverified and the test run completed, else C(failed).
  returned: success
  type: str
  sample: failed
summary:
  description: The number of controls in each status, and C(total).
  returned: success
  type: dict
  sample: {passed: 28, failed: 1, not_verified: 0, not_applicable: 2, waived: 1, total: 32}
failed_controls:
  description: The IDs of failed controls (an expired waiver fails its control).
  returned: success
  type: list
  elements: str
waived_controls:
  description: The IDs of controls an active waiver covers.
  returned: success
  type: list
  elements: str
not_verified_controls:
  description: The IDs of controls no test result verified.
  returned: success
  type: list
  elements: str
problems:
  description: What went wrong with the test run itself (pytest interrupted, a suite that could not be collected).
  returned: success
  type: list
  elements: str
bundle_digest:
  description: The SHA-256 of C(SHA256SUMS), which names the whole bundle.
  returned: success
  type: str
dest:
  description: The bundle folder.
  returned: always
  type: str
files:
  description: The files the bundle holds (or would hold, in check mode), C(SHA256SUMS) and its signature included.
  returned: success
  type: list
  elements: str
signed:
  description: Whether C(SHA256SUMS.asc) was written.
  returned: success
  type: bool
commands:
  description: The gpg commands run, in order.
  returned: always
  type: list
  elements: str
"""

import os  # noqa: E402
import shlex  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.evidence import bundle as lib  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.evidence.audit_waivers import parse_date  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.evidence.common import (  # noqa: E402
    iso_utc,
    parse_iso,
    sha256_hex,
    utc_now,
)


class Signer:
    """gpg with the operator's keyring; every command is recorded."""

    def __init__(self, module, key, gnupghome, commands):
        self.module = module
        self.key = key
        self.commands = commands
        self.environ = {"LC_ALL": "C"}
        if gnupghome:
            self.environ["GNUPGHOME"] = gnupghome
        self.binary = module.get_bin_path("gpg")

    def run(self, argv, data=None):
        self.commands.append(shlex.join(argv))
        return self.module.run_command(argv, data=data, binary_data=True, environ_update=self.environ)

    def key_problem(self):
        """'' when the secret key is there and usable, else what to fix."""
        home = self.environ.get("GNUPGHOME", "gpg's default home")
        rc, out, err = self.run(
            [self.binary, "--batch", "--no-tty", "--with-colons", "--list-secret-keys", "--", self.key]
        )
        if rc != 0:
            return (
                f"signing_key {self.key!r} is not in the secret keyring ({home}): `gpg --list-secret-keys` lists "
                "the keys that can sign. Import the key there, set gnupghome, or fix signing_key. "
                f"({err.strip()[:200]})"
            )
        validity = [line.split(":")[1] for line in out.splitlines() if line.startswith("sec:")]
        if validity and all(v in ("e", "r", "d", "i") for v in validity):
            return f"signing_key {self.key!r} is expired, revoked or disabled: extend it or use another key."
        return ""

    def sign(self, data):
        """``(armored signature bytes, error)``."""
        argv = [
            self.binary,
            "--batch",
            "--no-tty",
            "--armor",
            "--detach-sign",
            "--local-user",
            self.key,
            "--output",
            "-",
        ]
        rc, out, err = self.run(argv, data=data)
        if rc != 0 or "BEGIN PGP SIGNATURE" not in out:
            return None, (
                f"gpg could not sign with {self.key!r} (rc {rc}: {err.strip()[:300]}). A key with a passphrase "
                "needs it cached in gpg-agent (sign something once in the same session), or use a dedicated "
                "audit key. Nothing was written."
            )
        return out.encode("ascii"), ""


def parse_today(module, value):
    if not value:
        return utc_now().date()
    if isinstance(value, str):
        day, problem = parse_date(value)
        if not problem:
            return day
    module.fail_json(msg=f"today {value!r} is not a date: give YYYY-MM-DD, or leave it out for today (UTC).")


def parse_audited_at(module, value, now):
    if not value:
        return iso_utc(now)
    moment = parse_iso(value)
    if moment is None:
        module.fail_json(msg=f"audited_at {value!r} is not an ISO 8601 time: give e.g. 2026-05-01T08:00:00Z.")
    return iso_utc(moment)


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "catalogue": {"type": "path", "required": True},
            "test_results": {"type": "path"},
            "inputs_only": {"type": "bool", "default": False},
            "facts": {"type": "dict", "default": {}},
            "waivers": {"type": "path"},
            "dest": {"type": "path"},
            "collection_version": {"type": "str", "default": ""},
            "git_commit": {"type": "str", "default": ""},
            "signing_key": {"type": "str", "no_log": False},
            "gnupghome": {"type": "path"},
            "today": {"type": "str"},
            "audited_at": {"type": "str"},
        },
        required_if=[("inputs_only", False, ("test_results", "dest"))],
        supports_check_mode=True,
    )
    params = module.params
    dest = os.path.abspath(params["dest"]) if params["dest"] else None
    commands = []
    result = {"changed": False, "dest": dest, "commands": commands}
    if not lib.HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), **result)
    if not params["host"].strip():
        module.fail_json(msg="host is empty: give the inventory hostname of the audited host.", **result)
    now = utc_now()
    today = parse_today(module, params["today"])
    audited_at = parse_audited_at(module, params["audited_at"], now)

    catalogue, error = lib.load_catalogue(params["catalogue"])
    if error:
        module.fail_json(msg=error, **result)
    if not params["inputs_only"]:
        results, error = lib.load_test_results(params["test_results"])
        if error:
            module.fail_json(msg=error, **result)
    control_ids = [control["id"] for control in catalogue["controls"]]
    waivers, waivers_sha256, error = lib.load_waivers(params["waivers"], control_ids)
    if error:
        module.fail_json(msg=error, **result)
    error = lib.facts_problem(params["facts"])
    if error:
        module.fail_json(msg=error, **result)

    signer = None
    if params["signing_key"]:
        if params["gnupghome"] and not os.path.isdir(params["gnupghome"]):
            module.fail_json(
                msg=f"gnupghome {params['gnupghome']} is not a folder: give the gpg home holding signing_key.", **result
            )
        signer = Signer(module, params["signing_key"], params["gnupghome"], commands)
        if not signer.binary:
            module.fail_json(
                msg="signing_key is set but gpg is not installed on the controller: install gnupg, or leave "
                "signing_key out for an unsigned bundle.",
                **result,
            )
        error = signer.key_problem()
        if error:
            module.fail_json(msg=error, **result)
    if params["inputs_only"]:
        module.exit_json(msg="the catalogue, waivers and signing key can be used", **result)

    sources = {
        "catalogue": {"path": os.path.abspath(params["catalogue"]), "sha256": catalogue["sha256"]},
        "test_results": {"path": os.path.abspath(params["test_results"]), "sha256": results["sha256"]},
    }
    if params["waivers"]:
        sources["waivers"] = {"path": os.path.abspath(params["waivers"]), "sha256": waivers_sha256}
    evidence = lib.build_evidence(
        params["host"],
        catalogue,
        results,
        waivers,
        today,
        facts=params["facts"],
        audited_at=audited_at,
        generated_at=iso_utc(now),
        collection_version=params["collection_version"],
        git_commit=params["git_commit"],
        sources=sources,
    )
    rendered = lib.render_files(evidence)
    try:
        files = {**lib.existing_files(dest), **rendered}
    except OSError as exc:
        module.fail_json(
            msg=f"the files already in {dest} cannot be read ({exc}): check the folder's owner and mode.", **result
        )
    sums = lib.render_sums(files)
    signature = None
    if signer and not module.check_mode:
        signature, error = signer.sign(sums)
        if error:
            module.fail_json(msg=error, **result)
    if not module.check_mode:
        try:
            lib.write_bundle(dest, rendered, sums, signature)
        except OSError as exc:
            module.fail_json(msg=f"writing the bundle into {dest} failed: {exc}", **result)
    result.update(
        changed=True,
        status=evidence["status"],
        summary=evidence["summary"],
        failed_controls=evidence["failed_controls"],
        waived_controls=evidence["waived_controls"],
        not_verified_controls=evidence["not_verified_controls"],
        problems=evidence["problems"],
        bundle_digest=sha256_hex(sums),
        files=sorted([*files, lib.SUMS_NAME, *([lib.SIGNATURE_NAME] if signer else [])]),
        signed=signature is not None,
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
