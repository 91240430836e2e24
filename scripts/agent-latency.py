#!/usr/bin/env python3
"""Placement-to-running latency on a remote node agent: a real allotd controller and a real `allotd agent`
(mutual TLS over loopback). Each job prints the time it started; the figure is from just before the
submit request is sent to that time, on an idle node, one job at a time.

    scripts/agent-latency.py --bin .build/release [--jobs 50]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time


def main(a):
    work = tempfile.mkdtemp(prefix="allot-agent-latency-")
    ctl, d = os.path.join(a.bin, "allotctl"), os.path.join(a.bin, "allotd")
    pki = os.path.join(work, "pki")
    for args in (["init"], ["issue", "--controller", "controller", "--host", "127.0.0.1"], ["issue", "--node", "r1"]):
        subprocess.run([ctl, "ca", *args, "--dir", pki], check=True, capture_output=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    sock = os.path.join(work, "s.sock")
    with open(os.path.join(work, "allotd.toml"), "w") as f:
        f.write(f"""
[[gpu_model]]
name = "A100"
memory_gib = 80
price_per_hour = 2.0
speed = 1.0
[[gpu_model]]
name = "L"
memory_gib = 80
price_per_hour = 2.0
speed = 1.0
[[node]]
name = "r1"
gpu_model = "A100"
gpus = 8
[[node]]
name = "l1"
gpu_model = "L"
gpus = 8
[daemon]
state_dir = "{work}/state"
socket = "{sock}"
local_nodes = ["l1"]
[cluster]
listen = "127.0.0.1:{port}"
ca = "{pki}/ca.crt"
certificate = "{pki}/controller.crt"
key = "{pki}/controller.key"
""")
    env = {**os.environ, "ALLOT_SOCKET": sock}
    log = open(os.path.join(work, "allotd.log"), "w")
    daemon = subprocess.Popen([d, "--config", os.path.join(work, "allotd.toml"), "--log-level", "warning"], stdout=log, stderr=log)
    agent = subprocess.Popen([d, "agent", "--controller", f"127.0.0.1:{port}", "--node", "r1", "--pki", pki,
                              "--gpus", "8", "--state-dir", os.path.join(work, "agent"), "--log-level", "warning"], stdout=log, stderr=log)
    for _ in range(200):
        r = subprocess.run([ctl, "nodes", "--json"], env=env, capture_output=True, text=True)
        if r.returncode == 0 and any((n.get("agent") or {}).get("link") == "up" for n in json.loads(r.stdout)):
            break
        time.sleep(0.05)
    def call(method, params):
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock)
        f = c.makefile("rwb")
        f.write((json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) + "\n").encode())
        f.flush()
        answer = json.loads(f.readline())
        c.close()
        return answer

    lat = {"A100": [], "L": []}
    for i in range(a.jobs * 2):
        # The submit goes straight over the socket (as daemon-bench.py does): no process start in the figure.
        model = "A100" if i % 2 == 0 else "L"
        stamp = os.path.join(work, f"started-{i}")
        t0 = time.time()
        call("submit", {"job": {"command": ["sh", "-c", f"date +%s.%N > {stamp}"], "workdir": "/", "gpu_model": model}})
        while not os.path.exists(stamp) or os.path.getsize(stamp) == 0:
            time.sleep(0.0005)
        with open(stamp) as f:
            lat[model].append(float(f.read()) - t0)
        time.sleep(0.05)
    for model, where in (("A100", "on a remote agent"), ("L", "on allotd's own node (same run, for comparison)")):
        v = sorted(lat[model])
        print(f"submit → running {where}: median {statistics.median(v) * 1000:.1f} ms, "
              f"p90 {v[int(len(v) * 0.9)] * 1000:.1f} ms ({len(v)} jobs, idle nodes)")
    agent.terminate()
    daemon.terminate()
    agent.wait()
    daemon.wait()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--jobs", type=int, default=50)
    main(p.parse_args())
