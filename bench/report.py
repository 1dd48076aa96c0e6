#!/usr/bin/env python3
"""Turns bench/run's raw lines into the report: a Markdown table of medians (min-max) with the
ratios childproc / raw baseline, childproc / Node and childproc / Python, a second one for the pool
with Piscina beside them, one for the cluster and one for the remote pool (raw hiredis and BullMQ beside it),
a JSON file, and the data of the plot.

Raw line: `<rep> <peer> <workload> <metric> <value> <unit>`.
"""
import argparse
import datetime
import json
import statistics
from collections import defaultdict

# label, workload, childproc metric, C metric, Node metric, Python metric, unit, higher is better,
# target text, target check (ours, raw) -> bool, or None. Python's IPC rows are its idiomatic
# Connection.send/recv (pickled), as Node's are process.send; its send_bytes runs ("_bytes"), its
# stdout "dd1M" (dd's 1 MiB writes into a default pipe, not a 1 MiB pipe) and its forkmem with the
# "spawn" start method have no row.
ROWS = [
    ("spawn rate", "spawn", "rate", "rate", "rate", "rate", "spawns/s", True,
     "≥ 0.95 × raw", lambda o, r: o >= 0.95 * r),
    ("parent CPU per spawn", "spawn", "parent_cpu", "parent_cpu", "parent_cpu", "parent_cpu",
     "ms", False, None, None),
    ("exec median", "exec", "median", "median", "median", "median", "ms", False,
     "≤ 1.1 × raw", lambda o, r: o <= 1.1 * r),
    ("exec p99", "exec", "p99", "p99", "p99", "p99", "ms", False,
     "≤ 1.2 × raw", lambda o, r: o <= 1.2 * r),
    ("500 concurrent sleeps: wall", "concurrency", "wall", "wall", "wall", "wall", "s", False,
     "≤ 1.1 × raw", lambda o, r: o <= 1.1 * r),
    ("500 concurrent sleeps: parent peak RSS", "concurrency", "peak_rss", "peak_rss",
     "peak_rss", "peak_rss", "MB", False, "≤ 5 MB", lambda o, r: o <= 5),
    ("stdout stream, 64 KiB pipe", "stdout", "head", "head", "head", "head", "GB/s", True,
     "≥ 0.95 × raw", lambda o, r: o >= 0.95 * r),
    ("stdout stream, 1 MiB pipe", "stdout", "head_pipe1M", "head_pipe1M", None, None, "GB/s",
     True, "≥ 0.95 × raw", lambda o, r: o >= 0.95 * r),
    ("IPC round trip, median", "ipc", "rtt_median", "rtt_median", "rtt_median", "rtt_median",
     "µs", False, "≤ 1.1 × raw", lambda o, r: o <= 1.1 * r),
    ("IPC round trips", "ipc", "roundtrips", "roundtrips", "roundtrips", "roundtrips", "rt/s",
     True, None, None),
    ("IPC 1 MiB messages, one way", "ipc", "oneway_1MiB", "oneway_1MiB", "oneway_1MiB",
     "oneway_1MiB", "MB/s", True, "≥ 0.5 × raw", lambda o, r: o >= 0.5 * r),
    ("fork → first message", "forkmem", "fork_startup_median", "fork_startup_median",
     "fork_startup_median", "fork_startup_median", "ms", False, "≤ 1.3 × raw",
     lambda o, r: o <= 1.3 * r),
    ("idle worker RSS", "forkmem", "fork_rss", "fork_rss", "fork_rss", "fork_rss", "MB", False,
     "≤ 3 MB", lambda o, r: o <= 3),
    ("idle worker PSS", "forkmem", "fork_pss", "fork_pss", "fork_pss", "fork_pss", "MB", False,
     None, None),
    ("fork → first message, childproc_add_worker", "forkmem", "worker_startup_median",
     "fork_startup_median", None, None, "ms", False, None, None),
    ("worker CPU to its first message, default link", "forkmem", "fork_startup_cpu", None,
     None, None, "ms", False, None, None),
    ("worker CPU to its first message, childproc_add_worker", "forkmem", "worker_startup_cpu",
     None, None, None, "ms", False, None, None),
    ("idle worker RSS, childproc_add_worker", "forkmem", "worker_rss", "fork_rss", None, None,
     "MB", False, "≤ 1.5 MB", lambda o, r: o <= 1.5),
    ("idle worker PSS, childproc_add_worker", "forkmem", "worker_pss", "fork_pss", None, None,
     "MB", False, None, None),
    ("spawn rate, 1 GiB parent / small parent", "bigparent", "ratio", None, None, None, "×",
     True, "≥ 0.9", lambda o, r: o >= 0.9),
    ("pipe() into cat: throughput", "pipe", "throughput", None, "throughput", None, "GB/s",
     True, None, None),
    ("pipe() of 1 GiB through a slow reader: parent peak RSS growth", "pipe", "slow_rss_growth",
     None, "slow_rss_growth", None, "MB", False, "≤ 5 MB", lambda o, r: o <= 5),
]

# The pool (workload "pool" of every peer: 2 workers, tiny {a, b} add tasks): label, childproc
# metric, C metric, Piscina metric, Node (a pool over child_process.fork) metric, Python
# (multiprocessing.Pool) metric, unit, higher is better, target text, target check (ours, raw,
# piscina) -> bool, or None. Piscina has no run with 64 in flight per worker (its
# concurrentTasksPerWorker is 1 and its submitter unbounded: its pipelined run is "all queued at
# once"); no peer has the 1 MiB bytes task. Python's one run is pool.map(chunksize=1), every task
# queued at once; its 1000-task warm-up is not timed, and it measures no CPU. The same rows for
# isolation::thread (metrics "threads_*"), against the same peers.
POOL_ROWS = []
for kind, prefix in (("processes", ""), ("isolation::thread", "threads_")):
    POOL_ROWS += [
        (f"pool, {kind}: tiny tasks, 1 in flight per worker", prefix + "tasks_w1", "tasks_w1",
         "tasks_w1", "fork_tasks_w1", None, "tasks/s", True, "≥ 0.9 × raw, ≥ 2 × Piscina",
         lambda o, r, p: o >= 0.9 * r and o >= 2 * p),
        (f"pool, {kind}: tiny tasks, 64 in flight per worker", prefix + "tasks_w64", "tasks_w64",
         None, "fork_tasks_w64", None, "tasks/s", True, "≥ 0.9 × raw",
         lambda o, r, p: o >= 0.9 * r),
        (f"pool, {kind}: tiny tasks, all queued at once", prefix + "tasks", None, "tasks", None,
         "tasks", "tasks/s", True, "≥ 2 × Piscina", lambda o, r, p: o >= 2 * p),
        (f"pool, {kind}: CPU per tiny task, all queued at once (pool + workers)",
         prefix + "cpu_per_task", None, "cpu_per_task", None, None, "µs", False,
         "≤ 0.5 × Piscina", lambda o, r, p: o <= 0.5 * p),
        (f"pool, {kind}: start + first 1000 tasks", prefix + "startup_plus_1k", None,
         "startup_plus_1k", None, None, "ms", False, None, None),
        (f"pool, {kind}: 1 MiB bytes task round trips (each way)", prefix + "bytes_1MiB", None,
         None, None, None, "MB/s", True, None, None),
    ]
# The one-in-flight row again, its C column the same C pool waiting in epoll_wait as an Asio
# program must (bench/pool_epoll.c): the part of the gap that is the wait itself.
POOL_ROWS.insert(1, ("pool, processes: tiny tasks, 1 in flight per worker, against C waiting in "
                     "epoll (bench/pool_epoll.c)", "tasks_w1", "tasks_w1_epoll", None, None, None,
                     "tasks/s", True, None, None))

# Seed 004's tables, measured (workload "workers"): n idle workers forked at once, the sums of
# their PSS and RSS and the time until all were ready, childproc's C++ workers against Node's
# fork; the seed's own figure is "~25MB each". Then creation: a process (forkmem's fork -> first
# message) against a thread (create + join; Node: a worker_threads Worker run to its exit).
WORKER_COUNTS = (1, 10, 100, 1000)
SEED_MB_PER_WORKER = 25


def workers_tables(values):
    def med(peer, workload, metric):
        s = summary(values, (peer, workload, metric))
        return s["median"] if s else None

    def cell(v, digits=1):
        return "n/a" if v is None else f"{v:.{digits}f}"

    table, plot, rows = [], [], []
    for n in WORKER_COUNTS:
        ours_pss = med("childproc", "workers", f"pss_total_{n}")
        node_pss = med("node", "workers", f"pss_total_{n}")
        row = {"workers": n, "seed_mb": n * SEED_MB_PER_WORKER}
        for peer in ("childproc", "node"):
            for metric in ("pss_total", "rss_total", "ready"):
                row[f"{peer}_{metric}"] = med(peer, "workers", f"{metric}_{n}")
        if ours_pss is None and node_pss is None:
            continue
        rows.append(row)
        ratio = node_pss / ours_pss if ours_pss and node_pss else None
        table.append(
            f"| {n} | {cell(ours_pss)} | {cell(row['childproc_rss_total'])} | "
            f"{cell(row['childproc_ready'])} | {cell(node_pss)} | {cell(row['node_rss_total'])} | "
            f"{cell(row['node_ready'])} | {n * SEED_MB_PER_WORKER} | "
            f"{'n/a' if ratio is None else f'{ratio:.1f}×'} |")
        nan = float("nan")
        plot.append(f"{n} {ours_pss if ours_pss else nan:.3f} {node_pss if node_pss else nan:.3f} "
                    f"{n * SEED_MB_PER_WORKER}")
    creation = [
        f"| process: fork with a channel → first message | µs | "
        f"{cell(_ms_to_us(med('childproc', 'forkmem', 'fork_startup_median')), 0)} | "
        f"{cell(_ms_to_us(med('node', 'forkmem', 'fork_startup_median')), 0)} |",
        f"| thread: create + join | µs | {cell(med('childproc', 'workers', 'thread_create_join'), 0)} | "
        f"{cell(med('node', 'workers', 'thread_create_join'), 0)} |",
    ]
    return table, creation, plot, rows


# The cluster workload (bench/cluster_load.py): a hello-world HTTP server under wrk, childproc's
# cluster (a Beast server) against Node's cluster (node:http), per scheduling and worker count;
# metrics rps_<scheduling>_<workers> and p99_<scheduling>_<workers>. Node's policy for each
# scheduling; Node 20 has no reusePort (Node >= 22.12), so that row has no Node column.
CLUSTER_SCHEDULINGS = (("shared", "SCHED_NONE"), ("reuse_port", "reusePort (Node ≥ 22.12): not run"),
                       ("round_robin", "SCHED_RR"))


def cluster_table(values):
    counts = sorted({int(metric.rsplit("_", 1)[1]) for (peer, workload, metric) in values
                     if workload == "cluster" and metric.startswith("rps_")})
    table, plot, rows = [], [], []
    for scheduling, node_policy in CLUSTER_SCHEDULINGS:
        for n in counts:
            cells = {}
            for peer in ("childproc", "node"):
                for metric in ("rps", "p99"):
                    cells[f"{peer}_{metric}"] = summary(
                        values, (peer, "cluster", f"{metric}_{scheduling}_{n}"))
            if not cells["childproc_rps"] and not cells["node_rps"]:
                continue

            def ratio(metric):
                ours, node = cells[f"childproc_{metric}"], cells[f"node_{metric}"]
                return ours["median"] / node["median"] if ours and node and node["median"] \
                    else None
            r_rps, r_p99 = ratio("rps"), ratio("p99")
            rows.append({"scheduling": scheduling, "node_policy": node_policy, "workers": n,
                         **cells, "childproc_over_node_rps": r_rps,
                         "childproc_over_node_p99": r_p99})
            table.append(
                f"| {scheduling} | {node_policy} | {n} | {fmt(cells['childproc_rps'])} | "
                f"{fmt(cells['childproc_p99'])} | {fmt(cells['node_rps'])} | "
                f"{fmt(cells['node_p99'])} | {'n/a' if r_rps is None else f'{r_rps:.2f}'} | "
                f"{'n/a' if r_p99 is None else f'{r_p99:.2f}'} |")
            if r_rps:
                plot.append(f"\"cluster {scheduling} ×{n}: req/s\" nan {r_rps:.4f}")
    return table, plot, rows


# The remote workload (bench/remote_bench.cpp, bench/remote_bullmq.js): a task's round trip
# through Redis Streams, 1 and 64 in flight; childproc's remote_pool on 2 agents against the same
# round trip written with hiredis (the floor) and BullMQ (sandboxed processor, 2 Workers). Metrics
# tasks_f<N>, p50_f<N>, p99_f<N> of the peers "childproc", "hiredis" and "bullmq": label suffix,
# metric prefix, unit, higher is better, target text, target check (ours, raw) -> bool, or None.
REMOTE_WINDOWS = (1, 64)
REMOTE_METRICS = (
    ("tasks/s", "tasks", "tasks/s", True, "≥ 0.8 × raw", lambda o, r: o >= 0.8 * r),
    ("p50 latency", "p50", "µs", False, None, None),
    ("p99 latency", "p99", "µs", False, None, None),
    ("Redis commands per task", "commands", "commands", False, None, None),
    ("server CPU per task", "server_cpu", "µs", False, None, None),
    ("CPU per task of the rest (caller, consumers, workers)", "client_cpu", "µs", False, None,
     None),
)


def remote_table(values):
    table, rows = [], []
    for n in REMOTE_WINDOWS:
        for label, prefix, unit, higher, target, check in REMOTE_METRICS:
            metric = f"{prefix}_f{n}"
            ours, raw, bull = (summary(values, (peer, "remote", metric))
                               for peer in ("childproc", "hiredis", "bullmq"))
            if not ours and not raw and not bull:
                continue

            def ratio(peer):
                return ours["median"] / peer["median"] if ours and peer and peer["median"] \
                    else None
            r_raw, r_bull = ratio(raw), ratio(bull)
            met = check(ours["median"], raw["median"]) if target and ours and raw else None
            full = f"remote, {n} in flight: {label}"
            rows.append({"label": full, "unit": unit, "higher_is_better": higher,
                         "childproc": ours, "raw": raw, "bullmq": bull,
                         "childproc_over_raw": r_raw, "childproc_over_bullmq": r_bull,
                         "target": target, "target_met": met})
            verdict = "" if met is None else ("met" if met else "**missed**")
            shown = [f"{r:.2f}" if r is not None else "n/a" for r in (r_raw, r_bull)]
            table.append(f"| {full} | {unit} | {fmt(ours)} | {fmt(raw)} | {fmt(bull)} | "
                         f"{shown[0]} | {shown[1]} | {target or ''} | {verdict} |")
    return table, rows


def _ms_to_us(v):
    return None if v is None else v * 1e3



def load(path):
    values = defaultdict(list)
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if len(parts) < 6:
            continue
        _, peer, workload, metric, value = parts[:5]
        try:
            values[(peer, workload, metric)].append(float(value))
        except ValueError:
            continue
    return values


def summary(values, key):
    v = values.get(key)
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt(s):
    if s is None:
        return "n/a"
    m = s["median"]
    digits = 3 if abs(m) < 10 else (1 if abs(m) < 1000 else 0)
    text = f"{m:.{digits}f}"
    if s["n"] > 1:
        text += f" ({s['min']:.{digits}f}–{s['max']:.{digits}f})"
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("out_dir")
    ap.add_argument("--machine", default="")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    values = load(args.raw)
    rows, table, plot = [], [], []
    for label, workload, ours_m, c_m, node_m, py_m, unit, higher, target, check in ROWS:
        ours = summary(values, ("childproc", workload, ours_m))
        raw = summary(values, ("c", workload, c_m)) if c_m else None
        node = summary(values, ("node", workload, node_m)) if node_m else None
        py = summary(values, ("python", workload, py_m)) if py_m else None
        r_raw = ours["median"] / raw["median"] if ours and raw and raw["median"] else None
        r_node = ours["median"] / node["median"] if ours and node and node["median"] else None
        r_py = ours["median"] / py["median"] if ours and py and py["median"] else None
        met = None
        if target and ours and (raw or c_m is None):
            met = check(ours["median"], raw["median"] if raw else 0)
        rows.append({"label": label, "unit": unit, "higher_is_better": higher,
                     "childproc": ours, "raw": raw, "node": node, "python": py,
                     "childproc_over_raw": r_raw, "childproc_over_node": r_node,
                     "childproc_over_python": r_py, "target": target, "target_met": met})
        verdict = "" if met is None else ("met" if met else "**missed**")
        table.append(
            f"| {label} | {unit} | {fmt(ours)} | {fmt(raw)} | {fmt(node)} | {fmt(py)} | "
            f"{'n/a' if r_raw is None else f'{r_raw:.2f}'} | "
            f"{'n/a' if r_node is None else f'{r_node:.2f}'} | "
            f"{'n/a' if r_py is None else f'{r_py:.2f}'} | {target or ''} | {verdict} |")
        # The plot: advantage (> 1 = childproc better), NaN where there is no peer.
        def adv(r):
            if not r:
                return float("nan")
            return r if higher else 1 / r
        if raw or node:
            plot.append(f"\"{label}\" {adv(r_raw):.4f} {adv(r_node):.4f}")

    pool_rows, pool_table = [], []
    for label, ours_m, c_m, pis_m, node_m, py_m, unit, higher, target, check in POOL_ROWS:
        ours = summary(values, ("childproc", "pool", ours_m))
        raw = summary(values, ("c", "pool", c_m)) if c_m else None
        pis = summary(values, ("piscina", "pool", pis_m)) if pis_m else None
        node = summary(values, ("node", "pool", node_m)) if node_m else None
        py = summary(values, ("python", "pool", py_m)) if py_m else None

        def ratio(peer):
            return ours["median"] / peer["median"] if ours and peer and peer["median"] else None
        r_raw, r_pis, r_node, r_py = ratio(raw), ratio(pis), ratio(node), ratio(py)
        met = None
        # Checked only when every peer the target names was measured.
        if target and ours and (raw or not c_m) and (pis or not pis_m):
            met = check(ours["median"], raw["median"] if raw else 0, pis["median"] if pis else 0)
        pool_rows.append({"label": label, "unit": unit, "higher_is_better": higher,
                          "childproc": ours, "raw": raw, "piscina": pis, "node": node,
                          "python": py, "childproc_over_raw": r_raw,
                          "childproc_over_piscina": r_pis, "childproc_over_node": r_node,
                          "childproc_over_python": r_py, "target": target, "target_met": met})
        verdict = "" if met is None else ("met" if met else "**missed**")
        shown = [f"{r:.2f}" if r is not None else "n/a" for r in (r_raw, r_pis, r_py)]
        pool_table.append(
            f"| {label} | {unit} | {fmt(ours)} | {fmt(raw)} | {fmt(pis)} | {fmt(node)} | "
            f"{fmt(py)} | {shown[0]} | {shown[1]} | {shown[2]} | {target or ''} | {verdict} |")
        if raw or node:
            adv = [float("nan") if not r else (r if higher else 1 / r) for r in (r_raw, r_node)]
            plot.append(f"\"{label}\" {adv[0]:.4f} {adv[1]:.4f}")

    workers_table, creation_table, workers_plot, workers_rows = workers_tables(values)
    cluster_rows_table, cluster_plot, cluster_rows = cluster_table(values)
    remote_rows_table, remote_rows = remote_table(values)
    plot += cluster_plot

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    kind = "quick pass (CI smoke test; short workloads, 1 repetition)" if args.quick else \
        f"{args.reps} repetitions, medians with min–max"
    md = [
        f"# childproc benchmarks — {when}",
        "",
        f"Machine: {args.machine}. Run: {kind}. Peers run interleaved in the same run, order "
        "rotated every repetition; compare ratios, not absolute times from different runs.",
        "",
        "Python is `subprocess` and `multiprocessing` (the `fork` start method, a `Pipe` whose "
        "IPC rows are `Connection.send`/`recv` of pickled objects, as Node's are `process.send`). "
        "Its stdout run with dd's 1 MiB writes goes through a default pipe, not a 1 MiB one: it "
        "has no row.",
        "",
        "| workload | unit | childproc | raw POSIX (C) | Node | Python | childproc / raw "
        "| childproc / Node | childproc / Python | target | |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *table,
        "",
        "The pool: 2 workers each, as the peers' pools; Node is a pool over "
        "`child_process.fork`, Piscina a pool of worker threads, Python a `multiprocessing.Pool` "
        "of 2 forked processes. Python's one run is `pool.map` of tuple tasks with `chunksize=1`, "
        "every task queued at once; it has no run with 1 or 64 in flight per worker, and measures "
        "neither CPU per task nor the start (its 1000-task warm-up is not timed).",
        "",
        "| workload | unit | childproc | raw POSIX (C) | Piscina | Node | Python | childproc / raw "
        "| childproc / Piscina | childproc / Python | target | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *pool_table,
        "",
        "A hello-world HTTP server under `wrk -t1 -c32 --latency` on 127.0.0.1 (bench/cluster_load.py, "
        "the load generator on the same cores as the servers): childproc's cluster with a Beast "
        "server (bench/cluster_hello.cpp) against Node's cluster with `node:http` "
        "(bench/cluster.js), per scheduling and worker count. p99: the latency wrk measured.",
        "",
        "| scheduling | Node's policy | workers | childproc req/s | childproc p99, ms | Node req/s "
        "| Node p99, ms | childproc / Node req/s | childproc / Node p99 |",
        "|---|---|---|---|---|---|---|---|---|",
        *cluster_rows_table,
        "",
        "The remote pool: a task's round trip through Redis Streams on a private redis-server "
        "(unix socket, no persistence), 16-byte echo tasks in a closed loop with 1 and 64 in "
        "flight. childproc: `remote_pool::async_run` served by 2 `childproc-agent`s (1 worker "
        "process each, 32 tasks at once per agent); raw: the same round trip with hiredis (XADD, "
        "2 consumer threads doing XREADGROUP, XADD of the reply and XACK, the caller's blocking "
        "XREAD), interleaved with childproc in the same run; BullMQ: a Queue, QueueEvents and 2 "
        "Worker processes with a sandboxed processor file (concurrency 32 each). The last rows "
        "explain the others: the server's commands and CPU time per task (its `INFO`), and the "
        "CPU time per task of the processes serving the tasks, the server aside.",
        "",
        "| workload | unit | childproc | raw (hiredis) | BullMQ | childproc / raw "
        "| childproc / BullMQ | target | |",
        "|---|---|---|---|---|---|---|---|---|",
        *remote_rows_table,
        "",
        "![ratios](ratios.png)",
        "",
        "Seed 004's memory table, measured: n idle workers forked at once (C++ workers: this "
        "project's bench binary; Node: `child_process.fork` of a script that idles). PSS divides "
        "shared pages between the processes mapping them, so its sum is what the workers cost; "
        "1000 Node workers are not run (about 40 GB of RSS).",
        "",
        "| idle workers | childproc PSS, MB | childproc RSS, MB | childproc all ready, ms "
        "| Node PSS, MB | Node RSS, MB | Node all ready, ms | seed's figure, MB | Node / childproc "
        "PSS |",
        "|---|---|---|---|---|---|---|---|---|",
        *workers_table,
        "",
        "![memory of idle workers](workers.png)",
        "",
        "Seed 004's \"creation cost: process higher, thread lower\", measured (medians):",
        "",
        "| created | unit | childproc (C++) | Node |",
        "|---|---|---|---|",
        *creation_table,
        "",
    ]
    with open(f"{args.out_dir}/latest.md", "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    with open(f"{args.out_dir}/results.json", "w", encoding="utf-8") as f:
        json.dump({"when": when, "machine": args.machine, "reps": args.reps,
                   "quick": args.quick, "rows": rows, "pool_rows": pool_rows,
                   "workers_rows": workers_rows,
                   "cluster_rows": cluster_rows, "remote_rows": remote_rows}, f, indent=1)
    with open(f"{args.out_dir}/ratios.dat", "w", encoding="utf-8") as f:
        f.write("# label advantage_vs_raw advantage_vs_node\n" + "\n".join(plot) + "\n")
    with open(f"{args.out_dir}/workers.dat", "w", encoding="utf-8") as f:
        f.write("# workers childproc_pss_mb node_pss_mb seed_mb\n" + "\n".join(workers_plot) + "\n")


if __name__ == "__main__":
    main()
