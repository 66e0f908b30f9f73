# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The site plan: every fact that more than one role reads, derived in one place.

The plan is one host fact, ``enclave_site``, made of sections. Each section
has one owner, the role whose settings it is derived from:

``firewall`` (firewall role)   the nftables policy, every network it lets
                               through (``allowlisted``) and the site's canaries
``model``    (model_store)     where the pinned revision lives: name, revision,
                               base, path, current
``serving``  (vllm)            the Unix socket the ingress forwards to
``ingress``  (ingress)         where nginx listens and the URL clients use

The preflight includes every role's validation, so every section exists
before any role changes a host, and each is computed once per run. A role
run alone computes its own section and asks the owner of any other section
it reads (the monitor asks the firewall, vLLM the model store, the ingress
vLLM): the same function either way, never a copy in Jinja.
"""

from __future__ import annotations

import ipaddress

from ansible_collections.enclave.llm.plugins.module_utils.models import store as model_store
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import firewall


class PlanError(ValueError):
    """A setting the plan cannot be derived from; the message names the variable."""


def firewall_section(settings):
    """``{policy, allowlisted, canaries}`` from ``enclave_zones``, ``enclave_mirror``,
    ``enclave_canaries`` and the firewall_* settings (keys as ``firewall.build_policy`` names them)."""
    settings = dict(settings)
    canaries = settings.pop("canaries", None) or []
    if not isinstance(canaries, list) or not all(isinstance(canary, dict) for canary in canaries):
        raise PlanError(
            f"enclave_canaries must be a list of probe targets (name, address, proto, port), not {canaries!r:.80}"
        )
    try:
        policy = firewall.build_policy(settings.pop("zones", None), **settings)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"the firewall settings: {exc}") from exc
    return {"policy": policy, "allowlisted": firewall.allowlisted(policy), "canaries": [dict(c) for c in canaries]}


def model_section(settings):
    """Where the pinned revision lives, from ``enclave_model_profile``, ``enclave_model_profiles_extra``,
    ``enclave_model_revision`` and ``model_store_root``."""
    try:
        return model_store.store_plan(
            settings.get("profile"),
            settings.get("profiles_extra") or {},
            settings.get("revision"),
            settings.get("root"),
        )
    except (TypeError, ValueError) as exc:
        raise PlanError(str(exc)) from exc


def serving_section(settings):
    """The socket vLLM serves on, in ``vllm_socket_dir``."""
    socket_dir = str(settings.get("socket_dir") or "").rstrip("/")
    if not socket_dir.startswith("/"):
        raise PlanError(f"vllm_socket_dir {settings.get('socket_dir')!r} must be an absolute folder")
    return {"socket": f"{socket_dir}/vllm.sock"}


def ingress_section(settings):
    """What clients connect to: ``ingress_listen_address``, ``ingress_port`` and ``ingress_server_name``."""
    try:
        address = ipaddress.ip_address(str(settings.get("address") or ""))
    except ValueError as exc:
        raise PlanError(f"ingress_listen_address {settings.get('address')!r} is not an IP address") from exc
    port = settings.get("port")
    if isinstance(port, bool) or not str(port).isdigit() or not 0 < int(port) < 65536:
        raise PlanError(f"ingress_port {port!r} must be a port number, 1-65535")
    port = int(port)
    name = str(settings.get("server_name") or address)
    host = f"[{address}]" if address.version == 6 else str(address)
    suffix = "" if port == 443 else f":{port}"
    return {"listen": f"{host}:{port}", "url": f"https://{name}{suffix}"}


SECTIONS = {
    "firewall": firewall_section,
    "model": model_section,
    "serving": serving_section,
    "ingress": ingress_section,
}


def site_plan(plan=None, **sections):
    """``plan`` with each named section derived from its settings; the other sections kept as they are.

    ``site_plan({}, firewall={...})`` -> ``{"firewall": {...}}``. An unknown
    section name is a PlanError, so a typo in a role cannot pass unseen.
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise PlanError(f"no such section of the site plan: {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    if plan is not None and not isinstance(plan, dict):
        raise PlanError(f"enclave_site must be a mapping of sections, not {type(plan).__name__}")
    result = dict(plan or {})
    for name, settings in sections.items():
        if not isinstance(settings, dict):
            raise PlanError(f"the {name} section's settings must be a mapping, not {type(settings).__name__}")
        result[name] = SECTIONS[name](settings)
    return result
