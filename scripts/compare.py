#!/usr/bin/env python3
"""Prints the policy comparison of `allotctl simulate --json` outputs: compare.py allot.json backfill.json fifo.json"""
import json, sys

runs = {}
for path in sys.argv[1:]:
    d = json.load(open(path))
    runs[d["policy"]] = d

def h(s): return f"{s/3600:.2f} h"
def row(name, f):
    print(f"  {name:38s}" + "".join(f"{f(runs[p]):>14s}" for p in runs))

print(f"  {'':38s}" + "".join(f"{p:>14s}" for p in runs))
row("jobs / completed", lambda d: f"{d['completed']}/{d['jobs']}")
row("avg JCT (all)", lambda d: h(d["avg_jct_s"]))
row("avg JCT (training)", lambda d: h(d["by_kind"]["training"]["avg_jct_s"]))
row("p99 JCT (training)", lambda d: h(d["by_kind"]["training"]["p99_jct_s"]))
row("avg wait (training)", lambda d: h(d["by_kind"]["training"]["avg_wait_s"]))
row("inference p99 queueing delay", lambda d: f"{d['by_kind']['inference']['p99_wait_s']:.0f} s")
row("inference avg queueing delay", lambda d: f"{d['by_kind']['inference']['avg_wait_s']:.1f} s")
row("inference $/replica-hour", lambda d: f"${d['by_kind']['inference']['cost_per_work_hour']:.3f}")
row("training $/reference GPU-hour of work", lambda d: f"${d['by_kind']['training']['cost_per_work_hour']:.3f}")
row("total cost", lambda d: f"${d['cost_usd']:,.0f}")
row("utilization (over makespan)", lambda d: f"{100*d['utilization']:.1f}%")
row("waste (while jobs arrive)", lambda d: f"{100*d['waste_while_arriving']:.2f}%")
row("waste (whole run)", lambda d: f"{100*d['waste']:.2f}%")
row("makespan", lambda d: h(d["makespan_s"]))
row("preemptions / reclaims / loans", lambda d: f"{d['preemptions']}/{d['reclaims']}/{d['loans']}")
row("moves to faster GPUs", lambda d: f"{d.get('moves', 0)}")
row("elastic: grew / shrank", lambda d: f"{d.get('grows', 0)}/{d.get('shrinks', 0)}")
row("work lost to stops (GPU-h)", lambda d: f"{d['lost_gpu_hours']:.0f}")
row("timed out", lambda d: f"{d['timed_out']}")
if "allot" in runs:
    a = runs["allot"]
    print()
    for base in [p for p in runs if p != "allot"]:
        b = runs[base]
        print(f"  allot / {base}: avg JCT {a['avg_jct_s']/b['avg_jct_s']:.2f}x, training avg JCT "
              f"{a['by_kind']['training']['avg_jct_s']/b['by_kind']['training']['avg_jct_s']:.2f}x, inference $/replica-h "
              f"{a['by_kind']['inference']['cost_per_work_hour']/b['by_kind']['inference']['cost_per_work_hour']:.2f}x, training $/work "
              f"{a['by_kind']['training']['cost_per_work_hour']/b['by_kind']['training']['cost_per_work_hour']:.3f}x")
