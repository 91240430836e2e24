#!/usr/bin/env python3
"""Prints scripts/loan-figures.sh's table: per service and reserve size, medians over the seeds of
training average JCT (and its ratio to the run without a reserve), inference p99 queueing, idle-while-waiting
GPU-time, loans, loans taken back, GPU-hours they lost, and spill-over $."""
import json, os, statistics, sys

out, seeds, reserves = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def load(svc, seed, r, rule):
    p = os.path.join(out, f"{svc}-{seed}-{r}-{rule}.json")
    return json.load(open(p)) if os.path.exists(p) else None
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")

for svc in ["chat", "code"]:
    print(f"\n{svc}: medians over seeds {' '.join(seeds)}")
    print(f"  {'reserve':>7} {'lending':>8} {'train JCT':>10} {'vs none':>8} {'inf p99':>8} {'idle-wait':>9} "
          f"{'loans':>6} {'taken back':>11} {'lost GPU-h':>10} {'spill $':>8}")
    base = {}
    for seed in seeds:
        d = load(svc, seed, "0", "none")
        if d: base[seed] = d["by_kind"]["training"]["avg_jct_s"]
    for r in reserves:
        for rule in (["none"] if r == "0" else ["forecast", "always"]):
            runs = {s: load(svc, s, r, rule) for s in seeds}
            runs = {s: d for s, d in runs.items() if d}
            if not runs: continue
            jct = med([d["by_kind"]["training"]["avg_jct_s"] / 3600 for d in runs.values()])
            ratio = med([d["by_kind"]["training"]["avg_jct_s"] / base[s] for s, d in runs.items() if s in base])
            p99 = med([d["by_kind"]["inference"]["p99_wait_s"] for d in runs.values()])
            waste = med([100 * d["waste_while_arriving"] for d in runs.values()])
            res = [d.get("reserve") or {} for d in runs.values()]
            loans = med([x.get("loans", 0) for x in res])
            back = med([100 * x.get("taken_back_share", 0) for x in res])
            lost = med([x.get("lost_gpu_hours", 0) for x in res])
            spill = med([x.get("spill_over_usd", 0) for x in res])
            print(f"  {r:>7} {rule:>8} {jct:>8.2f} h {ratio:>7.2f}x {p99:>6.0f} s {waste:>8.2f}% "
                  f"{loans:>6.0f} {back:>10.1f}% {lost:>10.1f} {spill:>8.0f}")
