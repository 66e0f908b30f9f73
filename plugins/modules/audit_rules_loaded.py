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
enabled:
  description: The enabled flag of auditctl -s (2 is immutable).
  returned: always
  type: int
commands:
  description: The commands that were run, for the audit trail.
  returned: always
  type: list
"""

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

    def compare(self, rules_file):
        rc, loaded, err = self.run("auditctl", "-l")
        if rc != 0:
            self.fail(f"auditctl -l failed: {err.strip()}")
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
    rc, out, err = host.run("augenrules", "--load")
    if rc != 0 or "rror" in err:
        host.fail(f"augenrules --load failed (rc {rc}): {(out + err).strip()}", **result)
    after = host.compare(rules_file)
    result.update(loaded_now=True, equal=after["equal"], enabled=host.enabled())
    if not after["equal"]:
        host.fail(
            f"after augenrules --load the kernel's audit rules still differ from {rules_file}: {lib.describe(after)}",
            **result,
        )
    module.exit_json(changed=True, commands=host.commands, **result)


if __name__ == "__main__":
    main()
