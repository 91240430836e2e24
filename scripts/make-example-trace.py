#!/usr/bin/env python3
"""Build examples/trace-mixed.csv: Philly training jobs plus inference replicas derived from the Azure LLM
inference trace, sized for the 96-GPU example pool in etc/allot/allotd.toml.

Needs ../shared/data/traces (not needed by tests or the demo, which use the committed CSV).

    python3 scripts/make-example-trace.py [--traces DIR] [--out examples/trace-mixed.csv]

Training: Philly jobs (github.com/msr-fiddle/philly-traces, via the Sia/Pollux processed CSV, CC-BY 4.0)
submitted in a 24-hour window starting 2017-10-09 00:00, keeping every 2nd job,
jobs of at most 16 GPUs and at most 24 h. `cluster` becomes the tenant (research for half of the virtual
clusters, product for the other half), `duration` is taken as work on a speed-1.0 GPU.

Inference: the Azure LLM inference trace 2023 (github.com/Azure/AzurePublicDataset, CC-BY 4.0), code and
conversation services. Request rates per 5-minute window are turned into replica counts (a replica serves
0.25 request/s of chat, 0.5 of code completion); the hour is stretched to 24 h, so one trace minute is 24 minutes.
Each rise in the count starts a replica, which lives until the count falls below it again.
"""
import argparse, csv, math, os
from datetime import datetime

def philly(path, out):
    start = datetime(2017, 10, 9)
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            t = datetime.strptime(r["timestamp"], "%Y-%m-%d %H:%M:%S")
            s = (t - start).total_seconds()
            if 0 <= s < 86400:
                rows.append((s, float(r["duration"]), int(r["num_gpus"]), r["cluster"]))
    rows.sort()
    clusters = sorted({r[3] for r in rows})
    tenant = {c: ("research" if i % 2 == 0 else "product") for i, c in enumerate(clusters)}
    n = 0
    for i, (s, d, g, c) in enumerate(rows):
        if i % 2 != 0 or g > 16 or d > 86400 or d <= 0:
            continue
        n += 1
        out.append(dict(id=f"philly-{n}", kind="training", tenant=tenant[c], submit_time=int(s),
                        duration=int(d), gpus=g, gpu_model="", min_gpu_memory="", priority="", walltime=""))

def azure(path, service, per_replica, out, tenant):
    times = []
    with open(path) as f:
        for r in csv.DictReader(f):
            times.append(datetime.strptime(r["TIMESTAMP"][:19], "%Y-%m-%d %H:%M:%S"))
    t0 = min(times)
    window = 300
    counts = {}
    for t in times:
        counts[int((t - t0).total_seconds()) // window] = counts.get(int((t - t0).total_seconds()) // window, 0) + 1
    nwin = max(counts) + 1
    stretch = 24
    replicas = [max(1, math.ceil(counts.get(w, 0) / window / per_replica)) for w in range(nwin)]
    alive = []  # start times of live replicas
    k = 0
    for w, want in enumerate(replicas + [0]):
        now = w * window * stretch
        while len(alive) > want:
            s = alive.pop()
            k += 1
            out.append(dict(id=f"{service}-{k}", kind="inference", tenant=tenant, submit_time=s, duration=now - s,
                            gpus=1, gpu_model="", min_gpu_memory=20, priority="", walltime=""))
        while len(alive) < want:
            alive.append(now)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", default=os.path.join(os.path.dirname(__file__), "../../shared/data/traces"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../examples/trace-mixed.csv"))
    a = ap.parse_args()
    rows = []
    philly(os.path.join(a.traces, "philly/philly_pollux_sia.csv"), rows)
    azure(os.path.join(a.traces, "azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv"), "chat", 0.25, rows, "product")
    azure(os.path.join(a.traces, "azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv"), "code", 0.5, rows, "product")
    rows.sort(key=lambda r: (r["submit_time"], r["id"]))
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "kind", "tenant", "submit_time", "duration", "gpus", "gpu_model",
                                          "min_gpu_memory", "priority", "walltime"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} jobs to {a.out}")

main()
