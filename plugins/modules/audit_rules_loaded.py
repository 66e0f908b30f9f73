#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: the kernel holds the audit rules augenrules builds from /etc/audit/rules.d."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: audit_rules_loaded
short_description: Load the audit rules on disk whenever the kernel's rules differ from them
version_added: 0.1.0
description:
  - Compares the rules the kernel holds (C(auditctl -l)) with the rules augenrules builds
    (C(/etc/audit/audit.rules), rebuilt first when C(augenrules --check) finds C(rules.d) changed),
    whole rule by whole rule in one canonical form (list, action, arch, syscalls as a set, fields
    with their operators, permissions, keys, path or directory), the order within a list kept.
  - With O(reload), runs C(augenrules --load) when they differ or C(rules.d) changed, reports
    changed, and fails unless the kernel then holds exactly the rules on disk. Rules removed or
    added by hand (C(auditctl -W), C(auditctl -d)) are repaired this way, not only a changed file.
  - A load that fails, or leaves the kernel with other rules than those on disk, is undone; the
    rules the kernel held before are loaded again (C(auditctl -D), C(auditctl -R)), so a bad rule
    never leaves the host with less auditing than it had. The failure says whether they are back.
  - In check mode nothing is loaded; changed says whether a load would happen.
  - When the kernel's rules are locked (C(-e 2)) and differ, fails, since only a reboot can load them.
author:
  - llm-enclave maintainers (@llm-enclave)
options:
  rules_file:
    description: The file augenrules builds and loads.
    type: path
    default: /etc/audit/audit.rules
  reload:
    description: Load the rules on disk when they differ; false only compares (for an audit).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: The kernel holds the rules on disk (reloads after drift)
  enclave.llm.audit_rules_loaded:

- name: Only compare
  enclave.llm.audit_rules_loaded:
    reload: false
  register: audit_rules
"""

RETURN = r"""
equal:
  description: The kernel holds exactly the rules on disk (after the load, when one ran).
  returned: always
  type: bool
stale:
  description: augenrules --check found rules.d changed since audit.rules was built.
  returned: always
  type: bool
loaded_now:
  description: augenrules --load ran.
  returned: always
  type: bool
only_on_disk:
  description: Canonical rules on disk the kernel lacked before any load.
  returned: always
  type: list
only_loaded:
  description: Canonical rules the kernel held that are not on disk, before any load.
  returned: always
  type: list
reordered:
  description: Filter lists holding the same rules in another order, before any load.
  returned: always
  type: list
put_back:
  description: After a load that failed, whether the rules the kernel held before were loaded again.
  returned: when a load failed
  type: str
enabled:
  description: The enabled flag of auditctl -s (2 is immutable).
  returned: always
  type: int
commands:
  description: The commands that were run, for the audit trail.
  returned: always
  type: list
"""

import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.hardening import audit_rules as lib  # noqa: E402


class Host:
    def __init__(self, module):
        self.module = module
        self.commands = []

    def run(self, *argv):
        binary = self.module.get_bin_path(argv[0], required=True)
        self.commands.append(" ".join([binary, *argv[1:]]))
        return self.module.run_command([binary, *argv[1:]])

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, commands=self.commands, **extra)

    def loaded_rules(self):
        rc, loaded, err = self.run("auditctl", "-l")
        if rc != 0:
            self.fail(f"auditctl -l failed: {err.strip()}")
        return loaded

    def compare(self, rules_file):
        loaded = self.loaded_rules()
        try:
            with open(rules_file, encoding="utf-8") as handle:
                on_disk = handle.read()
        except OSError as err:
            on_disk = ""
            if not self.module.params["reload"]:
                self.fail(f"cannot read {rules_file}: {err}")
        try:
            return lib.compare(on_disk, loaded)
        except lib.AuditRuleError as err:
            self.fail(f"{rules_file} or auditctl -l holds a rule this check cannot read: {err}")

    def put_back(self, previous):
        """Load ``previous`` (auditctl -l's text) again in place of whatever the kernel holds now; what happened."""
        rules = [line for line in previous.splitlines() if line.strip() and line.strip() != "No rules"]
        self.run("auditctl", "-D")
        errors = ""
        if rules:
            with tempfile.NamedTemporaryFile("w", suffix=".rules", delete=False) as handle:
                handle.write("\n".join(rules) + "\n")
            try:
                _rc, _out, errors = self.run("auditctl", "-R", handle.name)
            finally:
                os.unlink(handle.name)
        try:
            back = lib.compare(previous, self.loaded_rules())
        except lib.AuditRuleError as err:
            back = {"equal": False, "only_on_disk": [str(err)], "only_loaded": [], "reordered": []}
        if back["equal"] and not rules:
            return "The kernel held no rules before, and holds none again."
        if back["equal"]:
            return f"The {len(rules)} rule(s) the kernel held before were loaded again."
        return (
            f"The rules the kernel held before could not all be loaded again ({lib.describe(back)}"
            + (f"; {errors.strip()}" if errors.strip() else "")
            + "): the host audits less than it did until the rules on disk load."
        )

    def enabled(self):
        _rc, out, _err = self.run("auditctl", "-s")
        flags = [line.split()[1] for line in out.splitlines() if line.startswith("enabled ")]
        return int(flags[0]) if flags else None


def main():
    module = AnsibleModule(
        argument_spec={
            "rules_file": {"type": "path", "default": "/etc/audit/audit.rules"},
            "reload": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    host = Host(module)
    rules_file = module.params["rules_file"]
    stale = False
    if module.params["reload"]:
        rc, out, err = host.run("augenrules", "--check")
        if rc != 0:
            host.fail(f"augenrules --check failed: {(out + err).strip()}")
        stale = "No change" not in out + err
    before = host.compare(rules_file)
    enabled = host.enabled()
    result = {**before, "stale": stale, "loaded_now": False, "enabled": enabled}
    if not module.params["reload"] or (before["equal"] and not stale) or module.check_mode:
        changed = module.params["reload"] and not (before["equal"] and not stale)
        module.exit_json(changed=changed, commands=host.commands, **result)

    if enabled == 2:
        host.fail(
            f"the kernel's audit rules are locked (-e 2) until the next boot and differ from {rules_file}: "
            f"{lib.describe(before)}. Reboot the host to load them (a converge never reboots it).",
            **result,
        )
    previous = host.loaded_rules()
    rc, out, err = host.run("augenrules", "--load")
    after = host.compare(rules_file)
    result.update(loaded_now=True, equal=after["equal"], enabled=host.enabled())
    if rc == 0 and after["equal"]:
        module.exit_json(changed=True, commands=host.commands, **result)
    if rc != 0:
        why = f"augenrules --load failed (rc {rc}): {(out + err).strip()}"
    else:
        why = f"after augenrules --load the kernel's audit rules still differ from {rules_file}: {lib.describe(after)}"
    result["put_back"] = host.put_back(previous)
    result["equal"] = False
    host.fail(f"{why}. {result['put_back']}", **result)


if __name__ == "__main__":
    main()
