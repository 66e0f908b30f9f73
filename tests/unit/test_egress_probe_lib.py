"""Unit tests for plugins/module_utils/netpolicy/egress_probe.py (no root; probes only on loopback)."""

from __future__ import annotations

import errno
import json
import socket
import struct
import threading

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import egress_probe as lib


def target(**changes):
    data = {"name": "mirror", "address": "198.51.100.10", "proto": "tcp", "port": 3142, "expect": "open"}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def validated(**changes):
    targets, problems = lib.validate_targets([target(**changes)])
    assert problems == []
    return targets[0]


def test_good_target_is_normalised():
    assert validated(address="2001:DB8:0::10", timeout="1.5") == {
        "name": "mirror",
        "proto": "tcp",
        "address": "2001:db8::10",
        "family": 6,
        "port": 3142,
        "timeout": 1.5,
        "expect": "open",
        "netns": None,
        "pid": None,
        "as_user": None,
        "counter": None,
    }


@pytest.mark.parametrize(
    ("proto", "port"),
    [("dns", 53), ("http", 80), ("https", 443), ("icmp", None)],
)
def test_default_ports(proto, port):
    extra = {"query": "example.org"} if proto == "dns" else {}
    assert validated(proto=proto, port=None, **extra)["port"] == port


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            {"address": "mirror.example.org"},
            "targets[0] (mirror).address: 'mirror.example.org' is not an IPv4 or IPv6 address: "
            "the probe does not resolve names",
            id="name-not-address",
        ),
        pytest.param({"address": "192.0.2.300"}, "is not an IPv4 or IPv6 address", id="bad-v4"),
        pytest.param({"address": "192.0.2.0/24"}, "is not an IPv4 or IPv6 address", id="cidr"),
        pytest.param({"address": None}, "targets[0] (mirror).address is missing", id="no-address"),
        pytest.param({"address": "0.0.0.0"}, "unspecified or multicast", id="unspecified"),
        pytest.param({"address": "ff02::1"}, "unspecified or multicast", id="multicast"),
        pytest.param({"name": " "}, "targets[0].name is missing", id="no-name"),
        pytest.param({"proto": "sctp"}, "proto: 'sctp' is not one of tcp, udp, icmp, dns, http, https", id="proto"),
        pytest.param({"port": None}, "port is missing: tcp needs a port", id="no-port"),
        pytest.param({"port": 70000}, "port: 70000 is not a port", id="port-high"),
        pytest.param({"port": True}, "port: True is not a port", id="port-bool"),
        pytest.param({"proto": "icmp"}, "port: icmp has no port: remove it", id="icmp-port"),
        pytest.param({"timeout": 0}, "timeout: 0 is not a number of seconds", id="timeout-zero"),
        pytest.param({"timeout": 61}, "timeout: 61 is not a number of seconds", id="timeout-high"),
        pytest.param({"timeout": "soon"}, "timeout: 'soon' is not a number", id="timeout-text"),
        pytest.param({"expect": "closed"}, "expect: 'closed' is not one of open, blocked", id="expect"),
        pytest.param({"netns": "x", "pid": 1}, "(mirror): netns and pid are mutually exclusive", id="netns-and-pid"),
        pytest.param({"netns": "../etc"}, "netns: '../etc' is not a network namespace name", id="netns-path"),
        pytest.param({"netns": ".."}, "netns: '..' is not a network namespace name", id="netns-dots"),
        pytest.param({"pid": 0}, "pid: 0 is not a process id", id="pid-zero"),
        pytest.param({"as_user": "no body"}, "as_user: 'no body' is not a user name or uid", id="user-space"),
        pytest.param({"as_user": -1}, "as_user: -1 is not a uid", id="user-negative"),
        pytest.param({"counter": "drop output"}, "counter: 'drop output' is not a counter name", id="counter"),
        pytest.param({"query": "example.org"}, "query applies to dns only", id="query-not-dns"),
        pytest.param({"proto": "dns", "port": None}, "query is missing", id="dns-no-query"),
        pytest.param({"proto": "dns", "query": "bad..name"}, "has an invalid label ''", id="dns-empty-label"),
        pytest.param({"proto": "dns", "query": "a" * 64 + ".org"}, "has an invalid label", id="dns-long-label"),
        pytest.param({"proto": "dns", "query": "example.org", "qtype": "MX"}, "qtype: 'MX' is not one of", id="qtype"),
        pytest.param({"proto": "http", "path": "no-slash"}, "path: 'no-slash' is not a request path", id="path"),
        pytest.param({"proto": "http", "path": "/a\r\nX: y"}, "is not a request path", id="path-crlf"),
        pytest.param({"proto": "udp", "payload": ""}, "payload must be text of 1 to 1024 bytes", id="payload"),
        pytest.param({"colour": "red"}, "unknown key(s) 'colour'", id="unknown-key"),
    ],
)
def test_bad_target_is_refused_with_a_message(changes, expected):
    _targets, problems = lib.validate_targets([target(**changes)])
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("targets", "defaults", "expected"),
    [
        pytest.param([], {}, "targets is empty", id="empty"),
        pytest.param(None, {}, "targets is empty", id="none"),
        pytest.param(["198.51.100.10"], {}, "targets[0] must be a mapping", id="not-a-mapping"),
        pytest.param([target(), target()], {}, "'mirror' is used twice", id="duplicate-name"),
        pytest.param([target()], {"netns": "a", "pid": 7}, "netns and pid are mutually exclusive", id="defaults-both"),
        pytest.param([target()], {"as_user": "x y"}, "as_user: 'x y' is not a user name", id="default-user"),
    ],
)
def test_bad_call_is_refused(targets, defaults, expected):
    _targets, problems = lib.validate_targets(targets, defaults)
    assert any(expected in problem for problem in problems), problems


def test_every_problem_is_reported_at_once():
    _targets, problems = lib.validate_targets([target(address="mirror", port=0, expect="maybe")])
    assert len(problems) == 3


def test_defaults_apply_and_a_target_namespace_replaces_both():
    defaults = {"netns": "enclave", "pid": None, "as_user": "nobody"}
    targets, problems = lib.validate_targets(
        [target(name="a"), target(name="b", pid="42", as_user=0), target(name="c", netns="other")], defaults
    )
    assert problems == []
    assert [(t["netns"], t["pid"], t["as_user"]) for t in targets] == [
        ("enclave", None, "nobody"),
        (None, 42, 0),
        ("other", None, "nobody"),
    ]


@pytest.mark.parametrize(
    ("number", "verdict"),
    [
        (errno.ECONNREFUSED, "refused"),
        (errno.EPERM, "rejected"),
        (errno.EACCES, "rejected"),
        (errno.ETIMEDOUT, "timeout"),
        (errno.EHOSTUNREACH, "unreachable"),
        (errno.ENETUNREACH, "unreachable"),
        (errno.EADDRNOTAVAIL, None),
        (errno.EAFNOSUPPORT, None),
        (errno.EINVAL, None),
    ],
)
def test_verdict_for_errno(number, verdict):
    assert lib.verdict_for_errno(number) == verdict


@pytest.mark.parametrize(
    ("exc", "verdict", "name"),
    [
        pytest.param(TimeoutError("timed out"), "timeout", None, id="socket-timeout"),
        pytest.param(TimeoutError(errno.ETIMEDOUT, "Connection timed out"), "timeout", "ETIMEDOUT", id="etimedout"),
        pytest.param(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused", "ECONNREFUSED", id="refused"),
        pytest.param(PermissionError(errno.EPERM, "not permitted"), "rejected", "EPERM", id="eperm"),
        pytest.param(OSError(errno.ENETUNREACH, "unreachable"), "unreachable", "ENETUNREACH", id="no-route"),
    ],
)
def test_outcome_from_error_classifies(exc, verdict, name):
    result = lib.outcome_from_error(exc, "tcp connect to 192.0.2.1:80")
    assert result["verdict"] == verdict
    assert result["errno"] == name
    assert result["evidence"].startswith("tcp connect to 192.0.2.1:80 ")


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), OSError(errno.EINVAL, "x"), OSError("odd")],
)
def test_an_errno_that_proves_nothing_is_an_error_not_a_verdict(exc):
    result = lib.outcome_from_error(exc, "tcp connect to 192.0.2.1:80")
    assert set(result) == {"error"}
    assert "there is no verdict" in result["error"]


@pytest.mark.parametrize(
    ("expect", "verdict", "matched"),
    [
        ("open", "connected", True),
        ("open", "refused", True),
        ("open", "timeout", False),
        ("open", "rejected", False),
        ("blocked", "timeout", True),
        ("blocked", "rejected", True),
        ("blocked", "unreachable", True),
        ("blocked", "connected", False),
        ("blocked", "refused", False),
        (None, "connected", None),
        ("blocked", None, None),
    ],
)
def test_matched_expectation(expect, verdict, matched):
    assert lib.matched_expectation(expect, verdict) is matched


def test_parse_counter():
    text = json.dumps(
        {
            "nftables": [
                {"metainfo": {"json_schema_version": 1}},
                {"counter": {"family": "inet", "name": "drop_output", "table": "enclave", "packets": 7, "bytes": 420}},
            ]
        }
    )
    assert lib.parse_counter(text, "drop_output") == 7
    with pytest.raises(ValueError, match="no counter drop_uid"):
        lib.parse_counter(text, "drop_uid")
    with pytest.raises(ValueError, match="no JSON"):
        lib.parse_counter("Error: No such file or directory", "drop_output")
    assert lib.counter_command("/usr/sbin/nft", "drop_uid") == [
        "/usr/sbin/nft",
        *("-j", "list", "counter", "inet", "enclave", "drop_uid"),
    ]


# --- DNS -------------------------------------------------------------------------


def test_dns_query_bytes():
    query = lib.build_dns_query("example.org.", "A", 0x1234)
    assert query == bytes.fromhex("1234 0100 0001 0000 0000 0000") + b"\x07example\x03org\x00" + b"\x00\x01\x00\x01"


def hand_built_answer(query, records, rcode=0):
    """A response written out by hand: the question echoed, each answer a pointer to it (0xC00C)."""
    ident = struct.unpack("!H", query[:2])[0]
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(records), 0, 0)
    body = b""
    for rtype, rdata in records:
        body += struct.pack("!HHHIH", 0xC00C, rtype, 1, 300, len(rdata)) + rdata
    return header + query[12:] + body


@pytest.mark.parametrize(
    ("qtype", "records", "answers"),
    [
        ("A", [(1, bytes([203, 0, 113, 53]))], ["203.0.113.53"]),
        ("AAAA", [(28, socket.inet_pton(socket.AF_INET6, "2001:db8:2::53"))], ["2001:db8:2::53"]),
        ("A", [(5, b"\x03www\xc0\x0c"), (1, bytes([192, 0, 2, 1]))], ["type 5, 6 bytes", "192.0.2.1"]),
        ("A", [], []),
    ],
)
def test_dns_round_trip(qtype, records, answers):
    query = lib.build_dns_query("Mirror.Example.org", qtype, 4242)
    asked = lib.parse_dns_message(query)
    assert asked["response"] is False
    assert asked["questions"] == [{"name": "Mirror.Example.org.", "qtype": lib.QTYPES[qtype]}]
    reply = lib.parse_dns_response(hand_built_answer(query, records), 4242, "mirror.example.org")
    assert reply["rcode"] == "NOERROR"
    assert [answer["value"] for answer in reply["answers"]] == answers


def test_dns_rcode_and_mismatches():
    query = lib.build_dns_query("example.org", "A", 7)
    assert lib.parse_dns_response(hand_built_answer(query, [], rcode=3), 7)["rcode"] == "NXDOMAIN"
    with pytest.raises(ValueError, match="not the answer"):
        lib.parse_dns_response(hand_built_answer(query, []), 8)
    with pytest.raises(ValueError, match="not the answer"):
        lib.parse_dns_response(query, 7)  # a query, not a response
    with pytest.raises(ValueError, match="another name"):
        lib.parse_dns_response(hand_built_answer(query, []), 7, "example.com")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"\x00\x07\x81\x80", "shorter than a DNS header", id="short-header"),
        pytest.param(
            struct.pack("!HHHHHH", 7, 0x8180, 1, 0, 0, 0) + b"\x07example", "past the end", id="truncated-name"
        ),
        pytest.param(struct.pack("!HHHHHH", 7, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c", "pointer loop", id="pointer-loop"),
        pytest.param(
            struct.pack("!HHHHHH", 7, 0x8180, 0, 1, 0, 0) + b"\x00" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01",
            "truncated answer data",
            id="truncated-rdata",
        ),
    ],
)
def test_malformed_dns_is_refused(data, message):
    with pytest.raises(ValueError, match=message):
        lib.parse_dns_message(data)


# --- ICMP ------------------------------------------------------------------------


def test_echo_request_checksum_and_reply_matching():
    request = lib.build_echo_request(0x1111, 9, b"token", v6=False)
    assert lib.icmp_checksum(request) == 0  # a valid checksum sums to zero
    reply = bytes([0, 0]) + request[2:]
    ip_header = bytes([0x45]) + bytes(19)
    assert lib.parse_echo_reply(reply, 9, b"token")
    assert lib.parse_echo_reply(ip_header + reply, 9, b"token", ip_header=True, ident=0x1111)
    assert not lib.parse_echo_reply(reply, 10, b"token")
    assert not lib.parse_echo_reply(reply, 9, b"other")
    assert not lib.parse_echo_reply(ip_header + reply, 9, b"token", ip_header=True, ident=0x2222)
    assert not lib.parse_echo_reply(request, 9, b"token")  # our own request is not a reply
    request6 = lib.build_echo_request(1, 2, b"t", v6=True)
    assert request6[0] == 128
    assert lib.parse_echo_reply(bytes([129]) + request6[1:], 2, b"t", v6=True)


# --- probes on loopback (no root needed) ---------------------------------------------


@pytest.fixture
def tcp_port():
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def closed_port(kind):
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def serve_udp_once(handler):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)

    def run():
        try:
            data, peer = sock.recvfrom(65535)
            sock.sendto(handler(data), peer)
        finally:
            sock.close()

    threading.Thread(target=run, daemon=True).start()
    return sock.getsockname()[1]


def test_tcp_probe_connected_and_refused(tcp_port):
    result = lib.probe(validated(address="127.0.0.1", port=tcp_port))
    assert result["verdict"] == "connected"
    assert result["duration_ms"] >= 0
    result = lib.probe(validated(address="127.0.0.1", port=closed_port(socket.SOCK_STREAM)))
    assert (result["verdict"], result["errno"], result["errno_number"]) == ("refused", "ECONNREFUSED", 111)


def test_udp_probe_echo_and_port_unreachable():
    port = serve_udp_once(lambda data: data)
    result = lib.probe(validated(address="127.0.0.1", proto="udp", port=port))
    assert result["verdict"] == "connected"
    assert result["detail"] == {"reply_bytes": len(lib.DEFAULT_PAYLOAD), "echoed": True}
    result = lib.probe(validated(address="127.0.0.1", proto="udp", port=closed_port(socket.SOCK_DGRAM)))
    assert (result["verdict"], result["errno"]) == ("refused", "ECONNREFUSED")


def test_udp_silence_is_timeout():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # bound, never answers
    try:
        result = lib.probe(validated(address="127.0.0.1", proto="udp", port=sock.getsockname()[1], timeout=0.2))
    finally:
        sock.close()
    assert (result["verdict"], result["errno"]) == ("timeout", None)
    assert result["duration_ms"] >= 150


def test_dns_probe_gets_the_answer():
    port = serve_udp_once(lambda query: hand_built_answer(query, [(1, bytes([192, 0, 2, 53]))]))
    result = lib.probe(validated(address="127.0.0.1", proto="dns", port=port, query="mirror.example.org"))
    assert result["verdict"] == "connected"
    assert result["detail"] == {"rcode": "NOERROR", "answers": ["192.0.2.53"]}


def test_http_probe_reads_the_status_line():
    server = socket.create_server(("127.0.0.1", 0))

    def answer():
        conn, _peer = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        conn.close()
        server.close()

    threading.Thread(target=answer, daemon=True).start()
    result = lib.probe(validated(address="127.0.0.1", proto="http", port=server.getsockname()[1]))
    assert result["verdict"] == "connected"
    assert result["detail"] == {"http_status": "HTTP/1.1 204 No Content"}


def test_https_probe_to_a_plain_server_is_still_connected():
    """Reachability is the question: a failed TLS handshake after the TCP one is detail, not a verdict."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer():
        conn, _peer = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()
        server.close()

    threading.Thread(target=answer, daemon=True).start()
    result = lib.probe(validated(address="127.0.0.1", proto="https", port=server.getsockname()[1], timeout=1))
    assert result["verdict"] == "connected"
    assert result["detail"]["http_error"].startswith("SSL")
