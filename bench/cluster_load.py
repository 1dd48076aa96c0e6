#!/usr/bin/env python3
"""The cluster workload: requests/s and p99 latency of a hello-world HTTP server under wrk, for
childproc's cluster (bench/cluster_hello.cpp, a Beast server) and Node's (bench/cluster.js,
node:http), both started, checked, loaded and stopped here the same way.

Usage: bench/cluster_load.py childproc|node [quick]

For every scheduling the peer has (childproc: shared, reuse_port, round_robin; Node 20: shared
= SCHED_NONE and round_robin = SCHED_RR) and 1 and N workers (N = the CPU count, at least 2; the
quick pass runs N only, 1 s each): the server is started in a process group of its own on
127.0.0.1 port 0, its `ready <port>` line awaited (every worker listening), the port connected to,
one request checked for "hello world", then `wrk -t1 -c32 --latency` run for a few seconds. The
server then gets SIGTERM (a graceful shutdown) and must exit 0 with no process of its group left.
A run with no request, a socket error, a non-2xx answer, or a server that fails any of this,
fails the workload (exit 1): the quick pass proves the servers work.

Output: `<peer> cluster rps_<scheduling>_<workers> <value> req/s` and `... p99_... <value> ms`.
"""
import http.client
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONNECTIONS = 32
# wrk counts whole seconds only.
DURATION_S, QUICK_DURATION_S = 3, 1
READY_TIMEOUT_S = 15
STOP_TIMEOUT_S = 10


class Failed(Exception):
    pass


def server_command(peer):
    if peer == "childproc":
        binary = os.environ.get("CHILDPROC_BENCH_CLUSTER",
                                os.path.join(ROOT, "build/release/bench/childproc_bench_cluster"))
        return [binary], ["shared", "reuse_port", "round_robin"]
    return ["node", os.path.join(ROOT, "bench/cluster.js")], ["shared", "round_robin"]


def group_members(pgid):
    """The live (not zombie) processes of the process group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def await_ready(proc):
    deadline = time.monotonic() + READY_TIMEOUT_S
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise Failed(f"no `ready` line within {READY_TIMEOUT_S} s")
        chunk = os.read(proc.stdout.fileno(), 256)
        if not chunk:
            raise Failed(f"the server exited before it was ready (status {proc.wait()})")
        line += chunk
    words = line.split()
    if len(words) != 2 or words[0] != b"ready":
        raise Failed(f"unexpected first line {line!r}")
    return int(words[1])


def check_server(port):
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError as e:
            if time.monotonic() > deadline:
                raise Failed(f"port {port} refuses connections: {e}") from e
            time.sleep(0.02)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/")
    res = conn.getresponse()
    body = res.read()
    conn.close()
    if res.status != 200 or body != b"hello world":
        raise Failed(f"GET / answered {res.status} {body[:80]!r}")


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise Failed(f"unreadable wrk latency {text!r}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}[m.group(2)]
    return float(m.group(1)) * scale


def load(port, duration):
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "--timeout", "2s",
           f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=False)
    if out.returncode != 0:
        raise Failed(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
    text = out.stdout
    requests = re.search(r"^\s*(\d+) requests in", text, re.M)
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    p99 = re.search(r"^\s*99(?:\.000)?%\s+(\S+)", text, re.M)
    if not (requests and rps and p99):
        raise Failed(f"unreadable wrk output:\n{text}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if int(requests.group(1)) == 0:
        raise Failed(f"no request answered:\n{text}")
    if errors and any(int(n) for n in errors.groups()):
        raise Failed(f"wrk saw socket errors ({errors.group(0)}):\n{text}")
    if non_2xx:
        raise Failed(f"{non_2xx.group(1)} answers were not 2xx:\n{text}")
    return float(rps.group(1)), to_ms(p99.group(1))


def stop(proc):
    """SIGTERM to the primary, a graceful shutdown; SIGKILL to the whole group if it fails."""
    pgid = proc.pid  # start_new_session: the primary leads its own group
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise Failed(f"the server did not stop within {STOP_TIMEOUT_S} s of SIGTERM") from e
        if status != 0:
            raise Failed(f"the server exited with status {status}")
        # Node's primary may exit while its last workers are on their way out.
        deadline = time.monotonic() + 3
        while group_members(pgid):
            if time.monotonic() > deadline:
                raise Failed(f"processes of the server left behind: {group_members(pgid)}")
            time.sleep(0.02)
    finally:
        if group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()


def run_one(peer, base, scheduling, workers, duration):
    cmd = base + ["--workers", str(workers), "--scheduling", scheduling]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
    try:
        port = await_ready(proc)
        check_server(port)
        result = load(port, duration)
    except BaseException:
        try:
            stop(proc)
        except Failed:
            pass  # the first failure is the one to report
        raise
    stop(proc)
    return result


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("childproc", "node") or \
            sys.argv[2:] not in ([], ["quick"]):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    peer, quick = sys.argv[1], sys.argv[2:] == ["quick"]
    base, schedulings = server_command(peer)
    n = max(2, os.cpu_count() or 2)
    counts = [n] if quick else [1, n]
    duration = QUICK_DURATION_S if quick else DURATION_S
    for scheduling in schedulings:
        for workers in counts:
            try:
                rps, p99 = run_one(peer, base, scheduling, workers, duration)
            except (Failed, OSError, subprocess.SubprocessError) as e:
                print(f"cluster_load.py: {peer} {scheduling} {workers} workers: {e}",
                      file=sys.stderr)
                return 1
            print(f"{peer} cluster rps_{scheduling}_{workers} {rps:.1f} req/s", flush=True)
            print(f"{peer} cluster p99_{scheduling}_{workers} {p99:.3f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
