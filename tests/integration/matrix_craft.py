"""The attacker's probes of tests/integration/test_isolation_matrix.py, run on the enclave as root.

    matrix_craft.py run  < {"flows": [SPEC, ...], "witness_table": NAME}
    matrix_craft.py send SPEC          (one raw probe, in this process)

``run`` probes each flow in turn and prints one JSON line per flow: its verdict
and how much every named counter of ``inet enclave`` and the flow's witness
counter (in the receiver's namespace) moved while it ran. Probes that need
another identity are started from here: a raw socket as the service uid with
CAP_NET_RAW (``send`` under setpriv), the setuid-root helper run as the service
uid, a socket created as root that then switches to the service uid (fork).

A SPEC holds name, kind (raw, raw-service, handover, setuid, bind, tunnel,
inbound: a raw packet sent from another namespace, ``netns``),
family, proto (tcp|udp), dst, port, sport (the marker the witness counts),
receiver (a namespace) and witness (its counter), and per kind: src (the raw
packet's source, forged or not), headers (IPv6 extension headers: hbh, dst,
frag), fragments (2: split the segment), options (IPv4 options), uid and gid,
helper, device and bind_src, tunnel ({type: tun or a kernel type, local,
remote, address}).
Verdicts: sent, connected, timeout, rejected, unreachable, unsupported (no
such tunnel driver in this kernel) or an errno name.
Standard library only: ``send`` runs under the service uid's system python.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

CONNECT_TIMEOUT = 0.5
SETTLE = 0.05  # a packet that left has reached the witness by then (veth delivers at once)
PROTO = {"tcp": 6, "udp": 17}
EXT = {"hbh": 0, "dst": 60, "frag": 44}
TUNNEL_DEVICE = "mxt0"
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
HERE = os.path.dirname(os.path.abspath(__file__))


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def segment(spec, src, dst):
    """The TCP SYN or UDP datagram of a raw probe, with its checksum over the pseudo-header."""
    proto = PROTO[spec["proto"]]
    if proto == 6:
        body = struct.pack("!HHIIBBHHH", spec["sport"], spec["port"], 0x4D58, 0, 5 << 4, 0x02, 64240, 0, 0)
    else:
        body = struct.pack("!HHHH", spec["sport"], spec["port"], 8 + 6, 0) + b"matrix"
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(body))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(body), proto)
    offset = 16 if proto == 6 else 6
    csum = checksum(pseudo + body) or 0xFFFF
    return body[:offset] + struct.pack("!H", csum) + body[offset + 2 :]


def packets_v4(spec, src, dst, data):
    options = b"\x01\x01\x01\x00" if spec.get("options") else b""  # NOP NOP NOP EOL
    pieces = [(0, data[:8], True), (1, data[8:], False)] if spec.get("fragments") else [(0, data, False)]
    result = []
    for offset, piece, more in pieces:
        ihl = 5 + len(options) // 4
        flags = (0x2000 if more else 0) | offset
        proto = PROTO[spec["proto"]]
        header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 0, 0x4D58, flags, 64, proto, 0, src.packed, dst.packed)
        result.append(header + options + piece)
    return result


def packets_v6(spec, src, dst, data):
    headers = list(spec.get("headers", []))
    if spec.get("fragments") and "frag" not in headers:
        headers.append("frag")
    chain = [*headers, None]
    unfragmentable, fragment_at = b"", None
    for index, kind in enumerate(headers):
        following = EXT[chain[index + 1]] if chain[index + 1] else PROTO[spec["proto"]]
        if kind == "frag":
            fragment_at = (len(unfragmentable), following)
            continue
        # PadN over the six option bytes: an eight-byte header that asks nothing of the receiver.
        unfragmentable += struct.pack("!BBBB4x", following, 0, 1, 4)
    first = EXT[headers[0]] if headers else PROTO[spec["proto"]]
    if fragment_at is None:
        pieces = [(None, data)]
    elif spec.get("fragments"):
        pieces = [((0, True), data[:16]), ((2, False), data[16:])]
    else:
        pieces = [((0, False), data)]  # an atomic fragment
    result = []
    for frag, piece in pieces:
        body = unfragmentable
        if frag is not None:
            where, following = fragment_at
            header = struct.pack("!BBHI", following, 0, (frag[0] << 3) | int(frag[1]), 0x4D58)
            body = unfragmentable[:where] + header + unfragmentable[where:]
        payload = body + piece
        result.append(struct.pack("!IHBB16s16s", 0x60000000, len(payload), first, 64, src.packed, dst.packed) + payload)
    return result


def send_raw(spec):
    """Send the probe's packet(s) from a raw socket with the spec's source; the verdict."""
    src, dst = ipaddress.ip_address(spec["src"]), ipaddress.ip_address(spec["dst"])
    data = segment(spec, src, dst)
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    build = packets_v4 if dst.version == 4 else packets_v6
    try:
        sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    with sock:
        try:
            for packet in build(spec, src, dst, data):
                sock.sendto(packet, (str(dst), 0))
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))
    return "sent"


def use(sock, spec):
    """Connect (tcp) or send one datagram (udp) on a bound socket; the verdict."""
    address = (spec["dst"], spec["port"])
    try:
        if spec["proto"] == "udp":
            sock.sendto(b"matrix", address)
            return "sent"
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(address)
        return "connected"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "rejected"
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "unreachable"
        return errno.errorcode.get(exc.errno, str(exc.errno))


def new_socket(spec, bind_src=""):
    family = socket.AF_INET6 if ":" in spec["dst"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM if spec["proto"] == "tcp" else socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind_src, spec["sport"]))
    return sock


def handover(spec):
    """A socket created as root, then the process becomes the service uid and uses it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sock = new_socket(spec)
            os.setgroups([])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
            verdict = use(sock, spec) if os.getuid() == spec["uid"] else "still root"
        except BaseException as exc:  # the child reports whatever went wrong
            verdict = f"error {exc}"
        os.write(write, verdict.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        verdict = pipe.read()
    os.waitpid(pid, 0)
    return verdict


def as_identity(spec, argv, caps=False):
    prefix = ["setpriv", f"--reuid={spec['uid']}", f"--regid={spec['gid']}", "--clear-groups"]
    if caps:
        prefix += ["--inh-caps=+net_raw", "--ambient-caps=+net_raw"]
    result = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False)
    lines = result.stdout.split()
    return lines[0] if lines else f"error {result.stderr.strip()}"


def bound_to_device(spec):
    sock = new_socket(spec, spec.get("bind_src", ""))
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec["device"].encode())
        return use(sock, spec)


def ip(*argv):
    subprocess.run(["ip", *argv], check=True, capture_output=True)


def kernel_tunnel(spec, conf):
    """A tunnel device of the kernel (ipip, gre, ip6tnl, ip6gre); None when this kernel has no such driver."""
    argv = ["ip", "link", "add", TUNNEL_DEVICE, "type", *conf["type"].split()]
    argv += ["local", conf["local"], "remote", conf["remote"]]
    if subprocess.run(argv, capture_output=True, check=False).returncode != 0:
        return None
    route(spec, conf)
    with new_socket(spec) as sock:
        return use(sock, spec)


def route(spec, conf):
    six = ["-6"] if ":" in spec["dst"] else []
    ip("link", "set", TUNNEL_DEVICE, "up")
    if conf.get("address"):
        ip("addr", "add", conf["address"], "dev", TUNNEL_DEVICE, *(["nodad"] if six else []))
    ip(*six, "route", "add", spec["dst"] + ("/128" if six else "/32"), "dev", TUNNEL_DEVICE)


def tun_tunnel(spec, conf):
    """A TUN device with this process as the tunnel's far end, as a VPN client would be.

    Every packet the kernel routes into the device is read here and sent on as
    the payload of one UDP datagram to the tunnel's remote end, port 4789, from
    the flow's marker port. The verdict is that datagram's (EPERM when the
    policy drops it), else timeout when nothing entered the tunnel.
    """
    tun = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", TUNNEL_DEVICE.encode(), IFF_TUN | IFF_NO_PI))
        route(spec, conf)
        family = socket.AF_INET6 if ":" in conf["remote"] else socket.AF_INET
        with new_socket(spec) as inner, socket.socket(family, socket.SOCK_DGRAM) as outer:
            outer.bind((conf["local"], spec["sport"]))
            inner.setblocking(False)
            inner.connect_ex((spec["dst"], spec["port"]))
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([tun], [], [], left)[0]:
                    break
                try:
                    outer.sendto(os.read(tun, 65535), (conf["remote"], 4789))
                except OSError as exc:
                    return errno.errorcode.get(exc.errno, str(exc.errno))
                return "sent"
            return "timeout"
    finally:
        os.close(tun)


def tunnel(spec):
    """Make the attacker's tunnel, route the allowed endpoint through it, probe, remove it."""
    conf = spec["tunnel"]
    try:
        if conf["type"] == "tun":
            return tun_tunnel(spec, conf)
        return kernel_tunnel(spec, conf) or "unsupported"
    finally:
        subprocess.run(["ip", "link", "del", TUNNEL_DEVICE], check=False, capture_output=True)


def probe(spec):
    kind = spec["kind"]
    if kind == "raw":
        return send_raw(spec)
    if kind == "raw-service":
        script = os.path.join(HERE, "matrix_craft.py")
        return as_identity(spec, [sys.executable, script, "send", json.dumps(spec)], caps=True)
    if kind == "handover":
        return handover(spec)
    if kind == "setuid":
        return as_identity(spec, [spec["helper"], spec["proto"], spec["dst"], str(spec["port"]), str(spec["sport"])])
    if kind == "bind":
        return bound_to_device(spec)
    if kind == "tunnel":
        return tunnel(spec)
    if kind == "inbound":
        script = os.path.join(HERE, "matrix_craft.py")
        argv = ["ip", "netns", "exec", spec["netns"], sys.executable, script, "send", json.dumps(spec)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        return result.stdout.strip() or f"error {result.stderr.strip()}"
    raise ValueError(f"unknown kind {kind}")


def counters(netns, table):
    argv = ["nft", "-j", "list", "counters", "table", "inet", table]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    data = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    return {item["counter"]["name"]: item["counter"]["packets"] for item in data["nftables"] if "counter" in item}


def run(config):
    table = config["witness_table"]
    for spec in config["flows"]:
        before = counters(None, "enclave"), counters(spec["receiver"], table)
        verdict = probe(spec)
        if verdict in ("sent", "connected", "timeout", "rejected"):
            time.sleep(SETTLE)
        after = counters(None, "enclave"), counters(spec["receiver"], table)
        moved = {name: after[0][name] - before[0].get(name, 0) for name in after[0]}
        seen = after[1][spec["witness"]] - before[1][spec["witness"]]
        print(json.dumps({"name": spec["name"], "verdict": verdict, "counters": moved, "seen": seen}), flush=True)


def main():
    if sys.argv[1:2] == ["send"]:
        print(send_raw(json.loads(sys.argv[2])))
    else:
        run(json.load(sys.stdin))


if __name__ == "__main__":
    main()
