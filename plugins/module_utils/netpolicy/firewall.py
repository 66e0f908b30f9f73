# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Pure logic of the ``firewall`` role: site variables in, an ``nftables_policy`` policy out.

The role keeps its inventory close to how a site describes itself (the
``enclave_zones``, the ``enclave_mirror`` URLs, lists of NTP servers and
resolvers); :func:`build_policy` turns that into the plain policy the
``enclave.llm.nftables_policy`` module takes (zones, ingress rules, egress
entries each with an owner and a reason, denied users). Nothing here runs a
command; the module validates the result and reports every fault at once.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ZONES = ("admin", "clinical", "cluster")
MIRROR_URL_KEYS = ("apt_url", "apt_security_url", "pip_index_url", "models_url")
DEFAULT_URL_PORTS = {"http": 80, "https": 443}
_HOSTPORT = (re.compile(r"^\[([^\]]+)\]:(\d+)$"), re.compile(r"^([^:]+):(\d+)$"))

NTP_REASON = "NTP time source"
DNS_REASON = "internal DNS resolver, allowed explicitly: every allowed resolver is an exfiltration channel"
CLUSTER_REASON = "inter-node traffic to the other cluster members"


def _url_endpoint(name, url):
    """``(host, port)`` of an http(s) URL; ValueError naming ``name`` otherwise."""
    try:
        parts = urlsplit(str(url).strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"enclave_mirror.{name} {url!r} is not a valid URL ({exc}).") from exc
    if parts.scheme not in DEFAULT_URL_PORTS or not parts.hostname:
        raise ValueError(f"enclave_mirror.{name} {url!r}: write http(s)://ADDRESS[:PORT]/PATH.")
    return parts.hostname, port or DEFAULT_URL_PORTS[parts.scheme]


def _hostport_endpoint(name, value):
    for pattern in _HOSTPORT:
        match = pattern.match(str(value).strip())
        if match:
            return match.group(1), int(match.group(2))
    raise ValueError(f"enclave_mirror.{name} {value!r} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT).")


def mirror_endpoints(mirror):
    """``{host: {port: [variable, ...]}}`` for every service of the offline mirror.

    The ports come from the URLs (their explicit port, else 80 for http and
    443 for https) and from ``registry``; ``host`` is listed even when no URL
    names it, with no ports. Unset optional keys are skipped.
    """
    mirror = mirror or {}
    endpoints = {}
    host = str(mirror.get("host") or "").strip()
    if host:
        endpoints[host] = {}
    found = []
    for key in MIRROR_URL_KEYS:
        if mirror.get(key):
            found.append((key, *_url_endpoint(key, mirror[key])))
    if mirror.get("registry"):
        found.append(("registry", *_hostport_endpoint("registry", mirror["registry"])))
    for key, address, port in found:
        endpoints.setdefault(address, {}).setdefault(port, []).append(key)
    return endpoints


def mirror_egress(mirror, owner):
    """Egress entries (tcp) for the offline mirror, one per mirror address."""
    entries = []
    for address, ports in mirror_endpoints(mirror).items():
        if not ports:
            continue
        uses = sorted({key for keys in ports.values() for key in keys})
        entries.append(
            {
                "destination": address,
                "proto": "tcp",
                "ports": sorted(ports),
                "owner": owner,
                "reason": "offline mirror (" + ", ".join(uses) + ")",
            }
        )
    return entries


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def ingress_rules(ingress):
    """The module's ingress list from ``{zone: [{proto, ports, comment}, ...]}``."""
    rules = []
    for zone in ZONES:
        for rule in _as_list((ingress or {}).get(zone)):
            fields = {key: value for key, value in dict(rule).items() if value is not None and key != "zone"}
            rules.append({"zone": zone, **fields})
    unknown = sorted(set(ingress or {}) - set(ZONES))
    if unknown:
        raise ValueError(f"firewall_ingress: unknown zone {', '.join(unknown)}: use admin, clinical and cluster.")
    return rules


def cluster_egress(zones, ingress, owner):
    """Egress to the cluster members on the ports they accept from each other."""
    members = _as_list((zones or {}).get("cluster"))
    entries = []
    for rule in _as_list((ingress or {}).get("cluster")):
        for member in members:
            entries.append(
                {
                    "destination": member,
                    "proto": rule.get("proto"),
                    "ports": _as_list(rule.get("ports")),
                    "owner": owner,
                    "reason": CLUSTER_REASON,
                }
            )
    return entries


def build_policy(
    zones,
    ingress=None,
    mirror=None,
    ntp_servers=None,
    dns_resolvers=None,
    egress_extra=None,
    deny_egress_users=None,
    owner="hospital-it",
    log=None,
    families=None,
    deny_egress_groups=None,
):
    """The ``nftables_policy`` policy for the site.

    Egress is the offline mirror, the NTP servers (udp 123), the DNS
    resolvers (udp and tcp 53, none by default), the cluster members on the
    cluster ports, and ``egress_extra`` as given; nothing else.
    """
    zones = {zone: _as_list((zones or {}).get(zone)) for zone in ZONES}
    egress = mirror_egress(mirror, owner)
    for server in _as_list(ntp_servers):
        egress.append({"destination": server, "proto": "udp", "ports": [123], "owner": owner, "reason": NTP_REASON})
    for resolver in _as_list(dns_resolvers):
        for proto in ("udp", "tcp"):
            egress.append(
                {"destination": resolver, "proto": proto, "ports": [53], "owner": owner, "reason": DNS_REASON}
            )
    egress += cluster_egress(zones, ingress, owner)
    egress += [dict(entry) for entry in _as_list(egress_extra)]
    policy = {
        "zones": zones,
        "ingress": ingress_rules(ingress),
        "egress": egress,
        "deny_egress_uids": _as_list(deny_egress_users),
        "deny_egress_gids": _as_list(deny_egress_groups),
        "log": dict(log or {}),
    }
    if families:
        policy["families"] = _as_list(families)
    return policy


def allowlisted(policy):
    """Every network or address the policy lets the host reach or be reached from, in the policy's order.

    The zones' members and every egress destination (the mirror's addresses
    from all its URLs, NTP, DNS, the cluster, the extra entries): the places
    a canary must never be, since a probe to them would pass through the
    firewall by design.
    """
    found = []
    for zone in ZONES:
        found += _as_list((policy.get("zones") or {}).get(zone))
    found += [entry["destination"] for entry in policy.get("egress") or []]
    return list(dict.fromkeys(str(item) for item in found))


def ssh_session(ssh_connection):
    """``{client, port}`` from SSH_CONNECTION (``client cport server sport``); empty strings when absent."""
    fields = str(ssh_connection or "").split()
    if len(fields) != 4 or not fields[3].isdigit():
        return {"client": "", "port": ""}
    return {"client": fields[0], "port": int(fields[3])}
