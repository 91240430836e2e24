#!/usr/bin/env python3
"""Build the policy-comparison trace: one week of Microsoft Philly training jobs plus an LLM inference
service derived from the Azure LLM inference trace 2023, for Benchmarks/pools/mixed-loaded.toml.

    python3 scripts/make-policy-trace.py [--traces DIR] [--out FILE] [--start 2017-10-09] [--days 7]
        [--services chat,code] [--peak N] [--memory GIB] [--walltime-factor 2] [--seed 7]

Training: every Philly job (github.com/msr-fiddle/philly-traces via the Sia/Pollux processed CSV, CC-BY 4.0)
submitted in the window; `duration` is work on a speed-1.0 GPU, `cluster` (15 virtual clusters) maps to
three tenants. Philly has no time limits; users ask for more than they use, so each job gets
walltime = max(1 h, 2 × duration rounded up to the hour), capped at 14 days.

Inference: the Azure LLM inference trace 2023 (github.com/Azure/AzurePublicDataset, CC-BY 4.0), the chat
and code services. Request rates per 5-minute window become replica counts (a replica serves 0.125 chat or
0.25 code requests/s); the trace's hour is stretched to a day (one trace minute = 24 minutes) and repeated
each day with ±10% seeded jitter. Each rise in the count starts a 1-GPU replica (needing 20 GiB), which
lives until the count falls below it.
"""
import argparse, csv, math, os, random
from datetime import datetime, timedelta

def philly(path, start, days, out, walltime_factor=2):
    end = start + timedelta(days=days)
    tenants = {}
    for r in csv.DictReader(open(path)):
        t = datetime.strptime(r["timestamp"], "%Y-%m-%d %H:%M:%S")
        if not (start <= t < end):
            continue
        d = float(r["duration"])
        if d <= 0:
            continue
        vc = r["cluster"]
        tenants.setdefault(vc, ["research", "product", "ads"][len(tenants) % 3])
        wall = min(14 * 86400, max(3600, math.ceil(walltime_factor * d / 3600) * 3600)) if walltime_factor else ""
        out.append(dict(id=f"philly-{len(out)+1}", kind="training", tenant=tenants[vc], submit_time=int((t - start).total_seconds()),
                        duration=int(d), gpus=int(r["num_gpus"]), min_gpu_memory="", walltime=wall))

def azure(path, service, per_replica, days, rng, out, peak=None, memory=20):
    times = [datetime.strptime(r["TIMESTAMP"][:19], "%Y-%m-%d %H:%M:%S") for r in csv.DictReader(open(path))]
    t0 = min(times)
    window = 300
    counts = {}
    for t in times:
        w = int((t - t0).total_seconds()) // window
        counts[w] = counts.get(w, 0) + 1
    nwin = max(counts) + 1
    stretch = 24
    if peak:
        # Replicas sized so that the busiest window (before jitter) needs `peak` of them.
        per_replica = max(counts.values()) / window / peak
    want = []
    for day in range(days):
        jitter = 1 + rng.uniform(-0.1, 0.1)
        for w in range(nwin):
            want.append(max(1, math.ceil(counts.get(w, 0) / window / per_replica * jitter)))
    alive = []
    k = 0
    for i, n in enumerate(want + [0]):
        now = i * window * stretch
        while len(alive) > n:
            s = alive.pop()
            k += 1
            out.append(dict(id=f"{service}-{k}", kind="inference", tenant="serving", submit_time=s, duration=now - s,
                            gpus=1, min_gpu_memory=memory, walltime=""))
        while len(alive) < n:
            alive.append(now)

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", default=os.path.join(here, "../../shared/data/traces"))
    ap.add_argument("--out", default=os.path.join(here, "../.build/figures/philly-azure-week.csv"))
    ap.add_argument("--start", default="2017-10-09")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--services", default="chat,code", help="which inference services: chat, code or both")
    ap.add_argument("--peak", type=int, help="size each service's replicas so that its busiest window needs this many")
    ap.add_argument("--seed", type=int, default=7, help="seed of the daily jitter")
    ap.add_argument("--walltime-factor", type=float, default=2, help="training walltime: this times the duration, rounded up to the hour (0: none)")
    ap.add_argument("--memory", type=int, default=20, help="GiB of GPU memory a replica needs")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    rows = []
    philly(os.path.join(a.traces, "philly/philly_pollux_sia.csv"), datetime.fromisoformat(a.start), a.days, rows, a.walltime_factor)
    services = a.services.split(",")
    if "chat" in services:
        azure(os.path.join(a.traces, "azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv"), "chat", 0.125, a.days, rng, rows, a.peak, a.memory)
    if "code" in services:
        azure(os.path.join(a.traces, "azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv"), "code", 0.25, a.days, rng, rows, a.peak, a.memory)
    rows.sort(key=lambda r: (r["submit_time"], r["id"]))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "kind", "tenant", "submit_time", "duration", "gpus", "min_gpu_memory", "walltime"])
        w.writeheader()
        w.writerows(rows)
    inf = [r for r in rows if r["kind"] == "inference"]
    print(f"wrote {len(rows)} jobs ({len(rows)-len(inf)} training, {len(inf)} inference replicas) to {a.out}")

main()
