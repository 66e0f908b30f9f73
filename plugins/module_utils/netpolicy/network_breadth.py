# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Networks and texts no hospital's firewall policy should hold, in every profile.

``nftables_policy.compile_policy`` calls these checks; the preflight reaches
them through that same function, so the firewall role and the preflight refuse
the same inputs with the same messages. Each returns messages, one per fault,
each naming the field and saying what to write instead.

Limits (per address family; a zone's and the allowlist's networks are merged
before they are measured, so 0.0.0.0/1 + 128.0.0.0/1 or 256 x /8 count as
what they cover together):

- a zone is where people and peers connect from: one network may be as wide as
  an IPv4 /8 (10.0.0.0/8) or an IPv6 /16, and a zone's networks together may
  cover at most 2**25 IPv4 addresses (all of RFC 1918 and 100.64.0.0/10 fit,
  half the Internet does not) or one IPv6 /16;
- the egress allowlist names endpoints: one entry may be as wide as an IPv4
  /16 or an IPv6 /48 (one site), and all entries together may cover at most
  twice that (2**17 IPv4 addresses, 2**81 IPv6): one such network and the
  named hosts beside it;
- an entry that opens more than 1024 ports (a range such as 1-65535) may name
  at most an IPv4 /28 or an IPv6 /124, a handful of hosts: every port of a
  wider network is a catch-all of that network;
- IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) IPv6
  addresses never appear on the wire: an entry holding one never matches and
  misleads whoever reads the allowlist;
- an owner and reason end up as one nft comment, ``OWNER: REASON`` (entries
  merged into one set element are joined with ``; ``), which carries at most
  127 bytes of printable ASCII; longer or other text is refused, never cut.
"""

from __future__ import annotations

import ipaddress
import re

COMMENT_BYTES = 127
# Printable ASCII without the double quote and the backslash nft would need escaped.
_COMMENT_TEXT = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")

ZONE_PREFIX = {4: 8, 6: 16}
ZONE_UNION = {4: 2**25, 6: 2**112}
EGRESS_PREFIX = {4: 16, 6: 48}
EGRESS_UNION = {4: 2**17, 6: 2**81}
WIDE_PORTS = 1024
WIDE_PORTS_PREFIX = {4: 28, 6: 124}

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NOT_COMPATIBLE = (ipaddress.ip_network("::/128"), ipaddress.ip_network("::1/128"))


def _embedded_v4(network):
    return ipaddress.ip_network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))


def address_form_problem(field, value, network):
    """Message when ``network`` is an IPv4-mapped or IPv4-compatible IPv6 address or network, else None."""
    if network.version != 6 or network.prefixlen < 96:
        return None
    if network.subnet_of(_MAPPED):
        kind = "an IPv4-mapped IPv6 address"
    elif network.subnet_of(_COMPATIBLE) and network not in _NOT_COMPATIBLE:
        kind = "an IPv4-compatible IPv6 address (deprecated by RFC 4291)"
    else:
        return None
    v4 = _embedded_v4(network)
    text = str(v4.network_address) if v4.prefixlen == 32 else str(v4)
    return (
        f"{field}: {value!r} is {kind}; no packet on the wire carries it, so the entry would never match: "
        f"write the IPv4 form {text} instead."
    )


def _size(prefix, version):
    return "/" + str(prefix) + (" (IPv4)" if version == 4 else " (IPv6)")


def _union(networks):
    return sum(n.num_addresses for n in ipaddress.collapse_addresses(networks))


def zone_problems(field, networks):
    """Messages for one zone's parsed networks (``field`` like ``zones.admin``)."""
    problems = []
    for network in networks:
        limit = ZONE_PREFIX[network.version]
        if network.prefixlen < limit:
            problems.append(
                f"{field}: {network} is wider than the widest zone network allowed, "
                f"{_size(limit, network.version)}: a zone lists the hospital's own networks; "
                "write those (e.g. 10.0.0.0/8, 192.0.2.0/24), never a catch-all."
            )
    for version in (4, 6):
        mine = [n for n in networks if n.version == version and n.prefixlen >= ZONE_PREFIX[version]]
        if not mine:
            continue
        covered = _union(mine)
        if covered > ZONE_UNION[version]:
            problems.append(
                f"{field}: its IPv{version} networks together cover {covered} addresses, more than the "
                f"{ZONE_UNION[version]} a zone may hold: together they are a near catch-all; "
                "list only the hospital's own networks."
            )
    return problems


def _port_count(ranges):
    return sum(high - low + 1 for low, high in ranges)


def egress_problems(entries):
    """Messages for the parsed egress entries (``network``, ``ports``, ``label`` with ``{ports}``)."""
    problems = []
    for entry in entries:
        network = entry["network"]
        field = entry["label"].split(" ", 1)[0]
        version = network.version
        if network.prefixlen < EGRESS_PREFIX[version]:
            problems.append(
                f"{field}.destination: {network} is wider than an egress entry may be, "
                f"{_size(EGRESS_PREFIX[version], version)}: the allowlist names endpoints; write the "
                "addresses of the hosts the enclave must reach."
            )
        elif _port_count(entry["ports"]) > WIDE_PORTS and network.prefixlen < WIDE_PORTS_PREFIX[version]:
            problems.append(
                f"{field}.ports: {_port_count(entry['ports'])} ports to {network} open every service of a "
                f"network wider than {_size(WIDE_PORTS_PREFIX[version], version)}: list the ports the flow "
                f"uses (at most {WIDE_PORTS}) or name the hosts."
            )
    for version in (4, 6):
        mine = [e["network"] for e in entries if e["network"].version == version]
        mine = [n for n in mine if n.prefixlen >= EGRESS_PREFIX[version]]
        if not mine:
            continue
        covered = _union(mine)
        if covered > EGRESS_UNION[version]:
            problems.append(
                f"egress: the IPv{version} destinations together cover {covered} addresses, more than the "
                f"{EGRESS_UNION[version]} the allowlist may reach: together they are a near catch-all; "
                "name the endpoints the enclave needs."
            )
    return problems


def comment_problem(field, text, what="text"):
    """Message when ``text`` cannot be carried by an nft comment as it is, else None."""
    if not _COMMENT_TEXT.match(text):
        return (
            f"{field}: {what} {text!r} holds characters an nft rule comment cannot carry: write printable "
            "ASCII without double quotes or backslashes; nothing is replaced for you."
        )
    size = len(text.encode("ascii"))
    if size > COMMENT_BYTES:
        return (
            f"{field}: {what} {text[:40]!r}... is {size} bytes, more than the {COMMENT_BYTES} an nft rule "
            "comment holds: shorten it; it is never cut for you."
        )
    return None


def entry_comment_problems(field, owner, reason):
    """Messages for an egress entry whose ``OWNER: REASON`` would not fit its rule comment."""
    for key, value in (("owner", owner), ("reason", reason)):
        problem = comment_problem(f"{field}.{key}", value, key)
        if problem:
            return [problem]
    joined = f"{owner}: {reason}"
    if len(joined) > COMMENT_BYTES:
        return [
            f"{field}: owner and reason make the rule comment {joined[:40]!r}..., {len(joined)} bytes "
            f"once joined as 'OWNER: REASON', more than the {COMMENT_BYTES} an nft comment holds: "
            "shorten them; they are never cut for you."
        ]
    return []


def merged_comment_problems(labels, comments):
    """Message when entries merged into one set element make a comment over the limit."""
    joined = "; ".join(comments)
    if len(comments) < 2 or len(joined.encode("ascii", "replace")) <= COMMENT_BYTES:
        return []
    return [
        f"{' and '.join(labels)}: the same destination, protocol and port carry one rule comment, their "
        f"owners and reasons joined ({len(joined)} bytes), more than the {COMMENT_BYTES} an nft comment holds: "
        "merge them into one entry or shorten them; they are never cut for you."
    ]


def raw_count(policy):
    """Entries a policy lists, counted without parsing any of them (a lower bound of its set elements)."""
    count = 0
    zones = policy.get("zones")
    if isinstance(zones, dict):
        count += sum(len(v) for v in zones.values() if isinstance(v, list))
    for key in ("egress", "deny_egress_uids", "deny_egress_gids"):
        if isinstance(policy.get(key), list):
            count += len(policy[key])
    return count
