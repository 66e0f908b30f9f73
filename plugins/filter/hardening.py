# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters used by the os_hardening and auditd roles; the logic lives in module_utils/hardening/facts.py.

``enclave.llm.unknown_sysctl_keys``     missing | unknown_sysctl_keys(variable) -> messages
``enclave.llm.unknown_ssh_algorithms``  wanted | unknown_ssh_algorithms(supported) -> messages
``enclave.llm.ssh_lockout_problems``    user | ssh_lockout_problems(user_groups, allow_groups) -> messages
``enclave.llm.module_problems``         blacklist | module_problems -> messages
``enclave.llm.auditd_conf_problems``    auditd_conf | auditd_conf_problems -> messages
``enclave.llm.usbguard_setting_problems``  settings | usbguard_setting_problems -> messages
``enclave.llm.sysctl_mismatches``       wanted | sysctl_mismatches(runtime) -> keys
``enclave.llm.audit_rules``             text | audit_rules -> normalised rule lines
``enclave.llm.audit_rule_summary``      rules | audit_rule_summary -> sorted key|object entries
"""

from __future__ import annotations

from ansible_collections.enclave.llm.plugins.module_utils.hardening import facts as lib


def unknown_ssh_algorithms(wanted, supported):
    return lib.unknown_ssh_algorithms(wanted, supported)


class FilterModule:
    """os_hardening and auditd filters."""

    def filters(self):
        return {
            "unknown_sysctl_keys": lib.unknown_sysctl_keys,
            "unknown_ssh_algorithms": unknown_ssh_algorithms,
            "ssh_lockout_problems": lib.ssh_lockout_problems,
            "module_problems": lib.module_problems,
            "auditd_conf_problems": lib.auditd_conf_problems,
            "usbguard_setting_problems": lib.usbguard_setting_problems,
            "sysctl_mismatches": lib.sysctl_mismatches,
            "audit_rules": lib.parse_audit_rules,
            "audit_rule_summary": lib.audit_rule_summary,
        }
