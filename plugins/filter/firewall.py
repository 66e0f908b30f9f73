# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters used by the firewall role; the logic lives in module_utils/firewall.py.

``enclave.llm.firewall_policy``   enclave_zones | firewall_policy(ingress=..., mirror=..., ...) -> policy dict
``enclave.llm.firewall_allowlisted``  policy -> every network the policy allows (zones and egress destinations)
``enclave.llm.ssh_session``       SSH_CONNECTION -> {client, port} ('' when absent)
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.enclave.llm.plugins.module_utils import firewall as lib


def firewall_policy(zones, **kwargs):
    """The nftables_policy policy for the site (see module_utils/firewall.build_policy)."""
    try:
        return lib.build_policy(zones, **kwargs)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """Firewall filters."""

    def filters(self):
        return {
            "firewall_policy": firewall_policy,
            "firewall_allowlisted": lib.allowlisted,
            "ssh_session": lib.ssh_session,
        }
