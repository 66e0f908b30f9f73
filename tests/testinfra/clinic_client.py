"""Calls to the inference API from the lab's clinical client.

The clinic container (ENCLAVE_CLINIC_CONTAINER names another one) stands for a
clinical application server; calls run inside it with only Python's standard
library, so they leave from the clinical zone like a real application's would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from enclave_host import REPO

CLINIC = os.environ.get("ENCLAVE_CLINIC_CONTAINER", "enclave-lab-clinic")
LAB_STATE = Path(os.environ.get("ENCLAVE_LAB_STATE", REPO / ".lab"))
KEY_DIR = Path(os.environ.get("ENCLAVE_INGRESS_KEY_DIR", LAB_STATE / "ingress" / "clients"))

# Runs inside the clinic container with only the standard library: every call
# in the JSON list on stdin, one JSON result per call on stdout.
CLIENT = r"""
import http.client, json, socket, ssl, sys

def context(version=None, seclevel0=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The certificate's checks are the role's (validate.yml); here the
    # protocol and the answers are under test.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if seclevel0:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    if version:
        ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
    return ctx

def call(c, address, port):
    if c.get("plain"):
        with socket.create_connection((address, port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                return {"received": s.recv(4096).decode("latin-1")}
            except OSError as exc:
                return {"received": "", "error": str(exc)}
    if c.get("handshake"):
        try:
            with context(c["handshake"], True).wrap_socket(socket.create_connection((address, port), timeout=5)) as t:
                return {"version": t.version()}
        except (ssl.SSLError, OSError) as exc:
            return {"version": None, "error": str(exc)}
    conn = http.client.HTTPSConnection(address, port, context=context(), timeout=60)
    results = []
    for _ in range(c.get("repeat", 1)):
        headers = {"Authorization": "Bearer " + c["key"]} if c.get("key") else {}
        body = c.get("body")
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(c.get("method", "GET"), c["path"], body=body, headers=headers)
        r = conn.getresponse()
        results.append({"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()},
                        "body": r.read().decode("utf-8", "replace")})
    conn.close()
    return results[0] if c.get("repeat", 1) == 1 else {"statuses": [x["status"] for x in results]}

address, port, calls = json.load(sys.stdin)
print(json.dumps([call(c, address, port) for c in calls]))
"""


def podman_env():
    conf = LAB_STATE / "containers.conf"
    return {**os.environ, **({"CONTAINERS_CONF": str(conf)} if conf.exists() else {})}


def clinic(endpoint, *calls):
    """Run ``calls`` from the clinical client; one result per call."""
    completed = subprocess.run(
        ["podman", "exec", "-i", CLINIC, "python3", "-c", CLIENT],
        input=json.dumps([*endpoint, list(calls)]),
        capture_output=True,
        text=True,
        timeout=300,
        env=podman_env(),
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


def clinic_endpoint(enclave_vars):
    """The ingress's address and port from the inventory; skips where there is no clinic to call from."""
    if (
        shutil.which("podman") is None
        or subprocess.run(["podman", "container", "exists", CLINIC], check=False, env=podman_env()).returncode
    ):
        pytest.skip(f"no clinical client container {CLINIC} on this machine")
    return enclave_vars["ingress_listen_address"], int(enclave_vars.get("ingress_port", 443))
