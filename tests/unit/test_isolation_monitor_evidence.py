"""Unit tests for plugins/module_utils/monitor/evidence.py: journal, audit, metrics, syslog formats."""

from __future__ import annotations

import datetime
import socket
import struct

from ansible_collections.enclave.llm.plugins.module_utils.monitor import evidence as lib

BREACH = {"kind": "rule_added", "where": "table inet enclave", "detail": 'chain output: "accept"', "target": None}


def test_journal_fields_carry_kind_where_and_detail():
    fields = lib.breach_fields(BREACH, ["stop vllm.service: rc 0"], "host1")
    assert fields["MESSAGE_ID"] == lib.MESSAGE_ID_BREACH
    assert fields["PRIORITY"] == 2
    assert fields["ENCLAVE_BREACH_KIND"] == "rule_added"
    assert fields["ENCLAVE_ACTIONS"] == "stop vllm.service: rc 0"


def test_journal_datagram_uses_the_binary_form_for_multiline_values():
    data = lib.journal_datagram({"A": "one", "B": "two\nlines"})
    assert data == b"A=one\nB\n" + struct.pack("<Q", 9) + b"two\nlines\n"


def test_journal_datagram_reaches_a_listening_socket(tmp_path):
    path = str(tmp_path / "journal")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert lib.send_journal({"MESSAGE": "hello"}, path) is None
        assert server.recv(100) == b"MESSAGE=hello\n"
    assert "journal:" in lib.send_journal({"MESSAGE": "x"}, str(tmp_path / "missing"))


def test_audit_message_is_a_netlink_request_with_ack():
    data = lib.audit_message("op=x res=failed", seq=7)
    length, kind, flags, seq, pid = struct.unpack("=IHHII", data[:16])
    assert (length, kind, flags, seq, pid) == (len(data), 1121, 0x5, 7, 0)
    assert data[16:] == b"op=x res=failed\x00"


def test_audit_ack_error_reads_the_errno():
    ack = struct.pack("=IHHII", 36, 2, 0, 7, 0) + struct.pack("=i", -1) + b"\x00" * 16
    assert lib.audit_ack_error(ack) == 1
    assert lib.audit_ack_error(struct.pack("=IHHII", 36, 2, 0, 7, 0) + struct.pack("=i", 0)) == 0


def test_audit_text_quotes_values():
    text = lib.audit_text(BREACH)
    assert text.startswith('op=enclave-isolation-breach kind=rule_added where="table inet enclave" ')
    assert text.endswith("""detail="chain output: 'accept'" res=failed""")


def test_metrics_text():
    text = lib.metrics_text(False, True, {"table_missing": 2}, {"fast": 100.5}, {"fast": 0.01}, 3)
    assert "enclave_isolation_ok 0\n" in text
    assert "enclave_isolation_breached 1\n" in text
    assert 'enclave_isolation_breaches_total{kind="table_missing"} 2\n' in text
    assert 'enclave_isolation_last_check_timestamp_seconds{check="fast"} 100.500\n' in text
    assert "enclave_isolation_probe_errors_total 3\n" in text


def test_syslog_line_is_rfc5424_authpriv_critical():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    line = lib.syslog_line("table_missing", "host1", now=now)
    assert line.startswith("<82>1 2026-01-02T03:04:05.000000Z host1 enclave-isolation ")
    assert line.endswith(" BREACH - table_missing")


def test_syslog_over_udp_reaches_the_endpoint():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(2)
        assert lib.send_syslog("<82>1 x", {"address": "127.0.0.1", "port": server.getsockname()[1]}) is None
        assert server.recv(100) == b"<82>1 x"
