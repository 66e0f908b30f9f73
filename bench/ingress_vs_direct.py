"""Chat completions through the ingress vs. straight to the same vLLM process.

Runs on the enclave host, as root (the socket's folder is group-only), with
the standard library only, so it can be fed to the host as it is:

    podman exec -i -e BENCH_CLIENT_KEY="$(cat .lab/ingress/clients/clinic-app.key)" \\
        -e BENCH_VLLM_KEY="$VLLM_KEY" enclave-lab-host python3 - < bench/ingress_vs_direct.py

The two paths, measured side by side and alternating in one run:

- ingress: HTTPS to the clinical address with a client application's key
  (TLS, njs hashing the key, the allowlist, the rate limit, the proxy to the
  Unix socket);
- direct: HTTP over vLLM's own Unix socket with vLLM's key: no TCP and no TLS
  at all, which is cheaper than a loopback TCP listener, so the ratio it gives
  is the ingress's whole cost or more. vLLM serves on the socket only (its
  container has no network), so a loopback listener would need a bridge of its
  own, whose cost would hide part of the ingress's.

Both keep one connection per worker alive. First GET /v1/models in pairs (no
generation: the difference is the ingress's own cost). Latency: pairs of sequential
requests (ingress then direct, then the other order), p50 and p95. Throughput:
blocks of CONCURRENCY workers for BLOCK seconds, alternating paths. The
ingress client's rate limit must allow the throughput phase; a 429 is counted
and reported. Goals (issue 5): p50 ratio <= 1.10, throughput ratio >= 0.90.
The exit status is 1 when a goal is missed, 2 when a request failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import statistics
import sys
import threading
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Path:
    """One way to vLLM: a connection factory and the key it presents."""

    def __init__(self, name, connect, key):
        self.name, self.connect, self.key = name, connect, key

    def session(self):
        return Session(self)


class Session:
    def __init__(self, path):
        self.path, self.connection = path, path.connect()

    def get(self, route):
        self.connection.request("GET", route, headers={"Authorization": f"Bearer {self.path.key}"})
        response = self.connection.getresponse()
        return response.status, response.read()

    def post(self, route, payload):
        body = json.dumps(payload)
        headers = {"Authorization": f"Bearer {self.path.key}", "Content-Type": "application/json"}
        try:
            self.connection.request("POST", route, body=body, headers=headers)
            response = self.connection.getresponse()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = self.path.connect()
            self.connection.request("POST", route, body=body, headers=headers)
            response = self.connection.getresponse()
        return response.status, response.read()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed(session, payload):
    """Seconds, HTTP status and body of one completion; status 0 when the connection failed."""
    start = time.perf_counter()
    try:
        status, body = session.post("/v1/chat/completions", payload)
    except (OSError, http.client.HTTPException) as exc:
        status, body = 0, str(exc).encode()
    return time.perf_counter() - start, status, body


def latency_phase(paths, payload, pairs):
    sessions = {p.name: p.session() for p in paths}
    seconds = {p.name: [] for p in paths}
    failures = []
    for index in range(pairs):
        order = paths if index % 2 == 0 else list(reversed(paths))
        for path in order:
            elapsed, status, body = timed(sessions[path.name], payload)
            if status != 200:
                failures.append(f"{path.name}: HTTP {status} {body[:200]!r}")
            seconds[path.name].append(elapsed)
    return seconds, failures


def overhead_phase(paths, pairs):
    """p50 seconds per path of GET /v1/models: no generation, so the difference is the path's own cost."""
    sessions = {p.name: p.session() for p in paths}
    seconds = {p.name: [] for p in paths}
    for index in range(pairs):
        for path in paths if index % 2 == 0 else list(reversed(paths)):
            start = time.perf_counter()
            status, _body = sessions[path.name].get("/v1/models")
            if status == 200:
                seconds[path.name].append(time.perf_counter() - start)
    return {name: statistics.median(values) if values else float("nan") for name, values in seconds.items()}


def throughput_block(path, payload, concurrency, duration):
    done, statuses, lock = [0], {}, threading.Lock()
    deadline = time.perf_counter() + duration

    def worker():
        session = path.session()
        while time.perf_counter() < deadline:
            _seconds, status, _body = timed(session, payload)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                done[0] += status == 200

    threads = [threading.Thread(target=worker) for _thread in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.perf_counter() - start), statuses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--ingress", default="203.0.113.200:443", help="the ingress's address:port")
    parser.add_argument("--socket", default="/run/enclave-llm/vllm.sock", help="vLLM's Unix socket")
    parser.add_argument("--model", default="", help="the served model name (default: the first in /v1/models)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=40, help="sequential request pairs for latency")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--block", type=float, default=10.0, help="seconds per throughput block")
    parser.add_argument("--blocks", type=int, default=3, help="throughput blocks per path")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    client_key, vllm_key = os.environ.get("BENCH_CLIENT_KEY"), os.environ.get("BENCH_VLLM_KEY")
    if not client_key or not vllm_key:
        parser.error("set BENCH_CLIENT_KEY (a client application's key) and BENCH_VLLM_KEY (vLLM's key)")
    host, port = args.ingress.rsplit(":", 1)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The endpoint's certificate is the inventory's, checked by the role; the
    # bench measures the path, not the trust chain.
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    ingress = Path(
        "ingress", lambda: http.client.HTTPSConnection(host, int(port), context=tls, timeout=600), client_key
    )
    direct = Path("direct", lambda: UnixHTTPConnection(args.socket, 600), vllm_key)

    model = args.model
    if not model:
        connection = direct.connect()
        connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {vllm_key}"})
        model = json.loads(connection.getresponse().read())["data"][0]["id"]
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "max_tokens": args.max_tokens,
        "temperature": 0,
    }
    paths = [ingress, direct]
    overhead = overhead_phase(paths, args.pairs)
    # Let the client's rate-limit bucket refill before the measured phases.
    time.sleep(3)
    _warmup_seconds, failures = latency_phase(paths, payload, args.warmup)
    seconds, more = latency_phase(paths, payload, args.pairs)
    failures += more
    rates = {p.name: [] for p in paths}
    statuses = {p.name: {} for p in paths}
    for block in range(args.blocks):
        for path in paths if block % 2 == 0 else reversed(paths):
            rate, counts = throughput_block(path, payload, args.concurrency, args.block)
            rates[path.name].append(rate)
            for status, count in counts.items():
                statuses[path.name][status] = statuses[path.name].get(status, 0) + count

    result = {
        "models_p50_s": overhead,
        "model": model,
        "max_tokens": args.max_tokens,
        "pairs": args.pairs,
        "concurrency": args.concurrency,
    }
    for name in rates:
        result[name] = {
            "p50_s": statistics.median(seconds[name]),
            "p95_s": percentile(seconds[name], 0.95),
            "throughput_rps": statistics.median(rates[name]),
            "block_rps": [round(rate, 2) for rate in rates[name]],
            "statuses": {str(k): v for k, v in sorted(statuses[name].items())},
        }
    if failures or not all(rates.values()) or min(map(statistics.median, rates.values())) == 0:
        print(f"{len(failures)} requests failed, first: {failures[:1]}; statuses {statuses}", file=sys.stderr)
        return 2
    result["p50_ratio"] = result["ingress"]["p50_s"] / result["direct"]["p50_s"]
    result["p95_ratio"] = result["ingress"]["p95_s"] / result["direct"]["p95_s"]
    result["throughput_ratio"] = result["ingress"]["throughput_rps"] / result["direct"]["throughput_rps"]
    result["goals_met"] = result["p50_ratio"] <= 1.10 and result["throughput_ratio"] >= 0.90

    print(f"model {model}, {args.max_tokens} tokens, {args.pairs} pairs, {args.concurrency} workers")
    print(f"{'path':8} {'p50 ms':>9} {'p95 ms':>9} {'req/s':>8}  statuses")
    for name in ("ingress", "direct"):
        row = result[name]
        print(
            f"{name:8} {row['p50_s'] * 1000:9.1f} {row['p95_s'] * 1000:9.1f} {row['throughput_rps']:8.2f}  "
            f"{row['statuses']}  blocks {row['block_rps']}"
        )
    print(
        f"GET /v1/models p50: ingress {overhead['ingress'] * 1000:.2f} ms, direct {overhead['direct'] * 1000:.2f} ms "
        f"(the ingress's own cost per request: {(overhead['ingress'] - overhead['direct']) * 1000:.2f} ms)"
    )
    print(
        f"ratios: p50 {result['p50_ratio']:.3f} (goal <= 1.10), p95 {result['p95_ratio']:.3f}, "
        f"throughput {result['throughput_ratio']:.3f} (goal >= 0.90)"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    if any(status != 200 for counts in statuses.values() for status in counts):
        print("some throughput requests did not answer 200 (see statuses): not a clean run", file=sys.stderr)
        return 2
    return 0 if result["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
