#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: the fleet summary of an audit run across the host bundles."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: evidence_summary
short_description: Summarise an audit run across hosts, counting unreachable hosts as not audited
version_added: 0.1.0
description:
  - Runs on the controller after M(enclave.llm.evidence_bundle) wrote one bundle per host.
  - Reads each bundle's C(evidence.json), checks the bundle against its C(SHA256SUMS), and writes into O(dest)
    C(summary.json), C(summary.html) (self-contained; one row per host with its status and counts, its failed
    controls, and a relative link to its C(report.html)) and C(summary.junit.xml) (a suite per host).
  - A host in O(unreachable) is C(not_audited), has no evidence, and fails the fleet; so does a bundle that
    failed or no longer matches its C(SHA256SUMS). An audit of no host at all fails.
author:
  - llm-enclave maintainers (@llm-enclave)
attributes:
  check_mode:
    description: Reads and checks every bundle and computes the summary; writes nothing.
    support: full
  diff_mode:
    description: Each run writes a new summary; there is no before to compare with.
    support: none
options:
  bundles:
    description: The host bundle folders, each holding the C(evidence.json) M(enclave.llm.evidence_bundle) wrote.
    type: list
    elements: path
    required: true
  unreachable:
    description: The inventory hostnames the audit could not reach; each is reported as not audited.
    type: list
    elements: str
    default: []
  dest:
    description: The folder the summary files are written to; created when missing.
    type: path
    required: true
notes:
  - The module reports C(changed) whenever it runs, since each run writes a new summary.
"""

EXAMPLES = r"""
- name: Write the summary across hosts
  enclave.llm.evidence_summary:
    bundles:
      - /srv/audit/20260501T080000Z/llm01
      - /srv/audit/20260501T080000Z/llm02
    unreachable: [llm03]
    dest: /srv/audit/20260501T080000Z
  register: fleet

- name: Pass only when every host was audited and passed
  ansible.builtin.assert:
    that: fleet.status == 'passed'
    fail_msg: "not audited: {{ fleet.not_audited }}; hosts: {{ fleet.hosts }}"
"""

RETURN = r"""
status:
  description:
    - C(passed) when every host was audited, its bundle passed and still matches its SHA256SUMS; else C(failed).
  returned: success
  type: str
  sample: failed
hosts:
  description: Per audited host, its status and what the summary shows about it.
  returned: success
  type: dict
  sample:
    llm01:
      status: failed
      summary: {passed: 30, failed: 1, not_verified: 0, not_applicable: 1, waived: 0, total: 32}
      failed_controls: [ENC-OS-011]
      not_verified_controls: []
      waived_controls: []
      bundle_digest: 3f0c9e...
      report: llm01/report.html
      integrity_problem: ''
not_audited:
  description: The hosts the audit could not reach.
  returned: success
  type: list
  elements: str
totals:
  description: Controls in each status, added up over the audited hosts.
  returned: success
  type: dict
problems:
  description: Fleet-level problems (no host audited).
  returned: success
  type: list
  elements: str
dest:
  description: The summary folder.
  returned: always
  type: str
files:
  description: The files written (or that would be, in check mode).
  returned: success
  type: list
  elements: str
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.atomic_file import write_atomic  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.evidence import summary as lib  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.evidence.common import iso_utc, utc_now  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec={
            "bundles": {"type": "list", "elements": "path", "required": True},
            "unreachable": {"type": "list", "elements": "str", "default": []},
            "dest": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    dest = os.path.abspath(params["dest"])
    result = {"changed": False, "dest": dest}
    bundles = []
    for folder in params["bundles"]:
        evidence, error = lib.load_bundle(folder)
        if error:
            module.fail_json(msg=error, **result)
        bundles.append((folder, evidence))
    summary, evidences, links, error = lib.build_summary(bundles, params["unreachable"], dest, iso_utc(utc_now()))
    if error:
        module.fail_json(msg=error, **result)
    files = lib.render_files(summary, evidences, links)
    if not module.check_mode:
        try:
            os.makedirs(dest, exist_ok=True)
            for name in sorted(files):
                write_atomic(os.path.join(dest, name), files[name], mode=lib.FILE_MODE)
        except OSError as exc:
            module.fail_json(msg=f"writing the summary into {dest} failed: {exc}", **result)
    result.update(
        changed=True,
        status=summary["status"],
        hosts=summary["hosts"],
        not_audited=summary["not_audited"],
        totals=summary["totals"],
        problems=summary["problems"],
        files=sorted(files),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
