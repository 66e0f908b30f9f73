"""The firewall role on a real systemd host: converge, traffic, boot, lock-out refusal, rollback.

The role's second run and check mode are proven where the whole site is:
molecule/default's idempotence step and tests/lab/test_check_mode.py.

Topology (the lab network, documentation addresses only)::

    controller (this machine)  198.51.100.1    the admin zone of the lab inventory
    enclave-lab-mirror         198.51.100.10   the offline mirror (allowed egress)
    enclave-test-firewall      198.51.100.31   the host under test (its own container)
    enclave-test-firewall-peer 198.51.100.32   a listener on tcp 8080, 8081, 53 and udp 53:
                                               8081 is allowlisted for the test, the rest is not

The host is converged with playbooks/mirrors.yml (nftables comes from the
mirror) and playbooks/firewall.yml, with the lab inventory's group_vars. Every
"blocked" is paired with an allowed flow that connects in the same test, and
proven by the drop counter moving and the listener seeing nothing. The tests
run in file order on one host (converge, traffic, boot, then the refusal
and the rollback) and the whole file takes about
three minutes. Needs root and podman, like the rest of the suite.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml
from lab_host import LAB_NETWORK, TARGET_IMAGE, lab_target, podman, ssh_command, wait_for_ssh, wait_until

pytestmark = pytest.mark.lab

NAME = "enclave-test-firewall"
ADDRESS = "198.51.100.31"
PEER = "enclave-test-firewall-peer"
PEER_ADDRESS = "198.51.100.32"
MIRROR = "198.51.100.10"
LABEL = "io.enclave.test=firewall"
ALLOWED_PORT, BLOCKED_PORT = 8081, 8080
CAPABILITIES = "NET_ADMIN,NET_RAW,SYS_ADMIN,AUDIT_WRITE"  # as lab/up gives the lab host
# A fixed MAC address: a restarted container otherwise comes back with a new
# one, and this machine keeps sending to the old one until its neighbour
# entry times out (about 30 s).
MAC = "02:00:c6:33:64:1f"

# Egress the test adds to the lab inventory: one port of the peer, so the
# peer's other port is the blocked control next to an allowed one.
TEST_VARS = {
    "firewall_egress_extra": [
        {
            "destination": PEER_ADDRESS,
            "proto": "tcp",
            "ports": [ALLOWED_PORT],
            "owner": "integration-test",
            "reason": "allowed control target of the egress tests",
        }
    ],
    # The lab's service account and its group come from podman_rootless, which
    # this suite does not run; nobody stands in as the user denied all egress.
    # Its group, nogroup, is other accounts' too (_apt), which the module
    # refuses to deny; the group rule is proven by the isolation matrix.
    "firewall_deny_egress_users": ["nobody"],
    "firewall_deny_egress_groups": [],
}
# An admin zone that does not hold the controller (198.51.100.1).
FOREIGN_ADMIN = {"enclave_zones": {"admin": ["192.0.2.0/24"], "clinical": ["203.0.113.0/24"], "cluster": []}}

# Prints one line per accepted TCP connection or UDP datagram: "PROTO PORT PEER".
LISTENER = r"""
import selectors, socket
sel = selectors.DefaultSelector()
for port in (8080, 8081, 53):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); sel.register(s, selectors.EVENT_READ, ("tcp", port))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", 53)); sel.register(u, selectors.EVENT_READ, ("udp", 53))
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        proto, port = key.data
        if proto == "tcp":
            conn, peer = key.fileobj.accept(); conn.close()
        else:
            _, peer = key.fileobj.recvfrom(2048)
        print(proto, port, peer[0], flush=True)
"""

# Run in the host under test: "connected", "timeout", "EPERM", "refused" or "sent".
CONNECT = r"""
import errno, socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"probe", (host, port)); print("sent")
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, exc.errno))
    sys.exit()
try:
    socket.create_connection((host, port), timeout=2).close(); print("connected")
except TimeoutError:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc.errno))
"""


def describe(result):
    return f"$ {result.command}\nrc={result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


def recap(result):
    """{'ok': n, 'changed': n, 'failed': n, ...} of the single host's PLAY RECAP line."""
    match = re.search(rf"^{NAME}\s*:\s*(.+)$", result.stdout, flags=re.MULTILINE)
    assert match, describe(result)
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def sh(*command, check=True):
    result = podman("exec", NAME, *command, check=False)
    if check:
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result


def table_text():
    """Stateless listing of our table ('' when it is absent)."""
    result = sh("nft", "-s", "list", "table", "inet", "enclave", check=False)
    return result.stdout if result.returncode == 0 else ""


def counter(name):
    data = json.loads(sh("nft", "-j", "list", "counter", "inet", "enclave", name).stdout)
    return next(obj["counter"]["packets"] for obj in data["nftables"] if "counter" in obj)


def connect(proto, host, port):
    return sh("python3", "-c", CONNECT, proto, host, str(port)).stdout.strip()


def ssh_works(seconds=2):
    command = ssh_command(ADDRESS, connect_timeout=seconds)
    return subprocess.run(command, capture_output=True, check=False, timeout=seconds + 10).returncode == 0


def seen(proto, port):
    """Lines the peer logged for ``proto``/``port`` from the host under test."""
    logs = podman("logs", PEER).stdout.splitlines()
    return sum(1 for line in logs if line.split() == [proto, str(port), ADDRESS])


def reboot(host):
    """Restart the container: a real boot of its systemd, in a fresh network namespace."""
    podman("restart", "--time", "5", NAME)
    # SSH masters of the old boot point at dead connections.
    for socket_file in host.target.control_path_dir.iterdir():
        socket_file.unlink()
    wait_until(
        "the host did not finish booting",
        lambda: sh("systemctl", "is-system-running", "--wait", check=False).stdout.strip() in ("running", "degraded"),
        60,
        interval=1,
    )
    wait_for_ssh(NAME, ADDRESS)


class Host:
    def __init__(self, target, vars_file):
        self.target = target
        self.vars_file = vars_file

    def play(self, *extra_args, playbook="firewall.yml", timeout=240):
        return self.target.run_playbook(playbook, "-e", f"@{self.vars_file}", *extra_args, timeout=timeout)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    vars_file = tmp_path_factory.mktemp("firewall-vars") / "test.yml"
    vars_file.write_text("---\n" + yaml.safe_dump(TEST_VARS, sort_keys=False))
    with lab_target(
        tmp_path_factory, NAME, ADDRESS, LABEL, run_args=("--cap-add", CAPABILITIES, "--mac-address", MAC)
    ) as target:
        podman("rm", "--force", "--ignore", PEER)
        podman(
            "run",
            "--detach",
            "--name",
            PEER,
            "--label",
            LABEL,
            "--network",
            LAB_NETWORK,
            "--ip",
            PEER_ADDRESS,
            "--entrypoint",
            "python3",
            TARGET_IMAGE,
            "-u",
            "-c",
            LISTENER,
        )
        try:
            wait_until(
                "the peer's listener did not start", lambda: "ready" in podman("logs", PEER).stdout, 30, interval=1
            )
            fixture = Host(target, vars_file)
            # nftables comes from the mirror; the mirror may be restarting under
            # another suite, so its play gets a few tries.
            for attempt in range(4):
                result = fixture.play(playbook="mirrors.yml")
                if result.returncode == 0:
                    break
                time.sleep(10 * (attempt + 1))
            assert result.returncode == 0, describe(result)
            yield fixture
        finally:
            podman("rm", "--force", "--time", "2", "--ignore", PEER, check=False)


def test_converge_closes_every_direction(host):
    result = host.play()
    assert result.returncode == 0, describe(result)
    assert recap(result)["changed"] > 0
    chains = {
        obj["chain"]["name"]: obj["chain"]
        for obj in json.loads(sh("nft", "-j", "list", "table", "inet", "enclave").stdout)["nftables"]
        if "chain" in obj
    }
    for hook in ("input", "output", "forward"):
        assert chains[hook]["hook"] == hook
        assert chains[hook]["policy"] == "drop"
    # The rollback timer was stopped by the confirmation.
    assert sh("systemctl", "is-active", "enclave-firewall-rollback.timer", check=False).stdout.strip() != "active"


def test_controller_keeps_ssh(host):
    assert ssh_works()


def test_mirror_reachable_everything_else_dropped(host):
    # apt through the mirror works (retried while the mirror may be restarting).
    wait_until(
        "apt-get update through the mirror did not succeed",
        lambda: sh("apt-get", "update", check=False).returncode == 0,
        90,
        interval=1,
    )
    # Same listener, two ports: the allowlisted one connects, the other is dropped.
    drops = counter("drop_output")
    assert connect("tcp", PEER_ADDRESS, ALLOWED_PORT) == "connected"
    assert seen("tcp", ALLOWED_PORT) >= 1
    assert connect("tcp", PEER_ADDRESS, BLOCKED_PORT) in ("timeout", "EPERM")
    assert counter("drop_output") > drops
    assert seen("tcp", BLOCKED_PORT) == 0


def test_no_dns_egress_by_default(host):
    drops = counter("drop_output")
    assert connect("udp", PEER_ADDRESS, 53) in ("sent", "EPERM")
    assert connect("tcp", PEER_ADDRESS, 53) in ("timeout", "EPERM")
    assert counter("drop_output") >= drops + 2
    time.sleep(0.5)
    assert seen("udp", 53) == 0
    assert seen("tcp", 53) == 0
    assert "53" not in sh("nft", "list", "set", "inet", "enclave", "egress_v4").stdout


def test_service_restart_restores_the_table(host):
    converged = table_text()
    sh("systemctl", "restart", "nftables")
    assert table_text() == converged
    sh("nft", "delete", "table", "inet", "enclave")
    assert table_text() == ""
    sh("systemctl", "restart", "nftables")
    assert table_text() == converged
    # Stopping the service does not open the host.
    sh("systemctl", "stop", "nftables")
    assert table_text() == converged
    sh("systemctl", "start", "nftables")


def test_boot_loads_the_table_before_the_network(host):
    converged = table_text()
    reboot(host)
    assert sh("systemctl", "is-active", "nftables").stdout.strip() == "active"
    assert table_text() == converged

    def entered(unit):
        value = sh("systemctl", "show", unit, "-p", "ActiveEnterTimestampMonotonic").stdout
        return int(value.strip().split("=")[1])

    assert 0 < entered("nftables.service") <= entered("network-pre.target")
    assert ssh_works()


def test_broken_ruleset_at_boot_leaves_the_host_closed(host):
    converged = table_text()
    good = sh("cat", "/etc/nftables.d/enclave.nft").stdout
    sh("sh", "-c", "echo 'this is not nft' >> /etc/nftables.d/enclave.nft")
    try:
        reboot(host)
        assert sh("systemctl", "is-failed", "nftables", check=False).stdout.strip() == "failed"
        emergency = table_text()
        assert 'log prefix "enclave-emergency drop output: "' in emergency
        for hook in ("input", "output", "forward"):
            assert f"type filter hook {hook} priority filter; policy drop;" in emergency
        # Closed: nothing out, not even the mirror; the admin zone keeps SSH.
        drops = counter("drop_output")
        assert connect("tcp", MIRROR, 80) in ("timeout", "EPERM")
        assert connect("tcp", PEER_ADDRESS, ALLOWED_PORT) in ("timeout", "EPERM")
        assert counter("drop_output") >= drops + 2
        assert ssh_works()
    finally:
        podman("exec", "-i", NAME, "sh", "-c", "cat > /etc/nftables.d/enclave.nft", input=good)
    sh("systemctl", "restart", "nftables")
    assert table_text() == converged


def test_policy_that_locks_out_the_controller_is_refused(host, tmp_path):
    before = table_text()
    foreign = tmp_path / "foreign.yml"
    foreign.write_text(json.dumps(FOREIGN_ADMIN))
    result = host.play("-e", f"@{foreign}")
    assert result.returncode != 0, describe(result)
    output = " ".join((result.stdout + result.stderr).split())
    assert "this policy would lock out the controller: a new SSH connection from 198.51.100.1 to tcp port 22" in output
    assert "Add 198.51.100.1/32 or a network holding it to zones.admin" in output
    assert "arm the timer that restores the previous table" not in result.stdout
    assert table_text() == before
    assert sh("systemctl", "is-active", "enclave-firewall-rollback.timer", check=False).stdout.strip() != "active"
    assert ssh_works()


def test_unconfirmed_change_is_rolled_back(host, tmp_path):
    before = table_text()
    persisted = sh("cat", "/etc/nftables.d/enclave.nft").stdout
    override = tmp_path / "lockout.yml"
    # 20 s: the play waits 10 s to log in again, which leaves the timer
    # about 8 s after the play has failed.
    override.write_text(
        json.dumps({**FOREIGN_ADMIN, "firewall_protect_controller": False, "firewall_confirm_timeout": 20})
    )
    result = host.play("-e", f"@{override}")
    assert result.returncode != 0, describe(result)
    assert "the new firewall policy was applied but could not be confirmed" in " ".join(result.stdout.split())
    # Until the timer fires, the new table is live and keeps the controller out.
    assert sh("systemctl", "is-active", "enclave-firewall-rollback.timer", check=False).stdout.strip() == "active"
    assert "192.0.2.0/24" in table_text()
    drops = counter("drop_input")
    assert not ssh_works(seconds=1)
    assert counter("drop_input") > drops
    wait_until("the previous table was not restored", lambda: table_text() == before, 40, interval=1)
    assert ssh_works()
    assert sh("cat", "/etc/nftables.d/enclave.nft").stdout == persisted
    journal = sh("journalctl", "-t", "enclave-firewall", "--no-pager", "-q").stdout
    assert "rolled back" in journal
    # The restored host converges without a change.
    again = host.play()
    assert again.returncode == 0, describe(again)
    assert recap(again)["changed"] == 0, describe(again)
