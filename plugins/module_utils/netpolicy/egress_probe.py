# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Logic behind the ``egress_probe`` module: validate targets, probe, classify, parse.

The module (and the isolation monitor) forks into the requested network
namespace and user with ``in_child`` and ``setns_net`` at the end of this file,
then calls ``probe`` here; everything else in this file is pure and
unit-tested without root. Apart from those two, the only I/O here is the
probe's own sockets: nothing else forks, changes namespace or user, or runs a
command.

A target is plain data::

    name:     a label, unique in the call
    address:  IPv4/IPv6 literal (for dns: the resolver's address); names are refused
    proto:    tcp | udp | icmp | dns | http | https
    port:     required for tcp/udp; dns 53, http 80, https 443 by default; none for icmp
    timeout:  seconds (default 2)
    expect:   open | blocked (optional)
    as_user:  a user name or uid to probe as (optional)
    netns:    a named network namespace (/run/netns/NAME), or
    pid:      a process whose network namespace to join (/proc/PID/ns/net)
    counter:  a named counter of table inet enclave whose delta is evidence
    query, qtype (dns), path (http/https), payload (udp)

Verdicts (``VERDICTS``) and what they mean for reachability:

    connected    the handshake completed / a reply came back      reachable
    refused      ECONNREFUSED: a host answered with RST or ICMP   reachable ("open path")
                 port unreachable, so the packet got there
    rejected     EPERM/EACCES: a firewall rejected it (usually      blocked
                 the local one; EACCES also from an ICMPv6
                 administratively-prohibited)
    timeout      nothing came back in time: dropped or filtered   blocked
    unreachable  EHOSTUNREACH/ENETUNREACH: no route               blocked

Any other failure (a socket that cannot be opened, an unexpected errno) is an
*error*: the probe could not tell, so it gives no verdict. ``probe`` returns
``{"error": message}`` then, never ``timeout`` or ``rejected``.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import re
import secrets
import select
import signal
import socket
import ssl
import struct
import time

PROTOS = ("tcp", "udp", "icmp", "dns", "http", "https")
EXPECTS = ("open", "blocked")
VERDICTS = ("connected", "refused", "rejected", "timeout", "unreachable")
REACHABLE = {"connected": True, "refused": True, "rejected": False, "timeout": False, "unreachable": False}
DEFAULT_PORTS = {"dns": 53, "http": 80, "https": 443}
QTYPES = {"A": 1, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
TARGET_KEYS = (
    "name",
    "address",
    "proto",
    "port",
    "timeout",
    "expect",
    "as_user",
    "netns",
    "pid",
    "counter",
    "query",
    "qtype",
    "path",
    "payload",
)
DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 60.0
DEFAULT_PAYLOAD = "enclave-probe\n"
MAX_PAYLOAD = 1024
TABLE_FAMILY, TABLE_NAME = "inet", "enclave"

ERRNO_VERDICTS = {
    errno.ECONNREFUSED: "refused",
    errno.EPERM: "rejected",
    errno.EACCES: "rejected",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable",
    errno.ENETDOWN: "unreachable",
}
_MEANING = {
    "connected": "the path is open",
    "refused": "a host answered (RST or ICMP port unreachable): the path is open, nothing listens there",
    "rejected": "a firewall rejected the packet, usually this host's own (the packet did not leave)",
    "timeout": "no answer in time: dropped or filtered on the way, or nothing answers there",
    "unreachable": "no route to the destination",
}

_NETNS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
_COUNTER = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_PATH = re.compile(r"^/[\x21-\x7e]*$")


# --- validation ----------------------------------------------------------------


def _int_value(value):
    """An int from an int or a string of digits; None otherwise (bools are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _given(value):
    return value is not None and value != ""


def dns_name_problem(name):
    """A message when ``name`` is not a DNS name the probe can ask for, else None."""
    if not isinstance(name, str) or not name.strip():
        return "is missing: give the name to ask the resolver for, e.g. mirror.example.org."
    text = name.strip().rstrip(".")
    if text == "":
        return None  # the root
    if len(text) > 253:
        return f"{name!r} is longer than 253 characters."
    for label in text.split("."):
        if not _LABEL.match(label):
            return f"{name!r} has an invalid label {label!r}: use letters, digits, '-' and '_', 1 to 63 per label."
    return None


def _address_problem(field, value):
    if not isinstance(value, str) or not value.strip():
        return f"{field} is missing: give an IPv4 or IPv6 address such as 192.0.2.10 or 2001:db8::10.", None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return (
            f"{field}: {value!r} is not an IPv4 or IPv6 address: the probe does not resolve names "
            "(for dns, give the resolver's address here and the name in query).",
            None,
        )
    if address.is_unspecified or address.is_multicast:
        return f"{field}: {value!r} is an unspecified or multicast address: give the address of one host.", None
    return None, address


def _user_problem(field, value):
    if value is None:
        return None
    number = _int_value(value)
    if number is not None:
        return None if 0 <= number <= 4294967294 else f"{field}: {value!r} is not a uid (0 to 4294967294)."
    if isinstance(value, str) and _USER.match(value.strip()):
        return None
    return f"{field}: {value!r} is not a user name or uid."


def _namespace_problems(field, netns, pid):
    """``field`` is empty for the per-call defaults, else ``targets[N] (NAME).``."""
    problems = []
    if _given(netns) and pid is not None:
        where = f"{field.rstrip('.')}: " if field else ""
        problems.append(f"{where}netns and pid are mutually exclusive: give one namespace.")
    if _given(netns) and (not isinstance(netns, str) or not _NETNS.match(netns) or netns in (".", "..")):
        problems.append(f"{field}netns: {netns!r} is not a network namespace name (as listed by `ip netns list`).")
    if pid is not None:
        number = _int_value(pid)
        if number is None or number < 1:
            problems.append(f"{field}pid: {pid!r} is not a process id.")
    return problems


def defaults_problems(defaults):
    """Messages for the per-call defaults ``{netns, pid, as_user}``."""
    defaults = defaults or {}
    problems = _namespace_problems("", defaults.get("netns"), defaults.get("pid"))
    user = _user_problem("as_user", defaults.get("as_user"))
    return [*problems, *([user] if user else [])]


def _target(index, raw, defaults):
    """Return ``(problems, normalised target)`` for one target."""
    field = f"targets[{index}]"
    if not isinstance(raw, dict):
        return [f"{field} must be a mapping with at least name, address and proto, got {raw!r}."], None
    data = {key: value for key, value in raw.items() if value is not None}
    problems = []
    unknown = sorted(str(key) for key in data if key not in TARGET_KEYS)
    if unknown:
        problems.append(f"{field}: unknown key(s) {', '.join(map(repr, unknown))}: use only {', '.join(TARGET_KEYS)}.")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{field}.name is missing: give each target a short label.")
        name = None
    else:
        name = name.strip()
        field = f"targets[{index}] ({name})"

    target = {"name": name}
    proto = data.get("proto")
    if proto not in PROTOS:
        problems.append(f"{field}.proto: {proto!r} is not one of {', '.join(PROTOS)}.")
        proto = None
    target["proto"] = proto

    problem, address = _address_problem(f"{field}.address", data.get("address"))
    if problem:
        problems.append(problem)
    target["address"] = str(address) if address else None
    target["family"] = address.version if address else None

    port = data.get("port")
    if proto == "icmp":
        if port is not None:
            problems.append(f"{field}.port: icmp has no port: remove it.")
        target["port"] = None
    elif proto is not None:
        if port is None:
            port = DEFAULT_PORTS.get(proto)
        number = _int_value(port)
        if port is None:
            problems.append(f"{field}.port is missing: {proto} needs a port from 1 to 65535.")
        elif number is None or not 1 <= number <= 65535:
            problems.append(f"{field}.port: {port!r} is not a port: use a number from 1 to 65535.")
        target["port"] = number

    timeout = data.get("timeout", DEFAULT_TIMEOUT)
    try:
        timeout = float(timeout)
        if isinstance(data.get("timeout"), bool) or not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"{field}.timeout: {data.get('timeout')!r} is not a number of seconds in (0, {MAX_TIMEOUT:g}].")
        timeout = None
    target["timeout"] = timeout

    expect = data.get("expect")
    if expect is not None and expect not in EXPECTS:
        problems.append(f"{field}.expect: {expect!r} is not one of {', '.join(EXPECTS)}.")
    target["expect"] = expect

    # A namespace given on the target replaces both per-call defaults.
    if _given(data.get("netns")) or data.get("pid") is not None:
        netns, pid = data.get("netns"), data.get("pid")
        problems.extend(_namespace_problems(f"{field}.", netns, pid))
    else:
        netns, pid = defaults.get("netns"), defaults.get("pid")
    target["netns"] = netns if _given(netns) else None
    target["pid"] = _int_value(pid) if pid is not None else None

    as_user = data.get("as_user", defaults.get("as_user"))
    user_problem = _user_problem(f"{field}.as_user", as_user)
    if user_problem:
        problems.append(user_problem)
    target["as_user"] = (as_user.strip() if isinstance(as_user, str) else as_user) if _given(as_user) else None

    counter = data.get("counter")
    if counter is not None and (not isinstance(counter, str) or not _COUNTER.match(counter)):
        problems.append(f"{field}.counter: {counter!r} is not a counter name such as drop_output.")
    target["counter"] = counter

    for key, allowed in (("query", "dns"), ("qtype", "dns"), ("path", "http"), ("payload", "udp")):
        if key in data and proto is not None and proto != allowed and not (key == "path" and proto == "https"):
            problems.append(f"{field}.{key} applies to {allowed if key != 'path' else 'http and https'} only.")
    if proto == "dns":
        problem = dns_name_problem(data.get("query"))
        if problem:
            problems.append(f"{field}.query {problem}")
        qtype = str(data.get("qtype", "A")).upper()
        if qtype not in QTYPES:
            problems.append(f"{field}.qtype: {data.get('qtype')!r} is not one of {', '.join(QTYPES)}.")
        target["query"], target["qtype"] = data.get("query"), qtype
    if proto in ("http", "https"):
        path = data.get("path", "/")
        if not isinstance(path, str) or not _PATH.match(path):
            problems.append(f"{field}.path: {path!r} is not a request path such as / or /health.")
        target["path"] = path
    if proto == "udp":
        payload = data.get("payload", DEFAULT_PAYLOAD)
        if not isinstance(payload, str) or not 0 < len(payload.encode()) <= MAX_PAYLOAD:
            problems.append(f"{field}.payload must be text of 1 to {MAX_PAYLOAD} bytes.")
        target["payload"] = payload
    return problems, target


def validate_targets(targets, defaults=None):
    """Return ``(normalised targets, problems)``; probe only when problems is empty.

    ``defaults`` holds the per-call ``netns``, ``pid`` and ``as_user``; a target's
    own netns or pid replaces both namespace defaults, its as_user the default user.
    """
    defaults = defaults or {}
    problems = defaults_problems(defaults)
    if not isinstance(targets, list) or not targets:
        return [], [*problems, "targets is empty: list at least one target to probe."]
    normalised, seen = [], set()
    for index, raw in enumerate(targets):
        target_problems, target = _target(index, raw, defaults)
        problems.extend(target_problems)
        if target is None:
            continue
        if target["name"] is not None:
            if target["name"] in seen:
                problems.append(f"targets[{index}].name: {target['name']!r} is used twice: names must be unique.")
            seen.add(target["name"])
        normalised.append(target)
    return normalised, problems


# --- verdicts ------------------------------------------------------------------


def errno_name(number):
    return errno.errorcode.get(number, str(number)) if number is not None else None


def verdict_for_errno(number):
    """The verdict an errno proves, or None when it proves nothing about the path."""
    return ERRNO_VERDICTS.get(number)


def reachable(verdict):
    return REACHABLE[verdict]


def matched_expectation(expect, verdict):
    """True/False when the verdict matches/contradicts ``expect``; None without an expectation or verdict."""
    if expect is None or verdict is None:
        return None
    return REACHABLE[verdict] == (expect == "open")


def outcome(verdict, step, number=None, **detail):
    """A verdict with its evidence: the errno, and a sentence an operator can act on."""
    name = errno_name(number)
    cause = f"{name} ({number})" if number is not None else ""
    if verdict == "connected":
        evidence = f"{step}: {_MEANING[verdict]}"
    elif verdict == "timeout" and number is None:
        evidence = f"{step} got no answer in time: {_MEANING[verdict]}"
    else:
        evidence = f"{step} failed with {cause}: {_MEANING[verdict]}"
    return {"verdict": verdict, "errno": name, "errno_number": number, "evidence": evidence, "detail": detail}


def outcome_from_error(exc, step, **detail):
    """Classify an exception raised by a socket call; unknown errnos become an error, not a verdict."""
    number = getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError) and number in (None, errno.ETIMEDOUT):
        return outcome("timeout", step, number, **detail)
    verdict = verdict_for_errno(number)
    if verdict is None:
        what = f"{errno_name(number)} ({number}): {exc.strerror}" if number is not None else repr(exc)
        return {"error": f"{step} failed with {what}; that says nothing about the path, so there is no verdict."}
    return outcome(verdict, step, number, **detail)


# --- nftables counters -----------------------------------------------------------


def counter_command(nft, name):
    return [nft, "-j", "list", "counter", TABLE_FAMILY, TABLE_NAME, name]


def parse_counter(text, name):
    """Packets of the named counter in ``nft -j list counter`` output; ValueError when absent."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"nft printed no JSON for counter {name}") from exc
    for item in data.get("nftables", []) if isinstance(data, dict) else []:
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and counter.get("name") == name:
            return int(counter.get("packets", 0))
    raise ValueError(f"no counter {name} in table {TABLE_FAMILY} {TABLE_NAME}")


# --- DNS -------------------------------------------------------------------------


def encode_dns_name(name):
    text = name.strip().rstrip(".")
    out = b""
    for label in text.split(".") if text else []:
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def build_dns_query(name, qtype="A", ident=0):
    """A standard query (recursion desired) for one name, as sent over UDP."""
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    return header + encode_dns_name(name) + struct.pack("!HH", QTYPES[qtype], 1)


def _read_name(data, offset):
    """``(name, offset after the name)``; follows compression pointers (RFC 1035 4.1.4)."""
    labels, end, jumps = [], None, 0
    while True:
        if offset >= len(data):
            raise ValueError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise ValueError("truncated compression pointer")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("compression pointer loop")
            continue
        if length & 0xC0:
            raise ValueError("unsupported label type")
        offset += 1
        if length == 0:
            return ".".join(labels) + ".", end if end is not None else offset
        labels.append(data[offset : offset + length].decode("ascii", "replace"))
        offset += length


def parse_dns_message(data):
    """Header, questions and answers of a DNS message; ValueError when it is malformed."""
    if len(data) < 12:
        raise ValueError("shorter than a DNS header")
    ident, flags, qdcount, ancount, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    offset, questions, answers = 12, [], []
    for _question in range(qdcount):
        name, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise ValueError("truncated question")
        qtype, _qclass = struct.unpack("!HH", data[offset : offset + 4])
        questions.append({"name": name, "qtype": qtype})
        offset += 4
    for _answer in range(ancount):
        name, offset = _read_name(data, offset)
        if offset + 10 > len(data):
            raise ValueError("truncated answer")
        rtype, _rclass, ttl, length = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        rdata = data[offset : offset + length]
        if len(rdata) != length:
            raise ValueError("truncated answer data")
        offset += length
        if rtype == 1 and length == 4:
            value = str(ipaddress.IPv4Address(rdata))
        elif rtype == 28 and length == 16:
            value = str(ipaddress.IPv6Address(rdata))
        else:
            value = f"type {rtype}, {length} bytes"
        answers.append({"name": name, "type": rtype, "ttl": ttl, "value": value})
    rcode = flags & 0x000F
    return {
        "id": ident,
        "response": bool(flags & 0x8000),
        "truncated": bool(flags & 0x0200),
        "rcode": RCODES.get(rcode, str(rcode)),
        "questions": questions,
        "answers": answers,
    }


def parse_dns_response(data, ident, name=None):
    """The parsed answer to the query ``ident`` (for ``name``); ValueError for anything else."""
    message = parse_dns_message(data)
    if not message["response"] or message["id"] != ident:
        raise ValueError("not the answer to this query")
    if name is not None and message["questions"]:
        asked = message["questions"][0]["name"].lower()
        if asked != name.strip().rstrip(".").lower() + ".":
            raise ValueError("answer for another name")
    return message


# --- ICMP ------------------------------------------------------------------------


def icmp_checksum(data):
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def build_echo_request(ident, seq, payload, v6=False):
    """An ICMP (type 8) or ICMPv6 (type 128) echo request. The kernel fills the ICMPv6 checksum."""
    kind = 128 if v6 else 8
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if v6:
        return header + payload
    checksum = icmp_checksum(header + payload)
    return struct.pack("!BBHHH", kind, 0, checksum, ident, seq) + payload


def parse_echo_reply(data, seq, payload, v6=False, ip_header=False, ident=None):
    """True when ``data`` is the echo reply to our request (raw IPv4 sockets include the IP header)."""
    if ip_header and data:
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < 8:
        return False
    kind, code, _checksum, reply_ident, reply_seq = struct.unpack("!BBHHH", data[:8])
    if kind != (129 if v6 else 0) or code != 0 or reply_seq != seq or data[8:] != payload:
        return False
    return ident is None or reply_ident == ident


# --- probes ----------------------------------------------------------------------


class _NoVerdict(Exception):
    """The probe could not be tried; the message says why."""


def _socket(family, kind, proto=0):
    try:
        return socket.socket(family, kind, proto)
    except OSError as exc:
        raise _NoVerdict(f"cannot open a socket: {errno_name(exc.errno)} ({exc.errno}): {exc.strerror}") from exc


def _family(target):
    return socket.AF_INET6 if target["family"] == 6 else socket.AF_INET


def _remaining(deadline):
    return max(deadline - time.monotonic(), 0.001)


def _where(target):
    if target["port"] is None:
        return target["address"]
    host = f"[{target['address']}]" if target["family"] == 6 else target["address"]
    return f"{host}:{target['port']}"


def _probe_tcp(target, deadline, http=False, tls=False):
    step = f"tcp connect to {_where(target)}"
    sock = _socket(_family(target), socket.SOCK_STREAM)
    try:
        sock.settimeout(_remaining(deadline))
        try:
            sock.connect((target["address"], target["port"]))
        except OSError as exc:
            return outcome_from_error(exc, step)
        if not http:
            return outcome("connected", f"{step} completed")
        return outcome("connected", f"{step} completed", **_http_exchange(sock, target, deadline, tls))
    finally:
        sock.close()


def _http_exchange(sock, target, deadline, tls):
    """After the handshake: TLS without certificate checks, then a HEAD request. Only evidence."""
    detail = {}
    try:
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock.settimeout(_remaining(deadline))
            sock = context.wrap_socket(sock)
            detail["tls_version"] = sock.version()
        host = f"[{target['address']}]" if target["family"] == 6 else target["address"]
        request = f"HEAD {target['path']} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: enclave-egress-probe\r\n"
        sock.settimeout(_remaining(deadline))
        sock.sendall((request + "Connection: close\r\n\r\n").encode("ascii"))
        received = b""
        while b"\n" not in received and len(received) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
        detail["http_status"] = received.split(b"\n", 1)[0].strip().decode("latin-1")[:200] or None
    except (OSError, ssl.SSLError) as exc:
        detail["http_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return detail


def _probe_udp(target, deadline, request, step, accept):
    """Send ``request`` on a connected UDP socket; ``accept(reply)`` returns the detail of a valid reply."""
    sock = _socket(_family(target), socket.SOCK_DGRAM)
    try:
        try:
            sock.connect((target["address"], target["port"]))
            sock.send(request)
        except OSError as exc:
            return outcome_from_error(exc, step)
        while True:
            sock.settimeout(_remaining(deadline))
            try:
                reply = sock.recv(65535)
            except OSError as exc:
                # ECONNREFUSED here is the ICMP port unreachable of a host that got the datagram.
                return outcome_from_error(exc, f"{step}, waiting for a reply,")
            detail = accept(reply)
            if detail is not None:
                return outcome("connected", f"{step} got a reply", **detail)
            if time.monotonic() >= deadline:
                return outcome("timeout", step)
    finally:
        sock.close()


def _probe_udp_echo(target, deadline):
    payload = target["payload"].encode()

    def accept(reply):
        return {"reply_bytes": len(reply), "echoed": reply == payload}

    return _probe_udp(target, deadline, payload, f"udp datagram to {_where(target)}", accept)


def _probe_dns(target, deadline):
    ident = secrets.randbelow(65536)
    query = build_dns_query(target["query"], target["qtype"], ident)

    def accept(reply):
        try:
            message = parse_dns_response(reply, ident, target["query"])
        except ValueError:
            return None  # not ours: keep waiting
        return {"rcode": message["rcode"], "answers": [answer["value"] for answer in message["answers"]]}

    step = f"dns query {target['query']} {target['qtype']} to {_where(target)}"
    return _probe_udp(target, deadline, query, step, accept)


def _icmp_socket(v6):
    """A ping socket when net.ipv4.ping_group_range allows our gid, else a raw one (CAP_NET_RAW)."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), "dgram"
    except OSError as first:
        try:
            return socket.socket(family, socket.SOCK_RAW, proto), "raw"
        except OSError as second:
            raise _NoVerdict(
                f"cannot open an ICMP socket as uid {os.getuid()}: a ping socket failed with "
                f"{errno_name(first.errno)} (gid {os.getgid()} outside net.ipv4.ping_group_range?) and a raw "
                f"socket with {errno_name(second.errno)} (needs CAP_NET_RAW)"
            ) from second


def _probe_icmp(target, deadline):
    v6 = target["family"] == 6
    sock, kind = _icmp_socket(v6)
    step = f"icmp{'v6' if v6 else ''} echo to {target['address']} ({kind} socket)"
    ident, seq, payload = secrets.randbelow(65536), secrets.randbelow(65536), secrets.token_bytes(16)
    try:
        try:
            sock.connect((target["address"], 0))
            sock.send(build_echo_request(ident, seq, payload, v6))
        except OSError as exc:
            return outcome_from_error(exc, step, socket=kind)
        while True:
            sock.settimeout(_remaining(deadline))
            try:
                reply = sock.recv(65535)
            except OSError as exc:
                return outcome_from_error(exc, f"{step}, waiting for the reply,", socket=kind)
            # Ping sockets rewrite the identifier; raw ones see every ICMP packet, so match it.
            raw = kind == "raw"
            if parse_echo_reply(reply, seq, payload, v6, ip_header=raw and not v6, ident=ident if raw else None):
                return outcome("connected", f"{step} got its echo reply", socket=kind)
            if time.monotonic() >= deadline:
                return outcome("timeout", step, socket=kind)
    finally:
        sock.close()


def probe(target):
    """Probe one validated target from the current namespace and user.

    Returns an outcome (``verdict``, ``errno``, ``errno_number``, ``evidence``,
    ``detail``) plus ``duration_ms``, or ``{"error": message}`` when the probe
    could not be tried.
    """
    start = time.monotonic()
    deadline = start + target["timeout"]
    proto = target["proto"]
    try:
        if proto == "tcp":
            result = _probe_tcp(target, deadline)
        elif proto in ("http", "https"):
            result = _probe_tcp(target, deadline, http=True, tls=proto == "https")
        elif proto == "udp":
            result = _probe_udp_echo(target, deadline)
        elif proto == "dns":
            result = _probe_dns(target, deadline)
        elif proto == "icmp":
            result = _probe_icmp(target, deadline)
        else:
            result = {"error": f"unknown proto {proto!r}"}
    except _NoVerdict as exc:
        result = {"error": str(exc)}
    result["duration_ms"] = round((time.monotonic() - start) * 1000, 1)
    return result


# Probes that must run in another network namespace or as another user run in
# a forked child (setns and setuid are one-way for a process), which sends its
# result back as JSON over a pipe.
CLONE_NEWNET = 0x40000000


def setns_net(path):
    """Move the calling (single-threaded) process into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
    finally:
        os.close(fd)


def in_child(work, limit):
    """Run ``work()`` in a forked child and return the dict it returns, sent back as JSON over a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the module
        os.close(read_fd)
        try:
            try:
                result = work()
            except BaseException as exc:  # everything must reach the parent
                result = {"error": f"{type(exc).__name__}: {exc}"}
            data = memoryview(json.dumps(result).encode())
            while data:
                data = data[os.write(write_fd, data) :]
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks, deadline, finished = [], time.monotonic() + limit, False
    try:
        while True:
            ready, _w, _x = select.select([read_fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not finished:
            os.kill(pid, signal.SIGKILL)
        _pid, status = os.waitpid(pid, 0)
    if not finished:
        return {"error": f"the probe process gave no result within {limit:g} s and was killed"}
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"error": f"the probe process exited (wait status {status}) without a result"}
