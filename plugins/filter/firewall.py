# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters used by the firewall role; the logic lives in module_utils/netpolicy/firewall.py.

The policy and what it lets through are the firewall's section of the site
plan (``enclave.llm.site_plan``, module_utils/site.py), not filters of their
own, so no role can derive them a second time.

``enclave.llm.ssh_session``       SSH_CONNECTION -> {client, port} ('' when absent)
"""

from __future__ import annotations

from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import firewall as lib


class FilterModule:
    """Firewall filters."""

    def filters(self):
        return {
            "ssh_session": lib.ssh_session,
        }
