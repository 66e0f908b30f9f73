# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Evidence of a breach: a journal entry, an audit record, Prometheus metrics, a syslog line.

The message builders are pure and unit-tested; the senders are a few lines of
socket code each. A sender that fails returns its reason, which goes into the
journal entry: evidence that could not be written is itself recorded.
"""

from __future__ import annotations

import datetime
import os
import socket
import struct

# journalctl MESSAGE_ID=... finds every breach, whatever its text.
MESSAGE_ID_BREACH = "5f1c3a8e9b2d4c6e8a0b1c2d3e4f5a6b"
MESSAGE_ID_VERIFIED = "6a2d4b9f0c3e4d7f9b1c2d3e4f5a6b7c"
MESSAGE_ID_CLEARED = "7b3e5c0a1d4f4e8a0c2d3e4f5a6b7c8d"
MESSAGE_ID_RESTORE = "8c4f6d1b2e5a4f9b1d3e4f5a6b7c8d9e"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
PRIORITY_CRIT, PRIORITY_WARNING, PRIORITY_NOTICE, PRIORITY_INFO = 2, 4, 5, 6
NETLINK_AUDIT = 9
AUDIT_TRUSTED_APP = 1121  # a user-space message from a trusted application
NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR = 0x1, 0x4, 0x2
SYSLOG_FACILITY_AUTHPRIV = 10
METRICS_FILE = "enclave_isolation.prom"


# --- journal -----------------------------------------------------------------------


def journal_datagram(fields):
    """The native journal protocol: ``KEY=value`` lines, or the length-prefixed form for multi-line values."""
    out = bytearray()
    for key, value in fields.items():
        data = str(value).encode()
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def breach_fields(breach, actions, host):
    """Journal fields of one breach: what (kind), where (context), which rule or target (detail)."""
    return {
        "MESSAGE": f"enclave isolation breach: {breach['kind']} ({breach['where']}): {breach['detail']}",
        "MESSAGE_ID": MESSAGE_ID_BREACH,
        "PRIORITY": PRIORITY_CRIT,
        "SYSLOG_IDENTIFIER": "enclave-isolation",
        "ENCLAVE_BREACH_KIND": breach["kind"],
        "ENCLAVE_BREACH_WHERE": breach["where"],
        "ENCLAVE_BREACH_DETAIL": breach["detail"],
        "ENCLAVE_BREACH_TARGET": breach.get("target") or "",
        "ENCLAVE_ACTIONS": "; ".join(actions),
        "ENCLAVE_HOST": host,
    }


def restore_fields(item, host):
    """Journal fields of one ruleset restore (isolation_monitor_restore.entry or refused_entry)."""
    if item["action"] == "rate_limited":
        message, priority, after = item["detail"], PRIORITY_CRIT, ""
    else:
        after = "yes" if item["live_equals_installed"] else "no"
        message = f"{item['command']}: rc {item['rc']}, live table equals the installed one: {after}"
        priority = PRIORITY_WARNING if item["rc"] == 0 and item["live_equals_installed"] else PRIORITY_CRIT
    return {
        "MESSAGE": f"enclave isolation ruleset restore: {message}",
        "MESSAGE_ID": MESSAGE_ID_RESTORE,
        "PRIORITY": priority,
        "SYSLOG_IDENTIFIER": "enclave-isolation",
        "ENCLAVE_RESTORE_ACTION": item["action"],
        "ENCLAVE_RESTORE_COMMAND": item["command"],
        "ENCLAVE_RESTORE_REPAIRED": "\n".join(item["repaired"]),
        "ENCLAVE_RESTORE_RC": "" if item.get("rc") is None else item["rc"],
        "ENCLAVE_RESTORE_NFT": item.get("nft", ""),
        "ENCLAVE_RESTORE_LIVE_EQUALS_INSTALLED": after,
        "ENCLAVE_RESTORE_REMAINING": "\n".join(item.get("remaining", [])),
        "ENCLAVE_RESTORE_SECONDS": item.get("seconds", ""),
        "ENCLAVE_HOST": host,
    }


def send_journal(fields, path=JOURNAL_SOCKET):
    """None when journald took the entry, else why not."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(journal_datagram(fields), path)
    except OSError as exc:
        return f"journal: {exc.strerror or exc}"
    return None


# --- audit -------------------------------------------------------------------------


def audit_message(text, seq=1, kind=AUDIT_TRUSTED_APP):
    """A netlink request carrying one user-space audit message (NUL-terminated text)."""
    payload = text.encode() + b"\x00"
    return struct.pack("=IHHII", 16 + len(payload), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + payload


def audit_ack_error(data):
    """The errno in the kernel's acknowledgement (0: accepted); ValueError when it is no acknowledgement."""
    if len(data) < 20:
        raise ValueError("short netlink reply")
    _length, kind, _flags, _seq, _pid = struct.unpack("=IHHII", data[:16])
    if kind != NLMSG_ERROR:
        raise ValueError(f"netlink reply of type {kind}, not an acknowledgement")
    return -struct.unpack("=i", data[16:20])[0]


def audit_text(breach):
    """``key=value`` pairs in the audit log's style; values quoted."""
    detail = breach["detail"].replace('"', "'")
    return f'op=enclave-isolation-breach kind={breach["kind"]} where="{breach["where"]}" detail="{detail}" res=failed'


def restore_audit_text(item):
    """The restore in the audit log's style: res=success only when the live table equals the installed one."""
    ok = item["action"] == "restored" and item["rc"] == 0 and item["live_equals_installed"]
    return (
        f'op=enclave-isolation-restore action={item["action"]} command="{item["command"]}" '
        f"rc={item.get('rc', '')} res={'success' if ok else 'failed'}"
    )


def send_audit(text):
    """None when the kernel's audit subsystem took the record, else why not (no auditd, no CAP_AUDIT_WRITE)."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT) as sock:
            sock.settimeout(1.0)
            sock.bind((0, 0))
            sock.send(audit_message(text))
            number = audit_ack_error(sock.recv(8192))
    except (OSError, ValueError) as exc:
        return f"audit: {getattr(exc, 'strerror', None) or exc}"
    return None if number == 0 else f"audit: the kernel refused the record ({os.strerror(number)})"


# --- metrics -----------------------------------------------------------------------


def metrics_text(ok, breached, breaches_by_kind, last_check, durations, probe_errors, restores=None):
    """Prometheus text exposition for node_exporter's textfile collector."""
    lines = [
        "# HELP enclave_isolation_ok 1 when the last check proved isolation and no breach is pending.",
        "# TYPE enclave_isolation_ok gauge",
        f"enclave_isolation_ok {1 if ok else 0}",
        "# HELP enclave_isolation_breached 1 while a breach waits for an operator's clear.",
        "# TYPE enclave_isolation_breached gauge",
        f"enclave_isolation_breached {1 if breached else 0}",
        "# HELP enclave_isolation_breaches_total Breaches detected since the monitor started, by kind.",
        "# TYPE enclave_isolation_breaches_total counter",
    ]
    lines += [
        f'enclave_isolation_breaches_total{{kind="{kind}"}} {count}' for kind, count in sorted(breaches_by_kind.items())
    ]
    lines += [
        "# HELP enclave_isolation_probe_errors_total Probes that could not give a verdict.",
        "# TYPE enclave_isolation_probe_errors_total counter",
        f"enclave_isolation_probe_errors_total {probe_errors}",
        "# HELP enclave_isolation_last_check_timestamp_seconds When each check last finished.",
        "# TYPE enclave_isolation_last_check_timestamp_seconds gauge",
    ]
    lines += [
        f'enclave_isolation_last_check_timestamp_seconds{{check="{name}"}} {stamp:.3f}'
        for name, stamp in sorted(last_check.items())
    ]
    lines += [
        "# HELP enclave_isolation_check_duration_seconds How long each check last took.",
        "# TYPE enclave_isolation_check_duration_seconds gauge",
    ]
    lines += [
        f'enclave_isolation_check_duration_seconds{{check="{name}"}} {seconds:.6f}'
        for name, seconds in sorted(durations.items())
    ]
    lines += [
        "# HELP enclave_isolation_ruleset_restores_total Reloads of the installed rules file after a breach, "
        "by outcome (restored, failed, rate_limited).",
        "# TYPE enclave_isolation_ruleset_restores_total counter",
    ]
    lines += [
        f'enclave_isolation_ruleset_restores_total{{outcome="{outcome}"}} {count}'
        for outcome, count in sorted((restores or {}).items())
    ]
    return "\n".join(lines) + "\n"


# --- syslog ------------------------------------------------------------------------


def syslog_line(message, hostname, severity=PRIORITY_CRIT, msgid="BREACH", now=None):
    """One RFC 5424 message from enclave-isolation (facility authpriv)."""
    now = now or datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pri = SYSLOG_FACILITY_AUTHPRIV * 8 + severity
    return f"<{pri}>1 {stamp} {hostname} enclave-isolation {os.getpid()} {msgid} - {message}"


def send_syslog(line, endpoint):
    """None when sent (UDP: handed to the kernel), else why not. TCP uses octet counting (RFC 6587)."""
    address, port, proto = endpoint["address"], int(endpoint.get("port", 514)), endpoint.get("proto", "udp")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    data = line.encode()
    try:
        if proto == "tcp":
            with socket.create_connection((address, port), timeout=2) as sock:
                sock.sendall(str(len(data)).encode() + b" " + data)
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, (address, port))
    except OSError as exc:
        return f"syslog {address}:{port}/{proto}: {exc.strerror or exc}"
    return None
