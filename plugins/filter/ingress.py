# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Filters used by the ingress role; the logic lives in module_utils/ingress.py.

``enclave.llm.ingress_problems``       settings | ingress_problems(host_addresses) -> messages
``enclave.llm.ingress_certificate``    cert_pem | ingress_certificate(key_pem, server_name, warn_days, variable)
``enclave.llm.ingress_route_methods``  routes | ingress_route_methods -> {route: "POST"}
"""

from __future__ import annotations

from ansible_collections.enclave.llm.plugins.module_utils import ingress as lib


def ingress_problems(settings, host_addresses):
    """Every problem with the role's settings, in one list (``settings`` is a dict of them)."""
    return (
        lib.listen_address_problems(settings.get("listen_address"), host_addresses)
        + lib.client_problems(settings.get("clients"))
        + lib.allowlist_problems(settings.get("allowed_endpoints"))
        + lib.api_key_problems(settings.get("upstream_api_key"))
        + lib.nginx_value_problems(settings.get("server_name"), settings.get("rate_limit"), settings.get("body_size"))
    )


def ingress_certificate(cert_pem, key_pem, server_name, warn_days=30, variable="ingress_tls_certificate"):
    return lib.certificate_report(cert_pem, key_pem, server_name, warn_days, variable=variable)


def ingress_route_methods(routes):
    return lib.route_methods(routes)


class FilterModule:
    """ingress filters."""

    def filters(self):
        return {
            "ingress_problems": ingress_problems,
            "ingress_certificate": ingress_certificate,
            "ingress_route_methods": ingress_route_methods,
        }
