#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: compare the host with its AIDE baseline, keep the evidence of any difference."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aide_check
short_description: Compare the host with its AIDE baseline and archive the report of any difference
version_added: 0.1.0
description:
  - Runs C(aide --check). A host that matches its baseline (or has none yet, or no AIDE) is C(clean).
  - A host that differs gets its report archived once under O(archive_dir), named by the date it was
    first seen and the report's id (a digest of its findings, without timestamps), root-only (0600),
    so that a later baseline cannot erase the evidence.
  - O(acknowledge) (C(<report id> <reason>)) accepts exactly the report with that id - the changes an
    operator reviewed; the acknowledgement is written beside the archived report and to the system
    log (tag C(enclave-aide)). An acknowledgement that names another report accepts nothing.
  - The module never writes the baseline; the caller does, when the result allows it.
  - In check mode nothing is archived or logged; the result says what would be.
author:
  - llm-enclave maintainers (@llm-enclave)
options:
  config:
    description: The AIDE configuration to check with.
    type: path
    default: /etc/aide/aide.conf
  database:
    description: The baseline (database_in of O(config)); without it there is nothing to compare.
    type: path
    default: /var/lib/aide/aide.db
  archive_dir:
    description: Where reports are archived (created 0700 root).
    type: path
    default: /var/lib/enclave/aide-reports
  acknowledge:
    description: C(<report id> <reason>), or empty. A malformed value fails before anything is run.
    type: str
    default: ""
  acknowledged_by:
    description: Who acknowledged (recorded with the acknowledgement).
    type: str
    default: unknown
"""

EXAMPLES = r"""
- name: Compare the host with its baseline before a converge
  enclave.llm.aide_check:
    acknowledge: "{{ os_hardening_aide_acknowledge }}"
    acknowledged_by: "{{ lookup('ansible.builtin.env', 'USER') }}"
  register: aide_before
"""

RETURN = r"""
clean:
  description: The host matches its baseline, or there is no baseline (or no AIDE) to compare with.
  returned: always
  type: bool
baseline:
  description: Whether a baseline and AIDE were there to compare with.
  returned: always
  type: bool
report_id:
  description: The id of the report of the differences (null when clean).
  returned: always
  type: str
report_path:
  description: The archived report (null when clean).
  returned: always
  type: str
entries:
  description: 'What AIDE reports: change (added, removed, changed) and path.'
  returned: always
  type: list
acknowledged:
  description: O(acknowledge) names this report; the caller may write the baseline again.
  returned: always
  type: bool
acknowledged_report:
  description: The report id O(acknowledge) names (empty when none).
  returned: always
  type: str
commands:
  description: The commands that were run.
  returned: always
  type: list
"""

import datetime  # noqa: E402
import glob  # noqa: E402
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.atomic_file import write_atomic  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.hardening import aide_report as lib  # noqa: E402


def archived(archive_dir, report_id):
    found = sorted(glob.glob(os.path.join(glob.escape(archive_dir), f"*-{report_id}.txt")))
    return found[0] if found else None


def main():
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "path", "default": "/etc/aide/aide.conf"},
            "database": {"type": "path", "default": "/var/lib/aide/aide.db"},
            "archive_dir": {"type": "path", "default": "/var/lib/enclave/aide-reports"},
            "acknowledge": {"type": "str", "default": ""},
            "acknowledged_by": {"type": "str", "default": "unknown"},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        ack_id, reason = lib.parse_acknowledgement(params["acknowledge"])
    except ValueError as error:
        module.fail_json(msg=f"os_hardening_aide_acknowledge: {error}")
    result = {
        "changed": False,
        "clean": True,
        "baseline": False,
        "report_id": None,
        "report_path": None,
        "entries": [],
        "acknowledged": False,
        "acknowledged_report": ack_id,
        "commands": [],
    }
    aide = module.get_bin_path("aide")
    if not aide or not os.path.exists(params["config"]) or not os.path.exists(params["database"]):
        module.exit_json(**result)
    result["baseline"] = True
    argv = [aide, "--check", "--config", params["config"]]
    result["commands"].append(" ".join(argv))
    rc, out, err = module.run_command(argv, environ_update={"LC_ALL": "C", "LANG": "C"})
    if rc >= lib.AIDE_ERROR:
        module.fail_json(msg=f"aide --check failed (exit {rc}): {(err or out)[-2000:]}", **result)
    if rc & 7 == 0:
        if ack_id:
            module.warn(f"os_hardening_aide_acknowledge names report {ack_id}, but the host matches its baseline")
        module.exit_json(**result)

    report_id = lib.report_id(out, differs=True)
    result.update(clean=False, report_id=report_id, entries=lib.entries(out))
    path = archived(params["archive_dir"], report_id)
    if path is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(params["archive_dir"], f"{stamp}-{report_id}.txt")
        result["changed"] = True
        if not module.check_mode:
            os.makedirs(params["archive_dir"], mode=0o700, exist_ok=True)
            os.chmod(params["archive_dir"], 0o700)
            write_atomic(path, out, mode=0o600)
    result["report_path"] = path

    if ack_id == report_id:
        result.update(acknowledged=True, changed=True)
        line = (
            f"AIDE report {report_id} ({len(result['entries'])} changes, {path}) acknowledged"
            f" by {params['acknowledged_by']}: {reason}"
        )
        if not module.check_mode:
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            with open(path + ".ack", "a", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(f"{stamp} {line}\n")
            logger = module.get_bin_path("logger")
            if logger:
                argv = [logger, "-t", "enclave-aide", "-p", "authpriv.notice", "--", line]
                result["commands"].append(" ".join(argv[:-1]) + " '...'")
                module.run_command(argv)
            else:
                module.log(line)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
