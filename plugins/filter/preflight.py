# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters used by the preflight role; the logic lives in module_utils/preflight.py.

``enclave.llm.os_support``           ansible_facts -> {status, name, supported}
``enclave.llm.ip_in_any``            address | ip_in_any(cidrs) -> bool
``enclave.llm.ssh_client_address``   SSH_CONNECTION -> client address ('' if none)
``enclave.llm.zones_problems``       enclave_zones -> [message, ...]
``enclave.llm.admin_users_problems`` enclave_admin_users -> [message, ...]
``enclave.llm.mirror_problems``      enclave_mirror -> [message, ...]
``enclave.llm.firewall_settings_problems`` enclave_zones | firewall_settings_problems(ingress=..., ...)
                                     -> [message naming the variable, ...] (also run by the firewall role)
``enclave.llm.gpg_primary_fingerprints`` gpg --with-colons text -> [fingerprint, ...]
``enclave.llm.fingerprint_mismatch`` pinned | fingerprint_mismatch(found, files) -> message or ''
``enclave.llm.http_failure_reason``  uri result -> short reason ('' when HTTP 200)
``enclave.llm.mirror_probes``        enclave_mirror | mirror_probes(suite, apt_based) -> [{var, url}, ...]
``enclave.llm.probe_problems``       uri loop results | probe_problems(hostname) -> [message, ...]
``enclave.llm.df_available_mib``     `df -P -k` output -> free MiB (or None)
"""

from __future__ import annotations

from ansible_collections.enclave.llm.plugins.module_utils import preflight as lib


def os_support(facts):
    """Classify the host's OS from its facts (with or without the ansible_ prefix)."""
    facts = facts or {}

    def fact(name):
        return facts.get(name, facts.get("ansible_" + name, ""))

    result = lib.classify_os(fact("distribution"), fact("distribution_major_version"), fact("distribution_version"))
    result["supported"] = lib.SUPPORTED_TEXT
    return result


class FilterModule:
    """Preflight filters."""

    def filters(self):
        return {
            "os_support": os_support,
            "ip_in_any": lib.ip_in_any,
            "ssh_client_address": lib.ssh_client_address,
            "zones_problems": lib.zones_problems,
            "admin_users_problems": lib.admin_users_problems,
            "mirror_problems": lib.mirror_problems,
            "firewall_settings_problems": lib.firewall_settings_problems,
            "gpg_primary_fingerprints": lib.gpg_primary_fingerprints,
            "fingerprint_mismatch": lib.fingerprint_mismatch,
            "http_failure_reason": lib.http_failure_reason,
            "df_available_mib": lib.df_available_mib,
            "mirror_probes": lib.mirror_probes,
            "probe_problems": lib.probe_problems,
        }
