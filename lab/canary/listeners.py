"""Listeners for the hosts that probes aim at: the lab's canary container and
the integration tests' peer namespaces.

    listeners.py LOG --tcp 8080,8081 --udp 7007 --dns 53

Accepts TCP on every address (v4 and v6), echoes UDP datagrams, and answers DNS
queries for A and AAAA with fixed documentation addresses. Each thing that
arrives is appended to LOG, one line each (``tcp ADDRESS PORT``, ``udp PORT``,
``dns NAME TYPE``), so a test can prove what reached this side and what did not.
For an incident report the same arrival is also appended to ``LOG.jsonl``, one
JSON object a line: the time it arrived (UTC, ISO 8601), the protocol, the
address and port it arrived at, and the sender's address and port (``sender``,
``sender_port``), plus the question for DNS. LOG keeps its short lines, which
the tests count.
The DNS answer is built here by hand, independently of the module's own code.
Prints ``ready`` once every socket listens; runs until killed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import selectors
import signal
import socket
import struct
import sys

ANSWERS = {1: socket.inet_pton(socket.AF_INET, "203.0.113.53"), 28: socket.inet_pton(socket.AF_INET6, "2001:db8:2::53")}


def dual_stack(kind, port):
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        sock.listen(16)
    return sock


def dns_answer(query):
    """``(reply, "NAME TYPE")`` for a one-question query; the answer points back at the question."""
    ident, _flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return None, "bad"
    offset, labels = 12, []
    while query[offset]:
        labels.append(query[offset + 1 : offset + 1 + query[offset]].decode("ascii", "replace"))
        offset += 1 + query[offset]
    question = query[12 : offset + 5]
    qtype = struct.unpack("!H", query[offset + 1 : offset + 3])[0]
    rdata = ANSWERS.get(qtype)
    header = struct.pack("!HHHHHH", ident, 0x8180, 1, 1 if rdata else 0, 0, 0)
    answer = struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata if rdata else b""
    return header + question + answer, f"{'.'.join(labels)} {qtype}"


def plain(address):
    """An IPv4 peer of a dual-stack socket without its ``::ffff:`` prefix."""
    return address.removeprefix("::ffff:") if address else None


def arrival(kind, local, peer, **extra):
    """One line of ``LOG.jsonl``: when, what, where it arrived, and who sent it."""
    return {
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "proto": kind,
        "address": plain(local[0]),
        "port": local[1],
        "sender": plain(peer[0]),
        "sender_port": peer[1],
        **extra,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--tcp", default="")
    parser.add_argument("--udp", default="")
    parser.add_argument("--dns", type=int)
    args = parser.parse_args()
    # As a container's first process nothing ends us on SIGTERM unless we say so.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    for port in filter(None, args.tcp.split(",")):
        selector.register(dual_stack(socket.SOCK_STREAM, int(port)), selectors.EVENT_READ, "tcp")
    for port in filter(None, args.udp.split(",")):
        selector.register(dual_stack(socket.SOCK_DGRAM, int(port)), selectors.EVENT_READ, "udp")
    if args.dns:
        selector.register(dual_stack(socket.SOCK_DGRAM, args.dns), selectors.EVENT_READ, "dns")
    # The log exists from the start: an empty log means nothing arrived.
    open(args.log, "a", encoding="utf-8").close()
    open(f"{args.log}.jsonl", "a", encoding="utf-8").close()
    print("ready", flush=True)
    while True:
        for key, _events in selector.select():
            sock, kind = key.fileobj, key.data
            if kind == "tcp":
                conn, peer = sock.accept()
                local = conn.getsockname()
                line = f"tcp {plain(local[0])} {local[1]}"
                detail = arrival(kind, local, peer)
                conn.close()
            else:
                data, peer = sock.recvfrom(65535)
                # The port only: a datagram socket bound to :: cannot tell which address it came in on.
                local = (None, sock.getsockname()[1])
                if kind == "udp":
                    sock.sendto(data, peer)
                    line = f"udp {local[1]}"
                    detail = arrival(kind, local, peer, bytes=len(data))
                else:
                    reply, what = dns_answer(data)
                    if reply:
                        sock.sendto(reply, peer)
                    line = f"dns {what}"
                    detail = arrival(kind, local, peer, question=what)
            with open(args.log, "a", encoding="utf-8") as log:
                log.write(line + "\n")
            with open(f"{args.log}.jsonl", "a", encoding="utf-8") as log:
                log.write(json.dumps(detail) + "\n")


if __name__ == "__main__":
    main()
