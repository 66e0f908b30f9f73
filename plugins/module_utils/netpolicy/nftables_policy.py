# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Pure logic behind the ``nftables_policy`` module: validate, render, normalise, diff.

Nothing here runs ``nft`` or needs root. The module gathers input, calls these
functions, runs the commands and reports; these functions are unit-tested
without a host.

A policy is plain data::

    zones:             {admin: [CIDR, ...], clinical: [...], cluster: [...]}
    ingress:           [{zone, proto: tcp|udp, ports: [22, "8000-8100"]}, ...]
    egress:            [{destination: ADDRESS|CIDR, proto, ports, owner, reason}, ...]
    deny_egress_uids:  [uid, ...]          no traffic except loopback for these
    deny_egress_gids:  [gid, ...]          the same for sockets of these groups (a
                                           setuid-root program keeps its caller's gid)
    log:               {rate: "10/minute", burst: 5, prefix: "enclave"}
    families:          [ipv4, ipv6]        the address families the host uses

``policy_problems`` returns one message per fault, each naming the field and
saying what to change (an empty list means valid). ``render_ruleset`` turns a
valid policy into the text of one ``nft -f`` transaction that replaces the
table ``inet enclave`` and nothing else. ``normalise_ruleset`` turns the JSON
of ``nft -j list table inet enclave`` into data that compares equal whenever
the two tables filter the same way (handles, counter values and element order
are ignored), and ``ruleset_diff`` makes the text diff shown by ``--diff``.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import json
import re

from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import network_breadth

FAMILY = "inet"
TABLE = "enclave"
TABLE_SPEC = f"{FAMILY} {TABLE}"

ZONES = ("admin", "clinical", "cluster")
PROTOS = ("tcp", "udp")
FAMILIES = ("ipv4", "ipv6")
POLICY_KEYS = ("zones", "ingress", "egress", "deny_egress_uids", "deny_egress_gids", "log", "families")
INGRESS_KEYS = ("zone", "proto", "ports", "comment")
EGRESS_KEYS = ("destination", "proto", "ports", "owner", "reason")
LOG_KEYS = ("rate", "burst", "prefix")
DEFAULT_LOG = {"rate": "10/minute", "burst": 5, "prefix": "enclave"}
DEFAULT_MAX_ENTRIES = 20000
MAX_UID = 4294967294  # (uid_t)-1 means "no uid", (gid_t)-1 "no gid"

# Drop paths: each is a regular chain that logs (rate-limited), counts into the
# named counter of the same name and drops. Base chains jump there with goto.
# "spoof": a new packet leaving with a source that is not the host's own on the
# outgoing interface (a forged source would make an allowed endpoint answer
# someone else); "rpf": a new packet arriving on an interface that is not the
# route back to its source (a zone's address forged from another network).
DROP_PATHS = ("input", "output", "forward", "uid", "invalid", "spoof", "rpf")

# ICMP the host needs for IPv4/IPv6 to work. Errors are accepted inbound so
# path MTU discovery (fragmentation-needed is a destination-unreachable code,
# packet-too-big in IPv6) keeps working; neighbour discovery must pass both
# ways with hop limit 255 (RFC 4861), MLD reports leave with hop limit 1.
ICMP_ERRORS_V4 = ("destination-unreachable", "time-exceeded", "parameter-problem")
ICMP_ERRORS_V6 = ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem")
ND_IN = ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert")
ND_OUT = ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-solicit")
MLD_OUT = ("mld-listener-report", "mld2-listener-report")
DAD_OUT = ("nd-neighbor-solicit", "nd-router-solicit")

_RATE = re.compile(r"^([1-9][0-9]{0,8})/(second|minute|hour|day)$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_PORT_RANGE = re.compile(r"^\s*([0-9]+)\s*-\s*([0-9]+)\s*$")
_BAD_TEXT = re.compile(r'["\\\x00-\x1f\x7f]')


def _missing(value):
    return value is None or (isinstance(value, (str, list, dict)) and not value)


def _unknown_keys(field, data, allowed):
    unknown = sorted(str(key) for key in data if key not in allowed)
    if not unknown:
        return []
    what = "key" if len(unknown) == 1 else "keys"
    return [f"{field}: unknown {what} {', '.join(repr(k) for k in unknown)}: use only {', '.join(allowed)}."]


def parse_port_spec(value):
    """Return ``(low, high)`` for a port (``443``, ``"443"``) or a range (``"8000-8100"``), else None.

    Reversed ranges are returned as they are (low > high); the caller reports them.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        port = value
        return (port, port) if 1 <= port <= 65535 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        port = int(text)
        return (port, port) if 1 <= port <= 65535 else None
    match = _PORT_RANGE.match(text)
    if not match:
        return None
    low, high = int(match.group(1)), int(match.group(2))
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        return None
    return (low, high)


def _ports_problems(field, ports):
    """Messages for a list of ports/ranges; also returns the parsed ranges."""
    if isinstance(ports, (int, str)) and not isinstance(ports, bool):
        ports = [ports]
    if _missing(ports):
        return [f"{field} is empty: list at least one port or range, e.g. [443] or ['8000-8100']."], []
    if not isinstance(ports, list):
        return [f"{field} must be a list of ports or ranges, e.g. [443, '8000-8100'], got {ports!r}."], []
    problems, ranges = [], []
    for value in ports:
        parsed = parse_port_spec(value)
        if parsed is None:
            problems.append(
                f"{field}: {value!r} is not a port: use a number from 1 to 65535 or a range such as '8000-8100'."
            )
        elif parsed[0] > parsed[1]:
            problems.append(f"{field}: the range {value!r} is reversed: write '{parsed[1]}-{parsed[0]}'.")
        else:
            ranges.append(parsed)
    ranges = sorted(set(ranges))
    for (low_a, high_a), (low_b, high_b) in itertools.pairwise(ranges):
        if low_b <= high_a:
            problems.append(
                f"{field}: {_port_text((low_a, high_a))} and {_port_text((low_b, high_b))} overlap: "
                "merge them into one range."
            )
    return problems, ranges


def _port_text(port_range):
    low, high = port_range
    return str(low) if low == high else f"{low}-{high}"


def _network_problem(field, value, families):
    """Return ``(message, network)``; exactly one of them is None."""
    if not isinstance(value, str) or not value.strip():
        return (
            f"{field} is missing: give an address or CIDR (e.g. 192.0.2.10 or 2001:db8::/64); "
            "names are not allowed, the host has no DNS.",
            None,
        )
    text = value.strip()
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return (
                f"{field}: {value!r} is not an address or CIDR: write ADDRESS or ADDRESS/PREFIX with a prefix of "
                "at most 32 (IPv4) or 128 (IPv6), e.g. 192.0.2.0/24; names are not allowed, the host has no DNS.",
                None,
            )
        address = text.split("/")[0]
        return (
            f"{field}: {value!r} has host bits set: write {loose} (the network) "
            f"or {address}/{loose.max_prefixlen} (one address).",
            None,
        )
    family = f"ipv{network.version}"
    if family not in families:
        other = "IPv4" if network.version == 6 else "IPv6"
        return (
            f"{field}: {value!r} is IPv{network.version}, but families allows only "
            f"{', '.join(families)}: write an {other} address or add {family} to families.",
            None,
        )
    message = network_breadth.address_form_problem(field, value, network)
    return (message, None) if message else (None, network)


def _overlaps(field, items):
    """Messages for overlapping elements; ``items`` are (label, network, port range or None)."""
    problems = []
    ordered = sorted(items, key=lambda item: (int(item[1].network_address), int(item[1].broadcast_address)))
    active = []
    for label, network, ports in ordered:
        start = int(network.network_address)
        active = [entry for entry in active if int(entry[1].broadcast_address) >= start]
        for other_label, other_network, other_ports in active:
            if ports is not None and (ports[1] < other_ports[0] or other_ports[1] < ports[0]):
                continue
            if (network, ports) == (other_network, other_ports):
                continue  # identical elements are merged when rendering
            problems.append(
                f"{field}: {label} overlaps {other_label}: the kernel refuses overlapping set elements; "
                "remove the narrower one or split the ranges."
            )
        active.append((label, network, ports))
    return problems


def _families_problems(families):
    if families is None:
        return [], list(FAMILIES)
    if isinstance(families, str):
        families = [families]
    if not isinstance(families, list) or not families:
        return ["families must list ipv4, ipv6 or both, e.g. [ipv4, ipv6]."], list(FAMILIES)
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        return [f"families: {', '.join(repr(f) for f in bad)} is not a family: use ipv4, ipv6 or both."], list(FAMILIES)
    return [], [f for f in FAMILIES if f in families]


def _zones_problems(zones, families):
    if zones is None:
        zones = {}
    if not isinstance(zones, dict):
        return ["zones must be a mapping with the keys admin, clinical and cluster, each a list of CIDRs."], {}
    problems = _unknown_keys("zones", zones, ZONES)
    parsed = {}
    for zone in ZONES:
        field = f"zones.{zone}"
        values = zones.get(zone)
        if values is None:
            values = []
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            problems.append(f"{field} must be a list of CIDRs, e.g. [192.0.2.0/24], got {values!r}.")
            continue
        if zone == "admin" and not values:
            problems.append(
                "zones.admin is empty: list at least one network the administrators connect from "
                "(e.g. 192.0.2.0/24); without it nobody can reach SSH."
            )
        networks = []
        for value in values:
            message, network = _network_problem(field, value, families)
            if message:
                problems.append(message)
            else:
                networks.append(network)
        networks = sorted(set(networks), key=lambda n: (n.version, int(n.network_address), n.prefixlen))
        problems += _overlaps(field, [(str(n), n, None) for n in networks])
        problems += network_breadth.zone_problems(field, networks)
        parsed[zone] = networks
    return problems, parsed


def _ingress_problems(ingress):
    if ingress is None:
        return [], []
    if not isinstance(ingress, list):
        return ["ingress must be a list of rules like {zone: admin, proto: tcp, ports: [22]}."], []
    problems, rules = [], []
    for index, rule in enumerate(ingress):
        field = f"ingress[{index}]"
        if not isinstance(rule, dict):
            problems.append(f"{field} must be a mapping like {{zone: admin, proto: tcp, ports: [22]}}.")
            continue
        problems += _unknown_keys(field, rule, INGRESS_KEYS)
        zone = rule.get("zone")
        if zone not in ZONES:
            if _missing(zone):
                problems.append(f"{field}.zone is missing: use one of {', '.join(ZONES)}.")
            else:
                problems.append(f"{field}.zone: {zone!r} is not a zone: use one of {', '.join(ZONES)}.")
        proto = rule.get("proto")
        if proto not in PROTOS:
            problems.append(f"{field}.proto: {proto!r} is not supported: use tcp or udp.")
        port_problems, ranges = _ports_problems(f"{field}.ports", rule.get("ports"))
        problems += port_problems
        comment = rule.get("comment")
        if comment is not None and (not isinstance(comment, str) or _BAD_TEXT.search(comment)):
            problems.append(f"{field}.comment: write one line of text without double quotes or backslashes.")
        elif comment is not None:
            problems += filter(None, [network_breadth.comment_problem(f"{field}.comment", comment, "comment")])
        if not port_problems and zone in ZONES and proto in PROTOS:
            rules.append({"zone": zone, "proto": proto, "ports": ranges, "comment": comment or ""})
    return problems, rules


def _egress_problems(egress, families):
    if egress is None:
        return [], []
    if not isinstance(egress, list):
        return ["egress must be a list of entries with destination, proto, ports, owner and reason."], []
    problems, entries = [], []
    for index, entry in enumerate(egress):
        field = f"egress[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{field} must be a mapping with destination, proto, ports, owner and reason.")
            continue
        if "port" in entry and "ports" not in entry:
            entry = {**entry, "ports": entry["port"]}
            entry.pop("port")
        problems += _unknown_keys(field, entry, EGRESS_KEYS)
        message, network = _network_problem(f"{field}.destination", entry.get("destination"), families)
        if message:
            problems.append(message)
        proto = entry.get("proto")
        if proto not in PROTOS:
            problems.append(f"{field}.proto: {proto!r} is not supported: use tcp or udp.")
        port_problems, ranges = _ports_problems(f"{field}.ports", entry.get("ports"))
        problems += port_problems
        texts = {}
        for key, example in (("owner", "radiology-it"), ("reason", "package mirror")):
            value = entry.get(key)
            if _missing(value) or (isinstance(value, str) and not value.strip()):
                what = "who answers for this flow" if key == "owner" else "why the host needs this flow"
                problems.append(f"{field}.{key} is missing: say {what} (e.g. {key}: {example}).")
            elif not isinstance(value, str) or _BAD_TEXT.search(value):
                problems.append(f"{field}.{key}: write one line of text without double quotes or backslashes.")
            else:
                texts[key] = value.strip()
        if len(texts) == 2:
            problems += network_breadth.entry_comment_problems(field, texts["owner"], texts["reason"])
        if network is not None and proto in PROTOS and not port_problems and len(texts) == 2:
            label = f"{field} ({entry.get('destination')} {proto} {{ports}})"
            entries.append(
                {
                    "network": network,
                    "proto": proto,
                    "ports": ranges,
                    "owner": texts["owner"],
                    "reason": texts["reason"],
                }
            )
            entries[-1]["label"] = label
    problems += network_breadth.egress_problems(entries)
    return problems, entries


def _ids_problems(values, field, kind, zero):
    if values is None:
        return [], []
    if not isinstance(values, list):
        values = [values]
    problems, parsed = [], []
    for value in values:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().isdigit():
            number = int(value.strip())
        if number is None or not 0 <= number <= MAX_UID:
            problems.append(f"{field}: {value!r} is not a {kind}: use a number from 1 to {MAX_UID}.")
        elif number == 0:
            problems.append(f"{field}: {zero}")
        else:
            parsed.append(number)
    return problems, sorted(set(parsed))


def _uids_problems(uids):
    return _ids_problems(
        uids,
        "deny_egress_uids",
        "uid",
        "0 is root; denying root all traffic would cut the host off from its mirror "
        "and its administrators: remove it and list only service users.",
    )


def _gids_problems(gids):
    return _ids_problems(
        gids,
        "deny_egress_gids",
        "gid",
        "0 is the root group; root's own programs run with it, so denying it would cut the host off from "
        "its mirror and its administrators: remove it and list only the service accounts' own groups.",
    )


def _log_problems(log):
    if log is None:
        log = {}
    if not isinstance(log, dict):
        return ["log must be a mapping like {rate: 10/minute, burst: 5, prefix: enclave}."], dict(DEFAULT_LOG)
    problems = _unknown_keys("log", log, LOG_KEYS)
    merged = {key: DEFAULT_LOG[key] if log.get(key) is None else log[key] for key in LOG_KEYS}
    if not isinstance(merged["rate"], str) or not _RATE.match(merged["rate"].strip()):
        problems.append(
            f"log.rate: {merged['rate']!r} is not a rate: write N/second, N/minute, N/hour or N/day, e.g. 10/minute."
        )
    else:
        merged["rate"] = merged["rate"].strip()
    burst = merged["burst"]
    if isinstance(burst, str) and burst.strip().isdigit():
        burst = int(burst)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10000:
        problems.append(f"log.burst: {merged['burst']!r} is not a burst: use a number of packets from 1 to 10000.")
    else:
        merged["burst"] = burst
    if not isinstance(merged["prefix"], str) or not _PREFIX.match(merged["prefix"]):
        problems.append(
            f"log.prefix: {merged['prefix']!r} is not a log prefix: use 1 to 32 letters, digits, '.', '_' or '-'."
        )
    return problems, merged


def compile_policy(policy, max_entries=DEFAULT_MAX_ENTRIES):
    """Return ``(compiled, problems)``; ``compiled`` is None when there are problems.

    ``compiled`` holds the parsed policy ready to render: networks per zone and
    family, ingress rules, egress set elements (identical ones merged, with the
    owners and reasons of all entries that asked for them), uids and log settings.
    """
    if not isinstance(policy, dict):
        return None, [
            "the policy must be a mapping with zones, ingress, egress, deny_egress_uids, deny_egress_gids, "
            "log, families."
        ]
    # Counted before anything is parsed: a huge list is refused at once.
    listed = network_breadth.raw_count(policy)
    if listed > max_entries:
        return None, [
            f"the policy has {listed}+ set elements (egress destination/port pairs, zone networks, uids and "
            f"gids), more than max_entries ({max_entries}): merge destinations into CIDRs and ports into ranges, "
            "or raise max_entries."
        ]
    problems = _unknown_keys("policy", policy, POLICY_KEYS)
    more, families = _families_problems(policy.get("families"))
    problems += more
    more, zones = _zones_problems(policy.get("zones"), families)
    problems += more
    more, ingress = _ingress_problems(policy.get("ingress"))
    problems += more
    more, egress = _egress_problems(policy.get("egress"), families)
    problems += more
    more, uids = _uids_problems(policy.get("deny_egress_uids"))
    problems += more
    more, gids = _gids_problems(policy.get("deny_egress_gids"))
    problems += more
    more, log = _log_problems(policy.get("log"))
    problems += more

    # One set element per (destination, proto, port range); identical ones merge.
    elements = {}
    for entry in egress:
        for ports in entry["ports"]:
            key = (entry["network"], entry["proto"], ports)
            merged = elements.setdefault(key, {"labels": [], "comments": []})
            merged["labels"].append(entry["label"].format(ports=_port_text(ports)))
            comment = f"{entry['owner']}: {entry['reason']}"
            if comment not in merged["comments"]:
                merged["comments"].append(comment)
    for merged in elements.values():
        problems += network_breadth.merged_comment_problems(merged["labels"], merged["comments"])
    for version in (4, 6):
        for proto in PROTOS:
            items = [
                (meta["labels"][0], network, ports)
                for (network, item_proto, ports), meta in elements.items()
                if network.version == version and item_proto == proto
            ]
            problems += _overlaps("egress", items)

    count = len(elements) + len(uids) + len(gids) + sum(len(networks) for networks in zones.values())
    if count > max_entries:
        problems.append(
            f"the policy has {count} set elements (egress destination/port pairs, zone networks, uids and gids), "
            f"more than max_entries ({max_entries}): merge destinations into CIDRs and ports into ranges, "
            "or raise max_entries."
        )
    if problems:
        return None, problems
    return {
        "zones": zones,
        "ingress": ingress,
        "egress": elements,
        "deny_egress_uids": uids,
        "deny_egress_gids": gids,
        "log": log,
        "families": families,
        "elements": count,
    }, []


def client_lockout_problem(policy, client, port=22, max_entries=DEFAULT_MAX_ENTRIES):
    """Message when ``policy`` would drop a new SSH connection from ``client`` to tcp ``port`` ('' otherwise).

    ``client`` is the controller's address as the host sees it (the first field
    of SSH_CONNECTION), ``port`` the host's SSH port (its fourth field). The
    policy keeps the session when some tcp ingress rule covers ``port`` for a
    zone holding ``client``. An invalid policy returns '' (its own problems are
    reported by :func:`policy_problems`).
    """
    address, port, problem = parse_session(client, port)
    if problem:
        return problem
    compiled, problems = compile_policy(policy, max_entries)
    if problems:
        return ""
    return compiled_lockout_problem(compiled, address, port)


def parse_session(client, port):
    """``(address, port, problem)`` for the controller's address and the host's SSH port."""
    try:
        address = ipaddress.ip_address(str(client).strip())
    except ValueError:
        return (
            None,
            None,
            f"protect_client: {client!r} is not an IP address: give the controller's address as the host sees it "
            "(the first field of SSH_CONNECTION).",
        )
    parsed = parse_port_spec(port)
    if parsed is None or parsed[0] != parsed[1]:
        return None, None, f"protect_port: {port!r} is not a port: use the host's SSH port, a number from 1 to 65535."
    return address, parsed[0], ""


def compiled_lockout_problem(compiled, address, port):
    """:func:`client_lockout_problem` for a compiled policy, a parsed address and a port number."""
    zones_with_client = [zone for zone in ZONES if any(address in network for network in compiled["zones"][zone])]
    for rule in compiled["ingress"]:
        if rule["proto"] != "tcp" or rule["zone"] not in zones_with_client:
            continue
        if any(low <= port <= high for low, high in rule["ports"]):
            return ""
    host_prefix = address.max_prefixlen
    admin = ", ".join(str(n) for n in compiled["zones"]["admin"]) or "nothing"
    if zones_with_client:
        where = (
            f"{address} is in zones {', '.join(zones_with_client)}, but none of them has an ingress rule for tcp {port}"
        )
    else:
        where = f"{address} is in no zone (zones.admin holds {admin})"
    return (
        f"this policy would lock out the controller: a new SSH connection from {address} to tcp port {port} "
        f"would be dropped ({where}). Add {address}/{host_prefix} or a network holding it to zones.admin and keep "
        f"an admin ingress rule for tcp {port}; nothing was applied."
    )


def policy_problems(policy, max_entries=DEFAULT_MAX_ENTRIES):
    """Messages for everything wrong with ``policy`` (empty when it is valid)."""
    return compile_policy(policy, max_entries)[1]


def _comment(text):
    """An nft comment; compile_policy has refused any text that would have to be cut or replaced."""
    problem = network_breadth.comment_problem("comment", text)
    if problem:
        raise ValueError(problem)
    return text


def _elements(items):
    if not items:
        return []
    lines = ["\t\telements = {"]
    lines += [f"\t\t\t{item}," for item in items[:-1]]
    lines.append(f"\t\t\t{items[-1]}")
    lines.append("\t\t}")
    return lines


def _set(name, kind, items, interval=True):
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if interval:
        lines.append("\t\tflags interval")
    lines += _elements(items)
    lines.append("\t}")
    return lines


def _ports_set(ranges):
    return "{ " + ", ".join(_port_text(r) for r in ranges) + " }"


def zone_set_name(zone, version):
    return f"zone_{zone}_v{version}"


def egress_set_name(version):
    return f"egress_v{version}"


def render_ruleset(policy, max_entries=DEFAULT_MAX_ENTRIES):
    """Return the text of one ``nft -f`` transaction that replaces ``table inet enclave``.

    The first two commands make the transaction work whether or not the table
    exists (creating an empty table is a no-op when it does); nothing outside
    the table is touched. Raises ValueError listing the problems of an invalid policy.
    """
    compiled, problems = compile_policy(policy, max_entries)
    if problems:
        raise ValueError("invalid nftables policy:\n- " + "\n- ".join(problems))
    return render_compiled(compiled)


def render_compiled(compiled):
    """:func:`render_ruleset` for a policy already compiled by :func:`compile_policy`."""
    log = compiled["log"]
    rate, unit = log["rate"].split("/")

    lines = [
        "#!/usr/sbin/nft -f",
        f"# table {TABLE_SPEC}, managed by enclave.llm.nftables_policy; other tables are left alone.",
        f"table {TABLE_SPEC} {{}}",
        f"delete table {TABLE_SPEC}",
        f"table {TABLE_SPEC} {{",
        '\tcomment "enclave.llm: default deny in every direction"',
        "",
    ]
    for path in DROP_PATHS:
        lines.append(f"\tcounter drop_{path} {{}}")
    lines.append("")

    for zone in ZONES:
        for version in (4, 6):
            networks = [str(n) for n in compiled["zones"][zone] if n.version == version]
            lines += _set(zone_set_name(zone, version), f"ipv{version}_addr", networks)
    for version in (4, 6):
        items = []
        for (network, proto, ports), meta in sorted(
            compiled["egress"].items(), key=lambda kv: (int(kv[0][0].network_address), kv[0][0].prefixlen, kv[0][1:])
        ):
            if network.version != version:
                continue
            address = str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
            comment = _comment("; ".join(meta["comments"]))
            items.append(f'{address} . {proto} . {_port_text(ports)} comment "{comment}"')
        lines += _set(egress_set_name(version), f"ipv{version}_addr . inet_proto . inet_service", items)
    lines += _set("deny_uids", "uid", [str(uid) for uid in compiled["deny_egress_uids"]], interval=False)
    lines += _set("deny_gids", "gid", [str(gid) for gid in compiled.get("deny_egress_gids", [])], interval=False)
    lines.append("")

    for path in DROP_PATHS:
        lines += [
            f"\tchain drop_{path} {{",
            f'\t\tlimit rate {rate}/{unit} burst {log["burst"]} packets log prefix "{log["prefix"]} drop {path}: "',
            f'\t\tcounter name "drop_{path}"',
            "\t\tdrop",
            "\t}",
        ]
    lines.append("")

    lines += [
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        '\t\tiif "lo" accept',
        "\t\tct state invalid goto drop_invalid",
        "\t\tct state established,related accept",
        f"\t\ticmp type {{ {', '.join(ICMP_ERRORS_V4)} }} accept",
        f"\t\ticmpv6 type {{ {', '.join(ICMP_ERRORS_V6)} }} accept",
        f"\t\ticmpv6 type {{ {', '.join(ND_IN)} }} ip6 hoplimit 255 accept",
        "\t\ticmpv6 type mld-listener-query ip6 saddr fe80::/10 accept",
        # After neighbour discovery: duplicate address detection arrives from ::.
        "\t\tfib saddr . iif oif missing goto drop_rpf",
    ]
    for rule in compiled["ingress"]:
        comment = f' comment "{_comment(rule["comment"])}"' if rule["comment"] else ""
        for version, match in ((4, "ip saddr"), (6, "ip6 saddr")):
            lines.append(
                f"\t\t{match} @{zone_set_name(rule['zone'], version)} "
                f"{rule['proto']} dport {_ports_set(rule['ports'])} accept{comment}"
            )
    lines += [
        "\t\tgoto drop_input",
        "\t}",
        "",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy drop;",
        "\t\tgoto drop_forward",
        "\t}",
        "",
        "\tchain output {",
        "\t\ttype filter hook output priority filter; policy drop;",
        '\t\toif "lo" accept',
        "\t\tct state invalid goto drop_invalid",
        "\t\tmeta skuid @deny_uids goto drop_uid",
        "\t\tmeta skgid @deny_gids goto drop_uid",
        "\t\tct state established,related accept",
        # An address still under duplicate address detection is not yet the
        # host's, so these few leave from ::, to a multicast group only.
        f"\t\tip6 saddr :: ip6 daddr ff00::/8 icmpv6 type {{ {', '.join(DAD_OUT)} }} ip6 hoplimit 255 accept",
        f"\t\tip6 saddr :: ip6 daddr ff00::/8 icmpv6 type {{ {', '.join(MLD_OUT)} }} ip6 hoplimit 1 accept",
        "\t\tfib saddr . oif type != local goto drop_spoof",
        f"\t\ticmpv6 type {{ {', '.join(ND_OUT)} }} ip6 hoplimit 255 accept",
        f"\t\ticmpv6 type {{ {', '.join(MLD_OUT)} }} ip6 hoplimit 1 accept",
        f"\t\tip daddr . meta l4proto . th dport @{egress_set_name(4)} accept",
        f"\t\tip6 daddr . meta l4proto . th dport @{egress_set_name(6)} accept",
        "\t\tgoto drop_output",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _strip(value):
    """Drop run-time state (handles, counter values) and sort unordered lists, recursively."""
    if isinstance(value, list):
        return [_strip(item) for item in value]
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        if key == "handle":
            continue
        if key == "counter" and isinstance(item, dict):
            item = {k: v for k, v in item.items() if k not in ("packets", "bytes")}
        item = _strip(item)
        if key in ("elem", "set") and isinstance(item, list):
            item = sorted(item, key=_canonical)
        result[key] = item
    return result


def normalise_ruleset(data, family=FAMILY, table=TABLE):
    """Comparable form of ``nft -j list table`` output (a JSON string or the parsed object).

    Returns None when the table is not in ``data``; otherwise a dict with the
    table's attributes and its chains (attributes and rules in order), sets,
    counters and any other objects by name. Handles, counter values and the
    order of set elements are ignored; the order of rules is kept.
    """
    if isinstance(data, str):
        data = json.loads(data) if data.strip() else {}
    objects = (data or {}).get("nftables", [])
    result = None
    chains, rules, named = {}, {}, {}
    for obj in objects:
        if not isinstance(obj, dict) or len(obj) != 1:
            continue
        kind, body = next(iter(obj.items()))
        if kind == "metainfo" or not isinstance(body, dict) or body.get("family") != family:
            continue
        body = _strip({kind: body})[kind]
        if kind == "table":
            if body.get("name") == table:
                result = body
            continue
        if body.get("table") != table:
            continue
        if kind == "chain":
            chains[body["name"]] = body
        elif kind == "rule":
            rules.setdefault(body.get("chain"), []).append({k: v for k, v in body.items() if k != "chain"})
        else:
            named.setdefault(kind + "s", {})[body.get("name")] = body
    if result is None:
        return None
    result = {"table": result, "chains": {}}
    for name, chain in chains.items():
        result["chains"][name] = {**chain, "rules": rules.get(name, [])}
    result.update(named)
    return result


def rulesets_equal(live, desired):
    """True when two ``nft -j`` listings (strings or parsed) filter the same way."""
    return normalise_ruleset(live) == normalise_ruleset(desired)


def ruleset_diff(before, after, before_header="live: table inet enclave", after_header="policy: table inet enclave"):
    """Unified diff between two ``nft list`` texts (empty string when they are equal)."""
    lines = difflib.unified_diff(
        (before or "").splitlines(keepends=True),
        (after or "").splitlines(keepends=True),
        fromfile=before_header,
        tofile=after_header,
    )
    return "".join(lines)
