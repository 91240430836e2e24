#!/usr/bin/env python3
"""Load on the controller from many node agents: a load generator that speaks the agent protocol
(docs/protocol.md, "Agent methods") over mutual TLS, one connection per simulated node.

    scripts/agent-load.py --bin .build/release [--agents 1000] [--jobs 20000] [--heartbeat 1]

It makes a CA and a certificate per node with `allotctl ca`, starts a real allotd whose pool is those
nodes (8 GPUs each), connects every simulated agent, and measures:
  1. heartbeats per second the controller takes and sends back, and allotctl's round trip meanwhile;
  2. orders per second: jobs submitted in bulk are placed on the agents, which report each end at once;
  3. time to detect a dead node: one agent goes silent; how long until `nodes` says down.
"""
import argparse
import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Agent:
    def __init__(self, name, ctx, port, stats):
        self.name, self.ctx, self.port, self.stats = name, ctx, port, stats
        self.writer = None
        self.silent = False
        self.seq = 0

    async def run(self, interval):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ctx, server_hostname=None)
        self.writer = writer
        reg = {"jsonrpc": "2.0", "id": 1, "method": "agent.register",
               "params": {"node": self.name, "protocol_version": 1, "agent_version": "load", "hostname": "load",
                          "gpus": [{"index": i, "health": "healthy"} for i in range(8)], "runs": []}}
        writer.write((json.dumps(reg) + "\n").encode())
        await writer.drain()
        answer = json.loads(await reader.readline())
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        self.stats["registered"] += 1
        asyncio.get_running_loop().create_task(self.beat(interval))
        while True:
            line = await reader.readline()
            if not line:
                return
            msg = json.loads(line)
            m = msg.get("method")
            if m == "agent.heartbeat":
                self.stats["beats_in"] += 1
            elif m == "agent.start":
                self.stats["orders"] += 1
                p = msg["params"]
                if not self.silent:
                    self.seq += 1
                    rep = {"jsonrpc": "2.0", "method": "agent.report",
                           "params": {"seq": self.seq, "runs": [{"id": p["id"], "run": p["run"], "state": "ended",
                                                                  "exit_code": 0}]}}
                    writer.write((json.dumps(rep) + "\n").encode())
            elif m == "agent.ack":
                self.stats["acks"] += 1

    async def beat(self, interval):
        seq = 0
        await asyncio.sleep(interval * (hash(self.name) % 1000) / 1000)
        while True:
            if not self.silent:
                seq += 1
                self.writer.write((json.dumps({"jsonrpc": "2.0", "method": "agent.heartbeat",
                                               "params": {"seq": seq, "time": time.time()}}) + "\n").encode())
                self.stats["beats_out"] += 1
            await asyncio.sleep(interval)


def ctl(binary, sock, *args, stdin=None):
    t = time.perf_counter()
    r = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                       env={**os.environ, "ALLOT_SOCKET": sock})
    return r, time.perf_counter() - t


async def main(a):
    work = tempfile.mkdtemp(prefix="allot-agent-load-")
    allotctl = os.path.join(a.bin, "allotctl")
    allotd = os.path.join(a.bin, "allotd")
    pki = os.path.join(work, "pki")
    subprocess.run([allotctl, "ca", "init", "--dir", pki], check=True, capture_output=True)
    subprocess.run([allotctl, "ca", "issue", "--dir", pki, "--controller", "controller", "--host", "127.0.0.1"],
                   check=True, capture_output=True)
    names = [f"n{i:04d}" for i in range(1, a.agents + 1)]
    t = time.time()
    procs = []
    for n in names:  # a few at a time: key generation is the cost
        procs.append(subprocess.Popen([allotctl, "ca", "issue", "--dir", pki, "--node", n], stdout=subprocess.DEVNULL))
        if len(procs) >= 8:
            for p in procs:
                p.wait()
            procs = []
    for p in procs:
        p.wait()
    print(f"# {a.agents} node certificates issued in {time.time() - t:.1f} s", file=sys.stderr)
    port = free_port()
    sock = os.path.join(work, "s.sock")
    with open(os.path.join(work, "allotd.toml"), "w") as f:
        f.write(f"""
[scheduler]
interval = "5s"
[[gpu_model]]
name = "A100"
memory_gib = 80
price_per_hour = 2.0
speed = 1.0
[[node_group]]
prefix = "n"
start = 1
count = {a.agents}
digits = 4
gpu_model = "A100"
gpus = 8
[daemon]
state_dir = "{work}/state"
socket = "{sock}"
[cluster]
listen = "127.0.0.1:{port}"
ca = "{pki}/ca.crt"
certificate = "{pki}/controller.crt"
key = "{pki}/controller.key"
heartbeat_interval = "{a.heartbeat}s"
node_timeout = "{a.timeout}s"
""")
    log = open(os.path.join(work, "allotd.log"), "w")
    daemon = subprocess.Popen([allotd, "--config", os.path.join(work, "allotd.toml")], stdout=log, stderr=log)
    for _ in range(200):
        if ctl(allotctl, sock, "status")[0].returncode == 0:
            break
        time.sleep(0.05)
    stats = {"registered": 0, "beats_in": 0, "beats_out": 0, "orders": 0, "acks": 0}
    agents = []
    t = time.time()
    for n in names:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(os.path.join(pki, "ca.crt"))
        ctx.load_cert_chain(os.path.join(pki, n + ".crt"), os.path.join(pki, n + ".key"))
        ag = Agent(n, ctx, port, stats)
        agents.append(ag)
        asyncio.get_running_loop().create_task(ag.run(a.heartbeat))
    while stats["registered"] < a.agents and time.time() - t < 120:
        await asyncio.sleep(0.1)
    print(f"# {stats['registered']} agents registered in {time.time() - t:.1f} s", file=sys.stderr)
    rss = lambda: int(open(f"/proc/{daemon.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024

    # 1. Heartbeats.
    await asyncio.sleep(2)
    b0, o0, t0 = stats["beats_in"], stats["beats_out"], time.time()
    rtts = []
    for _ in range(20):
        rtts.append(await asyncio.to_thread(lambda: ctl(allotctl, sock, "status")[1]))
        await asyncio.sleep(a.duration / 20)
    dt = time.time() - t0
    print(f"heartbeats: {(stats['beats_out'] - o0) / dt:,.0f}/s taken from {a.agents} agents, "
          f"{(stats['beats_in'] - b0) / dt:,.0f}/s sent back; allotctl status round trip median "
          f"{sorted(rtts)[len(rtts) // 2] * 1000:.1f} ms, max {max(rtts) * 1000:.1f} ms; allotd RSS {rss()} MiB")

    # 2. Orders: jobs placed on the agents, each reported ended at once.
    lines = "".join(json.dumps({"command": ["true"], "gpus": 1}) + "\n" for _ in range(a.jobs))
    o0, t0 = stats["orders"], time.time()
    r, took = await asyncio.to_thread(lambda: ctl(allotctl, sock, "submit", "--file", "-", stdin=lines))
    assert r.returncode == 0, r.stderr
    while stats["orders"] - o0 < a.jobs and time.time() - t0 < 600:
        await asyncio.sleep(0.1)
    dt = time.time() - t0
    while stats["acks"] < stats["orders"] and time.time() - t0 < 600:
        await asyncio.sleep(0.1)
    done = time.time() - t0
    print(f"orders: {a.jobs:,} jobs submitted in {took:.1f} s; {stats['orders'] - o0:,} start orders in {dt:.1f} s "
          f"= {(stats['orders'] - o0) / dt:,.0f}/s; every end reported and acknowledged after {done:.1f} s "
          f"= {a.jobs / done:,.0f} jobs/s; allotd RSS {rss()} MiB")

    # 3. A dead node.
    victim = agents[0]
    victim.silent = True
    t0 = time.time()
    while True:
        r, _ = await asyncio.to_thread(lambda: ctl(allotctl, sock, "nodes", "--json"))
        nodes = json.loads(r.stdout)
        if next(n for n in nodes if n["name"] == victim.name)["state"] == "down":
            break
        await asyncio.sleep(0.1)
    print(f"dead node: detected after {time.time() - t0:.1f} s (heartbeat {a.heartbeat} s, node_timeout {a.timeout} s)")
    daemon.terminate()
    daemon.wait()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=20000)
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=10.0)
    asyncio.run(main(p.parse_args()))
