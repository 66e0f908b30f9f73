"""A port-forwarding relay for tests/integration/test_isolation_matrix.py, run on the enclave.

    matrix_relay.py LISTEN=ADDRESS,PORT [LISTEN=ADDRESS,PORT ...]

Listens on loopback (127.0.0.1 and ::1) at each LISTEN port and, for every
connection accepted there, dials ADDRESS:PORT once with a 0.5 s timeout, the way
sshd dials the destination of an ``ssh -L`` forward as the logged-in user. No
data is carried: the question is only whether the outward connection is made.
Prints ``ready`` once listening, then ``LISTEN OUTCOME`` per accepted
connection, where OUTCOME is ``connected``, ``timeout`` or the errno name.
Runs until killed. Standard library only, so it runs under any uid.
"""

from __future__ import annotations

import errno
import selectors
import socket
import sys


def listener(family, address, port):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(8)
    return sock


def dial(address, port):
    try:
        socket.create_connection((address, port), timeout=0.5).close()
        return "connected"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def main():
    selector = selectors.DefaultSelector()
    for spec in sys.argv[1:]:
        listen, _sep, destination = spec.partition("=")
        address, _sep, port = destination.rpartition(",")
        for family, loopback in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = listener(family, loopback, int(listen))
            selector.register(sock, selectors.EVENT_READ, (int(listen), address, int(port)))
    print("ready", flush=True)
    while True:
        for key, _events in selector.select():
            conn, _peer = key.fileobj.accept()
            listen, address, port = key.data
            outcome = dial(address, port)
            conn.close()
            print(f"{listen} {outcome}", flush=True)


if __name__ == "__main__":
    main()
