#!/usr/bin/env python3
"""Benchmarks of several controllers on etcd (issue 16, docs/ha.md): a real 3-member etcd on loopback and
the real allotd (release build by default), measured side by side in one run:

  - etcd's own rate of single-key puts through its JSON gateway, at 1, 16 and 256 clients;
  - durable submits/s through allotd's control socket with its log in etcd ([ha]) and, for scale, on local
    disk, at the same client counts (each client submits, waits for the answer, submits again);
  - failovers: kill -9 of the leader during a submit storm; the time until the other controller answers
    and until a new job starts there, and acknowledged submits lost (goal 0) or doubled.

Needs etcd (Debian's etcd-server; scripts/ensure-deps.sh --test).
  - with --records N: a follower's start-to-ready (every record applied) with a log of N records in etcd.

Usage: scripts/ha-bench.py [--bin .build/release] [--seconds 5] [--clients 1,16,256] [--failovers 10]
                           [--records 1000000]
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

POOL = """
[scheduler]
interval = "10s"

[[gpu_model]]
name = "A100"
memory_gib = 80
price_per_hour = 2.0

[[node_group]]
prefix = "gpu-"
count = 4
gpu_model = "A100"
gpus = 8
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Etcd:
    def __init__(self, root):
        self.root = root
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(3)]
        cluster = ",".join(f"{n}=http://127.0.0.1:{peer}" for n, _, peer in self.members)
        self.procs = []
        for n, client, peer in self.members:
            log = open(os.path.join(root, f"{n}.log"), "ab")
            self.procs.append(subprocess.Popen([
                "etcd", "--name", n, "--data-dir", os.path.join(root, n),
                "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}", "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}", "--initial-cluster", cluster,
                "--initial-cluster-state", "new", "--heartbeat-interval", "50", "--election-timeout", "500",
            ], stdout=log, stderr=log))
        for _, client, _ in self.members:
            for _ in range(200):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", client, timeout=2)
                    c.request("GET", "/health")
                    if b'"true"' in c.getresponse().read():
                        break
                except OSError:
                    pass
                time.sleep(0.1)

    @property
    def urls(self):
        return [f"http://127.0.0.1:{c}" for _, c, _ in self.members]

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


class Allotd:
    def __init__(self, bin_dir, root, name, etcd=None, cluster="bench", extra=""):
        self.bin = bin_dir
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "s.sock")
        self.config = os.path.join(self.dir, "allotd.toml")
        with open(self.config, "w") as f:
            f.write(POOL)
            f.write(f'\n[daemon]\nstate_dir = "{self.dir}/state"\nsocket = "{self.sock}"\nlocal_nodes = ["*"]\n')
            if etcd:
                urls = ", ".join(f'"{u}"' for u in etcd.urls)
                f.write(f'\n[ha]\netcd = [{urls}]\ncluster = "{cluster}"\nname = "{name}"\nlease_ttl = "2s"\n')
            f.write(extra)
        self.proc = None

    def start(self, wait=True):
        self.log = open(os.path.join(self.dir, "allotd.log"), "ab")
        self.proc = subprocess.Popen([f"{self.bin}/allotd", "--config", self.config, "--log-level", "warning"],
                                     stdout=self.log, stderr=self.log)
        while wait and not self.leads():
            time.sleep(0.01)

    def answers(self):
        try:
            return "result" in call(self.sock, "status", {})
        except OSError:
            return False

    def leads(self):
        """With [ha]: whether it leads (a follower answers reads too); without: whether it answers."""
        try:
            r = call(self.sock, "status", {}).get("result")
        except OSError:
            return False
        return r is not None and r.get("log", {}).get("role", "leader") == "leader"

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()


def call(sock_path, method, params, f=None):
    own = f is None
    if own:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(sock_path)
        f = s.makefile("rwb")
    f.write((json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) + "\n").encode())
    f.flush()
    line = f.readline()
    if own:
        f.close()
    if not line:
        raise OSError("connection closed")
    return json.loads(line)


def storm(sock_path, clients, seconds, acked=None, doubt=None, tag=""):
    """Clients submitting held jobs one after another for `seconds`; returns acknowledged submits. With
    `doubt`, each submit carries a request id (also the job's name) and the one a client had in flight when
    its connection failed or was refused is put there, to be sent again to the next leader."""
    stop = time.monotonic() + seconds
    counts = [0] * clients
    lock = threading.Lock()

    def client(i):
        n = 0
        rid = None
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(sock_path)
            f = s.makefile("rwb")
            while time.monotonic() < stop:
                rid = f"{tag}c{i}-{n}"
                n += 1
                params = {"job": {"command": ["true"], "hold": True, "name": rid if doubt is not None else f"c{i}"}}
                if doubt is not None:
                    params["request_id"] = rid
                r = call(sock_path, "submit", params, f)
                if "result" not in r:
                    break
                rid = None
                counts[i] += 1
                if acked is not None:
                    with lock:
                        acked.append(r["result"]["id"])
        except (OSError, ValueError):
            pass
        if rid is not None and doubt is not None:
            with lock:
                doubt.append(rid)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def etcd_puts(etcd, clients, seconds):
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def client(i):
        port = int(etcd.urls[i % 3].rsplit(":", 1)[1])
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        n = 0
        while time.monotonic() < stop:
            key = base64.b64encode(f"/bench/{i}".encode()).decode()
            value = base64.b64encode(f"{n}".encode()).decode()
            c.request("POST", "/v3/kv/put", json.dumps({"key": key, "value": value}),
                      {"Content-Type": "application/json"})
            c.getresponse().read()
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0


def big_log(a, root, etcd, records, snapshots=True):
    """A log of `records` records in etcd (100,000 held jobs on drained nodes, then released and held
    again, all of them at once, until the log is that long): how long a follower takes from its start to
    answering with every record applied (median of 3 starts), its memory, and the takeover with it. Without
    `snapshots` the leader takes none, so a follower reads every record."""
    cluster = "big" if snapshots else "big-nosnap"
    extra = "" if snapshots else "\n[wal]\nsnapshot_every_records = 100000000\n"
    lead = Allotd(a.bin, root, f"{cluster}-a", etcd, cluster=cluster, extra=extra)
    lead.start()
    for n in call(lead.sock, "nodes", {})["result"]:
        call(lead.sock, "drain", {"node": n["name"]})
    ids = []
    jobs = min(100_000, records)
    began = time.monotonic()
    while len(ids) < jobs:
        k = min(5000, jobs - len(ids))
        ids += call(lead.sock, "submit_many", {"jobs": [{"command": ["true"], "hold": True}] * k})["result"]["ids"]

    def last(sock):
        return call(sock, "status", {})["result"]["log"]["last_lsn"]

    toggle = "release"
    while last(lead.sock) < records:
        for i in range(0, len(ids), 20_000):
            call(lead.sock, toggle, {"ids": ids[i:i + 20_000]})
        toggle = "hold" if toggle == "release" else "release"
    total = last(lead.sock)
    out = {"records": total, "jobs": len(ids), "written_s": round(time.monotonic() - began, 1)}
    print(f"big log: {total} records of {len(ids)} jobs written in {out['written_s']} s", file=sys.stderr, flush=True)
    ready, answered = [], []
    follower = None
    for k in range(3):
        follower = Allotd(a.bin, root, f"{cluster}-b", etcd, cluster=cluster, extra=extra)
        started = time.monotonic()
        follower.start(wait=False)
        first = None
        while True:
            try:
                r = call(follower.sock, "status", {})["result"]
                first = first or time.monotonic() - started
                if r["log"].get("role") == "follower" and r["log"]["last_lsn"] >= total:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        ready.append(time.monotonic() - started)
        answered.append(first)
        print(f"big log: follower {k + 1} ready in {ready[-1]:.2f} s", file=sys.stderr, flush=True)
        if k < 2:
            follower.stop()
    out["follower_ready_s_median"] = round(statistics.median(ready), 2)
    out["follower_ready_s"] = [round(x, 2) for x in ready]
    out["follower_rss_mib"] = round(rss_mib(follower.proc.pid))
    out["leader_rss_mib"] = round(rss_mib(lead.proc.pid))
    lead.kill()
    killed = time.monotonic()
    while not follower.leads():
        time.sleep(0.01)
    out["takeover_s"] = round(time.monotonic() - killed, 2)
    out["after_takeover_jobs"] = len(call(follower.sock, "list", {"states": ["all"], "limit": 1_000_000})
                                     .get("result", []))
    follower.stop()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".build/release")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", default="1,16,256")
    ap.add_argument("--failovers", type=int, default=10)
    ap.add_argument("--records", type=int, default=0,
                    help="also: a follower's restart-to-ready with a log this long in etcd (e.g. 1000000)")
    a = ap.parse_args()
    if not shutil.which("etcd"):
        sys.exit("etcd is not installed: run scripts/ensure-deps.sh --test")
    root = tempfile.mkdtemp(prefix="allot-ha-bench-", dir="/tmp")
    etcd = Etcd(root)
    clients = [int(c) for c in a.clients.split(",")]
    results = {"clients": clients, "etcd_puts_per_s": [], "submits_per_s_etcd": [], "submits_per_s_local": []}
    try:
        for c in clients:
            results["etcd_puts_per_s"].append(round(etcd_puts(etcd, c, a.seconds) / a.seconds))
        for mode in ("etcd", "local"):
            d = Allotd(a.bin, root, f"rate-{mode}", etcd if mode == "etcd" else None, cluster="rate")
            d.start()
            for c in clients:
                results[f"submits_per_s_{mode}"].append(round(storm(d.sock, c, a.seconds) / a.seconds))
            d.stop()
        # Failovers: two controllers; kill -9 the leader during a storm; the other leads. The submit each
        # client had in flight is sent again to the new leader with its request id: it finds the job the first
        # try made (its answer was lost) or makes it (it was not durable), never a second one.
        takeovers, starts, lost, doubled, found, made = [], [], 0, 0, 0, 0
        ctl = [Allotd(a.bin, root, "ctl-a", etcd, cluster="failover"), Allotd(a.bin, root, "ctl-b", etcd,
                                                                              cluster="failover")]
        ctl[0].start()
        ctl[1].start(wait=False)
        leader, follower = ctl[0], ctl[1]
        acked = []
        for k in range(a.failovers):
            doubt = []
            t = threading.Thread(target=storm, args=(leader.sock, 16, 60, acked, doubt, f"f{k}-"))
            t.start()
            time.sleep(0.5)
            leader.kill()
            killed = time.monotonic()
            t.join()
            while not follower.leads():
                time.sleep(0.01)
            takeovers.append(time.monotonic() - killed)
            r = call(follower.sock, "submit", {"job": {"command": ["true"], "name": "after"}})
            jid = r["result"]["id"]
            while True:
                job = call(follower.sock, "show", {"id": jid}).get("result", {})
                if job.get("start_time"):
                    break
                time.sleep(0.01)
            starts.append(time.monotonic() - killed)
            known = {j["id"] for j in call(follower.sock, "list", {"states": ["all"]}).get("result", [])}
            for rid in doubt:
                r = call(follower.sock, "submit",
                         {"job": {"command": ["true"], "hold": True, "name": rid}, "request_id": rid})
                jid = r["result"]["id"]
                acked.append(jid)
                if jid in known:
                    found += 1
                else:
                    made += 1
            jobs = call(follower.sock, "list", {"states": ["all"]}).get("result", [])
            ids = [j["id"] for j in jobs]
            names = [j["name"] for j in jobs if j["name"].startswith("f")]
            lost += len(set(acked) - set(ids))
            doubled += len(ids) - len(set(ids)) + len(names) - len(set(names))
            leader.start(wait=False)  # it comes back, to follow
            leader, follower = follower, leader
        results["failovers"] = a.failovers
        results["acknowledged_submits"] = len(acked)
        results["lost"] = lost
        results["doubled"] = doubled
        results["in_flight_retried_found"] = found
        results["in_flight_retried_made"] = made
        results["takeover_s_median"] = round(statistics.median(takeovers), 2)
        results["takeover_s_max"] = round(max(takeovers), 2)
        results["first_start_s_median"] = round(statistics.median(starts), 2)
        results["first_start_s_max"] = round(max(starts), 2)
        for d in ctl:
            d.stop()
        if a.records:
            results["big_log_no_snapshots"] = big_log(a, root, etcd, a.records, snapshots=False)
            results["big_log"] = big_log(a, root, etcd, a.records)
    finally:
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
