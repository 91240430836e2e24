#!/usr/bin/env python3
"""Daemon benchmarks: the real allotd and allotctl (release build) on a temporary state directory.

Measures, as issue 5 asks:
  - bulk durable submits/s: `allotctl submit --file` with N jobs (default 100,000);
  - one `allotctl submit` process per job, lean path and full command side by side (and sbatch when it
    is installed), with a process's bare start (/bin/true) and `allotctl --version` for scale; and the
    lean path again with N jobs queued;
  - time from submit to the job's process running, on an idle pool: from the request, and from the
    user's `allotctl submit` command;
  - allotd's RSS with N pending jobs;
  - time from SIGKILL to answering again with N jobs;
  - a job array of N tasks in one `allotctl submit --array` (issue 18): seconds from the user's command,
    and allotd's RSS per pending task (against the same daemon before the submit), with and without a limit.

Usage: scripts/daemon-bench.py [--bin .build/release] [--jobs 100000] [--sync batch] [--only arrays]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

POOL = """
[scheduler]
interval = "10s"

[[gpu_model]]
name = "A100"
memory_gib = 80
price_per_hour = 2.0
speed = 1.0

[[node_group]]
prefix = "gpu-"
count = 16
gpu_model = "A100"
gpus = 8
"""


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Daemon:
    def __init__(self, bin_dir, sync):
        self.bin = bin_dir
        self.dir = tempfile.mkdtemp(prefix="allot-bench-", dir="/tmp")
        self.sock = os.path.join(self.dir, "s.sock")
        self.config = os.path.join(self.dir, "allotd.toml")
        with open(self.config, "w") as f:
            f.write(POOL)
            f.write(f'\n[daemon]\nstate_dir = "{self.dir}/state"\nsocket = "{self.sock}"\nlocal_nodes = ["*"]\n')
            f.write(f'\n[wal]\nsync = "{sync}"\n')
        self.env = dict(os.environ, ALLOT_SOCKET=self.sock)
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "allotd.log"), "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([f"{self.bin}/allotd", "--config", self.config, "--log-level", "warning"],
                                     stdout=self.log, stderr=self.log)
        while True:
            try:
                self.call("hello", {"version": 1})
                return time.monotonic() - t0
            except OSError:
                time.sleep(0.005)

    def ctl(self, *args, stdin=None):
        return subprocess.run([f"{self.bin}/allotctl", *args], input=stdin, capture_output=True, env=self.env,
                              check=True)

    def call(self, method, params):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.sock)
        f = s.makefile("rwb")
        f.write((json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) + "\n").encode())
        f.flush()
        r = json.loads(f.readline())
        s.close()
        return r

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".build/release")
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--singles", type=int, default=300)
    ap.add_argument("--sync", default="batch")
    ap.add_argument("--only", choices=["arrays"], help="run only this part")
    a = ap.parse_args()
    results = {}
    if a.only == "arrays":
        results["arrays"] = arrays(a)
        json.dump(results, sys.stdout, indent=2)
        print()
        return

    # Submit to running on an idle pool: the job's own clock against the client's.
    d = Daemon(a.bin, a.sync)
    d.start()
    lat = []
    for i in range(30):
        stamp = os.path.join(d.dir, f"started-{i}")
        t0 = time.time()
        d.call("submit", {"job": {"command": ["sh", "-c", f"date +%s.%N > {stamp}"], "workdir": d.dir}})
        while not os.path.exists(stamp) or os.path.getsize(stamp) == 0:
            time.sleep(0.0005)
        with open(stamp) as f:
            lat.append(float(f.read()) - t0)
    lat.sort()
    results["submit_to_running_ms"] = {"median": round(statistics.median(lat) * 1000, 1),
                                       "p90": round(lat[int(len(lat) * 0.9)] * 1000, 1)}
    # The scheduler's share: submit until the start is durable (watch event).
    results["note"] = "submit_to_running: from sending submit until the job's process wrote its first line"

    # The same, measured as a user feels it: from starting `allotctl submit` until the job's first line.
    lat = []
    for i in range(30):
        stamp = os.path.join(d.dir, f"cli-started-{i}")
        t0 = time.time()
        d.ctl("submit", "--workdir", d.dir, "--", "sh", "-c", f"date +%s.%N > {stamp}")
        while not os.path.exists(stamp) or os.path.getsize(stamp) == 0:
            time.sleep(0.0005)
        with open(stamp) as f:
            lat.append(float(f.read()) - t0)
    lat.sort()
    results["submit_command_to_first_line_ms"] = {"median": round(statistics.median(lat) * 1000, 1),
                                                  "p90": round(lat[int(len(lat) * 0.9)] * 1000, 1)}

    # One allotctl process per job, side by side in this run: the lean path (plain submit), the full
    # command (--json goes through the argument parser and Codable), what starting a process costs, and
    # sbatch where Slurm is installed. Interleaved (one of each, round after round), so that the machine's
    # noise falls on all of them alike.
    commands = {
        "allotctl_submit_lean": [f"{a.bin}/allotctl", "submit", "--hold", "--", "true"],
        "allotctl_submit_full": [f"{a.bin}/allotctl", "submit", "--json", "--hold", "--", "true"],
        "allotctl_version": [f"{a.bin}/allotctl", "--version"],
        "bin_true": ["/bin/true"],
    }
    sbatch = subprocess.run(["sh", "-c", "command -v sbatch"], capture_output=True, text=True).stdout.strip()
    if sbatch and subprocess.run([sbatch, "--hold", "--wrap", "true"], capture_output=True).returncode == 0:
        commands["sbatch_hold"] = [sbatch, "--hold", "--wrap", "true"]
    times = {name: [] for name in commands}
    for _ in range(a.singles):
        for name, argv in commands.items():
            t = time.perf_counter()
            subprocess.run(argv, capture_output=True, env=d.env, check=True)
            times[name].append(time.perf_counter() - t)
    results["per_process_ms_median"] = {name: round(statistics.median(t) * 1000, 2) for name, t in times.items()}
    if "sbatch_hold" in times:
        ratios = sorted(x / y for x, y in zip(times["allotctl_submit_lean"], times["sbatch_hold"]))
        results["lean_submit_over_sbatch"] = {"ratio_of_medians": round(
            statistics.median(times["allotctl_submit_lean"]) / statistics.median(times["sbatch_hold"]), 2),
            "median_of_round_ratios": round(statistics.median(ratios), 2)}
    d.stop()

    # Bulk: N jobs that wait (the pool is kept full by one big job).
    d = Daemon(a.bin, a.sync)
    d.start()
    d.call("submit", {"job": {"command": ["sleep", "600"], "gpus": 128, "workdir": d.dir}})
    lines = "".join(json.dumps({"command": ["train.py", "--seed", str(i)], "gpus": 1 + i % 8,
                                "name": f"job-{i}", "walltime": "2h"}) + "\n" for i in range(a.jobs))
    t0 = time.monotonic()
    r = d.ctl("submit", "--file", "-", stdin=lines.encode())
    dt = time.monotonic() - t0
    ids = r.stdout.split()
    assert len(ids) == a.jobs, len(ids)
    results["bulk_submit"] = {"jobs": a.jobs, "seconds": round(dt, 2), "jobs_per_s": round(a.jobs / dt)}
    # RSS over 15 s with the full queue: periodic passes over it, memory handed back after bursts.
    samples = []
    for _ in range(30):
        time.sleep(0.5)
        samples.append(rss_mib(d.proc.pid))
    st = d.call("status", {})["result"]
    results["pending"] = st["jobs"].get("pending", 0)
    # One `allotctl submit` (the lean front) with that queue: each submit asks for a pass over it; the answer
    # goes out once the job is durable, without waiting for a pass in progress.
    loaded = []
    for _ in range(a.singles // 2):
        t = time.perf_counter()
        d.ctl("submit", "--gpus", "2", "--", "true")
        loaded.append(time.perf_counter() - t)
    loaded.sort()
    results["submit_with_queue_ms"] = {"pending": results["pending"],
                                       "median": round(statistics.median(loaded) * 1000, 2),
                                       "p90": round(loaded[int(len(loaded) * 0.9)] * 1000, 2)}
    results["rss_mib_with_pending"] = {"right_after_bulk": round(samples[0], 1), "max_after_2s": round(max(samples[4:]), 1),
                                       "last": round(samples[-1], 1)}
    # SIGKILL and back.
    d.stop(signal.SIGKILL)
    results["restart_after_sigkill_s"] = round(d.start(), 3)
    st = d.call("status", {})["result"]
    results["pending_after_restart"] = st["jobs"].get("pending", 0)
    results["rss_mib_after_restart"] = round(rss_mib(d.proc.pid), 1)
    # Clean stop, then from the snapshot.
    d.call("cancel", {"ids": [1]})
    d.stop()
    results["arrays"] = arrays(a)
    json.dump(results, sys.stdout, indent=2)
    print()
    subprocess.run(["pkill", "-f", f"allot-supervise {d.dir}"])
    subprocess.run(["rm", "-rf", d.dir])


def arrays(a):
    """One submit of a job array of N tasks, pending behind a full pool: time from the user's command, RSS
    per task. Unlimited (every task in the scheduler's queue), %10 (all but 10 waiting out of it), and the
    same jobs as N lines of `submit --file` for comparison."""
    out = {}
    # The same jobs as N lines of `submit --file` (the way before arrays), side by side in this run.
    lines = "".join(json.dumps({"command": ["train.py", "--seed", "1"], "name": "sweep", "walltime": "2h"}) + "\n"
                    for _ in range(a.jobs)).encode()
    for limit in ["", "%10", "file"]:
        d = Daemon(a.bin, a.sync)
        d.start()
        d.call("submit", {"job": {"command": ["sleep", "600"], "gpus": 128, "workdir": d.dir}})
        time.sleep(3)
        before = min(rss_mib(d.proc.pid) for _ in range(4) if time.sleep(0.25) is None)
        t0 = time.monotonic()
        if limit == "file":
            r = d.ctl("submit", "--file", "-", stdin=lines)
        else:
            r = d.ctl("submit", "--array", f"0-{a.jobs - 1}{limit}", "--name", "sweep", "--walltime", "2h", "--",
                      "train.py", "--seed", "1")
        dt = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        samples = []
        for _ in range(20):
            time.sleep(0.5)
            samples.append(rss_mib(d.proc.pid))
        st = d.call("status", {})["result"]
        assert st["jobs"].get("pending", 0) == a.jobs, st
        steady = statistics.median(samples[4:])
        key = {"": "array", "%10": "array_limit_10", "file": "file_lines"}[limit]
        out[key] = {
            "tasks": a.jobs, "submit_command_s": round(dt, 2),
            "rss_mib_before": round(before, 1), "rss_mib_steady": round(steady, 1),
            "bytes_per_task": round((steady - before) * 1024 * 1024 / a.jobs)}
        # `ls` as a user runs it: the table (allotd folds the array's waiting tasks into one row) against
        # every object (--json), from the command; medians of three.
        # `top` draws from a bounded summary (the first jobs of each list), not from every job.
        for name, args in [("ls_table_s", ["ls"]), ("ls_json_s", ["ls", "--json"]), ("top_once_s", ["top", "--once"]),
                           ("top_time_order_s", ["top", "--once", "--sort", "time"])]:
            times = []
            for _ in range(3):
                t0 = time.monotonic()
                r = d.ctl(*args)
                times.append(time.monotonic() - t0)
                assert r.returncode == 0, r.stderr
            out[key][name] = round(statistics.median(times), 2)
        d.call("cancel", {"ids": [1]})
        d.stop()
        subprocess.run(["pkill", "-f", f"allot-supervise {d.dir}"])
        subprocess.run(["rm", "-rf", d.dir])
    return out


if __name__ == "__main__":
    main()
